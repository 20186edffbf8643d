//! `DeviceOperation` (`ops.cisco.vk/v1alpha1`): the low-trust, read-only
//! surface. Anyone allowed to create these objects can probe a device
//! (ping, traceroute, time, file get/stat, certificates, reboot status, OS
//! verify) but can change nothing on it; mutations live in
//! IOSXEOperationalAction and IOSXESoftwareUpgrade behind their own gates.
//!
//! Twelve kinds, as upstream: nine read-only gNOI probes and three CLI
//! kinds over SSH (ShowCommand, ConfigDiff, PacketCapture). Every CLI
//! command must match the read-only allowlist ([`READ_ONLY_COMMANDS`],
//! as the pattern [`command_pattern`]) at admission, and the controller
//! checks it again before anything is sent.
//!
//! Unlike the write-class kinds the spec is not immutable, as upstream: the
//! operation runs once per `metadata.generation`, so editing the spec runs
//! it again.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeviceRef, MAX_PATH_LEN, READ_PATH_PATTERN};
use super::device::GnoiService;

/// The read-only allowlist of CLI commands (upstream's): a command's first
/// word is one of these. The one list behind the CRD's pattern and CEL
/// rule and the controller's own check before a session opens.
pub const READ_ONLY_COMMANDS: [&str; 13] = [
    "show",
    "more",
    "dir",
    "ping",
    "ping6",
    "traceroute",
    "traceroute6",
    "monitor",
    "test",
    "verify",
    "calendar",
    "terminal",
    "namespace",
];

/// Output modifiers that write files (`| redirect`, `| append`, `| tee`):
/// refused in any command.
pub const FILE_WRITING_MODIFIERS: [&str; 3] = ["redirect", "append", "tee"];

/// The pattern of a read-only command: the first word is one of
/// [`READ_ONLY_COMMANDS`], followed by a space or nothing.
pub fn command_pattern() -> String {
    format!("^({})( |$)", READ_ONLY_COMMANDS.join("|"))
}

/// The pattern of a file-writing output modifier
/// ([`FILE_WRITING_MODIFIERS`] after a `|`).
pub fn file_writing_pipe() -> String {
    format!("[|][ ]*({})( |$)", FILE_WRITING_MODIFIERS.join("|"))
}

