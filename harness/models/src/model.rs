//! The one inference interface every model implements.

use std::ops::ControlFlow;
use std::sync::Arc;

use image::DynamicImage;
use serde::{Deserialize, Serialize};

/// One question put to a model: the images come before the text in a single user turn.
#[derive(Debug, Clone)]
pub struct Request {
    /// Decoded images in prompt order (zero, one or several).
    pub images: Vec<Arc<DynamicImage>>,
    /// The user text, already rendered from the task's template. Identical for every model.
    pub prompt: String,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Generation stops at the first of these strings (it is not part of the output).
    pub stop: Vec<String>,
    /// The answers that count, e.g. `["A","B","C","D"]` or the label names. Generative models
    /// ignore them; likelihood scoring and the trivial baselines use them.
    pub choices: Vec<String>,
    /// The text behind each choice (option text for lettered questions; equal to `choices`
    /// otherwise). Same length as `choices`.
    pub choice_texts: Vec<String>,
    /// Per-item seed, derived from the run seed and the item id so that a resumed or sharded
    /// run draws exactly what an uninterrupted one would.
    pub seed: u64,
}

/// Wall time of each stage of one item, in milliseconds. Every field is optional when read
/// (0 when absent): predictions written by other tools need not time anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StepTimings {
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    /// Time to first token.
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Wall time of the whole model call, measured by the caller around it (models leave 0).
    #[serde(default)]
    pub e2e_ms: f64,
    /// Caller's wall time attributed to this item: since the previous item finished (image
    /// decoding, scoring and writing included). Models leave 0.
    #[serde(default)]
    pub wall_ms: f64,
    /// Set by the caller on the first items of a run, which telemetry leaves out as warm-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
}

impl StepTimings {
    /// Sum of the four stages the model reports (not `e2e_ms`).
    pub fn total_ms(&self) -> f64 {
        self.preprocess_ms + self.vision_ms + self.prefill_ms + self.decode_ms
    }
}

/// What a model said.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Generation {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    /// Per generated step, the five best `(token_id, logprob)` pairs (empty when not available).
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub timings: StepTimings,
}

impl Generation {
    pub fn output_tokens(&self) -> usize {
        self.token_ids.len()
    }
}

/// Facts about a loaded model that a run records in its manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    /// `"baseline"`, `"internvl"`, ...
    pub kind: String,
    pub device: String,
    pub dtype: String,
    /// sha256 of the weights index (or of the single weights file); `None` for weightless models.
    pub weights_sha256: Option<String>,
    /// Bytes of parameters held in memory.
    pub weight_bytes: u64,
}

/// Traffic of a client of a served model.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Traffic {
    /// HTTP requests sent, retries included.
    pub http_requests: u64,
    /// Answers taken from the response cache instead of the server.
    pub cache_hits: u64,
}

/// One identical inference path for every model.
pub trait Model: Send {
    fn info(&self) -> ModelInfo;

    /// Greedy (deterministic) generation.
    fn generate(&mut self, request: &Request) -> anyhow::Result<Generation>;

    /// Greedy generation for several requests at once. The outputs (text, tokens, logprobs)
    /// must equal calling [`Model::generate`] on each request in turn; models that batch
    /// override this for throughput. Each generation's `timings` are those of the call that
    /// produced it (a batched call reports the batch's stage times on every member). One
    /// result per request, in order; an `Err` that is a [`ModelUnavailable`] stops the run.
    fn generate_batch(&mut self, requests: &[Request]) -> Vec<anyhow::Result<Generation>> {
        requests.iter().map(|r| self.generate(r)).collect()
    }

    /// Greedy generation that hands out the answer's text as it is decoded. `on_text` receives
    /// successive pieces whose concatenation is, byte for byte, the returned
    /// [`Generation::text`]; the generation equals [`Model::generate`]'s. A piece may be empty
    /// (a step that released no text), so that the caller can stop early. Returning
    /// [`ControlFlow::Break`] from `on_text` stops decoding early (the reader went away): the
    /// result then holds what was decoded so far and no further piece is handed out. The
    /// default runs [`Model::generate`] and hands out the whole text once; models that decode
    /// token by token override it (see [`crate::stream::TextStream`]).
    fn generate_streaming(
        &mut self,
        request: &Request,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> anyhow::Result<Generation> {
        let g = self.generate(request)?;
        if !g.text.is_empty() {
            let _ = on_text(&g.text);
        }
        Ok(g)
    }

    /// Forget whatever the model remembers between calls (image features, text embeddings),
    /// so that the next call costs what it would in a fresh process. Answers never depend on
    /// these caches; `faceval bench` calls this between repeats so each repeat times a cold run.
    fn clear_caches(&mut self) {}

    /// Bytes the model may keep of image features between calls (0: none). Models without
    /// such a cache ignore it.
    fn set_feature_cache_bytes(&mut self, bytes: u64) {
        let _ = bytes;
    }

    /// What a served model's client sent and reused so far (`None` for local models); a
    /// run records it in its manifest.
    fn traffic(&self) -> Option<Traffic> {
        None
    }

    /// Where the model's prompt format comes from: a chat-template file or field, or a
    /// built-in conversation template an original checkpoint names (`None` where prompts are
    /// not chat-templated: the floors, zero-shot scoring, served models). A run records it in
    /// its manifest's notes as `prompt.template_source`.
    fn prompt_template_source(&self) -> Option<String> {
        None
    }

    /// Log-likelihood of each entry of `request.choices` as the assistant's answer, when the
    /// model can compute it. `Ok(None)` means "not supported": the caller falls back to
    /// generation with extraction.
    fn choice_logprobs(&mut self, request: &Request) -> anyhow::Result<Option<Vec<f64>>> {
        let _ = request;
        Ok(None)
    }

    /// The text of one token id, for showing token-level log-probabilities; `None` when the
    /// model has no tokenizer to ask.
    fn token_text(&self, id: u32) -> Option<String> {
        let _ = id;
        None
    }

    /// Why `generation` ended, as OpenAI's `finish_reason` says it: `"length"` when the
    /// answer ran into `max_tokens` (or the end of the model's context), else `"stop"`. The
    /// default counts tokens; models that know their stop tokens and context override it.
    fn finish_reason(&self, max_tokens: usize, generation: &Generation) -> &'static str {
        let n = generation.token_ids.len();
        if n >= max_tokens && n > 0 {
            "length"
        } else {
            "stop"
        }
    }
}

/// An error meaning the model cannot answer anything now (its server is gone or keeps
/// failing), as opposed to one item failing. A runner stops the run on it instead of writing
/// one item error per remaining question, so that rerunning resumes where it stopped.
#[derive(Debug, Clone)]
pub struct ModelUnavailable(pub String);

impl std::fmt::Display for ModelUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelUnavailable {}

/// Whether `err` (or anything in its chain) is a [`ModelUnavailable`].
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<ModelUnavailable>())
}
