//! `cvk-hil chaos`: a bounded campaign of fault trials against the local
//! control plane and a simulated fleet.
//!
//! Each trial starts fresh switches, one controller or an elected pair
//! (run as separate processes, restarted like a kubelet would when they
//! exit), applies a random mix of software upgrades and write-class actions
//! (one object per switch) and injects one fault at a random moment:
//!
//! ```text
//!  none               no fault: the baseline the figures are compared with
//!  leader-kill        SIGKILL of the Lease holder (its node is lost: it does
//!                     not come back) while a standby runs
//!  controller-restart SIGKILL of the only controller; restarted after 1 s
//!  apiserver-restart  kube-apiserver killed mid-upgrade, started again
//!  etcd-restart       etcd killed mid-upgrade (data kept), started again
//!  sim-reboot         a switch reboots while OS.Install streams to it
//!  install-cut        the OS.Install connection is cut part-way
//! ```
//!
//! Then it checks what the issue promises, from the simulators' journals and
//! the objects: no destructive RPC (Activate, Reboot, FactoryReset,
//! KillProcess, File Put/Remove) twice for one object; every object
//! terminal within its bound and Succeeded (every fault here is one the
//! controller must ride through); a Succeeded object's RPC in the journal
//! exactly once and an upgraded switch running the target; no device Lease
//! and no finalizer left on a terminal object; the election Lease released
//! when the controllers stop. Every trial derives from `seed + trial`, so a
//! failing trial is replayed with `--seed`.

mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iosxe_sim::{FaultKind as SimFault, FaultSpec, Fleet, FleetConfig, FleetHandle, Profile};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::process::Child;

use crate::control_plane::{Component, LocalControlPlane};
use crate::scenario::runner::{ControllerCommand, TERMINAL_PHASES, create_device};
use crate::scenario::target::PreparedDevice;
use crate::testing::TestNamespace;

pub use report::{CampaignReport, FaultRow};

/// The simulator profile of every switch (IOS-XE 17.18.02 on a C9300).
const PROFILE: &str = "c9300-17.18";
/// The image every upgrade installs.
const TARGET_FULL: &str = "17.18.03.0.4200.1770000000";
const TARGET: &str = "17.18.03";
const SIM_USER: &str = "cvk";
const SIM_PASSWORD: &str = "cvk-sim";
/// Election Lease name and the short timings of a trial (the product's
/// defaults are 15/10/2 s; a campaign of many failovers uses 6/4/1 s, the
/// same algorithm and the same fencing rule).
const ELECTION_LEASE: &str = "cvk-controller-leader";
const LEASE_SECONDS: u64 = 6;
const RENEW_SECONDS: u64 = 4;
const RETRY_SECONDS: u64 = 1;
/// How long a terminal object may keep its device Lease or finalizer.
const CLEANUP_GRACE: Duration = Duration::from_secs(15);
/// RPCs that change a switch: never twice for one object.
pub const DESTRUCTIVE: &[&str] = &[
    "/gnoi.os.OS/Activate",
    "/gnoi.system.System/Reboot",
    "/gnoi.factory_reset.FactoryReset/Start",
    "/gnoi.system.System/KillProcess",
    "/gnoi.file.File/Put",
    "/gnoi.file.File/Remove",
];

/// One kind of fault a trial injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// No fault: the baseline every figure is compared with.
    None,
    LeaderKill,
    ControllerRestart,
    ApiserverRestart,
    EtcdRestart,
    SimReboot,
    InstallCut,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::None,
        Fault::LeaderKill,
        Fault::ControllerRestart,
        Fault::ApiserverRestart,
        Fault::EtcdRestart,
        Fault::SimReboot,
        Fault::InstallCut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::LeaderKill => "leader-kill",
            Fault::ControllerRestart => "controller-restart",
            Fault::ApiserverRestart => "apiserver-restart",
            Fault::EtcdRestart => "etcd-restart",
            Fault::SimReboot => "sim-reboot",
            Fault::InstallCut => "install-cut",
        }
    }

    /// Parses a `--faults` entry.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?}; one of {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a campaign runs.
