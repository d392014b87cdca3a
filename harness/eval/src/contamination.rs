//! Accuracy on the clean slice: a run's questions split by whether `faceval overlap` found
//! one of their images in a reference (training) set, so a score can be read without the
//! questions a model may have seen in training (`docs/overlap.md`).
//!
//! [`task_contamination`] scores one task's questions exactly as `metrics` does (headline
//! phrasing, circular rotations folded, errors left out) and splits them by
//! [`OverlapReport::matched_items`]. The two slices are disjoint, so their difference gets
//! Newcombe's interval for independent proportions; the full score is the share-weighted mean
//! of the slices, so `full − clean = share × (contaminated − clean)` and its interval is that
//! one scaled by the (fixed) contaminated share.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::overlap::OverlapReport;
use crate::run_folder::{fold_rotations, Manifest, Prediction, TaskRecord};
use crate::stats::{self, Interval, DEFAULT_CONFIDENCE};

/// One task's accuracy on the full set, the clean slice and the contaminated slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contamination {
    /// Reference folder the overlap was computed against (`overlap.json`'s `reference`).
    pub reference: String,
    /// The near-match threshold used (bits of 256).
    pub max_distance: u32,
    /// Questions scored, as `metrics.json`'s `n`.
    pub n: usize,
    /// Scored questions with at least one image found in the reference set.
    pub n_contaminated: usize,
    /// Matched items of this task in `overlap.json` that the run did not score (a run on a
    /// subset, or an overlap computed on other data: see the warning of `faceval score`).
    pub matched_not_scored: usize,
    /// Accuracy over every scored question (Wilson), as `metrics.json`'s `accuracy`.
    pub full: Option<Interval>,
    /// Accuracy over the questions with no matched image (Wilson).
    pub clean: Option<Interval>,
    /// Accuracy over the questions with a matched image (Wilson).
    pub contaminated: Option<Interval>,
    /// `contaminated − clean`, Newcombe's hybrid score interval for independent proportions.
    pub contaminated_minus_clean: Option<Interval>,
    /// `full − clean`: how much the contaminated questions move the headline score; the
    /// interval is `contaminated_minus_clean`'s scaled by `n_contaminated / n`.
    pub full_minus_clean: Option<Interval>,
}

/// Clean-slice accuracy of one task. `preds` are the task's headline predictions (variant 0).
pub fn task_contamination(
    record: &TaskRecord,
    preds: &[&Prediction],
    overlap: &OverlapReport,
) -> Contamination {
    let (folded, _errors) = fold_rotations(preds, record.circular);
    split(
        &record.name,
        folded.iter().map(|q| (q.first.id.as_str(), q.correct)),
        overlap,
    )
}

/// Clean-slice accuracy of one task from its scored questions, `(id, correct)` after folding
/// rotations (the report holds them in that form already).
pub fn split<'a>(
    task: &str,
    questions: impl IntoIterator<Item = (&'a str, bool)>,
    overlap: &OverlapReport,
) -> Contamination {
    let matched: BTreeSet<&str> = overlap
        .matches
        .iter()
        .filter(|m| m.task == task)
        .map(|m| m.item_id.as_str())
        .collect();
    let mut scored: BTreeSet<&str> = BTreeSet::new();
    let (mut clean, mut dirty) = ((0u64, 0u64), (0u64, 0u64));
    for (id, correct) in questions {
        let slice = if matched.contains(id) {
            &mut dirty
        } else {
            &mut clean
        };
        slice.0 += u64::from(correct);
        slice.1 += 1;
        if let Some(m) = matched.get(id) {
            scored.insert(*m);
        }
    }
    let proportion = |(k, n): (u64, u64)| {
        (n > 0)
            .then(|| stats::wilson(k, n, DEFAULT_CONFIDENCE).ok())
            .flatten()
    };
    let n = (clean.1 + dirty.1) as usize;
    let difference = (clean.1 > 0 && dirty.1 > 0)
        .then(|| {
            stats::newcombe_independent(dirty.0, dirty.1, clean.0, clean.1, DEFAULT_CONFIDENCE)
        })
        .and_then(Result::ok);
    let full_minus_clean = match (&difference, dirty.1) {
        (Some(d), _) => {
            let share = dirty.1 as f64 / n as f64;
            Some(Interval {
                n,
                estimate: share * d.estimate,
                low: share * d.low,
                high: share * d.high,
                ..d.clone()
            })
        }
        // Nothing matched: the clean slice is the whole set.
        (None, 0) if n > 0 => Some(Interval {
            n,
            estimate: 0.0,
            low: 0.0,
            high: 0.0,
            confidence: DEFAULT_CONFIDENCE,
            method: stats::Method::NewcombeIndependent,
        }),
        _ => None,
    };
    Contamination {
        reference: overlap.reference.clone(),
        max_distance: overlap.max_distance,
        n,
        n_contaminated: dirty.1 as usize,
        matched_not_scored: matched.len() - scored.len(),
        full: proportion((clean.0 + dirty.0, n as u64)),
        clean: proportion(clean),
        contaminated: proportion(dirty),
        contaminated_minus_clean: difference,
        full_minus_clean,
    }
}

