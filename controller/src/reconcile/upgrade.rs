//! The IOSXESoftwareUpgrade reconciler (registered while
//! `--enable-iosxesoftwareupgrade` is on).
//!
//! Each reconcile reads the object fresh, then loops: call the pure
//! [`crate::upgrade::step`], write the status it returns with a
//! resourceVersion precondition (PUT of the status subresource: a stale
//! copy gets 409 and nothing below runs), announce a phase change as a
//! `PhaseTransition` Event, then run the decided actions and feed their
//! results back as observations, until the decision asks to wait.
//!
//! * The device is locked with the shared per-device Lease
//!   ([`crate::lease::DeviceLocks`]) from Pending to the terminal phase.
//! * The transfer runs in a task that outlives one reconcile
//!   ([`super::transfers::Runtime`]), under a global semaphore of
//!   `CVK_MAX_CONCURRENT_TRANSFERS`; its progress is written at most every
//!   [`super::transfers::PROGRESS_WRITE_INTERVAL`].
//! * A finalizer is held while the upgrade is not terminal: deleting before
//!   Activating cancels the transfer and ends Cancelled; from Activating on
//!   the object stays until the device has settled.
//! * OS.Activate is sent only after the status carrying the activation
//!   marker was written; pause points `upgrade-after-activation-marker`,
//!   `upgrade-after-activate` and `upgrade-enter-<Phase>` let crash tests
//!   kill the controller at each of those moments.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::engine::{
    self, add_finalizer, device_locks, drop_finalizer, gnoi_client, lease_holder, write_status,
};
use super::transfers::TransferTask;
use super::{Context, ReconcileError, ns_name};
use crate::client::os::{ActivateOutcome, InstallOutcome, InstallParams};
use crate::client::{ClientError, DeviceClient, ErrorClass, GnoiService};
use crate::crd::IOSXESoftwareUpgrade;
use crate::crd::upgrade::{Source, UpgradePhase};
use crate::lease::Acquire;
use crate::reason::{PHASE_TRANSITION, SourceReason, UpgradeReason, UpgradeReason as R};
use crate::source::{
    FetchRequest, ImageStream, ReadCounters, SourceError, UrlCredentials, source_error,
};
use crate::upgrade::device::{apply_leaf, images};
use crate::upgrade::step::{
    Action, ActivationObs, ActivationResult, DeviceObs, DeviceState, LeaseObs, Observation,
    SourceObs, TransferObs, TransferState, step,
};

/// Finalizer held while an upgrade is not terminal.
pub const FINALIZER: &str = "ops.cisco.vk/iosxesoftwareupgrade";

/// Kind name used in Lease holders and metrics.
pub const KIND: &str = "IOSXESoftwareUpgrade";

/// Key of `binaryData` holding a configMapRef image.
pub const CONFIGMAP_IMAGE_KEY: &str = "image";

/// Where transfer content comes from.
enum Content {
    /// A configMapRef image (small by definition).
    Bytes(Bytes),
    /// A url image, streamed from the content-addressed cache.
    Url(ImageStream),
}

/// A transfer attempt that could not start, as the step sees it.
fn source_failure(e: &SourceError) -> TransferState {
    match e {
        SourceError::DigestMismatch { .. } => TransferState::DigestMismatch(e.to_string()),
        e if e.is_retryable() => TransferState::Interrupted(format!("{}: {e}", e.reason())),
        e => TransferState::Failed {
            reason: R::Source(e.reason()),
            message: e.to_string(),
        },
    }
}

async fn url_credentials(
    ctx: &Context,
    ns: &str,
    up: &IOSXESoftwareUpgrade,
) -> Result<Option<UrlCredentials>, TransferState> {
    let Some(r) = &up.spec.image_source.url_secret_ref else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = match api.get_opt(&r.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(TransferState::Failed {
                reason: R::Source(SourceReason::CredentialsInvalid),
                message: format!(
                    "spec.imageSource.urlSecretRef: Secret {:?} does not exist in namespace {ns:?}",
                    r.name
                ),
            });
        }
        Err(e) => {
            return Err(TransferState::Interrupted(format!(
                "reading Secret {:?}: {e}",
                r.name
            )));
        }
    };
    UrlCredentials::from_secret_data(&secret.data.unwrap_or_default())
        .map(Some)
        .map_err(|e| TransferState::Failed {
            reason: R::Source(e.reason()),
            message: format!("spec.imageSource.urlSecretRef {:?}: {e}", r.name),
        })
}

