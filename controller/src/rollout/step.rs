//! One decision of a campaign (pure): from the spec, the status as stored,
//! the frozen plan, the children and the devices as observed, and the time,
//! the next status, the children to create or delete, and the Events to
//! publish. The reconciler writes the status (resourceVersion
//! precondition) *before* it creates a child, so a target is counted
//! against the budgets before its child exists, and a controller killed
//! between the two creates the same child (same name) on its next pass,
//! never a second one.
//!
//! The rules, in the order they apply:
//!
//! | situation | what happens |
//! |---|---|
//! | a child of `inProgress` is seen | it is marked observed; its phase is copied |
//! | a child ends | it leaves `inProgress`; a failure raises an Event naming the device |
//! | an observed child disappears while not cancelling | the target is lost: counted failed, never started again |
//! | `control.cancel` | Cancelling: children before Activating are deleted, the rest finish; then Cancelled |
//! | a larger `control.revision` without pause | resumes a halted campaign (its failures accepted) or the pause after the canaries |
//! | failures since the last resume reach `maxFailedTargets`, or any in a canary group | Halted: nothing new starts, running children finish |
//! | `control.pause` | Paused: nothing new starts |
//! | `requireApproval` without the plan's hash in `spec.approval` | AwaitingApproval |
//! | every child of the current wave ended | Soaking: each upgraded device must stay Ready, on the target version, with no boot after its child finished, for the soak; not Ready restarts the soak; a wrong version or a new boot halts |
//! | soak passed | next wave; after the last canary group with `pauseAfterCanary`: Paused until a resume |
//! | room in every budget and inside the maintenance window | the wave's next targets start, in name order |
//! | every wave done | Succeeded, or Failed (TargetsFailed) if any target failed |
//! | window closed with targets left | Failed (MaintenanceWindowExpired) once running children ended |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::Plan;
use crate::conditions::{DesiredCondition, merge};
use crate::crd::common::ConditionStatus;
use crate::crd::device::DevicePhase;
use crate::crd::rollout::{
    FailedTarget, IOSXESoftwareRolloutSpec, IOSXESoftwareRolloutStatus, RolloutControl,
    RolloutCounts, RolloutPhase, TargetProgress, WaveStatus, conditions,
};
use crate::crd::upgrade::{Strategy, UpgradePhase};
use crate::reason::{RolloutReason, RolloutReason as R};
use crate::version::version_matches;

/// Failed targets listed in status at most (counts.failed has them all).
pub const MAX_LISTED_FAILURES: usize = 20;

/// Longest wait between two decisions while the campaign is not terminal:
/// health readings age and budgets free up without an event for the rollout
/// itself.
pub const RECHECK: Duration = Duration::from_secs(30);

/// What is known of one child IOSXESoftwareUpgrade.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChildObs {
    /// metadata.name.
    pub name: String,
    /// status.phase.
    pub phase: Option<UpgradePhase>,
    /// status.failureReason, else status.reason.
    pub reason: Option<String>,
    /// status.completionTime.
    pub completion_time: Option<Timestamp>,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
}

/// What is known of one target's CiscoDevice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceObs {
    /// status.phase.
    pub phase: Option<DevicePhase>,
    /// status.runningVersion.
    pub running_version: Option<String>,
    /// status.bootTime.
    pub boot_time: Option<Timestamp>,
    /// status.lastSeen: when the reading was taken.
    pub last_seen: Option<Timestamp>,
}

/// Everything a decision reads besides the spec and status.
#[derive(Clone, Copy)]
pub struct Observation<'a> {
    /// The frozen plan.
    pub plan: &'a Plan,
    /// `status.frozenPlan.hash`.
    pub plan_hash: &'a str,
    /// Children by device name.
    pub children: &'a HashMap<String, ChildObs>,
    /// CiscoDevices by name (targets only are read).
    pub devices: &'a HashMap<String, DeviceObs>,
    /// The child name of a device (deterministic).
    pub child_name: &'a dyn Fn(&str) -> String,
}

/// Something the reconciler does after the status is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the child of `device` (AlreadyExists is success).
    CreateChild {
        /// The target.
        device: String,
        /// The wave's name (child annotation).
        wave: String,
    },
    /// Delete the child `name` (NotFound is success); its own finalizer
    /// cancels it safely.
    DeleteChild {
        /// The child.
        name: String,
    },
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (else Normal).
    pub warning: bool,
    /// Event reason.
    pub reason: RolloutReason,
    /// Event action. Events are aggregated by (type, reason, action), so
    /// each subject (a device, a wave, a phase pair) has its own, or its
    /// note would be lost in the first one's series.
    pub action: String,
    /// Event note.
    pub message: String,
}

/// The outcome of [`step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (unchanged: nothing to write).
    pub status: IOSXESoftwareRolloutStatus,
    /// What to do once it is written, in order.
    pub actions: Vec<Action>,
    /// Events to publish once it is written.
    pub notes: Vec<Note>,
    /// When to decide again without an event (`None`: only on events).
    pub requeue: Option<Duration>,
}

