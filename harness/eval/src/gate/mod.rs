//! `faceval gate`: decide whether a candidate run regressed against a baseline run.
//!
//! The two runs are compared on the questions they share (key: task, id, rotation,
//! variant; only variant 0, the task's own phrasing, is gated). Shared questions must have
//! been asked with the same bytes (`prompt_sha256`) of the same task (version and
//! fingerprint); anything else is an input error, not a comparison.
//!
//! A candidate cannot pass by leaving things out: questions the baseline answered that the
//! candidate lacks, or a candidate run that never finished, make it `incomplete` (unless
//! partial runs are allowed), and a candidate `error` on a question the baseline answered
//! counts as a wrong answer, never as a question left out, besides failing the `errors`
//! check when there are more than `max_new_errors` of them.
//!
//! Per task the gate checks accuracy (paired: Newcombe's interval, exact McNemar, a one-sided
//! non-inferiority test with margin `max_drop` whose p-values are Holm-adjusted across tasks,
//! and the minimum detectable effect at the current n), the fairness gap of each group field
//! (a paired within-group count bootstrap of the change in the max−min accuracy gap), and
//! p95 latency and peak VRAM from `metrics.json`'s `telemetry` when both runs have it.
//! The decision rule is documented precisely in `docs/gate.md`; the statistics all come
//! from [`crate::stats`] and [`crate::fairness`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::input_error;
use crate::fairness::{
    self, accuracy_disparities, group_accuracy, group_by, paired_gap_change, FairnessOptions,
};
use crate::run_folder::{
    read_metrics_telemetry, same_task, LoadedRun, MetricsTelemetry, Outcome, Prediction, Resources,
    TaskRecord, Telemetry,
};
use crate::stats::quantile_sorted;
use crate::stats::{self, BootstrapConfig, Interval, McNemar, PairedCounts};

mod checks;
mod config;
mod pairing;

use checks::*;
pub use checks::{p95_latency, peak_vram};
pub use config::{GateConfig, TaskOverride};
use pairing::*;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// The candidate is worse beyond the tolerance (exit 1).
    Regression,
    /// The test set is too small to see `max_drop` (warns, or fails with
    /// `fail_on_underpowered`).
    Underpowered,
    /// One of the runs has no measurement (never a failure).
    NotMeasured,
    /// The check does not apply (a numeric task without bins has no accuracy, a task with
    /// fewer than two large groups has no gap).
    NotApplicable,
    /// The candidate lacks questions the baseline answered, or its run did not finish
    /// (exit 1; a warning when partial runs are allowed).
    Incomplete,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Regression => "regression",
            Status::Underpowered => "underpowered",
            Status::NotMeasured => "not measured",
            Status::NotApplicable => "not applicable",
            Status::Incomplete => "incomplete",
        }
    }
}

/// The paired accuracy comparison of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyCheck {
    /// Candidate-correct/baseline-correct table: `only_first` = only the candidate right.
    pub counts: PairedCounts,
    pub baseline_accuracy: f64,
    pub candidate_accuracy: f64,
    /// Candidate − baseline with Newcombe's two-sided 95% interval.
    pub delta: Interval,
    /// Two-sided exact McNemar test (p = 1 without discordant pairs).
    pub mcnemar: McNemar,
    /// Margin of the one-sided test, as a proportion (`max_drop` / 100).
    pub margin: f64,
    /// Upper limit of the one-sided (1 − alpha) Newcombe bound for candidate − baseline.
    pub upper_bound: f64,
    /// One-sided p-value of H0: delta ≥ −margin (test inversion of Newcombe's interval).
    pub p_value: f64,
    /// `p_value` after Holm adjustment across the gated tasks.
    pub p_holm: f64,
    /// Smallest true difference the test detects with `power`, at one-sided level
    /// alpha / (tasks gated); `None` without discordant pairs.
    pub minimum_detectable_effect: Option<f64>,
    /// The MDE behind the power statement: `minimum_detectable_effect`, or without
    /// discordant pairs the MDE at the one-sided 95% upper bound of the discordance rate
    /// (1 − 0.05^(1/n)), so that the statement is an upper bound rather than missing.
    pub detectable_effect: f64,
}

