//! Unit tests of the pure lifecycle: a small deterministic "world" answers
//! the actions the way a device, the Lease and the transfer task would, the
//! clock advances by each requested requeue, and the phase sequence of each
//! case is snapshot-tested.

use std::collections::VecDeque;

use super::*;
use crate::crd::common::{DeviceRef, LocalObjectRef};
use crate::crd::upgrade::{ImageSource, MaintenanceWindow, Preinstalled};

const OLD: &str = "17.18.02.0.4112.1766116039";
const NEW: &str = "26.01.01.0.340";
const DIGEST: &str = "7de3c6875e3c1c96d5920e8542c72b1bcb5d913d99645ef5687f44dd4024cdf4";

fn t0() -> Timestamp {
    "2026-03-01T22:00:00Z".parse().unwrap()
}

fn spec(source: ImageSource) -> IOSXESoftwareUpgradeSpec {
    serde_json::from_value(serde_json::json!({
        "deviceRef": {"name": "cat9000-4"},
        "imageSource": serde_json::to_value(source).unwrap(),
        "targetVersion": "26.01.01",
    }))
    .unwrap()
}

fn url() -> ImageSource {
    ImageSource {
        url: Some("tftp://127.0.0.1/cat9k.bin".into()),
        sha256: Some(DIGEST.into()),
        ..Default::default()
    }
}

fn configmap() -> ImageSource {
    ImageSource {
        config_map_ref: Some(LocalObjectRef { name: "img".into() }),
        ..Default::default()
    }
}

/// What the device does after OS.Activate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Boot {
    /// Boots the activated version.
    New,
    /// Boots the old image again (failed activation).
    Old,
    /// Never comes back.
    Never,
}

#[derive(Debug)]
struct World {
    now: Timestamp,
    running: String,
    boot_time: Timestamp,
    down_until: Option<Timestamp>,
    next_boot: Option<String>,
    boot_version: Option<String>,
    images: Vec<StagedImage>,
    flash_free: u64,
    lease: LeaseObs,
    os_unsupported: bool,
    source: SourceObs,
    transfers: VecDeque<TransferState>,
    activation: ActivationResult,
    boot: Boot,
    /// Boot behaviour of the rollback activation.
    rollback_boot: Boot,
    local_sha: Result<String, (UpgradeReason, String)>,
    activations: Vec<(String, bool)>,
    deleted_at: Option<usize>,
    reboot_secs: i64,
    /// An interrupted transfer takes the device down this long (it
    /// rebooted mid-transfer).
    down_on_interrupt: Option<i64>,
}

impl World {
    fn new() -> Self {
        Self {
            now: t0(),
            running: OLD.into(),
            boot_time: t0() - jiff::SignedDuration::from_hours(1),
            down_until: None,
            next_boot: None,
            boot_version: None,
            images: Vec::new(),
            flash_free: 8 << 30,
            lease: LeaseObs::Held,
            os_unsupported: false,
            source: SourceObs::Resolved {
                digest: DIGEST.into(),
                size: Some(1 << 30),
            },
            transfers: VecDeque::new(),
            activation: ActivationResult::Accepted,
            boot: Boot::New,
            rollback_boot: Boot::New,
            local_sha: Ok(DIGEST.into()),
            activations: Vec::new(),
            deleted_at: None,
            reboot_secs: 300,
            down_on_interrupt: None,
        }
    }

    fn device(&mut self) -> DeviceObs {
        if let Some(until) = self.down_until {
            if self.now < until {
                return DeviceObs::Unreachable("connection refused".into());
            }
            self.down_until = None;
            self.boot_time = until;
            if let Some(v) = self.next_boot.take() {
                self.running = v;
            }
        }
        if self.os_unsupported {
            return DeviceObs::OsUnsupported("unknown service gnoi.os.OS".into());
        }
        DeviceObs::Up(DeviceState {
            running_version: self.running.clone(),
            activation_fail_message: String::new(),
            boot_time: Some(self.boot_time),
            install_in_progress: false,
            boot_version: self.boot_version.clone(),
            flash_free: Some(self.flash_free),
            images: self.images.clone(),
            issu: None,
        })
    }

