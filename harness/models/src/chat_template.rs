//! Chat templates as transformers applies them: found in a checkpoint folder in the order a
//! processor loads them, rendered with minijinja with transformers' environment (trim_blocks,
//! lstrip_blocks, `raise_exception`, Python string methods). Shared by every generative
//! family; each family adds its own image-token expansion after rendering.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use minijinja::{Environment, ErrorKind, Value as JValue};
use serde_json::{json, Value};

use crate::checkpoint::read_json_if_present;

/// Where the chat template was found (for run manifests and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    File(PathBuf),
    Field {
        file: PathBuf,
        field: String,
    },
    /// An original checkpoint's `config.json` names a conversation template
    /// ([`crate::conversation`]) and no file carries a Jinja template.
    Conversation {
        config: PathBuf,
        name: String,
    },
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Field { file, field } => write!(f, "{} field `{field}`", file.display()),
            Self::Conversation { config, name } => write!(
                f,
                "conversation template {name:?} named by {} (rendered as InternVL's chat() renders it)",
                config.display()
            ),
        }
    }
}

/// A `chat_template` field may be a string or, in tokenizer_config.json, a list of
/// `{name, template}`; transformers takes the one named "default".
fn template_from_field(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// The chat template, in the order a processor loads it: `chat_template.jinja`,
/// `chat_template.json`, `processor_config.json`, then `tokenizer_config.json`; `None` when
/// no file carries one.
pub fn locate_chat_template(dir: &Path) -> Result<Option<(String, TemplateSource)>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let t =
            fs::read_to_string(&jinja).with_context(|| format!("reading {}", jinja.display()))?;
        return Ok(Some((t, TemplateSource::File(jinja))));
    }
    for name in [
        "chat_template.json",
        "processor_config.json",
        "tokenizer_config.json",
    ] {
        let path = dir.join(name);
        if let Some(v) = read_json_if_present(&path)? {
            if let Some(field) = v.get("chat_template") {
                let t = template_from_field(field).ok_or_else(|| {
                    anyhow!(
                        "{}: `chat_template` must be a string or a list with a \"default\" entry",
                        path.display()
                    )
                })?;
                return Ok(Some((
                    t,
                    TemplateSource::Field {
                        file: path,
                        field: "chat_template".into(),
                    },
                )));
            }
        }
    }
    Ok(None)
}

/// [`locate_chat_template`], with an error saying where it looked when no file carries one.
pub fn find_chat_template(dir: &Path) -> Result<(String, TemplateSource)> {
    match locate_chat_template(dir)? {
        Some(found) => Ok(found),
        None => bail!(
            "{}: no chat template (looked for chat_template.jinja, chat_template.json, and a `chat_template` field in processor_config.json / tokenizer_config.json)",
            dir.display()
        ),
    }
}

/// The longest `{{ … }}` / `{% … %}` tag a template file may hold. Real templates' tags are
/// under a few hundred bytes; a tag of tens of KB can chain expressions (`o.a.a.a…` ten
/// thousand times) that minijinja compiles recursively, past a thread's stack (a fuzzer found
/// it: fuzz/regressions/task_toml/).
pub const MAX_TAG_BYTES: usize = 8192;

/// Limits minijinja does not enforce itself, checked before any template read from a file is
/// compiled (chat templates here, task prompt templates in the eval crate): a line of 65535+
/// bytes overflows its column counter, and an oversized tag can overflow the stack.
pub fn check_limits(template: &str) -> std::result::Result<(), String> {
    if let Some((i, line)) = template
        .lines()
        .enumerate()
        .find(|(_, l)| l.len() >= usize::from(u16::MAX))
    {
        return Err(format!(
            "line {} is {} bytes long; the template engine takes lines of up to 65534",
            i + 1,
            line.len()
        ));
    }
    let bytes = template.as_bytes();
    let mut at = 0;
    while let Some(open) = template[at..].find('{').map(|k| at + k) {
        let close = match bytes.get(open + 1) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            _ => {
                at = open + 1;
                continue;
            }
        };
        let end = template[open + 2..]
            .find(close)
            .map_or(template.len(), |k| open + 2 + k + 2);
        if end - open > MAX_TAG_BYTES {
            let line = template[..open].matches('\n').count() + 1;
            return Err(format!(
                "the tag starting on line {line} is {} bytes long; tags may be up to {MAX_TAG_BYTES} bytes",
                end - open
            ));
        }
        at = end.max(open + 2);
    }
    Ok(())
}

/// The messages JSON of one user turn with `n_images` image parts followed by the text.
pub fn user_messages(n_images: usize, user_text: &str) -> Value {
    let mut content: Vec<Value> = (0..n_images).map(|_| json!({"type": "image"})).collect();
    content.push(json!({"type": "text", "text": user_text}));
    json!([{"role": "user", "content": content}])
}

/// Renders a checkpoint's chat template (`template`, read from `source`) over `messages` the
/// way transformers' `apply_chat_template` does, with the tokenizer's special tokens
/// (`bos_token`, ...) as variables. Shared by every generative model.
pub fn render_chat_template(
    template: &str,
    source: &TemplateSource,
    special_tokens: &[(String, String)],
    messages: &Value,
    add_generation_prompt: bool,
) -> Result<String> {
    // transformers compiles templates with trim_blocks and lstrip_blocks, and offers
    // `raise_exception`; Python string/dict/list methods come from minijinja-contrib.
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<JValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    check_limits(template).map_err(|m| anyhow!("chat template from {source}: {m}"))?;
    // `{e}`, not `{e:#}`: minijinja's alternate form adds a source excerpt whose caret line
    // underflows on some spans (a `{% for in x %}` panics; fuzz/regressions/chat_template/).
    env.add_template("chat", template)
        .map_err(|e| anyhow!("chat template from {source} does not compile: {e}"))?;
    let mut ctx = serde_json::Map::new();
    ctx.insert("messages".into(), messages.clone());
    ctx.insert("add_generation_prompt".into(), json!(add_generation_prompt));
    for (k, v) in special_tokens {
        ctx.insert(k.clone(), json!(v));
    }
    let tmpl = env.get_template("chat").map_err(|e| anyhow!("{e}"))?;
    tmpl.render(JValue::from_serialize(&ctx))
        .map_err(|e| anyhow!("rendering the chat template from {source}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_tags_and_lines_are_refused_before_compiling() {
        assert!(check_limits("{{ o.a.b }}{% if x %}y{% endif %} {not a tag}").is_ok());
        let chain = format!("x\n{{{{ o{} }}}}", ".leo".repeat(14_000));
        let err = check_limits(&chain).unwrap_err();
        assert!(err.contains("line 2") && err.contains("8192"), "{err}");
        let unclosed = format!("{{% if {}", "a and ".repeat(3000));
        assert!(check_limits(&unclosed).is_err());
        let long_line = "a".repeat(70_000);
        assert!(check_limits(&long_line).unwrap_err().contains("65534"));
    }
}