#[derive(Clone)]
pub struct ChaosOptions {
    pub trials: u32,
    pub seed: u64,
    /// The faults to draw from (default: all).
    pub faults: Vec<Fault>,
    /// Switches (and objects) per trial, drawn from this range.
    pub devices: std::ops::RangeInclusive<usize>,
    /// No new trial starts after this much time.
    pub max_duration: Duration,
    /// How to start a controller (`cvk-hil controller` re-executes this
    /// binary).
    pub controller: ControllerCommand,
    /// Per-trial logs (kept for trials with a violation).
    pub artifacts: PathBuf,
    pub progress: Arc<dyn Fn(String) + Send + Sync>,
}

/// The kind of object a trial applies on one switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Upgrade,
    Reboot,
    KillProcess,
    FileRemove,
}

impl Work {
    /// The destructive RPC a Succeeded object sent exactly once.
    fn rpc(self) -> &'static str {
        match self {
            Work::Upgrade => "/gnoi.os.OS/Activate",
            Work::Reboot => "/gnoi.system.System/Reboot",
            Work::KillProcess => "/gnoi.system.System/KillProcess",
            Work::FileRemove => "/gnoi.file.File/Remove",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Work::Upgrade => "IOSXESoftwareUpgrade",
            _ => "IOSXEOperationalAction",
        }
    }

    /// How long the object may take to reach a terminal phase, from apply,
    /// fault included (a lease takeover, an API server restart, a retry).
    fn bound(self) -> Duration {
        match self {
            Work::Upgrade => Duration::from_secs(150),
            _ => Duration::from_secs(90),
        }
    }
}

/// How one object of a trial ended.
#[derive(Debug, Clone)]
pub struct ObjectOutcome {
    pub object: String,
    pub device: String,
    pub phase: Option<String>,
    pub reason: Option<String>,
    pub time_to_terminal: Option<Duration>,
}

/// The record of one trial.
#[derive(Debug, Clone)]
pub struct TrialReport {
    pub trial: u32,
    pub seed: u64,
    pub fault: Fault,
    /// An elected pair (true) or a single controller.
    pub ha: bool,
    /// What was injected, when.
    pub injected: String,
    pub objects: Vec<ObjectOutcome>,
    /// Destructive RPCs sent more than once for one object.
    pub duplicates: usize,
    /// Objects not terminal within their bound.
    pub stuck: usize,
    /// Every broken promise, in words.
    pub violations: Vec<String>,
    pub restarts: u32,
    /// leader-kill: from the kill until the standby held the Lease.
    pub failover: Option<Duration>,
    pub duration: Duration,
    pub logs: Option<PathBuf>,
}

/// Runs the campaign on `cp` (its API server and etcd are restarted by
/// some faults, so it must be a control plane of its own).
pub async fn run_campaign(cp: &LocalControlPlane, opts: &ChaosOptions) -> CampaignReport {
    let started = Instant::now();
    let mut trials = Vec::new();
    let mut order: Vec<Fault> = Vec::new();
    let mut deck_rng = StdRng::seed_from_u64(opts.seed);
    for n in 0..opts.trials {
        if started.elapsed() > opts.max_duration {
            (opts.progress)(format!(
                "chaos: --max-duration {:?} reached after {n} trial(s); stopping",
                opts.max_duration
            ));
            break;
        }
        // Every fault kind comes up once per round, in a shuffled order.
        if order.is_empty() {
            order = opts.faults.clone();
            order.shuffle(&mut deck_rng);
        }
        let fault = order.pop().expect("refilled above");
        let seed = opts.seed.wrapping_add(u64::from(n));
        let report = run_trial(cp, opts, n + 1, seed, fault).await;
        (opts.progress)(report::trial_line(&report));
        trials.push(report);
    }
    CampaignReport {
        seed: opts.seed,
        trials,
        duration: started.elapsed(),
    }
}

