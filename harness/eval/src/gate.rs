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

/// `gate.toml`. Every key is optional; unknown keys are an error that names the key and
/// lists the valid ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Largest tolerated accuracy drop, in percentage points.
    #[serde(default = "default_max_drop")]
    pub max_drop: f64,
    /// Family-wise significance level of the one-sided accuracy tests (Holm across tasks)
    /// and of the fairness checks (Bonferroni across them).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Power for the minimum detectable effect.
    #[serde(default = "default_power")]
    pub power: f64,
    /// Fail (exit 1) instead of warning when a task's test set is too small to see `max_drop`.
    #[serde(default)]
    pub fail_on_underpowered: bool,
    /// Fail (exit 1, status `incomplete`) when the candidate lacks questions the baseline
    /// answered or did not finish; `false` (`--allow-partial`) compares the shared questions
    /// and only warns.
    #[serde(default = "default_true")]
    pub require_complete: bool,
    /// Candidate errors tolerated per task on questions where the baseline had none.
    #[serde(default)]
    pub max_new_errors: usize,
    /// Relative p95 latency increase tolerated (0.10 = 10%).
    #[serde(default = "default_latency_tolerance")]
    pub latency_tolerance: f64,
    /// Relative peak VRAM increase tolerated.
    #[serde(default = "default_vram_tolerance")]
    pub vram_tolerance: f64,
    /// Increase of the max−min accuracy gap between groups tolerated, in points.
    #[serde(default = "default_fairness_tolerance")]
    pub fairness_tolerance: f64,
    /// Group fields for the fairness check; default: each task record's `groups`.
    #[serde(default)]
    pub fairness_fields: Option<Vec<String>>,
    /// Minimum group size for the fairness check; default: the task's, else 30.
    #[serde(default)]
    pub min_group: Option<usize>,
    /// Bootstrap resamples for the fairness check.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// Gate only these tasks (default: every task both runs have).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Per-task overrides: `[task.expression-rafdb] max_drop = 2.0`.
    #[serde(default)]
    pub task: BTreeMap<String, TaskOverride>,
}

/// Per-task settings that replace the global ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskOverride {
    pub max_drop: Option<f64>,
    pub fairness_tolerance: Option<f64>,
    pub fairness_fields: Option<Vec<String>>,
    pub max_new_errors: Option<usize>,
}

fn default_true() -> bool {
    true
}
fn default_max_drop() -> f64 {
    1.0
}
fn default_alpha() -> f64 {
    0.05
}
fn default_power() -> f64 {
    0.8
}
fn default_latency_tolerance() -> f64 {
    0.10
}
fn default_vram_tolerance() -> f64 {
    0.05
}
fn default_fairness_tolerance() -> f64 {
    5.0
}
fn default_resamples() -> usize {
    2000
}

impl Default for GateConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

