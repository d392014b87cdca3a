//! Prompt sensitivity (`docs/prompt-sensitivity.md`): a task with `[question] variants`
//! asks every item once per phrasing; this compares the phrasings on the items answered
//! under all of them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::run_folder::{fold_rotations, Prediction, TaskRecord};
use crate::stats::{self, Interval, PairedComparison, DEFAULT_CONFIDENCE};

/// One phrasing's accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantAccuracy {
    pub variant: usize,
    /// The question text of the variant (variant 0 is `question.text`).
    pub phrasing: String,
    /// On the compared items (the same items for every variant), with a Wilson interval.
    pub accuracy: Interval,
}

/// The `prompt_sensitivity` block of a task in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSensitivity {
    pub variants: Vec<VariantAccuracy>,
    /// Items scored under every variant (a circular item: all rotations of each variant);
    /// everything in this block is computed on them.
    pub n_items: usize,
    /// Items left out: missing, or an error, under at least one variant.
    pub n_left_out: usize,
    /// Highest minus lowest variant accuracy.
    pub spread: f64,
    /// Share of items whose correctness is the same under every variant (Wilson interval).
    pub consistency: Interval,
    /// The variants with the highest and the lowest accuracy (the first of ties; `worst`
    /// differs from `best` whenever there are two variants).
    pub best: usize,
    pub worst: usize,
    /// Best against worst on the same items: difference with Newcombe's paired interval,
    /// exact McNemar test.
    pub best_vs_worst: PairedComparison,
}