/// Everything a trial started; torn down at its end.
struct Trial {
    client: Client,
    ns: String,
    fleet: Option<FleetHandle>,
    replicas: Vec<Replica>,
    objects: Vec<(Work, String, String)>,
    /// Serves the image for the trial's duration.
    _http: Option<iosxe_sim::image_servers::HttpServer>,
}

async fn run_trial(
    cp: &LocalControlPlane,
    opts: &ChaosOptions,
    trial: u32,
    seed: u64,
    fault: Fault,
) -> TrialReport {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let ha = fault == Fault::LeaderKill || rng.random_bool(0.5);
    let mut report = TrialReport {
        trial,
        seed,
        fault,
        ha,
        injected: String::new(),
        objects: Vec::new(),
        duplicates: 0,
        stuck: 0,
        violations: Vec::new(),
        restarts: 0,
        failover: None,
        duration: Duration::ZERO,
        logs: None,
    };
    let dir = opts.artifacts.join(format!("trial-{trial:03}"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report
            .violations
            .push(format!("creating {}: {e}", dir.display()));
        return report;
    }
    match setup(cp, opts, &mut rng, &dir, ha, fault).await {
        Ok(mut t) => {
            drive(cp, &mut t, &mut rng, fault, &mut report).await;
            teardown(t, &mut report).await;
        }
        Err(e) => report.violations.push(format!("setting up: {e}")),
    }
    report.duration = started.elapsed();
    if report.violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let _ = std::fs::write(dir.join("trial.txt"), report::trial_detail(&report));
        report.logs = Some(dir);
    }
    report
}

async fn setup(
    cp: &LocalControlPlane,
    opts: &ChaosOptions,
    rng: &mut StdRng,
    dir: &Path,
    ha: bool,
    fault: Fault,
) -> Result<Trial, String> {
    let client = cp.client().await.map_err(|e| e.to_string())?;
    let ns = TestNamespace::create(&client, "chaos")
        .await
        .map_err(|e| e.to_string())?
        .name()
        .to_owned();
    let count = rng.random_range(opts.devices.clone());
    let profile = Profile::load(PROFILE).map_err(|e| e.to_string())?;
    let cfg = FleetConfig::new(count, profile)
        .credentials(SIM_USER, SIM_PASSWORD)
        .reboot_ms(rng.random_range(500..=3000));
    let fleet = Fleet::start(cfg)
        .await
        .map_err(|e| format!("starting the simulators: {e}"))?;
    let mut trial = Trial {
        client: client.clone(),
        ns: ns.clone(),
        fleet: Some(fleet),
        replicas: Vec::new(),
        objects: Vec::new(),
        _http: None,
    };
    let fleet = trial.fleet.as_ref().expect("just set");
    // A paced flash (1.5-6 MiB/s) makes the transfer last long enough for a
    // fault to land in it.
    let rate = rng.random_range(3..=12) * 512 * 1024;
    for handle in fleet.devices() {
        handle
            .apply(iosxe_sim::StatePatch {
                install_bytes_per_s: Some(rate),
                ..Default::default()
            })
            .map_err(|e| format!("pacing {}: {e}", handle.name()))?;
        let addr = handle.addr();
        let device = PreparedDevice {
            name: handle.name().to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            tls: false,
            ca_pem: None,
            server_name: None,
            username: Some(SIM_USER.into()),
            password: Some(SIM_PASSWORD.into()),
            sim: None,
            version: None,
            ssh_port: None,
            known_hosts: None,
            ssh_trust: Default::default(),
            enable_secret: None,
            labels: Default::default(),
        };
        create_device(&client, &ns, &device).await?;
    }

    // The first switch always upgrades (the transfer faults need one); the
    // others draw their work.
    let image_size = rng.random_range(2..=6) * 1024 * 1024;
    let image_dir = dir.join("images");
    std::fs::create_dir_all(&image_dir).map_err(|e| format!("{}: {e}", image_dir.display()))?;
    let image_path = image_dir.join("new.bin");
    let file =
        std::fs::File::create(&image_path).map_err(|e| format!("{}: {e}", image_path.display()))?;
    let sha256 = iosxe_sim::ImageSpec::new(TARGET_FULL.to_owned(), image_size)
        .write_to(std::io::BufWriter::new(file))
        .map_err(|e| format!("writing the image: {e}"))?;
    let http = iosxe_sim::image_servers::HttpServer::start(&image_dir, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| format!("starting the image HTTP server: {e}"))?;
    let url = http.url("new.bin");
    trial._http = Some(http);

    let pool = [
        Work::Upgrade,
        Work::Upgrade,
        Work::Reboot,
        Work::KillProcess,
        Work::FileRemove,
    ];
    for (i, handle) in fleet.devices().iter().enumerate() {
        let work = if i == 0 {
            Work::Upgrade
        } else {
            pool[rng.random_range(0..pool.len())]
        };
        let name = format!("{}-{}", kebab(work), handle.name());
        trial.objects.push((work, name, handle.name().to_owned()));
    }

    // Transfer faults are armed before the upgrade starts, on the first
    // switch, at a random byte of the stream.
    let first = fleet.nth(0).ok_or("the fleet has no device")?;
    match fault {
        Fault::InstallCut => {
            let at = rng.random_range(64 * 1024..image_size);
            first
                .inject(
                    FaultSpec::rpc(
                        "/gnoi.os.OS/Install",
                        SimFault::Cut {
                            after_bytes: Some(at),
                            probability: None,
                            seed: 0,
                        },
                    )
                    .once(),
                )
                .map_err(|e| format!("arming the cut: {e}"))?;
        }
        Fault::SimReboot => {
            // The stream stalls part-way, so the reboot lands in the middle
            // of the transfer rather than before or after it.
            let at = rng.random_range(64 * 1024..image_size);
            first
                .inject(
                    FaultSpec::rpc("/gnoi.os.OS/Install", SimFault::Stall { after_bytes: at })
                        .once(),
                )
                .map_err(|e| format!("arming the stall: {e}"))?;
        }
        _ => {}
    }

    let replicas = if ha { 2 } else { 1 };
    for r in 0..replicas {
        let id = format!("replica-{}", (b'a' + r as u8) as char);
        trial.replicas.push(
            Replica::start(opts, &ns, dir, &id, ha, cp.kubeconfig_yaml())
                .map_err(|e| format!("starting controller {id}: {e}"))?,
        );
    }
    if ha {
        // Apply only once somebody leads, so a kill lands on real work.
        wait_for_holder(&client, &ns, Duration::from_secs(30)).await?;
    }
    for (work, name, device) in &trial.objects {
        apply(&client, &ns, *work, name, device, &url, &sha256).await?;
    }
    Ok(trial)
}

