//! The fairness audit as a readable Markdown report. The audit is computed by
//! `faceval_eval::audit` (its JSON form is `docs/audit.md`); this only lays it out (the HTML
//! page is [`crate::pages::render_audit_html`]).

use std::collections::HashMap;
use std::fmt::Write as _;

use faceval_eval::audit::{
    AuditReport, GroupingReport, ProportionInterval, TaskAudit, UNPARSEABLE_LABEL,
};
use faceval_eval::fairness::{GroupMae, Measure};
use faceval_eval::stats::{format_p, Interval};
use faceval_eval::verification::Verification;

use crate::leaderboard::{Panel, VerificationSet};

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn interval_pct(i: &Interval) -> String {
    format!("{} [{}, {}]", pct(i.estimate), pct(i.low), pct(i.high))
}

/// A measure's value in the unit it is reported in: accuracies and differences in points,
/// ratios as plain numbers.
fn measure_fmt(m: &Measure) -> String {
    let points = !(m.name.contains("ratio"));
    let f = |x: f64| {
        if points {
            format!("{:.1}", 100.0 * x)
        } else {
            format!("{x:.3}")
        }
    };
    match m.estimate {
        None => format!(
            "undefined ({})",
            m.reason.as_deref().unwrap_or("no reason given")
        ),
        Some(e) => match (m.low, m.high) {
            (Some(l), Some(h)) => format!("{} [{}, {}]", f(e), f(l), f(h)),
            _ => format!(
                "{} ({})",
                f(e),
                m.reason.as_deref().unwrap_or("no interval")
            ),
        },
    }
}

/// The readable report.
pub fn to_markdown(report: &AuditReport) -> String {
    let mut s = String::new();
    let conf = format!("{:.0}%", 100.0 * report.confidence);
    let method = match report.interval {
        ProportionInterval::Wilson => "Wilson",
        ProportionInterval::ClopperPearson => "Clopper–Pearson",
    };
    let _ = writeln!(s, "# Fairness audit\n");
    let _ = writeln!(
        s,
        "Accuracies are percentages with {conf} {method} intervals; disparity measures have {conf} \
         within-group bootstrap intervals ({} resamples). Differences are in points. Groups below \
         the minimum size are shown with ⚠ and left out of gaps, ratios and tests. Chi-square \
         p-values are adjusted across all {} tests of this report: Holm (confirmatory) and \
         Benjamini–Hochberg (exploratory).\n",
        report.resamples,
        report.tests.len()
    );
    // Summary across runs.
    let _ = writeln!(s, "## Summary\n");
    let _ = writeln!(
        s,
        "| run | model | task | n | accuracy | grouping | worst group | max−min gap | χ² p (Holm) |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---|---|---|---|---|");
    for run in &report.runs {
        for t in &run.tasks {
            for g in t.groupings.iter().filter(|g| g.fields.len() == 1) {
                let worst = g
                    .groups
                    .iter()
                    .filter(|x| !x.small)
                    .filter_map(|x| Some((x, x.accuracy.as_ref()?.estimate)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(x, a)| format!("{} ({})", x.key, pct(a)))
                    .unwrap_or_else(|| "—".into());
                let gap = g
                    .measures
                    .iter()
                    .find(|m| m.name == "difference_between_groups")
                    .map(measure_fmt)
                    .unwrap_or_else(|| "—".into());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    run.run,
                    run.model,
                    t.task,
                    t.n,
                    t.overall
                        .as_ref()
                        .map(interval_pct)
                        .unwrap_or_else(|| "—".into()),
                    g.name,
                    worst,
                    gap,
                    g.p_holm.map(format_p).unwrap_or_else(|| "—".into())
                );
            }
        }
    }
    let _ = writeln!(s);
    for run in &report.runs {
        let _ = writeln!(s, "## Run `{}` — {}\n", run.run, run.model);
        for skip in &run.skipped {
            let _ = writeln!(s, "- task **{}** not audited: {}", skip.task, skip.reason);
        }
        if !run.skipped.is_empty() {
            let _ = writeln!(s);
        }
        for t in &run.tasks {
            task_markdown(&mut s, t);
        }
    }
    s
}

