//! [`InternVlModel`]: FaceLLM / InternVL3 behind the crate's [`Model`] trait.
//!
//! One request becomes one user turn with every image first and then the prompt text, rendered
//! with the checkpoint's own chat template (`text.rs`), images tiled and normalised as
//! transformers' processor does (`preprocess.rs`), then greedy decoding or answer scoring
//! (`generate.rs`). Stage timings go into [`StepTimings`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::generate::{self, DecodeOptions};
use super::preprocess::ProcessorConfig;
use super::text::InternVlText;
use super::{dtype_name, InternVl};
use crate::model::{Generation, Model, ModelInfo, Request, StepTimings};

/// A loaded InternVL checkpoint with its tokenizer, template and image processor.
pub struct InternVlModel {
    name: String,
    net: InternVl,
    text: InternVlText,
    processor: ProcessorConfig,
    stop_token_ids: Vec<u32>,
    /// Token appended to each answer when scoring choices, so that an answer which is a
    /// prefix of another ("young" / "young adult") is scored as a complete reply.
    end_of_turn: Option<u32>,
    sha256: OnceLock<Option<String>>,
}

impl InternVlModel {
    /// Loads `reference` — a folder, or `hf://Org/Name[@rev]` from the local HF cache — onto
    /// `device` in `dtype` (f32 on CPU; bf16 on CUDA).
    pub fn load(reference: &str, device: &Device, dtype: DType) -> Result<Self> {
        let dir = crate::hub::resolve_model_path(reference)?;
        let name = reference.to_string();
        Self::load_dir(&dir, name, device, dtype)
    }

    pub fn load_dir(dir: &Path, name: String, device: &Device, dtype: DType) -> Result<Self> {
        let net = InternVl::load(dir, device, dtype)?;
        if !dir.join("tokenizer.json").is_file() {
            bail!(
                "{} is not a complete checkpoint: tokenizer.json is missing",
                dir.display()
            );
        }
        let processor = ProcessorConfig::from_dir(dir)?;
        let seq = net.config().image_seq_length;
        if processor.image_seq_length != seq {
            bail!(
                "{}: the processor config says {} image tokens per tile but the model config gives {seq}",
                dir.display(),
                processor.image_seq_length
            );
        }
        if (
            processor.tile_height as usize,
            processor.tile_width as usize,
        ) != net.config().vision.image_size
        {
            bail!(
                "{}: the processor makes {}x{} tiles but the vision tower takes {:?}",
                dir.display(),
                processor.tile_height,
                processor.tile_width,
                net.config().vision.image_size
            );
        }
        let text = InternVlText::from_dir(dir, seq)?;
        if text.image_token_id != net.image_token_id() {
            bail!(
                "{}: the tokenizer's {} is id {} but the model config's image_token_id is {}",
                dir.display(),
                text.context_image_token,
                text.image_token_id,
                net.image_token_id()
            );
        }
        let mut stop_token_ids = net.eos_token_ids().to_vec();
        for &id in text.stop_token_ids() {
            if !stop_token_ids.contains(&id) {
                stop_token_ids.push(id);
            }
        }
        let end_of_turn = text
            .tokenizer()
            .token_to_id("<|im_end|>")
            .or_else(|| stop_token_ids.first().copied());
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

    pub fn network(&self) -> &InternVl {
        &self.net
    }
    pub fn text(&self) -> &InternVlText {
        &self.text
    }
    pub fn processor(&self) -> &ProcessorConfig {
        &self.processor
    }
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_token_ids
    }
    pub fn dir(&self) -> &PathBuf {
        &self.net.files().dir
    }
    /// Longest sequence (prompt plus answer) the model takes: its `max_position_embeddings`.
    pub fn context_length(&self) -> usize {
        self.net.config().text.max_position_embeddings
    }