/// `a, b or c`.
fn or_list(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// CEL rule of `spec.operation.args.command` (ShowCommand, ConfigDiff).
fn args_command_rule() -> String {
    format!(
        "!has(self.args) || !('command' in self.args) || (self.kind != 'ShowCommand' && self.kind != 'ConfigDiff') || (self.args['command'].matches('{}') && !self.args['command'].matches('{}'))",
        command_pattern(),
        file_writing_pipe()
    )
}

/// Message of [`args_command_rule`].
fn args_command_message() -> String {
    format!(
        "spec.operation.args.command must be a read-only command: it must start with {}, and must not write a file ({})",
        or_list(&READ_ONLY_COMMANDS),
        FILE_WRITING_MODIFIERS
            .iter()
            .map(|m| format!("| {m}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// CEL rule of a PacketCapture's `args.name` / `args.capture`.
fn capture_name_rule() -> String {
    format!(
        "self.kind != 'PacketCapture' || (has(self.args) && (('name' in self.args && self.args['name'].matches('{CAPTURE_NAME_PATTERN}')) || (!('name' in self.args) && 'capture' in self.args && self.args['capture'].matches('{CAPTURE_NAME_PATTERN}'))))"
    )
}
/// The name of a capture (PacketCapture `args.name` / `args.capture`).
pub const CAPTURE_NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// Most commands of one operation.
pub const MAX_COMMANDS: usize = 64;

/// Condition types of a DeviceOperation.
pub mod conditions {
    /// The single condition: True once Succeeded, False otherwise; its
    /// reason names what happened (Running, Succeeded, Failed,
    /// ServiceUnsupported, ...).
    pub use crate::crd::common::READY_CONDITION as READY;
}

/// Desired state of a DeviceOperation: one read-only gNOI call against one
/// device.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ops.cisco.vk",
    version = "v1alpha1",
    kind = "DeviceOperation",
    plural = "deviceoperations",
    shortname = "devop",
    namespaced,
    status = "DeviceOperationStatus",
    derive = "PartialEq",
    cel,
    doc = "A read-only operation against one CiscoDevice: show commands, config diff or packet capture over the device CLI (SSH), or a gNOI probe (ping, traceroute, time, file get/stat, certificates, reboot status, OS verify). Results land in status.outputs.",
    printcolumn(
        name = "Device",
        type_ = "string",
        json_path = ".spec.deviceRef.name",
        description = "Target CiscoDevice"
    ),
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".spec.operation.kind",
        description = "Operation kind"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Operation phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceOperationSpec {
    /// The CiscoDevice to run the operation on (same namespace).
    pub device_ref: DeviceRef,

    /// What to run.
    pub operation: Operation,

    /// Delete the object this many seconds after it finished (Succeeded,
    /// Failed or Cancelled). Unset or 0 keeps it until deleted by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// The operation: a kind and its arguments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'GNOIPing' || (has(self.gnoi) && has(self.gnoi.ping))")
        .message("spec.operation.gnoi.ping is required when spec.operation.kind is GNOIPing"),
    validation = Rule::new("self.kind != 'GNOITraceroute' || (has(self.gnoi) && has(self.gnoi.traceroute))")
        .message("spec.operation.gnoi.traceroute is required when spec.operation.kind is GNOITraceroute"),
    validation = Rule::new("(self.kind != 'GNOIFileGet' && self.kind != 'GNOIFileStat') || (has(self.gnoi) && has(self.gnoi.file))")
        .message("spec.operation.gnoi.file is required when spec.operation.kind is GNOIFileGet or GNOIFileStat"),
    validation = Rule::new("self.kind != 'ShowCommand' || (has(self.commands) && size(self.commands) > 0) || (has(self.args) && ('command' in self.args || 'commands' in self.args))")
        .message("spec.operation.commands (or spec.operation.args.command / args.commands) is required when spec.operation.kind is ShowCommand"),
    validation = Rule::new(args_command_rule()).message(args_command_message().as_str()),
    validation = Rule::new(capture_name_rule())
        .message(format!("spec.operation.args.name (or args.capture) is required when spec.operation.kind is PacketCapture and must match {CAPTURE_NAME_PATTERN}").as_str())
)]
pub struct Operation {
    /// Operation kind: ShowCommand, ConfigDiff, PacketCapture (device CLI
    /// over SSH), GNOIPing, GNOITraceroute, GNOITime, GNOIFileGet,
    /// GNOIFileStat, GNOICertGet, GNOICanGenerateCSR, GNOIRebootStatus or
    /// GNOIOSVerify.
    pub kind: OperationKind,

    /// String arguments of the CLI kinds. ShowCommand: command (one) or
    /// commands (newline- or comma-separated) when spec.operation.commands
    /// is empty. ConfigDiff: command (default show running-config) and
    /// baseline (text to diff against). PacketCapture: name (or capture),
    /// the capture whose buffer is dumped. The gNOI kinds read their
    /// arguments from gnoi.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "args_schema")]
    pub args: BTreeMap<String, String>,

    /// ShowCommand: the commands to run, in order, 1 to 64. Each must be
    /// read-only: start with show, more, dir, ping, ping6, traceroute,
    /// traceroute6, monitor, test, verify, calendar, terminal or namespace,
    /// and not write a file (| redirect, | append, | tee). Ignored by the
    /// other kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "commands_schema")]
    pub commands: Vec<String>,

    /// Typed gNOI arguments. GNOIPing needs ping, GNOITraceroute needs
    /// traceroute, GNOIFileGet and GNOIFileStat need file; GNOICanGenerateCSR
    /// reads cert (all defaults when omitted). Blocks a kind does not use are
    /// ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gnoi: Option<GnoiArgs>,
}

/// Kind of a read-only operation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum OperationKind {
    /// Read-only CLI commands over SSH.
    ShowCommand,
    /// The running configuration (or another command's output), diffed
    /// against args.baseline when given.
    ConfigDiff,
    /// `show monitor capture <name> buffer dump`.
    PacketCapture,
    /// System.Ping from the device.
    #[serde(rename = "GNOIPing")]
    Ping,
    /// System.Traceroute from the device.
    #[serde(rename = "GNOITraceroute")]
    Traceroute,
    /// System.Time: the device clock.
    #[serde(rename = "GNOITime")]
    Time,
    /// File.Get: a bounded preview of a file, spilling to a ConfigMap.
    #[serde(rename = "GNOIFileGet")]
    FileGet,
    /// File.Stat: size, permissions and modification time.
    #[serde(rename = "GNOIFileStat")]
    FileStat,
    /// CertificateManagement.GetCertificates.
    #[serde(rename = "GNOICertGet")]
    CertGet,
    /// CertificateManagement.CanGenerateCSR.
    #[serde(rename = "GNOICanGenerateCSR")]
    CanGenerateCsr,
    /// System.RebootStatus.
    #[serde(rename = "GNOIRebootStatus")]
    RebootStatus,
    /// OS.Verify: running version and activation state.
    #[serde(rename = "GNOIOSVerify")]
    OsVerify,
}

impl OperationKind {
    /// Every kind, in the order of the specification's table.
    pub const ALL: [Self; 12] = [
        Self::ShowCommand,
        Self::ConfigDiff,
        Self::PacketCapture,
        Self::Ping,
        Self::Traceroute,
        Self::Time,
        Self::FileGet,
        Self::FileStat,
        Self::CertGet,
        Self::CanGenerateCsr,
        Self::RebootStatus,
        Self::OsVerify,
    ];

    /// The wire name, e.g. `GNOIPing`; also the `command` of a gNOI kind's
    /// output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ShowCommand => "ShowCommand",
            Self::ConfigDiff => "ConfigDiff",
            Self::PacketCapture => "PacketCapture",
            Self::Ping => "GNOIPing",
            Self::Traceroute => "GNOITraceroute",
            Self::Time => "GNOITime",
            Self::FileGet => "GNOIFileGet",
            Self::FileStat => "GNOIFileStat",
            Self::CertGet => "GNOICertGet",
            Self::CanGenerateCsr => "GNOICanGenerateCSR",
            Self::RebootStatus => "GNOIRebootStatus",
            Self::OsVerify => "GNOIOSVerify",
        }
    }

    /// The gNOI service the kind calls (the specification's table); none
    /// for the CLI kinds.
    pub fn service(self) -> Option<GnoiService> {
        match self {
            Self::ShowCommand | Self::ConfigDiff | Self::PacketCapture => None,
            Self::Ping | Self::Traceroute | Self::Time | Self::RebootStatus => {
                Some(GnoiService::System)
            }
            Self::FileGet | Self::FileStat => Some(GnoiService::File),
            Self::CertGet | Self::CanGenerateCsr => Some(GnoiService::Cert),
            Self::OsVerify => Some(GnoiService::Os),
        }
    }

    /// Whether the kind runs over the device CLI (SSH).
    pub fn is_cli(self) -> bool {
        self.service().is_none()
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schema of `operation.args`: the upstream string map (any key; each kind
/// reads its own), at most 16 entries of at most 256 KiB each (a ConfigDiff
/// baseline is a whole running-config). The bounds keep the CEL rules on
/// `args` within the API server's cost budget.
fn args_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": { "type": "string", "maxLength": 262_144 },
    })
}

/// Schema of `operation.commands`: at most 64 read-only commands, none
/// writing a file.
fn commands_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_COMMANDS,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 512,
            "pattern": command_pattern(),
        },
        "x-kubernetes-validations": [{
            "rule": format!("self.all(c, !c.matches('{}'))", file_writing_pipe()),
            "message": "spec.operation.commands must not write a file: | redirect, | append and | tee are refused",
        }],
    })
}

