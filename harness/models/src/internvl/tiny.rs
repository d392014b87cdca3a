//! Seeded random-weight InternVL3 checkpoints, written as a real checkpoint folder.
//!
//! [`write_checkpoint`] writes what transformers 5.x `save_pretrained` writes for
//! `InternVLForConditionalGeneration` (config.json in the 5.x dialect, `model.safetensors` with
//! the current key names and a tied lm_head), plus the tokenizer, chat template, processor and
//! generation configs of the committed `tiny-300m-current` fixture, embedded in the binary so
//! that `faceval demo` needs no file outside itself. The folder then loads through
//! [`super::InternVlModel::load`] like any downloaded checkpoint, so the demo and the
//! benchmarks take exactly the code path of a real model.
//!
//! Weights are drawn uniformly with the variance of a fan-in initialisation (activations stay
//! O(1) through any depth), from a ChaCha8 stream seeded by the run seed and the tensor name, so
//! a folder is a pure function of `(spec, seed)` and each tensor is generated only while it is
//! being written (peak memory is one tensor, even for the InternVL3-1B-sized preset).

// `%` rather than `is_multiple_of`: the workspace's rust-version (1.85) predates it.
#![allow(clippy::manual_is_multiple_of)]

use std::borrow::Cow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, View};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const FIXTURE_TOKENIZER: &str =
    include_str!("../../tests/fixtures/internvl/tiny-300m-current/tokenizer.json");
const FIXTURE_TOKENIZER_CONFIG: &str =
    include_str!("../../tests/fixtures/internvl/tiny-300m-current/tokenizer_config.json");
const FIXTURE_CHAT_TEMPLATE: &str =
    include_str!("../../tests/fixtures/internvl/tiny-300m-current/chat_template.jinja");
const FIXTURE_PROCESSOR_CONFIG: &str =
    include_str!("../../tests/fixtures/internvl/tiny-300m-current/processor_config.json");
const FIXTURE_GENERATION_CONFIG: &str =
    include_str!("../../tests/fixtures/internvl/tiny-300m-current/generation_config.json");

/// Token ids of the fixture tokenizer (see the fixtures README).
const BOS_ID: u32 = 360;
const EOS_ID: u32 = 362;
const IMAGE_TOKEN_ID: u32 = 365;
/// Tokens the fixture tokenizer knows; the vocabulary must cover them.
const TOKENIZER_VOCAB: usize = 373;

/// Dimensions of a generated checkpoint (300M-style vision tower, Qwen2 decoder).
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub vision_intermediate: usize,
    /// Tile side in pixels (square tiles).
    pub image_size: usize,
    pub patch_size: usize,
    pub text_hidden: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_kv_heads: usize,
    pub text_intermediate: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Most tiles per image the processor makes.
    pub max_patches: usize,
    pub tie_word_embeddings: bool,
}

impl TinySpec {
    /// The demo model: small enough that a debug build answers a question in milliseconds.
    /// 112 px tiles of 14 px patches give 16 image tokens per tile; one tile per image.
    pub fn demo() -> Self {
        Self {
            vision_hidden: 32,
            vision_layers: 2,
            vision_heads: 2,
            vision_intermediate: 64,
            image_size: 112,
            patch_size: 14,
            text_hidden: 32,
            text_layers: 2,
            text_heads: 4,
            text_kv_heads: 2,
            text_intermediate: 64,
            vocab_size: TOKENIZER_VOCAB,
            max_position_embeddings: 4096,
            max_patches: 1,
            tie_word_embeddings: true,
        }
    }

    /// The dimensions of InternVL3-1B (InternViT-300M + Qwen2.5-0.5B), for benchmarks.
    pub fn internvl3_1b() -> Self {
        Self {
            vision_hidden: 1024,
            vision_layers: 24,
            vision_heads: 16,
            vision_intermediate: 4096,
            image_size: 448,
            patch_size: 14,
            text_hidden: 896,
            text_layers: 24,
            text_heads: 14,
            text_kv_heads: 2,
            text_intermediate: 4864,
            vocab_size: 151_674,
            max_position_embeddings: 32_768,
            max_patches: 12,
            tie_word_embeddings: true,
        }
    }

