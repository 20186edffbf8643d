//! Typed reasons: one enum per kind, written to status and Events as
//! [`as_str`](ActionReason::as_str). The strings are part of the public API
//! (users match on them in alerts and scripts) and never change once
//! released; the enums keep a typo from becoming a new reason.

use crate::client::{ClientError, GnoiService};
use crate::crd::rollout::RolloutPhase;
use crate::crd::upgrade::UpgradePhase;

/// `Display`, comparison with `str` and `Into<String>` for a reason type with a
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

        impl From<$name> for String {
            fn from(r: $name) -> String {
                r.as_str().to_owned()
            }
        }
    };
}
pub(crate) use wire_traits;

/// Declares a reason enum of unit variants, each with its wire string,
/// and optionally variants that wrap a reason of another kind and write
/// it through a `const fn`:
///
/// ```ignore
/// reasons! {
///     /// Reasons of a kind.
///     pub enum KindReason {
///         /// Documented.
///         Accepted = "Accepted",
///         /// The same wire string as another kind's reason, declared there.
///         Succeeded = OtherReason::Succeeded.as_str(),
///     }
///     wraps {
///         /// A source's reason, as the source writes it.
///         Source(SourceReason) = SourceReason::as_str,
///     }
/// }
/// ```
///
/// A reason that names the phase entered is written through the phase
/// (`Activating = UpgradePhase::Activating.as_str()`), so each wire string
/// is spelled once. It gets `as_str`, `ALL` (every unit reason, in order),
/// `Display`, comparison with `str` and `Into<String>`.
macro_rules! reasons {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:expr, )*
        }
        $(
            wraps {
                $( $(#[$wmeta:meta])* $wvariant:ident($wty:ty) = $wfn:path, )*
            }
        )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            $($( $(#[$wmeta])* $wvariant($wty), )*)?
        }

        impl $name {
            /// Every unit reason, in declaration order (wrapped reasons
            /// are listed by their own kind).
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The reason as written to the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                    $($($name::$wvariant(inner) => $wfn(inner),)*)?
                }
            }
        }

        $crate::reason::wire_traits!($name);
    };
}

