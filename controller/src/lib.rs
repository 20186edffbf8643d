//! cvk-controller: the Kubernetes controller for the IOS-XE device
//! lifecycle over gNOI and gNMI.

pub mod action;
pub mod client;
pub mod conditions;
pub mod config;
pub mod crd;
pub mod leader;
pub mod lease;
pub mod operation;
pub mod pause;
pub mod reason;
pub mod reconcile;
pub mod rollout;
pub mod source;
pub mod telemetry;
pub mod upgrade;
pub mod version;
