//! Face verification (`docs/verification.md`): a pair of faces, a model's score that they
//! show the same person, and the error rates of accepting a pair when its score reaches a
//! threshold.
//!
//! A **genuine** pair shows one identity, an **impostor** pair two. At threshold `t` a pair
//! is accepted ("same") when `score >= t`. The false match rate (FMR, the ROC's FPR) is the
//! share of impostor pairs accepted; the true match rate (TMR, TPR) the share of genuine
//! pairs accepted, and the false non-match rate FNMR = 1 − TMR.
//!
//! - **ROC points** are those of scikit-learn's `roc_curve` with `drop_intermediate=True`:
//!   one point per distinct score (highest first), a first point (0, 0) at threshold +∞,
//!   and points that lie on a straight line between their neighbours dropped.
//! - **`auc`**: the trapezoidal area under those points, as `roc_auc_score` (tied scores
//!   give the diagonal segment, i.e. count one half).
//! - **`eer`**: where FPR = 1 − TPR, linearly interpolated between the two ROC points that
//!   bracket the crossing. **`threshold_eer`** is the threshold of the first ROC point with
//!   FPR ≥ 1 − TPR, and `accuracy_at_threshold_eer` the share of pairs decided right there.
//! - **`tmr_at_fmr`**: for FMR 0.1, 0.01 and 0.001, the largest TPR among the ROC points
//!   with FPR ≤ that FMR (and that point's threshold).
//! - **Per group**: one global threshold, the one `tmr_at_fmr` picks at a global FMR
//!   (default 0.01), applied to every group's pairs; per group FMR and FNMR, and across
//!   groups the max/min ratio and the max − min difference of each.
//!
//! Intervals are percentile bootstraps that resample identity clusters (a pair's
//! `cluster`, else its id), because pairs that share an identity are not independent; group
//! intervals resample clusters within each group. A resample with no genuine or no impostor
//! pair (where a rate is undefined) is drawn again. The reference values of the tests come
//! from `tools/make_verification_fixtures.py`, which runs scikit-learn.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::run_folder::{Outcome, Prediction, TaskRecord};
use crate::stats::bootstrap::{cluster_members, resample_clusters, resample_rng};
use crate::stats::{self, BootstrapConfig, Interval, Method};

/// The FMRs `tmr_at_fmr` reports.
pub const TMR_FMRS: [f64; 3] = [0.1, 0.01, 0.001];

/// The global FMR that sets the threshold the per-group rates are taken at.
pub const DEFAULT_GROUP_FMR: f64 = 0.01;

/// How often a degenerate resample (no genuine or no impostor pair) is drawn again before
/// the interval is given up as undefined.
const MAX_REDRAWS: usize = 100;

/// One scored pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    /// The model's probability (or any monotone score) that the two faces are one person.
    pub score: f64,
    /// Whether they are.
    pub genuine: bool,
}

/// ROC points in scikit-learn's order: FPR and TPR rising, thresholds falling, the first
/// threshold +∞.
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
}

/// The ROC of `pairs`; `None` without a genuine or without an impostor pair (the rates are
/// then undefined) or with a score that is not finite.
pub fn roc_curve(pairs: &[ScoredPair]) -> Option<Roc> {
    if pairs.iter().any(|p| !p.score.is_finite()) {
        return None;
    }
    // `+ 0.0` turns -0.0 into 0.0, which numpy's `diff` treats as the same score.
    let mut sorted: Vec<(f64, bool)> = pairs.iter().map(|p| (p.score + 0.0, p.genuine)).collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Cumulative counts at the last pair of each distinct score.
    let (mut tps, mut fps, mut thresholds) = (vec![], vec![], vec![]);
    let (mut tp, mut fp) = (0u64, 0u64);
    for (i, &(score, genuine)) in sorted.iter().enumerate() {
        if genuine {
            tp += 1;
        } else {
            fp += 1;
        }
        if sorted.get(i + 1).is_none_or(|next| next.0 != score) {
            tps.push(tp);
            fps.push(fp);
            thresholds.push(score);
        }
    }
    if tp == 0 || fp == 0 {
        return None;
    }
    // drop_intermediate: keep the ends and every point where the curve bends.
    let keep: Vec<usize> = (0..tps.len())
        .filter(|&i| {
            i == 0 || i + 1 == tps.len() || {
                let bend = |c: &[u64]| c[i - 1] + c[i + 1] != 2 * c[i];
                bend(&fps) || bend(&tps)
            }
        })
        .collect();
    let mut roc = Roc {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
    };
    for i in keep {
        roc.fpr.push(fps[i] as f64 / fp as f64);
        roc.tpr.push(tps[i] as f64 / tp as f64);
        roc.thresholds.push(thresholds[i]);
    }
    Some(roc)
}

