//! Typed conditions and the pure merge that keeps `lastTransitionTime`.
//!
//! A condition's `lastTransitionTime` moves only when its `status` changes;
//! a new reason or message on the same status keeps the old time, as the
//! Kubernetes API conventions ask.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::common::{ConditionStatus, READY_CONDITION};

/// A condition the controller wants to hold, before it is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type, e.g. `Ready`.
    pub type_: &'static str,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

impl DesiredCondition {
    /// A condition of `type_`.
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Longest condition message the API accepts (32 KiB); longer ones are cut.
const MAX_MESSAGE: usize = 32 * 1024;

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Merges `desired` into `current`: conditions of other types are kept,
/// the one of the same type is replaced, and its `lastTransitionTime` is
/// kept unless the status changed. Returns whether the list changed in
/// anything but order.
pub fn merge(
    current: &mut Vec<Condition>,
    desired: DesiredCondition,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let message = truncate_utf8(&desired.message, MAX_MESSAGE).to_owned();
    let status = desired.status.as_str().to_owned();
    match current.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let transition = existing.status != status;
            let changed = transition
                || existing.reason != desired.reason
                || existing.message != message
                || existing.observed_generation != observed_generation;
            if transition {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = desired.reason;
            existing.message = message;
            existing.observed_generation = observed_generation;
            changed
        }
        None => {
            current.push(Condition {
                type_: desired.type_.to_owned(),
                status,
                reason: desired.reason,
                message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Sets the `Ready` condition (True when `ok`) in `conditions`, through
/// [`merge`]: the shape every reconciled kind uses for its summary.
pub fn set_ready(
    conditions: &mut Vec<Condition>,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    merge(
        conditions,
        DesiredCondition::new(READY_CONDITION, ConditionStatus::from(ok), reason, message),
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let mut conds = Vec::new();
        let ready = |s, r: &str| DesiredCondition::new("Ready", s, r, "m");
        assert!(merge(
            &mut conds,
            ready(ConditionStatus::False, "Running"),
            Some(1),
            at(10)
        ));
        assert_eq!(conds[0].last_transition_time, Time(at(10)));
        // Same status, new reason: changed, time kept.
        assert!(merge(
            &mut conds,
            ready(ConditionStatus::False, "Failed"),
            Some(1),
            at(20)
        ));
        assert_eq!(conds[0].last_transition_time, Time(at(10)));
        assert_eq!(conds[0].reason, "Failed");
        // Identical: unchanged.
        assert!(!merge(
            &mut conds,
            ready(ConditionStatus::False, "Failed"),
            Some(1),
            at(30)
        ));
        // Status flips: time moves.
        assert!(merge(
            &mut conds,
            ready(ConditionStatus::True, "Succeeded"),
            Some(1),
            at(40)
        ));
        assert_eq!(conds[0].last_transition_time, Time(at(40)));
        // Another type is added beside it.
        assert!(merge(
            &mut conds,
            DesiredCondition::new("Reachable", ConditionStatus::True, "Answered", ""),
            None,
            at(50)
        ));
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0].type_, "Ready");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
