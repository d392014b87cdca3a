//! Decoding helpers shared by every generative family: greedy choice with `torch.argmax`'s
//! tie rule, log-sum-exp in f64, the top-k log-probabilities a [`crate::Generation`]
//! reports (the crate-level counterpart of candle-transformers' `generation`), and the
//! greedy loop of one sequence ([`greedy`]) that LLaVA and Qwen2-VL run.

use std::time::Instant;

use anyhow::Result;

/// What greedy decoding of one sequence produced.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub tokens: Vec<u32>,
    /// Top-5 log-probabilities at each generated position.
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    /// f32 logits of each step (only when asked for: parity checks).
    pub step_logits: Vec<Vec<f32>>,
    /// The prompt's forward pass up to the first token's logits.
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// Greedy decoding of one sequence. `forward(None, 0)` runs the prompt and returns the first
/// token's logits; `forward(Some(token), n)` feeds back the n-th generated token and returns
/// the next logits. Decoding stops at a stop token (kept, as transformers keeps EOS), after
/// `max_new` tokens, or when `stop_here` (which sees the tokens so far) says so. Nothing runs
/// when `max_new` is 0.
pub fn greedy(
    max_new: usize,
    stop_ids: &[u32],
    keep_logits: bool,
    mut forward: impl FnMut(Option<u32>, usize) -> Result<Vec<f32>>,
    mut stop_here: impl FnMut(&[u32]) -> bool,
) -> Result<Decoded> {
    let mut out = Decoded::default();
    if max_new == 0 {
        return Ok(out);
    }
    let t0 = Instant::now();
    let mut logits = forward(None, 0)?;
    out.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    loop {
        let next = argmax(&logits);
        out.top_logprobs.push(top_k_logprobs(&logits, 5));
        if keep_logits {
            out.step_logits.push(std::mem::take(&mut logits));
        }
        out.tokens.push(next);
        if stop_ids.contains(&next) || out.tokens.len() >= max_new || stop_here(&out.tokens) {
            break;
        }
        logits = forward(Some(next), out.tokens.len())?;
    }
    out.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// Index of the first maximum (torch.argmax semantics).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

pub fn log_sum_exp(xs: &[f32]) -> f64 {
    let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = xs.iter().map(|&x| (x as f64 - m).exp()).sum();
    m + s.ln()
}

/// The `k` most likely tokens with their log-probabilities, best first (ties by lower id).
pub fn top_k_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let lse = log_sum_exp(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .partial_cmp(&logits[*a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter()
        .map(|i| (i, (logits[i as usize] as f64 - lse) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn greedy_keeps_the_stop_token_and_feeds_back_each_token() {
        // Logits that favour token (step + 1) % 4; token 3 stops.
        let mut fed = vec![];
        let logits = |i: usize| (0..4).map(|t| if t == i % 4 { 1.0 } else { 0.0 }).collect();
        let out = greedy(
            10,
            &[3],
            true,
            |tok, n| {
                fed.push((tok, n));
                Ok(logits(n + 1))
            },
            |_| false,
        )
        .unwrap();
        assert_eq!(out.tokens, vec![1, 2, 3]);
        assert_eq!(fed, vec![(None, 0), (Some(1), 1), (Some(2), 2)]);
        assert_eq!(out.step_logits.len(), 3);
        assert_eq!(out.top_logprobs.len(), 3);
        let none = greedy(0, &[], false, |_, _| unreachable!(), |_| false).unwrap();
        assert!(none.tokens.is_empty());
        let two = greedy(2, &[], false, |_, n| Ok(logits(n + 1)), |_| false).unwrap();
        assert_eq!(two.tokens, vec![1, 2]);
        assert!(two.step_logits.is_empty());
    }

    #[test]
    fn top_k_is_sorted_and_normalised() {
        let l = [0.0f32, 2.0, 1.0, 2.0, -1.0];
        let top = top_k_logprobs(&l, 3);
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f64 = l.iter().map(|&x| (x as f64 - log_sum_exp(&l)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((top[0].1 as f64 - (2.0 - log_sum_exp(&l))).abs() < 1e-6);
    }
}