fn task_markdown(s: &mut String, t: &TaskAudit) {
    let _ = writeln!(s, "### {} (v{})\n", t.task, t.version);
    let _ = writeln!(
        s,
        "n = {} scored questions, {} errors, {} unparseable. Minimum group size {} ({}). Fields: {}.",
        t.n,
        t.n_errors,
        t.n_unparseable,
        t.min_group,
        t.min_group_source,
        t.fields.join(", ")
    );
    for (asked, used) in &t.field_aliases {
        let _ = writeln!(s, "Field `{asked}` is read from `{used}`.");
    }
    if let Some(o) = &t.overall {
        let _ = write!(s, "Overall accuracy {}", interval_pct(o));
        if let Some(c) = &t.overall_clustered {
            let _ = write!(
                s,
                "; standard error {:.2} points iid, {:.2} clustered over {} clusters",
                100.0 * c.se_iid,
                100.0 * c.se_clustered,
                c.clusters
            );
        }
        let _ = writeln!(s, ".");
    }
    if let Some(m) = &t.mae {
        let _ = writeln!(
            s,
            "MAE {:.2} [{:.2}, {:.2}] over {} readable answers.",
            m.estimate, m.low, m.high, m.n
        );
    }
    for note in &t.notes {
        let _ = writeln!(s, "Note: {note}.");
    }
    let _ = writeln!(s);
    if let Some(c) = &t.contamination {
        let _ = writeln!(
            s,
            "Images found in the training set {} (near = hash distance ≤ {} of 256 bits): \
             accuracy on the clean slice beside the full one.\n",
            c.reference, c.max_distance
        );
        let table = crate::format::contamination_rows("task", [(t.task.clone(), c)]);
        crate::markdown::table(s, &table);
    }
    if let Some(v) = &t.verification {
        verification_markdown(s, &t.task, v);
    }
    for g in &t.groupings {
        let _ = writeln!(s, "#### By {}\n", g.name);
        let clustered = g.groups.iter().any(|x| x.clustered.is_some());
        let has_acc = g.groups.iter().any(|x| x.accuracy.is_some());
        let mae_of: HashMap<&str, &GroupMae> = g.mae.iter().map(|m| (m.key.as_str(), m)).collect();
        let _ = write!(s, "| group | n |");
        if has_acc {
            let _ = write!(s, " accuracy | error |");
        }
        if clustered {
            let _ = write!(s, " clustered SE |");
        }
        if !g.mae.is_empty() {
            let _ = write!(s, " MAE |");
        }
        let _ = writeln!(s, " |");
        let cols =
            3 + 2 * usize::from(has_acc) + usize::from(clustered) + usize::from(!g.mae.is_empty());
        let _ = writeln!(s, "|---|---:|{}", "---|".repeat(cols - 2));
        for x in &g.groups {
            let _ = write!(s, "| {} | {} |", x.key, x.n);
            if has_acc {
                let _ = write!(
                    s,
                    " {} | {} |",
                    x.accuracy.as_ref().map(interval_pct).unwrap_or_default(),
                    x.error.as_ref().map(interval_pct).unwrap_or_default()
                );
            }
            if clustered {
                let _ = write!(
                    s,
                    " {} |",
                    x.clustered
                        .as_ref()
                        .map(|c| format!("{:.2}", 100.0 * c.se_clustered))
                        .unwrap_or_default()
                );
            }
            if !g.mae.is_empty() {
                let _ = write!(
                    s,
                    " {} |",
                    mae_of
                        .get(x.key.as_str())
                        .map(|m| format!(
                            "{:.2} [{:.2}, {:.2}]",
                            m.mae.estimate, m.mae.low, m.mae.high
                        ))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(s, " {} |", if x.small { "⚠ small" } else { "" });
        }
        if g.empty_intersection_count > 0 {
            let _ = writeln!(
                s,
                "\nEmpty intersections ({}): {}",
                g.empty_intersection_count,
                if g.empty_intersections.is_empty() {
                    "too many to list".to_string()
                } else {
                    g.empty_intersections.join("; ")
                }
            );
        }
        if g.missing > 0 {
            let _ = writeln!(s, "\n{} questions have no value for {}.", g.missing, g.name);
        }
        if !g.measures.is_empty() {
            let _ = writeln!(s, "\n| measure | value |\n|---|---|");
            for m in &g.measures {
                let _ = writeln!(s, "| {} | {} |", m.name, measure_fmt(m));
            }
        }
        if let Some(b) = &g.binary {
            let _ = writeln!(
                s,
                "\nBinary measures (positive class `{}`):\n\n| measure | value |\n|---|---|",
                t.positive_label.as_deref().unwrap_or("?")
            );
            for m in &b.measures {
                let _ = writeln!(s, "| {} | {} |", m.name, measure_fmt(m));
            }
        }
        if let Some(cs) = &g.chi_square {
            match (cs.statistic, cs.p_value) {
                (Some(x2), Some(p)) => {
                    let _ = writeln!(
                        s,
                        "\nχ² test of correctness × group: X² = {x2:.2}, dof = {}, p = {}, Holm p = {}, BH p = {}.",
                        cs.dof,
                        format_p(p),
                        g.p_holm.map(format_p).unwrap_or_else(|| "—".into()),
                        g.p_bh.map(format_p).unwrap_or_else(|| "—".into())
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "\nχ² test of correctness × group: undefined ({}).",
                        cs.reason.as_deref().unwrap_or("no reason given")
                    );
                }
            }
        }
        if g.fields.len() == 1 && !g.per_class.is_empty() {
            per_class_markdown(s, g);
        }
        let _ = writeln!(s);
    }
}

fn per_class_markdown(s: &mut String, g: &GroupingReport) {
    let labels: Vec<&str> = g.per_class[0]
        .classes
        .iter()
        .map(|c| c.label.as_str())
        .filter(|l| *l != UNPARSEABLE_LABEL)
        .collect();
    let _ = writeln!(s, "\nPer-class recall / precision (%):\n");
    let _ = writeln!(s, "| group | {} |", labels.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(labels.len()));
    for gc in &g.per_class {
        let cells: Vec<String> = gc
            .classes
            .iter()
            .filter(|c| c.label != UNPARSEABLE_LABEL)
            .map(|c| {
                let r = c
                    .recall
                    .as_ref()
                    .map(|i| pct(i.estimate))
                    .unwrap_or_else(|| "—".into());
                let p = c
                    .precision
                    .as_ref()
                    .map(|i| pct(i.estimate))
                    .unwrap_or_else(|| "—".into());
                format!("{r} / {p}")
            })
            .collect();
        let _ = writeln!(
            s,
            "| {}{} | {} |",
            gc.key,
            if gc.small { " ⚠" } else { "" },
            cells.join(" | ")
        );
    }
}

/// A verification task's pair scores: AUC, EER, TMR@FMR, then per group FMR and FNMR at the
/// one global threshold, laid out by the report's own tables.
fn verification_markdown(s: &mut String, task: &str, v: &Verification) {
    let set = VerificationSet {
        task: task.to_string(),
        panels: vec![Panel {
            label: "this run".into(),
            value: v.clone(),
        }],
    };
    let _ = writeln!(
        s,
        "#### Verification\n\n{} pairs with a score ({} genuine, {} impostor; {} without a score), {} identity clusters; intervals resample identities.\n",
        v.n, v.n_genuine, v.n_impostor, v.n_without_score, v.n_clusters
    );
    crate::markdown::table(s, &crate::format::verification_table(&set));
    if !v.groups.is_empty() {
        let threshold = v.group_threshold.map_or_else(
            || "+inf (every pair rejected)".to_string(),
            |t| format!("{t:.4}"),
        );
        let _ = writeln!(
            s,
            "Per group, at the one threshold {threshold} that gives FMR {} over all pairs:\n",
            v.group_fmr
        );
        crate::markdown::table(s, &crate::format::verification_groups_table(&set));
    }
}
