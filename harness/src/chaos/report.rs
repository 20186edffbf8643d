//! The campaign's table: one row a fault kind, then a total, then every
//! violation with the trial and seed that replays it.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Fault, TrialReport, by_fault};

/// The whole campaign.
#[derive(Debug, Clone)]
pub struct CampaignReport {
    pub seed: u64,
    pub trials: Vec<TrialReport>,
    pub duration: Duration,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRow {
    /// `None`: the total row.
    pub fault: Option<Fault>,
    pub trials: usize,
    pub objects: usize,
    pub succeeded: usize,
    pub duplicates: usize,
    pub stuck: usize,
    /// Trials with at least one violation.
    pub failed_trials: usize,
    pub restarts: u32,
    /// Mean and worst apply-to-terminal time of the upgrades that got there.
    pub mean_to_terminal: Option<Duration>,
    pub max_to_terminal: Option<Duration>,
}

fn row(fault: Option<Fault>, trials: &[&TrialReport]) -> FaultRow {
    // Upgrades only: every trial has one and its fault aims at it, so the
    // means compare like with like whatever actions came along.
    let times: Vec<Duration> = trials
        .iter()
        .flat_map(|t| {
            t.objects
                .iter()
                .filter(|o| o.object.starts_with("IOSXESoftwareUpgrade/"))
                .filter_map(|o| o.time_to_terminal)
        })
        .collect();
    FaultRow {
        fault,
        trials: trials.len(),
        objects: trials.iter().map(|t| t.objects.len()).sum(),
        succeeded: trials
            .iter()
            .flat_map(|t| &t.objects)
            .filter(|o| o.phase.as_deref() == Some("Succeeded"))
            .count(),
        duplicates: trials.iter().map(|t| t.duplicates).sum(),
        stuck: trials.iter().map(|t| t.stuck).sum(),
        failed_trials: trials.iter().filter(|t| !t.violations.is_empty()).count(),
        restarts: trials.iter().map(|t| t.restarts).sum(),
        mean_to_terminal: (!times.is_empty())
            .then(|| times.iter().sum::<Duration>() / times.len() as u32),
        max_to_terminal: times.iter().max().copied(),
    }
}

impl CampaignReport {
    /// Rows by fault kind, then the total.
    pub fn rows(&self) -> Vec<FaultRow> {
        let mut rows: Vec<FaultRow> = by_fault(&self.trials)
            .into_iter()
            .map(|(f, ts)| row(Some(f), &ts))
            .collect();
        let all: Vec<&TrialReport> = self.trials.iter().collect();
        rows.push(row(None, &all));
        rows
    }

    /// Every violation of every trial.
    pub fn violations(&self) -> usize {
        self.trials.iter().map(|t| t.violations.len()).sum()
    }

