//! Model manifests: `baselines/<name>.toml` says what a leaderboard model is and where its
//! weights live. See `docs/model-manifest.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::builtin::{self, Origin};
use crate::error::input_error;
use crate::prompt::sha256_hex;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Seeded uniform choice among the options.
    Random,
    /// The most frequent label of a reference split.
    Majority,
    /// InternVL3 / FaceLLM checkpoints in any of the layouts faceval loads.
    Internvl,
    /// A model behind an OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, TGI,
    /// llama.cpp, `faceval serve`). See `docs/serving.md`.
    Openai,
    /// LLaVA-1.5 in the llava-hf layout (`LlavaForConditionalGeneration`). See `docs/llava.md`.
    Llava,
    /// CLIP zero-shot classification (`model_type = "clip"` checkpoints). See `docs/zero-shot.md`.
    Clip,
    /// SigLIP zero-shot classification (`model_type = "siglip"` checkpoints).
    Siglip,
    /// Qwen2-VL and Qwen2.5-VL in the transformers layout (`Qwen2VLForConditionalGeneration`,
    /// `Qwen2_5_VLForConditionalGeneration`). See `docs/qwen2-vl.md`.
    #[serde(rename = "qwen2_vl")]
    Qwen2Vl,
}

impl ModelKind {
    /// The kind as manifests spell it (`kind = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Majority => "majority",
            Self::Internvl => "internvl",
            Self::Openai => "openai",
            Self::Llava => "llava",
            Self::Clip => "clip",
            Self::Siglip => "siglip",
            Self::Qwen2Vl => "qwen2_vl",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Short name used on the command line and in reports.
    pub name: String,
    pub kind: ModelKind,
    /// Name shown in reports (defaults to `name`).
    #[serde(default)]
    pub display_name: String,
    /// Local folder or `hf://Org/Name[@revision]`, for models with weights.
    #[serde(default)]
    pub source: String,
    /// `auto` (f32 on CPU, bf16 on CUDA), `f32`, `bf16` or `f16`.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    #[serde(default)]
    pub description: String,
    /// Parameter count in billions, for the leaderboard's size column.
    #[serde(default)]
    pub params_b: Option<f64>,
    /// Row name in `baselines/published/*.csv`, to line local runs up with the paper.
    #[serde(default)]
    pub published_as: Option<String>,
    /// `kind = "openai"`: the API root that `/chat/completions` hangs off, e.g.
    /// `http://127.0.0.1:8000/v1`.
    #[serde(default)]
    pub base_url: String,
    /// `kind = "openai"`: the `model` field sent to the server (defaults to `name`).
    #[serde(default)]
    pub api_model: String,
    /// `kind = "openai"`: environment variable holding the bearer token (none when empty).
    #[serde(default)]
    pub api_key_env: String,
    /// `kind = "openai"`: seconds one HTTP request may take before it is retried.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// `kind = "openai"`: retries after a 429, a 5xx, a timeout or a dropped connection.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// `kind = "openai"`: requests in flight at once when a caller batches.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// `kind = "openai"`: response cache folder; empty for the default, `"off"` for none.
    #[serde(default)]
    pub cache_dir: String,
    /// `kind = "openai"`: a label of the weights behind `base_url` and `api_model` (a
    /// checkpoint step, a date). Change it when you serve new weights under the same name: it
    /// keys the response cache and the model fingerprint, so old answers are not reused.
    #[serde(default)]
    pub revision: Option<String>,
    /// `kind = "clip"` / `"siglip"`: the text prompt per answer option, with `{label}` standing
    /// for the option text (empty: `"a photo of a {label} face"`).
    #[serde(default)]
    pub zero_shot_template: String,
}

fn default_dtype() -> String {
    "auto".into()
}

/// A manifest and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: ModelManifest,
    /// The manifest file read (`None` for built-in manifests and bare checkpoints).
    pub path: Option<PathBuf>,
    /// What run manifests record as `model.origin`: `builtin`, the manifest's path, or
    /// `checkpoint`.
    pub origin: String,
    /// sha256 of the manifest TOML, or of the built-in name.
    pub fingerprint: String,
}

impl LoadedManifest {
    fn builtin(name: &str, kind: ModelKind) -> Self {
        LoadedManifest {
            manifest: ModelManifest {
                name: name.into(),
                kind,
                display_name: String::new(),
                source: String::new(),
                dtype: default_dtype(),
                description: String::new(),
                params_b: None,
                published_as: None,
                base_url: String::new(),
                api_model: String::new(),
                api_key_env: String::new(),
                timeout_s: None,
                max_retries: None,
                max_concurrency: None,
                cache_dir: String::new(),
                revision: None,
                zero_shot_template: String::new(),
            },
            path: None,
            origin: builtin::BUILTIN.to_string(),
            fingerprint: sha256_hex(name.as_bytes()),
        }
    }
}

/// Parse a manifest file.
pub fn load(path: &Path) -> anyhow::Result<LoadedManifest> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input_error(format!(
            "{}: cannot read model manifest: {e}",
            path.display()
        ))
    })?;
    parse(&text, path, Origin::File(path.to_path_buf()))
}

/// Parse a manifest, built-in or from a folder.
pub fn from_definition(def: &builtin::Definition) -> anyhow::Result<LoadedManifest> {
    parse(&def.text, &def.path, def.origin.clone())
}

