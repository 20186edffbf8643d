//! `IOSXESoftwareUpgrade` (`ops.cisco.vk/v1alpha1`): one IOS-XE software
//! upgrade of one device, as an immutable, auditable object. Reconciled only
//! when the controller runs with `--enable-iosxesoftwareupgrade` /
//! `CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE=1`.
//!
//! Admission rules, each with a message naming its field: the spec is
//! immutable; exactly one image source; `url` needs a `sha256` (64 lowercase
//! hex) and `sha256` needs a `url`; `urlSecretRef` only with ftp/scp/sftp
//! URLs; no user info in a URL (credentials belong in the Secret);
//! filesystem prefixes on device paths; the targetVersion shape; a
//! maintenance window whose notBefore is not after its notAfter.
//!
//! Where the specification and upstream disagree, the specification wins:
//! `resumePolicy` and `maxRetries` are honoured (upstream ignores them),
//! NoReboot ends `Succeeded`, and `rebootTimeoutSeconds: 0` is accepted (the
//! specification's NoReboot example) and means the default for strategies
//! that reboot.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DeviceRef, IMAGE_PATH_PATTERN, LocalObjectRef, SHA256_PATTERN, default_true, is_false,
};

/// Condition types of an IOSXESoftwareUpgrade, in lifecycle order.
pub mod conditions {
    /// The image is on the device (transferred, or already there).
    pub const TRANSFER_COMPLETE: &str = "TransferComplete";
    /// The staged image and the preflight checks passed.
    pub const VALIDATION_PASSED: &str = "ValidationPassed";
    /// A localPath image was checked against `localPathSHA256` before
    /// activation (True), or why not.
    pub const IMAGE_VERIFIED: &str = "ImageVerified";
    /// OS.Activate was accepted.
    pub const ACTIVATION_COMPLETE: &str = "ActivationComplete";
    /// The device runs the target version.
    pub const VERIFICATION_PASSED: &str = "VerificationPassed";
    /// The upgrade finished successfully.
    pub use crate::crd::common::READY_CONDITION as READY;
}

/// OpenAPI pattern of `spec.targetVersion`: IOS-XE version shapes such as
/// 17.15.01a, 26.01.01, 26.01.01.0.340, 17.18.02.0.4112.1766116039.
pub const TARGET_VERSION_PATTERN: &str = r"^[0-9]+(\.[0-9]+)+([a-z])?$";

/// OpenAPI pattern of `spec.imageSource.url`: the schemes the controller
/// can fetch from.
pub const URL_SCHEME_PATTERN: &str = "^(https?|tftp|ftp|scp|sftp)://";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const SOURCE_EXACTLY_ONE_RULE: &str = "(has(self.url) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.localPath) ? 1 : 0) + (has(self.preinstalled) ? 1 : 0) == 1";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const URL_NEEDS_SHA256_RULE: &str = "!has(self.url) || has(self.sha256)";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const SHA256_NEEDS_URL_RULE: &str = "!has(self.sha256) || has(self.url)";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const URL_SECRET_SCHEME_RULE: &str =
    "!has(self.urlSecretRef) || (has(self.url) && self.url.matches('^(ftp|scp|sftp)://'))";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const LOCAL_SHA256_NEEDS_PATH_RULE: &str = "!has(self.localPathSHA256) || has(self.localPath)";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const URL_NO_USERINFO_RULE: &str = "!self.matches('^[a-z]+://[^/?#]*@')";

/// CEL rule shared with the rollout's source and window (messages differ
/// by path).
pub const WINDOW_ORDER_RULE: &str =
    "!has(self.notBefore) || !has(self.notAfter) || self.notBefore <= self.notAfter";

/// Default of `rebootTimeoutSeconds`, also used when it is 0.
pub const DEFAULT_REBOOT_TIMEOUT_SECONDS: i32 = 1800;

/// Default of `installTimeoutSeconds`.
pub const DEFAULT_INSTALL_TIMEOUT_SECONDS: i32 = 3600;

/// Default of `maxRetries`.
pub const DEFAULT_MAX_RETRIES: i32 = 3;

