//! A fleet of simulated devices in one process: its configuration and
//! start-up (devices, listeners, SSH CLI, control API). The handles it
//! returns, which tests and tools use to drive it, live in
//! [`crate::handle`] and are re-exported here.
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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::handle::{DeviceHandle, FleetError, FleetHandle, ReadyDevice, ReadyInfo};

use crate::auth::Credentials;
use crate::device::{Device, DeviceConfig};
use crate::faults::FaultSpec;
use crate::handle::FleetInner;
use crate::journal::Journal;
use crate::profile::Profile;
use crate::tls::Pki;

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
