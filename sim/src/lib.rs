//! `iosxe-sim`: a simulated Cisco Catalyst 9300 on IOS-XE that speaks gNOI
//! and gNMI over gRPC, for controller tests and upgrade rehearsals.
//!
//! ```text
//!  tonic client ──► listener (per device; closed during reboots)
//!                     └► journal ─► auth ─► faults ─► System File OS Cert FactoryReset gNMI
//!                                                       └──────────► Device (one source of truth)
//!  control API (HTTP/JSON) ─────────────────────────────────────────┘   ▲
//!  FleetHandle / DeviceHandle (in-process) ─────────────────────────────┘
//! ```
//!
//! Start devices in-process with [`Fleet::start`]; see [`fleet`] for an
//! example, `sim/README.md` for the control API, gNMI paths and fault file.

pub mod auth;
pub mod cli;
pub mod cli_ssh;
pub mod clock;
pub mod control;
pub mod device;
pub mod error;
pub mod faults;
pub mod fleet;
pub mod handle;
pub mod image;
pub mod image_servers;
pub mod journal;
pub mod profile;
pub mod rpc;
pub mod server;
pub mod services;
pub mod tls;

pub use auth::Credentials;
pub use device::{Device, DeviceSnapshot, InstallState, Power, StatePatch};
pub use error::DomainError;
pub use faults::{ActiveFault, FaultFile, FaultKind, FaultSpec};
pub use fleet::{DeviceHandle, Fleet, FleetConfig, FleetError, FleetHandle, ReadyInfo, TlsOptions};
pub use image::{ImageSpec, ImageValidator};
pub use journal::{JournalEntry, JournalQuery};
pub use profile::{Profile, ServiceKind};
