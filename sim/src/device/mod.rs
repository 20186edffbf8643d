//! The device model: the one source of truth for a simulated switch.
//!
//! Every gNOI and gNMI service, the control API and the reboot machinery read
//! and change a [`Device`] only through the methods here. State sits behind
//! one mutex (operations are short and never await while holding it); every
//! change bumps a watch counter that gNMI ON_CHANGE subscriptions follow.
//!
//! ```text
//!            Reboot / Activate / FactoryReset
//!   Up ──────────────► pending (delay) ──► Down (listener closed) ──► boot ──► Up
//!                         │ CancelReboot          reboot_ms, slow/endless faults
//!                         └────────────► Up
//! ```
//!
//! The model is split by concern, each part adding its own `impl Device`
//! block: this file holds the [`Device`] itself, its state, snapshot and
//! patch, the device clock and telemetry; `fs` the filesystems and File
//! service operations; `reboot` reboots, boots and processes; `install`
//! OS.Install, Activate and Verify; `certs` the certificates;
//! `factory_reset` FactoryReset.Start.

mod certs;
mod factory_reset;
mod fs;
mod install;
mod reboot;
mod spool;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use crate::clock::wall_ns;
pub use certs::CertEntry;
pub use fs::{FileReader, FsInfo, MAX_PUT_CHUNK, PutSession, StatEntry, check_path, hash_reader};
pub use install::{
    ActivateFail, InstallBegin, InstallFail, InstallFailKind, InstallSession, StagedImage,
    VerifyInfo,
};
pub use reboot::{Process, RebootInfo};

use crate::auth::Credentials;
use crate::error::DomainError;
use crate::faults::{FaultKind, FaultStore};
use crate::journal::Journal;
use crate::profile::Profile;
use fs::{Fs, seed_files};
use install::InstallInfo;
use reboot::{RebootState, start_processes};

/// Whether the device's gRPC listener should be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    /// Listening.
    Up,
    /// Rebooting: no listener.
    Down,
}

/// How to build one device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device name (`sim-0`).
    pub name: String,
    /// Platform profile.
    pub profile: Arc<Profile>,
    /// Serial number.
    pub serial: String,
    /// Reboot outage, overriding the profile's.
    pub reboot_ms: Option<u64>,
    /// Expected `username`/`password` metadata.
    pub credentials: Option<Credentials>,
    /// Directory for file contents written by clients.
    pub spool_dir: PathBuf,
}

#[derive(Debug)]
struct State {
    hostname: String,
    running_version: String,
    committed: bool,
    previous_version: Option<String>,
    boot_version: Option<String>,
    activation_fail_message: String,
    /// The device can upgrade in service (StatePatch `issu_capable`).
    issu_capable: bool,
    /// The pending boot is an ISSU one (set by an activation with reboot on
    /// an ISSU-capable device, consumed by the boot).
    issu_pending: bool,
    /// The last activation that booted took the ISSU path.
    last_activation_issu: bool,
    install: Option<InstallInfo>,
    staged: BTreeMap<String, StagedImage>,
    boot_time_ns: u64,
    boot_count: u32,
    clock_skew_ns: i64,
    fs: Vec<Fs>,
    processes: BTreeMap<u32, Process>,
    next_pid: u32,
    certs: BTreeMap<String, CertEntry>,
    reboot: RebootState,
    reboot_ms: u64,
    /// OS.Install write rate limit (bytes/s; 0: as fast as the host goes).
    install_bytes_per_s: u64,
    /// Embedded packet captures: name -> bytes of `buffer dump` output.
    captures: BTreeMap<String, u64>,
}

/// Install state as gNMI and the control API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallState {
    /// Running image committed.
    Committed,
    /// Running image activated but not committed (auto-abort pending on a real switch).
    Uncommitted,
    /// A transfer is running, or an activation waits for its reboot.
    InProgress,
}

impl InstallState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallState::Committed => "committed",
            InstallState::Uncommitted => "uncommitted",
            InstallState::InProgress => "in-progress",
        }
    }
}