/// Reconciles one IOSXESoftwareUpgrade.
pub async fn reconcile(
    obj: Arc<IOSXESoftwareUpgrade>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<IOSXESoftwareUpgrade> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(mut up) = api.get_opt(&name).await? else {
        return Ok(KubeAction::await_change());
    };
    let device = up.spec.device_ref.name.clone();
    engine::record_device(&device);
    if !ctx.settings.scope.serves_device(&device) {
        return Ok(KubeAction::await_change());
    }
    let uid = up.uid().unwrap_or_default();
    let deleting = up.metadata.deletion_timestamp.is_some();
    let terminal = up
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(UpgradePhase::is_terminal);
    if !deleting && !terminal {
        match add_finalizer(&api, &up, FINALIZER).await? {
            Some(written) => up = written,
            None => return Ok(KubeAction::requeue(engine::CONFLICT_RETRY)),
        }
    }
    let rt = &ctx.upgrades;
    let holder = lease_holder(KIND, &up);
    let locks = device_locks(&ctx, &ns);
    let mut status = up.status.clone().unwrap_or_default();
    let mut obs = Observation {
        deleting,
        transfer: rt.observe(&uid),
        ..Observation::default()
    };
    let mut client: Option<Arc<DeviceClient>> = None;

    for _ in 0..32 {
        let now = Timestamp::now();
        let d = step(&up.spec, &status, &obs, up.metadata.generation, now);
        if d.status != status {
            let progress_only = {
                let mut a = d.status.clone();
                a.transfer_progress = status.transfer_progress.clone();
                a == status
            };
            if !progress_only || rt.progress_due(&uid) {
                match write_status(&api, &up, d.status.clone()).await? {
                    Some(written) => up = written,
                    // Written by someone else since it was read: decide
                    // again on the fresh object.
                    None => return Ok(KubeAction::requeue(engine::CONFLICT_RETRY)),
                }
                if d.status.transfer_progress.is_some() {
                    rt.progress_written(&uid);
                }
            }
        }
        status = d.status;
        if let Some(t) = &d.transition {
            let type_ = if t.is_failure() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.metrics.upgrades.transition(
                &device,
                t.to.as_str(),
                status.reason.as_deref().unwrap_or(""),
            );
            tracing::info!(upgrade = %name, %device, from = %t.from, to = %t.to, note = %t.note, "upgrade phase transition");
            // The action names the transition: Events are aggregated by
            // (type, reason, action), so one action per pair keeps every
            // transition's note.
            let action = format!("{}To{}", t.from, t.to);
            ctx.publish(&up, type_, PHASE_TRANSITION, &action, t.event_note())
                .await;
            crate::pause::point(&format!("upgrade-enter-{}", t.to)).await;
        }
        let mut wait: Option<Duration> = None;
        let mut progressed =
            d.transition.is_some() && !status.phase.is_some_and(UpgradePhase::is_terminal);
        for action in d.actions {
            match action {
                Action::Requeue(d) => {
                    wait = Some(wait.map_or(d, |w| w.min(d)));
                    continue;
                }
                Action::AcquireLease => {
                    obs.lease = Some(match locks.acquire(&ns, &device, &holder).await {
                        Ok(Acquire::Held) => LeaseObs::Held,
                        Ok(Acquire::Busy(who)) => LeaseObs::Busy(who),
                        Err(e) => LeaseObs::Error(e.to_string()),
                    });
                }
                Action::ObserveDevice => {
                    obs.device = Some(observe_device(&ctx, &ns, &device, &mut client).await);
                }
                Action::ResolveSource => {
                    obs.source = Some(resolve_source(&ctx, &ns, &up).await);
                }
                Action::StartTransfer { version, attempt } => {
                    let c = match device_client(&ctx, &ns, &device, &mut client).await {
                        Ok(c) => c,
                        Err(m) => {
                            obs.transfer = Some(TransferObs {
                                attempt,
                                state: TransferState::Interrupted(m),
                            });
                            progressed = true;
                            continue;
                        }
                    };
                    obs.transfer =
                        Some(start_transfer(&ctx, &ns, &up, &uid, c, version, attempt).await);
                }
                Action::CancelTransfer => {
                    rt.cancel(&uid);
                    obs.transfer = None;
                }
                Action::HashLocalFile { path } => {
                    obs.local_file = Some(
                        match device_client(&ctx, &ns, &device, &mut client).await {
                            Err(m) => Err((R::LocalImageUnreadable, m)),
                            Ok(c) => match c.file_hash(&path).await {
                                Ok(h) => Ok(h.sha256),
                                Err(ClientError::ServiceUnsupported { .. }) => Err((
                                    R::ServiceUnsupported(GnoiService::File),
                                    format!(
                                        "localPathSHA256 cannot be checked: the device does not implement gNOI File ({path})"
                                    ),
                                )),
                                Err(e) => Err((
                                    R::LocalImageUnreadable,
                                    format!("reading {path} with gNOI File.Get: {e}"),
                                )),
                            },
                        },
                    );
                }
                Action::Activate {
                    version,
                    no_reboot,
                    rollback,
                } => {
                    // The status carrying the marker is written: from here
                    // on a restart observes instead of activating again.
                    crate::pause::point("upgrade-after-activation-marker").await;
                    let result = match device_client(&ctx, &ns, &device, &mut client).await {
                        Err(m) => ActivationResult::Unknown(m),
                        Ok(c) => activation_result(c.os_activate(&version, no_reboot).await),
                    };
                    tracing::info!(upgrade = %name, %device, %version, no_reboot, rollback, result = ?result, "OS.Activate sent");
                    crate::pause::point("upgrade-after-activate").await;
                    obs.activation = Some(ActivationObs { rollback, result });
                    obs.device = None;
                }
                Action::ReleaseLease => {
                    rt.cancel(&uid);
                    if let Err(e) = locks.release(&ns, &device, &holder).await {
                        tracing::warn!(upgrade = %name, error = %e, "releasing the device lease failed");
                        return Err(ReconcileError::Kube(kube_err(e)));
                    }
                    continue;
                }
                Action::RemoveFinalizer => {
                    match drop_finalizer(&api, &up, FINALIZER).await? {
                        Some(written) => up = written,
                        None => return Ok(KubeAction::requeue(engine::CONFLICT_RETRY)),
                    }
                    continue;
                }
            }
            progressed = true;
        }
        if let Some(w) = wait {
            return Ok(KubeAction::requeue(w));
        }
        if !progressed {
            return Ok(KubeAction::await_change());
        }
    }
    Ok(KubeAction::requeue(Duration::from_secs(1)))
}