/// The prompt-sensitivity block of one task from all its lines (every variant); `None` when
/// the task has no variants or no item was scored under every one.
pub fn prompt_sensitivity(record: &TaskRecord, preds: &[&Prediction]) -> Option<PromptSensitivity> {
    let k = record.variants.len();
    if k < 2 {
        return None;
    }
    let mut by_variant: Vec<Vec<&Prediction>> = vec![Vec::new(); k];
    for p in preds {
        if let Some(v) = by_variant.get_mut(p.variant) {
            v.push(p);
        }
    }
    // Each variant folded as the headline is (rotations of a circular item together).
    let correct: Vec<HashMap<&str, bool>> = by_variant
        .iter()
        .map(|lines| {
            fold_rotations(lines, record.circular)
                .0
                .into_iter()
                .map(|s| (s.first.id.as_str(), s.correct))
                .collect()
        })
        .collect();
    let mut all_ids: BTreeMap<&str, ()> = BTreeMap::new();
    for p in preds {
        all_ids.insert(p.id.as_str(), ());
    }
    let items: Vec<Vec<bool>> = all_ids
        .keys()
        .filter_map(|id| correct.iter().map(|c| c.get(id).copied()).collect())
        .collect();
    let n = items.len();
    if n == 0 {
        return None;
    }
    let column = |v: usize| items.iter().map(|row| row[v]).collect::<Vec<bool>>();
    let wilson = |k: usize| stats::wilson(k as u64, n as u64, DEFAULT_CONFIDENCE).ok();
    let variants: Vec<VariantAccuracy> = (0..k)
        .map(|v| {
            Some(VariantAccuracy {
                variant: v,
                phrasing: record.variants[v].clone(),
                accuracy: wilson(column(v).iter().filter(|c| **c).count())?,
            })
        })
        .collect::<Option<_>>()?;
    let acc = |v: usize| variants[v].accuracy.estimate;
    let best = (0..k).fold(0, |b, v| if acc(v) > acc(b) { v } else { b });
    let worst = (0..k)
        .filter(|v| *v != best)
        .fold(None, |w: Option<usize>, v| match w {
            Some(w) if acc(w) <= acc(v) => Some(w),
            _ => Some(v),
        })?;
    let consistent = items
        .iter()
        .filter(|row| row.iter().all(|c| *c == row[0]))
        .count();
    Some(PromptSensitivity {
        n_items: n,
        n_left_out: all_ids.len() - n,
        spread: acc(best) - acc(worst),
        consistency: wilson(consistent)?,
        best,
        worst,
        best_vs_worst: stats::compare_paired(
            &column(best),
            &column(worst),
            DEFAULT_CONFIDENCE,
            1.0 - DEFAULT_CONFIDENCE,
            0.8,
        )
        .ok()?,
        variants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_folder::Outcome;

    fn line(id: &str, variant: usize, rotation: usize, right: Option<bool>) -> Prediction {
        let outcome = match right {
            Some(true) => "correct",
            Some(false) => "wrong",
            None => "error",
        };
        let v = serde_json::json!({"id": id, "task": "t", "variant": variant, "rotation": rotation,
            "parsed": "A", "target": "A", "correct": right, "outcome": outcome});
        serde_json::from_value(v).unwrap()
    }

    fn record(circular: bool) -> TaskRecord {
        TaskRecord {
            name: "t".into(),
            style: "multiple_choice".into(),
            circular,
            variants: vec!["Q0?".into(), "Q1?".into(), "Q2?".into()],
            ..Default::default()
        }
    }

    #[test]
    fn per_variant_accuracy_spread_consistency_and_paired_test() {
        // Items a..f under three variants; f errs under variant 2 and is left out.
        let table = [
            ("a", [true, true, true]),
            ("b", [true, false, true]),
            ("c", [true, false, false]),
            ("d", [false, false, false]),
            ("e", [true, true, false]),
        ];
        let mut lines = vec![];
        for (id, row) in table {
            for (v, ok) in row.iter().enumerate() {
                lines.push(line(id, v, 0, Some(*ok)));
            }
        }
        lines.extend([line("f", 0, 0, Some(true)), line("f", 1, 0, Some(true))]);
        lines.push(line("f", 2, 0, None));
        assert_eq!(lines[lines.len() - 1].outcome, Outcome::Error);
        let refs: Vec<&Prediction> = lines.iter().collect();
        let s = prompt_sensitivity(&record(false), &refs).unwrap();
        assert_eq!((s.n_items, s.n_left_out), (5, 1));
        let accs: Vec<f64> = s.variants.iter().map(|v| v.accuracy.estimate).collect();
        assert_eq!(accs, vec![0.8, 0.4, 0.4]);
        assert_eq!(s.variants[2].phrasing, "Q2?");
        assert_eq!((s.best, s.worst), (0, 1));
        assert!((s.spread - 0.4).abs() < 1e-12);
        // a and d agree across variants: 2 of 5.
        assert_eq!(s.consistency.estimate, 0.4);
        // Best (0) vs worst (1): b, c right only under 0; none right only under 1.
        let c = &s.best_vs_worst.counts;
        assert_eq!(
            (c.both, c.only_first, c.only_second, c.neither),
            (2, 2, 0, 1)
        );
        assert!((s.best_vs_worst.mcnemar.p_value - 0.5).abs() < 1e-12);
    }

    #[test]
    fn circular_items_fold_rotations_within_each_variant() {
        let mut lines = vec![];
        for v in 0..3 {
            // Variant 1 misses one rotation: the item is wrong under it.
            lines.push(line("a", v, 0, Some(true)));
            lines.push(line("a", v, 1, Some(v != 1)));
        }
        let refs: Vec<&Prediction> = lines.iter().collect();
        let s = prompt_sensitivity(&record(true), &refs).unwrap();
        assert_eq!(s.n_items, 1);
        let accs: Vec<f64> = s.variants.iter().map(|v| v.accuracy.estimate).collect();
        assert_eq!(accs, vec![1.0, 0.0, 1.0]);
        assert_eq!(s.consistency.estimate, 0.0);
        // Without variants there is no block.
        let mut plain = record(false);
        plain.variants.clear();
        assert!(prompt_sensitivity(&plain, &refs).is_none());
    }
}
