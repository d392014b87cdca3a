//! Multiple-comparison adjustments of p-values: Holm (family-wise error) and
//! Benjamini–Hochberg (false discovery rate). Both match statsmodels
//! `multipletests(method="holm")` and `multipletests(method="fdr_bh")`: adjusted values are
//! made monotone in the order of the raw p-values and capped at 1, and are returned in the
//! input order.

use anyhow::Result;

use crate::error::input_error;

fn check(p: &[f64]) -> Result<()> {
    if let Some(i) = p.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(input_error(format!(
            "p-value {i} is {}, not within [0, 1]",
            p[i]
        )));
    }
    Ok(())
}

fn ascending_order(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    // Stable sort: ties keep input order, as numpy's mergesort does in statsmodels.
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    order
}

/// Holm step-down adjustment: the i-th smallest p (0-based) becomes
/// `max_{j ≤ i} min(1, (m − j) p_(j))`.
pub fn holm(p: &[f64]) -> Result<Vec<f64>> {
    check(p)?;
    let m = p.len();
    let order = ascending_order(p);
    let mut out = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    Ok(out)
}

/// Benjamini–Hochberg step-up adjustment: the i-th smallest p (1-based) becomes
/// `min_{j ≥ i} min(1, m p_(j) / j)`.
pub fn benjamini_hochberg(p: &[f64]) -> Result<Vec<f64>> {
    check(p)?;
    let m = p.len();
    let order = ascending_order(p);
    let mut out = vec![0.0; m];
    let mut running: f64 = 1.0;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(m as f64 * p[i] / (rank + 1) as f64);
        out[i] = running.min(1.0);
    }
    Ok(out)
}
