use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::client::cli::{CliError, CommandOutput};
use crate::client::{self, ClientError};
use crate::crd::DeviceOperationStatus;
use crate::crd::operation::conditions::READY;
use crate::crd::operation::{Operation, OperationKind, OperationOutput, OperationPhase};

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn view(phase: Option<OperationPhase>, observed: Option<i64>) -> OpView {
    OpView {
        generation: Some(1),
        phase,
        observed_generation: observed,
        completion_time: Some(at(0)),
        ttl_seconds: None,
        in_scope: true,
    }
}

#[test]
fn runs_once_per_generation() {
    use OperationPhase::*;
    assert_eq!(step(&view(None, None), at(0)), OpStep::Start);
    assert_eq!(step(&view(Some(Pending), Some(1)), at(0)), OpStep::Start);
    // Running after an interrupted run: read-only, so it runs again.
    assert_eq!(step(&view(Some(Running), Some(1)), at(0)), OpStep::Start);
    for done in [Succeeded, Failed, Cancelled] {
        assert_eq!(step(&view(Some(done), Some(1)), at(5)), OpStep::Done);
        // A spec edit (new generation) runs it again.
        assert_eq!(step(&view(Some(done), Some(0)), at(5)), OpStep::Start);
    }
    let mut v = view(None, None);
    v.in_scope = false;
    assert_eq!(step(&v, at(0)), OpStep::OutOfScope);
}

#[test]
fn ttl_counts_from_completion() {
    let mut v = view(Some(OperationPhase::Succeeded), Some(1));
    v.ttl_seconds = Some(30);
    assert_eq!(step(&v, at(10)), OpStep::ExpireIn(Duration::from_secs(20)));
    assert_eq!(step(&v, at(30)), OpStep::Expire);
    v.ttl_seconds = Some(0);
    assert_eq!(step(&v, at(100)), OpStep::Done);
    v.ttl_seconds = Some(30);
    v.completion_time = None;
    assert_eq!(step(&v, at(100)), OpStep::Done);
}

fn piece(command: &str, text: &str) -> Piece {
    Piece {
        command: command.into(),
        text: Some(text.into()),
        ..Piece::default()
    }
}

#[test]
fn outputs_are_bounded_and_spill() {
    let limits = OutputLimits {
        inline_bytes: 100,
        total_inline_bytes: 250,
        preview_bytes: 10,
        max_artifact_bytes: 1000,
        ..OutputLimits::default()
    };
    let small = bound(vec![piece("k", &"x".repeat(100))], &limits, "h").unwrap();
    assert!(small.spill.is_empty() && !small.outputs[0].truncated);
    let big = bound(vec![piece("k", &"é".repeat(300))], &limits, "h").unwrap();
    assert!(big.outputs[0].truncated);
    assert_eq!(
        big.spill.get(ARTIFACT_KEY).map(String::as_str),
        Some("é".repeat(300).as_str())
    );
    assert_eq!(
        big.outputs[0].output.as_deref(),
        Some(format!("{}{PREVIEW_FOOTER}", "é".repeat(5)).as_str())
    );
    let e = bound(vec![piece("k", &"x".repeat(1001))], &limits, "lower it").unwrap_err();
    assert_eq!(e.reason(), "ArtifactTooLarge");
    assert_eq!(e.category(), "artifact_too_large");
    assert!(e.to_string().ends_with("lower it"), "{e}");
    assert_eq!(
        artifact_uri("ns", "op", "output"),
        "configmap://ns/op-output/output"
    );
}

#[test]
fn the_total_inline_budget_spills_the_largest_first() {
    let limits = OutputLimits {
        inline_bytes: 100,
        total_inline_bytes: 250,
        preview_bytes: 10,
        max_artifact_bytes: 1000,
        ..OutputLimits::default()
    };
    // 90 + 95 + 80 = 265 > 250: the 95 spills (largest), then 170 fits.
    let b = bound(
        vec![
            piece("a", &"a".repeat(90)),
            piece("b", &"b".repeat(95)),
            piece("c", &"c".repeat(80)),
            Piece {
                command: "d".into(),
                err: Some("% Invalid input".into()),
                ..Piece::default()
            },
        ],
        &limits,
        "h",
    )
    .unwrap();
    let truncated: Vec<bool> = b.outputs.iter().map(|o| o.truncated).collect();
    assert_eq!(truncated, [false, true, false, false]);
    assert_eq!(b.spill.keys().collect::<Vec<_>>(), ["output-1"]);
    assert_eq!(b.outputs[3].err.as_deref(), Some("% Invalid input"));
    // Spilled outputs together beyond the ConfigMap limit: refused.
    let e = bound(
        vec![piece("a", &"a".repeat(600)), piece("b", &"b".repeat(600))],
        &limits,
        "h",
    )
    .unwrap_err();
    assert!(matches!(
        e,
        OperationFailure::ArtifactTooLarge { size: 1200, .. }
    ));
}

