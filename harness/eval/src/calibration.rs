//! Calibration of the option probabilities a model gives (`docs/calibration.md`).
//!
//! Where a prediction carries `option_logprobs` (likelihood scoring, or a served model's
//! option log-probabilities), a softmax over the options gives one probability per option.
//! The top option's probability is the **confidence**; the prediction is right when the top
//! option is the target. From those:
//!
//! - **ECE**: 15 equal-width bins over the confidence, `(k/15, (k+1)/15]` (the first bin
//!   also holds 0); the bin-count-weighted mean of |accuracy − mean confidence| per bin.
//! - **MCE**: the largest |accuracy − mean confidence| over the non-empty bins.
//! - **Brier** (multi-class): the mean over predictions of Σₖ (pₖ − yₖ)², where yₖ is 1 for
//!   the target and 0 otherwise (0 is perfect, 2 the worst).
//!
//! Each comes with a seeded percentile bootstrap interval (resampling predictions), overall
//! and per group. The reference values of the tests come from `tools/make_calibration_reference.py`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::run_folder::{Outcome, Prediction};
use crate::stats::{self, BootstrapConfig, Interval};

/// Equal-width confidence bins of ECE, MCE and the reliability diagram.
pub const BINS: usize = 15;

/// One probabilistic forecast: the top option's probability, whether the top option is the
/// target, and the forecast's multi-class Brier term.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    pub confidence: f64,
    pub correct: bool,
    pub brier: f64,
}

/// The forecast behind one prediction's option log-probabilities, or `None` when they do not
/// make one (no options, a non-finite value, or a target that is not among the options).
/// Ties for the top option go to the first key, as the runner's argmax does.
pub fn forecast(option_logprobs: &BTreeMap<String, f64>, target: &str) -> Option<Forecast> {
    let (keys, logits): (Vec<&String>, Vec<f64>) = option_logprobs.iter().unzip();
    if logits.is_empty() || logits.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let truth = keys.iter().position(|k| k.as_str() == target)?;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|v| (v - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    let probs: Vec<f64> = exp.iter().map(|e| e / total).collect();
    let mut top = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > probs[top] {
            top = i;
        }
    }
    let brier = probs
        .iter()
        .enumerate()
        .map(|(i, p)| (p - f64::from(u8::from(i == truth))).powi(2))
        .sum();
    Some(Forecast {
        confidence: probs[top],
        correct: top == truth,
        brier,
    })
}

/// The bin of a confidence: `(k/15, (k+1)/15]` is bin k, and 0 falls in bin 0.
pub fn bin_of(confidence: f64) -> usize {
    ((confidence * BINS as f64).ceil() as usize).clamp(1, BINS) - 1
}

/// One bar of the reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub low: f64,
    pub high: f64,
    pub n: usize,
    /// Share right in the bin; `null` for an empty bin.
    pub accuracy: Option<f64>,
    /// Mean confidence in the bin; `null` for an empty bin.
    pub confidence: Option<f64>,
}

/// The 15 bins, empty ones included.
pub fn reliability(forecasts: &[Forecast]) -> Vec<ReliabilityBin> {
    let mut sums = [(0usize, 0.0f64, 0.0f64); BINS];
    for f in forecasts {
        let s = &mut sums[bin_of(f.confidence)];
        s.0 += 1;
        s.1 += f64::from(u8::from(f.correct));
        s.2 += f.confidence;
    }
    sums.iter()
        .enumerate()
        .map(|(k, &(n, right, conf))| ReliabilityBin {
            low: k as f64 / BINS as f64,
            high: (k + 1) as f64 / BINS as f64,
            n,
            accuracy: (n > 0).then(|| right / n as f64),
            confidence: (n > 0).then(|| conf / n as f64),
        })
        .collect()
}

/// |accuracy − confidence| of each non-empty bin, with its count.
fn gaps(forecasts: &[Forecast]) -> impl Iterator<Item = (usize, f64)> {
    reliability(forecasts)
        .into_iter()
        .filter_map(|b| Some((b.n, (b.accuracy? - b.confidence?).abs())))
}

