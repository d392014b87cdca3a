//! Checkpoint folders and their safetensors weights.
//!
//! A folder holds `config.json`, a tokenizer, and either `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. The files are memory-mapped (candle's `MmapedSafetensors`)
//! and each tensor is copied to the device only when a module asks for it.
//!
//! The network code asks for tensors by their name in the **current transformers layout**
//! (`model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`,
//! `lm_head.weight`). [`Layout`] translates that name into the one the file carries: the legacy
//! transformers layout that `save_pretrained` writes, or the original InternVLChatModel layout
//! whose fused `attn.qkv` is split by rows into q, k and v (as transformers'
//! `convert_internvl_weights_to_hf.py` does). Every request states the shape config.json implies,
//! so a checkpoint that disagrees with its config fails naming the tensor and both shapes.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{check_safetensors_header, CheckpointFiles};
use crate::nn::TensorSource;

/// The tensor-name layout a checkpoint was saved in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.weight`.
    TransformersCurrent,
    /// `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.*`.
    TransformersLegacy,
    /// InternVLChatModel: `vision_model.*`, `mlp1.*`, `language_model.model.*`.
    Original,
}

impl Layout {
    /// Decides from the tensor names alone.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let (mut cur, mut leg, mut orig) = (0usize, 0usize, 0usize);
        for n in names {
            if n.starts_with("model.vision_tower.")
                || n.starts_with("model.language_model.")
                || n.starts_with("model.multi_modal_projector.")
            {
                cur += 1;
            } else if n.starts_with("vision_tower.") || n.starts_with("multi_modal_projector.") {
                leg += 1;
            } else if n.starts_with("vision_model.") || n.starts_with("mlp1.") {
                orig += 1;
            }
        }
        match (cur > 0, leg > 0, orig > 0) {
            (true, false, false) => Ok(Self::TransformersCurrent),
            (false, true, false) => Ok(Self::TransformersLegacy),
            (false, false, true) => Ok(Self::Original),
            (false, false, false) => bail!(
                "no InternVL tensors found: expected names starting with `model.vision_tower.`, \
                 `vision_tower.` or `vision_model.`"
            ),
            _ => bail!(
                "tensor names mix checkpoint layouts ({cur} current-transformers, {leg} \
                 legacy-transformers, {orig} original InternVLChatModel names)"
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::TransformersCurrent => "transformers-current",
            Self::TransformersLegacy => "transformers-legacy",
            Self::Original => "internvl-chat-original",
        }
    }

    /// Where a current-layout name lives in this layout.
    fn map(&self, canonical: &str) -> Mapped {
        match self {
            Self::TransformersCurrent => Mapped::Plain(canonical.to_string()),
            Self::TransformersLegacy => Mapped::Plain(
                if let Some(r) = canonical.strip_prefix("model.language_model.") {
                    format!("language_model.model.{r}")
                } else if canonical == "lm_head.weight" {
                    "language_model.lm_head.weight".to_string()
                } else if let Some(r) = canonical.strip_prefix("model.") {
                    r.to_string()
                } else {
                    canonical.to_string()
                },
            ),
            Self::Original => map_original(canonical),
        }
    }
}

enum Mapped {
    Plain(String),
    /// Rows `part*n..(part+1)*n` of a fused `[3n, ...]` tensor.
    Split {
        name: String,
        part: usize,
    },
}

