//! LLaVA weights: the tensor names of every llava-hf spelling mapped onto one canonical set,
//! checked against the shapes the config implies, then handed to candle's modules through a
//! `VarBuilder`.
//!
//! Three spellings exist for the same tensors: the hub repos' (`vision_tower.vision_model.*`,
//! `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.weight`),
//! transformers 5's `save_pretrained` (`vision_tower.*` without `vision_model.`), and
//! transformers 5's in-memory names (`model.vision_tower.*`, `model.language_model.*`,
//! `lm_head.weight`). Everything is checked before candle builds a module, because
//! candle-transformers' `Llama::load` unwraps (panics) on a missing tensor.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::LlavaConfig;
use crate::checkpoint::CheckpointFiles;

/// Canonical name (the path candle's modules ask for) of a checkpoint tensor name, or `None`
/// for names LLaVA does not use (e.g. CLIP's old `position_ids` buffer).
pub fn canonical_name(name: &str) -> Option<String> {
    let n = name;
    let n = n.strip_prefix("model.").filter(|rest| {
        rest.starts_with("vision_tower.")
            || rest.starts_with("multi_modal_projector.")
            || rest.starts_with("language_model.")
    });
    let n = n.unwrap_or(name);
    if n.ends_with("position_ids") {
        return None;
    }
    if let Some(rest) = n.strip_prefix("vision_tower.") {
        let rest = rest.strip_prefix("vision_model.").unwrap_or(rest);
        return Some(format!("vision.{rest}"));
    }
    if let Some(rest) = n.strip_prefix("multi_modal_projector.") {
        return Some(format!("projector.{rest}"));
    }
    if let Some(rest) = n.strip_prefix("language_model.") {
        // Legacy: language_model.model.* and language_model.lm_head.weight; current (after
        // the `model.` prefix was stripped above): language_model.* is the decoder itself.
        if rest.starts_with("model.") || rest.starts_with("lm_head.") {
            return Some(format!("text.{rest}"));
        }
        if name.starts_with("model.") {
            return Some(format!("text.model.{rest}"));
        }
        return None;
    }
    if n == "lm_head.weight" {
        return Some("text.lm_head.weight".into());
    }
    None
}

/// Every tensor the network needs, with its shape.
pub fn expected_shapes(c: &LlavaConfig) -> Vec<(String, Vec<usize>)> {
    let v = &c.vision;
    let t = &c.text;
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let d = v.hidden_size;
    let mut push = |n: String, s: Vec<usize>| out.push((n, s));
    push("vision.embeddings.class_embedding".into(), vec![d]);
    push(
        "vision.embeddings.patch_embedding.weight".into(),
        vec![d, v.num_channels, v.patch_size, v.patch_size],
    );
    push(
        "vision.embeddings.position_embedding.weight".into(),
        vec![v.num_patches() + 1, d],
    );
    for ln in ["pre_layrnorm", "post_layernorm"] {
        push(format!("vision.{ln}.weight"), vec![d]);
        push(format!("vision.{ln}.bias"), vec![d]);
    }
    for i in 0..v.num_hidden_layers {
        let p = format!("vision.encoder.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            push(format!("{p}.self_attn.{proj}.weight"), vec![d, d]);
            push(format!("{p}.self_attn.{proj}.bias"), vec![d]);
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            push(format!("{p}.{ln}.weight"), vec![d]);
            push(format!("{p}.{ln}.bias"), vec![d]);
        }
        push(format!("{p}.mlp.fc1.weight"), vec![v.intermediate_size, d]);
        push(format!("{p}.mlp.fc1.bias"), vec![v.intermediate_size]);
        push(format!("{p}.mlp.fc2.weight"), vec![d, v.intermediate_size]);
        push(format!("{p}.mlp.fc2.bias"), vec![d]);
    }
    let h = t.hidden_size;
    push("projector.linear_1.weight".into(), vec![h, d]);
    push("projector.linear_2.weight".into(), vec![h, h]);
    if c.projector_bias {
        push("projector.linear_1.bias".into(), vec![h]);
        push("projector.linear_2.bias".into(), vec![h]);
    }
    let kv = t.num_key_value_heads * t.head_dim();
    push(
        "text.model.embed_tokens.weight".into(),
        vec![t.vocab_size, h],
    );
    push("text.model.norm.weight".into(), vec![h]);
    if !t.tie_word_embeddings {
        push("text.lm_head.weight".into(), vec![t.vocab_size, h]);
    }
    for i in 0..t.num_hidden_layers {
        let p = format!("text.model.layers.{i}");
        push(format!("{p}.self_attn.q_proj.weight"), vec![h, h]);
        push(format!("{p}.self_attn.k_proj.weight"), vec![kv, h]);
        push(format!("{p}.self_attn.v_proj.weight"), vec![kv, h]);
        push(format!("{p}.self_attn.o_proj.weight"), vec![h, h]);
        push(
            format!("{p}.mlp.gate_proj.weight"),
            vec![t.intermediate_size, h],
        );
        push(
            format!("{p}.mlp.up_proj.weight"),
            vec![t.intermediate_size, h],
        );
        push(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, t.intermediate_size],
        );
        push(format!("{p}.input_layernorm.weight"), vec![h]);
        push(format!("{p}.post_attention_layernorm.weight"), vec![h]);
    }
    out
}

