//! `cvk-bench upgrade`: `cvk-controller run` as a subprocess against a local
//! control plane (kube-apiserver + etcd, `cvk_hil::control_plane`) upgrading
//! N devices of one in-process simulator fleet to an image served over HTTP
//! on loopback. Reports the wall time, the controller's peak memory (VmHWM),
//! the simulator's memory per device and, from the simulator's journal, the
//! OS.Install throughput against the single-core SHA-256 rate.
//!
//! `cvk-bench rollout`: the same fleet upgraded by one IOSXESoftwareRollout
//! (canary, then waves of `--max-unavailable`), then, in the same run, as N
//! separate IOSXESoftwareUpgrades; adds the API server's request rate over
//! the run (its own `apiserver_request_total`, the bench's polling included)
//! and the largest rollout status seen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cvk_benches::{MIB, rate};
use cvk_hil::control_plane::{LocalControlPlane, write_private};
use cvk_hil::testing::{TestNamespace, install_project_crds};
use iosxe_sim::{Fleet, FleetConfig, ImageSpec, Profile};
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::{RolloutArgs, UpgradeArgs, mib_s};

/// How the fleet is upgraded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// One IOSXESoftwareUpgrade per device, all created at once.
    Upgrades,
    /// One IOSXESoftwareRollout: a one-device canary, then waves of
    /// `max_unavailable` (budgets.maxUnavailable and
    /// maxConcurrentTransfers), no soak.
    Rollout { max_unavailable: u32 },
}

/// `cvk-bench rollout`: the rollout, then the separate upgrades as the
/// baseline, on fresh fleets and control planes, with the ratios.
pub(crate) async fn compare_rollout(a: &RolloutArgs) -> anyhow::Result<Value> {
    let rollout = run(
        &a.fleet,
        Mode::Rollout {
            max_unavailable: a.max_unavailable,
        },
    )
    .await?;
    if a.no_baseline {
        return Ok(json!({ "rollout": rollout }));
    }
    let baseline = run(&a.fleet, Mode::Upgrades).await?;
    let ratio = |k: &str| match (rollout[k].as_f64(), baseline[k].as_f64()) {
        (Some(r), Some(b)) if b > 0.0 => Some((r / b * 100.0).round() / 100.0),
        _ => None,
    };
    println!(
        "\nRollout vs {} separate upgrades (ratio rollout/baseline):",
        a.fleet.devices
    );
    for k in ["wall_s", "controller_peak_rss_mib", "api_requests_per_s"] {
        println!(
            "  {k:<26} rollout {:>8} baseline {:>8} ratio {}",
            rollout[k],
            baseline[k],
            ratio(k).map_or("-".to_owned(), |r| r.to_string())
        );
    }
    println!(
        "  largest rollout status: {} bytes",
        rollout["largest_status_bytes"]
    );
    Ok(json!({
        "rollout": rollout,
        "baseline_upgrades": baseline,
        "ratio_wall": ratio("wall_s"),
        "ratio_peak_rss": ratio("controller_peak_rss_mib"),
        "ratio_api_requests_per_s": ratio("api_requests_per_s"),
    }))
}

