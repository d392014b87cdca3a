//! InternVL3 configuration read from a checkpoint's own `config.json`.
//!
//! Three dialects exist in the wild and all are read into one [`InternVlConfig`]:
//! - transformers 5.x (`InternVLForConditionalGeneration`): `text_config.rope_parameters`, `dtype`;
//! - transformers 4.x: `text_config.rope_theta` / `rope_scaling`, `torch_dtype`;
//! - the original `InternVLChatModel` (OpenGVLab remote code): `llm_config`, a `vision_config`
//!   with its own field names (`qkv_bias`, `qk_normalization`), `select_layer`, `ps_version`.
//!
//! Every dimension comes from the file. Where transformers gives a field a default, the same
//! default is used here (and named in a comment); where the original format always writes a
//! field, it is required.

// `%` rather than `is_multiple_of`: the workspace's rust-version (1.85) predates it.
#![allow(clippy::manual_is_multiple_of)]

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Which config dialect the file was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `model_type: "internvl"` (transformers 4.x or 5.x).
    Transformers,
    /// `InternVLChatModel` remote code (`llm_config`).
    Original,
}

/// Normalisation used inside the vision encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormType {
    LayerNorm,
    RmsNorm,
}

/// Activation functions the checkpoints name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu` in transformers' ACT2FN is the erf form).
    GeluErf,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Silu,
}

impl Activation {
    pub fn parse(name: &str, field: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "silu" | "swish" => Ok(Self::Silu),
            other => bail!("config field `{field}`: unsupported activation {other:?}"),
        }
    }

    pub fn apply(&self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Self::GeluErf => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::Silu => xs.silu(),
        }
    }
}

/// InternViT (the vision tower).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub norm_type: NormType,
    pub layer_norm_eps: f64,
    /// (height, width) of one tile in pixels.
    pub image_size: (usize, usize),
    /// (height, width) of one patch in pixels.
    pub patch_size: (usize, usize),
    pub num_channels: usize,
    /// Bias on the q/k/v projections (300M: yes, 6B: no).
    pub qkv_bias: bool,
    /// RMSNorm on q and k over the full embedding width (6B).
    pub qk_norm: bool,
    /// When false, transformers applies a final LayerNorm (`layernorm`) to the last hidden state.
    pub use_mean_pooling: bool,
    pub use_absolute_position_embeddings: bool,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Patches per side (rows, cols) of one tile.
    pub fn patch_grid(&self) -> (usize, usize) {
        (
            self.image_size.0 / self.patch_size.0,
            self.image_size.1 / self.patch_size.1,
        )
    }
    pub fn num_patches(&self) -> usize {
        let (h, w) = self.patch_grid();
        h * w
    }
}

/// Qwen2 / Qwen2.5 language model.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub tie_word_embeddings: bool,
    /// `eos_token_id` from the text config (one or several), if present.
    pub eos_token_ids: Vec<u32>,
    /// RoPE type "dynamic" (NTK): identical to default up to `max_position_embeddings`.
    pub dynamic_rope: bool,
}

/// Everything the network needs, whatever dialect it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InternVlConfig {
    pub format: ConfigFormat,
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub downsample_ratio: f64,
    /// `<IMG_CONTEXT>` id; absent in original configs (taken from the tokenizer then).
    pub image_token_id: Option<u32>,
    /// Image tokens per tile (`image_seq_length`, or derived from sizes and downsample ratio).
    pub image_seq_length: usize,
    /// Which vision hidden state feeds the projector: -1 = last; otherwise an index into
    /// (embeddings, layer 1, ..., layer N), as transformers' `hidden_states` tuple.
    pub vision_feature_layer: i64,
    pub projector_hidden_act: Activation,
    /// dtype the checkpoint says its weights are stored in (`dtype` / `torch_dtype`), if any.
    pub stored_dtype: Option<String>,
}