    fn activate(&mut self, version: &str, no_reboot: bool, rollback: bool) -> ActivationResult {
        self.activations.push((version.to_owned(), rollback));
        let result = if rollback {
            ActivationResult::Accepted
        } else {
            self.activation.clone()
        };
        if matches!(result, ActivationResult::Refused(_)) {
            return result;
        }
        self.boot_version = Some(version.to_owned());
        if no_reboot {
            return result;
        }
        let boot = if rollback {
            self.rollback_boot
        } else {
            self.boot
        };
        let secs = if boot == Boot::Never {
            1_000_000
        } else {
            self.reboot_secs
        };
        self.down_until = Some(self.now + jiff::SignedDuration::from_secs(secs));
        self.next_boot = match boot {
            Boot::New => Some(version.to_owned()),
            Boot::Old | Boot::Never => None,
        };
        result
    }
}

/// The outcome of a simulated run.
#[derive(Debug)]
struct Run {
    phases: Vec<UpgradePhase>,
    events: Vec<String>,
    status: IOSXESoftwareUpgradeStatus,
    world: World,
}

/// Drives `step` the way the reconciler does: per reconcile, fresh
/// observations; actions answered by the world; requeues advance the clock.
fn run(spec: &IOSXESoftwareUpgradeSpec, mut world: World) -> Run {
    let mut status = IOSXESoftwareUpgradeStatus::default();
    let mut phases = Vec::new();
    let mut events = Vec::new();
    let mut transfer: Option<TransferObs> = None;
    for reconcile in 0..500 {
        let mut obs = Observation {
            deleting: world.deleted_at.is_some_and(|d| reconcile >= d),
            transfer: transfer.clone(),
            ..Observation::default()
        };
        let mut wait = None;
        for _ in 0..30 {
            let d = step(spec, &status, &obs, Some(1), world.now);
            if let Some(t) = &d.transition {
                events.push(t.event_note());
            }
            status = d.status;
            if phases.last() != status.phase.as_ref() {
                phases.push(status.phase.unwrap());
            }
            if status.phase.is_some_and(|p| p.is_terminal()) {
                break;
            }
            let mut progressed = d.transition.is_some();
            for a in d.actions {
                match a {
                    Action::AcquireLease => obs.lease = Some(world.lease.clone()),
                    Action::ObserveDevice => obs.device = Some(world.device()),
                    Action::ResolveSource => obs.source = Some(world.source.clone()),
                    Action::StartTransfer { attempt, .. } => {
                        transfer = Some(TransferObs {
                            attempt,
                            state: TransferState::Running {
                                bytes: 0,
                                total: Some(1 << 30),
                            },
                        });
                        obs.transfer = transfer.clone();
                    }
                    Action::CancelTransfer => transfer = None,
                    Action::HashLocalFile { .. } => obs.local_file = Some(world.local_sha.clone()),
                    Action::Activate {
                        version,
                        no_reboot,
                        rollback,
                    } => {
                        obs.activation = Some(ActivationObs {
                            rollback,
                            result: world.activate(&version, no_reboot, rollback),
                        });
                        obs.device = None;
                    }
                    Action::ReleaseLease | Action::RemoveFinalizer => continue,
                    Action::Requeue(d) => wait = Some(d),
                }
                progressed = true;
            }
            if wait.is_some() || !progressed {
                break;
            }
        }
        if status.phase.is_some_and(|p| p.is_terminal()) {
            return Run {
                phases,
                events,
                status,
                world,
            };
        }
        let d = wait.expect("a non-terminal decision must ask to be looked at again");
        world.now += jiff::SignedDuration::try_from(d).unwrap();
        // The transfer task moves on between reconciles.
        if let Some(t) = &mut transfer
            && matches!(t.state, TransferState::Running { .. })
        {
            let down = world.down_until.is_some_and(|until| world.now < until);
            t.state = if down {
                TransferState::Interrupted("TCP connect: connection refused".into())
            } else {
                world
                    .transfers
                    .pop_front()
                    .unwrap_or(TransferState::Validated {
                        version: NEW.into(),
                        already_present: false,
                        bytes: 1 << 30,
                    })
            };
            if !down
                && let (TransferState::Interrupted(_), Some(secs)) =
                    (&t.state, world.down_on_interrupt)
            {
                world.down_until = Some(world.now + jiff::SignedDuration::from_secs(secs));
            }
        }
    }
    panic!("no terminal phase after 500 reconciles: {status:#?}");
}

