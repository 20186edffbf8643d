//! `IOSXESoftwareRollout` (`ops.cisco.vk/v1alpha1`): one reviewed object that
//! upgrades a fleet of CiscoDevices in canary groups and waves, paced by
//! budgets, soaked between waves, halted by failures, and paused, resumed
//! or cancelled through `spec.control`. Reconciled only when the controller
//! runs with the software-upgrade gate (`--enable-iosxesoftwareupgrade`).
//!
//! The rollout controller never talks to a device: every target gets one
//! child IOSXESoftwareUpgrade (deterministic name, ownerReference), so each
//! switch keeps the upgrade's audit trail and its at-most-once activation.
//!
//! Field names follow the existing Go system's rollout (`spec.plan.*`,
//! `spec.approval`, `spec.control`, `status.frozenPlan.hash`) where they
//! fit. Different on purpose: a campaign may hold up to 10000 targets
//! (upstream: 100), the resolved plan lives in an immutable ConfigMap so the
//! status stays small at any fleet size, the image source has every form of
//! IOSXESoftwareUpgrade's `imageSource`, and `failurePolicy` lets a campaign
//! tolerate a number of failed targets (upstream fails at the first).
//!
//! Admission rules, each with a message naming its field: `spec.plan` is
//! immutable; targets are exactly one of a non-empty selector, a device
//! list or `allowAll`; the image source rules of the upgrade; selector
//! operators with or without values as Kubernetes label selectors require;
//! domain budgets set at least one limit; `spec.approval` can be set only
//! with the frozen plan's hash and never changes; `spec.control.revision`
//! never decreases, every control change raises it, revision 0 asks for
//! nothing, and cancel cannot be undone.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    DNS1123_SUBDOMAIN_PATTERN, IMAGE_PATH_PATTERN, LocalObjectRef, SHA256_PATTERN, default_true,
    is_false,
};
use super::upgrade::{
    DEFAULT_INSTALL_TIMEOUT_SECONDS, DEFAULT_REBOOT_TIMEOUT_SECONDS, ImageSource,
    MaintenanceWindow, Preinstalled, Strategy, TARGET_VERSION_PATTERN, URL_SCHEME_PATTERN,
};

/// Condition types of an IOSXESoftwareRollout.
pub mod conditions {
    /// The campaign finished with every target upgraded (True), or why not.
    pub use crate::crd::common::READY_CONDITION as READY;
    /// New children are being started or are running (True), or why the
    /// campaign is not moving (False: paused, halted, waiting).
    pub const PROGRESSING: &str = "Progressing";
}

/// Label on every child IOSXESoftwareUpgrade: the rollout's UID.
pub const ROLLOUT_UID_LABEL: &str = "ops.cisco.vk/rollout-uid";
/// Label on every child: the rollout's name (cut to 63 characters).
pub const ROLLOUT_NAME_LABEL: &str = "ops.cisco.vk/rollout";
/// Annotation on every child: the wave that started it.
pub const WAVE_ANNOTATION: &str = "ops.cisco.vk/rollout-wave";
/// Device label a rollout's `source.imageFamily` must match.
pub const IMAGE_FAMILY_LABEL: &str = "operations.cisco.vk/image-family";
/// Key of the frozen plan in its ConfigMap.
pub const PLAN_KEY: &str = "plan.json";

/// Most targets one campaign may hold.
pub const MAX_TARGETS: i32 = 10_000;
/// Default of `spec.plan.targets.maxTargets` (upstream's cap).
pub const DEFAULT_MAX_TARGETS: i32 = 100;
/// Largest budget: the in-progress list in status is bounded by it.
pub const MAX_BUDGET: i32 = 500;
/// Default of `spec.plan.health.canarySoakSeconds`.
pub const DEFAULT_CANARY_SOAK_SECONDS: i32 = 600;
/// Default of `spec.plan.health.waveSoakSeconds`.
pub const DEFAULT_WAVE_SOAK_SECONDS: i32 = 300;
/// Default of `spec.plan.health.maxObservationAgeSeconds`.
pub const DEFAULT_MAX_OBSERVATION_AGE_SECONDS: i32 = 300;

