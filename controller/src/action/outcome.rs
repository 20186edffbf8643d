//! What a dispatch or a later reading of the device means: the answer
//! ([`interpret`]), the reading against the dispatch record ([`judge`]),
//! and when an unclear reading becomes final ([`conclude_observed`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;

use super::*;
use crate::client::factory_reset::FactoryResetOutcome;
use crate::client::{ClientError, ErrorClass};
use crate::crd::action::ActionKind;
use crate::reason::ActionReason;
use crate::reason::client_reason;

/// How a dispatch or an observation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The action took effect.
    Succeeded {
        /// Summary.
        message: String,
        /// `response` or `observed`.
        detail: Value,
    },
    /// The device refused it, or it demonstrably did not take effect.
    Failed {
        /// Why.
        reason: ActionReason,
        /// What happened.
        message: String,
        /// `response` or `observed`, if any.
        detail: Option<Value>,
    },
    /// No clear answer yet: stay Running and observe again.
    Unclear {
        /// What blocked the answer.
        message: String,
    },
}

/// Whether an error leaves it open whether the device acted: the transport
/// broke or the deadline passed, so the request may have been executed.
pub fn is_ambiguous(e: &ClientError) -> bool {
    e.class() == ErrorClass::Ambiguous
}

/// CamelCase reason of a definite device error.
pub fn error_reason(e: &ClientError) -> ActionReason {
    match e {
        ClientError::ServiceUnsupported { service, .. } => {
            ActionReason::ServiceUnsupported(*service)
        }
        ClientError::Unavailable { .. } | ClientError::DeadlineExceeded { .. } => {
            ActionReason::DeviceUnavailable
        }
        ClientError::Rpc { .. } => ActionReason::ActionFailed,
        other => ActionReason::Client(client_reason(other)),
    }
}

pub(crate) fn is_not_found(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rpc {
            code: Code::NotFound,
            ..
        }
    )
}

/// What a dispatched RPC answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Accepted; the details as JSON.
    Accepted(Value),
    /// FactoryReset.Start's answer.
    FactoryReset(FactoryResetOutcome),
}

/// Interprets what a dispatched RPC answered (pure).
pub fn interpret(kind: ActionKind, answer: Result<Answer, ClientError>) -> Outcome {
    match answer {
        Ok(Answer::FactoryReset(fr)) => interpret_factory_reset(fr),
        Ok(Answer::Accepted(detail)) => Outcome::Succeeded {
            message: format!("{kind} accepted by the device"),
            detail,
        },
        Err(e) if is_ambiguous(&e) => Outcome::Unclear {
            message: format!(
                "{kind} was sent but no clear answer came back ({e}); the device is observed to learn the outcome, the request is not sent again"
            ),
        },
        Err(e) => Outcome::Failed {
            reason: error_reason(&e),
            message: format!("{kind} refused by the device: {e}"),
            detail: None,
        },
    }
}

pub(crate) fn interpret_factory_reset(fr: FactoryResetOutcome) -> Outcome {
    let detail = json!({ "factoryReset": serde_json::to_value(&fr).unwrap_or(Value::Null) });
    match fr {
        FactoryResetOutcome::Started => Outcome::Succeeded {
            message: "FactoryReset started: the device wipes its storage and reboots".into(),
            detail,
        },
        FactoryResetOutcome::ConnectionClosed { detail: why } => Outcome::Succeeded {
            message: format!(
                "FactoryReset sent; the device closed the connection without answering, as it does when the reset starts ({why})"
            ),
            detail,
        },
        FactoryResetOutcome::Error {
            factory_os_unsupported,
            zero_fill_unsupported,
            detail: why,
            ..
        } => {
            let reason = if factory_os_unsupported {
                ActionReason::FactoryOSUnsupported
            } else if zero_fill_unsupported {
                ActionReason::ZeroFillUnsupported
            } else {
                ActionReason::FactoryResetRefused
            };
            Outcome::Failed {
                reason,
                message: format!("FactoryReset refused by the device: {why}"),
                detail: Some(detail),
            }
        }
    }
}

