//! The text side of InternVL: the checkpoint's own chat template rendered with minijinja the
//! way transformers renders it, `<IMG_CONTEXT>` expansion exactly as `InternVLProcessor` does
//! it, tokenisation with the checkpoint's `tokenizer.json`, stop tokens and decoding.

use crate::checkpoint::EncodeChecked;
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokenizers::Tokenizer;

pub use crate::chat_template::{
    find_chat_template, locate_chat_template, render_chat_template, user_messages, TemplateSource,
};
use crate::checkpoint::read_json_if_present as read_json;
use crate::conversation::ConversationTemplate;

/// How a checkpoint's prompts are written: its Jinja chat template, or the conversation
/// template an original InternVL checkpoint names instead.
enum PromptFormat {
    Jinja(String),
    Conversation(&'static ConversationTemplate),
}

/// The chat template if a file carries one, else the conversation template `config.json`
/// names (`"template": "internvl2_5"`), else an error saying where it looked.
fn find_prompt_format(dir: &Path) -> Result<(PromptFormat, TemplateSource)> {
    if let Some((t, source)) = locate_chat_template(dir)? {
        return Ok((PromptFormat::Jinja(t), source));
    }
    let config = dir.join("config.json");
    let name = read_json(&config)?
        .as_ref()
        .and_then(|c| c.get("template"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match name {
        Some(name) => {
            let t = ConversationTemplate::named(&name)
                .with_context(|| format!("{}: `template`", config.display()))?;
            Ok((
                PromptFormat::Conversation(t),
                TemplateSource::Conversation { config, name },
            ))
        }
        None => bail!(
            "{}: no chat template (looked for chat_template.jinja, chat_template.json, a `chat_template` field in processor_config.json / tokenizer_config.json, and a conversation `template` in config.json)",
            dir.display()
        ),
    }
}

/// A special token in tokenizer_config.json: a string or an AddedToken object.
fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn eos_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Prompt rendering and tokenisation for one InternVL checkpoint.
pub struct InternVlText {
    tokenizer: Tokenizer,
    format: PromptFormat,
    template_source: TemplateSource,
    /// Special-token strings transformers passes to the template (`bos_token`, `eos_token`, ...).
    template_tokens: Vec<(String, String)>,
    pub start_image_token: String,
    pub end_image_token: String,
    pub context_image_token: String,
    pub image_token_id: u32,
    /// `<IMG_CONTEXT>` tokens per tile.
    pub image_seq_length: usize,
    stop_token_ids: Vec<u32>,
}

impl InternVlText {
    /// Loads `tokenizer.json`, the chat template and the special tokens of a checkpoint folder.
    /// `image_seq_length` comes from the processor config (see
    /// [`super::preprocess::ProcessorConfig`]).
    pub fn from_dir(dir: &Path, image_seq_length: usize) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = crate::checkpoint::load_tokenizer(&tok_path)?;
        let (format, template_source) = find_prompt_format(dir)?;

        let tc_path = dir.join("tokenizer_config.json");
        let tc = read_json(&tc_path)?.unwrap_or(Value::Null);
        // transformers 5.x writes the image tokens as top-level keys; 4.x under
        // `extra_special_tokens`.
        let extra = tc
            .get("extra_special_tokens")
            .cloned()
            .unwrap_or(Value::Null);
        let lookup = |key: &str, default: &str| -> String {
            tc.get(key)
                .and_then(token_string)
                .or_else(|| extra.get(key).and_then(token_string))
                .unwrap_or_else(|| default.to_owned())
        };
        let start_image_token = lookup("start_image_token", "<img>");
        let end_image_token = lookup("end_image_token", "</img>");
        let context_image_token = lookup("context_image_token", "<IMG_CONTEXT>");
        let id_of = |t: &str| -> Result<u32> {
            tokenizer.token_to_id(t).ok_or_else(|| {
                anyhow!(
                    "{}: token {t:?} is not in the vocabulary",
                    tok_path.display()
                )
            })
        };
        let image_token_id = id_of(&context_image_token)?;
        id_of(&start_image_token)?;
        id_of(&end_image_token)?;

        let mut template_tokens = Vec::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let Some(s) = tc.get(key).and_then(token_string) {
                template_tokens.push((key.to_owned(), s));
            }
        }

        // Stop tokens: generation_config's eos (int or list), else the model config's, plus
        // `<|im_end|>` (the ChatML turn end) when the vocabulary has it.
        let mut stops: BTreeSet<u32> = BTreeSet::new();
        if let Some(g) = read_json(&dir.join("generation_config.json"))? {
            stops.extend(eos_ids(g.get("eos_token_id")));
        }
        if stops.is_empty() {
            if let Some(c) = read_json(&dir.join("config.json"))? {
                for sub in ["text_config", "llm_config"] {
                    stops.extend(eos_ids(c.get(sub).and_then(|t| t.get("eos_token_id"))));
                }
                stops.extend(eos_ids(c.get("eos_token_id")));
            }
        }
        if let Some(id) = tokenizer.token_to_id("<|im_end|>") {
            stops.insert(id);
        }
        // chat() stops at its template's separator token.
        if let PromptFormat::Conversation(t) = &format {
            stops.insert(id_of(t.stop_token())?);
        }
        if let Some(eos) = tc.get("eos_token").and_then(token_string) {
            if let Some(id) = tokenizer.token_to_id(&eos) {
                stops.insert(id);
            }
        }

        Ok(Self {
            tokenizer,
            format,
            template_source,
            template_tokens,
            start_image_token,
            end_image_token,
            context_image_token,
            image_token_id,
            image_seq_length,
            stop_token_ids: stops.into_iter().collect(),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template_source(&self) -> &TemplateSource {
        &self.template_source
    }

    /// Token ids that end generation.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_token_ids
    }

    /// Renders the chat template over `messages` (a JSON list of `{role, content}` where
    /// content is a string or a list of `{type: "image"}` / `{type: "text", text}` parts).
    pub fn render(&self, messages: &Value, add_generation_prompt: bool) -> Result<String> {
        match &self.format {
            PromptFormat::Jinja(template) => render_chat_template(
                template,
                &self.template_source,
                &self.template_tokens,
                messages,
                add_generation_prompt,
            ),
            PromptFormat::Conversation(t) => {
                t.render(messages, add_generation_prompt, &self.context_image_token)
            }
        }
    }

    /// Replaces the i-th `<IMG_CONTEXT>` the template emitted with `<img>` +
    /// `<IMG_CONTEXT>` × (image_seq_length × tiles[i]) + `</img>`, as InternVLProcessor does.
    pub fn expand_image_tokens(&self, rendered: &str, tiles_per_image: &[usize]) -> Result<String> {
        let parts: Vec<&str> = rendered.split(self.context_image_token.as_str()).collect();
        let found = parts.len() - 1;
        if found != tiles_per_image.len() {
            bail!(
                "the prompt has {found} image placeholder(s) {:?} but {} image(s) were given",
                self.context_image_token,
                tiles_per_image.len()
            );
        }
        let extra: usize = tiles_per_image
            .iter()
            .map(|t| t * self.image_seq_length)
            .sum();
        let mut out =
            String::with_capacity(rendered.len() + extra * self.context_image_token.len() + 64);
        out.push_str(parts[0]);
        for (tiles, rest) in tiles_per_image.iter().zip(&parts[1..]) {
            out.push_str(&self.start_image_token);
            for _ in 0..tiles * self.image_seq_length {
                out.push_str(&self.context_image_token);
            }
            out.push_str(&self.end_image_token);
            out.push_str(rest);
        }
        Ok(out)
    }

    /// Tokenises text as the processor does (the tokenizer's own post-processing included).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_checked(text, true)
            .map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Renders, expands and tokenises full chat `messages`; returns the expanded prompt text
    /// and its ids.
    pub fn build_messages(
        &self,
        messages: &Value,
        tiles_per_image: &[usize],
    ) -> Result<(String, Vec<u32>)> {
        let rendered = self.render(messages, true)?;
        let expanded = self.expand_image_tokens(&rendered, tiles_per_image)?;
        let ids = self.encode(&expanded)?;
        Ok((expanded, ids))
    }

    /// One user turn: every image first (one `{type: image}` part each), then the text — the
    /// shape of FaceLLM's published inference.
    pub fn build(&self, tiles_per_image: &[usize], user_text: &str) -> Result<(String, Vec<u32>)> {
        self.build_messages(
            &user_messages(tiles_per_image.len(), user_text),
            tiles_per_image,
        )
    }

    /// Decodes generated ids; special tokens are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("decoding tokens: {e}"))
    }
}
