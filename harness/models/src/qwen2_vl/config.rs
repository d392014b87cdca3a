//! Qwen2-VL / Qwen2.5-VL configuration read from a checkpoint's own `config.json`.
//!
//! Two dialects are read into one [`Qwen2VlConfig`]: transformers 5.x (`text_config` with
//! `rope_parameters`) and the hub files written by transformers 4.x (text fields at the top
//! level, `rope_scaling: {"type": "mrope", "mrope_section": [...]}`, `rope_theta`, a vision
//! config with `in_chans`). Where transformers gives a field a default, the same default is
//! used here and named in a comment; a RoPE type other than M-RoPE / default is an error, since
//! the model would silently compute other positions.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// Which vision tower the checkpoint carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `Qwen2VLForConditionalGeneration`: LayerNorm + GELU-MLP blocks, full attention.
    Qwen2Vl,
    /// `Qwen2_5_VLForConditionalGeneration`: RMSNorm + SwiGLU blocks, window attention except
    /// in `fullatt_block_indexes`.
    Qwen25Vl,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2Vl => "qwen2_vl",
            Self::Qwen25Vl => "qwen2_5_vl",
        }
    }
}

/// Activations named in these configs (transformers' ACT2FN names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    QuickGelu,
    Silu,
    /// Exact (erf) GELU: ACT2FN["gelu"].
    Gelu,
    GeluTanh,
}

impl Act {
    fn parse(s: &str, file: &Path, key: &str) -> Result<Self> {
        Ok(match s {
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "gelu" => Self::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" => Self::GeluTanh,
            other => bail!(
                "{}: `{key}` is {other:?}; supported: quick_gelu, silu, gelu, gelu_pytorch_tanh",
                file.display()
            ),
        })
    }

