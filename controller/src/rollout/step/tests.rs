//! Drives [`step`] through a simulated world: the children the decisions
//! create move through their phases as the test says, the devices report
//! what the test says, and time moves only when the test moves it.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;

use super::*;
use crate::crd::IOSXESoftwareRolloutSpec;
use crate::crd::rollout::{Approval, DomainBudget, RolloutWindow};
use crate::rollout::plan::{DeviceInfo, freeze};

const NEW: &str = "17.18.02.0.4112";
const HASH: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

struct World {
    spec: IOSXESoftwareRolloutSpec,
    status: IOSXESoftwareRolloutStatus,
    plan: Plan,
    children: HashMap<String, ChildObs>,
    devices: HashMap<String, DeviceObs>,
    now: Timestamp,
    /// Every child ever created, in order.
    created: Vec<String>,
    deleted: Vec<String>,
    notes: Vec<Note>,
}

/// The base campaign with `extra` (plan keys, two-space indented) laid
/// over it, key by key.
fn spec(extra: &str) -> IOSXESoftwareRolloutSpec {
    let mut plan: serde_yaml::Mapping = serde_yaml::from_str(
        r#"
targets: { allowAll: true }
source: { url: "http://127.0.0.1/x.bin", sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
targetVersion: "17.18.02"
canaries: [{ name: first, devices: [sw-0] }]
health: { canarySoakSeconds: 60, waveSoakSeconds: 30 }
"#,
    )
    .unwrap();
    let dedented: String = extra
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    if !dedented.trim().is_empty() {
        let over: serde_yaml::Mapping = serde_yaml::from_str(&dedented).unwrap();
        for (k, v) in over {
            plan.insert(k, v);
        }
    }
    let mut spec = serde_yaml::Mapping::new();
    spec.insert("plan".into(), serde_yaml::Value::Mapping(plan));
    serde_yaml::from_value(serde_yaml::Value::Mapping(spec)).unwrap()
}

impl World {
    fn new(spec: IOSXESoftwareRolloutSpec, n: usize, sites: usize) -> Self {
        let infos: Vec<DeviceInfo> = (0..n)
            .map(|i| DeviceInfo {
                name: format!("sw-{i}"),
                labels: [("site".to_owned(), format!("s{}", i % sites))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let plan = freeze(&spec.plan, &infos).unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let devices = infos
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    DeviceObs {
                        phase: Some(DevicePhase::Ready),
                        running_version: Some("17.15.01".into()),
                        boot_time: Some(now - jiff::SignedDuration::from_hours(24)),
                        last_seen: Some(now),
                    },
                )
            })
            .collect();
        Self {
            spec,
            status: IOSXESoftwareRolloutStatus::default(),
            plan,
            children: HashMap::new(),
            devices,
            now,
            created: vec![],
            deleted: vec![],
            notes: vec![],
        }
    }

    fn step(&mut self) -> Decision {
        let name = |d: &str| format!("ro-{d}");
        let d = step(
            &self.spec,
            Some(1),
            &self.status,
            Observation {
                plan: &self.plan,
                plan_hash: HASH,
                children: &self.children,
                devices: &self.devices,
                child_name: &name,
            },
            self.now,
        );
        self.status = d.status.clone();
        for a in &d.actions {
            match a {
                Action::CreateChild { device, .. } => {
                    if !self.children.contains_key(device) {
                        self.created.push(device.clone());
                        self.children.insert(
                            device.clone(),
                            ChildObs {
                                name: name(device),
                                ..ChildObs::default()
                            },
                        );
                    }
                }
                Action::DeleteChild { name } => self.deleted.push(name.clone()),
            }
        }
        self.notes.extend(d.notes.clone());
        d
    }

    fn phase(&self) -> RolloutPhase {
        self.status.phase.unwrap()
    }

    fn running(&self) -> BTreeSet<String> {
        self.status
            .in_progress
            .iter()
            .map(|t| t.device.clone())
            .collect()
    }

    fn set_child(&mut self, device: &str, phase: UpgradePhase) {
        let now = self.now;
        let c = self.children.get_mut(device).expect("child exists");
        c.phase = Some(phase);
        if phase.is_terminal() {
            c.completion_time = Some(now);
            if phase == UpgradePhase::Succeeded {
                let dev = self.devices.get_mut(device).unwrap();
                dev.running_version = Some(NEW.into());
                dev.boot_time = Some(now - jiff::SignedDuration::from_secs(5));
            } else {
                c.reason = Some("VerificationMismatch".into());
            }
        }
    }

    /// Every running child succeeds.
    fn finish_running(&mut self) {
        for d in self.running() {
            self.set_child(&d, UpgradePhase::Succeeded);
        }
    }

    fn advance(&mut self, secs: i64) {
        self.now += jiff::SignedDuration::from_secs(secs);
        for d in self.devices.values_mut() {
            d.last_seen = Some(self.now);
        }
    }

    fn resume(&mut self) {
        self.spec.control.revision += 1;
        self.spec.control.pause = false;
        self.spec.control.requested_by = Some("ops".into());
    }

    fn noted(&self, reason: &str) -> Vec<&str> {
        self.notes
            .iter()
            .filter(|n| n.reason == reason)
            .map(|n| n.message.as_str())
            .collect()
    }
}

#[test]
fn a_canary_then_two_waves_succeed() {
    let mut w = World::new(
        spec("  budgets: { maxUnavailable: 2, maxConcurrentTransfers: 2 }"),
        5,
        1,
    );
    // canary-first [sw-0], wave-1 [sw-1, sw-2], wave-2 [sw-3, sw-4]
    assert_eq!(w.plan.waves.len(), 3);
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::Executing);
    assert_eq!(
        d.actions,
        vec![Action::CreateChild {
            device: "sw-0".into(),
            wave: "canary-first".into()
        }]
    );
    assert_eq!(w.status.counts.in_progress, 1);
    assert_eq!(w.status.counts.pending, 4);
    // Nothing more starts while the canary runs.
    w.set_child("sw-0", UpgradePhase::Transferring);
    assert!(w.step().actions.is_empty());
    assert_eq!(
        w.status.in_progress[0].phase.as_deref(),
        Some("Transferring")
    );
    w.set_child("sw-0", UpgradePhase::Succeeded);
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Soaking);
    assert!(w.running().is_empty());
    w.advance(59);
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Soaking, "{:?}", w.status.message);
    w.advance(2);
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::Paused);
    assert_eq!(w.status.reason.as_deref(), Some("CanaryCompleted"));
    assert!(d.actions.is_empty());
    assert_eq!(w.noted("WavePassed").len(), 1);
    // Still paused on a resync.
    assert!(w.step().actions.is_empty());
    w.resume();
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::Executing);
    assert_eq!(d.actions.len(), 2);
    assert_eq!(w.running(), ["sw-1", "sw-2"].map(String::from).into());
    w.finish_running();
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Soaking);
    w.advance(31);
    w.step();
    assert_eq!(w.running(), ["sw-3", "sw-4"].map(String::from).into());
    w.finish_running();
    w.step();
    w.advance(31);
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::Succeeded, "{:?}", w.status.message);
    assert_eq!(d.requeue, None);
    assert_eq!(w.status.counts.succeeded, 5);
    assert_eq!(w.status.counts.pending, 0);
    assert_eq!(w.status.completed_waves, 3);
    assert_eq!(w.created, ["sw-0", "sw-1", "sw-2", "sw-3", "sw-4"]);
    // Terminal: nothing changes any more.
    let before = w.status.clone();
    w.advance(1000);
    assert_eq!(w.step().status, before);
}