/// p95 latency or peak VRAM of the two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryCheck {
    /// Where in metrics.json the value was read (`telemetry.e2e_ms.p95`, ...).
    pub source: Option<String>,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// candidate / baseline − 1.
    pub relative_change: Option<f64>,
    pub tolerance: f64,
}

/// The change in the max−min accuracy gap between groups of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessCheck {
    pub field: String,
    pub min_group: usize,
    /// Groups with n ≥ min_group on the shared questions.
    pub groups: usize,
    /// fairlearn `difference(between_groups)` of each run with its bootstrap interval.
    pub baseline_gap: fairness::Measure,
    pub candidate_gap: fairness::Measure,
    /// Candidate gap − baseline gap, with the paired bootstrap's two-sided 95% interval.
    pub delta: Option<f64>,
    pub delta_low: Option<f64>,
    pub delta_high: Option<f64>,
    /// One-sided lower bound at level alpha / (fairness checks), which must exceed the
    /// tolerance for a regression.
    pub lower_bound: Option<f64>,
    /// In points.
    pub tolerance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `accuracy`, `latency_p95`, `peak_vram`, `fairness:<field>`.
    pub name: String,
    pub status: Status,
    /// One readable line with the figures behind the status.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness: Option<FairnessCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskGate {
    pub task: String,
    pub version: String,
    /// Questions (lines) both runs have.
    pub shared: usize,
    pub baseline_only: usize,
    pub candidate_only: usize,
    /// Questions (lines) the baseline answered (not `error`) that the candidate lacks.
    pub missing: usize,
    /// Shared questions left out of the pairing: an error in the baseline (whatever the
    /// candidate did). `errors_in_both` + `baseline_errors`.
    pub excluded_errors: usize,
    /// Questions (circular: items) where the candidate has an error and the baseline an
    /// answer; they count as wrong in the accuracy comparison.
    pub new_errors: usize,
    /// Of `new_errors`, the ones the baseline got right.
    pub new_errors_baseline_right: usize,
    /// Questions that are errors in both runs: reported, not counted against the candidate.
    pub errors_in_both: usize,
    /// Questions that are errors in the baseline only: they cannot be paired.
    pub baseline_errors: usize,
    /// Paired scored questions (circular: items), candidate errors included as wrong.
    pub n: usize,
    /// The smallest true accuracy drop, in points, that this comparison flags with
    /// `power` (`max_drop` + MDE); `None` without an accuracy to compare. When no pair is
    /// discordant the MDE uses the one-sided 95% upper bound of the discordance rate, so
    /// the figure is an upper bound.
    pub detectable_drop: Option<f64>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRef {
    pub run: String,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub baseline: RunRef,
    pub candidate: RunRef,
    pub config: GateConfig,
    pub tasks: Vec<TaskGate>,
    /// Checks on run-level telemetry (when metrics.json has no per-task telemetry).
    pub run_checks: Vec<Check>,
    /// Checks that fail the gate.
    pub failures: usize,
    /// Checks that only warn (underpowered, or incomplete with partial runs allowed).
    pub warnings: usize,
    pub passed: bool,
    /// One sentence: the smallest drop this comparison could have detected, per task.
    pub power: String,
    /// Warnings that do not change the exit code, e.g. that the two runs look like the same
    /// model (see [`SameOutputs`]).
    pub notices: Vec<String>,
    /// Raw outputs of the two runs compared byte for byte on the questions both answered.
    pub same_outputs: SameOutputs,
}

/// How many raw outputs the two runs share byte for byte. Different models rarely agree on
/// 99% of their outputs; when they do, the likely cause is the same server answering both
/// runs, or a stale response cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SameOutputs {
    /// Shared questions answered (not `error`) in both runs.
    pub compared: usize,
    pub identical: usize,
    /// The runs' model fingerprints (manifest and weights) differ.
    pub different_models: bool,
    /// `different_models` and at least [`SUSPECT_SAME_SHARE`] of `compared` identical.
    pub suspect: bool,
}

