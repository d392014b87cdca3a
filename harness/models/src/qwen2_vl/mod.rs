//! Qwen2-VL and Qwen2.5-VL on candle (`kind = "qwen2_vl"`), from checkpoints in the
//! transformers layout (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`).
//!
//! [`Qwen2Vl`] is the network: the vision tower (`vision.rs`: 2D rotary, patch merger, Qwen2.5's
//! window attention and RMSNorm/SwiGLU blocks), the Qwen2 decoder with M-RoPE (`text.rs`), and
//! greedy decoding / answer log-likelihoods here. `preprocess.rs` is the image processor
//! (`smart_resize`, Pillow-exact bicubic), `processor.rs` the chat template, image-token
//! expansion and M-RoPE position ids, `model.rs` the [`crate::Model`] front.

pub mod config;
pub mod model;
pub mod preprocess;
pub mod processor;
pub mod text;
pub mod vision;
pub mod weights;

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

pub use config::{Family, Qwen2VlConfig};
pub use model::Qwen2VlModel;
pub use text::KvCache;

use crate::checkpoint::{generation_config_eos, CheckpointFiles};
use crate::generation::log_sum_exp;

/// The network with its weights on one device.
pub struct Qwen2Vl {
    config: Qwen2VlConfig,
    files: CheckpointFiles,
    vision: vision::VisionTower,
    lm: text::TextModel,
    device: Device,
    dtype: DType,
    weight_bytes: u64,
    eos_token_ids: Vec<u32>,
}

/// What greedy decoding produced (the shared [`crate::generation::Decoded`]).
pub type Decoded = crate::generation::Decoded;

