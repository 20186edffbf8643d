//! `IOSXEOperationalAction` (`ops.cisco.vk/v1alpha1`): one-shot,
//! device-mutating gNOI actions (reboot, cancel reboot, kill process, file
//! put/remove, factory reset). Reconciled only when the controller runs
//! with `--enable-write-class-gnoi` / `CISCO_VK_ENABLE_WRITE_CLASS_GNOI=1`.
//!
//! The API server enforces what upstream checked only at run time, so a
//! mistyped action is refused by `kubectl apply` instead of ending Rejected
//! later:
//!
//! * the spec is immutable (an action is an audit record of one request);
//! * `spec.confirm` must equal `spec.deviceRef.name` (a second, deliberate
//!   spelling of the target, so copying a manifest to another device cannot
//!   reboot the wrong switch);
//! * exactly one args block is set and it is the one `spec.action.kind`
//!   names.
//!
//! At most once: `status.invocationID` is persisted together with
//! `phase: Running` before the RPC is sent, so a controller restart observes
//! an action in flight instead of sending it a second time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeviceRef, MAX_PATH_LEN, WRITE_PATH_PATTERN, default_true};

/// Condition types of an IOSXEOperationalAction.
pub mod conditions {
    /// The single condition: True on Succeeded, False otherwise; its reason
    /// mirrors status.reason.
    pub use crate::crd::common::READY_CONDITION as READY;
}

/// Longest reboot delay: one week, as upstream.
pub const MAX_REBOOT_DELAY_SECONDS: i64 = 604_800;

/// Desired state of an IOSXEOperationalAction: one write-class gNOI action
/// against one device.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ops.cisco.vk",
    version = "v1alpha1",
    kind = "IOSXEOperationalAction",
    plural = "iosxeoperationalactions",
    shortname = "xeop",
    namespaced,
    status = "IOSXEOperationalActionStatus",
    derive = "PartialEq",
    cel,
    doc = "A one-shot write-class gNOI action (Reboot, CancelReboot, KillProcess, FilePut, FileRemove, FactoryReset) against one CiscoDevice. Needs the controller gate --enable-write-class-gnoi (CISCO_VK_ENABLE_WRITE_CLASS_GNOI=1).",
    printcolumn(
        name = "Device",
        type_ = "string",
        json_path = ".spec.deviceRef.name",
        description = "Target CiscoDevice"
    ),
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".spec.action.kind",
        description = "Action kind"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Action phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf")
        .message("spec is immutable: an IOSXEOperationalAction cannot be changed after creation; create a new one"),
    validation = Rule::new("self.confirm == self.deviceRef.name")
        .message("spec.confirm must equal spec.deviceRef.name")
)]
pub struct IOSXEOperationalActionSpec {
    /// The CiscoDevice to act on (same namespace).
    pub device_ref: DeviceRef,

    /// The target device's name, typed a second time. Must equal
    /// spec.deviceRef.name exactly.
    #[schemars(length(min = 1, max = 253))]
    pub confirm: String,

    /// The action and its arguments.
    pub action: Action,
}

/// A write-class action: the kind and exactly the args block it names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.kind == 'Reboot') == has(self.reboot)")
        .message("spec.action.reboot must be set when spec.action.kind is Reboot, and only then"),
    validation = Rule::new("(self.kind == 'CancelReboot') == has(self.cancelReboot)")
        .message("spec.action.cancelReboot must be set when spec.action.kind is CancelReboot, and only then"),
    validation = Rule::new("(self.kind == 'KillProcess') == has(self.killProcess)")
        .message("spec.action.killProcess must be set when spec.action.kind is KillProcess, and only then"),
    validation = Rule::new("(self.kind == 'FilePut') == has(self.filePut)")
        .message("spec.action.filePut must be set when spec.action.kind is FilePut, and only then"),
    validation = Rule::new("(self.kind == 'FileRemove') == has(self.fileRemove)")
        .message("spec.action.fileRemove must be set when spec.action.kind is FileRemove, and only then"),
    validation = Rule::new("(self.kind == 'FactoryReset') == has(self.factoryReset)")
        .message("spec.action.factoryReset must be set when spec.action.kind is FactoryReset, and only then")
)]
pub struct Action {
    /// Action kind: Reboot, CancelReboot, KillProcess, FilePut, FileRemove
    /// or FactoryReset. Exactly the matching args block must be set.
    pub kind: ActionKind,

