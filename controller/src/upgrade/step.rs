//! `step(spec, status, observation, now) -> Decision`: the upgrade
//! lifecycle of the specification, with no I/O.
//!
//! ```text
//! Pending ─► Resolving ─► Transferring ─► Validating ─► Activating ─► AwaitingReachability ─► Verifying ─► Succeeded
//!    │           │          │   ▲             │             │  (NoReboot: Succeeded, staged)     │
//!    │           │          ▼   │             │             │                                    ▼ mismatch, rollbackOnFailure
//!    │           │   TransferInterrupted      │             │                               RollingBack ─► RolledBack | Failed
//!    ▼           ▼          ▼                 ▼             ▼
//!  PreflightFailed / ValidationFailed / Failed / RebootTimeout / Cancelled (deleted before Activating)
//! ```
//!
//! Observations are produced by actions: the reconciler runs
//! [`Action::ObserveDevice`], [`Action::AcquireLease`], ... and calls `step`
//! again with the results, until a decision asks to wait
//! ([`Action::Requeue`]) or nothing is left to do. Each observation is
//! asked for only when it is missing, so that loop always ends. A decision
//! makes at most one phase transition, so every phase is written (and
//! announced) on its own before the next one starts; a decision with a
//! transition is followed by another step at once.
//!
//! At-most-once activation: the decision that enters Activating (or
//! RollingBack) sets the marker (`activationRequested` /
//! `rollbackActivationRequested`) in the same status that carries the
//! [`Action::Activate`]; the reconciler writes that status before it sends
//! the RPC. A status that has the marker but no [`ActivationObs`] (the
//! controller restarted) is observed, never activated again.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::client::GnoiService;
use crate::conditions::{DesiredCondition, merge};
use crate::crd::common::ConditionStatus;
use crate::crd::upgrade::{
    IOSXESoftwareUpgradeSpec, IOSXESoftwareUpgradeStatus, ResumePolicy, Source, Strategy,
    TransferProgress, UpgradePhase, conditions as cond,
};
use crate::reason::{SourceReason, UpgradeReason, UpgradeReason as R};
use crate::version::{TargetVersion, version_matches};

/// Free flash that must remain after the image is written (the image
/// itself plus this margin must fit), as IOS-XE needs room to expand
/// packages during `install add`.
pub const FLASH_MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// How often a running transfer is looked at.
pub const TRANSFER_POLL: Duration = Duration::from_secs(1);

/// Wait before a retried transfer starts again.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(2);

/// How often a device that is missing, unreachable or locked is tried again.
pub const WAIT_RETRY: Duration = Duration::from_secs(5);

/// Longest wait between two reachability polls.
pub const MAX_POLL: Duration = Duration::from_secs(15);

/// The device lock as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseObs {
    /// This upgrade holds the device.
    Held,
    /// Another object holds it (`Kind/namespace/name`).
    Busy(String),
    /// The Lease API failed.
    Error(String),
}

/// An image in the device's install inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedImage {
    /// Full version.
    pub version: String,
    /// File path, e.g. `flash:gNOI_iosxe_17.18.03.bin`.
    pub path: String,
}

/// What the device said about itself (OS.Verify plus gNMI install state).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// Running version (OS.Verify).
    pub running_version: String,
    /// Set when the last activation failed and the device fell back.
    pub activation_fail_message: String,
    /// When the device booted (gNMI `/system/state/boot-time`), if known.
    pub boot_time: Option<Timestamp>,
    /// An install is running (gNMI install state `in-progress`).
    pub install_in_progress: bool,
    /// Version the next boot runs, if known.
    pub boot_version: Option<String>,
    /// Free bytes on flash:, if known.
    pub flash_free: Option<u64>,
    /// Staged images.
    pub images: Vec<StagedImage>,
    /// Whether the last activation took the ISSU path, if the device says.
    pub issu: Option<bool>,
}

/// The device as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceObs {
    /// It answered.
    Up(DeviceState),
    /// It did not answer (rebooting, down, connection refused).
    Unreachable(String),
    /// The CiscoDevice is missing or cannot be configured.
    NoTransport(String),
    /// The device answers UNIMPLEMENTED for gNOI OS.
    OsUnsupported(String),
}

/// The resolved image source (url and configMapRef sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceObs {
    /// Digest (64 hex) and size, when known.
    Resolved {
        /// sha256 hex.
        digest: String,
        /// Bytes, when known before the transfer.
        size: Option<u64>,
    },
    /// The source cannot be used.
    Failed {
        /// Why.
        reason: UpgradeReason,
        /// Detail.
        message: String,
    },
}

/// The transfer task as observed, for attempt `attempt` (the retry count
/// it started under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferObs {
    /// The retry count the task was started under.
    pub attempt: i32,
    /// Where it is.
    pub state: TransferState,
}

/// State of one transfer attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferState {
    /// Bytes acknowledged so far.
    Running {
        /// Bytes sent.
        bytes: u64,
        /// Image size, when known.
        total: Option<u64>,
    },
    /// The device validated the image.
    Validated {
        /// The version it validated.
        version: String,
        /// It already had the image; nothing was sent.
        already_present: bool,
        /// Bytes sent.
        bytes: u64,
    },
    /// The device answered InstallError.
    InstallError {
        /// `INTEGRITY_FAIL`, `TOO_LARGE`, ...
        kind: String,
        /// The device's detail.
        detail: String,
    },
    /// The stream broke; retryable.
    Interrupted(String),
    /// The image's bytes did not hash to the expected digest.
    DigestMismatch(String),
    /// Any other failure, not retryable.
    Failed {
        /// Why.
        reason: UpgradeReason,
        /// Detail.
        message: String,
    },
}

/// The answer to an OS.Activate this reconcile sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationObs {
    /// The rollback activation (previousVersion), not the target one.
    pub rollback: bool,
    /// What happened.
    pub result: ActivationResult,
}

/// Outcome of OS.Activate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationResult {
    /// ActivateOK.
    Accepted,
    /// The connection closed without an answer: the device is reloading.
    ConnectionClosed(String),
    /// ActivateError from the device (`kind: detail`).
    Refused(String),
    /// The call failed before any answer; whether the device got it is
    /// unknown.
    Unknown(String),
}

