//! [`InternVlModel`]: FaceLLM / InternVL3 behind the crate's [`Model`] trait.
//!
//! One request becomes one user turn with every image first and then the prompt text, rendered
//! with the checkpoint's own chat template (`text.rs`), images tiled and normalised as
//! transformers' processor does (`preprocess.rs`), then greedy decoding or answer scoring
//! (`generate.rs`). Stage timings go into [`StepTimings`].
//!
//! Image features (the projector's output, spliced into the prompt) are kept in an LRU
//! cache keyed by the sha256 of the decoded image and of everything that shapes its
//! tiles, so a face asked about several times (FairFace age, gender, race) is tiled and encoded
//! once. Each image is encoded on its own, hit or miss, so a cached feature is bit-identical
//! to a fresh one. [`Model::generate_batch`] decodes several requests together
//! ([`generate::greedy_batch`]) with the tokens and text of one request at a time (logits
//! equal to a few f32 ulps, see `generate.rs`).

use crate::checkpoint::EncodeChecked;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::DynamicImage;
use sha2::{Digest, Sha256};

use super::generate::{self, DecodeOptions};
use super::preprocess::ProcessorConfig;
use super::text::InternVlText;
use super::{dtype_name, InternVl};
use crate::model::{Generation, Model, ModelInfo, Request, StepTimings};
use crate::stream::TextStream;

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
    features: FeatureCache,
}

/// Default budget of the image-feature cache: 1 GiB (about 1100 InternVL3-1B tiles in f32).
pub const DEFAULT_FEATURE_CACHE_BYTES: u64 = 1 << 30;

/// Prompt tokens packed into one prefill pass of [`Model::generate_batch`]; longer batches are
/// prefilled in several passes (then decoded together), which bounds activation memory.
pub const BATCH_PREFILL_TOKENS: usize = 16_384;

/// Counters of the image-feature cache since load (or the last [`InternVlModel::set_feature_cache_bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureCacheStats {
    /// Images whose features came from the cache.
    pub hits: u64,
    /// Images that were preprocessed and encoded.
    pub misses: u64,
    /// Entries dropped to stay within the budget.
    pub evictions: u64,
    pub entries: usize,
    /// Bytes of feature tensors held.
    pub bytes: u64,
    /// The budget; 0 means the cache is off.
    pub capacity_bytes: u64,
}

/// One cached image: its tile count and features `[tiles, image_seq_length, hidden]`.
struct CachedFeatures {
    tiles: usize,
    features: Tensor,
    bytes: u64,
    last_used: u64,
}

/// LRU of image features bounded by bytes. Eviction scans for the oldest entry: a cache of
/// a few thousand entries makes that negligible next to one vision forward, and saves a
/// linked-list LRU dependency.
struct FeatureCache {
    entries: HashMap<[u8; 32], CachedFeatures>,
    clock: u64,
    stats: FeatureCacheStats,
}

impl FeatureCache {
    fn new(capacity_bytes: u64) -> Self {
        Self {
            entries: HashMap::new(),
            clock: 0,
            stats: FeatureCacheStats {
                capacity_bytes,
                ..Default::default()
            },
        }
    }

    fn get(&mut self, key: &[u8; 32]) -> Option<(usize, Tensor)> {
        self.clock += 1;
        let e = self.entries.get_mut(key)?;
        e.last_used = self.clock;
        Some((e.tiles, e.features.clone()))
    }

    fn insert(&mut self, key: [u8; 32], tiles: usize, features: &Tensor) {
        let bytes = (features.elem_count() * features.dtype().size_in_bytes()) as u64;
        let cap = self.stats.capacity_bytes;
        if bytes > cap {
            return;
        }
        while self.stats.bytes + bytes > cap {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.stats.bytes -= e.bytes;
                self.stats.evictions += 1;
            }
        }
        self.clock += 1;
        let entry = CachedFeatures {
            tiles,
            features: features.clone(),
            bytes,
            last_used: self.clock,
        };
        if let Some(old) = self.entries.insert(key, entry) {
            self.stats.bytes -= old.bytes;
        }
        self.stats.bytes += bytes;
        self.stats.entries = self.entries.len();
    }

    fn stats(&self) -> FeatureCacheStats {
        FeatureCacheStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }
}

/// A request made ready for the decoder.
struct Prepared {
    ids: Vec<u32>,
    embeds: Tensor,
    timings: StepTimings,
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
            features: FeatureCache::new(DEFAULT_FEATURE_CACHE_BYTES),
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

    /// Sets the image-feature cache budget in bytes (0 turns the cache off), emptying it and
    /// resetting its counters.
    pub fn set_feature_cache_bytes(&mut self, bytes: u64) {
        self.features = FeatureCache::new(bytes);
    }

    /// Hits, misses and size of the image-feature cache.
    pub fn feature_cache_stats(&self) -> FeatureCacheStats {
        self.features.stats()
    }

