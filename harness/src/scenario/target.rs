//! Where a scenario's switches come from: simulators started for it
//! (`sim`), or lab switches listed in an inventory file (`hardware`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iosxe_sim::{DeviceHandle, FaultSpec, Fleet, FleetConfig, FleetHandle, Profile, StatePatch};
use serde::Deserialize;

use super::model::{DeviceSpec, SshTrust};

/// A lab inventory (`--inventory FILE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    pub devices: Vec<InventoryDevice>,
    /// The image scenarios upgrade to, templated as `{{ image.* }}`.
    #[serde(default)]
    pub image: Option<InventoryImage>,
}

/// One lab switch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryDevice {
    pub name: String,
    pub address: String,
    /// gNOI port (default: 9339 with TLS, 50052 without).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: bool,
    /// PEM CA bundle that signs the switch's certificate (TLS).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name in the switch's certificate, when it differs from the address.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Environment variables holding the credentials (never the values).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// SSH CLI port (default 22).
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// An OpenSSH known_hosts file with the switch's host key; without it
    /// the CLI scenarios that need the key pinned cannot run on this switch.
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    /// Environment variable holding the enable secret, if the CLI user
    /// starts in user exec.
    #[serde(default)]
    pub enable_secret_env: Option<String>,
}

/// The image for upgrade scenarios on hardware.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryImage {
    pub url: String,
    pub sha256: String,
    /// The target version the image carries.
    pub version: String,
    /// The version the switches run before the upgrade.
    #[serde(default)]
    pub previous_version: Option<String>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let inv: Inventory = serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            format!("{}{at}: {e}", path.display())
        })?;
        if inv.devices.is_empty() {
            return Err(format!(
                "{}: devices: the inventory lists no switch",
                path.display()
            ));
        }
        Ok(inv)
    }
}

/// The scenario target.
#[derive(Debug, Clone)]
pub enum Target {
    /// A simulator per scenario device, in this process.
    Sim,
    /// Lab switches.
    Hardware {
        inventory: Inventory,
        allow_destructive: bool,
    },
}

/// A switch ready for a scenario.
pub struct PreparedDevice {
    /// The CiscoDevice name.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub tls: bool,
    pub ca_pem: Option<String>,
    pub server_name: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The simulator behind it (sim target only): faults and journal.
    pub sim: Option<SimDevice>,
    /// Version it runs at the start, where known.
    pub version: Option<String>,
    /// SSH CLI port, if the switch serves one.
    pub ssh_port: Option<u16>,
    /// known_hosts text with the switch's SSH host key, where known.
    pub known_hosts: Option<String>,
    /// How the CiscoDevice is told to trust the host key.
    pub ssh_trust: SshTrust,
    /// Secret for `enable`.
    pub enable_secret: Option<String>,
    /// Labels of the CiscoDevice.
    pub labels: BTreeMap<String, String>,
}

/// A simulated switch the runner controls.
pub struct SimDevice {
    pub fleet: FleetHandle,
    pub handle: DeviceHandle,
}

impl SimDevice {
    /// Injects a fault given in the simulator's format.
    pub fn inject(&self, fault: &serde_json::Value) -> Result<(), String> {
        let spec: FaultSpec =
            serde_json::from_value(fault.clone()).map_err(|e| format!("fault {fault}: {e}"))?;
        spec.validate().map_err(|e| format!("fault {fault}: {e}"))?;
        self.handle
            .inject(spec)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Reboots the device now (a timeline `reboot` step), with the outage
    /// the step asks for.
    pub fn reboot(&self, step: &super::model::RebootStep) -> Result<(), String> {
        if let Some(ms) = step.ms {
            self.handle
                .apply(StatePatch {
                    reboot_ms: Some(ms),
                    ..StatePatch::default()
                })
                .map_err(|e| format!("reboot.ms: {e}"))?;
        }
        let reason = step.reason.as_deref().unwrap_or("cvk-hil timeline reboot");
        self.handle
            .reboot(Duration::ZERO, reason)
            .map_err(|e| format!("reboot: {e}"))
    }

    /// How many RPCs whose method contains `method` the device saw.
    pub fn journal_count(&self, method: &str) -> usize {
        self.handle
            .journal()
            .iter()
            .filter(|e| e.method.contains(method))
            .count()
    }

    /// How many RPCs of exactly `method` the device saw.
    pub fn journal_count_exact(&self, method: &str) -> usize {
        self.handle.journal_for(method).len()
    }
}

/// Credentials every simulated device checks.
const SIM_USER: &str = "cvk";
const SIM_PASSWORD: &str = "cvk-sim";

impl Target {
    /// Makes the scenario's devices available.
    pub async fn prepare(&self, specs: &[DeviceSpec]) -> Result<Vec<PreparedDevice>, String> {
        let mut out = Vec::new();
        for spec in specs {
            out.push(match self {
                Target::Sim => prepare_sim(spec).await?,
                Target::Hardware { inventory, .. } => prepare_hardware(inventory, spec)?,
            });
        }
        Ok(out)
    }

    /// Template values that come from the target (image.*).
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        if let Target::Hardware {
            inventory: Inventory {
                image: Some(img), ..
            },
            ..
        } = self
        {
            vars.insert("image.url".into(), img.url.clone());
            vars.insert("image.sha256".into(), img.sha256.clone());
            vars.insert("image.version".into(), img.version.clone());
            if let Some(prev) = &img.previous_version {
                vars.insert("image.previousVersion".into(), prev.clone());
            }
        }
        vars
    }
}