    /// `tiny` (the demo model) or `1b` (InternVL3-1B-sized).
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "tiny" | "demo" => Ok(Self::demo()),
            "1b" => Ok(Self::internvl3_1b()),
            other => bail!("unknown checkpoint size {other:?}: expected tiny or 1b"),
        }
    }

    /// Image tokens per tile: patches per tile after the 0.5 pixel shuffle.
    pub fn image_seq_length(&self) -> usize {
        let side = self.image_size / self.patch_size / 2;
        side * side
    }

    fn validate(&self) -> Result<()> {
        let grid = self.image_size / self.patch_size;
        if self.image_size % self.patch_size != 0 || grid % 2 != 0 {
            bail!(
                "image_size {} must be an even number of {} px patches",
                self.image_size,
                self.patch_size
            );
        }
        if self.vision_hidden % self.vision_heads != 0
            || self.text_hidden % self.text_heads != 0
            || self.text_heads % self.text_kv_heads != 0
        {
            bail!("hidden sizes must split evenly into heads, and heads into KV heads");
        }
        if self.vocab_size < TOKENIZER_VOCAB {
            bail!(
                "vocab_size {} is smaller than the tokenizer's {TOKENIZER_VOCAB} tokens",
                self.vocab_size
            );
        }
        Ok(())
    }

    /// Every tensor of the checkpoint: name, shape and how it is drawn.
    fn tensors(&self) -> Vec<(String, Vec<usize>, Init)> {
        let (vh, vi) = (self.vision_hidden, self.vision_intermediate);
        let (th, ti) = (self.text_hidden, self.text_intermediate);
        let hd = th / self.text_heads;
        let (qd, kvd) = (self.text_heads * hd, self.text_kv_heads * hd);
        let p = self.patch_size;
        let positions = (self.image_size / p).pow(2) + 1;
        let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, init: Init| t.push((name, shape, init));
        let v = "model.vision_tower";
        add(
            format!("{v}.embeddings.cls_token"),
            vec![1, 1, vh],
            Init::Embedding,
        );
        add(
            format!("{v}.embeddings.patch_embeddings.projection.weight"),
            vec![vh, 3, p, p],
            Init::FanIn(3 * p * p),
        );
        add(
            format!("{v}.embeddings.patch_embeddings.projection.bias"),
            vec![vh],
            Init::Bias,
        );
        add(
            format!("{v}.embeddings.position_embeddings"),
            vec![1, positions, vh],
            Init::Embedding,
        );
        for i in 0..self.vision_layers {
            let l = format!("{v}.encoder.layer.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "projection_layer"] {
                add(
                    format!("{l}.attention.{proj}.weight"),
                    vec![vh, vh],
                    Init::FanIn(vh),
                );
                add(format!("{l}.attention.{proj}.bias"), vec![vh], Init::Bias);
            }
            add(format!("{l}.lambda_1"), vec![vh], Init::LayerScale);
            add(format!("{l}.lambda_2"), vec![vh], Init::LayerScale);
            for norm in ["layernorm_before", "layernorm_after"] {
                add(format!("{l}.{norm}.weight"), vec![vh], Init::NormWeight);
                add(format!("{l}.{norm}.bias"), vec![vh], Init::Bias);
            }
            add(format!("{l}.mlp.fc1.weight"), vec![vi, vh], Init::FanIn(vh));
            add(format!("{l}.mlp.fc1.bias"), vec![vi], Init::Bias);
            add(format!("{l}.mlp.fc2.weight"), vec![vh, vi], Init::FanIn(vi));
            add(format!("{l}.mlp.fc2.bias"), vec![vh], Init::Bias);
        }
        let m = "model.multi_modal_projector";
        let shuffled = vh * 4;
        add(
            format!("{m}.layer_norm.weight"),
            vec![shuffled],
            Init::NormWeight,
        );
        add(format!("{m}.layer_norm.bias"), vec![shuffled], Init::Bias);
        add(
            format!("{m}.linear_1.weight"),
            vec![th, shuffled],
            Init::FanIn(shuffled),
        );
        add(format!("{m}.linear_1.bias"), vec![th], Init::Bias);
        add(
            format!("{m}.linear_2.weight"),
            vec![th, th],
            Init::FanIn(th),
        );
        add(format!("{m}.linear_2.bias"), vec![th], Init::Bias);
        let lm = "model.language_model";
        // Scaled so that tied logits (unit-RMS hidden state · embedding) have std ≈ 2.
        add(
            format!("{lm}.embed_tokens.weight"),
            vec![self.vocab_size, th],
            Init::Std(2.0 / (th as f32).sqrt()),
        );
        for i in 0..self.text_layers {
            let l = format!("{lm}.layers.{i}");
            add(
                format!("{l}.input_layernorm.weight"),
                vec![th],
                Init::NormWeight,
            );
            add(
                format!("{l}.post_attention_layernorm.weight"),
                vec![th],
                Init::NormWeight,
            );
            add(
                format!("{l}.mlp.gate_proj.weight"),
                vec![ti, th],
                Init::FanIn(th),
            );
            add(
                format!("{l}.mlp.up_proj.weight"),
                vec![ti, th],
                Init::FanIn(th),
            );
            add(
                format!("{l}.mlp.down_proj.weight"),
                vec![th, ti],
                Init::FanIn(ti),
            );
            add(
                format!("{l}.self_attn.q_proj.weight"),
                vec![qd, th],
                Init::FanIn(th),
            );
            add(format!("{l}.self_attn.q_proj.bias"), vec![qd], Init::Bias);
            add(
                format!("{l}.self_attn.k_proj.weight"),
                vec![kvd, th],
                Init::FanIn(th),
            );
            add(format!("{l}.self_attn.k_proj.bias"), vec![kvd], Init::Bias);
            add(
                format!("{l}.self_attn.v_proj.weight"),
                vec![kvd, th],
                Init::FanIn(th),
            );
            add(format!("{l}.self_attn.v_proj.bias"), vec![kvd], Init::Bias);
            add(
                format!("{l}.self_attn.o_proj.weight"),
                vec![th, qd],
                Init::FanIn(qd),
            );
        }
        add(format!("{lm}.norm.weight"), vec![th], Init::NormWeight);
        if !self.tie_word_embeddings {
            add(
                "lm_head.weight".into(),
                vec![self.vocab_size, th],
                Init::Std(2.0 / (th as f32).sqrt()),
            );
        }
        t
    }

    /// Number of parameters the checkpoint holds.
    pub fn param_count(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// config.json in the transformers 5.x dialect, as `save_pretrained` writes it.
    pub fn config_json(&self) -> Value {
        let layer_types = vec!["full_attention"; self.text_layers];
        json!({
            "architectures": ["InternVLForConditionalGeneration"],
            "downsample_ratio": 0.5,
            "dtype": "float32",
            "image_seq_length": self.image_seq_length(),
            "image_token_id": IMAGE_TOKEN_ID,
            "model_type": "internvl",
            "projector_hidden_act": "gelu",
            "text_config": {
                "attention_dropout": 0.0,
                "bos_token_id": BOS_ID,
                "eos_token_id": EOS_ID,
                "hidden_act": "silu",
                "hidden_size": self.text_hidden,
                "initializer_range": 0.02,
                "intermediate_size": self.text_intermediate,
                "layer_types": layer_types,
                "max_position_embeddings": self.max_position_embeddings,
                "max_window_layers": self.text_layers,
                "model_type": "qwen2",
                "num_attention_heads": self.text_heads,
                "num_hidden_layers": self.text_layers,
                "num_key_value_heads": self.text_kv_heads,
                "pad_token_id": null,
                "rms_norm_eps": 1e-6,
                "rope_parameters": {"rope_theta": 1_000_000.0, "rope_type": "default"},
                "sliding_window": null,
                "tie_word_embeddings": self.tie_word_embeddings,
                "use_cache": true,
                "use_sliding_window": false,
                "vocab_size": self.vocab_size
            },
            "tie_word_embeddings": self.tie_word_embeddings,
            "transformers_version": "5.17.0",
            "vision_config": {
                "attention_bias": true,
                "attention_dropout": 0.0,
                "hidden_act": "gelu",
                "hidden_dropout_prob": 0.0,
                "hidden_size": self.vision_hidden,
                "image_size": [self.image_size, self.image_size],
                "initializer_range": 0.02,
                "intermediate_size": self.vision_intermediate,
                "layer_norm_eps": 1e-6,
                "layer_scale_init_value": 0.1,
                "model_type": "internvl_vision",
                "norm_type": "layer_norm",
                "num_attention_heads": self.vision_heads,
                "num_channels": 3,
                "num_hidden_layers": self.vision_layers,
                "patch_size": [self.patch_size, self.patch_size],
                "projection_dropout": 0.0,
                "use_absolute_position_embeddings": true,
                "use_mask_token": false,
                "use_mean_pooling": true,
                "use_qk_norm": false
            },
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default"
        })
    }

    /// The fixture's processor_config.json with this spec's tile size, tile limit and image
    /// token count.
    fn processor_config_json(&self) -> Result<Value> {
        let mut v: Value = serde_json::from_str(FIXTURE_PROCESSOR_CONFIG)
            .context("embedded processor_config.json")?;
        v["image_seq_length"] = json!(self.image_seq_length());
        let ip = &mut v["image_processor"];
        ip["size"] = json!({"height": self.image_size, "width": self.image_size});
        ip["max_patches"] = json!(self.max_patches);
        Ok(v)
    }
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// Uniform with variance 1/fan_in.
    FanIn(usize),
    /// Uniform with this standard deviation.
    Std(f32),
    Bias,
    /// 1 ± 0.1, for norm scales.
    NormWeight,
    /// In [0.5, 1): layer scale large enough that every layer matters.
    LayerScale,
    /// Position embeddings and CLS token.
    Embedding,
}

