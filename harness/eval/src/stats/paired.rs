//! Paired comparison of two runs on the same items: McNemar's exact test (and its mid-p
//! variant) on the discordant pairs, Newcombe's interval for the difference of paired
//! proportions, a paired bootstrap for any other metric, and the minimum detectable effect.

use anyhow::Result;
use rand::Rng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, Discrete, DiscreteCDF};

use super::bootstrap::{percentile_interval, replicates, BootstrapConfig};
use super::intervals::wilson;
use super::{check_confidence, normal_quantile, Interval, Method};
use crate::error::input_error;

/// The 2×2 table of two runs' correctness on the same items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PairedCounts {
    /// Both runs correct.
    pub both: u64,
    /// Only the first run correct.
    pub only_first: u64,
    /// Only the second run correct.
    pub only_second: u64,
    /// Both runs wrong.
    pub neither: u64,
}

impl PairedCounts {
    /// Count the four cells from two runs' per-item correctness (same item order).
    pub fn from_runs(first: &[bool], second: &[bool]) -> Result<PairedCounts> {
        if first.len() != second.len() {
            return Err(input_error(format!(
                "paired runs differ in length: {} and {} items",
                first.len(),
                second.len()
            )));
        }
        let mut c = PairedCounts::default();
        for (&a, &b) in first.iter().zip(second) {
            match (a, b) {
                (true, true) => c.both += 1,
                (true, false) => c.only_first += 1,
                (false, true) => c.only_second += 1,
                (false, false) => c.neither += 1,
            }
        }
        Ok(c)
    }

    pub fn n(&self) -> u64 {
        self.both + self.only_first + self.only_second + self.neither
    }

    pub fn discordant(&self) -> u64 {
        self.only_first + self.only_second
    }
}

/// McNemar's exact test on the discordant pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    pub discordant: u64,
    /// `min(only_first, only_second)`, statsmodels' reported statistic for the exact test.
    pub statistic: u64,
    /// Two-sided exact p: `min(1, 2·P(X ≤ statistic))`, X ~ Bin(discordant, ½).
    pub p_value: f64,
    /// Mid-p: the exact p minus `P(X = statistic)`, capped at 1.
    pub mid_p_value: f64,
}

/// McNemar's exact test, as statsmodels `mcnemar(table, exact=True)`: a two-sided binomial
/// test of the discordant pairs against ½. With no discordant pairs p = 1 (and mid-p = 1).
pub fn mcnemar_exact(counts: &PairedCounts) -> McNemar {
    let d = counts.discordant();
    let k = counts.only_first.min(counts.only_second);
    if d == 0 {
        return McNemar {
            discordant: 0,
            statistic: 0,
            p_value: 1.0,
            mid_p_value: 1.0,
        };
    }
    // d ≥ 1 and p = ½ are valid parameters.
    let bin = Binomial::new(0.5, d).expect("valid binomial");
    let p = (2.0 * bin.cdf(k)).min(1.0);
    let mid = (2.0 * bin.cdf(k) - bin.pmf(k)).min(1.0);
    McNemar {
        discordant: d,
        statistic: k,
        p_value: p,
        mid_p_value: mid,
    }
}

