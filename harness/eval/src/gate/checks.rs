//! The named checks of the gate, each turning figures of the two runs into a [`Check`].

use super::*;

pub(super) fn check(name: &str, status: Status, message: String) -> Check {
    Check {
        name: name.to_string(),
        status,
        message,
        accuracy: None,
        telemetry: None,
        fairness: None,
    }
}

/// The task's `completeness` check: every question the baseline answered is in the candidate.
pub(super) fn completeness_check(s: &Shared, config: &GateConfig) -> Check {
    let answered = s.missing.len()
        + s.base
            .iter()
            .filter(|p| p.outcome != Outcome::Error)
            .count();
    if s.missing.is_empty() {
        return check(
            "completeness",
            Status::Pass,
            format!("the candidate has all {answered} questions the baseline answered"),
        );
    }
    let examples: Vec<&str> = s.missing.iter().take(3).map(|p| p.id.as_str()).collect();
    check(
        "completeness",
        Status::Incomplete,
        format!(
            "the candidate lacks {} of the {answered} questions the baseline answered (e.g. {}){}",
            s.missing.len(),
            examples.join(", "),
            if config.require_complete {
                "; finish the candidate run (rerun its command), or pass --allow-partial to compare the shared questions only"
            } else {
                "; partial runs are allowed, so only the shared questions are compared"
            }
        ),
    )
}

/// The task's `errors` check: the candidate fails questions the baseline answered.
pub(super) fn errors_check(p: &Pairing, max_new: usize) -> Check {
    let both = if p.errors_in_both > 0 {
        format!(
            "; {} errors in both runs are not counted against the candidate",
            p.errors_in_both
        )
    } else {
        String::new()
    };
    let base_only = if p.baseline_errors > 0 {
        format!(
            "; {} baseline errors the candidate answered are left out of the pairing",
            p.baseline_errors
        )
    } else {
        String::new()
    };
    let (status, head) = if p.new_errors > max_new {
        (
            Status::Regression,
            format!(
                "{} new errors on questions the baseline answered ({} of them right in the baseline), more than max_new_errors = {max_new}; they count as wrong answers",
                p.new_errors, p.new_errors_baseline_right
            ),
        )
    } else {
        (
            Status::Pass,
            format!("{} new errors (max_new_errors = {max_new})", p.new_errors),
        )
    };
    check("errors", status, format!("{head}{both}{base_only}"))
}

/// The run-level `completeness` check: the candidate finished, and ran every gated task.
pub(super) fn run_completeness_check(
    cand: &LoadedRun,
    missing_tasks: &[&str],
    config: &GateConfig,
) -> Check {
    let mut why = Vec::new();
    if cand.manifest.finished.is_none() {
        why.push(format!(
            "{} has no `finished` time in manifest.json: the run stopped before its end",
            cand.dir.display()
        ));
    }
    if !missing_tasks.is_empty() {
        why.push(format!(
            "the candidate did not run task{} {} of the baseline",
            if missing_tasks.len() == 1 { "" } else { "s" },
            missing_tasks.join(", ")
        ));
    }
    if why.is_empty() {
        return check(
            "completeness",
            Status::Pass,
            "the candidate run finished and ran every task of the baseline".into(),
        );
    }
    check(
        "completeness",
        Status::Incomplete,
        format!(
            "{}{}",
            why.join("; "),
            if config.require_complete {
                "; rerun the candidate's command to finish it, or pass --allow-partial"
            } else {
                " (partial runs allowed)"
            }
        ),
    )
}

pub(super) fn accuracy_check(
    cand: &[bool],
    base: &[bool],
    margin: f64,
    config: &GateConfig,
    k_tasks: usize,
) -> Result<AccuracyCheck> {
    let counts = PairedCounts::from_runs(cand, base)?;
    let n = counts.n();
    let delta = stats::newcombe_paired(&counts, 0.95)?;
    let upper_bound = stats::newcombe_paired(&counts, 1.0 - 2.0 * config.alpha)?.high;
    let p_value = stats::newcombe_one_sided_p(&counts, margin)?;
    // One-sided level alpha/k (Holm's first step) = two-sided 2·alpha/k for the MDE formula.
    let mde_at = |psi: f64| {
        stats::minimum_detectable_effect(
            n,
            psi,
            (2.0 * config.alpha / k_tasks as f64).min(0.999),
            config.power,
        )
    };
    let mde = if counts.discordant() == 0 {
        None
    } else {
        Some(mde_at(counts.discordant() as f64 / n as f64)?)
    };
    let detectable_effect = match mde {
        Some(m) => m,
        // No discordant pair in n: the rate is below 1 − 0.05^(1/n) with 95% confidence.
        None => mde_at(1.0 - 0.05f64.powf(1.0 / n as f64))?,
    };
    Ok(AccuracyCheck {
        baseline_accuracy: (counts.both + counts.only_second) as f64 / n as f64,
        candidate_accuracy: (counts.both + counts.only_first) as f64 / n as f64,
        mcnemar: stats::mcnemar_exact(&counts),
        counts,
        delta,
        margin,
        upper_bound,
        p_value,
        p_holm: p_value,
        minimum_detectable_effect: mde,
        detectable_effect,
    })
}

