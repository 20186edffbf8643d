//! The DeviceOperation reconciler: read-only gNOI probes, run once per
//! generation, with structured results in status.
//!
//! ```text
//!  observe: fresh object ──> step (pure) ──┬─ Start  ─> device + target ─> Running ─> execute ─> bound ─> spill? ─> terminal
//!                                          ├─ ExpireIn(d) / Expire (ttlSecondsAfterFinished)
//!                                          ├─ Done (terminal for this generation: never re-run)
//!                                          └─ OutOfScope (--device serves another device)
//! ```
//!
//! * **Once.** A terminal phase whose `observedGeneration` equals the
//!   object's generation is done: resyncs, restarts and the status writes'
//!   own watch events never re-run it. The decision reads the object fresh
//!   from the API server, not from the watch cache, which may still hold
//!   the Running copy the reconciler itself replaced. A new generation (a
//!   spec edit; the spec is not immutable, as upstream) runs again.
//! * **Results.** Each kind yields one `outputs[]` entry whose `command` is
//!   the kind and whose `output` is indented JSON of the client's result
//!   struct, plus a one-line `message` ("3 ping replies received").
//! * **Redacted.** GNOIFileGet text passes the secret filter of
//!   [`super::redact`] before anything is stored (`redacted: true`).
//! * **Bounded.** An output up to [`OutputLimits::inline_bytes`] stays
//!   inline; a larger one is written whole to the ConfigMap
//!   `<name>-output` (key `output`, controller owner reference to the
//!   operation; a ConfigMap of that name owned by anything else is never
//!   overwritten) and the inline output becomes a short preview ending in
//!   `<truncated; see artifactURIs>`, `truncated: true`, with
//!   `artifactURIs: [configmap://<ns>/<name>-output/output]`.
//! * **Fail fast.** A kind whose gNOI service the device answered
//!   UNIMPLEMENTED (now or within the capability cache's TTL) ends Failed
//!   with reason `<Service>ServiceUnsupported`, e.g.
//!   `SystemServiceUnsupported`; within the TTL no RPC is sent.
//! * **TTL.** With `ttlSecondsAfterFinished > 0` the operation (and its
//!   spill ConfigMap) is deleted that long after `completionTime`, with a
//!   Normal `Expired` Event.
//! * **Events** on transitions only: `Running`, then `Succeeded` (Normal)
//!   or the failure reason (Warning); a wait for the device (`NoTransport`)
//!   is announced once per reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

use super::conditions;
use super::device::client_reason;
use super::target::resolve_target;
use super::{Context, MANAGER, ReconcileError, apply_status, ns_name};
use crate::client::system::{L4Protocol, PingParams, TracerouteParams};
use crate::client::{self, ClientError, DeviceClient};
use crate::crd::operation::{
    CertArgs, Operation, OperationKind, OperationOutput, OperationPhase, TracerouteProtocol,
};
use crate::crd::{CiscoDevice, DeviceOperation, DeviceOperationStatus};
use crate::telemetry::OperationLabels;

/// Condition type of a DeviceOperation.
pub const READY: &str = "Ready";
/// Footer of a preview whose full output spilled to a ConfigMap.
pub const PREVIEW_FOOTER: &str = "\n<truncated; see artifactURIs>";
/// Data key of the spill ConfigMap.
pub const ARTIFACT_KEY: &str = "output";
/// How long to wait before retrying an operation whose device is missing or
/// not configured.
pub const RETRY_NO_TRANSPORT: Duration = Duration::from_secs(10);

