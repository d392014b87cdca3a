//! Decoding on top of [`InternVl`]: greedy generation with a KV cache (one sequence or a
//! batch), and log-likelihoods of candidate answers that share one prefill.
//!
//! Batches use [`InternVl::forward_packed`]: the sequences' tokens are packed into one row and
//! attend each over its own cache, so a batch's tokens and logits are those of batch 1. The
//! one difference is rounding in the weight matmuls: candle's CPU gemm gives a row the same
//! bits whatever the number of rows (2 or more), but a single row (a batch-1 decode step) goes
//! through a matrix-vector kernel that sums in another order, so batch-1 and batch-N logits
//! differ by a few f32 ulps (3e-6..5e-6 in log-probability on the fixtures;
//! `tests/internvl_batch.rs` asserts equal tokens and 1e-5). Forcing two rows on batch 1 would
//! make them bit-equal but slows CPU decoding 2-3x. A sequence that stops leaves the batch.
//!
//! Greedy picks the first maximal logit, as `torch.argmax` does, so token choices match
//! transformers' `generate(do_sample=False)`. Log-probabilities are computed on the host in
//! f64 from the f32 logits. Any NaN or infinity in a step's logits is an error, never a token.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::{InternVl, KvCache};
pub use crate::generation::{argmax, log_sum_exp, top_k_logprobs};

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
    let mut out = greedy_batch(
        model,
        std::slice::from_ref(prompt_embeds),
        std::slice::from_ref(opts),
        usize::MAX,
        |_, toks| stop_here(toks),
    )?;
    out.pop().expect("one result per prompt")
}