fn kebab(work: Work) -> &'static str {
    match work {
        Work::Upgrade => "upgrade",
        Work::Reboot => "reboot",
        Work::KillProcess => "kill",
        Work::FileRemove => "remove",
    }
}

fn api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = match kind {
        "CiscoDevice" => GroupVersionKind::gvk("cisco.vk", "v1alpha1", kind),
        _ => GroupVersionKind::gvk("ops.cisco.vk", "v1alpha1", kind),
    };
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

async fn apply(
    client: &Client,
    ns: &str,
    work: Work,
    name: &str,
    device: &str,
    url: &str,
    sha256: &str,
) -> Result<(), String> {
    let spec = match work {
        Work::Upgrade => json!({
            "deviceRef": { "name": device },
            "imageSource": { "url": url, "sha256": sha256 },
            "targetVersion": TARGET,
            "strategy": "Reload",
            "rollbackOnFailure": false,
            "resumePolicy": "Retry",
            "maxRetries": 3,
            "rebootTimeoutSeconds": 120,
        }),
        Work::Reboot => json!({
            "deviceRef": { "name": device }, "confirm": device,
            "action": { "kind": "Reboot", "reboot": { "message": "chaos trial", "delay": 0 } },
        }),
        Work::KillProcess => json!({
            "deviceRef": { "name": device }, "confirm": device,
            "action": { "kind": "KillProcess",
                        "killProcess": { "name": "nginx", "signal": "TERM", "restart": true } },
        }),
        Work::FileRemove => json!({
            "deviceRef": { "name": device }, "confirm": device,
            "action": { "kind": "FileRemove", "fileRemove": { "path": "flash:vlan.dat" } },
        }),
    };
    let obj = json!({
        "apiVersion": "ops.cisco.vk/v1alpha1",
        "kind": work.kind(),
        "metadata": { "name": name },
        "spec": spec,
    });
    let obj: DynamicObject = serde_json::from_value(obj).map_err(|e| e.to_string())?;
    api(client, ns, work.kind())
        .create(&PostParams::default(), &obj)
        .await
        .map_err(|e| format!("creating {}/{name}: {e}", work.kind()))?;
    Ok(())
}

