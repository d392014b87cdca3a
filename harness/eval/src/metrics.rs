//! Scores of a run, computed from `predictions.jsonl` and the task records in
//! `manifest.json` alone, so any folder in the run format can be scored — imported ones too.
//!
//! Every accuracy comes with n and a 95% Wilson interval; macro averages and MAE with a
//! seeded percentile bootstrap. Breakdowns (FaceXBench categories and sub-categories) are
//! micro-averages over questions, as in the FaceXBench paper.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run_folder::{self, fold_rotations, Manifest, Prediction, Question, TaskRecord};
use crate::stats::{self, BootstrapConfig, Interval, DEFAULT_CONFIDENCE};
use crate::telemetry::{self, RunTelemetry};

/// Confusion counts: rows are targets, columns predictions, with a last column for answers
/// that could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    pub labels: Vec<String>,
    /// `matrix[target][predicted]`; the last column counts unparseable answers.
    pub matrix: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TaskMetrics {
    pub task: String,
    pub version: String,
    /// Questions scored (circular tasks: items, each counting once over its rotations).
    /// Like every headline score, over variant 0 (the task's own phrasing) only.
    pub n: usize,
    /// Questions in predictions.jsonl for this task (the last line of each key counts),
    /// variant 0 only.
    pub n_predictions: usize,
    /// Items that could not be asked (bad rows, missing or corrupt images, model errors).
    pub n_errors: usize,
    pub n_unparseable: usize,
    /// Share of scored questions whose answer could not be read.
    pub unparseable_rate: Option<Interval>,
    pub accuracy: Option<Interval>,
    pub balanced_accuracy: Option<Interval>,
    pub macro_f1: Option<Interval>,
    pub confusion_matrix: Option<Confusion>,
    /// Numeric tasks: mean absolute error over the answers that could be read.
    pub mae: Option<Interval>,
    /// Accuracy per value of each breakdown field.
    pub breakdown: BTreeMap<String, BTreeMap<String, Interval>>,
    /// ECE, MCE and Brier of the option probabilities, overall and per group, with the
    /// reliability diagram's bins (`docs/calibration.md`); left out when no prediction
    /// carries `option_logprobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::calibration::Calibration>,
    /// Accuracy per phrasing, spread, consistency and best-vs-worst test
    /// (`docs/prompt-sensitivity.md`); left out for tasks without `variants`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_sensitivity: Option<crate::sensitivity::PromptSensitivity>,
    /// Accuracy on the clean slice beside the full one (`docs/overlap.md`); present only
    /// when the run was scored with `--overlap overlap.json` and that file checked this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contamination: Option<crate::contamination::Contamination>,
    /// Verification tasks: ROC AUC, EER, TMR@FMR and per-group FMR/FNMR of the pairs'
    /// `score`s (`docs/verification.md`); left out for other tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::verification::Verification>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RunMetrics {
    pub model: String,
    pub tasks: BTreeMap<String, TaskMetrics>,
    /// Latency, throughput and peak memory (`docs/telemetry.md`), per task and overall. Kept
    /// apart from `tasks` so that the scores stay identical across reruns and shards while the
    /// timings vary. `null` when the run carries no runner-measured times (imports).
    #[serde(default)]
    pub telemetry: Option<RunTelemetry>,
}

/// Scored questions of one task in the order scores are computed in: by id, then rotation.
/// Bootstrap resamples follow item order, so the order is part of the seeded result.
fn fold<'a>(preds: &[&'a Prediction], circular: bool) -> (Vec<Question<'a, Prediction>>, usize) {
    let mut sorted = preds.to_vec();
    sorted.sort_by(|a, b| (&a.id, a.rotation).cmp(&(&b.id, b.rotation)));
    fold_rotations(&sorted, circular)
}

fn proportion(k: usize, n: usize) -> Option<Interval> {
    (n > 0)
        .then(|| stats::wilson(k as u64, n as u64, DEFAULT_CONFIDENCE))
        .and_then(Result::ok)
}

/// Confusion counts from `(target, predicted)` label indices: `n_labels` rows, with a last
/// column for answers that map onto no label.
pub fn confusion_counts(pairs: &[(usize, Option<usize>)], n_labels: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; n_labels + 1]; n_labels];
    for &(t, p) in pairs {
        m[t][p.unwrap_or(n_labels)] += 1;
    }
    m
}

/// Balanced accuracy (mean per-class recall over the classes present in the targets) from
/// confusion counts; unreadable answers count as wrong for their class.
pub fn balanced_accuracy(m: &[Vec<u64>]) -> f64 {
    let recalls: Vec<f64> = m
        .iter()
        .enumerate()
        .filter_map(|(c, row)| {
            let support: u64 = row.iter().sum();
            (support > 0).then(|| row[c] as f64 / support as f64)
        })
        .collect();
    if recalls.is_empty() {
        return f64::NAN;
    }
    recalls.iter().sum::<f64>() / recalls.len() as f64
}