/// Share of byte-identical raw outputs above which two different models look like one.
pub const SUSPECT_SAME_SHARE: f64 = 0.99;

impl GateReport {
    /// Every check with the task it belongs to (`None` for run-level checks).
    pub fn all_checks(&self) -> impl Iterator<Item = (Option<&str>, &Check)> {
        self.tasks
            .iter()
            .flat_map(|t| t.checks.iter().map(move |c| (Some(t.task.as_str()), c)))
            .chain(self.run_checks.iter().map(|c| (None, c)))
    }

    pub fn fails(&self, check: &Check) -> bool {
        match check.status {
            Status::Regression => true,
            Status::Underpowered => self.config.fail_on_underpowered,
            Status::Incomplete => self.config.require_complete,
            _ => false,
        }
    }

    /// A check that is reported as a warning: it did not pass but does not fail the gate.
    pub fn warns(&self, check: &Check) -> bool {
        matches!(check.status, Status::Underpowered | Status::Incomplete) && !self.fails(check)
    }
}

/// Gate two run folders.
pub fn gate_dirs(baseline: &Path, candidate: &Path, config: &GateConfig) -> Result<GateReport> {
    let base = LoadedRun::load(baseline)?;
    let cand = LoadedRun::load(candidate)?;
    let base_telemetry = metrics_telemetry(&base);
    let cand_telemetry = metrics_telemetry(&cand);
    gate(&base, &cand, &base_telemetry, &cand_telemetry, config)
}

/// The timing parts of `metrics.json`. When the file is missing or unreadable, they are
/// recomputed from the predictions with the same functions `metrics::compute` uses
/// (`telemetry::from_predictions` per task and overall, peak memory from the manifest);
/// the gate takes accuracy from the paired predictions, so it skips the metrics' bootstraps,
/// which dominate `metrics::read_or_compute` on large runs.
fn metrics_telemetry(run: &LoadedRun) -> MetricsTelemetry {
    if let Some(t) = read_metrics_telemetry(&run.dir) {
        return t;
    }
    let by_task = run.by_task();
    let tasks = run
        .manifest
        .tasks
        .iter()
        .filter_map(|t| {
            let preds = by_task.get(t.name.as_str())?;
            let telemetry = crate::telemetry::from_predictions(preds.iter().copied())?;
            Some((t.name.clone(), telemetry))
        })
        .collect();
    let overall = crate::telemetry::from_predictions(
        run.predictions
            .iter()
            .filter(|p| run.manifest.tasks.iter().any(|t| t.name == p.task)),
    );
    MetricsTelemetry {
        run: Some(crate::run_folder::RunTelemetry {
            overall,
            memory: run.manifest.resources.clone(),
            ..Default::default()
        }),
        tasks,
    }
}

/// Byte-identical raw outputs on the questions both runs answered.
fn same_outputs(shared: &[Shared], base: &LoadedRun, cand: &LoadedRun) -> SameOutputs {
    let (mut compared, mut identical) = (0, 0);
    for s in shared {
        for (b, c) in s.base.iter().zip(&s.cand) {
            if b.outcome != Outcome::Error && c.outcome != Outcome::Error {
                compared += 1;
                identical += usize::from(b.raw_output == c.raw_output);
            }
        }
    }
    let (bm, cm) = (&base.manifest.model, &cand.manifest.model);
    let different_models =
        bm.fingerprint != cm.fingerprint || bm.weights_sha256 != cm.weights_sha256;
    SameOutputs {
        compared,
        identical,
        different_models,
        suspect: different_models
            && compared > 0
            && identical as f64 >= SUSPECT_SAME_SHARE * compared as f64,
    }
}

/// The one-sentence power statement over the tasks' detectable drops.
fn power_sentence(tasks: &[TaskGate], config: &GateConfig) -> String {
    let parts: Vec<String> = tasks
        .iter()
        .filter_map(|t| {
            t.detectable_drop
                .map(|d| format!("{} {:.1} points (n = {})", t.task, d, t.n))
        })
        .collect();
    if parts.is_empty() {
        return "No task has an accuracy to compare, so this comparison cannot detect an accuracy drop.".into();
    }
    format!(
        "The smallest true accuracy drop this comparison detects with {:.0}% power (one-sided α = {}, Holm across {} tasks) is: {}.",
        100.0 * config.power,
        config.alpha,
        parts.len(),
        parts.join("; ")
    )
}

