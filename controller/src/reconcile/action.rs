//! The IOSXEOperationalAction reconciler: write-class gNOI actions (Reboot,
//! CancelReboot, KillProcess, FilePut, FileRemove, FactoryReset), each sent
//! to its device **at most once**. Registered only while the write-class
//! gate is on; otherwise [`super::gate`] reports the gate.
//!
//! ```text
//!  fresh object ─> step (pure)
//!    ├─ Start ─> checks (confirm, args, path, ConfigMap) ──────────────── Rejected
//!    │           device + target (missing: Pending NoTransport, retry)
//!    │           finalizer
//!    │           device Lease (busy: Pending MutationLeaseBlocked, retry; CancelReboot skips it)
//!    │           cached UNIMPLEMENTED, baseline read (RebootStatus/Time/Stat) ─ Rejected
//!    │           Running + invocationID + dispatch record   (CAS on resourceVersion)
//!    │           ── pause "action-after-marker" ──
//!    │           the one RPC ─── pause "action-after-dispatch" ──
//!    │           answer ─> Succeeded | Failed (CAS: only if still Running with our marker)
//!    │           no clear answer (transport break, deadline) ─> stay Running, Observe
//!    ├─ Observe (Running with a marker: restart, or an unclear answer): never sent again;
//!    │           read the device (RebootStatus, File.Stat/Get) ─> Succeeded | Failed ActionNotApplied
//!    │           | Failed ActionOutcomeUnknown (nothing to read, or the window closed)
//!    ├─ Finished (terminal): release the Lease and the finalizer if still held
//!    └─ Abandon (deleted before dispatch): release, drop the finalizer
//! ```
//!
//! * **At most once.** Phase Running and `status.invocationID`
//!   (`<uid>/<generation>`) are written in one status update whose
//!   resourceVersion precondition makes it a compare-and-swap, before the
//!   RPC leaves. An object that carries the marker is observed, never
//!   dispatched again, whatever happened to the controller in between. The
//!   Running status also holds the dispatch record in `status.result`
//!   (the request, the baseline read before it, the FilePut content's size
//!   and SHA-256), which is what the observation compares against.
//! * **Rejected** means nothing mutating reached the device: a refused
//!   confirm or args block, a bad path, a missing ConfigMap, a service the
//!   device lacks, an unreachable device, a reboot already pending. The
//!   baseline read (RebootStatus, System.Time or File.Stat) doubles as the
//!   reachability check.
//! * **Lease.** Every kind but CancelReboot holds the device's mutation
//!   Lease ([`crate::lease`]) from before the baseline read until the
//!   action is terminal, so it never runs while an upgrade holds the
//!   device.
//! * **Finalizer** `ops.cisco.vk/iosxeoperationalaction-finalizer`: added
//!   before the Lease is taken, removed once terminal (with the Lease
//!   released first). A dispatched action that is
//!   deleted stays (Warning `DeletionPending`) until its outcome is known.
//! * **Events and metrics** on every transition:
//!   `cisco_vk_iosxe_operational_action_transitions_total{device,kind,phase,reason}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::Code;

use super::engine::{
    self, DeviceLookupError, add_finalizer, device_locks, gnoi_client, lease_holder,
    remove_finalizer, update_status, write_status,
};
use super::{Context, ReconcileError, ns_name};
use crate::client::factory_reset::{FactoryResetOutcome, FactoryResetParams};
use crate::client::paths::{WRITE_PREFIXES, validate_path};
use crate::client::system::{KillProcessParams, RebootMethod, RebootParams, Signal};
use crate::client::{ClientError, DeviceClient, ErrorClass, GnoiService, Support};
use crate::conditions;
use crate::crd::action::{
    ActionArgs, ActionKind, ActionPhase, IOSXEOperationalAction, IOSXEOperationalActionStatus,
    RebootMethod as CrdRebootMethod, Signal as CrdSignal,
};
use crate::lease::{Acquire, DeviceLocks, LeaseHolder};
use crate::reason::ActionReason;
use crate::reason::client_reason;
use crate::telemetry::ActionTransitionLabels;

/// The kind, as it appears in Events, metrics and Lease holders.
pub const KIND: &str = "IOSXEOperationalAction";
/// Finalizer that keeps a dispatched action until its outcome is known.
pub const FINALIZER: &str = "ops.cisco.vk/iosxeoperationalaction-finalizer";
/// Pause point right after the Running + invocationID status write.
pub const PAUSE_AFTER_MARKER: &str = "action-after-marker";
/// Pause point right after the RPC returned, before the outcome is written.
pub const PAUSE_AFTER_DISPATCH: &str = "action-after-dispatch";
/// ConfigMap key holding FilePut content (`binaryData`).
pub const CONTENT_KEY: &str = "content";
/// Longest the dispatched RPC may take (as upstream: 5 minutes).
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Grace on top of the dispatch timeout before an unobservable outcome is
/// declared unknown (as upstream).
pub const PERSIST_GRACE: Duration = Duration::from_secs(5);
/// Longest a Reboot or FactoryReset is observed for after dispatch: a
/// Catalyst 9300 reload takes minutes, and the outcome can only be read
/// once it is back.
pub const DISRUPTIVE_WINDOW: Duration = Duration::from_secs(1800);
/// Retry interval while waiting for a device, its target or its Lease.
pub const RETRY_WAIT: Duration = Duration::from_secs(5);
/// Retry interval while observing a dispatched action.
pub const RETRY_OBSERVE: Duration = Duration::from_secs(3);

/// How long after `startTime` a dispatched action may stay unobserved
/// before it ends Failed/ActionOutcomeUnknown.
pub fn outcome_window(kind: ActionKind) -> Duration {
    match kind {
        ActionKind::Reboot | ActionKind::FactoryReset => DISRUPTIVE_WINDOW,
        _ => DISPATCH_TIMEOUT + PERSIST_GRACE,
    }
}

/// How long after `startTime` a dispatch may still be in flight somewhere
/// (another controller serving the same object, or this one before a
/// restart): connect, plus the RPC's deadline (the stream idle timeout for
/// FilePut), plus a grace for the status write. Before then, a device that
/// shows no effect is not yet proof that the action was not applied.
pub fn settle_time(kind: ActionKind, t: &crate::client::Timeouts) -> Duration {
    let rpc = match kind {
        ActionKind::FilePut => t.stream_idle,
        _ => t.control,
    };
    t.connect + rpc + PERSIST_GRACE
}

/// The at-most-once marker of `obj`: `<uid>/<generation>`, or
/// `<namespace>/<name>/<generation>` for an object without a uid.
pub fn invocation_id(obj: &IOSXEOperationalAction) -> String {
    let generation = obj.metadata.generation.unwrap_or(0);
    match obj.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => format!("{uid}/{generation}"),
        _ => format!(
            "{}/{}/{generation}",
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// Wire name of a phase.
pub fn phase_str(p: ActionPhase) -> &'static str {
    match p {
        ActionPhase::Pending => "Pending",
        ActionPhase::Running => "Running",
        ActionPhase::Succeeded => "Succeeded",
        ActionPhase::Failed => "Failed",
        ActionPhase::Rejected => "Rejected",
    }
}

// ---- the decision -------------------------------------------------------

/// What the step reads from an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionView {
    /// status.phase.
    pub phase: Option<ActionPhase>,
    /// status.invocationID.
    pub invocation_id: Option<String>,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The finalizer is present.
    pub has_finalizer: bool,
    /// The controller serves the action's device.
    pub in_scope: bool,
}

impl ActionView {
    /// The view of `obj`, served when `in_scope`.
    pub fn of(obj: &IOSXEOperationalAction, in_scope: bool) -> Self {
        let s = obj.status.as_ref();
        Self {
            phase: s.and_then(|s| s.phase),
            invocation_id: s.and_then(|s| s.invocation_id.clone()),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            has_finalizer: obj.finalizers().iter().any(|f| f == FINALIZER),
            in_scope,
        }
    }
}

/// The decision for one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStep {
    /// Another controller serves its device.
    OutOfScope,
    /// Terminal. `cleanup`: the Lease and finalizer may still be held.
    Finished {
        /// Release the Lease and remove the finalizer.
        cleanup: bool,
    },
    /// Dispatched (or possibly dispatched): observe the device, never send
    /// again.
    Observe,
    /// Deleted before dispatch: release and let it go.
    Abandon,
    /// Not dispatched: check, lock, mark, dispatch.
    Start,
}

/// Decides what to do with an action (pure). A Running phase or an
/// invocation marker means the RPC may have left: such an action is only
/// ever observed.
pub fn step(v: &ActionView) -> ActionStep {
    if !v.in_scope {
        ActionStep::OutOfScope
    } else if v.phase.is_some_and(ActionPhase::is_terminal) {
        ActionStep::Finished {
            cleanup: v.has_finalizer,
        }
    } else if v.phase == Some(ActionPhase::Running) || v.invocation_id.is_some() {
        ActionStep::Observe
    } else if v.deleting {
        ActionStep::Abandon
    } else {
        ActionStep::Start
    }
}

// ---- the request --------------------------------------------------------