/// Typed gNOI arguments (upstream `operation.gnoi`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GnoiArgs {
    /// Arguments of GNOIPing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingArgs>,

    /// Arguments of GNOITraceroute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceroute: Option<TracerouteArgs>,

    /// Arguments of GNOIFileGet and GNOIFileStat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileArgs>,

    /// Arguments of GNOICanGenerateCSR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertArgs>,
}

/// System.Ping arguments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingArgs {
    /// Address or name to ping from the device.
    #[schemars(length(min = 1, max = 253))]
    pub destination: String,

    /// Source address or interface on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub source: Option<String>,

    /// Number of echo requests, 1-1000. Unset: the device default (5 on
    /// IOS-XE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<i32>,

    /// Milliseconds between requests. Unset or 0: the device default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub interval_millis: Option<i32>,

    /// Milliseconds to wait for each reply. Unset or 0: the device default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub wait_millis: Option<i32>,

    /// Payload size in bytes. Unset or 0: the device default (56).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub size: Option<i32>,
}

/// System.Traceroute arguments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracerouteArgs {
    /// Address or name to trace from the device.
    #[schemars(length(min = 1, max = 253))]
    pub destination: String,

    /// Source address or interface on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub source: Option<String>,

    /// Largest TTL probed, 1-255. Unset: the device default (30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub max_hops: Option<i32>,

    /// Probe protocol: ICMP, UDP or TCP. Unset: the device default. The
    /// schema description comes from [`TracerouteProtocol`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<TracerouteProtocol>,

    /// Milliseconds to wait for each probe. Unset or 0: the device default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub wait_millis: Option<i32>,
}