/// Expected calibration error over [`BINS`] bins (NaN for no forecasts).
pub fn ece(forecasts: &[Forecast]) -> f64 {
    if forecasts.is_empty() {
        return f64::NAN;
    }
    let n = forecasts.len() as f64;
    gaps(forecasts).map(|(k, g)| k as f64 / n * g).sum()
}

/// Maximum calibration error over the non-empty bins (NaN for no forecasts).
pub fn mce(forecasts: &[Forecast]) -> f64 {
    gaps(forecasts).map(|(_, g)| g).fold(f64::NAN, f64::max)
}

/// Mean multi-class Brier score (NaN for no forecasts).
pub fn brier(forecasts: &[Forecast]) -> f64 {
    forecasts.iter().map(|f| f.brier).sum::<f64>() / forecasts.len() as f64
}

/// ECE, MCE and Brier of a set of forecasts, each with its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationScores {
    pub n: usize,
    pub ece: Interval,
    pub mce: Interval,
    pub brier: Interval,
}

/// Scores of a non-empty set of forecasts; `config` seeds the three bootstraps (salted apart).
pub fn scores(forecasts: &[Forecast], config: &BootstrapConfig) -> Option<CalibrationScores> {
    let boot =
        |f: fn(&[Forecast]) -> f64, salt| stats::bootstrap(forecasts, f, &config.salted(salt)).ok();
    Some(CalibrationScores {
        n: forecasts.len(),
        ece: boot(ece, 1)?,
        mce: boot(mce, 2)?,
        brier: boot(brier, 3)?,
    })
}

/// The `calibration` block of a task in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Equal-width confidence bins (15).
    pub bins: usize,
    #[serde(flatten)]
    pub overall: CalibrationScores,
    /// Scored predictions without usable `option_logprobs`, left out of this block.
    pub n_without_probabilities: usize,
    /// The reliability diagram's bars.
    pub reliability: Vec<ReliabilityBin>,
    /// Per group field, per group value.
    #[serde(default)]
    pub groups: BTreeMap<String, BTreeMap<String, CalibrationScores>>,
}