/// Desired state of an IOSXESoftwareUpgrade: which image, which version,
/// and how to activate it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ops.cisco.vk",
    version = "v1alpha1",
    kind = "IOSXESoftwareUpgrade",
    plural = "iosxesoftwareupgrades",
    shortname = "xeupgrade",
    namespaced,
    status = "IOSXESoftwareUpgradeStatus",
    derive = "PartialEq",
    cel,
    doc = "An IOS-XE software upgrade of one CiscoDevice: transfer (or locate) an image, validate it, activate it with gNOI OS.Activate, verify the running version, and roll back on a mismatch. Needs the controller gate --enable-iosxesoftwareupgrade (CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE=1).",
    printcolumn(
        name = "Device",
        type_ = "string",
        json_path = ".spec.deviceRef.name",
        description = "Target CiscoDevice"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Upgrade phase"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.targetVersion",
        description = "Requested version"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("spec is immutable: an IOSXESoftwareUpgrade cannot be changed after creation; create a new one"))]
pub struct IOSXESoftwareUpgradeSpec {
    /// The CiscoDevice to upgrade (same namespace).
    pub device_ref: DeviceRef,

    /// Where the image comes from: exactly one of url (with sha256),
    /// configMapRef, localPath or preinstalled.
    pub image_source: ImageSource,

    /// Version to end up running, in an IOS-XE shape: 17.15.01a, 26.01.01,
    /// 26.01.01.0.340, 17.18.02.0.4112.1766116039. Verification is
    /// prefix-aware on dot boundaries: 26.01.01 matches a device reporting
    /// 26.01.01.0.340, but not 26.01.010, and 17.15.01 does not match
    /// 17.15.01a. Quote a version with a single dot ("17.18") so YAML keeps
    /// it a string.
    #[schemars(length(min = 1, max = 128), pattern(TARGET_VERSION_PATTERN))]
    pub target_version: String,

    /// How to activate: Reload (default: OS.Activate with reboot, wait for
    /// the device, verify), ISSU (the normal activate path, then assert the
    /// device chose ISSU; IOS-XE makes the final choice), or NoReboot (stage
    /// for the next reload and end Succeeded; trigger the reload with an
    /// IOSXEOperationalAction).
    #[serde(default)]
    pub strategy: Strategy,

    /// Re-activate the previously running version when post-activation
    /// verification does not match targetVersion. Default true.
    #[serde(default = "default_true")]
    pub rollback_on_failure: bool,

    /// What an interrupted transfer does: Retry (default) re-enters
    /// Transferring, up to maxRetries times; Abort makes the interruption
    /// terminal (Failed).
    #[serde(default)]
    pub resume_policy: ResumePolicy,

    /// Transfer retries allowed under resumePolicy Retry, 0-10. Default 3.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: i32,

    /// Seconds to wait, from activation, for the device to come back and
    /// report a version (AwaitingReachability and Verifying), 0-86400.
    /// Default 1800. 0 means the default for strategies that reboot and
    /// "not applicable" for NoReboot, as in the specification's example.
    #[serde(default = "default_reboot_timeout")]
    #[schemars(range(min = 0, max = 86400))]
    pub reboot_timeout_seconds: i32,

    /// Seconds allowed for resolving, transferring and validating the
    /// image, 60-86400. Default 3600.
    #[serde(default = "default_install_timeout")]
    #[schemars(range(min = 60, max = 86400))]
    pub install_timeout_seconds: i32,

    /// When device mutations may start. Before notBefore the upgrade waits
    /// in Pending; after notAfter a mutation that has not started yet ends
    /// PreflightFailed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
}

fn default_max_retries() -> i32 {
    DEFAULT_MAX_RETRIES
}

fn default_reboot_timeout() -> i32 {
    DEFAULT_REBOOT_TIMEOUT_SECONDS
}

fn default_install_timeout() -> i32 {
    DEFAULT_INSTALL_TIMEOUT_SECONDS
}

impl IOSXESoftwareUpgradeSpec {
    /// The reboot timeout in seconds with 0 read as the default.
    pub fn effective_reboot_timeout_seconds(&self) -> i32 {
        if self.reboot_timeout_seconds == 0 {
            DEFAULT_REBOOT_TIMEOUT_SECONDS
        } else {
            self.reboot_timeout_seconds
        }
    }
}

