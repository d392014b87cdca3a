//! Clustered standard errors for a mean score, as in Miller (2024), "Adding Error Bars to
//! Evals" (arXiv 2411.00640): items that share an image or identity are not independent,
//! so their residuals are summed within each cluster before squaring.
//!
//! With residuals `e_i = x_i − x̄` and clusters `c`:
//! `SE² = (1/n²) Σ_c (Σ_{i∈c} e_i)²` — the sandwich estimator for the intercept of an OLS fit
//! on a constant, equal to statsmodels `OLS(x, 1).fit(cov_type="cluster",
//! cov_kwds={"groups": g, "use_correction": False})`. [`ClusterCorrection`] selects this, the
//! paper's form (whose within-item part is the unbiased `s²/n` of its equation for the
//! CLT standard error) or statsmodels' default small-sample factor `G/(G−1)·(n−1)/(n−k)`,
//! which is `G/(G−1)` for a mean (k = 1).

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::input_error;

/// Which small-sample factor to apply to the clustered variance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClusterCorrection {
    /// `(1/n²) Σ_c (Σ_{i∈c} e_i)²`, no factor (statsmodels `use_correction=False`).
    #[default]
    None,
    /// Miller's equation: the same cross-item terms, but the own-item terms
    /// `Σ e_i²` divided by `n(n−1)` instead of `n²` (his CLT standard error uses the unbiased
    /// variance). With one item per cluster this equals the usual `s/√n`.
    Miller,
    /// The CR1 factor `G/(G−1) · (n−1)/(n−k)` with `k = 1` regressor, i.e. `G/(G−1)`
    /// (statsmodels' default `use_correction=True`, Stata's `vce(cluster)`).
    Cr1,
}

/// A mean with its ordinary and clustered standard errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteredMean {
    pub n: usize,
    pub clusters: usize,
    pub mean: f64,
    /// `s/√n` with the unbiased sample variance (ddof = 1); 0 when n = 1.
    pub se_iid: f64,
    pub se_clustered: f64,
    pub correction: ClusterCorrection,
}

/// Mean of `values` with its clustered standard error; `clusters[i]` names item `i`'s
/// cluster (give an item its own id when it shares nothing).
pub fn clustered_mean_se<S: AsRef<str>>(
    values: &[f64],
    clusters: &[S],
    correction: ClusterCorrection,
) -> Result<ClusteredMean> {
    if values.len() != clusters.len() {
        return Err(input_error(format!(
            "{} values but {} cluster labels",
            values.len(),
            clusters.len()
        )));
    }
    if values.is_empty() {
        return Err(input_error("a clustered mean needs at least one value"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(input_error(format!(
            "value {i} is not finite ({})",
            values[i]
        )));
    }
    let n = values.len();
    let nf = n as f64;
    let mean = values.iter().sum::<f64>() / nf;
    let mut sums: HashMap<&str, f64> = HashMap::new();
    let mut own = 0.0;
    for (v, c) in values.iter().zip(clusters) {
        let e = v - mean;
        own += e * e;
        *sums.entry(c.as_ref()).or_insert(0.0) += e;
    }
    let g = sums.len();
    let between: f64 = sums.values().map(|s| s * s).sum();
    let se_iid = if n > 1 {
        (own / (nf - 1.0) / nf).sqrt()
    } else {
        0.0
    };
    let var = match correction {
        ClusterCorrection::None => between / (nf * nf),
        ClusterCorrection::Miller => {
            // Cross terms Σ_c Σ_{i≠j} e_i e_j = between − own.
            let own_part = if n > 1 { own / (nf * (nf - 1.0)) } else { 0.0 };
            own_part + (between - own) / (nf * nf)
        }
        ClusterCorrection::Cr1 => {
            if g < 2 {
                return Err(input_error(
                    "the CR1 clustered standard error needs at least two clusters",
                ));
            }
            between / (nf * nf) * g as f64 / (g as f64 - 1.0)
        }
    };
    Ok(ClusteredMean {
        n,
        clusters: g,
        mean,
        se_iid,
        // A tiny negative from cancellation (Miller form) means zero variance.
        se_clustered: var.max(0.0).sqrt(),
        correction,
    })
}
