//! `cvk-bench cli`: the controller's device CLI client (`client::cli`)
//! against a simulated switch's SSH CLI on loopback. The baseline, measured
//! in the same run, is one `show clock` round trip on an open session; the
//! figures are a 10-command ShowCommand (on a reused session and on a fresh
//! one, login included) and a 1 MiB `show monitor capture ... buffer dump`.

use std::time::{Duration, Instant};

use anyhow::Context;
use cvk_controller::client::cli::{CliMetrics, CliPool, CliSettings, CliTarget, HostKeys};
use iosxe_sim::{Fleet, FleetConfig, Profile, StatePatch};
use serde_json::{Value, json};

use super::CliArgs;

/// The commands of the 10-command case: what an operator's health check
/// asks a switch.
const TEN: [&str; 10] = [
    "show version",
    "show clock",
    "show install summary",
    "show boot",
    "dir flash:",
    "show processes cpu",
    "show running-config",
    "show version",
    "show clock",
    "show install summary",
];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) async fn run(a: &CliArgs) -> anyhow::Result<Value> {
    let rounds = a.rounds.max(1);
    let profile = Profile::load("c9300-17.18").context("profile c9300-17.18")?;
    let fleet = Fleet::start(
        FleetConfig::new(1, profile)
            .credentials("bench", "bench-pw")
            .cli_port(0),
    )
    .await
    .context("starting the simulator")?;
    let dev = fleet.nth(0).context("the fleet has no device")?;
    let dump_bytes = a.capture_kib * 1024;
    dev.apply(StatePatch {
        captures: Some([("BENCH".to_owned(), dump_bytes)].into_iter().collect()),
        ..StatePatch::default()
    })
    .context("defining the capture")?;
    let ready = fleet.ready_info();
    let d = &ready.devices[0];
    let target = CliTarget {
        device: "bench/sw1".into(),
        host: d.address.clone(),
        port: d.ssh_port.context("the simulator serves no SSH")?,
        username: "bench".into(),
        password: "bench-pw".into(),
        enable_secret: None,
        private_key: None,
        host_keys: HostKeys::Known(d.ssh_known_hosts.clone().context("no known_hosts line")?),
    };
    let settings = CliSettings {
        command_timeout: Duration::from_secs(60),
        ..CliSettings::default()
    };
    let pool = CliPool::new(settings, CliMetrics::default());

    // Baseline: one short command on an open session.
    let mut s = pool.session(&target).await.context("opening a session")?;
    s.run("show clock").await?;
    let mut base = Vec::new();
    for _ in 0..a.baseline_samples.max(1) {
        let t = Instant::now();
        s.run("show clock").await?;
        base.push(t.elapsed());
    }
    let baseline = median(base);

    // Ten commands on the reused session.
    let mut warm = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for c in TEN {
            let o = s.run(c).await?;
            anyhow::ensure!(o.error.is_none(), "{c}: {:?}", o.error);
        }
        warm.push(t.elapsed());
    }
    // The dump.
    let mut dump = Vec::new();
    let mut dump_len = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let o = s.run("show monitor capture BENCH buffer dump").await?;
        dump.push(t.elapsed());
        anyhow::ensure!(o.error.is_none(), "dump: {:?}", o.error);
        dump_len = o.text.len();
    }
    drop(s);
    pool.close_all().await;

    // Ten commands on a fresh session: TCP, SSH handshake, login, prompt,
    // paging off, then the commands.
    let mut cold = Vec::new();
    let mut open = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut s = pool.session(&target).await?;
        open.push(t.elapsed());
        for c in TEN {
            s.run(c).await?;
        }
        cold.push(t.elapsed());
        drop(s);
    }
    fleet.shutdown().await;

    let (warm, cold, open, dump) = (median(warm), median(cold), median(open), median(dump));
    let ratio = |d: Duration| (d.as_secs_f64() / baseline.as_secs_f64() * 10.0).round() / 10.0;
    let mib_s = dump_len as f64 / (1024.0 * 1024.0) / dump.as_secs_f64();
    println!(
        "CLI over SSH on loopback (median of {rounds}; baseline: one `show clock` round trip on an open session)"
    );
    println!("  {:<44} {:>10} {:>12}", "case", "ms", "x baseline");
    println!(
        "  {:<44} {:>10.3} {:>12}",
        "show clock (baseline)",
        ms(baseline),
        "1.0"
    );
    println!(
        "  {:<44} {:>10.3} {:>12.1}",
        "session open (login, prompt, paging off)",
        ms(open),
        ratio(open)
    );
    println!(
        "  {:<44} {:>10.3} {:>12.1}",
        "10-command ShowCommand, reused session",
        ms(warm),
        ratio(warm)
    );
    println!(
        "  {:<44} {:>10.3} {:>12.1}",
        "10-command ShowCommand, fresh session",
        ms(cold),
        ratio(cold)
    );
    println!(
        "  {:<44} {:>10.3} {:>12.1}   ({:.1} MiB/s)",
        format!("capture dump, {} KiB", dump_len / 1024),
        ms(dump),
        ratio(dump),
        mib_s
    );
    Ok(json!({
        "rounds": rounds,
        "baseline_show_clock_ms": ms(baseline),
        "session_open_ms": ms(open),
        "ten_commands_reused_ms": ms(warm),
        "ten_commands_reused_x_baseline": ratio(warm),
        "ten_commands_fresh_ms": ms(cold),
        "ten_commands_fresh_x_baseline": ratio(cold),
        "capture_dump_bytes": dump_len,
        "capture_dump_ms": ms(dump),
        "capture_dump_x_baseline": ratio(dump),
        "capture_dump_mib_s": (mib_s * 10.0).round() / 10.0,
    }))
}
