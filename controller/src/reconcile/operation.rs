//! The DeviceOperation executor: reads the object fresh, asks the pure
//! [`crate::operation`] what to do, runs the device calls (gNOI, or the
//! CLI over SSH), spills large outputs to the owned ConfigMap and writes
//! the status. The decision table and the output rules are documented in
//! [`crate::operation`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

use super::engine::{self, DeviceLookupError, read_device, update_status, write_status};
use super::target::{resolve_cli_target, resolve_target};
use super::{Context, MANAGER, ReconcileError, ns_name};
use crate::client::cli::{CliPool, CliTarget, HostKeys};
use crate::client::system::{L4Protocol, PingParams, TracerouteParams};
use crate::client::{self, DeviceClient};
use crate::crd::operation::conditions::READY;
use crate::crd::operation::{
    CertArgs, Operation, OperationKind, OperationPhase, TracerouteProtocol,
};
use crate::crd::{DeviceOperation, DeviceOperationStatus};
use crate::operation::{
    CliRun, Failure, OpStep, OpView, OperationFailure, OutputLimits, Piece, Policy, Success, admit,
    artifact_name, artifact_uri, bound, conclude, content_text, finished_status, judge_cli,
    owned_by, running_status, step, waiting_status,
};

use crate::reason::OperationReason;
use crate::telemetry::OperationLabels;

/// How long to wait before retrying an operation whose device is missing or
/// not configured.
pub const RETRY_NO_TRANSPORT: Duration = Duration::from_secs(10);

/// A rendered result: the JSON output and a one-line summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Indented JSON.
    pub output: String,
    /// Summary for status.message.
    pub message: String,
    /// Secrets were removed from the output.
    pub redacted: bool,
}

fn render<T: Serialize>(value: &T, message: String) -> Result<Rendered, OperationFailure> {
    serde_json::to_string_pretty(value)
        .map(|output| Rendered {
            output,
            message,
            redacted: false,
        })
        .map_err(|e| OperationFailure::Render(e.to_string()))
}

fn millis(v: Option<i32>) -> Option<Duration> {
    v.filter(|m| *m > 0)
        .map(|m| Duration::from_millis(u64::try_from(m).unwrap_or(0)))
}

fn non_negative(field: &str, v: Option<i32>) -> Result<u32, OperationFailure> {
    match v {
        None => Ok(0),
        Some(n) => u32::try_from(n).map_err(|_| {
            OperationFailure::InvalidArguments(format!("{field} must not be negative, got {n}"))
        }),
    }
}