/// Everything the reconciler observed so far in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// The object is being deleted.
    pub deleting: bool,
    /// The device lock.
    pub lease: Option<LeaseObs>,
    /// The device.
    pub device: Option<DeviceObs>,
    /// The image source.
    pub source: Option<SourceObs>,
    /// The transfer task of this object, if one ran in this process.
    pub transfer: Option<TransferObs>,
    /// SHA-256 of the localPath file read through File.Get, or why not.
    pub local_file: Option<Result<String, (UpgradeReason, String)>>,
    /// The answer of an OS.Activate sent in this reconcile.
    pub activation: Option<ActivationObs>,
}

/// What the reconciler must do after writing the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take (or renew) the device Lease; result in [`Observation::lease`].
    AcquireLease,
    /// Read the device; result in [`Observation::device`].
    ObserveDevice,
    /// Resolve the url/configMapRef source; result in [`Observation::source`].
    ResolveSource,
    /// Start the transfer task for attempt `attempt` with the
    /// TransferRequest version `version`.
    StartTransfer {
        /// TransferRequest.version.
        version: String,
        /// Retry count the attempt starts under.
        attempt: i32,
    },
    /// Stop a running transfer (deleted, timed out).
    CancelTransfer,
    /// Hash the localPath file through File.Get; result in
    /// [`Observation::local_file`].
    HashLocalFile {
        /// Device path.
        path: String,
    },
    /// Send OS.Activate (the marker is already in the status this decision
    /// carries); result in [`Observation::activation`].
    Activate {
        /// Exact version.
        version: String,
        /// `no_reboot`.
        no_reboot: bool,
        /// The rollback activation.
        rollback: bool,
    },
    /// Release the device Lease (terminal).
    ReleaseLease,
    /// Remove the controller's finalizer (terminal, or cancelled).
    RemoveFinalizer,
    /// Look again after this long.
    Requeue(Duration),
}

/// A phase change, announced as a `PhaseTransition` Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Phase left.
    pub from: UpgradePhase,
    /// Phase entered.
    pub to: UpgradePhase,
    /// Why, e.g. `image hash verified`.
    pub note: String,
}

impl Transition {
    /// The Event note of the specification: `Transferring → Validating: image hash verified`.
    pub fn event_note(&self) -> String {
        format!("{} → {}: {}", self.from, self.to, self.note)
    }

    /// Whether the phase entered is a failure.
    pub fn is_failure(&self) -> bool {
        self.to.is_terminal() && self.to != UpgradePhase::Succeeded
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Status to write (before the actions run).
    pub status: IOSXESoftwareUpgradeStatus,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// The phase change, if any.
    pub transition: Option<Transition>,
}

struct B<'a> {
    spec: &'a IOSXESoftwareUpgradeSpec,
    st: IOSXESoftwareUpgradeStatus,
    actions: Vec<Action>,
    transition: Option<Transition>,
    now: Timestamp,
    generation: Option<i64>,
}

impl B<'_> {
    fn phase(&self) -> UpgradePhase {
        self.st.phase.unwrap_or(UpgradePhase::Pending)
    }

    fn cond(
        &mut self,
        type_: &'static str,
        status: bool,
        reason: UpgradeReason,
        message: impl Into<String>,
    ) {
        merge(
            &mut self.st.conditions,
            DesiredCondition::new(type_, ConditionStatus::from(status), reason, message),
            self.generation,
            self.now,
        );
    }

    /// Moves to `to` (non-terminal) with `reason`, `message`, and the Event
    /// note `note`.
    fn go(
        &mut self,
        to: UpgradePhase,
        reason: UpgradeReason,
        message: impl Into<String>,
        note: impl Into<String>,
    ) {
        let from = self.phase();
        let message = message.into();
        self.st.phase = Some(to);
        self.st.reason = Some(reason.into());
        self.st.message = Some(message);
        if from != to {
            self.transition = Some(Transition {
                from,
                to,
                note: note.into(),
            });
        }
        if !to.is_terminal() {
            self.cond(cond::READY, false, reason, format!("upgrade is {to}"));
        }
    }

    /// Stays in the current phase, saying why it waits.
    fn wait(&mut self, reason: UpgradeReason, message: impl Into<String>, after: Duration) {
        self.st.reason = Some(reason.into());
        self.st.message = Some(message.into());
        let phase = self.phase();
        self.cond(cond::READY, false, reason, format!("upgrade is {phase}"));
        self.actions.push(Action::Requeue(after));
    }

    /// Ends in the failure phase `to`.
    fn fail(&mut self, to: UpgradePhase, reason: UpgradeReason, message: impl Into<String>) {
        let message = message.into();
        self.go(to, reason, message.clone(), message.clone());
        self.st.failure_reason = Some(reason.into());
        self.finish();
        self.cond(cond::READY, false, reason, message);
    }

    fn finish(&mut self) {
        self.st.completion_time = Some(Time(self.now));
        self.actions.push(Action::ReleaseLease);
        self.actions.push(Action::RemoveFinalizer);
    }

    fn succeed(
        &mut self,
        reason: UpgradeReason,
        message: impl Into<String>,
        note: impl Into<String>,
    ) {
        let message = message.into();
        self.go(UpgradePhase::Succeeded, reason, message.clone(), note);
        self.st.failure_reason = None;
        self.finish();
        self.cond(cond::READY, true, reason, message);
    }

    fn target(&self) -> &str {
        &self.spec.target_version
    }

    fn elapsed_since(&self, t: Option<&Time>) -> Option<Duration> {
        t.map(|t| {
            let s = self.now.as_millisecond() - t.0.as_millisecond();
            Duration::from_millis(u64::try_from(s).unwrap_or(0))
        })
    }
}

