//! InternViT (300M and 6B) and the vision→language projector, following transformers'
//! `InternVLVisionModel` and `InternVLModel.get_image_features`.
//!
//! - Patch embedding: a stride-`patch` convolution, computed as one matmul over flattened
//!   patches (same sum, no im2col buffer).
//! - CLS token + learned absolute position embeddings. transformers interpolates them only when
//!   the tile differs from the configured size; tiles here always have the configured size, so
//!   any other size is rejected instead.
//! - Pre-norm blocks with layer scale: `x += λ1·attn(norm1(x)); x += λ2·mlp(norm2(x))`.
//!   Norm is LayerNorm (300M) or RMSNorm (6B); the 6B also RMS-normalises q and k over the full
//!   embedding width (eps 1e-6, transformers' default for those norms).
//! - Features: the chosen hidden state without CLS, pixel-shuffled by `downsample_ratio` in
//!   transformers' ("v2") ordering, then LayerNorm (eps 1e-5, torch's default, as the
//!   projector's LayerNorm is built without one) → Linear → GELU → Linear.
//!
//! On the CPU in f32 each encoder layer runs through the fused kernels of [`crate::kernels`]
//! (attention over query blocks without the full score matrix, bias/GELU/layer-scale/residual
//! applied in place on the matmul outputs): the same arithmetic as the composed candle ops to
//! a few f32 ulps, about twice as fast. Other devices and dtypes use the composed ops.

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

use super::config::{Activation, InternVlConfig, NormType, VisionConfig};
use super::weights::Weights;
use crate::kernels;
pub(crate) use crate::nn::linear;

/// LayerNorm or RMSNorm over the last dimension.
#[derive(Debug, Clone)]
pub enum Norm {
    Layer {
        weight: Tensor,
        bias: Tensor,
        eps: f32,
    },
    Rms {
        weight: Tensor,
        eps: f32,
    },
}

