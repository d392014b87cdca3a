//! [`LlavaModel`]: LLaVA-1.5 behind the crate's [`Model`] trait.
//!
//! One request becomes one user turn with every image first and then the prompt text, rendered
//! with the checkpoint's chat template, images preprocessed as CLIPImageProcessor does, then
//! greedy decoding or answer scoring. Stage timings go into [`StepTimings`].

use crate::checkpoint::EncodeChecked;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::preprocess::LlavaProcessorConfig;
use super::text::LlavaText;
use super::Llava;
use crate::model::{Generation, Model, ModelInfo, Request, StepTimings};

/// A loaded LLaVA checkpoint with its tokenizer, template and image processor.
pub struct LlavaModel {
    name: String,
    net: Llava,
    text: LlavaText,
    processor: LlavaProcessorConfig,
    stop_token_ids: Vec<u32>,
    /// Appended to each scored answer (the turn's `</s>`), so that an answer which is a prefix
    /// of another ("young" / "young adult") is scored as a complete reply.
    end_of_turn: Option<u32>,
    sha256: OnceLock<Option<String>>,
}

impl LlavaModel {
    /// Loads `reference` — a folder, or `hf://Org/Name[@rev]` from the local HF cache.
    pub fn load(reference: &str, device: &Device, dtype: DType) -> Result<Self> {
        let dir = crate::hub::resolve_model_path(reference)?;
        Self::load_dir(&dir, reference.to_string(), device, dtype)
    }

    pub fn load_dir(dir: &Path, name: String, device: &Device, dtype: DType) -> Result<Self> {
        let net = Llava::load(dir, device, dtype)?;
        let processor = LlavaProcessorConfig::from_dir(dir, net.config())?;
        let text = LlavaText::from_dir(dir, &processor.image_token, processor.tokens_per_image())?;
        if text.image_token_id != net.config().image_token_id {
            bail!(
                "{}: the tokenizer's {} is id {} but config.json's image_token_index is {}",
                dir.display(),
                text.image_token,
                text.image_token_id,
                net.config().image_token_id
            );
        }
        // The model may pad its vocabulary (llava-1.5-7b-hf: 32064 rows for 32002 tokens), but
        // every token the tokenizer can produce needs a row.
        let tok_vocab = text.tokenizer().get_vocab_size(true);
        if tok_vocab > net.config().text.vocab_size {
            bail!(
                "{}: tokenizer.json has {tok_vocab} tokens but config.json's text vocab_size is {}",
                dir.display(),
                net.config().text.vocab_size
            );
        }
        let (stop_token_ids, end_of_turn) =
            crate::checkpoint::stop_tokens(net.eos_token_ids(), text.tokenizer(), "</s>");
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

    pub fn network(&self) -> &Llava {
        &self.net
    }
    pub fn text(&self) -> &LlavaText {
        &self.text
    }
    pub fn processor(&self) -> &LlavaProcessorConfig {
        &self.processor
    }
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_token_ids
    }

    /// Prompt ids and embeddings (image features spliced in) for a request.
    fn prepare(&self, request: &Request, timings: &mut StepTimings) -> Result<(Vec<u32>, Tensor)> {
        let t0 = Instant::now();
        let images: Vec<&image::DynamicImage> = request.images.iter().map(|i| i.as_ref()).collect();
        let pixels = if images.is_empty() {
            None
        } else {
            Some(self.processor.preprocess(&images, self.net.device())?)
        };
        let (_, _, ids) = self.text.build(images.len(), &request.prompt)?;
        let context = self.net.context_length();
        if ids.len() > context {
            bail!(
                "the prompt is {} tokens long ({} of them image tokens) but the model's context \
                 is {context} tokens (max_position_embeddings in config.json)",
                ids.len(),
                ids.iter()
                    .filter(|&&id| id == self.text.image_token_id)
                    .count()
            );
        }
        timings.preprocess_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let feats = pixels
            .as_ref()
            .map(|p| self.net.image_features(p))
            .transpose()?;
        let embeds = self.net.input_embeds(&ids, feats.as_ref())?;
        // GPU work is asynchronous: wait, or vision time would be charged to prefill.
        self.net.device().synchronize()?;
        timings.vision_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok((ids, embeds))
    }
}

impl Model for LlavaModel {
    fn prompt_template_source(&self) -> Option<String> {
        Some(self.text.template_source().to_string())
    }

    fn info(&self) -> ModelInfo {
        crate::checkpoint::CheckpointInfo {
            name: &self.name,
            kind: "llava",
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
        let (ids, embeds) = self.prepare(request, &mut timings)?;
        let max_new = request
            .max_new_tokens
            .min(self.net.context_length().saturating_sub(ids.len()));
        let stops: Vec<&str> = request
            .stop
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let text = &self.text;
        let out = self
            .net
            .greedy(&embeds, max_new, &self.stop_token_ids, false, |toks| {
                !stops.is_empty()
                    && text
                        .decode(toks, true)
                        .map(|s| stops.iter().any(|st| s.contains(st)))
                        .unwrap_or(false)
            })
            .context("LLaVA generation")?;
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
        if prompt_ids.len() + longest > self.net.context_length() {
            bail!(
                "the prompt ({} tokens) plus the longest answer ({longest} tokens) exceed the \
                 model's context of {} tokens (max_position_embeddings in config.json)",
                prompt_ids.len(),
                self.net.context_length()
            );
        }
        Ok(Some(self.net.continuation_logprobs(&embeds, &conts)?))
    }
}
