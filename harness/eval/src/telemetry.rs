//! Efficiency telemetry: latency percentiles per stage, TPOT, throughput, peak memory and the
//! hardware a run used (`docs/telemetry.md`).
//!
//! Latencies are summarised from `predictions.jsonl` alone (each line carries its `timings`),
//! so `metrics.json` stays recomputable from the run folder. What cannot be read back from
//! predictions — peak RSS, peak VRAM, the hardware — is measured while the run goes by
//! [`crate::hardware`] and recorded in `manifest.json`. The types are in
//! [`crate::run_folder::schema`].

use faceval_models::StepTimings;

use crate::run_folder::schema::{Outcome, Prediction};
pub use crate::run_folder::schema::{RunTelemetry, Summary, Telemetry};
use crate::stats::quantile_sorted;

/// Items asked first in each task of a run whose timings are left out of the summaries:
/// the first call pays for lazy initialisation (kernel selection, allocator growth, page
/// faults on freshly mapped weights) that later calls do not.
pub const DEFAULT_WARMUP: usize = 1;

/// The percentile definition of [`summarize`] ([`crate::stats::quantile_sorted`]), recorded
/// in `metrics.json`.
pub const PERCENTILE_METHOD: &str =
    "linear interpolation between closest ranks (numpy.percentile default, Hyndman-Fan type 7)";

/// Questions per model call when `faceval run --batch-size` is not given.
pub const DEFAULT_BATCH_SIZE: usize = 1;

/// Summary of the finite values among `values`; `None` when there are none.
pub fn summarize(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let p = |q: f64| quantile_sorted(&v, q / 100.0);
    Some(Summary {
        n: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        p50: p(50.0),
        p90: p(90.0),
        p95: p(95.0),
        p99: p(99.0),
        max: v[v.len() - 1],
    })
}

/// Time per output token after the first, as vLLM's benchmarks define it:
/// `(e2e − TTFT) / (output_tokens − 1)`, only for outputs of at least two tokens.
pub fn tpot_ms(e2e_ms: f64, ttft_ms: f64, output_tokens: usize) -> Option<f64> {
    (output_tokens >= 2).then(|| (e2e_ms - ttft_ms) / (output_tokens - 1) as f64)
}

/// Whether a model reported its stage split for this item. A model that reports nothing
/// leaves all four at zero; a real stage never takes exactly 0 ns.
pub fn has_stage_split(t: &StepTimings) -> bool {
    t.preprocess_ms > 0.0 || t.vision_ms > 0.0 || t.prefill_ms > 0.0 || t.decode_ms > 0.0
}

/// Time to first token measured from the start of the model call, the origin of `e2e_ms`:
/// preprocessing, the vision encoder and the prefill.
pub fn ttft_ms(t: &StepTimings) -> f64 {
    t.preprocess_ms + t.vision_ms + t.prefill_ms
}