/// Image source: exactly one of url, configMapRef, localPath, preinstalled.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(SOURCE_EXACTLY_ONE_RULE)
        .message("spec.imageSource must set exactly one of url, configMapRef, localPath, preinstalled"),
    validation = Rule::new(URL_NEEDS_SHA256_RULE)
        .message("spec.imageSource.sha256 is required with spec.imageSource.url"),
    validation = Rule::new(SHA256_NEEDS_URL_RULE)
        .message("spec.imageSource.sha256 is only valid with spec.imageSource.url (use localPathSHA256 with localPath)"),
    validation = Rule::new(URL_SECRET_SCHEME_RULE)
        .message("spec.imageSource.urlSecretRef is only valid with an ftp://, scp:// or sftp:// spec.imageSource.url"),
    validation = Rule::new(LOCAL_SHA256_NEEDS_PATH_RULE)
        .message("spec.imageSource.localPathSHA256 is only valid with spec.imageSource.localPath")
)]
pub struct ImageSource {
    /// URL the controller fetches the image from and streams to the device
    /// with gNOI OS.Install: http, https, tftp, ftp, scp or sftp. Requires
    /// sha256. No user info (user:password@): credentials go in
    /// urlSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(URL_SCHEME_PATTERN))]
    #[x_kube(validation = Rule::new(URL_NO_USERINFO_RULE)
        .message("spec.imageSource.url must not contain user info (user:password@); put credentials in the Secret named by spec.imageSource.urlSecretRef"))]
    pub url: Option<String>,

    /// SHA-256 of the image at url, 64 lowercase hex digits (sha256sum
    /// output). Required with url; the transfer is refused on a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SHA256_PATTERN))]
    pub sha256: Option<String>,

    /// Same-namespace Secret with the credentials for an ftp, scp or sftp
    /// url: username + password, or for scp/sftp username + privateKey
    /// (+ passphrase), and knownHosts for scp/sftp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<LocalObjectRef>,

    /// Same-namespace ConfigMap whose binaryData["image"] is the image. For
    /// small test artifacts only (a ConfigMap holds at most about 1 MiB),
    /// not production images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectRef>,

    /// Image already on the device, e.g. flash:cat9k_iosxe.17.18.02.SPA.bin
    /// (prefix flash:, bootflash: or harddisk:). Nothing is transferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(IMAGE_PATH_PATTERN))]
    #[x_kube(
        validation = Rule::new(crate::crd::common::PATH_SEGMENTS_RULE)
            .message("spec.imageSource.localPath must name a file below the filesystem prefix, with no empty, '.' or '..' segments"),
        validation = Rule::new(crate::crd::common::PATH_SINGLE_PREFIX_RULE)
            .message("spec.imageSource.localPath must not contain a second filesystem prefix")
    )]
    pub local_path: Option<String>,

    /// SHA-256 of the file at localPath, 64 lowercase hex digits, checked
    /// through gNOI File.Get before activation. Without it a staged image is
    /// activated unverified. Admission checks only its length: the
    /// specification's own localPath example carries a shortened
    /// placeholder (`a1b2c3d4e5f6...`) and must be accepted as written, so a
    /// value that is not a digest is refused by the controller before the
    /// device is touched (phase PreflightFailed, reason InvalidImageSource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "localPathSHA256")]
    #[schemars(length(min = 1, max = 128))]
    pub local_path_sha256: Option<String>,

    /// Activate targetVersion from the device's install inventory (an image
    /// added earlier); nothing is transferred. Written as an empty object:
    /// `preinstalled: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preinstalled: Option<Preinstalled>,
}

/// Marker of the preinstalled image source; carries no fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct Preinstalled {}

/// The image source an upgrade uses, checked for exactly one choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// Fetch from a URL and verify against a digest.
    Url {
        /// The URL.
        url: &'a str,
        /// Expected SHA-256, lowercase hex.
        sha256: &'a str,
        /// Credentials Secret, for ftp/scp/sftp.
        secret: Option<&'a LocalObjectRef>,
    },
    /// Read `binaryData["image"]` of a ConfigMap.
    ConfigMap(&'a LocalObjectRef),
    /// An image already on the device.
    LocalPath {
        /// Device path.
        path: &'a str,
        /// Expected SHA-256, if given.
        sha256: Option<&'a str>,
    },
    /// A version already in the install inventory.
    Preinstalled,
}

/// Why an image source is unusable. The API server refuses these; this
/// exists for objects stored before the CRD carried the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageSourceError {
    /// Zero or several sources set.
    #[error(
        "spec.imageSource must set exactly one of url, configMapRef, localPath, preinstalled; found {0}"
    )]
    NotExactlyOne(usize),
    /// url without sha256.
    #[error("spec.imageSource.sha256 is required with spec.imageSource.url")]
    MissingSha256,
    /// A digest that is not 64 lowercase hex digits.
    #[error(
        "spec.imageSource.{field} must be a SHA-256 digest of 64 lowercase hex digits, got {value:?}"
    )]
    InvalidDigest {
        /// `sha256` or `localPathSHA256`.
        field: &'static str,
        /// The value found.
        value: String,
    },
}

