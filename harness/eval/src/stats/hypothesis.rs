//! Pearson's chi-square test of independence for a contingency table, used to ask whether
//! correctness depends on group membership.
//!
//! No Yates continuity correction is applied, for any table shape (2×2 included): this
//! matches `scipy.stats.chi2_contingency(table, correction=False)` everywhere, whereas
//! scipy's default would switch to Yates only for one degree of freedom. One rule for all
//! tables keeps statistics comparable across group fields with two or more levels.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use statrs::function::gamma::gamma_ur;

use crate::error::input_error;

/// Result of a chi-square test of independence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChiSquare {
    /// Pearson's X² statistic; `None` when the test is undefined (see `reason`).
    pub statistic: Option<f64>,
    /// Degrees of freedom, (rows − 1)(columns − 1) over the non-empty rows.
    pub dof: usize,
    /// Upper-tail p-value of X² under χ²(dof); 1 when dof = 0, as scipy reports.
    pub p_value: Option<f64>,
    /// Why the test is undefined, when it is.
    pub reason: Option<String>,
}

/// Chi-square test of independence for `table` (rows × columns of counts). Rows whose total
/// is zero are dropped (they carry no information). A column whose total is zero makes an
/// expected count zero, where the statistic is undefined: that is reported with a reason,
/// where scipy raises an error.
pub fn chi_square_independence(table: &[Vec<u64>]) -> Result<ChiSquare> {
    let cols = table.first().map(|r| r.len()).unwrap_or(0);
    if let Some((i, r)) = table.iter().enumerate().find(|(_, r)| r.len() != cols) {
        return Err(input_error(format!(
            "contingency table row {i} has {} columns, row 0 has {cols}",
            r.len()
        )));
    }
    let rows: Vec<&Vec<u64>> = table.iter().filter(|r| r.iter().sum::<u64>() > 0).collect();
    if rows.is_empty() || cols == 0 {
        return Ok(ChiSquare {
            statistic: None,
            dof: 0,
            p_value: None,
            reason: Some("the table is empty".into()),
        });
    }
    let row_totals: Vec<f64> = rows.iter().map(|r| r.iter().sum::<u64>() as f64).collect();
    let col_totals: Vec<f64> = (0..cols)
        .map(|j| rows.iter().map(|r| r[j]).sum::<u64>() as f64)
        .collect();
    let total: f64 = row_totals.iter().sum();
    let dof = (rows.len() - 1) * (cols - 1);
    if let Some(j) = col_totals.iter().position(|&c| c == 0.0) {
        return Ok(ChiSquare {
            statistic: None,
            dof,
            p_value: None,
            reason: Some(format!(
                "column {j} of the table is all zero (for correctness: every item is {}), so an expected count is zero",
                if j == 0 { "in the other column" } else { "in the first column" }
            )),
        });
    }
    if dof == 0 {
        return Ok(ChiSquare {
            statistic: Some(0.0),
            dof,
            p_value: Some(1.0),
            reason: None,
        });
    }
    let mut x2 = 0.0;
    for (r, rt) in rows.iter().zip(&row_totals) {
        for (j, ct) in col_totals.iter().enumerate() {
            let expected = rt * ct / total;
            let d = r[j] as f64 - expected;
            x2 += d * d / expected;
        }
    }
    // Upper regularised gamma gives the survival function without 1 − cdf cancellation.
    let p = if x2 > 0.0 {
        gamma_ur(dof as f64 / 2.0, x2 / 2.0)
    } else {
        1.0
    };
    Ok(ChiSquare {
        statistic: Some(x2),
        dof,
        p_value: Some(p),
        reason: None,
    })
}

/// Chi-square test of independence between correctness and group, from each group's
/// correct count and size.
pub fn correctness_by_group(correct: &[u64], sizes: &[u64]) -> Result<ChiSquare> {
    if correct.len() != sizes.len() {
        return Err(input_error(
            "correct counts and group sizes differ in length",
        ));
    }
    let mut table = Vec::with_capacity(sizes.len());
    for (&c, &n) in correct.iter().zip(sizes) {
        if c > n {
            return Err(input_error(format!(
                "correct count {c} exceeds group size {n}"
            )));
        }
        table.push(vec![c, n - c]);
    }
    chi_square_independence(&table)
}