/// Greedy decoding of several prompts together; one result per prompt, in order, each equal to
/// what [`greedy`] gives for that prompt alone. `stop_here(i, tokens)` is asked after each step
/// of prompt `i`. Prompts are prefilled in groups of at most `prefill_tokens` tokens (a prompt
/// longer than that goes alone), which bounds the activations' memory; decoding then steps all
/// unfinished sequences at once. A sequence's own failure (non-finite logits) is its `Err`;
/// an `Err` of the whole call means the forward pass itself failed. `prefill_ms` and
/// `decode_ms` of every result are the batch's.
pub fn greedy_batch(
    model: &InternVl,
    prompt_embeds: &[Tensor],
    opts: &[DecodeOptions],
    prefill_tokens: usize,
    mut stop_here: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Result<Decoded>>> {
    if prompt_embeds.len() != opts.len() {
        bail!(
            "greedy_batch: {} prompts but {} option sets",
            prompt_embeds.len(),
            opts.len()
        );
    }
    let t0 = Instant::now();
    let mut outs: Vec<Result<Decoded>> = opts
        .iter()
        .map(|_| {
            Ok(Decoded {
                tokens: vec![],
                top_logprobs: vec![],
                step_logits: vec![],
                stop: StopReason::MaxTokens,
                prefill_ms: 0.0,
                decode_ms: 0.0,
            })
        })
        .collect();
    // Sequences still decoding: (index into `outs`, its cache).
    let mut active: Vec<(usize, KvCache)> = vec![];
    let mut logits: Vec<Vec<f32>> = vec![];
    let todo: Vec<usize> = (0..opts.len())
        .filter(|&i| opts[i].max_new_tokens > 0)
        .collect();
    if todo.is_empty() {
        return Ok(outs);
    }
    // Prefill, in groups that fit the token budget.
    let mut group: Vec<usize> = vec![];
    let mut group_tokens = 0;
    for (k, &i) in todo.iter().enumerate() {
        let t = prompt_embeds[i].dim(1)?;
        group.push(i);
        group_tokens += t;
        let next_t = match todo.get(k + 1) {
            Some(&j) => Some(prompt_embeds[j].dim(1)?),
            None => None,
        };
        if next_t.is_none_or(|nt| group_tokens + nt > prefill_tokens) {
            let lens: Vec<usize> = group
                .iter()
                .map(|&i| prompt_embeds[i].dim(1))
                .collect::<candle_core::Result<_>>()?;
            let mut caches: Vec<KvCache> = group.iter().map(|_| model.new_cache()).collect();
            let embeds = if group.len() == 1 {
                prompt_embeds[group[0]].clone()
            } else {
                let parts: Vec<&Tensor> = group.iter().map(|&i| &prompt_embeds[i]).collect();
                Tensor::cat(&parts, 1)?
            };
            let hidden = model.forward_packed(&embeds, &lens, &mut caches)?;
            // The last position of each sequence: its first token's logits.
            let mut last = Vec::with_capacity(lens.len());
            let mut end = 0u32;
            for &l in &lens {
                end += l as u32;
                last.push(end - 1);
            }
            let idx = Tensor::new(last.as_slice(), hidden.device())?;
            logits.extend(host_logits_rows(model, &hidden.index_select(&idx, 1)?)?);
            active.extend(group.drain(..).zip(caches));
            group_tokens = 0;
        }
    }
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    loop {
        // One step for every active sequence, from its latest logits.
        let mut next_ids = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for ((i, _), row) in active.iter().zip(&logits) {
            let (i, opts) = (*i, &opts[*i]);
            let Ok(out) = outs[i].as_mut() else {
                keep.push(false);
                continue;
            };
            let step = out.tokens.len();
            if let Err(e) = check_finite(row, step) {
                outs[i] = Err(e);
                keep.push(false);
                continue;
            }
            let next = argmax(row);
            if opts.top_logprobs > 0 {
                out.top_logprobs
                    .push(top_k_logprobs(row, opts.top_logprobs));
            }
            if opts.keep_step_logits {
                out.step_logits.push(row.clone());
            }
            out.tokens.push(next);
            let stop = if opts.stop_token_ids.contains(&next) {
                Some(StopReason::StopToken(next))
            } else if out.tokens.len() >= opts.max_new_tokens {
                Some(StopReason::MaxTokens)
            } else if stop_here(i, &out.tokens) {
                Some(StopReason::Callback)
            } else {
                None
            };
            if let Some(stop) = stop {
                out.stop = stop;
            } else {
                next_ids.push(next);
            }
            keep.push(stop.is_none());
        }
        let mut flags = keep.into_iter();
        active.retain(|_| flags.next().unwrap_or(false));
        if active.is_empty() {
            break;
        }
        let emb = model.language_model().embed_ids(&next_ids)?;
        let lens = vec![1; active.len()];
        let mut caches: Vec<KvCache> = active.iter().map(|(_, c)| c.clone()).collect();
        let hidden = model.forward_packed(&emb, &lens, &mut caches)?;
        for ((_, c), new) in active.iter_mut().zip(caches) {
            *c = new;
        }
        logits = host_logits_rows(model, &hidden)?;
    }
    let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    for out in outs.iter_mut().flatten() {
        out.prefill_ms = prefill_ms;
        out.decode_ms = decode_ms;
    }
    Ok(outs)
}

/// Sum of log-probabilities of each continuation after the prompt. The prompt runs once; then
/// every continuation runs in ONE packed forward pass, each from a copy of the prompt's cache
/// (see [`InternVl::forward_packed`]). Every continuation must be non-empty. Equal to
/// [`continuation_logprobs_sequential`] (tested to 1e-5 in f32).
pub fn continuation_logprobs(
    model: &InternVl,
    prompt_embeds: &Tensor,
    continuations: &[Vec<u32>],
) -> Result<Vec<f64>> {
    let (cache, first, first_lse) = prefix(model, prompt_embeds, continuations)?;
    let mut scores: Vec<f64> = continuations
        .iter()
        .map(|c| first[c[0] as usize] as f64 - first_lse)
        .collect();
    // Continuation i feeds its tokens but the last; token j+1 is scored from output j.
    let longer: Vec<usize> = (0..continuations.len())
        .filter(|&i| continuations[i].len() > 1)
        .collect();
    if longer.is_empty() {
        return Ok(scores);
    }
    let mut ids = vec![];
    let mut lens = vec![];
    for &i in &longer {
        let c = &continuations[i];
        ids.extend_from_slice(&c[..c.len() - 1]);
        lens.push(c.len() - 1);
    }
    let emb = model.language_model().embed_ids(&ids)?;
    let mut caches = vec![cache; longer.len()];
    let hidden = model.forward_packed(&emb, &lens, &mut caches)?;
    let rows = host_logits_rows(model, &hidden)?;
    let mut at = 0;
    for (&i, &len) in longer.iter().zip(&lens) {
        for (j, &next) in continuations[i][1..].iter().enumerate() {
            let row = &rows[at + j];
            check_finite(row, j + 1)?;
            scores[i] += row[next as usize] as f64 - log_sum_exp(row);
        }
        at += len;
    }
    Ok(scores)
}

/// [`continuation_logprobs`] one continuation at a time (one forward pass each, from a copy of
/// the prompt's cache): the reference the batched version is tested and benchmarked against.
pub fn continuation_logprobs_sequential(
    model: &InternVl,
    prompt_embeds: &Tensor,
    continuations: &[Vec<u32>],
) -> Result<Vec<f64>> {
    let (cache, first, first_lse) = prefix(model, prompt_embeds, continuations)?;
    let mut scores = Vec::with_capacity(continuations.len());
    for cont in continuations {
        let mut total = first[cont[0] as usize] as f64 - first_lse;
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

/// The prompt's cache, the first answer token's logits and their log-sum-exp; checks that no
/// continuation is empty.
fn prefix(
    model: &InternVl,
    prompt_embeds: &Tensor,
    continuations: &[Vec<u32>],
) -> Result<(KvCache, Vec<f32>, f64)> {
    if let Some(ci) = continuations.iter().position(|c| c.is_empty()) {
        bail!("answer continuation {ci} is empty (it tokenised to no tokens)");
    }
    let mut cache = model.new_cache();
    let hidden = model.forward(prompt_embeds, &mut cache)?;
    let t = hidden.dim(1)?;
    let first = host_logits(model, &hidden.narrow(1, t - 1, 1)?)?;
    check_finite(&first, 0)?;
    let lse = log_sum_exp(&first);
    Ok((cache, first, lse))
}

/// Host f32 logits of every position of hidden states `[1, n, hidden]`, one row per position.
fn host_logits_rows(model: &InternVl, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(model.logits(hidden)?.squeeze(0)?.to_vec2::<f32>()?)
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