/// OpenAPI pattern of a qualified label key (`prefix/name` or `name`).
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";
/// OpenAPI pattern of a label value (may be empty).
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// OpenAPI pattern of a DNS-1123 label (canary group names).
pub const DNS1123_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Desired state of an IOSXESoftwareRollout: the immutable plan, its
/// approval, and the operator's control requests.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ops.cisco.vk",
    version = "v1alpha1",
    kind = "IOSXESoftwareRollout",
    plural = "iosxesoftwarerollouts",
    shortname = "xerollout",
    namespaced,
    status = "IOSXESoftwareRolloutStatus",
    derive = "PartialEq",
    doc = "A fleet IOS-XE upgrade campaign: canary groups first, then waves paced by budgets (global and per topology domain), soaked between waves, halted by failed targets, paused, resumed or cancelled through spec.control. Each target becomes one child IOSXESoftwareUpgrade. Needs the controller gate --enable-iosxesoftwareupgrade (CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE=1).",
    validation = Rule::new("!has(self.spec.approval) || (has(self.status) && has(self.status.frozenPlan) && self.spec.approval.planHash == self.status.frozenPlan.hash)")
        .message("spec.approval.planHash must equal status.frozenPlan.hash, the hash of the frozen plan (kubectl get xerollout NAME -o jsonpath='{.status.frozenPlan.hash}'); it can be set only once the plan is frozen"),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.plan.targetVersion",
        description = "Requested version"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Campaign phase"
    ),
    printcolumn(
        name = "Wave",
        type_ = "string",
        json_path = ".status.currentWave.name",
        description = "Wave in progress",
        priority = 1
    ),
    printcolumn(
        name = "Planned",
        type_ = "integer",
        json_path = ".status.counts.planned",
        description = "Targets in the frozen plan"
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.counts.succeeded",
        description = "Targets upgraded"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counts.failed",
        description = "Targets whose upgrade failed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.approval) || (has(self.approval) && self.approval == oldSelf.approval)")
    .message("spec.approval cannot be changed or removed once set"))]
pub struct IOSXESoftwareRolloutSpec {
    /// What to upgrade and how. Immutable: create a new rollout to change
    /// the plan.
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.plan is immutable: create a new IOSXESoftwareRollout to change the plan"))]
    pub plan: RolloutPlan,

    /// Approval of the frozen plan, needed when spec.plan.requireApproval
    /// is true: planHash must be status.frozenPlan.hash. Set once; it never
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// Pause, resume and cancel requests. Every change raises revision.
    #[serde(default)]
    pub control: RolloutControl,
}

