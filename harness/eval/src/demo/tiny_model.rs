//! The demo's InternVL3: a tiny random-weight checkpoint written into
//! `<demo out>/models/tiny-internvl3/` (see `faceval_models::internvl::tiny`) and then loaded
//! with `InternVlModel::load` like any downloaded checkpoint, so the demo exercises the real
//! path — chat template, tiling, vision tower, projector, Qwen2, greedy decoding — on a machine
//! with no weights. Its weights are random, so its scores are chance by construction.

use std::path::{Path, PathBuf};

use faceval_models::internvl::tiny::{write_checkpoint, TinySpec};
use faceval_models::internvl::{parse_device, parse_dtype, InternVlModel};
use faceval_models::Model;

use crate::prompt::sha256_hex;
use crate::run_folder::Manifest;
use crate::task::{QuestionStyle, Scoring, Task};

/// Model name in the demo's run folders and summary.
pub const NAME: &str = "tiny-internvl3";

/// Items of each task the demo asks the tiny model: enough to exercise every task's prompts
/// and images, few enough that a debug build finishes in seconds.
pub const ITEMS_PER_TASK: usize = 32;

/// Where the checkpoint goes under the demo output folder.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("models").join(NAME)
}

/// Writes the checkpoint (weights drawn from `seed`) and loads it on the CPU in f32.
pub fn prepare(out: &Path, seed: u64) -> anyhow::Result<InternVlModel> {
    let dir = checkpoint_dir(out);
    write_checkpoint(&dir, &TinySpec::demo(), seed)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    InternVlModel::load(
        &dir.display().to_string(),
        &parse_device("cpu")?,
        parse_dtype("f32")?,
    )
}

/// The task as the demo asks the tiny model: scored by likelihood, so that its answer is always
/// one of the options and its accuracy is chance. Random weights generate text that no
/// extractor parses (0% accuracy, 100% unparseable), which says nothing about the harness.
/// Numeric tasks have no options to score and are left out (`None`), as for `random`. The
/// fingerprint covers the change, so these runs never pass for runs of the task as written.
pub fn adapt(task: &Task) -> Option<Task> {
    if task.spec.question.style == QuestionStyle::Numeric {
        return None;
    }
    let mut t = task.clone();
    if t.spec.question.scoring != Scoring::Likelihood {
        t.spec.question.scoring = Scoring::Likelihood;
        t.fingerprint = sha256_hex(
            format!(
                "{}\n# demo: question.scoring = \"likelihood\"",
                task.fingerprint
            )
            .as_bytes(),
        );
    }
    Some(t)
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
        manifest.notes.insert(
            "demo.model".into(),
            "InternVL3 architecture with seeded random weights (faceval demo): chance by construction"
                .into(),
        );
    }
}
