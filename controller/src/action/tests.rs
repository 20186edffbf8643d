use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tonic::Code;

use super::*;
use crate::client::factory_reset::{FactoryResetOutcome, FactoryResetParams};
use crate::client::system::{RebootMethod, RebootParams};
use crate::client::{ClientError, GnoiService};
use crate::crd::action::{Action, IOSXEOperationalActionSpec};
use crate::crd::action::{
    ActionKind, ActionPhase, IOSXEOperationalAction, IOSXEOperationalActionStatus,
};
use crate::crd::common::DeviceRef;
use crate::reason::ActionReason;

fn view(phase: Option<ActionPhase>, marker: bool) -> ActionView {
    ActionView {
        phase,
        invocation_id: marker.then(|| "uid/1".to_owned()),
        deleting: false,
        has_finalizer: false,
        in_scope: true,
    }
}

fn obj(action: Value) -> IOSXEOperationalAction {
    let mut o = IOSXEOperationalAction::new(
        "a",
        IOSXEOperationalActionSpec {
            device_ref: DeviceRef::new("sw"),
            confirm: "sw".into(),
            action: serde_json::from_value::<Action>(action).unwrap(),
        },
    );
    o.metadata.namespace = Some("ns".into());
    o.metadata.uid = Some("u-1".into());
    o.metadata.generation = Some(1);
    o
}

#[test]
fn a_marked_or_running_action_is_only_ever_observed() {
    use ActionPhase::*;
    assert_eq!(step(&view(None, false)), ActionStep::Start);
    assert_eq!(step(&view(Some(Pending), false)), ActionStep::Start);
    assert_eq!(step(&view(Some(Running), true)), ActionStep::Observe);
    // A marker without Running, or Running without a marker: never resent.
    assert_eq!(step(&view(Some(Pending), true)), ActionStep::Observe);
    assert_eq!(step(&view(Some(Running), false)), ActionStep::Observe);
    for done in [Succeeded, Failed, Rejected] {
        assert_eq!(
            step(&view(Some(done), true)),
            ActionStep::Finished { cleanup: false }
        );
        let mut v = view(Some(done), true);
        v.has_finalizer = true;
        assert_eq!(step(&v), ActionStep::Finished { cleanup: true });
    }
    let mut v = view(Some(Pending), false);
    v.deleting = true;
    assert_eq!(step(&v), ActionStep::Abandon);
    // Deleted after dispatch: still observed (the finalizer holds it).
    let mut v = view(Some(Running), true);
    v.deleting = true;
    assert_eq!(step(&v), ActionStep::Observe);
    let mut v = view(None, false);
    v.in_scope = false;
    assert_eq!(step(&v), ActionStep::OutOfScope);
}

#[test]
fn requests_follow_the_spec() {
    let r = build_request(&obj(
        json!({"kind": "Reboot", "reboot": {"delay": 30, "message": "m"}}),
    ))
    .unwrap();
    assert_eq!(
        r,
        Request::Reboot(RebootParams {
            method: RebootMethod::Cold,
            delay: Duration::from_secs(30),
            message: "m".into(),
            force: false,
        })
    );
    assert_eq!(r.service(), GnoiService::System);
    assert_eq!(
        r.summary(),
        "delaySeconds=30 force=false message=\"m\" method=\"COLD\""
    );
    let r = build_request(&obj(
        json!({"kind": "KillProcess", "killProcess": {"name": "nginx", "signal": "HUP"}}),
    ))
    .unwrap();
    assert_eq!(r.describe()["signal"], "HUP");
    let r = build_request(&obj(
        json!({"kind": "FilePut", "filePut": {"path": "flash:/a/b.txt", "configMapName": "c"}}),
    ))
    .unwrap();
    assert_eq!(
        r,
        Request::FilePut {
            path: "flash:/a/b.txt".into(),
            permissions: 0o644,
            config_map: "c".into()
        }
    );
    assert_eq!(r.describe()["permissions"], "0o644");
    let r = build_request(&obj(json!({"kind": "FactoryReset", "factoryReset": {}}))).unwrap();
    assert_eq!(
        r,
        Request::FactoryReset(FactoryResetParams {
            factory_os: false,
            zero_fill: false,
            retain_certs: true
        })
    );
    assert_eq!(r.service(), GnoiService::FactoryReset);
}

