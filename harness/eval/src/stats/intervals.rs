//! Intervals for a proportion (Wilson score, Clopper–Pearson exact) and for macro averages
//! over a confusion matrix (balanced accuracy, macro-F1) with a seeded bootstrap.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, Continuous, ContinuousCDF};
use statrs::function::beta::beta_reg;

use super::bootstrap::{multinomial_counts, percentile_interval, BootstrapConfig};
use super::{check_confidence, z_two_sided, Interval, Method};
use crate::error::input_error;

fn check_counts(successes: u64, n: u64) -> Result<()> {
    if n == 0 {
        return Err(input_error("a proportion needs at least one trial (n = 0)"));
    }
    if successes > n {
        return Err(input_error(format!(
            "successes ({successes}) exceed trials ({n})"
        )));
    }
    Ok(())
}

/// Wilson score interval for `successes / n`, without continuity correction. Matches
/// statsmodels `proportion_confint(method="wilson")`.
pub fn wilson(successes: u64, n: u64, confidence: f64) -> Result<Interval> {
    check_confidence(confidence)?;
    check_counts(successes, n)?;
    let z = z_two_sided(confidence);
    let z2 = z * z;
    let nf = n as f64;
    let p = successes as f64 / nf;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Ok(Interval {
        n: n as usize,
        estimate: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
        confidence,
        method: Method::Wilson,
    })
}

/// Quantile `p` of Beta(a, b). statrs' `inv_beta_reg` is a good start; a few safeguarded
/// Newton steps on the regularised incomplete beta bring it to full double precision,
/// which the 1e-9 reference tests need.
fn beta_quantile(a: f64, b: f64, p: f64) -> f64 {
    let dist = match Beta::new(a, b) {
        Ok(d) => d,
        Err(_) => return f64::NAN,
    };
    let mut x = dist.inverse_cdf(p).clamp(0.0, 1.0);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..50 {
        let f = beta_reg(a, b, x) - p;
        if f == 0.0 {
            break;
        }
        if f > 0.0 {
            hi = x;
        } else {
            lo = x;
        }
        let density = dist.pdf(x);
        let mut next = if density > 0.0 && density.is_finite() {
            x - f / density
        } else {
            f64::NAN
        };
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        if (next - x).abs() <= 1e-16 * x.max(1e-300) {
            x = next;
            break;
        }
        x = next;
    }
    x
}

/// Interval for the difference `k1/n1 − k2/n2` of two **independent** proportions:
/// Newcombe's (1998, Stat Med 17:873) hybrid score interval, method 10, which combines the two
/// Wilson intervals. Matches statsmodels
/// `confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff")`.
pub fn newcombe_independent(
    k1: u64,
    n1: u64,
    k2: u64,
    n2: u64,
    confidence: f64,
) -> Result<Interval> {
    let (a, b) = (wilson(k1, n1, confidence)?, wilson(k2, n2, confidence)?);
    let d = a.estimate - b.estimate;
    let low = d - ((a.estimate - a.low).powi(2) + (b.high - b.estimate).powi(2)).sqrt();
    let high = d + ((a.high - a.estimate).powi(2) + (b.estimate - b.low).powi(2)).sqrt();
    Ok(Interval {
        n: (n1 + n2) as usize,
        estimate: d,
        low,
        high,
        confidence,
        method: Method::NewcombeIndependent,
    })
}

/// Clopper–Pearson exact interval from beta quantiles: `[B(α/2; k, n−k+1), B(1−α/2; k+1, n−k)]`,
/// with 0 as the lower limit when `k = 0` and 1 as the upper when `k = n`. Matches
/// statsmodels `proportion_confint(method="beta")`.
pub fn clopper_pearson(successes: u64, n: u64, confidence: f64) -> Result<Interval> {
    check_confidence(confidence)?;
    check_counts(successes, n)?;
    let alpha = 1.0 - confidence;
    let k = successes as f64;
    let nf = n as f64;
    let low = if successes == 0 {
        0.0
    } else {
        beta_quantile(k, nf - k + 1.0, alpha / 2.0)
    };
    let high = if successes == n {
        1.0
    } else {
        beta_quantile(k + 1.0, nf - k, 1.0 - alpha / 2.0)
    };
    Ok(Interval {
        n: n as usize,
        estimate: k / nf,
        low,
        high,
        confidence,
        method: Method::ClopperPearson,
    })
}

/// Balanced accuracy and macro-F1 of a multiclass prediction, each with a bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacroAverages {
    /// Class labels in sorted order: every label seen in the truth or the predictions.
    pub labels: Vec<String>,
    pub balanced_accuracy: Interval,
    pub macro_f1: Interval,
}