/// Whether `s` is a SHA-256 digest spelled as 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn checked_digest<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ImageSourceError> {
    if is_sha256_hex(value) {
        Ok(value)
    } else {
        Err(ImageSourceError::InvalidDigest {
            field,
            value: value.to_owned(),
        })
    }
}

impl ImageSource {
    /// The one configured source, with its digests checked.
    pub fn source(&self) -> Result<Source<'_>, ImageSourceError> {
        let count = [
            self.url.is_some(),
            self.config_map_ref.is_some(),
            self.local_path.is_some(),
            self.preinstalled.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if count != 1 {
            return Err(ImageSourceError::NotExactlyOne(count));
        }
        if let Some(url) = &self.url {
            let sha256 = self
                .sha256
                .as_deref()
                .ok_or(ImageSourceError::MissingSha256)?;
            let sha256 = checked_digest("sha256", sha256)?;
            return Ok(Source::Url {
                url,
                sha256,
                secret: self.url_secret_ref.as_ref(),
            });
        }
        if let Some(cm) = &self.config_map_ref {
            return Ok(Source::ConfigMap(cm));
        }
        if let Some(path) = &self.local_path {
            let sha256 = self
                .local_path_sha256
                .as_deref()
                .map(|d| checked_digest("localPathSHA256", d))
                .transpose()?;
            return Ok(Source::LocalPath { path, sha256 });
        }
        Ok(Source::Preinstalled)
    }
}

/// Activation strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Strategy {
    /// OS.Activate with reboot; wait for the device; verify.
    #[default]
    Reload,
    /// The normal activate path, then assert ISSU was chosen.
    #[serde(rename = "ISSU")]
    Issu,
    /// OS.Activate with no_reboot: stage for the next reload.
    NoReboot,
}

impl Strategy {
    /// Whether activation reboots the device.
    pub fn reboots(self) -> bool {
        !matches!(self, Self::NoReboot)
    }
}

/// What an interrupted transfer does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ResumePolicy {
    /// Re-enter Transferring, up to maxRetries times.
    #[default]
    Retry,
    /// Make the interruption terminal.
    Abort,
}

/// When device mutations may start.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(WINDOW_ORDER_RULE)
    .message("spec.maintenanceWindow.notBefore must not be after spec.maintenanceWindow.notAfter"))]
pub struct MaintenanceWindow {
    /// Earliest start of device mutations (RFC 3339, e.g.
    /// 2026-03-01T22:00:00Z).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,

    /// Latest start of a device mutation (RFC 3339). A mutation already
    /// under way is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

/// Observed state of an IOSXESoftwareUpgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IOSXESoftwareUpgradeStatus {
    /// Lifecycle phase. The schema description comes from
    /// [`UpgradePhase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<UpgradePhase>,

    /// metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// spec.targetVersion, copied when the upgrade starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,

    /// Version the device reports (OS.Verify) after the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,

    /// Version running before activation; the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,

    /// Exact version the device validated (OS.Install Validated, or the
    /// install inventory). OS.Activate uses it even when targetVersion is a
    /// shorter prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated_version: Option<String>,

    /// Digest of the resolved image, sha256:<64 hex>, persisted before any
    /// transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[a-f0-9]{64}$"))]
    pub source_digest: Option<String>,

    /// Size of the resolved image in bytes (url and configMapRef sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub source_size: Option<i64>,

    /// Transfer progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_progress: Option<TransferProgress>,

    /// Transfer retries used so far (resumePolicy Retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retry_count: Option<i32>,

    /// Machine-readable reason of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Machine-readable reason of a terminal failure, e.g.
    /// SourceDigestMismatch, TargetNotInstalled, MaintenanceWindowExpired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,

    /// Human-readable detail of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// TransferComplete, ValidationPassed, ActivationComplete,
    /// VerificationPassed and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// When the upgrade left Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the install window (installTimeoutSeconds) started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_start_time: Option<Time>,

    /// When OS.Activate was requested; rebootTimeoutSeconds counts from
    /// here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_start_time: Option<Time>,

