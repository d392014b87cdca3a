//! Qwen2 / Qwen2.5 decoder that takes input embeddings, following transformers'
//! `Qwen2Model` + `lm_head`.
//!
//! Written here rather than reusing candle-transformers' `qwen2` because that one cannot take
//! input embeddings (needed to splice image features in), builds its RoPE tables in the model
//! dtype (bf16 rounds positions: 257 → 256), and mixes f32 and model-dtype masks when several
//! tokens are fed after a cache. Here RoPE angles are computed in f32 exactly as transformers
//! does (inv_freq in f32, position × inv_freq in f32, cos/sin then cast), the causal mask is in
//! the model dtype, and attention softmax runs in f32 (transformers' eager path upcasts it).
//!
//! Several sequences run together through [`Qwen2::forward_packed`]: their tokens are packed
//! one after another into a single `[1, n, hidden]` row (no padding), so every weight matmul
//! is done once for the whole batch, while attention runs per sequence over its own
//! [`KvCache`] with exactly the shapes a lone sequence would have. This is why batched
//! outputs equal batch-1 outputs: there is no padding mask whose extra (zero-weight) softmax
//! terms or longer reductions could change the rounding, nor any position-id shift. The cost
//! is one small attention call per sequence and layer (launch overhead on a GPU).

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::config::{Activation, TextConfig};
use super::weights::Weights;
use crate::nn::linear;

/// Keys and values of every layer for the tokens seen so far, for one sequence (batches run
/// one cache per sequence, see [`Qwen2::forward_packed`]). Cloning is cheap
/// (tensors are reference-counted), which is how choice scoring branches from a shared prefix.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }
    /// Tokens already in the cache (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&xs.contiguous()?, &self.weight, self.eps)
    }
}