/// The plan of a campaign.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// Who asked for the campaign (recorded; not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub requested_by: Option<String>,

    /// When the campaign was asked for (recorded; not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,

    /// Which CiscoDevices of this namespace to upgrade.
    pub targets: RolloutTargets,

    /// Where the image comes from: the forms of IOSXESoftwareUpgrade's
    /// spec.imageSource, plus an optional imageFamily.
    pub source: RolloutSource,

    /// Version every target ends up running (same shape and prefix-aware
    /// matching as IOSXESoftwareUpgrade.spec.targetVersion). Quote a
    /// version with a single dot ("17.18").
    #[schemars(length(min = 1, max = 128), pattern(TARGET_VERSION_PATTERN))]
    pub target_version: String,

    /// Activation strategy of every child: Reload (default), ISSU or
    /// NoReboot.
    #[serde(default)]
    pub strategy: Strategy,

    /// Roll a child back when its post-activation verification does not
    /// match. Default true.
    #[serde(default = "default_true")]
    pub rollback_on_failure: bool,

    /// installTimeoutSeconds of every child, 60-86400. Default 3600.
    #[serde(default = "default_install_timeout")]
    #[schemars(range(min = 60, max = 86400))]
    pub install_timeout_seconds: i32,

    /// rebootTimeoutSeconds of every child, 0-86400 (0: the default).
    /// Default 1800.
    #[serde(default = "default_reboot_timeout")]
    #[schemars(range(min = 0, max = 86400))]
    pub reboot_timeout_seconds: i32,

    /// When new children may start. Before notBefore the campaign waits;
    /// after notAfter no new child starts, running ones finish, and the
    /// campaign ends Failed (MaintenanceWindowExpired) if targets remain.
    /// Each child carries the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<RolloutWindow>,

    /// Named groups of devices upgraded first, one group after the other,
    /// each soaked for health.canarySoakSeconds. Every canary device must
    /// be a target. A failed canary halts the campaign whatever
    /// failurePolicy says.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub canaries: Vec<CanaryGroup>,

    /// Pause after the last canary group passed its soak, until a control
    /// revision resumes the campaign. Default true.
    #[serde(default = "default_true")]
    pub pause_after_canary: bool,

    /// Require spec.approval naming the frozen plan's hash before any child
    /// starts. Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_approval: bool,

    /// Concurrency budgets. Waves are formed so that a whole wave fits every
    /// budget, and a child starts only while the budgets have room.
    #[serde(default)]
    pub budgets: Budgets,

    /// Soak and health-reading rules.
    #[serde(default)]
    pub health: HealthPolicy,

    /// When failed targets halt the campaign.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

fn default_install_timeout() -> i32 {
    DEFAULT_INSTALL_TIMEOUT_SECONDS
}

fn default_reboot_timeout() -> i32 {
    DEFAULT_REBOOT_TIMEOUT_SECONDS
}

/// Which devices a campaign targets: exactly one of a non-empty selector, a
/// device list, or allowAll.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.selector) ? 1 : 0) + (has(self.devices) && size(self.devices) > 0 ? 1 : 0) + (self.allowAll ? 1 : 0) == 1")
        .message("spec.plan.targets must set exactly one of selector, devices or allowAll: true"),
    validation = Rule::new("!has(self.selector) || size(self.selector.matchLabels) + size(self.selector.matchExpressions) > 0")
        .message("spec.plan.targets.selector must not be empty; to target every CiscoDevice of the namespace set spec.plan.targets.allowAll: true")
)]
pub struct RolloutTargets {
    /// Label selector over the namespace's CiscoDevices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<TargetSelector>,

    /// Explicit CiscoDevice names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 10000),
        inner(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub devices: Vec<String>,

    /// Target every CiscoDevice of the namespace (only without selector and
    /// devices).
    #[serde(default)]
    pub allow_all: bool,

    /// Largest number of targets the plan may resolve to, 1-10000; more
    /// fails the campaign before anything starts (TooManyTargets). Default
    /// 100.
    #[serde(default = "default_max_targets")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_targets: i32,
}

fn default_max_targets() -> i32 {
    DEFAULT_MAX_TARGETS
}

/// A Kubernetes label selector with bounded sizes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetSelector {
    /// Labels a device must carry with exactly these values.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 96 && size(self[k]) <= 63)")
        .message("spec.plan.targets.selector.matchLabels: keys are at most 96 and values at most 63 characters"))]
    pub match_labels: BTreeMap<String, String>,

    /// Set-based requirements, all of which must hold.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One set-based label requirement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)")
        .message("spec.plan.targets.selector.matchExpressions: operators In and NotIn need values"),
    validation = Rule::new("!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0")
        .message("spec.plan.targets.selector.matchExpressions: operators Exists and DoesNotExist take no values")
)]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 96), pattern(LABEL_KEY_PATTERN))]
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: SelectorOperator,
    /// Values for In and NotIn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 63), pattern(LABEL_VALUE_PATTERN))
    )]
    pub values: Vec<String>,
}

