//! Every simulator scenario in `scenarios/`, one test per file, through
//! the same runner as `cvk-hil run`: a shared local control plane, the
//! controller as a subprocess (`cvk-hil controller run`), simulators
//! in-process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cvk_hil::scenario::{self, ControllerCommand, Outcome, RunContext, Target};
use cvk_hil::testing::{install_project_crds, shared_control_plane};

fn run_scenario_file(path: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let loaded = scenario::load(Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
        let cp = shared_control_plane();
        let client = cp.client().await.unwrap();
        install_project_crds(&client).await.unwrap();
        let ctx = RunContext {
            kubeconfig: cp.kubeconfig_yaml().to_owned(),
            target: Target::Sim,
            controller: ControllerCommand {
                program: PathBuf::from(env!("CARGO_BIN_EXE_cvk-hil")),
                args: vec!["controller".into()],
            },
            artifacts: Path::new(env!("CARGO_TARGET_TMPDIR")).join("scenarios"),
            progress: Arc::new(|line| eprintln!("{line}")),
        };
        let result = scenario::runner::run(&ctx, &loaded).await;
        match &result.outcome {
            Outcome::Passed => {}
            Outcome::Skipped(why) => panic!("{path}: skipped on the sim target: {why}"),
            Outcome::Failed(failures) => {
                let mut msg = format!("{path}:\n");
                for f in failures {
                    msg.push_str(&format!("  - {f}\n"));
                }
                for (obj, phases) in &result.phases {
                    msg.push_str(&format!("  {obj}: {}\n", phases.join(" → ")));
                }
                if let Some(logs) = &result.logs {
                    let log =
                        std::fs::read_to_string(logs.join("controller.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    msg.push_str(&format!(
                        "  controller log ({}), last lines:\n",
                        logs.display()
                    ));
                    for l in tail.into_iter().rev() {
                        msg.push_str(&format!("    {l}\n"));
                    }
                }
                panic!("{msg}");
            }
        }
    });
}

include!(concat!(env!("OUT_DIR"), "/scenario_tests.rs"));