fn cond<'a>(st: &'a IOSXESoftwareUpgradeStatus, t: &str) -> (&'a str, &'a str) {
    st.conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
        .unwrap_or(("", ""))
}

#[test]
fn the_walkthrough_reload_succeeds_with_the_documented_conditions_and_events() {
    let mut s = spec(url());
    s.rollback_on_failure = false;
    let r = run(&s, World::new());
    assert_eq!(
        r.phases,
        [
            UpgradePhase::Pending,
            UpgradePhase::Resolving,
            UpgradePhase::Transferring,
            UpgradePhase::Validating,
            UpgradePhase::Activating,
            UpgradePhase::AwaitingReachability,
            UpgradePhase::Verifying,
            UpgradePhase::Succeeded,
        ]
    );
    assert!(
        r.events
            .contains(&"Transferring → Validating: image hash verified".to_owned())
    );
    assert!(
        r.events
            .contains(&"Activating → AwaitingReachability: OS.Activate sent".to_owned())
    );
    assert!(
        r.events
            .contains(&format!("Verifying → Succeeded: running {NEW}"))
    );
    let st = &r.status;
    assert_eq!(
        cond(st, cond::TRANSFER_COMPLETE),
        ("True", "ImageTransferred")
    );
    assert_eq!(cond(st, cond::VALIDATION_PASSED), ("True", "PrefligthOK"));
    assert_eq!(cond(st, cond::ACTIVATION_COMPLETE), ("True", "OSActivated"));
    assert_eq!(
        cond(st, cond::VERIFICATION_PASSED),
        ("True", "VersionMatch")
    );
    assert_eq!(cond(st, cond::READY), ("True", "VersionMatch"));
    assert_eq!(st.running_version.as_deref(), Some(NEW));
    assert_eq!(st.previous_version.as_deref(), Some(OLD));
    assert_eq!(st.validated_version.as_deref(), Some(NEW));
    assert_eq!(
        st.source_digest.as_deref(),
        Some(&*format!("sha256:{DIGEST}"))
    );
    assert!(st.activation_requested);
    assert!(st.completion_time.is_some() && st.activation_start_time.is_some());
    assert_eq!(r.world.activations, [(NEW.to_owned(), false)]);
}

#[test]
fn defaults_are_the_specifications() {
    let s = spec(url());
    assert_eq!(s.strategy, Strategy::Reload);
    assert!(s.rollback_on_failure);
    assert_eq!(s.resume_policy, ResumePolicy::Retry);
    assert_eq!(s.max_retries, 3);
    assert_eq!(s.reboot_timeout_seconds, 1800);
}

#[test]
fn a_device_on_the_target_succeeds_at_once_without_touching_it() {
    let mut w = World::new();
    w.running = NEW.into();
    let r = run(&spec(url()), w);
    assert_eq!(
        r.phases,
        [
            UpgradePhase::Pending,
            UpgradePhase::Resolving,
            UpgradePhase::Succeeded
        ]
    );
    assert_eq!(r.status.reason.as_deref(), Some("AlreadyAtTargetVersion"));
    assert!(r.world.activations.is_empty());
    assert!(!r.status.activation_requested);
}

#[test]
fn retries_recover_an_interrupted_transfer_and_count() {
    let mut w = World::new();
    w.transfers = VecDeque::from([
        TransferState::Interrupted("connection reset".into()),
        TransferState::Interrupted("connection reset".into()),
    ]);
    let r = run(&spec(configmap()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Succeeded));
    assert_eq!(r.status.retry_count, Some(2));
    let interrupted = r
        .phases
        .iter()
        .filter(|p| **p == UpgradePhase::TransferInterrupted)
        .count();
    assert_eq!(interrupted, 2, "{:?}", r.phases);
}