#[test]
fn stored_objects_that_admission_would_refuse_are_rejected_with_the_field() {
    let mut o = obj(json!({"kind": "Reboot", "reboot": {}}));
    o.spec.confirm = "other".into();
    let r = build_request(&o).unwrap_err();
    assert_eq!(r.reason, "ConfirmMismatch");
    assert!(r.message.contains("spec.confirm"));
    let r = build_request(&obj(
        json!({"kind": "Reboot", "fileRemove": {"path": "flash:x"}}),
    ))
    .unwrap_err();
    assert_eq!(r.reason, "InvalidAction");
    assert!(r.message.contains("spec.action"), "{}", r.message);
    let r = build_request(&obj(
        json!({"kind": "FileRemove", "fileRemove": {"path": "crashinfo:x"}}),
    ))
    .unwrap_err();
    assert_eq!(r.reason, "InvalidPath");
    assert!(
        r.message.starts_with("spec.action.fileRemove.path"),
        "{}",
        r.message
    );
    let r = build_request(&obj(
        json!({"kind": "FilePut", "filePut": {"path": "flash:a/../b", "configMapName": "c"}}),
    ))
    .unwrap_err();
    assert_eq!(r.reason, "InvalidPath");
    let r = build_request(&obj(
        json!({"kind": "KillProcess", "killProcess": {"pid": 0}}),
    ))
    .unwrap_err();
    assert_eq!(r.reason, "InvalidAction");
    let r = build_request(&obj(json!({"kind": "FilePut", "filePut": {"path": "flash:a", "configMapName": "c", "permissions": 512}})))
        .unwrap_err();
    assert!(r.message.contains("spec.action.filePut.permissions"));
}

#[test]
fn content_comes_from_binary_data_only() {
    let cm: ConfigMap = serde_json::from_value(json!({"binaryData": {"content": "aGk="}})).unwrap();
    assert_eq!(content_of(&cm, "c").unwrap(), b"hi");
    let cm: ConfigMap = serde_json::from_value(json!({"data": {"content": "hi"}})).unwrap();
    let r = content_of(&cm, "c").unwrap_err();
    assert_eq!(r.reason, "ConfigMapContentMissing");
    assert!(
        r.message.contains("it has data[\"content\"]"),
        "{}",
        r.message
    );
    assert_eq!(
        sha256_hex(b"hi"),
        "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
    );
}

#[test]
fn answers_are_interpreted() {
    let ok = interpret(ActionKind::Reboot, Ok(Answer::Accepted(json!({}))));
    assert!(matches!(ok, Outcome::Succeeded { .. }));
    let refused = interpret(
        ActionKind::Reboot,
        Err(ClientError::Rpc {
            service: GnoiService::System,
            method: "Reboot",
            code: Code::FailedPrecondition,
            message: "a reboot is already pending".into(),
        }),
    );
    assert!(matches!(refused, Outcome::Failed { ref reason, .. } if reason == "ActionFailed"));
    let unsupported = interpret(
        ActionKind::FilePut,
        Err(ClientError::ServiceUnsupported {
            service: GnoiService::File,
            detail: String::new(),
        }),
    );
    assert!(
        matches!(unsupported, Outcome::Failed { ref reason, .. } if reason == "FileServiceUnsupported")
    );
    // A broken connection after sending is not a failure: observe.
    let broken = interpret(
        ActionKind::Reboot,
        Err(ClientError::Unavailable {
            message: "connection reset".into(),
            retry_after: None,
        }),
    );
    assert!(matches!(broken, Outcome::Unclear { .. }));
    let closed = interpret(
        ActionKind::FactoryReset,
        Ok(Answer::FactoryReset(
            FactoryResetOutcome::ConnectionClosed {
                detail: "eof".into(),
            },
        )),
    );
    assert!(matches!(closed, Outcome::Succeeded { .. }));
    let no_os = interpret(
        ActionKind::FactoryReset,
        Ok(Answer::FactoryReset(FactoryResetOutcome::Error {
            factory_os_unsupported: true,
            zero_fill_unsupported: false,
            other: false,
            detail: "no".into(),
        })),
    );
    assert!(
        matches!(no_os, Outcome::Failed { ref reason, .. } if reason == "FactoryOSUnsupported")
    );
}

fn rec(kind: &str) -> DispatchRecord {
    DispatchRecord {
        kind: kind.into(),
        request: json!({"path": "flash:x"}),
        reboot_count_before: Some(2),
        reboot_active_before: Some(false),
        content_sha256: Some("ab".into()),
        ..DispatchRecord::default()
    }
}

fn reason_of(o: &Outcome) -> &str {
    match o {
        Outcome::Succeeded { .. } => "Succeeded",
        Outcome::Failed { reason, .. } => reason.as_str(),
        Outcome::Unclear { .. } => "Unclear",
    }
}

