//! Fairness audit: per-group and intersectional metrics, disparity measures with bootstrap
//! intervals, and fairlearn's binary-classification fairness metrics.
//!
//! Inputs are plain slices (per-item correctness, labels, numbers) plus one label column per
//! group field, so the audit command and the gate can run this on any run. Groups are every
//! level of a field, and with [`groupings_with_intersections`] every combination of fields,
//! keyed like `"Black × Female"`. Combinations of observed levels with no items are listed as
//! empty intersections, never silently dropped. An empty label means "not recorded": the item
//! is left out of that field's groups and counted as missing.
//!
//! Groups smaller than `min_group_size` (default 30) are reported with a `small` flag but
//! left out of every disparity measure and of the chi-square test, whose results on a handful
//! of items would be noise. The overall value used by `*_to_overall` measures is taken over
//! all grouped items, small groups included, as fairlearn computes `overall` on all data.
//!
//! Bootstrap intervals resample within groups (each group keeps its size). For metrics that
//! depend on a group only through cell counts (correct/incorrect; TP/FN/FP/TN), resampling
//! the group's items is exactly a multinomial draw of those counts, which is what is drawn:
//! O(groups) per resample, independent of the number of items. See `docs/statistics.md`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::input_error;
use crate::stats::bootstrap::{bootstrap_mean, multinomial_counts, resample_rng, BootstrapConfig};
use crate::stats::hypothesis::{correctness_by_group, ChiSquare};
use crate::stats::intervals::wilson;
use crate::stats::multiple::holm;
use crate::stats::quantile_sorted;
use crate::stats::Interval;

/// Groups smaller than this are flagged and excluded from disparity measures by default.
pub const DEFAULT_MIN_GROUP_SIZE: usize = 30;

/// Joins field levels in an intersection key: `"Black × Female"`.
pub const INTERSECTION_SEPARATOR: &str = " × ";

/// Above this many level combinations, empty intersections are counted but not listed.
const EMPTY_LIST_LIMIT: u64 = 10_000;

/// Minimum group size and bootstrap settings for an audit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FairnessOptions {
    pub min_group_size: usize,
    pub bootstrap: BootstrapConfig,
}

impl Default for FairnessOptions {
    fn default() -> Self {
        FairnessOptions {
            min_group_size: DEFAULT_MIN_GROUP_SIZE,
            bootstrap: BootstrapConfig::default(),
        }
    }
}

/// Items assigned to the groups of one field or one intersection of fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grouping {
    /// Field names joined with the separator, e.g. `"race × gender"`.
    pub name: String,
    pub fields: Vec<String>,
    /// Group keys, in order of the fields' sorted levels.
    pub keys: Vec<String>,
    /// Group index of each item; `None` when any of its fields is missing.
    pub assignment: Vec<Option<u32>>,
    /// Combinations of observed levels that no item has (intersections only); empty when
    /// there are more than 10,000 combinations (see `empty_count`).
    pub empty_intersections: Vec<String>,
    pub empty_count: u64,
    /// Items with at least one of the fields missing (empty label).
    pub missing: usize,
}

impl Grouping {
    /// Number of items in each group.
    pub fn sizes(&self) -> Vec<u64> {
        let mut sizes = vec![0u64; self.keys.len()];
        for g in self.assignment.iter().flatten() {
            sizes[*g as usize] += 1;
        }
        sizes
    }
}

/// One field, with its levels sorted and each item's level index (`u32::MAX` = missing).
struct EncodedField {
    name: String,
    levels: Vec<String>,
    codes: Vec<u32>,
}

fn encode_field<S: AsRef<str>>(name: &str, labels: &[S]) -> EncodedField {
    let mut first_seen: HashMap<&str, u32> = HashMap::new();
    let mut seen_order: Vec<&str> = Vec::new();
    let mut codes = Vec::with_capacity(labels.len());
    for l in labels {
        let l = l.as_ref();
        if l.is_empty() {
            codes.push(u32::MAX);
            continue;
        }
        let next = first_seen.len() as u32;
        let c = *first_seen.entry(l).or_insert_with(|| {
            seen_order.push(l);
            next
        });
        codes.push(c);
    }
    let mut sorted: Vec<(usize, &str)> = seen_order.iter().copied().enumerate().collect();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    let mut remap = vec![0u32; sorted.len()];
    for (new, (old, _)) in sorted.iter().enumerate() {
        remap[*old] = new as u32;
    }
    for c in codes.iter_mut() {
        if *c != u32::MAX {
            *c = remap[*c as usize];
        }
    }
    EncodedField {
        name: name.to_string(),
        levels: sorted.into_iter().map(|(_, s)| s.to_string()).collect(),
        codes,
    }
}