#[test]
fn a_device_that_reboots_mid_transfer_is_waited_for_without_spending_retries() {
    let mut w = World::new();
    // Down for two minutes after the interruption: every retry would have
    // been refused in the first seconds.
    w.transfers = VecDeque::from([TransferState::Interrupted("broken pipe".into())]);
    w.down_on_interrupt = Some(120);
    let r = run(&spec(configmap()), w);
    assert_eq!(
        r.status.phase,
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        r.status
    );
    assert_eq!(r.status.retry_count, Some(1));
    assert_eq!(r.world.activations.len(), 1);
}

#[test]
fn a_device_that_stays_down_after_an_interruption_ends_in_install_timeout() {
    let mut w = World::new();
    w.transfers = VecDeque::from([TransferState::Interrupted("broken pipe".into())]);
    w.down_on_interrupt = Some(100_000);
    let mut s = spec(configmap());
    s.install_timeout_seconds = 600;
    let r = run(&s, w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Failed));
    assert_eq!(r.status.failure_reason.as_deref(), Some("InstallTimeout"));
    assert!(
        r.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("did not answer again")),
        "{:?}",
        r.status.message
    );
    assert_eq!(
        r.status.retry_count,
        Some(1),
        "no retry is spent on a silent device"
    );
    assert!(r.world.activations.is_empty());
}

#[test]
fn an_install_still_in_progress_after_a_restart_is_retried_not_failed() {
    // The controller restarted mid-transfer: its old OS.Install session is
    // still open on the device when the new process sends again.
    let mut w = World::new();
    w.transfers = VecDeque::from([TransferState::InstallError {
        kind: "INSTALL_IN_PROGRESS".into(),
        detail: "an install of \"17.18.03\" is in progress".into(),
    }]);
    let r = run(&spec(configmap()), w);
    assert_eq!(
        r.status.phase,
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        r.status
    );
    assert_eq!(r.status.retry_count, Some(1));
    assert!(r.phases.contains(&UpgradePhase::TransferInterrupted));
    assert_eq!(r.world.activations.len(), 1);
}

#[test]
fn retries_are_bounded_by_max_retries() {
    let mut w = World::new();
    w.transfers = (0..10)
        .map(|_| TransferState::Interrupted("reset".into()))
        .collect();
    let mut s = spec(configmap());
    s.max_retries = 2;
    let r = run(&s, w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Failed));
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("TransferRetriesExhausted")
    );
    assert_eq!(r.status.retry_count, Some(2));
    assert!(r.world.activations.is_empty());
}

#[test]
fn abort_makes_an_interruption_terminal() {
    let mut w = World::new();
    w.transfers = VecDeque::from([TransferState::Interrupted("reset".into())]);
    let mut s = spec(configmap());
    s.resume_policy = ResumePolicy::Abort;
    let r = run(&s, w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Failed));
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("TransferInterrupted")
    );
    assert!(!r.phases.contains(&UpgradePhase::TransferInterrupted));
}

#[test]
fn a_digest_mismatch_is_a_validation_failure_and_never_activates() {
    let mut w = World::new();
    w.transfers = VecDeque::from([TransferState::DigestMismatch("sha256 mismatch".into())]);
    let r = run(&spec(url()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::ValidationFailed));
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("SourceDigestMismatch")
    );
    assert!(r.world.activations.is_empty());
    assert!(!r.status.activation_requested);
}

#[test]
fn install_errors_are_mapped_by_type() {
    for (kind, phase, reason) in [
        (
            "INTEGRITY_FAIL",
            UpgradePhase::ValidationFailed,
            "ImageIntegrityFailed",
        ),
        (
            "INCOMPATIBLE",
            UpgradePhase::ValidationFailed,
            "ImageIncompatible",
        ),
        ("TOO_LARGE", UpgradePhase::Failed, "InsufficientFlash"),
        ("UNSPECIFIED", UpgradePhase::Failed, "InstallFailed"),
    ] {
        let mut w = World::new();
        w.transfers = VecDeque::from([TransferState::InstallError {
            kind: kind.into(),
            detail: "x".into(),
        }]);
        let r = run(&spec(configmap()), w);
        assert_eq!(r.status.phase, Some(phase), "{kind}");
        assert_eq!(r.status.failure_reason.as_deref(), Some(reason), "{kind}");
    }
}

