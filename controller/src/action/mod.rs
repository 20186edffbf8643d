//! The IOSXEOperationalAction as pure functions: write-class gNOI actions
//! (Reboot, CancelReboot, KillProcess, FilePut, FileRemove, FactoryReset),
//! each sent to its device **at most once**. Nothing here does I/O; the
//! executor in [`crate::reconcile::action`] reads the object and the
//! device, calls these, and writes the status before it sends anything.
//!
//! ```text
//!  fresh object ─> step (pure)
//!    ├─ Start ─> checks (confirm, args, path, ConfigMap) ──────────────── Rejected
//!    │           device + target (missing: Pending NoTransport, retry)
//!    │           finalizer
//!    │           device Lease (busy: Pending MutationLeaseBlocked, retry; CancelReboot skips it)
//!    │           cached UNIMPLEMENTED, baseline read (RebootStatus/Time/Stat) ─ Rejected
//!    │           Running + invocationID + dispatch record   (CAS on resourceVersion)
//!    │           ── pause "action-after-marker" ──
//!    │           the one RPC ─── pause "action-after-dispatch" ──
//!    │           answer ─> Succeeded | Failed (CAS: only if still Running with our marker)
//!    │           no clear answer (transport break, deadline) ─> stay Running, Observe
//!    ├─ Observe (Running with a marker: restart, or an unclear answer): never sent again;
//!    │           read the device (RebootStatus, File.Stat/Get) ─> Succeeded | Failed ActionNotApplied
//!    │           | Failed ActionOutcomeUnknown (nothing to read, or the window closed)
//!    ├─ Finished (terminal): release the Lease and the finalizer if still held
//!    └─ Abandon (deleted before dispatch): release, drop the finalizer
//! ```
//!
//! * **At most once.** Phase Running and `status.invocationID`
//!   (`<uid>/<generation>`) are written in one status update whose
//!   resourceVersion precondition makes it a compare-and-swap, before the
//!   RPC leaves. An object that carries the marker is observed, never
//!   dispatched again, whatever happened to the controller in between. The
//!   Running status also holds the dispatch record in `status.result`
//!   (the request, the baseline read before it, the FilePut content's size
//!   and SHA-256), which is what the observation compares against.
//! * **Rejected** means nothing mutating reached the device: a refused
//!   confirm or args block, a bad path, a missing ConfigMap, a service the
//!   device lacks, an unreachable device, a reboot already pending. The
//!   baseline read (RebootStatus, System.Time or File.Stat) doubles as the
//!   reachability check.
//! * **Lease.** Every kind but CancelReboot holds the device's mutation
//!   Lease ([`crate::lease`]) from before the baseline read until the
//!   action is terminal, so it never runs while an upgrade holds the
//!   device.
//! * **Finalizer** `ops.cisco.vk/iosxeoperationalaction-finalizer`: added
//!   before the Lease is taken, removed once terminal (with the Lease
//!   released first). A dispatched action that is
//!   deleted stays (Warning `DeletionPending`) until its outcome is known.
//! * **Events and metrics** on every transition:
//!   `cisco_vk_iosxe_operational_action_transitions_total{device,kind,phase,reason}`.
//!
//! The decision table (the executor does the I/O of each row):
//!
//! | situation | what happens |
//! |---|---|
//! | the device is served by another controller (`--device`) | nothing (OutOfScope) |
//! | terminal | Finished: the Lease released and the finalizer removed if still held |
//! | Running, or `status.invocationID` set | Observe: read the device, never send again |
//! | deleted before dispatch | Abandon: release, drop the finalizer |
//! | confirm, args block, path or FilePut ConfigMap refused | Rejected (`ConfirmMismatch`, `InvalidAction`, `InvalidPath`, `ConfigMapNotFound`, `ConfigMapContentMissing`) |
//! | CiscoDevice missing or not configurable | Pending `NoTransport`, again in 5 s |
//! | the device Lease held by another object (not CancelReboot) | Pending `MutationLeaseBlocked`, again in 5 s |
//! | a cached UNIMPLEMENTED, or the baseline read fails or forbids | Rejected (`<Service>ServiceUnsupported`, `DeviceUnavailable`, `RebootAlreadyPending`, `NoRebootPending`, `FileNotFound`) |
//! | otherwise | Running + `invocationID` + the dispatch record in one compare-and-swap, then the one RPC |
//! | the RPC answered | accepted: Succeeded; refused: Failed (`ActionFailed`, `<Service>ServiceUnsupported`, `FactoryOSUnsupported`, ...); a transport break or a deadline: Running `Observing` |
//! | observed | no readable record: Failed `ActionOutcomeUnknown`; device unreachable: Running; otherwise the reading judged against the record (Succeeded, Failed `ActionNotApplied`); before the settle time a failure the device did not state is not concluded; past the outcome window: Failed `ActionOutcomeUnknown` |

mod outcome;
mod status;
mod step;

pub use outcome::*;
pub use status::*;
pub use step::*;

#[cfg(test)]
mod sequences;
#[cfg(test)]
mod tests;
