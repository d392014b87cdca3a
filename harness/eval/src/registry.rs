//! The model registry: turns a resolved model manifest — a manifest file, a built-in, or a
//! checkpoint folder / `hf://` id that [`model_manifest::resolve`] read — into a live
//! [`Model`] of any kind, the OpenAI-compatible client included. `run`, `generate`, `serve`,
//! `bench` and `parity` load models only through here.
//!
//! It lives in the eval crate because that is the lowest crate that knows both halves: the
//! manifests are an eval concept (`model_manifest.rs`), while the model families and the
//! OpenAI client are `faceval-models`, which knows nothing of manifests. The CLI sits above
//! and only passes flags down.

use std::path::PathBuf;
use std::time::Duration;

use faceval_models::internvl::InternVlModel;
use faceval_models::llava::LlavaModel;
use faceval_models::openai::{OpenAiConfig, OpenAiModel};
use faceval_models::placement::{Placement, PlacementError};
use faceval_models::qwen2_vl::Qwen2VlModel;
use faceval_models::zero_shot::{ZeroShotModel, DEFAULT_TEMPLATE};
use faceval_models::{MajorityModel, Model, RandomModel, Vote};

use crate::error::input_error;
use crate::item::{Item, Target};
use crate::model_manifest::{LoadedManifest, ModelKind, ModelManifest};
use crate::run_folder::ModelRecord;
use crate::task::{QuestionStyle, Task};

/// The model a run asks. `Majority` is built per task, from that task's label counts
/// ([`fit_majority`]).
pub enum ModelHandle {
    Loaded(Box<dyn Model>),
    Majority,
}

/// The majority floor for `task`, fitted to `items` (its reference split) by
/// [`MajorityModel::fit`]. Each item's target counts as the task spells its answers: a label,
/// an option letter, a bin's label, or (numeric tasks) the number.
pub fn fit_majority(task: &Task, items: &[Item]) -> MajorityModel {
    let question = &task.spec.question;
    let votes = items.iter().map(|item| match &item.target {
        Target::Label(l) => Vote::Label(l.clone()),
        Target::Choice(i) => Vote::Label(
            crate::prompt::LETTERS
                .get(*i)
                .copied()
                .unwrap_or("?")
                .to_string(),
        ),
        Target::Number(x) if question.style == QuestionStyle::Numeric => Vote::Number(*x),
        Target::Number(x) => Vote::Label(
            question
                .bin_labels
                .get(crate::prompt::bin_of(&question.bins, *x))
                .cloned()
                .unwrap_or_default(),
        ),
    });
    let rank = |l: &str| task.labels.index_of(l).unwrap_or(usize::MAX);
    let label = match MajorityModel::fit(votes, rank) {
        Some(Vote::Label(l)) => l,
        Some(Vote::Number(x)) => crate::score::format_number(x),
        None => String::new(),
    };
    MajorityModel::new(label)
}

/// Parse `--device` and a dtype for model `name`; bad values are input errors naming the flag
/// (`--device: …`) or the model (`model NAME: dtype: …`).
pub fn placement(name: &str, device: &str, dtype: &str) -> anyhow::Result<Placement> {
    parse_placement(device, dtype, &format!("model {name}: dtype"))
}

/// Parse `--device` and `--dtype` for a command that loads no manifest (`faceval parity`);
/// bad values are input errors naming the flag.
pub fn placement_flags(device: &str, dtype: &str) -> anyhow::Result<Placement> {
    parse_placement(device, dtype, "--dtype")
}

fn parse_placement(device: &str, dtype: &str, dtype_source: &str) -> anyhow::Result<Placement> {
    Placement::parse(device, dtype).map_err(|e| match e {
        PlacementError::Device(e) => input_error(format!("--device: {e:#}")),
        PlacementError::Dtype(e) => input_error(format!("{dtype_source}: {e:#}")),
    })
}

/// Load an InternVL checkpoint (`source`: a folder or hf://Org/Name[@rev]) on `device` in
/// `dtype` (`auto`, f32, bf16, f16). Bad devices, dtypes and checkpoints are input errors.
pub fn load_internvl(
    name: &str,
    source: &str,
    device: &str,
    dtype: &str,
) -> anyhow::Result<InternVlModel> {
    let p = placement(name, device, dtype)?;
    InternVlModel::load(source, &p.device, p.dtype)
        .map_err(|e| input_error(format!("model {name} ({source}): {e:#}")))
}

/// Loads a LLaVA-1.5 (llava-hf layout) checkpoint; device and dtype as for InternVL.
pub fn load_llava(
    name: &str,
    source: &str,
    device: &str,
    dtype: &str,
) -> anyhow::Result<LlavaModel> {
    let p = placement(name, device, dtype)?;
    LlavaModel::load(source, &p.device, p.dtype)
        .map_err(|e| input_error(format!("model {name} ({source}): {e:#}")))
}