#[test]
fn a_validated_version_that_is_not_the_target_is_refused() {
    let mut w = World::new();
    w.transfers = VecDeque::from([TransferState::Validated {
        version: "26.01.010".into(),
        already_present: false,
        bytes: 10,
    }]);
    let r = run(&spec(configmap()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::ValidationFailed));
    assert_eq!(r.status.failure_reason.as_deref(), Some("VersionMismatch"));
    assert!(r.world.activations.is_empty());
}

#[test]
fn booting_the_old_image_rolls_back_once_or_fails_without_rollback() {
    let mut w = World::new();
    w.boot = Boot::Old;
    let r = run(&spec(configmap()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::RolledBack));
    assert_eq!(
        r.world.activations,
        [(NEW.to_owned(), false), (OLD.to_owned(), true)]
    );
    assert_eq!(r.status.running_version.as_deref(), Some(OLD));
    assert!(r.status.rollback_activation_requested);

    let mut w = World::new();
    w.boot = Boot::Old;
    let mut s = spec(configmap());
    s.rollback_on_failure = false;
    let r = run(&s, w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Failed));
    assert_eq!(r.status.failure_reason.as_deref(), Some("VersionMismatch"));
    assert_eq!(r.world.activations.len(), 1);
}

#[test]
fn a_rollback_that_does_not_restore_fails_with_a_reason() {
    let mut w = World::new();
    w.boot = Boot::Old;
    w.rollback_boot = Boot::Never;
    let r = run(&spec(configmap()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Failed));
    assert_eq!(r.status.failure_reason.as_deref(), Some("RollbackTimeout"));
    assert_eq!(r.world.activations.len(), 2);
}

#[test]
fn a_reboot_that_never_ends_times_out() {
    let mut w = World::new();
    w.boot = Boot::Never;
    let mut s = spec(configmap());
    s.reboot_timeout_seconds = 600;
    let r = run(&s, w);
    assert_eq!(r.status.phase, Some(UpgradePhase::RebootTimeout));
    let elapsed = r.world.now.as_second() - t0().as_second();
    assert!((600..700).contains(&elapsed), "{elapsed}");
    assert_eq!(r.world.activations.len(), 1);
}

#[test]
fn no_reboot_stages_and_succeeds_with_the_running_version_unchanged() {
    let mut s = spec(url());
    s.strategy = Strategy::NoReboot;
    s.reboot_timeout_seconds = 0;
    let r = run(&s, World::new());
    assert_eq!(r.status.phase, Some(UpgradePhase::Succeeded));
    assert_eq!(r.status.running_version.as_deref(), Some(OLD));
    assert_eq!(
        cond(&r.status, cond::ACTIVATION_COMPLETE),
        ("True", "ImageStaged")
    );
    assert_eq!(r.status.reason.as_deref(), Some("StagedForNextReload"));
    assert!(!r.phases.contains(&UpgradePhase::AwaitingReachability));
    assert_eq!(r.world.running, OLD);
}

#[test]
fn local_path_with_and_without_a_digest() {
    let path = "flash:gNOI_iosxe_26.01.01.0.340.bin";
    let mut w = World::new();
    w.images = vec![StagedImage {
        version: NEW.into(),
        path: path.into(),
    }];
    let mut src = ImageSource {
        local_path: Some(path.into()),
        local_path_sha256: Some(DIGEST.into()),
        ..Default::default()
    };
    let r = run(&spec(src.clone()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Succeeded));
    assert!(!r.phases.contains(&UpgradePhase::Transferring));
    assert_eq!(
        cond(&r.status, cond::IMAGE_VERIFIED),
        ("True", "SHA256Match")
    );
    assert_eq!(
        cond(&r.status, cond::TRANSFER_COMPLETE),
        ("True", "ImageAlreadyPresent")
    );

    let mut w = World::new();
    w.images = vec![StagedImage {
        version: NEW.into(),
        path: path.into(),
    }];
    w.local_sha = Ok("0".repeat(64));
    let r = run(&spec(src.clone()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::ValidationFailed));
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("LocalImageDigestMismatch")
    );
    assert!(r.world.activations.is_empty());

    src.local_path_sha256 = None;
    let mut w = World::new();
    w.images = vec![StagedImage {
        version: NEW.into(),
        path: path.into(),
    }];
    let r = run(&spec(src.clone()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Succeeded));
    assert_eq!(
        cond(&r.status, cond::IMAGE_VERIFIED),
        ("False", "NotVerified")
    );

    // A localPathSHA256 that is not 64 hex digits (the specification's own
    // example writes a shortened "a1b2c3d4e5f6...") ends PreflightFailed
    // with reason InvalidImageSource before the device is touched.
    src.local_path_sha256 = Some("a1b2c3d4e5f6...".into());
    let r = run(&spec(src), World::new());
    assert_eq!(r.status.phase, Some(UpgradePhase::PreflightFailed));
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("InvalidImageSource")
    );
    assert!(
        r.status
            .message
            .as_deref()
            .unwrap()
            .contains("localPathSHA256")
    );
}

