//! The reconcilers and the runtime that drives them.
//!
//! ```text
//!  run(RunArgs) ── logs, /metrics, /healthz, /readyz, SIGINT/SIGTERM
//!    └─ run_controllers(client, settings, shutdown)
//!         ├─ CiscoDevice          device::reconcile     probe -> status, requeue
//!         ├─ DeviceOperation      operation::reconcile  observe -> step -> execute -> status
//!         ├─ IOSXEOperationalAction  action::reconcile  (write-class gate on; at most once)
//!         │                          gate::reconcile    (while the write-class gate is off)
//!         ├─ IOSXESoftwareUpgrade    upgrade::reconcile (gate on) / gate::reconcile (gate off)
//!         └─ IOSXESoftwareRollout    rollout::reconcile (gate on; not with --device) / gate::reconcile
//!  shared: Context { kube client, ClientPool (capability cache), Recorder, metrics,
//!                   per-kind state: transfers, pending action answers, probes }
//! ```
//!
//! The dependency runs one way: `context` (the shared [`Context`] and the
//! settings) uses no kind; the kinds, [`engine`] and [`gate`] use it; and
//! `runtime` (what starts the controllers, `run`) uses them all. The
//! per-kind state the Context carries lives below it: [`transfers`] for the
//! upgrade, [`crate::action::PendingAnswers`], [`crate::operation::OutputLimits`].
//!
//! Every reconciler follows the same shape: read the object fresh from the
//! API (the watch cache may lag behind the reconciler's own last write),
//! decide with a pure function, run the decided I/O, and write status with
//! [`engine::write_status`]: the whole status replaced, the object's
//! resourceVersion as precondition, one field manager, so a status is always
//! decided on the object it overwrites and a field the controller stops
//! setting disappears. [`engine`] holds everything else the kinds share
//! (finalizer, device lookup, Lease identity, metrics, spans, backoff). Events are published only when a phase or
//! reason changes, never on a resync that changes nothing.
//!
//! Scope: one namespace (`--namespace`, default the pod's), every namespace
//! (`--all-namespaces`), or one device (`--device NAME`: the CiscoDevice
//! watch is narrowed by field selector and operations for other devices are
//! left untouched, for the per-device pod of the specification).

pub mod action;
mod context;
pub mod device;
pub mod engine;
pub mod gate;
pub mod operation;
pub mod rollout;
mod runtime;
pub mod target;
pub mod transfers;
pub mod upgrade;

pub(crate) use context::ns_name;
pub use context::{
    Context, ControllerSettings, DEFAULT_SHUTDOWN_GRACE, MANAGER, ReconcileError, Scope, ScopeError,
};
pub use runtime::{
    DrivenKind, ROLLOUT_DEBOUNCE, RunError, cancel_on_signals, run, run_controllers, run_elected,
    run_fenced, run_with_context,
};
