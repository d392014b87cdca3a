//! `faceval audit`: the fairness audit of one or more run folders, per task.
//!
//! For each run and task this gathers the scored questions (circular rotations folded, as
//! `metrics.rs` scores them), groups them by the requested group fields (and, on request, all
//! their intersections) and reports, per group, accuracy and error with n and a Wilson or
//! Clopper–Pearson interval, per-class recall and precision, MAE for numeric tasks and
//! clustered standard errors when predictions carry a `cluster`; per grouping, the accuracy
//! disparity measures with bootstrap intervals, fairlearn's binary measures for two-label
//! tasks and a chi-square test of correctness × group. Every chi-square test in one report is
//! adjusted together, Holm (confirmatory) and Benjamini–Hochberg (exploratory).
//!
//! All statistics come from [`crate::stats`] and [`crate::fairness`]; this module only selects
//! the data, keeps groupings aligned with it, and assembles the report. The JSON form is
//! documented in `docs/audit.md`; `faceval_report::audit` renders the readable form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::input_error;
use crate::fairness::{
    self, accuracy_disparities, binary_fairness, group_accuracy, group_by,
    groupings_with_intersections, mae_by_group, per_class_by_group, BinaryFairness,
    FairnessOptions, GroupClassMetrics, GroupMae, Grouping, Measure,
};
pub use crate::run_folder::LoadedRun;
use crate::run_folder::{fold_rotations, same_task, Prediction, Question, TaskRecord};
use crate::stats::{
    self, clustered_mean_se, hypothesis::correctness_by_group, BootstrapConfig, ChiSquare,
    ClusterCorrection, ClusteredMean, Interval,
};
use crate::task::recorded_min_group;

/// Version of the audit JSON (`docs/audit.md`).
pub const AUDIT_FORMAT: u32 = 1;

/// Label used for answers that could not be read, in per-class metrics.
pub const UNPARSEABLE_LABEL: &str = "(unparseable)";

/// Which interval a proportion gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProportionInterval {
    #[default]
    Wilson,
    ClopperPearson,
}

impl ProportionInterval {
    fn compute(self, k: u64, n: u64, confidence: f64) -> Result<Interval> {
        match self {
            ProportionInterval::Wilson => stats::wilson(k, n, confidence),
            ProportionInterval::ClopperPearson => stats::clopper_pearson(k, n, confidence),
        }
    }
}

/// What to audit and how.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditOptions {
    /// Group fields; `None` uses each task record's `groups`.
    pub by: Option<Vec<String>>,
    /// Also every intersection of the fields.
    pub intersections: bool,
    /// Minimum group size; `None` takes the task's `fairness.min_group` (when its TOML is
    /// found with the recorded fingerprint) or 30.
    pub min_group: Option<usize>,
    pub interval: ProportionInterval,
    pub confidence: f64,
    pub resamples: usize,
    /// Only these tasks (all when empty).
    pub tasks: Vec<String>,
    /// Positive class of two-label tasks, for fairlearn's binary measures; `None` takes the
    /// second label of the task's label list.
    pub positive: Option<String>,
    /// Images found in a training set (`faceval overlap`): each checked task also gets its
    /// accuracy on the clean slice (`TaskAudit::contamination`).
    pub overlap: Option<crate::overlap::OverlapReport>,
    /// Verification tasks: the global FMR that sets the one threshold per-group FMR and FNMR
    /// are taken at (`docs/verification.md`).
    pub group_fmr: f64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            by: None,
            intersections: false,
            min_group: None,
            interval: ProportionInterval::Wilson,
            confidence: stats::DEFAULT_CONFIDENCE,
            resamples: 2000,
            tasks: vec![],
            positive: None,
            overlap: None,
            group_fmr: crate::verification::DEFAULT_GROUP_FMR,
        }
    }
}