/// Macro-F1 over the classes that occur as target or prediction (scikit-learn's default
/// label set). Unreadable answers are false negatives of their class, not a class of their own.
pub fn macro_f1(m: &[Vec<u64>]) -> f64 {
    let k = m.len();
    let f1s: Vec<f64> = (0..k)
        .filter_map(|c| {
            let tp = m[c][c];
            let fn_ = m[c].iter().sum::<u64>() - tp;
            let fp = (0..k).map(|r| m[r][c]).sum::<u64>() - tp;
            (tp + fp + fn_ > 0).then(|| 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64)
        })
        .collect();
    if f1s.is_empty() {
        return f64::NAN;
    }
    f1s.iter().sum::<f64>() / f1s.len() as f64
}

/// Percentile bootstrap of a statistic of the confusion matrix. Resampling n items with
/// replacement and counting them is the same as one multinomial draw of n over the cells with
/// the observed proportions, so each resample costs O(cells), not O(n).
fn bootstrap_confusion(
    m: &[Vec<u64>],
    statistic: fn(&[Vec<u64>]) -> f64,
    config: &BootstrapConfig,
) -> Option<Interval> {
    let cols = m.first()?.len();
    let weights: Vec<f64> = m.iter().flatten().map(|&c| c as f64).collect();
    let n: u64 = m.iter().flatten().sum();
    if n == 0 {
        return None;
    }
    let reps = stats::bootstrap::replicates(config, |rng| {
        let mut flat = vec![0u64; weights.len()];
        stats::bootstrap::multinomial_counts(rng, n, &weights, &mut flat);
        let drawn: Vec<Vec<u64>> = flat.chunks(cols).map(<[u64]>::to_vec).collect();
        statistic(&drawn)
    });
    // A resample can lose every item of a class; the statistic is then over fewer classes,
    // exactly as with item resampling, so NaN only arises when all items vanish (never).
    stats::bootstrap::percentile_interval(
        reps,
        statistic(m),
        n as usize,
        config.confidence,
        stats::Method::PercentileBootstrap,
    )
    .ok()
}

/// Score one task's predictions.
pub fn task_metrics(
    record: &TaskRecord,
    preds: &[&Prediction],
    bootstrap: &BootstrapConfig,
) -> TaskMetrics {
    let (folded, n_errors) = fold(preds, record.circular);
    let n = folded.len();
    let k = folded.iter().filter(|f| f.correct).count();
    let n_unparseable = folded.iter().filter(|f| f.unparseable).count();
    let mut m = TaskMetrics {
        task: record.name.clone(),
        version: record.version.clone(),
        n,
        n_predictions: preds.len(),
        n_errors,
        n_unparseable,
        unparseable_rate: proportion(n_unparseable, n),
        ..Default::default()
    };
    let numeric = record.style == "numeric";
    let has_correctness = folded.iter().any(|f| f.first.correct.is_some());
    if !numeric || has_correctness {
        m.accuracy = proportion(k, n);
    }
    if numeric {
        let errors: Vec<f64> = folded
            .iter()
            .filter_map(|f| Some((f.first.parsed_value? - f.first.target_value?).abs()))
            .collect();
        m.mae = stats::bootstrap_mean(&errors, &bootstrap.salted(1)).ok();
    }
    // Label-level metrics where the labels are known and each answer maps onto one.
    if !record.labels.is_empty() {
        let index = |s: &Option<String>| {
            s.as_ref()
                .and_then(|s| record.labels.iter().position(|l| l == s))
        };
        let pairs: Vec<(usize, Option<usize>)> = folded
            .iter()
            .filter_map(|f| Some((index(&f.first.target_label)?, index(&f.first.parsed_label))))
            .collect();
        if !pairs.is_empty() && !record.circular {
            let matrix = confusion_counts(&pairs, record.labels.len());
            m.balanced_accuracy =
                bootstrap_confusion(&matrix, balanced_accuracy, &bootstrap.salted(2));
            m.macro_f1 = bootstrap_confusion(&matrix, macro_f1, &bootstrap.salted(3));
            m.confusion_matrix = Some(Confusion {
                labels: record.labels.clone(),
                matrix,
            });
        }
    }
    for field in &record.breakdown {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for f in &folded {
            if let Some(v) = f.first.fields.get(field) {
                let e = counts.entry(v.clone()).or_default();
                e.1 += 1;
                if f.correct {
                    e.0 += 1;
                }
            }
        }
        let per: BTreeMap<String, Interval> = counts
            .into_iter()
            .filter_map(|(v, (k, n))| Some((v, proportion(k, n)?)))
            .collect();
        if !per.is_empty() {
            m.breakdown.insert(field.clone(), per);
        }
    }
    m.calibration = crate::calibration::calibration(preds, &record.groups, &bootstrap.salted(4));
    m.verification = crate::verification::verification(record, preds, &bootstrap.salted(5));
    m
}