/// Calibration of the scored (non-error) predictions that carry option log-probabilities,
/// overall and per value of each of `group_fields`; `None` when none carries them. Each
/// line is one forecast: a circular question's rotations are separate forecasts.
pub fn calibration(
    preds: &[&Prediction],
    group_fields: &[String],
    config: &BootstrapConfig,
) -> Option<Calibration> {
    let scored: Vec<&Prediction> = preds
        .iter()
        .copied()
        .filter(|p| p.outcome != Outcome::Error)
        .collect();
    let with: Vec<(&Prediction, Forecast)> = scored
        .iter()
        .filter_map(|p| {
            Some((
                *p,
                forecast(p.option_logprobs.as_ref()?, p.target.as_deref()?)?,
            ))
        })
        .collect();
    if with.is_empty() {
        return None;
    }
    let all: Vec<Forecast> = with.iter().map(|(_, f)| *f).collect();
    let mut groups = BTreeMap::new();
    for (i, field) in group_fields.iter().enumerate() {
        let mut by_value: BTreeMap<&str, Vec<Forecast>> = BTreeMap::new();
        for (p, f) in &with {
            if let Some(v) = p.groups.get(field) {
                by_value.entry(v.as_str()).or_default().push(*f);
            }
        }
        let per: BTreeMap<String, CalibrationScores> = by_value
            .into_iter()
            .enumerate()
            .filter_map(|(j, (v, fs))| {
                let salt = 1000 * (i as u64 + 1) + j as u64;
                Some((v.to_string(), scores(&fs, &config.salted(salt))?))
            })
            .collect();
        if !per.is_empty() {
            groups.insert(field.clone(), per);
        }
    }
    Some(Calibration {
        bins: BINS,
        overall: scores(&all, config)?,
        n_without_probabilities: scored.len() - with.len(),
        reliability: reliability(&all),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture `tools/make_calibration_reference.py` writes: option log-probabilities,
    /// targets and numpy's ECE, MCE, Brier and bins.
    #[derive(Deserialize)]
    struct Reference {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        option_logprobs: Vec<BTreeMap<String, f64>>,
        targets: Vec<String>,
        confidence: Vec<f64>,
        correct: Vec<bool>,
        ece: f64,
        mce: f64,
        brier: f64,
        bin_counts: Vec<usize>,
    }

    fn reference() -> Reference {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/calibration_reference.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn ece_mce_brier_and_bins_match_numpy() {
        let r = reference();
        assert!(r.cases.len() >= 3);
        for c in &r.cases {
            let fs: Vec<Forecast> = c
                .option_logprobs
                .iter()
                .zip(&c.targets)
                .map(|(lp, t)| forecast(lp, t).unwrap())
                .collect();
            for (i, f) in fs.iter().enumerate() {
                assert!((f.confidence - c.confidence[i]).abs() < 1e-12, "{}", c.name);
                assert_eq!(f.correct, c.correct[i], "{} #{i}", c.name);
            }
            let bins: Vec<usize> = reliability(&fs).iter().map(|b| b.n).collect();
            assert_eq!(bins, c.bin_counts, "{}", c.name);
            assert!(
                (ece(&fs) - c.ece).abs() < 1e-12,
                "{}: {} vs {}",
                c.name,
                ece(&fs),
                c.ece
            );
            assert!((mce(&fs) - c.mce).abs() < 1e-12, "{}", c.name);
            assert!((brier(&fs) - c.brier).abs() < 1e-12, "{}", c.name);
            let s = scores(&fs, &BootstrapConfig::default()).unwrap();
            for (i, est) in [(&s.ece, c.ece), (&s.mce, c.mce), (&s.brier, c.brier)] {
                assert!(
                    (i.estimate - est).abs() < 1e-12 && i.low <= i.high,
                    "{}",
                    c.name
                );
                assert_eq!(i.n, fs.len());
            }
        }
    }

    #[test]
    fn the_documented_example() {
        // docs/calibration.md: top-option probabilities 0.95 (right), 0.7 (right), 0.7
        // (wrong), 0.6 (wrong) over two options.
        let two = |p_a: f64, target: &str| {
            let lp: BTreeMap<String, f64> = [
                ("A".to_string(), p_a.ln()),
                ("B".to_string(), (1.0 - p_a).ln()),
            ]
            .into();
            forecast(&lp, target).unwrap()
        };
        let fs = [two(0.95, "A"), two(0.7, "A"), two(0.3, "A"), two(0.6, "B")];
        assert_eq!(fs.map(|f| f.correct), [true, true, false, false]);
        let bins: Vec<usize> = fs.iter().map(|f| bin_of(f.confidence)).collect();
        assert_eq!(bins, [14, 10, 10, 8]);
        assert!((ece(&fs) - 0.2625).abs() < 1e-12, "{}", ece(&fs));
        assert!((mce(&fs) - 0.6).abs() < 1e-12);
        assert!((brier(&fs) - 0.47125).abs() < 1e-12);
    }

    #[test]
    fn forecasts_refuse_what_makes_no_probability() {
        let lp = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
        };
        assert_eq!(forecast(&lp(&[]), "A"), None);
        assert_eq!(forecast(&lp(&[("A", -1.0), ("B", f64::NAN)]), "A"), None);
        assert_eq!(forecast(&lp(&[("A", -1.0), ("B", -2.0)]), "C"), None);
        // Equal log-likelihoods: confidence 1/2, the first option is the top one.
        let f = forecast(&lp(&[("A", -3.0), ("B", -3.0)]), "A").unwrap();
        assert_eq!((f.confidence, f.correct, f.brier), (0.5, true, 0.5));
        assert_eq!((bin_of(0.0), bin_of(1.0 / 15.0), bin_of(1.0)), (0, 0, 14));
        assert!(ece(&[]).is_nan() && mce(&[]).is_nan() && brier(&[]).is_nan());
    }
}
