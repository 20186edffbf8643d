//! `CiscoDevice` (`cisco.vk/v1alpha1`): one managed switch, how to reach its
//! gNOI/gNMI listener, and what the controller last observed about it.
//!
//! This is the gNOI/gNMI subset of the upstream CiscoDevice: the app-hosting
//! fields (pod CIDR, taints, XE networking, OpenTelemetry, worker settings)
//! belong to the virtual-kubelet side and are not part of this API. A
//! manifest that still carries them is refused by `kubectl` (strict field
//! validation) instead of being silently trimmed.
//!
//! Status is written by the controller only; every field there is an
//! observation with the time it was made, never a desired state.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectRef;

/// Condition types of a CiscoDevice.
pub mod conditions {
    /// The device answered the last probe and its configuration is usable.
    pub use crate::crd::common::READY_CONDITION as READY;
    /// The last gNOI/gNMI probe reached the device.
    pub const REACHABLE: &str = "Reachable";
    /// The referenced Secrets exist and hold the keys the transport needs
    /// (local validation only; says nothing about reachability).
    pub const GNOI_CONFIGURATION_READY: &str = "GNOIConfigurationReady";
}

/// Desired state of a CiscoDevice: where the device is and how to talk to
/// it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cisco.vk",
    version = "v1alpha1",
    kind = "CiscoDevice",
    plural = "ciscodevices",
    shortname = "cvk",
    namespaced,
    status = "CiscoDeviceStatus",
    derive = "PartialEq",
    cel,
    doc = "A Cisco switch managed over gNOI and gNMI. Other objects (DeviceOperation, IOSXEOperationalAction, IOSXESoftwareUpgrade) name it in spec.deviceRef.",
    printcolumn(
        name = "Driver",
        type_ = "string",
        json_path = ".spec.driver",
        description = "Device driver"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".spec.address",
        description = "Management address"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Observed phase"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.runningVersion",
        description = "Running software version reported by the device"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.gnoi) || !has(self.gnoi.transportSecurity) || self.gnoi.transportSecurity != 'tls' || has(self.gnoi.tls) || !has(self.tls) || !has(self.tls.insecureSkipVerify) || !self.tls.insecureSkipVerify"
).message("spec.gnoi.transportSecurity tls needs verified trust: set spec.gnoi.tls.secretRef, or leave spec.tls.insecureSkipVerify false"))]
pub struct CiscoDeviceSpec {
    /// Device driver. XE (IOS-XE, Catalyst 9000) is the production driver;
    /// XR, NXOS and OPENCONFIG are accepted for compatibility with existing
    /// manifests, and FAKE is for tests. One of XE, XR, NXOS, OPENCONFIG,
    /// FAKE.
    pub driver: Driver,

    /// Management IP address or DNS name of the device.
    #[schemars(length(min = 1, max = 253))]
    pub address: String,

    /// Management (RESTCONF) port, as upstream: 443 when spec.tls.enabled,
    /// else 80. gNOI does not use it unless it is a non-standard port and
    /// neither spec.gnoi.port nor CISCO_VK_GNOI_PORT is set (the upstream
    /// "keep an existing non-standard device port" inference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Username sent as gRPC metadata `username`. May be omitted when the
    /// credential Secret carries a `username` key; when both are set, this
    /// field wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub username: Option<String>,

    /// Same-namespace Secret with the device credentials: key `password`
    /// (required) and optionally key `username`. The password is sent as
    /// gRPC metadata `password` and never written to status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret_ref: Option<LocalObjectRef>,

    /// Shared TLS settings of the device's management plane. With
    /// spec.gnoi.transportSecurity auto, gNOI uses TLS exactly when
    /// tls.enabled is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DeviceTls>,

    /// gNOI/gNMI transport. Omitted or empty means auto: follow spec.tls,
    /// with the port inferred (9339 for TLS, 50052 for the insecure
    /// listener) unless CISCO_VK_GNOI_PORT pins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gnoi: Option<GnoiConfig>,

    /// The device CLI over SSH, used by the DeviceOperation kinds
    /// ShowCommand, ConfigDiff and PacketCapture. It logs in with the same
    /// credentials (spec.username and spec.credentialSecretRef; that
    /// Secret's optional key enableSecret is sent to `enable` when the
    /// login lands in user exec). The CLI kinds wait (Pending) until this
    /// names the host-key trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConfig>,
}