impl GateConfig {
    /// Parse and check `gate.toml`; `path` names the file in messages.
    pub fn parse(text: &str, path: &Path) -> Result<GateConfig> {
        let config: GateConfig = toml::from_str(text).map_err(|e| {
            input_error(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        config.check(path)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<GateConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| input_error(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad =
            |key: &str, why: &str| Err(input_error(format!("{}: {key} {why}", path.display())));
        let drops = std::iter::once(("max_drop".to_string(), self.max_drop)).chain(
            self.task
                .iter()
                .filter_map(|(t, o)| Some((format!("task.{t}.max_drop"), o.max_drop?))),
        );
        for (key, v) in drops {
            if !(0.0..100.0).contains(&v) {
                return bad(&key, &format!("must be in [0, 100) points, got {v}"));
            }
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return bad("alpha", &format!("must be in (0, 0.5), got {}", self.alpha));
        }
        if !(self.power > 0.0 && self.power < 1.0) {
            return bad("power", &format!("must be in (0, 1), got {}", self.power));
        }
        let tolerances = [
            ("latency_tolerance", self.latency_tolerance),
            ("vram_tolerance", self.vram_tolerance),
            ("fairness_tolerance", self.fairness_tolerance),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.task.iter().filter_map(|(t, o)| {
            Some((
                format!("task.{t}.fairness_tolerance"),
                o.fairness_tolerance?,
            ))
        }));
        for (key, v) in tolerances {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(&key, &format!("must be a number ≥ 0, got {v}"));
            }
        }
        if self.resamples < 100 {
            return bad(
                "resamples",
                &format!("must be at least 100, got {}", self.resamples),
            );
        }
        if self.min_group == Some(0) {
            return bad("min_group", "must be at least 1");
        }
        Ok(())
    }

    fn max_drop_for(&self, task: &str) -> f64 {
        self.task
            .get(task)
            .and_then(|o| o.max_drop)
            .unwrap_or(self.max_drop)
    }

    fn max_new_errors_for(&self, task: &str) -> usize {
        self.task
            .get(task)
            .and_then(|o| o.max_new_errors)
            .unwrap_or(self.max_new_errors)
    }

    fn fairness_tolerance_for(&self, task: &str) -> f64 {
        self.task
            .get(task)
            .and_then(|o| o.fairness_tolerance)
            .unwrap_or(self.fairness_tolerance)
    }
}

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

/// The shared, comparable part of one task.
struct Shared<'a> {
    record: &'a TaskRecord,
    /// Shared lines, aligned: `base[i]` and `cand[i]` have the same key.
    base: Vec<&'a Prediction>,
    cand: Vec<&'a Prediction>,
    baseline_only: usize,
    candidate_only: usize,
    /// Baseline lines with an answer (not `error`) that the candidate lacks, in file order.
    missing: Vec<&'a Prediction>,
}

fn match_task<'a>(
    record: &'a TaskRecord,
    cand_record: &TaskRecord,
    base: &[&'a Prediction],
    cand: &[&'a Prediction],
    dirs: (&Path, &Path),
) -> Result<Shared<'a>> {
    if !same_task(record, cand_record) {
        return Err(input_error(format!(
            "task {}: the runs used different task definitions (baseline {} has version {}, fingerprint {}…; \
             candidate {} has version {}, fingerprint {}…), so their scores cannot be compared. \
             Rerun the baseline with the current task",
            record.name,
            dirs.0.display(),
            record.version,
            record.short_fingerprint(),
            dirs.1.display(),
            cand_record.version,
            cand_record.short_fingerprint()
        )));
    }
    // The variant is part of the key: a phrasing is only ever paired with the same phrasing
    // (`LoadedRun::by_task` hands the gate variant 0 only; the key keeps that true if not).
    let cand_by_key: HashMap<(&str, usize, usize), &Prediction> = cand
        .iter()
        .map(|p| ((p.id.as_str(), p.rotation, p.variant), *p))
        .collect();
    let mut shared_base = Vec::new();
    let mut shared_cand = Vec::new();
    let mut missing = Vec::new();
    let mut prompt_mismatch = Vec::new();
    for b in base {
        let Some(p) = cand_by_key.get(&(b.id.as_str(), b.rotation, b.variant)) else {
            if b.outcome != Outcome::Error {
                missing.push(*b);
            }
            continue;
        };
        if !b.prompt_sha256.is_empty()
            && !p.prompt_sha256.is_empty()
            && b.prompt_sha256 != p.prompt_sha256
        {
            prompt_mismatch.push(p.id.as_str());
        }
        shared_base.push(*b);
        shared_cand.push(*p);
    }
    if !prompt_mismatch.is_empty() {
        return Err(input_error(format!(
            "task {}: {} shared questions were asked with different prompts (prompt_sha256 differs), e.g. {}; \
             the runs are not comparable",
            record.name,
            prompt_mismatch.len(),
            prompt_mismatch
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // A candidate with no line of the task at all is incomplete (reported as such), not
    // incomparable; ids that never match are.
    if shared_base.is_empty() && !cand.is_empty() {
        return Err(input_error(format!(
            "task {}: the runs share no question (baseline {} has {} predictions, candidate {} has {}); \
             item ids must match to compare",
            record.name,
            dirs.0.display(),
            base.len(),
            dirs.1.display(),
            cand.len()
        )));
    }
    Ok(Shared {
        record,
        baseline_only: base.len() - shared_base.len(),
        candidate_only: cand.len() - shared_cand.len(),
        base: shared_base,
        cand: shared_cand,
        missing,
    })
}

/// How one question ended in one run (a circular question: over its shared rotations, an
/// error when any is one, right only when all are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Right,
    Wrong,
    Error,
}

impl Answer {
    fn of(p: &Prediction) -> Answer {
        match (p.outcome, p.correct) {
            (Outcome::Error, _) => Answer::Error,
            (_, Some(true)) => Answer::Right,
            _ => Answer::Wrong,
        }
    }

    fn and(self, other: Answer) -> Answer {
        match (self, other) {
            (Answer::Error, _) | (_, Answer::Error) => Answer::Error,
            (Answer::Right, Answer::Right) => Answer::Right,
            _ => Answer::Wrong,
        }
    }
}

/// One shared question as both runs ended it; `first` is the baseline's first line of it
/// (its groups are the question's).
struct Unit<'a> {
    base: Answer,
    cand: Answer,
    first: &'a Prediction,
}

/// The shared lines of a task as questions: one per line, or one per id for circular tasks.
fn units<'a>(s: &Shared<'a>) -> Vec<Unit<'a>> {
    let lines = s.base.iter().zip(&s.cand).map(|(b, c)| Unit {
        base: Answer::of(b),
        cand: Answer::of(c),
        first: b,
    });
    if !s.record.circular {
        return lines.collect();
    }
    let mut by_id: BTreeMap<&str, Unit<'a>> = BTreeMap::new();
    for u in lines {
        match by_id.entry(u.first.id.as_str()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(u);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let seen = e.get_mut();
                seen.base = seen.base.and(u.base);
                seen.cand = seen.cand.and(u.cand);
                if u.first.rotation < seen.first.rotation {
                    seen.first = u.first;
                }
            }
        }
    }
    by_id.into_values().collect()
}

/// Paired correctness `(baseline, candidate, question)` and the error counts of one task.
struct Pairing<'a> {
    pairs: Vec<(bool, bool, &'a Prediction)>,
    new_errors: usize,
    new_errors_baseline_right: usize,
    errors_in_both: usize,
    baseline_errors: usize,
}

/// Errors are outcomes: a candidate error where the baseline answered is a wrong answer;
/// questions the baseline could not answer cannot be paired and are counted instead.
fn pair_units<'a>(units: &[Unit<'a>]) -> Pairing<'a> {
    let mut out = Pairing {
        pairs: Vec::with_capacity(units.len()),
        new_errors: 0,
        new_errors_baseline_right: 0,
        errors_in_both: 0,
        baseline_errors: 0,
    };
    for u in units {
        match (u.base, u.cand) {
            (Answer::Error, Answer::Error) => out.errors_in_both += 1,
            (Answer::Error, _) => out.baseline_errors += 1,
            (b, c) => {
                if c == Answer::Error {
                    out.new_errors += 1;
                    if b == Answer::Right {
                        out.new_errors_baseline_right += 1;
                    }
                }
                out.pairs
                    .push((b == Answer::Right, c == Answer::Right, u.first));
            }
        }
    }
    out
}