/// Operator of a [`SelectorRequirement`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of values.
    In,
    /// The label is absent or its value is none of values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl TargetSelector {
    /// Whether a device with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// The image of a campaign: IOSXESoftwareUpgrade's image source forms
/// (exactly one of url with sha256, configMapRef, localPath, preinstalled)
/// and an optional image family.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(super::upgrade::SOURCE_EXACTLY_ONE_RULE)
        .message("spec.plan.source must set exactly one of url, configMapRef, localPath, preinstalled"),
    validation = Rule::new(super::upgrade::URL_NEEDS_SHA256_RULE)
        .message("spec.plan.source.sha256 is required with spec.plan.source.url"),
    validation = Rule::new(super::upgrade::SHA256_NEEDS_URL_RULE)
        .message("spec.plan.source.sha256 is only valid with spec.plan.source.url (use localPathSHA256 with localPath)"),
    validation = Rule::new(super::upgrade::URL_SECRET_SCHEME_RULE)
        .message("spec.plan.source.urlSecretRef is only valid with an ftp://, scp:// or sftp:// spec.plan.source.url"),
    validation = Rule::new(super::upgrade::LOCAL_SHA256_NEEDS_PATH_RULE)
        .message("spec.plan.source.localPathSHA256 is only valid with spec.plan.source.localPath")
)]
pub struct RolloutSource {
    /// URL the controller fetches the image from (http, https, tftp, ftp,
    /// scp, sftp). Requires sha256; no user info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(URL_SCHEME_PATTERN))]
    #[x_kube(validation = Rule::new(super::upgrade::URL_NO_USERINFO_RULE)
        .message("spec.plan.source.url must not contain user info (user:password@); put credentials in the Secret named by spec.plan.source.urlSecretRef"))]
    pub url: Option<String>,

    /// SHA-256 of the image at url, 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SHA256_PATTERN))]
    pub sha256: Option<String>,

    /// Same-namespace Secret with the credentials of an ftp, scp or sftp
    /// url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<LocalObjectRef>,

    /// Same-namespace ConfigMap whose binaryData["image"] is the image
    /// (test artifacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectRef>,

    /// Image already on every target's flash (flash:, bootflash: or
    /// harddisk:).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(IMAGE_PATH_PATTERN))]
    #[x_kube(
        validation = Rule::new(crate::crd::common::PATH_SEGMENTS_RULE)
            .message("spec.plan.source.localPath must name a file below the filesystem prefix, with no empty, '.' or '..' segments"),
        validation = Rule::new(crate::crd::common::PATH_SINGLE_PREFIX_RULE)
            .message("spec.plan.source.localPath must not contain a second filesystem prefix")
    )]
    pub local_path: Option<String>,

    /// SHA-256 of the file at localPath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "localPathSHA256")]
    #[schemars(length(min = 1, max = 128))]
    pub local_path_sha256: Option<String>,

    /// Activate targetVersion from each device's install inventory:
    /// `preinstalled: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preinstalled: Option<Preinstalled>,

    /// Image family (e.g. cat9k_iosxe). When set, every target must carry
    /// the label operations.cisco.vk/image-family with this value, or the
    /// plan fails (ImageFamilyMismatch) before anything starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub image_family: Option<String>,
}

impl RolloutSource {
    /// The child upgrade's spec.imageSource.
    pub fn image_source(&self) -> ImageSource {
        ImageSource {
            url: self.url.clone(),
            sha256: self.sha256.clone(),
            url_secret_ref: self.url_secret_ref.clone(),
            config_map_ref: self.config_map_ref.clone(),
            local_path: self.local_path.clone(),
            local_path_sha256: self.local_path_sha256.clone(),
            preinstalled: self.preinstalled.clone(),
        }
    }
}

