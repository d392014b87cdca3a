//! [`Qwen2VlModel`]: Qwen2-VL / Qwen2.5-VL behind the crate's [`Model`] trait.
//!
//! One request becomes one user turn with every image first and then the prompt text, rendered
//! with the checkpoint's chat template; images go through the Qwen2-VL image processor; then
//! greedy decoding or answer scoring. Stage timings go into [`StepTimings`]. Batches use the
//! trait's default (one request after another), so batch-N answers are batch-1 answers.

use crate::checkpoint::EncodeChecked;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::preprocess::ImageProcessor;
use super::processor::QwenText;
use super::Qwen2Vl;
use crate::model::{Generation, Model, ModelInfo, Request, StepTimings};

pub struct Qwen2VlModel {
    name: String,
    net: Qwen2Vl,
    text: QwenText,
    processor: ImageProcessor,
    stop_token_ids: Vec<u32>,
    /// Appended to each scored answer (the turn's `<|im_end|>`), so that an answer which is a
    /// prefix of another is scored as a complete reply.
    end_of_turn: Option<u32>,
    sha256: OnceLock<Option<String>>,
}

/// A prepared prompt: ids, embeddings, M-RoPE positions and their delta.
struct Prepared {
    ids: Vec<u32>,
    embeds: Tensor,
    positions: Vec<[i64; 3]>,
    delta: i64,
}

impl Qwen2VlModel {
    /// Loads `reference` — a folder, or `hf://Org/Name[@rev]` from the local HF cache.
    pub fn load(reference: &str, device: &Device, dtype: DType) -> Result<Self> {
        let dir = crate::hub::resolve_model_path(reference)?;
        Self::load_dir(&dir, reference.to_string(), device, dtype)
    }

    pub fn load_dir(dir: &Path, name: String, device: &Device, dtype: DType) -> Result<Self> {
        let net = Qwen2Vl::load(dir, device, dtype)?;
        let processor = ImageProcessor::from_dir(dir)?;
        if processor.merge_size != net.config().vision.spatial_merge_size
            || processor.patch_size != net.config().vision.patch_size
            || processor.temporal_patch_size != net.config().vision.temporal_patch_size
        {
            bail!(
                "{}: preprocessor_config.json's patch/merge sizes ({}, {}, {}) differ from \
                 config.json's vision_config ({}, {}, {})",
                dir.display(),
                processor.patch_size,
                processor.temporal_patch_size,
                processor.merge_size,
                net.config().vision.patch_size,
                net.config().vision.temporal_patch_size,
                net.config().vision.spatial_merge_size
            );
        }
        let text = QwenText::from_dir(dir)?;
        if text.image_token_id != net.config().image_token_id {
            bail!(
                "{}: the tokenizer's {} is id {} but config.json's image_token_id is {}",
                dir.display(),
                text.image_token,
                text.image_token_id,
                net.config().image_token_id
            );
        }
        let (stop_token_ids, end_of_turn) =
            crate::checkpoint::stop_tokens(net.eos_token_ids(), text.tokenizer(), "<|im_end|>");
        Ok(Self {
            name,
            net,
            text,
            processor,
            stop_token_ids,
            end_of_turn,
            sha256: OnceLock::new(),
        })
    }

