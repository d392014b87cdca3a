//! The Qwen2-VL / Qwen2.5-VL vision transformer, following transformers'
//! `Qwen2VisionTransformerPretrainedModel` and `Qwen2_5_VisionTransformerPretrainedModel`.
//!
//! Written here because candle-transformers has no Qwen2-VL tower, and its `qwen3_vl` tower
//! differs in the parts that matter (learned position embeddings, deepstack taps, a different
//! merger); its building blocks (candle's `rope`, `layer_norm`, `rms_norm`, `softmax`) are used.
//!
//! - Patch embedding: a Conv3d whose kernel equals its stride, so one matmul of the flattened
//!   `[patches, C·T·P·P]` pixels with the flattened kernel.
//! - 2D rotary embedding: each head's first half rotates with the patch's row, the second half
//!   with its column (frequencies `1/θ^(2i/(d/2))`, θ = 10000), angles in f32, applied in f32.
//! - Blocks: Qwen2-VL `x += attn(LN(x)); x += fc2(act(fc1(LN(x))))` (LayerNorm eps 1e-6);
//!   Qwen2.5-VL the same with RMSNorm (eps 1e-6) and a SwiGLU MLP with biases.
//! - Attention never crosses an image; in Qwen2.5-VL it is further confined to windows of
//!   `window_size` px except in `fullatt_block_indexes`. Patches are reordered window by window
//!   before the blocks and the merged tokens put back in image order after the merger, as
//!   transformers does, so every window is a contiguous run.
//! - Merger: norm (LayerNorm / RMSNorm, eps 1e-6), each 2×2 group of patches concatenated,
//!   Linear → exact GELU → Linear to the language model's width.

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

use super::config::{Family, VisionConfig};
use super::weights::Weights;
use crate::nn::linear;

enum Norm {
    Layer { weight: Tensor, bias: Tensor },
    Rms { weight: Tensor },
}

