//! CLIP / SigLIP `config.json`, deserialized from the checkpoint's own file.
//!
//! Only the fields the network needs are read; defaults are transformers' `CLIPConfig` /
//! `SiglipConfig` defaults, so a config that leaves a field out means what it means to
//! transformers. Settings candle's modules cannot honour are refused here with the field named.
// `%` checks instead of `is_multiple_of`, which is newer than the workspace's rust-version 1.85.
#![allow(clippy::manual_is_multiple_of)]

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// Which family a checkpoint belongs to (`config.json` `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Clip,
    Siglip,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Clip => "clip",
            Family::Siglip => "siglip",
        }
    }
}

/// One tower's settings (text or vision); fields absent from a tower are unused for it.
#[derive(Debug, Clone, Deserialize)]
pub struct TowerConfig {
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub hidden_act: Option<String>,
    pub layer_norm_eps: Option<f64>,
    // text
    pub vocab_size: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub eos_token_id: Option<serde_json::Value>,
    pub pad_token_id: Option<serde_json::Value>,
    pub projection_size: Option<usize>,
    pub projection_dim: Option<usize>,
    // vision
    pub image_size: Option<usize>,
    pub patch_size: Option<usize>,
    pub num_channels: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    text_config: Option<TowerConfig>,
    vision_config: Option<TowerConfig>,
    projection_dim: Option<usize>,
    logit_scale_init_value: Option<f64>,
    vision_use_head: Option<bool>,
}

/// A resolved tower: every field filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Tower {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub tower: Tower,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// CLIP: the token whose hidden state is pooled (`None` if the config has none).
    pub eos_token_id: Option<u32>,
    /// CLIP projection width; SigLIP `projection_size` (its `head` output width).
    pub projection: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub tower: Tower,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub projection: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotConfig {
    pub family: Family,
    pub text: TextConfig,
    pub vision: VisionConfig,
    /// CLIP: used only when the checkpoint has no `logit_scale` tensor.
    pub logit_scale_init_value: f64,
}

fn token_id(v: &Option<serde_json::Value>, file: &Path, field: &str) -> Result<Option<u32>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|x| Some(x as u32))
            .ok_or_else(|| anyhow!("{}: {field} must be a token id, got {n}", file.display())),
        // A list of eos ids: CLIP pools at the first of them.
        Some(serde_json::Value::Array(a)) => {
            Ok(a.first().and_then(|x| x.as_u64()).map(|x| x as u32))
        }
        Some(other) => bail!(
            "{}: {field} must be a token id, got {other}",
            file.display()
        ),
    }
}

