//! The statuses a DeviceOperation goes through (pure): waiting, running,
//! and finished with its outputs.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::conditions;
use crate::crd::DeviceOperationStatus;
use crate::crd::operation::{OperationKind, OperationOutput, OperationPhase};
use crate::reason::OperationReason;

pub(crate) fn set_ready(
    s: &mut DeviceOperationStatus,
    ok: bool,
    reason: OperationReason,
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

/// Phase Pending while the device cannot be used (pure).
pub fn waiting_status(
    previous: &DeviceOperationStatus,
    reason: OperationReason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> DeviceOperationStatus {
    let mut s = previous.clone();
    s.phase = Some(OperationPhase::Pending);
    s.observed_generation = generation;
    set_ready(&mut s, false, reason, &message, generation, now);
    s.message = Some(message);
    s
}

/// Phase Running, with the results of any earlier run cleared (pure).
pub fn running_status(
    previous: &DeviceOperationStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> DeviceOperationStatus {
    let mut s = previous.clone();
    s.phase = Some(OperationPhase::Running);
    s.observed_generation = generation;
    s.start_time = Some(Time(now));
    s.completion_time = None;
    s.outputs.clear();
    s.artifact_uris.clear();
    let message = "operation is running".to_owned();
    set_ready(
        &mut s,
        false,
        OperationReason::Running,
        &message,
        generation,
        now,
    );
    s.message = Some(message);
    s
}

/// A successful result, bounded, with the URIs of what spilled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    /// The outputs as they stay in status.
    pub outputs: Vec<OperationOutput>,
    /// Where the spilled outputs live.
    pub artifact_uris: Vec<String>,
    /// Summary for status.message.
    pub message: String,
}

/// A failed result: the error, and the outputs that were produced before
/// it (CLI kinds keep every answer).
#[derive(Debug)]
pub struct Failure {
    /// What failed.
    pub error: OperationFailure,
    /// Outputs to keep; empty: one entry with the kind and the error.
    pub outputs: Vec<OperationOutput>,
    /// Where spilled outputs live.
    pub artifact_uris: Vec<String>,
}

/// The result of an operation whose outputs were bounded: a spill that
/// could not be written fails it whatever the verdict, keeping the
/// outputs; otherwise the verdict decides, with the URIs of what spilled
/// (pure).
// The result is a value the caller turns into status at once, never an
// error passed up with `?`: its size does not travel.
#[allow(clippy::result_large_err)]
pub fn conclude(
    outputs: Vec<OperationOutput>,
    uris: Result<Vec<String>, OperationFailure>,
    verdict: Result<String, OperationFailure>,
) -> Result<Success, Failure> {
    match (uris, verdict) {
        (Err(error), _) => Err(Failure {
            error,
            outputs,
            artifact_uris: Vec::new(),
        }),
        (Ok(artifact_uris), Ok(message)) => Ok(Success {
            outputs,
            artifact_uris,
            message,
        }),
        (Ok(artifact_uris), Err(error)) => Err(Failure {
            error,
            outputs,
            artifact_uris,
        }),
    }
}

impl From<OperationFailure> for Failure {
    fn from(error: OperationFailure) -> Self {
        Self {
            error,
            outputs: Vec::new(),
            artifact_uris: Vec::new(),
        }
    }
}

/// The terminal status (pure).
pub fn finished_status(
    running: &DeviceOperationStatus,
    kind: OperationKind,
    result: &Result<Success, Failure>,
    generation: Option<i64>,
    now: Timestamp,
) -> DeviceOperationStatus {
    let mut s = running.clone();
    s.observed_generation = generation;
    s.completion_time = Some(Time(now));
    if s.start_time.is_none() {
        s.start_time = Some(Time(now));
    }
    match result {
        Ok(ok) => {
            s.phase = Some(OperationPhase::Succeeded);
            s.outputs = ok.outputs.clone();
            s.artifact_uris = ok.artifact_uris.clone();
            set_ready(
                &mut s,
                true,
                OperationReason::Succeeded,
                &ok.message,
                generation,
                now,
            );
            s.message = Some(ok.message.clone());
        }
        Err(f) => {
            s.phase = Some(OperationPhase::Failed);
            let message = format!("{kind}: {}", f.error);
            s.outputs = if f.outputs.is_empty() {
                vec![OperationOutput {
                    command: kind.as_str().to_owned(),
                    output: None,
                    err: Some(f.error.to_string()),
                    truncated: false,
                    redacted: false,
                }]
            } else {
                f.outputs.clone()
            };
            s.artifact_uris = f.artifact_uris.clone();
            set_ready(&mut s, false, f.error.reason(), &message, generation, now);
            s.message = Some(message);
        }
    }
    s
}

pub(crate) fn owned_by(cm: &ConfigMap, uid: &str) -> bool {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}
