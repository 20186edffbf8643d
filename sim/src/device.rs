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

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::DomainError;
use crate::faults::{FaultKind, FaultStore};
use crate::image::{ImageError, ImageValidator};
use crate::journal::{Credentials, Journal};
use crate::profile::{FilesystemSpec, Profile};

/// Host wall clock, ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Largest content message accepted by File.Put (gNOI: 64 KiB).
pub const MAX_PUT_CHUNK: usize = 64 * 1024;

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

/// File content.
#[derive(Debug, Clone)]
enum FileData {
    Inline(Bytes),
    Spool(PathBuf),
    /// Deterministic filler for big system files that nobody reads closely.
    Synthetic(u64),
}

#[derive(Debug, Clone)]
struct FileEntry {
    data: FileData,
    size: u64,
    permissions: u32,
    mtime_ns: u64,
    protected: bool,
}

#[derive(Debug, Clone)]
struct Fs {
    spec: FilesystemSpec,
    files: BTreeMap<String, FileEntry>,
}

impl Fs {
    fn used(&self) -> u64 {
        self.spec.reserved + self.files.values().map(|f| f.size).sum::<u64>()
    }
}

/// A staged (installed, not running) image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedImage {
    /// Full version from the image header.
    pub version: String,
    /// Where it lives (`flash:gNOI_iosxe_<version>.bin`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Damaged on flash (fault): activating it fails to boot.
    pub corrupt: bool,
}

/// A running process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Name.
    pub name: String,
    /// Start time, ns since the epoch.
    pub started_ns: u64,
}

/// A certificate (trustpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertEntry {
    /// Trustpoint name.
    pub id: String,
    /// PEM text.
    pub pem: String,
    /// Last change, ns since the epoch.
    pub modified_ns: u64,
}

#[derive(Debug)]
struct Pending {
    when_ns: u64,
    delay_ns: u64,
    method: i32,
    reason: String,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct RebootState {
    pending: Option<Pending>,
    in_outage: bool,
    count: u32,
    last_method: i32,
    last_reason: String,
}

#[derive(Debug, Clone)]
struct InstallInfo {
    version: String,
    received: u64,
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

/// Filesystem usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsInfo {
    /// Prefix (`flash:`).
    pub name: String,
    /// Capacity.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// Number of files.
    pub files: usize,
    /// Read-only.
    pub read_only: bool,
}

/// Reboot state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebootInfo {
    /// A reboot is pending or in progress.
    pub active: bool,
    /// The listener is down right now.
    pub in_outage: bool,
    /// When the pending reboot starts, ns since the epoch.
    pub when_ns: u64,
    /// Delay requested, ns.
    pub wait_ns: u64,
    /// Reason / message.
    pub reason: String,
    /// Reboots since the simulator started.
    pub count: u32,
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

/// Outcome of starting an OS.Install.
pub enum InstallBegin {
    /// The version is already on the device: answer Validated at once.
    AlreadyPresent {
        /// Version.
        version: String,
        /// Description for Validated.
        description: String,
    },
    /// Go ahead: send TransferReady and stream into the session.
    Transfer(InstallSession),
}

/// `InstallError` type and detail (numbers as in `gnoi.os.InstallError.Type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallFail {
    /// InstallError.Type.
    pub kind: InstallFailKind,
    /// Detail.
    pub detail: String,
}

/// The InstallError types the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallFailKind {
    /// Foreign platform.
    Incompatible,
    /// Does not fit.
    TooLarge,
    /// Not an image.
    ParseFail,
    /// Damaged.
    IntegrityFail,
    /// Same as the running image.
    InstallRunPackage,
    /// Another Install is running.
    InstallInProgress,
    /// Standby supervisor requested on a single-supervisor switch.
    NotSupportedOnBackup,
}

impl InstallFail {
    fn new(kind: InstallFailKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// Outcome of OS.Activate when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivateFail {
    /// The version is not on the device.
    NonExistentVersion(String),
    /// Standby requested.
    NotSupportedOnBackup(String),
    /// Anything else.
    Unspecified(String),
}

/// What Verify reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyInfo {
    /// Running version.
    pub version: String,
    /// Why the last activation did not boot, if it did not.
    pub activation_fail_message: String,
}

/// Stat entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatEntry {
    /// Full path.
    pub path: String,
    /// ns since the epoch.
    pub mtime_ns: u64,
    /// Octal-as-decimal permissions.
    pub permissions: u32,
    /// Bytes (0 for directories).
    pub size: u64,
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

