//! The DeviceOperation as pure functions: read-only gNOI probes and CLI
//! commands, run once per generation, with structured results in status.
//! Nothing here does I/O; the executor in [`crate::reconcile::operation`]
//! reads the object, calls these, runs the device calls and writes the
//! status.
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
//!   [`redact`] before anything is stored (`redacted: true`).
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
//!
//! The decision table (the executor does the I/O of each row):
//!
//! | situation | what happens |
//! |---|---|
//! | the device is served by another controller (`--device`) | nothing (OutOfScope) |
//! | terminal at this generation | Done; with `ttlSecondsAfterFinished`, ExpireIn until completionTime + TTL, then Expire (deleted with its ConfigMap, Normal `Expired`) |
//! | a command not read-only, bad arguments | Failed `CommandNotAllowed` / `InvalidArguments`, nothing sent |
//! | ConfigDiff outside `CVK_OPS_CONFIGDIFF_ALLOWED_NAMESPACES` | Failed `NamespaceNotAuthorized`, no session opened |
//! | a gNOI kind while gNOI is disabled | Failed `GNOIDisabled` |
//! | CiscoDevice missing or not configurable | Pending `NoTransport` (one Warning Event per message), again in 10 s |
//! | otherwise | Running, the device calls, the size rules, the spill |
//! | the calls ended | Succeeded, or Failed with the failure's reason (`CommandFailed`, `ArtifactTooLarge`, `ArtifactWriteFailed`, `DeadlineExceeded`, `<Service>ServiceUnsupported`, the SSH reasons), the outputs that arrived kept |

mod cli;
mod output;
pub mod redact;
mod status;
mod step;

pub use cli::*;
pub use output::*;
pub use status::*;
pub use step::*;

#[cfg(test)]
mod sequences;
#[cfg(test)]
mod tests;