    /// The printed table and the violations below it.
    pub fn table(&self) -> String {
        let secs = |d: Option<Duration>| {
            d.map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        let rows = self.rows();
        let baseline = rows
            .iter()
            .find(|r| r.fault == Some(Fault::None))
            .and_then(|r| r.mean_to_terminal);
        let ratio = |d: Option<Duration>| match (d, baseline) {
            (Some(d), Some(b)) if !b.is_zero() => {
                format!("{:.2}x", d.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".into(),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<19} {:>6} {:>7} {:>9} {:>10} {:>5} {:>8} {:>8} {:>9} {:>9} {:>7}",
            "FAULT",
            "TRIALS",
            "OBJECTS",
            "SUCCEEDED",
            "DUPLICATES",
            "STUCK",
            "VIOLATED",
            "RESTARTS",
            "UPG MEAN",
            "UPG MAX",
            "VS NONE"
        );
        for r in &rows {
            let name = r.fault.map(Fault::name).unwrap_or("total");
            let _ = writeln!(
                out,
                "{name:<19} {:>6} {:>7} {:>9} {:>10} {:>5} {:>8} {:>8} {:>9} {:>9} {:>7}",
                r.trials,
                r.objects,
                r.succeeded,
                r.duplicates,
                r.stuck,
                r.failed_trials,
                r.restarts,
                secs(r.mean_to_terminal),
                secs(r.max_to_terminal),
                ratio(r.mean_to_terminal)
            );
        }
        let failovers: Vec<Duration> = self.trials.iter().filter_map(|t| t.failover).collect();
        if !failovers.is_empty() {
            let mean = failovers.iter().sum::<Duration>() / failovers.len() as u32;
            let _ = writeln!(
                out,
                "\nleader-kill failover (kill to standby holding the Lease): {} trial(s), mean {}, max {}",
                failovers.len(),
                secs(Some(mean)),
                secs(failovers.iter().max().copied())
            );
        }
        let _ = writeln!(
            out,
            "\n{} trial(s) in {:.0}s, seed {}: {} violation(s)",
            self.trials.len(),
            self.duration.as_secs_f64(),
            self.seed,
            self.violations()
        );
        for t in self.trials.iter().filter(|t| !t.violations.is_empty()) {
            let _ = writeln!(
                out,
                "\ntrial {} ({}, {}, seed {}): {}",
                t.trial,
                t.fault,
                if t.ha {
                    "elected pair"
                } else {
                    "one controller"
                },
                t.seed,
                t.injected
            );
            for v in &t.violations {
                let _ = writeln!(out, "  - {v}");
            }
            if let Some(logs) = &t.logs {
                let _ = writeln!(out, "  logs: {}", logs.display());
            }
        }
        out
    }
}

/// The progress line of a finished trial.
pub fn trial_line(t: &TrialReport) -> String {
    let ends: Vec<String> = t
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                o.object.rsplit('/').next().unwrap_or(&o.object),
                o.phase.as_deref().unwrap_or("none")
            )
        })
        .collect();
    let verdict = if t.violations.is_empty() {
        "ok".to_owned()
    } else {
        format!("{} VIOLATION(S)", t.violations.len())
    };
    format!(
        "[trial {:>3}] {:<18} {:<14} {verdict} in {:.1}s: {}; {}",
        t.trial,
        t.fault.name(),
        if t.ha {
            "elected pair"
        } else {
            "one controller"
        },
        t.duration.as_secs_f64(),
        t.injected,
        ends.join(" ")
    )
}

/// The full record of a trial (written next to its logs).
pub fn trial_detail(t: &TrialReport) -> String {
    let mut out = trial_line(t);
    out.push('\n');
    for o in &t.objects {
        let _ = writeln!(
            out,
            "  {} on {}: {} ({}) after {}",
            o.object,
            o.device,
            o.phase.as_deref().unwrap_or("no phase"),
            o.reason.as_deref().unwrap_or("no reason"),
            o.time_to_terminal
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into())
        );
    }
    for v in &t.violations {
        let _ = writeln!(out, "  violation: {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::ObjectOutcome;
    use super::*;

    fn trial(fault: Fault, phases: &[Option<&str>], violations: &[&str]) -> TrialReport {
        TrialReport {
            trial: 1,
            seed: 7,
            fault,
            ha: false,
            injected: "x".into(),
            objects: phases
                .iter()
                .enumerate()
                .map(|(i, p)| ObjectOutcome {
                    object: format!("IOSXESoftwareUpgrade/u{i}"),
                    device: format!("sw{i}"),
                    phase: p.map(str::to_owned),
                    reason: None,
                    time_to_terminal: p.map(|_| Duration::from_secs(2 + i as u64 * 2)),
                })
                .collect(),
            duplicates: violations.iter().filter(|v| v.contains("sent")).count(),
            stuck: phases.iter().filter(|p| p.is_none()).count(),
            violations: violations.iter().map(|v| v.to_string()).collect(),
            restarts: 1,
            failover: (fault == Fault::LeaderKill).then(|| Duration::from_secs(7)),
            duration: Duration::from_secs(10),
            logs: None,
        }
    }

    #[test]
    fn rows_count_by_fault_and_in_total() {
        let report = CampaignReport {
            seed: 7,
            trials: vec![
                trial(Fault::None, &[Some("Succeeded")], &[]),
                trial(
                    Fault::LeaderKill,
                    &[Some("Succeeded"), Some("Succeeded")],
                    &[],
                ),
                trial(
                    Fault::InstallCut,
                    &[Some("Succeeded"), None],
                    &[
                        "IOSXESoftwareUpgrade/u1 not terminal",
                        "x: Activate sent 2 times",
                    ],
                ),
            ],
            duration: Duration::from_secs(20),
        };
        let rows = report.rows();
        assert_eq!(rows.len(), 4);
        let baseline = &rows[0];
        assert_eq!(baseline.fault, Some(Fault::None));
        assert_eq!(baseline.mean_to_terminal, Some(Duration::from_secs(2)));
        let rows = &rows[1..];
        let leader = &rows[0];
        assert_eq!(leader.fault, Some(Fault::LeaderKill));
        assert_eq!(
            (leader.objects, leader.succeeded, leader.failed_trials),
            (2, 2, 0)
        );
        assert_eq!(leader.mean_to_terminal, Some(Duration::from_secs(3)));
        let cut = &rows[1];
        assert_eq!(
            (cut.succeeded, cut.stuck, cut.duplicates, cut.failed_trials),
            (1, 1, 1, 1)
        );
        assert_eq!(cut.max_to_terminal, Some(Duration::from_secs(2)));
        let total = &rows[2];
        assert_eq!(total.fault, None);
        assert_eq!(
            (total.trials, total.objects, total.succeeded, total.restarts),
            (3, 5, 4, 3)
        );
        assert_eq!(report.violations(), 2);
        let table = report.table();
        assert!(table.contains("2 violation(s)"), "{table}");
        assert!(
            table.contains("trial 1 (install-cut, one controller, seed 7)"),
            "{table}"
        );
        assert!(table.contains("  - x: Activate sent 2 times"), "{table}");
        // Leader-kill's mean (2 s and 4 s) against the baseline's 2 s.
        assert!(table.contains("1.50x"), "{table}");
        assert!(table.contains("1 trial(s), mean 7.0s, max 7.0s"), "{table}");
    }

    #[test]
    fn fault_names_parse_back() {
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.name()), Ok(f));
        }
        let err = Fault::parse("kernel-panic").unwrap_err();
        assert!(err.contains("unknown fault \"kernel-panic\""), "{err}");
        assert!(err.contains("leader-kill"), "{err}");
    }
}