/// Size limits of outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLimits {
    /// Largest output kept inline in status (64 KiB, as upstream).
    pub inline_bytes: usize,
    /// Size of the inline preview of a spilled output.
    pub preview_bytes: usize,
    /// Largest output written to a ConfigMap (which holds at most 1 MiB).
    pub max_artifact_bytes: usize,
    /// GNOIFileGet bytes read when `maxBytes` is unset or 0.
    pub default_file_get_bytes: u64,
    /// Longest an operation's device calls may take together.
    pub execute_timeout: Duration,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            inline_bytes: 64 * 1024,
            preview_bytes: 2 * 1024,
            max_artifact_bytes: 900 * 1024,
            default_file_get_bytes: 64 * 1024,
            execute_timeout: Duration::from_secs(300),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationFailure {
    /// The device call failed (including a service the device lacks).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The arguments cannot be sent.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The output is too large even for a ConfigMap.
    #[error(
        "the output is {size} bytes, more than the {limit}-byte artifact limit; lower spec.operation.gnoi.file.maxBytes"
    )]
    ArtifactTooLarge {
        /// Output size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The spill ConfigMap exists and belongs to something else.
    #[error(
        "ConfigMap {0:?} exists and is not owned by this DeviceOperation; it was left untouched"
    )]
    ArtifactConflict(String),
    /// Writing the spill ConfigMap failed.
    #[error("writing ConfigMap {name:?}: {message}")]
    ArtifactWrite {
        /// ConfigMap name.
        name: String,
        /// What failed.
        message: String,
    },
    /// The calls did not finish in time.
    #[error("the device calls did not finish within {0:?}")]
    Timeout(Duration),
    /// The result could not be rendered as JSON.
    #[error("rendering the result: {0}")]
    Render(String),
}

impl OperationFailure {
    /// Stable snake_case category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Client(e) => e.category(),
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::ArtifactTooLarge { .. } => "artifact_too_large",
            Self::ArtifactConflict(_) => "artifact_conflict",
            Self::ArtifactWrite { .. } => "artifact_write_failed",
            Self::Timeout(_) => "timeout",
            Self::Render(_) => "render",
        }
    }

    /// CamelCase reason for status and Events; a missing service is named.
    pub fn reason(&self) -> String {
        match self {
            Self::Client(ClientError::ServiceUnsupported { service, .. }) => {
                format!("{}ServiceUnsupported", service_name(*service))
            }
            Self::Client(e) => client_reason(e).to_owned(),
            Self::InvalidArguments(_) => "InvalidArguments".into(),
            Self::ArtifactTooLarge { .. } => "ArtifactTooLarge".into(),
            Self::ArtifactConflict(_) | Self::ArtifactWrite { .. } => "ArtifactWriteFailed".into(),
            Self::Timeout(_) => "DeadlineExceeded".into(),
            Self::Render(_) => "RenderFailed".into(),
        }
    }
}

/// The name status uses for a service: System, File, OS, Cert,
/// FactoryReset, GNMI.
pub fn service_name(s: client::GnoiService) -> &'static str {
    match s {
        client::GnoiService::System => "System",
        client::GnoiService::File => "File",
        client::GnoiService::Os => "OS",
        client::GnoiService::Cert => "Cert",
        client::GnoiService::FactoryReset => "FactoryReset",
        client::GnoiService::Gnmi => "GNMI",
    }
}

/// What the step reads from an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpView {
    /// metadata.generation.
    pub generation: Option<i64>,
    /// status.phase.
    pub phase: Option<OperationPhase>,
    /// status.observedGeneration.
    pub observed_generation: Option<i64>,
    /// status.completionTime.
    pub completion_time: Option<Timestamp>,
    /// spec.ttlSecondsAfterFinished.
    pub ttl_seconds: Option<i32>,
    /// The controller serves the operation's device.
    pub in_scope: bool,
}

impl OpView {
    /// The view of `op`, served when `in_scope`.
    pub fn of(op: &DeviceOperation, in_scope: bool) -> Self {
        let s = op.status.as_ref();
        Self {
            generation: op.metadata.generation,
            phase: s.and_then(|s| s.phase),
            observed_generation: s.and_then(|s| s.observed_generation),
            completion_time: s.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
            ttl_seconds: op.spec.ttl_seconds_after_finished,
            in_scope,
        }
    }
}

/// The decision for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStep {
    /// Another controller serves its device.
    OutOfScope,
    /// Run it (new, waiting for its device, interrupted, or a new
    /// generation).
    Start,
    /// Finished for this generation; nothing to do.
    Done,
    /// Finished; delete it after this long.
    ExpireIn(Duration),
    /// Finished and its TTL passed: delete it.
    Expire,
}