impl InternVlConfig {
    /// Reads and parses `config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_value(&value).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("config is not valid JSON")?;
        Self::from_value(&value)
    }

    pub fn from_value(v: &Value) -> Result<Self> {
        if v.get("llm_config").is_some() {
            Self::from_original(v)
        } else if v.get("text_config").is_some() {
            Self::from_transformers(v)
        } else {
            bail!(
                "not an InternVL config: it has neither `text_config` (transformers \
                 InternVLForConditionalGeneration) nor `llm_config` (InternVLChatModel); \
                 model_type = {:?}",
                v.get("model_type")
                    .and_then(Value::as_str)
                    .unwrap_or("<absent>")
            )
        }
    }

    fn from_transformers(v: &Value) -> Result<Self> {
        let mt = opt_str(v, "model_type")?;
        if let Some(mt) = mt {
            if mt != "internvl" {
                bail!("config field `model_type`: expected \"internvl\", found {mt:?}");
            }
        }
        let vc = obj(v, "vision_config")?;
        // Defaults below are InternVLVisionConfig's (transformers/models/internvl/configuration_internvl.py).
        let vision = VisionConfig {
            hidden_size: usize_or(vc, "vision_config", "hidden_size", 1024)?,
            num_hidden_layers: usize_or(vc, "vision_config", "num_hidden_layers", 24)?,
            num_attention_heads: usize_or(vc, "vision_config", "num_attention_heads", 16)?,
            intermediate_size: usize_or(vc, "vision_config", "intermediate_size", 4096)?,
            hidden_act: Activation::parse(
                &str_or(vc, "vision_config", "hidden_act", "gelu")?,
                "vision_config.hidden_act",
            )?,
            norm_type: parse_norm(&str_or(vc, "vision_config", "norm_type", "layer_norm")?)?,
            layer_norm_eps: f64_or(vc, "vision_config", "layer_norm_eps", 1e-6)?,
            image_size: pair_or(vc, "vision_config", "image_size", 448)?,
            patch_size: pair_or(vc, "vision_config", "patch_size", 14)?,
            num_channels: usize_or(vc, "vision_config", "num_channels", 3)?,
            qkv_bias: bool_or(vc, "vision_config", "attention_bias", false)?,
            qk_norm: bool_or(vc, "vision_config", "use_qk_norm", false)?,
            use_mean_pooling: bool_or(vc, "vision_config", "use_mean_pooling", true)?,
            use_absolute_position_embeddings: bool_or(
                vc,
                "vision_config",
                "use_absolute_position_embeddings",
                true,
            )?,
        };
        if bool_or(vc, "vision_config", "use_mask_token", false)? {
            // Only used for masked-image pretraining; inference never passes a mask.
        }
        let tc = obj(v, "text_config")?;
        let top_tie = bool_or(v, "config", "tie_word_embeddings", true)?;
        let text = parse_qwen2(tc, "text_config", top_tie)?;
        let downsample_ratio = f64_or(v, "config", "downsample_ratio", 0.5)?;
        let strategy = str_or(v, "config", "vision_feature_select_strategy", "default")?;
        if strategy != "default" {
            bail!(
                "config field `vision_feature_select_strategy`: only \"default\" (drop CLS) is \
                 supported, found {strategy:?}"
            );
        }
        let vision_feature_layer = match v.get("vision_feature_layer") {
            None | Some(Value::Null) => -1,
            Some(x) => x.as_i64().ok_or_else(|| {
                anyhow!("config field `vision_feature_layer`: expected one integer, found {x}")
            })?,
        };
        let derived = derived_seq_len(&vision, downsample_ratio)?;
        let image_seq_length = usize_or(v, "config", "image_seq_length", derived)?;
        let cfg = Self {
            format: ConfigFormat::Transformers,
            vision,
            text,
            downsample_ratio,
            image_token_id: Some(u32_or(v, "config", "image_token_id", 151667)?),
            image_seq_length,
            vision_feature_layer,
            projector_hidden_act: Activation::parse(
                &str_or(v, "config", "projector_hidden_act", "gelu")?,
                "projector_hidden_act",
            )?,
            stored_dtype: stored_dtype(v, tc)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_original(v: &Value) -> Result<Self> {
        let vc = obj(v, "vision_config")?;
        let lc = obj(v, "llm_config")?;
        if let Some(archs) = lc.get("architectures").and_then(Value::as_array) {
            let names: Vec<&str> = archs.iter().filter_map(Value::as_str).collect();
            if !names.iter().any(|a| a.starts_with("Qwen2")) {
                bail!(
                    "config field `llm_config.architectures`: only Qwen2 language models are \
                     supported (InternVL3), found {names:?}"
                );
            }
        }
        // The original InternVisionConfig always serialises these fields, so they are required.
        let vision = VisionConfig {
            hidden_size: req_usize(vc, "vision_config", "hidden_size")?,
            num_hidden_layers: req_usize(vc, "vision_config", "num_hidden_layers")?,
            num_attention_heads: req_usize(vc, "vision_config", "num_attention_heads")?,
            intermediate_size: req_usize(vc, "vision_config", "intermediate_size")?,
            hidden_act: Activation::parse(
                &str_or(vc, "vision_config", "hidden_act", "gelu")?,
                "vision_config.hidden_act",
            )?,
            norm_type: parse_norm(&req_str(vc, "vision_config", "norm_type")?)?,
            layer_norm_eps: f64_or(vc, "vision_config", "layer_norm_eps", 1e-6)?,
            image_size: pair_req(vc, "vision_config", "image_size")?,
            patch_size: pair_req(vc, "vision_config", "patch_size")?,
            num_channels: usize_or(vc, "vision_config", "num_channels", 3)?,
            qkv_bias: req_bool(vc, "vision_config", "qkv_bias")?,
            qk_norm: req_bool(vc, "vision_config", "qk_normalization")?,
            // InternVisionModel has no final norm and always has position embeddings.
            use_mean_pooling: true,
            use_absolute_position_embeddings: true,
        };
        let text = parse_qwen2(lc, "llm_config", true)?;
        let downsample_ratio = f64_or(v, "config", "downsample_ratio", 0.5)?;
        let ps = str_or(v, "config", "ps_version", "v2")?;
        if ps != "v2" {
            bail!(
                "config field `ps_version`: only \"v2\" pixel shuffle (the transformers ordering) \
                 is supported, found {ps:?}"
            );
        }
        // force_image_size, when set, overrides the vision tile size in InternVLChatModel.
        if let Some(fis) = v.get("force_image_size").filter(|x| !x.is_null()) {
            let fis = fis
                .as_u64()
                .ok_or_else(|| anyhow!("config field `force_image_size`: expected an integer"))?
                as usize;
            if (fis, fis) != vision.image_size {
                bail!(
                    "config field `force_image_size` = {fis} differs from vision_config.image_size \
                     {:?}; position-embedding interpolation is not supported",
                    vision.image_size
                );
            }
        }
        let image_seq_length = derived_seq_len(&vision, downsample_ratio)?;
        let cfg = Self {
            format: ConfigFormat::Original,
            vision,
            text,
            downsample_ratio,
            image_token_id: match v.get("img_context_token_id") {
                Some(x) if x.as_u64().is_some() => x.as_u64().map(|x| x as u32),
                _ => None,
            },
            image_seq_length,
            vision_feature_layer: match v.get("select_layer") {
                None | Some(Value::Null) => -1,
                Some(x) => x
                    .as_i64()
                    .ok_or_else(|| anyhow!("config field `select_layer`: expected an integer"))?,
            },
            projector_hidden_act: Activation::GeluErf,
            stored_dtype: stored_dtype(v, lc)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Width of the pixel-shuffled vision features fed to the projector.
    pub fn projector_in_dim(&self) -> usize {
        let r = (1.0 / self.downsample_ratio) as usize;
        self.vision.hidden_size * r * r
    }

    fn validate(&self) -> Result<()> {
        let v = &self.vision;
        if v.num_attention_heads == 0 || v.hidden_size % v.num_attention_heads != 0 {
            bail!(
                "vision_config: hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size,
                v.num_attention_heads
            );
        }
        if v.image_size.0 % v.patch_size.0 != 0 || v.image_size.1 % v.patch_size.1 != 0 {
            bail!(
                "vision_config: image_size {:?} is not a multiple of patch_size {:?}",
                v.image_size,
                v.patch_size
            );
        }
        let (gh, gw) = v.patch_grid();
        if gh != gw {
            bail!("vision_config: non-square patch grid {gh}x{gw} is not supported");
        }
        let t = &self.text;
        if t.num_key_value_heads == 0 || t.num_attention_heads % t.num_key_value_heads != 0 {
            bail!(
                "text config: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads,
                t.num_key_value_heads
            );
        }
        if t.head_dim % 2 != 0 {
            bail!("text config: head_dim {} must be even for RoPE", t.head_dim);
        }
        let n = v.num_hidden_layers as i64;
        if self.vision_feature_layer < -(n + 1) || self.vision_feature_layer > n {
            bail!(
                "vision_feature_layer {} is out of range for {} vision layers",
                self.vision_feature_layer,
                n
            );
        }
        Ok(())
    }
}

fn derived_seq_len(v: &VisionConfig, ratio: f64) -> Result<usize> {
    let inv = 1.0 / ratio;
    if !(inv.is_finite() && inv >= 1.0 && (inv - inv.round()).abs() < 1e-9) {
        bail!("config field `downsample_ratio` = {ratio}: 1/ratio must be a whole number");
    }
    let r = inv.round() as usize;
    let (gh, gw) = v.patch_grid();
    if gh % r != 0 || gw % r != 0 {
        bail!("patch grid {gh}x{gw} is not divisible by 1/downsample_ratio = {r}");
    }
    Ok((gh / r) * (gw / r))
}

fn parse_qwen2(tc: &Value, section: &str, default_tie: bool) -> Result<TextConfig> {
    if let Some(mt) = opt_str(tc, "model_type")? {
        if mt != "qwen2" {
            bail!("config field `{section}.model_type`: only \"qwen2\" is supported, found {mt:?}");
        }
    }
    // Defaults are Qwen2Config's where transformers has one; the sizes are required.
    let hidden_size = req_usize(tc, section, "hidden_size")?;
    let num_attention_heads = req_usize(tc, section, "num_attention_heads")?;
    let num_key_value_heads = usize_or(tc, section, "num_key_value_heads", num_attention_heads)?;
    if num_attention_heads == 0 {
        bail!("config field `{section}.num_attention_heads` must be positive");
    }
    let head_dim = match tc.get("head_dim") {
        None | Some(Value::Null) => hidden_size / num_attention_heads,
        Some(x) => x
            .as_u64()
            .ok_or_else(|| anyhow!("config field `{section}.head_dim`: expected an integer"))?
            as usize,
    };
    // RoPE: 5.x nests it under rope_parameters; 4.x has rope_theta + rope_scaling.
    let (rope_theta, rope_type) = match tc.get("rope_parameters").filter(|x| !x.is_null()) {
        Some(rp) => (
            f64_or(
                rp,
                &format!("{section}.rope_parameters"),
                "rope_theta",
                10000.0,
            )?,
            str_or(
                rp,
                &format!("{section}.rope_parameters"),
                "rope_type",
                "default",
            )?,
        ),
        None => {
            let theta = f64_or(tc, section, "rope_theta", 10000.0)?;
            let ty = match tc.get("rope_scaling").filter(|x| !x.is_null()) {
                None => "default".to_string(),
                Some(rs) => rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
            };
            (theta, ty)
        }
    };
    // Dynamic NTK scaling (the original InternVL3 configs carry it) changes nothing until a
    // sequence exceeds max_position_embeddings; the decoder refuses longer sequences then.
    let dynamic_rope = match rope_type.as_str() {
        "default" => false,
        "dynamic" => true,
        other => bail!(
            "config field `{section}`: RoPE type {other:?} is not supported (only default and dynamic)"
        ),
    };
    if bool_or(tc, section, "use_sliding_window", false)? {
        bail!("config field `{section}.use_sliding_window` = true is not supported");
    }
    let eos_token_ids = match tc.get("eos_token_id") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().map(|x| x as u32))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("config field `{section}.eos_token_id`: expected integers"))?,
        Some(x) => vec![x
            .as_u64()
            .ok_or_else(|| anyhow!("config field `{section}.eos_token_id`: expected an integer"))?
            as u32],
    };
    Ok(TextConfig {
        vocab_size: req_usize(tc, section, "vocab_size")?,
        hidden_size,
        intermediate_size: req_usize(tc, section, "intermediate_size")?,
        num_hidden_layers: req_usize(tc, section, "num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f64_or(tc, section, "rms_norm_eps", 1e-6)?,
        rope_theta,
        max_position_embeddings: usize_or(tc, section, "max_position_embeddings", 32768)?,
        hidden_act: Activation::parse(
            &str_or(tc, section, "hidden_act", "silu")?,
            &format!("{section}.hidden_act"),
        )?,
        tie_word_embeddings: bool_or(tc, section, "tie_word_embeddings", default_tie)?,
        eos_token_ids,
        dynamic_rope,
    })
}

fn stored_dtype(top: &Value, text: &Value) -> Result<Option<String>> {
    for (v, key) in [
        (top, "dtype"),
        (top, "torch_dtype"),
        (text, "dtype"),
        (text, "torch_dtype"),
    ] {
        if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
            let s = x
                .as_str()
                .ok_or_else(|| anyhow!("config field `{key}`: expected a string, found {x}"))?;
            match s {
                "float32" | "bfloat16" | "float16" => return Ok(Some(s.to_string())),
                other => bail!("config field `{key}`: unknown dtype {other:?}"),
            }
        }
    }
    Ok(None)
}