#[test]
fn a_failed_canary_halts_with_the_rest_untouched() {
    let mut w = World::new(
        spec("  pauseAfterCanary: false\n  failurePolicy: { maxFailedTargets: 5 }"),
        4,
        1,
    );
    w.step();
    w.set_child("sw-0", UpgradePhase::RolledBack);
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::Halted);
    assert!(d.actions.is_empty());
    assert_eq!(w.created, ["sw-0"]);
    assert_eq!(w.status.counts.failed, 1);
    assert_eq!(w.status.failed_targets[0].device, "sw-0");
    assert_eq!(w.status.failed_targets[0].phase, "RolledBack");
    let failed = w.noted("TargetFailed");
    assert!(
        failed[0].contains("sw-0") && failed[0].contains("RolledBack"),
        "{failed:?}"
    );
    assert!(w.noted("Halted")[0].contains("a canary failed"));
    assert!(
        w.status
            .message
            .as_deref()
            .unwrap()
            .contains("spec.control.revision")
    );
    // Halted stays halted: time passing starts nothing.
    w.advance(3600);
    assert!(w.step().actions.is_empty());
    assert_eq!(w.phase(), RolloutPhase::Halted);
    // A resume accepts the failure and goes on.
    w.resume();
    w.step();
    assert_eq!(w.status.control.accepted_failures, 1);
    assert_eq!(w.noted("Resumed").len(), 1);
    assert_eq!(w.created, ["sw-0", "sw-1"], "{:?}", w.status.message);
}