/// Parse and check manifest TOML; `path` is used in messages.
fn parse(text: &str, path: &Path, origin: Origin) -> anyhow::Result<LoadedManifest> {
    let manifest: ModelManifest = toml::from_str(text)
        .map_err(|e| input_error(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
    if manifest.kind == ModelKind::Internvl && manifest.source.is_empty() {
        return Err(input_error(format!(
            "{}: source is required for kind = \"internvl\" (a folder or hf://Org/Name)",
            path.display()
        )));
    }
    if matches!(manifest.kind, ModelKind::Llava | ModelKind::Qwen2Vl) && manifest.source.is_empty()
    {
        return Err(input_error(format!(
            "{}: source is required for kind = \"{}\" (a folder or hf://Org/Name)",
            path.display(),
            manifest.kind.name()
        )));
    }
    if matches!(manifest.kind, ModelKind::Clip | ModelKind::Siglip) {
        if manifest.source.is_empty() {
            return Err(input_error(format!(
                "{}: source is required for kind = \"{}\" (a folder or hf://Org/Name)",
                path.display(),
                format!("{:?}", manifest.kind).to_lowercase()
            )));
        }
        if !manifest.zero_shot_template.is_empty()
            && !manifest.zero_shot_template.contains("{label}")
        {
            return Err(input_error(format!(
                "{}: zero_shot_template {:?} has no {{label}} placeholder",
                path.display(),
                manifest.zero_shot_template
            )));
        }
    }
    if manifest.kind == ModelKind::Openai && manifest.base_url.is_empty() {
        return Err(input_error(format!(
            "{}: base_url is required for kind = \"openai\" (e.g. \"http://127.0.0.1:8000/v1\")",
            path.display()
        )));
    }
    Ok(LoadedManifest {
        fingerprint: sha256_hex(text.as_bytes()),
        manifest,
        path: match &origin {
            Origin::File(p) => Some(p.clone()),
            Origin::Builtin => None,
        },
        origin: origin.label(),
    })
}

/// The kind a bare checkpoint loads as: CLIP, SigLIP, LLaVA or Qwen2-VL when its config.json's
/// `model_type` says so (local folders and hf:// ids already in the cache), else InternVL
/// (whose checkpoints spell `model_type` several ways across layouts).
fn kind_of_checkpoint(spec: &str) -> ModelKind {
    let model_type = faceval_models::hub::resolve_model_path(spec)
        .ok()
        .and_then(|dir| std::fs::read_to_string(dir.join("config.json")).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_string));
    match model_type.as_deref() {
        Some("clip") => ModelKind::Clip,
        Some("siglip") => ModelKind::Siglip,
        Some("llava") => ModelKind::Llava,
        Some("qwen2_vl" | "qwen2_5_vl") => ModelKind::Qwen2Vl,
        _ => ModelKind::Internvl,
    }
}

/// Resolve `--model`: a manifest path, a name in `baselines_dir` (`--baselines-dir`), a
/// built-in manifest (the shipped `baselines/*.toml`), a built-in floor (`random`,
/// `majority`), or a checkpoint folder / `hf://` id (CLIP / SigLIP when its config.json says
/// so, else InternVL).
pub fn resolve(spec: &str, baselines_dir: Option<&Path>) -> anyhow::Result<LoadedManifest> {
    let as_path = Path::new(spec);
    if as_path.extension().is_some_and(|e| e == "toml") {
        return load(as_path);
    }
    if let Some(def) = builtin::find(&builtin::MODEL_FILES, baselines_dir, spec)? {
        return from_definition(&def);
    }
    match spec {
        "random" => return Ok(LoadedManifest::builtin("random", ModelKind::Random)),
        "majority" => return Ok(LoadedManifest::builtin("majority", ModelKind::Majority)),
        _ => {}
    }
    if spec.starts_with("hf://") || as_path.join("config.json").is_file() {
        let name = spec
            .trim_start_matches("hf://")
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(spec)
            .to_string();
        let mut m = LoadedManifest::builtin(&name, kind_of_checkpoint(spec));
        m.manifest.source = spec.to_string();
        m.fingerprint = sha256_hex(spec.as_bytes());
        m.origin = "checkpoint".into();
        return Ok(m);
    }
    let mut known = builtin::known_names(&builtin::MODEL_FILES, baselines_dir);
    // The built-ins lead the list; baselines/ also holds manifests of them.
    known.retain(|n| n != "random" && n != "majority");
    let searched = match baselines_dir {
        Some(d) => format!("no file {}", d.join(format!("{spec}.toml")).display()),
        None => {
            "no built-in manifest of that name (--baselines-dir adds a folder of manifests)".into()
        }
    };
    let suggestion = closest_name(
        spec,
        ["random", "majority"]
            .into_iter()
            .chain(known.iter().map(String::as_str)),
    )
    .map(|n| format!(". Did you mean {n}?"))
    .unwrap_or_default();
    Err(input_error(format!(
        "unknown model \"{spec}\": not a manifest file, {searched}, not a checkpoint folder with config.json. Known: random, majority{}{}{suggestion}",
        if known.is_empty() { "" } else { ", " },
        known.join(", ")
    )))
}

/// The known name nearest to a mistyped one, when it is near enough to be a typo: at most a
/// third of its characters edited (case ignored), and at least one.
fn closest_name<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed = typed.to_lowercase();
    let limit = (typed.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (edit_distance(&typed, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mistyped_model_name_gets_the_nearest_known_one() {
        assert_eq!(edit_distance("majorty", "majority"), 1);
        assert_eq!(
            closest_name("majorty", ["random", "majority"]),
            Some("majority")
        );
        assert_eq!(
            closest_name("Random", ["random", "majority"]),
            Some("random")
        );
        assert_eq!(closest_name("qwen", ["random", "majority"]), None);
    }
}