/// A refusal before anything mutating reached the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: ActionReason,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Rejection {
    fn new(reason: ActionReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The device request an action stands for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// System.Reboot.
    Reboot(RebootParams),
    /// System.CancelReboot.
    CancelReboot {
        /// Message logged by the device.
        message: String,
    },
    /// System.KillProcess.
    KillProcess(KillProcessParams),
    /// File.Put of a ConfigMap's content.
    FilePut {
        /// Device path (validated).
        path: String,
        /// Unix mode.
        permissions: u32,
        /// Source ConfigMap.
        config_map: String,
    },
    /// File.Remove.
    FileRemove {
        /// Device path (validated).
        path: String,
    },
    /// FactoryReset.Start.
    FactoryReset(FactoryResetParams),
}

impl Request {
    /// The gNOI service the dispatched RPC belongs to.
    pub fn service(&self) -> GnoiService {
        match self {
            Request::Reboot(_) | Request::CancelReboot { .. } | Request::KillProcess(_) => {
                GnoiService::System
            }
            Request::FilePut { .. } | Request::FileRemove { .. } => GnoiService::File,
            Request::FactoryReset(_) => GnoiService::FactoryReset,
        }
    }

    /// The request as JSON, for the dispatch record and Events.
    pub fn describe(&self) -> Value {
        match self {
            Request::Reboot(p) => json!({
                "method": p.method.as_str_name(),
                "delaySeconds": p.delay.as_secs(),
                "message": p.message,
                "force": p.force,
            }),
            Request::CancelReboot { message } => json!({ "message": message }),
            Request::KillProcess(p) => json!({
                "pid": p.pid,
                "name": p.name,
                "signal": p.signal.as_str_name().trim_start_matches("SIGNAL_"),
                "restart": p.restart,
            }),
            Request::FilePut {
                path,
                permissions,
                config_map,
            } => json!({
                "path": path,
                "permissions": format!("{permissions:#o}"),
                "configMapName": config_map,
            }),
            Request::FileRemove { path } => json!({ "path": path }),
            Request::FactoryReset(p) => json!({
                "factoryOS": p.factory_os,
                "zeroFill": p.zero_fill,
                "retainCerts": p.retain_certs,
            }),
        }
    }

    /// A one-line summary for Event notes: `method=COLD delaySeconds=0`.
    pub fn summary(&self) -> String {
        match self.describe() {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s:?}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        }
    }
}

/// Checks an action's spec and turns it into a [`Request`] (pure): the
/// confirm, exactly one args block of the right kind, the path rules and the
/// argument ranges. The API server enforces most of this at admission; the
/// check here covers objects stored before a CRD upgrade.
pub fn build_request(obj: &IOSXEOperationalAction) -> Result<Request, Rejection> {
    let spec = &obj.spec;
    if spec.confirm != spec.device_ref.name {
        return Err(Rejection::new(
            ActionReason::ConfirmMismatch,
            format!(
                "spec.confirm {:?} must equal spec.deviceRef.name {:?}; nothing was sent to the device",
                spec.confirm, spec.device_ref.name
            ),
        ));
    }
    let args = spec
        .action
        .args()
        .map_err(|e| Rejection::new(ActionReason::InvalidAction, e.to_string()))?;
    let path_rule = |field: &str, path: &str| {
        validate_path(path, WRITE_PREFIXES)
            .map(|p| p.to_string())
            .map_err(|e| Rejection::new(ActionReason::InvalidPath, format!("{field}: {e}")))
    };
    Ok(match args {
        ActionArgs::Reboot(r) => {
            let delay = r.delay_seconds();
            if !(0..=crate::crd::action::MAX_REBOOT_DELAY_SECONDS).contains(&delay) {
                return Err(Rejection::new(
                    ActionReason::InvalidAction,
                    format!(
                        "spec.action.reboot.delaySeconds must be 0-{}, got {delay}",
                        crate::crd::action::MAX_REBOOT_DELAY_SECONDS
                    ),
                ));
            }
            Request::Reboot(RebootParams {
                method: match r.method {
                    CrdRebootMethod::Cold => RebootMethod::Cold,
                    CrdRebootMethod::Nsf => RebootMethod::Nsf,
                    CrdRebootMethod::PowerDown => RebootMethod::Powerdown,
                    CrdRebootMethod::Halt => RebootMethod::Halt,
                    CrdRebootMethod::Warm => RebootMethod::Warm,
                },
                delay: Duration::from_secs(delay.unsigned_abs()),
                message: r.message.clone().unwrap_or_default(),
                force: r.force,
            })
        }
        ActionArgs::CancelReboot(c) => Request::CancelReboot {
            message: c.message.clone().unwrap_or_default(),
        },
        ActionArgs::KillProcess(k) => {
            let pid = k.pid.unwrap_or(0);
            let name = k.name.clone().unwrap_or_default();
            if pid == 0 && name.trim().is_empty() {
                return Err(Rejection::new(
                    ActionReason::InvalidAction,
                    "spec.action.killProcess needs a non-zero pid or a non-empty name",
                ));
            }
            Request::KillProcess(KillProcessParams {
                pid,
                name,
                signal: match k.signal {
                    CrdSignal::Term => Signal::Term,
                    CrdSignal::Kill => Signal::Kill,
                    CrdSignal::Hup => Signal::Hup,
                    CrdSignal::Abrt => Signal::Abrt,
                },
                restart: k.restart,
            })
        }
        ActionArgs::FilePut(f) => {
            if f.permissions > 0o777 {
                return Err(Rejection::new(
                    ActionReason::InvalidAction,
                    format!(
                        "spec.action.filePut.permissions must be 0-511 (0o777), got {}",
                        f.permissions
                    ),
                ));
            }
            Request::FilePut {
                path: path_rule("spec.action.filePut.path", &f.path)?,
                permissions: f.permissions,
                config_map: f.config_map_name.clone(),
            }
        }
        ActionArgs::FileRemove(f) => Request::FileRemove {
            path: path_rule("spec.action.fileRemove.path", &f.path)?,
        },
        ActionArgs::FactoryReset(f) => Request::FactoryReset(FactoryResetParams {
            factory_os: f.factory_os,
            zero_fill: f.zero_fill,
            retain_certs: f.retain_certs,
        }),
    })
}

/// The bytes of a FilePut, read from its ConfigMap (pure). Only
/// `binaryData["content"]` counts; `data["content"]` is named in the
/// refusal because it is the likely mistake.
pub fn content_of(cm: &ConfigMap, name: &str) -> Result<Vec<u8>, Rejection> {
    if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get(CONTENT_KEY)) {
        return Ok(b.0.clone());
    }
    let hint = if cm
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(CONTENT_KEY))
    {
        "; it has data[\"content\"], but FilePut reads binaryData[\"content\"] (base64)"
    } else {
        ""
    };
    Err(Rejection::new(
        ActionReason::ConfigMapContentMissing,
        format!(
            "ConfigMap {name:?} (spec.action.filePut.configMapName) has no binaryData[\"{CONTENT_KEY}\"]{hint}; nothing was sent to the device"
        ),
    ))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---- the dispatch record ------------------------------------------------

/// What was about to be sent, and what the device looked like just before:
/// written with the marker (inside `status.result`) so that a restarted
/// controller can tell whether the action took effect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchRecord {
    /// The action kind.
    pub kind: String,
    /// The request ([`Request::describe`]).
    pub request: Value,
    /// RebootStatus `count` read before dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_count_before: Option<u32>,
    /// RebootStatus `active` read before dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_active_before: Option<bool>,
    /// The FilePut/FileRemove path existed before dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_existed_before: Option<bool>,
    /// FilePut content size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_bytes: Option<u64>,
    /// FilePut content SHA-256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
}

/// `status.result`: the dispatch record, then the device's answer
/// (`response`) or, after a restart, what was read back (`observed`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultDoc {
    /// The dispatch record.
    pub dispatch: DispatchRecord,
    /// What the dispatched RPC answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// What the device showed when the outcome was read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Value>,
}

impl ResultDoc {
    fn parse(status: &IOSXEOperationalActionStatus) -> Option<Self> {
        status
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

// ---- outcomes ----------------------------------------------------------

/// How a dispatch or an observation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The action took effect.
    Succeeded {
        /// Summary.
        message: String,
        /// `response` or `observed`.
        detail: Value,
    },
    /// The device refused it, or it demonstrably did not take effect.
    Failed {
        /// Why.
        reason: ActionReason,
        /// What happened.
        message: String,
        /// `response` or `observed`, if any.
        detail: Option<Value>,
    },
    /// No clear answer yet: stay Running and observe again.
    Unclear {
        /// What blocked the answer.
        message: String,
    },
}

/// Answers of dispatched actions whose status write has not landed yet (the
/// API server failed just then), by invocation ID, so that the next
/// reconcile writes the answer the device gave instead of observing, and
/// possibly concluding ActionOutcomeUnknown for a kind that leaves nothing
/// to read back. Only a controller restart loses them; that is what the
/// observation path is for.
#[derive(Debug, Default)]
pub struct PendingAnswers(Mutex<HashMap<String, Outcome>>);

impl PendingAnswers {
    fn put(&self, invocation: &str, outcome: Outcome) {
        self.0
            .lock()
            .expect("answers lock")
            .insert(invocation.to_owned(), outcome);
    }

