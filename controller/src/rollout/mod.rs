//! The IOSXESoftwareRollout campaign as pure functions.
//!
//! [`plan::freeze`] resolves the targets among the namespace's CiscoDevices
//! and forms the waves once; the result is kept in an immutable ConfigMap
//! and named by its hash. [`step::step`] then decides, from the spec, the
//! status, the plan, the children and the devices, what the campaign does
//! next. Neither does I/O nor knows kube types beyond the CRD's; the
//! reconciler in [`crate::reconcile::rollout`] observes, calls them, writes
//! status before it runs an action, and publishes the Events.

pub mod plan;
pub mod step;

pub use plan::{DeviceInfo, Plan, PlanError, Wave, freeze};
pub use step::{Action, ChildObs, Decision, DeviceObs, Note, Observation, step};