/// Decides what to do with an operation (pure).
pub fn step(v: &OpView, now: Timestamp) -> OpStep {
    if !v.in_scope {
        return OpStep::OutOfScope;
    }
    let finished =
        v.phase.is_some_and(OperationPhase::is_terminal) && v.observed_generation == v.generation;
    if !finished {
        return OpStep::Start;
    }
    match (v.ttl_seconds.filter(|t| *t > 0), v.completion_time) {
        (Some(ttl), Some(done)) => {
            let due = done + jiff::SignedDuration::from_secs(i64::from(ttl));
            if now >= due {
                OpStep::Expire
            } else {
                let left = now.duration_until(due);
                OpStep::ExpireIn(Duration::try_from(left).unwrap_or(Duration::from_secs(1)))
            }
        }
        _ => OpStep::Done,
    }
}

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

/// How file content is shown: UTF-8 text when it is printable, hex
/// otherwise.
pub fn content_text(bytes: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(bytes) {
        Ok(s)
            if s.chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) =>
        {
            ("utf-8", s.to_owned())
        }
        _ => ("hex", hex::encode(bytes)),
    }
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
                super::redact::redact(&content)
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

/// An output after the size rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded {
    /// What stays in status.
    pub inline: String,
    /// `inline` is a preview.
    pub truncated: bool,
    /// The full output to write to the spill ConfigMap.
    pub spill: Option<String>,
}

/// Applies the size rules to `output` (pure).
pub fn bound(output: String, limits: &OutputLimits) -> Result<Bounded, OperationFailure> {
    if output.len() <= limits.inline_bytes {
        return Ok(Bounded {
            inline: output,
            truncated: false,
            spill: None,
        });
    }
    if output.len() > limits.max_artifact_bytes {
        return Err(OperationFailure::ArtifactTooLarge {
            size: output.len(),
            limit: limits.max_artifact_bytes,
        });
    }
    let mut inline = conditions::truncate_utf8(&output, limits.preview_bytes).to_owned();
    inline.push_str(PREVIEW_FOOTER);
    Ok(Bounded {
        inline,
        truncated: true,
        spill: Some(output),
    })
}

/// Name of the spill ConfigMap of operation `name`.
pub fn artifact_name(name: &str) -> String {
    format!("{name}-output")
}

/// URI of the spilled output.
pub fn artifact_uri(namespace: &str, name: &str) -> String {
    format!(
        "configmap://{namespace}/{}/{ARTIFACT_KEY}",
        artifact_name(name)
    )
}

fn set_ready(
    s: &mut DeviceOperationStatus,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::set_ready(&mut s.conditions, ok, reason, message, generation, now);
}

