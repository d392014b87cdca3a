//! LLaVA-1.5 config.json in the llava-hf layout (`model_type: llava`, `text_config`,
//! `vision_config`), read with transformers' defaults for the fields llava-hf leaves out, and
//! turned into candle-transformers' CLIP and Llama configs.
//!
//! The llava-hf repos carry sparse sub-configs (llava-1.5-7b-hf's `text_config` names only the
//! vocabulary, the context and the norm epsilon), so every absent field takes the default of
//! transformers' `LlamaConfig` / `CLIPVisionConfig`. Settings candle's modules cannot honour
//! (another activation, a vision epsilon other than 1e-5, RoPE scaling, biased Llama
//! projections, an explicit head_dim) are refused with the field named, never ignored.

// `%` checks: the workspace's rust-version (1.85) predates `is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_transformers::models::clip::text_model::Activation as ClipActivation;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::llama::{Config as LlamaConfig, LlamaEosToks};
use serde_json::Value;

/// How the vision features are selected before the projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectStrategy {
    /// Drop the CLS position (`"default"`).
    Default,
    /// Keep every position (`"full"`).
    Full,
}

/// The projector's activation between its two linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorAct {
    /// `gelu`: the exact erf form (torch's `nn.GELU()`).
    GeluErf,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation.
    GeluTanh,
}

#[derive(Debug, Clone)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub projection_dim: usize,
}

impl VisionConfig {
    /// Patch positions per image (without CLS).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
    pub fn to_candle(&self) -> ClipVisionConfig {
        ClipVisionConfig {
            embed_dim: self.hidden_size,
            activation: ClipActivation::QuickGelu,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            projection_dim: self.projection_dim,
            num_channels: self.num_channels,
            image_size: self.image_size,
            patch_size: self.patch_size,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    pub fn to_candle(&self) -> LlamaConfig {
        LlamaConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            vocab_size: self.vocab_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            use_flash_attn: false,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_ids.first().map(|&e| LlamaEosToks::Single(e)),
            rope_scaling: None,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

/// A llava-hf `LlavaForConditionalGeneration` config.
#[derive(Debug, Clone)]
pub struct LlavaConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub image_token_id: u32,
    /// transformers' index into the vision tower's hidden states (embeddings output = 0; -1 =
    /// last layer).
    pub vision_feature_layer: i64,
    pub select_strategy: SelectStrategy,
    pub projector_act: ProjectorAct,
    pub projector_bias: bool,
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

/// Reads typed fields of one JSON object, naming the file and field in errors.
struct Fields<'a> {
    obj: &'a Value,
    file: &'a str,
    section: &'a str,
}

impl Fields<'_> {
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                anyhow!(
                    "{}: `{}{key}` must be a non-negative integer, got {v}",
                    self.file,
                    self.section
                )
            }),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                anyhow!(
                    "{}: `{}{key}` must be a number, got {v}",
                    self.file,
                    self.section
                )
            }),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                anyhow!(
                    "{}: `{}{key}` must be true or false, got {v}",
                    self.file,
                    self.section
                )
            }),
        }
    }
    fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| {
                anyhow!(
                    "{}: `{}{key}` must be a string, got {v}",
                    self.file,
                    self.section
                )
            }),
        }
    }
}