fn check_columns<S: AsRef<str>>(fields: &[(&str, &[S])], n: Option<usize>) -> Result<usize> {
    let Some((_, first)) = fields.first() else {
        return Err(input_error("a grouping needs at least one group field"));
    };
    let n = n.unwrap_or(first.len());
    for (name, col) in fields {
        if col.len() != n {
            return Err(input_error(format!(
                "group field \"{name}\" has {} labels for {n} items",
                col.len()
            )));
        }
    }
    Ok(n)
}

fn combine(encoded: &[&EncodedField], n: usize) -> Result<Grouping> {
    let radix: Vec<u64> = encoded.iter().map(|f| f.levels.len() as u64).collect();
    let product = radix
        .iter()
        .try_fold(1u64, |acc, &r| acc.checked_mul(r.max(1)))
        .ok_or_else(|| input_error("too many combinations of group levels"))?;
    let mut combo_of_item: Vec<Option<u64>> = Vec::with_capacity(n);
    let mut missing = 0usize;
    for i in 0..n {
        let mut code = 0u64;
        let mut ok = true;
        for (f, &r) in encoded.iter().zip(&radix) {
            let c = f.codes[i];
            if c == u32::MAX {
                ok = false;
                break;
            }
            code = code * r + c as u64;
        }
        if ok {
            combo_of_item.push(Some(code));
        } else {
            missing += 1;
            combo_of_item.push(None);
        }
    }
    // Occupied combinations in ascending code order = lexicographic order of sorted levels.
    let mut occupied: BTreeMap<u64, u32> = BTreeMap::new();
    for c in combo_of_item.iter().flatten() {
        occupied.entry(*c).or_insert(0);
    }
    for (i, v) in occupied.values_mut().enumerate() {
        *v = i as u32;
    }
    let key_of = |mut code: u64| -> String {
        let mut parts = vec![""; encoded.len()];
        for (j, f) in encoded.iter().enumerate().rev() {
            let r = radix[j];
            parts[j] = &f.levels[(code % r) as usize];
            code /= r;
        }
        parts.join(INTERSECTION_SEPARATOR)
    };
    let keys: Vec<String> = occupied.keys().map(|&c| key_of(c)).collect();
    let assignment = combo_of_item
        .iter()
        .map(|c| c.map(|c| occupied[&c]))
        .collect();
    let empty_count = if encoded.len() > 1 && radix.iter().all(|&r| r > 0) {
        product - occupied.len() as u64
    } else {
        0
    };
    let empty_intersections = if empty_count > 0 && product <= EMPTY_LIST_LIMIT {
        (0..product)
            .filter(|c| !occupied.contains_key(c))
            .map(key_of)
            .collect()
    } else {
        Vec::new()
    };
    let fields: Vec<String> = encoded.iter().map(|f| f.name.clone()).collect();
    Ok(Grouping {
        name: fields.join(INTERSECTION_SEPARATOR),
        fields,
        keys,
        assignment,
        empty_intersections,
        empty_count,
        missing,
    })
}

/// Group items by the intersection of all the given fields (one field: its levels).
/// Each field is `(name, one label per item)`.
pub fn group_by<S: AsRef<str>>(fields: &[(&str, &[S])]) -> Result<Grouping> {
    let n = check_columns(fields, None)?;
    let encoded: Vec<EncodedField> = fields
        .iter()
        .map(|(name, col)| encode_field(name, col))
        .collect();
    combine(&encoded.iter().collect::<Vec<_>>(), n)
}

