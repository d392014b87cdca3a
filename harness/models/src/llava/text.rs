//! The text side of LLaVA-1.5: the checkpoint's own chat template (llava-hf ships it in
//! chat_template.json) rendered with minijinja as transformers renders it, `<image>` expansion
//! as LlavaProcessor does it, and tokenisation with the checkpoint's tokenizer.json (its
//! post-processor adds the BOS, as the processor's tokenizer call does).

use crate::checkpoint::EncodeChecked;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::chat_template::{
    find_chat_template, render_chat_template, user_messages, TemplateSource,
};

/// Removes transformers' `{% generation %}` / `{% endgeneration %}` tags, which only mark the
/// assistant's span for `return_assistant_tokens_mask` and render to nothing; minijinja has
/// no such tag, so without this the llava-1.5 template would not compile.
pub fn strip_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{%") {
        // Search past the opening `{%`: in `{%}` the `%` would otherwise close the tag too.
        let Some(len) = rest[start + 2..].find("%}").map(|n| n + 2) else {
            break;
        };
        let tag = &rest[start + 2..start + len];
        let word = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if word != "generation" && word != "endgeneration" {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Prompt rendering and tokenisation for one LLaVA checkpoint.
pub struct LlavaText {
    tokenizer: Tokenizer,
    template: String,
    template_source: TemplateSource,
    template_tokens: Vec<(String, String)>,
    pub image_token: String,
    pub image_token_id: u32,
    pub tokens_per_image: usize,
}

fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl LlavaText {
    pub fn from_dir(dir: &Path, image_token: &str, tokens_per_image: usize) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            bail!(
                "{} is not a complete checkpoint: tokenizer.json is missing",
                dir.display()
            );
        }
        let tokenizer = crate::checkpoint::load_tokenizer(&tok_path)?;
        let (template, template_source) = find_chat_template(dir)?;
        let template = strip_generation_tags(&template);
        let image_token_id = tokenizer.token_to_id(image_token).ok_or_else(|| {
            anyhow!(
                "{}: the image token {image_token:?} is not in the vocabulary",
                tok_path.display()
            )
        })?;
        let mut template_tokens = Vec::new();
        let tc_path = dir.join("tokenizer_config.json");
        if tc_path.is_file() {
            let text = std::fs::read_to_string(&tc_path)
                .map_err(|e| anyhow!("cannot read {}: {e}", tc_path.display()))?;
            let tc: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("corrupt {}: {e}", tc_path.display()))?;
            for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                if let Some(s) = tc.get(key).and_then(token_string) {
                    template_tokens.push((key.to_owned(), s));
                }
            }
        }
        Ok(Self {
            tokenizer,
            template,
            template_source,
            template_tokens,
            image_token: image_token.to_string(),
            image_token_id,
            tokens_per_image,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn template_source(&self) -> &TemplateSource {
        &self.template_source
    }

    /// Renders the chat template over `messages` (`[{role, content: [{type, text?}]}]`).
    pub fn render(&self, messages: &Value, add_generation_prompt: bool) -> Result<String> {
        render_chat_template(
            &self.template,
            &self.template_source,
            &self.template_tokens,
            messages,
            add_generation_prompt,
        )
    }

    /// Repeats each `<image>` the template emitted `tokens_per_image` times, as LlavaProcessor
    /// does; the number of placeholders must equal the number of images.
    pub fn expand(&self, rendered: &str, n_images: usize) -> Result<String> {
        let found = rendered.matches(self.image_token.as_str()).count();
        if found != n_images {
            bail!(
                "the prompt has {found} image placeholder(s) {:?} but {n_images} image(s) were given",
                self.image_token
            );
        }
        Ok(rendered.replace(
            self.image_token.as_str(),
            &self.image_token.repeat(self.tokens_per_image),
        ))
    }

    /// Tokenises like the processor's tokenizer call (special tokens added: the BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_checked(text, true)
            .map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One user turn with `n_images` images then `user_text`: (rendered, expanded, ids).
    pub fn build(&self, n_images: usize, user_text: &str) -> Result<(String, String, Vec<u32>)> {
        let messages = user_messages(n_images, user_text);
        let rendered = self.render(&messages, true)?;
        let expanded = self.expand(&rendered, n_images)?;
        let ids = self.encode(&expanded)?;
        Ok((rendered, expanded, ids))
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("decoding tokens: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::strip_generation_tags;

    #[test]
    fn generation_tags_are_removed_and_others_kept() {
        let t = "{% for m in x %}{% generation %}{{ m }}{%- endgeneration -%}{% endfor %}";
        assert_eq!(
            strip_generation_tags(t),
            "{% for m in x %}{{ m }}{% endfor %}"
        );
    }
}