    pub fn network(&self) -> &Qwen2Vl {
        &self.net
    }
    pub fn text(&self) -> &QwenText {
        &self.text
    }
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_token_ids
    }

    fn prepare(&self, request: &Request, timings: &mut StepTimings) -> Result<Prepared> {
        let t0 = Instant::now();
        let images: Vec<&image::DynamicImage> = request.images.iter().map(|i| i.as_ref()).collect();
        let patches = if images.is_empty() {
            None
        } else {
            Some(self.processor.preprocess(&images)?)
        };
        let merge = self.processor.merge_size * self.processor.merge_size;
        let grids: Vec<[usize; 3]> = patches
            .as_ref()
            .map(|p| p.grids.clone())
            .unwrap_or_default();
        let per_image: Vec<usize> = grids.iter().map(|g| g[0] * g[1] * g[2] / merge).collect();
        let (_, ids) = self.text.build(&per_image, &request.prompt)?;
        let (positions, delta) = self.net.positions(&ids, &grids)?;
        timings.preprocess_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let feats = patches
            .as_ref()
            .map(|p| {
                let px = p.to_tensor(self.net.device())?;
                self.net.image_features(&px, &p.grids)
            })
            .transpose()?;
        let embeds = self.net.input_embeds(&ids, feats.as_ref())?;
        // GPU work is asynchronous: wait, or vision time would be charged to prefill.
        self.net.device().synchronize()?;
        timings.vision_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(Prepared {
            ids,
            embeds,
            positions,
            delta,
        })
    }

    /// Positions left in the context after `ids` (M-RoPE positions run ahead of the token count
    /// by `delta`, which is negative after images).
    fn room(&self, p: &Prepared) -> usize {
        self.net.context_length().saturating_sub(p.ids.len())
    }
}

impl Model for Qwen2VlModel {
    fn info(&self) -> ModelInfo {
        crate::checkpoint::CheckpointInfo {
            name: &self.name,
            kind: "qwen2_vl",
            files: self.net.files(),
            sha256: &self.sha256,
            device: self.net.device(),
            dtype: self.net.dtype(),
            weight_bytes: self.net.weight_bytes(),
        }
        .model_info()
    }

    fn generate(&mut self, request: &Request) -> Result<Generation> {
        let mut timings = StepTimings::default();
        let p = self.prepare(request, &mut timings)?;
        if p.ids.len() > self.net.context_length() {
            bail!(
                "the prompt is {} tokens long but the model's context is {} tokens \
                 (max_position_embeddings in config.json)",
                p.ids.len(),
                self.net.context_length()
            );
        }
        let max_new = request.max_new_tokens.min(self.room(&p));
        let stops: Vec<&str> = request
            .stop
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let text = &self.text;
        let out = self
            .net
            .greedy(
                &p.embeds,
                &p.positions,
                p.delta,
                max_new,
                &self.stop_token_ids,
                false,
                |toks| {
                    !stops.is_empty()
                        && text
                            .decode(toks, true)
                            .map(|s| stops.iter().any(|st| s.contains(st)))
                            .unwrap_or(false)
                },
            )
            .context("Qwen2-VL generation")?;
        timings.prefill_ms = out.prefill_ms;
        timings.decode_ms = out.decode_ms;
        let mut answer = self.text.decode(&out.tokens, true)?;
        if let Some(cut) = stops.iter().filter_map(|s| answer.find(s)).min() {
            answer.truncate(cut);
        }
        Ok(Generation {
            text: answer,
            token_ids: out.tokens,
            prompt_tokens: p.ids.len(),
            top_logprobs: out.top_logprobs,
            timings,
        })
    }

    fn choice_logprobs(&mut self, request: &Request) -> Result<Option<Vec<f64>>> {
        if request.choices.is_empty() {
            return Ok(Some(vec![]));
        }
        let mut timings = StepTimings::default();
        let p = self.prepare(request, &mut timings)?;
        let mut conts = Vec::with_capacity(request.choices.len());
        for choice in &request.choices {
            let enc = self
                .text
                .tokenizer()
                .encode_checked(choice.as_str(), false)
                .map_err(|e| anyhow!("tokenizing answer {choice:?}: {e}"))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.is_empty() {
                bail!("answer choice {choice:?} tokenises to nothing");
            }
            ids.extend(self.end_of_turn);
            conts.push(ids);
        }
        let longest = conts.iter().map(Vec::len).max().unwrap_or(0);
        if p.ids.len() + longest > self.net.context_length() {
            bail!(
                "the prompt ({} tokens) plus the longest answer ({longest} tokens) exceed the \
                 model's context of {} tokens (max_position_embeddings in config.json)",
                p.ids.len(),
                self.net.context_length()
            );
        }
        Ok(Some(self.net.continuation_logprobs(
            &p.embeds,
            &p.positions,
            p.delta,
            &conts,
        )?))
    }
}