/// Phases of a child that still transfer (count against
/// maxConcurrentTransfers); a child not yet created counts too.
fn transferring(phase: Option<UpgradePhase>) -> bool {
    matches!(
        phase,
        None | Some(
            UpgradePhase::Pending
                | UpgradePhase::Resolving
                | UpgradePhase::Transferring
                | UpgradePhase::TransferInterrupted
                | UpgradePhase::Validating
        )
    )
}

fn parse_phase(s: &str) -> Option<UpgradePhase> {
    UpgradePhase::ALL.into_iter().find(|p| p.as_str() == s)
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

fn ts(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

/// How a soaking target's device reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Healthy,
    /// No reading newer than maxObservationAgeSeconds.
    Stale,
    NotReady(String),
    /// Fails the soak: a wrong version or a boot after the child ended.
    Broken(String),
}

struct Ctx<'a> {
    spec: &'a IOSXESoftwareRolloutSpec,
    obs: Observation<'a>,
    now: Timestamp,
    resumed_at: Option<Timestamp>,
}

impl Ctx<'_> {
    /// A device whose child succeeded: the child's verification is a
    /// reading taken at its completion; a device reading counts only when
    /// it is strictly newer (times are whole seconds on the wire).
    fn health(&self, device: &str, child: &ChildObs) -> Health {
        let plan = &self.spec.plan;
        let max_age = secs(plan.health.max_observation_age_seconds);
        let completed = child.completion_time.unwrap_or(self.now);
        let Some(dev) = self.obs.devices.get(device) else {
            return Health::NotReady("its CiscoDevice is gone".into());
        };
        let fresh = dev.last_seen.filter(|t| *t > completed);
        let Some(seen) = fresh else {
            return if age(self.now, completed) <= max_age {
                Health::Healthy
            } else {
                Health::Stale
            };
        };
        if dev.phase != Some(DevicePhase::Ready) {
            let phase = dev
                .phase
                .map_or("no phase".to_owned(), |p| format!("{p:?}"));
            return Health::NotReady(format!("CiscoDevice is {phase}"));
        }
        if plan.strategy != Strategy::NoReboot {
            match &dev.running_version {
                Some(v) if version_matches(&plan.target_version, v) => {}
                Some(v) => {
                    return Health::Broken(format!(
                        "runs {v}, not {} (VersionMismatch)",
                        plan.target_version
                    ));
                }
                None => return Health::Stale,
            }
        }
        let since = self.resumed_at.map_or(completed, |r| r.max(completed));
        if let Some(boot) = dev.boot_time.filter(|b| *b > since) {
            return Health::Broken(format!(
                "booted at {boot}, after its upgrade finished at {completed} (UnexpectedReboot)"
            ));
        }
        if age(self.now, seen) > max_age {
            Health::Stale
        } else {
            Health::Healthy
        }
    }

    /// Counts against maxUnavailable for a target not in progress: its
    /// device is not Ready, unless that reading is older than its
    /// succeeded child's verification.
    fn unavailable_outside(&self, device: &str) -> bool {
        match self.obs.children.get(device) {
            Some(c) if c.phase == Some(UpgradePhase::Succeeded) => {
                matches!(self.health(device, c), Health::NotReady(_))
            }
            _ => self
                .obs
                .devices
                .get(device)
                .is_some_and(|d| d.phase.is_some_and(|p| p != DevicePhase::Ready)),
        }
    }
}