    /// Cache key of an image: sha256 over its decoded RGB pixels and dimensions (what the
    /// processor sees: alpha is dropped there too), the processor settings that shape its
    /// tiles, and the dtype and device the features are computed in.
    fn feature_key(&self, image: &DynamicImage) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"faceval internvl image features v1\0");
        h.update(format!("{:?}", self.processor).as_bytes());
        h.update(dtype_name(self.net.dtype()).as_bytes());
        h.update(format!("{:?}", self.net.device().location()).as_bytes());
        let owned;
        let rgb = match image.as_rgb8() {
            Some(rgb) => rgb,
            None => {
                owned = image.to_rgb8();
                &owned
            }
        };
        h.update(rgb.width().to_le_bytes());
        h.update(rgb.height().to_le_bytes());
        h.update(rgb.as_raw());
        h.finalize().into()
    }

    /// Prompt ids and prompt embeddings (image features spliced in) for a request. Images
    /// found in the feature cache skip preprocessing and the vision tower.
    fn prepare(&mut self, request: &Request) -> Result<Prepared> {
        let mut timings = StepTimings::default();
        let t0 = Instant::now();
        let use_cache = self.features.stats.capacity_bytes > 0;
        // Per image: its key and either cached features or its preprocessed tiles.
        let mut parts = Vec::with_capacity(request.images.len());
        let mut tiles = Vec::with_capacity(request.images.len());
        for img in &request.images {
            let key = use_cache.then(|| self.feature_key(img));
            match key.as_ref().and_then(|k| self.features.get(k)) {
                Some((n, feats)) => {
                    self.features.stats.hits += 1;
                    tiles.push(n);
                    parts.push((key, Ok(feats)));
                }
                None => {
                    self.features.stats.misses += 1;
                    let px = self.processor.preprocess(&[img.as_ref()])?;
                    tiles.push(px.num_tiles());
                    parts.push((key, Err(px)));
                }
            }
        }
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
        // Each image through the vision tower on its own, so that its features do not depend on
        // which other images share the request (and a cached copy equals a fresh one).
        let mut feats = Vec::with_capacity(parts.len());
        for ((key, part), &n) in parts.into_iter().zip(&tiles) {
            let f = match part {
                Ok(f) => f,
                Err(px) => {
                    let f = self.net.image_features(&px.to_tensor(self.net.device())?)?;
                    if let Some(key) = key {
                        self.features.insert(key, n, &f);
                    }
                    f
                }
            };
            feats.push(f);
        }
        let feats = match feats.len() {
            0 => None,
            1 => feats.pop(),
            _ => Some(Tensor::cat(&feats, 0)?),
        };
        let embeds = self.net.input_embeds(&ids, feats.as_ref())?;
        // GPU work is asynchronous: wait for it, or vision time would be charged to prefill.
        self.net.device().synchronize()?;
        timings.vision_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(Prepared {
            ids,
            embeds,
            timings,
        })
    }

    /// Decoding options for a prompt of `prompt_len` tokens.
    fn decode_options(&self, request: &Request, prompt_len: usize) -> DecodeOptions {
        DecodeOptions {
            // The answer stops where the context ends.
            max_new_tokens: request
                .max_new_tokens
                .min(self.context_length().saturating_sub(prompt_len)),
            stop_token_ids: self.stop_token_ids.clone(),
            top_logprobs: 5,
            keep_step_logits: false,
        }
    }

    /// Whether `tokens` so far contain one of the request's stop strings.
    fn hits_stop_string(&self, request: &Request, tokens: &[u32]) -> bool {
        let mut stops = request.stop.iter().filter(|s| !s.is_empty()).peekable();
        stops.peek().is_some()
            && self
                .text
                .decode(tokens, true)
                .map(|s| stops.any(|st| s.contains(st.as_str())))
                .unwrap_or(false)
    }

    /// The answer text (cut at the first stop string) and the generation record.
    fn finish(
        &self,
        request: &Request,
        prompt_tokens: usize,
        out: generate::Decoded,
        mut timings: StepTimings,
    ) -> Result<Generation> {
        timings.prefill_ms = out.prefill_ms;
        timings.decode_ms = out.decode_ms;
        let mut answer = self.text.decode(&out.tokens, true)?;
        if let Some(cut) = request
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| answer.find(s.as_str()))
            .min()
        {
            answer.truncate(cut);
        }
        Ok(Generation {
            text: answer,
            token_ids: out.tokens,
            prompt_tokens,
            top_logprobs: out.top_logprobs,
            timings,
        })
    }
}

impl Model for InternVlModel {
    fn prompt_template_source(&self) -> Option<String> {
        Some(self.text.template_source().to_string())
    }

    fn info(&self) -> ModelInfo {
        crate::checkpoint::CheckpointInfo {
            name: &self.name,
            kind: "internvl",
            files: self.net.files(),
            sha256: &self.sha256,
            device: self.net.device(),
            dtype: self.net.dtype(),
            weight_bytes: self.net.weight_bytes(),
        }
        .model_info()
    }

    fn clear_caches(&mut self) {
        let capacity = self.features.stats.capacity_bytes;
        self.features = FeatureCache::new(capacity);
    }

    fn set_feature_cache_bytes(&mut self, bytes: u64) {
        InternVlModel::set_feature_cache_bytes(self, bytes);
    }