impl Norm {
    pub fn load(w: &Weights, prefix: &str, kind: NormType, dim: usize, eps: f64) -> Result<Self> {
        Ok(match kind {
            NormType::LayerNorm => Self::Layer {
                weight: w.get(&format!("{prefix}.weight"), &[dim])?,
                bias: w.get(&format!("{prefix}.bias"), &[dim])?,
                eps: eps as f32,
            },
            NormType::RmsNorm => Self::Rms {
                weight: w.get(&format!("{prefix}.weight"), &[dim])?,
                eps: eps as f32,
            },
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = xs.contiguous()?;
        match self {
            Self::Layer { weight, bias, eps } => {
                candle_nn::ops::layer_norm(&xs, weight, bias, *eps)
            }
            Self::Rms { weight, eps } => candle_nn::ops::rms_norm(&xs, weight, *eps),
        }
    }
}

/// Turns the fused CPU f32 kernels of the vision tower on or off, process-wide (the switch
/// lives with the kernels, in [`crate::kernels`]; kept here for existing callers).
pub use crate::kernels::set_fused_cpu_kernels;

/// Per-channel vectors of one layer for the fused CPU kernels, copied out at load time.
struct CpuLayerParams {
    qkv_bias: Option<kernels::BiasAct>,
    proj: kernels::BiasScaleResidual,
    fc1: kernels::BiasAct,
    fc2: kernels::BiasScaleResidual,
}

struct VisionLayer {
    norm1: Norm,
    norm2: Norm,
    /// q, k and v projections stacked into one `[3·hidden, hidden]` weight: one matmul
    /// instead of three, and views of its output instead of copies.
    qkv: Linear,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    lambda_1: Tensor,
    lambda_2: Tensor,
    heads: usize,
    head_dim: usize,
    act: Activation,
    /// Set when the weights are f32 on the CPU.
    cpu: Option<CpuLayerParams>,
}

impl VisionLayer {
    fn load(w: &Weights, c: &VisionConfig, i: usize) -> Result<Self> {
        let p = format!("model.vision_tower.encoder.layer.{i}");
        let h = c.hidden_size;
        let qk_norm = |name: &str| -> Result<Option<Norm>> {
            if c.qk_norm {
                // transformers builds these with the RMSNorm default eps (1e-6), not layer_norm_eps.
                Ok(Some(Norm::load(
                    w,
                    &format!("{p}.attention.{name}"),
                    NormType::RmsNorm,
                    h,
                    1e-6,
                )?))
            } else {
                Ok(None)
            }
        };
        let q = linear(w, &format!("{p}.attention.q_proj"), h, h, c.qkv_bias)?;
        let k = linear(w, &format!("{p}.attention.k_proj"), h, h, c.qkv_bias)?;
        let v = linear(w, &format!("{p}.attention.v_proj"), h, h, c.qkv_bias)?;
        let qkv_weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let qkv_bias = match (q.bias(), k.bias(), v.bias()) {
            (Some(qb), Some(kb), Some(vb)) => Some(Tensor::cat(&[qb, kb, vb], 0)?),
            _ => None,
        };
        let qkv = Linear::new(qkv_weight, qkv_bias);
        let proj = linear(w, &format!("{p}.attention.projection_layer"), h, h, true)?;
        let fc1 = linear(w, &format!("{p}.mlp.fc1"), c.intermediate_size, h, true)?;
        let fc2 = linear(w, &format!("{p}.mlp.fc2"), h, c.intermediate_size, true)?;
        let lambda_1 = w.get(&format!("{p}.lambda_1"), &[h])?;
        let lambda_2 = w.get(&format!("{p}.lambda_2"), &[h])?;
        let cpu = if qkv.weight().device().is_cpu() && qkv.weight().dtype() == DType::F32 {
            let vec = |t: Option<&Tensor>| -> Result<Vec<f32>> {
                Ok(match t {
                    Some(t) => t.to_vec1::<f32>()?,
                    None => vec![0.0; h],
                })
            };
            let gelu = c.hidden_act == Activation::GeluErf;
            Some(CpuLayerParams {
                qkv_bias: match qkv.bias() {
                    Some(b) => Some(kernels::BiasAct {
                        bias: b.to_vec1::<f32>()?,
                        gelu: false,
                    }),
                    None => None,
                },
                proj: kernels::BiasScaleResidual {
                    bias: vec(proj.bias())?,
                    scale: lambda_1.to_vec1::<f32>()?,
                },
                fc1: kernels::BiasAct {
                    bias: vec(fc1.bias())?,
                    gelu,
                },
                fc2: kernels::BiasScaleResidual {
                    bias: vec(fc2.bias())?,
                    scale: lambda_2.to_vec1::<f32>()?,
                },
            })
        } else {
            None
        };
        Ok(Self {
            norm1: Norm::load(
                w,
                &format!("{p}.layernorm_before"),
                c.norm_type,
                h,
                c.layer_norm_eps,
            )?,
            norm2: Norm::load(
                w,
                &format!("{p}.layernorm_after"),
                c.norm_type,
                h,
                c.layer_norm_eps,
            )?,
            qkv,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
            proj,
            fc1,
            fc2,
            lambda_1,
            lambda_2,
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            act: c.hidden_act,
            cpu,
        })
    }

    /// q, k, v as views of one stacked projection, q and k normalised where the config says.
    fn qkv(&self, qkv: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let c = qkv.dim(2)? / 3;
        let mut q = qkv.narrow(2, 0, c)?;
        let mut k = qkv.narrow(2, c, c)?;
        let v = qkv.narrow(2, 2 * c, c)?;
        if let Some(n) = &self.q_norm {
            q = n.forward(&q)?;
        }
        if let Some(n) = &self.k_norm {
            k = n.forward(&k)?;
        }
        Ok((q, k, v))
    }

    fn attention(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        let (q, k, v) = self.qkv(&self.qkv.forward(xs)?)?;
        // FlashAttention on CUDA in bf16/f16 when built with `flash-attn`; else the ops below.
        if let Some(out) = kernels::fused_attention(&q, &k, &v, self.heads, self.head_dim) {
            return self.proj.forward(&out?);
        }
        let split = |x: Tensor| -> candle_core::Result<Tensor> {
            x.reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let scale = (self.head_dim as f64).powf(-0.5);
        let att = (q.matmul(&k.t()?)? * scale)?;
        // transformers does not upcast here, but torch's softmax kernels accumulate in f32
        // whatever the dtype, while candle's CPU softmax sums in the tensor dtype (bf16 loses
        // the tail of a 1025-way sum). Softmax in f32 then rounding matches torch.
        let dtype = att.dtype();
        let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let out = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        self.proj.forward(&out)
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(p) = &self.cpu {
            if kernels::fused_cpu_kernels() {
                return self.forward_cpu(xs, p);
            }
        }
        self.forward_composed(xs)
    }

    /// The layer from candle's composed ops, on any device and dtype.
    fn forward_composed(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.attention(&self.norm1.forward(xs)?)?;
        let xs = (a.broadcast_mul(&self.lambda_1)? + xs)?;
        let m = self.fc1.forward(&self.norm2.forward(&xs)?)?;
        let m = self.fc2.forward(&self.act.apply(&m)?)?;
        m.broadcast_mul(&self.lambda_2)? + xs
    }

    /// The same layer through the fused CPU f32 kernels. Matmuls run on `[tiles·tokens,
    /// hidden]` (candle's gemm, one call per projection); their outputs are fresh tensors that
    /// nothing else holds, so bias, activation, layer scale and residual are applied to them in
    /// place rather than through new buffers.
    fn forward_cpu(&self, xs: &Tensor, p: &CpuLayerParams) -> candle_core::Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        let xs = xs.contiguous()?;
        let flat = |x: &Tensor| x.reshape((b * t, x.dim(2)?));
        let h = self.norm1.forward(&xs)?;
        let qkv = flat(&h)?.matmul(&self.qkv.weight().t()?)?;
        if let Some(bias) = &p.qkv_bias {
            qkv.inplace_op1(bias)?;
        }
        let (q, k, v) = self.qkv(&qkv.reshape((b, t, 3 * c))?)?;
        let a = kernels::attention(&q, &k, &v, self.heads, self.head_dim)?;
        let a = flat(&a)?.matmul(&self.proj.weight().t()?)?;
        a.inplace_op2(&flat(&xs)?, &p.proj)?; // xs + λ1·(a + bias)
        let xs = a.reshape((b, t, c))?;
        let m = flat(&self.norm2.forward(&xs)?)?.matmul(&self.fc1.weight().t()?)?;
        m.inplace_op1(&p.fc1)?;
        let m = if p.fc1.gelu { m } else { self.act.apply(&m)? };
        let out = m.matmul(&self.fc2.weight().t()?)?;
        out.inplace_op2(&flat(&xs)?, &p.fc2)?; // xs + λ2·(m + bias)
        out.reshape((b, t, c))
    }
}

/// InternViT encoder.
pub struct InternVit {
    cfg: VisionConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls: Tensor,
    pos: Option<Tensor>,
    layers: Vec<VisionLayer>,
    final_norm: Option<Norm>,
}

impl InternVit {
    pub fn load(w: &Weights, cfg: &VisionConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let (ph, pw) = cfg.patch_size;
        let p = "model.vision_tower";
        let patch_weight = w
            .get(
                &format!("{p}.embeddings.patch_embeddings.projection.weight"),
                &[h, cfg.num_channels, ph, pw],
            )?
            .reshape((h, cfg.num_channels * ph * pw))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| VisionLayer::load(w, cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = if cfg.use_mean_pooling {
            None
        } else {
            Some(Norm::load(
                w,
                &format!("{p}.layernorm"),
                NormType::LayerNorm,
                h,
                cfg.layer_norm_eps,
            )?)
        };
        Ok(Self {
            cfg: cfg.clone(),
            patch_weight,
            patch_bias: w.get(
                &format!("{p}.embeddings.patch_embeddings.projection.bias"),
                &[h],
            )?,
            cls: w.get(&format!("{p}.embeddings.cls_token"), &[1, 1, h])?,
            pos: if cfg.use_absolute_position_embeddings {
                Some(w.get(
                    &format!("{p}.embeddings.position_embeddings"),
                    &[1, cfg.num_patches() + 1, h],
                )?)
            } else {
                None
            },
            layers,
            final_norm,
        })
    }

    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, ch, hh, ww) = pixels.dims4()?;
        let c = &self.cfg;
        if ch != c.num_channels || (hh, ww) != c.image_size {
            bail!(
                "pixel values have shape [{b}, {ch}, {hh}, {ww}]; the vision tower expects \
                 [tiles, {}, {}, {}]",
                c.num_channels,
                c.image_size.0,
                c.image_size.1
            );
        }
        let (ph, pw) = c.patch_size;
        let (gh, gw) = c.patch_grid();
        // [b, c, gh, ph, gw, pw] -> [b, gh, gw, c, ph, pw]: each row is one patch in the
        // (channel, y, x) order of the conv kernel.
        let patches = pixels
            .reshape(&[b, ch, gh, ph, gw, pw][..])?
            .permute([0, 2, 4, 1, 3, 5])?
            .contiguous()?
            .reshape((b, gh * gw, ch * ph * pw))?;
        let emb = patches
            .broadcast_matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?;
        let cls = self.cls.broadcast_as((b, 1, c.hidden_size))?;
        let mut xs = Tensor::cat(&[&cls, &emb], 1)?;
        if let Some(pos) = &self.pos {
            xs = xs.broadcast_add(pos)?;
        }
        Ok(xs)
    }

    /// The hidden state transformers would select with `vision_feature_layer`:
    /// -1 is `last_hidden_state` (after the final LayerNorm when the config has one);
    /// otherwise an index into (embeddings, layer 1, ..., layer N).
    pub fn forward_features(&self, pixels: &Tensor, feature_layer: i64) -> Result<Tensor> {
        let n = self.layers.len() as i64;
        let target = match feature_layer {
            -1 => None,
            k if k < 0 => Some((n + 1 + k) as usize),
            k => Some(k as usize),
        };
        let mut xs = self.embed(pixels)?;
        let run = target.unwrap_or(self.layers.len());
        for layer in &self.layers[..run] {
            xs = layer.forward(&xs)?;
        }
        if target.is_none() {
            if let Some(norm) = &self.final_norm {
                xs = norm.forward(&xs)?;
            }
        }
        Ok(xs)
    }
}

/// Pixel shuffle in transformers' `InternVLModel.pixel_shuffle` ordering (the original code's
/// `ps_version = "v2"`), for features `[b, w, h, c]` and a scale such as 0.5.
pub fn pixel_shuffle(xs: &Tensor, inv_scale: usize) -> candle_core::Result<Tensor> {
    let (b, w, h, c) = xs.dims4()?;
    let r = inv_scale;
    let xs = xs
        .reshape((b, w, h / r, c * r))?
        .permute((0, 2, 1, 3))?
        .contiguous()?
        .reshape((b, h / r, w / r, c * r * r))?
        .permute((0, 2, 1, 3))?
        .contiguous()?;
    Ok(xs)
}

/// LayerNorm → Linear → act → Linear from pixel-shuffled vision features to LLM width.
pub struct Projector {
    norm: Norm,
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
}

impl Projector {
    pub fn load(w: &Weights, cfg: &InternVlConfig) -> Result<Self> {
        let inp = cfg.projector_in_dim();
        let out = cfg.text.hidden_size;
        let p = "model.multi_modal_projector";
        Ok(Self {
            // nn.LayerNorm(dim) without eps: torch's default 1e-5.
            norm: Norm::load(
                w,
                &format!("{p}.layer_norm"),
                NormType::LayerNorm,
                inp,
                1e-5,
            )?,
            linear_1: linear(w, &format!("{p}.linear_1"), out, inp, true)?,
            linear_2: linear(w, &format!("{p}.linear_2"), out, out, true)?,
            act: cfg.projector_hidden_act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = self.linear_1.forward(&self.norm.forward(xs)?)?;
        self.linear_2.forward(&self.act.apply(&xs)?)
    }
}

/// Vision tower + pixel shuffle + projector: pixel values `[tiles, 3, H, W]` to image
/// features `[tiles, image_seq_length, llm_hidden]`.
pub struct VisionPath {
    pub vit: InternVit,
    pub projector: Projector,
    feature_layer: i64,
    inv_scale: usize,
    /// Tiles run through the tower together; bounds the attention buffers' memory.
    pub tile_chunk: usize,
}

impl VisionPath {
    pub fn load(w: &Weights, cfg: &InternVlConfig) -> Result<Self> {
        Ok(Self {
            vit: InternVit::load(w, &cfg.vision)?,
            projector: Projector::load(w, cfg)?,
            feature_layer: cfg.vision_feature_layer,
            inv_scale: (1.0 / cfg.downsample_ratio).round() as usize,
            tile_chunk: 4,
        })
    }

    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let tiles = pixels.dim(0)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < tiles {
            let n = self.tile_chunk.max(1).min(tiles - start);
            let chunk = pixels.narrow(0, start, n)?;
            out.push(self.features_of(&chunk)?);
            start += n;
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    fn features_of(&self, pixels: &Tensor) -> Result<Tensor> {
        let hs = self.vit.forward_features(pixels, self.feature_layer)?;
        let (b, t, c) = hs.dims3()?;
        let hs = hs.narrow(1, 1, t - 1)?; // drop CLS
        let side = ((t - 1) as f64).sqrt().round() as usize;
        if side * side != t - 1 {
            bail!(
                "vision tower produced {} patch tokens, not a square grid",
                t - 1
            );
        }
        let hs = hs.reshape((b, side, side, c))?;
        let hs = pixel_shuffle(&hs, self.inv_scale)?;
        let (_, a, bb, cc) = hs.dims4()?;
        let hs = hs.reshape((b, a * bb, cc))?;
        Ok(self.projector.forward(&hs)?)
    }
}

/// Casts pixel values (any float dtype) to the model dtype on the model device.
pub fn pixels_to(pixels: &Tensor, device: &candle_core::Device, dtype: DType) -> Result<Tensor> {
    Ok(pixels.to_device(device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A layer with random weights (InternViT-300M's structure at small widths), built without
    /// a checkpoint; `act` GELU-erf takes the fused activation path, SiLU the fallback.
    fn random_layer(
        h: usize,
        heads: usize,
        mlp: usize,
        qk_norm: bool,
        act: Activation,
    ) -> VisionLayer {
        let dev = Device::Cpu;
        let r = |shape: &[usize], std: f64| Tensor::randn(0f32, std as f32, shape, &dev).unwrap();
        let lin =
            |o: usize, i: usize| Linear::new(r(&[o, i], (i as f64).powf(-0.5)), Some(r(&[o], 0.1)));
        let ln = || Norm::Layer {
            weight: (r(&[h], 0.1) + 1.0).unwrap(),
            bias: r(&[h], 0.1),
            eps: 1e-6,
        };
        let rms = || Norm::Rms {
            weight: (r(&[h], 0.1) + 1.0).unwrap(),
            eps: 1e-6,
        };
        let (qkv, proj, fc1, fc2) = (lin(3 * h, h), lin(h, h), lin(mlp, h), lin(h, mlp));
        let (lambda_1, lambda_2) = (r(&[h], 0.5), r(&[h], 0.5));
        let v = |t: Option<&Tensor>| t.unwrap().to_vec1::<f32>().unwrap();
        let cpu = CpuLayerParams {
            qkv_bias: Some(kernels::BiasAct {
                bias: v(qkv.bias()),
                gelu: false,
            }),
            proj: kernels::BiasScaleResidual {
                bias: v(proj.bias()),
                scale: v(Some(&lambda_1)),
            },
            fc1: kernels::BiasAct {
                bias: v(fc1.bias()),
                gelu: act == Activation::GeluErf,
            },
            fc2: kernels::BiasScaleResidual {
                bias: v(fc2.bias()),
                scale: v(Some(&lambda_2)),
            },
        };
        VisionLayer {
            norm1: ln(),
            norm2: ln(),
            qkv,
            q_norm: qk_norm.then(rms),
            k_norm: qk_norm.then(rms),
            proj,
            fc1,
            fc2,
            lambda_1,
            lambda_2,
            heads,
            head_dim: h / heads,
            act,
            cpu: Some(cpu),
        }
    }

    /// The fused CPU kernels against candle's composed ops: several tiles, a token count that
    /// is neither a multiple of the query block nor of the softmax lanes, with and without
    /// q/k norms, fused GELU and the SiLU fallback. Agreement to f32 rounding (the
    /// polynomial exp/erf are within ~1e-7 of libm's).
    #[test]
    fn fused_cpu_layer_matches_composed_ops() {
        for (tiles, tokens, qk_norm, act) in [
            (2, 300, false, Activation::GeluErf),
            (1, 37, true, Activation::GeluErf),
            (3, 17, false, Activation::Silu),
        ] {
            let layer = random_layer(64, 4, 256, qk_norm, act);
            let xs = Tensor::randn(0f32, 1f32, (tiles, tokens, 64), &Device::Cpu).unwrap();
            let want = layer.forward_composed(&xs).unwrap();
            let got = layer.forward_cpu(&xs, layer.cpu.as_ref().unwrap()).unwrap();
            assert_eq!(got.dims(), want.dims());
            let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            let diff: f32 = (&got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "tiles {tiles}, tokens {tokens}, qk_norm {qk_norm}, {act:?}: max diff {diff:e} (scale {scale})"
            );
        }
    }

    /// The polynomial exp and GELU against libm over the ranges they see.
    #[test]
    fn pixel_shuffle_matches_transformers_ordering() {
        let xs = Tensor::arange(0f32, 16., &Device::Cpu)
            .unwrap()
            .reshape((1, 4, 4, 1))
            .unwrap();
        let out = pixel_shuffle(&xs, 2).unwrap();
        assert_eq!(out.dims(), &[1, 2, 2, 4]);
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            v,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
    }
}
