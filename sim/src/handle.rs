//! The handles on a running fleet: [`FleetHandle`] and [`DeviceHandle`],
//! which tests, tools and the HTTP control API ([`crate::control`]) drive
//! devices through, the fleet's shared inner state, the ready-file content
//! ([`ReadyInfo`]) and [`FleetError`]. Building and starting a fleet is
//! [`crate::fleet`]; both modules use this one, so the control API does not
//! depend on the fleet's start-up code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::device::{Device, DeviceSnapshot, Power, StatePatch};
use crate::error::DomainError;
use crate::faults::{ActiveFault, FaultKind, FaultSpec};
use crate::journal::{Journal, JournalEntry, JournalQuery};
use crate::profile::ProfileError;
use crate::tls::PkiFiles;

/// Why a fleet did not start or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificates.
    #[error("tls: {0}")]
    Tls(String),
    /// Host I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Profile.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Bad fault or unknown device.
    #[error("{0}")]
    Invalid(String),
    /// A device operation failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl FleetError {
    /// Stable label.
    pub fn category(&self) -> &'static str {
        match self {
            FleetError::Bind { .. } => "bind",
            FleetError::Tls(_) => "tls",
            FleetError::Io(_) => "io",
            FleetError::Profile(_) => "profile",
            FleetError::Invalid(_) => "invalid",
            FleetError::Domain(d) => d.category(),
        }
    }
}

/// One device in the ready file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyDevice {
    /// Name.
    pub name: String,
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Serves TLS.
    pub tls: bool,
    /// Profile name.
    pub profile: String,
    /// Running version at start.
    pub version: String,
    /// CA certificate to trust (TLS only).
    pub ca_cert: Option<PathBuf>,
    /// Expected user name, if credentials are checked.
    pub username: Option<String>,
    /// Expected password, if credentials are checked.
    pub password: Option<String>,
    /// SSH CLI port, if the device serves one.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// The SSH CLI's known_hosts line (`[127.0.0.1]:port ssh-ed25519 AAAA...`).
    #[serde(default)]
    pub ssh_known_hosts: Option<String>,
}

/// What `serve --ready-file` writes once every device listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Control API address (`127.0.0.1:PORT`), if served.
    pub control: Option<String>,
    /// Process id of the simulator.
    pub pid: u32,
    /// Certificates for clients (TLS only).
    pub certs: Option<PkiFiles>,
    /// Devices.
    pub devices: Vec<ReadyDevice>,
}

pub(crate) struct FleetInner {
    pub(crate) devices: Vec<Arc<Device>>,
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) tls: bool,
    pub(crate) certs: Option<PkiFiles>,
    pub(crate) ca_pem: Option<String>,
    pub(crate) control: Option<SocketAddr>,
    /// SSH CLI servers by device index (none where not served).
    pub(crate) cli: Vec<Option<crate::cli_ssh::CliServer>>,
}

impl FleetInner {
    pub(crate) fn get(&self, name: &str) -> Option<DeviceHandle> {
        self.by_name.get(name).map(|i| DeviceHandle {
            dev: self.devices[*i].clone(),
            tls: self.tls,
        })
    }

    pub(crate) fn handles(&self) -> Vec<DeviceHandle> {
        self.devices
            .iter()
            .map(|d| DeviceHandle {
                dev: d.clone(),
                tls: self.tls,
            })
            .collect()
    }

    /// Injects on one device (`spec.device`) or all.
    pub(crate) fn inject(&self, spec: FaultSpec) -> Result<Vec<(String, u64)>, FleetError> {
        spec.validate().map_err(FleetError::Invalid)?;
        let targets = match &spec.device {
            Some(n) => vec![
                self.get(n)
                    .ok_or_else(|| FleetError::Invalid(format!("no device named {n}")))?,
            ],
            None => self.handles(),
        };
        targets
            .into_iter()
            .map(|h| Ok((h.name().to_owned(), h.inject(spec.clone())?)))
            .collect()
    }

    pub(crate) fn ready(&self) -> ReadyInfo {
        ReadyInfo {
            control: self.control.map(|a| a.to_string()),
            pid: std::process::id(),
            certs: self.certs.clone(),
            devices: self
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let a = d.addr().expect("bound before ready");
                    let cli = self.cli.get(i).and_then(Option::as_ref);
                    ReadyDevice {
                        name: d.name().into(),
                        address: a.ip().to_string(),
                        port: a.port(),
                        tls: self.tls,
                        profile: d.profile().name.clone(),
                        version: d.running_version(),
                        ca_cert: self.certs.as_ref().map(|c| c.ca_cert.clone()),
                        username: d.credentials().map(|c| c.username.clone()),
                        password: d.credentials().map(|c| c.password.clone()),
                        ssh_port: cli.map(|c| c.addr().port()),
                        ssh_known_hosts: cli.map(|c| c.known_hosts_line()),
                    }
                })
                .collect(),
        }
    }
}