/// The lifecycle step. `generation` is `metadata.generation`; `now` the
/// current time.
pub fn step(
    spec: &IOSXESoftwareUpgradeSpec,
    status: &IOSXESoftwareUpgradeStatus,
    obs: &Observation,
    generation: Option<i64>,
    now: Timestamp,
) -> Decision {
    let mut b = B {
        spec,
        st: status.clone(),
        actions: Vec::new(),
        transition: None,
        now,
        generation,
    };
    if b.st.phase.is_none() {
        b.st.phase = Some(UpgradePhase::Pending);
        b.st.target_version = Some(spec.target_version.clone());
        b.st.reason = Some(R::Accepted.into());
        b.st.message = Some("accepted; no device operation started yet".into());
        b.cond(cond::READY, false, R::Pending, "upgrade is Pending");
    }
    b.st.observed_generation = generation;
    let phase = b.phase();
    if phase.is_terminal() {
        // Settled: make sure nothing is held.
        b.actions.push(Action::ReleaseLease);
        b.actions.push(Action::RemoveFinalizer);
        return b.done();
    }
    // Deleting before activation stops everything and leaves the device as
    // it was; from Activating on the finalizer keeps the object until the
    // device has settled.
    if obs.deleting && before_activation(phase) {
        if matches!(
            phase,
            UpgradePhase::Transferring | UpgradePhase::TransferInterrupted
        ) {
            b.actions.push(Action::CancelTransfer);
        }
        b.fail(
            UpgradePhase::Cancelled,
            R::Deleted,
            format!(
                "deleted in {phase} before activation; the device was left on its running software"
            ),
        );
        return b.done();
    }
    match phase {
        UpgradePhase::Pending => pending(&mut b, obs),
        UpgradePhase::Resolving => resolving(&mut b, obs),
        UpgradePhase::Transferring => transferring(&mut b, obs),
        UpgradePhase::TransferInterrupted => transfer_interrupted(&mut b, obs),
        UpgradePhase::Validating => validating(&mut b, obs),
        UpgradePhase::Activating => activating(&mut b, obs),
        UpgradePhase::AwaitingReachability => awaiting(&mut b, obs),
        UpgradePhase::Verifying => verifying(&mut b, obs),
        UpgradePhase::RollingBack => rolling_back(&mut b, obs),
        _ => {}
    }
    b.done()
}

impl B<'_> {
    fn done(self) -> Decision {
        Decision {
            status: self.st,
            actions: self.actions,
            transition: self.transition,
        }
    }
}

/// Phases in which deleting the object cancels the upgrade (nothing was
/// activated yet).
pub fn before_activation(phase: UpgradePhase) -> bool {
    matches!(
        phase,
        UpgradePhase::Pending
            | UpgradePhase::Resolving
            | UpgradePhase::Transferring
            | UpgradePhase::TransferInterrupted
            | UpgradePhase::Validating
    )
}

/// Whether the maintenance window allows a mutation to start now:
/// `Err(Some(wait))` not yet open, `Err(None)` closed.
fn window(spec: &IOSXESoftwareUpgradeSpec, now: Timestamp) -> Result<(), Option<Duration>> {
    let Some(w) = &spec.maintenance_window else {
        return Ok(());
    };
    if let Some(after) = &w.not_after
        && now > after.0
    {
        return Err(None);
    }
    if let Some(before) = &w.not_before
        && now < before.0
    {
        let ms = before.0.as_millisecond() - now.as_millisecond();
        return Err(Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))));
    }
    Ok(())
}

fn window_text(spec: &IOSXESoftwareUpgradeSpec) -> String {
    let w = spec.maintenance_window.clone().unwrap_or_default();
    let f = |t: Option<Time>| t.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into());
    format!("[{}, {}]", f(w.not_before), f(w.not_after))
}

fn pending(b: &mut B<'_>, obs: &Observation) {
    let source = match b.spec.image_source.source() {
        Ok(s) => s,
        Err(e) => {
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::InvalidImageSource,
                e.to_string(),
            );
        }
    };
    if let Err(e) = TargetVersion::parse(b.target()) {
        return b.fail(
            UpgradePhase::PreflightFailed,
            R::InvalidTargetVersion,
            format!("spec.targetVersion: {e}"),
        );
    }
    let _ = source;
    match window(b.spec, b.now) {
        Ok(()) => {}
        Err(None) => {
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::MaintenanceWindowExpired,
                format!(
                    "the maintenance window {} closed before the upgrade started; nothing was sent to the device",
                    window_text(b.spec)
                ),
            );
        }
        Err(Some(wait)) => {
            return b.wait(
                R::MaintenanceWindowNotOpen,
                format!(
                    "waiting for the maintenance window {} to open",
                    window_text(b.spec)
                ),
                wait.min(Duration::from_secs(300))
                    .max(Duration::from_secs(1)),
            );
        }
    }
    match &obs.lease {
        None => return b.actions.push(Action::AcquireLease),
        Some(LeaseObs::Busy(who)) => {
            return b.wait(
                R::DeviceLocked,
                format!(
                    "device {} is being changed by {who}; waiting for it to finish",
                    b.spec.device_ref.name
                ),
                WAIT_RETRY * 2,
            );
        }
        Some(LeaseObs::Error(e)) => return b.wait(R::DeviceLeaseError, e.clone(), WAIT_RETRY),
        Some(LeaseObs::Held) => {}
    }
    let dev = match &obs.device {
        None => return b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::NoTransport(m)) => return b.wait(R::NoTransport, m.clone(), WAIT_RETRY),
        Some(DeviceObs::Unreachable(m)) => {
            return b.wait(
                R::DeviceUnreachable,
                format!("device is not reachable: {m}"),
                WAIT_RETRY,
            );
        }
        Some(DeviceObs::OsUnsupported(m)) => {
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::ServiceUnsupported(GnoiService::Os),
                format!("the device does not implement gNOI OS: {m}"),
            );
        }
        Some(DeviceObs::Up(d)) => d,
    };
    b.st.previous_version = Some(dev.running_version.clone());
    b.st.start_time = Some(Time(b.now));
    let target = b.target().to_owned();
    b.go(
        UpgradePhase::Resolving,
        R::Resolving,
        format!(
            "resolving the image source for {target}; running {}",
            dev.running_version
        ),
        format!("running {}", dev.running_version),
    );
}

