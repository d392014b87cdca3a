//! The gate's decision as text for the terminal, Markdown for a CI step summary and JUnit XML
//! for CI test lists. The decision itself is made by `faceval_eval::gate`; this only lays it
//! out (the HTML page is [`crate::pages::render_gate_html`]).

use std::fmt::Write as _;

use faceval_eval::gate::{Check, GateReport, Status};

/// The readable table for the terminal.
pub fn to_text(report: &GateReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "faceval gate: baseline {} ({}) vs candidate {} ({})",
        report.baseline.run, report.baseline.model, report.candidate.run, report.candidate.model
    );
    let _ = writeln!(
        s,
        "max_drop {} points, alpha {} (one-sided, Holm across {} tasks), power {}\n",
        report.config.max_drop,
        report.config.alpha,
        report.tasks.len(),
        report.config.power
    );
    let _ = writeln!(s, "{:<24} {:<18} {:<14} detail", "task", "check", "status");
    for t in &report.tasks {
        let _ = writeln!(
            s,
            "{:<24} {:<18} {:<14} {} shared questions, n = {} paired ({} missing from the candidate, {} candidate-only, {} candidate errors counted wrong, {} baseline errors left out)",
            t.task, "items", "", t.shared, t.n, t.missing, t.candidate_only, t.new_errors, t.excluded_errors
        );
        for c in &t.checks {
            let _ = writeln!(
                s,
                "{:<24} {:<18} {:<14} {}",
                t.task,
                c.name,
                status_label(report, c),
                c.message
            );
        }
    }
    for c in &report.run_checks {
        let _ = writeln!(
            s,
            "{:<24} {:<18} {:<14} {}",
            "(run)",
            c.name,
            status_label(report, c),
            c.message
        );
    }
    let _ = writeln!(s, "\n{}", report.power);
    for n in &report.notices {
        let _ = writeln!(s, "\nWARNING: {n}");
    }
    let _ = writeln!(
        s,
        "\n{}: {} failing checks, {} warnings",
        if report.passed { "PASS" } else { "FAIL" },
        report.failures,
        report.warnings
    );
    s
}

fn status_label(report: &GateReport, c: &Check) -> String {
    match c.status {
        Status::Underpowered | Status::Incomplete if report.fails(c) => {
            c.status.as_str().to_uppercase()
        }
        Status::Underpowered | Status::Incomplete => format!("{}⚠", c.status.as_str()),
        Status::Regression => "REGRESSION".into(),
        other => other.as_str().into(),
    }
}

/// A Markdown summary for a CI step summary.
pub fn to_markdown(report: &GateReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## faceval gate: {}\n",
        if report.passed {
            "✅ pass"
        } else {
            "❌ fail"
        }
    );
    let _ = writeln!(
        s,
        "Baseline `{}` ({}) vs candidate `{}` ({}). Regression when the candidate is worse than \
         **{} points** at one-sided α = {} (Holm across {} tasks). {} failing checks, {} warnings.\n",
        report.baseline.run,
        report.baseline.model,
        report.candidate.run,
        report.candidate.model,
        report.config.max_drop,
        report.config.alpha,
        report.tasks.len(),
        report.failures,
        report.warnings
    );
    for n in &report.notices {
        let _ = writeln!(s, "> ⚠️ **Warning.** {n}\n");
    }
    let _ = writeln!(s, "{}\n", report.power);
    let _ = writeln!(s, "| task | check | status | detail |\n|---|---|---|---|");
    let esc = |x: &str| x.replace('|', "\\|");
    for (task, c) in report.all_checks() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            task.unwrap_or("(run)"),
            c.name,
            status_label(report, c),
            esc(&c.message)
        );
    }
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testcase per task and check. Regressions (and underpowered checks when
/// they fail the gate) are `<failure>`s; unmeasured or inapplicable checks are `<skipped>`.
pub fn to_junit(report: &GateReport) -> String {
    let checks: Vec<(Option<&str>, &Check)> = report.all_checks().collect();
    let failures = checks.iter().filter(|(_, c)| report.fails(c)).count();
    let skipped = checks
        .iter()
        .filter(|(_, c)| matches!(c.status, Status::NotMeasured | Status::NotApplicable))
        .count();
    let suite = format!(
        "faceval gate: {} vs {}",
        report.baseline.model, report.candidate.model
    );
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // The power sentence and the notices go to the suite's system-out, which CI systems
    // show beside the test list.
    let mut suite_out = report.power.clone();
    for n in &report.notices {
        suite_out.push_str("\nWARNING: ");
        suite_out.push_str(n);
    }
    let _ = writeln!(
        s,
        "<testsuites name=\"faceval gate\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        checks.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        xml_escape(&suite),
        checks.len()
    );
    for (task, c) in &checks {
        let _ = write!(
            s,
            "    <testcase classname=\"faceval.gate.{}\" name=\"{}\" time=\"0\"",
            xml_escape(task.unwrap_or("run")),
            xml_escape(&c.name)
        );
        let msg = xml_escape(&c.message);
        if report.fails(c) {
            let _ = writeln!(
                s,
                ">\n      <failure message=\"{msg}\" type=\"{}\">{msg}</failure>\n    </testcase>",
                c.status.as_str()
            );
        } else if matches!(c.status, Status::NotMeasured | Status::NotApplicable) {
            let _ = writeln!(s, ">\n      <skipped message=\"{msg}\"/>\n    </testcase>");
        } else {
            let _ = writeln!(
                s,
                ">\n      <system-out>{}: {msg}</system-out>\n    </testcase>",
                c.status.as_str()
            );
        }
    }
    let _ = writeln!(s, "    <system-out>{}</system-out>", xml_escape(&suite_out));
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use faceval_eval::gate::{GateConfig, RunRef, SameOutputs, TaskGate};

    #[test]
    fn junit_escapes_and_counts() {
        let report = GateReport {
            baseline: RunRef {
                run: "a".into(),
                model: "m<1>".into(),
            },
            candidate: RunRef {
                run: "b".into(),
                model: "m&2".into(),
            },
            config: GateConfig::default(),
            tasks: vec![TaskGate {
                task: "t".into(),
                version: "1".into(),
                shared: 1,
                baseline_only: 0,
                candidate_only: 0,
                missing: 0,
                excluded_errors: 0,
                new_errors: 0,
                new_errors_baseline_right: 0,
                errors_in_both: 0,
                baseline_errors: 0,
                n: 1,
                detectable_drop: None,
                checks: vec![Check {
                    name: "accuracy".into(),
                    status: Status::Regression,
                    message: "Δ < 0 \"bad\"".into(),
                    accuracy: None,
                    telemetry: None,
                    fairness: None,
                }],
            }],
            run_checks: vec![],
            failures: 1,
            warnings: 0,
            passed: false,
            power: "power <sentence>".into(),
            notices: vec!["same & stale".into()],
            same_outputs: SameOutputs {
                compared: 1,
                identical: 1,
                different_models: true,
                suspect: true,
            },
        };
        let x = to_junit(&report);
        assert!(x.contains("failures=\"1\""));
        assert!(x.contains("m&lt;1&gt; vs m&amp;2"));
        assert!(x.contains("&quot;bad&quot;") && !x.contains("\"bad\""));
        assert!(x.contains(
            "<system-out>power &lt;sentence&gt;\nWARNING: same &amp; stale</system-out>"
        ));
    }
}