fn parse_norm(s: &str) -> Result<NormType> {
    match s {
        "layer_norm" => Ok(NormType::LayerNorm),
        "rms_norm" => Ok(NormType::RmsNorm),
        other => bail!("config field `vision_config.norm_type`: unknown {other:?}"),
    }
}

fn obj<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    match v.get(key) {
        Some(x) if x.is_object() => Ok(x),
        Some(x) => bail!("config field `{key}`: expected an object, found {x}"),
        None => bail!("config field `{key}` is missing"),
    }
}

fn opt_str<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(x) => bail!("config field `{key}`: expected a string, found {x}"),
    }
}

fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn req_usize(v: &Value, sec: &str, key: &str) -> Result<usize> {
    let x = present(v, key).ok_or_else(|| anyhow!("config field `{sec}.{key}` is missing"))?;
    x.as_u64().map(|x| x as usize).ok_or_else(|| {
        anyhow!("config field `{sec}.{key}`: expected a non-negative integer, found {x}")
    })
}

fn usize_or(v: &Value, sec: &str, key: &str, d: usize) -> Result<usize> {
    if present(v, key).is_none() {
        return Ok(d);
    }
    req_usize(v, sec, key)
}

fn u32_or(v: &Value, sec: &str, key: &str, d: u32) -> Result<u32> {
    let x = usize_or(v, sec, key, d as usize)?;
    u32::try_from(x).map_err(|_| anyhow!("config field `{sec}.{key}` = {x} does not fit in u32"))
}