/// Phase Pending while the device cannot be used (pure).
pub fn waiting_status(
    previous: &DeviceOperationStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> DeviceOperationStatus {
    let mut s = previous.clone();
    s.phase = Some(OperationPhase::Pending);
    s.observed_generation = generation;
    set_ready(&mut s, false, reason, &message, generation, now);
    s.message = Some(message);
    s
}

/// Phase Running, with the results of any earlier run cleared (pure).
pub fn running_status(
    previous: &DeviceOperationStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> DeviceOperationStatus {
    let mut s = previous.clone();
    s.phase = Some(OperationPhase::Running);
    s.observed_generation = generation;
    s.start_time = Some(Time(now));
    s.completion_time = None;
    s.outputs.clear();
    s.artifact_uris.clear();
    let message = "operation is running".to_owned();
    set_ready(&mut s, false, "Running", &message, generation, now);
    s.message = Some(message);
    s
}

/// A successful result, bounded, with its artifact URI when it spilled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    /// The rendered result.
    pub rendered: Rendered,
    /// The inline output and whether it is a preview.
    pub inline: String,
    /// `inline` is a preview.
    pub truncated: bool,
    /// Where the full output lives.
    pub artifact_uri: Option<String>,
}

/// The terminal status (pure).
pub fn finished_status(
    running: &DeviceOperationStatus,
    kind: OperationKind,
    result: &Result<Success, OperationFailure>,
    generation: Option<i64>,
    now: Timestamp,
) -> DeviceOperationStatus {
    let mut s = running.clone();
    s.observed_generation = generation;
    s.completion_time = Some(Time(now));
    if s.start_time.is_none() {
        s.start_time = Some(Time(now));
    }
    match result {
        Ok(ok) => {
            s.phase = Some(OperationPhase::Succeeded);
            s.outputs = vec![OperationOutput {
                command: kind.as_str().to_owned(),
                output: Some(ok.inline.clone()),
                err: None,
                truncated: ok.truncated,
                redacted: ok.rendered.redacted,
            }];
            s.artifact_uris = ok.artifact_uri.iter().cloned().collect();
            set_ready(
                &mut s,
                true,
                "Succeeded",
                &ok.rendered.message,
                generation,
                now,
            );
            s.message = Some(ok.rendered.message.clone());
        }
        Err(e) => {
            s.phase = Some(OperationPhase::Failed);
            let message = format!("{kind}: {e}");
            s.outputs = vec![OperationOutput {
                command: kind.as_str().to_owned(),
                output: None,
                err: Some(e.to_string()),
                truncated: false,
                redacted: false,
            }];
            s.artifact_uris.clear();
            set_ready(&mut s, false, &e.reason(), &message, generation, now);
            s.message = Some(message);
        }
    }
    s
}

fn owned_by(cm: &ConfigMap, uid: &str) -> bool {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

async fn write_artifact(
    ctx: &Context,
    op: &DeviceOperation,
    ns: &str,
    name: &str,
    content: String,
) -> Result<String, OperationFailure> {
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
        data: Some(BTreeMap::from([(ARTIFACT_KEY.to_owned(), content)])),
        ..ConfigMap::default()
    };
    api.patch(
        &cm_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(write_err)?;
    Ok(artifact_uri(ns, name))
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
        "Expired",
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
) -> Result<Action, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<DeviceOperation> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(op) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if op.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let device_name = op.spec.device_ref.name.clone();
    let in_scope = ctx.settings.scope.serves_device(&device_name);
    let generation = op.metadata.generation;
    let now = Timestamp::now();
    ctx.metrics.reconciled("DeviceOperation", "ok");
    match step(&OpView::of(&op, in_scope), now) {
        OpStep::OutOfScope | OpStep::Done => return Ok(Action::await_change()),
        OpStep::ExpireIn(d) => return Ok(Action::requeue(d)),
        OpStep::Expire => {
            expire(&ctx, &op, &ns, &name).await?;
            return Ok(Action::await_change());
        }
        OpStep::Start => {}
    }

    let kind = op.spec.operation.kind;
    let previous = op.status.clone().unwrap_or_default();

    if ctx.settings.gnoi.disabled {
        let failed = finished_status(
            &previous,
            kind,
            &Err(OperationFailure::Client(ClientError::Disabled)),
            generation,
            now,
        );
        return finish(&ctx, &api, &op, &name, kind, failed).await;
    }

    // Observe the device: the operation waits (Pending) while its device
    // is missing or cannot be configured.
    let devices: Api<CiscoDevice> = Api::namespaced(ctx.client.clone(), &ns);
    let target = match devices.get_opt(&device_name).await? {
        None => Err((
            "NoTransport",
            format!("CiscoDevice {device_name:?} does not exist in namespace {ns:?}"),
        )),
        Some(dev) => resolve_target(
            &ctx.client,
            &ns,
            &device_name,
            &dev.spec,
            &ctx.settings.gnoi,
        )
        .await
        .map_err(|e| {
            (
                "NoTransport",
                format!("CiscoDevice {device_name:?} cannot be reached: {e}"),
            )
        }),
    };
    let target = match target {
        Ok(t) => t,
        Err((reason, message)) => {
            let waiting = waiting_status(&previous, reason, message.clone(), generation, now);
            let announced = previous.phase == Some(OperationPhase::Pending)
                && previous.message.as_deref() == Some(message.as_str());
            if waiting != previous {
                apply_status(&api, &name, &waiting).await?;
            }
            if !announced {
                ctx.publish(&op, EventType::Warning, reason, "Observe", message)
                    .await;
            }
            return Ok(Action::requeue(RETRY_NO_TRANSPORT));
        }
    };
    let client = match ctx.pool.get_or_create(&target) {
        Ok(c) => c,
        Err(e) => {
            let failed = finished_status(&previous, kind, &Err(e.into()), generation, now);
            return finish(&ctx, &api, &op, &name, kind, failed).await;
        }
    };

    let running = running_status(&previous, generation, now);
    apply_status(&api, &name, &running).await?;
    ctx.publish(
        &op,
        EventType::Normal,
        "Running",
        "Execute",
        format!("{kind} device={device_name}"),
    )
    .await;
    tracing::info!(namespace = %ns, operation = %name, %kind, device = %device_name, "running");

    let limits = &ctx.settings.output_limits;
    let result = match tokio::time::timeout(
        limits.execute_timeout,
        execute(&client, &op.spec.operation, limits),
    )
    .await
    {
        Err(_) => Err(OperationFailure::Timeout(limits.execute_timeout)),
        Ok(r) => r,
    };
    let result = match result.and_then(|r| {
        let b = bound(r.output.clone(), limits)?;
        Ok((r, b))
    }) {
        Err(e) => Err(e),
        Ok((rendered, b)) => {
            let artifact_uri = match b.spill {
                None => Ok(None),
                Some(full) => write_artifact(&ctx, &op, &ns, &name, full).await.map(Some),
            };
            artifact_uri.map(|artifact_uri| Success {
                rendered,
                inline: b.inline,
                truncated: b.truncated,
                artifact_uri,
            })
        }
    };
    let done = finished_status(&running, kind, &result, generation, Timestamp::now());
    finish(&ctx, &api, &op, &name, kind, done).await
}

async fn finish(
    ctx: &Context,
    api: &Api<DeviceOperation>,
    op: &DeviceOperation,
    name: &str,
    kind: OperationKind,
    status: DeviceOperationStatus,
) -> Result<Action, ReconcileError> {
    apply_status(api, name, &status).await?;
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
            Some(ttl) => Action::requeue(Duration::from_secs(u64::try_from(ttl).unwrap_or(0))),
            None => Action::await_change(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn view(phase: Option<OperationPhase>, observed: Option<i64>) -> OpView {
        OpView {
            generation: Some(1),
            phase,
            observed_generation: observed,
            completion_time: Some(at(0)),
            ttl_seconds: None,
            in_scope: true,
        }
    }

    #[test]
    fn runs_once_per_generation() {
        use OperationPhase::*;
        assert_eq!(step(&view(None, None), at(0)), OpStep::Start);
        assert_eq!(step(&view(Some(Pending), Some(1)), at(0)), OpStep::Start);
        // Running after an interrupted run: read-only, so it runs again.
        assert_eq!(step(&view(Some(Running), Some(1)), at(0)), OpStep::Start);
        for done in [Succeeded, Failed, Cancelled] {
            assert_eq!(step(&view(Some(done), Some(1)), at(5)), OpStep::Done);
            // A spec edit (new generation) runs it again.
            assert_eq!(step(&view(Some(done), Some(0)), at(5)), OpStep::Start);
        }
        let mut v = view(None, None);
        v.in_scope = false;
        assert_eq!(step(&v, at(0)), OpStep::OutOfScope);
    }

    #[test]
    fn ttl_counts_from_completion() {
        let mut v = view(Some(OperationPhase::Succeeded), Some(1));
        v.ttl_seconds = Some(30);
        assert_eq!(step(&v, at(10)), OpStep::ExpireIn(Duration::from_secs(20)));
        assert_eq!(step(&v, at(30)), OpStep::Expire);
        v.ttl_seconds = Some(0);
        assert_eq!(step(&v, at(100)), OpStep::Done);
        v.ttl_seconds = Some(30);
        v.completion_time = None;
        assert_eq!(step(&v, at(100)), OpStep::Done);
    }

    #[test]
    fn outputs_are_bounded_and_spill() {
        let limits = OutputLimits {
            inline_bytes: 100,
            preview_bytes: 10,
            max_artifact_bytes: 1000,
            ..OutputLimits::default()
        };
        let small = bound("x".repeat(100), &limits).unwrap();
        assert_eq!((small.truncated, small.spill), (false, None));
        let big = bound("é".repeat(300), &limits).unwrap();
        assert!(big.truncated);
        assert_eq!(big.spill.as_deref(), Some("é".repeat(300).as_str()));
        assert_eq!(big.inline, format!("{}{PREVIEW_FOOTER}", "é".repeat(5)));
        let e = bound("x".repeat(1001), &limits).unwrap_err();
        assert_eq!(e.reason(), "ArtifactTooLarge");
        assert_eq!(e.category(), "artifact_too_large");
        assert_eq!(artifact_uri("ns", "op"), "configmap://ns/op-output/output");
    }

    #[test]
    fn a_missing_service_is_named_in_the_reason() {
        for (svc, reason) in [
            (client::GnoiService::System, "SystemServiceUnsupported"),
            (client::GnoiService::File, "FileServiceUnsupported"),
            (client::GnoiService::Os, "OSServiceUnsupported"),
            (client::GnoiService::Cert, "CertServiceUnsupported"),
        ] {
            let e = OperationFailure::Client(ClientError::ServiceUnsupported {
                service: svc,
                detail: String::new(),
            });
            assert_eq!(e.reason(), reason);
            assert_eq!(e.category(), "service_unsupported");
        }
    }

    #[test]
    fn statuses_through_a_run() {
        let gen_ = Some(2);
        let old = DeviceOperationStatus {
            phase: Some(OperationPhase::Succeeded),
            artifact_uris: vec!["configmap://a/b/output".into()],
            outputs: vec![OperationOutput::default()],
            ..Default::default()
        };
        let r = running_status(&old, gen_, at(0));
        assert_eq!(r.phase, Some(OperationPhase::Running));
        assert!(r.outputs.is_empty() && r.artifact_uris.is_empty());
        assert_eq!(r.message.as_deref(), Some("operation is running"));

        let ok = Success {
            rendered: Rendered {
                output: "{}".into(),
                message: "reboot inactive".into(),
                redacted: false,
            },
            inline: "{}".into(),
            truncated: false,
            artifact_uri: None,
        };
        let s = finished_status(&r, OperationKind::RebootStatus, &Ok(ok), gen_, at(3));
        assert_eq!(s.phase, Some(OperationPhase::Succeeded));
        assert_eq!(s.outputs[0].command, "GNOIRebootStatus");
        assert_eq!(s.completion_time, Some(Time(at(3))));
        assert_eq!(s.start_time, Some(Time(at(0))));
        assert!(crate::crd::common::is_condition_true(&s.conditions, READY));

        let err = OperationFailure::Client(ClientError::ServiceUnsupported {
            service: client::GnoiService::File,
            detail: "x".into(),
        });
        let f = finished_status(&r, OperationKind::FileGet, &Err(err), gen_, at(3));
        assert_eq!(f.phase, Some(OperationPhase::Failed));
        let c = f.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(c.reason, "FileServiceUnsupported");
        assert!(
            f.outputs[0]
                .err
                .as_deref()
                .unwrap()
                .contains("gnoi.file.File")
        );
        assert!(f.message.unwrap().starts_with("GNOIFileGet: "));
    }

    #[test]
    fn content_is_text_when_printable() {
        assert_eq!(
            content_text(b"hostname sw1\n!\n"),
            ("utf-8", "hostname sw1\n!\n".into())
        );
        assert_eq!(content_text(&[0, 1, 0xff]), ("hex", "0001ff".into()));
        assert_eq!(content_text(b"a\x1bb"), ("hex", "611b62".into()));
    }
}
