//! The statuses an IOSXEOperationalAction goes through (pure): waiting,
//! rejected, running with the marker, and the outcome.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::*;
use crate::conditions;
use crate::crd::action::{ActionPhase, IOSXEOperationalActionStatus};
use crate::reason::ActionReason;

pub(crate) fn set_ready(
    s: &mut IOSXEOperationalActionStatus,
    ok: bool,
    reason: ActionReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    conditions::set_ready(
        &mut s.conditions,
        ok,
        reason.as_str(),
        message,
        generation,
        now,
    );
}

/// Pending while the device, its target or its Lease is not available
/// (pure).
pub fn waiting_status(
    prev: &IOSXEOperationalActionStatus,
    reason: ActionReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.phase = Some(ActionPhase::Pending);
    s.observed_generation = generation;
    s.reason = Some(reason.as_str().to_owned());
    s.message = Some(message.to_owned());
    s.failure_reason = None;
    set_ready(&mut s, false, reason, message, generation, now);
    s
}

/// Rejected: refused before anything mutating reached the device (pure).
pub fn rejected_status(
    prev: &IOSXEOperationalActionStatus,
    r: &Rejection,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.phase = Some(ActionPhase::Rejected);
    s.observed_generation = generation;
    s.reason = Some(r.reason.as_str().to_owned());
    s.failure_reason = Some(r.reason.as_str().to_owned());
    s.message = Some(r.message.clone());
    s.completion_time = Some(Time(now));
    s.invocation_id = None;
    set_ready(&mut s, false, r.reason, &r.message, generation, now);
    s
}

/// Running with the marker and the dispatch record (pure).
pub fn running_status(
    prev: &IOSXEOperationalActionStatus,
    invocation: &str,
    rec: &DispatchRecord,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.phase = Some(ActionPhase::Running);
    s.observed_generation = generation;
    s.invocation_id = Some(invocation.to_owned());
    s.start_time = Some(Time(now));
    s.completion_time = None;
    s.reason = Some(ActionReason::Dispatching.as_str().into());
    s.failure_reason = None;
    let message = format!(
        "{} is being sent to the device (invocation {invocation})",
        rec.kind
    );
    s.message = Some(message.clone());
    s.result = Some(
        ResultDoc {
            dispatch: rec.clone(),
            ..ResultDoc::default()
        }
        .to_json(),
    );
    set_ready(
        &mut s,
        false,
        ActionReason::Running,
        &message,
        generation,
        now,
    );
    s
}

/// The status for an outcome (pure): terminal for Succeeded/Failed, Running
/// with the reason `Observing` for Unclear.
pub fn outcome_status(
    prev: &IOSXEOperationalActionStatus,
    outcome: &Outcome,
    after_restart: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> IOSXEOperationalActionStatus {
    let mut s = prev.clone();
    s.observed_generation = generation;
    let mut doc = ResultDoc::parse(prev).unwrap_or_default();
    let mut put_detail = |d: Option<&Value>| {
        if let Some(d) = d {
            if after_restart {
                doc.observed = Some(d.clone());
            } else {
                doc.response = Some(d.clone());
            }
        }
    };
    match outcome {
        Outcome::Succeeded { message, detail } => {
            put_detail(Some(detail));
            s.phase = Some(ActionPhase::Succeeded);
            s.reason = Some(ActionReason::Succeeded.as_str().into());
            s.failure_reason = None;
            s.message = Some(message.clone());
            s.completion_time = Some(Time(now));
            set_ready(
                &mut s,
                true,
                ActionReason::Succeeded,
                message,
                generation,
                now,
            );
        }
        Outcome::Failed {
            reason,
            message,
            detail,
        } => {
            put_detail(detail.as_ref());
            s.phase = Some(ActionPhase::Failed);
            s.reason = Some(reason.as_str().to_owned());
            s.failure_reason = Some(reason.as_str().to_owned());
            s.message = Some(message.clone());
            s.completion_time = Some(Time(now));
            set_ready(&mut s, false, *reason, message, generation, now);
        }
        Outcome::Unclear { message } => {
            s.phase = Some(ActionPhase::Running);
            s.reason = Some(ActionReason::Observing.as_str().into());
            s.message = Some(message.clone());
            set_ready(
                &mut s,
                false,
                ActionReason::Observing,
                message,
                generation,
                now,
            );
        }
    }
    if s.start_time.is_none() {
        s.start_time = Some(Time(now));
    }
    s.result = Some(doc.to_json());
    s
}

// ---- API writes ----------------------------------------------------------
