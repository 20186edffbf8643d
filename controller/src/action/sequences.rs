//! Whole actions through the pure functions, each in a simulated world:
//! the checks, the marker, the device's answer to the one RPC (or none:
//! the controller was killed after the marker), then the readings later
//! reconciles take. The phase sequence of every case is one snapshot, as
//! the upgrade's are; the rules that hold for every kind are rstest cases.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rstest::rstest;
use serde_json::{Value, json};
use tonic::Code;

use super::*;
use crate::client::factory_reset::FactoryResetOutcome;
use crate::client::{ClientError, GnoiService, Timeouts};
use crate::crd::action::{
    Action, ActionKind, ActionPhase, IOSXEOperationalAction, IOSXEOperationalActionSpec,
    IOSXEOperationalActionStatus,
};
use crate::crd::common::DeviceRef;

/// What the one RPC got back.
enum Dispatch {
    /// The device's answer (or the client's error).
    Answer(Result<Answer, ClientError>),
    /// Nothing: the controller was killed between the marker and the
    /// answer's status write.
    Killed,
}

/// A case: the action, the dispatch, and the readings of later reconciles
/// (seconds after startTime; `None`: the device cannot be reached).
struct World {
    action: Value,
    confirm: &'static str,
    dispatch: Dispatch,
    readings: Vec<(u64, Option<Reading>)>,
}

impl World {
    fn new(action: Value, dispatch: Dispatch) -> Self {
        Self {
            action,
            confirm: "sw",
            dispatch,
            readings: Vec::new(),
        }
    }

    fn read(mut self, secs: u64, reading: Option<Reading>) -> Self {
        self.readings.push((secs, reading));
        self
    }
}

const SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn obj(action: &Value, confirm: &str) -> IOSXEOperationalAction {
    let mut o = IOSXEOperationalAction::new(
        "a",
        IOSXEOperationalActionSpec {
            device_ref: DeviceRef::new("sw"),
            confirm: confirm.into(),
            action: serde_json::from_value::<Action>(action.clone()).unwrap(),
        },
    );
    o.metadata.namespace = Some("ns".into());
    o.metadata.uid = Some("u-1".into());
    o.metadata.generation = Some(1);
    o
}

fn reboot() -> Value {
    json!({"kind": "Reboot", "reboot": {}})
}
fn cancel_reboot() -> Value {
    json!({"kind": "CancelReboot", "cancelReboot": {}})
}
fn kill_process() -> Value {
    json!({"kind": "KillProcess", "killProcess": {"name": "nginx", "signal": "HUP"}})
}
fn file_put() -> Value {
    json!({"kind": "FilePut", "filePut": {"path": "flash:/a/b.txt", "configMapName": "c"}})
}
fn file_remove() -> Value {
    json!({"kind": "FileRemove", "fileRemove": {"path": "flash:x"}})
}
fn factory_reset() -> Value {
    json!({"kind": "FactoryReset", "factoryReset": {}})
}

fn accepted() -> Dispatch {
    Dispatch::Answer(Ok(Answer::Accepted(json!({}))))
}
fn refused(service: GnoiService, code: Code) -> Dispatch {
    Dispatch::Answer(Err(ClientError::Rpc {
        service,
        method: "X",
        code,
        message: "refused".into(),
    }))
}
fn cut() -> Dispatch {
    Dispatch::Answer(Err(ClientError::Unavailable {
        message: "connection reset".into(),
        retry_after: None,
    }))
}
fn not_found() -> ClientError {
    ClientError::Rpc {
        service: GnoiService::File,
        method: "Stat",
        code: Code::NotFound,
        message: "no such file".into(),
    }
}

/// The dispatch record the executor writes with the marker (the baseline
/// a device in this world gives: two reboots so far, none pending, the
/// file there).
fn record(kind: ActionKind, req: &Request) -> DispatchRecord {
    DispatchRecord {
        kind: kind.as_str().to_owned(),
        request: req.describe(),
        reboot_count_before: Some(2),
        reboot_active_before: Some(false),
        file_existed_before: Some(true),
        content_bytes: (kind == ActionKind::FilePut).then_some(3),
        content_sha256: (kind == ActionKind::FilePut).then(|| SHA.to_owned()),
    }
}

fn windows(kind: ActionKind) -> Windows {
    Windows {
        settle: settle_time(kind, &Timeouts::default()),
        outcome: outcome_window(kind),
    }
}

fn entry(s: &IOSXEOperationalActionStatus) -> String {
    format!(
        "{}({})",
        s.phase.map_or("None", phase_str),
        s.reason.as_deref().unwrap_or_default()
    )
}