/// Every single field, then every intersection of two fields, and so on up to all of them,
/// in the order the fields are given.
pub fn groupings_with_intersections<S: AsRef<str>>(
    fields: &[(&str, &[S])],
) -> Result<Vec<Grouping>> {
    let n = check_columns(fields, None)?;
    if fields.len() > 16 {
        return Err(input_error(format!(
            "{} group fields would make {} intersections; give at most 16",
            fields.len(),
            (1u64 << fields.len()) - 1
        )));
    }
    let encoded: Vec<EncodedField> = fields
        .iter()
        .map(|(name, col)| encode_field(name, col))
        .collect();
    let k = encoded.len();
    let mut subsets: Vec<u32> = (1u32..(1 << k)).collect();
    // By size, then by the positions of the chosen fields: race, gender, race × gender, ...
    subsets.sort_by_key(|&m| {
        (
            m.count_ones(),
            (0..k).filter(|j| m & (1 << j) != 0).collect::<Vec<_>>(),
        )
    });
    subsets
        .par_iter()
        .map(|&mask| {
            let chosen: Vec<&EncodedField> = (0..k)
                .filter(|j| mask & (1 << j) != 0)
                .map(|j| &encoded[j])
                .collect();
            combine(&chosen, n)
        })
        .collect()
}

/// Accuracy and error of one group, with Wilson intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupAccuracy {
    pub key: String,
    pub n: u64,
    pub correct: u64,
    pub accuracy: Interval,
    pub error: Interval,
    /// Smaller than the minimum group size: reported, but excluded from disparities.
    pub small: bool,
}

/// Per-group accuracy and error for a grouping.
pub fn group_accuracy(
    correct: &[bool],
    grouping: &Grouping,
    options: &FairnessOptions,
) -> Result<Vec<GroupAccuracy>> {
    if correct.len() != grouping.assignment.len() {
        return Err(input_error(format!(
            "{} correctness values for {} grouped items",
            correct.len(),
            grouping.assignment.len()
        )));
    }
    let sizes = grouping.sizes();
    let mut right = vec![0u64; sizes.len()];
    for (c, g) in correct.iter().zip(&grouping.assignment) {
        if let (true, Some(g)) = (c, g) {
            right[*g as usize] += 1;
        }
    }
    let conf = options.bootstrap.confidence;
    grouping
        .keys
        .iter()
        .enumerate()
        .map(|(g, key)| {
            Ok(GroupAccuracy {
                key: key.clone(),
                n: sizes[g],
                correct: right[g],
                accuracy: wilson(right[g], sizes[g], conf)?,
                error: wilson(sizes[g] - right[g], sizes[g], conf)?,
                small: (sizes[g] as usize) < options.min_group_size,
            })
        })
        .collect()
}

/// A disparity measure with its bootstrap interval. `estimate` is `None` (never inf or NaN)
/// when the measure is undefined, and `reason` says why; the interval is `None` when the
/// measure is undefined in some bootstrap resamples, again with a reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub name: String,
    pub estimate: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub confidence: f64,
    /// Number of groups the measure was computed over (those with n ≥ min group size).
    pub groups: usize,
    pub reason: Option<String>,
}

/// A measure's value or the reason it is undefined.
type Value = std::result::Result<f64, String>;

/// fairlearn's `between_groups` / `to_overall` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Against {
    Groups,
    Overall,
}

/// fairlearn `MetricFrame.difference`: max − min, or max |g − overall|.
fn fl_difference(values: &[f64], overall: f64, against: Against) -> Value {
    if values.is_empty() {
        return Err("no group is large enough".into());
    }
    Ok(match against {
        Against::Groups => max(values) - min(values),
        Against::Overall => values
            .iter()
            .map(|v| (v - overall).abs())
            .fold(0.0, f64::max),
    })
}