fn synth_seed(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn fill(template: &str, version: &str, hostname: &str) -> String {
    template
        .replace("{version}", version)
        .replace("{hostname}", hostname)
}

/// A resolved path: filesystem index and the path inside it (no leading `/`).
struct Resolved {
    fs: usize,
    rel: String,
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

    fn free_of(&self, fs: &Fs) -> u64 {
        if fs.spec.name == "flash:"
            && self
                .faults
                .has_device(|k| matches!(k, FaultKind::FlashFull))
        {
            return 0;
        }
        fs.spec.size.saturating_sub(fs.used())
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

    // ---- reboot ---------------------------------------------------------

    /// System.Reboot: `delay_ns` from now. Refused while one is pending.
    pub fn request_reboot(
        self: &Arc<Self>,
        method: i32,
        delay_ns: u64,
        reason: &str,
    ) -> Result<(), DomainError> {
        let names = [
            "UNKNOWN",
            "COLD",
            "POWERDOWN",
            "HALT",
            "WARM",
            "NSF",
            "",
            "POWERUP",
        ];
        let name = names.get(method as usize).copied().unwrap_or("");
        if method == 0 {
            return Err(DomainError::InvalidArgument(
                "reboot method UNKNOWN; use COLD".into(),
            ));
        }
        if name.is_empty() || !self.profile.reboot_methods.iter().any(|m| m == name) {
            return Err(DomainError::Unimplemented(format!(
                "reboot method {method} is not supported on {} (supported: {})",
                self.profile.model,
                self.profile.reboot_methods.join(", ")
            )));
        }
        self.schedule_reboot(method, Duration::from_nanos(delay_ns), reason)
    }

    pub(crate) fn schedule_reboot(
        self: &Arc<Self>,
        method: i32,
        delay: Duration,
        reason: &str,
    ) -> Result<(), DomainError> {
        let mut st = self.lock();
        if st.reboot.in_outage {
            return Err(DomainError::Unavailable("the device is rebooting".into()));
        }
        if st.reboot.pending.is_some() {
            return Err(DomainError::FailedPrecondition(
                "a reboot is already pending".into(),
            ));
        }
        let cancel = CancellationToken::new();
        let delay_ns = delay.as_nanos() as u64;
        st.reboot.pending = Some(Pending {
            when_ns: wall_ns() + delay_ns,
            delay_ns,
            method,
            reason: reason.to_owned(),
            cancel: cancel.clone(),
        });
        drop(st);
        self.touch();
        let dev = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return,
                _ = dev.shutdown.cancelled() => return,
            }
            dev.run_outage().await;
        });
        Ok(())
    }

    /// System.CancelReboot.
    pub fn cancel_reboot(&self) -> Result<(), DomainError> {
        let mut st = self.lock();
        if st.reboot.in_outage {
            return Err(DomainError::Unavailable("the reboot has started".into()));
        }
        let p = st
            .reboot
            .pending
            .take()
            .ok_or_else(|| DomainError::FailedPrecondition("no reboot is pending".into()))?;
        p.cancel.cancel();
        drop(st);
        self.touch();
        Ok(())
    }

    /// RebootStatus.
    pub fn reboot_info(&self) -> (RebootInfo, i32) {
        let snap = self.snapshot().reboot;
        let st = self.lock();
        let method = st
            .reboot
            .pending
            .as_ref()
            .map(|p| p.method)
            .unwrap_or(st.reboot.last_method);
        (snap, method)
    }

    async fn run_outage(self: Arc<Self>) {
        let dur = {
            let mut st = self.lock();
            let Some(p) = st.reboot.pending.take() else {
                return;
            };
            st.reboot.in_outage = true;
            st.reboot.count += 1;
            st.reboot.last_method = p.method;
            st.reboot.last_reason = p.reason;
            Duration::from_millis(st.reboot_ms)
        };
        tracing::info!(device = %self.name, "reboot: listener down");
        self.power.send_replace(Power::Down);
        self.touch();
        let dur = match self
            .faults
            .take_device(|k| matches!(k, FaultKind::SlowReboot { .. }))
        {
            Some(FaultKind::SlowReboot { ms }) => Duration::from_millis(ms),
            _ => dur,
        };
        // An endless reboot lasts until the fault is cleared (or the fleet stops).
        let mut fw = self.faults.subscribe();
        while self
            .faults
            .has_device(|k| matches!(k, FaultKind::EndlessReboot))
        {
            tokio::select! {
                r = fw.changed() => if r.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(dur) => {}
            _ = self.shutdown.cancelled() => return,
        }
        self.boot();
        tracing::info!(device = %self.name, version = %self.lock().running_version, "reboot: back up");
        self.power.send_replace(Power::Up);
        self.touch();
    }

    /// Applies what a boot changes: the activated version (or the fallback),
    /// boot time, fresh processes.
    fn boot(&self) {
        let mut st = self.lock();
        let now = wall_ns();
        let issu = std::mem::take(&mut st.issu_pending);
        if let Some(next) = st.boot_version.take()
            && next != st.running_version
        {
            let old = st.running_version.clone();
            let corrupt = st.staged.get(&next).is_some_and(|s| s.corrupt);
            let forced = match self
                .faults
                .take_device(|k| matches!(k, FaultKind::BootOldImage { .. }))
            {
                Some(FaultKind::BootOldImage { message }) => Some(
                    message
                        .unwrap_or_else(|| format!("{next} failed to boot; rolled back to {old}")),
                ),
                _ => None,
            };
            let fail = forced.or_else(|| {
                corrupt.then(|| {
                    format!("{next} failed image verification at boot; rolled back to {old}")
                })
            });
            match fail {
                Some(msg) => {
                    st.activation_fail_message = msg;
                    st.last_activation_issu = false;
                }
                None => {
                    st.activation_fail_message.clear();
                    st.last_activation_issu = issu;
                    st.previous_version = Some(old.clone());
                    st.running_version = next.clone();
                    st.committed = self.profile.auto_commit;
                    // System packages follow the running version.
                    for fs in &mut st.fs {
                        let renames: Vec<String> = fs
                            .files
                            .iter()
                            .filter(|(k, f)| f.protected && k.contains(&old))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in renames {
                            if let Some(mut e) = fs.files.remove(&k) {
                                e.mtime_ns = now;
                                if let FileData::Inline(b) = &e.data {
                                    let t = String::from_utf8_lossy(b).replace(&old, &next);
                                    e.size = t.len() as u64;
                                    e.data = FileData::Inline(Bytes::from(t));
                                }
                                fs.files.insert(k.replace(&old, &next), e);
                            }
                        }
                        for (k, e) in fs.files.iter_mut() {
                            if k == "packages.conf"
                                && let FileData::Inline(b) = &e.data
                            {
                                let t = String::from_utf8_lossy(b).replace(&old, &next);
                                e.size = t.len() as u64;
                                e.data = FileData::Inline(Bytes::from(t));
                                e.mtime_ns = now;
                            }
                        }
                    }
                }
            }
        }
        let skew = self.skew_ns(&st);
        st.boot_time_ns = (now as i64 + skew).max(0) as u64;
        st.boot_count += 1;
        st.reboot.in_outage = false;
        st.install = None;
        let p = self.profile.clone();
        st.processes.clear();
        start_processes(&mut st, &p, now);
    }

    // ---- processes --------------------------------------------------------

    /// System.KillProcess.
    pub fn kill_process(
        &self,
        pid: u32,
        name: &str,
        restart: bool,
    ) -> Result<Process, DomainError> {
        let mut st = self.lock();
        let found = st
            .processes
            .values()
            .find(|p| {
                (pid != 0 && p.pid == pid) || (pid == 0 && !name.is_empty() && p.name == name)
            })
            .cloned();
        let Some(p) = found else {
            return Err(DomainError::NotFound(if pid != 0 {
                format!("no process with pid {pid}")
            } else {
                format!("no process named {name:?}")
            }));
        };
        if pid != 0 && !name.is_empty() && p.name != name {
            return Err(DomainError::InvalidArgument(format!(
                "pid {pid} is {}, not {name}",
                p.name
            )));
        }
        st.processes.remove(&p.pid);
        let out = if restart {
            let pid = st.next_pid;
            st.next_pid += 1;
            let np = Process {
                pid,
                name: p.name.clone(),
                started_ns: wall_ns(),
            };
            st.processes.insert(pid, np.clone());
            np
        } else {
            p
        };
        drop(st);
        self.touch();
        Ok(out)
    }

    // ---- files ------------------------------------------------------------

    fn resolve(&self, st: &State, path: &str) -> Result<Resolved, DomainError> {
        resolve(&self.profile, &st.fs, path)
    }

    /// Free bytes on the filesystem holding `path`.
    pub fn free_bytes(&self, path: &str) -> Result<u64, DomainError> {
        let st = self.lock();
        let r = self.resolve(&st, path)?;
        Ok(self.free_of(&st.fs[r.fs]))
    }

    /// File.Stat: a file, or the entries of a directory.
    pub fn stat(&self, path: &str) -> Result<Vec<StatEntry>, DomainError> {
        let st = self.lock();
        let r = self.resolve(&st, path)?;
        let fs = &st.fs[r.fs];
        let name = &fs.spec.name;
        if let Some(f) = fs.files.get(&r.rel) {
            return Ok(vec![StatEntry {
                path: format!("{name}{}", r.rel),
                mtime_ns: f.mtime_ns,
                permissions: f.permissions,
                size: f.size,
            }]);
        }
        let prefix = if r.rel.is_empty() {
            String::new()
        } else {
            format!("{}/", r.rel)
        };
        let mut out: BTreeMap<String, StatEntry> = BTreeMap::new();
        for (k, f) in fs.files.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                None => {
                    out.insert(
                        rest.to_owned(),
                        StatEntry {
                            path: format!("{name}{k}"),
                            mtime_ns: f.mtime_ns,
                            permissions: f.permissions,
                            size: f.size,
                        },
                    );
                }
                Some((dir, _)) => {
                    let e = out.entry(dir.to_owned()).or_insert_with(|| StatEntry {
                        path: format!("{name}{prefix}{dir}"),
                        mtime_ns: 0,
                        permissions: 755,
                        size: 0,
                    });
                    e.mtime_ns = e.mtime_ns.max(f.mtime_ns);
                }
            }
        }
        if out.is_empty() && !r.rel.is_empty() {
            return Err(DomainError::NotFound(format!(
                "{path}: no such file or directory"
            )));
        }
        Ok(out.into_values().collect())
    }

    /// File.Remove.
    pub fn remove(&self, path: &str) -> Result<(), DomainError> {
        let mut st = self.lock();
        let r = self.resolve(&st, path)?;
        let fs = &mut st.fs[r.fs];
        if fs.spec.read_only {
            return Err(DomainError::PermissionDenied(format!(
                "{} is read-only",
                fs.spec.name
            )));
        }
        let Some(f) = fs.files.get(&r.rel) else {
            let dir = format!("{}/", r.rel);
            if r.rel.is_empty()
                || fs
                    .files
                    .range(dir.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&dir))
            {
                return Err(DomainError::InvalidArgument(format!(
                    "{path} is a directory"
                )));
            }
            return Err(DomainError::NotFound(format!("{path}: no such file")));
        };
        if f.protected {
            return Err(DomainError::PermissionDenied(format!(
                "{path} is in use by the running system"
            )));
        }
        let full = format!("{}{}", fs.spec.name, r.rel);
        let f = fs.files.remove(&r.rel).expect("checked above");
        st.staged.retain(|_, s| s.path != full);
        drop(st);
        if let FileData::Spool(p) = f.data {
            discard_spool(p);
        }
        self.touch();
        Ok(())
    }

    /// Opens a file for File.Get.
    pub fn open_read(&self, path: &str) -> Result<FileReader, DomainError> {
        let st = self.lock();
        let r = self.resolve(&st, path)?;
        let fs = &st.fs[r.fs];
        let f = fs.files.get(&r.rel).ok_or_else(|| {
            let dir = format!("{}/", r.rel);
            if r.rel.is_empty() || fs.files.keys().any(|k| k.starts_with(&dir)) {
                DomainError::InvalidArgument(format!("{path} is a directory"))
            } else {
                DomainError::NotFound(format!("{path}: no such file"))
            }
        })?;
        let src = match &f.data {
            FileData::Inline(b) => Source::Inline(b.clone()),
            FileData::Spool(p) => Source::Spool(std::fs::File::open(p)?),
            FileData::Synthetic(seed) => Source::Synthetic(crate::faults::SplitMix::new(*seed)),
        };
        Ok(FileReader {
            src,
            pos: 0,
            size: f.size,
        })
    }

    fn new_spool(&self) -> Result<(PathBuf, std::fs::File), DomainError> {
        std::fs::create_dir_all(&self.spool_dir)?;
        let n = self.spool_seq.fetch_add(1, Ordering::Relaxed);
        let p = self.spool_dir.join(format!("{}-{n}.bin", self.name));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)?;
        Ok((p, f))
    }

    /// Starts a File.Put to `path` with `permissions` (octal as decimal).
    pub fn begin_put(
        self: &Arc<Self>,
        path: &str,
        permissions: u32,
    ) -> Result<PutSession, DomainError> {
        if permissions != 0 && permissions.to_string().chars().any(|c| c > '7')
            || permissions > 7777
        {
            return Err(DomainError::InvalidArgument(format!(
                "permissions {permissions} are not octal digits"
            )));
        }
        let (free, full) = {
            let st = self.lock();
            let r = self.resolve(&st, path)?;
            if r.rel.is_empty() || r.rel.ends_with('/') {
                return Err(DomainError::InvalidArgument(format!(
                    "{path} names a directory"
                )));
            }
            let fs = &st.fs[r.fs];
            if fs.spec.read_only {
                return Err(DomainError::PermissionDenied(format!(
                    "{} is read-only",
                    fs.spec.name
                )));
            }
            if fs.files.get(&r.rel).is_some_and(|f| f.protected) {
                return Err(DomainError::PermissionDenied(format!(
                    "{path} is in use by the running system"
                )));
            }
            let replaced = fs.files.get(&r.rel).map(|f| f.size).unwrap_or(0);
            (
                self.free_of(fs) + replaced,
                format!("{}{}", fs.spec.name, r.rel),
            )
        };
        let (spool, file) = self.new_spool()?;
        Ok(PutSession {
            dev: self.clone(),
            path: full,
            permissions: if permissions == 0 { 644 } else { permissions },
            spool: Some(spool),
            file,
            written: 0,
            free,
        })
    }

    fn store(
        &self,
        full: &str,
        data: FileData,
        size: u64,
        permissions: u32,
    ) -> Result<(), DomainError> {
        let mut st = self.lock();
        let r = self.resolve(&st, full)?;
        let old = st.fs[r.fs].files.insert(
            r.rel,
            FileEntry {
                data,
                size,
                permissions,
                mtime_ns: wall_ns(),
                protected: false,
            },
        );
        st.staged.retain(|_, s| s.path != full);
        drop(st);
        if let Some(FileEntry {
            data: FileData::Spool(p),
            ..
        }) = old
        {
            discard_spool(p);
        }
        self.touch();
        Ok(())
    }

    // ---- OS install / activate / verify ------------------------------------

    /// OS.Install's TransferRequest.
    pub fn begin_install(
        self: &Arc<Self>,
        version: &str,
        package_size: u64,
        standby: bool,
    ) -> Result<InstallBegin, InstallFail> {
        use InstallFailKind as K;
        if standby {
            return Err(InstallFail::new(
                K::NotSupportedOnBackup,
                format!("{} has a single supervisor", self.profile.model),
            ));
        }
        let mut st = self.lock();
        if let Some(i) = &st.install {
            return Err(InstallFail::new(
                K::InstallInProgress,
                format!("an install of {:?} is in progress", i.version),
            ));
        }
        if !version.is_empty() {
            if version == st.running_version {
                return Ok(InstallBegin::AlreadyPresent {
                    version: version.into(),
                    description: format!("{version} is the running image"),
                });
            }
            if let Some(s) = st.staged.get(version).filter(|s| !s.corrupt) {
                return Ok(InstallBegin::AlreadyPresent {
                    version: version.into(),
                    description: format!("{version} is already present as {}", s.path),
                });
            }
        }
        let flash = st
            .fs
            .iter()
            .position(|f| f.spec.name == "flash:")
            .expect("profiles have flash:");
        let free = self.free_of(&st.fs[flash]);
        if package_size > free {
            drop(st);
            self.faults
                .take_device(|k| matches!(k, FaultKind::FlashFull));
            return Err(InstallFail::new(
                K::TooLarge,
                format!(
                    "package of {package_size} bytes does not fit in flash: ({free} bytes free)"
                ),
            ));
        }
        st.install = Some(InstallInfo {
            version: version.into(),
            received: 0,
        });
        drop(st);
        self.touch();
        let corrupt = self
            .faults
            .take_device(|k| matches!(k, FaultKind::CorruptImage { version: None }))
            .is_some();
        let (spool, file) = match self.new_spool() {
            Ok(x) => x,
            Err(e) => {
                self.lock().install = None;
                return Err(InstallFail::new(K::TooLarge, e.to_string()));
            }
        };
        let writer = match FlashWriter::start(&self.name, file, package_size) {
            Ok(w) => w,
            Err(e) => {
                self.lock().install = None;
                let _ = std::fs::remove_file(&spool);
                return Err(InstallFail::new(
                    K::TooLarge,
                    format!("cannot start the flash writer: {e}"),
                ));
            }
        };
        Ok(InstallBegin::Transfer(InstallSession {
            dev: self.clone(),
            spool: Some(spool),
            writer: Some(writer),
            received: 0,
            free,
            corrupt,
            progress_every: self.profile.install_progress_bytes,
            next_progress: self.profile.install_progress_bytes,
            started: std::time::Instant::now(),
        }))
    }

    /// OS.Activate. On success the caller decides how the reboot happens.
    pub fn activate(
        &self,
        version: &str,
        no_reboot: bool,
        standby: bool,
    ) -> Result<(), ActivateFail> {
        if standby {
            return Err(ActivateFail::NotSupportedOnBackup(format!(
                "{} has a single supervisor",
                self.profile.model
            )));
        }
        let mut st = self.lock();
        if version.is_empty() {
            return Err(ActivateFail::NonExistentVersion("no version given".into()));
        }
        if version != st.running_version && !st.staged.contains_key(version) {
            return Err(ActivateFail::NonExistentVersion(format!(
                "version {version} is not installed"
            )));
        }
        if st.install.is_some() {
            return Err(ActivateFail::Unspecified(
                "an install is in progress".into(),
            ));
        }
        st.boot_version = Some(version.to_owned());
        // An activation that reboots an ISSU-capable device takes the
        // in-service path; the boot reports it.
        st.issu_pending = !no_reboot && st.issu_capable;
        drop(st);
        self.touch();
        Ok(())
    }

    /// Corrupts a staged image on flash (fault `corrupt_image` with a version).
    pub fn corrupt_staged(&self, version: &str) -> Result<(), DomainError> {
        let mut st = self.lock();
        let s = st
            .staged
            .get_mut(version)
            .ok_or_else(|| DomainError::NotFound(format!("{version} is not staged")))?;
        s.corrupt = true;
        let path = s.path.clone();
        let r = self.resolve(&st, &path)?;
        if let Some(FileEntry {
            data: FileData::Spool(p),
            ..
        }) = st.fs[r.fs].files.get(&r.rel)
        {
            let mut f = std::fs::OpenOptions::new().read(true).write(true).open(p)?;
            let at = crate::image::HEADER_LEN as u64 + 7;
            let mut b = [0u8; 1];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut b)?;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&[b[0] ^ 0x5a])?;
        }
        drop(st);
        self.touch();
        Ok(())
    }

    /// OS.Verify.
    pub fn verify(&self) -> Result<VerifyInfo, DomainError> {
        let st = self.lock();
        if st.reboot.in_outage {
            return Err(DomainError::Unavailable("the device is rebooting".into()));
        }
        Ok(VerifyInfo {
            version: st.running_version.clone(),
            activation_fail_message: st.activation_fail_message.clone(),
        })
    }

    /// Running version.
    pub fn running_version(&self) -> String {
        self.lock().running_version.clone()
    }

    // ---- certificates -------------------------------------------------------

    /// Certificates (trustpoints).
    pub fn certificates(&self) -> Vec<CertEntry> {
        self.lock().certs.values().cloned().collect()
    }

    /// Adds or replaces a certificate.
    pub fn put_certificate(&self, id: &str, pem: String) {
        let mut st = self.lock();
        st.certs.insert(
            id.into(),
            CertEntry {
                id: id.into(),
                pem,
                modified_ns: wall_ns(),
            },
        );
        drop(st);
        self.touch();
    }

    /// Removes certificates; returns (revoked, not found).
    pub fn revoke_certificates(&self, ids: &[String]) -> (Vec<String>, Vec<String>) {
        let mut st = self.lock();
        let (ok, missing) = ids
            .iter()
            .cloned()
            .partition(|id| st.certs.remove(id).is_some());
        drop(st);
        self.touch();
        (ok, missing)
    }

    // ---- factory reset --------------------------------------------------------

    /// FactoryReset.Start: wipes writable filesystems (system files stay),
    /// staged images and, unless `retain_certs`, certificates; optionally
    /// returns to the factory version. The caller schedules the reboot.
    pub fn factory_reset(&self, factory_os: bool, retain_certs: bool) -> Result<(), DomainError> {
        let mut st = self.lock();
        if st.install.is_some() {
            return Err(DomainError::FailedPrecondition(
                "an install is in progress".into(),
            ));
        }
        let mut spools = Vec::new();
        for fs in &mut st.fs {
            if fs.spec.read_only {
                continue;
            }
            fs.files.retain(|_, f| {
                if f.protected {
                    return true;
                }
                if let FileData::Spool(p) = &f.data {
                    spools.push(p.clone());
                }
                false
            });
        }
        st.staged.clear();
        if !retain_certs {
            st.certs.clear();
        }
        if factory_os && let Some(v) = self.profile.factory_version.clone() {
            st.boot_version = Some(v);
        }
        st.committed = true;
        st.previous_version = None;
        st.activation_fail_message.clear();
        let now = wall_ns();
        drop(st);
        for p in spools {
            let _ = std::fs::remove_file(p);
        }
        let mut st = self.lock();
        if st.fs.iter().all(|f| f.files.values().all(|e| e.protected)) {
            self.seed_unprotected(&mut st, now);
        }
        drop(st);
        self.touch();
        Ok(())
    }

    fn seed_unprotected(&self, st: &mut State, now: u64) {
        let version = st.running_version.clone();
        for f in self
            .profile
            .files
            .iter()
            .filter(|f| !f.protected && f.text.is_some())
        {
            let path = fill(&f.path, &version, &st.hostname);
            if let Ok(r) = resolve(&self.profile, &st.fs, &path) {
                let b = Bytes::from(fill(
                    f.text.as_deref().unwrap_or(""),
                    &version,
                    &st.hostname,
                ));
                let size = b.len() as u64;
                st.fs[r.fs].files.insert(
                    r.rel,
                    FileEntry {
                        data: FileData::Inline(b),
                        size,
                        permissions: f.permissions,
                        mtime_ns: now,
                        protected: false,
                    },
                );
            }
        }
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

fn seed_files(profile: &Profile, st: &mut State, now: u64) {
    let version = st.running_version.clone();
    for f in &profile.files {
        let path = fill(&f.path, &version, &st.hostname);
        let Ok(r) = resolve(profile, &st.fs, &path) else {
            continue;
        };
        let (data, size) = match &f.text {
            Some(t) => {
                let b = Bytes::from(fill(t, &version, &st.hostname));
                let n = b.len() as u64;
                (FileData::Inline(b), n)
            }
            None => (FileData::Synthetic(synth_seed(&path)), f.size),
        };
        st.fs[r.fs].files.insert(
            r.rel,
            FileEntry {
                data,
                size,
                permissions: f.permissions,
                mtime_ns: now,
                protected: f.protected,
            },
        );
    }
}

fn start_processes(st: &mut State, p: &Profile, now: u64) {
    for name in &p.processes {
        let pid = st.next_pid;
        st.next_pid += 1 + (pid % 7);
        st.processes.insert(
            pid,
            Process {
                pid,
                name: name.clone(),
                started_ns: now,
            },
        );
    }
}

/// IOS-XE path rules: `<fs>:<path>` or `<fs>:/<path>`, an alias such as
/// `bootflash:` names the same filesystem, no `..`, no empty components.
fn resolve(profile: &Profile, fs: &[Fs], path: &str) -> Result<Resolved, DomainError> {
    let Some((prefix, rest)) = path.split_once(':') else {
        return Err(DomainError::InvalidArgument(format!(
            "{path:?} has no filesystem prefix (flash:, bootflash:, usbflash0:, ...)"
        )));
    };
    let prefix = format!("{prefix}:");
    let idx = fs
        .iter()
        .position(|f| f.spec.name == prefix || f.spec.aliases.contains(&prefix))
        .ok_or_else(|| {
            DomainError::InvalidArgument(format!(
                "{prefix} is not a filesystem on {}",
                profile.model
            ))
        })?;
    let rest = rest.trim_start_matches('/');
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = Vec::new();
    for c in rest.split('/') {
        match c {
            "" if rest.is_empty() => {}
            "" => {
                return Err(DomainError::InvalidArgument(format!(
                    "{path:?} has an empty path component"
                )));
            }
            "." => {}
            ".." => {
                return Err(DomainError::InvalidArgument(format!(
                    "{path:?}: '..' is not allowed"
                )));
            }
            c if c.contains(['\0', '\\']) => {
                return Err(DomainError::InvalidArgument(format!(
                    "{path:?} has a forbidden character"
                )));
            }
            c => parts.push(c),
        }
    }
    Ok(Resolved {
        fs: idx,
        rel: parts.join("/"),
    })
}

enum Source {
    Inline(Bytes),
    Spool(std::fs::File),
    Synthetic(crate::faults::SplitMix),
}

/// Reads a file in chunks (File.Get).
pub struct FileReader {
    src: Source,
    pos: u64,
    size: u64,
}

impl FileReader {
    /// Total size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Next chunk of at most `max` bytes; `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, DomainError> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let n = (self.size - self.pos).min(max as u64) as usize;
        let out = match &mut self.src {
            Source::Inline(b) => b[self.pos as usize..self.pos as usize + n].to_vec(),
            Source::Spool(f) => {
                let mut v = vec![0u8; n];
                f.read_exact(&mut v)?;
                v
            }
            Source::Synthetic(rng) => {
                let mut v = Vec::with_capacity(n + 8);
                while v.len() < n {
                    v.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
                v.truncate(n);
                v
            }
        };
        self.pos += n as u64;
        Ok(Some(out))
    }
}

/// An open File.Put. Dropping it without [`PutSession::commit`] leaves no file.
pub struct PutSession {
    dev: Arc<Device>,
    path: String,
    permissions: u32,
    spool: Option<PathBuf>,
    file: std::fs::File,
    written: u64,
    free: u64,
}

impl PutSession {
    /// Full destination path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Appends content.
    pub fn write(&mut self, data: &[u8]) -> Result<(), DomainError> {
        if data.len() > MAX_PUT_CHUNK {
            return Err(DomainError::InvalidArgument(format!(
                "content message of {} bytes exceeds the 64 KiB limit",
                data.len()
            )));
        }
        if self.written + data.len() as u64 > self.free {
            self.dev
                .faults
                .take_device(|k| matches!(k, FaultKind::FlashFull));
            return Err(DomainError::ResourceExhausted(format!(
                "{}: no space left ({} bytes free)",
                self.path, self.free
            )));
        }
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Re-reads the content and checks it against the client's hash, then
    /// makes the file visible.
    pub fn commit(mut self, method: i32, digest: &[u8]) -> Result<(), DomainError> {
        self.file.flush()?;
        self.file.seek(SeekFrom::Start(0))?;
        let got = hash_reader(&mut self.file, method)?;
        if got != digest {
            return Err(DomainError::DataLoss(format!(
                "{}: hash mismatch (received {}, computed {})",
                self.path,
                hex::encode(digest),
                hex::encode(&got)
            )));
        }
        let spool = self.spool.take().expect("spool present until commit");
        let r = self.dev.store(
            &self.path,
            FileData::Spool(spool.clone()),
            self.written,
            self.permissions,
        );
        if r.is_err() {
            let _ = std::fs::remove_file(&spool);
        }
        r
    }
}

impl Drop for PutSession {
    fn drop(&mut self) {
        if let Some(p) = self.spool.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Digest with a `gnoi.types.HashType.HashMethod` (1 SHA256, 2 SHA512, 3 MD5).
pub fn hash_reader(r: &mut impl Read, method: i32) -> Result<Vec<u8>, DomainError> {
    use sha2::Digest;
    fn run<D: sha2::Digest>(mut d: D, r: &mut impl Read) -> Result<Vec<u8>, DomainError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(d.finalize().to_vec());
            }
            d.update(&buf[..n]);
        }
    }
    match method {
        1 => run(sha2::Sha256::new(), r),
        2 => run(sha2::Sha512::new(), r),
        3 => run(md5::Md5::new(), r),
        m => Err(DomainError::InvalidArgument(format!(
            "hash method {m} is not SHA256, SHA512 or MD5"
        ))),
    }
}

/// Messages each flash stage holds at most (with 1 MiB chunks, 8 MiB).
const FLASH_WRITER_QUEUE: usize = 8;

/// The write side of an OS.Install: two threads of its own, one appending
/// each chunk to the spool file and one feeding it to the image validator
/// (SHA-256). Both run beside the gRPC receive path instead of on the async
/// workers between two reads of the stream, and beside each other, since
/// each chunk is shared, not copied. Chunks arrive in order over bounded
/// queues (backpressure reaches the client through HTTP/2 flow control);
/// dropping the senders ends both threads.
struct FlashWriter {
    write_tx: tokio::sync::mpsc::Sender<Bytes>,
    hash_tx: tokio::sync::mpsc::Sender<Bytes>,
    written: tokio::sync::oneshot::Receiver<Result<(), String>>,
    hashed: tokio::sync::oneshot::Receiver<ImageValidator>,
}

impl FlashWriter {
    /// `expected` is the announced package size: the spool file gets its
    /// blocks up front, so that appending does not allocate them page by
    /// page (a hint; ignored where the filesystem cannot).
    fn start(device: &str, mut file: std::fs::File, expected: u64) -> std::io::Result<FlashWriter> {
        let (write_tx, mut write_rx) = tokio::sync::mpsc::channel::<Bytes>(FLASH_WRITER_QUEUE);
        let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Bytes>(FLASH_WRITER_QUEUE);
        let (written_tx, written) = tokio::sync::oneshot::channel();
        let (hashed_tx, hashed) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("flash-{device}"))
            .spawn(move || {
                background_priority();
                if expected > 0 {
                    use rustix::fs::{FallocateFlags, fallocate};
                    let _ = fallocate(&file, FallocateFlags::KEEP_SIZE, 0, expected);
                }
                let mut result = Ok(());
                while let Some(chunk) = write_rx.blocking_recv() {
                    if let Err(e) = file.write_all(&chunk) {
                        result = Err(e.to_string());
                        break;
                    }
                }
                if result.is_ok() {
                    result = file.flush().map_err(|e| e.to_string());
                }
                let _ = written_tx.send(result);
            })?;
        std::thread::Builder::new()
            .name(format!("verify-{device}"))
            .spawn(move || {
                background_priority();
                let mut validator = ImageValidator::new();
                while let Some(chunk) = hash_rx.blocking_recv() {
                    validator.update(&chunk);
                }
                let _ = hashed_tx.send(validator);
            })?;
        Ok(FlashWriter {
            write_tx,
            hash_tx,
            written,
            hashed,
        })
    }

    /// Queues a chunk for both threads; waits while a queue is full. An
    /// error means the write thread stopped on a write error, which
    /// [`FlashWriter::finish`] names.
    async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        self.hash_tx.send(chunk.clone()).await.map_err(|_| ())?;
        self.write_tx.send(chunk).await.map_err(|_| ())
    }

    /// Closes the queues and waits for every queued chunk to be written
    /// and hashed.
    async fn finish(self) -> Result<ImageValidator, String> {
        drop(self.write_tx);
        drop(self.hash_tx);
        self.written
            .await
            .unwrap_or_else(|_| Err("the flash write thread ended without a result".into()))?;
        self.hashed
            .await
            .map_err(|_| "the image verify thread ended without a result".into())
    }
}