/// Newcombe (1998) method 10 interval for `p1 − p2 = (only_first − only_second)/n`: Wilson
/// intervals for each run's accuracy combined through the phi coefficient of the table,
/// with the paper's continuity adjustment of phi's numerator (AD − BC is reduced by n/2
/// when it exceeds n/2, set to 0 when it lies in [0, n/2], and left as is when negative).
pub fn newcombe_paired(counts: &PairedCounts, confidence: f64) -> Result<Interval> {
    check_confidence(confidence)?;
    let n = counts.n();
    if n == 0 {
        return Err(input_error("a paired difference needs at least one pair"));
    }
    let (a, b, c, d) = (
        counts.both as f64,
        counts.only_first as f64,
        counts.only_second as f64,
        counts.neither as f64,
    );
    let nf = n as f64;
    let w1 = wilson(counts.both + counts.only_first, n, confidence)?;
    let w2 = wilson(counts.both + counts.only_second, n, confidence)?;
    let (p1, l1, u1) = (w1.estimate, w1.low, w1.high);
    let (p2, l2, u2) = (w2.estimate, w2.low, w2.high);
    let denom = (a + b) * (c + d) * (a + c) * (b + d);
    let cross = a * d - b * c;
    let adjusted = if cross > nf / 2.0 {
        cross - nf / 2.0
    } else if cross >= 0.0 {
        0.0
    } else {
        cross
    };
    let phi = if denom > 0.0 {
        adjusted / denom.sqrt()
    } else {
        0.0
    };
    let theta = p1 - p2;
    let dl = ((p1 - l1).powi(2) - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2).powi(2)).max(0.0);
    let du = ((u1 - p1).powi(2) - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2).powi(2)).max(0.0);
    Ok(Interval {
        n: n as usize,
        estimate: theta,
        low: (theta - dl.sqrt()).max(-1.0),
        high: (theta + du.sqrt()).min(1.0),
        confidence,
        method: Method::Newcombe,
    })
}

/// Paired percentile bootstrap of `statistic(first) − statistic(second)`: each resample
/// draws the same item indices for both runs, so per-item difficulty cancels.
pub fn paired_bootstrap<T, F>(
    first: &[T],
    second: &[T],
    statistic: F,
    config: &BootstrapConfig,
) -> Result<Interval>
where
    T: Clone + Sync,
    F: Fn(&[T]) -> f64 + Sync,
{
    config.check()?;
    if first.len() != second.len() {
        return Err(input_error(format!(
            "paired runs differ in length: {} and {} items",
            first.len(),
            second.len()
        )));
    }
    let n = first.len();
    if n == 0 {
        return Err(input_error("cannot bootstrap an empty pair of runs"));
    }
    let estimate = statistic(first) - statistic(second);
    let reps = replicates(config, |rng| {
        let idx: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
        let a: Vec<T> = idx.iter().map(|&i| first[i].clone()).collect();
        let b: Vec<T> = idx.iter().map(|&i| second[i].clone()).collect();
        statistic(&a) - statistic(&b)
    });
    percentile_interval(
        reps,
        estimate,
        n,
        config.confidence,
        Method::PairedBootstrap,
    )
}

/// Minimum detectable paired accuracy difference at `n` pairs, for a two-sided test at
/// level `alpha` with the given power, when a fraction `discordance` of pairs disagree:
/// `(z_{1−α/2} + z_{power}) · √(discordance / n)`. This is the normal approximation to
/// McNemar's test, using Var(p̂1 − p̂2) ≈ ψ/n under the null (ψ = discordance rate; the
/// −δ² term of the exact variance is dropped, which makes the figure slightly conservative).
pub fn minimum_detectable_effect(n: u64, discordance: f64, alpha: f64, power: f64) -> Result<f64> {
    if n == 0 {
        return Err(input_error("the minimum detectable effect needs n ≥ 1"));
    }
    if !(0.0..=1.0).contains(&discordance) {
        return Err(input_error(format!(
            "discordance rate must be in [0, 1], got {discordance}"
        )));
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(input_error(format!("alpha must be in (0, 1), got {alpha}")));
    }
    if !(power > 0.0 && power < 1.0) {
        return Err(input_error(format!("power must be in (0, 1), got {power}")));
    }
    let z = normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power);
    Ok(z * (discordance / n as f64).sqrt())
}

/// Everything the gate and report need about two runs on the same items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    pub counts: PairedCounts,
    pub accuracy_first: f64,
    pub accuracy_second: f64,
    /// First minus second, with Newcombe's interval.
    pub difference: Interval,
    pub mcnemar: McNemar,
    /// From the observed discordance rate; `None` when no pair is discordant (the rate is
    /// then unknown, not zero), with the reason in `mde_note`.
    pub minimum_detectable_effect: Option<f64>,
    pub mde_note: Option<String>,
}