/// What the device shows about a dispatched action (pure decision over the
/// reads of the executor's `observe`).
#[derive(Debug, Clone)]
pub enum Reading {
    /// RebootStatus: (active, count).
    Reboot(Result<(bool, u32), ClientError>),
    /// File.Get hash of the path: Ok(sha256) / NotFound.
    FileHash(Result<String, ClientError>),
    /// File.Stat of the path.
    FileStat(Result<usize, ClientError>),
    /// Nothing can be read for this kind.
    Nothing,
}

/// Decides a dispatched action's outcome from a device reading (pure).
pub fn judge(kind: ActionKind, rec: &DispatchRecord, reading: Reading) -> Outcome {
    let unknown = |message: String| Outcome::Failed {
        reason: ActionReason::ActionOutcomeUnknown,
        message,
        detail: None,
    };
    let not_applied = |message: String, observed: Value| Outcome::Failed {
        reason: ActionReason::ActionNotApplied,
        message: format!(
            "{message}; the request was not sent again — create a new action to retry"
        ),
        detail: Some(observed),
    };
    let unclear = |e: &ClientError| Outcome::Unclear {
        message: format!(
            "waiting for the device to answer so the outcome of {kind} can be read: {e}"
        ),
    };
    match reading {
        Reading::Nothing => unknown(format!(
            "{kind} was dispatched but its answer was lost (controller restart or broken connection), and it leaves nothing the controller can read back; check the device"
        )),
        Reading::Reboot(Err(e)) | Reading::FileHash(Err(e)) | Reading::FileStat(Err(e))
            if is_ambiguous(&e) =>
        {
            unclear(&e)
        }
        Reading::Reboot(Err(e)) => unknown(format!(
            "the outcome of {kind} cannot be read back: RebootStatus failed: {e}"
        )),
        Reading::Reboot(Ok((active, count))) => {
            let observed = json!({ "rebootActive": active, "rebootCount": count });
            let Some(before) = rec.reboot_count_before else {
                return unknown(format!(
                    "the outcome of {kind} cannot be read back: no reboot count was recorded before dispatch"
                ));
            };
            let rebooted = count > before;
            match kind {
                ActionKind::Reboot | ActionKind::FactoryReset => {
                    if rebooted || active {
                        let what = if rebooted {
                            format!("the device rebooted (reboot count {before} -> {count})")
                        } else {
                            "a reboot is pending on the device".to_owned()
                        };
                        Outcome::Succeeded {
                            message: format!(
                                "{kind} took effect, read back from the device: {what}"
                            ),
                            detail: observed,
                        }
                    } else {
                        not_applied(
                            format!(
                                "the device shows no sign of the {kind}: reboot count unchanged at {count} and no reboot pending"
                            ),
                            observed,
                        )
                    }
                }
                ActionKind::CancelReboot => {
                    if rebooted {
                        not_applied(
                            format!(
                                "the reboot to be cancelled ran (reboot count {before} -> {count})"
                            ),
                            observed,
                        )
                    } else if active {
                        not_applied("a reboot is still pending on the device".into(), observed)
                    } else {
                        Outcome::Succeeded {
                            message: "CancelReboot took effect, read back from the device: no reboot pending".into(),
                            detail: observed,
                        }
                    }
                }
                _ => unknown(format!("{kind} cannot be judged from RebootStatus")),
            }
        }
        Reading::FileHash(result) => {
            let want = rec.content_sha256.clone().unwrap_or_default();
            match result {
                Ok(sha) if sha == want => Outcome::Succeeded {
                    message: format!(
                        "FilePut took effect, read back from the device: the file's SHA-256 is {sha}"
                    ),
                    detail: json!({ "sha256": sha }),
                },
                Ok(sha) => not_applied(
                    format!("the file on the device hashes to {sha}, not to the content's {want}"),
                    json!({ "sha256": sha }),
                ),
                Err(e) if is_not_found(&e) => not_applied(
                    "the file is not on the device".into(),
                    json!({ "exists": false }),
                ),
                Err(e) => unknown(format!("the outcome of FilePut cannot be read back: {e}")),
            }
        }
        Reading::FileStat(result) => match result {
            Err(e) if is_not_found(&e) => Outcome::Succeeded {
                message: "FileRemove took effect, read back from the device: the file is gone"
                    .into(),
                detail: json!({ "exists": false }),
            },
            Ok(_) => not_applied(
                "the file is still on the device".into(),
                json!({ "exists": true }),
            ),
            Err(e) => unknown(format!(
                "the outcome of FileRemove cannot be read back: {e}"
            )),
        },
    }
}