#[test]
fn preflight_failures() {
    let mut w = World::new();
    w.os_unsupported = true;
    let r = run(&spec(configmap()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::PreflightFailed));
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("OSServiceUnsupported")
    );

    let mut w = World::new();
    w.flash_free = 1 << 29;
    let r = run(&spec(configmap()), w);
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("InsufficientFlash")
    );
    assert_eq!(r.status.phase, Some(UpgradePhase::PreflightFailed));

    let mut s = spec(ImageSource {
        preinstalled: Some(Preinstalled {}),
        ..Default::default()
    });
    let r = run(&s, World::new());
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("TargetNotInstalled")
    );

    s.maintenance_window = Some(MaintenanceWindow {
        not_before: None,
        not_after: Some(Time(t0() - jiff::SignedDuration::from_secs(1))),
    });
    let r = run(&s, World::new());
    assert_eq!(
        r.status.failure_reason.as_deref(),
        Some("MaintenanceWindowExpired")
    );
    // Decided on the first look: the object goes from (unset) Pending
    // straight to the failure, announced as "Pending → PreflightFailed".
    assert_eq!(r.events.len(), 1);
    assert!(r.events[0].starts_with("Pending → PreflightFailed"));
    assert_eq!(r.phases, [UpgradePhase::PreflightFailed]);
}

#[test]
fn a_window_not_yet_open_waits_in_pending_then_runs() {
    let mut s = spec(configmap());
    s.maintenance_window = Some(MaintenanceWindow {
        not_before: Some(Time(t0() + jiff::SignedDuration::from_secs(900))),
        not_after: None,
    });
    let r = run(&s, World::new());
    assert_eq!(r.status.phase, Some(UpgradePhase::Succeeded));
    let started = r.status.start_time.as_ref().unwrap().0;
    assert!(started >= t0() + jiff::SignedDuration::from_secs(900));
}

#[test]
fn a_busy_device_waits_and_a_deletion_before_activation_cancels() {
    let mut w = World::new();
    w.lease = LeaseObs::Busy("IOSXEOperationalAction/ns/reload".into());
    w.deleted_at = Some(3);
    let r = run(&spec(configmap()), w);
    assert_eq!(r.phases, [UpgradePhase::Pending, UpgradePhase::Cancelled]);
    assert!(r.world.activations.is_empty());
}

#[test]
fn a_deletion_while_transferring_cancels_the_transfer() {
    let mut w = World::new();
    w.transfers = VecDeque::from([TransferState::Running {
        bytes: 5,
        total: Some(10),
    }]);
    w.deleted_at = Some(2);
    let r = run(&spec(configmap()), w);
    assert_eq!(r.status.phase, Some(UpgradePhase::Cancelled));
    assert!(r.world.activations.is_empty());
}

#[test]
fn a_deletion_after_activation_waits_for_the_device_to_settle() {
    let mut w = World::new();
    // Deleted on the reconcile after activation: it keeps going.
    w.deleted_at = Some(2);
    let r = run(&spec(preinstalled_new()), w_with_new_image(w));
    assert_eq!(r.status.phase, Some(UpgradePhase::Succeeded));
}

fn preinstalled_new() -> ImageSource {
    ImageSource {
        preinstalled: Some(Preinstalled {}),
        ..Default::default()
    }
}

fn w_with_new_image(mut w: World) -> World {
    w.images = vec![StagedImage {
        version: NEW.into(),
        path: "flash:x.bin".into(),
    }];
    w
}