/// Trapezoidal area under the ROC points.
pub fn auc(roc: &Roc) -> f64 {
    (1..roc.fpr.len())
        .map(|i| (roc.fpr[i] - roc.fpr[i - 1]) * (roc.tpr[i] + roc.tpr[i - 1]) / 2.0)
        .sum()
}

/// The equal error rate and where it is on the curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EqualError {
    /// FPR = FNR at the crossing, interpolated between the bracketing ROC points.
    pub eer: f64,
    /// Index of the first ROC point with FPR ≥ FNR.
    pub index: usize,
    /// That point's threshold.
    pub threshold: f64,
}

/// The EER of a ROC. The first point has FPR 0 and FNR 1 and the last FPR 1 and FNR 0, so
/// the crossing always exists and is never at the first point.
pub fn eer(roc: &Roc) -> EqualError {
    // FPR − FNR, written so that a crossing exactly at a point comes out exactly 0.
    let gap = |i: usize| roc.fpr[i] + roc.tpr[i] - 1.0;
    let index = (0..roc.fpr.len())
        .find(|&i| gap(i) >= 0.0)
        .unwrap_or(roc.fpr.len() - 1)
        .max(1);
    let (before, after) = (gap(index - 1), gap(index));
    let eer = if after == 0.0 || after == before {
        roc.fpr[index]
    } else {
        let t = -before / (after - before);
        roc.fpr[index - 1] + t * (roc.fpr[index] - roc.fpr[index - 1])
    };
    EqualError {
        eer,
        index,
        threshold: roc.thresholds[index],
    }
}

/// Index of the ROC point with the largest TPR among those with FPR ≤ `fmr` (the first such
/// point on a tie, the one with the lowest FPR). Point 0 (FPR 0) always qualifies.
pub fn index_at_fmr(roc: &Roc, fmr: f64) -> usize {
    let mut best = 0;
    for i in 1..roc.fpr.len() {
        if roc.fpr[i] <= fmr && roc.tpr[i] > roc.tpr[best] {
            best = i;
        }
    }
    best
}

/// The largest TPR among the ROC points with FPR ≤ `fmr`.
pub fn tmr_at_fmr(roc: &Roc, fmr: f64) -> f64 {
    roc.tpr[index_at_fmr(roc, fmr)]
}

/// Share of pairs decided right when pairs with `score >= threshold` are called "same".
pub fn accuracy_at(pairs: &[ScoredPair], threshold: f64) -> f64 {
    let right = pairs
        .iter()
        .filter(|p| (p.score >= threshold) == p.genuine)
        .count();
    right as f64 / pairs.len() as f64
}

/// FMR and FNMR of `pairs` at `threshold`: impostors accepted over impostors, genuine pairs
/// rejected over genuine pairs. NaN where a kind is absent.
pub fn rates_at(pairs: &[ScoredPair], threshold: f64) -> (f64, f64) {
    let (mut impostors, mut accepted, mut genuine, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    for p in pairs {
        let accept = p.score >= threshold;
        if p.genuine {
            genuine += 1;
            rejected += u64::from(!accept);
        } else {
            impostors += 1;
            accepted += u64::from(accept);
        }
    }
    let ratio = |k: u64, n: u64| {
        if n == 0 {
            f64::NAN
        } else {
            k as f64 / n as f64
        }
    };
    (ratio(accepted, impostors), ratio(rejected, genuine))
}

/// One ROC point as `metrics.json` stores it (for the DET curve: FNMR = 1 − `tpr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    pub fpr: f64,
    pub tpr: f64,
    /// Pairs scoring at least this are accepted; `null` for the first point (+∞, none).
    pub threshold: Option<f64>,
}

fn points(roc: &Roc) -> Vec<RocPoint> {
    (0..roc.fpr.len())
        .map(|i| RocPoint {
            fpr: roc.fpr[i],
            tpr: roc.tpr[i],
            threshold: roc.thresholds[i].is_finite().then_some(roc.thresholds[i]),
        })
        .collect()
}

/// TMR at one FMR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TmrAtFmr {
    pub fmr: f64,
    /// The largest TPR among the ROC points with FPR ≤ `fmr`.
    pub tmr: f64,
    /// That point's threshold; `null` when no threshold reaches it but +∞ (TMR 0).
    pub threshold: Option<f64>,
}

/// One group's rates at the global threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRates {
    pub n_genuine: usize,
    pub n_impostor: usize,
    /// Impostor pairs of the group accepted at the global threshold.
    pub fmr: Option<Interval>,
    /// Genuine pairs of the group rejected at the global threshold.
    pub fnmr: Option<Interval>,
    /// The group's own ROC AUC and EER (point estimates).
    pub auc: Option<f64>,
    pub eer: Option<f64>,
    /// The group's ROC points, for its DET curve.
    pub roc: Vec<RocPoint>,
}