/// When new children may start.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(super::upgrade::WINDOW_ORDER_RULE)
    .message("spec.plan.maintenanceWindow.notBefore must not be after spec.plan.maintenanceWindow.notAfter"))]
pub struct RolloutWindow {
    /// Earliest start of a new child (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,

    /// Latest start of a new child (RFC 3339); running children finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

impl RolloutWindow {
    /// The child upgrade's spec.maintenanceWindow.
    pub fn upgrade_window(&self) -> MaintenanceWindow {
        MaintenanceWindow {
            not_before: self.not_before.clone(),
            not_after: self.not_after.clone(),
        }
    }
}

/// A named group of canary devices.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryGroup {
    /// Group name, a DNS label (the wave is called canary-<name>).
    #[schemars(length(min = 1, max = 56), pattern(DNS1123_LABEL_PATTERN))]
    pub name: String,
    /// CiscoDevice names, each also a target of the campaign.
    #[schemars(
        length(min = 1, max = 100),
        inner(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub devices: Vec<String>,
}

/// Concurrency budgets of a campaign.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Budgets {
    /// Children at most in their transfer phases (Pending to Validating)
    /// at once, 1-500. Default 1.
    #[serde(default = "default_budget")]
    #[schemars(range(min = 1, max = 500))]
    pub max_concurrent_transfers: i32,

    /// Targets at most unavailable at once, 1-500: children in progress
    /// (any of them may reboot) plus targets whose CiscoDevice is not
    /// Ready. Also the largest wave. Default 1.
    #[serde(default = "default_budget")]
    #[schemars(range(min = 1, max = 500))]
    pub max_unavailable: i32,

    /// Budgets per topology domain: the devices sharing a value of the
    /// label topologyKey (a site, a stack) form one domain. Every target
    /// must carry each key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["topologyKey"]))]
    pub domains: Vec<DomainBudget>,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            max_concurrent_transfers: 1,
            max_unavailable: 1,
            domains: Vec::new(),
        }
    }
}

fn default_budget() -> i32 {
    1
}

/// The budgets of one topology domain key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.maxConcurrentTransfers) || has(self.maxUnavailable)")
    .message("spec.plan.budgets.domains: set maxConcurrentTransfers, maxUnavailable or both"))]
pub struct DomainBudget {
    /// Device label whose value names the domain, e.g.
    /// topology.cisco.vk/site.
    #[schemars(length(min = 1, max = 96), pattern(LABEL_KEY_PATTERN))]
    pub topology_key: String,
    /// Children at most in transfer phases per domain, 1-500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub max_concurrent_transfers: Option<i32>,
    /// Targets at most unavailable per domain, 1-500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub max_unavailable: Option<i32>,
}

/// Soak and health-reading rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HealthPolicy {
    /// Seconds each canary group must stay healthy after its last child
    /// finished, 0-604800. Default 600.
    #[serde(default = "default_canary_soak")]
    #[schemars(range(min = 0, max = 604800))]
    pub canary_soak_seconds: i32,
    /// Seconds each wave must stay healthy, 0-604800. Default 300.
    #[serde(default = "default_wave_soak")]
    #[schemars(range(min = 0, max = 604800))]
    pub wave_soak_seconds: i32,
    /// A device reading older than this does not count as healthy (the
    /// soak waits for a fresh one), 30-86400. Default 300.
    #[serde(default = "default_observation_age")]
    #[schemars(range(min = 30, max = 86400))]
    pub max_observation_age_seconds: i32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            canary_soak_seconds: DEFAULT_CANARY_SOAK_SECONDS,
            wave_soak_seconds: DEFAULT_WAVE_SOAK_SECONDS,
            max_observation_age_seconds: DEFAULT_MAX_OBSERVATION_AGE_SECONDS,
        }
    }
}

fn default_canary_soak() -> i32 {
    DEFAULT_CANARY_SOAK_SECONDS
}

