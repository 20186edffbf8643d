//! The short chaos campaign CI runs: 21 trials, three of each fault kind
//! (and three without a fault, the baseline), on a control plane of its own
//! (trials kill and restart its kube-apiserver and etcd), with controllers
//! as `cvk-hil controller run` subprocesses. The long campaign and its
//! figures are in RELIABILITY.md (`cvk-hil chaos --trials 200`).
//!
//! The seed is fixed so a red run is replayed exactly; set
//! `CVK_CHAOS_SEED` to explore others.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cvk_hil::LocalControlPlane;
use cvk_hil::chaos::{ChaosOptions, Fault, run_campaign};
use cvk_hil::scenario::ControllerCommand;
use cvk_hil::testing::install_project_crds;

const TRIALS: u32 = 21;
const DEFAULT_SEED: u64 = 18;

#[test]
fn a_short_chaos_campaign_keeps_every_promise() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cp = LocalControlPlane::start().await.expect("control plane");
        install_project_crds(&cp.client().await.unwrap())
            .await
            .unwrap();
        let seed = std::env::var("CVK_CHAOS_SEED")
            .ok()
            .map(|s| s.parse().expect("CVK_CHAOS_SEED is a u64"))
            .unwrap_or(DEFAULT_SEED);
        let opts = ChaosOptions {
            trials: TRIALS,
            seed,
            faults: Fault::ALL.to_vec(),
            devices: 2..=3,
            // A bound on the whole test, far above its usual few minutes.
            max_duration: Duration::from_secs(20 * 60),
            controller: ControllerCommand {
                program: PathBuf::from(env!("CARGO_BIN_EXE_cvk-hil")),
                args: vec!["controller".into()],
            },
            artifacts: Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos"),
            progress: Arc::new(|line| eprintln!("{line}")),
        };
        let report = run_campaign(&cp, &opts).await;
        let table = report.table();
        eprintln!("{table}");
        assert_eq!(report.trials.len(), TRIALS as usize, "{table}");
        for fault in Fault::ALL {
            let n = report.trials.iter().filter(|t| t.fault == fault).count();
            assert_eq!(n, 3, "{fault}: every kind comes up once a round\n{table}");
        }
        assert_eq!(report.violations(), 0, "{table}");
        // Every leader kill ended in a failover the campaign measured.
        let kills = report
            .trials
            .iter()
            .filter(|t| t.fault == Fault::LeaderKill);
        assert!(kills.clone().all(|t| t.failover.is_some()), "{table}");
    });
}