/// Gate loaded runs; `*_metrics` are their metrics.json documents (for telemetry).
pub fn gate(
    base: &LoadedRun,
    cand: &LoadedRun,
    base_metrics: &MetricsTelemetry,
    cand_metrics: &MetricsTelemetry,
    config: &GateConfig,
) -> Result<GateReport> {
    let (records, missing_tasks) = gated_tasks(base, cand, config)?;
    let names: Vec<&str> = records.iter().map(|(b, _)| b.name.as_str()).collect();
    let base_by = base.by_task();
    let cand_by = cand.by_task();
    let empty = Vec::new();
    let shared: Vec<Shared> = records
        .iter()
        .map(|(b, c)| {
            match_task(
                b,
                c,
                base_by.get(b.name.as_str()).unwrap_or(&empty),
                cand_by.get(b.name.as_str()).unwrap_or(&empty),
                (&base.dir, &cand.dir),
            )
        })
        .collect::<Result<_>>()?;
    let (mut tasks, paired_items) = accuracy_checks(&shared, config)?;
    fairness_checks(&mut tasks, &shared, &paired_items, base, config)?;
    let mut run_checks =
        latency_and_memory_checks(&mut tasks, &names, base_metrics, cand_metrics, config);
    run_checks.insert(0, run_completeness_check(cand, &missing_tasks, config));
    let same = same_outputs(&shared, base, cand);
    let mut notices = Vec::new();
    if same.suspect {
        notices.push(format!(
            "The two runs come from different models (their fingerprints differ) but {} of {} raw outputs are byte-identical. \
             Likely causes: both runs were answered by the same server (the old checkpoint still being served), or by a stale \
             response cache (set `revision` in the candidate's model manifest, or its `cache_dir = \"off\"`, and rerun it).",
            same.identical, same.compared
        ));
    }
    let power = power_sentence(&tasks, config);
    let mut report = GateReport {
        baseline: RunRef {
            run: base.dir.display().to_string(),
            model: base.manifest.model.name.clone(),
        },
        candidate: RunRef {
            run: cand.dir.display().to_string(),
            model: cand.manifest.model.name.clone(),
        },
        config: config.clone(),
        tasks,
        run_checks,
        failures: 0,
        warnings: 0,
        passed: true,
        power,
        notices,
        same_outputs: same,
    };
    tally(&mut report);
    Ok(report)
}

/// The tasks both runs have that the config gates, in baseline order (each as the baseline's
/// and the candidate's record), and the gated tasks
/// the candidate lacks. Errors when the config names a task not in both runs, or when the
/// runs share no task.
#[allow(clippy::type_complexity)]
fn gated_tasks<'a>(
    base: &'a LoadedRun,
    cand: &'a LoadedRun,
    config: &GateConfig,
) -> Result<(Vec<(&'a TaskRecord, &'a TaskRecord)>, Vec<&'a str>)> {
    let base_tasks: BTreeMap<&str, &TaskRecord> = base
        .manifest
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let cand_tasks: BTreeMap<&str, &TaskRecord> = cand
        .manifest
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let list = |m: &BTreeMap<&str, &TaskRecord>| m.keys().copied().collect::<Vec<_>>().join(", ");
    for name in config.tasks.iter().chain(config.task.keys()) {
        if !base_tasks.contains_key(name.as_str()) || !cand_tasks.contains_key(name.as_str()) {
            return Err(input_error(format!(
                "gate config names task {name}, which is not in both runs (baseline: {}; candidate: {})",
                list(&base_tasks),
                list(&cand_tasks)
            )));
        }
    }
    let gated = |n: &&str| config.tasks.is_empty() || config.tasks.iter().any(|t| t == n);
    // Baseline order, for a stable report.
    let names: Vec<&str> = base
        .manifest
        .tasks
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| cand_tasks.contains_key(n))
        .filter(gated)
        .collect();
    let missing_tasks: Vec<&str> = base
        .manifest
        .tasks
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !cand_tasks.contains_key(n))
        .filter(gated)
        .collect();
    if names.is_empty() {
        return Err(input_error(format!(
            "the runs share no task, so there is nothing to compare (baseline {}: {}; candidate {}: {})",
            base.dir.display(),
            list(&base_tasks),
            cand.dir.display(),
            list(&cand_tasks)
        )));
    }
    let records = names
        .iter()
        .map(|n| (base_tasks[n], cand_tasks[n]))
        .collect();
    Ok((records, missing_tasks))
}

