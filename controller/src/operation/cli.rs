//! The CLI kinds (ShowCommand, ConfigDiff, PacketCapture): the commands
//! sent ([`cli_commands`], each checked by [`read_only_violation`]), the
//! ConfigDiff comparison ([`config_diff`]) and the verdict on what the
//! session returned ([`judge_cli`]).

use super::*;
use crate::client::cli::{CliError, CommandOutput};
use crate::crd::operation::{
    CAPTURE_NAME_PATTERN, FILE_WRITING_MODIFIERS, MAX_COMMANDS, Operation, OperationKind,
    READ_ONLY_COMMANDS, command_pattern,
};

/// Why a command is not read-only, if it is not (pure): the allowlist of
/// the CRD ([`READ_ONLY_COMMANDS`]), no file-writing output modifier, and
/// tighter rules for the words the CRD admits for compatibility: `terminal`
/// only as `terminal length|width N` (the session's own settings), `monitor`
/// never (it starts, stops and exports captures: PacketCapture reads them),
/// `test` never (it acts on the device), `namespace` never.
pub fn read_only_violation(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let first = command.split(' ').next().unwrap_or_default();
    if !READ_ONLY_COMMANDS.contains(&first) {
        return Some(format!(
            "it must start with one of {} (pattern {})",
            READ_ONLY_COMMANDS.join(", "),
            command_pattern()
        ));
    }
    if command.contains('\n') || command.contains('\r') {
        return Some("it must be one line".into());
    }
    let mut after_pipe = false;
    for w in &words {
        if after_pipe && FILE_WRITING_MODIFIERS.contains(w) {
            return Some(format!("| {w} writes a file"));
        }
        after_pipe = *w == "|";
        if let Some(rest) = w.strip_prefix('|')
            && FILE_WRITING_MODIFIERS.contains(&rest)
        {
            return Some(format!("| {rest} writes a file"));
        }
    }
    match first {
        "terminal" => {
            let ok = words.len() == 3
                && matches!(words[1], "length" | "width")
                && words[2].parse::<u16>().is_ok();
            (!ok)
                .then(|| "terminal is allowed only as terminal length N or terminal width N".into())
        }
        "monitor" => Some(
            "monitor commands start, stop and export captures; use kind PacketCapture to read one"
                .into(),
        ),
        "test" => Some("test commands act on the device".into()),
        "namespace" => Some("namespace commands are not supported on IOS-XE".into()),
        _ => None,
    }
}

/// The commands a CLI kind runs, checked (pure). ShowCommand takes
/// `commands[]`, else `args.command`, else `args.commands` (split on
/// newlines, or on commas when it has none); ConfigDiff `args.command`
/// (default `show running-config`); PacketCapture
/// `show monitor capture <args.name|args.capture> buffer dump`.
pub fn cli_commands(op: &Operation) -> Result<Vec<String>, OperationFailure> {
    let invalid = |m: String| OperationFailure::InvalidArguments(m);
    let checked = |field: String, c: String| -> Result<String, OperationFailure> {
        match read_only_violation(&c) {
            Some(why) => Err(OperationFailure::CommandNotAllowed {
                field,
                command: c,
                why,
            }),
            None => Ok(c),
        }
    };
    match op.kind {
        OperationKind::ShowCommand => {
            let (field, list): (&str, Vec<String>) =
                if op.commands.iter().any(|c| !c.trim().is_empty()) {
                    ("spec.operation.commands", op.commands.clone())
                } else if let Some(c) = op.args.get("command").filter(|c| !c.trim().is_empty()) {
                    ("spec.operation.args.command", vec![c.clone()])
                } else if let Some(c) = op.args.get("commands") {
                    let parts: Vec<String> = if c.contains('\n') {
                        c.lines().map(str::to_owned).collect()
                    } else {
                        c.split(',').map(str::to_owned).collect()
                    };
                    ("spec.operation.args.commands", parts)
                } else {
                    ("spec.operation.commands", Vec::new())
                };
            let list: Vec<(usize, String)> = list
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i, c.trim().to_owned()))
                .filter(|(_, c)| !c.is_empty())
                .collect();
            if list.is_empty() {
                return Err(invalid(
                    "operation.commands or operation.args.command is required for ShowCommand"
                        .into(),
                ));
            }
            if list.len() > MAX_COMMANDS {
                return Err(invalid(format!(
                    "{field} has {} commands; at most {MAX_COMMANDS} are allowed",
                    list.len()
                )));
            }
            list.into_iter()
                .map(|(i, c)| {
                    let f = if field == "spec.operation.args.command" {
                        field.to_owned()
                    } else {
                        format!("{field}[{i}]")
                    };
                    checked(f, c)
                })
                .collect()
        }
        OperationKind::ConfigDiff => {
            let c = op
                .args
                .get("command")
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "show running-config".to_owned());
            Ok(vec![checked("spec.operation.args.command".into(), c)?])
        }
        OperationKind::PacketCapture => {
            let name = op
                .args
                .get("name")
                .or_else(|| op.args.get("capture"))
                .map(|n| n.trim())
                .unwrap_or_default();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(invalid(format!(
                    "spec.operation.args.name (or args.capture) must match {CAPTURE_NAME_PATTERN}, got {name:?}"
                )));
            }
            Ok(vec![format!("show monitor capture {name} buffer dump")])
        }
        other => Err(invalid(format!("{other} is not a CLI kind"))),
    }
}

