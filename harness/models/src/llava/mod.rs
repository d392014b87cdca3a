//! LLaVA-1.5 in the llava-hf layout (`LlavaForConditionalGeneration`: CLIP vision tower,
//! two-layer GELU projector, Llama) on candle, with greedy decoding and answer
//! log-likelihoods.
//!
//! candle-transformers supplies the CLIP tower (`clip::vision_model`) and the decoder
//! (`llama`); its `llava` module is not used because it expects the original liuhaotian config
//! (`mm_projector_type`, `mm_vision_select_layer`, ...) and, in its llava-hf mode, an
//! `image_newline` tensor that LLaVA-1.5 does not have, and because its layer selection is off
//! by one against transformers: candle's `output_hidden_states` omits the embeddings output
//! that transformers' list starts with, so `-2` there picks the last layer, not the
//! second-to-last. The projector is two candle `Linear`s with the exact (erf) GELU.
//!
//! [`Llava::load`] reads and checks everything before building a candle module, so loading
//! errors name the tensor and both shapes instead of panicking in candle's loader.

pub mod config;
pub mod model;
pub mod preprocess;
pub mod text;
pub mod weights;

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::Linear;
use candle_transformers::models::clip::vision_model::ClipVisionTransformer;
use candle_transformers::models::llama::{Cache, Llama};

pub use config::LlavaConfig;
pub use model::LlavaModel;

use crate::checkpoint::{generation_config_eos, CheckpointFiles};
use crate::generation::log_sum_exp;
use config::{ProjectorAct, SelectStrategy};

/// The LLaVA network with its weights on one device.
pub struct Llava {
    config: LlavaConfig,
    files: CheckpointFiles,
    vision: ClipVisionTransformer,
    linear_1: Linear,
    linear_2: Linear,
    llama: Llama,
    /// An empty KV cache with the RoPE tables computed once; each sequence starts from a clone.
    empty_cache: Cache,
    device: Device,
    dtype: DType,
    vision_dtype: DType,
    weight_bytes: u64,
    eos_token_ids: Vec<u32>,
}

/// Greedy decoding result (the shared [`crate::generation::Decoded`]).
pub type Decoded = crate::generation::Decoded;