fn kube_err(e: crate::lease::LeaseError) -> kube::Error {
    match e {
        crate::lease::LeaseError::Api { source, .. } => source,
        other => kube::Error::Service(other.to_string().into()),
    }
}

fn activation_result(r: Result<ActivateOutcome, ClientError>) -> ActivationResult {
    match r {
        Ok(ActivateOutcome::Activated) => ActivationResult::Accepted,
        Ok(ActivateOutcome::ConnectionClosed { detail }) => {
            ActivationResult::ConnectionClosed(detail)
        }
        Ok(ActivateOutcome::Error { kind, detail }) => {
            ActivationResult::Refused(format!("{kind}: {detail}"))
        }
        // Certainly not acted on: refused before it was sent, by
        // authentication, or for a missing service.
        Err(e) if e.refused_unsent() => ActivationResult::Refused(e.to_string()),
        Err(e) => ActivationResult::Unknown(e.to_string()),
    }
}

async fn device_client(
    ctx: &Context,
    ns: &str,
    device: &str,
    cached: &mut Option<Arc<DeviceClient>>,
) -> Result<Arc<DeviceClient>, String> {
    if let Some(c) = cached {
        return Ok(c.clone());
    }
    let c = gnoi_client(ctx, ns, device)
        .await
        .map_err(|e| e.to_string())?;
    *cached = Some(c.clone());
    Ok(c)
}

/// OS.Verify plus the gNMI install state, flash free space and staged
/// images. gNMI failures leave those fields unknown.
async fn observe_device(
    ctx: &Context,
    ns: &str,
    device: &str,
    cached: &mut Option<Arc<DeviceClient>>,
) -> DeviceObs {
    let c = match device_client(ctx, ns, device, cached).await {
        Ok(c) => c,
        Err(m) => return DeviceObs::NoTransport(m),
    };
    let v = match c.os_verify().await {
        Ok(v) => v,
        Err(e @ ClientError::ServiceUnsupported { .. }) => {
            return DeviceObs::OsUnsupported(e.to_string());
        }
        Err(e) => return DeviceObs::Unreachable(e.to_string()),
    };
    let mut st = DeviceState {
        running_version: v.version,
        activation_fail_message: v.activation_fail_message,
        ..DeviceState::default()
    };
    match c
        .gnmi_get(&[
            "/system/state/boot-time",
            "/system/install/state",
            "/system/filesystems/filesystem[name=flash:]/state/free",
        ])
        .await
    {
        Ok(values) => {
            for pv in values {
                apply_leaf(&mut st, &pv.path, &pv.value);
            }
        }
        Err(e) => tracing::debug!(%device, error = %e, "gNMI install state unavailable"),
    }
    match c.gnmi_get(&["/system/install/images"]).await {
        Ok(values) => st.images = images(values.iter().map(|pv| (pv.path.as_str(), &pv.value))),
        Err(e) => tracing::debug!(%device, error = %e, "gNMI image inventory unavailable or empty"),
    }
    DeviceObs::Up(st)
}