    /// Arguments of Reboot (System.Reboot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<Reboot>,

    /// Arguments of CancelReboot (System.CancelReboot). May be empty ({})
    /// but must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reboot: Option<CancelReboot>,

    /// Arguments of KillProcess (System.KillProcess).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_process: Option<KillProcess>,

    /// Arguments of FilePut (File.Put).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_put: Option<FilePut>,

    /// Arguments of FileRemove (File.Remove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_remove: Option<FileRemove>,

    /// Arguments of FactoryReset (FactoryReset.Start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory_reset: Option<FactoryReset>,
}

/// Kind of a write-class action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ActionKind {
    /// Reboot the device.
    Reboot,
    /// Cancel a pending delayed reboot.
    CancelReboot,
    /// Signal a process.
    KillProcess,
    /// Write a file from a ConfigMap.
    FilePut,
    /// Delete a file.
    FileRemove,
    /// Factory-reset the device.
    FactoryReset,
}

impl ActionKind {
    /// Every kind, in the order of the specification.
    pub const ALL: [Self; 6] = [
        Self::Reboot,
        Self::CancelReboot,
        Self::KillProcess,
        Self::FilePut,
        Self::FileRemove,
        Self::FactoryReset,
    ];

    /// The wire name, e.g. `Reboot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reboot => "Reboot",
            Self::CancelReboot => "CancelReboot",
            Self::KillProcess => "KillProcess",
            Self::FilePut => "FilePut",
            Self::FileRemove => "FileRemove",
            Self::FactoryReset => "FactoryReset",
        }
    }

    /// Whether the action disrupts the device and so must hold the
    /// device's mutation Lease. CancelReboot only withdraws a pending
    /// reboot and bypasses the Lease, as upstream.
    pub fn needs_device_lease(self) -> bool {
        !matches!(self, Self::CancelReboot)
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The args block of an action, checked against its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionArgs<'a> {
    /// Reboot arguments.
    Reboot(&'a Reboot),
    /// CancelReboot arguments.
    CancelReboot(&'a CancelReboot),
    /// KillProcess arguments.
    KillProcess(&'a KillProcess),
    /// FilePut arguments.
    FilePut(&'a FilePut),
    /// FileRemove arguments.
    FileRemove(&'a FileRemove),
    /// FactoryReset arguments.
    FactoryReset(&'a FactoryReset),
}

/// Why an action's args do not match its kind. The API server refuses such
/// objects; this exists for objects stored before the CRD carried the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionArgsError {
    /// The block the kind names is missing.
    #[error("spec.action.{block} is required when spec.action.kind is {kind}")]
    Missing {
        /// The kind.
        kind: ActionKind,
        /// The field name of the missing block.
        block: &'static str,
    },
    /// Blocks other than the one the kind names are set.
    #[error("spec.action.kind is {kind}, but spec.action also sets {others}")]
    Extra {
        /// The kind.
        kind: ActionKind,
        /// The field names of the extra blocks, comma-separated.
        others: String,
    },
}

impl Action {
    /// The args block the kind names, provided it is the only one set.
    pub fn args(&self) -> Result<ActionArgs<'_>, ActionArgsError> {
        let set: Vec<&'static str> = [
            ("reboot", self.reboot.is_some()),
            ("cancelReboot", self.cancel_reboot.is_some()),
            ("killProcess", self.kill_process.is_some()),
            ("filePut", self.file_put.is_some()),
            ("fileRemove", self.file_remove.is_some()),
            ("factoryReset", self.factory_reset.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let block = Self::block_name(self.kind);
        let others: Vec<&str> = set.iter().copied().filter(|n| *n != block).collect();
        if !others.is_empty() {
            return Err(ActionArgsError::Extra {
                kind: self.kind,
                others: others.join(", "),
            });
        }
        let missing = ActionArgsError::Missing {
            kind: self.kind,
            block,
        };
        match self.kind {
            ActionKind::Reboot => self.reboot.as_ref().map(ActionArgs::Reboot),
            ActionKind::CancelReboot => self.cancel_reboot.as_ref().map(ActionArgs::CancelReboot),
            ActionKind::KillProcess => self.kill_process.as_ref().map(ActionArgs::KillProcess),
            ActionKind::FilePut => self.file_put.as_ref().map(ActionArgs::FilePut),
            ActionKind::FileRemove => self.file_remove.as_ref().map(ActionArgs::FileRemove),
            ActionKind::FactoryReset => self.factory_reset.as_ref().map(ActionArgs::FactoryReset),
        }
        .ok_or(missing)
    }

    fn block_name(kind: ActionKind) -> &'static str {
        match kind {
            ActionKind::Reboot => "reboot",
            ActionKind::CancelReboot => "cancelReboot",
            ActionKind::KillProcess => "killProcess",
            ActionKind::FilePut => "filePut",
            ActionKind::FileRemove => "fileRemove",
            ActionKind::FactoryReset => "factoryReset",
        }
    }
}

/// System.Reboot arguments.
///
/// The delay has two spellings: `delaySeconds` (upstream's field) and
/// `delay` (the form in the specification's maintenance-window example).
/// Both are seconds and both are kept in the schema, so neither is pruned
/// silently; setting both is refused.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.delay) || !has(self.delaySeconds)")
    .message("spec.action.reboot.delay and spec.action.reboot.delaySeconds are two spellings of one setting: set one of them"))]
pub struct Reboot {
    /// Reboot method: COLD (default), NSF, POWERDOWN, HALT or WARM. IOS-XE
    /// guarantees only COLD.
    #[serde(default)]
    pub method: RebootMethod,

    /// Seconds to wait before rebooting, 0-604800; unset or 0 reboots
    /// immediately. A pending delayed reboot can be withdrawn with a
    /// CancelReboot action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REBOOT_DELAY_SECONDS))]
    pub delay_seconds: Option<i64>,

    /// Alias of delaySeconds (seconds, 0-604800), as written in the
    /// specification's example. Set one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REBOOT_DELAY_SECONDS))]
    pub delay: Option<i64>,

    /// Reason recorded by the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,

    /// Reboot even if the device reports that a reboot is unsafe.
    #[serde(default)]
    pub force: bool,
}

impl Reboot {
    /// The delay in seconds, whichever spelling was used; 0 when unset.
    pub fn delay_seconds(&self) -> i64 {
        self.delay_seconds.or(self.delay).unwrap_or(0)
    }
}

/// Reboot method (gNOI RebootMethod).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RebootMethod {
    /// Full reboot.
    #[default]
    #[serde(rename = "COLD")]
    Cold,
    /// Non-stop forwarding reboot.
    #[serde(rename = "NSF")]
    Nsf,
    /// Power down.
    #[serde(rename = "POWERDOWN")]
    PowerDown,
    /// Halt.
    #[serde(rename = "HALT")]
    Halt,
    /// Warm reboot.
    #[serde(rename = "WARM")]
    Warm,
}

/// System.CancelReboot arguments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelReboot {
    /// Reason recorded by the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// System.KillProcess arguments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.pid) && self.pid > 0) || (has(self.name) && self.name != '')")
    .message("spec.action.killProcess needs a non-zero pid or a non-empty name"))]