    /// Prompt ids and prompt embeddings (image features spliced in) for a request.
    fn prepare(&self, request: &Request, timings: &mut StepTimings) -> Result<(Vec<u32>, Tensor)> {
        let t0 = Instant::now();
        let images: Vec<&image::DynamicImage> = request.images.iter().map(|i| i.as_ref()).collect();
        let pixels = if images.is_empty() {
            None
        } else {
            Some(self.processor.preprocess(&images)?)
        };
        let tiles: Vec<usize> = pixels
            .as_ref()
            .map(|p| p.tiles_per_image.clone())
            .unwrap_or_default();
        let (_, ids) = self.text.build(&tiles, &request.prompt)?;
        // Refused before any compute: attention over a prompt past the trained context would
        // be meaningless (and its memory quadratic), so the item fails with the two lengths.
        let context = self.context_length();
        if ids.len() > context {
            bail!(
                "the prompt is {} tokens long ({} of them image tokens) but the model's context \
                 is {context} tokens (max_position_embeddings in config.json)",
                ids.len(),
                ids.iter()
                    .filter(|&&id| id == self.net.image_token_id())
                    .count()
            );
        }
        timings.preprocess_ms = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        let feats = match &pixels {
            Some(p) => Some(self.net.image_features(&p.to_tensor(self.net.device())?)?),
            None => None,
        };
        let embeds = self.net.input_embeds(&ids, feats.as_ref())?;
        // GPU work is asynchronous: wait for it, or vision time would be charged to prefill.
        self.net.device().synchronize()?;
        timings.vision_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok((ids, embeds))
    }
}

impl Model for InternVlModel {
    fn info(&self) -> ModelInfo {
        let sha = self
            .sha256
            .get_or_init(|| self.net.files().weights_sha256().ok())
            .clone();
        ModelInfo {
            name: self.name.clone(),
            kind: "internvl".to_string(),
            device: match self.net.device() {
                Device::Cpu => "cpu".to_string(),
                Device::Cuda(_) => "cuda".to_string(),
                Device::Metal(_) => "metal".to_string(),
            },
            dtype: dtype_name(self.net.dtype()).to_string(),
            weights_sha256: sha,
            weight_bytes: self.net.weight_bytes(),
        }
    }

    fn generate(&mut self, request: &Request) -> Result<Generation> {
        let mut timings = StepTimings::default();
        let (ids, embeds) = self.prepare(request, &mut timings)?;
        let opts = DecodeOptions {
            // The answer stops where the context ends.
            max_new_tokens: request
                .max_new_tokens
                .min(self.context_length().saturating_sub(ids.len())),
            stop_token_ids: self.stop_token_ids.clone(),
            top_logprobs: 5,
            keep_step_logits: false,
        };
        let stops: Vec<&str> = request
            .stop
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let text = &self.text;
        let out = generate::greedy(&self.net, &embeds, &opts, |toks| {
            !stops.is_empty()
                && text
                    .decode(toks, true)
                    .map(|s| stops.iter().any(|st| s.contains(st)))
                    .unwrap_or(false)
        })
        .context("InternVL generation")?;
        timings.prefill_ms = out.prefill_ms;
        timings.decode_ms = out.decode_ms;
        let mut answer = self.text.decode(&out.tokens, true)?;
        if let Some(cut) = stops.iter().filter_map(|s| answer.find(s)).min() {
            answer.truncate(cut);
        }
        Ok(Generation {
            text: answer,
            token_ids: out.tokens,
            prompt_tokens: ids.len(),
            top_logprobs: out.top_logprobs,
            timings,
        })
    }

    fn choice_logprobs(&mut self, request: &Request) -> Result<Option<Vec<f64>>> {
        if request.choices.is_empty() {
            return Ok(Some(vec![]));
        }
        let mut timings = StepTimings::default();
        let (prompt_ids, embeds) = self.prepare(request, &mut timings)?;
        let mut conts = Vec::with_capacity(request.choices.len());
        for choice in &request.choices {
            let enc = self
                .text
                .tokenizer()
                .encode(choice.as_str(), false)
                .map_err(|e| anyhow::anyhow!("tokenizing answer {choice:?}: {e}"))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.is_empty() {
                bail!("answer choice {choice:?} tokenises to nothing");
            }
            ids.extend(self.end_of_turn);
            conts.push(ids);
        }
        let longest = conts.iter().map(Vec::len).max().unwrap_or(0);
        if prompt_ids.len() + longest > self.context_length() {
            bail!(
                "the prompt ({} tokens) plus the longest answer ({longest} tokens) exceed the \
                 model's context of {} tokens (max_position_embeddings in config.json)",
                prompt_ids.len(),
                self.context_length()
            );
        }
        Ok(Some(generate::continuation_logprobs(
            &self.net, &embeds, &conts,
        )?))
    }
}