/// What a later reconcile sees of a dispatched action.
#[derive(Debug, Clone)]
pub enum Seen<'a> {
    /// The dispatch record in `status.result` is unreadable.
    NoRecord,
    /// The device cannot be reached: why.
    Unreachable(String),
    /// What the device shows, against the record.
    Read(&'a DispatchRecord, Reading),
}

/// When a dispatched action may be concluded, counted from `startTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Before this, the dispatch may still be in flight ([`settle_time`]).
    pub settle: Duration,
    /// After this, an outcome still unclear is unknown ([`outcome_window`]).
    pub outcome: Duration,
}

/// Decides the outcome of a dispatched action observed `elapsed` after it
/// started (pure). The rules, in order:
/// - no readable record: Failed/ActionOutcomeUnknown (nothing to judge
///   against; it is never sent again);
/// - device unreachable: Unclear;
/// - otherwise the device reading is judged ([`judge`]);
/// - before the settle time, a failure the device did not state itself
///   (anything but ActionFailed) is Unclear: the dispatch may still be in
///   flight, so no effect is not yet proof of none;
/// - at or after the outcome window, Unclear becomes
///   Failed/ActionOutcomeUnknown.
pub fn conclude_observed(
    kind: ActionKind,
    invocation: &str,
    seen: Seen<'_>,
    elapsed: Duration,
    windows: Windows,
) -> Outcome {
    let outcome = match seen {
        Seen::NoRecord => Outcome::Failed {
            reason: ActionReason::ActionOutcomeUnknown,
            message: format!(
                "{kind} was marked as dispatched (invocation {invocation}) but its dispatch record is unreadable; it was not sent again — check the device"
            ),
            detail: None,
        },
        Seen::Unreachable(message) => Outcome::Unclear {
            message: format!("cannot reach the device to read the outcome: {message}"),
        },
        Seen::Read(rec, reading) => judge(kind, rec, reading),
    };
    let outcome = match outcome {
        Outcome::Failed {
            reason, message, ..
        } if elapsed < windows.settle && reason != ActionReason::ActionFailed => Outcome::Unclear {
            message: format!(
                "{message} (not concluded before {}s after dispatch, in case the dispatch is still in flight)",
                windows.settle.as_secs()
            ),
        },
        other => other,
    };
    match outcome {
        Outcome::Unclear { message } if elapsed >= windows.outcome => Outcome::Failed {
            reason: ActionReason::ActionOutcomeUnknown,
            message: format!(
                "{kind} was dispatched {}s ago and its outcome could not be read within {}s: {message}; it was not sent again — check the device",
                elapsed.as_secs(),
                windows.outcome.as_secs()
            ),
            detail: None,
        },
        other => other,
    }
}

/// Answers of dispatched actions whose status write has not landed yet (the
/// API server failed just then), by invocation ID, so that the next
/// reconcile writes the answer the device gave instead of observing, and
/// possibly concluding ActionOutcomeUnknown for a kind that leaves nothing
/// to read back. Only a controller restart loses them; that is what the
/// observation path is for.
#[derive(Debug, Default)]
pub struct PendingAnswers(Mutex<HashMap<String, Outcome>>);

impl PendingAnswers {
    pub(crate) fn put(&self, invocation: &str, outcome: Outcome) {
        self.0
            .lock()
            .expect("answers lock")
            .insert(invocation.to_owned(), outcome);
    }

    pub(crate) fn get(&self, invocation: &str) -> Option<Outcome> {
        self.0
            .lock()
            .expect("answers lock")
            .get(invocation)
            .cloned()
    }

    pub(crate) fn remove(&self, invocation: &str) {
        self.0.lock().expect("answers lock").remove(invocation);
    }
}