/// fairlearn `MetricFrame.ratio`: min/max, or min over groups of g/overall (inverted when
/// above 1).
fn fl_ratio(values: &[f64], overall: f64, against: Against) -> Value {
    if values.is_empty() {
        return Err("no group is large enough".into());
    }
    match against {
        Against::Groups => {
            let hi = max(values);
            if hi == 0.0 {
                Err("every group's value is zero, so min/max is 0/0".into())
            } else {
                Ok(min(values) / hi)
            }
        }
        Against::Overall => {
            if overall == 0.0 {
                return Err("the overall value is zero".into());
            }
            let mut worst = f64::INFINITY;
            for v in values {
                let r = v / overall;
                let r = if r > 1.0 { 1.0 / r } else { r };
                worst = worst.min(r);
            }
            Ok(worst)
        }
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Names of the accuracy disparity measures, in output order.
pub const ACCURACY_MEASURES: [&str; 7] = [
    "difference_between_groups",
    "difference_to_overall",
    "ratio_between_groups",
    "ratio_to_overall",
    "worst_group_accuracy",
    "accuracy_std",
    "skewed_error_ratio",
];

/// Accuracy measures from per-group `[correct, wrong]` counts; `eligible[g]` says whether
/// group `g` is large enough to count, `keys` names groups in reasons.
fn accuracy_values(cells: &[[u64; 2]], eligible: &[bool], keys: &[String]) -> Vec<Value> {
    let total: u64 = cells.iter().map(|c| c[0] + c[1]).sum();
    let overall = if total == 0 {
        f64::NAN
    } else {
        cells.iter().map(|c| c[0]).sum::<u64>() as f64 / total as f64
    };
    let mut acc = Vec::new();
    let mut used_keys = Vec::new();
    for (g, c) in cells.iter().enumerate() {
        if eligible[g] {
            acc.push(c[0] as f64 / (c[0] + c[1]) as f64);
            used_keys.push(&keys[g]);
        }
    }
    if acc.is_empty() {
        return vec![Err("no group is large enough".to_string()); ACCURACY_MEASURES.len()];
    }
    let mean = acc.iter().sum::<f64>() / acc.len() as f64;
    let std = (acc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / acc.len() as f64).sqrt();
    let skewed = {
        let errs: Vec<f64> = acc.iter().map(|a| 1.0 - a).collect();
        let lo = min(&errs);
        if lo == 0.0 {
            let g = errs.iter().position(|&e| e == 0.0).unwrap_or(0);
            Err(format!(
                "group \"{}\" has zero error, so max/min error is undefined",
                used_keys[g]
            ))
        } else {
            Ok(max(&errs) / lo)
        }
    };
    vec![
        fl_difference(&acc, overall, Against::Groups),
        fl_difference(&acc, overall, Against::Overall),
        fl_ratio(&acc, overall, Against::Groups),
        fl_ratio(&acc, overall, Against::Overall),
        Ok(min(&acc)),
        Ok(std),
        skewed,
    ]
}

/// Run the within-group count bootstrap for measures computed by `values_of` from per-group
/// cell counts, and assemble [`Measure`]s.
fn measures_with_bootstrap<const K: usize, F>(
    names: &[&str],
    cells: &[[u64; K]],
    eligible: &[bool],
    config: &BootstrapConfig,
    values_of: F,
) -> Result<Vec<Measure>>
where
    F: Fn(&[[u64; K]]) -> Vec<Value> + Sync,
{
    config.check()?;
    let point = values_of(cells);
    let weights: Vec<[f64; K]> = cells.iter().map(|c| c.map(|x| x as f64)).collect();
    let reps: Vec<Vec<Value>> = (0..config.resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = resample_rng(config.seed, b);
            let mut drawn = vec![[0u64; K]; cells.len()];
            for (g, c) in cells.iter().enumerate() {
                let n: u64 = c.iter().sum();
                multinomial_counts(&mut rng, n, &weights[g], &mut drawn[g]);
            }
            values_of(&drawn)
        })
        .collect();
    let groups = eligible.iter().filter(|e| **e).count();
    let alpha = 1.0 - config.confidence;
    let mut out = Vec::with_capacity(names.len());
    for (m, name) in names.iter().enumerate() {
        let mut measure = Measure {
            name: name.to_string(),
            estimate: None,
            low: None,
            high: None,
            confidence: config.confidence,
            groups,
            reason: None,
        };
        match &point[m] {
            Err(why) => measure.reason = Some(why.clone()),
            Ok(v) => {
                measure.estimate = Some(*v);
                let mut sample: Vec<f64> = Vec::with_capacity(reps.len());
                let mut undefined = 0usize;
                for r in &reps {
                    match &r[m] {
                        Ok(x) if x.is_finite() => sample.push(*x),
                        _ => undefined += 1,
                    }
                }
                if undefined > 0 {
                    measure.reason = Some(format!(
                        "no interval: the measure is undefined in {undefined} of {} bootstrap resamples",
                        reps.len()
                    ));
                } else {
                    sample.sort_by(f64::total_cmp);
                    measure.low = Some(quantile_sorted(&sample, alpha / 2.0));
                    measure.high = Some(quantile_sorted(&sample, 1.0 - alpha / 2.0));
                }
            }
        }
        out.push(measure);
    }
    Ok(out)
}

/// Accuracy disparity measures for per-group results: fairlearn-style difference and ratio
/// (between groups and to overall), worst-group accuracy, population std of group
/// accuracies and the skewed error ratio, each with a within-group bootstrap interval.
pub fn accuracy_disparities(
    groups: &[GroupAccuracy],
    options: &FairnessOptions,
) -> Result<Vec<Measure>> {
    let cells: Vec<[u64; 2]> = groups
        .iter()
        .map(|g| [g.correct, g.n - g.correct])
        .collect();
    let eligible: Vec<bool> = groups.iter().map(|g| !g.small).collect();
    let keys: Vec<String> = groups.iter().map(|g| g.key.clone()).collect();
    measures_with_bootstrap(
        &ACCURACY_MEASURES,
        &cells,
        &eligible,
        &options.bootstrap,
        |c| accuracy_values(c, &eligible, &keys),
    )
}

/// Binary-task rates of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryGroup {
    pub key: String,
    pub n: u64,
    pub positives: u64,
    pub negatives: u64,
    /// Fraction predicted positive.
    pub selection_rate: f64,
    /// TP/(TP+FN); 0 when the group has no positives, as fairlearn (via scikit-learn's
    /// normalised confusion matrix) reports it.
    pub true_positive_rate: f64,
    /// FP/(FP+TN); 0 when the group has no negatives.
    pub false_positive_rate: f64,
    pub small: bool,
}