/// The API server's `apiserver_request_total`, summed over its labels.
async fn api_requests(client: &kube::Client) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client
        .request_text(req)
        .await
        .context("reading the API server's /metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

const PROFILE: &str = "c9300-17.18";
const TARGET_IMAGE: &str = "17.18.03.0.4200.1770000000";
const TARGET_VERSION: &str = "17.18.03";
const USER: &str = "cvk";
const PASSWORD: &str = "cvk-sim";
/// Phases after which an upgrade does not move again.
const TERMINAL: &[&str] = &[
    "Succeeded",
    "Failed",
    "RolledBack",
    "RebootTimeout",
    "Cancelled",
    "Rejected",
];

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU seconds (user + system, all threads) a live process has used:
/// fields 14 and 15 of `/proc/<pid>/stat`, in USER_HZ (100 on Linux).
fn proc_cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn api(client: &kube::Client, ns: &str, group: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1alpha1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

async fn create(api: &Api<DynamicObject>, obj: Value, what: &str) -> anyhow::Result<()> {
    let obj: DynamicObject = serde_json::from_value(obj)?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {what}"))?;
    Ok(())
}

/// Runs the fleet upgrade.
pub(crate) async fn run(a: &UpgradeArgs, mode: Mode) -> anyhow::Result<Value> {
    if a.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if a.image_mib == 0 {
        bail!("--image-mib must be at least 1");
    }
    let controller = match &a.controller {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating cvk-bench")?
            .with_file_name("cvk-controller"),
    };
    if !controller.is_file() {
        bail!(
            "--controller: {} does not exist; build it with \
             `cargo build --release -p cvk-controller` (same target directory) or pass its path",
            controller.display()
        );
    }
    let work = tempfile::tempdir().context("work directory")?;
    let size = a.image_mib * MIB;

    // The image, on disk and over HTTP.
    let images = work.path().join("images");
    std::fs::create_dir_all(&images)?;
    let file = images.join("target.bin");
    let sha256 = ImageSpec::new(TARGET_IMAGE, size)
        .write_to(std::io::BufWriter::with_capacity(
            MIB as usize,
            std::fs::File::create(&file).context("creating the image")?,
        ))
        .context("writing the image")?;
    let http = iosxe_sim::image_servers::HttpServer::start(&images, ([127, 0, 0, 1], 0).into())
        .await
        .context("starting the image HTTP server")?;
    let url = http.url("target.bin");

    // Control plane, CRDs, namespace.
    let cp = LocalControlPlane::start()
        .await
        .context("starting the local control plane")?;
    let client = cp.client().await.context("control-plane client")?;
    install_project_crds(&client)
        .await
        .context("installing the CRDs")?;
    let ns = TestNamespace::create(&client, "bench-upgrade").await?;
    let nsn = ns.name().to_owned();

    // The fleet, with the memory it costs this process.
    let me = std::process::id().to_string();
    let rss_before = proc_kib(&me, "VmRSS").unwrap_or(0);
    let data_dir = work.path().join("sim");
    let profile = Profile::load(PROFILE).context("loading the simulator profile")?;
    let fleet = Fleet::start(
        FleetConfig::new(a.devices, profile)
            .credentials(USER, PASSWORD)
            .reboot_ms(a.reboot_ms)
            .data_dir(data_dir),
    )
    .await
    .context("starting the simulator fleet")?;
    let rss_fleet = proc_kib(&me, "VmRSS").unwrap_or(0);
    println!(
        "\nFleet upgrade ({mode:?}): {} simulated devices, {} MiB image over HTTP, reboot {} ms",
        a.devices, a.image_mib, a.reboot_ms
    );

    // One Secret, a CiscoDevice and an IOSXESoftwareUpgrade per device.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &nsn);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "sim-credentials" },
                "stringData": { "username": USER, "password": PASSWORD },
            }))?,
        )
        .await
        .context("creating the credentials Secret")?;
    let devices = api(&client, &nsn, "cisco.vk", "CiscoDevice");
    let upgrades = api(&client, &nsn, "ops.cisco.vk", "IOSXESoftwareUpgrade");
    let rollouts = api(&client, &nsn, "ops.cisco.vk", "IOSXESoftwareRollout");
    let handles = fleet.devices();
    for (i, d) in handles.iter().enumerate() {
        let addr = d.addr();
        create(
            &devices,
            json!({
                "apiVersion": "cisco.vk/v1alpha1", "kind": "CiscoDevice",
                "metadata": { "name": d.name(), "labels": { "site": format!("s{}", i % 10) } },
                "spec": {
                    "driver": "XE",
                    "address": addr.ip().to_string(),
                    "credentialSecretRef": { "name": "sim-credentials" },
                    "gnoi": { "port": addr.port(), "transportSecurity": "insecure" },
                },
            }),
            &format!("CiscoDevice {}", d.name()),
        )
        .await?;
        if let Mode::Rollout { .. } = mode {
            continue;
        }
        create(
            &upgrades,
            json!({
                "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
                "metadata": { "name": format!("upgrade-{}", d.name()) },
                "spec": {
                    "deviceRef": { "name": d.name() },
                    "imageSource": { "url": url, "sha256": sha256 },
                    "targetVersion": TARGET_VERSION,
                    "strategy": "Reload",
                    "rollbackOnFailure": false,
                    "resumePolicy": "Retry",
                    "maxRetries": 3,
                    "rebootTimeoutSeconds": 300,
                },
            }),
            &format!("IOSXESoftwareUpgrade upgrade-{}", d.name()),
        )
        .await?;
    }

    if let Mode::Rollout { max_unavailable } = mode {
        let first = handles.first().context("an empty fleet")?.name().to_owned();
        create(
            &rollouts,
            json!({
                "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareRollout",
                "metadata": { "name": "fleet" },
                "spec": { "plan": {
                    "targets": { "allowAll": true, "maxTargets": a.devices.max(1) },
                    "source": { "url": url, "sha256": sha256 },
                    "targetVersion": TARGET_VERSION,
                    "rollbackOnFailure": false,
                    "rebootTimeoutSeconds": 300,
                    "canaries": [{ "name": "first", "devices": [first] }],
                    "pauseAfterCanary": false,
                    "budgets": {
                        "maxUnavailable": max_unavailable,
                        "maxConcurrentTransfers": max_unavailable,
                    },
                    "health": { "canarySoakSeconds": 0, "waveSoakSeconds": 0 },
                    "failurePolicy": { "maxFailedTargets": a.devices.max(1) },
                } },
            }),
            "IOSXESoftwareRollout fleet",
        )
        .await?;
    }
    let requests_before = api_requests(&client).await?;
    let mut largest_status = 0usize;
    // The SHA-256 baseline: best of three passes before the controller
    // starts and three after it stopped (one pass on a busy 2-vCPU VM
    // varied from 0.7 to 1.7 GiB/s between runs).
    let sha_before = super::fetch::sha256_rate_best(size, 3);

    // The controller.
    let kubeconfig = work.path().join("kubeconfig");
    write_private(&kubeconfig, cp.kubeconfig_yaml())?;
    let log_path = work.path().join("controller.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = tokio::process::Command::new(&controller);
    cmd.arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .env("CISCO_VK_DEVICE_NAMESPACE", &nsn)
        .env("CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE", "1")
        .env("CISCO_VK_GNOI_INSECURE", "1")
        .env("CVK_METRICS_BIND_ADDRESS", "127.0.0.1:0")
        .env("CVK_HEALTH_PROBE_BIND_ADDRESS", "127.0.0.1:0")
        .env("CVK_IMAGE_CACHE_DIR", work.path().join("cache"))
        .env("CVK_LOG_FORMAT", "text")
        .env("LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(n) = a.max_transfers {
        cmd.env("CVK_MAX_CONCURRENT_TRANSFERS", n.to_string());
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", controller.display()))?;
    let pid = child.id().context("controller pid")?.to_string();

    // Poll until every upgrade is terminal (bounded by --timeout-secs).
    let deadline = started + Duration::from_secs(a.timeout_secs);
    let mut rss_max = 0u64;
    let mut hwm = 0u64;
    let mut phases: BTreeMap<String, usize>;
    let mut first_done: Option<Duration> = None;
    loop {
        if let Some(k) = proc_kib(&pid, "VmRSS") {
            rss_max = rss_max.max(k);
        }
        if let Some(k) = proc_kib(&pid, "VmHWM") {
            hwm = hwm.max(k);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the controller exited ({status}) before the upgrades finished; log: {}",
                keep(work, &log_path).display()
            );
        }
        if let Mode::Rollout { .. } = mode {
            // One object tells the whole campaign.
            let ro = match rollouts.get("fleet").await {
                Ok(r) => r,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("  reading the rollout: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e).context("reading the rollout"),
            };
            let status = &ro.data["status"];
            largest_status = largest_status.max(serde_json::to_vec(status)?.len());
            let count = |k: &str| status["counts"][k].as_u64().unwrap_or(0) as usize;
            phases = BTreeMap::from([
                ("Succeeded".to_owned(), count("succeeded")),
                ("Failed".to_owned(), count("failed")),
                ("InProgress".to_owned(), count("inProgress")),
                ("NotStarted".to_owned(), count("pending")),
            ]);
            phases.retain(|_, n| *n > 0);
            if first_done.is_none() && count("succeeded") > 0 {
                first_done = Some(started.elapsed());
            }
            let phase = status["phase"].as_str().unwrap_or_default();
            if matches!(phase, "Succeeded" | "Failed" | "Cancelled" | "Halted") {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                bail!(
                    "after {} s, the rollout is {phase}: {phases:?}; controller log: {}",
                    a.timeout_secs,
                    keep(work, &log_path).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        // A failed list (the API server under load) is retried at the next
        // poll, within the deadline.
        let list = match upgrades.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("  listing the upgrades: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e).context("listing the upgrades"),
        };
        phases = BTreeMap::new();
        for u in &list.items {
            let p = u
                .data
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending")
                .to_owned();
            *phases.entry(p).or_default() += 1;
        }
        let done: usize = TERMINAL.iter().filter_map(|t| phases.get(*t)).sum();
        if first_done.is_none() && phases.contains_key("Succeeded") {
            first_done = Some(started.elapsed());
        }
        if done == a.devices {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            bail!(
                "after {} s, not every upgrade is terminal: {phases:?}; controller log: {}",
                a.timeout_secs,
                keep(work, &log_path).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = started.elapsed();
    let requests = api_requests(&client).await? - requests_before;
    // VmHWM is the peak resident set over the controller's whole life.
    if let Some(k) = proc_kib(&pid, "VmHWM") {
        hwm = hwm.max(k);
    }
    let rss_end = proc_kib(&me, "VmRSS").unwrap_or(0);
    let cpu_s = proc_cpu_s(&pid);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }

    // OS.Install as the simulator saw it: arrival to outcome per device.
    let entries: Vec<iosxe_sim::JournalEntry> = fleet
        .journal(&iosxe_sim::JournalQuery {
            method: Some("/gnoi.os.OS/Install".into()),
            ..Default::default()
        })
        .into_iter()
        .filter(|e| e.code == "OK")
        .collect();
    let sha = sha_before.max(super::fetch::sha256_rate_best(size, 3));
    let install_rate = if entries.is_empty() {
        None
    } else {
        let mut ms: Vec<u64> = entries.iter().map(|e| e.duration_ms).collect();
        ms.sort_unstable();
        let median = ms[ms.len() / 2].max(1);
        Some(rate(size, Duration::from_millis(median)))
    };
    // Every byte installed over the span from the first install's arrival
    // to the last one's outcome.
    let aggregate = match (
        entries.iter().map(|e| e.time_ns).min(),
        entries
            .iter()
            .map(|e| e.time_ns + e.duration_ms * 1_000_000)
            .max(),
    ) {
        (Some(first), Some(last)) if last > first => Some((
            rate(
                size * entries.len() as u64,
                Duration::from_nanos(last - first),
            ),
            Duration::from_nanos(last - first),
        )),
        _ => None,
    };
    let succeeded = phases.get("Succeeded").copied().unwrap_or(0);
    let sim_per_device_kib = rss_fleet.saturating_sub(rss_before) / a.devices as u64;
    let sim_per_device_end_kib = rss_end.saturating_sub(rss_before) / a.devices as u64;

    println!("  phases at the end:          {phases:?}");
    println!(
        "  wall time (controller start to all terminal): {:.1} s",
        wall.as_secs_f64()
    );
    if let Some(f) = first_done {
        println!("  first Succeeded after:      {:.1} s", f.as_secs_f64());
    }
    println!(
        "  API requests:               {requests:.0} ({:.1}/s, the bench's polling included)",
        requests / wall.as_secs_f64()
    );
    if let Mode::Rollout { .. } = mode {
        println!("  largest rollout status:     {largest_status} bytes (goal < 64 KiB)");
    }
    println!(
        "  controller peak RSS (VmHWM): {:.1} MiB (goals: < 256 MiB at 500 devices, < 64 MiB for any image size)",
        mib(hwm)
    );
    println!(
        "  simulator memory per device: {:.0} KiB at start, {:.0} KiB after the upgrades",
        sim_per_device_kib, sim_per_device_end_kib
    );
    if let Some(r) = install_rate {
        println!(
            "  OS.Install (median, simulator journal): {:.1} MiB/s, SHA-256 {:.1} MiB/s, ratio {:.2}",
            mib_s(r),
            mib_s(sha),
            r / sha
        );
    }
    let installed = entries.len() as f64 * size as f64 / (1u64 << 30) as f64;
    let cpu_per_gib = cpu_s.filter(|_| installed > 0.0).map(|c| c / installed);
    if let (Some(c), Some(g)) = (cpu_s, cpu_per_gib) {
        println!(
            "  controller CPU: {c:.1} s in all, {g:.2} s per GiB installed (SHA-256 alone: {:.2} s per GiB)",
            (1u64 << 30) as f64 / sha
        );
    }
    if let Some((r, span)) = aggregate {
        println!(
            "  OS.Install aggregate ({} installs over {:.1} s, first arrival to last outcome): \
             {:.1} MiB/s, ratio {:.2} to SHA-256",
            entries.len(),
            span.as_secs_f64(),
            mib_s(r),
            r / sha
        );
    }
    fleet.shutdown().await;
    drop(http);
    ns.delete().await;
    drop(cp);
    if succeeded != a.devices {
        bail!(
            "{} of {} upgrades succeeded: {phases:?}; controller log: {}",
            succeeded,
            a.devices,
            keep(work, &log_path).display()
        );
    }
    Ok(json!({
        "mode": format!("{mode:?}"),
        "api_requests": requests.round(),
        "api_requests_per_s": (requests / wall.as_secs_f64() * 10.0).round() / 10.0,
        "largest_status_bytes": matches!(mode, Mode::Rollout { .. }).then_some(largest_status),
        "devices": a.devices,
        "image_bytes": size,
        "reboot_ms": a.reboot_ms,
        "max_transfers": a.max_transfers,
        "wall_s": (wall.as_secs_f64() * 10.0).round() / 10.0,
        "first_succeeded_s": first_done.map(|f| (f.as_secs_f64() * 10.0).round() / 10.0),
        "phases": phases,
        "controller_peak_rss_mib": mib(hwm),
        "controller_max_sampled_rss_mib": mib(rss_max),
        "sim_kib_per_device_at_start": sim_per_device_kib,
        "sim_kib_per_device_after": sim_per_device_end_kib,
        "install_median_ms": install_rate.map(|r| (size as f64 / r * 1000.0).round()),
        "install_mib_per_s": install_rate.map(mib_s),
        "sha256_mib_per_s": mib_s(sha),
        "controller_cpu_s": cpu_s,
        "controller_cpu_s_per_gib_installed": cpu_per_gib.map(|g| (g * 100.0).round() / 100.0),
        "install_ratio_to_sha256": install_rate.map(|r| (r / sha * 1000.0).round() / 1000.0),
        "installs": entries.len(),
        "install_span_s": aggregate.map(|(_, d)| (d.as_secs_f64() * 10.0).round() / 10.0),
        "aggregate_mib_per_s": aggregate.map(|(r, _)| mib_s(r)),
        "aggregate_ratio_to_sha256": aggregate.map(|(r, _)| (r / sha * 1000.0).round() / 1000.0),
    }))
}

/// Keeps the work directory (with the controller log) for a failed run.
fn keep(work: tempfile::TempDir, log: &std::path::Path) -> PathBuf {
    let _ = work.keep();
    log.to_path_buf()
}