impl Llava {
    /// Loads `dir` (config.json + safetensors, single or sharded) onto `device` in `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let files = CheckpointFiles::locate(dir)?;
        let config = LlavaConfig::from_file(&files.config)?;
        let w = weights::LoadedWeights::load(&files, &config, device, dtype)?;
        let vb = w.var_builder(dtype, device);
        // Every tensor was checked above, so candle's loaders (which panic on a missing
        // tensor in Llama::load) only see complete, well-shaped weights.
        // candle's CPU conv2d (the patch embedding) has no bf16 kernel, so on the CPU a bf16
        // model runs its vision tower in f32 (the bf16 weights upcast exactly).
        let vision_dtype = if device.is_cpu() && dtype == DType::BF16 {
            DType::F32
        } else {
            dtype
        };
        let vision = ClipVisionTransformer::new(
            w.var_builder(vision_dtype, device).pp("vision"),
            &config.vision.to_candle(),
        )
        .context("building the CLIP vision tower")?;
        let (h, d) = (config.text.hidden_size, config.vision.hidden_size);
        let lin = |name: &str, i: usize| -> Result<Linear> {
            let p = vb.pp("projector").pp(name);
            let w = p.get((h, i), "weight")?;
            let b = if config.projector_bias {
                Some(p.get(h, "bias")?)
            } else {
                None
            };
            Ok(Linear::new(w, b))
        };
        let linear_1 = lin("linear_1", d)?;
        let linear_2 = lin("linear_2", h)?;
        let llama_cfg = config.text.to_candle();
        let llama = Llama::load(vb.pp("text"), &llama_cfg).context("building the Llama decoder")?;
        let empty_cache = Cache::new(true, dtype, &llama_cfg, device)?;
        let mut eos_token_ids = config.text.eos_token_ids.clone();
        for id in generation_config_eos(dir)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        Ok(Self {
            weight_bytes: w.bytes,
            config,
            files,
            vision,
            linear_1,
            linear_2,
            llama,
            empty_cache,
            device: device.clone(),
            dtype,
            vision_dtype,
            eos_token_ids,
        })
    }

    pub fn config(&self) -> &LlavaConfig {
        &self.config
    }
    pub fn files(&self) -> &CheckpointFiles {
        &self.files
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }
    /// The text config's `eos_token_id` plus generation_config.json's.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
    pub fn context_length(&self) -> usize {
        self.config.text.max_position_embeddings
    }

    /// Image features `[images * tokens_per_image, hidden]` (projector output) of pixel
    /// values `[images, 3, H, W]`.
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let px = pixel_values
            .to_device(&self.device)?
            .to_dtype(self.vision_dtype)?;
        let states = self.vision.output_hidden_states(&px)?;
        let sel = states
            .get(self.config.candle_hidden_index())
            .context("vision layer index out of range")?;
        let sel = match self.config.select_strategy {
            SelectStrategy::Default => sel.i((.., 1..))?,
            SelectStrategy::Full => sel.clone(),
        };
        let x = self.linear_1.forward(&sel.to_dtype(self.dtype)?)?;
        let x = match self.config.projector_act {
            ProjectorAct::GeluErf => x.gelu_erf()?,
            ProjectorAct::GeluTanh => x.gelu()?,
        };
        let x = self.linear_2.forward(&x)?;
        let hdim = x.dim(2)?;
        Ok(x.reshape(((), hdim))?)
    }

    fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        let t = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        Ok(self.llama.embed(&t)?)
    }

    /// Prompt embeddings `[1, t, hidden]`: token embeddings with the rows at image-token
    /// positions replaced, in order, by the image features (transformers' `masked_scatter`).
    pub fn input_embeds(&self, ids: &[u32], features: Option<&Tensor>) -> Result<Tensor> {
        if ids.is_empty() {
            bail!("empty prompt");
        }
        let text = self.embed_ids(ids)?;
        let positions: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == self.config.image_token_id)
            .map(|(i, _)| i)
            .collect();
        let n_feats = features.map(|f| f.dim(0)).transpose()?.unwrap_or(0);
        if positions.len() != n_feats {
            bail!(
                "image features and image tokens do not match: the prompt has {} image tokens \
                 (id {}) but the images give {n_feats} feature rows",
                positions.len(),
                self.config.image_token_id
            );
        }
        let Some(feats) = features else {
            return Ok(text);
        };
        let t = ids.len();
        let mut index: Vec<u32> = (0..t as u32).collect();
        for (k, &p) in positions.iter().enumerate() {
            index[p] = (t + k) as u32;
        }
        let all = Tensor::cat(&[&text.squeeze(0)?, &feats.to_dtype(self.dtype)?], 0)?;
        let index = Tensor::new(index.as_slice(), &self.device)?;
        Ok(all.index_select(&index, 0)?.unsqueeze(0)?)
    }

    pub fn new_cache(&self) -> Cache {
        self.empty_cache.clone()
    }

    /// Runs `embeds` `[1, t, hidden]` at position `pos` (the tokens already in `cache`) and
    /// returns the f32 logits of the last position.
    pub fn step(&self, embeds: &Tensor, pos: usize, cache: &mut Cache) -> Result<Vec<f32>> {
        let t = embeds.dim(1)?;
        if pos + t > self.context_length() {
            bail!(
                "the sequence reaches {} tokens but the model's context is {} tokens \
                 (max_position_embeddings)",
                pos + t,
                self.context_length()
            );
        }
        let logits = self.llama.forward_input_embed(embeds, pos, cache)?;
        let row: Vec<f32> = logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?;
        check_finite(&row, pos + t)?;
        Ok(row)
    }

    /// Logits (f32) of the prompt's last `last_n` positions: the first `t - last_n` positions
    /// run in one prefill, then one token at a time through the KV cache (candle's Llama only
    /// returns the last position's logits). Parity entry point.
    pub fn prompt_logits(
        &self,
        ids: &[u32],
        pixel_values: Option<&Tensor>,
        last_n: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let feats = pixel_values.map(|p| self.image_features(p)).transpose()?;
        let embeds = self.input_embeds(ids, feats.as_ref())?;
        let t = ids.len();
        let last_n = last_n.clamp(1, t);
        let mut cache = self.new_cache();
        let first = t - last_n + 1;
        let mut out = vec![self.step(&embeds.narrow(1, 0, first)?, 0, &mut cache)?];
        for p in first..t {
            out.push(self.step(&embeds.narrow(1, p, 1)?, p, &mut cache)?);
        }
        Ok(out)
    }

    /// Greedy decoding from prompt embeddings ([`crate::generation::greedy`]); `stop_here`
    /// sees the tokens so far after each step. A stop token ends decoding and is kept, as
    /// transformers keeps EOS.
    pub fn greedy(
        &self,
        prompt_embeds: &Tensor,
        max_new_tokens: usize,
        stop_token_ids: &[u32],
        keep_step_logits: bool,
        stop_here: impl FnMut(&[u32]) -> bool,
    ) -> Result<Decoded> {
        let mut cache = self.new_cache();
        let mut pos = 0;
        let forward = |next: Option<u32>, _: usize| match next {
            None => {
                pos = prompt_embeds.dim(1)?;
                self.step(prompt_embeds, 0, &mut cache)
            }
            Some(token) => {
                let emb = self.embed_ids(&[token])?;
                let logits = self.step(&emb, pos, &mut cache)?;
                pos += 1;
                Ok(logits)
            }
        };
        crate::generation::greedy(
            max_new_tokens,
            stop_token_ids,
            keep_step_logits,
            forward,
            stop_here,
        )
    }

    /// Sum of log-probabilities of each continuation after the prompt: one prefill, then each
    /// continuation token by token from a copy of the prompt's cache.
    pub fn continuation_logprobs(
        &self,
        prompt_embeds: &Tensor,
        continuations: &[Vec<u32>],
    ) -> Result<Vec<f64>> {
        let mut cache = self.new_cache();
        let t = prompt_embeds.dim(1)?;
        let first = self.step(prompt_embeds, 0, &mut cache)?;
        let first_lse = log_sum_exp(&first);
        let mut scores = Vec::with_capacity(continuations.len());
        for (ci, cont) in continuations.iter().enumerate() {
            let Some(&c0) = cont.first() else {
                bail!("answer continuation {ci} is empty (it tokenised to no tokens)");
            };
            let logit = |row: &[f32], id: u32| -> Result<f64> {
                row.get(id as usize).map(|&x| x as f64).ok_or_else(|| {
                    anyhow::anyhow!(
                        "answer token {id} is outside the model's vocabulary of {} tokens",
                        row.len()
                    )
                })
            };
            let mut total = logit(&first, c0)? - first_lse;
            let mut branch = cache.clone();
            for (k, pair) in cont.windows(2).enumerate() {
                let emb = self.embed_ids(&pair[..1])?;
                let row = self.step(&emb, t + k, &mut branch)?;
                total += logit(&row, pair[1])? - log_sum_exp(&row);
            }
            scores.push(total);
        }
        Ok(scores)
    }
}

fn check_finite(row: &[f32], pos: usize) -> Result<()> {
    if let Some(i) = row.iter().position(|x| !x.is_finite()) {
        bail!(
            "non-finite logit {} for token {i} at position {pos}",
            row[i]
        );
    }
    Ok(())
}