/// Device CLI over SSH (not upstream: upstream's CLI kinds take the trust
/// from the image-source Secret conventions; here it is per device).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.knownHostsSecretRef) != (has(self.insecureAcceptAnyHostKey) && self.insecureAcceptAnyHostKey)"
).message("spec.ssh needs exactly one of knownHostsSecretRef (a Secret with key knownHosts) or insecureAcceptAnyHostKey: true"))]
pub struct SshConfig {
    /// SSH port of the device CLI. Default 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Same-namespace Secret whose key knownHosts (or known_hosts) holds
    /// OpenSSH known_hosts lines; the device's host key must match a line
    /// naming its address (`[address]:port` when the port is not 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_secret_ref: Option<LocalObjectRef>,

    /// Accept any host key: anyone on the path can read the device's
    /// output and the login password. Lab use only; every session logs a
    /// warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_accept_any_host_key: bool,
}

/// Device driver.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Driver {
    /// Cisco IOS-XE (Catalyst 9000). The production driver.
    #[serde(rename = "XE")]
    Xe,
    /// Cisco IOS-XR (accepted; not driven by this controller).
    #[serde(rename = "XR")]
    Xr,
    /// Cisco NX-OS (accepted; not driven by this controller).
    #[serde(rename = "NXOS")]
    Nxos,
    /// Generic OpenConfig device (accepted; not driven by this controller).
    #[serde(rename = "OPENCONFIG")]
    OpenConfig,
    /// Test driver.
    #[serde(rename = "FAKE")]
    Fake,
}

/// Shared TLS settings (upstream `spec.tls`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTls {
    /// Whether the device's management plane uses TLS. Always serialized,
    /// as upstream.
    #[serde(default)]
    pub enabled: bool,

    /// Skip verification of the device certificate. Only honoured with
    /// spec.gnoi.transportSecurity auto; an explicit tls transport always
    /// verifies (see the object-level rule).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// gNOI/gNMI transport settings (upstream `spec.gnoi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.tls) || (has(self.transportSecurity) && self.transportSecurity == 'tls')"
).message("spec.gnoi.tls requires spec.gnoi.transportSecurity to be tls"))]
pub struct GnoiConfig {
    /// gNOI/gNMI listener port. When unset: CISCO_VK_GNOI_PORT if set, else
    /// 9339 for TLS and 50052 for the insecure listener (IOS-XE's
    /// `gnxi secure-port` and `gnxi port` defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// How the controller secures the gNOI connection. auto (default)
    /// follows spec.tls.enabled, and uses the insecure listener only when
    /// the controller runs with CISCO_VK_GNOI_INSECURE=1; tls always uses
    /// TLS and verifies the device (never overridden by
    /// CISCO_VK_GNOI_INSECURE); insecure uses the plaintext listener and
    /// is refused unless the controller runs with CISCO_VK_GNOI_INSECURE=1.
    /// plaintext is the older upstream spelling of insecure and means the
    /// same.
    #[serde(default)]
    pub transport_security: TransportSecurity,

    /// Dedicated gNOI trust material. Requires transportSecurity tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GnoiTls>,
}

/// gNOI transport security.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransportSecurity {
    /// Follow spec.tls.enabled (and CISCO_VK_GNOI_INSECURE).
    #[default]
    Auto,
    /// TLS with certificate verification.
    Tls,
    /// Plaintext listener; needs CISCO_VK_GNOI_INSECURE=1 on the controller.
    Insecure,
    /// Older upstream spelling of insecure.
    Plaintext,
}

impl TransportSecurity {
    /// The setting with the `plaintext` alias folded into `insecure`.
    pub fn canonical(self) -> Self {
        match self {
            Self::Plaintext => Self::Insecure,
            other => other,
        }
    }
}

/// gNOI TLS trust material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GnoiTls {
    /// Same-namespace Secret with key `ca.crt` (required: the CA bundle
    /// that signs the device certificate) and optionally the pair
    /// `tls.crt` + `tls.key` (a client certificate for mutual TLS).
    pub secret_ref: LocalObjectRef,

    /// Name to verify the device certificate against (and send as SNI),
    /// when it differs from spec.address, e.g. when the device is reached
    /// by IP but its certificate names a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