fn age(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

/// What one decision builds: the next status, the actions to run after it
/// is written, and the Events to publish.
struct Draft {
    s: IOSXESoftwareRolloutStatus,
    actions: Vec<Action>,
    notes: Vec<Note>,
}

impl Draft {
    fn note(&mut self, warning: bool, reason: RolloutReason, action: String, message: String) {
        self.notes.push(Note {
            warning,
            reason,
            action,
            message,
        });
    }
}

/// How the current wave stands after the soak rules ran.
#[derive(Default)]
struct WaveState {
    /// Every child of the current wave ended; its soak is running.
    soaking: bool,
    /// A soak reading that halts the campaign (device and what).
    broken: Option<String>,
    /// Why nothing moves (reason, message).
    wait: Option<(RolloutReason, String)>,
    /// When to look again, if sooner than [`RECHECK`].
    requeue: Option<Duration>,
}

/// The next status, actions and Events of a campaign whose plan is frozen.
pub fn step(
    spec: &IOSXESoftwareRolloutSpec,
    generation: Option<i64>,
    previous: &IOSXESoftwareRolloutStatus,
    obs: Observation<'_>,
    now: Timestamp,
) -> Decision {
    if previous.phase.is_some_and(RolloutPhase::is_terminal) {
        return Decision {
            status: previous.clone(),
            actions: vec![],
            notes: vec![],
            requeue: None,
        };
    }
    let plan = &spec.plan;
    let ctl = &spec.control;
    let mut d = Draft {
        s: previous.clone(),
        actions: Vec::new(),
        notes: Vec::new(),
    };
    let wave_of: HashMap<&str, usize> = obs.plan.targets().map(|(w, d)| (d, w)).collect();
    let resumed_from_halt = apply_control(&mut d, ctl, now);
    let ctx = Ctx {
        spec,
        obs,
        now,
        resumed_at: ts(&d.s.control.resumed_at),
    };
    let newly_failed = track_children(&mut d, &obs, ctl, &wave_of);
    let mut counts = tally(&mut d.s, &obs, ctl, &wave_of);
    if resumed_from_halt {
        // The failures so far are accepted; the policy counts from here.
        d.s.control.accepted_failures = counts.failed;
    }
    if ctl.cancel {
        return cancel(previous, d, &obs, ctl, counts, generation, now);
    }
    let failed_since = counts.failed - d.s.control.accepted_failures;
    halt_on_failures(
        &mut d,
        &obs,
        ctl,
        plan,
        failed_since,
        &newly_failed,
        counts.failed,
    );
    let wave = soak_waves(&ctx, &mut d);

    // Admission into the current wave.
    let waves = &obs.plan.waves;
    let halted = d.s.control.halt_revision.is_some();
    let canary_paused = d.s.control.canary_pause_revision.is_some();
    let awaiting_approval = plan.require_approval
        && spec.approval.as_ref().map(|a| a.plan_hash.as_str()) != Some(obs.plan_hash);
    let window = plan.maintenance_window.as_ref();
    let not_before = window
        .and_then(|w| ts(&w.not_before))
        .filter(|nb| now < *nb);
    let after_window = window
        .and_then(|w| ts(&w.not_after))
        .is_some_and(|na| now > na);
    let mut wait = wave.wait;
    let mut admitted = 0;
    let mut held: Option<String> = None;
    if let Some(cur) = d.s.current_wave.clone()
        && !wave.soaking
        && !halted
        && !ctl.pause
        && !canary_paused
        && !awaiting_approval
        && not_before.is_none()
        && !after_window
    {
        let w = &waves[cur.index as usize];
        let (blocked, n) = admit(&ctx, &mut d, &w.devices, &w.name);
        admitted = n;
        if n == 0 {
            wait = blocked.map(|why| (R::WaitingForBudget, why));
        } else {
            held = blocked;
        }
    }
    recreate_missing(&mut d, &obs, &wave_of);
    if admitted > 0 && d.s.start_time.is_none() {
        d.s.start_time = Some(Time(now));
    }
    counts.in_progress = d.s.in_progress.len() as i32;
    counts.pending -= admitted as i32;
    d.s.counts = counts;

    // Phase, in order of precedence.
    let s = &d.s;
    let cur = s
        .current_wave
        .as_ref()
        .map_or_else(String::new, |w| w.name.clone());
    let mut requeue = Some(wave.requeue.unwrap_or(RECHECK));
    let (phase, reason, message) = if s.completed_waves as usize >= waves.len()
        && s.in_progress.is_empty()
    {
        let (phase, reason, msg) = if s.counts.failed == 0 {
            (
                RolloutPhase::Succeeded,
                R::Succeeded,
                format!(
                    "all {} targets run {}",
                    s.counts.succeeded, plan.target_version
                ),
            )
        } else {
            (
                RolloutPhase::Failed,
                R::TargetsFailed,
                format!(
                    "every wave ran: {} upgraded, {} failed ({})",
                    s.counts.succeeded,
                    s.counts.failed,
                    list_failed(s)
                ),
            )
        };
        finish(&mut d.s, phase, reason, &msg, generation, now);
        return decided(previous, d, None);
    } else if halted {
        let why = wave.broken.unwrap_or_else(|| {
            format!(
                "{failed_since} failed target(s) since the last resume (failurePolicy.maxFailedTargets {}): {}",
                plan.failure_policy.max_failed_targets,
                list_failed(s)
            )
        });
        (
            RolloutPhase::Halted,
            R::Halted,
            format!(
                "{why}. Nothing new starts; {} running child(ren) finish. To go on, raise spec.control.revision with pause: false (accepts the failures so far); to stop, set spec.control.cancel: true",
                s.in_progress.len()
            ),
        )
    } else if ctl.pause {
        (
            RolloutPhase::Paused,
            R::PausedByControl,
            format!(
                "paused at control revision {}{}; {} running child(ren) finish. Resume: raise spec.control.revision with pause: false",
                ctl.revision,
                ctl.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                s.in_progress.len()
            ),
        )
    } else if canary_paused {
        (
            RolloutPhase::Paused,
            R::CanaryCompleted,
            format!(
                "the canaries passed ({} upgraded); paused by pauseAfterCanary. Resume: raise spec.control.revision above {} with pause: false",
                s.counts.succeeded, ctl.revision
            ),
        )
    } else if awaiting_approval {
        requeue = None;
        (
            RolloutPhase::AwaitingApproval,
            R::AwaitingApproval,
            format!(
                "plan frozen ({} targets in {} waves); approve it with spec.approval.planHash: {}",
                s.counts.planned,
                waves.len(),
                obs.plan_hash
            ),
        )
    } else if after_window && s.in_progress.is_empty() {
        let msg = format!(
            "the maintenance window closed with {} target(s) not started ({} upgraded, {} failed)",
            s.counts.pending, s.counts.succeeded, s.counts.failed
        );
        d.s.counts.cancelled += d.s.counts.pending;
        d.s.counts.pending = 0;
        finish(
            &mut d.s,
            RolloutPhase::Failed,
            R::MaintenanceWindowExpired,
            &msg,
            generation,
            now,
        );
        return decided(previous, d, None);
    } else if after_window {
        (
            RolloutPhase::Executing,
            R::MaintenanceWindowClosing,
            format!(
                "the maintenance window closed: nothing new starts; {} running child(ren) finish",
                s.in_progress.len()
            ),
        )
    } else if let Some(nb) = not_before {
        requeue = Some(age(nb, now).min(RECHECK).max(Duration::from_millis(200)));
        (
            RolloutPhase::Executing,
            R::WaitingForWindow,
            format!("waiting for the maintenance window to open at {nb}"),
        )
    } else if wave.soaking {
        let (reason, msg) = wait.unwrap_or((R::Soaking, String::from("soaking")));
        (RolloutPhase::Soaking, reason, msg)
    } else if let Some((reason, msg)) = wait {
        (RolloutPhase::Executing, reason, format!("{cur}: {msg}"))
    } else {
        (
            RolloutPhase::Executing,
            R::Progressing,
            format!(
                "{cur}: {} in progress, {} upgraded, {} failed, {} not started{}",
                s.counts.in_progress,
                s.counts.succeeded,
                s.counts.failed,
                s.counts.pending,
                held.map(|h| format!("; held back: {h}"))
                    .unwrap_or_default()
            ),
        )
    };
    set_phase(&mut d.s, phase, reason, &message, generation, now);
    decided(previous, d, requeue)
}

/// Acts on a larger control revision without pause or cancel: it resumes a
/// halted campaign and one paused after its canaries. Whether it resumed a
/// halt.
fn apply_control(d: &mut Draft, ctl: &RolloutControl, now: Timestamp) -> bool {
    let resumed = ctl.revision > d.s.control.observed_revision && !ctl.pause && !ctl.cancel;
    let from_halt = resumed && d.s.control.halt_revision.is_some_and(|r| ctl.revision > r);
    if from_halt {
        d.s.control.halt_revision = None;
        d.s.control.resumed_at = Some(Time(now));
        let by = ctl
            .requested_by
            .as_deref()
            .map(|b| format!(" (requested by {b})"))
            .unwrap_or_default();
        d.note(
            false,
            R::Resumed,
            format!("Resume{}", ctl.revision),
            format!(
                "control revision {} resumed the halted campaign{by}",
                ctl.revision
            ),
        );
    }
    if resumed
        && d.s
            .control
            .canary_pause_revision
            .is_some_and(|r| ctl.revision > r)
    {
        d.s.control.canary_pause_revision = None;
        d.note(
            false,
            R::Resumed,
            format!("Resume{}", ctl.revision),
            format!(
                "control revision {} resumed the campaign after its canaries",
                ctl.revision
            ),
        );
    }
    d.s.control.observed_revision = ctl.revision;
    from_halt
}

/// Brings `inProgress` up to date with the children: seen children are
/// marked observed with their phase, ended ones leave (a failure raises a
/// `TargetFailed` Event), an observed one that vanished is lost, a running
/// child that is not listed is adopted. The devices that failed now.
fn track_children(
    d: &mut Draft,
    obs: &Observation<'_>,
    ctl: &RolloutControl,
    wave_of: &HashMap<&str, usize>,
) -> Vec<String> {
    let mut failed_now: Vec<(String, String)> = Vec::new();
    let mut in_progress: Vec<TargetProgress> = Vec::with_capacity(d.s.in_progress.len());
    let listed: HashSet<String> = d.s.in_progress.iter().map(|t| t.device.clone()).collect();
    for mut t in std::mem::take(&mut d.s.in_progress) {
        match obs.children.get(&t.device) {
            Some(c) => {
                t.observed = true;
                t.phase = c.phase.map(|p| p.as_str().to_owned());
                if !c.phase.is_some_and(UpgradePhase::is_terminal) {
                    in_progress.push(t);
                } else if c.phase != Some(UpgradePhase::Succeeded)
                    && !(ctl.cancel && c.phase == Some(UpgradePhase::Cancelled))
                {
                    let reason = c
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    let phase = c.phase.map_or("", UpgradePhase::as_str);
                    failed_now.push((
                        t.device.clone(),
                        format!("{} ({}) ended {phase}{reason}", t.device, c.name),
                    ));
                }
            }
            None if t.observed => {
                if !ctl.cancel && !d.s.lost_targets.contains(&t.device) {
                    failed_now.push((
                        t.device.clone(),
                        format!(
                            "{} ({}) was deleted while it ran; the target is not started again",
                            t.device, t.upgrade
                        ),
                    ));
                    d.s.lost_targets.push(t.device.clone());
                }
            }
            None => in_progress.push(t),
        }
    }
    // A running child that is not listed (its listing was lost) is adopted,
    // so it counts against the budgets.
    let mut adopted: Vec<(&String, &ChildObs)> = obs
        .children
        .iter()
        .filter(|(dev, c)| {
            !listed.contains(*dev)
                && wave_of.contains_key(dev.as_str())
                && !c.phase.is_some_and(UpgradePhase::is_terminal)
        })
        .collect();
    adopted.sort_by(|a, b| a.0.cmp(b.0));
    in_progress.extend(adopted.into_iter().map(|(dev, c)| TargetProgress {
        device: dev.clone(),
        upgrade: c.name.clone(),
        phase: c.phase.map(|p| p.as_str().to_owned()),
        observed: true,
    }));
    d.s.in_progress = in_progress;
    for (device, message) in &failed_now {
        d.note(
            true,
            R::TargetFailed,
            format!("Upgrade-{device}"),
            message.clone(),
        );
    }
    failed_now.into_iter().map(|(dev, _)| dev).collect()
}

/// Counts from the children (the per-device record) and the lost list, and
/// the first failed targets into the status.
fn tally(
    s: &mut IOSXESoftwareRolloutStatus,
    obs: &Observation<'_>,
    ctl: &RolloutControl,
    wave_of: &HashMap<&str, usize>,
) -> RolloutCounts {
    let mut counts = RolloutCounts {
        planned: obs.plan.target_count() as i32,
        ..RolloutCounts::default()
    };
    let mut failed: Vec<FailedTarget> = Vec::new();
    let mut ended = 0;
    for (device, c) in obs.children {
        if !wave_of.contains_key(device.as_str()) {
            continue;
        }
        match c.phase {
            Some(UpgradePhase::Succeeded) => counts.succeeded += 1,
            Some(UpgradePhase::Cancelled) if ctl.cancel => counts.cancelled += 1,
            Some(p) if p.is_terminal() => failed.push(FailedTarget {
                device: device.clone(),
                upgrade: c.name.clone(),
                phase: p.as_str().to_owned(),
                reason: c.reason.clone(),
            }),
            _ => continue,
        }
        ended += 1;
    }
    failed.extend(s.lost_targets.iter().map(|device| FailedTarget {
        device: device.clone(),
        upgrade: (obs.child_name)(device),
        phase: "Deleted".into(),
        reason: Some(R::UpgradeDeleted.into()),
    }));
    failed.sort_by(|a, b| a.device.cmp(&b.device));
    counts.failed = failed.len() as i32;
    failed.truncate(MAX_LISTED_FAILURES);
    s.failed_targets = failed;
    counts.in_progress = s.in_progress.len() as i32;
    let started = ended + s.in_progress.len() + s.lost_targets.len();
    counts.pending = obs.plan.target_count().saturating_sub(started) as i32;
    counts
}

/// Cancelling: children before Activating are deleted (their own finalizer
/// stops them safely), the others finish; Cancelled once none is left.
fn cancel(
    previous: &IOSXESoftwareRolloutStatus,
    mut d: Draft,
    obs: &Observation<'_>,
    ctl: &RolloutControl,
    mut counts: RolloutCounts,
    generation: Option<i64>,
    now: Timestamp,
) -> Decision {
    let mut deleting = 0;
    for t in &d.s.in_progress {
        let child = obs.children.get(&t.device);
        let phase = t.phase.as_deref().and_then(parse_phase);
        // A target listed but not seen yet may have a child the cache has
        // not shown: delete by name (NotFound is success).
        let unseen = !t.observed && child.is_none();
        if unseen || (child.is_some_and(|c| !c.deleting) && transferring(phase)) {
            d.actions.push(Action::DeleteChild {
                name: t.upgrade.clone(),
            });
            deleting += 1;
        }
    }
    let listed = d.s.in_progress.len();
    d.s.in_progress
        .retain(|t| t.observed || obs.children.contains_key(&t.device));
    counts.in_progress = d.s.in_progress.len() as i32;
    counts.cancelled += counts.pending + (listed - d.s.in_progress.len()) as i32;
    counts.pending = 0;
    d.s.counts = counts;
    let by = ctl
        .requested_by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    if d.s.in_progress.is_empty() {
        let c = &d.s.counts;
        let msg = format!(
            "cancelled{by} at control revision {}: {} upgraded, {} failed, {} not upgraded",
            ctl.revision, c.succeeded, c.failed, c.cancelled
        );
        finish(
            &mut d.s,
            RolloutPhase::Cancelled,
            R::Cancelled,
            &msg,
            generation,
            now,
        );
        return decided(previous, d, None);
    }
    let msg = format!(
        "cancelling{by}: {deleting} children before Activating are being deleted; {} past it finish first",
        d.s.in_progress.len().saturating_sub(deleting)
    );
    set_phase(
        &mut d.s,
        RolloutPhase::Cancelling,
        R::Cancelling,
        &msg,
        generation,
        now,
    );
    decided(previous, d, Some(RECHECK))
}

/// Halts when the failures since the last resume reach the policy, or on
/// any failure while a canary group is current (canary groups run first, so
/// a failure then is a canary's).
fn halt_on_failures(
    d: &mut Draft,
    obs: &Observation<'_>,
    ctl: &RolloutControl,
    plan: &crate::crd::rollout::RolloutPlan,
    failed_since: i32,
    failed_now: &[String],
    failed_total: i32,
) {
    let max = plan.failure_policy.max_failed_targets;
    let canary = obs
        .plan
        .waves
        .get(d.s.completed_waves.max(0) as usize)
        .is_some_and(|w| w.canary);
    if d.s.control.halt_revision.is_some() || failed_since <= 0 {
        return;
    }
    if failed_since < max && !canary {
        return;
    }
    d.s.control.halt_revision = Some(ctl.revision);
    let why = if failed_since < max {
        "a canary failed".to_owned()
    } else {
        format!("{failed_since} failed target(s) reached failurePolicy.maxFailedTargets {max}")
    };
    let names = if failed_now.is_empty() {
        String::new()
    } else {
        format!(" ({})", failed_now.join(", "))
    };
    d.note(
        true,
        R::Halted,
        format!("Halt{failed_total}"),
        format!("halted: {why}{names}"),
    );
}

/// Runs the soak of every wave whose children all ended, from the current
/// one on: a wave that passed moves the campaign to the next (and sets the
/// pause after the last canary group); the first that has not passed is
/// the current wave.
fn soak_waves(ctx: &Ctx<'_>, d: &mut Draft) -> WaveState {
    let plan = &ctx.spec.plan;
    let ctl = &ctx.spec.control;
    let (obs, now) = (&ctx.obs, ctx.now);
    let waves = &obs.plan.waves;
    let mut out = WaveState::default();
    loop {
        let w = d.s.completed_waves.max(0) as usize;
        let Some(wave) = waves.get(w) else {
            d.s.current_wave = None;
            return out;
        };
        let mut current =
            d.s.current_wave
                .take()
                .filter(|c| c.index as usize == w)
                .unwrap_or_else(|| WaveStatus {
                    index: w as i32,
                    name: wave.name.clone(),
                    size: wave.devices.len() as i32,
                    soak_started_at: None,
                });
        let lost: HashSet<&str> = d.s.lost_targets.iter().map(String::as_str).collect();
        let all_ended = wave.devices.iter().all(|dev| {
            lost.contains(dev.as_str())
                || obs
                    .children
                    .get(dev)
                    .is_some_and(|c| c.phase.is_some_and(UpgradePhase::is_terminal))
        });
        if !all_ended {
            d.s.current_wave = Some(current);
            return out;
        }
        // The soak counts from the last child's end; a wave with no
        // upgraded device has nothing to watch.
        let upgraded: Vec<(&String, &ChildObs)> = wave
            .devices
            .iter()
            .filter_map(|dev| obs.children.get(dev).map(|c| (dev, c)))
            .filter(|(_, c)| c.phase == Some(UpgradePhase::Succeeded))
            .collect();
        let soak = if upgraded.is_empty() {
            Duration::ZERO
        } else if wave.canary {
            secs(plan.health.canary_soak_seconds)
        } else {
            secs(plan.health.wave_soak_seconds)
        };
        let last_end = wave
            .devices
            .iter()
            .filter_map(|dev| obs.children.get(dev)?.completion_time)
            .max()
            .unwrap_or(now)
            .min(now);
        let (mut not_ready, mut stale) = (None, None);
        for (dev, c) in upgraded {
            match ctx.health(dev, c) {
                Health::Healthy => {}
                Health::Stale => stale = stale.or(Some(dev.clone())),
                Health::NotReady(why) => not_ready = not_ready.or(Some(format!("{dev}: {why}"))),
                Health::Broken(why) => out.broken = out.broken.or(Some(format!("{dev} {why}"))),
            }
        }
        d.s.current_wave = Some(current.clone());
        if let Some(why) = &out.broken {
            if d.s.control.halt_revision.is_none() {
                d.s.control.halt_revision = Some(ctl.revision);
                d.note(
                    true,
                    R::SoakFailed,
                    format!("Soak-{}", wave.name),
                    format!("halted: during the soak of {}, {why}", wave.name),
                );
            }
            return out;
        }
        out.soaking = true;
        if let Some(why) = not_ready {
            current.soak_started_at = Some(Time(now));
            d.s.current_wave = Some(current);
            out.wait = Some((
                R::SoakRestarted,
                format!("soak of {} restarted: {why}", wave.name),
            ));
            out.requeue = Some(soak.max(Duration::from_secs(1)).min(RECHECK));
            return out;
        }
        let started_at = ts(&current.soak_started_at).unwrap_or(last_end);
        current.soak_started_at = Some(Time(started_at));
        d.s.current_wave = Some(current);
        let elapsed = age(now, started_at);
        if elapsed < soak {
            let left = soak - elapsed;
            out.wait = Some((
                R::Soaking,
                format!(
                    "{} ended; soaking for {}s more ({}s in all)",
                    wave.name,
                    left.as_secs(),
                    soak.as_secs()
                ),
            ));
            out.requeue = Some(left.min(RECHECK).max(Duration::from_millis(200)));
            return out;
        }
        if let Some(dev) = stale {
            out.wait = Some((
                R::WaitingForHealthReading,
                format!(
                    "soak of {} over; waiting for a reading of {dev} newer than {}s",
                    wave.name, plan.health.max_observation_age_seconds
                ),
            ));
            return out;
        }
        // The wave passed.
        out.soaking = false;
        d.s.completed_waves += 1;
        d.s.current_wave = None;
        let done = d.s.completed_waves;
        d.note(
            false,
            R::WavePassed,
            format!("Wave-{}", wave.name),
            format!(
                "{} passed its {}s soak ({done} of {} waves done)",
                wave.name,
                soak.as_secs(),
                waves.len()
            ),
        );
        let last_canary = wave.canary && waves.get(w + 1).is_some_and(|n| !n.canary);
        if last_canary && plan.pause_after_canary {
            d.s.control.canary_pause_revision = Some(ctl.revision);
        }
    }
}

/// Listed targets whose child is not there yet are created (again: the
/// deterministic name makes it idempotent), e.g. after a controller was
/// killed between the status write and the create.
fn recreate_missing(d: &mut Draft, obs: &Observation<'_>, wave_of: &HashMap<&str, usize>) {
    let missing: Vec<Action> =
        d.s.in_progress
            .iter()
            .filter(|t| !t.observed && !obs.children.contains_key(&t.device))
            .filter(|t| {
                !d.actions
                    .iter()
                    .any(|a| matches!(a, Action::CreateChild { device, .. } if device == &t.device))
            })
            .map(|t| Action::CreateChild {
                device: t.device.clone(),
                wave: wave_of
                    .get(t.device.as_str())
                    .map_or_else(String::new, |&w| obs.plan.waves[w].name.clone()),
            })
            .collect();
    d.actions.extend(missing);
}

/// Admits the wave's next targets while every budget has room. Returns why
/// the first target that did not fit was held back, and how many started.
fn admit(
    ctx: &Ctx<'_>,
    d: &mut Draft,
    wave: &[String],
    wave_name: &str,
) -> (Option<String>, usize) {
    let Draft { s, actions, .. } = d;
    let plan = &ctx.spec.plan;
    let budgets = &plan.budgets;
    let topo = &ctx.obs.plan.topology;
    let domains = &budgets.domains;
    let in_flight: HashSet<String> = s.in_progress.iter().map(|t| t.device.clone()).collect();
    let lost: HashSet<String> = s.lost_targets.iter().cloned().collect();

    // Unavailable and transferring, globally and per domain value.
    let mut unavailable = 0usize;
    let mut transfers = 0usize;
    let mut dom_unavail: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); domains.len()];
    let mut dom_transfers: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); domains.len()];
    let values = |d: &str| topo.get(d);
    for t in &s.in_progress {
        unavailable += 1;
        let tr = transferring(t.phase.as_deref().and_then(parse_phase));
        transfers += usize::from(tr);
        if let Some(v) = values(&t.device) {
            for (i, value) in v.iter().enumerate() {
                *dom_unavail[i].entry(value).or_default() += 1;
                if tr {
                    *dom_transfers[i].entry(value).or_default() += 1;
                }
            }
        }
    }
    let mut down: HashSet<&str> = HashSet::new();
    for (_, d) in ctx.obs.plan.targets() {
        if !in_flight.contains(d) && ctx.unavailable_outside(d) {
            down.insert(d);
            unavailable += 1;
            if let Some(v) = values(d) {
                for (i, value) in v.iter().enumerate() {
                    *dom_unavail[i].entry(value).or_default() += 1;
                }
            }
        }
    }

    let max_unavail = budgets.max_unavailable.max(1) as usize;
    let max_transfers = budgets.max_concurrent_transfers.max(1) as usize;
    let mut blocked: Option<String> = None;
    let mut admitted = 0;
    let mut block = |why: String| {
        if blocked.is_none() {
            blocked = Some(why);
        }
    };
    for d in wave {
        if in_flight.contains(d) || lost.contains(d) || ctx.obs.children.contains_key(d) {
            continue;
        }
        // A target that is itself down does not take more of the budget
        // by being upgraded.
        let own = usize::from(down.contains(d.as_str()));
        if unavailable - own + 1 > max_unavail {
            block(format!(
                "maxUnavailable {max_unavail} is used ({} in progress, {} not Ready)",
                s.in_progress.len(),
                down.len()
            ));
            break;
        }
        if transfers + 1 > max_transfers {
            block(format!("maxConcurrentTransfers {max_transfers} is used"));
            break;
        }
        let v = values(d);
        let mut fits = true;
        if let Some(v) = v {
            'domains: for (i, dom) in domains.iter().enumerate() {
                let value = v[i].as_str();
                let limits = [
                    (
                        dom_unavail[i].get(value).copied().unwrap_or(0) - own,
                        dom.max_unavailable,
                        "unavailable",
                        "maxUnavailable",
                    ),
                    (
                        dom_transfers[i].get(value).copied().unwrap_or(0),
                        dom.max_concurrent_transfers,
                        "transferring",
                        "maxConcurrentTransfers",
                    ),
                ];
                for (used, limit, what, field) in limits {
                    if let Some(m) = limit
                        && used + 1 > m as usize
                    {
                        block(format!(
                            "{}={value} has {used} {what} ({field} {m})",
                            dom.topology_key
                        ));
                        fits = false;
                        break 'domains;
                    }
                }
            }
        }
        if !fits {
            continue;
        }
        unavailable += 1 - own;
        transfers += 1;
        if let Some(v) = v {
            for (i, value) in v.iter().enumerate() {
                if own == 0 {
                    *dom_unavail[i].entry(value).or_default() += 1;
                }
                *dom_transfers[i].entry(value).or_default() += 1;
            }
        }
        s.in_progress.push(TargetProgress {
            device: d.clone(),
            upgrade: (ctx.obs.child_name)(d),
            phase: None,
            observed: false,
        });
        actions.push(Action::CreateChild {
            device: d.clone(),
            wave: wave_name.to_owned(),
        });
        admitted += 1;
    }
    (blocked, admitted)
}