/// Runs a world; the phases (with reasons) in order, then what the step
/// makes of the last status.
fn run(w: World) -> (Vec<String>, ActionStep) {
    let start = Timestamp::from_second(1_766_000_000).unwrap();
    let mut o = obj(&w.action, w.confirm);
    let kind = o.spec.action.kind;
    let generation = o.metadata.generation;
    let mut seq = Vec::new();
    assert_eq!(step(&ActionView::of(&o, true)), ActionStep::Start);
    let prev = IOSXEOperationalActionStatus::default();
    match build_request(&o) {
        Err(r) => {
            let s = rejected_status(&prev, &r, generation, start);
            seq.push(entry(&s));
            o.status = Some(s);
        }
        Ok(req) => {
            // The finalizer is added before the Lease and the marker.
            o.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
            let rec = record(kind, &req);
            let inv = invocation_id(&o);
            let mut s = running_status(&prev, &inv, &rec, generation, start);
            seq.push(entry(&s));
            o.status = Some(s.clone());
            // From the marker on, the action is only ever observed.
            assert_eq!(step(&ActionView::of(&o, true)), ActionStep::Observe);
            if let Dispatch::Answer(a) = w.dispatch {
                s = outcome_status(&s, &interpret(kind, a), false, generation, start);
                seq.push(entry(&s));
            }
            for (secs, reading) in w.readings {
                if s.phase.is_some_and(ActionPhase::is_terminal) {
                    break;
                }
                let seen = match reading {
                    Some(r) => Seen::Read(&rec, r),
                    None => Seen::Unreachable("connection refused".into()),
                };
                let elapsed = Duration::from_secs(secs);
                let outcome = conclude_observed(kind, &inv, seen, elapsed, windows(kind));
                let now = start + SignedDuration::from_secs(secs as i64);
                s = outcome_status(&s, &outcome, true, generation, now);
                seq.push(entry(&s));
            }
            o.status = Some(s);
        }
    }
    (seq, step(&ActionView::of(&o, true)))
}

/// The phase sequence of every case, as one snapshot.
#[test]
fn phase_sequences() {
    let reboot_reading = |active: bool, count: u32| Some(Reading::Reboot(Ok((active, count))));
    let cases: Vec<(&str, World)> = vec![
        ("reboot", World::new(reboot(), accepted())),
        (
            "reboot-refused",
            World::new(
                reboot(),
                refused(GnoiService::System, Code::FailedPrecondition),
            ),
        ),
        (
            "reboot-cut-then-rebooted",
            World::new(reboot(), cut())
                .read(30, None)
                .read(120, reboot_reading(false, 3)),
        ),
        (
            "reboot-killed-then-rebooted",
            World::new(reboot(), Dispatch::Killed).read(200, reboot_reading(false, 3)),
        ),
        (
            "reboot-killed-no-sign-too-early-then-late",
            World::new(reboot(), Dispatch::Killed)
                .read(5, reboot_reading(false, 2))
                .read(200, reboot_reading(false, 2)),
        ),
        (
            "reboot-killed-never-back",
            World::new(reboot(), Dispatch::Killed)
                .read(200, None)
                .read(1900, None),
        ),
        (
            "cancel-reboot-killed-reboot-ran",
            World::new(cancel_reboot(), Dispatch::Killed).read(200, reboot_reading(false, 3)),
        ),
        ("kill-process", World::new(kill_process(), accepted())),
        (
            "kill-process-killed",
            World::new(kill_process(), Dispatch::Killed).read(200, Some(Reading::Nothing)),
        ),
        (
            "file-put-unsupported",
            World::new(
                file_put(),
                Dispatch::Answer(Err(ClientError::ServiceUnsupported {
                    service: GnoiService::File,
                    detail: String::new(),
                })),
            ),
        ),
        (
            "file-put-killed-content-there",
            World::new(file_put(), Dispatch::Killed)
                .read(200, Some(Reading::FileHash(Ok(SHA.into())))),
        ),
        (
            "file-put-killed-file-missing",
            World::new(file_put(), Dispatch::Killed)
                .read(200, Some(Reading::FileHash(Err(not_found())))),
        ),
        (
            "file-remove-killed-file-gone",
            World::new(file_remove(), Dispatch::Killed)
                .read(200, Some(Reading::FileStat(Err(not_found())))),
        ),
        (
            "file-remove-killed-file-still-there",
            World::new(file_remove(), Dispatch::Killed).read(200, Some(Reading::FileStat(Ok(3)))),
        ),
        (
            "factory-reset-os-unsupported",
            World::new(
                factory_reset(),
                Dispatch::Answer(Ok(Answer::FactoryReset(FactoryResetOutcome::Error {
                    factory_os_unsupported: true,
                    zero_fill_unsupported: false,
                    other: false,
                    detail: "no factory image".into(),
                }))),
            ),
        ),
        ("confirm-mismatch", {
            let mut w = World::new(reboot(), accepted());
            w.confirm = "other";
            w
        }),
    ];
    let table: Vec<String> = cases
        .into_iter()
        .map(|(name, w)| {
            let (seq, last) = run(w);
            format!("{name}: {} => {last:?}", seq.join(" > "))
        })
        .collect();
    insta::assert_snapshot!(table.join("\n"));
}

