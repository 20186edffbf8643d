//! cvk-hil: the local Kubernetes control plane and the hardware-in-the-loop
//! scenario runner.
//!
//! * [`control_plane`]: a real etcd and kube-apiserver on loopback, built
//!   from their Go modules, with an admin kubeconfig.
//! * [`testing`]: test support on top of it: one control plane per test
//!   binary, a namespace per test, the project's CRDs installed.
//! * [`scenario`]: scenario files, targets (sim, hardware), the runner and
//!   its reports.
//! * [`chaos`]: fault trials (controller kills, API server and etcd
//!   restarts, switch reboots and cuts mid-transfer) and their invariants.
//! * [`kind`]: a kind cluster built with no registry, the chart installed,
//!   a simulated fleet behind cluster Services (`cvk-hil cluster kind up`).

pub mod chaos;
pub mod control_plane;
pub mod kind;
pub mod scenario;
pub mod testing;

pub use control_plane::{ControlPlaneError, LocalControlPlane};