/// Observed state of a CiscoDevice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiscoDeviceStatus {
    /// Pending (not probed yet), Ready (reachable and usable), Unreachable
    /// (the last probe failed to connect) or Error (configuration or
    /// protocol error; see message). The schema description comes from
    /// [`DevicePhase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DevicePhase>,

    /// metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Whether the last probe reached the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,

    /// Running software version as gNOI OS.Verify reports it: the image's
    /// full build string, e.g. 17.18.02.0.4112.1766116039.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,

    /// When the device last booted, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time: Option<Time>,

    /// When the device last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,

    /// gNOI services observed as supported or unsupported. gNMI
    /// capabilities do not list gNOI services, so support is learned from
    /// answers: an UNIMPLEMENTED answer marks a service Unsupported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub gnoi_services: Vec<GnoiServiceStatus>,

    /// gNMI capabilities of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gnmi: Option<GnmiStatus>,

    /// Ready, Reachable and GNOIConfigurationReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Human-readable detail of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Phase of a CiscoDevice: Pending (not probed yet), Ready (reachable and
/// usable), Unreachable (the last probe could not connect) or Error
/// (configuration or protocol error; see message).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DevicePhase {
    /// Not probed yet.
    Pending,
    /// Reachable and usable.
    Ready,
    /// The last probe could not connect.
    Unreachable,
    /// Configuration or protocol error.
    Error,
}

/// A gNOI service of the device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GnoiService {
    /// gnoi.system.System: ping, traceroute, time, reboot, kill process.
    System,
    /// gnoi.file.File: get, stat, put, remove.
    File,
    /// gnoi.os.OS: install, activate, verify.
    #[serde(rename = "OS")]
    Os,
    /// gnoi.certificate.CertificateManagement.
    Cert,
    /// gnoi.factory_reset.FactoryReset.
    FactoryReset,
}

impl GnoiService {
    /// Every service, in a stable order.
    pub const ALL: [Self; 5] = [
        Self::System,
        Self::File,
        Self::Os,
        Self::Cert,
        Self::FactoryReset,
    ];

    /// The name used in status and reasons: System, File, OS, Cert,
    /// FactoryReset.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "System",
            Self::File => "File",
            Self::Os => "OS",
            Self::Cert => "Cert",
            Self::FactoryReset => "FactoryReset",
        }
    }

    /// Fully qualified gRPC service name, the prefix of its method paths.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::System => "gnoi.system.System",
            Self::File => "gnoi.file.File",
            Self::Os => "gnoi.os.OS",
            Self::Cert => "gnoi.certificate.CertificateManagement",
            Self::FactoryReset => "gnoi.factory_reset.FactoryReset",
        }
    }
}

impl std::fmt::Display for GnoiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the controller learned about one gNOI service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GnoiServiceStatus {
    /// Service: System, File, OS, Cert or FactoryReset.
    pub name: GnoiService,

    /// Supported (answered a call), Unsupported (answered UNIMPLEMENTED) or
    /// Unknown (not called yet, or the cache entry expired).
    pub state: ServiceState,

    /// When the state was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,

    /// Detail, e.g. the device's UNIMPLEMENTED message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Observed support of a gNOI service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceState {
    /// The service answered a call.
    Supported,
    /// The service answered UNIMPLEMENTED.
    Unsupported,
    /// Not observed yet.
    Unknown,
}

/// gNMI capabilities (from gNMI Capabilities).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GnmiStatus {
    /// gNMI version the device reports (IOS-XE: 0.4.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Supported encodings, e.g. JSON_IETF, PROTO.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encodings: Vec<String>,

    /// Number of YANG models the device advertises. Only the count is
    /// kept: an IOS-XE switch advertises well over a thousand models, which
    /// would make every status write large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub model_count: Option<i32>,

    /// When the capabilities were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

impl CiscoDeviceSpec {
    /// The gNOI transport setting with defaults and aliases applied.
    pub fn transport_security(&self) -> TransportSecurity {
        self.gnoi
            .as_ref()
            .map(|g| g.transport_security.canonical())
            .unwrap_or_default()
    }

    /// Whether spec.tls.enabled is set.
    pub fn tls_enabled(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.enabled)
    }
}