/// The whole audit: one entry per run, and every test in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub format: u32,
    pub confidence: f64,
    pub interval: ProportionInterval,
    pub resamples: usize,
    pub intersections: bool,
    pub runs: Vec<RunAudit>,
    /// Every chi-square test of the report with its raw and adjusted p-values. Holm controls
    /// the family-wise error over all of them (confirmatory reading); Benjamini–Hochberg the
    /// false discovery rate (exploratory reading).
    pub tests: Vec<TestRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunAudit {
    /// The run folder as given.
    pub run: String,
    pub model: String,
    pub tasks: Vec<TaskAudit>,
    /// Tasks of the run that were not audited, and why.
    pub skipped: Vec<SkippedTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedTask {
    pub task: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAudit {
    pub task: String,
    pub version: String,
    pub fingerprint: String,
    pub style: String,
    /// Scored questions (circular tasks: items).
    pub n: usize,
    pub n_errors: usize,
    pub n_unparseable: usize,
    pub min_group: usize,
    /// `"option"`, `"task"` (the task TOML's `fairness.min_group`) or `"default"`.
    pub min_group_source: String,
    /// Group fields used, in order.
    pub fields: Vec<String>,
    /// Requested names that were read from another field (`age` → `age_bin`).
    pub field_aliases: BTreeMap<String, String>,
    /// Every group field the task's predictions carry.
    pub available_fields: Vec<String>,
    pub overall: Option<Interval>,
    /// Standard error of overall accuracy with clustering, when predictions carry clusters.
    pub overall_clustered: Option<ClusteredMean>,
    pub mae: Option<Interval>,
    /// Positive class used for binary measures (two-label tasks).
    pub positive_label: Option<String>,
    pub groupings: Vec<GroupingReport>,
    /// Verification tasks: AUC, EER, TMR@FMR and, per audited field, FMR and FNMR at one
    /// global threshold with their max/min ratios and differences (`docs/verification.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::verification::Verification>,
    /// Things the reader should know (measures left out and why).
    pub notes: Vec<String>,
    /// Accuracy on the clean slice beside the full one, when the audit was given an overlap
    /// that checked this task (`docs/overlap.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contamination: Option<crate::contamination::Contamination>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub key: String,
    pub n: u64,
    /// Below the minimum group size: shown, flagged, left out of disparities and tests.
    pub small: bool,
    pub correct: Option<u64>,
    pub accuracy: Option<Interval>,
    pub error: Option<Interval>,
    /// Accuracy's standard error with clustering (when predictions carry clusters).
    pub clustered: Option<ClusteredMean>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupingReport {
    /// Field names joined with `" × "`.
    pub name: String,
    pub fields: Vec<String>,
    pub groups: Vec<GroupReport>,
    pub small_groups: Vec<String>,
    pub empty_intersections: Vec<String>,
    pub empty_intersection_count: u64,
    /// Questions with a missing value in one of the fields.
    pub missing: usize,
    /// Accuracy disparity measures (`fairness::ACCURACY_MEASURES`).
    pub measures: Vec<Measure>,
    pub chi_square: Option<ChiSquare>,
    /// Index into [`AuditReport::tests`].
    pub test: Option<usize>,
    pub p_holm: Option<f64>,
    pub p_bh: Option<f64>,
    /// Per-class recall and precision per group (label tasks).
    pub per_class: Vec<GroupClassMetrics>,
    /// Per-group MAE (numeric tasks).
    pub mae: Vec<GroupMae>,
    /// fairlearn's binary measures (two-label tasks).
    pub binary: Option<BinaryFairness>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    pub run: String,
    pub task: String,
    pub grouping: String,
    pub test: String,
    pub statistic: Option<f64>,
    pub dof: usize,
    pub p_value: f64,
    pub p_holm: f64,
    pub p_bh: f64,
}

/// Refuse to put runs side by side when one task name means different tasks in them.
pub fn check_comparable(runs: &[LoadedRun]) -> Result<()> {
    let mut seen: BTreeMap<&str, (&Path, &TaskRecord)> = BTreeMap::new();
    for run in runs {
        for record in &run.manifest.tasks {
            match seen.get(record.name.as_str()) {
                None => {
                    seen.insert(&record.name, (&run.dir, record));
                }
                Some((dir, first)) => {
                    if !same_task(first, record) {
                        return Err(input_error(format!(
                            "task {} cannot be compared across these runs: {} has version {} (fingerprint {}…) \
                             but {} has version {} (fingerprint {}…); the task definition changed, so the \
                             scores measure different things. Audit them separately or rerun one of them",
                            record.name,
                            dir.display(),
                            first.version,
                            first.short_fingerprint(),
                            run.dir.display(),
                            record.version,
                            record.short_fingerprint()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Audit run folders.
pub fn audit_dirs(dirs: &[PathBuf], options: &AuditOptions) -> Result<AuditReport> {
    if dirs.is_empty() {
        return Err(input_error("give at least one run folder"));
    }
    let runs: Vec<LoadedRun> = dirs
        .iter()
        .map(|d| LoadedRun::load(d))
        .collect::<Result<_>>()?;
    audit_runs(&runs, options)
}

/// Audit loaded runs.
pub fn audit_runs(runs: &[LoadedRun], options: &AuditOptions) -> Result<AuditReport> {
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(input_error(format!(
            "--confidence must be strictly between 0 and 1, got {}",
            options.confidence
        )));
    }
    if options.resamples < 2 {
        return Err(input_error(format!(
            "--resamples must be at least 2, got {}",
            options.resamples
        )));
    }
    if options.min_group == Some(0) {
        return Err(input_error("--min-group must be at least 1"));
    }
    check_comparable(runs)?;
    for name in &options.tasks {
        if !runs
            .iter()
            .any(|r| r.manifest.tasks.iter().any(|t| &t.name == name))
        {
            let known: BTreeSet<&str> = runs
                .iter()
                .flat_map(|r| r.manifest.tasks.iter().map(|t| t.name.as_str()))
                .collect();
            return Err(input_error(format!(
                "--task {name}: no run has this task; the runs have: {}",
                known.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut report = AuditReport {
        format: AUDIT_FORMAT,
        confidence: options.confidence,
        interval: options.interval,
        resamples: options.resamples,
        intersections: options.intersections,
        runs: Vec::new(),
        tests: Vec::new(),
    };
    let mut unusable: Vec<String> = Vec::new();
    for run in runs {
        let by_task = run.by_task();
        let mut run_audit = RunAudit {
            run: run.dir.display().to_string(),
            model: run.manifest.model.name.clone(),
            tasks: Vec::new(),
            skipped: Vec::new(),
        };
        for (t_index, record) in run.manifest.tasks.iter().enumerate() {
            if !options.tasks.is_empty() && !options.tasks.contains(&record.name) {
                continue;
            }
            let preds = by_task
                .get(record.name.as_str())
                .cloned()
                .unwrap_or_default();
            let seed = BootstrapConfig {
                resamples: options.resamples,
                confidence: options.confidence,
                seed: run.manifest.seed,
            }
            .salted(t_index as u64 + 1);
            match audit_task(&run.dir, record, &preds, options, seed)? {
                Ok(mut task_audit) => {
                    if let Some(overlap) = &options.overlap {
                        if task_audit.overall.is_some()
                            && overlap.summary.contains_key(&record.name)
                        {
                            task_audit.contamination = Some(
                                crate::contamination::task_contamination(record, &preds, overlap),
                            );
                        }
                    }
                    run_audit.tasks.push(task_audit)
                }
                Err(reason) => {
                    unusable.push(format!(
                        "{} task {}: {reason}",
                        run.dir.display(),
                        record.name
                    ));
                    run_audit.skipped.push(SkippedTask {
                        task: record.name.clone(),
                        reason,
                    });
                }
            }
        }
        report.runs.push(run_audit);
    }
    if report.runs.iter().all(|r| r.tasks.is_empty()) {
        return Err(input_error(format!(
            "nothing to audit:\n  {}",
            if unusable.is_empty() {
                "the runs hold no tasks".to_string()
            } else {
                unusable.join("\n  ")
            }
        )));
    }
    adjust_tests(&mut report)?;
    Ok(report)
}

/// Collect every defined chi-square p-value and adjust them all together.
fn adjust_tests(report: &mut AuditReport) -> Result<()> {
    let mut tests = Vec::new();
    for run in &report.runs {
        for task in &run.tasks {
            for g in &task.groupings {
                if let Some(cs) = &g.chi_square {
                    if let Some(p) = cs.p_value {
                        tests.push(TestRecord {
                            run: run.run.clone(),
                            task: task.task.clone(),
                            grouping: g.name.clone(),
                            test: "chi_square_correctness_by_group".into(),
                            statistic: cs.statistic,
                            dof: cs.dof,
                            p_value: p,
                            p_holm: p,
                            p_bh: p,
                        });
                    }
                }
            }
        }
    }
    let raw: Vec<f64> = tests.iter().map(|t| t.p_value).collect();
    let holm = stats::holm(&raw)?;
    let bh = stats::benjamini_hochberg(&raw)?;
    for (t, (h, b)) in tests.iter_mut().zip(holm.into_iter().zip(bh)) {
        t.p_holm = h;
        t.p_bh = b;
    }
    let mut next = 0;
    for run in &mut report.runs {
        for task in &mut run.tasks {
            for g in &mut task.groupings {
                if g.chi_square.as_ref().and_then(|c| c.p_value).is_some() {
                    g.test = Some(next);
                    g.p_holm = Some(tests[next].p_holm);
                    g.p_bh = Some(tests[next].p_bh);
                    next += 1;
                }
            }
        }
    }
    report.tests = tests;
    Ok(())
}

/// The fields used, and requested names read from another field.
type ResolvedFields = (Vec<String>, BTreeMap<String, String>);

/// Which recorded field answers each requested one: itself, or `<name>_bin` (FairFace and
/// UTKFace record age bins as `age_bin`).
fn resolve_fields(
    requested: &[String],
    available: &BTreeSet<String>,
) -> std::result::Result<ResolvedFields, Vec<String>> {
    let mut used = Vec::new();
    let mut aliases = BTreeMap::new();
    let mut unknown = Vec::new();
    for f in requested {
        if available.contains(f) {
            used.push(f.clone());
        } else if available.contains(&format!("{f}_bin")) {
            let bin = format!("{f}_bin");
            aliases.insert(f.clone(), bin.clone());
            used.push(bin);
        } else {
            unknown.push(f.clone());
        }
    }
    if unknown.is_empty() {
        used.dedup();
        Ok((used, aliases))
    } else {
        Err(unknown)
    }
}

/// Keep only the items where `keep` is true, renumbering groups so that none is empty.
fn subset_grouping(grouping: &Grouping, keep: &[bool]) -> Grouping {
    let mut sizes = vec![0u64; grouping.keys.len()];
    for (g, k) in grouping.assignment.iter().zip(keep) {
        if let (Some(g), true) = (g, k) {
            sizes[*g as usize] += 1;
        }
    }
    let mut remap = vec![None; sizes.len()];
    let mut keys = Vec::new();
    for (g, &s) in sizes.iter().enumerate() {
        if s > 0 {
            remap[g] = Some(keys.len() as u32);
            keys.push(grouping.keys[g].clone());
        }
    }
    let mut missing = 0;
    let assignment = grouping
        .assignment
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(g, _)| {
            let r = g.and_then(|g| remap[g as usize]);
            if r.is_none() {
                missing += 1;
            }
            r
        })
        .collect();
    Grouping {
        name: grouping.name.clone(),
        fields: grouping.fields.clone(),
        keys,
        assignment,
        empty_intersections: grouping.empty_intersections.clone(),
        empty_count: grouping.empty_count,
        missing,
    }
}

/// Audit one task of one run: its scored questions, the group fields asked for, the minimum
/// group size, the groupings, the task's answer columns, then one report per grouping. The
/// outer error is a real failure; the inner `Err` is a reason to skip the task (no usable
/// group fields), which becomes an input error only when no task at all can be audited.
fn audit_task(
    run_dir: &Path,
    record: &TaskRecord,
    preds: &[&Prediction],
    options: &AuditOptions,
    bootstrap: BootstrapConfig,
) -> Result<std::result::Result<TaskAudit, String>> {
    let (items, n_errors) = fold_rotations(preds, record.circular);
    let available: BTreeSet<String> = preds
        .iter()
        .flat_map(|p| p.groups.keys().cloned())
        .collect();
    if items.is_empty() {
        return Ok(Err(format!(
            "no scored questions ({} predictions, {n_errors} errors)",
            preds.len()
        )));
    }
    let (fields, field_aliases) = match audited_fields(record, options, &available) {
        Ok(x) => x,
        Err(reason) => return Ok(Err(reason)),
    };
    let (min_group, min_group_source) = match options.min_group {
        Some(m) => (m, "option"),
        None => match recorded_min_group(record, run_dir) {
            Some(m) => (m, "task"),
            None => (fairness::DEFAULT_MIN_GROUP_SIZE, "default"),
        },
    };
    let groupings = groupings_of(&items, &fields, options.intersections)?;
    let columns = TaskColumns::new(record, &items, options, bootstrap)?;
    let fopts = FairnessOptions {
        min_group_size: min_group,
        bootstrap,
    };
    // Verification tasks: the pairs' scores, per audited field (intersections are not
    // verification groups: the per-group threshold rates are per field).
    let verification = crate::verification::verification_by(
        record,
        preds,
        &fields,
        options.group_fmr,
        &bootstrap.salted(5),
    );
    let reports: Vec<GroupingReport> = groupings
        .par_iter()
        .enumerate()
        .map(|(gi, grouping)| grouping_report(&columns, grouping, gi, fopts, options, min_group))
        .collect::<Result<_>>()?;
    Ok(Ok(TaskAudit {
        task: record.name.clone(),
        version: record.version.clone(),
        fingerprint: record.fingerprint.clone(),
        style: record.style.clone(),
        n: items.len(),
        n_errors,
        n_unparseable: items.iter().filter(|s| s.unparseable).count(),
        min_group,
        min_group_source: min_group_source.into(),
        fields,
        field_aliases,
        available_fields: available.into_iter().collect(),
        overall: columns.overall,
        overall_clustered: columns.overall_clustered,
        mae: columns.mae,
        positive_label: columns.positive_label,
        groupings: reports,
        notes: columns.notes,
        contamination: None,
        verification,
    }))
}

/// The group fields to audit — `--by`, else the task record's, else every field the
/// predictions carry — resolved against the recorded ones; `Err` is why the task is skipped.
fn audited_fields(
    record: &TaskRecord,
    options: &AuditOptions,
    available: &BTreeSet<String>,
) -> std::result::Result<ResolvedFields, String> {
    let avail_list = || {
        if available.is_empty() {
            "none (its predictions carry no `groups`)".to_string()
        } else {
            available.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    let requested: Vec<String> = match &options.by {
        Some(by) => by.clone(),
        None if !record.groups.is_empty() => record.groups.clone(),
        None => available.iter().cloned().collect(),
    };
    if requested.is_empty() {
        return Err(format!(
            "no group fields: the task record lists none and the predictions carry none; available fields: {}",
            avail_list()
        ));
    }
    match resolve_fields(&requested, available) {
        Ok(x) => Ok(x),
        Err(unknown) => {
            let msg = format!(
                "unknown group field{} {}; available fields: {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", "),
                avail_list()
            );
            // An explicit --by naming a field no task has is a usage error right away.
            Err(msg)
        }
    }
}

/// One grouping per field, or per field and every intersection of them.
fn groupings_of(
    items: &[Question<Prediction>],
    fields: &[String],
    intersections: bool,
) -> Result<Vec<Grouping>> {
    let columns: Vec<Vec<&str>> = fields
        .iter()
        .map(|f| {
            items
                .iter()
                .map(|s| s.first.groups.get(f).map(String::as_str).unwrap_or(""))
                .collect()
        })
        .collect();
    let named: Vec<(&str, &[&str])> = fields
        .iter()
        .zip(&columns)
        .map(|(f, c)| (f.as_str(), c.as_slice()))
        .collect();
    Ok(if intersections {
        groupings_with_intersections(&named)?
    } else {
        named
            .iter()
            .map(|f| group_by(std::slice::from_ref(f)))
            .collect::<Result<_>>()?
    })
}

/// A task's scored questions as the columns every grouping reads — correctness, clusters,
/// labels, binary and numeric answers — with the task-wide figures and notes.
struct TaskColumns<'a> {
    numeric: bool,
    has_correctness: bool,
    has_clusters: bool,
    correct: Vec<bool>,
    values: Vec<f64>,
    cluster_of: Vec<&'a str>,
    per_class_ok: bool,
    truth_labels: Vec<&'a str>,
    pred_labels: Vec<&'a str>,
    positive_label: Option<String>,
    binary_keep: Vec<bool>,
    bin_truth: Vec<bool>,
    bin_pred: Vec<bool>,
    numeric_keep: Vec<bool>,
    num_truth: Vec<f64>,
    num_pred: Vec<f64>,
    overall: Option<Interval>,
    overall_clustered: Option<ClusteredMean>,
    mae: Option<Interval>,
    notes: Vec<String>,
}

impl<'a> TaskColumns<'a> {
    fn new(
        record: &TaskRecord,
        items: &[Question<'a, Prediction>],
        options: &AuditOptions,
        bootstrap: BootstrapConfig,
    ) -> Result<TaskColumns<'a>> {
        let numeric = record.style == "numeric";
        let has_correctness = !numeric || items.iter().any(|s| s.first.correct.is_some());
        let correct: Vec<bool> = items.iter().map(|s| s.correct).collect();
        let k = correct.iter().filter(|c| **c).count() as u64;
        let mut notes = Vec::new();
        let overall = if has_correctness {
            Some(
                options
                    .interval
                    .compute(k, items.len() as u64, options.confidence)?,
            )
        } else {
            notes.push("numeric task without bins: no accuracy, MAE only".to_string());
            None
        };

        // Clusters: an item without one is its own cluster.
        let has_clusters = items.iter().any(|s| s.first.cluster.is_some());
        let cluster_of: Vec<&str> = if has_clusters {
            items
                .iter()
                .map(|s| s.first.cluster.as_deref().unwrap_or(s.first.id.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let values: Vec<f64> = correct.iter().map(|&c| f64::from(u8::from(c))).collect();
        let overall_clustered = if has_clusters && has_correctness {
            Some(clustered_mean_se(
                &values,
                &cluster_of,
                ClusterCorrection::default(),
            )?)
        } else {
            None
        };

        // Numeric answers for MAE.
        let numeric_pairs: Vec<Option<(f64, f64)>> = if numeric {
            items
                .iter()
                .map(|s| Some((s.first.target_value?, s.first.parsed_value?)))
                .map(|p| p.filter(|(t, v)| t.is_finite() && v.is_finite()))
                .collect()
        } else {
            Vec::new()
        };
        let mae = if numeric {
            let errs: Vec<f64> = numeric_pairs
                .iter()
                .flatten()
                .map(|(t, p)| (t - p).abs())
                .collect();
            if errs.is_empty() {
                None
            } else {
                Some(stats::bootstrap_mean(&errs, &bootstrap.salted(0x3ae))?)
            }
        } else {
            None
        };

        // Per-class metrics need every scored item's target label.
        let label_task = !numeric && !record.labels.is_empty() && !record.circular;
        let per_class_ok = label_task && items.iter().all(|s| s.first.target_label.is_some());
        if label_task && !per_class_ok {
            notes.push("per-class metrics left out: some predictions lack target_label".into());
        }
        if record.circular {
            notes.push(
                "circular task: per-class and binary measures are left out (a question is scored over all its rotations)"
                    .into(),
            );
        }
        let truth_labels: Vec<&str> = if per_class_ok {
            items
                .iter()
                .map(|s| s.first.target_label.as_deref().unwrap_or(""))
                .collect()
        } else {
            Vec::new()
        };
        let pred_labels: Vec<&str> = if per_class_ok {
            items
                .iter()
                .map(|s| {
                    if s.unparseable {
                        UNPARSEABLE_LABEL
                    } else {
                        s.first.parsed_label.as_deref().unwrap_or(UNPARSEABLE_LABEL)
                    }
                })
                .collect()
        } else {
            Vec::new()
        };

        // fairlearn's binary measures for two-label tasks; unparseable answers are neither
        // positive nor negative predictions, so they are left out of these measures only.
        let positive_label = if per_class_ok && record.labels.len() == 2 {
            let pos = options
                .positive
                .clone()
                .unwrap_or_else(|| record.labels[1].clone());
            if !record.labels.contains(&pos) {
                return Err(input_error(format!(
                    "--positive {pos}: task {} has labels {}",
                    record.name,
                    record.labels.join(", ")
                )));
            }
            Some(pos)
        } else {
            None
        };
        let binary_keep: Vec<bool> = if positive_label.is_some() {
            items.iter().map(|s| !s.unparseable).collect()
        } else {
            Vec::new()
        };
        if positive_label.is_some() {
            let left_out = binary_keep.iter().filter(|k| !**k).count();
            if left_out > 0 {
                notes.push(format!(
                    "binary measures leave out {left_out} unparseable answers (neither a positive nor a negative prediction)"
                ));
            }
        }
        let (bin_truth, bin_pred): (Vec<bool>, Vec<bool>) = match &positive_label {
            Some(pos) => truth_labels
                .iter()
                .zip(&pred_labels)
                .zip(&binary_keep)
                .filter(|(_, k)| **k)
                .map(|((t, p), _)| (*t == pos, *p == pos))
                .unzip(),
            None => (Vec::new(), Vec::new()),
        };
        let numeric_keep: Vec<bool> = numeric_pairs.iter().map(Option::is_some).collect();
        let (num_truth, num_pred): (Vec<f64>, Vec<f64>) =
            numeric_pairs.iter().flatten().copied().unzip();
        Ok(TaskColumns {
            numeric,
            has_correctness,
            has_clusters,
            correct,
            values,
            cluster_of,
            per_class_ok,
            truth_labels,
            pred_labels,
            positive_label,
            binary_keep,
            bin_truth,
            bin_pred,
            numeric_keep,
            num_truth,
            num_pred,
            overall,
            overall_clustered,
            mae,
            notes,
        })
    }
}

/// The report of one grouping: per-group accuracy (with clustered errors), disparities and the
/// chi-square test, per-class, binary and MAE measures where the task has them.
fn grouping_report(
    c: &TaskColumns,
    grouping: &Grouping,
    gi: usize,
    fopts: FairnessOptions,
    options: &AuditOptions,
    min_group: usize,
) -> Result<GroupingReport> {
    let salted = FairnessOptions {
        bootstrap: fopts.bootstrap.salted(gi as u64 + 1),
        ..fopts
    };
    let sizes = grouping.sizes();
    let mut report = GroupingReport {
        name: grouping.name.clone(),
        fields: grouping.fields.clone(),
        groups: Vec::new(),
        small_groups: Vec::new(),
        empty_intersections: grouping.empty_intersections.clone(),
        empty_intersection_count: grouping.empty_count,
        missing: grouping.missing,
        measures: Vec::new(),
        chi_square: None,
        test: None,
        p_holm: None,
        p_bh: None,
        per_class: Vec::new(),
        mae: Vec::new(),
        binary: None,
    };
    let clustered = if c.has_clusters && c.has_correctness {
        clustered_by_group(&c.values, &c.cluster_of, grouping)?
    } else {
        vec![None; grouping.keys.len()]
    };
    if c.has_correctness {
        let mut groups = group_accuracy(&c.correct, grouping, &salted)?;
        report.measures = accuracy_disparities(&groups, &salted)?;
        let large: Vec<_> = groups.iter().filter(|g| !g.small).collect();
        report.chi_square = Some(correctness_by_group(
            &large.iter().map(|g| g.correct).collect::<Vec<_>>(),
            &large.iter().map(|g| g.n).collect::<Vec<_>>(),
        )?);
        for (g, c) in groups.iter_mut().zip(clustered) {
            if options.interval == ProportionInterval::ClopperPearson {
                g.accuracy = stats::clopper_pearson(g.correct, g.n, options.confidence)?;
                g.error = stats::clopper_pearson(g.n - g.correct, g.n, options.confidence)?;
            }
            report.groups.push(GroupReport {
                key: g.key.clone(),
                n: g.n,
                small: g.small,
                correct: Some(g.correct),
                accuracy: Some(g.accuracy.clone()),
                error: Some(g.error.clone()),
                clustered: c,
            });
        }
    } else {
        for (key, &n) in grouping.keys.iter().zip(&sizes) {
            report.groups.push(GroupReport {
                key: key.clone(),
                n,
                small: (n as usize) < min_group,
                correct: None,
                accuracy: None,
                error: None,
                clustered: None,
            });
        }
    }
    report.small_groups = report
        .groups
        .iter()
        .filter(|g| g.small)
        .map(|g| g.key.clone())
        .collect();
    if c.per_class_ok {
        report.per_class = per_class_by_group(&c.truth_labels, &c.pred_labels, grouping, &salted)?;
    }
    if c.positive_label.is_some() && !c.bin_truth.is_empty() {
        let sub = subset_grouping(grouping, &c.binary_keep);
        report.binary = Some(binary_fairness(&c.bin_truth, &c.bin_pred, &sub, &salted)?);
    }
    if c.numeric && !c.num_truth.is_empty() {
        let sub = subset_grouping(grouping, &c.numeric_keep);
        report.mae = mae_by_group(&c.num_truth, &c.num_pred, &sub, &salted)?;
    }
    Ok(report)
}

/// Clustered standard error of accuracy within each group.
fn clustered_by_group(
    values: &[f64],
    clusters: &[&str],
    grouping: &Grouping,
) -> Result<Vec<Option<ClusteredMean>>> {
    let mut per: Vec<(Vec<f64>, Vec<&str>)> = vec![(Vec::new(), Vec::new()); grouping.keys.len()];
    for ((v, c), g) in values.iter().zip(clusters).zip(&grouping.assignment) {
        if let Some(g) = g {
            per[*g as usize].0.push(*v);
            per[*g as usize].1.push(c);
        }
    }
    per.iter()
        .map(|(v, c)| {
            if v.is_empty() {
                Ok(None)
            } else {
                clustered_mean_se(v, c, ClusterCorrection::default()).map(Some)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_folder::{Manifest, ModelRecord, Outcome};

    fn pred(id: &str, rotation: usize, ok: bool, gender: &str, race: &str) -> Prediction {
        let mut groups = BTreeMap::new();
        groups.insert("gender".to_string(), gender.to_string());
        groups.insert("race".to_string(), race.to_string());
        groups.insert("age_bin".to_string(), "20-29".to_string());
        Prediction {
            id: id.into(),
            task: "t".into(),
            rotation,
            variant: 0,
            prompt_sha256: String::new(),
            image_sha256: vec![],
            raw_output: String::new(),
            parsed: Some("A".into()),
            target: Some("A".into()),
            parsed_label: Some(if ok { "yes" } else { "no" }.into()),
            target_label: Some("yes".into()),
            parsed_value: None,
            target_value: None,
            correct: Some(ok),
            outcome: if ok { Outcome::Correct } else { Outcome::Wrong },
            groups,
            cluster: None,
            fields: BTreeMap::new(),
            timings: Default::default(),
            prompt_tokens: 0,
            output_tokens: 0,
            error: None,
            option_logprobs: None,
            score: None,
        }
    }

    fn record(circular: bool) -> TaskRecord {
        TaskRecord {
            name: "t".into(),
            version: "1".into(),
            fingerprint: "f".into(),
            path: String::new(),
            origin: String::new(),
            style: "multiple_choice".into(),
            labels: vec!["no".into(), "yes".into()],
            groups: vec!["gender".into()],
            breakdown: vec![],
            circular,
            variants: vec![],
        }
    }

    fn run(preds: Vec<Prediction>, circular: bool) -> LoadedRun {
        LoadedRun {
            dir: PathBuf::from("r"),
            manifest: Manifest {
                model: ModelRecord {
                    name: "m".into(),
                    ..Default::default()
                },
                tasks: vec![record(circular)],
                ..Default::default()
            },
            predictions: preds,
        }
    }

    #[test]
    fn circular_questions_fold_like_metrics() {
        let preds = vec![
            pred("a", 0, true, "M", "x"),
            pred("a", 1, false, "M", "x"),
            pred("b", 0, true, "F", "x"),
            pred("b", 1, true, "F", "x"),
        ];
        let refs: Vec<&Prediction> = preds.iter().collect();
        let (items, errors) = fold_rotations(&refs, record(true).circular);
        assert_eq!((items.len(), errors), (2, 0));
        assert_eq!(
            items.iter().map(|s| s.correct).collect::<Vec<_>>(),
            [false, true]
        );
        // The audit's overall accuracy equals metrics.json's.
        let r = run(preds, true);
        let metrics = crate::metrics::compute(&r.manifest, &r.predictions);
        let report = audit_runs(&[r], &AuditOptions::default()).unwrap();
        let t = &report.runs[0].tasks[0];
        assert_eq!(t.n, 2);
        assert_eq!(t.overall.as_ref().unwrap().estimate, 0.5);
        assert_eq!(metrics.tasks["t"].accuracy.as_ref().unwrap().estimate, 0.5);
    }

    #[test]
    fn overall_matches_metrics_and_intervals_switch() {
        let preds: Vec<Prediction> = (0..200)
            .map(|i| {
                pred(
                    &format!("q{i}"),
                    0,
                    i % 4 != 0,
                    ["M", "F"][i % 2],
                    ["x", "y", "z"][i % 3],
                )
            })
            .collect();
        let r = run(preds.clone(), false);
        let metrics = crate::metrics::compute(&r.manifest, &r.predictions);
        let options = AuditOptions {
            by: Some(vec!["gender".into(), "race".into(), "age".into()]),
            intersections: true,
            ..Default::default()
        };
        let report = audit_runs(&[r], &options).unwrap();
        let t = &report.runs[0].tasks[0];
        assert_eq!(
            t.overall.as_ref().unwrap().estimate,
            metrics.tasks["t"].accuracy.as_ref().unwrap().estimate
        );
        // `age` is read from `age_bin`; 3 fields give 7 groupings.
        assert_eq!(t.field_aliases["age"], "age_bin");
        assert_eq!(t.groupings.len(), 7);
        assert_eq!(t.groupings[3].name, "gender × race");
        // Every defined chi-square test is in the report's family, adjusted together.
        assert_eq!(
            report.tests.len(),
            t.groupings.iter().filter(|g| g.p_holm.is_some()).count()
        );
        for test in &report.tests {
            assert!(test.p_holm >= test.p_value && test.p_bh >= test.p_value);
            assert!(test.p_bh <= test.p_holm + 1e-15);
        }
        // Clopper–Pearson on request: wider than Wilson away from 0 and 1 (group M: 50/100).
        let cp = audit_runs(
            &[run(preds, false)],
            &AuditOptions {
                interval: ProportionInterval::ClopperPearson,
                ..Default::default()
            },
        )
        .unwrap();
        let w = &t.groupings[0].groups[1].accuracy.as_ref().unwrap();
        let c = cp.runs[0].tasks[0].groupings[0].groups[1]
            .accuracy
            .clone()
            .unwrap();
        assert_eq!(c.method, stats::Method::ClopperPearson);
        assert_eq!(c.estimate, w.estimate);
        assert!(c.width() > w.width());
    }

    #[test]
    fn small_groups_are_flagged_and_clusters_give_clustered_se() {
        let mut preds: Vec<Prediction> = (0..100)
            .map(|i| {
                pred(
                    &format!("q{i}"),
                    0,
                    i % 3 != 0,
                    if i < 95 { "M" } else { "F" },
                    "x",
                )
            })
            .collect();
        for (i, p) in preds.iter_mut().enumerate() {
            p.cluster = Some(format!("img{}", i / 5));
        }
        let report = audit_runs(&[run(preds, false)], &AuditOptions::default()).unwrap();
        let t = &report.runs[0].tasks[0];
        let g = &t.groupings[0];
        assert_eq!(g.small_groups, ["F"]);
        // One large group: fairlearn's difference is 0 over it.
        let gap = g
            .measures
            .iter()
            .find(|m| m.name == "difference_between_groups")
            .unwrap();
        assert_eq!(gap.estimate, Some(0.0));
        let c = t.overall_clustered.as_ref().unwrap();
        assert_eq!(c.clusters, 20);
        assert!(g.groups.iter().all(|x| x.clustered.is_some()));
    }

    #[test]
    fn unknown_field_lists_the_available_ones() {
        let preds = vec![pred("a", 0, true, "M", "x")];
        let err = audit_runs(
            &[run(preds, false)],
            &AuditOptions {
                by: Some(vec!["hair".into()]),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(crate::error::is_input_error(&err));
        let msg = err.to_string();
        assert!(
            msg.contains("hair") && msg.contains("age_bin, gender, race"),
            "{msg}"
        );
    }

    #[test]
    fn subset_grouping_drops_empty_groups() {
        let labels = ["a", "b", "a", "c"];
        let g = group_by(&[("f", &labels[..])]).unwrap();
        let sub = subset_grouping(&g, &[true, false, true, true]);
        assert_eq!(sub.keys, ["a", "c"]);
        assert_eq!(sub.assignment, [Some(0), Some(0), Some(1)]);
    }
}