/// Probe protocol of GNOITraceroute: ICMP, UDP or TCP. Unset: the device
/// default.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TracerouteProtocol {
    /// ICMP echo.
    #[serde(rename = "ICMP")]
    Icmp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// TCP SYN.
    #[serde(rename = "TCP")]
    Tcp,
}

/// File.Get / File.Stat arguments.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileArgs {
    /// Device path with an IOS-XE filesystem prefix: flash:, bootflash:,
    /// harddisk:, usbflash0:, usbflash1:, crashinfo:, nvram: or webui:, e.g.
    /// flash:/cvk/startup.txt. No empty, `.` or `..` segments, and no
    /// second filesystem prefix.
    #[schemars(length(min = 1, max = MAX_PATH_LEN), pattern(READ_PATH_PATTERN))]
    #[x_kube(
        validation = Rule::new(crate::crd::common::PATH_SEGMENTS_RULE)
            .message("spec.operation.gnoi.file.path must name a file below the filesystem prefix, with no empty, '.' or '..' segments"),
        validation = Rule::new(crate::crd::common::PATH_SINGLE_PREFIX_RULE)
            .message("spec.operation.gnoi.file.path must not contain a second filesystem prefix")
    )]
    pub path: String,

    /// GNOIFileGet only: the most bytes read from the device. Unset or 0:
    /// the controller default. A preview of at most 64 KiB is kept inline
    /// in status; a larger read spills to the ConfigMap
    /// `<name>-output`, named in status.artifactURIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_bytes: Option<i64>,
}

/// CertificateManagement.CanGenerateCSR arguments. An omitted block means
/// all defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertArgs {
    /// Key type: KT_RSA. RT_RSA, upstream's spelling, is accepted and means
    /// the same.
    #[serde(default)]
    pub key_type: KeyType,

    /// Certificate type: CT_X509.
    #[serde(default)]
    pub certificate_type: CertificateType,

    /// Key size in bits, 1024-8192.
    #[serde(default = "default_key_size")]
    #[schemars(range(min = 1024, max = 8192))]
    pub key_size: u32,
}

impl Default for CertArgs {
    fn default() -> Self {
        Self {
            key_type: KeyType::default(),
            certificate_type: CertificateType::default(),
            key_size: default_key_size(),
        }
    }
}

fn default_key_size() -> u32 {
    2048
}

/// Key type of a CSR.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum KeyType {
    /// RSA (gNOI KT_RSA).
    #[default]
    #[serde(rename = "KT_RSA")]
    Rsa,
    /// RSA, upstream's spelling.
    #[serde(rename = "RT_RSA")]
    RsaUpstream,
}

impl KeyType {
    /// The setting with upstream's alias folded in.
    pub fn canonical(self) -> Self {
        Self::Rsa
    }
}

/// Certificate type of a CSR.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CertificateType {
    /// X.509.
    #[default]
    #[serde(rename = "CT_X509")]
    X509,
}

/// Observed state of a DeviceOperation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceOperationStatus {
    /// Pending, Running, Succeeded, Failed or Cancelled. The schema
    /// description comes from [`OperationPhase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<OperationPhase>,

    /// metadata.generation the phase belongs to. A terminal phase with
    /// observedGeneration equal to metadata.generation means done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the operation started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the operation finished; the TTL counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Human-readable result, e.g. "5 ping replies received".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// One entry per call; a gNOI kind produces one entry whose command is
    /// the kind and whose output is indented JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OperationOutput>,

    /// Where spilled output lives: configmap://<namespace>/<configmap>/<key>.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "artifactURIs")]
    pub artifact_uris: Vec<String>,

    /// The Ready condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Phase of a DeviceOperation: Pending (accepted, not started), Running
/// (the call is in flight), Succeeded, Failed (see message and the Ready
/// condition) or Cancelled. Succeeded, Failed and Cancelled are terminal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Accepted, not started.
    Pending,
    /// The call is in flight.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error; see message and the Ready condition.
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl OperationPhase {
    /// Succeeded, Failed and Cancelled are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// The output of one call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutput {
    /// What ran: the operation kind for gNOI kinds. Always serialized.
    pub command: String,

    /// The result (indented JSON for gNOI kinds), redacted and bounded; see
    /// truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,

    /// The error, when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,

    /// The inline output is a preview; the full output is in the ConfigMap
    /// named in status.artifactURIs.
    #[serde(default, skip_serializing_if = "super::common::is_false")]
    pub truncated: bool,

    /// Secrets were removed from the output.
    #[serde(default, skip_serializing_if = "super::common::is_false")]
    pub redacted: bool,
}