#[test]
fn the_failure_policy_tolerates_failures_up_to_its_limit() {
    let mut w = World::new(
        spec(
            "  pauseAfterCanary: false\n  budgets: { maxUnavailable: 3, maxConcurrentTransfers: 3 }\n  failurePolicy: { maxFailedTargets: 2 }",
        ),
        7,
        1,
    );
    w.step();
    w.finish_running();
    w.step();
    w.advance(61);
    w.step();
    assert_eq!(w.running().len(), 3);
    w.set_child("sw-1", UpgradePhase::RebootTimeout);
    w.set_child("sw-2", UpgradePhase::Succeeded);
    w.set_child("sw-3", UpgradePhase::Succeeded);
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Soaking, "one failure is tolerated");
    w.advance(31);
    w.step();
    assert_eq!(w.running().len(), 3);
    w.set_child("sw-4", UpgradePhase::Failed);
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Halted);
    assert_eq!(w.status.counts.failed, 2);
    assert!(w.noted("Halted")[0].contains("2 failed target(s)"));
    // The running ones finish; nothing new starts.
    w.finish_running();
    assert!(w.step().actions.is_empty());
    assert_eq!(w.status.counts.in_progress, 0);
    assert_eq!(w.phase(), RolloutPhase::Halted);
}

#[test]
fn a_domain_budget_never_has_two_of_a_site_in_progress() {
    let mut w = World::new(
        spec(
            "  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0, waveSoakSeconds: 0 }\n  budgets: { maxUnavailable: 4, maxConcurrentTransfers: 4, domains: [{ topologyKey: site, maxUnavailable: 1 }] }",
        ),
        9,
        2,
    );
    let site = |d: &str| w_site(d);
    for _ in 0..40 {
        w.step();
        let running = w.running();
        let sites: BTreeSet<String> = running.iter().map(|d| site(d)).collect();
        assert_eq!(
            sites.len(),
            running.len(),
            "two of a site at once: {running:?}"
        );
        assert!(running.len() <= 2);
        // Children finish one at a time.
        if let Some(d) = running.iter().next() {
            w.set_child(d, UpgradePhase::Succeeded);
        }
        w.advance(1);
        if w.phase() == RolloutPhase::Succeeded {
            break;
        }
    }
    assert_eq!(w.phase(), RolloutPhase::Succeeded, "{:?}", w.status.message);
    assert_eq!(w.created.len(), 9);
}

fn w_site(device: &str) -> String {
    let i: usize = device.trim_start_matches("sw-").parse().unwrap();
    format!("s{}", i % 2)
}