fn check(name: &str, status: Status, message: String) -> Check {
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
fn completeness_check(s: &Shared, config: &GateConfig) -> Check {
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
fn errors_check(p: &Pairing, max_new: usize) -> Check {
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
fn run_completeness_check(cand: &LoadedRun, missing_tasks: &[&str], config: &GateConfig) -> Check {
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

/// Telemetry (docs/telemetry.md): p95 latency per task from `tasks.<name>.telemetry` when
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

fn accuracy_check(
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

fn accuracy_status(a: AccuracyCheck, config: &GateConfig, task: &str) -> Check {
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
        fmt_p(a.mcnemar.p_value),
        fmt_p(a.p_value),
        fmt_p(a.p_holm),
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

fn fmt_p(p: f64) -> String {
    // Exact tail probabilities on 10⁶ pairs underflow to 0; say so instead of "0e0".
    if p < f64::MIN_POSITIVE {
        "< 1e-300".to_string()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// The change in one field's max−min accuracy gap, candidate − baseline. The bootstrap is
/// paired and within groups: each group's questions are resampled together for both runs,
/// which is a multinomial draw of the group's (both right, only candidate, only baseline,
/// neither) counts (see `docs/statistics.md`, count-level resampling).
fn fairness_check(
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
fn telemetry_check(
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
    fn unknown_config_key_names_it_and_lists_the_valid_ones() {
        let err =
            GateConfig::parse("max_drop = 2\nmax_dorp = 1\n", Path::new("gate.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(crate::error::is_input_error(&err));
        assert!(
            msg.contains("gate.toml") && msg.contains("max_dorp"),
            "{msg}"
        );
        assert!(
            msg.contains("max_drop") && msg.contains("latency_tolerance"),
            "{msg}"
        );
        let nested = GateConfig::parse("[task.x]\nmax_drop = 1\nalpha = 2\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            nested.contains("alpha") && nested.contains("fairness_tolerance"),
            "{nested}"
        );
    }

    #[test]
    fn config_defaults_and_ranges() {
        let c = GateConfig::default();
        assert_eq!(c.max_drop, 1.0);
        assert_eq!(c.alpha, 0.05);
        assert!(!c.fail_on_underpowered);
        let err = GateConfig::parse("alpha = 0.7\n", Path::new("g.toml")).unwrap_err();
        assert!(err.to_string().contains("alpha"), "{err}");
    }

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