impl LlavaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("corrupt {}: not valid JSON", path.display()))?;
        Self::from_value(&v, &path.display().to_string())
    }

    /// Parses a config.json value; `file` names it in errors.
    pub fn from_value(v: &Value, file: &str) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "llava" {
            let hint = if v.get("mm_projector_type").is_some() {
                " (this is the original liuhaotian LLaVA layout; use the llava-hf conversion, \
                 e.g. llava-hf/llava-1.5-7b-hf)"
            } else if model_type == "llava_next" {
                " (LLaVA-NeXT's any-resolution tiling is not supported)"
            } else {
                ""
            };
            bail!("{file}: `model_type` is {model_type:?}, expected \"llava\"{hint}");
        }
        let top = Fields {
            obj: v,
            file,
            section: "",
        };
        let tc = v
            .get("text_config")
            .filter(|t| t.is_object())
            .ok_or_else(|| anyhow!("{file}: no `text_config` object"))?;
        let vc = v
            .get("vision_config")
            .filter(|t| t.is_object())
            .ok_or_else(|| anyhow!("{file}: no `vision_config` object"))?;
        let text = parse_text(tc, v, file)?;
        let vision = parse_vision(vc, file)?;

        // llava-hf spells it `image_token_index`; transformers 5 also reads `image_token_id`.
        let image_token_id = match v.get("image_token_id").or(v.get("image_token_index")) {
            None | Some(Value::Null) => 32000,
            Some(x) => x.as_u64().ok_or_else(|| {
                anyhow!("{file}: `image_token_index` must be a non-negative integer, got {x}")
            })? as u32,
        };
        if image_token_id as usize >= text.vocab_size {
            bail!(
                "{file}: `image_token_index` {image_token_id} is outside the vocabulary of {} tokens",
                text.vocab_size
            );
        }
        let vision_feature_layer = match v.get("vision_feature_layer") {
            None | Some(Value::Null) => -2,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(-2),
            Some(other) => bail!(
                "{file}: `vision_feature_layer` {other} is not supported: only one layer index \
                 (an integer) is, not a list of layers"
            ),
        };
        let n = vision.num_hidden_layers as i64;
        let resolved = if vision_feature_layer < 0 {
            n + 1 + vision_feature_layer
        } else {
            vision_feature_layer
        };
        if resolved < 1 || resolved > n {
            bail!(
                "{file}: `vision_feature_layer` {vision_feature_layer} must pick the output of \
                 one of the {n} vision layers (the embeddings output, index 0, is not supported)"
            );
        }
        let select_strategy = match top.str_or("vision_feature_select_strategy", "default")? {
            "default" => SelectStrategy::Default,
            "full" => SelectStrategy::Full,
            other => bail!(
                "{file}: `vision_feature_select_strategy` {other:?} is not supported (default or full)"
            ),
        };
        let projector_act = match top.str_or("projector_hidden_act", "gelu")? {
            "gelu" => ProjectorAct::GeluErf,
            "gelu_pytorch_tanh" | "gelu_new" => ProjectorAct::GeluTanh,
            other => bail!(
                "{file}: `projector_hidden_act` {other:?} is not supported (gelu, gelu_pytorch_tanh)"
            ),
        };
        Ok(Self {
            vision,
            text,
            image_token_id,
            vision_feature_layer,
            select_strategy,
            projector_act,
            projector_bias: top.bool_or("multimodal_projector_bias", true)?,
        })
    }

    /// Index into candle's `output_hidden_states` list (`[layer 1, .., layer N, pooled]`),
    /// whose entry k is transformers' hidden state k + 1 (transformers' list starts with the
    /// embeddings output, which candle does not return).
    pub fn candle_hidden_index(&self) -> usize {
        let n = self.vision.num_hidden_layers as i64;
        let hf = if self.vision_feature_layer < 0 {
            n + 1 + self.vision_feature_layer
        } else {
            self.vision_feature_layer
        };
        (hf - 1) as usize
    }

    /// Image tokens (= feature rows) per image.
    pub fn tokens_per_image(&self) -> usize {
        self.vision.num_patches()
            + match self.select_strategy {
                SelectStrategy::Default => 0,
                SelectStrategy::Full => 1,
            }
    }
}