async fn read_configmap_image(
    ctx: &Context,
    ns: &str,
    cm_name: &str,
) -> Result<Bytes, (UpgradeReason, String)> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let cm = api
        .get_opt(cm_name)
        .await
        .map_err(|e| (R::ImageSourceUnavailable, format!("reading ConfigMap {cm_name:?}: {e}")))?
        .ok_or_else(|| {
            (
                R::ImageSourceNotFound,
                format!("spec.imageSource.configMapRef: ConfigMap {cm_name:?} does not exist in namespace {ns:?}"),
            )
        })?;
    let data = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(CONFIGMAP_IMAGE_KEY))
        .ok_or_else(|| {
            (
                R::InvalidImageSource,
                format!("spec.imageSource.configMapRef: ConfigMap {cm_name:?} has no binaryData[{CONFIGMAP_IMAGE_KEY:?}]"),
            )
        })?;
    let size = data.0.len() as u64;
    if size > ctx.upgrades.settings.max_image_bytes {
        return Err((
            R::Source(SourceReason::TooLarge),
            format!(
                "the image is {size} bytes; CISCO_VK_UPGRADE_MAX_IMAGE_BYTES allows {}",
                ctx.upgrades.settings.max_image_bytes
            ),
        ));
    }
    Ok(Bytes::from(data.0.clone()))
}

async fn resolve_source(ctx: &Context, ns: &str, up: &IOSXESoftwareUpgrade) -> SourceObs {
    match up.spec.image_source.source() {
        Ok(Source::ConfigMap(r)) => match read_configmap_image(ctx, ns, &r.name).await {
            Ok(b) => SourceObs::Resolved {
                digest: hex::encode(Sha256::digest(&b)),
                size: Some(b.len() as u64),
            },
            Err((reason, message)) => SourceObs::Failed { reason, message },
        },
        Ok(Source::Url { sha256, .. }) => SourceObs::Resolved {
            digest: sha256.to_owned(),
            size: None,
        },
        Ok(_) => SourceObs::Failed {
            reason: R::InvalidImageSource,
            message: "this image source is not transferred".into(),
        },
        Err(e) => SourceObs::Failed {
            reason: R::InvalidImageSource,
            message: e.to_string(),
        },
    }
}