fn list_failed(s: &IOSXESoftwareRolloutStatus) -> String {
    let mut out: Vec<String> = s
        .failed_targets
        .iter()
        .map(|f| {
            format!(
                "{} {}{}",
                f.device,
                f.phase,
                f.reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let more = s.counts.failed as usize - s.failed_targets.len().min(s.counts.failed as usize);
    if more > 0 {
        out.push(format!("and {more} more"));
    }
    out.join(", ")
}

fn set_phase(
    s: &mut IOSXESoftwareRolloutStatus,
    phase: RolloutPhase,
    reason: RolloutReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    s.phase = Some(phase);
    s.reason = Some(reason.into());
    s.message = Some(crate::conditions::truncate_utf8(message, 1024).to_owned());
    s.observed_generation = generation;
    let progressing = matches!(
        phase,
        RolloutPhase::Executing | RolloutPhase::Soaking | RolloutPhase::Cancelling
    );
    merge(
        &mut s.conditions,
        DesiredCondition::new(
            conditions::PROGRESSING,
            ConditionStatus::from(progressing),
            reason,
            message,
        ),
        generation,
        now,
    );
    merge(
        &mut s.conditions,
        DesiredCondition::new(
            conditions::READY,
            ConditionStatus::from(phase == RolloutPhase::Succeeded),
            reason,
            message,
        ),
        generation,
        now,
    );
}

fn finish(
    s: &mut IOSXESoftwareRolloutStatus,
    phase: RolloutPhase,
    reason: RolloutReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_phase(s, phase, reason, message, generation, now);
    s.current_wave = None;
    s.completion_time.get_or_insert(Time(now));
}

fn decided(
    previous: &IOSXESoftwareRolloutStatus,
    mut d: Draft,
    requeue: Option<Duration>,
) -> Decision {
    if previous.phase != d.s.phase {
        let from = previous.phase.map_or("None", RolloutPhase::as_str);
        let to = d.s.phase.map_or("None", RolloutPhase::as_str);
        // A first phase has no arrow: there was no phase to come from.
        let message = match previous.phase {
            Some(p) => format!(
                "{} → {to}: {}",
                p.as_str(),
                d.s.message.as_deref().unwrap_or_default()
            ),
            None => format!("{to}: {}", d.s.message.as_deref().unwrap_or_default()),
        };
        let warning = matches!(d.s.phase, Some(RolloutPhase::Halted | RolloutPhase::Failed));
        d.note(
            warning,
            R::PhaseTransition,
            format!("{from}To{to}"),
            message,
        );
    }
    Decision {
        status: d.s,
        actions: d.actions,
        notes: d.notes,
        requeue,
    }
}

#[cfg(test)]
mod tests;
