//! Decoding on top of [`InternVl`]: greedy generation with a KV cache, and log-likelihoods of
//! candidate answers that share one prefill.
//!
//! Greedy picks the first maximal logit, as `torch.argmax` does, so token choices match
//! transformers' `generate(do_sample=False)`. Log-probabilities are computed on the host in
//! f64 from the f32 logits. Any NaN or infinity in a step's logits is an error, never a token.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::{InternVl, KvCache};

/// Settings for [`greedy`].
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub max_new_tokens: usize,
    /// Generation ends after emitting one of these (the token is kept in the output, as
    /// transformers keeps the EOS in `sequences`).
    pub stop_token_ids: Vec<u32>,
    /// How many `(token, logprob)` pairs to record per step (5 in [`crate::Generation`]).
    pub top_logprobs: usize,
    /// Keep every step's full logits (parity tests); costs vocab × steps floats.
    pub keep_step_logits: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            stop_token_ids: vec![],
            top_logprobs: 5,
            keep_step_logits: false,
        }
    }
}

/// Why decoding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    StopToken(u32),
    MaxTokens,
    /// The caller's `stop_here` callback asked to stop (e.g. a stop string appeared).
    Callback,
}

/// Result of [`greedy`].
#[derive(Debug, Clone)]
pub struct Decoded {
    pub tokens: Vec<u32>,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub step_logits: Vec<Vec<f32>>,
    pub stop: StopReason,
    /// Prompt forward pass up to the first token's logits.
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// Greedy decoding from prompt embeddings `[1, t, hidden]` (see [`InternVl::input_embeds`]).
/// `stop_here` sees the tokens so far after each step and returns true to stop.
pub fn greedy(
    model: &InternVl,
    prompt_embeds: &Tensor,
    opts: &DecodeOptions,
    mut stop_here: impl FnMut(&[u32]) -> bool,
) -> Result<Decoded> {
    let t0 = Instant::now();
    let mut cache = model.new_cache();
    let mut out = Decoded {
        tokens: vec![],
        top_logprobs: vec![],
        step_logits: vec![],
        stop: StopReason::MaxTokens,
        prefill_ms: 0.0,
        decode_ms: 0.0,
    };
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }
    let hidden = model.forward(prompt_embeds, &mut cache)?;
    let t = hidden.dim(1)?;
    let mut logits = host_logits(model, &hidden.narrow(1, t - 1, 1)?)?;
    out.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    loop {
        let step = out.tokens.len();
        check_finite(&logits, step)?;
        let next = argmax(&logits);
        if opts.top_logprobs > 0 {
            out.top_logprobs
                .push(top_k_logprobs(&logits, opts.top_logprobs));
        }
        if opts.keep_step_logits {
            out.step_logits.push(logits.clone());
        }
        out.tokens.push(next);
        if opts.stop_token_ids.contains(&next) {
            out.stop = StopReason::StopToken(next);
            break;
        }
        if out.tokens.len() >= opts.max_new_tokens {
            out.stop = StopReason::MaxTokens;
            break;
        }
        if stop_here(&out.tokens) {
            out.stop = StopReason::Callback;
            break;
        }
        let emb = model.language_model().embed_ids(&[next])?;
        let hidden = model.forward(&emb, &mut cache)?;
        logits = host_logits(model, &hidden)?;
    }
    out.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// Sum of log-probabilities of each continuation after the prompt. The prompt runs once; each
/// continuation then runs from a copy of its cache. Every continuation must be non-empty.
pub fn continuation_logprobs(
    model: &InternVl,
    prompt_embeds: &Tensor,
    continuations: &[Vec<u32>],
) -> Result<Vec<f64>> {
    let mut cache = model.new_cache();
    let hidden = model.forward(prompt_embeds, &mut cache)?;
    let t = hidden.dim(1)?;
    let first = host_logits(model, &hidden.narrow(1, t - 1, 1)?)?;
    check_finite(&first, 0)?;
    let first_lse = log_sum_exp(&first);
    let mut scores = Vec::with_capacity(continuations.len());
    for (ci, cont) in continuations.iter().enumerate() {
        let Some(&c0) = cont.first() else {
            bail!("answer continuation {ci} is empty (it tokenised to no tokens)");
        };
        let mut total = first[c0 as usize] as f64 - first_lse;
        if cont.len() > 1 {
            let mut branch: KvCache = cache.clone();
            let emb = model.language_model().embed_ids(&cont[..cont.len() - 1])?;
            let hidden = model.forward(&emb, &mut branch)?;
            let logits = model.logits(&hidden)?.squeeze(0)?;
            for (i, &next) in cont[1..].iter().enumerate() {
                let row: Vec<f32> = logits.get(i)?.to_vec1()?;
                check_finite(&row, i + 1)?;
                total += row[next as usize] as f64 - log_sum_exp(&row);
            }
        }
        scores.push(total);
    }
    Ok(scores)
}

fn host_logits(model: &InternVl, hidden_last: &Tensor) -> Result<Vec<f32>> {
    let logits = model.logits(hidden_last)?; // [1, 1, vocab]
    Ok(logits.flatten_all()?.to_vec1::<f32>()?)
}

fn check_finite(logits: &[f32], step: usize) -> Result<()> {
    if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
        bail!(
            "non-finite logit {} for token {i} at decoding step {step} (numerical overflow: try \
             dtype f32 or bf16 instead of f16)",
            logits[i]
        );
    }
    Ok(())
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
    fn top_k_is_sorted_and_normalised() {
        let l = [0.0f32, 2.0, 1.0, 2.0, -1.0];
        let top = top_k_logprobs(&l, 3);
        assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let total: f64 = l.iter().map(|&x| (x as f64 - log_sum_exp(&l)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!((top[0].1 as f64 - (2.0 - log_sum_exp(&l))).abs() < 1e-6);
    }

    #[test]
    fn non_finite_logits_are_an_error() {
        let err = check_finite(&[0.0, f32::NAN], 3).unwrap_err().to_string();
        assert!(err.contains("step 3"), "{err}");
    }
}
