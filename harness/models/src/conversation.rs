//! The conversation templates original InternVL checkpoints name in `config.json`.
//!
//! An original `InternVLChatModel` checkpoint (`model_type: internvl_chat`) often ships no
//! Jinja chat template at all: its `chat()` builds the prompt in Python from a conversation
//! template named by `config.json`'s `template` field (`"internvl2_5"` for every InternVL2.5
//! and InternVL3 checkpoint). [`ConversationTemplate::render`] produces the prompt `chat()`
//! produces, for the templates below; the facts (system prompt, role prefixes, separator) are
//! those of the checkpoints' own `conversation.py`, and `tools/make_conversation_fixtures.py`
//! checks the result against that file and `chat()` itself.
//!
//! `chat()` puts `<image>\n` before the question when the question has no `<image>`; for
//! several images the model cards write one `<image>` per image. faceval asks every image
//! first, then the text, so each image part renders as the image placeholder and a newline:
//! the same text `chat()` builds for one image, and the model cards' layout for several.

use anyhow::{bail, Result};
use serde_json::Value;

/// How `get_prompt()` joins the turns. Every template InternVL checkpoints name uses MPT:
/// `system + sep`, then `role + message + sep` per turn, and a bare role for the open turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeparatorStyle {
    Mpt,
}

/// One named conversation template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTemplate {
    pub name: &'static str,
    /// `system_template` with `{system_message}` already substituted.
    pub system: &'static str,
    pub user_role: &'static str,
    pub assistant_role: &'static str,
    pub style: SeparatorStyle,
    pub sep: &'static str,
}

/// Every conversation template faceval renders, by the name `config.json` gives.
pub const TEMPLATES: &[ConversationTemplate] = &[
    ConversationTemplate {
        name: "internvl2_5",
        system: "<|im_start|>system\n你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
        user_role: "<|im_start|>user\n",
        assistant_role: "<|im_start|>assistant\n",
        style: SeparatorStyle::Mpt,
        sep: "<|im_end|>\n",
    },
    ConversationTemplate {
        name: "Hermes-2",
        system: system_prompts::HERMES,
        user_role: "<|im_start|>user\n",
        assistant_role: "<|im_start|>assistant\n",
        style: SeparatorStyle::Mpt,
        sep: "<|im_end|>",
    },
    ConversationTemplate {
        name: "internlm2-chat",
        system: system_prompts::HERMES,
        user_role: "<|im_start|>user\n",
        assistant_role: "<|im_start|>assistant\n",
        style: SeparatorStyle::Mpt,
        sep: "<|im_end|>",
    },
    ConversationTemplate {
        name: "phi3-chat",
        system: system_prompts::PHI3,
        user_role: "<|user|>\n",
        assistant_role: "<|assistant|>\n",
        style: SeparatorStyle::Mpt,
        sep: "<|end|>",
    },
];

/// InternVL2's system prompt (Hermes-2, internlm2-chat and phi3-chat share it) with each
/// template's `system_template` applied.
mod system_prompts {
    pub const HERMES: &str = "<|im_start|>system\n你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。";
    pub const PHI3: &str = "<|system|>\n你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。";
}

impl ConversationTemplate {
    /// The template `config.json` names, or an error listing the ones faceval knows.
    pub fn named(name: &str) -> Result<&'static ConversationTemplate> {
        match TEMPLATES.iter().find(|t| t.name == name) {
            Some(t) => Ok(t),
            None => bail!(
                "conversation template {name:?} is not one faceval renders ({}); add a chat_template.jinja to the checkpoint folder instead",
                TEMPLATES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The prompt for chat `messages` (a JSON list of `{role, content}`, content a string or
    /// `{type: image}` / `{type: text, text}` parts), each image part written as
    /// `image_placeholder` + `\n`. With `add_generation_prompt` the assistant turn is left
    /// open, as `chat()` leaves it.
    pub fn render(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
        image_placeholder: &str,
    ) -> Result<String> {
        let SeparatorStyle::Mpt = self.style;
        let list = messages
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("chat messages must be a list"))?;
        let mut out = String::new();
        out.push_str(self.system);
        out.push_str(self.sep);
        for (i, m) in list.iter().enumerate() {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("user") => self.user_role,
                Some("assistant") => self.assistant_role,
                // chat() has no other turn; its system prompt is the template's own.
                other => bail!(
                    "message {i}: role {other:?} is not one the {} conversation template has (user, assistant)",
                    self.name
                ),
            };
            let mut text = String::new();
            match m.get("content") {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("image") => {
                                text.push_str(image_placeholder);
                                text.push('\n');
                            }
                            Some("text") => text
                                .push_str(part.get("text").and_then(Value::as_str).unwrap_or("")),
                            other => {
                                bail!("message {i}: content part {other:?} is not image or text")
                            }
                        }
                    }
                }
                _ => bail!("message {i}: content must be a string or a list of parts"),
            }
            // get_prompt() treats an empty message as the open turn.
            out.push_str(role);
            if !text.is_empty() {
                out.push_str(&text);
                out.push_str(self.sep);
            }
        }
        if add_generation_prompt {
            out.push_str(self.assistant_role);
        }
        Ok(out)
    }

    /// The token `chat()` stops at: the separator without surrounding whitespace.
    pub fn stop_token(&self) -> &'static str {
        self.sep.trim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn internvl2_5_renders_chats_prompt_for_one_image() {
        let t = ConversationTemplate::named("internvl2_5").unwrap();
        let messages = json!([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How old?"}]}]);
        let got = t.render(&messages, true, "<image>").unwrap();
        assert_eq!(
            got,
            format!(
                "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\n<image>\nHow old?<|im_end|>\n<|im_start|>assistant\n",
                "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
            )
        );
        assert_eq!(t.stop_token(), "<|im_end|>");
    }

    #[test]
    fn unknown_names_and_roles_are_errors_that_say_what_to_do() {
        let err = ConversationTemplate::named("vicuna_v1.1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("internvl2_5") && err.contains("chat_template.jinja"),
            "{err}"
        );
        let t = ConversationTemplate::named("Hermes-2").unwrap();
        let err = t
            .render(
                &json!([{"role": "system", "content": "x"}]),
                true,
                "<image>",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("system"), "{err}");
    }
}
