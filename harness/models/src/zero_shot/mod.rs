//! CLIP and SigLIP zero-shot classification: a non-generative baseline behind [`Model`].
//!
//! A question's answer options (label names, or the option texts of a multiple-choice question
//! whose options are labels) become text prompts through a template, by default
//! `"a photo of a {label} face"`; the image is scored against every prompt and the answer is the
//! option with the highest image–text logit (`logits_per_image` as transformers computes it:
//! CLIP `exp(logit_scale) * cos`, SigLIP the same plus `logit_bias`). See `docs/zero-shot.md`.
//!
//! The towers are candle-transformers' `models::clip` and `models::siglip`, which match
//! transformers for these checkpoints once the config is translated (the parity tests prove
//! it). Two things are done here instead of in candle's `ClipModel`: CLIP text pooling follows
//! transformers (the first `eos_token_id` position, or the argmax of the ids for legacy configs
//! whose `eos_token_id` is 2) where candle always takes the argmax, and the configs are read from
//! the checkpoint's own `config.json` (candle's serde structs reject e.g. a `null` bos id).

pub mod config;
pub mod preprocess;
pub mod tokenize;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{safetensors::MmapedSafetensors, DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{clip, siglip};
use image::DynamicImage;

use crate::checkpoint::CheckpointFiles;
use crate::model::{Generation, Model, ModelInfo, Request, StepTimings};
pub use config::{Family, ZeroShotConfig};
pub use preprocess::ImageProcessor;
pub use tokenize::TextTokenizer;

/// The template used when a manifest gives none.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {label} face";

/// Fills `{label}` in `template`; the template must contain it.
pub fn apply_template(template: &str, label: &str) -> String {
    template.replace("{label}", label)
}

/// Checks a prompt template: it must contain `{label}`.
pub fn check_template(template: &str) -> Result<()> {
    if !template.contains("{label}") {
        bail!("zero-shot template {template:?} has no {{label}} placeholder");
    }
    Ok(())
}

enum Net {
    Clip {
        text: clip::text_model::ClipTextTransformer,
        vision: clip::vision_model::ClipVisionTransformer,
        text_projection: candle_nn::Linear,
        visual_projection: candle_nn::Linear,
        /// Pool at the first position of this id; `None`: at the argmax of the ids (legacy).
        pool_eos: Option<u32>,
    },
    Siglip {
        text: siglip::TextModel,
        vision: siglip::VisionModel,
    },
}

/// The two towers and the logit scale/bias of a CLIP or SigLIP checkpoint.
pub struct ZeroShotNet {
    net: Net,
    pub config: ZeroShotConfig,
    /// `exp(logit_scale)`.
    pub scale: f32,
    /// SigLIP's `logit_bias` (0 for CLIP).
    pub bias: f32,
    device: Device,
    dtype: DType,
    /// `dtype`, except f32 for bf16 on the CPU (see `load`).
    vision_dtype: DType,
    files: CheckpointFiles,
    weight_bytes: u64,
}

fn require(vb: &VarBuilder, name: &str, file: &Path) -> Result<()> {
    if !vb.contains_tensor(name) {
        bail!("{}: tensor {name} is missing", file.display());
    }
    Ok(())
}

fn scalar(vb: &VarBuilder, name: &str, shape: &[usize], file: &Path) -> Result<f32> {
    require(vb, name, file)?;
    let t = vb
        .get(shape, name)
        .with_context(|| format!("{}: tensor {name}", file.display()))?;
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0])
}