/// How far one rate spreads across the groups of a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Largest rate over smallest; `null` when the smallest is 0.
    pub max_min_ratio: Option<f64>,
    /// Its interval; `null` when some resample's smallest rate is 0 (the ratio is then
    /// unbounded above) or the ratio itself is undefined.
    pub max_min_ratio_interval: Option<Interval>,
    /// Largest rate minus smallest, with its interval.
    pub max_min_difference: Option<Interval>,
}

/// Per-group rates of one group field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupBreakdown {
    /// Per value of the field. Groups need at least one genuine and one impostor pair to be
    /// compared; the others are listed with `null` rates.
    pub groups: BTreeMap<String, GroupRates>,
    pub fmr: Spread,
    pub fnmr: Spread,
}

/// The `verification` block of a task in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Scored pairs (with a `score`).
    pub n: usize,
    pub n_genuine: usize,
    pub n_impostor: usize,
    /// Pairs answered without a score (an answer that was neither answer), left out here.
    pub n_without_score: usize,
    /// Identity clusters the bootstrap resamples.
    pub n_clusters: usize,
    /// ROC AUC with its cluster bootstrap interval.
    pub auc: Interval,
    /// Equal error rate with its cluster bootstrap interval.
    pub eer: Interval,
    /// Threshold of the first ROC point with FPR ≥ FNR.
    pub threshold_eer: f64,
    /// Share of pairs decided right at `threshold_eer`.
    pub accuracy_at_threshold_eer: f64,
    /// TMR at FMR 0.1, 0.01 and 0.001.
    pub tmr_at_fmr: Vec<TmrAtFmr>,
    /// The ROC points (scikit-learn's, intermediate ones dropped).
    pub roc: Vec<RocPoint>,
    /// The global FMR the per-group threshold is set at.
    pub group_fmr: f64,
    /// The global threshold of the per-group rates (the `tmr_at_fmr` point at `group_fmr`);
    /// `null` when only +∞ keeps FMR that low (every pair is rejected).
    pub group_threshold: Option<f64>,
    /// Per group field of the task.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupBreakdown>,
}

/// The `score` of one answered pair: the probability of the `same` answer from the two
/// answers' log-likelihoods where the prediction has them (`option_logprobs`: a local model's
/// choice likelihoods, or a served model's first-token log-probabilities), normalised over
/// the two; else 1 or 0 from the answer it generated; `None` when the answer could not be read.
pub fn pair_score(prediction: &Prediction, same: &str, different: &str) -> Option<f64> {
    let from_logprobs = prediction.option_logprobs.as_ref().and_then(|lp| {
        let (s, d) = (*lp.get(same)?, *lp.get(different)?);
        // softmax over the two, written so that neither exponent overflows.
        (s.is_finite() && d.is_finite()).then(|| 1.0 / (1.0 + (d - s).exp()))
    });
    from_logprobs.or_else(|| match prediction.parsed.as_deref() {
        Some(a) if a == same => Some(1.0),
        Some(a) if a == different => Some(0.0),
        _ => None,
    })
}

/// Whether a task record is a verification task.
pub fn is_verification(record: &TaskRecord) -> bool {
    record.style == "verification"
}

/// A pair as the statistics see it, with its cluster and its group values.
struct Row<'a> {
    pair: ScoredPair,
    cluster: &'a str,
    groups: &'a BTreeMap<String, String>,
}

/// The `verification` block of one task's headline predictions; `None` for tasks of other
/// styles and when the scored pairs lack a genuine or an impostor pair. A pair is genuine
/// when its `target` is the task's first label (the "same" answer).
pub fn verification(
    record: &TaskRecord,
    preds: &[&Prediction],
    config: &BootstrapConfig,
) -> Option<Verification> {
    verification_by(record, preds, &record.groups, DEFAULT_GROUP_FMR, config)
}

/// [`verification`] with the group fields and the global FMR of the per-group threshold
/// chosen by the caller (`faceval audit --by`, `--group-fmr`).
pub fn verification_by(
    record: &TaskRecord,
    preds: &[&Prediction],
    group_fields: &[String],
    group_fmr: f64,
    config: &BootstrapConfig,
) -> Option<Verification> {
    if !is_verification(record) {
        return None;
    }
    let same = record.labels.first()?;
    let answered: Vec<&Prediction> = preds
        .iter()
        .copied()
        .filter(|p| p.outcome != Outcome::Error && p.target.is_some())
        .collect();
    let rows: Vec<Row> = answered
        .iter()
        .filter_map(|p| {
            Some(Row {
                pair: ScoredPair {
                    score: p.score.filter(|s| s.is_finite())?,
                    genuine: p.target.as_deref() == Some(same.as_str()),
                },
                cluster: p.cluster.as_deref().unwrap_or(p.id.as_str()),
                groups: &p.groups,
            })
        })
        .collect();
    compute(
        &rows,
        answered.len() - rows.len(),
        group_fields,
        group_fmr,
        config,
    )
}

