//! The IOSXESoftwareUpgrade lifecycle as a pure function.
//!
//! [`step::step`] takes the spec, the current status, what the reconciler
//! observed (device, lease, source, transfer task, activation answer) and
//! the time, and returns the next status, the actions to run and the phase
//! transition to announce. It does no I/O and knows no kube or tonic types;
//! the reconciler in [`crate::reconcile::upgrade`] observes, calls it,
//! persists the status (with a resourceVersion precondition) *before* it
//! runs any action, and feeds the actions' results back as observations.

pub mod device;
pub mod step;

pub use step::{
    Action, ActivationObs, ActivationResult, Decision, DeviceObs, DeviceState, LeaseObs,
    Observation, SourceObs, StagedImage, TransferObs, TransferState, Transition, step,
};