/// Starts the transfer task of attempt `attempt`; returns its first state.
async fn start_transfer(
    ctx: &Arc<Context>,
    ns: &str,
    up: &IOSXESoftwareUpgrade,
    uid: &str,
    client: Arc<DeviceClient>,
    version: String,
    attempt: i32,
) -> TransferObs {
    let failed = |reason: UpgradeReason, message: String| TransferObs {
        attempt,
        state: TransferState::Failed { reason, message },
    };
    let content = match up.spec.image_source.source() {
        Ok(Source::ConfigMap(r)) => match read_configmap_image(ctx, ns, &r.name).await {
            Ok(b) => Content::Bytes(b),
            Err((reason, message)) => return failed(reason, message),
        },
        Ok(Source::Url { url, sha256, .. }) => {
            let credentials = match url_credentials(ctx, ns, up).await {
                Ok(c) => c,
                Err(state) => return TransferObs { attempt, state },
            };
            let cache = match &ctx.upgrades.cache {
                Ok(c) => c,
                Err(e) => {
                    return TransferObs {
                        attempt,
                        state: source_failure(e),
                    };
                }
            };
            let req = FetchRequest {
                url: url.to_owned(),
                sha256: sha256.to_owned(),
                credentials,
            };
            match cache.open(&req).await {
                Ok(stream) => Content::Url(stream),
                Err(e) => {
                    return TransferObs {
                        attempt,
                        state: source_failure(&e),
                    };
                }
            }
        }
        Ok(_) | Err(_) => {
            return failed(
                R::InvalidImageSource,
                "this image source is not transferred".into(),
            );
        }
    };
    let total = match &content {
        Content::Bytes(b) => Some(b.len() as u64),
        Content::Url(stream) => stream.total_bytes(),
    };
    let rt = &ctx.upgrades;
    rt.cancel(uid);
    let state = Arc::new(Mutex::new(TransferState::Running { bytes: 0, total }));
    let cancel = CancellationToken::new();
    rt.transfers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            uid.to_owned(),
            TransferTask {
                attempt,
                state: state.clone(),
                cancel: cancel.clone(),
            },
        );
    let params = InstallParams {
        version,
        package_size: total.unwrap_or(0),
        standby_supervisor: false,
        chunk_bytes: rt.settings.chunk_bytes,
    };
    let permits = rt.permits.clone();
    let metrics = ctx.metrics.upgrades.clone();
    let device = up.spec.device_ref.name.clone();
    let name = up.name_any();
    tokio::spawn(async move {
        let _permit = tokio::select! {
            () = cancel.cancelled() => return,
            p = permits.acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let started = Instant::now();
        let source_err: Arc<Mutex<Option<SourceError>>> = Arc::new(Mutex::new(None));
        let reads = match &content {
            Content::Url(stream) => Some(stream.reads()),
            Content::Bytes(_) => None,
        };
        let stream = match content {
            Content::Bytes(b) => {
                let chunks: Vec<Result<Bytes, std::io::Error>> = (0..b.len())
                    .step_by(64 * 1024)
                    .map(|i| Ok(b.slice(i..(i + 64 * 1024).min(b.len()))))
                    .collect();
                futures::stream::iter(chunks).boxed()
            }
            // Source errors end the stream before TransferEnd, so the
            // device discards the partial image; the error is kept to tell
            // a digest mismatch from a broken download.
            Content::Url(stream) => {
                let slot = source_err.clone();
                stream
                    .inspect(move |item| {
                        if let Err(e) = item
                            && let Some(se) = source_error(e)
                        {
                            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(se.clone());
                        }
                    })
                    .boxed()
            }
        };
        let progress_state = state.clone();
        let install = client.os_install(&params, stream, move |p| {
            *progress_state.lock().unwrap_or_else(|e| e.into_inner()) = TransferState::Running {
                bytes: p.bytes_sent,
                total,
            };
        });
        let result = tokio::select! {
            () = cancel.cancelled() => {
                tracing::info!(upgrade = %name, %device, "transfer cancelled");
                return;
            }
            r = install => r,
        };
        let end = match result {
            Ok(InstallOutcome::Validated {
                version,
                already_present,
                bytes_sent,
                ..
            }) => {
                metrics.transferred(&device, bytes_sent, started.elapsed(), "validated");
                TransferState::Validated {
                    version,
                    already_present,
                    bytes: bytes_sent,
                }
            }
            Ok(InstallOutcome::Failed {
                kind,
                detail,
                bytes_sent,
            }) => {
                metrics.transferred(&device, bytes_sent, started.elapsed(), "install_error");
                TransferState::InstallError { kind, detail }
            }
            Err(e) => {
                let bytes = match &e {
                    ClientError::Interrupted { bytes_sent, .. } => *bytes_sent,
                    _ => 0,
                };
                metrics.transferred(&device, bytes, started.elapsed(), e.category());
                let from_source = source_err.lock().unwrap_or_else(|p| p.into_inner()).take();
                match e {
                    ClientError::ContentSource { .. } if from_source.is_some() => {
                        source_failure(from_source.as_ref().expect("checked"))
                    }
                    other => match other.class() {
                        ErrorClass::Unsupported => TransferState::Failed {
                            reason: R::ServiceUnsupported(GnoiService::Os),
                            message: other.to_string(),
                        },
                        // Resumed from the device's partial image.
                        ErrorClass::Ambiguous | ErrorClass::Retryable => {
                            TransferState::Interrupted(other.to_string())
                        }
                        ErrorClass::Final => TransferState::Failed {
                            reason: R::InstallFailed,
                            message: other.to_string(),
                        },
                    },
                }
            }
        };
        tracing::info!(
            upgrade = %name,
            %device,
            state = ?end,
            live_bytes = reads.as_ref().map(ReadCounters::live),
            disk_bytes = reads.as_ref().map(ReadCounters::from_disk),
            "transfer finished"
        );
        *state.lock().unwrap_or_else(|e| e.into_inner()) = end;
    });
    TransferObs {
        attempt,
        state: TransferState::Running { bytes: 0, total },
    }
}