/// A read-only view of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    /// Name.
    pub name: String,
    /// gRPC address once listening.
    pub address: Option<String>,
    /// SSH CLI address, if the device serves one.
    #[serde(default)]
    pub ssh_address: Option<String>,
    /// Profile name.
    pub profile: String,
    /// Hardware model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Hostname.
    pub hostname: String,
    /// Listener state.
    pub power: Power,
    /// Full running version.
    pub running_version: String,
    /// Committed?
    pub committed: bool,
    /// Install state.
    pub install_state: InstallState,
    /// Version the next boot will run, if an activation set one.
    pub boot_version: Option<String>,
    /// Version before the last successful activation.
    pub previous_version: Option<String>,
    /// Verify's activation_fail_message.
    pub activation_fail_message: String,
    /// The device upgrades in service (ISSU) when activated with reboot.
    pub issu_capable: bool,
    /// The last activation that booted took the ISSU path (gNMI
    /// `/system/install/state/issu-state`).
    pub last_activation_issu: bool,
    /// Version being transferred by OS.Install.
    pub install_in_progress: Option<String>,
    /// Staged images.
    pub staged: Vec<StagedImage>,
    /// Last boot, ns since the epoch (device clock).
    pub boot_time_ns: u64,
    /// Boots since the simulator started (1 after the first).
    pub boot_count: u32,
    /// Device clock minus host clock, ms (state plus faults).
    pub clock_skew_ms: i64,
    /// Reboot outage length, ms.
    pub reboot_ms: u64,
    /// OS.Install flash write rate limit, bytes/s (0: none).
    pub install_bytes_per_s: u64,
    /// Embedded packet captures (`monitor capture`): name -> approximate
    /// size of `show monitor capture <name> buffer dump`, bytes.
    #[serde(default)]
    pub captures: BTreeMap<String, u64>,
    /// Reboot state.
    pub reboot: RebootInfo,
    /// Filesystems.
    pub filesystems: Vec<FsInfo>,
    /// Processes.
    pub processes: Vec<Process>,
    /// Certificate ids.
    pub certificates: Vec<String>,
}

/// Fields the control API may set. Absent fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatePatch {
    /// Running version (as if the switch had booted it).
    #[serde(default)]
    pub running_version: Option<String>,
    /// Committed flag.
    #[serde(default)]
    pub committed: Option<bool>,
    /// Verify's activation_fail_message.
    #[serde(default)]
    pub activation_fail_message: Option<String>,
    /// Clock skew (ms) kept in state (faults add to it).
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
    /// Reboot outage length (ms).
    #[serde(default)]
    pub reboot_ms: Option<u64>,
    /// OS.Install flash write rate, bytes/s (0: unlimited). A real C9300
    /// writes flash at tens of MB/s; the simulator's loopback is far
    /// faster, which hides transfer-time behaviour.
    #[serde(default)]
    pub install_bytes_per_s: Option<u64>,
    /// Embedded packet captures, name -> size of their buffer dump in
    /// bytes; merged into the state, a size of 0 removes the capture.
    #[serde(default)]
    pub captures: Option<BTreeMap<String, u64>>,
    /// Hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Whether an activation with reboot takes the ISSU path (reported by
    /// gNMI `/system/install/state/issu-state` after the boot).
    #[serde(default)]
    pub issu_capable: Option<bool>,
}

/// A simulated switch.
#[derive(Debug)]
pub struct Device {
    name: String,
    profile: Arc<Profile>,
    serial: String,
    state: Mutex<State>,
    faults: Arc<FaultStore>,
    changed: watch::Sender<u64>,
    power: watch::Sender<Power>,
    spool_dir: PathBuf,
    spool_seq: AtomicU64,
    credentials: Option<Credentials>,
    addr: OnceLock<std::net::SocketAddr>,
    cli_addr: OnceLock<std::net::SocketAddr>,
    shutdown: CancellationToken,
    journal: Arc<Journal>,
}

