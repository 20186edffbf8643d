//! Typed reasons: one enum per kind, written to status and Events as
//! [`as_str`](ActionReason::as_str). The strings are part of the public API
//! (users match on them in alerts and scripts) and never change once
//! released; the enums keep a typo from becoming a new reason.

use std::fmt;

use crate::client::GnoiService;

/// Reasons of an IOSXEOperationalAction (`status.reason`,
/// `status.failureReason`, the Ready condition and Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionReason {
    /// Waiting for the device Lease held by another object.
    MutationLeaseBlocked,
    /// The device Lease could not be read or written.
    MutationLeaseError,
    /// The CiscoDevice is missing or cannot be reached.
    NoTransport,
    /// The marker is written and the request is being sent.
    Dispatching,
    /// Sent; its effect is being read back from the device.
    Observing,
    /// Marked as dispatched (Running event).
    Running,
    /// The action took effect.
    Succeeded,
    /// Deleted while dispatched: kept until the outcome is known.
    DeletionPending,
    /// `spec.confirm` differs from `spec.deviceRef.name`.
    ConfirmMismatch,
    /// The action block is missing, doubled or out of range.
    InvalidAction,
    /// A path breaks the write-path rules.
    InvalidPath,
    /// The FilePut ConfigMap does not exist.
    ConfigMapNotFound,
    /// The FilePut ConfigMap has no `binaryData["content"]`.
    ConfigMapContentMissing,
    /// The file to remove does not exist.
    FileNotFound,
    /// A reboot is pending already.
    RebootAlreadyPending,
    /// CancelReboot with no reboot pending.
    NoRebootPending,
    /// The device cannot reinstall the factory OS.
    FactoryOSUnsupported,
    /// The device cannot zero-fill storage.
    ZeroFillUnsupported,
    /// The device refused the factory reset.
    FactoryResetRefused,
    /// gNOI is disabled in the controller's configuration.
    GnoiDisabled,
    /// The device could not be reached, or the deadline passed.
    DeviceUnavailable,
    /// The device answered the request with an error.
    ActionFailed,
    /// Dispatched, but the outcome cannot be read back.
    ActionOutcomeUnknown,
    /// Dispatched, and the device shows no sign of it.
    ActionNotApplied,
    /// The device does not implement the service.
    ServiceUnsupported(GnoiService),
    /// A client error's own reason (`device::client_reason`).
    Client(&'static str),
}

impl ActionReason {
    /// The reason as written to the API.
    pub fn as_str(self) -> &'static str {
        use ActionReason::*;
        match self {
            MutationLeaseBlocked => "MutationLeaseBlocked",
            MutationLeaseError => "MutationLeaseError",
            NoTransport => "NoTransport",
            Dispatching => "Dispatching",
            Observing => "Observing",
            Running => "Running",
            Succeeded => "Succeeded",
            DeletionPending => "DeletionPending",
            ConfirmMismatch => "ConfirmMismatch",
            InvalidAction => "InvalidAction",
            InvalidPath => "InvalidPath",
            ConfigMapNotFound => "ConfigMapNotFound",
            ConfigMapContentMissing => "ConfigMapContentMissing",
            FileNotFound => "FileNotFound",
            RebootAlreadyPending => "RebootAlreadyPending",
            NoRebootPending => "NoRebootPending",
            FactoryOSUnsupported => "FactoryOSUnsupported",
            ZeroFillUnsupported => "ZeroFillUnsupported",
            FactoryResetRefused => "FactoryResetRefused",
            GnoiDisabled => "GNOIDisabled",
            DeviceUnavailable => "DeviceUnavailable",
            ActionFailed => "ActionFailed",
            ActionOutcomeUnknown => "ActionOutcomeUnknown",
            ActionNotApplied => "ActionNotApplied",
            ServiceUnsupported(s) => service_unsupported(s),
            Client(r) => r,
        }
    }
}

/// `<Service>ServiceUnsupported`, e.g. `OSServiceUnsupported`.
pub fn service_unsupported(s: GnoiService) -> &'static str {
    match s {
        GnoiService::System => "SystemServiceUnsupported",
        GnoiService::File => "FileServiceUnsupported",
        GnoiService::Os => "OSServiceUnsupported",
        GnoiService::Cert => "CertServiceUnsupported",
        GnoiService::FactoryReset => "FactoryResetServiceUnsupported",
        GnoiService::Gnmi => "GNMIServiceUnsupported",
    }
}

impl fmt::Display for ActionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ActionReason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ActionReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::operation::service_name;

    #[test]
    fn service_reasons_follow_the_service_names() {
        for s in [
            GnoiService::System,
            GnoiService::File,
            GnoiService::Os,
            GnoiService::Cert,
            GnoiService::FactoryReset,
            GnoiService::Gnmi,
        ] {
            assert_eq!(
                ActionReason::ServiceUnsupported(s).as_str(),
                format!("{}ServiceUnsupported", service_name(s))
            );
        }
        assert_eq!(ActionReason::GnoiDisabled, "GNOIDisabled");
        assert_eq!(ActionReason::Client("TLSError").to_string(), "TLSError");
    }
}