    pub fn apply(self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Silu => candle_nn::ops::silu(xs),
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VisionConfig {
    pub depth: usize,
    /// Width of the vision blocks (`embed_dim` in Qwen2-VL, `hidden_size` in Qwen2.5-VL).
    pub embed_dim: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    /// Width of the block MLP (`embed_dim * mlp_ratio`, or `intermediate_size`).
    pub mlp_dim: usize,
    pub hidden_act: Act,
    /// Width of the merger's output: the language model's hidden size.
    pub out_dim: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    /// Qwen2.5-VL only: window side in pixels, and the blocks that attend over the whole image.
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub rope_theta: f64,
}

impl VisionConfig {
    /// Values per flattened patch: channels × temporal × patch × patch.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
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
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Rotary frequencies given to the temporal, height and width positions, in that order.
    pub mrope_section: [usize; 3],
    pub hidden_act: Act,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Qwen2VlConfig {
    pub family: Family,
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub image_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

impl Qwen2VlConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = crate::checkpoint::read_json(path)?;
        Self::from_value(&v, path)
    }

    pub fn from_value(v: &Value, file: &Path) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let archs: Vec<&str> = v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let family = if model_type == "qwen2_5_vl"
            || archs.contains(&"Qwen2_5_VLForConditionalGeneration")
        {
            Family::Qwen25Vl
        } else if model_type == "qwen2_vl" || archs.contains(&"Qwen2VLForConditionalGeneration") {
            Family::Qwen2Vl
        } else {
            bail!(
                "{}: model_type {model_type:?} is neither qwen2_vl nor qwen2_5_vl",
                file.display()
            );
        };
        // transformers 5.x nests the text fields; 4.x hub files keep them at the top level.
        let tc = v.get("text_config").filter(|t| t.is_object()).unwrap_or(v);
        let vc = v
            .get("vision_config")
            .filter(|t| t.is_object())
            .ok_or_else(|| anyhow!("{}: no `vision_config` object", file.display()))?;
        let text = parse_text(tc, v, file)?;
        let vision = parse_vision(vc, family, file)?;
        if vision.out_dim != text.hidden_size {
            bail!(
                "{}: the vision merger outputs {} values per token but the text hidden_size is {}",
                file.display(),
                vision.out_dim,
                text.hidden_size
            );
        }
        // Qwen2VLConfig's defaults.
        let image_token_id = u32_or(v, "image_token_id", 151655, file)?;
        let vision_start_token_id = u32_or(v, "vision_start_token_id", 151652, file)?;
        let vision_end_token_id = u32_or(v, "vision_end_token_id", 151653, file)?;
        if image_token_id as usize >= text.vocab_size {
            bail!(
                "{}: image_token_id {image_token_id} is outside the vocabulary of {} tokens",
                file.display(),
                text.vocab_size
            );
        }
        Ok(Self {
            family,
            vision,
            text,
            image_token_id,
            vision_start_token_id,
            vision_end_token_id,
        })
    }
}

fn parse_text(tc: &Value, top: &Value, file: &Path) -> Result<TextConfig> {
    let hidden_size = req_usize(tc, "hidden_size", file)?;
    let num_attention_heads = req_usize(tc, "num_attention_heads", file)?;
    if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
        bail!(
            "{}: hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}",
            file.display()
        );
    }
    // Qwen2VLAttention always uses hidden_size / num_heads.
    let head_dim = hidden_size / num_attention_heads;
    let num_key_value_heads = usize_or(tc, "num_key_value_heads", num_attention_heads, file)?;
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        bail!(
            "{}: num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}",
            file.display()
        );
    }
    // RoPE: transformers 5 `rope_parameters`, else 4.x `rope_scaling` (text or top level).
    let rope = tc
        .get("rope_parameters")
        .or_else(|| tc.get("rope_scaling"))
        .or_else(|| top.get("rope_scaling"))
        .filter(|r| !r.is_null());
    let rope_type = rope
        .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if rope_type != "default" && rope_type != "mrope" {
        bail!(
            "{}: unsupported rope_scaling type {rope_type:?} (Qwen2-VL checkpoints use \"mrope\" / \"default\")",
            file.display()
        );
    }
    let rope_theta = rope
        .and_then(|r| r.get("rope_theta"))
        .or_else(|| tc.get("rope_theta"))
        .or_else(|| top.get("rope_theta"))
        .map(|x| {
            x.as_f64()
                .ok_or_else(|| anyhow!("{}: `rope_theta` must be a number", file.display()))
        })
        .transpose()?
        .unwrap_or(1_000_000.0); // Qwen2VLTextConfig.default_theta
    let mrope_section = match rope.and_then(|r| r.get("mrope_section")) {
        None => [16, 24, 24], // Qwen2VLRotaryEmbedding's default
        Some(s) => {
            let a: Vec<usize> = s
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|x| x as usize))
                        .collect()
                })
                .unwrap_or_default();
            if a.len() != 3 {
                bail!(
                    "{}: `mrope_section` must be three integers, got {s}",
                    file.display()
                );
            }
            [a[0], a[1], a[2]]
        }
    };
    if mrope_section.iter().sum::<usize>() * 2 != head_dim {
        bail!(
            "{}: mrope_section {:?} sums to {} but the head dimension {head_dim} needs {}",
            file.display(),
            mrope_section,
            mrope_section.iter().sum::<usize>(),
            head_dim / 2
        );
    }
    let act = tc
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    let tie = tc
        .get("tie_word_embeddings")
        .or_else(|| top.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut eos_token_ids = Vec::new();
    for src in [tc, top] {
        match src.get("eos_token_id") {
            Some(Value::Number(n)) => eos_token_ids.extend(n.as_u64().map(|x| x as u32)),
            Some(Value::Array(a)) => {
                eos_token_ids.extend(a.iter().filter_map(Value::as_u64).map(|x| x as u32))
            }
            _ => {}
        }
    }
    eos_token_ids.dedup();
    Ok(TextConfig {
        vocab_size: req_usize(tc, "vocab_size", file)?,
        hidden_size,
        intermediate_size: req_usize(tc, "intermediate_size", file)?,
        num_hidden_layers: req_usize(tc, "num_hidden_layers", file)?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: tc
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-6),
        rope_theta,
        mrope_section,
        hidden_act: Act::parse(act, file, "text hidden_act")?,
        max_position_embeddings: usize_or(tc, "max_position_embeddings", 32768, file)?,
        tie_word_embeddings: tie,
        eos_token_ids,
    })
}

