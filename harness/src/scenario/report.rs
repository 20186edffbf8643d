//! The summary table and the JUnit XML report of a run.

use std::fmt::Write as _;
use std::time::Duration;

use super::runner::{Outcome, ScenarioResult};

/// Counts of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub fn totals(results: &[ScenarioResult]) -> Totals {
    let mut t = Totals::default();
    for r in results {
        match r.outcome {
            Outcome::Passed => t.passed += 1,
            Outcome::Failed(_) => t.failed += 1,
            Outcome::Skipped(_) => t.skipped += 1,
        }
    }
    t
}

/// A plain-text table, one row a scenario, failures spelled out below it,
/// and a closing `N passed, N failed, N skipped` line.
pub fn summary_table(results: &[ScenarioResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:>8}  detail",
        "SCENARIO", "RESULT", "TIME"
    );
    for r in results {
        let (word, detail) = match &r.outcome {
            Outcome::Passed => ("passed", String::new()),
            Outcome::Failed(f) => ("FAILED", format!("{} problem(s)", f.len())),
            Outcome::Skipped(why) => ("skipped", why.clone()),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {word:<7}  {:>7.1}s  {detail}",
            r.name,
            r.duration.as_secs_f64()
        );
    }
    for r in results {
        if let Outcome::Failed(failures) = &r.outcome {
            let _ = writeln!(out, "\n{} ({}):", r.name, r.path.display());
            for f in failures {
                let _ = writeln!(out, "  - {f}");
            }
            if let Some(logs) = &r.logs {
                let _ = writeln!(out, "  logs: {}", logs.display());
            }
        }
    }
    let t = totals(results);
    let _ = writeln!(
        out,
        "\n{} passed, {} failed, {} skipped",
        t.passed, t.failed, t.skipped
    );
    out
}

/// One scenario across the rounds of `cvk-hil run --repeat N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatRow {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The rounds (1-based) in which it failed.
    pub failed_in: Vec<usize>,
}

impl RepeatRow {
    /// Green every round it ran (skips do not count against it).
    pub fn always_green(&self) -> bool {
        self.failed == 0
    }
}

/// Per-scenario counts over several rounds, in the order of the first round.
pub fn repeat_rows(rounds: &[Vec<ScenarioResult>]) -> Vec<RepeatRow> {
    let mut rows: Vec<RepeatRow> = Vec::new();
    for (round, results) in rounds.iter().enumerate() {
        for r in results {
            let i = match rows.iter().position(|x| x.name == r.name) {
                Some(i) => i,
                None => {
                    rows.push(RepeatRow {
                        name: r.name.clone(),
                        passed: 0,
                        failed: 0,
                        skipped: 0,
                        failed_in: Vec::new(),
                    });
                    rows.len() - 1
                }
            };
            let row = &mut rows[i];
            match r.outcome {
                Outcome::Passed => row.passed += 1,
                Outcome::Failed(_) => {
                    row.failed += 1;
                    row.failed_in.push(round + 1);
                }
                Outcome::Skipped(_) => row.skipped += 1,
            }
        }
    }
    rows
}

/// The closing report of `--repeat N`: every scenario that was not green in
/// every round, with the rounds it failed in, then a count line.
pub fn repeat_summary(rounds: &[Vec<ScenarioResult>]) -> String {
    let rows = repeat_rows(rounds);
    let mut out = String::new();
    let unstable: Vec<&RepeatRow> = rows.iter().filter(|r| !r.always_green()).collect();
    let _ = writeln!(
        out,
        "{} round(s) of {} scenario(s)",
        rounds.len(),
        rows.len()
    );
    if unstable.is_empty() {
        let _ = writeln!(out, "every scenario was green in every round");
    } else {
        let _ = writeln!(out, "not green every time:");
        for r in &unstable {
            let rounds: Vec<String> = r.failed_in.iter().map(usize::to_string).collect();
            let _ = writeln!(
                out,
                "  {}: failed {} of {} round(s) (round {})",
                r.name,
                r.failed,
                r.passed + r.failed,
                rounds.join(", ")
            );
        }
    }
    let _ = writeln!(
        out,
        "{} always green, {} not",
        rows.len() - unstable.len(),
        unstable.len()
    );
    out
}