async fn prepare_sim(spec: &DeviceSpec) -> Result<PreparedDevice, String> {
    let profile_name = spec
        .profile
        .as_deref()
        .ok_or_else(|| format!("devices.{}: the sim target needs a profile", spec.name))?;
    let profile =
        Profile::load(profile_name).map_err(|e| format!("devices.{}.profile: {e}", spec.name))?;
    let mut cfg = FleetConfig::new(1, profile)
        .credentials(SIM_USER, SIM_PASSWORD)
        .cli_port(0);
    cfg.name_prefix = spec.name.clone();
    if let Some(secret) = &spec.enable_secret {
        cfg.cli = iosxe_sim::cli_ssh::CliOptions {
            user_exec: true,
            enable_secret: Some(secret.clone()),
        };
    }
    if let Some(ms) = spec.reboot_ms {
        cfg = cfg.reboot_ms(ms);
    }
    if spec.tls {
        cfg = cfg.tls(iosxe_sim::TlsOptions::default());
    }
    for fault in &spec.faults {
        let f: FaultSpec = serde_json::from_value(fault.clone())
            .map_err(|e| format!("devices.{}.faults: {e}", spec.name))?;
        f.validate()
            .map_err(|e| format!("devices.{}.faults: {e}", spec.name))?;
        cfg = cfg.fault(f);
    }
    let fleet = Fleet::start(cfg)
        .await
        .map_err(|e| format!("starting simulator {}: {e}", spec.name))?;
    let handle = fleet.nth(0).ok_or("the simulator fleet has no device")?;
    if let Some(state) = &spec.state {
        let patch: StatePatch = serde_json::from_value(state.clone())
            .map_err(|e| format!("devices.{}.state: {e}", spec.name))?;
        handle
            .apply(patch)
            .map_err(|e| format!("devices.{}.state: {e}", spec.name))?;
    }
    let addr = handle.addr();
    let version = handle.snapshot().running_version.clone();
    let ready = fleet.ready_info();
    let ready = ready.devices.first();
    let ssh_port = ready.and_then(|d| d.ssh_port);
    let known_hosts = ready.and_then(|d| d.ssh_known_hosts.clone());
    Ok(PreparedDevice {
        name: spec.name.clone(),
        address: addr.ip().to_string(),
        port: addr.port(),
        tls: spec.tls,
        ca_pem: fleet.ca_pem().map(str::to_owned),
        server_name: None,
        username: Some(SIM_USER.into()),
        password: Some(SIM_PASSWORD.into()),
        version: Some(version),
        ssh_port,
        known_hosts,
        ssh_trust: spec.ssh_trust,
        enable_secret: spec.enable_secret.clone(),
        labels: spec.labels.clone(),
        sim: Some(SimDevice { fleet, handle }),
    })
}

fn prepare_hardware(inv: &Inventory, spec: &DeviceSpec) -> Result<PreparedDevice, String> {
    let wanted = spec.inventory.as_deref().unwrap_or(&spec.name);
    let dev = inv
        .devices
        .iter()
        .find(|d| d.name == wanted)
        .ok_or_else(|| format!("the inventory has no switch named {wanted:?}"))?;
    let env = |var: &Option<String>, what: &str| -> Result<Option<String>, String> {
        var.as_ref()
            .map(|v| {
                std::env::var(v)
                    .map_err(|_| format!("{}: {what} variable {v} is not set", dev.name))
            })
            .transpose()
    };
    let ca_pem = dev
        .ca_file
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| format!("{}: caFile {}: {e}", dev.name, p.display()))
        })
        .transpose()?;
    let known_hosts = dev
        .known_hosts_file
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| format!("{}: knownHostsFile {}: {e}", dev.name, p.display()))
        })
        .transpose()?;
    if spec.ssh_trust == SshTrust::Known && known_hosts.is_none() && dev.ssh_port.is_some() {
        return Err(format!(
            "{}: sshPort is set but knownHostsFile is not: the switch's SSH host key cannot be pinned",
            dev.name
        ));
    }
    Ok(PreparedDevice {
        name: spec.name.clone(),
        address: dev.address.clone(),
        port: dev.port.unwrap_or(if dev.tls { 9339 } else { 50052 }),
        tls: dev.tls,
        ca_pem,
        server_name: dev.server_name.clone(),
        username: env(&dev.username_env, "username")?,
        password: env(&dev.password_env, "password")?,
        sim: None,
        version: inv.image.as_ref().and_then(|i| i.previous_version.clone()),
        ssh_port: Some(dev.ssh_port.unwrap_or(22)),
        known_hosts,
        ssh_trust: spec.ssh_trust,
        enable_secret: env(&dev.enable_secret_env, "enable secret")?,
        labels: spec.labels.clone(),
    })
}

/// Stops the simulators of a scenario.
pub async fn release(devices: Vec<PreparedDevice>) {
    for d in devices {
        if let Some(sim) = d.sim {
            drop(sim.handle);
            tokio::time::timeout(Duration::from_secs(5), sim.fleet.shutdown())
                .await
                .ok();
        }
    }
}