impl ZeroShotNet {
    /// Loads `dir` (config.json + model.safetensors or shards) on `device` in `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let files = CheckpointFiles::locate(dir)?;
        let config = ZeroShotConfig::from_dir(dir)?;
        let st = unsafe { MmapedSafetensors::multi(&files.weights) }
            .with_context(|| format!("cannot read the weights in {}", dir.display()))?;
        let weight_bytes: u64 = st
            .tensors()
            .iter()
            .map(|(_, v)| v.shape().iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64)
            .sum();
        let file = files.weights[0].clone();
        // SAFETY: the files are memory-mapped read-only and not modified while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, dtype, device) }
            .with_context(|| format!("cannot read the weights in {}", dir.display()))?;
        // candle's CPU conv2d (the patch embedding) has no bf16 kernel ("unsupported dtype
        // BF16 for op matmul"), so on the CPU a bf16 model runs its vision tower in f32 (the
        // bf16 weights upcast exactly), as LLaVA's does; the text tower stays bf16.
        let vision_dtype = if device.is_cpu() && dtype == DType::BF16 {
            DType::F32
        } else {
            dtype
        };
        let vision_vb = if vision_dtype == dtype {
            vb.clone()
        } else {
            // SAFETY: as above.
            unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, vision_dtype, device) }
                .with_context(|| format!("cannot read the weights in {}", dir.display()))?
        };
        let ctx = |e: candle_core::Error| anyhow!("{}: {e}", file.display());
        let (net, scale, bias) = match config.family {
            Family::Clip => {
                let t = &config.text;
                let v = &config.vision;
                let text_cfg = clip::text_model::ClipTextConfig {
                    vocab_size: t.vocab_size,
                    embed_dim: t.tower.hidden_size,
                    activation: clip::text_model::Activation::QuickGelu,
                    intermediate_size: t.tower.intermediate_size,
                    max_position_embeddings: t.max_position_embeddings,
                    pad_with: None,
                    num_hidden_layers: t.tower.num_hidden_layers,
                    num_attention_heads: t.tower.num_attention_heads,
                    projection_dim: t.projection,
                };
                let vision_cfg = clip::vision_model::ClipVisionConfig {
                    embed_dim: v.tower.hidden_size,
                    activation: clip::text_model::Activation::QuickGelu,
                    intermediate_size: v.tower.intermediate_size,
                    num_hidden_layers: v.tower.num_hidden_layers,
                    num_attention_heads: v.tower.num_attention_heads,
                    projection_dim: v.projection,
                    num_channels: v.num_channels,
                    image_size: v.image_size,
                    patch_size: v.patch_size,
                };
                // candle draws a random class embedding when the tensor is absent; refuse instead.
                require(&vb, "vision_model.embeddings.class_embedding", &file)?;
                let text =
                    clip::text_model::ClipTextTransformer::new(vb.pp("text_model"), &text_cfg)
                        .map_err(ctx)?;
                let vision = clip::vision_model::ClipVisionTransformer::new(
                    vision_vb.pp("vision_model"),
                    &vision_cfg,
                )
                .map_err(ctx)?;
                let text_projection = candle_nn::linear_no_bias(
                    t.tower.hidden_size,
                    t.projection,
                    vb.pp("text_projection"),
                )
                .map_err(ctx)?;
                let visual_projection = candle_nn::linear_no_bias(
                    v.tower.hidden_size,
                    v.projection,
                    vision_vb.pp("visual_projection"),
                )
                .map_err(ctx)?;
                let log_scale = if vb.contains_tensor("logit_scale") {
                    scalar(&vb, "logit_scale", &[], &file)?
                } else {
                    config.logit_scale_init_value as f32
                };
                let pool_eos = match t.eos_token_id {
                    Some(2) | None => None,
                    Some(id) => Some(id),
                };
                (
                    Net::Clip {
                        text,
                        vision,
                        text_projection,
                        visual_projection,
                        pool_eos,
                    },
                    log_scale.exp(),
                    0.0,
                )
            }
            Family::Siglip => {
                let t = &config.text;
                let v = &config.vision;
                let act = |name: &str| {
                    config::siglip_activation(name)
                        .ok_or_else(|| anyhow!("unsupported hidden_act {name:?}"))
                };
                let cfg = siglip::Config {
                    text_config: siglip::TextConfig {
                        vocab_size: t.vocab_size,
                        hidden_size: t.tower.hidden_size,
                        intermediate_size: t.tower.intermediate_size,
                        num_hidden_layers: t.tower.num_hidden_layers,
                        num_attention_heads: t.tower.num_attention_heads,
                        max_position_embeddings: t.max_position_embeddings,
                        hidden_act: act(&t.tower.hidden_act)?,
                        layer_norm_eps: t.tower.layer_norm_eps,
                        // Unused by the towers.
                        pad_token_id: 0,
                        bos_token_id: 0,
                        eos_token_id: 0,
                    },
                    vision_config: siglip::VisionConfig {
                        hidden_size: v.tower.hidden_size,
                        intermediate_size: v.tower.intermediate_size,
                        num_hidden_layers: v.tower.num_hidden_layers,
                        num_attention_heads: v.tower.num_attention_heads,
                        num_channels: v.num_channels,
                        image_size: v.image_size,
                        patch_size: v.patch_size,
                        hidden_act: act(&v.tower.hidden_act)?,
                        layer_norm_eps: v.tower.layer_norm_eps,
                    },
                };
                let scale = scalar(&vb, "logit_scale", &[1], &file)?.exp();
                let bias = scalar(&vb, "logit_bias", &[1], &file)?;
                // The two towers as siglip::Model builds them (same tensor names, attention
                // pooling head included), each in its own dtype.
                let text =
                    siglip::TextModel::new(&cfg.text_config, vb.pp("text_model")).map_err(ctx)?;
                let vision = siglip::VisionModel::new(
                    &cfg.vision_config,
                    true,
                    vision_vb.pp("vision_model"),
                )
                .map_err(ctx)?;
                (Net::Siglip { text, vision }, scale, bias)
            }
        };
        Ok(Self {
            net,
            config,
            scale,
            bias,
            device: device.clone(),
            dtype,
            vision_dtype,
            files,
            weight_bytes,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn files(&self) -> &CheckpointFiles {
        &self.files
    }

    /// Image embeddings (unnormalised projections), `[batch, dim]` f32, from `[batch, 3, H, W]`.
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let x = pixel_values.to_dtype(self.vision_dtype)?;
        let out = match &self.net {
            Net::Clip {
                vision,
                visual_projection,
                ..
            } => vision.forward(&x)?.apply(visual_projection)?,
            Net::Siglip { vision, .. } => vision.forward(&x)?,
        };
        Ok(out.to_dtype(DType::F32)?)
    }

    /// Text embedding (unnormalised projection) of one tokenized prompt, `[dim]` f32.
    pub fn text_embeds(&self, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            bail!("empty prompt");
        }
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let out = match &self.net {
            Net::Clip {
                text,
                text_projection,
                pool_eos,
                ..
            } => {
                let pos = match pool_eos {
                    Some(eos) => ids.iter().position(|i| i == eos).ok_or_else(|| {
                        anyhow!("prompt ids hold no end-of-text token {eos}: cannot pool")
                    })?,
                    // torch's argmax: the first maximum.
                    None => {
                        let m = *ids.iter().max().expect("non-empty");
                        ids.iter().position(|&i| i == m).expect("max is present")
                    }
                };
                let hidden = text.forward_with_mask(&input, usize::MAX)?;
                hidden.i((0, pos))?.unsqueeze(0)?.apply(text_projection)?
            }
            Net::Siglip { text, .. } => text.forward(&input)?,
        };
        Ok(out.squeeze(0)?.to_dtype(DType::F32)?)
    }

    /// `logits_per_image` for one image embedding against text embeddings, as transformers:
    /// both L2-normalised, cosine times `exp(logit_scale)`, plus `logit_bias` (SigLIP).
    pub fn logits(&self, image_embed: &[f32], text_embeds: &[Vec<f32>]) -> Vec<f32> {
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let ni = norm(image_embed);
        text_embeds
            .iter()
            .map(|t| {
                let nt = norm(t);
                let dot: f32 = image_embed
                    .iter()
                    .zip(t)
                    .map(|(a, b)| (a / ni) * (b / nt))
                    .sum();
                dot * self.scale + self.bias
            })
            .collect()
    }
}