fn parse_text(tc: &Value, top: &Value, file: &str) -> Result<TextConfig> {
    let f = Fields {
        obj: tc,
        file,
        section: "text_config.",
    };
    let model_type = f.str_or("model_type", "llama")?;
    if model_type != "llama" {
        bail!(
            "{file}: `text_config.model_type` is {model_type:?}; only Llama language models \
             (LLaVA-1.5) are supported"
        );
    }
    // transformers' LlamaConfig defaults (Llama-2-7B sizes).
    let hidden_size = f.usize_or("hidden_size", 4096)?;
    let num_attention_heads = f.usize_or("num_attention_heads", 32)?;
    let num_key_value_heads = f.usize_or("num_key_value_heads", num_attention_heads)?;
    if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
        bail!("{file}: `text_config.hidden_size` {hidden_size} is not a multiple of `num_attention_heads` {num_attention_heads}");
    }
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        bail!("{file}: `text_config.num_attention_heads` {num_attention_heads} is not a multiple of `num_key_value_heads` {num_key_value_heads}");
    }
    // candle's Llama derives head_dim as hidden / heads.
    if let Some(hd) = tc.get("head_dim").and_then(Value::as_u64) {
        if hd as usize != hidden_size / num_attention_heads {
            bail!(
                "{file}: `text_config.head_dim` {hd} differs from hidden_size / num_attention_heads = {}; not supported",
                hidden_size / num_attention_heads
            );
        }
    }
    let act = f.str_or("hidden_act", "silu")?;
    if act != "silu" {
        bail!("{file}: `text_config.hidden_act` {act:?} is not supported (silu)");
    }
    for key in ["attention_bias", "mlp_bias"] {
        if f.bool_or(key, false)? {
            bail!("{file}: `text_config.{key}: true` is not supported (Llama without biases)");
        }
    }
    // RoPE: transformers 5 writes `rope_parameters`, 4.x `rope_theta` / `rope_scaling`.
    let mut rope_theta = f.f64_or("rope_theta", 10000.0)?;
    for key in ["rope_parameters", "rope_scaling"] {
        match tc.get(key) {
            None | Some(Value::Null) => {}
            Some(p) => {
                let kind = p
                    .get("rope_type")
                    .or(p.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                if kind != "default" {
                    bail!("{file}: `text_config.{key}` rope_type {kind:?} is not supported (default RoPE only)");
                }
                if let Some(t) = p.get("rope_theta").and_then(Value::as_f64) {
                    rope_theta = t;
                }
            }
        }
    }
    let mut eos = ids(tc.get("eos_token_id"));
    if eos.is_empty() && tc.get("eos_token_id").is_none() {
        eos = vec![2];
    }
    let bos = match tc.get("bos_token_id") {
        None => Some(1),
        Some(Value::Null) => None,
        Some(x) => x.as_u64().map(|x| x as u32),
    };
    let tie = match tc.get("tie_word_embeddings") {
        Some(Value::Bool(b)) => *b,
        _ => top
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Ok(TextConfig {
        vocab_size: f.usize_or("vocab_size", 32000)?,
        hidden_size,
        intermediate_size: f.usize_or("intermediate_size", 11008)?,
        num_hidden_layers: f.usize_or("num_hidden_layers", 32)?,
        num_attention_heads,
        num_key_value_heads,
        rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta: rope_theta as f32,
        max_position_embeddings: f.usize_or("max_position_embeddings", 2048)?,
        tie_word_embeddings: tie,
        bos_token_id: bos,
        eos_token_ids: eos,
    })
}

fn parse_vision(vc: &Value, file: &str) -> Result<VisionConfig> {
    let f = Fields {
        obj: vc,
        file,
        section: "vision_config.",
    };
    let model_type = f.str_or("model_type", "clip_vision_model")?;
    if model_type != "clip_vision_model" {
        bail!(
            "{file}: `vision_config.model_type` is {model_type:?}; only CLIP vision towers \
             (clip_vision_model) are supported"
        );
    }
    let act = f.str_or("hidden_act", "quick_gelu")?;
    if act != "quick_gelu" {
        bail!("{file}: `vision_config.hidden_act` {act:?} is not supported (quick_gelu, as CLIP)");
    }
    // candle's CLIP layer norms are built with eps 1e-5.
    let eps = f.f64_or("layer_norm_eps", 1e-5)?;
    if (eps - 1e-5).abs() > 1e-12 {
        bail!("{file}: `vision_config.layer_norm_eps` {eps} is not supported (1e-5, as CLIP)");
    }
    // transformers' CLIPVisionConfig defaults (ViT-B/32).
    let out = VisionConfig {
        hidden_size: f.usize_or("hidden_size", 768)?,
        intermediate_size: f.usize_or("intermediate_size", 3072)?,
        num_hidden_layers: f.usize_or("num_hidden_layers", 12)?,
        num_attention_heads: f.usize_or("num_attention_heads", 12)?,
        num_channels: f.usize_or("num_channels", 3)?,
        image_size: f.usize_or("image_size", 224)?,
        patch_size: f.usize_or("patch_size", 32)?,
        projection_dim: f.usize_or("projection_dim", 512)?,
    };
    if out.patch_size == 0 || out.image_size % out.patch_size != 0 {
        bail!(
            "{file}: `vision_config.image_size` {} is not a multiple of `patch_size` {}",
            out.image_size,
            out.patch_size
        );
    }
    if out.num_attention_heads == 0 || out.hidden_size % out.num_attention_heads != 0 {
        bail!(
            "{file}: `vision_config.hidden_size` {} is not a multiple of `num_attention_heads` {}",
            out.hidden_size,
            out.num_attention_heads
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// llava-hf/llava-1.5-7b-hf's config.json as published (sparse sub-configs).
    fn hub_7b() -> Value {
        json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "ignore_index": -100, "image_token_index": 32000, "model_type": "llava",
            "pad_token_id": 32001, "projector_hidden_act": "gelu",
            "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                "torch_dtype": "float16", "vocab_size": 32064},
            "tie_word_embeddings": false, "torch_dtype": "float16", "vision_config": {
                "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                "model_type": "clip_vision_model", "num_attention_heads": 16,
                "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064
        })
    }

    #[test]
    fn hub_config_takes_transformers_defaults() {
        let c = LlavaConfig::from_value(&hub_7b(), "config.json").unwrap();
        assert_eq!(c.text.hidden_size, 4096);
        assert_eq!(c.text.num_hidden_layers, 32);
        assert_eq!(c.text.num_key_value_heads, 32);
        assert_eq!(c.text.vocab_size, 32064);
        assert_eq!(c.text.rope_theta, 10000.0);
        assert_eq!(c.image_token_id, 32000);
        assert_eq!(c.tokens_per_image(), 576);
        assert_eq!(c.candle_hidden_index(), 22);
        assert_eq!(c.projector_act, ProjectorAct::GeluErf);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let mut v = hub_7b();
        v["vision_feature_layer"] = json!([-2, -5]);
        let e = LlavaConfig::from_value(&v, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vision_feature_layer"), "{e}");
        let mut v = hub_7b();
        v["text_config"]["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
        let e = LlavaConfig::from_value(&v, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope_scaling"), "{e}");
        let mut v = hub_7b();
        v["model_type"] = json!("llava_llama");
        v["mm_projector_type"] = json!("mlp2x_gelu");
        let e = LlavaConfig::from_value(&v, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("liuhaotian"), "{e}");
        let mut v = hub_7b();
        v["vision_config"]["hidden_act"] = json!("gelu");
        let e = LlavaConfig::from_value(&v, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vision_config.hidden_act"), "{e}");
    }
}