/// Loads a Qwen2-VL / Qwen2.5-VL checkpoint; device and dtype as for InternVL.
pub fn load_qwen2_vl(
    name: &str,
    source: &str,
    device: &str,
    dtype: &str,
) -> anyhow::Result<Qwen2VlModel> {
    let p = placement(name, device, dtype)?;
    Qwen2VlModel::load(source, &p.device, p.dtype)
        .map_err(|e| input_error(format!("model {name} ({source}): {e:#}")))
}

/// The prompt template of a CLIP/SigLIP manifest (its `zero_shot_template`, or the default).
pub fn zero_shot_template(m: &ModelManifest) -> &str {
    if m.zero_shot_template.is_empty() {
        DEFAULT_TEMPLATE
    } else {
        &m.zero_shot_template
    }
}

/// Loads a CLIP or SigLIP checkpoint as a zero-shot classifier; the checkpoint's `model_type`
/// must be the manifest's kind. Device and dtype as for InternVL.
pub fn load_zero_shot(
    m: &ModelManifest,
    device: &str,
    dtype: &str,
) -> anyhow::Result<ZeroShotModel> {
    let (name, source) = (&m.name, &m.source);
    let p = placement(name, device, dtype)?;
    let model = ZeroShotModel::load(source, &p.device, p.dtype, zero_shot_template(m))
        .map_err(|e| input_error(format!("model {name} ({source}): {e:#}")))?;
    let want = format!("{:?}", m.kind).to_lowercase();
    if model.family().name() != want {
        return Err(input_error(format!(
            "model {name}: the manifest says kind = \"{want}\" but {source} is a {} checkpoint",
            model.family().name()
        )));
    }
    Ok(model)
}

/// Connect to the OpenAI-compatible server a manifest names.
pub fn connect_openai(m: &ModelManifest) -> anyhow::Result<OpenAiModel> {
    let api_model = if m.api_model.is_empty() {
        &m.name
    } else {
        &m.api_model
    };
    let mut cfg = OpenAiConfig::new(&m.name, &m.base_url, api_model);
    if !m.api_key_env.is_empty() {
        let key = std::env::var(&m.api_key_env).map_err(|_| {
            input_error(format!(
                "model {}: api_key_env names {}, which is not set",
                m.name, m.api_key_env
            ))
        })?;
        cfg.api_key = Some(key);
    }
    if let Some(t) = m.timeout_s {
        if !(t.is_finite() && t > 0.0) {
            return Err(input_error(format!(
                "model {}: timeout_s must be a positive number of seconds",
                m.name
            )));
        }
        cfg.timeout = Duration::from_secs_f64(t);
        cfg.connect_timeout = cfg.connect_timeout.min(cfg.timeout);
    }
    if let Some(r) = m.max_retries {
        cfg.max_retries = r;
    }
    if let Some(c) = m.max_concurrency {
        cfg.max_concurrency = c.max(1);
    }
    match m.cache_dir.as_str() {
        "" => {}
        "off" | "none" => cfg.cache_dir = None,
        dir => cfg.cache_dir = Some(PathBuf::from(dir)),
    }
    cfg.report_on_drop = true;
    cfg.revision = m.revision.clone();
    OpenAiModel::connect(cfg).map_err(|e| input_error(format!("model {}: {e:#}", m.name)))
}

/// Load the model a manifest describes; models with weights go on `device` (cpu, cuda,
/// cuda:N) in `dtype` (`None`: the manifest's own). `majority` comes back unfitted
/// ([`ModelHandle::Majority`]): it needs the task's reference split, which the runner has.
pub fn instantiate_on(
    loaded: &LoadedManifest,
    device: &str,
    dtype: Option<&str>,
) -> anyhow::Result<(ModelHandle, ModelRecord)> {
    let m = &loaded.manifest;
    let mut record = ModelRecord {
        name: m.name.clone(),
        kind: m.kind.name().to_string(),
        fingerprint: loaded.fingerprint.clone(),
        source: m.source.clone(),
        origin: loaded.origin.clone(),
        ..Default::default()
    };
    let dtype = dtype.unwrap_or(&m.dtype);
    let model: Box<dyn Model> = match m.kind {
        ModelKind::Majority => return Ok((ModelHandle::Majority, record)),
        ModelKind::Random => Box::new(RandomModel),
        ModelKind::Openai => Box::new(connect_openai(m)?),
        ModelKind::Llava => Box::new(load_llava(&m.name, &m.source, device, dtype)?),
        ModelKind::Qwen2Vl => Box::new(load_qwen2_vl(&m.name, &m.source, device, dtype)?),
        ModelKind::Clip | ModelKind::Siglip => Box::new(load_zero_shot(m, device, dtype)?),
        ModelKind::Internvl => Box::new(load_internvl(&m.name, &m.source, device, dtype)?),
    };
    let info = model.info();
    record.weights_sha256 = info.weights_sha256;
    record.weight_bytes = info.weight_bytes;
    Ok((ModelHandle::Loaded(model), record))
}