fn resolving(b: &mut B<'_>, obs: &Observation) {
    let dev = match &obs.device {
        None => return b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(d)) => d.clone(),
        Some(DeviceObs::OsUnsupported(m)) => {
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::ServiceUnsupported(GnoiService::Os),
                format!("the device does not implement gNOI OS: {m}"),
            );
        }
        Some(DeviceObs::Unreachable(m) | DeviceObs::NoTransport(m)) => {
            return b.wait(
                R::DeviceUnreachable,
                format!("device is not reachable: {m}"),
                WAIT_RETRY,
            );
        }
    };
    if b.st.install_start_time.is_none() {
        b.st.install_start_time = Some(Time(b.now));
    }
    let target = b.target().to_owned();
    if version_matches(&target, &dev.running_version) {
        b.st.running_version = Some(dev.running_version.clone());
        b.cond(
            cond::VERIFICATION_PASSED,
            true,
            R::VersionMatch,
            format!("running {}", dev.running_version),
        );
        return b.succeed(
            R::AlreadyAtTargetVersion,
            format!(
                "the device already runs {} (target {target}); nothing was changed",
                dev.running_version
            ),
            format!("already running {}", dev.running_version),
        );
    }
    if dev.install_in_progress {
        if install_timed_out(b) {
            return b.fail(
                UpgradePhase::Failed,
                R::InstallTimeout,
                format!(
                    "another install kept the device busy past installTimeoutSeconds ({}); nothing was sent",
                    b.spec.install_timeout_seconds
                ),
            );
        }
        return b.wait(
            R::InstallInProgress,
            "the device reports an install in progress; waiting for it to end before sending anything",
            WAIT_RETRY,
        );
    }
    let source = match b.spec.image_source.source() {
        Ok(s) => s,
        Err(e) => {
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::InvalidImageSource,
                e.to_string(),
            );
        }
    };
    match source {
        Source::LocalPath { path, .. } => {
            let norm = |p: &str| p.replacen(":/", ":", 1).replace("bootflash:", "flash:");
            let Some(img) = dev.images.iter().find(|i| norm(&i.path) == norm(path)) else {
                return b.fail(
                    UpgradePhase::PreflightFailed,
                    R::LocalImageNotFound,
                    format!("{path} is not an image in the device's install inventory"),
                );
            };
            if !version_matches(&target, &img.version) {
                return b.fail(
                    UpgradePhase::PreflightFailed,
                    R::VersionMismatch,
                    format!(
                        "{path} holds version {}, which does not match targetVersion {target}",
                        img.version
                    ),
                );
            }
            b.st.validated_version = Some(img.version.clone());
            b.cond(
                cond::TRANSFER_COMPLETE,
                true,
                R::ImageAlreadyPresent,
                format!("{path} is on the device"),
            );
            b.go(
                UpgradePhase::Validating,
                R::Validating,
                format!("validating {path} ({})", img.version),
                format!("{path} already on the device"),
            );
        }
        Source::Preinstalled => {
            let Some(img) = dev
                .images
                .iter()
                .find(|i| version_matches(&target, &i.version))
            else {
                return b.fail(
                    UpgradePhase::PreflightFailed,
                    R::TargetNotInstalled,
                    format!("no image matching {target} is in the device's install inventory"),
                );
            };
            b.st.validated_version = Some(img.version.clone());
            b.cond(
                cond::TRANSFER_COMPLETE,
                true,
                R::ImageAlreadyPresent,
                format!("{} is installed", img.version),
            );
            b.go(
                UpgradePhase::Validating,
                R::Validating,
                format!("validating preinstalled {}", img.version),
                format!("{} already installed", img.version),
            );
        }
        Source::Url { .. } | Source::ConfigMap(_) => {
            let (digest, size) = match &obs.source {
                None => return b.actions.push(Action::ResolveSource),
                Some(SourceObs::Failed { reason, message }) => {
                    return b.fail(UpgradePhase::PreflightFailed, *reason, message.clone());
                }
                Some(SourceObs::Resolved { digest, size }) => (digest.clone(), *size),
            };
            b.st.source_digest = Some(format!("sha256:{digest}"));
            b.st.source_size = size.and_then(|s| i64::try_from(s).ok());
            if let (Some(size), Some(free)) = (size, dev.flash_free)
                && free < size.saturating_add(FLASH_MARGIN_BYTES)
            {
                return b.fail(
                    UpgradePhase::PreflightFailed,
                    R::InsufficientFlash,
                    format!(
                        "flash: has {free} bytes free; the image needs {size} bytes plus a {FLASH_MARGIN_BYTES}-byte margin"
                    ),
                );
            }
            b.st.retry_count = Some(b.st.retry_count.unwrap_or(0));
            b.cond(
                cond::TRANSFER_COMPLETE,
                false,
                R::TransferInProgress,
                "transferring the image",
            );
            b.go(
                UpgradePhase::Transferring,
                R::Transferring,
                format!("streaming the image to the device with gNOI OS.Install ({target})"),
                format!("image sha256:{}", &digest[..digest.len().min(12)]),
            );
        }
    }
}

fn install_timed_out(b: &B<'_>) -> bool {
    let limit = Duration::from_secs(u64::try_from(b.spec.install_timeout_seconds).unwrap_or(0));
    b.elapsed_since(b.st.install_start_time.as_ref())
        .is_some_and(|e| e > limit)
}