/// A tensor whose bytes are generated when the safetensors writer asks for them.
struct Lazy {
    name: String,
    shape: Vec<usize>,
    init: Init,
    seed: u64,
}

impl Lazy {
    fn values(&self) -> Vec<f32> {
        let n: usize = self.shape.iter().product();
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(self.name.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        let mut rng = ChaCha8Rng::from_seed(key);
        // A uniform on [-a, a] has standard deviation a / sqrt(3).
        let sym = |std: f32| std * 3f32.sqrt();
        let (lo, hi) = match self.init {
            Init::FanIn(fan_in) => {
                let a = sym(1.0 / (fan_in as f32).sqrt());
                (-a, a)
            }
            Init::Std(s) => (-sym(s), sym(s)),
            Init::Bias => (-0.1, 0.1),
            Init::NormWeight => (0.9, 1.1),
            Init::LayerScale => (0.5, 1.0),
            Init::Embedding => (-0.4, 0.4),
        };
        (0..n).map(|_| rng.gen_range(lo..hi)).collect()
    }
}

impl View for &Lazy {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let mut bytes = Vec::with_capacity(self.data_len());
        for x in self.values() {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }
}

/// Writes a complete checkpoint folder for `spec` with weights drawn from `seed` into `dir`
/// (created if needed; files already there are replaced).
pub fn write_checkpoint(dir: &Path, spec: &TinySpec, seed: u64) -> Result<()> {
    spec.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "config.json",
        &serde_json::to_string_pretty(&spec.config_json())?,
    )?;
    write(
        "processor_config.json",
        &serde_json::to_string_pretty(&spec.processor_config_json()?)?,
    )?;
    write("tokenizer.json", FIXTURE_TOKENIZER)?;
    write("tokenizer_config.json", FIXTURE_TOKENIZER_CONFIG)?;
    write("chat_template.jinja", FIXTURE_CHAT_TEMPLATE)?;
    write("generation_config.json", FIXTURE_GENERATION_CONFIG)?;
    let tensors: Vec<Lazy> = spec
        .tensors()
        .into_iter()
        .map(|(name, shape, init)| Lazy {
            name,
            shape,
            init,
            seed,
        })
        .collect();
    let path = dir.join("model.safetensors");
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    safetensors::serialize_to_file(
        tensors.iter().map(|t| (t.name.clone(), t)),
        Some(metadata),
        &path,
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internvl::InternVlModel;
    use crate::model::{Model, Request};
    use candle_core::{DType, Device};

    #[test]
    fn one_b_preset_has_internvl3_1b_parameter_count() {
        // InternVL3-1B: InternViT-300M (~304M) + projector (~4.5M) + Qwen2.5-0.5B (~494M,
        // tied embeddings) ≈ 0.8B parameters.
        let n = TinySpec::internvl3_1b().param_count() as f64 / 1e9;
        assert!((0.78..0.82).contains(&n), "{n}");
    }

    #[test]
    fn generated_folder_loads_and_answers_deterministically() {
        let spec = TinySpec::demo();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_checkpoint(a.path(), &spec, 7).unwrap();
        write_checkpoint(b.path(), &spec, 7).unwrap();
        let wa = std::fs::read(a.path().join("model.safetensors")).unwrap();
        let wb = std::fs::read(b.path().join("model.safetensors")).unwrap();
        assert_eq!(wa, wb, "same seed, same bytes");
        assert!(wa.len() as u64 > spec.param_count() * 4);
        let mut m =
            InternVlModel::load(&a.path().display().to_string(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(m.info().weight_bytes, spec.param_count() * 4);
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(160, 160, |x, y| {
            image::Rgb([x as u8, y as u8, 90])
        }));
        let req = Request {
            images: vec![std::sync::Arc::new(img)],
            prompt: "Which expression? (A) happy (B) sad".into(),
            max_new_tokens: 6,
            stop: vec![],
            choices: vec!["A".into(), "B".into()],
            choice_texts: vec!["happy".into(), "sad".into()],
            seed: 0,
        };
        let g1 = m.generate(&req).unwrap();
        let g2 = m.generate(&req).unwrap();
        assert_eq!(g1.token_ids, g2.token_ids);
        assert!(!g1.token_ids.is_empty());
        // One 112 px tile of 16 image tokens, plus the chat-template text.
        assert!(g1.prompt_tokens > 16 + 2, "{}", g1.prompt_tokens);
        let lp = m.choice_logprobs(&req).unwrap().unwrap();
        assert_eq!(lp.len(), 2);
        assert!(lp.iter().all(|x| x.is_finite() && *x < 0.0), "{lp:?}");
        let other = tempfile::tempdir().unwrap();
        write_checkpoint(other.path(), &spec, 8).unwrap();
        assert_ne!(
            std::fs::read(other.path().join("model.safetensors")).unwrap(),
            wa
        );
    }
}