fn map_original(canonical: &str) -> Mapped {
    if let Some(r) = canonical.strip_prefix("model.language_model.") {
        return Mapped::Plain(format!("language_model.model.{r}"));
    }
    if canonical == "lm_head.weight" {
        return Mapped::Plain("language_model.lm_head.weight".to_string());
    }
    if let Some(r) = canonical.strip_prefix("model.multi_modal_projector.") {
        let r = r
            .replacen("layer_norm.", "0.", 1)
            .replacen("linear_1.", "1.", 1)
            .replacen("linear_2.", "3.", 1);
        return Mapped::Plain(format!("mlp1.{r}"));
    }
    let Some(r) = canonical.strip_prefix("model.vision_tower.") else {
        return Mapped::Plain(canonical.to_string());
    };
    let fixed = [
        ("embeddings.cls_token", "embeddings.class_embedding"),
        (
            "embeddings.position_embeddings",
            "embeddings.position_embedding",
        ),
        (
            "embeddings.patch_embeddings.projection.weight",
            "embeddings.patch_embedding.weight",
        ),
        (
            "embeddings.patch_embeddings.projection.bias",
            "embeddings.patch_embedding.bias",
        ),
    ];
    for (from, to) in fixed {
        if r == from {
            return Mapped::Plain(format!("vision_model.{to}"));
        }
    }
    if let Some(rest) = r.strip_prefix("encoder.layer.") {
        let (idx, field) = rest.split_once('.').unwrap_or((rest, ""));
        let base = format!("vision_model.encoder.layers.{idx}");
        for (part, p) in ["q_proj.", "k_proj.", "v_proj."].iter().enumerate() {
            if let Some(suffix) = field
                .strip_prefix("attention.")
                .and_then(|f| f.strip_prefix(p))
            {
                return Mapped::Split {
                    name: format!("{base}.attn.qkv.{suffix}"),
                    part,
                };
            }
        }
        let f = match field {
            "lambda_1" => "ls1".to_string(),
            "lambda_2" => "ls2".to_string(),
            f => f
                .replacen("attention.projection_layer.", "attn.proj.", 1)
                .replacen("attention.q_norm.", "attn.q_norm.", 1)
                .replacen("attention.k_norm.", "attn.k_norm.", 1)
                .replacen("layernorm_before.", "norm1.", 1)
                .replacen("layernorm_after.", "norm2.", 1),
        };
        return Mapped::Plain(format!("{base}.{f}"));
    }
    Mapped::Plain(format!("vision_model.{r}"))
}

/// Memory-mapped weights plus the layout translation; hands out device tensors of the
/// requested dtype after checking their shape.
pub struct Weights {
    st: MmapedSafetensors,
    names: HashMap<String, Vec<usize>>,
    layout: Layout,
    device: Device,
    dtype: DType,
    origin: PathBuf,
    loaded_bytes: std::cell::Cell<u64>,
}