/// Between two transfer attempts. A retry is spent only on a device that
/// answers: while it does not (it rebooted mid-transfer, its gNOI server
/// restarts) the upgrade waits, within the install window, instead of
/// burning every retry on refused connections in a few seconds.
fn transfer_interrupted(b: &mut B<'_>, obs: &Observation) {
    let attempt = b.st.retry_count.unwrap_or(0);
    if install_timed_out(b) {
        return b.fail(
            UpgradePhase::Failed,
            R::InstallTimeout,
            format!(
                "the image was not transferred within installTimeoutSeconds ({}); the transfer was interrupted and the device did not answer again in time",
                b.spec.install_timeout_seconds
            ),
        );
    }
    match &obs.device {
        None => b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(dev)) if dev.install_in_progress => b.wait(
            R::TransferInterrupted,
            format!(
                "the device reports an install in progress; waiting for it to end before retry {attempt} of {}",
                b.spec.max_retries
            ),
            RETRY_BACKOFF,
        ),
        Some(DeviceObs::Up(_)) => {
            b.go(
                UpgradePhase::Transferring,
                R::Transferring,
                format!(
                    "retrying the transfer (retry {attempt} of {})",
                    b.spec.max_retries
                ),
                format!("retry {attempt} of {}", b.spec.max_retries),
            );
            b.cond(
                cond::TRANSFER_COMPLETE,
                false,
                R::TransferRetrying,
                format!("retry {attempt}"),
            );
        }
        Some(
            DeviceObs::Unreachable(m) | DeviceObs::NoTransport(m) | DeviceObs::OsUnsupported(m),
        ) => b.wait(
            R::TransferInterrupted,
            format!(
                "waiting for the device to answer before retry {attempt} of {}: {m}",
                b.spec.max_retries
            ),
            RETRY_BACKOFF,
        ),
    }
}

fn transferring(b: &mut B<'_>, obs: &Observation) {
    let attempt = b.st.retry_count.unwrap_or(0);
    if install_timed_out(b) {
        b.actions.push(Action::CancelTransfer);
        return b.fail(
            UpgradePhase::Failed,
            R::InstallTimeout,
            format!(
                "the image was not transferred within installTimeoutSeconds ({})",
                b.spec.install_timeout_seconds
            ),
        );
    }
    let state = match &obs.transfer {
        Some(t) if t.attempt == attempt => t.state.clone(),
        _ => {
            b.actions.push(Action::StartTransfer {
                version: b.target().to_owned(),
                attempt,
            });
            return;
        }
    };
    let target = b.target().to_owned();
    match state {
        TransferState::Running { bytes, total } => {
            let percent = total.filter(|t| *t > 0).map(|t| {
                i32::try_from(bytes.saturating_mul(100) / t)
                    .unwrap_or(100)
                    .min(100)
            });
            b.st.transfer_progress = Some(TransferProgress {
                bytes_transferred: i64::try_from(bytes).unwrap_or(i64::MAX),
                total_bytes: total.and_then(|t| i64::try_from(t).ok()),
                percent: Some(percent.unwrap_or(0)),
            });
            b.actions.push(Action::Requeue(TRANSFER_POLL));
        }
        TransferState::Validated {
            version,
            already_present,
            bytes,
        } => {
            if let Some(p) = b.st.transfer_progress.as_mut() {
                p.bytes_transferred = i64::try_from(bytes).unwrap_or(i64::MAX);
                if let Some(t) = p.total_bytes {
                    p.percent = Some(if t > 0 { 100 } else { 0 });
                }
            }
            if !version_matches(&target, &version) {
                b.cond(
                    cond::VALIDATION_PASSED,
                    false,
                    R::VersionMismatch,
                    format!("validated {version}"),
                );
                return b.fail(
                    UpgradePhase::ValidationFailed,
                    R::VersionMismatch,
                    format!("the device validated version {version}, which does not match targetVersion {target}; the image was not activated"),
                );
            }
            b.st.validated_version = Some(version.clone());
            let (reason, note) = if already_present {
                (R::ImageAlreadyPresent, format!("{version} already staged"))
            } else if b.spec.image_source.url.is_some() {
                (R::ImageTransferred, "image hash verified".to_owned())
            } else {
                (R::ImageTransferred, format!("device validated {version}"))
            };
            b.cond(
                cond::TRANSFER_COMPLETE,
                true,
                reason,
                format!("the device validated {version}"),
            );
            b.go(
                UpgradePhase::Validating,
                R::Validating,
                format!("validating {version}"),
                note,
            );
        }
        TransferState::InstallError { kind, detail } if kind == "INSTALL_IN_PROGRESS" => {
            // Usually this upgrade's own earlier session, still open on the
            // device after a controller restart or a cut; or another
            // install. Either way it ends: wait for it as a retry, within
            // the install window, rather than fail the upgrade.
            interrupted(
                b,
                attempt,
                format!("OS.Install answered INSTALL_IN_PROGRESS: {detail}"),
            )
        }
        TransferState::InstallError { kind, detail } => {
            let (phase, reason) = match kind.as_str() {
                "INTEGRITY_FAIL" => (UpgradePhase::ValidationFailed, R::ImageIntegrityFailed),
                "PARSE_FAIL" => (UpgradePhase::ValidationFailed, R::ImageParseFailed),
                "INCOMPATIBLE" => (UpgradePhase::ValidationFailed, R::ImageIncompatible),
                "TOO_LARGE" => (UpgradePhase::Failed, R::InsufficientFlash),
                "INSTALL_RUN_PACKAGE" => (UpgradePhase::Failed, R::InstallRunPackage),
                "NOT_SUPPORTED_ON_BACKUP" => (UpgradePhase::Failed, R::NotSupportedOnBackup),
                _ => (UpgradePhase::Failed, R::InstallFailed),
            };
            if phase == UpgradePhase::ValidationFailed {
                b.cond(
                    cond::VALIDATION_PASSED,
                    false,
                    reason,
                    format!("{kind}: {detail}"),
                );
            }
            b.cond(
                cond::TRANSFER_COMPLETE,
                false,
                reason,
                format!("{kind}: {detail}"),
            );
            b.fail(
                phase,
                reason,
                format!("OS.Install answered {kind}: {detail}"),
            );
        }
        TransferState::DigestMismatch(m) => {
            b.cond(
                cond::VALIDATION_PASSED,
                false,
                R::Source(SourceReason::DigestMismatch),
                m.clone(),
            );
            b.cond(
                cond::TRANSFER_COMPLETE,
                false,
                R::Source(SourceReason::DigestMismatch),
                m.clone(),
            );
            b.fail(
                UpgradePhase::ValidationFailed,
                R::Source(SourceReason::DigestMismatch),
                format!(
                    "{m}; the transfer was abandoned before TransferEnd and nothing was activated"
                ),
            );
        }
        TransferState::Failed { reason, message } => {
            b.cond(cond::TRANSFER_COMPLETE, false, reason, message.clone());
            b.fail(UpgradePhase::Failed, reason, message);
        }
        TransferState::Interrupted(m) => interrupted(b, attempt, m),
    }
}