impl Device {
    /// Builds a powered-up device (the listener is started by the fleet).
    pub fn new(cfg: DeviceConfig, journal: Arc<Journal>) -> Arc<Device> {
        let p = cfg.profile.clone();
        let now = wall_ns();
        let hostname = cfg.name.clone();
        let fs = p
            .filesystems
            .iter()
            .map(|spec| Fs {
                spec: spec.clone(),
                files: BTreeMap::new(),
            })
            .collect();
        let mut st = State {
            hostname: hostname.clone(),
            running_version: p.version.clone(),
            committed: true,
            previous_version: None,
            boot_version: None,
            activation_fail_message: String::new(),
            issu_capable: false,
            issu_pending: false,
            last_activation_issu: false,
            install: None,
            staged: BTreeMap::new(),
            boot_time_ns: now,
            boot_count: 1,
            clock_skew_ns: 0,
            fs,
            processes: BTreeMap::new(),
            next_pid: 100,
            certs: BTreeMap::new(),
            reboot: RebootState::default(),
            reboot_ms: cfg.reboot_ms.unwrap_or(p.reboot_ms),
            install_bytes_per_s: 0,
            captures: BTreeMap::new(),
        };
        seed_files(&p, &mut st, now);
        start_processes(&mut st, &p, now);
        if let Ok(pem) = crate::tls::self_signed_pem(&cfg.serial) {
            let id = format!("TP-self-signed-{}", &cfg.serial);
            st.certs.insert(
                id.clone(),
                CertEntry {
                    id,
                    pem,
                    modified_ns: now,
                },
            );
        }
        Arc::new(Device {
            name: cfg.name,
            profile: p,
            serial: cfg.serial,
            state: Mutex::new(st),
            faults: Arc::new(FaultStore::default()),
            changed: watch::channel(0).0,
            power: watch::channel(Power::Up).0,
            spool_dir: cfg.spool_dir,
            spool_seq: AtomicU64::new(0),
            credentials: cfg.credentials,
            addr: OnceLock::new(),
            cli_addr: OnceLock::new(),
            shutdown: CancellationToken::new(),
            journal,
        })
    }

