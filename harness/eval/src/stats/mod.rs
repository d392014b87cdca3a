//! Statistics for evaluation results: intervals for proportions and any statistic, seeded
//! bootstraps, hypothesis tests, multiple-comparison adjustments, clustered standard errors
//! and paired comparisons of two runs.
//!
//! Everything here is a pure function over simple inputs (counts, slices of bools or f64,
//! cluster labels), so the audit command, the gate and the report can all use it on any run.
//! Definitions and the reference implementation each one matches are in `docs/statistics.md`.

pub mod bootstrap;
pub mod cluster;
pub mod hypothesis;
pub mod intervals;
pub mod multiple;
pub mod paired;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::error::input_error;

pub use bootstrap::{bootstrap, bootstrap_mean, bootstrap_stratified, BootstrapConfig};
pub use cluster::{clustered_mean_se, ClusterCorrection, ClusteredMean};
pub use hypothesis::{chi_square_independence, ChiSquare};
pub use intervals::{clopper_pearson, macro_averages, newcombe_independent, wilson, MacroAverages};
pub use multiple::{benjamini_hochberg, holm};
pub use paired::{
    compare_paired, mcnemar_exact, minimum_detectable_effect, newcombe_one_sided_p,
    newcombe_paired, paired_bootstrap, McNemar, PairedComparison, PairedCounts,
};

/// Confidence level used when the caller does not choose one.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// How an interval was computed; serialised in snake case (`"wilson"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Wilson score interval (no continuity correction).
    Wilson,
    /// Clopper–Pearson exact interval from beta quantiles.
    ClopperPearson,
    /// Percentile bootstrap, resampling items with replacement.
    PercentileBootstrap,
    /// Percentile bootstrap, resampling within each stratum (group) separately.
    StratifiedBootstrap,
    /// Percentile bootstrap of paired differences (the same item indices for both runs).
    PairedBootstrap,
    /// Percentile bootstrap resampling whole clusters (identities) with replacement.
    ClusterBootstrap,
    /// Newcombe (1998) method 10 for a paired difference of proportions.
    Newcombe,
    /// Newcombe (1998) method 10 for the difference of two independent proportions.
    NewcombeIndependent,
}

/// A point estimate with a two-sided interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Number of items (or pairs) the estimate is based on.
    pub n: usize,
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Two-sided confidence level, e.g. 0.95.
    pub confidence: f64,
    pub method: Method,
}

impl Interval {
    /// Width of the interval, `high - low`.
    pub fn width(&self) -> f64 {
        self.high - self.low
    }

    /// True when `value` lies within `[low, high]`.
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }
}

/// Quantile `q` of ascending-sorted `sorted`, with linear interpolation between order
/// statistics (numpy's default `method="linear"`, Hyndman–Fan type 7); `NaN` for an empty
/// slice. The one quantile of faceval: bootstrap intervals, telemetry percentiles and the
/// report's latency figures all use it.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// A p-value as faceval prints it: four decimals, scientific below 1e-4, and `< 1e-300`
/// where an exact tail probability underflowed to 0 (rather than "0e0").
pub fn format_p(p: f64) -> String {
    if p < f64::MIN_POSITIVE {
        "< 1e-300".to_string()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// Reject confidence levels outside (0, 1): they have no meaning and would make quantiles panic.
pub(crate) fn check_confidence(confidence: f64) -> Result<()> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(input_error(format!(
            "confidence must be strictly between 0 and 1, got {confidence}"
        )));
    }
    Ok(())
}

/// Standard normal quantile at `p`.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    // Normal::new(0, 1) cannot fail.
    let std = Normal::new(0.0, 1.0).expect("standard normal");
    std.inverse_cdf(p)
}

/// The two-sided critical value `z` for a confidence level (1.959963984540054 for 0.95).
pub(crate) fn z_two_sided(confidence: f64) -> f64 {
    normal_quantile(1.0 - (1.0 - confidence) / 2.0)
}
