//! Scenarios: files that each prove one behaviour, run the same way against
//! the simulator, a kind cluster or lab switches.
//!
//! * [`model`]: the file format and its checks.
//! * [`template`]: `{{ key }}` values in manifests.
//! * [`target`]: simulators or an inventory of lab switches.
//! * [`runner`]: one scenario, end to end.
//! * [`report`]: the summary table and JUnit XML.

pub mod model;
pub mod report;
pub mod runner;
pub mod target;
pub mod template;

use futures::StreamExt;

pub use model::{LoadedScenario, Scenario, ScenarioError, discover, load};
pub use runner::{ControllerCommand, Outcome, RunContext, ScenarioResult};
pub use target::{Inventory, Target};

/// Runs scenarios, at most `jobs` at a time, returning results in the
/// order given.
pub async fn run_all(
    ctx: &RunContext,
    scenarios: &[LoadedScenario],
    jobs: usize,
) -> Vec<ScenarioResult> {
    let mut results: Vec<(usize, ScenarioResult)> =
        futures::stream::iter(scenarios.iter().enumerate())
            .map(|(i, s)| async move {
                (ctx.progress)(format!("[{}] start", s.scenario.name));
                let r = runner::run(ctx, s).await;
                let word = match &r.outcome {
                    Outcome::Passed => "passed".to_owned(),
                    Outcome::Failed(f) => format!("FAILED: {}", f.join("; ")),
                    Outcome::Skipped(why) => format!("skipped: {why}"),
                };
                (ctx.progress)(format!(
                    "[{}] {word} ({:.1}s)",
                    r.name,
                    r.duration.as_secs_f64()
                ));
                (i, r)
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