/// The `verification` block from pairs, their clusters and groups. Exposed for tests and
/// callers that hold pairs rather than predictions.
pub fn from_pairs(
    pairs: &[ScoredPair],
    clusters: &[&str],
    groups: &[BTreeMap<String, String>],
    group_fields: &[String],
    group_fmr: f64,
    config: &BootstrapConfig,
) -> Option<Verification> {
    let rows: Vec<Row> = pairs
        .iter()
        .zip(clusters)
        .zip(groups)
        .map(|((p, c), g)| Row {
            pair: *p,
            cluster: c,
            groups: g,
        })
        .collect();
    compute(&rows, 0, group_fields, group_fmr, config)
}

fn compute(
    rows: &[Row],
    n_without_score: usize,
    group_fields: &[String],
    group_fmr: f64,
    config: &BootstrapConfig,
) -> Option<Verification> {
    let pairs: Vec<ScoredPair> = rows.iter().map(|r| r.pair).collect();
    let roc = roc_curve(&pairs)?;
    let n_genuine = pairs.iter().filter(|p| p.genuine).count();
    let equal = eer(&roc);
    let clusters: Vec<&str> = rows.iter().map(|r| r.cluster).collect();
    let members = cluster_members(&clusters);
    let (auc_interval, eer_interval) = auc_eer_intervals(&pairs, &members, &roc, config);
    let at = index_at_fmr(&roc, group_fmr);
    let group_threshold = roc.thresholds[at];
    let mut groups = BTreeMap::new();
    for (k, field) in group_fields.iter().enumerate() {
        let breakdown =
            group_breakdown(rows, field, group_threshold, &config.salted(100 + k as u64));
        if let Some(b) = breakdown {
            groups.insert(field.clone(), b);
        }
    }
    Some(Verification {
        n: pairs.len(),
        n_genuine,
        n_impostor: pairs.len() - n_genuine,
        n_without_score,
        n_clusters: members.len(),
        auc: auc_interval,
        eer: eer_interval,
        threshold_eer: equal.threshold,
        accuracy_at_threshold_eer: accuracy_at(&pairs, equal.threshold),
        tmr_at_fmr: TMR_FMRS
            .iter()
            .map(|&fmr| {
                let i = index_at_fmr(&roc, fmr);
                TmrAtFmr {
                    fmr,
                    tmr: roc.tpr[i],
                    threshold: roc.thresholds[i].is_finite().then_some(roc.thresholds[i]),
                }
            })
            .collect(),
        roc: points(&roc),
        group_fmr,
        group_threshold: group_threshold.is_finite().then_some(group_threshold),
        groups,
    })
}

/// A cluster resample of `pairs` with at least one genuine and one impostor pair, redrawn up
/// to [`MAX_REDRAWS`] times; `None` when none came.
fn nondegenerate_resample(
    pairs: &[ScoredPair],
    members: &[Vec<usize>],
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Option<Vec<ScoredPair>> {
    let mut drawn = Vec::new();
    for _ in 0..MAX_REDRAWS {
        resample_clusters(rng, members, &mut drawn);
        let genuine = drawn.iter().filter(|&&i| pairs[i].genuine).count();
        if genuine > 0 && genuine < drawn.len() {
            return Some(drawn.iter().map(|&i| pairs[i]).collect());
        }
    }
    None
}

/// Percentile interval of column `column` of the replicates, or `None` when some resample
/// could not be drawn or the statistic was undefined on it.
fn column_interval(
    reps: &[Option<Vec<f64>>],
    column: usize,
    estimate: f64,
    n: usize,
    config: &BootstrapConfig,
) -> Option<Interval> {
    let values: Vec<f64> = reps
        .iter()
        .map(|r| r.as_ref().map_or(f64::NAN, |v| v[column]))
        .collect();
    if !estimate.is_finite() {
        return None;
    }
    stats::bootstrap::percentile_interval(
        values,
        estimate,
        n,
        config.confidence,
        Method::ClusterBootstrap,
    )
    .ok()
}

/// Cluster bootstrap intervals of AUC and EER. When resamples cannot be drawn (a single
/// cluster holding every genuine pair, say) the interval collapses to the estimate, with
/// `low = high = estimate`, rather than disappearing: the estimate is still exact.
fn auc_eer_intervals(
    pairs: &[ScoredPair],
    members: &[Vec<usize>],
    roc: &Roc,
    config: &BootstrapConfig,
) -> (Interval, Interval) {
    let estimates = [auc(roc), eer(roc).eer];
    let reps: Vec<Option<Vec<f64>>> = (0..config.resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = resample_rng(config.seed, b);
            let sample = nondegenerate_resample(pairs, members, &mut rng)?;
            let r = roc_curve(&sample)?;
            Some(vec![auc(&r), eer(&r).eer])
        })
        .collect();
    let interval = |c: usize| {
        column_interval(&reps, c, estimates[c], pairs.len(), config).unwrap_or(Interval {
            n: pairs.len(),
            estimate: estimates[c],
            low: estimates[c],
            high: estimates[c],
            confidence: config.confidence,
            method: Method::ClusterBootstrap,
        })
    };
    (interval(0), interval(1))
}