#[test]
fn outcomes_are_read_back_from_the_device() {
    use ActionKind::*;
    let r = rec("Reboot");
    assert_eq!(
        reason_of(&judge(Reboot, &r, Reading::Reboot(Ok((false, 3))))),
        "Succeeded"
    );
    assert_eq!(
        reason_of(&judge(Reboot, &r, Reading::Reboot(Ok((true, 2))))),
        "Succeeded"
    );
    assert_eq!(
        reason_of(&judge(Reboot, &r, Reading::Reboot(Ok((false, 2))))),
        "ActionNotApplied"
    );
    let down = ClientError::Unavailable {
        message: "refused".into(),
        retry_after: None,
    };
    assert_eq!(
        reason_of(&judge(Reboot, &r, Reading::Reboot(Err(down.clone())))),
        "Unclear"
    );
    assert_eq!(
        reason_of(&judge(CancelReboot, &r, Reading::Reboot(Ok((false, 2))))),
        "Succeeded"
    );
    assert_eq!(
        reason_of(&judge(CancelReboot, &r, Reading::Reboot(Ok((false, 3))))),
        "ActionNotApplied"
    );
    assert_eq!(
        reason_of(&judge(CancelReboot, &r, Reading::Reboot(Ok((true, 2))))),
        "ActionNotApplied"
    );
    assert_eq!(
        reason_of(&judge(FactoryReset, &r, Reading::Reboot(Ok((false, 3))))),
        "Succeeded"
    );
    let mut no_base = r.clone();
    no_base.reboot_count_before = None;
    assert_eq!(
        reason_of(&judge(
            FactoryReset,
            &no_base,
            Reading::Reboot(Ok((false, 3)))
        )),
        "ActionOutcomeUnknown"
    );
    assert_eq!(
        reason_of(&judge(KillProcess, &r, Reading::Nothing)),
        "ActionOutcomeUnknown"
    );
    let nf = ClientError::Rpc {
        service: GnoiService::File,
        method: "Stat",
        code: Code::NotFound,
        message: "no".into(),
    };
    assert_eq!(
        reason_of(&judge(FilePut, &r, Reading::FileHash(Ok("ab".into())))),
        "Succeeded"
    );
    assert_eq!(
        reason_of(&judge(FilePut, &r, Reading::FileHash(Ok("cd".into())))),
        "ActionNotApplied"
    );
    assert_eq!(
        reason_of(&judge(FilePut, &r, Reading::FileHash(Err(nf.clone())))),
        "ActionNotApplied"
    );
    assert_eq!(
        reason_of(&judge(FilePut, &r, Reading::FileHash(Err(down)))),
        "Unclear"
    );
    assert_eq!(
        reason_of(&judge(FileRemove, &r, Reading::FileStat(Err(nf)))),
        "Succeeded"
    );
    assert_eq!(
        reason_of(&judge(FileRemove, &r, Reading::FileStat(Ok(1)))),
        "ActionNotApplied"
    );
    if let Outcome::Failed { message, .. } = judge(Reboot, &r, Reading::Reboot(Ok((false, 2)))) {
        assert!(message.contains("not sent again"), "{message}");
    }
}

#[test]
fn a_dispatched_action_is_concluded_by_what_the_device_shows_and_when() {
    use ActionKind::*;
    let r = rec("Reboot");
    let down = || ClientError::Unavailable {
        message: "refused".into(),
        retry_after: None,
    };
    let w = Windows {
        settle: Duration::from_secs(20),
        outcome: Duration::from_secs(305),
    };
    let secs = Duration::from_secs;
    // (kind, what is seen, time since startTime, verdict)
    let table: Vec<(ActionKind, Seen<'_>, Duration, &str)> = vec![
        // An effect is proof at any time.
        (
            Reboot,
            Seen::Read(&r, Reading::Reboot(Ok((false, 3)))),
            secs(1),
            "Succeeded",
        ),
        (
            FilePut,
            Seen::Read(&r, Reading::FileHash(Ok("ab".into()))),
            secs(0),
            "Succeeded",
        ),
        // No effect is proof only once the dispatch cannot be in flight.
        (
            Reboot,
            Seen::Read(&r, Reading::Reboot(Ok((false, 2)))),
            secs(19),
            "Unclear",
        ),
        (
            Reboot,
            Seen::Read(&r, Reading::Reboot(Ok((false, 2)))),
            secs(20),
            "ActionNotApplied",
        ),
        (
            KillProcess,
            Seen::Read(&r, Reading::Nothing),
            secs(1),
            "Unclear",
        ),
        (
            KillProcess,
            Seen::Read(&r, Reading::Nothing),
            secs(20),
            "ActionOutcomeUnknown",
        ),
        (Reboot, Seen::NoRecord, secs(0), "Unclear"),
        (Reboot, Seen::NoRecord, secs(20), "ActionOutcomeUnknown"),
        // Unreadable stays unclear until the outcome window closes.
        (
            Reboot,
            Seen::Unreachable("no route".into()),
            secs(304),
            "Unclear",
        ),
        (
            Reboot,
            Seen::Unreachable("no route".into()),
            secs(305),
            "ActionOutcomeUnknown",
        ),
        (
            Reboot,
            Seen::Read(&r, Reading::Reboot(Err(down()))),
            secs(304),
            "Unclear",
        ),
        (
            Reboot,
            Seen::Read(&r, Reading::Reboot(Err(down()))),
            secs(400),
            "ActionOutcomeUnknown",
        ),
    ];
    for (kind, seen, elapsed, want) in table {
        let what = format!("{kind} {seen:?} after {elapsed:?}");
        let got = conclude_observed(kind, "u/1", seen, elapsed, w);
        assert_eq!(reason_of(&got), want, "{what}: {got:?}");
        if let Outcome::Failed { message, .. } = &got
            && elapsed >= w.outcome
        {
            assert!(
                message.contains("could not be read within 305s")
                    && message.contains("not sent again"),
                "{what}: {message}"
            );
        }
    }
}