    fn get(&self, invocation: &str) -> Option<Outcome> {
        self.0
            .lock()
            .expect("answers lock")
            .get(invocation)
            .cloned()
    }

    fn remove(&self, invocation: &str) {
        self.0.lock().expect("answers lock").remove(invocation);
    }
}

/// Whether an error leaves it open whether the device acted: the transport
/// broke or the deadline passed, so the request may have been executed.
pub fn is_ambiguous(e: &ClientError) -> bool {
    e.class() == ErrorClass::Ambiguous
}

/// CamelCase reason of a definite device error.
pub fn error_reason(e: &ClientError) -> ActionReason {
    match e {
        ClientError::ServiceUnsupported { service, .. } => {
            ActionReason::ServiceUnsupported(*service)
        }
        ClientError::Unavailable { .. } | ClientError::DeadlineExceeded { .. } => {
            ActionReason::DeviceUnavailable
        }
        ClientError::Rpc { .. } => ActionReason::ActionFailed,
        other => ActionReason::Client(client_reason(other)),
    }
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rpc {
            code: Code::NotFound,
            ..
        }
    )
}

/// What a dispatched RPC answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Accepted; the details as JSON.
    Accepted(Value),
    /// FactoryReset.Start's answer.
    FactoryReset(FactoryResetOutcome),
}

/// Interprets what a dispatched RPC answered (pure).
pub fn interpret(kind: ActionKind, answer: Result<Answer, ClientError>) -> Outcome {
    match answer {
        Ok(Answer::FactoryReset(fr)) => interpret_factory_reset(fr),
        Ok(Answer::Accepted(detail)) => Outcome::Succeeded {
            message: format!("{kind} accepted by the device"),
            detail,
        },
        Err(e) if is_ambiguous(&e) => Outcome::Unclear {
            message: format!(
                "{kind} was sent but no clear answer came back ({e}); the device is observed to learn the outcome, the request is not sent again"
            ),
        },
        Err(e) => Outcome::Failed {
            reason: error_reason(&e),
            message: format!("{kind} refused by the device: {e}"),
            detail: None,
        },
    }
}

fn interpret_factory_reset(fr: FactoryResetOutcome) -> Outcome {
    let detail = json!({ "factoryReset": serde_json::to_value(&fr).unwrap_or(Value::Null) });
    match fr {
        FactoryResetOutcome::Started => Outcome::Succeeded {
            message: "FactoryReset started: the device wipes its storage and reboots".into(),
            detail,
        },
        FactoryResetOutcome::ConnectionClosed { detail: why } => Outcome::Succeeded {
            message: format!(
                "FactoryReset sent; the device closed the connection without answering, as it does when the reset starts ({why})"
            ),
            detail,
        },
        FactoryResetOutcome::Error {
            factory_os_unsupported,
            zero_fill_unsupported,
            detail: why,
            ..
        } => {
            let reason = if factory_os_unsupported {
                ActionReason::FactoryOSUnsupported
            } else if zero_fill_unsupported {
                ActionReason::ZeroFillUnsupported
            } else {
                ActionReason::FactoryResetRefused
            };
            Outcome::Failed {
                reason,
                message: format!("FactoryReset refused by the device: {why}"),
                detail: Some(detail),
            }
        }
    }
}

/// What the device shows about a dispatched action (pure decision over the
/// reads of [`observe`]).
#[derive(Debug, Clone)]
pub enum Reading {
    /// RebootStatus: (active, count).
    Reboot(Result<(bool, u32), ClientError>),
    /// File.Get hash of the path: Ok(sha256) / NotFound.
    FileHash(Result<String, ClientError>),
    /// File.Stat of the path.
    FileStat(Result<usize, ClientError>),
    /// Nothing can be read for this kind.
    Nothing,
}

/// Decides a dispatched action's outcome from a device reading (pure).
pub fn judge(kind: ActionKind, rec: &DispatchRecord, reading: Reading) -> Outcome {
    let unknown = |message: String| Outcome::Failed {
        reason: ActionReason::ActionOutcomeUnknown,
        message,
        detail: None,
    };
    let not_applied = |message: String, observed: Value| Outcome::Failed {
        reason: ActionReason::ActionNotApplied,
        message: format!(
            "{message}; the request was not sent again — create a new action to retry"
        ),
        detail: Some(observed),
    };
    let unclear = |e: &ClientError| Outcome::Unclear {
        message: format!(
            "waiting for the device to answer so the outcome of {kind} can be read: {e}"
        ),
    };
    match reading {
        Reading::Nothing => unknown(format!(
            "{kind} was dispatched but its answer was lost (controller restart or broken connection), and it leaves nothing the controller can read back; check the device"
        )),
        Reading::Reboot(Err(e)) | Reading::FileHash(Err(e)) | Reading::FileStat(Err(e))
            if is_ambiguous(&e) =>
        {
            unclear(&e)
        }
        Reading::Reboot(Err(e)) => unknown(format!(
            "the outcome of {kind} cannot be read back: RebootStatus failed: {e}"
        )),
        Reading::Reboot(Ok((active, count))) => {
            let observed = json!({ "rebootActive": active, "rebootCount": count });
            let Some(before) = rec.reboot_count_before else {
                return unknown(format!(
                    "the outcome of {kind} cannot be read back: no reboot count was recorded before dispatch"
                ));
            };
            let rebooted = count > before;
            match kind {
                ActionKind::Reboot | ActionKind::FactoryReset => {
                    if rebooted || active {
                        let what = if rebooted {
                            format!("the device rebooted (reboot count {before} -> {count})")
                        } else {
                            "a reboot is pending on the device".to_owned()
                        };
                        Outcome::Succeeded {
                            message: format!(
                                "{kind} took effect, read back from the device: {what}"
                            ),
                            detail: observed,
                        }
                    } else {
                        not_applied(
                            format!(
                                "the device shows no sign of the {kind}: reboot count unchanged at {count} and no reboot pending"
                            ),
                            observed,
                        )
                    }
                }
                ActionKind::CancelReboot => {
                    if rebooted {
                        not_applied(
                            format!(
                                "the reboot to be cancelled ran (reboot count {before} -> {count})"
                            ),
                            observed,
                        )
                    } else if active {
                        not_applied("a reboot is still pending on the device".into(), observed)
                    } else {
                        Outcome::Succeeded {
                            message: "CancelReboot took effect, read back from the device: no reboot pending".into(),
                            detail: observed,
                        }
                    }
                }
                _ => unknown(format!("{kind} cannot be judged from RebootStatus")),
            }
        }
        Reading::FileHash(result) => {
            let want = rec.content_sha256.clone().unwrap_or_default();
            match result {
                Ok(sha) if sha == want => Outcome::Succeeded {
                    message: format!(
                        "FilePut took effect, read back from the device: the file's SHA-256 is {sha}"
                    ),
                    detail: json!({ "sha256": sha }),
                },
                Ok(sha) => not_applied(
                    format!("the file on the device hashes to {sha}, not to the content's {want}"),
                    json!({ "sha256": sha }),
                ),
                Err(e) if is_not_found(&e) => not_applied(
                    "the file is not on the device".into(),
                    json!({ "exists": false }),
                ),
                Err(e) => unknown(format!("the outcome of FilePut cannot be read back: {e}")),
            }
        }
        Reading::FileStat(result) => match result {
            Err(e) if is_not_found(&e) => Outcome::Succeeded {
                message: "FileRemove took effect, read back from the device: the file is gone"
                    .into(),
                detail: json!({ "exists": false }),
            },
            Ok(_) => not_applied(
                "the file is still on the device".into(),
                json!({ "exists": true }),
            ),
            Err(e) => unknown(format!(
                "the outcome of FileRemove cannot be read back: {e}"
            )),
        },
    }
}

/// What a later reconcile sees of a dispatched action.
#[derive(Debug, Clone)]
pub enum Seen<'a> {
    /// The dispatch record in `status.result` is unreadable.
    NoRecord,
    /// The device cannot be reached: why.
    Unreachable(String),
    /// What the device shows, against the record.
    Read(&'a DispatchRecord, Reading),
}

/// When a dispatched action may be concluded, counted from `startTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Before this, the dispatch may still be in flight ([`settle_time`]).
    pub settle: Duration,
    /// After this, an outcome still unclear is unknown ([`outcome_window`]).
    pub outcome: Duration,
}