/// Lines of a configuration that change without a configuration change
/// (build banners, byte counts, change timestamps); ConfigDiff ignores
/// them on both sides.
pub(crate) fn volatile_config_line(l: &str) -> bool {
    let l = l.trim_start();
    l.starts_with("Building configuration")
        || l.starts_with("Current configuration :")
        || l.starts_with("! Last configuration change")
        || l.starts_with("! NVRAM config last updated")
        || l.starts_with("! No configuration change since last restart")
}

pub(crate) fn normalise_config(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for l in text.replace("\r\n", "\n").lines() {
        if !volatile_config_line(l) {
            out.push_str(l.trim_end());
            out.push('\n');
        }
    }
    // Blank lines around the configuration are the terminal's, not config.
    let body = out.trim_matches('\n');
    if body.is_empty() {
        String::new()
    } else {
        format!("{body}\n")
    }
}

/// A line diff of `baseline` against `observed` (pure): `no differences`,
/// or a unified diff (`--- baseline`, `+++ observed`, hunks of `-`/`+`
/// lines with 3 lines of context), with the counts of removed and added
/// lines.
pub fn config_diff(baseline: &str, observed: &str) -> (String, usize, usize) {
    let (a, b) = (normalise_config(baseline), normalise_config(observed));
    let diff = similar::TextDiff::from_lines(&a, &b);
    let (mut removed, mut added) = (0, 0);
    for c in diff.iter_all_changes() {
        match c.tag() {
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    if removed == 0 && added == 0 {
        return ("no differences\n".into(), 0, 0);
    }
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header("baseline", "observed")
        .to_string();
    (text, removed, added)
}

/// What a CLI run produced: the outputs of the commands that ran, and the
/// session failure that stopped it, if one did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CliRun {
    /// One per command that got an answer, in order.
    pub outputs: Vec<CommandOutput>,
    /// The session failure (login, host key, timeout, dropped session).
    pub failure: Option<CliError>,
}

/// Judges a CLI run (pure): redacts every output, builds the pieces and
/// decides success. ShowCommand and PacketCapture fail `CommandFailed`
/// when the device refused a command (every output is kept, the refused
/// ones with `err`); `show version` must answer something. ConfigDiff with
/// `args.baseline` turns its output into a diff under the command
/// `config diff`. A session failure fails the operation with its reason,
/// after the outputs that arrived.
pub fn judge_cli(
    op: &Operation,
    commands: &[String],
    run: CliRun,
) -> (Vec<Piece>, Result<String, OperationFailure>) {
    let mut pieces = Vec::with_capacity(commands.len());
    let mut refused: Vec<String> = Vec::new();
    let mut redacted_any = false;
    for o in run.outputs {
        let (text, redacted) = super::redact::redact(&o.text);
        redacted_any |= redacted;
        let mut err = o.error.clone();
        if err.is_none() && o.command.starts_with("show version") && text.trim().is_empty() {
            err = Some("show version returned no output".into());
        }
        if let Some(e) = &err {
            refused.push(format!("{}: {e}", o.command));
        }
        pieces.push(Piece {
            command: o.command,
            text: Some(text),
            err,
            redacted,
        });
    }
    if let Some(e) = run.failure {
        if let Some(c) = commands.get(pieces.len()) {
            pieces.push(Piece {
                command: c.clone(),
                text: None,
                err: Some(e.to_string()),
                redacted: false,
            });
        }
        return (pieces, Err(OperationFailure::Cli(e)));
    }
    let total = pieces.len();
    if let Some(first) = refused.first() {
        return (
            pieces,
            Err(OperationFailure::CommandsFailed {
                failed: refused.len(),
                total,
                first: first.clone(),
            }),
        );
    }
    let suffix = if redacted_any {
        "; secrets redacted"
    } else {
        ""
    };
    match op.kind {
        OperationKind::ConfigDiff => {
            let Some(baseline) = op.args.get("baseline") else {
                let lines = pieces[0].text.as_deref().map_or(0, |t| t.lines().count());
                return (
                    pieces,
                    Ok(format!("{}: {lines} lines{suffix}", commands[0])),
                );
            };
            let (baseline, _) = super::redact::redact(baseline);
            let observed = pieces[0].text.take().unwrap_or_default();
            let (diff, removed, added) = config_diff(&baseline, &observed);
            pieces[0].command = "config diff".into();
            pieces[0].text = Some(diff);
            let message = if removed + added == 0 {
                format!("no differences from the baseline{suffix}")
            } else {
                let lines = |n: usize| if n == 1 { "line" } else { "lines" };
                format!(
                    "{removed} {} removed and {added} {} added against the baseline{suffix}",
                    lines(removed),
                    lines(added)
                )
            };
            (pieces, Ok(message))
        }
        OperationKind::PacketCapture => {
            let bytes = pieces[0].text.as_deref().map_or(0, str::len);
            (
                pieces,
                Ok(format!("capture buffer dump: {bytes} bytes{suffix}")),
            )
        }
        _ => {
            let noun = if total == 1 { "command" } else { "commands" };
            (pieces, Ok(format!("{total} {noun} ran{suffix}")))
        }
    }
}
