//! A fleet of simulated devices in one process, and the handles tests and
//! tools use to drive it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iosxe_sim::FleetError> {
//! use iosxe_sim::{Fleet, FleetConfig, Profile, FaultSpec, FaultKind};
//! let fleet = Fleet::start(FleetConfig::new(2, Profile::builtin("c9300-17.18")?).reboot_ms(300)).await?;
//! let dev = fleet.device("sim-0").unwrap();
//! let endpoint = dev.endpoint();                       // "http://127.0.0.1:PORT"
//! dev.inject(FaultSpec::rpc("/gnoi.os.OS/Activate", FaultKind::Unimplemented).once())?;
//! let activations = dev.journal_for("/gnoi.os.OS/Activate");
//! # let _ = (endpoint, activations); Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::device::{Device, DeviceConfig, DeviceSnapshot, Power, StatePatch};
use crate::error::DomainError;
use crate::faults::{ActiveFault, FaultKind, FaultSpec};
use crate::journal::{Credentials, Journal, JournalEntry, JournalQuery};
use crate::profile::{Profile, ProfileError};
use crate::tls::{Pki, PkiFiles};

/// Default insecure gNOI/gNMI port on IOS-XE.
pub const INSECURE_PORT: u16 = 50052;
/// Default TLS gNOI/gNMI port on IOS-XE.
pub const TLS_PORT: u16 = 9339;

/// TLS settings.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Require client certificates signed by the fleet CA.
    pub mtls: bool,
    /// Where to write `ca.pem`, `client.pem`, `client-key.pem`
    /// (default: `<data dir>/certs`).
    pub cert_dir: Option<PathBuf>,
}

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Profile for every device.
    pub profile: Profile,
    /// Names are `<prefix>-<index>`.
    pub name_prefix: String,
    /// Listen address (of device 0 when `address_per_device`).
    pub address: IpAddr,
    /// Device i listens on `base_port + i` (0: an ephemeral port each).
    pub base_port: u16,
    /// Device i listens on `address + i` (IPv4), all on `base_port`.
    pub address_per_device: bool,
    /// Control API port: none for no API, 0 for an ephemeral port.
    pub control_port: Option<u16>,
    /// SSH CLI: none for no CLI; device i listens on `cli_base_port + i`
    /// (0: an ephemeral port each; with `address_per_device`, all on it).
    pub cli_base_port: Option<u16>,
    /// How the SSH CLI treats its user (`>` or `#`, enable secret).
    pub cli: crate::cli_ssh::CliOptions,
    /// TLS (insecure when none).
    pub tls: Option<TlsOptions>,
    /// Credentials every device expects; `{n}` in either field becomes the
    /// device index, so each device can have its own.
    pub credentials: Option<Credentials>,
    /// Reboot outage, overriding the profile's.
    pub reboot_ms: Option<u64>,
    /// Faults injected at start.
    pub faults: Vec<FaultSpec>,
    /// Directory for file contents and certificates (a temporary one if none).
    pub data_dir: Option<PathBuf>,
    /// Journal entries kept.
    pub journal_capacity: usize,
}

impl FleetConfig {
    /// `devices` devices of `profile` on 127.0.0.1, ephemeral ports, no control API.
    pub fn new(devices: usize, profile: Profile) -> Self {
        Self {
            devices,
            profile,
            name_prefix: "sim".into(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            address_per_device: false,
            control_port: None,
            cli_base_port: None,
            cli: crate::cli_ssh::CliOptions::default(),
            tls: None,
            credentials: None,
            reboot_ms: None,
            faults: Vec::new(),
            data_dir: None,
            journal_capacity: 100_000,
        }
    }
    /// Reboot outage in ms.
    pub fn reboot_ms(mut self, ms: u64) -> Self {
        self.reboot_ms = Some(ms);
        self
    }
    /// Serve each device's SSH CLI from `port` (0: ephemeral ports).
    pub fn cli_port(mut self, port: u16) -> Self {
        self.cli_base_port = Some(port);
        self
    }

    /// Serve the control API on `port` (0: ephemeral).
    pub fn control_port(mut self, port: u16) -> Self {
        self.control_port = Some(port);
        self
    }
    /// Serve TLS.
    pub fn tls(mut self, opts: TlsOptions) -> Self {
        self.tls = Some(opts);
        self
    }
    /// Require credentials.
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }
    /// Inject a fault at start.
    pub fn fault(mut self, f: FaultSpec) -> Self {
        self.faults.push(f);
        self
    }
    /// First port.
    pub fn base_port(mut self, port: u16) -> Self {
        self.base_port = port;
        self
    }
    /// Data directory.
    pub fn data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }
}

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
    by_name: HashMap<String, usize>,
    pub(crate) journal: Arc<Journal>,
    tls: bool,
    certs: Option<PkiFiles>,
    ca_pem: Option<String>,
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

/// Starts fleets.
pub struct Fleet;