/// fairlearn's binary fairness metrics for one grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryFairness {
    pub grouping: String,
    pub groups: Vec<BinaryGroup>,
    pub measures: Vec<Measure>,
}

/// Names of the binary fairness measures, in output order. Plain names use fairlearn's
/// default `method="between_groups"`; `_to_overall` names use `method="to_overall"`.
pub const BINARY_MEASURES: [&str; 10] = [
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "demographic_parity_difference_to_overall",
    "demographic_parity_ratio_to_overall",
    "equalized_odds_difference_to_overall",
    "equalized_odds_ratio_to_overall",
    "equal_opportunity_difference_to_overall",
];

fn rate(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Rates from `[tp, fn, fp, tn]`: (selection rate, TPR, FPR).
fn binary_rates(c: &[u64; 4]) -> (f64, f64, f64) {
    let [tp, fneg, fp, tn] = *c;
    (
        rate(tp + fp, tp + fneg + fp + tn),
        rate(tp, tp + fneg),
        rate(fp, fp + tn),
    )
}

fn binary_values(cells: &[[u64; 4]], eligible: &[bool]) -> Vec<Value> {
    let mut total = [0u64; 4];
    for c in cells {
        for k in 0..4 {
            total[k] += c[k];
        }
    }
    let (sel_all, tpr_all, fpr_all) = binary_rates(&total);
    let (mut sel, mut tpr, mut fpr) = (Vec::new(), Vec::new(), Vec::new());
    for (c, &e) in cells.iter().zip(eligible) {
        if e {
            let (s, t, f) = binary_rates(c);
            sel.push(s);
            tpr.push(t);
            fpr.push(f);
        }
    }
    let mut out = Vec::with_capacity(BINARY_MEASURES.len());
    for against in [Against::Groups, Against::Overall] {
        let dp_d = fl_difference(&sel, sel_all, against);
        let dp_r = fl_ratio(&sel, sel_all, against);
        let tpr_d = fl_difference(&tpr, tpr_all, against);
        let fpr_d = fl_difference(&fpr, fpr_all, against);
        let eo_d = match (&tpr_d, &fpr_d) {
            (Ok(a), Ok(b)) => Ok(a.max(*b)),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        let eo_r = match (
            fl_ratio(&tpr, tpr_all, against),
            fl_ratio(&fpr, fpr_all, against),
        ) {
            (Ok(a), Ok(b)) => Ok(a.min(b)),
            (Err(e), _) => Err(format!("true positive rate ratio: {e}")),
            (_, Err(e)) => Err(format!("false positive rate ratio: {e}")),
        };
        out.extend([dp_d, dp_r, eo_d, eo_r, tpr_d]);
    }
    out
}

/// Demographic parity, equalized odds and equal opportunity, as fairlearn defines them,
/// for a binary task (`true` = positive class), each with a within-group bootstrap interval.
pub fn binary_fairness(
    truth: &[bool],
    predicted: &[bool],
    grouping: &Grouping,
    options: &FairnessOptions,
) -> Result<BinaryFairness> {
    if truth.len() != predicted.len() || truth.len() != grouping.assignment.len() {
        return Err(input_error(format!(
            "binary fairness: {} true labels, {} predictions, {} grouped items",
            truth.len(),
            predicted.len(),
            grouping.assignment.len()
        )));
    }
    let mut cells = vec![[0u64; 4]; grouping.keys.len()];
    for ((&t, &p), g) in truth.iter().zip(predicted).zip(&grouping.assignment) {
        if let Some(g) = g {
            let k = match (t, p) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            cells[*g as usize][k] += 1;
        }
    }
    let eligible: Vec<bool> = cells
        .iter()
        .map(|c| c.iter().sum::<u64>() as usize >= options.min_group_size)
        .collect();
    let groups = grouping
        .keys
        .iter()
        .zip(&cells)
        .zip(&eligible)
        .map(|((key, c), &e)| {
            let (s, t, f) = binary_rates(c);
            BinaryGroup {
                key: key.clone(),
                n: c.iter().sum(),
                positives: c[0] + c[1],
                negatives: c[2] + c[3],
                selection_rate: s,
                true_positive_rate: t,
                false_positive_rate: f,
                small: !e,
            }
        })
        .collect();
    let measures = measures_with_bootstrap(
        &BINARY_MEASURES,
        &cells,
        &eligible,
        &options.bootstrap,
        |c| binary_values(c, &eligible),
    )?;
    Ok(BinaryFairness {
        grouping: grouping.name.clone(),
        groups,
        measures,
    })
}

/// Recall and precision of one class within one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    /// Items of this class in the group.
    pub support: u64,
    /// Items predicted as this class in the group.
    pub predicted: u64,
    pub true_positives: u64,
    /// Wilson interval on TP/support; `None` when the class does not occur in the group.
    pub recall: Option<Interval>,
    /// Wilson interval on TP/predicted; `None` when the class is never predicted there.
    pub precision: Option<Interval>,
}

/// Per-class metrics of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupClassMetrics {
    pub key: String,
    pub n: u64,
    pub small: bool,
    pub classes: Vec<ClassMetrics>,
}