#[test]
fn a_restart_after_the_marker_observes_and_never_activates_again() {
    let s = spec(preinstalled_new());
    let mut status = IOSXESoftwareUpgradeStatus::default();
    // Run until the marker is set.
    let mut obs = Observation {
        lease: Some(LeaseObs::Held),
        ..Default::default()
    };
    let mut w = w_with_new_image(World::new());
    obs.device = Some(w.device());
    for _ in 0..10 {
        let d = step(&s, &status, &obs, Some(1), t0());
        status = d.status;
        if d.actions
            .iter()
            .any(|a| matches!(a, Action::Activate { .. }))
        {
            break;
        }
    }
    assert_eq!(status.phase, Some(UpgradePhase::Activating));
    assert!(status.activation_requested);
    // "Restart": no activation observation. Every later step only observes.
    let mut now = t0();
    for _ in 0..50 {
        let obs = Observation {
            device: Some(w.device()),
            ..Default::default()
        };
        let d = step(&s, &status, &obs, Some(1), now);
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::Activate { .. })),
            "{:?}",
            d.actions
        );
        status = d.status;
        if status.phase.is_some_and(|p| p.is_terminal()) {
            break;
        }
        now += jiff::SignedDuration::from_secs(60);
    }
    assert_eq!(status.phase, Some(UpgradePhase::RebootTimeout));
}

#[test]
fn terminal_phases_only_release() {
    for phase in UpgradePhase::ALL.into_iter().filter(|p| p.is_terminal()) {
        let st = IOSXESoftwareUpgradeStatus {
            phase: Some(phase),
            ..Default::default()
        };
        let d = step(&spec(url()), &st, &Observation::default(), Some(1), t0());
        assert_eq!(d.status.phase, Some(phase));
        assert_eq!(d.actions, [Action::ReleaseLease, Action::RemoveFinalizer]);
        assert!(d.transition.is_none());
    }
}

#[test]
fn progress_is_reported_with_a_percentage() {
    let s = spec(configmap());
    let st = IOSXESoftwareUpgradeStatus {
        phase: Some(UpgradePhase::Transferring),
        retry_count: Some(0),
        install_start_time: Some(Time(t0())),
        ..Default::default()
    };
    let obs = Observation {
        transfer: Some(TransferObs {
            attempt: 0,
            state: TransferState::Running {
                bytes: 333,
                total: Some(1000),
            },
        }),
        ..Default::default()
    };
    let d = step(&s, &st, &obs, Some(1), t0());
    assert_eq!(
        d.status.transfer_progress,
        Some(TransferProgress {
            bytes_transferred: 333,
            total_bytes: Some(1000),
            percent: Some(33)
        })
    );
    assert_eq!(d.actions, [Action::Requeue(TRANSFER_POLL)]);
    // A stale attempt's result is ignored: a new attempt starts.
    let st = IOSXESoftwareUpgradeStatus {
        retry_count: Some(1),
        ..st
    };
    let d = step(&s, &st, &obs, Some(1), t0());
    assert_eq!(
        d.actions,
        [Action::StartTransfer {
            version: "26.01.01".into(),
            attempt: 1
        }]
    );
}

