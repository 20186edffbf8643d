//! Whole DeviceOperations through the pure functions, each in a simulated
//! world: admission, the device (there or not), what the CLI session
//! returned, the size rules and the spill, the terminal status and the
//! TTL. The phase sequence of every case is one snapshot, as the
//! upgrade's are; the rules that hold for every kind are rstest cases.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rstest::rstest;

use super::*;
use crate::client::cli::{CliError, CommandOutput};
use crate::crd::DeviceOperationStatus;
use crate::crd::operation::conditions::READY;
use crate::crd::operation::{Operation, OperationKind, OperationPhase};
use crate::reason::OperationReason;

/// A case.
struct World {
    op: Operation,
    policy: Policy,
    /// The device is missing for this many reconciles first.
    missing_device: usize,
    /// What the session returned, command by command (`None`: refused
    /// with that `%` line), and how the session ended.
    outputs: Vec<(&'static str, Result<String, &'static str>)>,
    failure: Option<CliError>,
    /// The spill ConfigMap can be written.
    spill_ok: bool,
    ttl: Option<i32>,
}

fn open() -> Policy {
    Policy {
        configdiff_allowed: true,
        gnoi_disabled: false,
    }
}

fn op(kind: OperationKind, commands: &[&str], args: &[(&str, &str)]) -> Operation {
    Operation {
        kind,
        args: args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        gnoi: None,
    }
}

impl World {
    fn new(op: Operation) -> Self {
        Self {
            op,
            policy: open(),
            missing_device: 0,
            outputs: Vec::new(),
            failure: None,
            spill_ok: true,
            ttl: None,
        }
    }

    fn answer(mut self, command: &'static str, text: &str) -> Self {
        self.outputs.push((command, Ok(text.to_owned())));
        self
    }

    fn refuse(mut self, command: &'static str, line: &'static str) -> Self {
        self.outputs.push((command, Err(line)));
        self
    }
}

fn entry(s: &DeviceOperationStatus) -> String {
    format!(
        "{}({})",
        s.phase
            .map_or_else(|| "None".to_owned(), |p| format!("{p:?}")),
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map_or("", |c| c.reason.as_str())
    )
}

fn view(s: &DeviceOperationStatus, ttl: Option<i32>) -> OpView {
    OpView {
        generation: Some(1),
        phase: s.phase,
        observed_generation: s.observed_generation,
        completion_time: s.completion_time.as_ref().map(|t| t.0),
        ttl_seconds: ttl,
        in_scope: true,
    }
}

/// Runs a world as the executor does: the phases (with reasons) in order,
/// then what the step makes of the terminal status right away and an hour
/// later.
fn run(w: World) -> (Vec<String>, OpStep, OpStep) {
    let now = Timestamp::from_second(1_766_000_000).unwrap();
    let generation = Some(1);
    let limits = OutputLimits {
        inline_bytes: 64,
        total_inline_bytes: 128,
        preview_bytes: 16,
        max_artifact_bytes: 512,
        ..OutputLimits::default()
    };
    let kind = w.op.kind;
    let mut seq = Vec::new();
    let mut status = DeviceOperationStatus::default();
    assert_eq!(step(&view(&status, w.ttl), now), OpStep::Start);
    let done = match admit(&w.op, "lab", w.policy) {
        Err(e) => finished_status(&status, kind, &Err(e.into()), generation, now),
        Ok(commands) => {
            for _ in 0..w.missing_device {
                status = waiting_status(
                    &status,
                    OperationReason::NoTransport,
                    "CiscoDevice \"sw\" not found".into(),
                    generation,
                    now,
                );
                seq.push(entry(&status));
                // Still not run: the next reconcile starts it again.
                assert_eq!(step(&view(&status, w.ttl), now), OpStep::Start);
            }
            let running = running_status(&status, generation, now);
            seq.push(entry(&running));
            let run = CliRun {
                outputs: w
                    .outputs
                    .into_iter()
                    .map(|(command, r)| CommandOutput {
                        command: command.into(),
                        text: r.clone().unwrap_or_default(),
                        error: r.err().map(str::to_owned),
                    })
                    .collect(),
                failure: w.failure,
            };
            let (pieces, verdict) = judge_cli(&w.op, &commands, run);
            let result = match bound(pieces, &limits, "run fewer commands") {
                Err(e) => Err(e.into()),
                Ok(b) => {
                    let uris = if b.spill.is_empty() {
                        Ok(Vec::new())
                    } else if w.spill_ok {
                        Ok(b.spill
                            .keys()
                            .map(|k| artifact_uri("lab", "op", k))
                            .collect())
                    } else {
                        Err(OperationFailure::ArtifactWrite {
                            name: artifact_name("op"),
                            message: "the API server refused it".into(),
                        })
                    };
                    conclude(b.outputs, uris, verdict)
                }
            };
            finished_status(&running, kind, &result, generation, now)
        }
    };
    seq.push(format!(
        "{} outputs={} spilled={}",
        entry(&done),
        done.outputs.len(),
        done.artifact_uris.len()
    ));
    let later = now + SignedDuration::from_hours(1);
    (
        seq,
        step(&view(&done, w.ttl), now),
        step(&view(&done, w.ttl), later),
    )
}