/// The checkpoint's tensors under canonical names, checked and converted to `dtype`.
pub struct LoadedWeights {
    pub tensors: HashMap<String, Tensor>,
    pub bytes: u64,
}

impl LoadedWeights {
    /// Reads every safetensors file of `files`, renames, checks names and shapes against
    /// `config`, and converts to `dtype` on `device`. Errors name the tensor (as the
    /// checkpoint spells it), its file and both shapes.
    pub fn load(
        files: &CheckpointFiles,
        config: &LlavaConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        // Headers first (names, shapes), so shape errors come before any weight is read.
        let mut files_st = Vec::with_capacity(files.weights.len());
        for path in &files.weights {
            // SAFETY: the file is only read; the mapping lives as long as `files_st`, as in
            // the InternVL loader.
            let st = unsafe { MmapedSafetensors::new(path) }
                .with_context(|| format!("cannot read weights {}", path.display()))?;
            files_st.push(st);
        }
        // canonical -> (checkpoint name, file index, shape)
        let mut found: HashMap<String, (String, usize, Vec<usize>)> = HashMap::new();
        let mut example_prefix: Option<String> = None;
        for (fi, st) in files_st.iter().enumerate() {
            for (name, view) in st.tensors() {
                let Some(canon) = canonical_name(&name) else {
                    continue;
                };
                if canon.starts_with("vision.") && example_prefix.is_none() {
                    example_prefix = name.split("embeddings.").next().map(str::to_owned);
                }
                if let Some((prev, prev_file, _)) = found.get(&canon) {
                    bail!(
                        "tensor `{name}` in {} and `{prev}` in {} are the same weight under two spellings",
                        files.weights[fi].display(),
                        files.weights[*prev_file].display()
                    );
                }
                found.insert(canon, (name, fi, view.shape().to_vec()));
            }
        }
        let expected = expected_shapes(config);
        let mut plan = Vec::with_capacity(expected.len());
        for (canon, shape) in expected {
            let Some((name, fi, got)) = found.remove(&canon) else {
                bail!(
                    "{}: the checkpoint lacks tensor `{}` (shape {:?}), which the config needs",
                    files.dir.display(),
                    spelled(&canon, example_prefix.as_deref()),
                    shape
                );
            };
            if got != shape {
                bail!(
                    "tensor `{name}` in {} has shape {:?} but config.json implies {:?}",
                    files.weights[fi].display(),
                    got,
                    shape
                );
            }
            plan.push((canon, name, fi));
        }
        let mut tensors = HashMap::new();
        let mut bytes = 0u64;
        for (canon, name, fi) in plan {
            let t = files_st[fi]
                .load(&name, device)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(|e| {
                    anyhow!(
                        "loading tensor `{name}` from {}: {e}",
                        files.weights[fi].display()
                    )
                })?;
            bytes += (t.elem_count() * dtype.size_in_bytes()) as u64;
            tensors.insert(canon, t);
        }
        Ok(Self { tensors, bytes })
    }

    /// A VarBuilder over the canonical tensors.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), dtype, device)
    }
}

/// How a missing canonical tensor would be spelled in the hub layout (for error messages).
fn spelled(canon: &str, vision_prefix: Option<&str>) -> String {
    if let Some(rest) = canon.strip_prefix("vision.") {
        format!(
            "{}{rest}",
            vision_prefix.unwrap_or("vision_tower.vision_model.")
        )
    } else if let Some(rest) = canon.strip_prefix("projector.") {
        format!("multi_modal_projector.{rest}")
    } else if let Some(rest) = canon.strip_prefix("text.") {
        format!("language_model.{rest}")
    } else {
        canon.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_name;

    #[test]
    fn all_spellings_meet() {
        let v = "vision.encoder.layers.0.mlp.fc1.weight";
        for n in [
            "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
            "vision_tower.encoder.layers.0.mlp.fc1.weight",
            "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
        ] {
            assert_eq!(canonical_name(n).as_deref(), Some(v), "{n}");
        }
        let t = "text.model.layers.1.self_attn.q_proj.weight";
        for n in [
            "language_model.model.layers.1.self_attn.q_proj.weight",
            "model.language_model.layers.1.self_attn.q_proj.weight",
        ] {
            assert_eq!(canonical_name(n).as_deref(), Some(t), "{n}");
        }
        assert_eq!(
            canonical_name("lm_head.weight").as_deref(),
            Some("text.lm_head.weight")
        );
        assert_eq!(
            canonical_name("language_model.lm_head.weight").as_deref(),
            Some("text.lm_head.weight")
        );
        assert_eq!(
            canonical_name("model.multi_modal_projector.linear_2.bias").as_deref(),
            Some("projector.linear_2.bias")
        );
        assert_eq!(
            canonical_name("vision_tower.vision_model.embeddings.position_ids"),
            None
        );
    }
}