impl Norm {
    fn load(w: &Weights, prefix: &str, dim: usize, family: Family) -> Result<Self> {
        Ok(match family {
            Family::Qwen2Vl => Self::Layer {
                weight: w.get(&format!("{prefix}.weight"), &[dim])?,
                bias: w.get(&format!("{prefix}.bias"), &[dim])?,
            },
            Family::Qwen25Vl => Self::Rms {
                weight: w.get(&format!("{prefix}.weight"), &[dim])?,
            },
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = xs.contiguous()?;
        match self {
            Self::Layer { weight, bias } => candle_nn::ops::layer_norm(&xs, weight, bias, 1e-6),
            Self::Rms { weight } => candle_nn::ops::rms_norm(&xs, weight, 1e-6),
        }
    }
}

enum Mlp {
    Plain {
        fc1: Linear,
        fc2: Linear,
    },
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: Linear,
    proj: Linear,
    mlp: Mlp,
}

/// The vision tower with its merger.
pub struct VisionTower {
    cfg: VisionConfig,
    family: Family,
    patch_embed: Tensor,
    blocks: Vec<Block>,
    merger_norm: Norm,
    merger_fc1: Linear,
    merger_fc2: Linear,
    inv_freq: Vec<f32>,
    dtype: DType,
}

impl VisionTower {
    pub fn load(w: &Weights, cfg: &VisionConfig, family: Family, dtype: DType) -> Result<Self> {
        let e = cfg.embed_dim;
        let patch_embed = w
            .get(
                "visual.patch_embed.proj.weight",
                &[
                    e,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    cfg.patch_size,
                    cfg.patch_size,
                ],
            )?
            .reshape((e, cfg.patch_dim()))?
            .t()?
            .contiguous()?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let p = format!("visual.blocks.{i}");
            let mlp = match family {
                Family::Qwen2Vl => Mlp::Plain {
                    fc1: linear(w, &format!("{p}.mlp.fc1"), cfg.mlp_dim, e, true)?,
                    fc2: linear(w, &format!("{p}.mlp.fc2"), e, cfg.mlp_dim, true)?,
                },
                Family::Qwen25Vl => Mlp::Gated {
                    gate: linear(w, &format!("{p}.mlp.gate_proj"), cfg.mlp_dim, e, true)?,
                    up: linear(w, &format!("{p}.mlp.up_proj"), cfg.mlp_dim, e, true)?,
                    down: linear(w, &format!("{p}.mlp.down_proj"), e, cfg.mlp_dim, true)?,
                },
            };
            blocks.push(Block {
                norm1: Norm::load(w, &format!("{p}.norm1"), e, family)?,
                norm2: Norm::load(w, &format!("{p}.norm2"), e, family)?,
                qkv: linear(w, &format!("{p}.attn.qkv"), 3 * e, e, true)?,
                proj: linear(w, &format!("{p}.attn.proj"), e, e, true)?,
                mlp,
            });
        }
        let m = e * cfg.spatial_merge_size * cfg.spatial_merge_size;
        // Frequencies over a quarter of the head: `1/θ^(i/(d/2))`, i = 0, 2, ...; the exponent
        // is an f32 division as in transformers.
        let half = cfg.head_dim / 2;
        let inv_freq = (0..half)
            .step_by(2)
            .map(|i| 1.0f32 / (cfg.rope_theta.powf(((i as f32) / (half as f32)) as f64) as f32))
            .collect();
        Ok(Self {
            merger_norm: Norm::load(w, "visual.merger.ln_q", e, family)?,
            merger_fc1: linear(w, "visual.merger.mlp.0", m, m, true)?,
            merger_fc2: linear(w, "visual.merger.mlp.2", cfg.out_dim, m, true)?,
            cfg: cfg.clone(),
            family,
            patch_embed,
            blocks,
            inv_freq,
            dtype,
        })
    }

    /// Merged image tokens `[Σ t·h·w / merge², out_dim]` for flattened patches
    /// `[Σ t·h·w, patch_dim]` laid out as the image processor lays them out, and each image's
    /// `(t, h, w)` grid in patches.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let m = self.cfg.spatial_merge_size;
        let unit = m * m;
        let n: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let (rows, cols) = pixels.dims2()?;
        if rows != n || cols != self.cfg.patch_dim() {
            bail!(
                "pixel values are [{rows}, {cols}] but the grids {grids:?} need [{n}, {}]",
                self.cfg.patch_dim()
            );
        }
        for g in grids {
            if g[1] % m != 0 || g[2] % m != 0 {
                bail!("image grid {g:?} is not a multiple of the merge size {m}");
            }
        }
        let device = pixels.device();
        let mut xs = pixels.to_dtype(self.dtype)?.matmul(&self.patch_embed)?;

        // Per-patch (row, column), block-major over merge units, as the processor orders them.
        let mut pos: Vec<(usize, usize)> = Vec::with_capacity(n);
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for i in 0..m {
                            for j in 0..m {
                                pos.push((bh * m + i, bw * m + j));
                            }
                        }
                    }
                }
            }
        }
        // Full-attention segments: one per image frame.
        let mut full: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grids {
            for _ in 0..t {
                full.push((start, h * w));
                start += h * w;
            }
        }
        // Qwen2.5-VL: window order of the merge units, and the windows as segments.
        let (order, windows) = match self.family {
            Family::Qwen2Vl => (None, Vec::new()),
            Family::Qwen25Vl => {
                let (o, w) = self.window_index(grids);
                (Some(o), w)
            }
        };
        if let Some(order) = &order {
            let patch_order: Vec<u32> = order
                .iter()
                .flat_map(|&u| (0..unit).map(move |k| (u * unit + k) as u32))
                .collect();
            let idx = Tensor::new(patch_order.as_slice(), device)?;
            xs = xs.index_select(&idx, 0)?;
            pos = patch_order.iter().map(|&p| pos[p as usize]).collect();
        }
        let q4 = self.inv_freq.len();
        let mut angles = Vec::with_capacity(n * 2 * q4);
        for &(r, c) in &pos {
            angles.extend(self.inv_freq.iter().map(|f| r as f32 * f));
            angles.extend(self.inv_freq.iter().map(|f| c as f32 * f));
        }
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let cos = Tensor::from_vec(cos, (n, 2 * q4), device)?;
        let sin = Tensor::from_vec(sin, (n, 2 * q4), device)?;

        for (i, b) in self.blocks.iter().enumerate() {
            let segs =
                if self.family == Family::Qwen2Vl || self.cfg.fullatt_block_indexes.contains(&i) {
                    &full
                } else {
                    &windows
                };
            let a = self.attention(b, &b.norm1.forward(&xs)?, &cos, &sin, segs)?;
            xs = (xs + a)?;
            let h = b.norm2.forward(&xs)?;
            let mlp = match &b.mlp {
                Mlp::Plain { fc1, fc2 } => {
                    fc2.forward(&self.cfg.hidden_act.apply(&fc1.forward(&h)?)?)?
                }
                Mlp::Gated { gate, up, down } => down.forward(
                    &(self.cfg.hidden_act.apply(&gate.forward(&h)?)? * up.forward(&h)?)?,
                )?,
            };
            xs = (xs + mlp)?;
        }
        let e = self.cfg.embed_dim;
        let merged = self
            .merger_norm
            .forward(&xs)?
            .reshape((n / unit, unit * e))?;
        let merged = self
            .merger_fc2
            .forward(&self.merger_fc1.forward(&merged)?.gelu_erf()?)?;
        Ok(match order {
            None => merged,
            Some(order) => {
                let mut inverse = vec![0u32; order.len()];
                for (i, &u) in order.iter().enumerate() {
                    inverse[u] = i as u32;
                }
                merged.index_select(&Tensor::new(inverse.as_slice(), device)?, 0)?
            }
        })
    }

    /// Self-attention over `segments` (start, len) of the patch sequence; rotary applied in f32.
    fn attention(
        &self,
        b: &Block,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[(usize, usize)],
    ) -> Result<Tensor> {
        let n = xs.dim(0)?;
        let (heads, hd) = (self.cfg.num_heads, self.cfg.head_dim);
        let qkv = b.qkv.forward(xs)?.reshape((n, 3, heads, hd))?;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(1, i, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .unsqueeze(0)?
                .contiguous()
        };
        let rot = |x: Tensor| -> candle_core::Result<Tensor> {
            candle_nn::rotary_emb::rope(&x.to_dtype(DType::F32)?, cos, sin)?.to_dtype(self.dtype)
        };
        let q = rot(part(0)?)?;
        let k = rot(part(1)?)?;
        let v = part(2)?;
        let scale = (hd as f64).powf(-0.5);
        let mut outs = Vec::with_capacity(segments.len());
        for &(s, len) in segments {
            let q = q.narrow(2, s, len)?.contiguous()?;
            let k = k.narrow(2, s, len)?.contiguous()?;
            let v = v.narrow(2, s, len)?.contiguous()?;
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?
                .to_dtype(self.dtype)?;
            outs.push(att.matmul(&v)?);
        }
        let out = Tensor::cat(&outs, 2)?
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((n, heads * hd))?;
        Ok(b.proj.forward(&out)?)
    }

    /// Qwen2.5-VL: merge units listed window by window (row-major windows of
    /// `window_size / merge / patch` units per side, the last ones cut short at the image's
    /// edge), and each window's patch range in that order.
    fn window_index(&self, grids: &[[usize; 3]]) -> (Vec<usize>, Vec<(usize, usize)>) {
        let m = self.cfg.spatial_merge_size;
        let unit = m * m;
        let ws = (self.cfg.window_size / m / self.cfg.patch_size).max(1);
        let mut order = Vec::new();
        let mut windows = Vec::new();
        let mut base = 0;
        let mut start = 0;
        for &[t, h, w] in grids {
            let (lh, lw) = (h / m, w / m);
            for ti in 0..t {
                for wy in 0..lh.div_ceil(ws) {
                    for wx in 0..lw.div_ceil(ws) {
                        let mut count = 0;
                        for y in wy * ws..((wy + 1) * ws).min(lh) {
                            for x in wx * ws..((wx + 1) * ws).min(lw) {
                                order.push(base + ti * lh * lw + y * lw + x);
                                count += 1;
                            }
                        }
                        windows.push((start, count * unit));
                        start += count * unit;
                    }
                }
            }
            base += t * lh * lw;
        }
        (order, windows)
    }
}