pub(super) fn accuracy_status(a: AccuracyCheck, config: &GateConfig, task: &str) -> Check {
    let max_drop = config.max_drop_for(task);
    let regression = a.p_holm <= config.alpha;
    let underpowered =
        !regression && max_drop > 0.0 && a.minimum_detectable_effect.is_some_and(|m| m > a.margin);
    let status = if regression {
        Status::Regression
    } else if underpowered {
        Status::Underpowered
    } else {
        Status::Pass
    };
    let mde = match a.minimum_detectable_effect {
        Some(m) => format!("MDE {:.2}", 100.0 * m),
        None => "MDE n/a (no discordant pairs)".into(),
    };
    let message = format!(
        "{:.1} → {:.1}: Δ {:+.1} [{:+.1}, {:+.1}] points, McNemar p = {}, drop > {max_drop} points: p = {} (Holm {}), {mde}{}",
        100.0 * a.baseline_accuracy,
        100.0 * a.candidate_accuracy,
        100.0 * a.delta.estimate,
        100.0 * a.delta.low,
        100.0 * a.delta.high,
        stats::format_p(a.mcnemar.p_value),
        stats::format_p(a.p_value),
        stats::format_p(a.p_holm),
        match status {
            Status::Regression => format!(
                "; the candidate is worse by more than {max_drop} points at α = {}",
                config.alpha
            ),
            Status::Underpowered => format!(
                "; {} questions cannot show a {max_drop}-point drop (MDE > max_drop)",
                a.counts.n()
            ),
            _ => String::new(),
        }
    );
    Check {
        name: "accuracy".into(),
        status,
        message,
        accuracy: Some(a),
        telemetry: None,
        fairness: None,
    }
}

/// The change in one field's max−min accuracy gap, candidate − baseline. The bootstrap is
/// paired and within groups: each group's questions are resampled together for both runs,
/// which is a multinomial draw of the group's (both right, only candidate, only baseline,
/// neither) counts (see `docs/statistics.md`, count-level resampling).
pub(super) fn fairness_check(
    pairs: &[(bool, bool, &Prediction)],
    field: &str,
    min_group: usize,
    tolerance: f64,
    level: f64,
    bootstrap: BootstrapConfig,
) -> Result<Check> {
    let labels: Vec<&str> = pairs
        .iter()
        .map(|p| p.2.groups.get(field).map(String::as_str).unwrap_or(""))
        .collect();
    let grouping = group_by(&[(field, labels.as_slice())])?;
    let opts = FairnessOptions {
        min_group_size: min_group,
        bootstrap,
    };
    let base_correct: Vec<bool> = pairs.iter().map(|p| p.0).collect();
    let cand_correct: Vec<bool> = pairs.iter().map(|p| p.1).collect();
    let gap_of = |correct: &[bool], salt: u64| -> Result<fairness::Measure> {
        let o = FairnessOptions {
            bootstrap: bootstrap.salted(salt),
            ..opts
        };
        let groups = group_accuracy(correct, &grouping, &o)?;
        let measures = accuracy_disparities(&groups, &o)?;
        measures
            .into_iter()
            .find(|m| m.name == "difference_between_groups")
            .ok_or_else(|| anyhow::anyhow!("fairness measures lack difference_between_groups"))
    };
    let baseline_gap = gap_of(&base_correct, 1)?;
    let candidate_gap = gap_of(&cand_correct, 2)?;
    let change = paired_gap_change(
        &base_correct,
        &cand_correct,
        &grouping,
        min_group,
        &bootstrap,
    );
    let n_eligible = change.eligible_groups;
    let mut check = FairnessCheck {
        field: field.to_string(),
        min_group,
        groups: n_eligible,
        baseline_gap,
        candidate_gap,
        delta: None,
        delta_low: None,
        delta_high: None,
        lower_bound: None,
        tolerance: 100.0 * tolerance,
    };
    if n_eligible < 2 {
        return Ok(Check {
            name: format!("fairness:{field}"),
            status: Status::NotApplicable,
            message: format!(
                "fewer than two groups of {field} have at least {min_group} shared questions ({} groups in all)",
                grouping.keys.len()
            ),
            accuracy: None,
            telemetry: None,
            fairness: Some(check),
        });
    }
    let (point, reps) = (change.delta, change.replicates);
    check.delta = Some(point);
    check.delta_low = Some(quantile_sorted(&reps, 0.025));
    check.delta_high = Some(quantile_sorted(&reps, 0.975));
    let lower = quantile_sorted(&reps, level);
    check.lower_bound = Some(lower);
    let status = if lower > tolerance {
        Status::Regression
    } else {
        Status::Pass
    };
    let fmt_gap = |m: &fairness::Measure| {
        m.estimate
            .map(|e| format!("{:.1}", 100.0 * e))
            .unwrap_or_else(|| "—".into())
    };
    let message = format!(
        "max−min gap over {n_eligible} groups {} → {}: Δ {:+.1} [{:+.1}, {:+.1}] points; one-sided lower bound {:+.1} vs tolerance {:.1}",
        fmt_gap(&check.baseline_gap),
        fmt_gap(&check.candidate_gap),
        100.0 * point,
        100.0 * check.delta_low.unwrap_or(f64::NAN),
        100.0 * check.delta_high.unwrap_or(f64::NAN),
        100.0 * lower,
        100.0 * tolerance
    );
    Ok(Check {
        name: format!("fairness:{field}"),
        status,
        message,
        accuracy: None,
        telemetry: None,
        fairness: Some(check),
    })
}

