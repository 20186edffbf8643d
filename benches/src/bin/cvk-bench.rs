//! `cvk-bench`: transfer and control-latency figures against the simulator,
//! each reported as a ratio to a baseline measured in the same run, plus a
//! JSON summary. See `BENCHMARKS.md` at the repository root.
//!
//! ```text
//! cargo run --release -p cvk-benches --bin cvk-bench -- all            # quick set
//! cargo run --release -p cvk-benches --bin cvk-bench -- install --sizes 64MiB,256MiB --large
//! cargo run --release -p cvk-benches --bin cvk-bench -- latency --samples 1000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use cvk_benches::{
    BENCH_VERSION, Bench, Image, MIB, Percentiles, PoolMode, parse_size, percentiles, rate,
};
use cvk_controller::client::os::{DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};
use serde_json::{Value, json};

/// jemalloc: transfers cycle through 1 MiB buffers, which glibc's malloc
/// hands back to the kernel and faults in again (see `BENCHMARKS.md`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(about = "Transfer and control-latency benchmarks against the IOS-XE simulator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Also write the JSON summary to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// OS.Install throughput per image size and chunk size, vs SHA-256.
    Install(InstallArgs),
    /// File.Put and File.Get throughput, vs SHA-256.
    File(FileArgs),
    /// System.Time p50/p99 idle and during OS.Install, classed pool vs one
    /// shared channel.
    Latency(LatencyArgs),
    /// Image-source fetch over loopback through `ImageCache`: HTTP, TFTP
    /// blksize x windowsize, and curl's TFTP client, vs SHA-256.
    Fetch(FetchArgs),
    /// `cvk-controller run` upgrading N simulated devices against a local
    /// control plane: wall time, controller peak memory, simulator memory.
    Upgrade(UpgradeArgs),
    /// The same fleet upgraded by one IOSXESoftwareRollout, and (in the same
    /// run) as N separate IOSXESoftwareUpgrades: wall time, controller peak
    /// RSS, API requests per second, largest rollout status.
    Rollout(RolloutArgs),
    /// The device CLI client over SSH: a 10-command ShowCommand and a large
    /// capture dump, vs one command's round trip.
    Cli(CliArgs),
    /// The quick set of install, file and latency with their defaults.
    All,
}

#[derive(Args, Clone)]
struct CliArgs {
    /// Repetitions of each case; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// `show clock` round trips for the baseline.
    #[arg(long, default_value_t = 50)]
    baseline_samples: usize,
    /// Size of the capture dump, KiB.
    #[arg(long, default_value_t = 1024)]
    capture_kib: u64,
}

#[derive(Args, Clone)]
struct FetchArgs {
    /// Image size.
    #[arg(long, default_value = "64MiB")]
    size: String,
    /// TFTP blksize values, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1468,8192")]
    blksizes: Vec<u16>,
    /// TFTP windowsize values, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    windowsizes: Vec<u16>,
    /// Skip curl's TFTP client (run when `curl` is on PATH otherwise).
    #[arg(long)]
    no_curl: bool,
}