/// Clean-slice accuracy of every task of a run that `overlap` checked (tasks it did not
/// check are left out: their slices are unknown, not clean). Numeric tasks without a
/// correctness rule have no accuracy and are left out too.
pub fn run_contamination(
    manifest: &Manifest,
    predictions: &[Prediction],
    overlap: &OverlapReport,
) -> BTreeMap<String, Contamination> {
    manifest
        .tasks
        .iter()
        .filter(|t| overlap.summary.contains_key(&t.name))
        .filter_map(|record| {
            let preds: Vec<&Prediction> = predictions
                .iter()
                .filter(|p| p.task == record.name && p.is_headline())
                .collect();
            let has_correctness = preds.iter().any(|p| p.correct.is_some());
            if !has_correctness {
                return None;
            }
            Some((
                record.name.clone(),
                task_contamination(record, &preds, overlap),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlap::{MatchKind, OverlapRecord, TaskOverlap};

    fn prediction(id: &str, correct: bool) -> Prediction {
        serde_json::from_value(serde_json::json!({
            "id": id, "task": "t", "rotation": 0,
            "outcome": if correct { "correct" } else { "wrong" },
            "correct": correct, "parsed": "A", "target": "A"
        }))
        .unwrap()
    }

    fn overlap(ids: &[&str]) -> OverlapReport {
        OverlapReport {
            reference: "train".into(),
            reference_images: 10,
            hash: "h".into(),
            max_distance: 10,
            summary: BTreeMap::from([(
                "t".to_string(),
                TaskOverlap {
                    items: 10,
                    matched_items: ids.len(),
                    images: 10,
                    exact: 0,
                    near: ids.len(),
                },
            )]),
            matches: ids
                .iter()
                .map(|id| OverlapRecord {
                    task: "t".into(),
                    item_id: id.to_string(),
                    image: format!("{id}.jpg"),
                    reference: "train/x.jpg".into(),
                    kind: MatchKind::Near,
                    distance: 3,
                })
                .collect(),
            unreadable: vec![],
        }
    }

    fn record() -> TaskRecord {
        serde_json::from_value(serde_json::json!({
            "name": "t", "version": "1", "fingerprint": "f", "style": "multiple_choice"
        }))
        .unwrap()
    }

    #[test]
    fn slices_split_by_matched_items_and_the_difference_scales_by_the_share() {
        // 10 questions: the 4 matched are all right, 3 of the 6 clean are right.
        let preds: Vec<Prediction> = (0..10)
            .map(|i| prediction(&format!("q{i}"), i < 4 || i % 2 == 0))
            .collect();
        let refs: Vec<&Prediction> = preds.iter().collect();
        let c = task_contamination(&record(), &refs, &overlap(&["q0", "q1", "q2", "q3", "zz"]));
        assert_eq!((c.n, c.n_contaminated, c.matched_not_scored), (10, 4, 1));
        assert_eq!(c.full.as_ref().unwrap().estimate, 0.7);
        assert_eq!(c.clean.as_ref().unwrap().estimate, 0.5);
        assert_eq!(c.contaminated.as_ref().unwrap().estimate, 1.0);
        let d = c.contaminated_minus_clean.unwrap();
        let expected = stats::newcombe_independent(4, 4, 3, 6, 0.95).unwrap();
        assert_eq!(d, expected);
        let f = c.full_minus_clean.unwrap();
        assert!((f.estimate - 0.2).abs() < 1e-12);
        assert!((f.low - 0.4 * d.low).abs() < 1e-12 && (f.high - 0.4 * d.high).abs() < 1e-12);
    }

    #[test]
    fn nothing_matched_means_the_clean_slice_is_the_whole_set() {
        let preds: Vec<Prediction> = (0..5)
            .map(|i| prediction(&format!("q{i}"), i > 1))
            .collect();
        let refs: Vec<&Prediction> = preds.iter().collect();
        let c = task_contamination(&record(), &refs, &overlap(&[]));
        assert_eq!(c.full, c.clean);
        assert!(c.contaminated.is_none() && c.contaminated_minus_clean.is_none());
        assert_eq!(c.full_minus_clean.unwrap().estimate, 0.0);
    }
}