/// Whatever the kind and whatever the device answered, an action that
/// carries the marker is observed and never dispatched again, even when
/// it is being deleted; once terminal it is finished.
#[rstest]
fn a_marked_action_is_never_dispatched_again(
    #[values(
        reboot(),
        cancel_reboot(),
        kill_process(),
        file_put(),
        file_remove(),
        factory_reset()
    )]
    action: Value,
    #[values(true, false)] deleting: bool,
) {
    let now = Timestamp::from_second(1_766_000_000).unwrap();
    let mut o = obj(&action, "sw");
    let kind = o.spec.action.kind;
    let req = build_request(&o).unwrap();
    let rec = record(kind, &req);
    let running = running_status(
        &IOSXEOperationalActionStatus::default(),
        &invocation_id(&o),
        &rec,
        o.metadata.generation,
        now,
    );
    o.status = Some(running.clone());
    let mut v = ActionView::of(&o, true);
    v.deleting = deleting;
    assert_eq!(step(&v), ActionStep::Observe);
    // An unclear answer keeps it Running with the marker: still observed.
    let unclear = outcome_status(
        &running,
        &Outcome::Unclear {
            message: "no answer".into(),
        },
        false,
        o.metadata.generation,
        now,
    );
    assert_eq!(unclear.phase, Some(ActionPhase::Running));
    assert_eq!(unclear.invocation_id, running.invocation_id);
    o.status = Some(unclear);
    assert_eq!(step(&ActionView::of(&o, true)), ActionStep::Observe);
    // A marker without phase Running (a status write that lost the phase)
    // is observed as well.
    let marked_only = IOSXEOperationalActionStatus {
        invocation_id: Some(invocation_id(&o)),
        ..Default::default()
    };
    o.status = Some(marked_only);
    assert_eq!(step(&ActionView::of(&o, true)), ActionStep::Observe);
}

/// Before the settle time a reading without effect is not yet proof that
/// nothing happened; after the outcome window nothing unclear remains.
#[rstest]
#[case::reboot_no_sign_early(reboot(), 1, Some(Reading::Reboot(Ok((false, 2)))), "Unclear")]
#[case::reboot_no_sign_settled(reboot(), 200, Some(Reading::Reboot(Ok((false, 2)))), "ActionNotApplied")]
#[case::reboot_unreachable_in_window(reboot(), 1000, None, "Unclear")]
#[case::reboot_unreachable_after_window(reboot(), 1801, None, "ActionOutcomeUnknown")]
#[case::kill_process_unreachable_after_window(kill_process(), 306, None, "ActionOutcomeUnknown")]
#[case::file_put_wrong_content(file_put(), 200, Some(Reading::FileHash(Ok("00".into()))), "ActionNotApplied")]
#[case::file_remove_gone_early(
    file_remove(),
    1,
    Some(Reading::FileStat(Err(not_found()))),
    "Succeeded"
)]
fn observed_outcomes_follow_the_windows(
    #[case] action: Value,
    #[case] secs: u64,
    #[case] reading: Option<Reading>,
    #[case] want: &str,
) {
    let o = obj(&action, "sw");
    let kind = o.spec.action.kind;
    let rec = record(kind, &build_request(&o).unwrap());
    let seen = match reading {
        Some(r) => Seen::Read(&rec, r),
        None => Seen::Unreachable("connection refused".into()),
    };
    let out = conclude_observed(
        kind,
        "u-1/1",
        seen,
        Duration::from_secs(secs),
        windows(kind),
    );
    let got = match &out {
        Outcome::Succeeded { .. } => "Succeeded",
        Outcome::Failed { reason, .. } => reason.as_str(),
        Outcome::Unclear { .. } => "Unclear",
    };
    assert_eq!(got, want, "{out:?}");
}
