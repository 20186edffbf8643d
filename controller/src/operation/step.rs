//! The decision of a DeviceOperation: run it, or not ([`OpView`],
//! [`step`]), what admission refuses before anything is sent ([`admit`]),
//! and why it failed ([`OperationFailure`]).

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::client::cli::CliError;
use crate::client::{self, ClientError};
use crate::crd::DeviceOperation;
use crate::crd::operation::{Operation, OperationKind, OperationPhase};
use crate::reason::{OperationReason, client_reason};

/// Footer of a preview whose full output spilled to a ConfigMap.
pub const PREVIEW_FOOTER: &str = "\n<truncated; see artifactURIs>";

/// Data key of the spill ConfigMap.
pub const ARTIFACT_KEY: &str = "output";

/// Size limits of outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLimits {
    /// Largest output kept inline in status (64 KiB, as upstream).
    pub inline_bytes: usize,
    /// Largest sum of the inline outputs of one operation (256 KiB, as
    /// upstream); beyond it the largest outputs spill first.
    pub total_inline_bytes: usize,
    /// Size of the inline preview of a spilled output.
    pub preview_bytes: usize,
    /// Largest output written to a ConfigMap (which holds at most 1 MiB).
    pub max_artifact_bytes: usize,
    /// GNOIFileGet bytes read when `maxBytes` is unset or 0.
    pub default_file_get_bytes: u64,
    /// Longest an operation's device calls may take together.
    pub execute_timeout: Duration,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            inline_bytes: 64 * 1024,
            total_inline_bytes: 256 * 1024,
            preview_bytes: 2 * 1024,
            max_artifact_bytes: 900 * 1024,
            default_file_get_bytes: 64 * 1024,
            execute_timeout: Duration::from_secs(300),
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationFailure {
    /// The device call failed (including a service the device lacks).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The arguments cannot be sent.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The output is too large even for a ConfigMap.
    #[error("the output is {size} bytes, more than the {limit}-byte artifact limit; {hint}")]
    ArtifactTooLarge {
        /// Output size.
        size: usize,
        /// The limit.
        limit: usize,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// The device CLI session failed.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// A command is not on the read-only allowlist.
    #[error("{field} {command:?} is refused: {why}")]
    CommandNotAllowed {
        /// The field that holds it, e.g. `spec.operation.commands[2]`.
        field: String,
        /// The command.
        command: String,
        /// The rule it breaks.
        why: String,
    },
    /// The device refused some commands (their outputs carry the error).
    #[error("{failed} of {total} commands failed; first: {first}")]
    CommandsFailed {
        /// Commands the device refused.
        failed: usize,
        /// Commands run.
        total: usize,
        /// The first refused command and its error line.
        first: String,
    },
    /// ConfigDiff in a namespace the controller does not allow it in.
    #[error("ConfigDiff is not allowed in namespace {0:?} (CVK_OPS_CONFIGDIFF_ALLOWED_NAMESPACES)")]
    NamespaceNotAuthorized(String),
    /// The spill ConfigMap exists and belongs to something else.
    #[error(
        "ConfigMap {0:?} exists and is not owned by this DeviceOperation; it was left untouched"
    )]
    ArtifactConflict(String),
    /// Writing the spill ConfigMap failed.
    #[error("writing ConfigMap {name:?}: {message}")]
    ArtifactWrite {
        /// ConfigMap name.
        name: String,
        /// What failed.
        message: String,
    },
    /// The calls did not finish in time.
    #[error("the device calls did not finish within {0:?}")]
    Timeout(Duration),
    /// The result could not be rendered as JSON.
    #[error("rendering the result: {0}")]
    Render(String),
}

impl OperationFailure {
    /// Stable snake_case category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Client(e) => e.category(),
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::ArtifactTooLarge { .. } => "artifact_too_large",
            Self::Cli(e) => e.category(),
            Self::CommandNotAllowed { .. } => "command_not_allowed",
            Self::CommandsFailed { .. } => "command_failed",
            Self::NamespaceNotAuthorized(_) => "namespace_not_authorized",
            Self::ArtifactConflict(_) => "artifact_conflict",
            Self::ArtifactWrite { .. } => "artifact_write_failed",
            Self::Timeout(_) => "timeout",
            Self::Render(_) => "render",
        }
    }

    /// The reason for status and Events; a missing service is named.
    pub fn reason(&self) -> OperationReason {
        match self {
            Self::Client(ClientError::ServiceUnsupported { service, .. }) => {
                OperationReason::ServiceUnsupported(*service)
            }
            Self::Client(e) => OperationReason::Client(client_reason(e)),
            Self::InvalidArguments(_) => OperationReason::InvalidArguments,
            Self::ArtifactTooLarge { .. } => OperationReason::ArtifactTooLarge,
            Self::Cli(e) => OperationReason::Cli(e.reason()),
            Self::CommandNotAllowed { .. } => OperationReason::CommandNotAllowed,
            Self::CommandsFailed { .. } => OperationReason::CommandFailed,
            Self::NamespaceNotAuthorized(_) => OperationReason::NamespaceNotAuthorized,
            Self::ArtifactConflict(_) | Self::ArtifactWrite { .. } => {
                OperationReason::ArtifactWriteFailed
            }
            Self::Timeout(_) => OperationReason::DeadlineExceeded,
            Self::Render(_) => OperationReason::RenderFailed,
        }
    }
}