/// Per task: completeness, new errors and accuracy (one-sided tests, Holm across tasks).
/// Returns the tasks' reports and each task's paired questions, which the fairness checks
/// reuse.
#[allow(clippy::type_complexity)]
fn accuracy_checks<'a>(
    shared: &[Shared<'a>],
    config: &GateConfig,
) -> Result<(Vec<TaskGate>, Vec<Vec<(bool, bool, &'a Prediction)>>)> {
    let k_tasks = shared.len();
    let mut tasks: Vec<TaskGate> = Vec::new();
    let mut acc_checks: Vec<Option<AccuracyCheck>> = Vec::new();
    let mut paired_items: Vec<Vec<(bool, bool, &Prediction)>> = Vec::new();
    for s in shared {
        let pairing = pair_units(&units(s));
        let numeric = s.record.style == "numeric";
        let has_correctness = !numeric
            || s.base.iter().any(|p| p.correct.is_some())
            || s.cand.iter().any(|p| p.correct.is_some());
        let acc = if has_correctness && !pairing.pairs.is_empty() {
            let cand_correct: Vec<bool> = pairing.pairs.iter().map(|p| p.1).collect();
            let base_correct: Vec<bool> = pairing.pairs.iter().map(|p| p.0).collect();
            Some(accuracy_check(
                &cand_correct,
                &base_correct,
                config.max_drop_for(&s.record.name) / 100.0,
                config,
                k_tasks,
            )?)
        } else {
            None
        };
        let mut checks = vec![completeness_check(s, config)];
        checks.push(errors_check(
            &pairing,
            config.max_new_errors_for(&s.record.name),
        ));
        tasks.push(TaskGate {
            task: s.record.name.clone(),
            version: s.record.version.clone(),
            shared: s.base.len(),
            baseline_only: s.baseline_only,
            candidate_only: s.candidate_only,
            missing: s.missing.len(),
            excluded_errors: pairing.errors_in_both + pairing.baseline_errors,
            new_errors: pairing.new_errors,
            new_errors_baseline_right: pairing.new_errors_baseline_right,
            errors_in_both: pairing.errors_in_both,
            baseline_errors: pairing.baseline_errors,
            n: pairing.pairs.len(),
            detectable_drop: acc
                .as_ref()
                .map(|a| 100.0 * (a.margin + a.detectable_effect)),
            checks,
        });
        acc_checks.push(acc);
        paired_items.push(pairing.pairs);
    }
    let defined: Vec<(usize, f64)> = acc_checks
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.as_ref().map(|a| (i, a.p_value)))
        .collect();
    let adjusted = stats::holm(&defined.iter().map(|d| d.1).collect::<Vec<_>>())?;
    for ((i, _), p) in defined.iter().zip(adjusted) {
        if let Some(a) = acc_checks[*i].as_mut() {
            a.p_holm = p;
        }
    }
    for ((t, acc), s) in tasks.iter_mut().zip(acc_checks).zip(shared) {
        t.checks.push(match acc {
            Some(a) => accuracy_status(a, config, &s.record.name),
            None => check(
                "accuracy",
                Status::NotApplicable,
                if t.n == 0 {
                    "no shared question was scored in both runs".into()
                } else {
                    "numeric task without bins: no accuracy to compare".into()
                },
            ),
        });
    }

    Ok((tasks, paired_items))
}