fn show(commands: &[&str], args: &[(&str, &str)]) -> Operation {
    Operation {
        kind: OperationKind::ShowCommand,
        args: args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        gnoi: None,
    }
}

#[test]
fn an_operation_is_admitted_or_failed_before_its_device_is_touched() {
    let of = |kind: OperationKind, commands: &[&str]| Operation {
        kind,
        ..show(commands, &[])
    };
    let open = Policy {
        configdiff_allowed: true,
        gnoi_disabled: false,
    };
    let closed = Policy {
        configdiff_allowed: false,
        gnoi_disabled: true,
    };
    // (operation, policy, Ok(commands) or the reason)
    type Admitted<'a> = Result<Vec<&'a str>, &'a str>;
    let table: Vec<(Operation, Policy, Admitted)> = vec![
        (
            of(OperationKind::ShowCommand, &["show version"]),
            closed,
            Ok(vec!["show version"]),
        ),
        (
            of(OperationKind::ShowCommand, &["configure terminal"]),
            open,
            Err("CommandNotAllowed"),
        ),
        (
            of(OperationKind::ShowCommand, &[]),
            open,
            Err("InvalidArguments"),
        ),
        (
            of(OperationKind::ConfigDiff, &[]),
            open,
            Ok(vec!["show running-config"]),
        ),
        (
            of(OperationKind::ConfigDiff, &[]),
            closed,
            Err("NamespaceNotAuthorized"),
        ),
        (of(OperationKind::OsVerify, &[]), open, Ok(vec![])),
        (
            of(OperationKind::OsVerify, &[]),
            closed,
            Err("GNOIDisabled"),
        ),
        (
            of(OperationKind::Time, &[]),
            Policy {
                gnoi_disabled: false,
                ..closed
            },
            Ok(vec![]),
        ),
    ];
    for (op, policy, want) in table {
        let got = admit(&op, "ops", policy);
        match (&got, &want) {
            (Ok(c), Ok(w)) => assert_eq!(c, w, "{:?} {policy:?}", op.kind),
            (Err(e), Err(w)) => assert_eq!(e.reason(), *w, "{:?} {policy:?}: {e}", op.kind),
            _ => panic!("{:?} {policy:?}: {got:?}, want {want:?}", op.kind),
        }
    }
}

