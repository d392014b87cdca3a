//! The demo's InternVL3: a tiny random-weight checkpoint written into
//! `<demo out>/models/tiny-internvl3/` (see `faceval_models::internvl::tiny`) and then loaded
//! with `InternVlModel::load` like any downloaded checkpoint, so the demo exercises the real
//! path — chat template, tiling, vision tower, projector, Qwen2, greedy decoding — on a machine
//! with no weights. Its weights are random, so its scores are chance by construction.

use std::path::{Path, PathBuf};

use faceval_models::internvl::tiny::{write_checkpoint, TinySpec};
use faceval_models::internvl::InternVlModel;
use faceval_models::{Generation, Model, Request};

use crate::run_folder::Manifest;

/// Model name in the demo's run folders and summary.
pub const NAME: &str = "tiny-internvl3";

/// Items of each task the demo asks the tiny model: enough to exercise every task's prompts
/// and images, few enough that a debug build finishes in seconds.
pub const ITEMS_PER_TASK: usize = 32;

/// Where the checkpoint goes under the demo output folder.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("models").join(NAME)
}

/// Longest answer the demo lets the tiny model generate. Random weights never say their end
/// token, so a chain-of-thought task's 1,024 tokens would be generated in full, for an answer
/// that parses as nothing either way; the cap keeps the demo to seconds. It is recorded in the
/// run manifest's notes (`demo.max_new_tokens`). The task definitions stay as written.
pub const MAX_NEW_TOKENS: usize = 16;

/// The tiny model with its answers capped at [`MAX_NEW_TOKENS`].
pub struct TinyModel(InternVlModel);

impl Model for TinyModel {
    fn info(&self) -> faceval_models::ModelInfo {
        self.0.info()
    }

    fn generate(&mut self, request: &Request) -> anyhow::Result<Generation> {
        self.0.generate(&capped(request))
    }

    fn generate_batch(&mut self, requests: &[Request]) -> Vec<anyhow::Result<Generation>> {
        let capped: Vec<Request> = requests.iter().map(capped).collect();
        self.0.generate_batch(&capped)
    }

    fn clear_caches(&mut self) {
        self.0.clear_caches()
    }

    fn set_feature_cache_bytes(&mut self, bytes: u64) {
        self.0.set_feature_cache_bytes(bytes)
    }

    fn choice_logprobs(&mut self, request: &Request) -> anyhow::Result<Option<Vec<f64>>> {
        self.0.choice_logprobs(request)
    }
}

fn capped(request: &Request) -> Request {
    Request {
        max_new_tokens: request.max_new_tokens.min(MAX_NEW_TOKENS),
        ..request.clone()
    }
}

/// Writes the checkpoint (weights drawn from `seed`) and loads it on the CPU in f32.
pub fn prepare(out: &Path, seed: u64) -> anyhow::Result<TinyModel> {
    let dir = checkpoint_dir(out);
    write_checkpoint(&dir, &TinySpec::demo(), seed)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    Ok(TinyModel(crate::registry::load_internvl(
        "tiny",
        &dir.display().to_string(),
        "cpu",
        "f32",
    )?))
}

/// Records what a loaded model says about itself (kind, weights, device, dtype) in a demo run
/// manifest. The weightless floors say kind `baseline`, device `cpu`, dtype `none`.
pub fn describe(manifest: &mut Manifest, model: &dyn Model) {
    let info = model.info();
    manifest.model.kind = info.kind.clone();
    manifest.model.weights_sha256 = info.weights_sha256;
    manifest.model.weight_bytes = info.weight_bytes;
    manifest.device = info.device;
    manifest.dtype = info.dtype;
    if info.kind == "internvl" {
        manifest.model.source = info.name;
        manifest
            .notes
            .insert("demo.max_new_tokens".into(), MAX_NEW_TOKENS.to_string());
        manifest.notes.insert(
            "demo.model".into(),
            "InternVL3 architecture with seeded random weights (faceval demo): chance by construction"
                .into(),
        );
    }
}