#[test]
fn statuses_through_a_dispatch() {
    let t0 = Timestamp::from_second(1_700_000_000).unwrap();
    let t1 = Timestamp::from_second(1_700_000_009).unwrap();
    let r = rec("Reboot");
    let run = running_status(
        &IOSXEOperationalActionStatus::default(),
        "u/1",
        &r,
        Some(1),
        t0,
    );
    assert_eq!(run.phase, Some(ActionPhase::Running));
    assert_eq!(run.invocation_id.as_deref(), Some("u/1"));
    assert_eq!(run.start_time, Some(Time(t0)));
    assert_eq!(ResultDoc::parse(&run).unwrap().dispatch, r);
    let unclear = outcome_status(
        &run,
        &Outcome::Unclear {
            message: "down".into(),
        },
        true,
        Some(1),
        t1,
    );
    assert_eq!(unclear.phase, Some(ActionPhase::Running));
    assert_eq!(unclear.reason.as_deref(), Some("Observing"));
    assert_eq!(unclear.completion_time, None);
    let done = outcome_status(
        &unclear,
        &Outcome::Succeeded {
            message: "rebooted".into(),
            detail: json!({"rebootCount": 3}),
        },
        true,
        Some(1),
        t1,
    );
    assert_eq!(done.phase, Some(ActionPhase::Succeeded));
    assert_eq!(
        done.invocation_id.as_deref(),
        Some("u/1"),
        "the marker stays"
    );
    assert_eq!(done.completion_time, Some(Time(t1)));
    assert_eq!(done.start_time, Some(Time(t0)));
    let doc = ResultDoc::parse(&done).unwrap();
    assert_eq!(doc.observed, Some(json!({"rebootCount": 3})));
    assert_eq!(doc.dispatch, r);
    assert!(crate::crd::common::is_condition_true(
        &done.conditions,
        crate::crd::action::conditions::READY
    ));
    let rej = rejected_status(
        &IOSXEOperationalActionStatus::default(),
        &Rejection::new(ActionReason::FileNotFound, "gone"),
        Some(1),
        t0,
    );
    assert_eq!(rej.phase, Some(ActionPhase::Rejected));
    assert_eq!(rej.failure_reason.as_deref(), Some("FileNotFound"));
    assert_eq!(rej.invocation_id, None);
    assert_eq!(rej.conditions[0].reason, "FileNotFound");
    assert_eq!(rej.conditions[0].status, "False");
}

#[test]
fn a_dispatch_settles_after_connect_rpc_and_grace() {
    let t = crate::client::Timeouts::default();
    assert_eq!(
        settle_time(ActionKind::Reboot, &t),
        t.connect + t.control + PERSIST_GRACE
    );
    assert_eq!(
        settle_time(ActionKind::FilePut, &t),
        t.connect + t.stream_idle + PERSIST_GRACE
    );
}

#[test]
fn windows_and_markers() {
    assert_eq!(outcome_window(ActionKind::Reboot), DISRUPTIVE_WINDOW);
    assert_eq!(
        outcome_window(ActionKind::KillProcess),
        Duration::from_secs(305)
    );
    let o = obj(json!({"kind": "CancelReboot", "cancelReboot": {}}));
    assert_eq!(invocation_id(&o), "u-1/1");
    let mut o = o;
    o.metadata.uid = None;
    assert_eq!(invocation_id(&o), "ns/a/1");
}