fn rfc3339(unix_nanos: u64) -> String {
    Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileGetOutput<'a> {
    path: &'a str,
    bytes_read: u64,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_algorithm: Option<&'a str>,
    hash_verified: bool,
    encoding: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
    content: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimeOutput {
    time: String,
    unix_nanos: u64,
    controller_offset_millis: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CsrOutput {
    can_generate: bool,
    key_type: &'static str,
    certificate_type: &'static str,
    key_size: u32,
}

fn args_missing(kind: OperationKind, block: &str) -> OperationFailure {
    OperationFailure::InvalidArguments(format!(
        "spec.operation.gnoi.{block} is required when spec.operation.kind is {kind}"
    ))
}

/// Runs `op` on the device and renders its result.
pub async fn execute(
    client: &DeviceClient,
    op: &Operation,
    limits: &OutputLimits,
) -> Result<Rendered, OperationFailure> {
    let gnoi = op.gnoi.clone().unwrap_or_default();
    match op.kind {
        OperationKind::ShowCommand | OperationKind::ConfigDiff | OperationKind::PacketCapture => {
            Err(OperationFailure::InvalidArguments(format!(
                "{} runs over the device CLI, not gNOI",
                op.kind
            )))
        }
        OperationKind::Ping => {
            let a = gnoi.ping.ok_or_else(|| args_missing(op.kind, "ping"))?;
            let p = PingParams {
                destination: a.destination,
                source: a.source.unwrap_or_default(),
                count: non_negative("spec.operation.gnoi.ping.count", a.count)?,
                interval: millis(a.interval_millis),
                wait: millis(a.wait_millis),
                size: non_negative("spec.operation.gnoi.ping.size", a.size)?,
                do_not_fragment: false,
                do_not_resolve: false,
            };
            let r = client.ping(&p).await?;
            let received = r
                .summary
                .as_ref()
                .map(|s| i64::from(s.received))
                .unwrap_or(r.replies.len() as i64);
            let noun = if received == 1 { "reply" } else { "replies" };
            render(&r, format!("{received} ping {noun} received"))
        }
        OperationKind::Traceroute => {
            let a = gnoi
                .traceroute
                .ok_or_else(|| args_missing(op.kind, "traceroute"))?;
            let p = TracerouteParams {
                destination: a.destination,
                source: a.source.unwrap_or_default(),
                max_hops: non_negative("spec.operation.gnoi.traceroute.maxHops", a.max_hops)?,
                protocol: match a.protocol {
                    None | Some(TracerouteProtocol::Icmp) => L4Protocol::Icmp,
                    Some(TracerouteProtocol::Udp) => L4Protocol::Udp,
                    Some(TracerouteProtocol::Tcp) => L4Protocol::Tcp,
                },
                wait: millis(a.wait_millis),
                do_not_resolve: false,
            };
            let r = client.traceroute(&p).await?;
            let hops = r
                .hops
                .iter()
                .map(|h| h.hop)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let noun = if hops == 1 { "hop" } else { "hops" };
            render(
                &r,
                format!("{hops} {noun} traced to {}", r.destination_address),
            )
        }
        OperationKind::Time => {
            let t = client.time().await?;
            let here = Timestamp::now().as_nanosecond();
            let offset = (i128::from(t.unix_nanos) - here) / 1_000_000;
            let out = TimeOutput {
                time: rfc3339(t.unix_nanos),
                unix_nanos: t.unix_nanos,
                controller_offset_millis: i64::try_from(offset).unwrap_or(i64::MAX),
            };
            let message = format!(
                "device time {} ({:+} ms from the controller clock)",
                out.time, out.controller_offset_millis
            );
            render(&out, message)
        }
        OperationKind::FileGet => {
            let a = gnoi.file.ok_or_else(|| args_missing(op.kind, "file"))?;
            let requested = match a.max_bytes {
                None | Some(0) => limits.default_file_get_bytes,
                Some(n) => u64::try_from(n).map_err(|_| {
                    OperationFailure::InvalidArguments(format!(
                        "spec.operation.gnoi.file.maxBytes must not be negative, got {n}"
                    ))
                })?,
            };
            // Never read more than a ConfigMap could hold.
            let max = requested.min(limits.max_artifact_bytes as u64);
            let c = client.file_get(&a.path, max).await?;
            let (encoding, content) = content_text(&c.content);
            let (content, redacted) = if encoding == "utf-8" {
                crate::operation::redact::redact(&content)
            } else {
                (content, false)
            };
            let out = FileGetOutput {
                path: &c.path,
                bytes_read: c.bytes_read,
                truncated: c.truncated,
                hash: c.hash.as_ref().map(|h| h.hex.as_str()),
                hash_algorithm: c.hash.as_ref().map(|h| h.method.as_str()),
                hash_verified: c.hash_verified,
                encoding,
                redacted,
                content,
            };
            let mut message = format!("read {} bytes of {}", c.bytes_read, c.path);
            if c.truncated {
                message.push_str(&format!(" (stopped at maxBytes {max})"));
            }
            if redacted {
                message.push_str("; secrets redacted");
            }
            let mut r = render(&out, message)?;
            r.redacted = redacted;
            Ok(r)
        }
        OperationKind::FileStat => {
            let a = gnoi.file.ok_or_else(|| args_missing(op.kind, "file"))?;
            let stats = client.file_stat(&a.path).await?;
            let message = match stats.as_slice() {
                [one] => format!(
                    "{}: {} bytes, permissions {}",
                    one.path, one.size, one.permissions
                ),
                many => format!("{} entries under {}", many.len(), a.path),
            };
            render(&stats, message)
        }
        OperationKind::CertGet => {
            let certs = client.get_certificates().await?;
            let noun = if certs.len() == 1 {
                "certificate"
            } else {
                "certificates"
            };
            render(&certs, format!("{} {noun} installed", certs.len()))
        }
        OperationKind::CanGenerateCsr => {
            let a: CertArgs = gnoi.cert.unwrap_or_default();
            let can = client
                .can_generate_csr(
                    client::cert::KeyType::KtRsa,
                    client::cert::CertificateType::CtX509,
                    a.key_size,
                )
                .await?;
            let out = CsrOutput {
                can_generate: can,
                key_type: "KT_RSA",
                certificate_type: "CT_X509",
                key_size: a.key_size,
            };
            render(&out, format!("canGenerate={can}"))
        }
        OperationKind::RebootStatus => {
            let s = client.reboot_status().await?;
            let state = if s.active { "active" } else { "inactive" };
            render(&s, format!("reboot {state}"))
        }
        OperationKind::OsVerify => {
            let v = client.os_verify().await?;
            let mut message = format!("running version: {}", v.version);
            if !v.activation_fail_message.is_empty() {
                message.push_str(&format!(
                    "; last activation failed: {}",
                    v.activation_fail_message
                ));
            }
            render(&v, message)
        }
    }
}

/// Runs `commands` in one session of the CLI class, returning the session
/// to the pool when it stayed healthy.
pub async fn run_cli(pool: &CliPool, target: &CliTarget, commands: &[String]) -> CliRun {
    if target.host_keys == HostKeys::InsecureAcceptAny {
        tracing::warn!(device = %target.device,
            "SSH host key NOT verified (spec.ssh.insecureAcceptAnyHostKey): the output and the login password can be read by anyone on the path");
    }
    let mut session = match pool.session(target).await {
        Ok(s) => s,
        Err(e) => {
            return CliRun {
                outputs: Vec::new(),
                failure: Some(e),
            };
        }
    };
    let mut run = CliRun::default();
    for c in commands {
        match session.run(c).await {
            Ok(o) => run.outputs.push(o),
            Err(e) => {
                run.failure = Some(e);
                break;
            }
        }
    }
    if run.failure.is_none() {
        session.release();
    }
    run
}

async fn write_artifact(
    ctx: &Context,
    op: &DeviceOperation,
    ns: &str,
    name: &str,
    content: BTreeMap<String, String>,
) -> Result<Vec<String>, OperationFailure> {
    let uris = content
        .keys()
        .map(|k| artifact_uri(ns, name, k))
        .collect::<Vec<_>>();
    let cm_name = artifact_name(name);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let write_err = |e: kube::Error| OperationFailure::ArtifactWrite {
        name: cm_name.clone(),
        message: e.to_string(),
    };
    let uid = op.metadata.uid.clone().unwrap_or_default();
    if let Some(existing) = api.get_opt(&cm_name).await.map_err(write_err)?
        && !owned_by(&existing, &uid)
    {
        return Err(OperationFailure::ArtifactConflict(cm_name));
    }
    let owner = op
        .controller_owner_ref(&())
        .ok_or_else(|| OperationFailure::ArtifactWrite {
            name: cm_name.clone(),
            message: "the DeviceOperation has no uid".into(),
        })?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            namespace: Some(ns.to_owned()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGER.to_owned(),
                ),
                ("ops.cisco.vk/deviceoperation".to_owned(), name.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(content),
        ..ConfigMap::default()
    };
    api.patch(
        &cm_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(write_err)?;
    Ok(uris)
}

async fn expire(
    ctx: &Context,
    op: &DeviceOperation,
    ns: &str,
    name: &str,
) -> Result<(), ReconcileError> {
    ctx.publish(
        op,
        EventType::Normal,
        OperationReason::Expired.as_str(),
        "Cleanup",
        format!(
            "deleted {}s after it finished (ttlSecondsAfterFinished)",
            op.spec.ttl_seconds_after_finished.unwrap_or_default()
        ),
    )
    .await;
    // The owner reference lets the garbage collector remove the ConfigMap;
    // deleting it here too keeps clusters without one tidy.
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let uid = op.metadata.uid.clone().unwrap_or_default();
    if let Some(cm) = cms.get_opt(&artifact_name(name)).await?
        && owned_by(&cm, &uid)
    {
        let _ = cms
            .delete(&artifact_name(name), &DeleteParams::default())
            .await;
    }
    let api: Api<DeviceOperation> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reconciles one DeviceOperation.
pub async fn reconcile(
    obj: Arc<DeviceOperation>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<DeviceOperation> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(op) = api.get_opt(&name).await? else {
        return Ok(KubeAction::await_change());
    };
    if op.metadata.deletion_timestamp.is_some() {
        return Ok(KubeAction::await_change());
    }
    let device_name = op.spec.device_ref.name.clone();
    engine::record_device(&device_name);
    let in_scope = ctx.settings.scope.serves_device(&device_name);
    let generation = op.metadata.generation;
    let now = Timestamp::now();
    match step(&OpView::of(&op, in_scope), now) {
        OpStep::OutOfScope | OpStep::Done => return Ok(KubeAction::await_change()),
        OpStep::ExpireIn(d) => return Ok(KubeAction::requeue(d)),
        OpStep::Expire => {
            expire(&ctx, &op, &ns, &name).await?;
            return Ok(KubeAction::await_change());
        }
        OpStep::Start => {}
    }

    let kind = op.spec.operation.kind;
    let previous = op.status.clone().unwrap_or_default();
    let fail =
        |e: OperationFailure| finished_status(&previous, kind, &Err(e.into()), generation, now);

    let policy = Policy {
        configdiff_allowed: ctx.settings.configdiff_allowed(&ns),
        gnoi_disabled: ctx.settings.gnoi.disabled,
    };
    let commands = match admit(&op.spec.operation, &ns, policy) {
        Ok(c) => c,
        Err(e) => return finish(&ctx, &api, &op, kind, fail(e)).await,
    };

    // Observe the device: the operation waits (Pending) while its device
    // is missing or cannot be configured.
    let transport = match read_device(&ctx, &ns, &device_name).await {
        Err(DeviceLookupError::Api { source, .. }) => return Err(source.into()),
        Err(e) => Err(e.to_string()),
        Ok(dev) if kind.is_cli() => resolve_cli_target(
            &ctx.client,
            &ns,
            &device_name,
            &dev.spec,
            &ctx.settings.gnoi,
        )
        .await
        .map(Transport::Cli)
        .map_err(|e| format!("CiscoDevice {device_name:?} CLI cannot be reached: {e}")),
        Ok(dev) => resolve_target(
            &ctx.client,
            &ns,
            &device_name,
            &dev.spec,
            &ctx.settings.gnoi,
        )
        .await
        .map(Transport::Gnoi)
        .map_err(|e| format!("CiscoDevice {device_name:?} cannot be reached: {e}")),
    };
    let transport = match transport {
        Ok(t) => t,
        Err(message) => {
            let reason = OperationReason::NoTransport;
            let waiting = waiting_status(&previous, reason, message.clone(), generation, now);
            let announced = previous.phase == Some(OperationPhase::Pending)
                && previous.message.as_deref() == Some(message.as_str());
            if waiting != previous && write_status(&api, &op, waiting).await?.is_none() {
                return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
            }
            if !announced {
                ctx.publish(&op, EventType::Warning, reason.as_str(), "Observe", message)
                    .await;
            }
            return Ok(KubeAction::requeue(RETRY_NO_TRANSPORT));
        }
    };
    let transport = match transport {
        Transport::Gnoi(target) => match ctx.pool.get_or_create(&target) {
            Ok(c) => Runner::Gnoi(c),
            Err(e) => return finish(&ctx, &api, &op, kind, fail(e.into())).await,
        },
        Transport::Cli(target) => Runner::Cli(target),
    };

    let running = running_status(&previous, generation, now);
    let Some(running_op) = write_status(&api, &op, running.clone()).await? else {
        // Written by someone else since it was read: nothing ran yet, decide
        // again on the fresh object.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    ctx.publish(
        &op,
        EventType::Normal,
        OperationReason::Running.as_str(),
        "Execute",
        format!("{kind} device={device_name}"),
    )
    .await;
    tracing::info!(namespace = %ns, operation = %name, %kind, device = %device_name, "running");

    let limits = &ctx.settings.output_limits;
    let produced: Result<(Vec<Piece>, Result<String, OperationFailure>), OperationFailure> =
        match tokio::time::timeout(limits.execute_timeout, async {
            match &transport {
                Runner::Gnoi(client) => {
                    execute(client, &op.spec.operation, limits).await.map(|r| {
                        let piece = Piece {
                            command: kind.as_str().to_owned(),
                            text: Some(r.output),
                            err: None,
                            redacted: r.redacted,
                        };
                        (vec![piece], Ok(r.message))
                    })
                }
                Runner::Cli(target) => {
                    let run = run_cli(&ctx.cli, target, &commands).await;
                    Ok(judge_cli(&op.spec.operation, &commands, run))
                }
            }
        })
        .await
        {
            Err(_) => Err(OperationFailure::Timeout(limits.execute_timeout)),
            Ok(r) => r,
        };
    let hint = match kind {
        OperationKind::FileGet => "lower spec.operation.gnoi.file.maxBytes",
        OperationKind::PacketCapture => "clear or shrink the capture buffer on the device",
        _ => "run fewer or narrower commands (for example with | include or | section)",
    };
    let result: Result<Success, Failure> = match produced {
        Err(e) => Err(e.into()),
        Ok((pieces, verdict)) => match bound(pieces, limits, hint) {
            Err(e) => Err(e.into()),
            Ok(b) => {
                let uris = if b.spill.is_empty() {
                    Ok(Vec::new())
                } else {
                    write_artifact(&ctx, &op, &ns, &name, b.spill).await
                };
                conclude(b.outputs, uris, verdict)
            }
        },
    };
    let done = finished_status(&running, kind, &result, generation, Timestamp::now());
    // The result is written over the Running status it was produced under;
    // a change of metadata or spec in the meantime (the status is the
    // controller's alone) does not lose it.
    // Compared with the status as stored (the API server rounds times to
    // seconds), not as built.
    let stored = running_op.status.clone();
    let written = match write_status(&api, &running_op, done.clone()).await? {
        Some(w) => Some(w),
        None => {
            update_status(&api, &name, |fresh| {
                (fresh.status == stored).then(|| done.clone())
            })
            .await?
        }
    };
    if written.is_none() {
        tracing::warn!(operation = %name, %kind,
            "the status changed while the operation ran; its result was not written");
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    announce_finished(&ctx, &op, kind, &done).await
}

/// How an operation reaches its device.
enum Transport {
    Gnoi(crate::client::DeviceTarget),
    Cli(CliTarget),
}

/// The connected form of [`Transport`].
enum Runner {
    Gnoi(Arc<DeviceClient>),
    Cli(CliTarget),
}

/// Writes a terminal status over `op` as read (nothing ran) and announces it.
async fn finish(
    ctx: &Context,
    api: &Api<DeviceOperation>,
    op: &DeviceOperation,
    kind: OperationKind,
    status: DeviceOperationStatus,
) -> Result<KubeAction, ReconcileError> {
    if write_status(api, op, status.clone()).await?.is_none() {
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    announce_finished(ctx, op, kind, &status).await
}

/// Counts, logs and publishes a terminal status; the requeue for its TTL.
async fn announce_finished(
    ctx: &Context,
    op: &DeviceOperation,
    kind: OperationKind,
    status: &DeviceOperationStatus,
) -> Result<KubeAction, ReconcileError> {
    let phase = status.phase.unwrap_or(OperationPhase::Failed);
    let phase_str = match phase {
        OperationPhase::Succeeded => "Succeeded",
        OperationPhase::Failed => "Failed",
        OperationPhase::Cancelled => "Cancelled",
        OperationPhase::Pending => "Pending",
        OperationPhase::Running => "Running",
    };
    ctx.metrics
        .operations
        .get_or_create(&OperationLabels {
            kind: kind.as_str().to_owned(),
            phase: phase_str.to_owned(),
        })
        .inc();
    let reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| phase_str.to_owned());
    let message = status.message.clone().unwrap_or_default();
    tracing::info!(operation = %op.name_any(), %kind, phase = phase_str, %reason, "finished");
    let type_ = if phase == OperationPhase::Succeeded {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.publish(op, type_, &reason, "Execute", message).await;
    Ok(
        match op.spec.ttl_seconds_after_finished.filter(|t| *t > 0) {
            Some(ttl) => KubeAction::requeue(Duration::from_secs(u64::try_from(ttl).unwrap_or(0))),
            None => KubeAction::await_change(),
        },
    )
}