impl Fleet {
    /// Builds every device, binds every listener, starts the control API.
    /// Returns once all listen.
    pub async fn start(cfg: FleetConfig) -> Result<FleetHandle, FleetError> {
        let tmp = match &cfg.data_dir {
            Some(_) => None,
            None => Some(tempfile::Builder::new().prefix("iosxe-sim-").tempdir()?),
        };
        let data_dir = cfg
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.as_ref().expect("temp dir").path().to_owned());
        std::fs::create_dir_all(&data_dir)?;
        let journal = Arc::new(Journal::new(cfg.journal_capacity));
        let profile = Arc::new(cfg.profile.clone());
        let (pki, certs) = match &cfg.tls {
            Some(t) => {
                let mut pki = Pki::generate().map_err(FleetError::Tls)?;
                let dir = t.cert_dir.clone().unwrap_or_else(|| data_dir.join("certs"));
                let files = pki.write_to(&dir)?;
                (Some(pki), Some(files))
            }
            None => (None, None),
        };
        let reflection = crate::services::Reflection::default();
        let mut devices = Vec::with_capacity(cfg.devices);
        let mut tasks = Vec::with_capacity(cfg.devices + 1);
        let mut clis = Vec::with_capacity(cfg.devices);
        for i in 0..cfg.devices {
            let name = format!("{}-{i}", cfg.name_prefix);
            let creds = cfg.credentials.as_ref().map(|c| Credentials {
                username: c.username.replace("{n}", &i.to_string()),
                password: c.password.replace("{n}", &i.to_string()),
            });
            let dev = Device::new(
                DeviceConfig {
                    name: name.clone(),
                    profile: profile.clone(),
                    serial: format!("FOC2{:04}X{:03}", 600 + i / 1000, i % 1000),
                    reboot_ms: cfg.reboot_ms,
                    credentials: creds,
                    spool_dir: data_dir.join("files"),
                },
                journal.clone(),
            );
            let addr = device_addr(&cfg, i)?;
            let listener =
                crate::server::bind(addr).map_err(|source| FleetError::Bind { addr, source })?;
            let bound = listener.local_addr()?;
            dev.set_addr(bound);
            let acceptor = match &pki {
                Some(p) => {
                    let mtls = cfg.tls.as_ref().is_some_and(|t| t.mtls);
                    let (_pem, sc) = p
                        .server_config(&name, bound.ip(), mtls)
                        .map_err(FleetError::Tls)?;
                    Some(tokio_rustls::TlsAcceptor::from(sc))
                }
                None => None,
            };
            let cli = match cfg.cli_base_port {
                Some(base) if profile.ssh_cli => {
                    let mut a = device_addr(&cfg, i)?;
                    let port = if base == 0 || cfg.address_per_device {
                        base
                    } else {
                        u16::try_from(base as usize + i)
                            .map_err(|_| FleetError::Invalid("SSH port overflow".into()))?
                    };
                    a.set_port(port);
                    let srv = crate::cli_ssh::CliServer::start(dev.clone(), a, cfg.cli.clone())
                        .await
                        .map_err(|source| FleetError::Bind { addr: a, source })?;
                    dev.set_cli_addr(srv.addr());
                    Some(srv)
                }
                _ => None,
            };
            clis.push(cli);
            let svc = crate::server::device_service(&dev, &reflection);
            tasks.push(tokio::spawn(crate::server::run(
                dev.clone(),
                listener,
                svc,
                acceptor,
            )));
            devices.push(dev);
        }
        let by_name = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name().to_owned(), i))
            .collect();
        let mut inner = FleetInner {
            devices,
            by_name,
            journal,
            tls: cfg.tls.is_some(),
            certs,
            ca_pem: pki.as_ref().map(|p| p.ca_pem.clone()),
            control: None,
            cli: clis,
        };
        for f in &cfg.faults {
            inner.inject(f.clone())?;
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listener = match cfg.control_port {
            Some(port) => {
                let addr = SocketAddr::new(cfg.address, port);
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| FleetError::Bind { addr, source })?;
                inner.control = Some(l.local_addr()?);
                Some(l)
            }
            None => None,
        };
        let inner = Arc::new(inner);
        if let Some(l) = listener {
            let api = crate::control::router(inner.clone());
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(l, api)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            }));
        }
        Ok(FleetHandle {
            inner,
            tasks,
            shutdown,
            _tmp: tmp,
        })
    }
}

fn device_addr(cfg: &FleetConfig, i: usize) -> Result<SocketAddr, FleetError> {
    if cfg.address_per_device {
        let IpAddr::V4(v4) = cfg.address else {
            return Err(FleetError::Invalid(
                "address_per_device needs an IPv4 address".into(),
            ));
        };
        let n = u32::from(v4)
            .checked_add(i as u32)
            .ok_or_else(|| FleetError::Invalid("address overflow".into()))?;
        let ip = Ipv4Addr::from(n);
        if !ip.is_loopback() && v4.is_loopback() {
            return Err(FleetError::Invalid(format!(
                "{ip} leaves the loopback range"
            )));
        }
        return Ok(SocketAddr::new(IpAddr::V4(ip), cfg.base_port));
    }
    let port = if cfg.base_port == 0 {
        0
    } else {
        u16::try_from(cfg.base_port as usize + i)
            .map_err(|_| FleetError::Invalid("port overflow".into()))?
    };
    Ok(SocketAddr::new(cfg.address, port))
}

/// A running fleet. Dropping it stops every device.
pub struct FleetHandle {
    inner: Arc<FleetInner>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: tokio_util::sync::CancellationToken,
    _tmp: Option<tempfile::TempDir>,
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