fn default_wave_soak() -> i32 {
    DEFAULT_WAVE_SOAK_SECONDS
}

fn default_observation_age() -> i32 {
    DEFAULT_MAX_OBSERVATION_AGE_SECONDS
}

/// When failed targets halt the campaign.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// The campaign halts when this many targets have failed since the
    /// last resume, 1-10000. Default 1: the first failure halts.
    #[serde(default = "default_max_failed")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_failed_targets: i32,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_failed_targets: 1,
        }
    }
}

fn default_max_failed() -> i32 {
    1
}

/// Approval of a frozen plan.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// status.frozenPlan.hash of the plan approved.
    #[schemars(regex(pattern = r"^sha256:[a-f0-9]{64}$"))]
    pub plan_hash: String,
    /// Who approved it.
    #[schemars(length(min = 1, max = 253))]
    pub approved_by: String,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Time>,
}

/// Pause, resume and cancel requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.revision > 0 || (!self.pause && !self.cancel)")
        .message("spec.control.revision 0 asks for nothing: raise spec.control.revision with a pause or cancel"),
    validation = Rule::new("self.revision == 0 || has(self.requestedBy)")
        .message("spec.control.requestedBy is required once spec.control.revision is above 0"),
    validation = Rule::new("self.revision >= oldSelf.revision")
        .message("spec.control.revision must not decrease"),
    validation = Rule::new("self == oldSelf || self.revision > oldSelf.revision")
        .message("a change of spec.control needs a larger spec.control.revision"),
    validation = Rule::new("!oldSelf.cancel || self.cancel")
        .message("spec.control.cancel cannot be undone: a cancelled rollout stays cancelled")
)]
pub struct RolloutControl {
    /// Monotonic revision of the request; each change raises it. A raise
    /// with pause false resumes a paused or halted campaign (and accepts the
    /// failures so far).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub revision: i64,
    /// Stop starting new children; running ones finish.
    #[serde(default)]
    pub pause: bool,
    /// Delete the children that have not reached Activating, let the others
    /// finish, end Cancelled. Cannot be undone.
    #[serde(default)]
    pub cancel: bool,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub requested_by: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Time>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
}

/// Observed state of an IOSXESoftwareRollout. Its size does not grow with
/// the fleet: the targets live in the frozen plan's ConfigMap and each
/// target's record in its child IOSXESoftwareUpgrade; the lists here are
/// bounded by the budgets or cut.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IOSXESoftwareRolloutStatus {
    /// Campaign phase. The schema description comes from [`RolloutPhase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,

    /// metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Machine-readable reason of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// What is happening and what to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The frozen plan: hash, where it is kept, its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_plan: Option<FrozenPlan>,

    /// Target counts.
    #[serde(default)]
    pub counts: RolloutCounts,

    /// The wave being run or soaked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<WaveStatus>,

    /// Waves finished, soak included.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub completed_waves: i32,

    /// Targets admitted and not finished, with their child's phase; at most
    /// budgets.maxUnavailable entries. A target is listed here before its
    /// child is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_progress: Vec<TargetProgress>,

    /// Failed targets (the first 20; counts.failed has them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_targets: Vec<FailedTarget>,

    /// Targets whose child was deleted by someone else while it ran: they
    /// count as failed and are never started again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_targets: Vec<String>,

    /// What the controller made of spec.control.
    #[serde(default)]
    pub control: ControlStatus,

    /// Ready and Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// When the first child was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the campaign reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// The frozen plan's identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrozenPlan {
    /// sha256:<64 hex> of the plan (targets, waves, domains, source,
    /// policy); spec.approval.planHash names it.
    #[schemars(regex(pattern = r"^sha256:[a-f0-9]{64}$"))]
    pub hash: String,
    /// The immutable ConfigMap holding the plan (key plan.json).
    pub config_map: String,
    /// Targets in the plan.
    pub targets: i32,
    /// Waves in the plan, canary groups included.
    pub waves: i32,
    /// When the plan was frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
}