pub struct KillProcess {
    /// Process ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,

    /// Process name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,

    /// Signal: TERM (default), KILL, HUP or ABRT.
    #[serde(default)]
    pub signal: Signal,

    /// Restart the process after signalling it (ignored for HUP).
    #[serde(default)]
    pub restart: bool,
}

/// Signal sent by KillProcess.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Signal {
    /// SIGTERM.
    #[default]
    #[serde(rename = "TERM")]
    Term,
    /// SIGKILL.
    #[serde(rename = "KILL")]
    Kill,
    /// SIGHUP.
    #[serde(rename = "HUP")]
    Hup,
    /// SIGABRT.
    #[serde(rename = "ABRT")]
    Abrt,
}

/// File.Put arguments. The bytes come from a ConfigMap, never from the
/// action itself, so the object stays small and reviewable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FilePut {
    /// Destination path with a writable IOS-XE filesystem prefix: flash:,
    /// bootflash:, harddisk:, usbflash0: or usbflash1:. No empty, `.` or
    /// `..` segments, and no second filesystem prefix.
    #[schemars(length(min = 1, max = MAX_PATH_LEN), pattern(WRITE_PATH_PATTERN))]
    #[x_kube(
        validation = Rule::new(crate::crd::common::PATH_SEGMENTS_RULE)
            .message("spec.action.filePut.path must name a file below the filesystem prefix, with no empty, '.' or '..' segments"),
        validation = Rule::new(crate::crd::common::PATH_SINGLE_PREFIX_RULE)
            .message("spec.action.filePut.path must not contain a second filesystem prefix")
    )]
    pub path: String,

    /// Name of a ConfigMap in the same namespace; the file content is its
    /// binaryData["content"].
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: String,

    /// File mode, 0-511 (0o777). Default 420 (0o644).
    #[serde(default = "default_permissions")]
    #[schemars(range(min = 0, max = 511))]
    pub permissions: u32,
}

