//! Scores of a run, computed from `predictions.jsonl` and the task records in
//! `manifest.json` alone, so any folder in the run format can be scored — imported ones too.
//!
//! Every accuracy comes with n and a 95% Wilson interval; macro averages and MAE with a
//! seeded percentile bootstrap. Breakdowns (FaceXBench categories and sub-categories) are
//! micro-averages over questions, as in the FaceXBench paper.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::run_folder::{self, Manifest, Outcome, Prediction, TaskRecord};
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
    pub n: usize,
    /// Lines in predictions.jsonl for this task.
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

/// One scored question after circular rotations are folded together.
struct Folded<'a> {
    first: &'a Prediction,
    correct: bool,
    unparseable: bool,
}

fn fold<'a>(preds: &[&'a Prediction], circular: bool) -> (Vec<Folded<'a>>, usize) {
    let mut by_id: BTreeMap<&str, Vec<&'a Prediction>> = BTreeMap::new();
    for p in preds {
        by_id.entry(p.id.as_str()).or_default().push(p);
    }
    let mut folded = Vec::new();
    let mut errors = 0;
    for (_, mut group) in by_id {
        group.sort_by_key(|p| p.rotation);
        if !circular {
            // Several lines for one id only happen with a circular task; keep each.
            for p in group {
                if p.outcome == Outcome::Error {
                    errors += 1;
                } else {
                    folded.push(Folded {
                        first: p,
                        correct: p.correct == Some(true),
                        unparseable: p.outcome == Outcome::Unparseable,
                    });
                }
            }
            continue;
        }
        if group.iter().any(|p| p.outcome == Outcome::Error) {
            errors += 1;
            continue;
        }
        folded.push(Folded {
            first: group[0],
            correct: group.iter().all(|p| p.correct == Some(true)),
            unparseable: group.iter().any(|p| p.outcome == Outcome::Unparseable),
        });
    }
    (folded, errors)
}

fn proportion(k: usize, n: usize) -> Option<Interval> {
    (n > 0)
        .then(|| stats::wilson(k as u64, n as u64, DEFAULT_CONFIDENCE))
        .and_then(Result::ok)
}

/// Balanced accuracy (mean per-class recall) and macro-F1 over `(target, predicted)` label
/// indices; `None` predictions count as wrong for every class.
pub fn balanced_accuracy(pairs: &[(usize, Option<usize>)], n_labels: usize) -> f64 {
    let mut support = vec![0u64; n_labels];
    let mut hits = vec![0u64; n_labels];
    for &(t, p) in pairs {
        support[t] += 1;
        if p == Some(t) {
            hits[t] += 1;
        }
    }
    let present: Vec<usize> = (0..n_labels).filter(|&c| support[c] > 0).collect();
    if present.is_empty() {
        return f64::NAN;
    }
    present
        .iter()
        .map(|&c| hits[c] as f64 / support[c] as f64)
        .sum::<f64>()
        / present.len() as f64
}

/// Macro-F1 over the classes that occur as target or prediction (scikit-learn's default
/// label set); a class with no true or predicted instance is left out.
pub fn macro_f1(pairs: &[(usize, Option<usize>)], n_labels: usize) -> f64 {
    let mut tp = vec![0u64; n_labels];
    let mut fp = vec![0u64; n_labels];
    let mut fn_ = vec![0u64; n_labels];
    for &(t, p) in pairs {
        match p {
            Some(p) if p == t => tp[t] += 1,
            Some(p) => {
                fp[p] += 1;
                fn_[t] += 1;
            }
            None => fn_[t] += 1,
        }
    }
    let classes: Vec<usize> = (0..n_labels)
        .filter(|&c| tp[c] + fp[c] + fn_[c] > 0)
        .collect();
    if classes.is_empty() {
        return f64::NAN;
    }
    classes
        .iter()
        .map(|&c| {
            let denom = 2 * tp[c] + fp[c] + fn_[c];
            if denom == 0 {
                0.0
            } else {
                2.0 * tp[c] as f64 / denom as f64
            }
        })
        .sum::<f64>()
        / classes.len() as f64
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
            let nl = record.labels.len();
            m.balanced_accuracy =
                stats::bootstrap(&pairs, |s| balanced_accuracy(s, nl), &bootstrap.salted(2)).ok();
            m.macro_f1 = stats::bootstrap(&pairs, |s| macro_f1(s, nl), &bootstrap.salted(3)).ok();
            let mut matrix = vec![vec![0u64; nl + 1]; nl];
            for &(t, p) in &pairs {
                matrix[t][p.unwrap_or(nl)] += 1;
            }
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
        tasks.insert(
            record.name.clone(),
            task_metrics(record, &preds, &bootstrap),
        );
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
    let manifest = run_folder::read_manifest(dir)?;
    let preds = run_folder::read_predictions(&dir.join(run_folder::PREDICTIONS))?.predictions;
    let metrics = compute(&manifest, &preds);
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
        assert!((balanced_accuracy(&pairs, 3) - (2.0 / 3.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        assert!((macro_f1(&pairs, 3) - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }
}