#[test]
fn a_device_that_is_not_ready_takes_its_site_budget() {
    let mut w = World::new(
        spec(
            "  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0, waveSoakSeconds: 0 }\n  budgets: { maxUnavailable: 4, maxConcurrentTransfers: 4, domains: [{ topologyKey: site, maxUnavailable: 1 }] }",
        ),
        5,
        2,
    );
    w.step();
    w.finish_running();
    // sw-3 (site s1, in wave-2) is down: sw-1 (also s1) must wait; sw-2
    // (s0) goes.
    w.devices.get_mut("sw-3").unwrap().phase = Some(DevicePhase::Unreachable);
    w.step();
    assert_eq!(
        w.running(),
        ["sw-2"].map(String::from).into(),
        "{:?}",
        w.status.message
    );
    assert!(
        w.status.message.as_deref().unwrap().contains("site=s1"),
        "{:?}",
        w.status.message
    );
}

#[test]
fn transfers_are_paced_by_max_concurrent_transfers() {
    let mut w = World::new(
        spec(
            "  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0 }\n  budgets: { maxUnavailable: 3, maxConcurrentTransfers: 1 }",
        ),
        4,
        1,
    );
    w.step();
    w.finish_running();
    w.step();
    assert_eq!(w.running().len(), 1);
    w.set_child("sw-1", UpgradePhase::Transferring);
    assert!(w.step().actions.is_empty());
    assert_eq!(w.status.reason.as_deref(), Some("WaitingForBudget"));
    // Past the transfer the next one may start.
    w.set_child("sw-1", UpgradePhase::Activating);
    w.step();
    assert_eq!(w.running().len(), 2);
}

#[test]
fn pause_stops_new_children_and_resume_goes_on() {
    let mut w = World::new(
        spec("  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0 }"),
        3,
        1,
    );
    w.step();
    w.spec.control.revision = 1;
    w.spec.control.pause = true;
    w.spec.control.requested_by = Some("ops".into());
    w.spec.control.reason = Some("change freeze".into());
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Paused);
    assert!(
        w.status
            .message
            .as_deref()
            .unwrap()
            .contains("change freeze")
    );
    w.finish_running();
    w.step();
    w.advance(10);
    assert!(w.step().actions.is_empty());
    assert_eq!(w.created, ["sw-0"]);
    w.resume();
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Executing);
    assert_eq!(w.created, ["sw-0", "sw-1"]);
}

#[test]
fn cancel_deletes_children_before_activating_and_lets_the_others_finish() {
    let mut w = World::new(
        spec(
            "  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0 }\n  budgets: { maxUnavailable: 3, maxConcurrentTransfers: 3 }",
        ),
        5,
        1,
    );
    w.step();
    w.finish_running();
    w.step();
    w.step();
    assert_eq!(w.running().len(), 3);
    w.set_child("sw-1", UpgradePhase::Transferring);
    w.set_child("sw-2", UpgradePhase::AwaitingReachability);
    // sw-3 has no phase yet (just created).
    w.spec.control.revision = 1;
    w.spec.control.cancel = true;
    w.spec.control.requested_by = Some("ops".into());
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::Cancelling);
    assert_eq!(
        d.actions,
        vec![
            Action::DeleteChild {
                name: "ro-sw-1".into()
            },
            Action::DeleteChild {
                name: "ro-sw-3".into()
            },
        ]
    );
    // The deleted children end Cancelled and go; sw-2 finishes.
    w.set_child("sw-1", UpgradePhase::Cancelled);
    w.children.remove("sw-3");
    w.children.get_mut("sw-1").unwrap().deleting = true;
    let d = w.step();
    assert!(
        d.actions.is_empty(),
        "a child being deleted is not deleted again"
    );
    assert_eq!(w.phase(), RolloutPhase::Cancelling);
    w.set_child("sw-2", UpgradePhase::Succeeded);
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Cancelled);
    assert_eq!(w.status.counts.succeeded, 2);
    assert_eq!(w.status.counts.cancelled, 3, "{:?}", w.status.counts);
    assert_eq!(w.status.counts.failed, 0);
    assert_eq!(w.created, ["sw-0", "sw-1", "sw-2", "sw-3"]);
}