/// A loaded CLIP or SigLIP checkpoint used as a zero-shot classifier.
pub struct ZeroShotModel {
    name: String,
    net: ZeroShotNet,
    tokenizer: TextTokenizer,
    processor: ImageProcessor,
    template: String,
    /// Text embeddings by prompt: labels repeat across items.
    text_cache: HashMap<String, Vec<f32>>,
    sha256: OnceLock<Option<String>>,
}

/// What one image scored against a set of prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub prompts: Vec<String>,
    pub logits: Vec<f32>,
    pub timings: StepTimings,
}

impl ZeroShotModel {
    /// Loads a folder or `hf://Org/Name[@rev]` (from the local cache) holding a CLIP or SigLIP
    /// checkpoint; `template` must contain `{label}`.
    pub fn load(reference: &str, device: &Device, dtype: DType, template: &str) -> Result<Self> {
        let dir = crate::hub::resolve_model_path(reference)?;
        Self::load_dir(&dir, reference.to_string(), device, dtype, template)
    }

    pub fn load_dir(
        dir: &Path,
        name: String,
        device: &Device,
        dtype: DType,
        template: &str,
    ) -> Result<Self> {
        check_template(template)?;
        let net = ZeroShotNet::load(dir, device, dtype)?;
        let family = net.config.family;
        let tokenizer =
            TextTokenizer::from_dir(dir, family, net.config.text.max_position_embeddings)?;
        let processor = ImageProcessor::from_dir(dir, family)?;
        let want = (
            net.config.vision.image_size as u32,
            net.config.vision.image_size as u32,
        );
        match processor.output_size() {
            Some(s) if s == want => {}
            other => bail!(
                "{}: the image processor makes {} images but the vision tower takes {}x{}",
                dir.display(),
                other
                    .map(|(h, w)| format!("{h}x{w}"))
                    .unwrap_or_else(|| "variable-size".into()),
                want.0,
                want.1
            ),
        }
        Ok(Self {
            name,
            net,
            tokenizer,
            processor,
            template: template.to_string(),
            text_cache: HashMap::new(),
            sha256: OnceLock::new(),
        })
    }

