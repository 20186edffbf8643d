//! The gNOI and gNMI wire contract used by the controller and the simulator.
//!
//! Every message, field number, package and service name matches
//! openconfig's, so method paths are `/gnoi.os.OS/Install`,
//! `/gnmi.gNMI/Subscribe` and so on: real Catalyst switches and standard
//! gNOI/gNMI tools talk to both sides of this crate unchanged.
//!
//! The module tree mirrors the proto packages (`gnoi.system` is
//! [`gnoi::system`]); `gnoi.certificate` is also reachable as [`gnoi::cert`].

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// gNOI services and their shared types.
pub mod gnoi {
    /// `gnoi.types`: hashes, paths, credentials.
    pub mod types {
        include!(concat!(env!("OUT_DIR"), "/gnoi.types.rs"));
    }
    /// `gnoi.common`: `RemoteDownload`.
    pub mod common {
        include!(concat!(env!("OUT_DIR"), "/gnoi.common.rs"));
    }
    /// `gnoi.system`: ping, traceroute, time, reboot, kill process.
    pub mod system {
        include!(concat!(env!("OUT_DIR"), "/gnoi.system.rs"));
    }
    /// `gnoi.file`: get, put, stat, remove.
    pub mod file {
        include!(concat!(env!("OUT_DIR"), "/gnoi.file.rs"));
    }
    /// `gnoi.os`: install, activate, verify.
    pub mod os {
        include!(concat!(env!("OUT_DIR"), "/gnoi.os.rs"));
    }
    /// `gnoi.certificate`: certificate management (upstream: deprecated in
    /// favour of gNSI Certz, still served by IOS-XE).
    #[allow(deprecated)]
    pub mod certificate {
        include!(concat!(env!("OUT_DIR"), "/gnoi.certificate.rs"));
    }
    pub use certificate as cert;
    /// `gnoi.factory_reset`: factory reset.
    pub mod factory_reset {
        include!(concat!(env!("OUT_DIR"), "/gnoi.factory_reset.rs"));
    }
}

/// `gnmi`: capabilities, get, set, subscribe.
#[allow(deprecated)]
pub mod gnmi {
    include!(concat!(env!("OUT_DIR"), "/gnmi.rs"));
}

/// `gnmi_ext`: gNMI extensions.
pub mod gnmi_ext {
    include!(concat!(env!("OUT_DIR"), "/gnmi_ext.rs"));
}

/// The encoded `FileDescriptorSet` of every file in this crate, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cvk_descriptor.bin"));