#[test]
fn approval_gates_the_first_child_on_the_plan_hash() {
    let mut w = World::new(spec("  requireApproval: true"), 2, 1);
    let d = w.step();
    assert_eq!(w.phase(), RolloutPhase::AwaitingApproval);
    assert!(d.actions.is_empty());
    assert!(w.status.message.as_deref().unwrap().contains(HASH));
    w.spec.approval = Some(Approval {
        plan_hash: "sha256:2222222222222222222222222222222222222222222222222222222222222222".into(),
        approved_by: "lead".into(),
        approved_at: None,
    });
    assert!(
        w.step().actions.is_empty(),
        "another plan's hash approves nothing"
    );
    w.spec.approval.as_mut().unwrap().plan_hash = HASH.into();
    w.step();
    assert_eq!(w.created, ["sw-0"]);
}

#[test]
fn the_soak_restarts_on_not_ready_and_halts_on_a_new_boot_or_wrong_version() {
    let mut w = World::new(spec(""), 3, 1);
    w.step();
    w.finish_running();
    w.step();
    w.advance(40);
    w.devices.get_mut("sw-0").unwrap().phase = Some(DevicePhase::Unreachable);
    w.step();
    assert_eq!(w.status.reason.as_deref(), Some("SoakRestarted"));
    let restarted = w
        .status
        .current_wave
        .as_ref()
        .unwrap()
        .soak_started_at
        .clone();
    assert_eq!(restarted.map(|t| t.0), Some(w.now));
    w.devices.get_mut("sw-0").unwrap().phase = Some(DevicePhase::Ready);
    w.advance(40);
    w.step();
    assert_eq!(
        w.phase(),
        RolloutPhase::Soaking,
        "the soak counts from the restart"
    );
    // A boot after the upgrade finished is not the upgrade's.
    w.devices.get_mut("sw-0").unwrap().boot_time = Some(w.now);
    w.advance(1);
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Halted);
    assert!(
        w.noted("SoakFailed")[0].contains("UnexpectedReboot"),
        "{:?}",
        w.notes
    );

    let mut w = World::new(spec(""), 3, 1);
    w.step();
    w.finish_running();
    w.advance(1);
    w.devices.get_mut("sw-0").unwrap().running_version = Some("17.15.01".into());
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Halted);
    assert!(w.noted("SoakFailed")[0].contains("VersionMismatch"));
}

#[test]
fn a_reading_older_than_the_childs_verification_is_not_held_against_it() {
    let mut w = World::new(
        spec("  pauseAfterCanary: false\n  health: { canarySoakSeconds: 5 }"),
        2,
        1,
    );
    w.step();
    // The device was last probed while the upgrade rebooted it.
    w.devices.get_mut("sw-0").unwrap().phase = Some(DevicePhase::Unreachable);
    w.now += jiff::SignedDuration::from_secs(3);
    w.set_child("sw-0", UpgradePhase::Succeeded);
    w.devices.get_mut("sw-0").unwrap().running_version = Some("17.15.01".into());
    w.now += jiff::SignedDuration::from_secs(6);
    w.step();
    assert_eq!(w.created, ["sw-0", "sw-1"], "{:?}", w.status.message);
}

#[test]
fn a_child_deleted_by_someone_else_fails_its_target_and_is_not_recreated() {
    let mut w = World::new(spec("  failurePolicy: { maxFailedTargets: 3 }"), 2, 1);
    w.step();
    w.step(); // the child is seen
    assert!(w.status.in_progress[0].observed);
    w.children.remove("sw-0");
    let d = w.step();
    assert!(d.actions.is_empty());
    assert_eq!(w.status.lost_targets, ["sw-0"]);
    assert_eq!(w.status.counts.failed, 1);
    assert_eq!(w.phase(), RolloutPhase::Halted, "a canary was lost");
    assert!(w.noted("TargetFailed")[0].contains("deleted"));
    w.step();
    assert_eq!(w.created, ["sw-0"]);
}

#[test]
fn a_listed_target_whose_child_is_missing_is_created_again_not_admitted_twice() {
    // A controller killed between the status write and the create.
    let mut w = World::new(spec("  budgets: { maxUnavailable: 1 }"), 3, 1);
    w.step();
    w.children.clear();
    w.created.clear();
    let d = w.step();
    assert_eq!(
        d.actions,
        vec![Action::CreateChild {
            device: "sw-0".into(),
            wave: "canary-first".into()
        }]
    );
    assert_eq!(w.status.in_progress.len(), 1);
}