/// The object, or `None` while it does not exist or the API server does
/// not answer (an outage is part of the trial).
async fn get_object(client: &Client, ns: &str, kind: &str, name: &str) -> Option<DynamicObject> {
    api(client, ns, kind).get_opt(name).await.ok().flatten()
}

fn phase(obj: &DynamicObject) -> Option<String> {
    obj.data["status"]["phase"].as_str().map(str::to_owned)
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(ELECTION_LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
        .filter(|h| !h.is_empty())
}

/// Waits until a replica other than `lost` holds the election Lease.
async fn wait_for_holder_other_than(
    client: &Client,
    ns: &str,
    lost: &str,
    within: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        match lease_holder(client, ns).await {
            Some(h) if h != lost => return Ok(h),
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no standby took the election Lease from the killed {lost} within {}",
                secs(within)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_holder(client: &Client, ns: &str, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(h) = lease_holder(client, ns).await {
            return Ok(h);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no replica took the election Lease within {within:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the first upgrade shows one of `phases` (or is terminal),
/// bounded; returns the phase it saw.
async fn wait_for_upgrade_phase(t: &Trial, phases: &[&str], within: Duration) -> Option<String> {
    let (_, name, _) = t.objects.first()?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(obj) = get_object(&t.client, &t.ns, "IOSXESoftwareUpgrade", name).await
            && let Some(p) = phase(&obj)
            && (phases.contains(&p.as_str()) || TERMINAL_PHASES.contains(&p.as_str()))
        {
            return Some(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn drive(
    cp: &LocalControlPlane,
    t: &mut Trial,
    rng: &mut StdRng,
    fault: Fault,
    report: &mut TrialReport,
) {
    let applied = Instant::now();
    report.injected = match fault {
        Fault::None => "no fault".to_owned(),
        Fault::LeaderKill => {
            let seen = wait_mid_upgrade(t, rng).await;
            match lease_holder(&t.client, &t.ns).await {
                Some(holder) => match t.replicas.iter().find(|r| r.id == holder) {
                    Some(r) => {
                        r.lose();
                        let killed = Instant::now();
                        let within = Duration::from_secs(LEASE_SECONDS + 4 * RETRY_SECONDS + 5);
                        match wait_for_holder_other_than(&t.client, &t.ns, &holder, within).await {
                            Ok(_) => report.failover = Some(killed.elapsed()),
                            Err(e) => report.violations.push(e),
                        }
                        format!(
                            "SIGKILL leader {holder} at {} ({seen})",
                            secs(applied.elapsed())
                        )
                    }
                    None => {
                        report.violations.push(format!(
                            "the Lease names {holder:?}, no replica of this trial"
                        ));
                        String::new()
                    }
                },
                None => {
                    report
                        .violations
                        .push("nobody held the election Lease at the kill".into());
                    String::new()
                }
            }
        }
        Fault::ControllerRestart => {
            let seen = wait_mid_upgrade(t, rng).await;
            let r = &t.replicas[rng.random_range(0..t.replicas.len())];
            r.kill();
            format!("SIGKILL {} at {} ({seen})", r.id, secs(applied.elapsed()))
        }
        Fault::ApiserverRestart | Fault::EtcdRestart => {
            let seen = wait_mid_upgrade(t, rng).await;
            let component = if fault == Fault::EtcdRestart {
                Component::Etcd
            } else {
                Component::KubeApiserver
            };
            let down = Duration::from_millis(rng.random_range(500..4000));
            let when = applied.elapsed();
            match cp.crash_and_restart(component, down).await {
                Ok(()) => format!("{component} down {} at {} ({seen})", secs(down), secs(when)),
                Err(e) => {
                    report
                        .violations
                        .push(format!("restarting {component}: {e}"));
                    String::new()
                }
            }
        }
        Fault::SimReboot => {
            let first = t.fleet.as_ref().and_then(|f| f.nth(0));
            let started = wait_install_started(t, Duration::from_secs(60)).await;
            match (first, started) {
                (Some(dev), true) => {
                    // Let the stall take hold, then power-cycle.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    match dev.reboot(Duration::ZERO, "chaos: reboot during transfer") {
                        Ok(()) => format!(
                            "{} rebooted during OS.Install at {}",
                            dev.name(),
                            secs(applied.elapsed())
                        ),
                        Err(e) => {
                            report
                                .violations
                                .push(format!("rebooting {}: {e}", dev.name()));
                            String::new()
                        }
                    }
                }
                _ => {
                    report
                        .violations
                        .push("OS.Install never started: no transfer to interrupt".into());
                    String::new()
                }
            }
        }
        Fault::InstallCut => "OS.Install cut part-way (armed before apply)".to_owned(),
    };
    wait_terminal(t, applied, report).await;
    check(t, report).await;
}

/// Waits until the first upgrade reaches a phase drawn at random among
/// those of a running upgrade (or ends), then a random 0-300 ms more;
/// describes what it saw.
async fn wait_mid_upgrade(t: &Trial, rng: &mut StdRng) -> String {
    // The phases that last: a paced transfer and the reload. (Resolving,
    // Validating and Activating take milliseconds; a fault aimed at them
    // lands in the next phase.)
    const PHASES: [&str; 4] = [
        "Resolving",
        "Transferring",
        "Transferring",
        "AwaitingReachability",
    ];
    let at = PHASES[rng.random_range(0..PHASES.len())];
    let extra = Duration::from_millis(rng.random_range(0..300));
    let seen = wait_for_upgrade_phase(t, &[at], Duration::from_secs(60)).await;
    tokio::time::sleep(extra).await;
    match seen {
        Some(p) if p == at => format!("upgrade in {p} + {}ms", extra.as_millis()),
        Some(p) => format!("wanted {at}, upgrade already {p}"),
        None => format!("upgrade never reached {at}"),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

async fn wait_install_started(t: &Trial, within: Duration) -> bool {
    let Some(dev) = t.fleet.as_ref().and_then(|f| f.nth(0)) else {
        return false;
    };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !dev.journal_for("/gnoi.os.OS/Install").is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_terminal(t: &Trial, applied: Instant, report: &mut TrialReport) {
    let mut outcomes: Vec<ObjectOutcome> = t
        .objects
        .iter()
        .map(|(work, name, device)| ObjectOutcome {
            object: format!("{}/{name}", work.kind()),
            device: device.clone(),
            phase: None,
            reason: None,
            time_to_terminal: None,
        })
        .collect();
    let bound = t
        .objects
        .iter()
        .map(|(w, _, _)| w.bound())
        .max()
        .unwrap_or_default();
    loop {
        for ((work, name, _), out) in t.objects.iter().zip(outcomes.iter_mut()) {
            if out.time_to_terminal.is_some() {
                continue;
            }
            if let Some(obj) = get_object(&t.client, &t.ns, work.kind(), name).await {
                out.phase = phase(&obj);
                out.reason = obj.data["status"]["reason"].as_str().map(str::to_owned);
                if out
                    .phase
                    .as_deref()
                    .is_some_and(|p| TERMINAL_PHASES.contains(&p))
                {
                    out.time_to_terminal = Some(applied.elapsed());
                }
            }
        }
        let done = outcomes.iter().all(|o| o.time_to_terminal.is_some());
        if done || applied.elapsed() > bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for ((work, _, _), out) in t.objects.iter().zip(&outcomes) {
        match out.time_to_terminal {
            None => {
                report.stuck += 1;
                report.violations.push(format!(
                    "{} not terminal within {:?} (last phase {})",
                    out.object,
                    work.bound(),
                    out.phase.as_deref().unwrap_or("none")
                ));
            }
            Some(d) if d > work.bound() => {
                report.stuck += 1;
                report.violations.push(format!(
                    "{} terminal after {d:?}, over its bound {:?}",
                    out.object,
                    work.bound()
                ));
            }
            Some(_) => {}
        }
    }
    report.objects = outcomes;
}

async fn check(t: &Trial, report: &mut TrialReport) {
    let Some(fleet) = t.fleet.as_ref() else {
        return;
    };
    for ((work, _, device), out) in t.objects.iter().zip(report.objects.clone()) {
        let Some(dev) = fleet.device(device) else {
            report.violations.push(format!("no simulator {device}"));
            continue;
        };
        for method in DESTRUCTIVE {
            let n = dev.journal_for(method).len();
            if n > 1 {
                report.duplicates += 1;
                report.violations.push(format!(
                    "{}: {method} sent {n} times to {device}",
                    out.object
                ));
            }
        }
        let sent = dev.journal_for(work.rpc()).len();
        match out.phase.as_deref() {
            Some("Succeeded") => {
                if sent != 1 {
                    report.violations.push(format!(
                        "{} Succeeded but {device}'s journal has {sent} {}",
                        out.object,
                        work.rpc()
                    ));
                }
                if *work == Work::Upgrade {
                    let running = dev.snapshot().running_version;
                    if running != TARGET_FULL {
                        report.violations.push(format!(
                            "{} Succeeded but {device} runs {running}",
                            out.object
                        ));
                    }
                }
            }
            Some(p) if TERMINAL_PHASES.contains(&p) => report.violations.push(format!(
                "{} ended {p} ({}) after {}: the controller must ride through this fault",
                out.object,
                out.reason.as_deref().unwrap_or("no reason"),
                report.fault
            )),
            _ => {}
        }
    }
    // Terminal objects let go of their device Lease and finalizer.
    let deadline = Instant::now() + CLEANUP_GRACE;
    let mut leftovers;
    loop {
        leftovers = leftovers_now(t, report).await;
        if leftovers.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.violations.extend(leftovers);
}

/// Device Leases still held and finalizers still on terminal objects.
async fn leftovers_now(t: &Trial, report: &TrialReport) -> Vec<String> {
    let mut out = Vec::new();
    let leases = Api::<Lease>::namespaced(t.client.clone(), &t.ns)
        .list(&ListParams::default().labels(cvk_controller::lease::LEASE_LABEL))
        .await;
    match leases {
        Ok(list) => {
            for l in list {
                let holder = l.spec.as_ref().and_then(|s| s.holder_identity.clone());
                if let Some(h) = holder.filter(|h| !h.is_empty()) {
                    out.push(format!("device Lease {} still held by {h}", l.name_any()));
                }
            }
        }
        Err(e) => out.push(format!("listing device Leases: {e}")),
    }
    for ((work, name, _), o) in t.objects.iter().zip(&report.objects) {
        if o.time_to_terminal.is_none() {
            continue;
        }
        if let Some(obj) = get_object(&t.client, &t.ns, work.kind(), name).await
            && !obj.finalizers().is_empty()
        {
            out.push(format!(
                "{} is {} and still has finalizers {:?}",
                o.object,
                o.phase.as_deref().unwrap_or("?"),
                obj.finalizers()
            ));
        }
    }
    out
}

async fn teardown(mut t: Trial, report: &mut TrialReport) {
    // A replica in its restart second would never release what it holds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.replicas.iter().all(Replica::settled) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in &mut t.replicas {
        report.restarts += r.restarts();
    }
    for r in t.replicas.drain(..) {
        r.stop().await;
    }
    // A leader that stopped on SIGTERM released the election Lease.
    if report.ha
        && let Some(holder) = lease_holder(&t.client, &t.ns).await
    {
        report.violations.push(format!(
            "the election Lease is still held by {holder} after SIGTERM"
        ));
    }
    if let Some(fleet) = t.fleet.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), fleet.shutdown()).await;
    }
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(t.client.clone());
    let _ = ns.delete(&t.ns, &Default::default()).await;
}

/// One controller process, restarted after it exits (as a kubelet would
/// with `restartPolicy: Always`) until stopped.
struct Replica {
    id: String,
    pid: Arc<Mutex<Option<u32>>>,
    stopping: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn start(
        opts: &ChaosOptions,
        ns: &str,
        dir: &Path,
        id: &str,
        elect: bool,
        kubeconfig: &str,
    ) -> Result<Self, String> {
        let kubeconfig_path = dir.join("kubeconfig");
        crate::control_plane::write_private(&kubeconfig_path, kubeconfig)
            .map_err(|e| e.to_string())?;
        let log_path = dir.join(format!("controller-{id}.log"));
        let command = opts.controller.clone();
        let ns = ns.to_owned();
        let id_owned = id.to_owned();
        let pid = Arc::new(Mutex::new(None));
        let stopping = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU32::new(0));
        let (pid2, stopping2, restarts2) = (pid.clone(), stopping.clone(), restarts.clone());
        let spawn = move || -> Result<Child, String> {
            let mut cmd = command.command(&kubeconfig_path, &ns, true, true, &log_path)?;
            cmd.env("POD_NAME", &id_owned)
                .env("CVK_LEADER_ELECT", if elect { "true" } else { "false" })
                .env("CVK_LEADER_ELECTION_NAMESPACE", &ns)
                .env(
                    "CVK_LEADER_LEASE_DURATION_SECONDS",
                    LEASE_SECONDS.to_string(),
                )
                .env(
                    "CVK_LEADER_RENEW_DEADLINE_SECONDS",
                    RENEW_SECONDS.to_string(),
                )
                .env("CVK_LEADER_RETRY_PERIOD_SECONDS", RETRY_SECONDS.to_string());
            cmd.spawn()
                .map_err(|e| format!("{}: {e}", command.program.display()))
        };
        let mut child = spawn()?;
        *pid.lock().expect("pid lock") = child.id();
        let task = tokio::spawn(async move {
            loop {
                let status = child.wait().await;
                *pid2.lock().expect("pid lock") = None;
                if stopping2.load(Ordering::SeqCst) {
                    return;
                }
                tracing::info!(?status, "chaos: controller exited; restarting in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stopping2.load(Ordering::SeqCst) {
                    return;
                }
                match spawn() {
                    Ok(c) => {
                        restarts2.fetch_add(1, Ordering::SeqCst);
                        *pid2.lock().expect("pid lock") = c.id();
                        child = c;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "chaos: restarting the controller");
                        return;
                    }
                }
            }
        });
        Ok(Self {
            id: id.to_owned(),
            pid,
            stopping,
            lost: Arc::new(AtomicBool::new(false)),
            restarts,
            task,
        })
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = *self.pid.lock().expect("pid lock") {
            let _ = std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGKILL now; the supervising task starts it again.
    fn kill(&self) {
        self.signal("KILL");
    }

    /// SIGKILL now, for good (its node is gone).
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        self.signal("KILL");
    }

    /// Running, or lost for good: not in a restart's second.
    fn settled(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || self.pid.lock().expect("pid lock").is_some()
    }

    fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// SIGTERM, then SIGKILL after 15 s; no restart.
    async fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal("TERM");
        if tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .is_err()
        {
            self.signal("KILL");
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for Replica {
    /// A trial that failed half-way drops its replicas: no restart, and the
    /// process dies with its task (`kill_on_drop`).
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Faults by kind, for the report.
pub fn by_fault(trials: &[TrialReport]) -> BTreeMap<Fault, Vec<&TrialReport>> {
    let mut map: BTreeMap<Fault, Vec<&TrialReport>> = BTreeMap::new();
    for t in trials {
        map.entry(t.fault).or_default().push(t);
    }
    map
}
