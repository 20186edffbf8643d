//! cvk-controller: the Kubernetes controller for the IOS-XE device
//! lifecycle over gNOI and gNMI.

pub mod crd;