#[test]
fn the_maintenance_window_gates_new_children() {
    let mut w = World::new(
        spec("  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0 }"),
        3,
        1,
    );
    let start = w.now;
    w.spec.plan.maintenance_window = Some(RolloutWindow {
        not_before: Some(Time(start + jiff::SignedDuration::from_secs(100))),
        not_after: Some(Time(start + jiff::SignedDuration::from_secs(200))),
    });
    let d = w.step();
    assert!(d.actions.is_empty());
    assert_eq!(w.status.reason.as_deref(), Some("WaitingForWindow"));
    assert!(d.requeue.unwrap() <= RECHECK);
    w.advance(100);
    w.step();
    assert_eq!(w.created, ["sw-0"]);
    w.advance(150);
    w.step();
    assert_eq!(w.status.reason.as_deref(), Some("MaintenanceWindowClosing"));
    w.finish_running();
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Failed);
    assert_eq!(w.status.reason.as_deref(), Some("MaintenanceWindowExpired"));
    assert_eq!(w.status.counts.cancelled, 2);
    assert_eq!(w.created, ["sw-0"]);
}

#[test]
fn status_stays_small_for_a_thousand_targets() {
    let mut w = World::new(
        spec(
            "  targets: { allowAll: true, maxTargets: 1000 }\n  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0, waveSoakSeconds: 0 }\n  budgets: { maxUnavailable: 100, maxConcurrentTransfers: 100 }\n  failurePolicy: { maxFailedTargets: 10000 }",
        ),
        1000,
        10,
    );
    let mut largest = 0;
    for round in 0..200 {
        w.step();
        largest = largest.max(serde_json::to_vec(&w.status).unwrap().len());
        // Every third child fails (not the canary), the rest succeed.
        for (i, d) in w.running().into_iter().enumerate() {
            let phase = if (i + round) % 3 == 1 {
                UpgradePhase::Failed
            } else {
                UpgradePhase::Succeeded
            };
            w.set_child(&d, phase);
        }
        w.advance(1);
        if w.phase().is_terminal() {
            break;
        }
    }
    assert_eq!(w.phase(), RolloutPhase::Failed);
    assert_eq!(w.status.counts.succeeded + w.status.counts.failed, 1000);
    assert_eq!(w.status.failed_targets.len(), MAX_LISTED_FAILURES);
    assert!(largest < 64 * 1024, "status grew to {largest} bytes");
}

#[test]
fn domain_transfer_budgets_pace_each_site() {
    let mut s = spec(
        "  pauseAfterCanary: false\n  health: { canarySoakSeconds: 0 }\n  budgets: { maxUnavailable: 4, maxConcurrentTransfers: 4 }",
    );
    s.plan.budgets.domains = vec![DomainBudget {
        topology_key: "site".into(),
        max_concurrent_transfers: Some(1),
        max_unavailable: None,
    }];
    let mut w = World::new(s, 5, 2);
    w.step();
    w.finish_running();
    w.step();
    // sw-1..sw-4 form one wave (sites s1 s0 s1 s0): one transfer per site.
    assert_eq!(w.running(), ["sw-1", "sw-2"].map(String::from).into());
}

#[test]
fn cancel_deletes_a_child_the_cache_has_not_shown_yet() {
    // Admitted and created, but the cache has not shown the child when the
    // cancel comes: it is deleted by name, not left running.
    let mut w = World::new(spec(""), 2, 1);
    w.step();
    w.children.clear();
    w.spec.control.revision = 1;
    w.spec.control.cancel = true;
    w.spec.control.requested_by = Some("ops".into());
    let d = w.step();
    assert_eq!(
        d.actions,
        vec![Action::DeleteChild {
            name: "ro-sw-0".into()
        }]
    );
    assert_eq!(w.phase(), RolloutPhase::Cancelled);
    assert_eq!(w.status.counts.cancelled, 2);
}