/// A transfer attempt that ended without a verdict on the image: retried
/// (resumePolicy Retry, within maxRetries) from TransferInterrupted.
fn interrupted(b: &mut B<'_>, attempt: i32, m: String) {
    b.cond(
        cond::TRANSFER_COMPLETE,
        false,
        R::TransferInterrupted,
        m.clone(),
    );
    if b.spec.resume_policy == ResumePolicy::Abort {
        return b.fail(
            UpgradePhase::Failed,
            R::TransferInterrupted,
            format!("the transfer was interrupted and resumePolicy is Abort: {m}"),
        );
    }
    if attempt >= b.spec.max_retries {
        return b.fail(
            UpgradePhase::Failed,
            R::TransferRetriesExhausted,
            format!(
                "the transfer was interrupted {} times (maxRetries {}): {m}",
                attempt + 1,
                b.spec.max_retries
            ),
        );
    }
    b.st.retry_count = Some(attempt + 1);
    b.go(
        UpgradePhase::TransferInterrupted,
        R::TransferInterrupted,
        format!(
            "transfer interrupted, retry {} of {}: {m}",
            attempt + 1,
            b.spec.max_retries
        ),
        m,
    );
    b.actions.push(Action::Requeue(RETRY_BACKOFF));
}

fn validating(b: &mut B<'_>, obs: &Observation) {
    match window(b.spec, b.now) {
        Ok(()) => {}
        Err(None) => {
            b.cond(
                cond::VALIDATION_PASSED,
                false,
                R::MaintenanceWindowExpired,
                "window closed",
            );
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::MaintenanceWindowExpired,
                format!(
                    "the maintenance window {} closed before activation; the image is staged but was not activated",
                    window_text(b.spec)
                ),
            );
        }
        Err(Some(wait)) => {
            return b.wait(
                R::MaintenanceWindowNotOpen,
                format!(
                    "waiting for the maintenance window {} to open before activating",
                    window_text(b.spec)
                ),
                wait.min(Duration::from_secs(300))
                    .max(Duration::from_secs(1)),
            );
        }
    }
    if let Some(path) = b.spec.image_source.local_path.clone() {
        match b.spec.image_source.local_path_sha256.clone() {
            Some(expected) => match &obs.local_file {
                None => return b.actions.push(Action::HashLocalFile { path }),
                Some(Err((reason, message))) => {
                    b.cond(cond::VALIDATION_PASSED, false, *reason, message.clone());
                    return b.fail(UpgradePhase::ValidationFailed, *reason, message.clone());
                }
                Some(Ok(actual)) if *actual != expected => {
                    let m = format!("{path} has sha256 {actual}, localPathSHA256 is {expected}");
                    b.cond(cond::VALIDATION_PASSED, false, R::LocalImageDigestMismatch, m.clone());
                    b.cond(cond::IMAGE_VERIFIED, false, R::LocalImageDigestMismatch, m.clone());
                    return b.fail(UpgradePhase::ValidationFailed, R::LocalImageDigestMismatch, m);
                }
                Some(Ok(_)) => {
                    b.cond(cond::IMAGE_VERIFIED, true, R::Sha256Match, format!("{path} matches localPathSHA256 (read with gNOI File.Get)"));
                }
            },
            None => b.cond(
                cond::IMAGE_VERIFIED,
                false,
                R::NotVerified,
                format!("{path} was not verified before activation: spec.imageSource.localPathSHA256 is not set"),
            ),
        }
    }
    // The device's boot time right before activation tells a later
    // reboot apart (status times keep whole seconds only).
    match &obs.device {
        None => return b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(d)) => {
            b.st.pre_activation_boot_time = d.boot_time.map(|t| t.to_string());
        }
        Some(DeviceObs::Unreachable(m) | DeviceObs::NoTransport(m)) => {
            return b.wait(
                R::DeviceUnreachable,
                format!("device is not reachable before activation: {m}"),
                WAIT_RETRY,
            );
        }
        Some(DeviceObs::OsUnsupported(m)) => {
            return b.fail(
                UpgradePhase::PreflightFailed,
                R::ServiceUnsupported(GnoiService::Os),
                format!("the device does not implement gNOI OS: {m}"),
            );
        }
    }
    let Some(version) = b.st.validated_version.clone() else {
        return b.fail(
            UpgradePhase::Failed,
            R::InternalError,
            "no validated version recorded before activation",
        );
    };
    // ValidationPassed's reason is spelled as the specification's
    // `kubectl describe` output shows it.
    b.cond(
        cond::VALIDATION_PASSED,
        true,
        R::PreflightOk,
        format!("{version} validated; preflight passed"),
    );
    b.st.activation_requested = true;
    b.st.activation_invocation_id = Some(format!(
        "{}/{}",
        b.st.target_version.as_deref().unwrap_or_default(),
        b.generation.unwrap_or(0)
    ));
    b.st.activation_start_time = Some(Time(b.now));
    let no_reboot = b.spec.strategy == Strategy::NoReboot;
    b.go(
        UpgradePhase::Activating,
        R::Activating,
        format!(
            "requesting OS.Activate of {version}{}",
            if no_reboot { " (no_reboot)" } else { "" }
        ),
        "preflight passed",
    );
    b.actions.push(Action::Activate {
        version,
        no_reboot,
        rollback: false,
    });
}