/// A running fleet. Dropping it stops every device.
pub struct FleetHandle {
    pub(crate) inner: Arc<FleetInner>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    pub(crate) _tmp: Option<tempfile::TempDir>,
}

impl FleetHandle {
    /// Every device, in index order.
    pub fn devices(&self) -> Vec<DeviceHandle> {
        self.inner.handles()
    }
    /// A device by name (`sim-0`).
    pub fn device(&self, name: &str) -> Option<DeviceHandle> {
        self.inner.get(name)
    }
    /// A device by index.
    pub fn nth(&self, i: usize) -> Option<DeviceHandle> {
        self.inner.devices.get(i).map(|d| DeviceHandle {
            dev: d.clone(),
            tls: self.inner.tls,
        })
    }
    /// Control API address, if served.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.inner.control
    }
    /// Journal entries across the fleet.
    pub fn journal(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        self.inner.journal.entries(q)
    }
    /// Empties the journal.
    pub fn clear_journal(&self) {
        self.inner.journal.clear(None)
    }
    /// Injects a fault on `spec.device`, or on every device when none;
    /// returns (device, fault id) pairs.
    pub fn inject(&self, spec: FaultSpec) -> Result<Vec<(String, u64)>, FleetError> {
        self.inner.inject(spec)
    }
    /// Removes every fault on every device.
    pub fn clear_faults(&self) {
        for d in &self.inner.devices {
            d.faults().clear();
        }
    }
    /// CA certificate (PEM) clients should trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.inner.ca_pem.as_deref()
    }
    /// Certificate files for clients, when serving TLS.
    pub fn cert_files(&self) -> Option<&PkiFiles> {
        self.inner.certs.as_ref()
    }
    /// The ready-file content.
    pub fn ready_info(&self) -> ReadyInfo {
        self.inner.ready()
    }
    /// Stops every device and the control API, and waits for them.
    pub async fn shutdown(mut self) {
        self.stop();
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
    fn stop(&self) {
        self.shutdown.cancel();
        for d in &self.inner.devices {
            d.shutdown_token().cancel();
        }
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A handle on one device: state, faults, journal.
#[derive(Clone)]
pub struct DeviceHandle {
    dev: Arc<Device>,
    tls: bool,
}

impl DeviceHandle {
    /// Name.
    pub fn name(&self) -> &str {
        self.dev.name()
    }
    /// gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.dev.addr().expect("bound at start")
    }
    /// `http://ip:port` (or `https://`), for `tonic::transport::Endpoint`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.addr() {
            SocketAddr::V4(a) => format!("{scheme}://{a}"),
            SocketAddr::V6(a) => format!("{scheme}://[{}]:{}", a.ip(), a.port()),
        }
    }
    /// The device model itself.
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }
    /// Current state.
    pub fn snapshot(&self) -> DeviceSnapshot {
        self.dev.snapshot()
    }
    /// Changes state.
    pub fn apply(&self, p: StatePatch) -> Result<DeviceSnapshot, FleetError> {
        self.dev.apply(p)?;
        Ok(self.dev.snapshot())
    }
    /// `install commit`.
    pub fn commit(&self) {
        self.dev.commit()
    }
    /// Reboots after `delay` (as System.Reboot COLD would).
    pub fn reboot(&self, delay: Duration, reason: &str) -> Result<(), FleetError> {
        Ok(self.dev.schedule_reboot(1, delay, reason)?)
    }
    /// Injects a fault; returns its id. `corrupt_image` with a version acts
    /// at once on the staged image.
    pub fn inject(&self, spec: FaultSpec) -> Result<u64, FleetError> {
        spec.validate().map_err(FleetError::Invalid)?;
        if let FaultKind::CorruptImage { version: Some(v) } = &spec.kind {
            self.dev.corrupt_staged(v)?;
        }
        Ok(self.dev.faults().add(FaultSpec {
            device: Some(self.name().to_owned()),
            ..spec
        }))
    }
    /// Current faults.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.dev.faults().list()
    }
    /// Removes one fault.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.dev.faults().remove(id)
    }
    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.dev.faults().clear()
    }
    /// This device's journal.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.dev.journal().entries(&JournalQuery {
            device: Some(self.name().into()),
            ..Default::default()
        })
    }
    /// This device's journal entries for exactly `method` (`/gnoi.os.OS/Activate`).
    pub fn journal_for(&self, method: &str) -> Vec<JournalEntry> {
        self.journal()
            .into_iter()
            .filter(|e| e.method == method)
            .collect()
    }
    /// Empties this device's journal.
    pub fn clear_journal(&self) {
        self.dev.journal().clear(Some(self.name()))
    }
    /// Waits until the listener is in state `p`; false on timeout.
    pub async fn wait_power(&self, p: Power, timeout: Duration) -> bool {
        let mut w = self.dev.power_watch();
        tokio::time::timeout(timeout, w.wait_for(|x| *x == p))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
