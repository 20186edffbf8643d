//! The decision of an IOSXEOperationalAction: what the object asks for
//! ([`ActionView`], [`step`]), the one request it may send
//! ([`build_request`]) and the record kept before it is sent
//! ([`DispatchRecord`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::GnoiService;
use crate::client::factory_reset::FactoryResetParams;
use crate::client::paths::{WRITE_PREFIXES, validate_path};
use crate::client::system::{KillProcessParams, RebootMethod, RebootParams, Signal};
use crate::crd::action::{
    ActionArgs, ActionKind, ActionPhase, IOSXEOperationalAction, IOSXEOperationalActionStatus,
    RebootMethod as CrdRebootMethod, Signal as CrdSignal,
};
use crate::reason::ActionReason;

/// Finalizer that keeps a dispatched action until its outcome is known.
pub const FINALIZER: &str = "ops.cisco.vk/iosxeoperationalaction-finalizer";

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
    pub(crate) fn new(reason: ActionReason, message: impl Into<String>) -> Self {
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
    pub(crate) fn parse(status: &IOSXEOperationalActionStatus) -> Option<Self> {
        status
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

// ---- outcomes ----------------------------------------------------------