#[test]
fn show_commands_come_from_commands_then_args() {
    let c = cli_commands(&show(&["show version", " ", "dir flash:"], &[])).unwrap();
    assert_eq!(c, ["show version", "dir flash:"]);
    let c = cli_commands(&show(&[], &[("command", "show clock")])).unwrap();
    assert_eq!(c, ["show clock"]);
    let c = cli_commands(&show(&[], &[("commands", "show clock\nshow boot\n")])).unwrap();
    assert_eq!(c, ["show clock", "show boot"]);
    let c = cli_commands(&show(&[], &[("commands", "show clock, show boot")])).unwrap();
    assert_eq!(c, ["show clock", "show boot"]);
    let e = cli_commands(&show(&[], &[])).unwrap_err();
    assert!(
        e.to_string()
            .contains("operation.commands or operation.args.command")
    );
    let many: Vec<String> = (0..65).map(|i| format!("show int {i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(
        cli_commands(&show(&refs, &[]))
            .unwrap_err()
            .to_string()
            .contains("at most 64")
    );
}

#[test]
fn only_read_only_commands_pass_and_the_field_is_named() {
    for ok in [
        "show version",
        "show running-config | include hostname",
        "dir flash:",
        "ping 192.0.2.1",
        "terminal length 0",
        "show",
    ] {
        assert_eq!(read_only_violation(ok), None, "{ok}");
    }
    for (bad, why) in [
        ("configure terminal", "must start with"),
        ("reload", "must start with"),
        ("showx", "must start with"),
        ("show running-config | redirect flash:x", "writes a file"),
        ("show tech |append flash:t", "writes a file"),
        ("show run | tee flash:r", "writes a file"),
        ("monitor capture c start", "PacketCapture"),
        ("test platform software", "act on the device"),
        ("terminal monitor", "terminal length"),
    ] {
        let v = read_only_violation(bad).unwrap_or_else(|| panic!("{bad} passed"));
        assert!(v.contains(why), "{bad}: {v}");
    }
    let e = cli_commands(&show(&["show clock", "reload"], &[])).unwrap_err();
    assert_eq!(e.reason(), "CommandNotAllowed");
    assert!(
        e.to_string()
            .starts_with("spec.operation.commands[1] \"reload\""),
        "{e}"
    );
}

#[test]
fn config_diff_and_packet_capture_commands() {
    let mut op = show(&[], &[]);
    op.kind = OperationKind::ConfigDiff;
    assert_eq!(cli_commands(&op).unwrap(), ["show running-config"]);
    op.args
        .insert("command".into(), "show startup-config".into());
    assert_eq!(cli_commands(&op).unwrap(), ["show startup-config"]);
    op.args.insert("command".into(), "copy run start".into());
    assert_eq!(cli_commands(&op).unwrap_err().reason(), "CommandNotAllowed");
    let mut op = show(&[], &[("capture", "cap-1")]);
    op.kind = OperationKind::PacketCapture;
    assert_eq!(
        cli_commands(&op).unwrap(),
        ["show monitor capture cap-1 buffer dump"]
    );
    op.args.insert("name".into(), "a b".into());
    assert_eq!(cli_commands(&op).unwrap_err().reason(), "InvalidArguments");
}

#[test]
fn diffs_ignore_volatile_lines() {
    let base = "Building configuration...\n\nCurrent configuration : 10 bytes\n! Last configuration change at 1\nhostname sw1\n!\nend\n";
    let same = "Building configuration...\n\nCurrent configuration : 99 bytes\n! Last configuration change at 2\r\nhostname sw1\n!\nend\n";
    assert_eq!(config_diff(base, same), ("no differences\n".into(), 0, 0));
    // Blank lines around the text (the device's `end\n\n`, a trimmed
    // capture) are not configuration.
    let padded = format!("\n{base}\n\n");
    assert_eq!(
        config_diff(&padded, same),
        ("no differences\n".into(), 0, 0)
    );
    let changed = base.replace("hostname sw1", "hostname sw2");
    let (d, removed, added) = config_diff(base, &changed);
    assert_eq!((removed, added), (1, 1));
    assert!(d.starts_with("--- baseline\n+++ observed\n@@"), "{d}");
    assert!(d.contains("\n-hostname sw1\n+hostname sw2\n"), "{d}");
}

fn out(command: &str, text: &str, error: Option<&str>) -> CommandOutput {
    CommandOutput {
        command: command.into(),
        text: text.into(),
        error: error.map(str::to_owned),
    }
}

#[test]
fn cli_runs_are_judged() {
    let op = show(&["show version", "show bogus"], &[]);
    let cmds = cli_commands(&op).unwrap();
    // Every answer kept; a refused command fails the operation.
    let run = CliRun {
        outputs: vec![
            out("show version", "Cisco IOS XE Software\n", None),
            out(
                "show bogus",
                "% Invalid input detected at '^' marker.\n",
                Some("% Invalid input detected at '^' marker."),
            ),
        ],
        failure: None,
    };
    let (pieces, verdict) = judge_cli(&op, &cmds, run);
    assert_eq!(pieces.len(), 2);
    let e = verdict.unwrap_err();
    assert_eq!(e.reason(), "CommandFailed");
    assert!(
        e.to_string()
            .contains("1 of 2 commands failed; first: show bogus"),
        "{e}"
    );
    // An empty show version is a failure too.
    let run = CliRun {
        outputs: vec![
            out("show version", "", None),
            out("show bogus", "x\n", None),
        ],
        failure: None,
    };
    assert_eq!(
        judge_cli(&op, &cmds, run).1.unwrap_err().reason(),
        "CommandFailed"
    );
    // A dropped session: the answered outputs, then the failing command.
    let run = CliRun {
        outputs: vec![out("show version", "v\n", None)],
        failure: Some(CliError::Closed {
            during: Some("show bogus".into()),
            detail: "gone".into(),
        }),
    };
    let (pieces, verdict) = judge_cli(&op, &cmds, run);
    assert_eq!(verdict.unwrap_err().reason(), "SSHSessionClosed");
    assert_eq!(pieces[1].command, "show bogus");
    assert!(pieces[1].err.as_deref().unwrap().contains("gone"));
    // Secrets are redacted before anything is kept.
    let op1 = show(&["show running-config"], &[]);
    let run = CliRun {
        outputs: vec![out(
            "show running-config",
            "username a secret 9 $9$abc\nend\n",
            None,
        )],
        failure: None,
    };
    let (pieces, verdict) = judge_cli(&op1, &cli_commands(&op1).unwrap(), run);
    assert!(pieces[0].redacted && !pieces[0].text.as_deref().unwrap().contains("$9$abc"));
    assert!(verdict.unwrap().ends_with("secrets redacted"));
}

#[test]
fn config_diff_against_a_baseline() {
    let mut op = show(&[], &[("baseline", "hostname sw1\nend\n")]);
    op.kind = OperationKind::ConfigDiff;
    let cmds = cli_commands(&op).unwrap();
    let run = |text: &str| CliRun {
        outputs: vec![out("show running-config", text, None)],
        failure: None,
    };
    let (pieces, verdict) = judge_cli(
        &op,
        &cmds,
        run("Building configuration...\nhostname sw1\nend\n"),
    );
    assert_eq!(pieces[0].command, "config diff");
    assert_eq!(pieces[0].text.as_deref(), Some("no differences\n"));
    assert_eq!(verdict.unwrap(), "no differences from the baseline");
    let (pieces, verdict) = judge_cli(&op, &cmds, run("hostname lab-7\nend\n"));
    assert!(
        pieces[0]
            .text
            .as_deref()
            .unwrap()
            .contains("+hostname lab-7")
    );
    assert_eq!(
        verdict.unwrap(),
        "1 line removed and 1 line added against the baseline"
    );
}

#[test]
fn a_missing_service_is_named_in_the_reason() {
    for (svc, reason) in [
        (client::GnoiService::System, "SystemServiceUnsupported"),
        (client::GnoiService::File, "FileServiceUnsupported"),
        (client::GnoiService::Os, "OSServiceUnsupported"),
        (client::GnoiService::Cert, "CertServiceUnsupported"),
    ] {
        let e = OperationFailure::Client(ClientError::ServiceUnsupported {
            service: svc,
            detail: String::new(),
        });
        assert_eq!(e.reason(), reason);
        assert_eq!(e.category(), "service_unsupported");
    }
}

#[test]
fn statuses_through_a_run() {
    let gen_ = Some(2);
    let old = DeviceOperationStatus {
        phase: Some(OperationPhase::Succeeded),
        artifact_uris: vec!["configmap://a/b/output".into()],
        outputs: vec![OperationOutput::default()],
        ..Default::default()
    };
    let r = running_status(&old, gen_, at(0));
    assert_eq!(r.phase, Some(OperationPhase::Running));
    assert!(r.outputs.is_empty() && r.artifact_uris.is_empty());
    assert_eq!(r.message.as_deref(), Some("operation is running"));

    let ok = Success {
        outputs: vec![OperationOutput {
            command: "GNOIRebootStatus".into(),
            output: Some("{}".into()),
            ..OperationOutput::default()
        }],
        artifact_uris: Vec::new(),
        message: "reboot inactive".into(),
    };
    let s = finished_status(&r, OperationKind::RebootStatus, &Ok(ok), gen_, at(3));
    assert_eq!(s.phase, Some(OperationPhase::Succeeded));
    assert_eq!(s.outputs[0].command, "GNOIRebootStatus");
    assert_eq!(s.completion_time, Some(Time(at(3))));
    assert_eq!(s.start_time, Some(Time(at(0))));
    assert!(crate::crd::common::is_condition_true(&s.conditions, READY));

    let err = OperationFailure::Client(ClientError::ServiceUnsupported {
        service: client::GnoiService::File,
        detail: "x".into(),
    });
    let f = finished_status(&r, OperationKind::FileGet, &Err(err.into()), gen_, at(3));
    assert_eq!(f.phase, Some(OperationPhase::Failed));
    let c = f.conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert_eq!(c.reason, "FileServiceUnsupported");
    assert!(
        f.outputs[0]
            .err
            .as_deref()
            .unwrap()
            .contains("gnoi.file.File")
    );
    assert!(f.message.unwrap().starts_with("GNOIFileGet: "));
}

#[test]
fn content_is_text_when_printable() {
    assert_eq!(
        content_text(b"hostname sw1\n!\n"),
        ("utf-8", "hostname sw1\n!\n".into())
    );
    assert_eq!(content_text(&[0, 1, 0xff]), ("hex", "0001ff".into()));
    assert_eq!(content_text(b"a\x1bb"), ("hex", "611b62".into()));
}