/// The phase sequence of every case, as one snapshot.
#[test]
fn phase_sequences() {
    let mut table = Vec::new();
    let mut case = |name: &str, s: IOSXESoftwareUpgradeSpec, w: World| {
        let r = run(&s, w);
        let phases: Vec<&str> = r.phases.iter().map(|p| p.as_str()).collect();
        table.push(format!(
            "{name}: {} [{}]",
            phases.join(" > "),
            r.status.reason.as_deref().unwrap_or_default()
        ));
    };
    case("reload", spec(url()), World::new());
    case("already-on-target", spec(url()), {
        let mut w = World::new();
        w.running = NEW.into();
        w
    });
    case(
        "no-reboot",
        {
            let mut s = spec(url());
            s.strategy = Strategy::NoReboot;
            s
        },
        World::new(),
    );
    case(
        "preinstalled",
        spec(preinstalled_new()),
        w_with_new_image(World::new()),
    );
    case("retry-then-ok", spec(configmap()), {
        let mut w = World::new();
        w.transfers = VecDeque::from([TransferState::Interrupted("reset".into())]);
        w
    });
    case(
        "abort",
        {
            let mut s = spec(configmap());
            s.resume_policy = ResumePolicy::Abort;
            s
        },
        {
            let mut w = World::new();
            w.transfers = VecDeque::from([TransferState::Interrupted("reset".into())]);
            w
        },
    );
    case("hash-mismatch", spec(url()), {
        let mut w = World::new();
        w.transfers = VecDeque::from([TransferState::DigestMismatch("mismatch".into())]);
        w
    });
    case("old-image-rollback", spec(configmap()), {
        let mut w = World::new();
        w.boot = Boot::Old;
        w
    });
    case(
        "old-image-no-rollback",
        {
            let mut s = spec(configmap());
            s.rollback_on_failure = false;
            s
        },
        {
            let mut w = World::new();
            w.boot = Boot::Old;
            w
        },
    );
    case("endless-reboot", spec(configmap()), {
        let mut w = World::new();
        w.boot = Boot::Never;
        w
    });
    case("activate-refused", spec(configmap()), {
        let mut w = World::new();
        w.activation = ActivationResult::Refused("NON_EXISTENT_VERSION: gone".into());
        w
    });
    case("flash-full", spec(configmap()), {
        let mut w = World::new();
        w.flash_free = 0;
        w
    });
    case("os-unimplemented", spec(configmap()), {
        let mut w = World::new();
        w.os_unsupported = true;
        w
    });
    case("source-not-found", spec(configmap()), {
        let mut w = World::new();
        w.source = SourceObs::Failed {
            reason: UpgradeReason::ImageSourceNotFound,
            message: "ConfigMap img not found".into(),
        };
        w
    });
    insta::assert_snapshot!(table.join("\n"));
}

#[test]
fn spec_device_ref_is_used_in_lock_messages() {
    let mut s = spec(configmap());
    s.device_ref = DeviceRef { name: "sw9".into() };
    let obs = Observation {
        lease: Some(LeaseObs::Busy("IOSXEOperationalAction/ns/x".into())),
        ..Default::default()
    };
    let d = step(
        &s,
        &IOSXESoftwareUpgradeStatus::default(),
        &obs,
        Some(1),
        t0(),
    );
    assert_eq!(d.status.reason.as_deref(), Some("DeviceLocked"));
    assert!(d.status.message.unwrap().contains("sw9"));
}

#[test]
fn issu_succeeds_only_when_the_device_reports_the_issu_path() {
    let s = IOSXESoftwareUpgradeSpec {
        strategy: Strategy::Issu,
        ..spec(configmap())
    };
    let verifying = IOSXESoftwareUpgradeStatus {
        phase: Some(UpgradePhase::Verifying),
        previous_version: Some(OLD.into()),
        activation_start_time: Some(Time(t0())),
        ..Default::default()
    };
    let device = |issu| {
        Some(DeviceObs::Up(DeviceState {
            running_version: NEW.into(),
            boot_time: Some(t0()),
            issu,
            ..Default::default()
        }))
    };
    let obs = Observation {
        device: device(Some(true)),
        ..Default::default()
    };
    let d = step(&s, &verifying, &obs, Some(1), t0());
    assert_eq!(d.status.phase, Some(UpgradePhase::Succeeded));
    for issu in [None, Some(false)] {
        let obs = Observation {
            device: device(issu),
            ..Default::default()
        };
        let d = step(&s, &verifying, &obs, Some(1), t0());
        assert_eq!(d.status.phase, Some(UpgradePhase::Failed), "{issu:?}");
        assert_eq!(d.status.failure_reason.as_deref(), Some("ISSUNotSelected"));
        // The version is right: no rollback is attempted.
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::Activate { .. }))
        );
    }
    // ISSU activates like Reload (reboot allowed).
    let validating = IOSXESoftwareUpgradeStatus {
        phase: Some(UpgradePhase::Validating),
        validated_version: Some(NEW.into()),
        ..Default::default()
    };
    let obs = Observation {
        device: device(None),
        ..Default::default()
    };
    let d = step(&s, &validating, &obs, Some(1), t0());
    assert!(d.actions.contains(&Action::Activate {
        version: NEW.into(),
        no_reboot: false,
        rollback: false
    }));
}
