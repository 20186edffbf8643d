//! Types and validation fragments shared by the four CRDs: the device
//! reference, same-namespace object references, condition helpers and the
//! IOS-XE filesystem path rules.
//!
//! The path rules exist twice on purpose: here as admission rules (OpenAPI
//! `pattern` for the filesystem prefix, CEL for the segment rules), so a bad
//! manifest is refused by `kubectl apply`, and again in the device client,
//! which validates every path before it reaches a device whatever the
//! object's history (an object stored before a CRD upgrade is not
//! re-admitted).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `Ready` condition type every kind writes (each kind's
/// `conditions::READY` is this one).
pub const READY_CONDITION: &str = "Ready";

/// Every IOS-XE filesystem prefix the gNOI client accepts (upstream
/// `IOSXEFilesystemPrefixes`), without the trailing colon.
pub const IOSXE_FILESYSTEMS: [&str; 8] = [
    "flash",
    "bootflash",
    "harddisk",
    "usbflash0",
    "usbflash1",
    "crashinfo",
    "nvram",
    "webui",
];

/// OpenAPI pattern for paths that may be read (DeviceOperation file kinds):
/// all eight IOS-XE filesystems.
pub const READ_PATH_PATTERN: &str =
    "^(flash|bootflash|harddisk|usbflash0|usbflash1|crashinfo|nvram|webui):";

/// OpenAPI pattern for paths that may be written or removed
/// (IOSXEOperationalAction FilePut and FileRemove): the five user storage
/// filesystems; crash, NVRAM and web UI storage are never written.
pub const WRITE_PATH_PATTERN: &str = "^(flash|bootflash|harddisk|usbflash0|usbflash1):";

/// OpenAPI pattern for a software image already on the device
/// (IOSXESoftwareUpgrade `localPath`): the filesystems IOS-XE boots from.
pub const IMAGE_PATH_PATTERN: &str = "^(flash|bootflash|harddisk):";

/// Longest accepted device file path. IOS-XE limits a full path to well
/// under this; the bound also keeps the CEL cost of the path rules small.
pub const MAX_PATH_LEN: u32 = 1024;

/// CEL rule (on a path string) for the part after the filesystem prefix: one
/// optional leading `/`, then one or more `/`-separated segments, none of
/// them empty, `.` or `..`. RE2 has no look-ahead, so a segment is spelled
/// as "starts with a non-dot", "a dot then a non-dot", or "two dots then at
/// least one more character" (`...` is a legal file name).
pub const PATH_SEGMENTS_RULE: &str = r"self.matches('^[a-z0-9]+:/?([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+)(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+))*$')";

/// CEL rule (on a path string): no second filesystem prefix after the first,
/// which blocks `flash:/x/bootflash:y`.
pub const PATH_SINGLE_PREFIX_RULE: &str = "!self.matches('^[a-z0-9]+:.*(flash|bootflash|harddisk|usbflash0|usbflash1|crashinfo|nvram|webui):')";

/// OpenAPI pattern of a lowercase hex SHA-256 digest.
pub const SHA256_PATTERN: &str = "^[a-f0-9]{64}$";

/// OpenAPI pattern of a DNS-1123 subdomain (Kubernetes object names).
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The CiscoDevice an object acts on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct DeviceRef {
    /// Name of a CiscoDevice in the same namespace as this object.
    /// Cross-namespace references do not exist: a controller serves the
    /// devices of its own namespace only.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl DeviceRef {
    /// A reference to the device called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A Secret or ConfigMap in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object, in the referring object's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,
}

impl LocalObjectRef {
    /// A reference to the object called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Status of a condition, as the `status` field of a Kubernetes condition
/// spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The wire spelling: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// Finds the condition of type `type_` in a status's condition list.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Serde helper: skip `false` booleans, so status markers that were never
/// set stay out of the stored object.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

/// Serde default for fields whose documented default is `true`.
pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_status_spelling() {
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
        assert_eq!(ConditionStatus::from(false).as_str(), "False");
        assert_eq!(ConditionStatus::Unknown.as_str(), "Unknown");
    }

    #[test]
    fn patterns_list_every_filesystem() {
        assert_eq!(
            READ_PATH_PATTERN,
            format!("^({}):", IOSXE_FILESYSTEMS.join("|"))
        );
        assert_eq!(
            WRITE_PATH_PATTERN,
            format!("^({}):", IOSXE_FILESYSTEMS[..5].join("|"))
        );
        assert_eq!(
            IMAGE_PATH_PATTERN,
            format!("^({}):", IOSXE_FILESYSTEMS[..3].join("|"))
        );
        assert!(PATH_SINGLE_PREFIX_RULE.contains(&format!("({}):", IOSXE_FILESYSTEMS.join("|"))));
    }
}