fn default_permissions() -> u32 {
    0o644
}

/// File.Remove arguments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileRemove {
    /// Path with a writable IOS-XE filesystem prefix: flash:, bootflash:,
    /// harddisk:, usbflash0: or usbflash1:. No empty, `.` or `..` segments,
    /// and no second filesystem prefix.
    #[schemars(length(min = 1, max = MAX_PATH_LEN), pattern(WRITE_PATH_PATTERN))]
    #[x_kube(
        validation = Rule::new(crate::crd::common::PATH_SEGMENTS_RULE)
            .message("spec.action.fileRemove.path must name a file below the filesystem prefix, with no empty, '.' or '..' segments"),
        validation = Rule::new(crate::crd::common::PATH_SINGLE_PREFIX_RULE)
            .message("spec.action.fileRemove.path must not contain a second filesystem prefix")
    )]
    pub path: String,
}

/// FactoryReset.Start arguments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactoryReset {
    /// Also roll the OS back to the factory image.
    #[serde(default, rename = "factoryOS")]
    pub factory_os: bool,

    /// Zero-fill persistent storage.
    #[serde(default)]
    pub zero_fill: bool,

    /// Keep installed certificates. Default true.
    #[serde(default = "default_true")]
    pub retain_certs: bool,
}

impl Default for FactoryReset {
    fn default() -> Self {
        Self {
            factory_os: false,
            zero_fill: false,
            retain_certs: true,
        }
    }
}

/// Observed state of an IOSXEOperationalAction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IOSXEOperationalActionStatus {
    /// Pending, Running, Succeeded, Failed or Rejected (refused before
    /// anything was sent to the device). The schema description comes from
    /// [`ActionPhase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ActionPhase>,

    /// metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The Ready condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// When the action was dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the action reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Human-readable detail, e.g. which gate is off and how to turn it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Machine-readable reason of the current phase, e.g. Succeeded,
    /// GateDisabled, ServiceUnsupported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Machine-readable reason of a Failed or Rejected phase (upstream's
    /// field); cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,

    /// The at-most-once marker, `<metadata.uid>/<metadata.generation>`,
    /// written with phase Running before the RPC is sent. An action that
    /// carries it is never dispatched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "invocationID")]
    pub invocation_id: Option<String>,

    /// Structured device result as a JSON string, e.g. a RebootStatus
    /// snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// Phase of an IOSXEOperationalAction: Pending (accepted, not dispatched;
/// also while a gate is off or the device is busy), Running (dispatched, the
/// invocation ID is recorded), Succeeded, Failed (the device refused the
/// action or the outcome is unknown) or Rejected (refused before anything
/// reached the device). Succeeded, Failed and Rejected are terminal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ActionPhase {
    /// Accepted, not dispatched (also while a gate is off or the device is
    /// busy).
    Pending,
    /// Dispatched; the invocation ID is recorded.
    Running,
    /// The device accepted the action.
    Succeeded,
    /// The device refused the action, or the outcome is unknown.
    Failed,
    /// Refused before anything reached the device.
    Rejected,
}

impl ActionPhase {
    /// Succeeded, Failed and Rejected are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Rejected)
    }
}
