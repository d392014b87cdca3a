//! Seeded percentile bootstrap: generic over a statistic (a closure over a slice), with
//! stratified (within-group) resampling, plus count-level resampling helpers.
//!
//! Reproducibility: resample `b` draws from its own ChaCha8 stream (`seed`, stream `b`), so
//! the replicates are identical whatever the number of rayon threads.
//!
//! Count-level resampling: drawing `n` items with replacement from a sample and then
//! counting how many fall in each category is exactly a multinomial draw with the observed
//! category proportions. So a bootstrap of any statistic that depends on the data only
//! through category counts (accuracy: correct/incorrect; a confusion matrix; a mean of
//! values with few distinct levels) can draw the counts directly, in O(categories) per
//! resample instead of O(n). [`multinomial_counts`] does that with sequential conditional
//! binomials (BTPE sampler from `rand_distr`).

use anyhow::{anyhow, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{check_confidence, quantile_sorted, Interval, Method, DEFAULT_CONFIDENCE};
use crate::error::input_error;

/// Number of resamples, confidence level and seed for a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    pub resamples: usize,
    pub confidence: f64,
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 2000,
            confidence: DEFAULT_CONFIDENCE,
            seed: 20_241_101,
        }
    }
}

impl BootstrapConfig {
    pub(crate) fn check(&self) -> Result<()> {
        check_confidence(self.confidence)?;
        if self.resamples < 2 {
            return Err(input_error(format!(
                "bootstrap resamples must be at least 2, got {}",
                self.resamples
            )));
        }
        Ok(())
    }

    /// The same settings with a seed derived from `salt`, so that separate bootstraps in one
    /// audit (one per grouping, say) use unrelated random streams.
    pub fn salted(&self, salt: u64) -> BootstrapConfig {
        // SplitMix64 finaliser: a cheap bijective mix so nearby salts give unrelated seeds.
        let mut z = self.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        BootstrapConfig {
            seed: z ^ (z >> 31),
            ..*self
        }
    }
}

/// The random stream for resample `index` of a bootstrap seeded with `seed`.
pub fn resample_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// Run `replicate` once per resample, in parallel, each with its own seeded stream.
pub fn replicates<F>(config: &BootstrapConfig, replicate: F) -> Vec<f64>
where
    F: Fn(&mut ChaCha8Rng) -> f64 + Sync,
{
    (0..config.resamples)
        .into_par_iter()
        .map(|b| replicate(&mut resample_rng(config.seed, b)))
        .collect()
}

/// Percentile interval from replicates: quantiles `(1-c)/2` and `(1+c)/2`. Fails if any
/// replicate is not finite, naming how many.
pub fn percentile_interval(
    mut reps: Vec<f64>,
    estimate: f64,
    n: usize,
    confidence: f64,
    method: Method,
) -> Result<Interval> {
    let bad = reps.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(anyhow!(
            "the statistic was not finite on {bad} of {} bootstrap resamples",
            reps.len()
        ));
    }
    reps.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    Ok(Interval {
        n,
        estimate,
        low: quantile_sorted(&reps, alpha / 2.0),
        high: quantile_sorted(&reps, 1.0 - alpha / 2.0),
        confidence,
        method,
    })
}

/// Percentile bootstrap of `statistic` over `data`, resampling items with replacement.
pub fn bootstrap<T, F>(data: &[T], statistic: F, config: &BootstrapConfig) -> Result<Interval>
where
    T: Clone + Sync,
    F: Fn(&[T]) -> f64 + Sync,
{
    config.check()?;
    if data.is_empty() {
        return Err(input_error("cannot bootstrap an empty sample"));
    }
    let estimate = statistic(data);
    let n = data.len();
    let reps = replicates(config, |rng| {
        let sample: Vec<T> = (0..n).map(|_| data[rng.gen_range(0..n)].clone()).collect();
        statistic(&sample)
    });
    percentile_interval(
        reps,
        estimate,
        n,
        config.confidence,
        Method::PercentileBootstrap,
    )
}