    // ---- identity -------------------------------------------------------

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Profile.
    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }
    /// Faults of this device.
    pub fn faults(&self) -> &Arc<FaultStore> {
        &self.faults
    }
    /// The fleet journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }
    /// Expected credentials.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }
    /// gRPC address, once bound.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.addr.get().copied()
    }
    pub(crate) fn set_addr(&self, a: std::net::SocketAddr) {
        let _ = self.addr.set(a);
    }

    /// SSH CLI address, once bound (none when the fleet serves no CLI or
    /// the profile has none).
    pub fn cli_addr(&self) -> Option<std::net::SocketAddr> {
        self.cli_addr.get().copied()
    }

    pub(crate) fn set_cli_addr(&self, a: std::net::SocketAddr) {
        let _ = self.cli_addr.set(a);
    }
    /// Cancelled when the fleet stops.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }
    /// Listener state.
    pub fn power(&self) -> Power {
        *self.power.borrow()
    }
    /// Follows the listener state.
    pub fn power_watch(&self) -> watch::Receiver<Power> {
        self.power.subscribe()
    }
    /// Bumped on every state change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn touch(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    // ---- clock ----------------------------------------------------------

    fn skew_ns(&self, st: &State) -> i64 {
        let mut skew = st.clock_skew_ns;
        for f in self.faults.list() {
            if let FaultKind::ClockSkew { ms } = f.spec.kind {
                skew += ms * 1_000_000;
            }
        }
        skew
    }

    /// Device clock, ns since the epoch (host clock plus skew).
    pub fn now_ns(&self) -> u64 {
        let st = self.lock();
        let skew = self.skew_ns(&st);
        drop(st);
        // A one-shot clock skew fault is used up by the read that sees it.
        self.faults
            .take_device(|k| matches!(k, FaultKind::ClockSkew { .. }));
        (wall_ns() as i64 + skew).max(0) as u64
    }

    // ---- snapshot / patch -------------------------------------------------

    fn install_state(st: &State) -> InstallState {
        if st.install.is_some()
            || st
                .boot_version
                .as_ref()
                .is_some_and(|v| *v != st.running_version)
        {
            InstallState::InProgress
        } else if st.committed {
            InstallState::Committed
        } else {
            InstallState::Uncommitted
        }
    }

    /// A read-only view.
    pub fn snapshot(&self) -> DeviceSnapshot {
        let st = self.lock();
        let skew = self.skew_ns(&st);
        let pending = st.reboot.pending.as_ref();
        DeviceSnapshot {
            name: self.name.clone(),
            address: self.addr().map(|a| a.to_string()),
            ssh_address: self.cli_addr().map(|a| a.to_string()),
            profile: self.profile.name.clone(),
            model: self.profile.model.clone(),
            serial: self.serial.clone(),
            hostname: st.hostname.clone(),
            power: self.power(),
            running_version: st.running_version.clone(),
            committed: st.committed,
            install_state: Self::install_state(&st),
            boot_version: st.boot_version.clone(),
            previous_version: st.previous_version.clone(),
            activation_fail_message: st.activation_fail_message.clone(),
            issu_capable: st.issu_capable,
            last_activation_issu: st.last_activation_issu,
            install_in_progress: st.install.as_ref().map(|i| i.version.clone()),
            staged: st.staged.values().cloned().collect(),
            boot_time_ns: st.boot_time_ns,
            boot_count: st.boot_count,
            clock_skew_ms: skew / 1_000_000,
            reboot_ms: st.reboot_ms,
            install_bytes_per_s: st.install_bytes_per_s,
            captures: st.captures.clone(),
            reboot: RebootInfo {
                active: pending.is_some() || st.reboot.in_outage,
                in_outage: st.reboot.in_outage,
                when_ns: pending.map(|p| p.when_ns).unwrap_or(0),
                wait_ns: pending.map(|p| p.delay_ns).unwrap_or(0),
                reason: pending
                    .map(|p| p.reason.clone())
                    .unwrap_or_else(|| st.reboot.last_reason.clone()),
                count: st.reboot.count,
            },
            filesystems: st
                .fs
                .iter()
                .map(|f| FsInfo {
                    name: f.spec.name.clone(),
                    size: f.spec.size,
                    free: self.free_of(f),
                    files: f.files.len(),
                    read_only: f.spec.read_only,
                })
                .collect(),
            processes: st.processes.values().cloned().collect(),
            certificates: st.certs.keys().cloned().collect(),
        }
    }

    /// Applies a patch from the control API.
    pub fn apply(&self, p: StatePatch) -> Result<(), DomainError> {
        let mut st = self.lock();
        if let Some(v) = p.running_version {
            if v.is_empty() {
                return Err(DomainError::InvalidArgument(
                    "running_version is empty".into(),
                ));
            }
            st.running_version = v;
        }
        if let Some(c) = p.committed {
            st.committed = c;
            if c {
                st.previous_version = None;
            }
        }
        if let Some(m) = p.activation_fail_message {
            st.activation_fail_message = m;
        }
        if let Some(ms) = p.clock_skew_ms {
            st.clock_skew_ns = ms * 1_000_000;
        }
        if let Some(ms) = p.reboot_ms {
            st.reboot_ms = ms;
        }
        if let Some(rate) = p.install_bytes_per_s {
            st.install_bytes_per_s = rate;
        }
        if let Some(caps) = p.captures {
            for (name, size) in caps {
                if size == 0 {
                    st.captures.remove(&name);
                } else {
                    st.captures.insert(name, size);
                }
            }
        }
        if let Some(h) = p.hostname {
            st.hostname = h;
        }
        if let Some(c) = p.issu_capable {
            st.issu_capable = c;
        }
        drop(st);
        self.touch();
        Ok(())
    }

    /// `install commit`: makes the running image permanent.
    pub fn commit(&self) {
        let mut st = self.lock();
        st.committed = true;
        st.previous_version = None;
        drop(st);
        self.touch();
    }

    /// Running version.
    pub fn running_version(&self) -> String {
        self.lock().running_version.clone()
    }

    // ---- gNMI -------------------------------------------------------------------

    /// Values gNMI reports (see `gnmi` module for paths).
    pub fn telemetry(&self) -> Telemetry {
        let snap = self.snapshot();
        let now = wall_ns();
        let installing = snap.install_in_progress.is_some();
        // A gentle deterministic wobble so SAMPLE subscriptions see movement.
        let phase = (now / 1_000_000_000) % 7;
        let cpu = if installing {
            35 + phase as u8
        } else {
            3 + phase as u8
        };
        let used = self.profile.memory_used_bytes + if installing { 64 << 20 } else { 0 };
        Telemetry {
            snapshot: snap,
            current_ns: self.now_ns(),
            cpu_percent: cpu,
            memory_physical: self.profile.memory_bytes,
            memory_used: used.min(self.profile.memory_bytes),
        }
    }
}

/// What gNMI needs from the device at one instant.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Device state.
    pub snapshot: DeviceSnapshot,
    /// Device clock.
    pub current_ns: u64,
    /// CPU use, percent.
    pub cpu_percent: u8,
    /// Physical memory.
    pub memory_physical: u64,
    /// Memory in use.
    pub memory_used: u64,
}