/// Score every task of a run.
pub fn compute(manifest: &Manifest, predictions: &[Prediction]) -> RunMetrics {
    let bootstrap = BootstrapConfig {
        seed: manifest.seed,
        ..BootstrapConfig::default()
    };
    let mut tasks = BTreeMap::new();
    for record in &manifest.tasks {
        let preds: Vec<&Prediction> = predictions
            .iter()
            .filter(|p| p.task == record.name)
            .collect();
        // Headline scores use the task's own phrasing; the other variants only feed the
        // prompt-sensitivity block.
        let headline: Vec<&Prediction> =
            preds.iter().copied().filter(|p| p.is_headline()).collect();
        let mut m = task_metrics(record, &headline, &bootstrap);
        m.prompt_sensitivity = crate::sensitivity::prompt_sensitivity(record, &preds);
        tasks.insert(record.name.clone(), m);
    }
    let scored: Vec<&Prediction> = predictions
        .iter()
        .filter(|p| manifest.tasks.iter().any(|t| t.name == p.task))
        .collect();
    let overall = telemetry::from_predictions(scored.iter().copied());
    let per_task: BTreeMap<String, telemetry::Telemetry> = manifest
        .tasks
        .iter()
        .filter_map(|t| {
            let preds = predictions.iter().filter(|p| p.task == t.name);
            Some((t.name.clone(), telemetry::from_predictions(preds)?))
        })
        .collect();
    let run_telemetry = (overall.is_some() || manifest.resources.is_some()).then(|| RunTelemetry {
        percentile_method: telemetry::PERCENTILE_METHOD.to_string(),
        warmup: manifest.warmup,
        batch_size: manifest.batch_size,
        device: manifest.device.clone(),
        dtype: manifest.dtype.clone(),
        overall,
        tasks: per_task,
        memory: manifest.resources.clone(),
    });
    RunMetrics {
        model: manifest.model.name.clone(),
        tasks,
        telemetry: run_telemetry,
    }
}

/// Recompute `metrics.json` of a run folder from its predictions.
pub fn write_metrics(dir: &Path) -> anyhow::Result<RunMetrics> {
    write_metrics_with_overlap(dir, None)
}

/// [`write_metrics`], adding each checked task's clean-slice accuracy when an overlap report
/// is given (`faceval score --overlap`).
pub fn write_metrics_with_overlap(
    dir: &Path,
    overlap: Option<&crate::overlap::OverlapReport>,
) -> anyhow::Result<RunMetrics> {
    let manifest = run_folder::read_manifest(dir)?;
    let preds = run_folder::read_predictions(&dir.join(run_folder::PREDICTIONS))?.predictions;
    let mut metrics = compute(&manifest, &preds);
    if let Some(overlap) = overlap {
        for (task, c) in crate::contamination::run_contamination(&manifest, &preds, overlap) {
            if let Some(m) = metrics.tasks.get_mut(&task) {
                m.contamination = Some(c);
            }
        }
    }
    run_folder::write_json_atomic(&dir.join(run_folder::METRICS), &metrics)?;
    Ok(metrics)
}

/// Read `metrics.json`, or recompute it from predictions when it is missing.
pub fn read_or_compute(dir: &Path) -> anyhow::Result<RunMetrics> {
    let path = dir.join(run_folder::METRICS);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(m) = serde_json::from_str(&text) {
            return Ok(m);
        }
    }
    let manifest = run_folder::read_manifest(dir)?;
    let preds = run_folder::read_predictions(&dir.join(run_folder::PREDICTIONS))?.predictions;
    Ok(compute(&manifest, &preds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_accuracy_and_macro_f1_match_sklearn() {
        // y_true = [0,0,0,1,1,2], y_pred = [0,0,1,1,2,2]:
        // sklearn balanced_accuracy_score = (2/3 + 1/2 + 1)/3, f1_score(average="macro") =
        // mean(0.8, 0.5, 0.6666...) (computed with scikit-learn 1.9).
        let pairs = vec![
            (0, Some(0)),
            (0, Some(0)),
            (0, Some(1)),
            (1, Some(1)),
            (1, Some(2)),
            (2, Some(2)),
        ];
        let m = confusion_counts(&pairs, 3);
        assert!((balanced_accuracy(&m) - (2.0 / 3.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        assert!((macro_f1(&m) - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // An unreadable answer is a false negative of its class and no class of its own.
        let u = confusion_counts(&[(0, Some(0)), (1, None)], 2);
        assert_eq!(balanced_accuracy(&u), 0.5);
        assert!((macro_f1(&u) - 0.5).abs() < 1e-12);
        let ci = bootstrap_confusion(&m, macro_f1, &BootstrapConfig::default()).unwrap();
        assert!(ci.low <= ci.estimate && ci.estimate <= ci.high && ci.low < ci.high);
    }
}