    /// Boot time the device reported (gNMI `/system/state/boot-time`, RFC
    /// 3339 with nanoseconds) just before the last OS.Activate (the target's,
    /// then the rollback's): a later boot time means the device rebooted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_activation_boot_time: Option<String>,

    /// When the rollback activation was requested; the rollback gets its
    /// own rebootTimeoutSeconds from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_start_time: Option<Time>,

    /// When the upgrade reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// At-most-once marker: OS.Activate for the target was requested. Set,
    /// with activationInvocationID, before the RPC is sent; once set the
    /// activation is observed, never sent again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub activation_requested: bool,

    /// Identity of the activation request, `<metadata.uid>/<generation>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "activationInvocationID")]
    pub activation_invocation_id: Option<String>,

    /// At-most-once marker: OS.Activate of previousVersion (rollback) was
    /// requested.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rollback_activation_requested: bool,

    /// Identity of the rollback activation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "rollbackInvocationID")]
    pub rollback_invocation_id: Option<String>,
}

/// Transfer progress of the image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferProgress {
    /// Bytes the device acknowledged. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub bytes_transferred: i64,

    /// Image size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub total_bytes: Option<i64>,

    /// floor(bytesTransferred / totalBytes * 100); 0 when the size is
    /// unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,
}

/// Lifecycle phase of an upgrade (the specification's table): Pending
/// (accepted, nothing sent; maintenance windows are checked here),
/// Resolving, Transferring, TransferInterrupted (retryable; may re-enter
/// Transferring), Validating, Activating (OS.Activate requested),
/// AwaitingReachability (the device may be rebooting), Verifying,
/// RollingBack (re-activating the previous version after a verify
/// mismatch), then Succeeded or one of the terminal failures Failed,
/// PreflightFailed, ValidationFailed, RolledBack, RebootTimeout, Cancelled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum UpgradePhase {
    /// Accepted; nothing sent to the device. Maintenance windows are
    /// checked here.
    Pending,
    /// Image source and target version being resolved.
    Resolving,
    /// Image being copied or staged.
    Transferring,
    /// A transfer failed with a retryable error; may re-enter Transferring.
    TransferInterrupted,
    /// Staged image and preflight requirements being checked.
    Validating,
    /// OS.Activate requested.
    Activating,
    /// The device may be rebooting after activation.
    AwaitingReachability,
    /// Running version and activation result being verified.
    Verifying,
    /// The previous version is being re-activated after a verify mismatch.
    RollingBack,
    /// The requested version is active and verified (or staged, for
    /// NoReboot).
    Succeeded,
    /// Terminal failure.
    Failed,
    /// Terminal: a precondition failed before any mutation.
    PreflightFailed,
    /// Terminal: the image failed validation.
    ValidationFailed,
    /// Terminal: the previous version was restored.
    RolledBack,
    /// Terminal: the device did not come back within rebootTimeoutSeconds.
    RebootTimeout,
    /// Terminal: cancelled.
    Cancelled,
}

impl UpgradePhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Self; 16] = [
        Self::Pending,
        Self::Resolving,
        Self::Transferring,
        Self::TransferInterrupted,
        Self::Validating,
        Self::Activating,
        Self::AwaitingReachability,
        Self::Verifying,
        Self::RollingBack,
        Self::Succeeded,
        Self::Failed,
        Self::PreflightFailed,
        Self::ValidationFailed,
        Self::RolledBack,
        Self::RebootTimeout,
        Self::Cancelled,
    ];

    /// Succeeded and the failure phases are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::Failed
                | Self::PreflightFailed
                | Self::ValidationFailed
                | Self::RolledBack
                | Self::RebootTimeout
                | Self::Cancelled
        )
    }

    /// The wire name, e.g. `AwaitingReachability`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Resolving => "Resolving",
            Self::Transferring => "Transferring",
            Self::TransferInterrupted => "TransferInterrupted",
            Self::Validating => "Validating",
            Self::Activating => "Activating",
            Self::AwaitingReachability => "AwaitingReachability",
            Self::Verifying => "Verifying",
            Self::RollingBack => "RollingBack",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::PreflightFailed => "PreflightFailed",
            Self::ValidationFailed => "ValidationFailed",
            Self::RolledBack => "RolledBack",
            Self::RebootTimeout => "RebootTimeout",
            Self::Cancelled => "Cancelled",
        }
    }
}

impl std::fmt::Display for UpgradePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
