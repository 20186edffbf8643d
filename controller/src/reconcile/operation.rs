//! The DeviceOperation reconciler: read-only gNOI probes, run once per
//! generation, with structured results in status.
//!
//! ```text
//!  observe: fresh object ──> step (pure) ──┬─ Start  ─> device + target ─> Running ─> execute ─> bound ─> spill? ─> terminal
//!                                          ├─ ExpireIn(d) / Expire (ttlSecondsAfterFinished)
//!                                          ├─ Done (terminal for this generation: never re-run)
//!                                          └─ OutOfScope (--device serves another device)
//! ```
//!
//! * **Once.** A terminal phase whose `observedGeneration` equals the
//!   object's generation is done: resyncs, restarts and the status writes'
//!   own watch events never re-run it. The decision reads the object fresh
//!   from the API server, not from the watch cache, which may still hold
//!   the Running copy the reconciler itself replaced. A new generation (a
//!   spec edit; the spec is not immutable, as upstream) runs again.
//! * **Results.** Each kind yields one `outputs[]` entry whose `command` is
//!   the kind and whose `output` is indented JSON of the client's result
//!   struct, plus a one-line `message` ("3 ping replies received").
//! * **Redacted.** GNOIFileGet text passes the secret filter of
//!   [`super::redact`] before anything is stored (`redacted: true`).
//! * **Bounded.** An output up to [`OutputLimits::inline_bytes`] stays
//!   inline; a larger one is written whole to the ConfigMap
//!   `<name>-output` (key `output`, controller owner reference to the
//!   operation; a ConfigMap of that name owned by anything else is never
//!   overwritten) and the inline output becomes a short preview ending in
//!   `<truncated; see artifactURIs>`, `truncated: true`, with
//!   `artifactURIs: [configmap://<ns>/<name>-output/output]`.
//! * **Fail fast.** A kind whose gNOI service the device answered
//!   UNIMPLEMENTED (now or within the capability cache's TTL) ends Failed
//!   with reason `<Service>ServiceUnsupported`, e.g.
//!   `SystemServiceUnsupported`; within the TTL no RPC is sent.
//! * **TTL.** With `ttlSecondsAfterFinished > 0` the operation (and its
//!   spill ConfigMap) is deleted that long after `completionTime`, with a
//!   Normal `Expired` Event.
//! * **Events** on transitions only: `Running`, then `Succeeded` (Normal)
//!   or the failure reason (Warning); a wait for the device (`NoTransport`)
//!   is announced once per reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

use super::engine::{self, DeviceLookupError, read_device, update_status, write_status};
use super::target::{resolve_cli_target, resolve_target};
use super::{Context, MANAGER, ReconcileError, ns_name};
use crate::client::cli::{CliError, CliPool, CliTarget, CommandOutput, HostKeys};
use crate::client::system::{L4Protocol, PingParams, TracerouteParams};
use crate::client::{self, ClientError, DeviceClient};
use crate::conditions;
use crate::crd::operation::conditions::READY;
use crate::crd::operation::{
    CAPTURE_NAME_PATTERN, CertArgs, FILE_WRITING_MODIFIERS, MAX_COMMANDS, Operation, OperationKind,
    OperationOutput, OperationPhase, READ_ONLY_COMMANDS, TracerouteProtocol, command_pattern,
};
use crate::crd::{DeviceOperation, DeviceOperationStatus};
use crate::reason::{OperationReason, client_reason};
use crate::telemetry::OperationLabels;

/// Footer of a preview whose full output spilled to a ConfigMap.
pub const PREVIEW_FOOTER: &str = "\n<truncated; see artifactURIs>";
/// Data key of the spill ConfigMap.
pub const ARTIFACT_KEY: &str = "output";
/// How long to wait before retrying an operation whose device is missing or
/// not configured.
pub const RETRY_NO_TRANSPORT: Duration = Duration::from_secs(10);

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

/// A rendered result: the JSON output and a one-line summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Indented JSON.
    pub output: String,
    /// Summary for status.message.
    pub message: String,
    /// Secrets were removed from the output.
    pub redacted: bool,
}