/// Max/min ratio and max − min difference of the defined entries of `rates`.
fn spread_of(rates: &[f64]) -> (f64, f64) {
    let defined: Vec<f64> = rates.iter().copied().filter(|r| r.is_finite()).collect();
    if defined.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let max = defined.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = defined.iter().copied().fold(f64::INFINITY, f64::min);
    let ratio = if min > 0.0 { max / min } else { f64::NAN };
    (ratio, max - min)
}

/// Per-group rates of one field at `threshold`, with intervals from resampling clusters
/// within each group (each group keeps its number of clusters); `None` when no pair has
/// the field.
fn group_breakdown(
    rows: &[Row],
    field: &str,
    threshold: f64,
    config: &BootstrapConfig,
) -> Option<GroupBreakdown> {
    let mut by_value: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(v) = r.groups.get(field) {
            by_value.entry(v.as_str()).or_default().push(i);
        }
    }
    if by_value.is_empty() {
        return None;
    }
    struct Group<'a> {
        name: &'a str,
        pairs: Vec<ScoredPair>,
        members: Vec<Vec<usize>>,
        n_genuine: usize,
    }
    let all: Vec<Group> = by_value
        .into_iter()
        .map(|(name, idx)| {
            let pairs: Vec<ScoredPair> = idx.iter().map(|&i| rows[i].pair).collect();
            let clusters: Vec<&str> = idx.iter().map(|&i| rows[i].cluster).collect();
            Group {
                name,
                n_genuine: pairs.iter().filter(|p| p.genuine).count(),
                members: cluster_members(&clusters),
                pairs,
            }
        })
        .collect();
    // Only groups with both kinds of pair have both rates; the others are listed bare.
    let comparable: Vec<&Group> = all
        .iter()
        .filter(|g| g.n_genuine > 0 && g.n_genuine < g.pairs.len())
        .collect();
    let statistics = |rates: &[(f64, f64)]| -> Vec<f64> {
        let fmrs: Vec<f64> = rates.iter().map(|r| r.0).collect();
        let fnmrs: Vec<f64> = rates.iter().map(|r| r.1).collect();
        let (fmr_ratio, fmr_diff) = spread_of(&fmrs);
        let (fnmr_ratio, fnmr_diff) = spread_of(&fnmrs);
        let mut v: Vec<f64> = rates.iter().flat_map(|r| [r.0, r.1]).collect();
        v.extend([fmr_ratio, fmr_diff, fnmr_ratio, fnmr_diff]);
        v
    };
    let estimates = statistics(
        &comparable
            .iter()
            .map(|g| rates_at(&g.pairs, threshold))
            .collect::<Vec<_>>(),
    );
    let reps: Vec<Option<Vec<f64>>> = (0..config.resamples)
        .into_par_iter()
        .map(|b| {
            let mut rng = resample_rng(config.seed, b);
            let rates = comparable
                .iter()
                .map(|g| {
                    let sample = nondegenerate_resample(&g.pairs, &g.members, &mut rng)?;
                    Some(rates_at(&sample, threshold))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(statistics(&rates))
        })
        .collect();
    let n_all = comparable.iter().map(|g| g.pairs.len()).sum();
    let interval = |c: usize, n: usize| column_interval(&reps, c, estimates[c], n, config);
    let mut groups = BTreeMap::new();
    for g in &all {
        let position = comparable.iter().position(|c| c.name == g.name);
        let n_impostor = g.pairs.len() - g.n_genuine;
        let roc = roc_curve(&g.pairs);
        groups.insert(
            g.name.to_string(),
            GroupRates {
                n_genuine: g.n_genuine,
                n_impostor,
                fmr: position.and_then(|k| interval(2 * k, n_impostor)),
                fnmr: position.and_then(|k| interval(2 * k + 1, g.n_genuine)),
                auc: roc.as_ref().map(auc),
                eer: roc.as_ref().map(|r| eer(r).eer),
                roc: roc.as_ref().map(points).unwrap_or_default(),
            },
        );
    }
    let base = 2 * comparable.len();
    let spread = |c: usize| Spread {
        max_min_ratio: estimates[c].is_finite().then_some(estimates[c]),
        max_min_ratio_interval: interval(c, n_all),
        max_min_difference: interval(c + 1, n_all),
    };
    Some(GroupBreakdown {
        groups,
        fmr: spread(base),
        fnmr: spread(base + 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reference.json` as `tools/make_verification_fixtures.py` writes it.
    #[derive(Deserialize)]
    struct Reference {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        n: usize,
        roc: RefRoc,
        auc: f64,
        eer: f64,
        threshold_eer: f64,
        accuracy_at_threshold_eer: f64,
        tmr_at_fmr: Vec<TmrAtFmr>,
        group_fmr: f64,
        group_threshold: Option<f64>,
        groups: BTreeMap<String, RefGroup>,
    }

    #[derive(Deserialize)]
    struct RefRoc {
        fpr: Vec<f64>,
        tpr: Vec<f64>,
        thresholds: Vec<Option<f64>>,
    }

    #[derive(Deserialize)]
    struct RefGroup {
        n_genuine: usize,
        n_impostor: usize,
        fmr: Option<f64>,
        fnmr: Option<f64>,
        auc: Option<f64>,
    }

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/verification");

    fn reference() -> Reference {
        let text = std::fs::read_to_string(format!("{DIR}/reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// A committed score file: pairs, clusters and one group field `group`.
    struct ScoreFile {
        pairs: Vec<ScoredPair>,
        clusters: Vec<String>,
        groups: Vec<BTreeMap<String, String>>,
    }

    fn score_file(name: &str) -> ScoreFile {
        let mut reader = csv::Reader::from_path(format!("{DIR}/{name}.csv")).unwrap();
        let mut f = ScoreFile {
            pairs: vec![],
            clusters: vec![],
            groups: vec![],
        };
        for row in reader.records() {
            let row = row.unwrap();
            f.pairs.push(ScoredPair {
                genuine: &row[3] == "1",
                score: row[4].parse().unwrap(),
            });
            f.clusters.push(row[1].to_string());
            f.groups
                .push([("group".to_string(), row[2].to_string())].into());
        }
        f
    }

    /// Equal to 1e-12. Thresholds are scores, exact in the CSVs, but serde_json may read the
    /// reference file's decimals one unit in the last place off.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    fn close_or_both_none(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => close(a, b),
            (a, b) => a == b,
        }
    }

    #[test]
    fn roc_auc_eer_and_tmr_match_sklearn() {
        let r = reference();
        assert_eq!(r.cases.len(), 4);
        let mut worst = 0.0f64;
        for c in &r.cases {
            let f = score_file(&c.name);
            assert_eq!(f.pairs.len(), c.n, "{}", c.name);
            let roc = roc_curve(&f.pairs).unwrap();
            assert_eq!(roc.fpr.len(), c.roc.fpr.len(), "{}: ROC points", c.name);
            for i in 0..roc.fpr.len() {
                worst = worst
                    .max((roc.fpr[i] - c.roc.fpr[i]).abs())
                    .max((roc.tpr[i] - c.roc.tpr[i]).abs());
                match c.roc.thresholds[i] {
                    Some(t) => assert!(close(roc.thresholds[i], t), "{} #{i}", c.name),
                    None => assert_eq!(roc.thresholds[i], f64::INFINITY, "{} #{i}", c.name),
                }
            }
            let e = eer(&roc);
            worst = worst
                .max((auc(&roc) - c.auc).abs())
                .max((e.eer - c.eer).abs());
            assert!(
                close(auc(&roc), c.auc),
                "{}: auc {} vs {}",
                c.name,
                auc(&roc),
                c.auc
            );
            assert!(
                close(e.eer, c.eer),
                "{}: eer {} vs {}",
                c.name,
                e.eer,
                c.eer
            );
            assert!(close(e.threshold, c.threshold_eer), "{}", c.name);
            assert!(close(
                accuracy_at(&f.pairs, e.threshold),
                c.accuracy_at_threshold_eer
            ));
            for want in &c.tmr_at_fmr {
                let i = index_at_fmr(&roc, want.fmr);
                assert!(
                    close(tmr_at_fmr(&roc, want.fmr), want.tmr),
                    "{} @{}",
                    c.name,
                    want.fmr
                );
                let finite = roc.thresholds[i].is_finite().then_some(roc.thresholds[i]);
                assert!(
                    close_or_both_none(finite, want.threshold),
                    "{} @{}",
                    c.name,
                    want.fmr
                );
            }
            let at = index_at_fmr(&roc, c.group_fmr);
            let threshold = roc.thresholds[at];
            assert!(close_or_both_none(
                threshold.is_finite().then_some(threshold),
                c.group_threshold
            ));
        }
        eprintln!("ROC points, AUC and EER: max |diff| vs sklearn {worst:e}");
        assert!(worst <= 1e-12, "max |diff| vs sklearn {worst:e}");
    }

    #[test]
    fn the_verification_block_and_group_rates_match_sklearn() {
        let r = reference();
        let config = BootstrapConfig {
            resamples: 200,
            ..BootstrapConfig::default()
        };
        for c in &r.cases {
            let f = score_file(&c.name);
            let clusters: Vec<&str> = f.clusters.iter().map(String::as_str).collect();
            let v = from_pairs(
                &f.pairs,
                &clusters,
                &f.groups,
                &["group".to_string()],
                c.group_fmr,
                &config,
            )
            .unwrap();
            assert!(close(v.auc.estimate, c.auc) && close(v.eer.estimate, c.eer));
            assert!(v.auc.low <= v.auc.estimate && v.auc.estimate <= v.auc.high);
            assert!(v.eer.low <= v.eer.estimate && v.eer.estimate <= v.eer.high);
            assert!(close(v.threshold_eer, c.threshold_eer));
            assert!(close(
                v.accuracy_at_threshold_eer,
                c.accuracy_at_threshold_eer
            ));
            assert_eq!(v.tmr_at_fmr.len(), c.tmr_at_fmr.len());
            for (got, want) in v.tmr_at_fmr.iter().zip(&c.tmr_at_fmr) {
                assert_eq!(got.fmr, want.fmr);
                assert!(close(got.tmr, want.tmr), "{}", c.name);
                assert!(
                    close_or_both_none(got.threshold, want.threshold),
                    "{}",
                    c.name
                );
            }
            assert!(
                close_or_both_none(v.group_threshold, c.group_threshold),
                "{}",
                c.name
            );
            assert_eq!(v.roc.len(), c.roc.fpr.len());
            let b = &v.groups["group"];
            assert_eq!(b.groups.len(), c.groups.len(), "{}", c.name);
            let (mut fmrs, mut fnmrs) = (vec![], vec![]);
            for (name, want) in &c.groups {
                let got = &b.groups[name];
                assert_eq!(
                    (got.n_genuine, got.n_impostor),
                    (want.n_genuine, want.n_impostor)
                );
                let est = |i: &Option<Interval>| i.as_ref().map(|i| i.estimate);
                assert!(
                    close_or_both_none(est(&got.fmr), want.fmr),
                    "{} {name} fmr",
                    c.name
                );
                assert!(
                    close_or_both_none(est(&got.fnmr), want.fnmr),
                    "{} {name} fnmr",
                    c.name
                );
                match (got.auc, want.auc) {
                    (Some(a), Some(w)) => assert!(close(a, w), "{} {name}: {a} vs {w}", c.name),
                    (a, w) => assert_eq!(a, w),
                }
                fmrs.extend(want.fmr);
                fnmrs.extend(want.fnmr);
            }
            // The spreads are the max/min ratio and difference of sklearn's group rates.
            let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            for (spread, rates) in [(&b.fmr, &fmrs), (&b.fnmr, &fnmrs)] {
                let diff = spread.max_min_difference.as_ref().unwrap();
                assert!(close(diff.estimate, max(rates) - min(rates)), "{}", c.name);
                assert!(diff.low <= diff.estimate && diff.estimate <= diff.high);
                match spread.max_min_ratio {
                    Some(ratio) => assert!(close(ratio, max(rates) / min(rates)), "{}", c.name),
                    None => assert!(min(rates) == 0.0, "{}", c.name),
                }
                if let Some(i) = &spread.max_min_ratio_interval {
                    assert!(i.low <= i.estimate && i.estimate <= i.high);
                }
            }
        }
    }

    #[test]
    fn intervals_are_seeded_and_widen_when_pairs_share_identities() {
        let f = score_file("continuous");
        let own: Vec<String> = (0..f.pairs.len()).map(|i| format!("pair{i}")).collect();
        let config = BootstrapConfig {
            resamples: 400,
            ..BootstrapConfig::default()
        };
        let run = |pairs: &[ScoredPair], clusters: &[String]| {
            let c: Vec<&str> = clusters.iter().map(String::as_str).collect();
            let none = vec![BTreeMap::new(); pairs.len()];
            from_pairs(pairs, &c, &none, &[], DEFAULT_GROUP_FMR, &config).unwrap()
        };
        let a = run(&f.pairs, &own);
        assert_eq!(
            a,
            run(&f.pairs, &own),
            "the same seed gives the same intervals"
        );
        assert_eq!(a.n_clusters, f.pairs.len());
        // Each pair four times over, as four pairs of one identity: the estimates stay, and
        // resampling identities (not copies) keeps the interval as wide as the originals'.
        let copies: Vec<ScoredPair> = f.pairs.iter().flat_map(|p| [*p; 4]).collect();
        let by_pair: Vec<String> = own.iter().flat_map(|c| vec![c.clone(); 4]).collect();
        let by_copy: Vec<String> = (0..copies.len()).map(|i| format!("copy{i}")).collect();
        let clustered = run(&copies, &by_pair);
        let naive = run(&copies, &by_copy);
        assert!(close(clustered.auc.estimate, a.auc.estimate));
        assert!(close(clustered.eer.estimate, a.eer.estimate));
        assert_eq!(clustered.n_clusters, f.pairs.len());
        assert!(clustered.auc.width() > 1.6 * naive.auc.width());
        assert!((clustered.auc.width() / a.auc.width() - 1.0).abs() < 0.25);
        assert_eq!(clustered.auc.method, Method::ClusterBootstrap);
    }

    #[test]
    fn the_documented_example() {
        // docs/verification.md: six pairs, scores of the "same" answer.
        let pair = |score, genuine| ScoredPair { score, genuine };
        let pairs = [
            pair(0.9, true),
            pair(0.8, true),
            pair(0.7, false),
            pair(0.6, true),
            pair(0.3, false),
            pair(0.2, false),
        ];
        let roc = roc_curve(&pairs).unwrap();
        // sklearn: thresholds [inf, 0.9, 0.8, 0.7, 0.6, 0.2]; 0.3 lies on the line from
        // (1/3, 1) to (1, 1) and is dropped (the first score is always kept).
        assert_eq!(roc.thresholds, [f64::INFINITY, 0.9, 0.8, 0.7, 0.6, 0.2]);
        assert_eq!(roc.fpr, [0.0, 0.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0]);
        assert_eq!(roc.tpr, [0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0, 1.0]);
        assert!(close(auc(&roc), 8.0 / 9.0));
        let e = eer(&roc);
        // FPR − FNR is −1/3 at (0, 2/3) and 0 at (1/3, 2/3): the EER is 1/3, at 0.7.
        assert!(close(e.eer, 1.0 / 3.0));
        assert_eq!(e.threshold, 0.7);
        assert!(close(accuracy_at(&pairs, 0.7), 4.0 / 6.0));
        assert_eq!(tmr_at_fmr(&roc, 0.1), 2.0 / 3.0);
        assert_eq!(rates_at(&pairs, 0.8), (0.0, 1.0 / 3.0));
    }

    #[test]
    fn pair_scores_come_from_likelihoods_else_the_answer() {
        let line = |extra: &str| {
            Prediction::from_line(&format!(
                r#"{{"id": "p", "task": "v", "parsed": "no", "target": "yes", "outcome": "wrong"{extra}}}"#
            ))
            .unwrap()
        };
        // Likelihoods: softmax over the two answers, whatever was generated.
        let p = line(r#", "option_logprobs": {"yes": -0.5, "no": -1.5}"#);
        let want = (-0.5f64).exp() / ((-0.5f64).exp() + (-1.5f64).exp());
        assert!(close(pair_score(&p, "yes", "no").unwrap(), want));
        // Far apart: no overflow, the score saturates.
        let p = line(r#", "option_logprobs": {"yes": -900.0, "no": -0.1}"#);
        assert_eq!(pair_score(&p, "yes", "no"), Some(0.0));
        // No likelihoods: 1 or 0 from the answer, nothing from an unreadable one.
        assert_eq!(pair_score(&line(""), "yes", "no"), Some(0.0));
        let mut p = line("");
        p.parsed = Some("yes".into());
        assert_eq!(pair_score(&p, "yes", "no"), Some(1.0));
        p.parsed = None;
        assert_eq!(pair_score(&p, "yes", "no"), None);
        // Likelihoods of other keys do not count.
        let p = line(r#", "option_logprobs": {"A": -0.5, "B": -1.5}"#);
        assert_eq!(pair_score(&p, "yes", "no"), Some(0.0));
    }

    #[test]
    fn undefined_curves_are_refused() {
        let pair = |score, genuine| ScoredPair { score, genuine };
        assert_eq!(roc_curve(&[pair(0.9, true), pair(0.1, true)]), None);
        assert_eq!(roc_curve(&[pair(0.9, false)]), None);
        assert_eq!(roc_curve(&[pair(f64::NAN, true), pair(0.1, false)]), None);
        // One score for everything: the diagonal, AUC 1/2, EER 1/2.
        let flat = roc_curve(&[pair(0.5, true), pair(0.5, false)]).unwrap();
        assert_eq!((auc(&flat), eer(&flat).eer), (0.5, 0.5));
        // -0.0 and 0.0 are one score, as in numpy.
        let signed = roc_curve(&[pair(-0.0, true), pair(0.0, false)]).unwrap();
        assert_eq!(signed.fpr.len(), 2);
    }
}
