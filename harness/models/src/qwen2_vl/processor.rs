//! The text side of Qwen2-VL: the checkpoint's own chat template (shared renderer), each
//! `<|image_pad|>` expanded to `t·h·w / merge²` copies as `Qwen2VLProcessor` does, tokenisation
//! with the checkpoint's `tokenizer.json`, and the M-RoPE position ids of
//! `Qwen2VLModel.get_rope_index`.

use crate::checkpoint::EncodeChecked;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::chat_template::{
    find_chat_template, render_chat_template, user_messages, TemplateSource,
};
use crate::checkpoint::read_json_if_present;

pub struct QwenText {
    tokenizer: Tokenizer,
    template: String,
    template_source: TemplateSource,
    template_tokens: Vec<(String, String)>,
    pub image_token: String,
    pub image_token_id: u32,
}

impl QwenText {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = crate::checkpoint::load_tokenizer(&tok_path)?;
        let (template, template_source) = find_chat_template(dir)?;
        let tc = read_json_if_present(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let mut template_tokens = Vec::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            let s = match tc.get(key) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => {
                    o.get("content").and_then(Value::as_str).map(str::to_owned)
                }
                _ => None,
            };
            if let Some(s) = s {
                template_tokens.push((key.to_owned(), s));
            }
        }
        let image_token = tc
            .get("image_token")
            .and_then(Value::as_str)
            .unwrap_or("<|image_pad|>")
            .to_owned();
        let image_token_id = tokenizer.token_to_id(&image_token).ok_or_else(|| {
            anyhow!(
                "{}: the image token {image_token:?} is not in the vocabulary",
                tok_path.display()
            )
        })?;
        Ok(Self {
            tokenizer,
            template,
            template_source,
            template_tokens,
            image_token,
            image_token_id,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn template_source(&self) -> &TemplateSource {
        &self.template_source
    }

    /// Renders one user turn (every image first, then the text) with the generation prompt.
    pub fn render(&self, n_images: usize, user_text: &str) -> Result<String> {
        render_chat_template(
            &self.template,
            &self.template_source,
            &self.template_tokens,
            &user_messages(n_images, user_text),
            true,
        )
    }

    /// Replaces the i-th image token with `tokens_per_image[i]` copies.
    pub fn expand(&self, rendered: &str, tokens_per_image: &[usize]) -> Result<String> {
        let parts: Vec<&str> = rendered.split(self.image_token.as_str()).collect();
        if parts.len() - 1 != tokens_per_image.len() {
            bail!(
                "the prompt has {} image placeholder(s) {:?} but {} image(s) were given",
                parts.len() - 1,
                self.image_token,
                tokens_per_image.len()
            );
        }
        let mut out = String::from(parts[0]);
        for (n, rest) in tokens_per_image.iter().zip(&parts[1..]) {
            for _ in 0..*n {
                out.push_str(&self.image_token);
            }
            out.push_str(rest);
        }
        Ok(out)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode_checked(text, true)
            .map_err(|e| anyhow!("tokenizing the prompt: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Rendered, expanded and tokenised prompt: (expanded text, ids).
    pub fn build(&self, tokens_per_image: &[usize], user_text: &str) -> Result<(String, Vec<u32>)> {
        let rendered = self.render(tokens_per_image.len(), user_text)?;
        let expanded = self.expand(&rendered, tokens_per_image)?;
        let ids = self.encode(&expanded)?;
        Ok((expanded, ids))
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("decoding tokens: {e}"))
    }
}

/// M-RoPE positions `[t][3]` of a prompt, and the delta that continues them after it (next
/// position = tokens so far + delta). Text tokens take `p, p, p`; each run of image tokens takes
/// the next grid `(t, h, w)` (in patches, merged by `merge`) and positions
/// `p + (ti, y, x)`; the text after it continues from `p + max(h, w) / merge`.
pub fn rope_positions(
    ids: &[u32],
    image_token_id: u32,
    grids: &[[usize; 3]],
    merge: usize,
) -> Result<(Vec<[i64; 3]>, i64)> {
    let mut out = Vec::with_capacity(ids.len());
    let mut grids_left = grids.iter();
    let mut p: i64 = 0;
    let mut i = 0;
    while i < ids.len() {
        if ids[i] != image_token_id {
            out.push([p, p, p]);
            p += 1;
            i += 1;
            continue;
        }
        let Some(&[t, h, w]) = grids_left.next() else {
            bail!(
                "the prompt has more image-token runs than images ({})",
                grids.len()
            );
        };
        let (lh, lw) = (h / merge, w / merge);
        let n = t * lh * lw;
        if i + n > ids.len() || ids[i..i + n].iter().any(|&x| x != image_token_id) {
            bail!("an image of {t}x{lh}x{lw} tokens does not match its run of image tokens in the prompt");
        }
        for ti in 0..t {
            for y in 0..lh {
                for x in 0..lw {
                    out.push([p + ti as i64, p + y as i64, p + x as i64]);
                }
            }
        }
        p += lh.max(lw) as i64;
        i += n;
    }
    if grids_left.next().is_some() {
        bail!(
            "{} images but fewer image-token runs in the prompt",
            grids.len()
        );
    }
    let max = out
        .iter()
        .flat_map(|x| x.iter().copied())
        .max()
        .unwrap_or(-1);
    Ok((out, max + 1 - ids.len() as i64))
}