fn f64_or(v: &Value, sec: &str, key: &str, d: f64) -> Result<f64> {
    match present(v, key) {
        None => Ok(d),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| anyhow!("config field `{sec}.{key}`: expected a number, found {x}")),
    }
}

fn req_bool(v: &Value, sec: &str, key: &str) -> Result<bool> {
    let x = present(v, key).ok_or_else(|| anyhow!("config field `{sec}.{key}` is missing"))?;
    x.as_bool()
        .ok_or_else(|| anyhow!("config field `{sec}.{key}`: expected true/false, found {x}"))
}

fn bool_or(v: &Value, sec: &str, key: &str, d: bool) -> Result<bool> {
    if present(v, key).is_none() {
        return Ok(d);
    }
    req_bool(v, sec, key)
}

fn req_str(v: &Value, sec: &str, key: &str) -> Result<String> {
    let x = present(v, key).ok_or_else(|| anyhow!("config field `{sec}.{key}` is missing"))?;
    x.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("config field `{sec}.{key}`: expected a string, found {x}"))
}

fn str_or(v: &Value, sec: &str, key: &str, d: &str) -> Result<String> {
    if present(v, key).is_none() {
        return Ok(d.to_string());
    }
    req_str(v, sec, key)
}

/// `image_size` / `patch_size`: an integer or a `[h, w]` pair.
/// Both must be positive: sizes are divided by patch sizes (a zero panicked).
fn pair_req(v: &Value, sec: &str, key: &str) -> Result<(usize, usize)> {
    let x = present(v, key).ok_or_else(|| anyhow!("config field `{sec}.{key}` is missing"))?;
    let pair = if let Some(n) = x.as_u64() {
        Some((n as usize, n as usize))
    } else if let Some([h, w]) = x.as_array().map(Vec::as_slice) {
        h.as_u64()
            .zip(w.as_u64())
            .map(|(h, w)| (h as usize, w as usize))
    } else {
        None
    };
    match pair {
        Some((h, w)) if h > 0 && w > 0 => Ok((h, w)),
        _ => bail!(
            "config field `{sec}.{key}`: expected a positive integer or [height, width], found {x}"
        ),
    }
}

