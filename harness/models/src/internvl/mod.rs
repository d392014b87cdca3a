//! InternVL3 (and FaceLLM, its fine-tune) on candle: InternViT + pixel-shuffle projector +
//! Qwen2, loaded from any of the three checkpoint layouts, with greedy decoding and
//! answer log-likelihoods.
//!
//! [`InternVl`] is the network: load it from a folder with [`InternVl::load`], turn pixel values
//! into image features, splice them into the prompt embeddings at the `<IMG_CONTEXT>` positions,
//! and run the decoder with a [`qwen2::KvCache`]. [`generate`] holds the decoding loops.

pub mod config;
pub mod generate;
pub mod model;
pub mod preprocess;
pub mod qwen2;
pub mod text;
pub mod tiny;
pub mod vision;
pub mod weights;

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};

pub use config::InternVlConfig;
pub use model::InternVlModel;
pub use qwen2::KvCache;
pub use weights::Layout;
// Re-exported so that paths from before the shared parts moved to crate level keep working.
use crate::checkpoint::generation_config_eos;
pub use crate::checkpoint::CheckpointFiles;
pub use crate::placement::{device_name, dtype_name, parse_device, parse_dtype};

/// The InternVL network with its weights on one device.
pub struct InternVl {
    config: InternVlConfig,
    files: CheckpointFiles,
    layout: Layout,
    vision: vision::VisionPath,
    lm: qwen2::Qwen2,
    image_token_id: u32,
    device: Device,
    dtype: DType,
    weight_bytes: u64,
    load_ms: f64,
    eos_token_ids: Vec<u32>,
}