/// Target counts of a campaign.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCounts {
    /// Targets in the frozen plan.
    #[serde(default)]
    pub planned: i32,
    /// Not started yet.
    #[serde(default)]
    pub pending: i32,
    /// Started and not finished.
    #[serde(default)]
    pub in_progress: i32,
    /// Upgraded.
    #[serde(default)]
    pub succeeded: i32,
    /// Failed (a failed child, or a child deleted while it ran).
    #[serde(default)]
    pub failed: i32,
    /// Not upgraded because the campaign was cancelled or ended early.
    #[serde(default)]
    pub cancelled: i32,
}

/// The wave being run or soaked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// Index in the plan, from 0 (canary groups first).
    pub index: i32,
    /// canary-<group> or wave-<n>.
    pub name: String,
    /// Targets in the wave.
    pub size: i32,
    /// When the soak started (every child of the wave finished and the
    /// wave was healthy); restarted when a device is seen not Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_started_at: Option<Time>,
}

/// One target in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetProgress {
    /// The CiscoDevice.
    pub device: String,
    /// The child IOSXESoftwareUpgrade.
    pub upgrade: String,
    /// The child's phase, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The child was seen; if it disappears now, the target is lost, never
    /// started again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub observed: bool,
}

/// One failed target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedTarget {
    /// The CiscoDevice.
    pub device: String,
    /// The child IOSXESoftwareUpgrade.
    pub upgrade: String,
    /// The child's terminal phase (or Deleted).
    pub phase: String,
    /// The child's failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the controller made of spec.control.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlStatus {
    /// The last spec.control.revision acted on.
    #[serde(default)]
    pub observed_revision: i64,
    /// The campaign was paused after its canaries at this control
    /// revision; a larger revision without pause resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_pause_revision: Option<i64>,
    /// The campaign halted at this control revision; a larger revision
    /// without pause resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_revision: Option<i64>,
    /// Failures accepted by resumes: the campaign halts again when
    /// counts.failed - acceptedFailures reaches maxFailedTargets.
    #[serde(default)]
    pub accepted_failures: i32,
    /// When the last resume of a halted campaign was seen: a device boot
    /// after its child finished counts as a new reboot only after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<Time>,
}

/// Phase of a campaign: Pending (not planned yet, or its gate is off),
/// AwaitingApproval (plan frozen, waiting for spec.approval), Executing,
/// Soaking (a wave finished; its health is being watched), Paused (by
/// spec.control or after the canaries), Halted (failures reached the
/// failure policy, or a soak failed; running children finish, nothing new
/// starts until a resume or cancel), Cancelling, then Succeeded, Failed or
/// Cancelled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RolloutPhase {
    /// Not planned yet, or the software-upgrade gate is off.
    Pending,
    /// Plan frozen; waiting for spec.approval.
    AwaitingApproval,
    /// Children are being started or are running.
    Executing,
    /// A wave finished; its devices' health is being watched.
    Soaking,
    /// No new children: paused by spec.control or after the canaries.
    Paused,
    /// Failures reached the policy or a soak failed: no new children.
    Halted,
    /// Cancel asked: children before Activating are deleted.
    Cancelling,
    /// Every target was upgraded.
    Succeeded,
    /// Terminal: the plan was invalid, the window expired, or targets
    /// failed.
    Failed,
    /// Terminal: cancelled.
    Cancelled,
}

impl RolloutPhase {
    /// Every phase.
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::AwaitingApproval,
        Self::Executing,
        Self::Soaking,
        Self::Paused,
        Self::Halted,
        Self::Cancelling,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Succeeded, Failed and Cancelled are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Executing => "Executing",
            Self::Soaking => "Soaking",
            Self::Paused => "Paused",
            Self::Halted => "Halted",
            Self::Cancelling => "Cancelling",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