fn parse_vision(vc: &Value, family: Family, file: &Path) -> Result<VisionConfig> {
    let (embed_dim, mlp_dim, out_dim, default_act) = match family {
        Family::Qwen2Vl => {
            // Qwen2VLVisionConfig: embed_dim 1280, mlp_ratio 4, hidden_size 3584 (the merger's
            // output width), quick_gelu.
            let e = usize_or(vc, "embed_dim", 1280, file)?;
            let ratio = vc.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0);
            (
                e,
                (e as f64 * ratio) as usize,
                usize_or(vc, "hidden_size", 3584, file)?,
                "quick_gelu",
            )
        }
        Family::Qwen25Vl => (
            usize_or(vc, "hidden_size", 3584, file)?,
            usize_or(vc, "intermediate_size", 3420, file)?,
            usize_or(vc, "out_hidden_size", 3584, file)?,
            "silu",
        ),
    };
    let num_heads = usize_or(vc, "num_heads", 16, file)?;
    if num_heads == 0 || embed_dim % num_heads != 0 || (embed_dim / num_heads) % 4 != 0 {
        bail!(
            "{}: vision width {embed_dim} must split into {num_heads} heads whose size is a multiple of 4 (2D rotary)",
            file.display()
        );
    }
    let act = vc
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or(default_act);
    let rope_theta = vc
        .get("rope_parameters")
        .and_then(|r| r.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0);
    let fullatt = match vc.get("fullatt_block_indexes") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64().map(|x| x as usize).ok_or_else(|| {
                    anyhow!(
                        "{}: `fullatt_block_indexes` must hold integers",
                        file.display()
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
        _ if family == Family::Qwen25Vl => vec![7, 15, 23, 31],
        _ => vec![],
    };
    let cfg = VisionConfig {
        depth: usize_or(vc, "depth", 32, file)?,
        embed_dim,
        num_heads,
        head_dim: embed_dim / num_heads,
        mlp_dim,
        hidden_act: Act::parse(act, file, "vision_config.hidden_act")?,
        out_dim,
        in_channels: usize_or(vc, "in_channels", usize_or(vc, "in_chans", 3, file)?, file)?,
        patch_size: usize_or(vc, "patch_size", 14, file)?,
        temporal_patch_size: usize_or(vc, "temporal_patch_size", 2, file)?,
        spatial_merge_size: usize_or(vc, "spatial_merge_size", 2, file)?,
        window_size: usize_or(vc, "window_size", 112, file)?,
        fullatt_block_indexes: fullatt,
        rope_theta,
    };
    if cfg.patch_size == 0 || cfg.spatial_merge_size == 0 || cfg.temporal_patch_size == 0 {
        bail!("{}: vision patch sizes must be positive", file.display());
    }
    if family == Family::Qwen25Vl && cfg.window_size < cfg.patch_size * cfg.spatial_merge_size {
        bail!(
            "{}: window_size {} is smaller than one merged patch ({} px)",
            file.display(),
            cfg.window_size,
            cfg.patch_size * cfg.spatial_merge_size
        );
    }
    Ok(cfg)
}

fn req_usize(v: &Value, key: &str, file: &Path) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| {
            anyhow!(
                "{}: `{key}` is missing or not a non-negative integer",
                file.display()
            )
        })
}

fn usize_or(v: &Value, key: &str, d: usize, file: &Path) -> Result<usize> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(d),
        Some(x) => x.as_u64().map(|x| x as usize).ok_or_else(|| {
            anyhow!(
                "{}: `{key}` must be a non-negative integer, got {x}",
                file.display()
            )
        }),
    }
}

fn u32_or(v: &Value, key: &str, d: u32, file: &Path) -> Result<u32> {
    usize_or(v, key, d as usize, file).map(|x| x as u32)
}