/// Balanced accuracy from a k×k confusion matrix (rows truth, columns prediction), as
/// scikit-learn defines it: mean recall over classes that occur in the truth.
pub fn balanced_accuracy_from_confusion(cm: &[u64], k: usize) -> f64 {
    let mut sum = 0.0;
    let mut classes = 0usize;
    for t in 0..k {
        let support: u64 = cm[t * k..(t + 1) * k].iter().sum();
        if support > 0 {
            sum += cm[t * k + t] as f64 / support as f64;
            classes += 1;
        }
    }
    if classes == 0 {
        f64::NAN
    } else {
        sum / classes as f64
    }
}

/// Macro-F1 from a k×k confusion matrix, as scikit-learn's `f1_score(average="macro")`:
/// the unweighted mean over labels present in truth or predictions, with F1 = 0 for a label
/// whose precision and recall are both zero or undefined (`zero_division=0`).
pub fn macro_f1_from_confusion(cm: &[u64], k: usize) -> f64 {
    let mut sum = 0.0;
    let mut classes = 0usize;
    for c in 0..k {
        let tp = cm[c * k + c];
        let support: u64 = cm[c * k..(c + 1) * k].iter().sum();
        let predicted: u64 = (0..k).map(|t| cm[t * k + c]).sum();
        if support == 0 && predicted == 0 {
            continue;
        }
        classes += 1;
        // F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); 0 when TP = 0.
        if tp > 0 {
            sum += 2.0 * tp as f64 / (support + predicted) as f64;
        }
    }
    if classes == 0 {
        f64::NAN
    } else {
        sum / classes as f64
    }
}

/// Build the confusion matrix of string labels. Returns the sorted labels and the
/// row-major counts.
pub fn confusion_matrix<S: AsRef<str>>(
    truth: &[S],
    predicted: &[S],
) -> Result<(Vec<String>, Vec<u64>)> {
    if truth.len() != predicted.len() {
        return Err(input_error(format!(
            "{} true labels but {} predictions",
            truth.len(),
            predicted.len()
        )));
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for s in truth.iter().chain(predicted) {
        index.entry(s.as_ref()).or_insert(0);
    }
    let labels: Vec<String> = index.keys().map(|s| s.to_string()).collect();
    for (i, v) in index.values_mut().enumerate() {
        *v = i;
    }
    let k = labels.len();
    let mut cm = vec![0u64; k * k];
    for (t, p) in truth.iter().zip(predicted) {
        cm[index[t.as_ref()] * k + index[p.as_ref()]] += 1;
    }
    Ok((labels, cm))
}

/// Balanced accuracy and macro-F1 with percentile-bootstrap intervals. Resampling items is
/// done as a multinomial draw over the confusion-matrix cells (the same distribution, in
/// O(k²) per resample). Label sets are fixed at those of the full sample; a class that
/// vanishes from a resample drops out of that resample's average, as it would in
/// scikit-learn on the resampled items.
pub fn macro_averages<S: AsRef<str>>(
    truth: &[S],
    predicted: &[S],
    config: &BootstrapConfig,
) -> Result<MacroAverages> {
    config.check()?;
    if truth.is_empty() {
        return Err(input_error("macro averages need at least one item"));
    }
    let (labels, cm) = confusion_matrix(truth, predicted)?;
    let k = labels.len();
    let n = truth.len();
    let weights: Vec<f64> = cm.iter().map(|&c| c as f64).collect();
    // Draw each resample's matrix once and evaluate both statistics on it.
    let draws = replicates_pairs(config, |rng| {
        let mut m = vec![0u64; k * k];
        multinomial_counts(rng, n as u64, &weights, &mut m);
        (
            balanced_accuracy_from_confusion(&m, k),
            macro_f1_from_confusion(&m, k),
        )
    });
    let (ba, f1): (Vec<f64>, Vec<f64>) = draws.into_iter().unzip();
    Ok(MacroAverages {
        balanced_accuracy: percentile_interval(
            ba,
            balanced_accuracy_from_confusion(&cm, k),
            n,
            config.confidence,
            Method::PercentileBootstrap,
        )?,
        macro_f1: percentile_interval(
            f1,
            macro_f1_from_confusion(&cm, k),
            n,
            config.confidence,
            Method::PercentileBootstrap,
        )?,
        labels,
    })
}

/// Like [`super::bootstrap::replicates`] but for statistics that come in pairs from one resample.
fn replicates_pairs<F>(config: &BootstrapConfig, f: F) -> Vec<(f64, f64)>
where
    F: Fn(&mut rand_chacha::ChaCha8Rng) -> (f64, f64) + Sync,
{
    use rayon::prelude::*;
    (0..config.resamples)
        .into_par_iter()
        .map(|b| f(&mut super::bootstrap::resample_rng(config.seed, b)))
        .collect()
}