fn pair_or(v: &Value, sec: &str, key: &str, d: usize) -> Result<(usize, usize)> {
    if present(v, key).is_none() {
        return Ok((d, d));
    }
    pair_req(v, sec, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_4x_rope_theta_and_5x_rope_parameters_alike() {
        let v5 = r#"{"model_type":"internvl","vision_config":{"hidden_size":64,"num_hidden_layers":2,
          "num_attention_heads":4,"intermediate_size":128,"attention_bias":true,"image_size":[448,448],
          "patch_size":[14,14]},"text_config":{"model_type":"qwen2","vocab_size":100,"hidden_size":64,
          "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
          "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}},"dtype":"bfloat16",
          "image_token_id":99}"#;
        let v4 = r#"{"model_type":"internvl","vision_config":{"hidden_size":64,"num_hidden_layers":2,
          "num_attention_heads":4,"intermediate_size":128,"attention_bias":true,"image_size":448,
          "patch_size":14},"text_config":{"model_type":"qwen2","vocab_size":100,"hidden_size":64,
          "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
          "rope_theta":1000000.0,"rope_scaling":null},"torch_dtype":"bfloat16","image_token_id":99}"#;
        let a = InternVlConfig::from_json_str(v5).unwrap();
        let b = InternVlConfig::from_json_str(v4).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.text.rope_theta, 1e6);
        assert_eq!(a.image_seq_length, 256);
        assert_eq!(a.projector_in_dim(), 256);
        assert_eq!(a.stored_dtype.as_deref(), Some("bfloat16"));
        assert!(a.vision.qkv_bias);
    }

    #[test]
    fn original_config_requires_its_fields_and_names_them() {
        let v = r#"{"llm_config":{"architectures":["Qwen2ForCausalLM"],"vocab_size":100,
          "hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,
          "num_key_value_heads":2,"rope_theta":1000000.0},"vision_config":{"hidden_size":64,
          "num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"norm_type":"rms_norm",
          "image_size":448,"patch_size":14,"qkv_bias":false},"downsample_ratio":0.5,"select_layer":-1}"#;
        let err = InternVlConfig::from_json_str(v).unwrap_err().to_string();
        assert!(err.contains("vision_config.qk_normalization"), "{err}");
    }
}