/// The p95 end-to-end latency of a telemetry summary (`e2e_ms.p95`), with the path read.
pub fn p95_latency(telemetry: Option<&Telemetry>) -> Option<(String, f64)> {
    let p95 = telemetry?.e2e_ms.as_ref()?.p95;
    Some(("e2e_ms.p95".into(), p95))
}

/// Peak VRAM in bytes (`memory.peak_vram_bytes`), with the path read.
pub fn peak_vram(memory: Option<&Resources>) -> Option<(String, f64)> {
    let bytes = memory?.peak_vram_bytes?;
    Some(("peak_vram_bytes".into(), bytes as f64))
}

/// Compare one telemetry figure of the two runs; a missing or zero baseline is "not measured",
/// never a failure.
pub(super) fn telemetry_check(
    name: &str,
    b: Option<(String, f64)>,
    c: Option<(String, f64)>,
    tol: f64,
    unit: &str,
) -> Check {
    let mut t = TelemetryCheck {
        source: b
            .as_ref()
            .or(c.as_ref())
            .map(|x| format!("telemetry.{}", x.0)),
        baseline: b.as_ref().map(|x| x.1),
        candidate: c.as_ref().map(|x| x.1),
        relative_change: None,
        tolerance: tol,
    };
    let (status, message) = match (&b, &c) {
        (Some((_, bv)), Some((_, cv))) if *bv > 0.0 && bv.is_finite() && cv.is_finite() => {
            let rel = cv / bv - 1.0;
            t.relative_change = Some(rel);
            let status = if rel > tol {
                Status::Regression
            } else {
                Status::Pass
            };
            let fmt = |v: f64| {
                if unit == "bytes" {
                    format!("{:.2} GiB", v / (1u64 << 30) as f64)
                } else {
                    format!("{v:.2} {unit}")
                }
            };
            (
                status,
                format!(
                    "{} {} → {} ({:+.1}%, tolerance +{:.1}%)",
                    t.source.as_deref().unwrap_or(name),
                    fmt(*bv),
                    fmt(*cv),
                    100.0 * rel,
                    100.0 * tol
                ),
            )
        }
        (Some(_), Some(_)) => (
            Status::NotMeasured,
            "the baseline value is zero or not finite; no relative change".to_string(),
        ),
        _ => (
            Status::NotMeasured,
            format!(
                "not measured in {}",
                match (&b, &c) {
                    (None, None) => "either run",
                    (None, _) => "the baseline",
                    _ => "the candidate",
                }
            ),
        ),
    };
    Check {
        name: name.to_string(),
        status,
        message,
        accuracy: None,
        telemetry: Some(t),
        fairness: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_is_read_through_the_schema() {
        let telemetry = |v: serde_json::Value| serde_json::from_value::<Telemetry>(v).unwrap();
        let memory = |v: serde_json::Value| serde_json::from_value::<Resources>(v).unwrap();
        let v = telemetry(serde_json::json!({"e2e_ms": {"p50": 10.0, "p95": 20.0}}));
        let m = memory(serde_json::json!({"peak_vram_bytes": 1_000_000_000u64}));
        assert_eq!(p95_latency(Some(&v)), Some(("e2e_ms.p95".into(), 20.0)));
        assert_eq!(peak_vram(Some(&m)), Some(("peak_vram_bytes".into(), 1e9)));
        // Other tools' spellings are serde aliases of `e2e_ms`.
        let other = telemetry(serde_json::json!({"latency_ms": {"p95": 9.0}}));
        assert_eq!(p95_latency(Some(&other)), Some(("e2e_ms.p95".into(), 9.0)));
        assert_eq!(
            p95_latency(Some(&telemetry(serde_json::json!({"n": 3})))),
            None
        );
        let none = telemetry_check("latency_p95", p95_latency(Some(&v)), None, 0.1, "ms");
        assert_eq!(none.status, Status::NotMeasured);
        let slower = telemetry(serde_json::json!({"e2e_ms": {"p95": 30.0}}));
        let lat = telemetry_check(
            "latency_p95",
            p95_latency(Some(&v)),
            p95_latency(Some(&slower)),
            0.1,
            "ms",
        );
        assert_eq!(lat.status, Status::Regression);
        let mem = telemetry_check(
            "peak_vram",
            peak_vram(Some(&m)),
            peak_vram(Some(&m)),
            0.05,
            "bytes",
        );
        assert_eq!(mem.status, Status::Pass);
    }
}