fn activating(b: &mut B<'_>, obs: &Observation) {
    let version = b.st.validated_version.clone().unwrap_or_default();
    let no_reboot = b.spec.strategy == Strategy::NoReboot;
    match obs
        .activation
        .as_ref()
        .filter(|a| !a.rollback)
        .map(|a| &a.result)
    {
        Some(ActivationResult::Refused(e)) => {
            b.cond(
                cond::ACTIVATION_COMPLETE,
                false,
                R::ActivateFailed,
                e.clone(),
            );
            b.fail(
                UpgradePhase::Failed,
                R::ActivateFailed,
                format!("OS.Activate of {version} was refused: {e}"),
            )
        }
        Some(ActivationResult::Accepted) if no_reboot => staged(b, &version),
        Some(ActivationResult::ConnectionClosed(d) | ActivationResult::Unknown(d)) if no_reboot => {
            // Whether the device staged it is read back below.
            b.st.message = Some(format!(
                "OS.Activate outcome unknown ({d}); reading the boot version"
            ));
            observe_staged(b, obs, &version);
        }
        Some(r @ (ActivationResult::Accepted | ActivationResult::ConnectionClosed(_))) => {
            let m = match r {
                ActivationResult::ConnectionClosed(d) => {
                    format!("OS.Activate of {version} sent; the connection closed (reloading): {d}")
                }
                _ => format!("OS.Activate of {version} accepted; waiting for the reload"),
            };
            b.cond(cond::ACTIVATION_COMPLETE, true, R::OsActivated, m.clone());
            b.go(
                UpgradePhase::AwaitingReachability,
                R::AwaitingReachability,
                m,
                "OS.Activate sent",
            );
            b.actions.push(Action::Requeue(Duration::from_secs(1)));
        }
        Some(ActivationResult::Unknown(d)) => {
            let m = format!(
                "OS.Activate of {version} sent without an answer ({d}); observing the device"
            );
            b.cond(cond::ACTIVATION_COMPLETE, true, R::OsActivated, m.clone());
            b.go(
                UpgradePhase::AwaitingReachability,
                R::AwaitingReachability,
                m,
                "OS.Activate sent",
            );
            b.actions.push(Action::Requeue(Duration::from_secs(1)));
        }
        None if no_reboot => observe_staged(b, obs, &version),
        None => {
            // The marker is set but this process did not send the RPC (a
            // restart): observe, never activate again.
            let m = format!(
                "activation of {version} was requested before a controller restart; observing the device (OS.Activate is never sent twice)"
            );
            b.cond(cond::ACTIVATION_COMPLETE, true, R::OsActivated, m.clone());
            b.go(
                UpgradePhase::AwaitingReachability,
                R::AwaitingReachability,
                m,
                "OS.Activate sent before restart",
            );
            b.actions.push(Action::Requeue(Duration::from_secs(1)));
        }
    }
}

fn staged(b: &mut B<'_>, version: &str) {
    let running = match &b.st.previous_version {
        Some(v) => v.clone(),
        None => "unknown".into(),
    };
    b.cond(
        cond::ACTIVATION_COMPLETE,
        true,
        R::ImageStaged,
        format!("{version} is staged for the next reload (NoReboot); the running version is unchanged ({running})"),
    );
    b.st.running_version = Some(running.clone());
    b.succeed(
        R::StagedForNextReload,
        format!("{version} staged; reload the device (IOSXEOperationalAction Reboot) to run it; still running {running}"),
        format!("{version} staged for the next reload"),
    );
}

fn observe_staged(b: &mut B<'_>, obs: &Observation, version: &str) {
    match &obs.device {
        None => b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(d)) => {
            if d.boot_version.as_deref() == Some(version) {
                staged(b, version);
            } else {
                b.cond(
                    cond::ACTIVATION_COMPLETE,
                    false,
                    R::ActivationUnconfirmed,
                    "boot version not set",
                );
                b.fail(
                    UpgradePhase::Failed,
                    R::ActivationUnconfirmed,
                    format!(
                        "the NoReboot activation of {version} is not confirmed: the device's next boot version is {:?}; OS.Activate is not sent again",
                        d.boot_version.as_deref().unwrap_or("")
                    ),
                );
            }
        }
        Some(
            DeviceObs::Unreachable(m) | DeviceObs::NoTransport(m) | DeviceObs::OsUnsupported(m),
        ) => {
            b.wait(
                R::DeviceUnreachable,
                format!("reading the boot version: {m}"),
                WAIT_RETRY,
            );
        }
    }
}

/// Backoff of reachability polls: 1 s, growing with the time since
/// activation, at most [`MAX_POLL`].
fn poll_backoff(elapsed: Duration) -> Duration {
    (elapsed / 10).clamp(Duration::from_secs(1), MAX_POLL)
}

fn reboot_limit(b: &B<'_>) -> Duration {
    Duration::from_secs(u64::try_from(b.spec.effective_reboot_timeout_seconds()).unwrap_or(0))
}

/// Whether the device came back from the reboot that activation started:
/// it answers with a boot time later than the one recorded just before the
/// activation; without that record, at least a second after `since` (the
/// activation request, kept in whole seconds).
fn rebooted_since(d: &DeviceState, pre_boot: Option<&str>, since: Option<&Time>) -> bool {
    let Some(boot) = d.boot_time else {
        return false;
    };
    if let Some(pre) = pre_boot.and_then(|p| p.parse::<Timestamp>().ok()) {
        return boot > pre;
    }
    since.is_some_and(|s| boot.as_second() > s.0.as_second() + 1)
}

fn awaiting(b: &mut B<'_>, obs: &Observation) {
    let elapsed = b
        .elapsed_since(b.st.activation_start_time.as_ref())
        .unwrap_or_default();
    let limit = reboot_limit(b);
    let back = match &obs.device {
        None => return b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(d)) => {
            rebooted_since(
                d,
                b.st.pre_activation_boot_time.as_deref(),
                b.st.activation_start_time.as_ref(),
            ) || (d.boot_time.is_none()
                && (version_matches(b.target(), &d.running_version)
                    || !d.activation_fail_message.is_empty()))
        }
        Some(_) => false,
    };
    if back {
        b.go(
            UpgradePhase::Verifying,
            R::Verifying,
            "the device is back; verifying the running version",
            "device reachable",
        );
        return;
    }
    if elapsed > limit {
        b.cond(
            cond::VERIFICATION_PASSED,
            false,
            R::RebootTimeout,
            "device did not come back",
        );
        return b.fail(
            UpgradePhase::RebootTimeout,
            R::RebootTimeout,
            format!(
                "the device did not come back within rebootTimeoutSeconds ({}s) after OS.Activate; OS.Activate is not sent again",
                limit.as_secs()
            ),
        );
    }
    let m = match &obs.device {
        Some(DeviceObs::Up(_)) => "waiting for the device to reload".to_owned(),
        Some(
            DeviceObs::Unreachable(m) | DeviceObs::NoTransport(m) | DeviceObs::OsUnsupported(m),
        ) => {
            format!("waiting for the device to come back: {m}")
        }
        None => String::new(),
    };
    b.wait(R::AwaitingReachability, m, poll_backoff(elapsed));
}