/// The name status uses for a service: System, File, OS, Cert,
/// FactoryReset, GNMI.
pub fn service_name(s: client::GnoiService) -> &'static str {
    match s {
        client::GnoiService::System => "System",
        client::GnoiService::File => "File",
        client::GnoiService::Os => "OS",
        client::GnoiService::Cert => "Cert",
        client::GnoiService::FactoryReset => "FactoryReset",
        client::GnoiService::Gnmi => "GNMI",
    }
}

/// What the step reads from an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpView {
    /// metadata.generation.
    pub generation: Option<i64>,
    /// status.phase.
    pub phase: Option<OperationPhase>,
    /// status.observedGeneration.
    pub observed_generation: Option<i64>,
    /// status.completionTime.
    pub completion_time: Option<Timestamp>,
    /// spec.ttlSecondsAfterFinished.
    pub ttl_seconds: Option<i32>,
    /// The controller serves the operation's device.
    pub in_scope: bool,
}

impl OpView {
    /// The view of `op`, served when `in_scope`.
    pub fn of(op: &DeviceOperation, in_scope: bool) -> Self {
        let s = op.status.as_ref();
        Self {
            generation: op.metadata.generation,
            phase: s.and_then(|s| s.phase),
            observed_generation: s.and_then(|s| s.observed_generation),
            completion_time: s.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
            ttl_seconds: op.spec.ttl_seconds_after_finished,
            in_scope,
        }
    }
}

/// The decision for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStep {
    /// Another controller serves its device.
    OutOfScope,
    /// Run it (new, waiting for its device, interrupted, or a new
    /// generation).
    Start,
    /// Finished for this generation; nothing to do.
    Done,
    /// Finished; delete it after this long.
    ExpireIn(Duration),
    /// Finished and its TTL passed: delete it.
    Expire,
}

/// Decides what to do with an operation (pure).
pub fn step(v: &OpView, now: Timestamp) -> OpStep {
    if !v.in_scope {
        return OpStep::OutOfScope;
    }
    let finished =
        v.phase.is_some_and(OperationPhase::is_terminal) && v.observed_generation == v.generation;
    if !finished {
        return OpStep::Start;
    }
    match (v.ttl_seconds.filter(|t| *t > 0), v.completion_time) {
        (Some(ttl), Some(done)) => {
            let due = done + jiff::SignedDuration::from_secs(i64::from(ttl));
            if now >= due {
                OpStep::Expire
            } else {
                let left = now.duration_until(due);
                OpStep::ExpireIn(Duration::try_from(left).unwrap_or(Duration::from_secs(1)))
            }
        }
        _ => OpStep::Done,
    }
}

/// What the controller's configuration allows an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// ConfigDiff may run in the operation's namespace.
    pub configdiff_allowed: bool,
    /// gNOI is disabled (`gnoi.disabled`).
    pub gnoi_disabled: bool,
}

/// Checks an operation before its device is touched (pure): the commands a
/// CLI kind runs (empty for a gNOI kind), or why it fails at once. A CLI
/// kind's commands are checked first, then ConfigDiff's namespace, then
/// whether gNOI is on for a gNOI kind.
pub fn admit(op: &Operation, ns: &str, policy: Policy) -> Result<Vec<String>, OperationFailure> {
    let kind = op.kind;
    let commands = if kind.is_cli() {
        cli_commands(op)?
    } else {
        Vec::new()
    };
    if kind == OperationKind::ConfigDiff && !policy.configdiff_allowed {
        return Err(OperationFailure::NamespaceNotAuthorized(ns.to_owned()));
    }
    if !kind.is_cli() && policy.gnoi_disabled {
        return Err(OperationFailure::Client(ClientError::Disabled));
    }
    Ok(commands)
}