/// The phase sequence of every case, as one snapshot.
#[test]
fn phase_sequences() {
    use OperationKind::*;
    let big = "x".repeat(100);
    let cases: Vec<(&str, World)> = vec![
        (
            "show-two-commands",
            World::new(op(ShowCommand, &["show version", "show clock"], &[]))
                .answer("show version", "Cisco IOS XE Software, Version 17.15.01")
                .answer("show clock", "12:00:00.000 UTC Mon Dec 7 2026"),
        ),
        (
            "show-waits-for-its-device",
            World {
                missing_device: 2,
                ..World::new(op(ShowCommand, &["show clock"], &[]))
                    .answer("show clock", "12:00:00.000 UTC Mon Dec 7 2026")
            },
        ),
        (
            "show-command-refused",
            World::new(op(ShowCommand, &["show clock", "show bogus"], &[]))
                .answer("show clock", "12:00")
                .refuse("show bogus", "% Invalid input detected at '^' marker."),
        ),
        (
            "show-not-read-only",
            World::new(op(ShowCommand, &["configure terminal"], &[])),
        ),
        (
            "show-output-spilled",
            World::new(op(ShowCommand, &["show running-config"], &[]))
                .answer("show running-config", &big),
        ),
        (
            "show-spill-write-failed",
            World {
                spill_ok: false,
                ..World::new(op(ShowCommand, &["show running-config"], &[]))
                    .answer("show running-config", &big)
            },
        ),
        (
            "show-session-dropped",
            World {
                failure: Some(CliError::Closed {
                    during: Some("show tech-support".into()),
                    detail: "connection reset".into(),
                }),
                ..World::new(op(ShowCommand, &["show clock", "show tech-support"], &[]))
                    .answer("show clock", "12:00")
            },
        ),
        (
            "show-with-ttl",
            World {
                ttl: Some(60),
                ..World::new(op(ShowCommand, &["show clock"], &[])).answer("show clock", "12:00")
            },
        ),
        (
            "config-diff-namespace-refused",
            World {
                policy: Policy {
                    configdiff_allowed: false,
                    gnoi_disabled: false,
                },
                ..World::new(op(ConfigDiff, &[], &[("baseline", "hostname sw\n")]))
            },
        ),
        (
            "config-diff-no-differences",
            World::new(op(ConfigDiff, &[], &[("baseline", "hostname sw\n")]))
                .answer("show running-config", "hostname sw\n"),
        ),
        (
            "packet-capture-bad-name",
            World::new(op(PacketCapture, &[], &[("name", "bad name;")])),
        ),
        (
            "gnoi-kind-with-gnoi-disabled",
            World {
                policy: Policy {
                    configdiff_allowed: true,
                    gnoi_disabled: true,
                },
                ..World::new(op(Time, &[], &[]))
            },
        ),
    ];
    let table: Vec<String> = cases
        .into_iter()
        .map(|(name, w)| {
            let (seq, now, later) = run(w);
            format!(
                "{name}: {} => {now:?}, an hour later {later:?}",
                seq.join(" > ")
            )
        })
        .collect();
    insta::assert_snapshot!(table.join("\n"));
}

/// A terminal phase at the object's generation is never run again; a new
/// generation, or any phase that is not terminal, runs.
#[rstest]
#[case::new(None, None, OpStep::Start)]
#[case::waiting(Some(OperationPhase::Pending), Some(1), OpStep::Start)]
#[case::interrupted(Some(OperationPhase::Running), Some(1), OpStep::Start)]
#[case::succeeded(Some(OperationPhase::Succeeded), Some(1), OpStep::Done)]
#[case::failed(Some(OperationPhase::Failed), Some(1), OpStep::Done)]
#[case::succeeded_then_edited(Some(OperationPhase::Succeeded), Some(0), OpStep::Start)]
fn runs_once_per_generation(
    #[case] phase: Option<OperationPhase>,
    #[case] observed: Option<i64>,
    #[case] want: OpStep,
) {
    let now = Timestamp::from_second(1_766_000_000).unwrap();
    let v = OpView {
        generation: Some(1),
        phase,
        observed_generation: observed,
        completion_time: Some(now),
        ttl_seconds: None,
        in_scope: true,
    };
    assert_eq!(step(&v, now), want);
    assert_eq!(
        step(
            &OpView {
                in_scope: false,
                ..v
            },
            now
        ),
        OpStep::OutOfScope
    );
}

/// `ttlSecondsAfterFinished` counts from completionTime.
#[rstest]
#[case::no_ttl(None, 0, OpStep::Done)]
#[case::zero_ttl(Some(0), 10, OpStep::Done)]
#[case::before(Some(60), 20, OpStep::ExpireIn(Duration::from_secs(40)))]
#[case::due(Some(60), 60, OpStep::Expire)]
#[case::after(Some(60), 3600, OpStep::Expire)]
fn finished_operations_expire_after_their_ttl(
    #[case] ttl: Option<i32>,
    #[case] after_secs: i64,
    #[case] want: OpStep,
) {
    let done = Timestamp::from_second(1_766_000_000).unwrap();
    let v = OpView {
        generation: Some(3),
        phase: Some(OperationPhase::Succeeded),
        observed_generation: Some(3),
        completion_time: Some(done),
        ttl_seconds: ttl,
        in_scope: true,
    };
    assert_eq!(step(&v, done + SignedDuration::from_secs(after_secs)), want);
}