/// Decides the outcome of a dispatched action observed `elapsed` after it
/// started (pure). The rules, in order:
/// - no readable record: Failed/ActionOutcomeUnknown (nothing to judge
///   against; it is never sent again);
/// - device unreachable: Unclear;
/// - otherwise the device reading is judged ([`judge`]);
/// - before the settle time, a failure the device did not state itself
///   (anything but ActionFailed) is Unclear: the dispatch may still be in
///   flight, so no effect is not yet proof of none;
/// - at or after the outcome window, Unclear becomes
///   Failed/ActionOutcomeUnknown.
pub fn conclude_observed(
    kind: ActionKind,
    invocation: &str,
    seen: Seen<'_>,
    elapsed: Duration,
    windows: Windows,
) -> Outcome {
    let outcome = match seen {
        Seen::NoRecord => Outcome::Failed {
            reason: ActionReason::ActionOutcomeUnknown,
            message: format!(
                "{kind} was marked as dispatched (invocation {invocation}) but its dispatch record is unreadable; it was not sent again — check the device"
            ),
            detail: None,
        },
        Seen::Unreachable(message) => Outcome::Unclear {
            message: format!("cannot reach the device to read the outcome: {message}"),
        },
        Seen::Read(rec, reading) => judge(kind, rec, reading),
    };
    let outcome = match outcome {
        Outcome::Failed {
            reason, message, ..
        } if elapsed < windows.settle && reason != ActionReason::ActionFailed => Outcome::Unclear {
            message: format!(
                "{message} (not concluded before {}s after dispatch, in case the dispatch is still in flight)",
                windows.settle.as_secs()
            ),
        },
        other => other,
    };
    match outcome {
        Outcome::Unclear { message } if elapsed >= windows.outcome => Outcome::Failed {
            reason: ActionReason::ActionOutcomeUnknown,
            message: format!(
                "{kind} was dispatched {}s ago and its outcome could not be read within {}s: {message}; it was not sent again — check the device",
                elapsed.as_secs(),
                windows.outcome.as_secs()
            ),
            detail: None,
        },
        other => other,
    }
}