/// Compare two runs' per-item correctness on the same items.
pub fn compare_paired(
    first: &[bool],
    second: &[bool],
    confidence: f64,
    alpha: f64,
    power: f64,
) -> Result<PairedComparison> {
    let counts = PairedCounts::from_runs(first, second)?;
    let difference = newcombe_paired(&counts, confidence)?;
    let n = counts.n();
    let (mde, note) = if counts.discordant() == 0 {
        (
            None,
            Some("no discordant pairs: the discordance rate is unknown".to_string()),
        )
    } else {
        let rate = counts.discordant() as f64 / n as f64;
        (
            Some(minimum_detectable_effect(n, rate, alpha, power)?),
            None,
        )
    };
    Ok(PairedComparison {
        counts,
        accuracy_first: (counts.both + counts.only_first) as f64 / n as f64,
        accuracy_second: (counts.both + counts.only_second) as f64 / n as f64,
        difference,
        mcnemar: mcnemar_exact(&counts),
        minimum_detectable_effect: mde,
        mde_note: note,
    })
}

/// One-sided p-value of H0: δ ≥ −margin against H1: δ < −margin, where δ = first − second,
/// by inverting Newcombe's interval: the smallest α whose one-sided (1 − α) upper bound —
/// the upper limit of the two-sided (1 − 2α) interval — lies below −margin. When the point
/// estimate itself is ≥ −margin no α < ½ rejects, and p is reported as 1 (conservative).
pub fn newcombe_one_sided_p(counts: &PairedCounts, margin: f64) -> Result<f64> {
    let n = counts.n();
    if n == 0 {
        return Err(input_error("no paired questions"));
    }
    let estimate = (counts.only_first as f64 - counts.only_second as f64) / n as f64;
    if estimate >= -margin {
        return Ok(1.0);
    }
    let upper =
        |alpha: f64| -> Result<f64> { Ok(newcombe_paired(counts, 1.0 - 2.0 * alpha)?.high) };
    // Bisection (the bound shrinks towards the estimate as α grows to ½).
    let (mut lo, mut hi) = (1e-15, 0.5 - 1e-12);
    if upper(lo)? < -margin {
        return Ok(lo);
    }
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if upper(mid)? < -margin {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(both: u64, only_first: u64, only_second: u64, neither: u64) -> PairedCounts {
        PairedCounts {
            both,
            only_first,
            only_second,
            neither,
        }
    }

    #[test]
    fn one_sided_p_inverts_the_newcombe_bound() {
        // A clear 10-point drop on 1,000 questions, margin 1 point.
        let c = counts(600, 20, 120, 260);
        let p = newcombe_one_sided_p(&c, 0.01).unwrap();
        assert!(p < 1e-6, "{p}");
        // At α = p the one-sided upper bound sits on −margin.
        let c2 = counts(150, 10, 22, 18);
        let p2 = newcombe_one_sided_p(&c2, 0.01).unwrap();
        assert!(p2 > 0.0 && p2 < 0.5, "{p2}");
        let at = newcombe_paired(&c2, 1.0 - 2.0 * p2).unwrap().high;
        assert!((at + 0.01).abs() < 1e-9, "bound at p: {at}");
        // Estimate above −margin: never a regression.
        assert_eq!(
            newcombe_one_sided_p(&counts(50, 5, 5, 40), 0.01).unwrap(),
            1.0
        );
        assert_eq!(
            newcombe_one_sided_p(&counts(50, 0, 0, 50), 0.0).unwrap(),
            1.0
        );
    }

    #[test]
    fn one_sided_p_is_monotone_in_the_margin() {
        let c = counts(500, 30, 60, 410);
        let ps: Vec<f64> = [0.0, 0.01, 0.02, 0.025]
            .iter()
            .map(|m| newcombe_one_sided_p(&c, *m).unwrap())
            .collect();
        assert!(ps.windows(2).all(|w| w[0] <= w[1]), "{ps:?}");
    }
}