/// Summarise `preds`. `None` when no prediction carries a runner-measured time (imported runs,
/// or runs written before telemetry existed).
pub fn from_predictions<'a>(preds: impl IntoIterator<Item = &'a Prediction>) -> Option<Telemetry> {
    let mut counted: Vec<&Prediction> = Vec::new();
    let mut n_warmup = 0;
    for p in preds {
        // Failed calls are left out: their time measures the failure, not the model.
        if p.outcome == Outcome::Error || p.timings.e2e_ms <= 0.0 {
            continue;
        }
        if p.timings.warmup {
            n_warmup += 1;
        } else {
            counted.push(p);
        }
    }
    if counted.is_empty() && n_warmup == 0 {
        return None;
    }
    let split: Vec<&Prediction> = counted
        .iter()
        .copied()
        .filter(|p| has_stage_split(&p.timings))
        .collect();
    let stage = |f: fn(&StepTimings) -> f64| summarize(split.iter().map(|p| f(&p.timings)));
    let mut decode_tokens = 0u64;
    let mut decode_ms = 0.0;
    for p in &split {
        if p.output_tokens >= 2 {
            decode_tokens += (p.output_tokens - 1) as u64;
            decode_ms += p.timings.decode_ms;
        }
    }
    let prompt_tokens = counted.iter().map(|p| p.prompt_tokens as u64).sum();
    let output_tokens: u64 = counted.iter().map(|p| p.output_tokens as u64).sum();
    let wall_ms: f64 = counted.iter().map(|p| p.timings.wall_ms.max(0.0)).sum();
    let wall_s = (wall_ms > 0.0).then_some(wall_ms / 1e3);
    Some(Telemetry {
        n: counted.len(),
        n_warmup,
        n_stage_timed: split.len(),
        preprocess_ms: stage(|t| t.preprocess_ms),
        vision_ms: stage(|t| t.vision_ms),
        prefill_ms: stage(|t| t.prefill_ms),
        ttft_ms: stage(ttft_ms),
        decode_ms: stage(|t| t.decode_ms),
        e2e_ms: summarize(counted.iter().map(|p| p.timings.e2e_ms)),
        tpot_ms: summarize(
            split
                .iter()
                .filter_map(|p| tpot_ms(p.timings.e2e_ms, ttft_ms(&p.timings), p.output_tokens)),
        ),
        prompt_tokens,
        output_tokens,
        model_time_s: counted.iter().map(|p| p.timings.e2e_ms).sum::<f64>() / 1e3,
        wall_s,
        items_per_s: wall_s.map(|w| counted.len() as f64 / w),
        // Models that report no tokens (the baselines) get no token rate rather than 0.
        output_tokens_per_s: wall_s
            .filter(|_| output_tokens > 0)
            .map(|w| output_tokens as f64 / w),
        decode_tokens_per_s: (decode_ms > 0.0).then(|| decode_tokens as f64 / (decode_ms / 1e3)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_folder::schema::Resources;

    // Values from numpy 2.4.6:
    //   python3 -c "import numpy as np; x=np.array([12.5,3.0,7.25,100.0,41.0,5.5,9.0,18.75,2.0,64.0,33.3,27.0]);
    //               print([float(np.percentile(x,q)) for q in (50,90,95,99)], float(x.mean()))"
    const XS: [f64; 12] = [
        12.5, 3.0, 7.25, 100.0, 41.0, 5.5, 9.0, 18.75, 2.0, 64.0, 33.3, 27.0,
    ];
    const NP_P50: f64 = 15.625;
    const NP_P90: f64 = 61.70000000000001;
    const NP_P95: f64 = 80.19999999999997;
    const NP_P99: f64 = 96.04000000000002;
    const NP_MEAN: f64 = 26.941666666666666;

    #[test]
    fn percentiles_match_numpy_linear() {
        let s = summarize(XS).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert!(close(s.p50, NP_P50), "{}", s.p50);
        assert!(close(s.p90, NP_P90), "{}", s.p90);
        assert!(close(s.p95, NP_P95), "{}", s.p95);
        assert!(close(s.p99, NP_P99), "{}", s.p99);
        assert!(close(s.mean, NP_MEAN), "{}", s.mean);
        assert_eq!((s.n, s.min, s.max), (12, 2.0, 100.0));
        // Two values: np.percentile([4.0, 1.0], [50, 90, 95, 99]) = [2.5, 3.7, 3.85, 3.97].
        let s = summarize([4.0, 1.0]).unwrap();
        for (got, want) in [(s.p50, 2.5), (s.p90, 3.7), (s.p95, 3.85), (s.p99, 3.97)] {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        // One value: every percentile is that value; none for no values (NaN is dropped).
        let s = summarize([7.0, f64::NAN]).unwrap();
        assert_eq!((s.n, s.p50, s.p99, s.max), (1, 7.0, 7.0, 7.0));
        assert!(summarize(std::iter::empty()).is_none());
        assert_eq!(quantile_sorted(&[1.0, 2.0], 0.0), 1.0);
        assert_eq!(quantile_sorted(&[1.0, 2.0], 1.0), 2.0);
    }

    #[test]
    fn tpot_follows_vllm() {
        // 10 output tokens, first after 30 ms, last at 120 ms: (120 − 30)/(10 − 1) = 10 ms.
        assert_eq!(tpot_ms(120.0, 30.0, 10), Some(10.0));
        // A single token has no time between tokens.
        assert_eq!(tpot_ms(50.0, 50.0, 1), None);
        assert_eq!(tpot_ms(50.0, 50.0, 0), None);
    }

    fn pred(id: &str, t: StepTimings, out: usize, outcome: Outcome) -> Prediction {
        let line = serde_json::json!({"id": id, "task": "t", "outcome": outcome, "output_tokens": out,
            "prompt_tokens": 100, "timings": t, "parsed": null, "target": null});
        serde_json::from_value(line).unwrap()
    }

    fn timings(pre: f64, vis: f64, prefill: f64, dec: f64, e2e: f64, wall: f64) -> StepTimings {
        StepTimings {
            preprocess_ms: pre,
            vision_ms: vis,
            prefill_ms: prefill,
            decode_ms: dec,
            e2e_ms: e2e,
            wall_ms: wall,
            warmup: false,
        }
    }

    #[test]
    fn telemetry_of_crafted_predictions() {
        let mut warm = timings(50.0, 50.0, 50.0, 50.0, 400.0, 900.0);
        warm.warmup = true;
        let preds = vec![
            pred("w", warm, 5, Outcome::Correct),
            // TTFT 2+8+10 = 20 ms, e2e 110 ms, 10 tokens: TPOT (110 − 20)/9 = 10 ms.
            pred(
                "a",
                timings(2.0, 8.0, 10.0, 88.0, 110.0, 120.0),
                10,
                Outcome::Correct,
            ),
            // TTFT 40 ms, e2e 70 ms, 4 tokens: TPOT 10 ms.
            pred(
                "b",
                timings(5.0, 15.0, 20.0, 29.0, 70.0, 80.0),
                4,
                Outcome::Wrong,
            ),
            // One token: counted for latency, not for TPOT.
            pred(
                "c",
                timings(1.0, 1.0, 8.0, 0.0, 10.0, 20.0),
                1,
                Outcome::Unparseable,
            ),
            // A model that reports no split: e2e only.
            pred(
                "d",
                timings(0.0, 0.0, 0.0, 0.0, 30.0, 30.0),
                0,
                Outcome::Correct,
            ),
            // Errors and untimed lines are left out.
            pred(
                "e",
                timings(1.0, 1.0, 1.0, 1.0, 5.0, 5.0),
                3,
                Outcome::Error,
            ),
            pred(
                "f",
                timings(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
                3,
                Outcome::Correct,
            ),
        ];
        let t = from_predictions(&preds).unwrap();
        assert_eq!((t.n, t.n_warmup, t.n_stage_timed), (4, 1, 3));
        let tpot = t.tpot_ms.unwrap();
        assert_eq!(tpot.n, 2);
        assert!((tpot.mean - 10.0).abs() < 1e-12 && (tpot.max - 10.0).abs() < 1e-12);
        assert_eq!(t.e2e_ms.as_ref().unwrap().n, 4);
        assert_eq!(t.e2e_ms.as_ref().unwrap().max, 110.0);
        assert_eq!(t.ttft_ms.as_ref().unwrap().max, 40.0);
        assert_eq!(t.output_tokens, 15);
        assert_eq!(t.prompt_tokens, 400);
        assert!((t.model_time_s - 0.22).abs() < 1e-12);
        assert!((t.wall_s.unwrap() - 0.25).abs() < 1e-12);
        assert!((t.items_per_s.unwrap() - 16.0).abs() < 1e-9);
        assert!((t.output_tokens_per_s.unwrap() - 60.0).abs() < 1e-9);
        // (9 + 3) tokens over (88 + 29) ms of decoding.
        assert!((t.decode_tokens_per_s.unwrap() - 12.0 / 0.117).abs() < 1e-9);
        // Imported predictions carry no runner time: no telemetry at all.
        assert!(from_predictions(&preds[6..]).is_none());
    }

    #[test]
    fn resources_keep_the_higher_peak() {
        let a = Resources {
            peak_rss_bytes: Some(10),
            vram_unavailable_reason: Some("NVML not found".into()),
            vram_samples: 0,
            ..Default::default()
        };
        let b = Resources {
            peak_rss_bytes: Some(20),
            peak_vram_bytes: Some(5),
            vram_samples: 3,
            ..Default::default()
        };
        let m = a.max(&b);
        assert_eq!(
            (m.peak_rss_bytes, m.peak_vram_bytes, m.vram_samples),
            (Some(20), Some(5), 3)
        );
        assert!(m.vram_unavailable_reason.is_none());
    }
}