/// Percentile bootstrap resampling within strata: each stratum keeps its size and is
/// resampled from its own items. `strata[i]` is item `i`'s stratum (any integer labels).
/// The statistic sees the resampled items stratum by stratum, in ascending stratum order.
pub fn bootstrap_stratified<T, F>(
    data: &[T],
    strata: &[usize],
    statistic: F,
    config: &BootstrapConfig,
) -> Result<Interval>
where
    T: Clone + Sync,
    F: Fn(&[T]) -> f64 + Sync,
{
    config.check()?;
    if data.len() != strata.len() {
        return Err(input_error(format!(
            "stratified bootstrap: {} items but {} stratum labels",
            data.len(),
            strata.len()
        )));
    }
    if data.is_empty() {
        return Err(input_error("cannot bootstrap an empty sample"));
    }
    let mut members: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &s) in strata.iter().enumerate() {
        members.entry(s).or_default().push(i);
    }
    let members: Vec<Vec<usize>> = members.into_values().collect();
    let estimate = statistic(data);
    let reps = replicates(config, |rng| {
        let mut sample = Vec::with_capacity(data.len());
        for idx in &members {
            for _ in 0..idx.len() {
                sample.push(data[idx[rng.gen_range(0..idx.len())]].clone());
            }
        }
        statistic(&sample)
    });
    percentile_interval(
        reps,
        estimate,
        data.len(),
        config.confidence,
        Method::StratifiedBootstrap,
    )
}

/// Item indices of each cluster, clusters in ascending label order (so a resample does not
/// depend on the order items came in). `labels[i]` is item `i`'s cluster.
pub fn cluster_members<S: AsRef<str>>(labels: &[S]) -> Vec<Vec<usize>> {
    let mut members: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, l) in labels.iter().enumerate() {
        members.entry(l.as_ref()).or_default().push(i);
    }
    members.into_values().collect()
}

/// One cluster bootstrap resample: as many clusters as there are, drawn with replacement,
/// each bringing all its items. Writes the drawn item indices into `out` (cleared first).
/// Items of one cluster (pairs sharing an identity, questions about one image) are not
/// independent, so it is the clusters that are resampled (Davison & Hinkley 1997, §3.8).
pub fn resample_clusters(rng: &mut ChaCha8Rng, members: &[Vec<usize>], out: &mut Vec<usize>) {
    out.clear();
    if members.is_empty() {
        return;
    }
    for _ in 0..members.len() {
        out.extend_from_slice(&members[rng.gen_range(0..members.len())]);
    }
}

/// One binomial draw; degenerate probabilities are handled without the sampler.
pub fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    // p is in (0, 1) here, so construction cannot fail.
    Binomial::new(n, p).map(|d| d.sample(rng)).unwrap_or(0)
}

/// Draw counts for `n` items over categories with the given (non-negative) weights,
/// exactly as resampling `n` items with replacement and counting per category would.
pub fn multinomial_counts(rng: &mut ChaCha8Rng, n: u64, weights: &[f64], out: &mut [u64]) {
    let mut remaining_n = n;
    let mut remaining_w: f64 = weights.iter().sum();
    for (k, (&w, slot)) in weights.iter().zip(out.iter_mut()).enumerate() {
        if remaining_n == 0 || remaining_w <= 0.0 {
            *slot = 0;
            continue;
        }
        let draw = if k + 1 == weights.len() {
            remaining_n
        } else {
            binomial(rng, remaining_n, w / remaining_w)
        };
        *slot = draw;
        remaining_n -= draw;
        remaining_w -= w;
    }
}

/// Above this many distinct values the mean bootstrap resamples items directly.
const DISTINCT_LIMIT: usize = 4096;

/// Percentile bootstrap of the mean of `values`. When the values take few distinct levels
/// (integer age errors, 0/1 scores) each resample is a multinomial draw over the levels,
/// which is the same distribution as resampling items; otherwise items are resampled.
pub fn bootstrap_mean(values: &[f64], config: &BootstrapConfig) -> Result<Interval> {
    config.check()?;
    if values.is_empty() {
        return Err(input_error("cannot bootstrap the mean of an empty sample"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(input_error(format!(
            "value {i} is not finite ({})",
            values[i]
        )));
    }
    let n = values.len();
    let estimate = values.iter().sum::<f64>() / n as f64;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut levels: Vec<f64> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    for v in sorted {
        if levels.last() == Some(&v) {
            *counts.last_mut().expect("non-empty") += 1.0;
        } else {
            levels.push(v);
            counts.push(1.0);
            if levels.len() > DISTINCT_LIMIT {
                break;
            }
        }
    }
    let reps = if levels.len() <= DISTINCT_LIMIT {
        replicates(config, |rng| {
            let mut draw = vec![0u64; levels.len()];
            multinomial_counts(rng, n as u64, &counts, &mut draw);
            levels
                .iter()
                .zip(&draw)
                .map(|(v, &c)| v * c as f64)
                .sum::<f64>()
                / n as f64
        })
    } else {
        replicates(config, |rng| {
            (0..n).map(|_| values[rng.gen_range(0..n)]).sum::<f64>() / n as f64
        })
    };
    percentile_interval(
        reps,
        estimate,
        n,
        config.confidence,
        Method::PercentileBootstrap,
    )
}