struct Layer {
    input_norm: RmsNorm,
    post_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Layer {
    fn load(w: &Weights, c: &TextConfig, i: usize) -> Result<Self> {
        let p = format!("model.language_model.layers.{i}");
        let h = c.hidden_size;
        let qd = c.num_attention_heads * c.head_dim;
        let kvd = c.num_key_value_heads * c.head_dim;
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: w.get(&format!("{p}.{name}.weight"), &[h])?,
                eps: c.rms_norm_eps as f32,
            })
        };
        Ok(Self {
            input_norm: norm("input_layernorm")?,
            post_norm: norm("post_attention_layernorm")?,
            q: linear(w, &format!("{p}.self_attn.q_proj"), qd, h, true)?,
            k: linear(w, &format!("{p}.self_attn.k_proj"), kvd, h, true)?,
            v: linear(w, &format!("{p}.self_attn.v_proj"), kvd, h, true)?,
            o: linear(w, &format!("{p}.self_attn.o_proj"), h, qd, false)?,
            gate: linear(
                w,
                &format!("{p}.mlp.gate_proj"),
                c.intermediate_size,
                h,
                false,
            )?,
            up: linear(
                w,
                &format!("{p}.mlp.up_proj"),
                c.intermediate_size,
                h,
                false,
            )?,
            down: linear(
                w,
                &format!("{p}.mlp.down_proj"),
                h,
                c.intermediate_size,
                false,
            )?,
            act: c.hidden_act,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        })
    }

    /// Self-attention over packed sequences: `xs` is `[1, n, hidden]` holding each segment's
    /// tokens in turn, `cos`/`sin` are `[n, head_dim/2]` at each token's own position, and
    /// segment `i` attends only to its cache `caches[i]` and its own tokens.
    fn attention(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[Segment],
        caches: &mut [&mut Option<(Tensor, Tensor)>],
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let shape = |x: Tensor, n: usize| -> candle_core::Result<Tensor> {
            x.reshape((b, t, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = shape(self.q.forward(xs)?, self.heads)?;
        let k = shape(self.k.forward(xs)?, self.kv_heads)?;
        let v = shape(self.v.forward(xs)?, self.kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let out = if let ([seg], [cache]) = (segments, &mut *caches) {
            self.attend(q, k, v, seg.mask.as_ref(), cache)?
        } else {
            let mut outs = Vec::with_capacity(segments.len());
            for (seg, cache) in segments.iter().zip(caches.iter_mut()) {
                // Contiguous copies, so each segment's tensors have the layout of a lone run.
                let part = |x: &Tensor| x.narrow(2, seg.start, seg.len)?.contiguous();
                outs.push(self.attend(
                    part(&q)?,
                    part(&k)?,
                    part(&v)?,
                    seg.mask.as_ref(),
                    cache,
                )?);
            }
            Tensor::cat(&outs, 2)?
        };
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o.forward(&out)
    }

    /// Attention of one sequence `q` `[1, heads, t, d]` (keys/values `[1, kv, t, d]`, after
    /// RoPE) over its cache and itself; extends the cache. Returns `[1, heads, t, d]`.
    fn attend(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> candle_core::Result<Tensor> {
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let rep = self.heads / self.kv_heads;
        let k = repeat_kv(&k, rep)?;
        let v = repeat_kv(&v, rep)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let mut att = (q.matmul(&k.t()?)? * scale)?;
        if let Some(m) = mask {
            att = att.broadcast_add(m)?;
        }
        let dtype = att.dtype();
        let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        att.matmul(&v)
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[Segment],
        caches: &mut [&mut Option<(Tensor, Tensor)>],
    ) -> candle_core::Result<Tensor> {
        let a = self.attention(&self.input_norm.forward(xs)?, cos, sin, segments, caches)?;
        let xs = (xs + a)?;
        let h = self.post_norm.forward(&xs)?;
        let m = self
            .down
            .forward(&(self.act.apply(&self.gate.forward(&h)?)? * self.up.forward(&h)?)?)?;
        xs + m
    }
}

/// One sequence's share of a packed forward pass: its tokens are `start..start+len` of the
/// packed row; `mask` is its causal mask over cache + own tokens (`None` for one token).
struct Segment {
    start: usize,
    len: usize,
    mask: Option<Tensor>,
}

/// `[b, kv, s, d]` → `[b, kv·rep, s, d]`, each kv head repeated `rep` times in place
/// (transformers' `repeat_kv`).
fn repeat_kv(xs: &Tensor, rep: usize) -> candle_core::Result<Tensor> {
    if rep == 1 {
        return Ok(xs.clone());
    }
    let (b, kv, s, d) = xs.dims4()?;
    xs.unsqueeze(2)?
        .broadcast_as((b, kv, rep, s, d))?
        .reshape((b, kv * rep, s, d))
}

/// The Qwen2 causal LM.
pub struct Qwen2 {
    cfg: TextConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    device: Device,
    dtype: DType,
}

impl Qwen2 {
    pub fn load(w: &Weights, cfg: &TextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let embed = w.get(
            "model.language_model.embed_tokens.weight",
            &[cfg.vocab_size, h],
        )?;
        // A checkpoint without lm_head ties it to the input embeddings.
        let lm_head = if w.contains("lm_head.weight") {
            w.get("lm_head.weight", &[cfg.vocab_size, h])?
        } else {
            embed.clone()
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(w, cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm {
            weight: w.get("model.language_model.norm.weight", &[h])?,
            eps: cfg.rms_norm_eps as f32,
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            inv_freq: inv_freq(cfg.rope_theta, cfg.head_dim),
            device: w.device().clone(),
            dtype: w.dtype(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token embeddings `[1, t, hidden]`.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            anyhow::bail!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.cfg.vocab_size
            );
        }
        let idx = Tensor::new(ids, &self.device)?;
        Ok(self.embed.index_select(&idx, 0)?.unsqueeze(0)?)
    }

    /// Runs `embeds` `[1, t, hidden]` after the cached tokens; returns the final hidden states
    /// (after the last RMSNorm) and extends the cache.
    pub fn forward_embeds(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let t = embeds.dim(1)?;
        self.forward_packed(embeds, &[t], std::slice::from_mut(cache))
    }

    /// Runs several sequences at once. `embeds` is `[1, n, hidden]`: the new tokens of sequence
    /// 0 (`lens[0]` of them), then those of sequence 1, and so on, each continuing after its own
    /// `caches[i]`. Returns the final hidden states `[1, n, hidden]` in the same packed order and
    /// extends every cache. Each sequence's result equals running it alone (see the module doc).
    pub fn forward_packed(
        &self,
        embeds: &Tensor,
        lens: &[usize],
        caches: &mut [KvCache],
    ) -> Result<Tensor> {
        let (b, n, _) = embeds.dims3()?;
        if b != 1 || lens.len() != caches.len() || lens.iter().sum::<usize>() != n {
            anyhow::bail!(
                "packed forward: embeddings {:?} do not hold {} sequences of lengths {lens:?} \
                 ({} caches)",
                embeds.dims(),
                lens.len(),
                caches.len()
            );
        }
        if let Some(i) = lens.iter().position(|&l| l == 0) {
            anyhow::bail!("packed forward: sequence {i} has no tokens");
        }
        let mut segments = Vec::with_capacity(lens.len());
        let mut cos = Vec::with_capacity(lens.len());
        let mut sin = Vec::with_capacity(lens.len());
        let mut start = 0;
        for (&t, cache) in lens.iter().zip(caches.iter()) {
            let offset = cache.len;
            if self.cfg.dynamic_rope && offset + t > self.cfg.max_position_embeddings {
                anyhow::bail!(
                    "sequence of {} tokens exceeds max_position_embeddings {}; dynamic NTK RoPE \
                     rescaling beyond it is not implemented",
                    offset + t,
                    self.cfg.max_position_embeddings
                );
            }
            let (c, s) = self.rope_tables(offset, t)?;
            cos.push(c);
            sin.push(s);
            let mask = if t > 1 {
                Some(self.causal_mask(offset, t)?)
            } else {
                None
            };
            segments.push(Segment {
                start,
                len: t,
                mask,
            });
            start += t;
        }
        let (cos, sin) = if lens.len() == 1 {
            (cos.remove(0), sin.remove(0))
        } else {
            (Tensor::cat(&cos, 0)?, Tensor::cat(&sin, 0)?)
        };
        let mut xs = embeds.to_dtype(self.dtype)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mut slots: Vec<&mut Option<(Tensor, Tensor)>> =
                caches.iter_mut().map(|c| &mut c.layers[i]).collect();
            xs = layer.forward(&xs, &cos, &sin, &segments, &mut slots)?;
        }
        for (cache, &t) in caches.iter_mut().zip(lens) {
            cache.len += t;
        }
        Ok(self.norm.forward(&xs)?)
    }

    /// Logits `[1, t, vocab]` (f32) of hidden states `[1, t, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden
            .broadcast_matmul(&self.lm_head.t()?)?
            .to_dtype(DType::F32)?)
    }

    /// cos/sin `[t, head_dim/2]` for positions `offset..offset+t`, in the model dtype.
    fn rope_tables(&self, offset: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in offset..offset + t {
            for &f in &self.inv_freq {
                // f32 product as in transformers (`inv_freq.float() @ position_ids.float()`);
                // cos/sin evaluated in f64 and rounded, i.e. the correctly rounded f32 value.
                let angle = (p as f32) * f;
                cos.push((angle as f64).cos() as f32);
                sin.push((angle as f64).sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (t, half), &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (t, half), &self.device)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// `[t, offset+t]` additive mask (0 or -inf) in the model dtype.
    fn causal_mask(&self, offset: usize, t: usize) -> Result<Tensor> {
        let s = offset + t;
        let v: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..s).map(move |j| {
                    if j > offset + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        Ok(Tensor::from_vec(v, (t, s), &self.device)?.to_dtype(self.dtype)?)
    }
}

/// `1 / theta^(2i/d)` as transformers computes it in f32: the exponent `arange(0,d,2)/d` is an
/// f32 division, then `theta ** exponent` rounded to f32 (computed in f64 here so the rounding
/// is the correct one rather than `powf`'s).
fn inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let e = (i as f32) / (head_dim as f32);
            let p = theta.powf(e as f64) as f32;
            1.0f32 / p
        })
        .collect()
}

/// Last-position slice helper used by decoding: `[1, t, v]` → `[v]`.
pub fn last_row(logits: &Tensor) -> Result<Tensor> {
    let t = logits.dim(1)?;
    Ok(logits.narrow(1, t - 1, 1)?.squeeze(0)?.squeeze(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_freq_matches_torch_for_qwen_theta() {
        // torch: 1.0 / (1e6 ** (torch.arange(0, 64, 2).float() / 64)), entries 0, 1 and 31.
        let f = inv_freq(1e6, 64);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.649_381_6).abs() < 1e-6, "{}", f[1]);
        assert!((f[31] - 1.539_926_5e-6).abs() < 1e-11, "{}", f[31]);
    }

    #[test]
    fn repeat_kv_repeats_each_head_in_place() {
        let xs = Tensor::arange(0f32, 4., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 2, 1))
            .unwrap();
        let r: Vec<f32> = repeat_kv(&xs, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(r, vec![0., 1., 0., 1., 2., 3., 2., 3.]);
    }
}