fn verifying(b: &mut B<'_>, obs: &Observation) {
    let elapsed = b
        .elapsed_since(b.st.activation_start_time.as_ref())
        .unwrap_or_default();
    let d = match &obs.device {
        None => return b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(d)) => d.clone(),
        Some(
            DeviceObs::Unreachable(m) | DeviceObs::NoTransport(m) | DeviceObs::OsUnsupported(m),
        ) => {
            if elapsed > reboot_limit(b) {
                return b.fail(
                    UpgradePhase::RebootTimeout,
                    R::RebootTimeout,
                    format!("the device stopped answering while verifying: {m}"),
                );
            }
            return b.wait(
                R::DeviceUnreachable,
                format!("verifying: {m}"),
                poll_backoff(elapsed),
            );
        }
    };
    let target = b.target().to_owned();
    b.st.running_version = Some(d.running_version.clone());
    if version_matches(&target, &d.running_version) {
        if b.spec.strategy == Strategy::Issu && d.issu != Some(true) {
            b.cond(
                cond::VERIFICATION_PASSED,
                false,
                R::IssuNotSelected,
                "the device did not report the ISSU path",
            );
            return b.fail(
                UpgradePhase::Failed,
                R::IssuNotSelected,
                format!(
                    "running {} but the device's install state does not show that the ISSU path was taken (IOS-XE chose a full reload or does not report it)",
                    d.running_version
                ),
            );
        }
        b.cond(
            cond::VERIFICATION_PASSED,
            true,
            R::VersionMatch,
            format!("running {}", d.running_version),
        );
        let m = format!("running {}", d.running_version);
        return b.succeed(
            R::VersionMatch,
            format!("upgraded to {}", d.running_version),
            m,
        );
    }
    let why = if d.activation_fail_message.is_empty() {
        format!(
            "the device runs {} after activation, not {target}",
            d.running_version
        )
    } else {
        format!(
            "the device runs {} after activation, not {target}: {}",
            d.running_version, d.activation_fail_message
        )
    };
    b.cond(
        cond::VERIFICATION_PASSED,
        false,
        R::VersionMismatch,
        why.clone(),
    );
    let previous = b.st.previous_version.clone().filter(|p| !p.is_empty());
    match previous {
        Some(prev) if b.spec.rollback_on_failure && !b.st.rollback_activation_requested => {
            b.st.rollback_activation_requested = true;
            b.st.rollback_invocation_id =
                Some(format!("rollback/{prev}/{}", b.generation.unwrap_or(0)));
            b.st.rollback_start_time = Some(Time(b.now));
            b.st.pre_activation_boot_time = d.boot_time.map(|t| t.to_string());
            b.go(
                UpgradePhase::RollingBack,
                R::RollingBack,
                format!("{why}; re-activating the previous version {prev}"),
                format!("running {}, re-activating {prev}", d.running_version),
            );
            b.actions.push(Action::Activate {
                version: prev,
                no_reboot: false,
                rollback: true,
            });
        }
        _ => {
            let extra = if b.spec.rollback_on_failure {
                " (no previous version to roll back to)"
            } else {
                " (rollbackOnFailure is false: the device is left as it is)"
            };
            b.fail(
                UpgradePhase::Failed,
                R::VersionMismatch,
                format!("{why}{extra}"),
            );
        }
    }
}

fn rolling_back(b: &mut B<'_>, obs: &Observation) {
    let prev = b.st.previous_version.clone().unwrap_or_default();
    if let Some(a) = obs.activation.as_ref().filter(|a| a.rollback) {
        match &a.result {
            ActivationResult::Refused(e) => {
                return b.fail(
                    UpgradePhase::Failed,
                    R::RollbackFailed,
                    format!("verification failed and the rollback OS.Activate of {prev} was refused: {e}"),
                );
            }
            _ => {
                b.st.message = Some(format!(
                    "rollback OS.Activate of {prev} sent; waiting for the device"
                ));
                return b.actions.push(Action::Requeue(Duration::from_secs(1)));
            }
        }
    }
    let elapsed = b
        .elapsed_since(b.st.rollback_start_time.as_ref())
        .unwrap_or_default();
    let d = match &obs.device {
        None => return b.actions.push(Action::ObserveDevice),
        Some(DeviceObs::Up(d))
            if rebooted_since(
                d,
                b.st.pre_activation_boot_time.as_deref(),
                b.st.rollback_start_time.as_ref(),
            ) =>
        {
            d.clone()
        }
        Some(other) => {
            if elapsed > reboot_limit(b) {
                return b.fail(
                    UpgradePhase::Failed,
                    R::RollbackTimeout,
                    format!(
                        "the device did not come back within rebootTimeoutSeconds ({}s) after the rollback activation of {prev}",
                        reboot_limit(b).as_secs()
                    ),
                );
            }
            let m = match other {
                DeviceObs::Up(_) => "waiting for the rollback reload".to_owned(),
                DeviceObs::Unreachable(m)
                | DeviceObs::NoTransport(m)
                | DeviceObs::OsUnsupported(m) => {
                    format!("waiting for the device after the rollback: {m}")
                }
            };
            return b.wait(R::RollingBack, m, poll_backoff(elapsed));
        }
    };
    b.st.running_version = Some(d.running_version.clone());
    if version_matches(&prev, &d.running_version) {
        b.fail(
            UpgradePhase::RolledBack,
            R::RolledBack,
            format!(
                "verification of {} failed; the previous version {} was restored",
                b.target(),
                d.running_version
            ),
        );
    } else {
        b.fail(
            UpgradePhase::Failed,
            R::RollbackFailed,
            format!(
                "verification of {} failed and the rollback did not restore {prev}: the device runs {}",
                b.target(),
                d.running_version
            ),
        );
    }
}

#[cfg(test)]
mod tests;