impl ZeroShotConfig {
    /// Reads `dir/config.json`; `model_type` must be `clip` or `siglip`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text, &path)
    }

    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .with_context(|| format!("{}: not a valid CLIP/SigLIP config", path.display()))?;
        let family = match raw.model_type.as_deref() {
            Some("clip") => Family::Clip,
            Some("siglip") => Family::Siglip,
            Some(other) => bail!(
                "{}: model_type {other:?} is not a zero-shot model (expected \"clip\" or \"siglip\")",
                path.display()
            ),
            None => bail!("{}: model_type is missing (expected \"clip\" or \"siglip\")", path.display()),
        };
        let t = raw
            .text_config
            .ok_or_else(|| anyhow!("{}: text_config is missing", path.display()))?;
        let v = raw
            .vision_config
            .ok_or_else(|| anyhow!("{}: vision_config is missing", path.display()))?;
        // transformers' defaults per family.
        let (t_hidden, t_inter, t_heads, t_layers, t_vocab, t_pos, t_act, t_eps) = match family {
            Family::Clip => (512, 2048, 8, 12, 49408, 77, "quick_gelu", 1e-5),
            Family::Siglip => (768, 3072, 12, 12, 32000, 64, "gelu_pytorch_tanh", 1e-6),
        };
        let (v_hidden, v_inter, v_heads, v_layers, v_image, v_patch, v_act, v_eps) = match family {
            Family::Clip => (768, 3072, 12, 12, 224, 32, "quick_gelu", 1e-5),
            Family::Siglip => (768, 3072, 12, 12, 224, 16, "gelu_pytorch_tanh", 1e-6),
        };
        let tower = |c: &TowerConfig, d: (usize, usize, usize, usize, &str, f64)| Tower {
            hidden_size: c.hidden_size.unwrap_or(d.0),
            intermediate_size: c.intermediate_size.unwrap_or(d.1),
            num_attention_heads: c.num_attention_heads.unwrap_or(d.2),
            num_hidden_layers: c.num_hidden_layers.unwrap_or(d.3),
            hidden_act: c.hidden_act.clone().unwrap_or_else(|| d.4.to_string()),
            layer_norm_eps: c.layer_norm_eps.unwrap_or(d.5),
        };
        let text_tower = tower(&t, (t_hidden, t_inter, t_heads, t_layers, t_act, t_eps));
        let vision_tower = tower(&v, (v_hidden, v_inter, v_heads, v_layers, v_act, v_eps));
        let clip_proj = raw.projection_dim.unwrap_or(512);
        let text_projection = match family {
            Family::Clip => t.projection_dim.unwrap_or(clip_proj),
            Family::Siglip => t.projection_size.unwrap_or(text_tower.hidden_size),
        };
        let vision_projection = match family {
            Family::Clip => v.projection_dim.unwrap_or(clip_proj),
            Family::Siglip => vision_tower.hidden_size,
        };
        // CLIP's top-level projection_dim is what CLIPModel builds both projections with.
        let (text_projection, vision_projection) = match family {
            Family::Clip => (clip_proj, clip_proj),
            Family::Siglip => (text_projection, vision_projection),
        };
        let cfg = ZeroShotConfig {
            family,
            text: TextConfig {
                vocab_size: t.vocab_size.unwrap_or(t_vocab),
                max_position_embeddings: t.max_position_embeddings.unwrap_or(t_pos),
                eos_token_id: token_id(&t.eos_token_id, path, "text_config.eos_token_id")?,
                projection: text_projection,
                tower: text_tower,
            },
            vision: VisionConfig {
                image_size: v.image_size.unwrap_or(v_image),
                patch_size: v.patch_size.unwrap_or(v_patch),
                num_channels: v.num_channels.unwrap_or(3),
                projection: vision_projection,
                tower: vision_tower,
            },
            logit_scale_init_value: raw.logit_scale_init_value.unwrap_or(2.6592),
        };
        if family == Family::Siglip && raw.vision_use_head == Some(false) {
            bail!(
                "{}: vision_use_head = false is not supported (SigLIP zero-shot pools with the attention head)",
                path.display()
            );
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let p = path.display();
        for (name, t) in [
            ("text_config", &self.text.tower),
            ("vision_config", &self.vision.tower),
        ] {
            if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
                bail!(
                    "{p}: {name}.hidden_size {} is not a multiple of num_attention_heads {}",
                    t.hidden_size,
                    t.num_attention_heads
                );
            }
            match self.family {
                // candle's CLIP towers hard-code quick_gelu and LayerNorm eps 1e-5, which is what
                // every OpenAI CLIP checkpoint uses; anything else would silently differ.
                Family::Clip => {
                    if t.hidden_act != "quick_gelu" {
                        bail!(
                            "{p}: {name}.hidden_act {:?} is not supported for CLIP (only quick_gelu)",
                            t.hidden_act
                        );
                    }
                    if (t.layer_norm_eps - 1e-5).abs() > 1e-12 {
                        bail!(
                            "{p}: {name}.layer_norm_eps {} is not supported for CLIP (only 1e-5)",
                            t.layer_norm_eps
                        );
                    }
                }
                Family::Siglip => {
                    if siglip_activation(&t.hidden_act).is_none() {
                        bail!("{p}: {name}.hidden_act {:?} is not supported", t.hidden_act);
                    }
                }
            }
        }
        let v = &self.vision;
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            bail!(
                "{p}: vision_config.image_size {} is not a multiple of patch_size {}",
                v.image_size,
                v.patch_size
            );
        }
        if self.family == Family::Siglip && self.text.projection != self.text.tower.hidden_size {
            // candle's SigLIP text head is hidden -> hidden.
            bail!(
                "{p}: text_config.projection_size {} differs from hidden_size {} (not supported)",
                self.text.projection,
                self.text.tower.hidden_size
            );
        }
        Ok(())
    }
}

/// candle's activation for a transformers `hidden_act` name (SigLIP towers).
pub fn siglip_activation(name: &str) -> Option<candle_nn::Activation> {
    use candle_nn::Activation as A;
    Some(match name {
        "gelu_pytorch_tanh" | "gelu_new" => A::GeluPytorchTanh,
        "gelu" => A::Gelu,
        "relu" => A::Relu,
        "silu" => A::Silu,
        _ => return None,
    })
}
