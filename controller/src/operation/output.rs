//! Outputs kept within their limits: inline up to
//! [`OutputLimits::inline_bytes`], the rest spilled whole to the owned
//! ConfigMap with a preview inline ([`bound`]).

use std::collections::BTreeMap;

use super::*;
use crate::conditions;
use crate::crd::operation::OperationOutput;

/// How file content is shown: UTF-8 text when it is printable, hex
/// otherwise.
pub fn content_text(bytes: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(bytes) {
        Ok(s)
            if s.chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) =>
        {
            ("utf-8", s.to_owned())
        }
        _ => ("hex", hex::encode(bytes)),
    }
}

/// One output before the size rules: what ran, its full (redacted) text
/// or its error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Piece {
    /// The command (or the kind, for gNOI kinds).
    pub command: String,
    /// The full output text.
    pub text: Option<String>,
    /// The error of this command.
    pub err: Option<String>,
    /// Secrets were removed from `text`.
    pub redacted: bool,
}

/// Outputs after the size rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bounded {
    /// What stays in status, in order.
    pub outputs: Vec<OperationOutput>,
    /// Spill ConfigMap data: key (`output`, or `output-<index>` when the
    /// operation has several outputs) -> the full output.
    pub spill: BTreeMap<String, String>,
}

/// Applies the size rules to `pieces` (pure):
///
/// 1. an output larger than [`OutputLimits::inline_bytes`] spills;
/// 2. while the inline outputs sum to more than
///    [`OutputLimits::total_inline_bytes`], the largest inline output
///    spills;
/// 3. a spilled output keeps a preview of [`OutputLimits::preview_bytes`]
///    ending in [`PREVIEW_FOOTER`], `truncated: true`;
/// 4. spilled outputs together larger than
///    [`OutputLimits::max_artifact_bytes`] (a ConfigMap holds 1 MiB) end the
///    operation `ArtifactTooLarge`; nothing is cut silently.
pub fn bound(
    pieces: Vec<Piece>,
    limits: &OutputLimits,
    hint: &'static str,
) -> Result<Bounded, OperationFailure> {
    let len = |p: &Piece| p.text.as_ref().map_or(0, String::len);
    let mut spilled: Vec<bool> = pieces
        .iter()
        .map(|p| len(p) > limits.inline_bytes)
        .collect();
    let preview_cost = limits.preview_bytes + PREVIEW_FOOTER.len();
    let inline_sum = |spilled: &[bool]| -> usize {
        pieces
            .iter()
            .zip(spilled)
            .map(|(p, s)| if *s { preview_cost.min(len(p)) } else { len(p) })
            .sum()
    };
    while inline_sum(&spilled) > limits.total_inline_bytes {
        let largest = pieces
            .iter()
            .enumerate()
            .filter(|(i, p)| !spilled[*i] && len(p) > preview_cost)
            .max_by_key(|(i, p)| (len(p), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        match largest {
            Some(i) => spilled[i] = true,
            None => break,
        }
    }
    let spill_total: usize = pieces
        .iter()
        .zip(&spilled)
        .filter(|(_, s)| **s)
        .map(|(p, _)| len(p))
        .sum();
    if spill_total > limits.max_artifact_bytes {
        return Err(OperationFailure::ArtifactTooLarge {
            size: spill_total,
            limit: limits.max_artifact_bytes,
            hint,
        });
    }
    let single = pieces.len() == 1;
    let mut out = Bounded::default();
    for (i, (p, spill)) in pieces.into_iter().zip(spilled).enumerate() {
        let mut o = OperationOutput {
            command: p.command,
            output: None,
            err: p.err,
            truncated: false,
            redacted: p.redacted,
        };
        match p.text {
            Some(text) if spill => {
                let mut inline = conditions::truncate_utf8(&text, limits.preview_bytes).to_owned();
                inline.push_str(PREVIEW_FOOTER);
                o.output = Some(inline);
                o.truncated = true;
                out.spill.insert(artifact_key(single, i), text);
            }
            text => o.output = text,
        }
        out.outputs.push(o);
    }
    Ok(out)
}

/// Data key of output `index` in the spill ConfigMap.
pub fn artifact_key(single: bool, index: usize) -> String {
    if single {
        ARTIFACT_KEY.to_owned()
    } else {
        format!("{ARTIFACT_KEY}-{index}")
    }
}

/// Name of the spill ConfigMap of operation `name`.
pub fn artifact_name(name: &str) -> String {
    format!("{name}-output")
}

/// URI of a spilled output.
pub fn artifact_uri(namespace: &str, name: &str, key: &str) -> String {
    format!("configmap://{namespace}/{}/{key}", artifact_name(name))
}