/// JUnit XML (the common Surefire/Jenkins dialect): one `testsuite`, one
/// `testcase` a scenario, `failure` and `skipped` elements.
pub fn junit_xml(suite: &str, results: &[ScenarioResult], total: Duration) -> String {
    let t = totals(results);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
        xml(suite),
        results.len(),
        t.failed,
        t.skipped,
        total.as_secs_f64()
    );
    for r in results {
        let _ = write!(
            out,
            "  <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            xml(suite),
            xml(&r.name),
            xml(&r.path.display().to_string()),
            r.duration.as_secs_f64()
        );
        match &r.outcome {
            Outcome::Passed => out.push_str("/>\n"),
            Outcome::Skipped(why) => {
                let _ = writeln!(
                    out,
                    ">\n    <skipped message=\"{}\"/>\n  </testcase>",
                    xml(why)
                );
            }
            Outcome::Failed(failures) => {
                let first = failures.first().map(String::as_str).unwrap_or("failed");
                let mut body = failures.join("\n");
                for (obj, phases) in &r.phases {
                    let _ = write!(body, "\n{obj}: {}", phases.join(" → "));
                }
                if let Some(logs) = &r.logs {
                    let _ = write!(body, "\nlogs: {}", logs.display());
                }
                let _ = writeln!(
                    out,
                    ">\n    <failure message=\"{}\" type=\"ExpectationFailed\">{}</failure>\n  </testcase>",
                    xml(first),
                    xml(&body)
                );
            }
        }
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}

/// Escapes text for XML attributes and content; drops characters XML 1.0
/// cannot carry.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn result(name: &str, outcome: Outcome) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            path: PathBuf::from(format!("scenarios/{name}.yaml")),
            outcome,
            duration: Duration::from_millis(1500),
            phases: [(
                "DeviceOperation/t".to_owned(),
                vec!["Pending".to_owned(), "Failed".to_owned()],
            )]
            .into(),
            logs: None,
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let rs = vec![
            result("a", Outcome::Passed),
            result(
                "b",
                Outcome::Failed(vec!["want <Succeeded> & got \"Failed\"".into()]),
            ),
            result("c", Outcome::Skipped("not tagged hardware-safe".into())),
        ];
        let x = junit_xml("cvk-hil sim", &rs, Duration::from_secs(5));
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("message=\"want &lt;Succeeded&gt; &amp; got &quot;Failed&quot;\""),
            "{x}"
        );
        assert!(x.contains("DeviceOperation/t: Pending → Failed"), "{x}");
        assert!(
            x.contains("<skipped message=\"not tagged hardware-safe\"/>"),
            "{x}"
        );
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(
            x.matches("</testcase>").count() + x.matches("\"/>\n").count() - 1,
            3,
            "{x}"
        );
    }

    #[test]
    fn table_ends_with_the_plain_count_line() {
        let rs = vec![
            result("a", Outcome::Passed),
            result("b", Outcome::Failed(vec!["x".into()])),
        ];
        let t = summary_table(&rs);
        assert!(
            t.trim_end().ends_with("1 passed, 1 failed, 0 skipped"),
            "{t}"
        );
        assert!(t.contains("b (scenarios/b.yaml):\n  - x"), "{t}");
    }

    #[test]
    fn repeat_names_every_scenario_not_green_every_round() {
        let round = |b: Outcome| {
            vec![
                result("steady", Outcome::Passed),
                result("flaky", b),
                result(
                    "hw-only",
                    Outcome::Skipped("not tagged hardware-safe".into()),
                ),
            ]
        };
        let rounds = vec![
            round(Outcome::Passed),
            round(Outcome::Failed(vec!["missed Running".into()])),
            round(Outcome::Passed),
            round(Outcome::Failed(vec!["timeout".into()])),
        ];
        let rows = repeat_rows(&rounds);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].always_green() && rows[2].always_green());
        assert_eq!(rows[1].failed_in, vec![2, 4]);
        assert_eq!((rows[1].passed, rows[1].failed), (2, 2));
        let text = repeat_summary(&rounds);
        assert!(
            text.contains("flaky: failed 2 of 4 round(s) (round 2, 4)"),
            "{text}"
        );
        assert!(!text.contains("steady:"), "{text}");
        assert!(text.ends_with("2 always green, 1 not\n"), "{text}");

        let green = vec![round(Outcome::Passed), round(Outcome::Passed)];
        assert!(repeat_summary(&green).contains("every scenario was green in every round"));
    }
}