/// Deletes a spool file. Unlinking a large file takes milliseconds of
/// kernel time (its page cache is dropped), so inside a runtime it runs on
/// the blocking pool instead of holding up an async worker, where it would
/// delay every other request of the device.
fn discard_spool(p: PathBuf) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || {
                let _ = std::fs::remove_file(p);
            });
        }
        Err(_) => {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), as a
/// switch's storage work runs below its management plane: when the CPU is
/// short, gRPC requests (System.Time, RebootStatus) are answered before the
/// next chunk is hashed or written. Best effort.
fn background_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

fn flash_write_failed(e: String) -> InstallFail {
    InstallFail::new(
        InstallFailKind::TooLarge,
        format!("flash write failed: {e}"),
    )
}

/// An open OS.Install transfer. Dropping it (client went away, error)
/// discards the partial image and frees the install slot.
pub struct InstallSession {
    dev: Arc<Device>,
    spool: Option<PathBuf>,
    writer: Option<FlashWriter>,
    received: u64,
    free: u64,
    corrupt: bool,
    progress_every: u64,
    next_progress: u64,
    started: std::time::Instant,
}

impl InstallSession {
    /// Appends content; returns `Some(bytes)` when a TransferProgress is due.
    /// The bytes count as received once queued for the flash writer; a
    /// write error surfaces here on a later chunk or in [`Self::finish`].
    pub async fn write(&mut self, data: Bytes) -> Result<Option<u64>, InstallFail> {
        let total = self.received + data.len() as u64;
        if total > self.free {
            self.dev
                .faults
                .take_device(|k| matches!(k, FaultKind::FlashFull));
            return Err(InstallFail::new(
                InstallFailKind::TooLarge,
                format!(
                    "flash: is full after {} bytes ({} bytes were free)",
                    self.received, self.free
                ),
            ));
        }
        let data = if self.corrupt && total > crate::image::HEADER_LEN as u64 + 64 {
            // Flip one body byte as it lands on "flash".
            self.corrupt = false;
            let mut v = data.to_vec();
            let i = v.len() - 1;
            v[i] ^= 0xa5;
            Bytes::from(v)
        } else {
            data
        };
        let writer = self.writer.as_ref().expect("writer present until finish");
        if writer.write(data).await.is_err() {
            let w = self.writer.take().expect("writer present until finish");
            return Err(match w.finish().await {
                Err(e) => flash_write_failed(e),
                Ok(_) => flash_write_failed("the flash writer stopped".into()),
            });
        }
        self.received = total;
        // The rate limit, read per chunk so a patch applies mid-transfer:
        // hold the chunk until the stream is no ahead of the rate (the
        // client sees gRPC flow control, as from a slow flash).
        let rate = self.dev.lock().install_bytes_per_s;
        if rate > 0 {
            let due = std::time::Duration::from_secs_f64(total as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        if let Some(i) = self.dev.lock().install.as_mut() {
            i.received = total;
        }
        if self.progress_every > 0 && total >= self.next_progress {
            while self.next_progress <= total {
                self.next_progress += self.progress_every;
            }
            return Ok(Some(total));
        }
        Ok(None)
    }

    /// Bytes received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// TransferEnd: waits for the flash writer, validates the image and
    /// stores it as `flash:gNOI_iosxe_<version>.bin`. Returns (version, path).
    pub async fn finish(mut self) -> Result<(String, String), InstallFail> {
        use InstallFailKind as K;
        let size = self.received;
        let writer = self.writer.take().expect("writer present until finish");
        let validator = writer.finish().await.map_err(flash_write_failed)?;
        let spec = validator
            .finish(&self.dev.profile.platform_family)
            .map_err(|e| match e {
                ImageError::Incompatible { .. } => InstallFail::new(K::Incompatible, e.to_string()),
                ImageError::Integrity(_) => InstallFail::new(K::IntegrityFail, e.to_string()),
                _ => InstallFail::new(K::ParseFail, e.to_string()),
            })?;
        if spec.version == self.dev.running_version() {
            return Err(InstallFail::new(
                K::InstallRunPackage,
                format!("{} is the running image", spec.version),
            ));
        }
        let path = format!("flash:gNOI_iosxe_{}.bin", spec.version);
        let spool = self.spool.take().expect("spool present until finish");
        if let Err(e) = self
            .dev
            .store(&path, FileData::Spool(spool.clone()), size, 644)
        {
            let _ = std::fs::remove_file(&spool);
            return Err(InstallFail::new(K::ParseFail, e.to_string()));
        }
        let mut st = self.dev.lock();
        st.staged.insert(
            spec.version.clone(),
            StagedImage {
                version: spec.version.clone(),
                path: path.clone(),
                size,
                corrupt: false,
            },
        );
        drop(st);
        tracing::info!(device = %self.dev.name, version = %spec.version, "install add {path}");
        Ok((spec.version, path))
    }
}

impl Drop for InstallSession {
    fn drop(&mut self) {
        self.dev.lock().install = None;
        self.dev.touch();
        if let Some(p) = self.spool.take() {
            discard_spool(p);
        }
    }
}

/// For tests and tools: path rules without a device.
pub fn check_path(profile: &Profile, path: &str) -> Result<String, DomainError> {
    let fs: Vec<Fs> = profile
        .filesystems
        .iter()
        .map(|s| Fs {
            spec: s.clone(),
            files: BTreeMap::new(),
        })
        .collect();
    let r = resolve(profile, &fs, path)?;
    Ok(format!("{}{}", fs[r.fs].spec.name, r.rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        let p = Profile::builtin("c9300-17.18").unwrap();
        assert_eq!(check_path(&p, "flash:/a/b.bin").unwrap(), "flash:a/b.bin");
        assert_eq!(check_path(&p, "bootflash:x.txt").unwrap(), "flash:x.txt");
        assert_eq!(check_path(&p, "usbflash1:/").unwrap(), "usbflash1:");
        assert!(matches!(
            check_path(&p, "/etc/passwd"),
            Err(DomainError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_path(&p, "flash:../x"),
            Err(DomainError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_path(&p, "flash:a//b"),
            Err(DomainError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_path(&p, "disk9:x"),
            Err(DomainError::InvalidArgument(_))
        ));
    }
}