#[derive(Args, Clone)]
struct UpgradeArgs {
    /// Simulated devices to upgrade (one in-process fleet).
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Image size in MiB (served over HTTP on loopback).
    #[arg(long, default_value_t = 2)]
    image_mib: u64,
    /// Reboot outage of each simulated device, in ms.
    #[arg(long, default_value_t = 500)]
    reboot_ms: u64,
    /// `CVK_MAX_CONCURRENT_TRANSFERS` of the controller (its default when unset).
    #[arg(long)]
    max_transfers: Option<u32>,
    /// The `cvk-controller` binary (default: next to this one).
    #[arg(long)]
    controller: Option<std::path::PathBuf>,
    /// Longest the upgrades may take, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

#[derive(Args, Clone)]
struct RolloutArgs {
    #[command(flatten)]
    fleet: UpgradeArgs,
    /// The campaign's budgets.maxUnavailable and maxConcurrentTransfers
    /// (waves of this size).
    #[arg(long, default_value_t = 100)]
    max_unavailable: u32,
    /// Only the rollout, not the separate-upgrades baseline.
    #[arg(long)]
    no_baseline: bool,
}

#[derive(Args, Clone)]
struct InstallArgs {
    /// Image sizes, comma separated (`64MiB,256MiB`).
    #[arg(long, value_delimiter = ',', default_value = "64MiB")]
    sizes: Vec<String>,
    /// Also run a 1 GiB image.
    #[arg(long)]
    large: bool,
    /// Chunk sizes, comma separated (4 KiB to 4 MiB).
    #[arg(long, value_delimiter = ',', default_value = "64KiB,256KiB,1MiB,4MiB")]
    chunks: Vec<String>,
    /// Installs per case; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Args, Clone)]
struct FileArgs {
    /// File sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "64MiB")]
    sizes: Vec<String>,
    /// Transfers per case; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Args, Clone)]
struct LatencyArgs {
    /// System.Time samples per phase.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Pause between samples, in microseconds.
    #[arg(long, default_value_t = 1000)]
    gap_us: u64,
    /// Size of the image installed over and over during the busy phase.
    #[arg(long, default_value = "64MiB")]
    bulk_size: String,
    /// Longest a phase may run, in seconds.
    #[arg(long, default_value_t = 180)]
    max_secs: u64,
    /// Idle and busy blocks alternate this many times per pool (each takes
    /// samples/blocks), so that a slow spell of the machine lands in both.
    #[arg(long, default_value_t = 5)]
    blocks: usize,
    /// Flash write rates of the simulated switch during the busy phase,
    /// bytes/s, comma-separated; 0 is unlimited. The default pairs the
    /// unlimited loopback with a C9300's pace (the spec's walkthrough: a
    /// 1.26 GB image in about four minutes, about 5 MB/s).
    #[arg(long, default_value = "0,5000000")]
    bulk_rates: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let mut summary = json!({
        "machine": machine(),
        "default_chunk_bytes": DEFAULT_CHUNK_BYTES,
    });
    rt.block_on(async {
        match &cli.cmd {
            Cmd::Install(a) => summary["install"] = install(a).await?,
            Cmd::File(a) => summary["file"] = file(a).await?,
            Cmd::Latency(a) => summary["latency"] = latency(a).await?,
            Cmd::Fetch(a) => summary["fetch"] = fetch::run(a).await?,
            Cmd::Upgrade(a) => {
                summary["upgrade"] = upgrade::run(a, upgrade::Mode::Upgrades).await?
            }
            Cmd::Rollout(a) => summary["rollout"] = upgrade::compare_rollout(a).await?,
            Cmd::Cli(a) => summary["cli"] = cli::run(a).await?,
            Cmd::All => {
                summary["install"] = install(&defaults::<InstallArgs>()).await?;
                summary["file"] = file(&defaults::<FileArgs>()).await?;
                summary["latency"] = latency(&defaults::<LatencyArgs>()).await?;
            }
        }
        anyhow::Ok(())
    })?;
    let text = serde_json::to_string_pretty(&summary)?;
    println!("\n{text}");
    if let Some(path) = &cli.json {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A subcommand's arguments with every default.
fn defaults<T: Args>() -> T {
    #[derive(Parser)]
    struct Only<T: Args> {
        #[command(flatten)]
        args: T,
    }
    Only::<T>::parse_from(["cvk-bench"]).args
}

fn sizes(list: &[String], field: &str) -> anyhow::Result<Vec<u64>> {
    list.iter()
        .map(|s| parse_size(s).map_err(|e| anyhow::anyhow!("--{field} {s:?}: {e}")))
        .collect()
}

fn mib_s(bytes_per_s: f64) -> f64 {
    (bytes_per_s / MIB as f64 * 10.0).round() / 10.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn label(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

async fn install(a: &InstallArgs) -> anyhow::Result<Value> {
    let mut image_sizes = sizes(&a.sizes, "sizes")?;
    if a.large {
        image_sizes.push(1024 * MIB);
    }
    let chunks = sizes(&a.chunks, "chunks")?;
    for &c in &chunks {
        let c = c as usize;
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&c) {
            bail!(
                "--chunks: {c} bytes is outside {MIN_CHUNK_BYTES}-{MAX_CHUNK_BYTES} (4 KiB to 4 MiB)"
            );
        }
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let bench = Bench::start(PoolMode::Classed).await?;
    let mut rows = Vec::new();
    println!(
        "OS.Install into the simulator (classed pool), median of {} rounds",
        a.rounds
    );
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>8}",
        "image", "chunk", "MiB/s", "sha256 MiB/s", "ratio"
    );
    for &size in &image_sizes {
        let image = Image::new(BENCH_VERSION, size)?;
        // Warm-up: connects the bulk class and faults in the image pages.
        bench.install(&image, DEFAULT_CHUNK_BYTES).await?;
        for &chunk in &chunks {
            let mut rates = Vec::with_capacity(a.rounds);
            let mut shas = Vec::with_capacity(a.rounds);
            for _ in 0..a.rounds {
                // The baseline next to each install, so both see the same
                // machine load.
                shas.push(image.sha256_rate(1));
                let done = bench.install(&image, chunk as usize).await?;
                rates.push(rate(done.bytes, done.elapsed));
            }
            let (r, s) = (median(rates), median(shas));
            let ratio = r / s;
            println!(
                "{:>8} {:>8} {:>12.1} {:>12.1} {:>8.2}",
                label(size),
                label(chunk),
                mib_s(r),
                mib_s(s),
                ratio
            );
            rows.push(json!({
                "image_bytes": size, "chunk_bytes": chunk,
                "mib_per_s": mib_s(r), "sha256_mib_per_s": mib_s(s),
                "ratio_to_sha256": (ratio * 1000.0).round() / 1000.0,
            }));
        }
    }
    bench.shutdown().await;
    Ok(json!({ "rounds": a.rounds, "goal_ratio": 0.6, "cases": rows }))
}

async fn file(a: &FileArgs) -> anyhow::Result<Value> {
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let bench = Bench::start(PoolMode::Classed).await?;
    let path = "flash:cvk-bench.bin";
    let mut rows = Vec::new();
    println!(
        "\nFile.Put / File.Get with the simulator, median of {} rounds",
        a.rounds
    );
    println!(
        "{:>8} {:>6} {:>12} {:>12} {:>8}",
        "size", "rpc", "MiB/s", "sha256 MiB/s", "ratio"
    );
    for size in sizes(&a.sizes, "sizes")? {
        let image = Image::new(BENCH_VERSION, size)?;
        let content = image.to_bytes();
        let (mut puts, mut gets, mut shas) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            shas.push(image.sha256_rate(1));
            let t = Instant::now();
            let sent = bench
                .client
                .file_put_bytes(path, 0o644, content.clone())
                .await
                .context("File.Put")?;
            puts.push(rate(sent, t.elapsed()));
            let t = Instant::now();
            let got = bench
                .client
                .file_get(path, size)
                .await
                .context("File.Get")?;
            gets.push(rate(got.bytes_read, t.elapsed()));
            if got.truncated || got.content != content {
                bail!("File.Get returned other bytes than File.Put stored");
            }
        }
        bench
            .client
            .file_remove(path)
            .await
            .context("File.Remove")?;
        let s = median(shas);
        for (rpc, r) in [("put", median(puts)), ("get", median(gets))] {
            println!(
                "{:>8} {:>6} {:>12.1} {:>12.1} {:>8.2}",
                label(size),
                rpc,
                mib_s(r),
                mib_s(s),
                r / s
            );
            rows.push(json!({
                "bytes": size, "rpc": rpc, "mib_per_s": mib_s(r),
                "sha256_mib_per_s": mib_s(s),
                "ratio_to_sha256": (r / s * 1000.0).round() / 1000.0,
            }));
        }
    }
    bench.shutdown().await;
    Ok(json!({ "rounds": a.rounds, "cases": rows }))
}

/// `samples` System.Time calls, `gap` apart, stopping early at `deadline`.
async fn sample_time(
    bench: &Bench,
    samples: usize,
    gap: Duration,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(samples);
    while out.len() < samples && Instant::now() < deadline {
        let t = Instant::now();
        bench.client.time().await.context("System.Time")?;
        out.push(t.elapsed());
        tokio::time::sleep(gap).await;
    }
    Ok(out)
}

fn pct_json(p: &Percentiles) -> Value {
    json!({ "samples": p.samples, "p50_us": p.p50_us.round(), "p99_us": p.p99_us.round(),
            "max_us": p.max_us.round() })
}

async fn latency(a: &LatencyArgs) -> anyhow::Result<Value> {
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if a.blocks == 0 {
        bail!("--blocks must be at least 1");
    }
    let bulk = parse_size(&a.bulk_size).map_err(|e| anyhow::anyhow!("--bulk-size: {e}"))?;
    let rates: Vec<u64> = a
        .bulk_rates
        .split(',')
        .map(|r| {
            r.trim()
                .parse::<u64>()
                .map_err(|e| anyhow::anyhow!("--bulk-rates: '{r}': {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if rates.is_empty() {
        bail!("--bulk-rates: give at least one rate");
    }
    let gap = Duration::from_micros(a.gap_us);
    let max = Duration::from_secs(a.max_secs);
    let mut out = serde_json::Map::new();
    println!(
        "\nSystem.Time latency, {} samples per phase {}us apart in {} alternating idle/busy \
         blocks; busy = OS.Install in a loop",
        a.samples, a.gap_us, a.blocks,
    );
    println!(
        "{:>10} {:>8} {:>6} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "flash", "pool", "phase", "p50 us", "p99 us", "max us", "p99/idle", "bulk MiB/s"
    );
    for rate_limit in rates {
        // At a paced flash, an image of about two seconds' worth keeps the
        // busy phase short (a block waits for the install in flight).
        let size = if rate_limit == 0 {
            bulk
        } else {
            bulk.min((rate_limit * 2).div_ceil(MIB).max(1) * MIB)
        };
        let image = Image::new(BENCH_VERSION, size)?;
        let flash = if rate_limit == 0 {
            "unlimited".to_owned()
        } else {
            format!("{:.1}MB/s", rate_limit as f64 / 1e6)
        };
        let mut pools = serde_json::Map::new();
        for mode in [PoolMode::Classed, PoolMode::Shared] {
            let row = latency_case(a, mode, &image, rate_limit, gap, max).await?;
            for (phase, p, r, b) in [
                ("idle", &row.idle, 1.0, None),
                ("busy", &row.busy, row.ratio(), Some(row.bulk_rate)),
            ] {
                println!(
                    "{:>10} {:>8} {:>6} {:>10.0} {:>10.0} {:>10.0} {:>12.2} {:>12}",
                    flash,
                    mode.as_str(),
                    phase,
                    p.p50_us,
                    p.p99_us,
                    p.max_us,
                    r,
                    b.map(|b| format!("{:.1}", mib_s(b))).unwrap_or_default()
                );
            }
            pools.insert(
                mode.as_str().into(),
                json!({
                    "idle": pct_json(&row.idle), "busy": pct_json(&row.busy),
                    "busy_p99_over_idle_p99": (row.ratio() * 100.0).round() / 100.0,
                    "busy_p50_over_idle_p50":
                        (row.busy.p50_us / row.idle.p50_us * 100.0).round() / 100.0,
                    "bulk_mib_per_s": mib_s(row.bulk_rate),
                    "bulk_image_bytes": size,
                }),
            );
        }
        out.insert(
            if rate_limit == 0 {
                "unlimited".into()
            } else {
                format!("flash_{rate_limit}_bytes_per_s")
            },
            Value::Object(pools),
        );
    }
    out.insert("goal_busy_p99_over_idle_p99_classed".into(), json!(2.0));
    Ok(Value::Object(out))
}

/// Idle and busy System.Time percentiles of one pool at one flash rate.
struct LatencyRow {
    idle: Percentiles,
    busy: Percentiles,
    bulk_rate: f64,
}

impl LatencyRow {
    fn ratio(&self) -> f64 {
        self.busy.p99_us / self.idle.p99_us
    }
}

async fn latency_case(
    a: &LatencyArgs,
    mode: PoolMode,
    image: &Image,
    rate_limit: u64,
    gap: Duration,
    max: Duration,
) -> anyhow::Result<LatencyRow> {
    let bench = Arc::new(Bench::start(mode).await?);
    // Warm-up: both classes connected, code paths hot (unpaced).
    bench.install(image, DEFAULT_CHUNK_BYTES).await?;
    sample_time(&bench, 50, gap, Instant::now() + max).await?;
    let device = bench.fleet.nth(0).context("the fleet has no device")?;
    device
        .apply(iosxe_sim::StatePatch {
            install_bytes_per_s: Some(rate_limit),
            ..Default::default()
        })
        .map_err(|e| anyhow::anyhow!("pacing the simulated flash: {e}"))?;

    let per_block = a.samples.div_ceil(a.blocks);
    let deadline = Instant::now() + max;
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    let moved = Arc::new(AtomicU64::new(0));
    let mut busy_time = Duration::ZERO;
    for _ in 0..a.blocks {
        idle.extend(sample_time(&bench, per_block, gap, deadline).await?);

        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let loader = {
            let (bench, image, stop, moved) =
                (bench.clone(), image.clone(), stop.clone(), moved.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let done = bench.install(&image, DEFAULT_CHUNK_BYTES).await?;
                    moved.fetch_add(done.bytes, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        };
        // Let the first transfer get going before sampling.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sampled = sample_time(&bench, per_block, gap, deadline).await;
        stop.store(true, Ordering::Relaxed);
        let loaded = loader.await.context("bulk task panicked")?;
        busy_time += started.elapsed();
        busy.extend(sampled?);
        loaded?;
    }
    let idle = percentiles(&idle).context("no idle samples")?;
    let busy = percentiles(&busy).context("no busy samples")?;
    let bulk_rate = rate(moved.load(Ordering::Relaxed), busy_time);
    match Arc::try_unwrap(bench) {
        Ok(b) => b.shutdown().await,
        Err(_) => bail!("the bulk task still holds the bench"),
    }
    Ok(LatencyRow {
        idle,
        busy,
        bulk_rate,
    })
}

#[path = "cvk-bench/cli.rs"]
mod cli;
#[path = "cvk-bench/fetch.rs"]
mod fetch;
#[path = "cvk-bench/upgrade.rs"]
mod upgrade;

/// CPU count, model and memory of this machine, from /proc.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}
