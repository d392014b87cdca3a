//! Qwen2-VL weights: safetensors headers read and checked first, then tensors handed out by
//! name with the shape config.json implies.
//!
//! The network asks for the names the hub checkpoints carry (and transformers'
//! `save_pretrained` writes): `visual.*`, `model.*` (the language model), `lm_head.weight`.
//! transformers 5's in-memory spelling (`model.visual.*`, `model.language_model.*`) is accepted
//! as well. Errors name the tensor, the file and both shapes.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{check_safetensors_header, CheckpointFiles};
use crate::nn::TensorSource;

pub struct Weights {
    files: Vec<MmapedSafetensors>,
    paths: Vec<PathBuf>,
    /// Name in the file → (file index, shape).
    names: HashMap<String, (usize, Vec<usize>)>,
    dir: PathBuf,
    device: Device,
    dtype: DType,
    loaded_bytes: std::cell::Cell<u64>,
}

impl Weights {
    pub fn open(files: &CheckpointFiles, device: &Device, dtype: DType) -> Result<Self> {
        let mut maps = Vec::with_capacity(files.weights.len());
        let mut names = HashMap::new();
        for (i, p) in files.weights.iter().enumerate() {
            check_safetensors_header(p)?;
            // SAFETY: mapped read-only; as every mmap loader, this assumes no other process
            // truncates the file while it is mapped.
            let st = unsafe { MmapedSafetensors::new(p) }
                .with_context(|| format!("corrupt weights file {}", p.display()))?;
            for (name, view) in st.tensors() {
                names.insert(name, (i, view.shape().to_vec()));
            }
            maps.push(st);
        }
        Ok(Self {
            files: maps,
            paths: files.weights.clone(),
            names,
            dir: files.dir.clone(),
            device: device.clone(),
            dtype,
            loaded_bytes: std::cell::Cell::new(0),
        })
    }

    pub fn loaded_bytes(&self) -> u64 {
        self.loaded_bytes.get()
    }

    /// The name `canonical` has in this checkpoint, if any spelling of it is present.
    fn spelled(&self, canonical: &str) -> Option<String> {
        if self.names.contains_key(canonical) {
            return Some(canonical.to_string());
        }
        let alt = if let Some(r) = canonical.strip_prefix("visual.") {
            format!("model.visual.{r}")
        } else if let Some(r) = canonical.strip_prefix("model.") {
            format!("model.language_model.{r}")
        } else {
            return None;
        };
        self.names.contains_key(&alt).then_some(alt)
    }

    pub fn contains(&self, canonical: &str) -> bool {
        self.spelled(canonical).is_some()
    }

    /// Loads `canonical` with `shape`, converted to `dtype`.
    pub fn get_as(&self, canonical: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let Some(name) = self.spelled(canonical) else {
            bail!(
                "checkpoint {} is missing tensor `{canonical}`; config.json implies shape {shape:?}",
                self.dir.display()
            );
        };
        let (fi, found) = &self.names[&name];
        let path = &self.paths[*fi];
        if found.as_slice() != shape {
            bail!(
                "tensor `{name}` in {} has shape {found:?}, but config.json implies {shape:?}",
                path.display()
            );
        }
        let view = self.files[*fi].get(&name)?;
        match DType::try_from(view.dtype()) {
            Ok(DType::F32 | DType::F16 | DType::BF16) => {}
            _ => bail!(
                "tensor `{name}` in {} has dtype {:?}; only F32, F16 and BF16 are supported",
                path.display(),
                view.dtype()
            ),
        }
        let n: usize = shape.iter().product();
        self.loaded_bytes
            .set(self.loaded_bytes.get() + (n * dtype.size_in_bytes()) as u64);
        let t = candle_core::safetensors::Load::load(&view, &self.device)
            .with_context(|| format!("cannot load tensor `{name}` from {}", path.display()))?;
        t.to_dtype(dtype)
            .map_err(|e| anyhow!("tensor `{name}` in {}: {e}", path.display()))
    }

    pub fn get(&self, canonical: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(canonical, shape, self.dtype)
    }
}

impl TensorSource for Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Weights::get(self, name, shape)
    }
}