/// Reads what the device shows about a dispatched action. Never sends the
/// action itself.
pub async fn observe(client: &DeviceClient, kind: ActionKind, rec: &DispatchRecord) -> Reading {
    let path = || {
        rec.request
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match kind {
        ActionKind::Reboot | ActionKind::CancelReboot | ActionKind::FactoryReset => {
            Reading::Reboot(client.reboot_status().await.map(|s| (s.active, s.count)))
        }
        ActionKind::FilePut => Reading::FileHash(client.file_hash(&path()).await.map(|h| h.sha256)),
        ActionKind::FileRemove => {
            Reading::FileStat(client.file_stat(&path()).await.map(|s| s.len()))
        }
        ActionKind::KillProcess => Reading::Nothing,
    }
}

// ---- status ------------------------------------------------------------

fn set_ready(
    s: &mut IOSXEOperationalActionStatus,
    ok: bool,
    reason: ActionReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::set_ready(
        &mut s.conditions,
        ok,
        reason.as_str(),
        message,
        generation,
        now,
    );
}

/// Pending while the device, its target or its Lease is not available
/// (pure).
pub fn waiting_status(
    prev: &IOSXEOperationalActionStatus,
    reason: ActionReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.phase = Some(ActionPhase::Pending);
    s.observed_generation = generation;
    s.reason = Some(reason.as_str().to_owned());
    s.message = Some(message.to_owned());
    s.failure_reason = None;
    set_ready(&mut s, false, reason, message, generation, now);
    s
}

/// Rejected: refused before anything mutating reached the device (pure).
pub fn rejected_status(
    prev: &IOSXEOperationalActionStatus,
    r: &Rejection,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.phase = Some(ActionPhase::Rejected);
    s.observed_generation = generation;
    s.reason = Some(r.reason.as_str().to_owned());
    s.failure_reason = Some(r.reason.as_str().to_owned());
    s.message = Some(r.message.clone());
    s.completion_time = Some(Time(now));
    s.invocation_id = None;
    set_ready(&mut s, false, r.reason, &r.message, generation, now);
    s
}

/// Running with the marker and the dispatch record (pure).
pub fn running_status(
    prev: &IOSXEOperationalActionStatus,
    invocation: &str,
    rec: &DispatchRecord,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.phase = Some(ActionPhase::Running);
    s.observed_generation = generation;
    s.invocation_id = Some(invocation.to_owned());
    s.start_time = Some(Time(now));
    s.completion_time = None;
    s.reason = Some(ActionReason::Dispatching.as_str().into());
    s.failure_reason = None;
    let message = format!(
        "{} is being sent to the device (invocation {invocation})",
        rec.kind
    );
    s.message = Some(message.clone());
    s.result = Some(
        ResultDoc {
            dispatch: rec.clone(),
            ..ResultDoc::default()
        }
        .to_json(),
    );
    set_ready(
        &mut s,
        false,
        ActionReason::Running,
        &message,
        generation,
        now,
    );
    s
}

/// The status for an outcome (pure): terminal for Succeeded/Failed, Running
/// with the reason `Observing` for Unclear.
pub fn outcome_status(
    prev: &IOSXEOperationalActionStatus,
    outcome: &Outcome,
    after_restart: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.observed_generation = generation;
    let mut doc = ResultDoc::parse(prev).unwrap_or_default();
    let mut put_detail = |d: Option<&Value>| {
        if let Some(d) = d {
            if after_restart {
                doc.observed = Some(d.clone());
            } else {
                doc.response = Some(d.clone());
            }
        }
    };
    match outcome {
        Outcome::Succeeded { message, detail } => {
            put_detail(Some(detail));
            s.phase = Some(ActionPhase::Succeeded);
            s.reason = Some(ActionReason::Succeeded.as_str().into());
            s.failure_reason = None;
            s.message = Some(message.clone());
            s.completion_time = Some(Time(now));
            set_ready(
                &mut s,
                true,
                ActionReason::Succeeded,
                message,
                generation,
                now,
            );
        }
        Outcome::Failed {
            reason,
            message,
            detail,
        } => {
            put_detail(detail.as_ref());
            s.phase = Some(ActionPhase::Failed);
            s.reason = Some(reason.as_str().to_owned());
            s.failure_reason = Some(reason.as_str().to_owned());
            s.message = Some(message.clone());
            s.completion_time = Some(Time(now));
            set_ready(&mut s, false, *reason, message, generation, now);
        }
        Outcome::Unclear { message } => {
            s.phase = Some(ActionPhase::Running);
            s.reason = Some(ActionReason::Observing.as_str().into());
            s.message = Some(message.clone());
            set_ready(
                &mut s,
                false,
                ActionReason::Observing,
                message,
                generation,
                now,
            );
        }
    }
    if s.start_time.is_none() {
        s.start_time = Some(Time(now));
    }
    s.result = Some(doc.to_json());
    s
}

// ---- API writes ----------------------------------------------------------

/// How long a marker write whose answer was lost is looked for.
const MARKER_CONFIRM: Duration = Duration::from_secs(60);

/// After a marker write that failed in transport: reads the object until
/// the API server answers (bounded by [`MARKER_CONFIRM`]). The object when
/// it is Running with this invocation (the write landed and nothing was
/// dispatched yet: this process is the only one that dispatches it, as a
/// reconcile that finds a marker only observes); `None` when the write did
/// not land or the API server stayed away.
async fn confirm_marker(
    api: &Api<IOSXEOperationalAction>,
    name: &str,
    invocation: &str,
) -> Option<IOSXEOperationalAction> {
    let deadline = tokio::time::Instant::now() + MARKER_CONFIRM;
    loop {
        match api.get_opt(name).await {
            Ok(Some(o)) => {
                let st = o.status.as_ref();
                let ours = st.and_then(|s| s.invocation_id.as_deref()) == Some(invocation)
                    && st.and_then(|s| s.phase) == Some(ActionPhase::Running);
                return ours.then_some(o);
            }
            Ok(None) => return None,
            Err(e) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(action = %name, error = %e,
                        "the marker write's answer was lost and the API server did not answer again in time");
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Writes the status `make` derives from the fresh object, provided the
/// object still carries `invocation` and is Running; retried on conflicts
/// (bounded). `None` when the object moved on without us, or stayed
/// contended (the next reconcile finds it Running and reads the outcome back
/// from the device).
async fn cas_while_running<F>(
    api: &Api<IOSXEOperationalAction>,
    name: &str,
    invocation: &str,
    mut make: F,
) -> Result<Option<IOSXEOperationalAction>, ReconcileError>
where
    F: FnMut(&IOSXEOperationalActionStatus) -> IOSXEOperationalActionStatus,
{
    update_status(api, name, |fresh| {
        let st = fresh.status.clone().unwrap_or_default();
        let ours = st.invocation_id.as_deref() == Some(invocation)
            && st.phase == Some(ActionPhase::Running);
        ours.then(|| make(&st))
    })
    .await
}

// ---- the reconciler ------------------------------------------------------

struct Env<'a> {
    ctx: &'a Context,
    api: Api<IOSXEOperationalAction>,
    ns: String,
    name: String,
    device: String,
    kind: ActionKind,
}

impl Env<'_> {
    fn holder(&self, obj: &IOSXEOperationalAction) -> LeaseHolder {
        lease_holder(KIND, obj)
    }

    fn locks(&self) -> DeviceLocks {
        device_locks(self.ctx, &self.ns)
    }

    /// Releases the device Lease if this action holds it; `false` when the
    /// API refused (the finalizer then stays, and the next reconcile tries
    /// again).
    async fn release(&self, obj: &IOSXEOperationalAction) -> bool {
        if !self.kind.needs_device_lease() {
            return true;
        }
        match self
            .locks()
            .release(&self.ns, &self.device, &self.holder(obj))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(action = %self.name, device = %self.device, error = %e,
                    "releasing the device lease failed; retrying");
                false
            }
        }
    }

    /// Releases the Lease, then removes the finalizer; retried later if the
    /// Lease could not be released.
    async fn clean_up(&self, obj: &IOSXEOperationalAction) -> Result<KubeAction, ReconcileError> {
        if !self.release(obj).await {
            return Ok(KubeAction::requeue(RETRY_WAIT));
        }
        remove_finalizer(&self.api, &self.name, FINALIZER).await?;
        Ok(KubeAction::await_change())
    }

    fn count(&self, phase: ActionPhase, reason: ActionReason) {
        self.ctx
            .metrics
            .action_transitions
            .get_or_create(&ActionTransitionLabels {
                device: self.device.clone(),
                kind: self.kind.as_str().to_owned(),
                phase: phase_str(phase).to_owned(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts the transition, logs it and publishes its Event.
    async fn announce(
        &self,
        obj: &IOSXEOperationalAction,
        phase: ActionPhase,
        reason: ActionReason,
        summary: &str,
        message: &str,
    ) {
        self.count(phase, reason);
        tracing::info!(namespace = %self.ns, action = %self.name, kind = %self.kind,
            device = %self.device, phase = phase_str(phase), %reason, %message, "action transition");
        let type_ = match phase {
            ActionPhase::Succeeded | ActionPhase::Running => EventType::Normal,
            _ => EventType::Warning,
        };
        let note = format!("{} device={} {summary}: {message}", self.kind, self.device);
        self.ctx
            .publish(obj, type_, reason.as_str(), "Execute", note)
            .await;
    }

    /// Writes a terminal Rejected status (only over an undispatched object)
    /// and cleans up.
    async fn reject(
        &self,
        obj: &IOSXEOperationalAction,
        r: Rejection,
        summary: &str,
    ) -> Result<KubeAction, ReconcileError> {
        let prev = obj.status.clone().unwrap_or_default();
        let status = rejected_status(&prev, &r, obj.metadata.generation, Timestamp::now());
        if write_status(&self.api, obj, status).await?.is_none() {
            return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
        }
        self.announce(obj, ActionPhase::Rejected, r.reason, summary, &r.message)
            .await;
        self.clean_up(obj).await
    }

    /// Pending while something the action needs is missing; announced once
    /// per reason and message.
    async fn wait(
        &self,
        obj: &IOSXEOperationalAction,
        reason: ActionReason,
        message: String,
        summary: &str,
    ) -> Result<KubeAction, ReconcileError> {
        let prev = obj.status.clone().unwrap_or_default();
        let same = prev.phase == Some(ActionPhase::Pending)
            && prev.reason.as_deref() == Some(reason.as_str())
            && prev.message.as_deref() == Some(message.as_str());
        if !same {
            let status = waiting_status(
                &prev,
                reason,
                &message,
                obj.metadata.generation,
                Timestamp::now(),
            );
            if write_status(&self.api, obj, status).await?.is_none() {
                return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
            }
            self.announce(obj, ActionPhase::Pending, reason, summary, &message)
                .await;
        }
        Ok(KubeAction::requeue(RETRY_WAIT))
    }

    async fn client(&self) -> Result<Arc<DeviceClient>, (ActionReason, String)> {
        gnoi_client(self.ctx, &self.ns, &self.device)
            .await
            .map_err(|e| {
                let reason = match &e {
                    DeviceLookupError::Client { source, .. } => error_reason(source),
                    _ => ActionReason::NoTransport,
                };
                (reason, e.to_string())
            })
    }
}

/// Reconciles one IOSXEOperationalAction (write-class gate on).
pub async fn reconcile(
    obj: Arc<IOSXEOperationalAction>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<IOSXEOperationalAction> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(obj) = api.get_opt(&name).await? else {
        return Ok(KubeAction::await_change());
    };
    let device = obj.spec.device_ref.name.clone();
    engine::record_device(&device);
    let in_scope = ctx.settings.scope.serves_device(&device);
    let env = Env {
        ctx: &ctx,
        api,
        ns,
        name,
        device,
        kind: obj.spec.action.kind,
    };
    match step(&ActionView::of(&obj, in_scope)) {
        ActionStep::OutOfScope | ActionStep::Finished { cleanup: false } => {
            Ok(KubeAction::await_change())
        }
        ActionStep::Finished { cleanup: true } | ActionStep::Abandon => env.clean_up(&obj).await,
        ActionStep::Observe => observe_dispatched(&env, &obj).await,
        ActionStep::Start => start(&env, &obj).await,
    }
}

async fn start(env: &Env<'_>, obj: &IOSXEOperationalAction) -> Result<KubeAction, ReconcileError> {
    let kind = env.kind;
    let request = match build_request(obj) {
        Ok(r) => r,
        Err(r) => return env.reject(obj, r, "").await,
    };
    let summary = request.summary();
    if env.ctx.settings.gnoi.disabled {
        return env
            .reject(
                obj,
                Rejection::new(
                    ActionReason::GnoiDisabled,
                    ClientError::Disabled.to_string(),
                ),
                &summary,
            )
            .await;
    }
    // FilePut content: read and hashed before anything else happens.
    let content = match &request {
        Request::FilePut { config_map, .. } => {
            let cms: Api<ConfigMap> = Api::namespaced(env.ctx.client.clone(), &env.ns);
            match cms.get_opt(config_map).await? {
                None => {
                    return env
                        .reject(
                            obj,
                            Rejection::new(
                                ActionReason::ConfigMapNotFound,
                                format!(
                                    "ConfigMap {config_map:?} (spec.action.filePut.configMapName) does not exist in namespace {:?}; nothing was sent to the device",
                                    env.ns
                                ),
                            ),
                            &summary,
                        )
                        .await;
                }
                Some(cm) => match content_of(&cm, config_map) {
                    Ok(b) => Some(b),
                    Err(r) => return env.reject(obj, r, &summary).await,
                },
            }
        }
        _ => None,
    };

    let client = match env.client().await {
        Ok(c) => c,
        Err((reason, message)) => return env.wait(obj, reason, message, &summary).await,
    };

    // The finalizer comes before the Lease: whatever holds the Lease also
    // holds the finalizer, so a crash anywhere after this point leaves
    // cleanup for the Finished or Abandon step.
    let Some(obj) = add_finalizer(&env.api, obj, FINALIZER).await? else {
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    let obj = &obj;

    if kind.needs_device_lease() {
        match env
            .locks()
            .acquire(&env.ns, &env.device, &env.holder(obj))
            .await
        {
            Ok(Acquire::Held) => {}
            Ok(Acquire::Busy(who)) => {
                return env
                    .wait(
                        obj,
                        ActionReason::MutationLeaseBlocked,
                        format!(
                            "device {:?} is held by {who}; {kind} waits until it is released",
                            env.device
                        ),
                        &summary,
                    )
                    .await;
            }
            Err(e) => {
                return env
                    .wait(
                        obj,
                        ActionReason::MutationLeaseError,
                        e.to_string(),
                        &summary,
                    )
                    .await;
            }
        }
    }

    // A service the device is known to lack: refused without a call.
    let service = request.service();
    if let Some(s) = client
        .capabilities()
        .iter()
        .find(|s| s.service == service && s.support == Support::Unsupported)
    {
        let reason = ActionReason::ServiceUnsupported(s.service);
        return env
            .reject(
                obj,
                Rejection::new(
                    reason,
                    format!(
                        "the device answered UNIMPLEMENTED for {}; {kind} was not sent",
                        service.proto_name()
                    ),
                ),
                &summary,
            )
            .await;
    }

    // Baseline read: reachability, and what the outcome is compared with.
    let mut rec = DispatchRecord {
        kind: kind.as_str().to_owned(),
        request: request.describe(),
        ..DispatchRecord::default()
    };
    if let Some(b) = &content {
        rec.content_bytes = Some(b.len() as u64);
        rec.content_sha256 = Some(sha256_hex(b));
    }
    if let Err(r) = baseline(&client, &request, &mut rec).await {
        return env.reject(obj, r, &summary).await;
    }

    // The marker: compare-and-swap on resourceVersion.
    let invocation = invocation_id(obj);
    let generation = obj.metadata.generation;
    let prev = obj.status.clone().unwrap_or_default();
    let running = running_status(&prev, &invocation, &rec, generation, Timestamp::now());
    let marked = match write_status(&env.api, obj, running).await {
        // The API server may have stored the marker and lost only the
        // answer: find out before giving up, or the next reconcile would
        // see a marker, take the action for dispatched and observe a
        // device that was never asked (ActionNotApplied).
        Err(ReconcileError::Kube(e)) if !matches!(e, kube::Error::Api(_)) => {
            match confirm_marker(&env.api, &env.name, &invocation).await {
                Some(obj) => Some(obj),
                None => return Err(ReconcileError::Kube(e)),
            }
        }
        other => other?,
    };
    let Some(obj) = marked else {
        // Someone else wrote first; decide again from what they wrote.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    crate::pause::point(PAUSE_AFTER_MARKER).await;
    env.announce(
        &obj,
        ActionPhase::Running,
        ActionReason::Running,
        &summary,
        &format!("dispatching (invocation {invocation})"),
    )
    .await;

    let answer =
        match tokio::time::timeout(DISPATCH_TIMEOUT, dispatch(&client, &request, content)).await {
            Ok(a) => a,
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: "write-class action",
                after: DISPATCH_TIMEOUT,
            }),
        };
    crate::pause::point(PAUSE_AFTER_DISPATCH).await;
    let outcome = interpret(kind, answer);
    // Kept until written: a failed status write must not lose the answer.
    env.ctx.action_answers.put(&invocation, outcome.clone());
    let written = conclude(env, &obj, &invocation, &summary, outcome, false).await;
    if written.is_ok() {
        env.ctx.action_answers.remove(&invocation);
    }
    written
}

/// Writes an outcome over a Running object carrying `invocation`.
async fn conclude(
    env: &Env<'_>,
    obj: &IOSXEOperationalAction,
    invocation: &str,
    summary: &str,
    outcome: Outcome,
    after_restart: bool,
) -> Result<KubeAction, ReconcileError> {
    let generation = obj.metadata.generation;
    let now = Timestamp::now();
    if matches!(outcome, Outcome::Unclear { .. })
        && obj.status.as_ref().and_then(|s| s.reason.as_deref())
            == Some(ActionReason::Observing.as_str())
    {
        // Already recorded as observing: no write (a write would wake this
        // reconciler again at once); look again after the interval.
        return Ok(KubeAction::requeue(RETRY_OBSERVE));
    }
    let written = cas_while_running(&env.api, &env.name, invocation, |st| {
        outcome_status(st, &outcome, after_restart, generation, now)
    })
    .await?;
    let Some(written) = written else {
        // Finished elsewhere: the next reconcile sees the terminal phase.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    match &outcome {
        Outcome::Unclear { message } => {
            env.announce(
                &written,
                ActionPhase::Running,
                ActionReason::Observing,
                summary,
                message,
            )
            .await;
            Ok(KubeAction::requeue(RETRY_OBSERVE))
        }
        Outcome::Succeeded { message, .. } => {
            env.announce(
                &written,
                ActionPhase::Succeeded,
                ActionReason::Succeeded,
                summary,
                message,
            )
            .await;
            env.clean_up(&written).await
        }
        Outcome::Failed {
            reason, message, ..
        } => {
            env.announce(&written, ActionPhase::Failed, *reason, summary, message)
                .await;
            env.clean_up(&written).await
        }
    }
}

/// A Running action found by a reconcile: its dispatch already happened (or
/// may have). Reads the device to learn the outcome; never sends again.
async fn observe_dispatched(
    env: &Env<'_>,
    obj: &IOSXEOperationalAction,
) -> Result<KubeAction, ReconcileError> {
    let st = obj.status.clone().unwrap_or_default();
    let Some(invocation) = st.invocation_id.clone() else {
        // Running without a marker is not something this controller writes;
        // it is still never dispatched.
        let mut fixed = st.clone();
        fixed.invocation_id = Some(invocation_id(obj));
        write_status(&env.api, obj, fixed).await?;
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    let doc = ResultDoc::parse(&st);
    let summary = doc
        .as_ref()
        .map(|d| match &d.dispatch.request {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default();
    if obj.metadata.deletion_timestamp.is_some() {
        // Repeats are folded into one Event series by the recorder.
        env.ctx
            .publish(
                obj,
                EventType::Warning,
                ActionReason::DeletionPending.as_str(),
                "Delete",
                format!(
                    "{} device={} was dispatched; the object is kept until its outcome is known",
                    env.kind, env.device
                ),
            )
            .await;
    }
    if let Some(outcome) = env.ctx.action_answers.get(&invocation) {
        // This process dispatched it and holds the answer; only the status
        // write failed. Write it now, as if no time had passed.
        let written = conclude(env, obj, &invocation, &summary, outcome, false).await;
        if written.is_ok() {
            env.ctx.action_answers.remove(&invocation);
        }
        return written;
    }
    let started = st
        .start_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let elapsed = Duration::try_from(Timestamp::now().duration_since(started)).unwrap_or_default();
    let seen = match (&doc, env.client().await) {
        (None, _) => Seen::NoRecord,
        (Some(_), Err((_, message))) => Seen::Unreachable(message),
        (Some(doc), Ok(client)) => Seen::Read(
            &doc.dispatch,
            observe(&client, env.kind, &doc.dispatch).await,
        ),
    };
    let windows = Windows {
        settle: settle_time(env.kind, &env.ctx.settings.gnoi.timeouts),
        outcome: outcome_window(env.kind),
    };
    let outcome = conclude_observed(env.kind, &invocation, seen, elapsed, windows);
    conclude(env, obj, &invocation, &summary, outcome, true).await
}

/// Reads the device before dispatch: the reachability check, the
/// preconditions of the kind, and the baseline the outcome is judged
/// against. Nothing here mutates the device.
async fn baseline(
    client: &DeviceClient,
    request: &Request,
    rec: &mut DispatchRecord,
) -> Result<(), Rejection> {
    let refuse = |what: &str, e: ClientError| {
        Rejection::new(
            error_reason(&e),
            format!("{what} before dispatch failed: {e}; nothing was sent"),
        )
    };
    match request {
        Request::Reboot(_) | Request::CancelReboot { .. } => {
            let s = client
                .reboot_status()
                .await
                .map_err(|e| refuse("reading RebootStatus", e))?;
            rec.reboot_count_before = Some(s.count);
            rec.reboot_active_before = Some(s.active);
            match request {
                Request::Reboot(_) if s.active => Err(Rejection::new(
                    ActionReason::RebootAlreadyPending,
                    format!(
                        "a reboot is already pending on the device (reason {:?}, in {}s); cancel it with a CancelReboot action first. Nothing was sent",
                        s.reason,
                        s.wait_nanos / 1_000_000_000
                    ),
                )),
                Request::CancelReboot { .. } if !s.active => Err(Rejection::new(
                    ActionReason::NoRebootPending,
                    "no reboot is pending on the device, so there is nothing to cancel; nothing was sent",
                )),
                _ => Ok(()),
            }
        }
        Request::KillProcess(_) => client
            .time()
            .await
            .map(|_| ())
            .map_err(|e| refuse("reading the device clock", e)),
        Request::FilePut { path, .. } => match client.file_stat(path).await {
            Ok(_) => {
                rec.file_existed_before = Some(true);
                Ok(())
            }
            Err(e) if is_not_found(&e) => {
                rec.file_existed_before = Some(false);
                Ok(())
            }
            Err(e) => Err(refuse(&format!("File.Stat of {path}"), e)),
        },
        Request::FileRemove { path } => match client.file_stat(path).await {
            Ok(_) => {
                rec.file_existed_before = Some(true);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(Rejection::new(
                ActionReason::FileNotFound,
                format!(
                    "{path} does not exist on the device (spec.action.fileRemove.path); nothing was removed"
                ),
            )),
            Err(e) => Err(refuse(&format!("File.Stat of {path}"), e)),
        },
        Request::FactoryReset(_) => match client.reboot_status().await {
            Ok(s) => {
                if s.active {
                    return Err(Rejection::new(
                        ActionReason::RebootAlreadyPending,
                        "a reboot is pending on the device; FactoryReset was not sent",
                    ));
                }
                rec.reboot_count_before = Some(s.count);
                rec.reboot_active_before = Some(s.active);
                Ok(())
            }
            // Releases without System still have FactoryReset; the outcome
            // then cannot be read back after a restart.
            Err(ClientError::ServiceUnsupported { .. }) => Ok(()),
            Err(e) => Err(refuse("reading RebootStatus", e)),
        },
    }
}

/// Sends the one RPC and returns what the device answered, as JSON.
async fn dispatch(
    client: &DeviceClient,
    request: &Request,
    content: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    match request {
        Request::Reboot(p) => {
            client.reboot(p).await?;
            let mut out = json!({ "accepted": true });
            // A delayed reboot shows up in RebootStatus: record it.
            if !p.delay.is_zero()
                && let Ok(s) = client.reboot_status().await
            {
                out["rebootStatus"] = serde_json::to_value(&s).unwrap_or(Value::Null);
            }
            Ok(Answer::Accepted(out))
        }
        Request::CancelReboot { message } => {
            client.cancel_reboot(message).await?;
            Ok(Answer::Accepted(json!({ "accepted": true })))
        }
        Request::KillProcess(p) => {
            client.kill_process(p).await?;
            Ok(Answer::Accepted(json!({ "accepted": true })))
        }
        Request::FilePut {
            path, permissions, ..
        } => {
            let bytes = content.unwrap_or_default();
            let sha = sha256_hex(&bytes);
            let sent = client
                .file_put_bytes(path, *permissions, bytes::Bytes::from(bytes))
                .await?;
            let mut out = json!({ "bytesSent": sent, "sha256": sha, "path": path });
            if let Ok(stats) = client.file_stat(path).await
                && let Some(s) = stats.first()
            {
                out["stat"] = serde_json::to_value(s).unwrap_or(Value::Null);
            }
            Ok(Answer::Accepted(out))
        }
        Request::FileRemove { path } => {
            client.file_remove(path).await?;
            Ok(Answer::Accepted(json!({ "removed": path })))
        }
        Request::FactoryReset(p) => Ok(Answer::FactoryReset(client.factory_reset(p).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::action::{Action, IOSXEOperationalActionSpec};
    use crate::crd::common::DeviceRef;

    fn view(phase: Option<ActionPhase>, marker: bool) -> ActionView {
        ActionView {
            phase,
            invocation_id: marker.then(|| "uid/1".to_owned()),
            deleting: false,
            has_finalizer: false,
            in_scope: true,
        }
    }

    fn obj(action: Value) -> IOSXEOperationalAction {
        let mut o = IOSXEOperationalAction::new(
            "a",
            IOSXEOperationalActionSpec {
                device_ref: DeviceRef::new("sw"),
                confirm: "sw".into(),
                action: serde_json::from_value::<Action>(action).unwrap(),
            },
        );
        o.metadata.namespace = Some("ns".into());
        o.metadata.uid = Some("u-1".into());
        o.metadata.generation = Some(1);
        o
    }

    #[test]
    fn a_marked_or_running_action_is_only_ever_observed() {
        use ActionPhase::*;
        assert_eq!(step(&view(None, false)), ActionStep::Start);
        assert_eq!(step(&view(Some(Pending), false)), ActionStep::Start);
        assert_eq!(step(&view(Some(Running), true)), ActionStep::Observe);
        // A marker without Running, or Running without a marker: never resent.
        assert_eq!(step(&view(Some(Pending), true)), ActionStep::Observe);
        assert_eq!(step(&view(Some(Running), false)), ActionStep::Observe);
        for done in [Succeeded, Failed, Rejected] {
            assert_eq!(
                step(&view(Some(done), true)),
                ActionStep::Finished { cleanup: false }
            );
            let mut v = view(Some(done), true);
            v.has_finalizer = true;
            assert_eq!(step(&v), ActionStep::Finished { cleanup: true });
        }
        let mut v = view(Some(Pending), false);
        v.deleting = true;
        assert_eq!(step(&v), ActionStep::Abandon);
        // Deleted after dispatch: still observed (the finalizer holds it).
        let mut v = view(Some(Running), true);
        v.deleting = true;
        assert_eq!(step(&v), ActionStep::Observe);
        let mut v = view(None, false);
        v.in_scope = false;
        assert_eq!(step(&v), ActionStep::OutOfScope);
    }

    #[test]
    fn requests_follow_the_spec() {
        let r = build_request(&obj(
            json!({"kind": "Reboot", "reboot": {"delay": 30, "message": "m"}}),
        ))
        .unwrap();
        assert_eq!(
            r,
            Request::Reboot(RebootParams {
                method: RebootMethod::Cold,
                delay: Duration::from_secs(30),
                message: "m".into(),
                force: false,
            })
        );
        assert_eq!(r.service(), GnoiService::System);
        assert_eq!(
            r.summary(),
            "delaySeconds=30 force=false message=\"m\" method=\"COLD\""
        );
        let r = build_request(&obj(
            json!({"kind": "KillProcess", "killProcess": {"name": "nginx", "signal": "HUP"}}),
        ))
        .unwrap();
        assert_eq!(r.describe()["signal"], "HUP");
        let r = build_request(&obj(
            json!({"kind": "FilePut", "filePut": {"path": "flash:/a/b.txt", "configMapName": "c"}}),
        ))
        .unwrap();
        assert_eq!(
            r,
            Request::FilePut {
                path: "flash:/a/b.txt".into(),
                permissions: 0o644,
                config_map: "c".into()
            }
        );
        assert_eq!(r.describe()["permissions"], "0o644");
        let r = build_request(&obj(json!({"kind": "FactoryReset", "factoryReset": {}}))).unwrap();
        assert_eq!(
            r,
            Request::FactoryReset(FactoryResetParams {
                factory_os: false,
                zero_fill: false,
                retain_certs: true
            })
        );
        assert_eq!(r.service(), GnoiService::FactoryReset);
    }

    #[test]
    fn stored_objects_that_admission_would_refuse_are_rejected_with_the_field() {
        let mut o = obj(json!({"kind": "Reboot", "reboot": {}}));
        o.spec.confirm = "other".into();
        let r = build_request(&o).unwrap_err();
        assert_eq!(r.reason, "ConfirmMismatch");
        assert!(r.message.contains("spec.confirm"));
        let r = build_request(&obj(
            json!({"kind": "Reboot", "fileRemove": {"path": "flash:x"}}),
        ))
        .unwrap_err();
        assert_eq!(r.reason, "InvalidAction");
        assert!(r.message.contains("spec.action"), "{}", r.message);
        let r = build_request(&obj(
            json!({"kind": "FileRemove", "fileRemove": {"path": "crashinfo:x"}}),
        ))
        .unwrap_err();
        assert_eq!(r.reason, "InvalidPath");
        assert!(
            r.message.starts_with("spec.action.fileRemove.path"),
            "{}",
            r.message
        );
        let r = build_request(&obj(
            json!({"kind": "FilePut", "filePut": {"path": "flash:a/../b", "configMapName": "c"}}),
        ))
        .unwrap_err();
        assert_eq!(r.reason, "InvalidPath");
        let r = build_request(&obj(
            json!({"kind": "KillProcess", "killProcess": {"pid": 0}}),
        ))
        .unwrap_err();
        assert_eq!(r.reason, "InvalidAction");
        let r = build_request(&obj(json!({"kind": "FilePut", "filePut": {"path": "flash:a", "configMapName": "c", "permissions": 512}})))
            .unwrap_err();
        assert!(r.message.contains("spec.action.filePut.permissions"));
    }

    #[test]
    fn content_comes_from_binary_data_only() {
        let cm: ConfigMap =
            serde_json::from_value(json!({"binaryData": {"content": "aGk="}})).unwrap();
        assert_eq!(content_of(&cm, "c").unwrap(), b"hi");
        let cm: ConfigMap = serde_json::from_value(json!({"data": {"content": "hi"}})).unwrap();
        let r = content_of(&cm, "c").unwrap_err();
        assert_eq!(r.reason, "ConfigMapContentMissing");
        assert!(
            r.message.contains("it has data[\"content\"]"),
            "{}",
            r.message
        );
        assert_eq!(
            sha256_hex(b"hi"),
            "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
        );
    }

    #[test]
    fn answers_are_interpreted() {
        let ok = interpret(ActionKind::Reboot, Ok(Answer::Accepted(json!({}))));
        assert!(matches!(ok, Outcome::Succeeded { .. }));
        let refused = interpret(
            ActionKind::Reboot,
            Err(ClientError::Rpc {
                service: GnoiService::System,
                method: "Reboot",
                code: Code::FailedPrecondition,
                message: "a reboot is already pending".into(),
            }),
        );
        assert!(matches!(refused, Outcome::Failed { ref reason, .. } if reason == "ActionFailed"));
        let unsupported = interpret(
            ActionKind::FilePut,
            Err(ClientError::ServiceUnsupported {
                service: GnoiService::File,
                detail: String::new(),
            }),
        );
        assert!(
            matches!(unsupported, Outcome::Failed { ref reason, .. } if reason == "FileServiceUnsupported")
        );
        // A broken connection after sending is not a failure: observe.
        let broken = interpret(
            ActionKind::Reboot,
            Err(ClientError::Unavailable {
                message: "connection reset".into(),
                retry_after: None,
            }),
        );
        assert!(matches!(broken, Outcome::Unclear { .. }));
        let closed = interpret(
            ActionKind::FactoryReset,
            Ok(Answer::FactoryReset(
                FactoryResetOutcome::ConnectionClosed {
                    detail: "eof".into(),
                },
            )),
        );
        assert!(matches!(closed, Outcome::Succeeded { .. }));
        let no_os = interpret(
            ActionKind::FactoryReset,
            Ok(Answer::FactoryReset(FactoryResetOutcome::Error {
                factory_os_unsupported: true,
                zero_fill_unsupported: false,
                other: false,
                detail: "no".into(),
            })),
        );
        assert!(
            matches!(no_os, Outcome::Failed { ref reason, .. } if reason == "FactoryOSUnsupported")
        );
    }

    fn rec(kind: &str) -> DispatchRecord {
        DispatchRecord {
            kind: kind.into(),
            request: json!({"path": "flash:x"}),
            reboot_count_before: Some(2),
            reboot_active_before: Some(false),
            content_sha256: Some("ab".into()),
            ..DispatchRecord::default()
        }
    }

    fn reason_of(o: &Outcome) -> &str {
        match o {
            Outcome::Succeeded { .. } => "Succeeded",
            Outcome::Failed { reason, .. } => reason.as_str(),
            Outcome::Unclear { .. } => "Unclear",
        }
    }

    #[test]
    fn outcomes_are_read_back_from_the_device() {
        use ActionKind::*;
        let r = rec("Reboot");
        assert_eq!(
            reason_of(&judge(Reboot, &r, Reading::Reboot(Ok((false, 3))))),
            "Succeeded"
        );
        assert_eq!(
            reason_of(&judge(Reboot, &r, Reading::Reboot(Ok((true, 2))))),
            "Succeeded"
        );
        assert_eq!(
            reason_of(&judge(Reboot, &r, Reading::Reboot(Ok((false, 2))))),
            "ActionNotApplied"
        );
        let down = ClientError::Unavailable {
            message: "refused".into(),
            retry_after: None,
        };
        assert_eq!(
            reason_of(&judge(Reboot, &r, Reading::Reboot(Err(down.clone())))),
            "Unclear"
        );
        assert_eq!(
            reason_of(&judge(CancelReboot, &r, Reading::Reboot(Ok((false, 2))))),
            "Succeeded"
        );
        assert_eq!(
            reason_of(&judge(CancelReboot, &r, Reading::Reboot(Ok((false, 3))))),
            "ActionNotApplied"
        );
        assert_eq!(
            reason_of(&judge(CancelReboot, &r, Reading::Reboot(Ok((true, 2))))),
            "ActionNotApplied"
        );
        assert_eq!(
            reason_of(&judge(FactoryReset, &r, Reading::Reboot(Ok((false, 3))))),
            "Succeeded"
        );
        let mut no_base = r.clone();
        no_base.reboot_count_before = None;
        assert_eq!(
            reason_of(&judge(
                FactoryReset,
                &no_base,
                Reading::Reboot(Ok((false, 3)))
            )),
            "ActionOutcomeUnknown"
        );
        assert_eq!(
            reason_of(&judge(KillProcess, &r, Reading::Nothing)),
            "ActionOutcomeUnknown"
        );
        let nf = ClientError::Rpc {
            service: GnoiService::File,
            method: "Stat",
            code: Code::NotFound,
            message: "no".into(),
        };
        assert_eq!(
            reason_of(&judge(FilePut, &r, Reading::FileHash(Ok("ab".into())))),
            "Succeeded"
        );
        assert_eq!(
            reason_of(&judge(FilePut, &r, Reading::FileHash(Ok("cd".into())))),
            "ActionNotApplied"
        );
        assert_eq!(
            reason_of(&judge(FilePut, &r, Reading::FileHash(Err(nf.clone())))),
            "ActionNotApplied"
        );
        assert_eq!(
            reason_of(&judge(FilePut, &r, Reading::FileHash(Err(down)))),
            "Unclear"
        );
        assert_eq!(
            reason_of(&judge(FileRemove, &r, Reading::FileStat(Err(nf)))),
            "Succeeded"
        );
        assert_eq!(
            reason_of(&judge(FileRemove, &r, Reading::FileStat(Ok(1)))),
            "ActionNotApplied"
        );
        if let Outcome::Failed { message, .. } = judge(Reboot, &r, Reading::Reboot(Ok((false, 2))))
        {
            assert!(message.contains("not sent again"), "{message}");
        }
    }

    #[test]
    fn a_dispatched_action_is_concluded_by_what_the_device_shows_and_when() {
        use ActionKind::*;
        let r = rec("Reboot");
        let down = || ClientError::Unavailable {
            message: "refused".into(),
            retry_after: None,
        };
        let w = Windows {
            settle: Duration::from_secs(20),
            outcome: Duration::from_secs(305),
        };
        let secs = Duration::from_secs;
        // (kind, what is seen, time since startTime, verdict)
        let table: Vec<(ActionKind, Seen<'_>, Duration, &str)> = vec![
            // An effect is proof at any time.
            (
                Reboot,
                Seen::Read(&r, Reading::Reboot(Ok((false, 3)))),
                secs(1),
                "Succeeded",
            ),
            (
                FilePut,
                Seen::Read(&r, Reading::FileHash(Ok("ab".into()))),
                secs(0),
                "Succeeded",
            ),
            // No effect is proof only once the dispatch cannot be in flight.
            (
                Reboot,
                Seen::Read(&r, Reading::Reboot(Ok((false, 2)))),
                secs(19),
                "Unclear",
            ),
            (
                Reboot,
                Seen::Read(&r, Reading::Reboot(Ok((false, 2)))),
                secs(20),
                "ActionNotApplied",
            ),
            (
                KillProcess,
                Seen::Read(&r, Reading::Nothing),
                secs(1),
                "Unclear",
            ),
            (
                KillProcess,
                Seen::Read(&r, Reading::Nothing),
                secs(20),
                "ActionOutcomeUnknown",
            ),
            (Reboot, Seen::NoRecord, secs(0), "Unclear"),
            (Reboot, Seen::NoRecord, secs(20), "ActionOutcomeUnknown"),
            // Unreadable stays unclear until the outcome window closes.
            (
                Reboot,
                Seen::Unreachable("no route".into()),
                secs(304),
                "Unclear",
            ),
            (
                Reboot,
                Seen::Unreachable("no route".into()),
                secs(305),
                "ActionOutcomeUnknown",
            ),
            (
                Reboot,
                Seen::Read(&r, Reading::Reboot(Err(down()))),
                secs(304),
                "Unclear",
            ),
            (
                Reboot,
                Seen::Read(&r, Reading::Reboot(Err(down()))),
                secs(400),
                "ActionOutcomeUnknown",
            ),
        ];
        for (kind, seen, elapsed, want) in table {
            let what = format!("{kind} {seen:?} after {elapsed:?}");
            let got = conclude_observed(kind, "u/1", seen, elapsed, w);
            assert_eq!(reason_of(&got), want, "{what}: {got:?}");
            if let Outcome::Failed { message, .. } = &got
                && elapsed >= w.outcome
            {
                assert!(
                    message.contains("could not be read within 305s")
                        && message.contains("not sent again"),
                    "{what}: {message}"
                );
            }
        }
    }

    #[test]
    fn statuses_through_a_dispatch() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_009).unwrap();
        let r = rec("Reboot");
        let run = running_status(
            &IOSXEOperationalActionStatus::default(),
            "u/1",
            &r,
            Some(1),
            t0,
        );
        assert_eq!(run.phase, Some(ActionPhase::Running));
        assert_eq!(run.invocation_id.as_deref(), Some("u/1"));
        assert_eq!(run.start_time, Some(Time(t0)));
        assert_eq!(ResultDoc::parse(&run).unwrap().dispatch, r);
        let unclear = outcome_status(
            &run,
            &Outcome::Unclear {
                message: "down".into(),
            },
            true,
            Some(1),
            t1,
        );
        assert_eq!(unclear.phase, Some(ActionPhase::Running));
        assert_eq!(unclear.reason.as_deref(), Some("Observing"));
        assert_eq!(unclear.completion_time, None);
        let done = outcome_status(
            &unclear,
            &Outcome::Succeeded {
                message: "rebooted".into(),
                detail: json!({"rebootCount": 3}),
            },
            true,
            Some(1),
            t1,
        );
        assert_eq!(done.phase, Some(ActionPhase::Succeeded));
        assert_eq!(
            done.invocation_id.as_deref(),
            Some("u/1"),
            "the marker stays"
        );
        assert_eq!(done.completion_time, Some(Time(t1)));
        assert_eq!(done.start_time, Some(Time(t0)));
        let doc = ResultDoc::parse(&done).unwrap();
        assert_eq!(doc.observed, Some(json!({"rebootCount": 3})));
        assert_eq!(doc.dispatch, r);
        assert!(crate::crd::common::is_condition_true(
            &done.conditions,
            crate::crd::action::conditions::READY
        ));
        let rej = rejected_status(
            &IOSXEOperationalActionStatus::default(),
            &Rejection::new(ActionReason::FileNotFound, "gone"),
            Some(1),
            t0,
        );
        assert_eq!(rej.phase, Some(ActionPhase::Rejected));
        assert_eq!(rej.failure_reason.as_deref(), Some("FileNotFound"));
        assert_eq!(rej.invocation_id, None);
        assert_eq!(rej.conditions[0].reason, "FileNotFound");
        assert_eq!(rej.conditions[0].status, "False");
    }

    #[test]
    fn a_dispatch_settles_after_connect_rpc_and_grace() {
        let t = crate::client::Timeouts::default();
        assert_eq!(
            settle_time(ActionKind::Reboot, &t),
            t.connect + t.control + PERSIST_GRACE
        );
        assert_eq!(
            settle_time(ActionKind::FilePut, &t),
            t.connect + t.stream_idle + PERSIST_GRACE
        );
    }

    #[test]
    fn windows_and_markers() {
        assert_eq!(outcome_window(ActionKind::Reboot), DISRUPTIVE_WINDOW);
        assert_eq!(
            outcome_window(ActionKind::KillProcess),
            Duration::from_secs(305)
        );
        let o = obj(json!({"kind": "CancelReboot", "cancelReboot": {}}));
        assert_eq!(invocation_id(&o), "u-1/1");
        let mut o = o;
        o.metadata.uid = None;
        assert_eq!(invocation_id(&o), "ns/a/1");
    }
}