fn render<T: Serialize>(value: &T, message: String) -> Result<Rendered, OperationFailure> {
    serde_json::to_string_pretty(value)
        .map(|output| Rendered {
            output,
            message,
            redacted: false,
        })
        .map_err(|e| OperationFailure::Render(e.to_string()))
}

fn millis(v: Option<i32>) -> Option<Duration> {
    v.filter(|m| *m > 0)
        .map(|m| Duration::from_millis(u64::try_from(m).unwrap_or(0)))
}

fn non_negative(field: &str, v: Option<i32>) -> Result<u32, OperationFailure> {
    match v {
        None => Ok(0),
        Some(n) => u32::try_from(n).map_err(|_| {
            OperationFailure::InvalidArguments(format!("{field} must not be negative, got {n}"))
        }),
    }
}

fn rfc3339(unix_nanos: u64) -> String {
    Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileGetOutput<'a> {
    path: &'a str,
    bytes_read: u64,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_algorithm: Option<&'a str>,
    hash_verified: bool,
    encoding: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
    content: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimeOutput {
    time: String,
    unix_nanos: u64,
    controller_offset_millis: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CsrOutput {
    can_generate: bool,
    key_type: &'static str,
    certificate_type: &'static str,
    key_size: u32,
}

fn args_missing(kind: OperationKind, block: &str) -> OperationFailure {
    OperationFailure::InvalidArguments(format!(
        "spec.operation.gnoi.{block} is required when spec.operation.kind is {kind}"
    ))
}

/// Runs `op` on the device and renders its result.
pub async fn execute(
    client: &DeviceClient,
    op: &Operation,
    limits: &OutputLimits,
) -> Result<Rendered, OperationFailure> {
    let gnoi = op.gnoi.clone().unwrap_or_default();
    match op.kind {
        OperationKind::ShowCommand | OperationKind::ConfigDiff | OperationKind::PacketCapture => {
            Err(OperationFailure::InvalidArguments(format!(
                "{} runs over the device CLI, not gNOI",
                op.kind
            )))
        }
        OperationKind::Ping => {
            let a = gnoi.ping.ok_or_else(|| args_missing(op.kind, "ping"))?;
            let p = PingParams {
                destination: a.destination,
                source: a.source.unwrap_or_default(),
                count: non_negative("spec.operation.gnoi.ping.count", a.count)?,
                interval: millis(a.interval_millis),
                wait: millis(a.wait_millis),
                size: non_negative("spec.operation.gnoi.ping.size", a.size)?,
                do_not_fragment: false,
                do_not_resolve: false,
            };
            let r = client.ping(&p).await?;
            let received = r
                .summary
                .as_ref()
                .map(|s| i64::from(s.received))
                .unwrap_or(r.replies.len() as i64);
            let noun = if received == 1 { "reply" } else { "replies" };
            render(&r, format!("{received} ping {noun} received"))
        }
        OperationKind::Traceroute => {
            let a = gnoi
                .traceroute
                .ok_or_else(|| args_missing(op.kind, "traceroute"))?;
            let p = TracerouteParams {
                destination: a.destination,
                source: a.source.unwrap_or_default(),
                max_hops: non_negative("spec.operation.gnoi.traceroute.maxHops", a.max_hops)?,
                protocol: match a.protocol {
                    None | Some(TracerouteProtocol::Icmp) => L4Protocol::Icmp,
                    Some(TracerouteProtocol::Udp) => L4Protocol::Udp,
                    Some(TracerouteProtocol::Tcp) => L4Protocol::Tcp,
                },
                wait: millis(a.wait_millis),
                do_not_resolve: false,
            };
            let r = client.traceroute(&p).await?;
            let hops = r
                .hops
                .iter()
                .map(|h| h.hop)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let noun = if hops == 1 { "hop" } else { "hops" };
            render(
                &r,
                format!("{hops} {noun} traced to {}", r.destination_address),
            )
        }
        OperationKind::Time => {
            let t = client.time().await?;
            let here = Timestamp::now().as_nanosecond();
            let offset = (i128::from(t.unix_nanos) - here) / 1_000_000;
            let out = TimeOutput {
                time: rfc3339(t.unix_nanos),
                unix_nanos: t.unix_nanos,
                controller_offset_millis: i64::try_from(offset).unwrap_or(i64::MAX),
            };
            let message = format!(
                "device time {} ({:+} ms from the controller clock)",
                out.time, out.controller_offset_millis
            );
            render(&out, message)
        }
        OperationKind::FileGet => {
            let a = gnoi.file.ok_or_else(|| args_missing(op.kind, "file"))?;
            let requested = match a.max_bytes {
                None | Some(0) => limits.default_file_get_bytes,
                Some(n) => u64::try_from(n).map_err(|_| {
                    OperationFailure::InvalidArguments(format!(
                        "spec.operation.gnoi.file.maxBytes must not be negative, got {n}"
                    ))
                })?,
            };
            // Never read more than a ConfigMap could hold.
            let max = requested.min(limits.max_artifact_bytes as u64);
            let c = client.file_get(&a.path, max).await?;
            let (encoding, content) = content_text(&c.content);
            let (content, redacted) = if encoding == "utf-8" {
                super::redact::redact(&content)
            } else {
                (content, false)
            };
            let out = FileGetOutput {
                path: &c.path,
                bytes_read: c.bytes_read,
                truncated: c.truncated,
                hash: c.hash.as_ref().map(|h| h.hex.as_str()),
                hash_algorithm: c.hash.as_ref().map(|h| h.method.as_str()),
                hash_verified: c.hash_verified,
                encoding,
                redacted,
                content,
            };
            let mut message = format!("read {} bytes of {}", c.bytes_read, c.path);
            if c.truncated {
                message.push_str(&format!(" (stopped at maxBytes {max})"));
            }
            if redacted {
                message.push_str("; secrets redacted");
            }
            let mut r = render(&out, message)?;
            r.redacted = redacted;
            Ok(r)
        }
        OperationKind::FileStat => {
            let a = gnoi.file.ok_or_else(|| args_missing(op.kind, "file"))?;
            let stats = client.file_stat(&a.path).await?;
            let message = match stats.as_slice() {
                [one] => format!(
                    "{}: {} bytes, permissions {}",
                    one.path, one.size, one.permissions
                ),
                many => format!("{} entries under {}", many.len(), a.path),
            };
            render(&stats, message)
        }
        OperationKind::CertGet => {
            let certs = client.get_certificates().await?;
            let noun = if certs.len() == 1 {
                "certificate"
            } else {
                "certificates"
            };
            render(&certs, format!("{} {noun} installed", certs.len()))
        }
        OperationKind::CanGenerateCsr => {
            let a: CertArgs = gnoi.cert.unwrap_or_default();
            let can = client
                .can_generate_csr(
                    client::cert::KeyType::KtRsa,
                    client::cert::CertificateType::CtX509,
                    a.key_size,
                )
                .await?;
            let out = CsrOutput {
                can_generate: can,
                key_type: "KT_RSA",
                certificate_type: "CT_X509",
                key_size: a.key_size,
            };
            render(&out, format!("canGenerate={can}"))
        }
        OperationKind::RebootStatus => {
            let s = client.reboot_status().await?;
            let state = if s.active { "active" } else { "inactive" };
            render(&s, format!("reboot {state}"))
        }
        OperationKind::OsVerify => {
            let v = client.os_verify().await?;
            let mut message = format!("running version: {}", v.version);
            if !v.activation_fail_message.is_empty() {
                message.push_str(&format!(
                    "; last activation failed: {}",
                    v.activation_fail_message
                ));
            }
            render(&v, message)
        }
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
fn volatile_config_line(l: &str) -> bool {
    let l = l.trim_start();
    l.starts_with("Building configuration")
        || l.starts_with("Current configuration :")
        || l.starts_with("! Last configuration change")
        || l.starts_with("! NVRAM config last updated")
        || l.starts_with("! No configuration change since last restart")
}

fn normalise_config(text: &str) -> String {
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

/// Runs `commands` in one session of the CLI class, returning the session
/// to the pool when it stayed healthy.
pub async fn run_cli(pool: &CliPool, target: &CliTarget, commands: &[String]) -> CliRun {
    if target.host_keys == HostKeys::InsecureAcceptAny {
        tracing::warn!(device = %target.device,
            "SSH host key NOT verified (spec.ssh.insecureAcceptAnyHostKey): the output and the login password can be read by anyone on the path");
    }
    let mut session = match pool.session(target).await {
        Ok(s) => s,
        Err(e) => {
            return CliRun {
                outputs: Vec::new(),
                failure: Some(e),
            };
        }
    };
    let mut run = CliRun::default();
    for c in commands {
        match session.run(c).await {
            Ok(o) => run.outputs.push(o),
            Err(e) => {
                run.failure = Some(e);
                break;
            }
        }
    }
    if run.failure.is_none() {
        session.release();
    }
    run
}

fn set_ready(
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

fn owned_by(cm: &ConfigMap, uid: &str) -> bool {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

async fn write_artifact(
    ctx: &Context,
    op: &DeviceOperation,
    ns: &str,
    name: &str,
    content: BTreeMap<String, String>,
) -> Result<Vec<String>, OperationFailure> {
    let uris = content
        .keys()
        .map(|k| artifact_uri(ns, name, k))
        .collect::<Vec<_>>();
    let cm_name = artifact_name(name);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let write_err = |e: kube::Error| OperationFailure::ArtifactWrite {
        name: cm_name.clone(),
        message: e.to_string(),
    };
    let uid = op.metadata.uid.clone().unwrap_or_default();
    if let Some(existing) = api.get_opt(&cm_name).await.map_err(write_err)?
        && !owned_by(&existing, &uid)
    {
        return Err(OperationFailure::ArtifactConflict(cm_name));
    }
    let owner = op
        .controller_owner_ref(&())
        .ok_or_else(|| OperationFailure::ArtifactWrite {
            name: cm_name.clone(),
            message: "the DeviceOperation has no uid".into(),
        })?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            namespace: Some(ns.to_owned()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGER.to_owned(),
                ),
                ("ops.cisco.vk/deviceoperation".to_owned(), name.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(content),
        ..ConfigMap::default()
    };
    api.patch(
        &cm_name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(write_err)?;
    Ok(uris)
}

async fn expire(
    ctx: &Context,
    op: &DeviceOperation,
    ns: &str,
    name: &str,
) -> Result<(), ReconcileError> {
    ctx.publish(
        op,
        EventType::Normal,
        OperationReason::Expired.as_str(),
        "Cleanup",
        format!(
            "deleted {}s after it finished (ttlSecondsAfterFinished)",
            op.spec.ttl_seconds_after_finished.unwrap_or_default()
        ),
    )
    .await;
    // The owner reference lets the garbage collector remove the ConfigMap;
    // deleting it here too keeps clusters without one tidy.
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let uid = op.metadata.uid.clone().unwrap_or_default();
    if let Some(cm) = cms.get_opt(&artifact_name(name)).await?
        && owned_by(&cm, &uid)
    {
        let _ = cms
            .delete(&artifact_name(name), &DeleteParams::default())
            .await;
    }
    let api: Api<DeviceOperation> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reconciles one DeviceOperation.
pub async fn reconcile(
    obj: Arc<DeviceOperation>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<DeviceOperation> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(op) = api.get_opt(&name).await? else {
        return Ok(KubeAction::await_change());
    };
    if op.metadata.deletion_timestamp.is_some() {
        return Ok(KubeAction::await_change());
    }
    let device_name = op.spec.device_ref.name.clone();
    engine::record_device(&device_name);
    let in_scope = ctx.settings.scope.serves_device(&device_name);
    let generation = op.metadata.generation;
    let now = Timestamp::now();
    match step(&OpView::of(&op, in_scope), now) {
        OpStep::OutOfScope | OpStep::Done => return Ok(KubeAction::await_change()),
        OpStep::ExpireIn(d) => return Ok(KubeAction::requeue(d)),
        OpStep::Expire => {
            expire(&ctx, &op, &ns, &name).await?;
            return Ok(KubeAction::await_change());
        }
        OpStep::Start => {}
    }

    let kind = op.spec.operation.kind;
    let previous = op.status.clone().unwrap_or_default();
    let fail =
        |e: OperationFailure| finished_status(&previous, kind, &Err(e.into()), generation, now);

    let policy = Policy {
        configdiff_allowed: ctx.settings.configdiff_allowed(&ns),
        gnoi_disabled: ctx.settings.gnoi.disabled,
    };
    let commands = match admit(&op.spec.operation, &ns, policy) {
        Ok(c) => c,
        Err(e) => return finish(&ctx, &api, &op, kind, fail(e)).await,
    };

    // Observe the device: the operation waits (Pending) while its device
    // is missing or cannot be configured.
    let transport = match read_device(&ctx, &ns, &device_name).await {
        Err(DeviceLookupError::Api { source, .. }) => return Err(source.into()),
        Err(e) => Err(e.to_string()),
        Ok(dev) if kind.is_cli() => resolve_cli_target(
            &ctx.client,
            &ns,
            &device_name,
            &dev.spec,
            &ctx.settings.gnoi,
        )
        .await
        .map(Transport::Cli)
        .map_err(|e| format!("CiscoDevice {device_name:?} CLI cannot be reached: {e}")),
        Ok(dev) => resolve_target(
            &ctx.client,
            &ns,
            &device_name,
            &dev.spec,
            &ctx.settings.gnoi,
        )
        .await
        .map(Transport::Gnoi)
        .map_err(|e| format!("CiscoDevice {device_name:?} cannot be reached: {e}")),
    };
    let transport = match transport {
        Ok(t) => t,
        Err(message) => {
            let reason = OperationReason::NoTransport;
            let waiting = waiting_status(&previous, reason, message.clone(), generation, now);
            let announced = previous.phase == Some(OperationPhase::Pending)
                && previous.message.as_deref() == Some(message.as_str());
            if waiting != previous && write_status(&api, &op, waiting).await?.is_none() {
                return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
            }
            if !announced {
                ctx.publish(&op, EventType::Warning, reason.as_str(), "Observe", message)
                    .await;
            }
            return Ok(KubeAction::requeue(RETRY_NO_TRANSPORT));
        }
    };
    let transport = match transport {
        Transport::Gnoi(target) => match ctx.pool.get_or_create(&target) {
            Ok(c) => Runner::Gnoi(c),
            Err(e) => return finish(&ctx, &api, &op, kind, fail(e.into())).await,
        },
        Transport::Cli(target) => Runner::Cli(target),
    };

    let running = running_status(&previous, generation, now);
    let Some(running_op) = write_status(&api, &op, running.clone()).await? else {
        // Written by someone else since it was read: nothing ran yet, decide
        // again on the fresh object.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    ctx.publish(
        &op,
        EventType::Normal,
        OperationReason::Running.as_str(),
        "Execute",
        format!("{kind} device={device_name}"),
    )
    .await;
    tracing::info!(namespace = %ns, operation = %name, %kind, device = %device_name, "running");

    let limits = &ctx.settings.output_limits;
    let produced: Result<(Vec<Piece>, Result<String, OperationFailure>), OperationFailure> =
        match tokio::time::timeout(limits.execute_timeout, async {
            match &transport {
                Runner::Gnoi(client) => {
                    execute(client, &op.spec.operation, limits).await.map(|r| {
                        let piece = Piece {
                            command: kind.as_str().to_owned(),
                            text: Some(r.output),
                            err: None,
                            redacted: r.redacted,
                        };
                        (vec![piece], Ok(r.message))
                    })
                }
                Runner::Cli(target) => {
                    let run = run_cli(&ctx.cli, target, &commands).await;
                    Ok(judge_cli(&op.spec.operation, &commands, run))
                }
            }
        })
        .await
        {
            Err(_) => Err(OperationFailure::Timeout(limits.execute_timeout)),
            Ok(r) => r,
        };
    let hint = match kind {
        OperationKind::FileGet => "lower spec.operation.gnoi.file.maxBytes",
        OperationKind::PacketCapture => "clear or shrink the capture buffer on the device",
        _ => "run fewer or narrower commands (for example with | include or | section)",
    };
    let result: Result<Success, Failure> = match produced {
        Err(e) => Err(e.into()),
        Ok((pieces, verdict)) => match bound(pieces, limits, hint) {
            Err(e) => Err(e.into()),
            Ok(b) => {
                let uris = if b.spill.is_empty() {
                    Ok(Vec::new())
                } else {
                    write_artifact(&ctx, &op, &ns, &name, b.spill).await
                };
                match (uris, verdict) {
                    (Err(e), _) => Err(Failure {
                        error: e,
                        outputs: b.outputs,
                        artifact_uris: Vec::new(),
                    }),
                    (Ok(artifact_uris), Ok(message)) => Ok(Success {
                        outputs: b.outputs,
                        artifact_uris,
                        message,
                    }),
                    (Ok(artifact_uris), Err(error)) => Err(Failure {
                        error,
                        outputs: b.outputs,
                        artifact_uris,
                    }),
                }
            }
        },
    };
    let done = finished_status(&running, kind, &result, generation, Timestamp::now());
    // The result is written over the Running status it was produced under;
    // a change of metadata or spec in the meantime (the status is the
    // controller's alone) does not lose it.
    // Compared with the status as stored (the API server rounds times to
    // seconds), not as built.
    let stored = running_op.status.clone();
    let written = match write_status(&api, &running_op, done.clone()).await? {
        Some(w) => Some(w),
        None => {
            update_status(&api, &name, |fresh| {
                (fresh.status == stored).then(|| done.clone())
            })
            .await?
        }
    };
    if written.is_none() {
        tracing::warn!(operation = %name, %kind,
            "the status changed while the operation ran; its result was not written");
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    announce_finished(&ctx, &op, kind, &done).await
}

/// How an operation reaches its device.
enum Transport {
    Gnoi(crate::client::DeviceTarget),
    Cli(CliTarget),
}

/// The connected form of [`Transport`].
enum Runner {
    Gnoi(Arc<DeviceClient>),
    Cli(CliTarget),
}

/// Writes a terminal status over `op` as read (nothing ran) and announces it.
async fn finish(
    ctx: &Context,
    api: &Api<DeviceOperation>,
    op: &DeviceOperation,
    kind: OperationKind,
    status: DeviceOperationStatus,
) -> Result<KubeAction, ReconcileError> {
    if write_status(api, op, status.clone()).await?.is_none() {
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    announce_finished(ctx, op, kind, &status).await
}

/// Counts, logs and publishes a terminal status; the requeue for its TTL.
async fn announce_finished(
    ctx: &Context,
    op: &DeviceOperation,
    kind: OperationKind,
    status: &DeviceOperationStatus,
) -> Result<KubeAction, ReconcileError> {
    let phase = status.phase.unwrap_or(OperationPhase::Failed);
    let phase_str = match phase {
        OperationPhase::Succeeded => "Succeeded",
        OperationPhase::Failed => "Failed",
        OperationPhase::Cancelled => "Cancelled",
        OperationPhase::Pending => "Pending",
        OperationPhase::Running => "Running",
    };
    ctx.metrics
        .operations
        .get_or_create(&OperationLabels {
            kind: kind.as_str().to_owned(),
            phase: phase_str.to_owned(),
        })
        .inc();
    let reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| phase_str.to_owned());
    let message = status.message.clone().unwrap_or_default();
    tracing::info!(operation = %op.name_any(), %kind, phase = phase_str, %reason, "finished");
    let type_ = if phase == OperationPhase::Succeeded {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.publish(op, type_, &reason, "Execute", message).await;
    Ok(
        match op.spec.ttl_seconds_after_finished.filter(|t| *t > 0) {
            Some(ttl) => KubeAction::requeue(Duration::from_secs(u64::try_from(ttl).unwrap_or(0))),
            None => KubeAction::await_change(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