impl Weights {
    pub fn open(files: &CheckpointFiles, device: &Device, dtype: DType) -> Result<Self> {
        for p in &files.weights {
            check_safetensors_header(p)?;
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader (candle's
        // VarBuilder included) this assumes no other process truncates them while we run.
        let st = unsafe { MmapedSafetensors::multi(&files.weights) }
            .map_err(|e| anyhow!("corrupt weights in {}: {e}", files.dir.display()))?;
        let mut names = HashMap::new();
        for (name, view) in st.tensors() {
            names.insert(name, view.shape().to_vec());
        }
        let layout = Layout::detect(names.keys().map(String::as_str))
            .with_context(|| format!("weights in {}", files.dir.display()))?;
        Ok(Self {
            st,
            names,
            layout,
            device: device.clone(),
            dtype,
            origin: files.dir.clone(),
            loaded_bytes: std::cell::Cell::new(0),
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the tensor behind a current-layout name exists in the file.
    pub fn contains(&self, canonical: &str) -> bool {
        match self.layout.map(canonical) {
            Mapped::Plain(n) | Mapped::Split { name: n, .. } => self.names.contains_key(&n),
        }
    }

    /// Loads `canonical` with the shape config.json implies, in the model dtype.
    pub fn get(&self, canonical: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(canonical, shape, self.dtype)
    }

    /// Bytes of the tensors handed out so far (in their loaded dtype).
    pub fn loaded_bytes(&self) -> u64 {
        self.loaded_bytes.get()
    }

    /// Same as [`Weights::get`] but converted to `dtype`.
    pub fn get_as(&self, canonical: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        self.loaded_bytes
            .set(self.loaded_bytes.get() + (n * dtype.size_in_bytes()) as u64);
        match self.layout.map(canonical) {
            Mapped::Plain(name) => {
                let t = self.raw(&name, canonical, shape)?;
                Ok(t.to_dtype(dtype)?)
            }
            Mapped::Split { name, part } => {
                let mut fused = shape.to_vec();
                fused[0] *= 3;
                let t = self.raw(&name, canonical, &fused)?;
                Ok(t.narrow(0, part * shape[0], shape[0])?
                    .contiguous()?
                    .to_dtype(dtype)?)
            }
        }
    }

    fn raw(&self, name: &str, canonical: &str, shape: &[usize]) -> Result<Tensor> {
        let what = if name == canonical {
            format!("`{name}`")
        } else {
            format!("`{name}` (for `{canonical}`)")
        };
        let Some(found) = self.names.get(name) else {
            bail!(
                "checkpoint {} ({} layout) is missing tensor {what}; config.json implies shape {:?}",
                self.origin.display(),
                self.layout.name(),
                shape
            );
        };
        if found.as_slice() != shape {
            bail!(
                "checkpoint {}: tensor {what} has shape {:?}, but config.json implies {:?}",
                self.origin.display(),
                found,
                shape
            );
        }
        let view = self.st.get(name)?;
        match DType::try_from(view.dtype()) {
            Ok(DType::F32 | DType::F16 | DType::BF16) => {}
            _ => bail!(
                "checkpoint {}: tensor {what} has dtype {:?}; only F32, F16 and BF16 are supported",
                self.origin.display(),
                view.dtype()
            ),
        }
        view.load(&self.device)
            .with_context(|| format!("cannot load tensor {what} from {}", self.origin.display()))
    }
}

impl TensorSource for Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Weights::get(self, name, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_between_layouts() {
        let l = Layout::TransformersLegacy;
        let name = |m: Mapped| match m {
            Mapped::Plain(n) => (n, None),
            Mapped::Split { name, part } => (name, Some(part)),
        };
        assert_eq!(
            name(l.map("model.language_model.layers.0.self_attn.q_proj.weight")).0,
            "language_model.model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(
            name(l.map("model.vision_tower.embeddings.cls_token")).0,
            "vision_tower.embeddings.cls_token"
        );
        assert_eq!(
            name(l.map("lm_head.weight")).0,
            "language_model.lm_head.weight"
        );
        let o = Layout::Original;
        assert_eq!(
            name(o.map("model.vision_tower.encoder.layer.3.attention.k_proj.bias")),
            (
                "vision_model.encoder.layers.3.attn.qkv.bias".to_string(),
                Some(1)
            )
        );
        assert_eq!(
            name(o.map("model.vision_tower.encoder.layer.3.lambda_2")).0,
            "vision_model.encoder.layers.3.ls2"
        );
        assert_eq!(
            name(o.map("model.vision_tower.encoder.layer.0.layernorm_after.bias")).0,
            "vision_model.encoder.layers.0.norm2.bias"
        );
        assert_eq!(
            name(o.map("model.multi_modal_projector.linear_2.weight")).0,
            "mlp1.3.weight"
        );
        assert_eq!(
            name(o.map("model.vision_tower.embeddings.patch_embeddings.projection.weight")).0,
            "vision_model.embeddings.patch_embedding.weight"
        );
    }

    #[test]
    fn detects_layout_from_names() {
        assert_eq!(
            Layout::detect(["vision_tower.x", "language_model.model.y"]).unwrap(),
            Layout::TransformersLegacy
        );
        assert_eq!(
            Layout::detect(["model.vision_tower.x", "lm_head.weight"]).unwrap(),
            Layout::TransformersCurrent
        );
        assert_eq!(
            Layout::detect(["vision_model.x", "mlp1.0.weight"]).unwrap(),
            Layout::Original
        );
        assert!(Layout::detect(["vision_model.x", "vision_tower.y"]).is_err());
        assert!(Layout::detect(["foo"]).is_err());
    }
}
