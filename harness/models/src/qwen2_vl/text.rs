//! The Qwen2 language model of Qwen2-VL / Qwen2.5-VL, with multimodal RoPE (M-RoPE),
//! following transformers' `Qwen2VLTextModel` + `lm_head`.
//!
//! Written here rather than reusing candle-transformers' `qwen2` (or InternVL's Qwen2, which
//! belongs to another family): both derive each token's rotary angle from its index in the
//! cache, while M-RoPE gives every token three positions (temporal, height, width; image tokens
//! take their grid cell, text after an image continues from the largest one) and builds the
//! angle of frequency `j` from the position of the section `j` falls in (`mrope_section`). The
//! caller passes those positions; everything else is the plain Qwen2 decoder: RMSNorm, q/k/v
//! with biases, grouped-query attention with a causal mask, SwiGLU. Angles are computed in f32
//! as transformers does (`position × inv_freq` in f32, then cos/sin), and attention softmax
//! runs in f32 (transformers' eager path upcasts it).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::config::{Act, TextConfig};
use super::weights::Weights;
use crate::nn::linear;

/// Keys and values of every layer for one sequence. Cloning is cheap (reference-counted), which
/// is how answer scoring branches from a shared prompt.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct TextModel {
    cfg: TextConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    /// Frequency `j`'s section: 0 temporal, 1 height, 2 width.
    section_of: Vec<usize>,
    inv_freq: Vec<f32>,
    device: Device,
    dtype: DType,
}

impl TextModel {
    pub fn load(w: &Weights, c: &TextConfig, device: &Device, dtype: DType) -> Result<Self> {
        let h = c.hidden_size;
        let qd = c.num_attention_heads * c.head_dim;
        let kvd = c.num_key_value_heads * c.head_dim;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let l = |n: &str, o: usize, inp: usize, bias: bool| {
                linear(w, &format!("{p}.{n}"), o, inp, bias)
            };
            layers.push(Layer {
                input_norm: w.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_norm: w.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                q: l("self_attn.q_proj", qd, h, true)?,
                k: l("self_attn.k_proj", kvd, h, true)?,
                v: l("self_attn.v_proj", kvd, h, true)?,
                o: l("self_attn.o_proj", h, qd, false)?,
                gate: l("mlp.gate_proj", c.intermediate_size, h, false)?,
                up: l("mlp.up_proj", c.intermediate_size, h, false)?,
                down: l("mlp.down_proj", h, c.intermediate_size, false)?,
            });
        }
        let embed = w.get("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if w.contains("lm_head.weight") || !c.tie_word_embeddings {
            w.get("lm_head.weight", &[c.vocab_size, h])?
        } else {
            embed.clone()
        };
        let half = c.head_dim / 2;
        let mut section_of = Vec::with_capacity(half);
        for (s, &n) in c.mrope_section.iter().enumerate() {
            section_of.extend(std::iter::repeat_n(s, n));
        }
        let inv_freq = (0..c.head_dim)
            .step_by(2)
            .map(|i| 1.0f32 / (c.rope_theta.powf(((i as f32) / (c.head_dim as f32)) as f64) as f32))
            .collect();
        Ok(Self {
            norm: w.get("model.norm.weight", &[h])?,
            cfg: c.clone(),
            embed,
            layers,
            lm_head,
            section_of,
            inv_freq,
            device: device.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Token embeddings `[1, t, hidden]`.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.cfg.vocab_size
            );
        }
        let idx = Tensor::new(ids, &self.device)?;
        Ok(self.embed.index_select(&idx, 0)?.unsqueeze(0)?)
    }

    /// cos/sin `[t, head_dim/2]` of M-RoPE positions `[t][3]`.
    fn rope_tables(&self, positions: &[[i64; 3]]) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for p in positions {
            for (j, f) in self.inv_freq.iter().enumerate() {
                let a = p[self.section_of[j]] as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let t = positions.len();
        Ok((
            Tensor::from_vec(cos, (t, half), &self.device)?.to_dtype(self.dtype)?,
            Tensor::from_vec(sin, (t, half), &self.device)?.to_dtype(self.dtype)?,
        ))
    }

    /// Runs `embeds` `[1, t, hidden]` at M-RoPE `positions` after the cached tokens; returns
    /// the final (normed) hidden states `[1, t, hidden]`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &[[i64; 3]],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (_, t, _) = embeds.dims3()?;
        if positions.len() != t {
            bail!("{t} embeddings but {} positions", positions.len());
        }
        let (cos, sin) = self.rope_tables(positions)?;
        let past = cache.len;
        let mask = if t > 1 {
            let mut m = vec![0f32; t * (past + t)];
            for i in 0..t {
                for j in past + i + 1..past + t {
                    m[i * (past + t) + j] = f32::NEG_INFINITY;
                }
            }
            Some(Tensor::from_vec(m, (t, past + t), &self.device)?.to_dtype(self.dtype)?)
        } else {
            None
        };
        let c = &self.cfg;
        let mut xs = embeds.to_dtype(self.dtype)?;
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&xs, &layer.input_norm, c.rms_norm_eps as f32)?;
            let shape = |x: Tensor, n: usize| -> candle_core::Result<Tensor> {
                x.reshape((1, t, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = shape(layer.q.forward(&h)?, c.num_attention_heads)?;
            let k = shape(layer.k.forward(&h)?, c.num_key_value_heads)?;
            let v = shape(layer.v.forward(&h)?, c.num_key_value_heads)?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            *slot = Some((k.clone(), v.clone()));
            let rep = c.num_attention_heads / c.num_key_value_heads;
            let (k, v) = (repeat_kv(&k, rep)?, repeat_kv(&v, rep)?);
            let mut att = (q.matmul(&k.t()?)? * (c.head_dim as f64).powf(-0.5))?;
            if let Some(m) = &mask {
                att = att.broadcast_add(m)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?
                .to_dtype(self.dtype)?;
            let a = att.matmul(&v)?.transpose(1, 2)?.reshape((
                1,
                t,
                c.num_attention_heads * c.head_dim,
            ))?;
            xs = (xs + layer.o.forward(&a)?)?;
            let h = candle_nn::ops::rms_norm(&xs, &layer.post_norm, c.rms_norm_eps as f32)?;
            let act = match c.hidden_act {
                Act::Silu => candle_nn::ops::silu(&layer.gate.forward(&h)?)?,
                other => other.apply(&layer.gate.forward(&h)?)?,
            };
            xs = (xs + layer.down.forward(&(act * layer.up.forward(&h)?)?)?)?;
        }
        cache.len += t;
        Ok(candle_nn::ops::rms_norm(
            &xs.contiguous()?,
            &self.norm,
            c.rms_norm_eps as f32,
        )?)
    }

    /// f32 logits `[1, t, vocab]` of hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden
            .broadcast_matmul(&self.lm_head.t()?)?
            .to_dtype(DType::F32)?)
    }
}

/// `[b, kv, s, d]` → `[b, kv·rep, s, d]`, each kv head repeated `rep` times in place.
fn repeat_kv(xs: &Tensor, rep: usize) -> candle_core::Result<Tensor> {
    if rep == 1 {
        return Ok(xs.clone());
    }
    let (b, kv, s, d) = xs.dims4()?;
    xs.unsqueeze(2)?
        .broadcast_as((b, kv, rep, s, d))?
        .reshape((b, kv * rep, s, d))
}