impl InternVl {
    /// Loads `dir` (config.json + safetensors, single or sharded, in any supported layout)
    /// onto `device`, converting the weights to `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let start = Instant::now();
        let files = CheckpointFiles::locate(dir)?;
        let config = InternVlConfig::from_file(&files.config)?;
        let image_token_id = match config.image_token_id {
            Some(id) => id,
            None => image_context_id_from_tokenizer(dir)?,
        };
        let mut eos_token_ids = config.text.eos_token_ids.clone();
        for id in generation_config_eos(dir)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let w = weights::Weights::open(&files, device, dtype)?;
        let vision = vision::VisionPath::load(&w, &config)?;
        let lm = qwen2::Qwen2::load(&w, &config.text)?;
        if image_token_id as usize >= config.text.vocab_size {
            bail!(
                "image token id {image_token_id} is outside the vocabulary of {} tokens",
                config.text.vocab_size
            );
        }
        Ok(Self {
            layout: w.layout(),
            weight_bytes: w.loaded_bytes(),
            config,
            files,
            vision,
            lm,
            image_token_id,
            device: device.clone(),
            dtype,
            load_ms: start.elapsed().as_secs_f64() * 1e3,
            eos_token_ids,
        })
    }

    pub fn config(&self) -> &InternVlConfig {
        &self.config
    }
    pub fn files(&self) -> &CheckpointFiles {
        &self.files
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn image_token_id(&self) -> u32 {
        self.image_token_id
    }
    /// Bytes of parameters held on the device (a tied lm_head counted once).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }
    /// End-of-sequence ids: the text config's `eos_token_id` plus generation_config.json's.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }
    pub fn language_model(&self) -> &qwen2::Qwen2 {
        &self.lm
    }
    pub fn new_cache(&self) -> KvCache {
        self.lm.new_cache()
    }

    /// Image features `[tiles, image_seq_length, llm_hidden]` for pixel values
    /// `[tiles, channels, H, W]` (already normalised; any float dtype, any device).
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let px = vision::pixels_to(pixel_values, &self.device, self.dtype)?;
        let feats = self.vision.image_features(&px)?;
        let seq = feats.dim(1)?;
        if seq != self.config.image_seq_length {
            bail!(
                "the vision path gives {seq} tokens per tile but the config's image_seq_length is {}",
                self.config.image_seq_length
            );
        }
        Ok(feats)
    }

    /// Prompt embeddings `[1, t, hidden]`: token embeddings with the rows at `<IMG_CONTEXT>`
    /// positions replaced, in order, by the image features (as transformers' `masked_scatter`).
    pub fn input_embeds(&self, ids: &[u32], image_features: Option<&Tensor>) -> Result<Tensor> {
        if ids.is_empty() {
            bail!("empty prompt");
        }
        let text = self.lm.embed_ids(ids)?;
        let positions: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == self.image_token_id)
            .map(|(i, _)| i)
            .collect();
        let feats = match image_features {
            Some(f) => {
                let h = f.dim(f.rank() - 1)?;
                Some(f.reshape(((), h))?.to_dtype(self.dtype)?)
            }
            None => None,
        };
        let n_feats = feats.as_ref().map(|f| f.dim(0)).transpose()?.unwrap_or(0);
        if positions.len() != n_feats {
            bail!(
                "image features and image tokens do not match: the prompt has {} <IMG_CONTEXT> \
                 tokens (id {}) but the images give {} feature rows",
                positions.len(),
                self.image_token_id,
                n_feats
            );
        }
        let Some(feats) = feats else {
            return Ok(text);
        };
        let t = ids.len();
        let mut index: Vec<u32> = (0..t as u32).collect();
        for (k, &p) in positions.iter().enumerate() {
            index[p] = (t + k) as u32;
        }
        let all = Tensor::cat(&[&text.squeeze(0)?, &feats], 0)?;
        let index = Tensor::new(index.as_slice(), &self.device)?;
        Ok(all.index_select(&index, 0)?.unsqueeze(0)?)
    }

    /// Runs `embeds` after the cached tokens; returns final hidden states `[1, t, hidden]`.
    pub fn forward(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.lm.forward_embeds(embeds, cache)
    }

    /// Runs several sequences packed into one `[1, n, hidden]` row, each after its own cache
    /// (see [`qwen2::Qwen2::forward_packed`]); returns their hidden states in the same order.
    pub fn forward_packed(
        &self,
        embeds: &Tensor,
        lens: &[usize],
        caches: &mut [KvCache],
    ) -> Result<Tensor> {
        self.lm.forward_packed(embeds, lens, caches)
    }

    /// f32 logits `[1, t, vocab]` of hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm.logits(hidden)
    }

    /// Full-sequence logits `[t, vocab]` (f32) of a prompt, without a cache: the parity entry point.
    pub fn prompt_logits(&self, ids: &[u32], pixel_values: Option<&Tensor>) -> Result<Tensor> {
        let feats = pixel_values.map(|p| self.image_features(p)).transpose()?;
        let embeds = self.input_embeds(ids, feats.as_ref())?;
        let mut cache = self.new_cache();
        let hidden = self.forward(&embeds, &mut cache)?;
        Ok(self.logits(&hidden)?.squeeze(0)?)
    }
}

/// Reads the `<IMG_CONTEXT>` id from tokenizer.json (original configs do not carry it).
fn image_context_id_from_tokenizer(dir: &Path) -> Result<u32> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "{}: config.json has no image_token_id and tokenizer.json is missing, so the \
             <IMG_CONTEXT> token id is unknown",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("corrupt {}: not valid JSON", path.display()))?;
    if let Some(added) = v.get("added_tokens").and_then(|a| a.as_array()) {
        for t in added {
            if t.get("content").and_then(|c| c.as_str()) == Some("<IMG_CONTEXT>") {
                if let Some(id) = t.get("id").and_then(|i| i.as_u64()) {
                    return Ok(id as u32);
                }
            }
        }
    }
    v.get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(|voc| voc.get("<IMG_CONTEXT>"))
        .and_then(|i| i.as_u64())
        .map(|i| i as u32)
        .ok_or_else(|| anyhow!("{} has no <IMG_CONTEXT> token", path.display()))
}