    pub fn family(&self) -> Family {
        self.net.config.family
    }

    pub fn net(&self) -> &ZeroShotNet {
        &self.net
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The prompts a question with these option texts is scored against.
    pub fn zero_shot_prompts(&self, choice_texts: &[String]) -> Vec<String> {
        choice_texts
            .iter()
            .map(|c| apply_template(&self.template, c))
            .collect()
    }

    /// `[1, 3, H, W]` pixel values of one image.
    pub fn pixel_values(&self, image: &DynamicImage) -> Result<Tensor> {
        let (data, h, w) = self.processor.pixel_values(image);
        Ok(Tensor::from_vec(data, (1, 3, h, w), self.net.device())?)
    }

    /// Text embedding of a prompt, cached.
    pub fn prompt_embedding(&mut self, prompt: &str) -> Result<Vec<f32>> {
        if let Some(e) = self.text_cache.get(prompt) {
            return Ok(e.clone());
        }
        let ids = self.tokenizer.encode(prompt)?;
        let e = self
            .net
            .text_embeds(&ids)
            .with_context(|| format!("text tower on {prompt:?}"))?
            .to_vec1::<f32>()?;
        self.text_cache.insert(prompt.to_string(), e.clone());
        Ok(e)
    }

    /// `logits_per_image` of one image against `template × choice_texts`.
    pub fn score(&mut self, image: &DynamicImage, choice_texts: &[String]) -> Result<Scores> {
        if choice_texts.is_empty() {
            bail!(
                "zero-shot models need the answer options (a label task, or multiple choice whose options are labels); this question has none"
            );
        }
        let t0 = Instant::now();
        let pixels = self.pixel_values(image)?;
        let preprocess_ms = ms(t0);
        let t1 = Instant::now();
        let image_embed = self
            .net
            .image_embeds(&pixels)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        let vision_ms = ms(t1);
        let t2 = Instant::now();
        let prompts = self.zero_shot_prompts(choice_texts);
        let text = prompts
            .iter()
            .map(|p| self.prompt_embedding(p))
            .collect::<Result<Vec<_>>>()?;
        let prefill_ms = ms(t2);
        let logits = self.net.logits(&image_embed, &text);
        Ok(Scores {
            prompts,
            logits,
            timings: StepTimings {
                preprocess_ms,
                vision_ms,
                prefill_ms,
                ..Default::default()
            },
        })
    }

    fn one_image<'a>(&self, request: &'a Request) -> Result<&'a DynamicImage> {
        match request.images.as_slice() {
            [one] => Ok(one.as_ref()),
            other => bail!(
                "{} zero-shot scoring takes exactly one image per question, got {}",
                self.family().name(),
                other.len()
            ),
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Index of the largest value; ties go to the first.
pub fn argmax(v: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, x) in v.iter().enumerate() {
        if best.is_none_or(|b| *x > v[b]) {
            best = Some(i);
        }
    }
    best
}

/// Log-softmax in f64.
pub fn log_softmax(v: &[f32]) -> Vec<f64> {
    let m = v.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
    let lse = m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    v.iter().map(|&x| x as f64 - lse).collect()
}

impl Model for ZeroShotModel {
    fn clear_caches(&mut self) {
        self.text_cache.clear();
    }

    fn info(&self) -> ModelInfo {
        crate::checkpoint::CheckpointInfo {
            name: &self.name,
            kind: self.family().name(),
            files: self.net.files(),
            sha256: &self.sha256,
            device: self.net.device(),
            dtype: self.net.dtype(),
            weight_bytes: self.net.weight_bytes,
        }
        .model_info()
    }

    /// The non-generative answer: `request.choices[argmax logits]` (ties: the first).
    fn generate(&mut self, request: &Request) -> Result<Generation> {
        let image = self.one_image(request)?;
        if request.choices.len() != request.choice_texts.len() {
            bail!(
                "request has {} choices but {} choice texts",
                request.choices.len(),
                request.choice_texts.len()
            );
        }
        let s = self.score(image, &request.choice_texts)?;
        let best = argmax(&s.logits).expect("non-empty choices");
        Ok(Generation {
            text: request.choices[best].clone(),
            token_ids: vec![],
            prompt_tokens: 0,
            top_logprobs: vec![],
            timings: s.timings,
        })
    }

    /// Log-softmax over `logits_per_image` across the options, for CLIP and SigLIP alike (for
    /// SigLIP this is not its sigmoid probability, but the ranking is the logits' ranking).
    fn choice_logprobs(&mut self, request: &Request) -> Result<Option<Vec<f64>>> {
        let image = self.one_image(request)?;
        let s = self.score(image, &request.choice_texts)?;
        Ok(Some(log_softmax(&s.logits)))
    }
}