/// Per task and group field: the change of the max−min accuracy gap, Bonferroni across all
/// fairness checks of the gate.
fn fairness_checks(
    tasks: &mut [TaskGate],
    shared: &[Shared],
    paired_items: &[Vec<(bool, bool, &Prediction)>],
    base: &LoadedRun,
    config: &GateConfig,
) -> Result<()> {
    let mut plans: Vec<(usize, String, usize)> = Vec::new();
    for (ti, s) in shared.iter().enumerate() {
        let fields = config
            .task
            .get(&s.record.name)
            .and_then(|o| o.fairness_fields.clone())
            .or_else(|| config.fairness_fields.clone())
            .unwrap_or_else(|| s.record.groups.clone());
        let present: BTreeSet<&str> = paired_items[ti]
            .iter()
            .flat_map(|p| p.2.groups.keys().map(String::as_str))
            .collect();
        let min_group = config
            .min_group
            .or_else(|| crate::task::recorded_min_group(s.record, &base.dir))
            .unwrap_or(fairness::DEFAULT_MIN_GROUP_SIZE);
        for f in fields {
            if present.contains(f.as_str()) {
                plans.push((ti, f, min_group));
            } else if config.fairness_fields.is_some() {
                tasks[ti].checks.push(Check {
                    name: format!("fairness:{f}"),
                    status: Status::NotApplicable,
                    message: format!(
                        "the shared questions carry no group field {f} (they have: {})",
                        present.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                    accuracy: None,
                    telemetry: None,
                    fairness: None,
                });
            }
        }
    }
    let level = config.alpha / plans.len().max(1) as f64;
    let fairness_checks: Vec<Check> = plans
        .par_iter()
        .enumerate()
        .map(|(i, (ti, field, min_group))| {
            let name = &shared[*ti].record.name;
            fairness_check(
                &paired_items[*ti],
                field,
                *min_group,
                config.fairness_tolerance_for(name) / 100.0,
                level,
                BootstrapConfig {
                    resamples: config.resamples,
                    confidence: 0.95,
                    seed: base.manifest.seed,
                }
                .salted(i as u64 + 1),
            )
        })
        .collect::<Result<_>>()?;
    for ((ti, _, _), c) in plans.iter().zip(fairness_checks) {
        tasks[*ti].checks.push(c);
    }

    Ok(())
}

/// Telemetry (docs/telemetry.md): p95 latency per task from the task's telemetry
/// ([`MetricsTelemetry::task`]: `tasks.<name>.telemetry` or `telemetry.tasks.<name>`) when
/// either run has it, else once from the run's `telemetry.overall`; peak VRAM once from
/// `telemetry.memory`. Per-task checks go into `tasks`; the run's checks are returned.
fn latency_and_memory_checks(
    tasks: &mut [TaskGate],
    names: &[&str],
    base_metrics: &MetricsTelemetry,
    cand_metrics: &MetricsTelemetry,
    config: &GateConfig,
) -> Vec<Check> {
    let mut run_checks = Vec::new();
    let per_task = names.iter().any(|n| {
        p95_latency(base_metrics.task(n)).is_some() || p95_latency(cand_metrics.task(n)).is_some()
    });
    if per_task {
        for t in tasks.iter_mut() {
            t.checks.push(telemetry_check(
                "latency_p95",
                p95_latency(base_metrics.task(&t.task)),
                p95_latency(cand_metrics.task(&t.task)),
                config.latency_tolerance,
                "ms",
            ));
        }
    } else {
        run_checks.push(telemetry_check(
            "latency_p95",
            p95_latency(base_metrics.overall()),
            p95_latency(cand_metrics.overall()),
            config.latency_tolerance,
            "ms",
        ));
    }
    run_checks.push(telemetry_check(
        "peak_vram",
        peak_vram(base_metrics.memory()),
        peak_vram(cand_metrics.memory()),
        config.vram_tolerance,
        "bytes",
    ));

    run_checks
}

/// Count failing and warning checks and decide.
fn tally(report: &mut GateReport) {
    let (mut failures, mut warnings) = (0, 0);
    for (_, c) in report.all_checks() {
        if report.fails(c) {
            failures += 1;
        } else if report.warns(c) {
            warnings += 1;
        }
    }
    report.failures = failures;
    report.warnings = warnings;
    report.passed = failures == 0;
}