impl Qwen2Vl {
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let files = CheckpointFiles::locate(dir)?;
        let config = Qwen2VlConfig::from_file(&files.config)?;
        let w = weights::Weights::open(&files, device, dtype)?;
        let vision = vision::VisionTower::load(&w, &config.vision, config.family, dtype)?;
        let lm = text::TextModel::load(&w, &config.text, device, dtype)?;
        let mut eos_token_ids = config.text.eos_token_ids.clone();
        for id in generation_config_eos(dir)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        Ok(Self {
            weight_bytes: w.loaded_bytes(),
            config,
            files,
            vision,
            lm,
            device: device.clone(),
            dtype,
            eos_token_ids,
        })
    }

    pub fn config(&self) -> &Qwen2VlConfig {
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
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
    pub fn context_length(&self) -> usize {
        self.config.text.max_position_embeddings
    }
    pub fn new_cache(&self) -> KvCache {
        self.lm.new_cache()
    }

    /// Image tokens `[Σ tokens, hidden]` for flattened patches `[Σ t·h·w, patch_dim]`.
    pub fn image_features(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let px = pixels.to_device(&self.device)?;
        self.vision.forward(&px, grids)
    }

    /// Prompt embeddings `[1, t, hidden]` with the image-token rows replaced, in order, by the
    /// image features (transformers' `masked_scatter`).
    pub fn input_embeds(&self, ids: &[u32], features: Option<&Tensor>) -> Result<Tensor> {
        if ids.is_empty() {
            bail!("empty prompt");
        }
        let text = self.lm.embed_ids(ids)?;
        let positions: Vec<usize> = (0..ids.len())
            .filter(|&i| ids[i] == self.config.image_token_id)
            .collect();
        let n = features.map(|f| f.dim(0)).transpose()?.unwrap_or(0);
        if positions.len() != n {
            bail!(
                "image features and image tokens do not match: the prompt has {} image tokens \
                 (id {}) but the images give {n} feature rows",
                positions.len(),
                self.config.image_token_id
            );
        }
        let Some(f) = features else {
            return Ok(text);
        };
        let t = ids.len();
        let mut index: Vec<u32> = (0..t as u32).collect();
        for (k, &p) in positions.iter().enumerate() {
            index[p] = (t + k) as u32;
        }
        let all = Tensor::cat(&[&text.squeeze(0)?, &f.to_dtype(self.dtype)?], 0)?;
        let index = Tensor::new(index.as_slice(), &self.device)?;
        Ok(all.index_select(&index, 0)?.unsqueeze(0)?)
    }

    /// Hidden states `[1, t, hidden]` of `embeds` at `positions`, after the cache.
    pub fn forward(
        &self,
        embeds: &Tensor,
        positions: &[[i64; 3]],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.lm.forward(embeds, positions, cache)
    }

    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm.logits(hidden)
    }

    /// M-RoPE positions of a prompt and the delta that continues them.
    pub fn positions(&self, ids: &[u32], grids: &[[usize; 3]]) -> Result<(Vec<[i64; 3]>, i64)> {
        processor::rope_positions(
            ids,
            self.config.image_token_id,
            grids,
            self.config.vision.spatial_merge_size,
        )
    }

    /// Full-prompt logits `[t, vocab]` (f32) without a cache: the parity entry point.
    pub fn prompt_logits(
        &self,
        ids: &[u32],
        pixels: Option<(&Tensor, &[[usize; 3]])>,
    ) -> Result<Tensor> {
        let grids: Vec<[usize; 3]> = pixels.map(|p| p.1.to_vec()).unwrap_or_default();
        let feats = pixels
            .map(|(px, g)| self.image_features(px, g))
            .transpose()?;
        let embeds = self.input_embeds(ids, feats.as_ref())?;
        let (pos, _) = self.positions(ids, &grids)?;
        let mut cache = self.new_cache();
        let hidden = self.forward(&embeds, &pos, &mut cache)?;
        Ok(self.logits(&hidden)?.squeeze(0)?)
    }

    fn last_logits(&self, hidden: &Tensor, step: usize) -> Result<Vec<f32>> {
        let t = hidden.dim(1)?;
        let row = self
            .logits(&hidden.narrow(1, t - 1, 1)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(i) = row.iter().position(|x| !x.is_finite()) {
            bail!(
                "non-finite logit {} for token {i} at decoding step {step} (numerical overflow: \
                 try dtype f32 or bf16 instead of f16)",
                row[i]
            );
        }
        Ok(row)
    }

    /// Greedy decoding from prompt embeddings at `positions` (delta `delta`;
    /// [`crate::generation::greedy`]): stops at a stop token (kept), after `max_new` tokens,
    /// or when `stop_text` says so.
    // The arguments are the prompt (3) and the stopping rules (4); a struct for either would
    // only be built to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub fn greedy(
        &self,
        embeds: &Tensor,
        positions: &[[i64; 3]],
        delta: i64,
        max_new: usize,
        stop_ids: &[u32],
        keep_logits: bool,
        stop_text: impl FnMut(&[u32]) -> bool,
    ) -> Result<Decoded> {
        let mut cache = self.new_cache();
        let forward = |next: Option<u32>, step: usize| match next {
            None => {
                let hidden = self.forward(embeds, positions, &mut cache)?;
                self.last_logits(&hidden, 0)
            }
            Some(token) => {
                let p = cache.len() as i64 + delta;
                let e = self.lm.embed_ids(&[token])?;
                let hidden = self.forward(&e, &[[p, p, p]], &mut cache)?;
                self.last_logits(&hidden, step)
            }
        };
        crate::generation::greedy(max_new, stop_ids, keep_logits, forward, stop_text)
    }

    /// Sum of log-probabilities of each continuation after the prompt (one prefill shared by
    /// all, each continuation run on a clone of the prompt's cache).
    pub fn continuation_logprobs(
        &self,
        embeds: &Tensor,
        positions: &[[i64; 3]],
        delta: i64,
        continuations: &[Vec<u32>],
    ) -> Result<Vec<f64>> {
        let mut cache = self.new_cache();
        let hidden = self.forward(embeds, positions, &mut cache)?;
        let first = self.last_logits(&hidden, 0)?;
        let first_lse = log_sum_exp(&first);
        let mut out = Vec::with_capacity(continuations.len());
        for cont in continuations {
            let Some(&c0) = cont.first() else {
                bail!("an empty continuation cannot be scored");
            };
            let mut total = first[c0 as usize] as f64 - first_lse;
            if cont.len() > 1 {
                let mut c = cache.clone();
                let start = c.len() as i64 + delta;
                let pos: Vec<[i64; 3]> = (0..cont.len() as i64 - 1)
                    .map(|i| [start + i, start + i, start + i])
                    .collect();
                let e = self.lm.embed_ids(&cont[..cont.len() - 1])?;
                let h = self.forward(&e, &pos, &mut c)?;
                let rows = self.logits(&h)?.squeeze(0)?.to_vec2::<f32>()?;
                for (row, &tok) in rows.iter().zip(&cont[1..]) {
                    total += row[tok as usize] as f64 - log_sum_exp(row);
                }
            }
            out.push(total);
        }
        Ok(out)
    }
}