/// A reason another kind wrote (`CliError::reason`,
/// `TargetError::reason`), passed through unchanged.
const fn as_given(reason: &'static str) -> &'static str {
    reason
}

reasons! {
    /// Reasons with the same meaning in several kinds, declared once; each
    /// kind's enum names them as its own.
    pub enum CommonReason {
        /// The CiscoDevice is missing or cannot be reached.
        NoTransport = "NoTransport",
        /// The work on the device is running.
        Running = "Running",
        /// The object did what it asked for.
        Succeeded = "Succeeded",
    }
}

reasons! {
    /// Reasons of an IOSXEOperationalAction (`status.reason`,
    /// `status.failureReason`, the Ready condition and Events).
    pub enum ActionReason {
        /// Waiting for the device Lease held by another object.
        MutationLeaseBlocked = "MutationLeaseBlocked",
        /// The device Lease could not be read or written.
        MutationLeaseError = "MutationLeaseError",
        /// The CiscoDevice is missing or cannot be reached.
        NoTransport = CommonReason::NoTransport.as_str(),
        /// The marker is written and the request is being sent.
        Dispatching = "Dispatching",
        /// Sent; its effect is being read back from the device.
        Observing = "Observing",
        /// Marked as dispatched (Running event).
        Running = CommonReason::Running.as_str(),
        /// The action took effect.
        Succeeded = CommonReason::Succeeded.as_str(),
        /// Deleted while dispatched: kept until the outcome is known.
        DeletionPending = "DeletionPending",
        /// `spec.confirm` differs from `spec.deviceRef.name`.
        ConfirmMismatch = "ConfirmMismatch",
        /// The action block is missing, doubled or out of range.
        InvalidAction = "InvalidAction",
        /// A path breaks the write-path rules.
        InvalidPath = ClientReason::InvalidPath.as_str(),
        /// The FilePut ConfigMap does not exist.
        ConfigMapNotFound = "ConfigMapNotFound",
        /// The FilePut ConfigMap has no `binaryData["content"]`.
        ConfigMapContentMissing = "ConfigMapContentMissing",
        /// The file to remove does not exist.
        FileNotFound = "FileNotFound",
        /// A reboot is pending already.
        RebootAlreadyPending = "RebootAlreadyPending",
        /// CancelReboot with no reboot pending.
        NoRebootPending = "NoRebootPending",
        /// The device cannot reinstall the factory OS.
        FactoryOSUnsupported = "FactoryOSUnsupported",
        /// The device cannot zero-fill storage.
        ZeroFillUnsupported = "ZeroFillUnsupported",
        /// The device refused the factory reset.
        FactoryResetRefused = "FactoryResetRefused",
        /// gNOI is disabled in the controller's configuration.
        GnoiDisabled = ClientReason::GnoiDisabled.as_str(),
        /// The device could not be reached, or the deadline passed.
        DeviceUnavailable = "DeviceUnavailable",
        /// The device answered the request with an error.
        ActionFailed = "ActionFailed",
        /// Dispatched, but the outcome cannot be read back.
        ActionOutcomeUnknown = "ActionOutcomeUnknown",
        /// Dispatched, and the device shows no sign of it.
        ActionNotApplied = "ActionNotApplied",
    }
    wraps {
        /// The device does not implement the service.
        ServiceUnsupported(GnoiService) = service_unsupported,
        /// A client error's own reason.
        Client(ClientReason) = ClientReason::as_str,
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

reasons! {
    /// Reasons of a DeviceOperation (`status.reason`, the Ready condition and
    /// Events).
    pub enum OperationReason {
        /// The CiscoDevice is missing or cannot be reached (Pending).
        NoTransport = CommonReason::NoTransport.as_str(),
        /// The device calls are running.
        Running = CommonReason::Running.as_str(),
        /// The operation produced its result.
        Succeeded = CommonReason::Succeeded.as_str(),
        /// Deleted after `ttlSecondsAfterFinished`.
        Expired = "Expired",
        /// The arguments cannot be sent.
        InvalidArguments = ClientReason::InvalidArguments.as_str(),
        /// The output is too large even for a ConfigMap.
        ArtifactTooLarge = "ArtifactTooLarge",
        /// A command is not on the read-only allowlist.
        CommandNotAllowed = "CommandNotAllowed",
        /// The device refused some commands.
        CommandFailed = "CommandFailed",
        /// ConfigDiff is not allowed in the namespace.
        NamespaceNotAuthorized = "NamespaceNotAuthorized",
        /// The spill ConfigMap could not be written.
        ArtifactWriteFailed = "ArtifactWriteFailed",
        /// The device calls did not finish in time.
        DeadlineExceeded = ClientReason::DeadlineExceeded.as_str(),
        /// The result could not be rendered.
        RenderFailed = "RenderFailed",
    }
    wraps {
        /// The device does not implement the service.
        ServiceUnsupported(GnoiService) = service_unsupported,
        /// A device call failed.
        Client(ClientReason) = ClientReason::as_str,
        /// The CLI session failed (`CliError::reason`).
        Cli(&'static str) = as_given,
    }
}

reasons! {
    /// Reasons of a CiscoDevice (its conditions and Events).
    pub enum DeviceReason {
        /// Credentials and trust material resolved.
        Resolved = "Resolved",
        /// The device answered a probe.
        Answered = "Answered",
    }
    wraps {
        /// The device's configuration cannot be resolved
        /// (`TargetError::reason`).
        Target(&'static str) = as_given,
        /// A probe or the connection failed.
        Client(ClientReason) = ClientReason::as_str,
    }
}

/// Event reason of every phase change of an upgrade or a rollout (the
/// Event's action names the phase pair, e.g. `TransferringToValidating`).
pub const PHASE_TRANSITION: &str = "PhaseTransition";

reasons! {
    /// Why an image source could not be used (`SourceError::reason`).
    pub enum SourceReason {
        /// The URL cannot be parsed.
        InvalidUrl = "SourceInvalidURL",
        /// The URL's scheme is not one the controller fetches from.
        UnsupportedScheme = "SourceUnsupportedScheme",
        /// The server has no such file.
        NotFound = "SourceNotFound",
        /// The server refused the credentials.
        AuthFailed = "SourceAuthFailed",
        /// The SSH server's host key is not in knownHosts.
        HostKeyRejected = "SourceHostKeyRejected",
        /// An SSH source without knownHosts (and without the insecure opt-in).
        MissingKnownHosts = "SourceMissingKnownHosts",
        /// The image is larger than the configured limit.
        TooLarge = "ImageTooLarge",
        /// The bytes do not hash to the expected SHA-256.
        DigestMismatch = "SourceDigestMismatch",
        /// The server cannot be reached (retryable).
        Unreachable = "SourceUnreachable",
        /// The server broke its protocol.
        ProtocolError = "SourceProtocolError",
        /// The image cache's disk failed (retryable).
        CacheIoError = "ImageCacheIOError",
        /// The credentials Secret is missing or unusable.
        CredentialsInvalid = "SourceCredentialsInvalid",
    }
}

reasons! {
    /// Reasons of an IOSXESoftwareUpgrade (`status.reason`,
    /// `status.failureReason` and its conditions).
    pub enum UpgradeReason {
        /// Seen for the first time; nothing started.
        Accepted = "Accepted",
        /// The Ready condition of a new upgrade.
        Pending = UpgradePhase::Pending.as_str(),
        /// Deleted before activation: cancelled.
        Deleted = "Deleted",
        /// The image source cannot be used as given.
        InvalidImageSource = "InvalidImageSource",
        /// `spec.targetVersion` cannot be parsed.
        InvalidTargetVersion = "InvalidTargetVersion",
        /// The maintenance window closed before activation.
        MaintenanceWindowExpired = "MaintenanceWindowExpired",
        /// Waiting for the maintenance window to open.
        MaintenanceWindowNotOpen = "MaintenanceWindowNotOpen",
        /// Another object holds the device Lease.
        DeviceLocked = "DeviceLocked",
        /// The device Lease could not be read or written.
        DeviceLeaseError = "DeviceLeaseError",
        /// The CiscoDevice is missing or cannot be configured.
        NoTransport = CommonReason::NoTransport.as_str(),
        /// The device does not answer.
        DeviceUnreachable = "DeviceUnreachable",
        /// Checking the device and the image source.
        Resolving = UpgradePhase::Resolving.as_str(),
        /// The device runs the target version.
        VersionMatch = "VersionMatch",
        /// Nothing to do: the device already runs the target version.
        AlreadyAtTargetVersion = "AlreadyAtTargetVersion",
        /// The device kept reporting an install in progress, or the
        /// transfer did not finish, within installTimeoutSeconds.
        InstallTimeout = "InstallTimeout",
        /// Waiting for an install already running on the device.
        InstallInProgress = "InstallInProgress",
        /// The localPath image is not on the device.
        LocalImageNotFound = "LocalImageNotFound",
        /// A version read from the device is not the target version.
        VersionMismatch = "VersionMismatch",
        /// The device has the image already; nothing is sent.
        ImageAlreadyPresent = "ImageAlreadyPresent",
        /// Validating the staged image.
        Validating = UpgradePhase::Validating.as_str(),
        /// A preinstalled image is not in the device's inventory.
        TargetNotInstalled = "TargetNotInstalled",
        /// Flash has no room for the image and the margin.
        InsufficientFlash = "InsufficientFlash",
        /// The transfer is running.
        TransferInProgress = "TransferInProgress",
        /// Sending the image.
        Transferring = UpgradePhase::Transferring.as_str(),
        /// The transfer broke; a retry is spent.
        TransferInterrupted = UpgradePhase::TransferInterrupted.as_str(),
        /// Sending the image again after an interruption.
        TransferRetrying = "TransferRetrying",
        /// The device validated the image sent.
        ImageTransferred = "ImageTransferred",
        /// The device found the image corrupt.
        ImageIntegrityFailed = "ImageIntegrityFailed",
        /// The device could not parse the image.
        ImageParseFailed = "ImageParseFailed",
        /// The image does not fit this device.
        ImageIncompatible = "ImageIncompatible",
        /// The device answered InstallError `INSTALL_RUN_PACKAGE`.
        InstallRunPackage = "InstallRunPackage",
        /// The device answered InstallError `NOT_SUPPORTED_ON_BACKUP`.
        NotSupportedOnBackup = "NotSupportedOnBackup",
        /// Any other install failure.
        InstallFailed = "InstallFailed",
        /// Every transfer retry was spent.
        TransferRetriesExhausted = "TransferRetriesExhausted",
        /// The localPath file's SHA-256 differs from localPathSHA256.
        LocalImageDigestMismatch = "LocalImageDigestMismatch",
        /// The localPath file matches localPathSHA256.
        Sha256Match = "SHA256Match",
        /// The localPath file was not checked (no localPathSHA256).
        NotVerified = "NotVerified",
        /// The localPath file could not be read back.
        LocalImageUnreadable = "LocalImageUnreadable",
        /// The configMapRef ConfigMap could not be read.
        ImageSourceUnavailable = "ImageSourceUnavailable",
        /// The configMapRef ConfigMap does not exist.
        ImageSourceNotFound = "ImageSourceNotFound",
        /// A status the lifecycle cannot have reached.
        InternalError = "InternalError",
        /// ValidationPassed, spelled as the specification's `kubectl
        /// describe` output shows it.
        PreflightOk = "PrefligthOK",
        /// Sending OS.Activate.
        Activating = UpgradePhase::Activating.as_str(),
        /// The device refused OS.Activate.
        ActivateFailed = "ActivateFailed",
        /// OS.Activate was accepted.
        OsActivated = "OSActivated",
        /// Waiting for the device to come back after the reload.
        AwaitingReachability = UpgradePhase::AwaitingReachability.as_str(),
        /// NoReboot: the image is staged for the next reload.
        ImageStaged = "ImageStaged",
        /// NoReboot: the device boots the target version next.
        StagedForNextReload = "StagedForNextReload",
        /// Whether OS.Activate reached the device is unknown.
        ActivationUnconfirmed = "ActivationUnconfirmed",
        /// Reading the version the device came back with.
        Verifying = UpgradePhase::Verifying.as_str(),
        /// The device did not come back within rebootTimeoutSeconds.
        RebootTimeout = UpgradePhase::RebootTimeout.as_str(),
        /// An ISSU strategy, and the device did not take the ISSU path.
        IssuNotSelected = "ISSUNotSelected",
        /// Re-activating previousVersion.
        RollingBack = UpgradePhase::RollingBack.as_str(),
        /// The rollback activation failed or came back wrong.
        RollbackFailed = "RollbackFailed",
        /// The device did not come back from the rollback in time.
        RollbackTimeout = "RollbackTimeout",
        /// The device runs previousVersion again.
        RolledBack = UpgradePhase::RolledBack.as_str(),
    }
    wraps {
        /// The image source's own reason.
        Source(SourceReason) = SourceReason::as_str,
        /// `<Service>ServiceUnsupported`.
        ServiceUnsupported(GnoiService) = service_unsupported,
    }
}

reasons! {
    /// Reasons of an IOSXESoftwareRollout (`status.reason`, its
    /// conditions, its failed targets and Events).
    pub enum RolloutReason {
        /// The plan's ConfigMap could not be read or written.
        PlanUnavailable = "PlanUnavailable",
        /// The plan was frozen (Event).
        PlanFrozen = "PlanFrozen",
        /// The targets select no device.
        NoTargets = "NoTargets",
        /// More targets than `maxTargets`.
        TooManyTargets = "TooManyTargets",
        /// A listed device has no CiscoDevice.
        DeviceNotFound = "DeviceNotFound",
        /// A canary is not among the targets.
        CanaryNotTargeted = "CanaryNotTargeted",
        /// A device is in two canary groups.
        CanaryInTwoGroups = "CanaryInTwoGroups",
        /// A target lacks a topology domain's label.
        MissingTopologyLabel = "MissingTopologyLabel",
        /// A target's image family label differs from the source's.
        ImageFamilyMismatch = "ImageFamilyMismatch",
        /// Targets are running.
        Progressing = "Progressing",
        /// No budget has room for the next target.
        WaitingForBudget = "WaitingForBudget",
        /// Waiting for the maintenance window to open.
        WaitingForWindow = "WaitingForWindow",
        /// The window closed; running children finish.
        MaintenanceWindowClosing = "MaintenanceWindowClosing",
        /// The window closed with targets left.
        MaintenanceWindowExpired = UpgradeReason::MaintenanceWindowExpired.as_str(),
        /// Every target runs the target version.
        Succeeded = CommonReason::Succeeded.as_str(),
        /// Every wave ran, and some targets failed.
        TargetsFailed = "TargetsFailed",
        /// A target's upgrade failed (Event).
        TargetFailed = "TargetFailed",
        /// An observed child was deleted: the target is lost.
        UpgradeDeleted = "UpgradeDeleted",
        /// Too many failures: nothing new starts.
        Halted = RolloutPhase::Halted.as_str(),
        /// A control revision resumed the campaign (Event).
        Resumed = "Resumed",
        /// Paused by `spec.control.pause`.
        PausedByControl = "PausedByControl",
        /// Paused after the canaries (`pauseAfterCanary`).
        CanaryCompleted = "CanaryCompleted",
        /// Waiting for `spec.approval.planHash`.
        AwaitingApproval = RolloutPhase::AwaitingApproval.as_str(),
        /// The wave's soak is running.
        Soaking = RolloutPhase::Soaking.as_str(),
        /// A device of the wave was not Ready: the soak starts again.
        SoakRestarted = "SoakRestarted",
        /// A device of the wave broke during the soak (Event).
        SoakFailed = "SoakFailed",
        /// The soak passed; waiting for a recent enough device reading.
        WaitingForHealthReading = "WaitingForHealthReading",
        /// A wave passed its soak (Event).
        WavePassed = "WavePassed",
        /// Children before Activating are being deleted.
        Cancelling = RolloutPhase::Cancelling.as_str(),
        /// Cancelled by `spec.control.cancel`.
        Cancelled = RolloutPhase::Cancelled.as_str(),
        /// A phase changed (Event).
        PhaseTransition = PHASE_TRANSITION,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::service_name;

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

    /// The wire strings are public API: this snapshot pins every one, so a
    /// renamed variant or a typo shows up as a snapshot diff.
    #[test]
    fn wire_strings() {
        fn list<T: Copy + std::fmt::Debug>(all: &[T], wire: fn(T) -> &'static str) -> String {
            all.iter()
                .map(|r| format!("{r:?} = {}\n", wire(*r)))
                .collect()
        }
        let text = [
            (
                "UpgradeReason",
                list(UpgradeReason::ALL, UpgradeReason::as_str),
            ),
            (
                "RolloutReason",
                list(RolloutReason::ALL, RolloutReason::as_str),
            ),
            (
                "SourceReason",
                list(SourceReason::ALL, SourceReason::as_str),
            ),
            (
                "ClientReason",
                list(ClientReason::ALL, ClientReason::as_str),
            ),
            (
                "CommonReason",
                list(CommonReason::ALL, CommonReason::as_str),
            ),
            (
                "ActionReason",
                list(ActionReason::ALL, ActionReason::as_str),
            ),
            (
                "OperationReason",
                list(OperationReason::ALL, OperationReason::as_str),
            ),
            (
                "DeviceReason",
                list(DeviceReason::ALL, DeviceReason::as_str),
            ),
        ]
        .map(|(name, l)| format!("{name}\n{l}"))
        .join("\n");
        insta::assert_snapshot!(text);
        assert_eq!(
            UpgradeReason::Source(SourceReason::DigestMismatch),
            "SourceDigestMismatch"
        );
        assert_eq!(
            UpgradeReason::ServiceUnsupported(GnoiService::File),
            "FileServiceUnsupported"
        );
        assert_eq!(
            String::from(RolloutReason::PhaseTransition),
            PHASE_TRANSITION
        );
    }

    /// Within a kind no two reasons share a wire string (an alias of
    /// another kind's reason is fine: it is that reason).
    #[test]
    fn wire_strings_are_distinct_per_kind() {
        fn distinct<T: Copy>(all: &[T], wire: fn(T) -> &'static str) -> bool {
            let mut seen = std::collections::HashSet::new();
            all.iter().all(|r| seen.insert(wire(*r)))
        }
        assert!(distinct(UpgradeReason::ALL, UpgradeReason::as_str));
        assert!(distinct(RolloutReason::ALL, RolloutReason::as_str));
        assert!(distinct(SourceReason::ALL, SourceReason::as_str));
        assert!(distinct(ActionReason::ALL, ActionReason::as_str));
        assert!(distinct(OperationReason::ALL, OperationReason::as_str));
        assert!(distinct(CommonReason::ALL, CommonReason::as_str));
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