/// Per-class recall and precision in every group, over the sorted union of all labels.
pub fn per_class_by_group<S: AsRef<str>>(
    truth: &[S],
    predicted: &[S],
    grouping: &Grouping,
    options: &FairnessOptions,
) -> Result<Vec<GroupClassMetrics>> {
    if truth.len() != predicted.len() || truth.len() != grouping.assignment.len() {
        return Err(input_error(format!(
            "per-class metrics: {} true labels, {} predictions, {} grouped items",
            truth.len(),
            predicted.len(),
            grouping.assignment.len()
        )));
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for s in truth.iter().chain(predicted) {
        index.entry(s.as_ref()).or_insert(0);
    }
    for (i, v) in index.values_mut().enumerate() {
        *v = i;
    }
    let k = index.len();
    // Per group and class: (support, predicted, tp).
    let mut counts = vec![vec![(0u64, 0u64, 0u64); k]; grouping.keys.len()];
    for ((t, p), g) in truth.iter().zip(predicted).zip(&grouping.assignment) {
        let Some(g) = g else { continue };
        let (ti, pi) = (index[t.as_ref()], index[p.as_ref()]);
        let row = &mut counts[*g as usize];
        row[ti].0 += 1;
        row[pi].1 += 1;
        if ti == pi {
            row[ti].2 += 1;
        }
    }
    let labels: Vec<&str> = index.keys().copied().collect();
    let conf = options.bootstrap.confidence;
    let sizes = grouping.sizes();
    grouping
        .keys
        .iter()
        .enumerate()
        .map(|(g, key)| {
            let classes = labels
                .iter()
                .zip(&counts[g])
                .map(|(label, &(support, pred, tp))| {
                    Ok(ClassMetrics {
                        label: label.to_string(),
                        support,
                        predicted: pred,
                        true_positives: tp,
                        recall: if support > 0 {
                            Some(wilson(tp, support, conf)?)
                        } else {
                            None
                        },
                        precision: if pred > 0 {
                            Some(wilson(tp, pred, conf)?)
                        } else {
                            None
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(GroupClassMetrics {
                key: key.clone(),
                n: sizes[g],
                small: (sizes[g] as usize) < options.min_group_size,
                classes,
            })
        })
        .collect()
}

/// Mean absolute error of one group with a bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMae {
    pub key: String,
    pub n: u64,
    pub small: bool,
    pub mae: Interval,
}

/// Per-group mean absolute error for a numeric task, with a percentile bootstrap interval
/// (resampling the group's items; see [`bootstrap_mean`] for the exact shortcut used when the
/// errors take few distinct values).
pub fn mae_by_group(
    truth: &[f64],
    predicted: &[f64],
    grouping: &Grouping,
    options: &FairnessOptions,
) -> Result<Vec<GroupMae>> {
    if truth.len() != predicted.len() || truth.len() != grouping.assignment.len() {
        return Err(input_error(format!(
            "MAE: {} true values, {} predictions, {} grouped items",
            truth.len(),
            predicted.len(),
            grouping.assignment.len()
        )));
    }
    let mut errors: Vec<Vec<f64>> = vec![Vec::new(); grouping.keys.len()];
    for (i, ((t, p), g)) in truth
        .iter()
        .zip(predicted)
        .zip(&grouping.assignment)
        .enumerate()
    {
        if !t.is_finite() || !p.is_finite() {
            return Err(input_error(format!(
                "item {i}: true value {t} or prediction {p} is not finite"
            )));
        }
        if let Some(g) = g {
            errors[*g as usize].push((t - p).abs());
        }
    }
    errors
        .par_iter()
        .enumerate()
        .map(|(g, e)| {
            let config = options.bootstrap.salted(g as u64);
            Ok(GroupMae {
                key: grouping.keys[g].clone(),
                n: e.len() as u64,
                small: e.len() < options.min_group_size,
                mae: bootstrap_mean(e, &config)?,
            })
        })
        .collect()
}

/// The accuracy audit of one grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupingAudit {
    pub name: String,
    pub fields: Vec<String>,
    pub groups: Vec<GroupAccuracy>,
    /// Keys of groups below the minimum size.
    pub small_groups: Vec<String>,
    pub empty_intersections: Vec<String>,
    pub empty_intersection_count: u64,
    /// Items with a missing label in one of the fields.
    pub missing: usize,
    pub measures: Vec<Measure>,
    /// Correctness × group, over the groups large enough to count.
    pub chi_square: ChiSquare,
    /// The chi-square p-value after Holm adjustment across all groupings of the audit.
    pub chi_square_p_holm: Option<f64>,
}

/// A full accuracy audit: overall accuracy and every grouping's groups and disparities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub n: usize,
    pub overall: Interval,
    pub options: FairnessOptions,
    pub groupings: Vec<GroupingAudit>,
}

/// Audit per-item correctness across the given group fields and all their intersections.
pub fn audit_accuracy<S: AsRef<str> + Sync>(
    correct: &[bool],
    fields: &[(&str, &[S])],
    options: &FairnessOptions,
) -> Result<Audit> {
    options.bootstrap.check()?;
    check_columns(fields, Some(correct.len()))?;
    if correct.is_empty() {
        return Err(input_error("an audit needs at least one item"));
    }
    let right = correct.iter().filter(|c| **c).count() as u64;
    let overall = wilson(right, correct.len() as u64, options.bootstrap.confidence)?;
    let groupings = groupings_with_intersections(fields)?;
    let mut audits = groupings
        .par_iter()
        .enumerate()
        .map(|(i, grouping)| audit_grouping(correct, grouping, options, i as u64))
        .collect::<Result<Vec<_>>>()?;
    let defined: Vec<(usize, f64)> = audits
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.chi_square.p_value.map(|p| (i, p)))
        .collect();
    let adjusted = holm(&defined.iter().map(|d| d.1).collect::<Vec<_>>())?;
    for ((i, _), p) in defined.iter().zip(adjusted) {
        audits[*i].chi_square_p_holm = Some(p);
    }
    Ok(Audit {
        n: correct.len(),
        overall,
        options: *options,
        groupings: audits,
    })
}

fn audit_grouping(
    correct: &[bool],
    grouping: &Grouping,
    options: &FairnessOptions,
    salt: u64,
) -> Result<GroupingAudit> {
    let groups = group_accuracy(correct, grouping, options)?;
    let salted = FairnessOptions {
        bootstrap: options.bootstrap.salted(salt),
        ..*options
    };
    let measures = accuracy_disparities(&groups, &salted)?;
    let large: Vec<&GroupAccuracy> = groups.iter().filter(|g| !g.small).collect();
    let chi_square = correctness_by_group(
        &large.iter().map(|g| g.correct).collect::<Vec<_>>(),
        &large.iter().map(|g| g.n).collect::<Vec<_>>(),
    )
    .map_err(|e| anyhow!("chi-square for {}: {e}", grouping.name))?;
    Ok(GroupingAudit {
        name: grouping.name.clone(),
        fields: grouping.fields.clone(),
        small_groups: groups
            .iter()
            .filter(|g| g.small)
            .map(|g| g.key.clone())
            .collect(),
        groups,
        empty_intersections: grouping.empty_intersections.clone(),
        empty_intersection_count: grouping.empty_count,
        missing: grouping.missing,
        measures,
        chi_square,
        chi_square_p_holm: None,
    })
}
/// A group's `(correct, n)`.
type Cell = (u64, u64);

/// Max−min accuracy over the eligible groups from per-group `(correct, n)`.
fn gap(cells: &[Cell], eligible: &[bool]) -> f64 {
    let accs: Vec<f64> = cells
        .iter()
        .zip(eligible)
        .filter(|(_, e)| **e)
        .map(|((k, n), _)| *k as f64 / *n as f64)
        .collect();
    let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
    hi - lo
}

/// How the max−min accuracy gap over groups changed between two paired sets of answers to the
/// same questions (`second` − `first`), with its bootstrap replicates.
pub struct GapChange {
    /// Groups with at least the minimum number of questions; only they enter the gap.
    pub eligible_groups: usize,
    /// gap(second) − gap(first); NaN with fewer than two eligible groups.
    pub delta: f64,
    /// Bootstrap replicates of `delta`, sorted; empty with fewer than two eligible groups.
    pub replicates: Vec<f64>,
}

/// The change in the max−min gap of `grouping`, `second` against `first`. The bootstrap is
/// paired and within groups: each group's questions are resampled together for both sets,
/// which is a multinomial draw of the group's (both right, only second, only first, neither)
/// counts (see `docs/statistics.md`, count-level resampling).
pub fn paired_gap_change(
    first: &[bool],
    second: &[bool],
    grouping: &Grouping,
    min_group: usize,
    bootstrap: &BootstrapConfig,
) -> GapChange {
    // Paired cells per group: [both, only second, only first, neither].
    let mut cells = vec![[0u64; 4]; grouping.keys.len()];
    for ((a, b), g) in first.iter().zip(second).zip(&grouping.assignment) {
        if let Some(g) = g {
            let k = match (a, b) {
                (true, true) => 0,
                (false, true) => 1,
                (true, false) => 2,
                (false, false) => 3,
            };
            cells[*g as usize][k] += 1;
        }
    }
    let eligible: Vec<bool> = cells
        .iter()
        .map(|c| c.iter().sum::<u64>() as usize >= min_group)
        .collect();
    let eligible_groups = eligible.iter().filter(|e| **e).count();
    if eligible_groups < 2 {
        return GapChange {
            eligible_groups,
            delta: f64::NAN,
            replicates: Vec::new(),
        };
    }
    let split = |c: &[[u64; 4]]| -> (Vec<Cell>, Vec<Cell>) {
        c.iter()
            .map(|x| {
                let n = x.iter().sum::<u64>();
                ((x[0] + x[2], n), (x[0] + x[1], n))
            })
            .unzip()
    };
    let diff = |c: &[[u64; 4]]| {
        let (a, b) = split(c);
        gap(&b, &eligible) - gap(&a, &eligible)
    };
    let delta = diff(&cells);
    let weights: Vec<[f64; 4]> = cells.iter().map(|c| c.map(|x| x as f64)).collect();
    let mut replicates: Vec<f64> = (0..bootstrap.resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = resample_rng(bootstrap.seed, b);
            let mut drawn = vec![[0u64; 4]; cells.len()];
            for (g, c) in cells.iter().enumerate() {
                multinomial_counts(&mut rng, c.iter().sum(), &weights[g], &mut drawn[g]);
            }
            diff(&drawn)
        })
        .collect();
    replicates.sort_by(f64::total_cmp);
    GapChange {
        eligible_groups,
        delta,
        replicates,
    }
}