    fn generate(&mut self, request: &Request) -> Result<Generation> {
        let p = self.prepare(request)?;
        let opts = self.decode_options(request, p.ids.len());
        let out = generate::greedy(&self.net, &p.embeds, &opts, |toks| {
            self.hits_stop_string(request, toks)
        })
        .context("InternVL generation")?;
        self.finish(request, p.ids.len(), out, p.timings)
    }

    /// [`Model::generate`] with the answer handed out as it is decoded: after each step the
    /// tokens so far are decoded once, for the stop strings and for [`TextStream`], which
    /// releases only text later tokens cannot change. Tokens, logprobs and text equal
    /// [`Model::generate`]'s (the same decoding loop and stop test).
    fn generate_streaming(
        &mut self,
        request: &Request,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let p = self.prepare(request)?;
        let opts = self.decode_options(request, p.ids.len());
        let mut stream = TextStream::new(&request.stop);
        let mut halted = false;
        let out = generate::greedy(&self.net, &p.embeds, &opts, |toks| {
            let Ok(text) = self.text.decode(toks, true) else {
                return false;
            };
            // Called every step, with an empty piece when nothing new is safe to release, so
            // that the caller can stop a generation nobody reads any more.
            let piece = stream.update(&text);
            if on_text(&piece).is_break() {
                halted = true;
                return true;
            }
            stream.hits_stop(&text)
        })
        .context("InternVL generation")?;
        let g = self.finish(request, p.ids.len(), out, p.timings)?;
        if !halted {
            let rest = stream.finish(&g.text)?;
            if !rest.is_empty() {
                let _ = on_text(&rest);
            }
        }
        Ok(g)
    }

    /// All requests prepared one by one (feature cache shared, so a repeated image is encoded
    /// once), then prefilled and decoded together by [`generate::greedy_batch`]. A request that
    /// fails to prepare (bad image, prompt past the context) gets its error and the others go
    /// on. Timings: the batch's preprocess and vision times (summed over requests) and its
    /// prefill and decode times, on every member.
    fn generate_batch(&mut self, requests: &[Request]) -> Vec<Result<Generation>> {
        let mut results: Vec<Option<Result<Generation>>> = Vec::with_capacity(requests.len());
        let mut ready: Vec<(usize, Prepared)> = vec![];
        let mut batch_timings = StepTimings::default();
        for (i, request) in requests.iter().enumerate() {
            match self.prepare(request) {
                Ok(p) => {
                    batch_timings.preprocess_ms += p.timings.preprocess_ms;
                    batch_timings.vision_ms += p.timings.vision_ms;
                    ready.push((i, p));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let embeds: Vec<Tensor> = ready.iter().map(|(_, p)| p.embeds.clone()).collect();
        let opts: Vec<DecodeOptions> = ready
            .iter()
            .map(|(i, p)| self.decode_options(&requests[*i], p.ids.len()))
            .collect();
        let decoded = generate::greedy_batch(
            &self.net,
            &embeds,
            &opts,
            BATCH_PREFILL_TOKENS,
            |row, toks| self.hits_stop_string(&requests[ready[row].0], toks),
        );
        match decoded {
            Ok(outs) => {
                for ((i, p), out) in ready.iter().zip(outs) {
                    let g = out.and_then(|out| {
                        self.finish(&requests[*i], p.ids.len(), out, batch_timings.clone())
                    });
                    results[*i] = Some(g.context("InternVL generation"));
                }
            }
            Err(e) => {
                // The batched pass failed as a whole (e.g. out of memory): each request is
                // retried alone, so one bad member cannot fail the others.
                let msg = format!("{e:#}");
                for (i, _) in &ready {
                    results[*i] = Some(
                        self.generate(&requests[*i])
                            .with_context(|| format!("after the batched pass failed: {msg}")),
                    );
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("request was not run"))))
            .collect()
    }

    fn choice_logprobs(&mut self, request: &Request) -> Result<Option<Vec<f64>>> {
        if request.choices.is_empty() {
            return Ok(Some(vec![]));
        }
        let Prepared {
            ids: prompt_ids,
            embeds,
            ..
        } = self.prepare(request)?;
        let mut conts = Vec::with_capacity(request.choices.len());
        for choice in &request.choices {
            let enc = self
                .text
                .tokenizer()
                .encode_checked(choice.as_str(), false)
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

    fn token_text(&self, id: u32) -> Option<String> {
        self.text().decode(&[id], false).ok()
    }

    fn finish_reason(&self, max_tokens: usize, g: &Generation) -> &'static str {
        if g.token_ids
            .last()
            .is_some_and(|t| self.stop_token_ids().contains(t))
        {
            return "stop";
        }
        // A stop string cut the text: the decoded tokens say more than the answer.
        let cut = self
            .text()
            .decode(&g.token_ids, true)
            .is_ok_and(|full| full != g.text);
        let cap = max_tokens.min(self.context_length().saturating_sub(g.prompt_tokens));
        if g.token_ids.len() >= cap && !cut {
            "length"
        } else {
            "stop"
        }
    }
}
