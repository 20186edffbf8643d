//! Typed reasons: one enum per kind, written to status and Events as
//! [`as_str`](ActionReason::as_str). The strings are part of the public API
//! (users match on them in alerts and scripts) and never change once
//! released; the enums keep a typo from becoming a new reason.

use crate::client::{ClientError, GnoiService};

/// `Display` and comparison with `str` for a reason type with a
/// `const fn as_str(self) -> &'static str`.
macro_rules! wire_traits {
    ($name:ident) => {
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
pub(crate) use wire_traits;

/// Declares a reason enum of unit variants, each with its wire string:
///
/// ```ignore
/// reasons! {
///     /// Reasons of a kind.
///     pub enum KindReason {
///         /// Documented.
///         Accepted = "Accepted",
///     }
/// }
/// ```
///
/// It gets `as_str`, `ALL` (every reason, in order), `Display` and
/// comparison with `str`.
macro_rules! reasons {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The reason as written to the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }
        }

        $crate::reason::wire_traits!($name);
    };
}

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
    /// A client error's own reason.
    Client(ClientReason),
}

impl ActionReason {
    /// The reason as written to the API.
    pub const fn as_str(self) -> &'static str {
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
            Client(r) => r.as_str(),
        }
    }
}

reasons! {
    /// The reason a device call failed, as every kind reports it.
    pub enum ClientReason {
        /// The device does not implement the service.
        ServiceUnsupported = "ServiceUnsupported",
        /// The device cannot be reached.
        Unavailable = "Unavailable",
        /// The device refused the credentials.
        Unauthenticated = "Unauthenticated",
        /// The call's deadline passed.
        DeadlineExceeded = "DeadlineExceeded",
        /// A device path breaks the path rules.
        InvalidPath = "InvalidPath",
        /// The request cannot be sent as given.
        InvalidArguments = "InvalidArguments",
        /// The device address or TLS settings are unusable.
        InvalidTarget = "InvalidTarget",
        /// The TLS handshake or trust material failed.
        TlsError = "TLSError",
        /// The device answered with a gRPC error.
        GnoiFailed = "GNOIFailed",
        /// The device's answer broke the protocol.
        ProtocolError = "ProtocolError",
        /// A stream broke part-way.
        Interrupted = "Interrupted",
        /// The content to send could not be read.
        ContentSourceFailed = "ContentSourceFailed",
        /// The device's hash of what was sent differs.
        HashMismatch = "HashMismatch",
        /// gNOI is disabled in the controller's configuration.
        GnoiDisabled = "GNOIDisabled",
    }
}

/// The reason of a client error.
pub fn client_reason(e: &ClientError) -> ClientReason {
    match e {
        ClientError::ServiceUnsupported { .. } => ClientReason::ServiceUnsupported,
        ClientError::Unavailable { .. } => ClientReason::Unavailable,
        ClientError::Unauthenticated { .. } => ClientReason::Unauthenticated,
        ClientError::DeadlineExceeded { .. } => ClientReason::DeadlineExceeded,
        ClientError::InvalidPath(_) => ClientReason::InvalidPath,
        ClientError::InvalidRequest(_) => ClientReason::InvalidArguments,
        ClientError::InvalidTarget(_) => ClientReason::InvalidTarget,
        ClientError::Tls(_) => ClientReason::TlsError,
        ClientError::Rpc { .. } => ClientReason::GnoiFailed,
        ClientError::Protocol(_) => ClientReason::ProtocolError,
        ClientError::Interrupted { .. } => ClientReason::Interrupted,
        ClientError::ContentSource { .. } => ClientReason::ContentSourceFailed,
        ClientError::HashMismatch { .. } => ClientReason::HashMismatch,
        ClientError::Disabled => ClientReason::GnoiDisabled,
    }
}

/// Reasons of a DeviceOperation (`status.reason`, the Ready condition and
/// Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationReason {
    /// The CiscoDevice is missing or cannot be reached (Pending).
    NoTransport,
    /// The device calls are running.
    Running,
    /// The operation produced its result.
    Succeeded,
    /// Deleted after `ttlSecondsAfterFinished`.
    Expired,
    /// The arguments cannot be sent.
    InvalidArguments,
    /// The output is too large even for a ConfigMap.
    ArtifactTooLarge,
    /// A command is not on the read-only allowlist.
    CommandNotAllowed,
    /// The device refused some commands.
    CommandFailed,
    /// ConfigDiff is not allowed in the namespace.
    NamespaceNotAuthorized,
    /// The spill ConfigMap could not be written.
    ArtifactWriteFailed,
    /// The device calls did not finish in time.
    DeadlineExceeded,
    /// The result could not be rendered.
    RenderFailed,
    /// The device does not implement the service.
    ServiceUnsupported(GnoiService),
    /// A device call failed.
    Client(ClientReason),
    /// The CLI session failed (`CliError::reason`).
    Cli(&'static str),
}

impl OperationReason {
    /// The reason as written to the API.
    pub const fn as_str(self) -> &'static str {
        use OperationReason::*;
        match self {
            NoTransport => "NoTransport",
            Running => "Running",
            Succeeded => "Succeeded",
            Expired => "Expired",
            InvalidArguments => "InvalidArguments",
            ArtifactTooLarge => "ArtifactTooLarge",
            CommandNotAllowed => "CommandNotAllowed",
            CommandFailed => "CommandFailed",
            NamespaceNotAuthorized => "NamespaceNotAuthorized",
            ArtifactWriteFailed => "ArtifactWriteFailed",
            DeadlineExceeded => "DeadlineExceeded",
            RenderFailed => "RenderFailed",
            ServiceUnsupported(s) => service_unsupported(s),
            Client(r) => r.as_str(),
            Cli(r) => r,
        }
    }
}

wire_traits!(OperationReason);

/// Reasons of a CiscoDevice (its conditions and Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceReason {
    /// Credentials and trust material resolved.
    Resolved,
    /// The device answered a probe.
    Answered,
    /// The device's configuration cannot be resolved
    /// (`TargetError::reason`).
    Target(&'static str),
    /// A probe or the connection failed.
    Client(ClientReason),
}

impl DeviceReason {
    /// The reason as written to the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceReason::Resolved => "Resolved",
            DeviceReason::Answered => "Answered",
            DeviceReason::Target(r) => r,
            DeviceReason::Client(r) => r.as_str(),
        }
    }
}

wire_traits!(DeviceReason);

/// `<Service>ServiceUnsupported`, e.g. `OSServiceUnsupported`.
pub const fn service_unsupported(s: GnoiService) -> &'static str {
    match s {
        GnoiService::System => "SystemServiceUnsupported",
        GnoiService::File => "FileServiceUnsupported",
        GnoiService::Os => "OSServiceUnsupported",
        GnoiService::Cert => "CertServiceUnsupported",
        GnoiService::FactoryReset => "FactoryResetServiceUnsupported",
        GnoiService::Gnmi => "GNMIServiceUnsupported",
    }
}

wire_traits!(ActionReason);

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
        assert_eq!(
            ActionReason::Client(ClientReason::TlsError).to_string(),
            "TLSError"
        );
        assert_eq!(
            OperationReason::ServiceUnsupported(GnoiService::Os),
            "OSServiceUnsupported"
        );
    }

    #[test]
    fn client_reasons_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in ClientReason::ALL {
            assert!(seen.insert(r.as_str()), "{r} twice");
        }
        assert_eq!(seen.len(), 14);
        assert_eq!(
            client_reason(&ClientError::Disabled),
            ClientReason::GnoiDisabled
        );
    }
}
