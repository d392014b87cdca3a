//! `faceval parity`: the numerical-parity checks of the model crate's tests
//! (`harness/models/tests/{internvl,llava,zero_shot}_parity.rs`) as one command that runs on
//! any device and dtype — so the CUDA build can be checked on a GPU machine that has no Rust
//! toolchain. `--fixtures` names one fixture folder; its family (InternVL, LLaVA-1.5 or
//! CLIP/SigLIP zero-shot) is told from its files unless `--family` says it. A folder written by
//! `tools/make_qwen2_vl_fixtures.py` runs the Qwen2-VL / Qwen2.5-VL check of
//! `harness/models/tests/qwen2_vl_parity.rs` (`parity_qwen.rs`).
//!
//! * InternVL (`tools/make_internvl_fixtures.py`) and LLaVA (`tools/make_llava_fixtures.py`):
//!   for every checkpoint × case, max abs difference of the image features, of the prompt's
//!   last logits and of each greedy step's logits against transformers', and whether the
//!   greedy tokens are identical.
//! * Zero-shot (`tools/make_zero_shot_fixtures.py`): for every model × image, max abs
//!   difference of the image embedding and of `logits_per_image`, of the option prompts' text
//!   embeddings (`text_embeds_max_abs_diff`), and whether the option ranking is identical —
//!   the ranking stands where the generative families have greedy tokens (`tokens`).
//!
//! In f32 every difference must be within `--tol` (1e-4) and the tokens (rankings) identical,
//! else exit 1. In bf16/f16 the differences are reported as reached; only a gross error fails
//! (over 5% of the fixture's largest value — the bound the model crate's half-precision test
//! uses, which catches a broken kernel) and token (ranking) mismatches are reported, not
//! failed: bf16 logits drift by ~0.15 on these fixtures while some greedy margins are ~0.05,
//! and the zero-shot fixtures' top-2 margins go down to 0.015.
//!
//! bf16 on the CPU: LLaVA's and CLIP/SigLIP's vision towers run in f32 there (candle's CPU
//! conv2d has no bf16 kernel), so their image features/embeddings match f32's and only the
//! language/text towers show bf16 rounding; on CUDA every tower runs in bf16.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use faceval_eval::error::input_error;
use faceval_eval::registry;
use faceval_models::internvl::generate::{self, DecodeOptions};
use faceval_models::internvl::InternVl;
use faceval_models::llava::Llava;
use faceval_models::placement::{device_location, dtype_name, Placement};
use faceval_models::zero_shot::{self, ZeroShotModel};
use serde::Serialize;

/// Fraction of the fixture's largest magnitude a half-precision result may be off by.
pub(crate) const HALF_PRECISION_REL_BOUND: f32 = 0.05;

#[derive(Args)]
pub struct ParityArgs {
    /// Fixture folder: InternVL or LLaVA (cases/ plus one folder per checkpoint), or
    /// zero-shot (<model>.json + <model>.safetensors + the checkpoint folders).
    #[arg(long, default_value = "harness/models/tests/fixtures/internvl")]
    pub fixtures: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto (f32 on CPU, bf16 on CUDA), f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// internvl, llava, zero-shot, or auto: told from the folder's files.
    #[arg(long, default_value = "auto")]
    pub family: String,
    /// Only these checkpoints (repeatable; default: every checkpoint folder the cases name).
    /// Zero-shot fixtures also take the model name (clip, siglip).
    #[arg(long = "checkpoint")]
    pub checkpoints: Vec<String>,
    /// Max abs difference allowed in f32.
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One case of `cases/<name>.json`.
struct Case {
    name: String,
    input_ids: Vec<u32>,
    max_new_tokens: usize,
    /// Greedy tokens transformers generated, per checkpoint.
    generated: BTreeMap<String, Vec<u32>>,
    pixel_values: Tensor,
}

#[derive(Serialize)]
pub struct Row {
    pub checkpoint: String,
    pub case: String,
    pub tiles: usize,
    pub prompt_tokens: usize,
    pub image_features_max_abs_diff: f32,
    pub logits_max_abs_diff: f32,
    /// Over the greedy steps both runs share (up to and including the first differing token).
    /// None for zero-shot rows, which have no decoding.
    pub step_logits_max_abs_diff: Option<f32>,
    /// Zero-shot rows: the option prompts' text embeddings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_embeds_max_abs_diff: Option<f32>,
    /// Largest |logit| transformers produced for the case's last prompt positions.
    pub logit_scale: f32,
    /// Zero-shot rows: `tokens` / `expected_tokens` are the option ranking (indices, best
    /// first) and this says whether the rankings are identical.
    pub tokens_equal: bool,
    pub first_token_mismatch: Option<usize>,
    pub tokens: Vec<u32>,
    pub expected_tokens: Vec<u32>,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub pass: bool,
    pub failures: Vec<String>,
}

#[derive(Serialize)]
pub struct Report {
    /// internvl, llava or zero-shot.
    pub family: String,
    pub fixtures: String,
    pub device: String,
    pub dtype: String,
    /// True in f32: differences over `tolerance` and token mismatches fail.
    pub strict: bool,
    pub tolerance: f32,
    pub transformers_version: Option<String>,
    pub load_ms: BTreeMap<String, f64>,
    pub rows: Vec<Row>,
    pub max_image_features_diff: f32,
    pub max_logits_diff: f32,
    /// None for zero-shot fixtures.
    pub max_step_logits_diff: Option<f32>,
    /// Zero-shot fixtures only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_text_embeds_diff: Option<f32>,
    pub all_tokens_equal: bool,
    pub pass: bool,
}

/// The model family a fixture folder holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    InternVl,
    Llava,
    ZeroShot,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::InternVl => "internvl",
            Family::Llava => "llava",
            Family::ZeroShot => "zero-shot",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Family::InternVl => "InternVL",
            Family::Llava => "LLaVA",
            Family::ZeroShot => "CLIP/SigLIP zero-shot",
        }
    }
}

/// InternVL: cases/ with `<case>.pixels.safetensors`; LLaVA: cases/ with `<case>.safetensors`
/// and a checkpoint folder whose config names llava; zero-shot: `<model>.json` files that
/// name their checkpoint folder. A folder with cases/ that is neither stays InternVL, so its
/// errors are the ones the InternVL check always gave.
fn detect_family(root: &Path) -> Option<Family> {
    let cases = root.join("cases");
    if cases.is_dir() {
        let llava = checkpoint_dirs(root).iter().any(|ck| {
            std::fs::read_to_string(root.join(ck).join("config.json"))
                .is_ok_and(|t| t.contains("\"llava\""))
        });
        let internvl = std::fs::read_dir(&cases).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(".pixels.safetensors")
            })
        });
        return Some(if llava && !internvl {
            Family::Llava
        } else {
            Family::InternVl
        });
    }
    (!zero_shot_models(root).is_empty()).then_some(Family::ZeroShot)
}

/// Sub-folders of `root` holding a config.json, sorted.
fn checkpoint_dirs(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    out.sort();
    out
}

/// `--checkpoint` filter: every name asked for must exist.
fn select(mut names: Vec<String>, want: &[String]) -> Result<Vec<String>> {
    if !want.is_empty() {
        for w in want {
            if !names.contains(w) {
                return Err(input_error(format!(
                    "--checkpoint {w}: not among the fixture's checkpoints ({})",
                    names.join(", ")
                )));
            }
        }
        names.retain(|n| want.contains(n));
    }
    Ok(names)
}

pub fn parity(args: ParityArgs) -> Result<ExitCode> {
    let root = &args.fixtures;
    if matches!(args.family.as_str(), "auto" | "qwen2_vl")
        && crate::parity_qwen::is_qwen_fixture(root)
    {
        return crate::parity_qwen::parity(&args);
    }
    let family = match args.family.as_str() {
        "auto" => detect_family(root).ok_or_else(|| {
            input_error(format!(
                "{}: not an InternVL fixture folder (no cases/), nor a LLaVA or zero-shot one; \
                 make one with `python tools/make_internvl_fixtures.py` (or \
                 make_llava_fixtures.py, make_zero_shot_fixtures.py)",
                root.display()
            ))
        })?,
        "internvl" => Family::InternVl,
        "llava" => Family::Llava,
        "zero-shot" | "zero_shot" => Family::ZeroShot,
        other => {
            return Err(input_error(format!(
                "--family {other}: expected internvl, llava, zero-shot, qwen2_vl or auto"
            )))
        }
    };
    let Placement { device, dtype } = registry::placement_flags(&args.device, &args.dtype)?;
    let strict = dtype == DType::F32;
    let zs = family == Family::ZeroShot;
    let mut report = Report {
        family: family.name().to_string(),
        fixtures: root.display().to_string(),
        device: device_location(&device),
        dtype: dtype_name(dtype).to_string(),
        strict,
        tolerance: args.tol,
        transformers_version: transformers_version(root),
        load_ms: BTreeMap::new(),
        rows: vec![],
        max_image_features_diff: 0.0,
        max_logits_diff: 0.0,
        max_step_logits_diff: (!zs).then_some(0.0),
        max_text_embeds_diff: zs.then_some(0.0),
        all_tokens_equal: true,
        pass: true,
    };
    let run = Run {
        root,
        device: &device,
        dtype,
        strict,
        tol: args.tol,
        checkpoints: &args.checkpoints,
    };
    match family {
        Family::InternVl => internvl_rows(&run, &mut report)?,
        Family::Llava => llava_rows(&run, &mut report)?,
        Family::ZeroShot => zero_shot_rows(&run, &mut report)?,
    }
    for row in &report.rows {
        report.max_image_features_diff = report
            .max_image_features_diff
            .max(row.image_features_max_abs_diff);
        report.max_logits_diff = report.max_logits_diff.max(row.logits_max_abs_diff);
        if let (Some(m), Some(d)) = (
            &mut report.max_step_logits_diff,
            row.step_logits_max_abs_diff,
        ) {
            *m = m.max(d);
        }
        if let (Some(m), Some(d)) = (
            &mut report.max_text_embeds_diff,
            row.text_embeds_max_abs_diff,
        ) {
            *m = m.max(d);
        }
        report.all_tokens_equal &= row.tokens_equal;
        report.pass &= row.pass;
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What every family's check needs from the arguments.
struct Run<'a> {
    root: &'a Path,
    device: &'a Device,
    dtype: DType,
    strict: bool,
    tol: f32,
    checkpoints: &'a [String],
}

fn internvl_rows(run: &Run, report: &mut Report) -> Result<()> {
    let root = run.root;
    if !root.join("cases").is_dir() {
        return Err(input_error(format!(
            "{}: not an InternVL fixture folder (no cases/); make one with `python \
             tools/make_internvl_fixtures.py`",
            root.display()
        )));
    }
    let cases = read_cases(root)?;
    let mut names: Vec<String> = cases
        .iter()
        .flat_map(|c| c.generated.keys().cloned())
        .filter(|n| root.join(n).is_dir())
        .collect();
    names.sort();
    names.dedup();
    let names = select(names, run.checkpoints)?;
    if names.is_empty() {
        return Err(input_error(format!(
            "{}: no checkpoint folder matches the cases",
            root.display()
        )));
    }
    for ck in &names {
        let model = InternVl::load(&root.join(ck), run.device, run.dtype)
            .with_context(|| format!("loading {ck}"))?;
        report.load_ms.insert(ck.clone(), model.load_ms());
        for case in cases.iter().filter(|c| c.generated.contains_key(ck)) {
            let row = check(root, &model, ck, case, run.strict, run.tol)
                .with_context(|| format!("{}/{ck}", case.name))?;
            report.rows.push(row);
        }
    }
    Ok(())
}

/// The failures of one row. In f32 (strict) a difference over `tol` and a token (ranking)
/// mismatch fail; in half precision a difference over 5% of its scale fails (a broken
/// kernel, not rounding); a NaN fails in every dtype.
pub(crate) fn judge(
    strict: bool,
    tol: f32,
    diffs: &[(&str, f32, f32)],
    mismatch: Option<String>,
) -> Vec<String> {
    let mut failures = vec![];
    if strict {
        for &(what, d, _) in diffs {
            if d > tol {
                failures.push(format!("{what} differ by {d:.3e} > {tol:.0e}"));
            }
        }
        failures.extend(mismatch);
    } else {
        for &(what, d, scale) in diffs {
            if d > HALF_PRECISION_REL_BOUND * scale {
                failures.push(format!(
                    "{what} differ by {d:.3e}, over {:.0}% of their scale {scale:.3}",
                    HALF_PRECISION_REL_BOUND * 100.0
                ));
            }
        }
    }
    // NaN compares false above; treat it as a failure in every dtype.
    for &(what, d, _) in diffs {
        if !d.is_finite() {
            failures.push(format!("{what}: difference is {d}"));
        }
    }
    failures
}

fn check(
    root: &Path,
    model: &InternVl,
    ck: &str,
    case: &Case,
    strict: bool,
    tol: f32,
) -> Result<Row> {
    let path = root
        .join("cases")
        .join(format!("{}.{ck}.logits.safetensors", case.name));
    let expected = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| input_error(format!("{}: {e}", path.display())))?;
    let get = |name: &str| {
        expected
            .get(name)
            .ok_or_else(|| input_error(format!("{}: no tensor `{name}`", path.display())))
    };
    let (want_feats, want_logits, want_steps) =
        (get("image_features")?, get("logits")?, get("step_logits")?);

    let t0 = Instant::now();
    let feats = model.image_features(&case.pixel_values)?;
    let h = feats.dim(2)?;
    let feats_host = to_host(&feats.reshape(((), h))?)?;
    let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
    let d_feat = max_abs_diff(&feats_host, want_feats).context("image features")?;

    let logits = to_host(&model.prompt_logits(&case.input_ids, Some(&case.pixel_values))?)?;
    let n = want_logits.dim(0)?;
    let t = logits.dim(0)?;
    if n > t {
        return Err(input_error(format!(
            "{}: {n} logit rows for a {t}-token prompt",
            path.display()
        )));
    }
    let d_logits = max_abs_diff(&logits.narrow(0, t - n, n)?, want_logits).context("logits")?;
    let logit_scale = want_logits
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let feat_scale = want_feats
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;

    let embeds = model.input_embeds(&case.input_ids, Some(&feats))?;
    let opts = DecodeOptions {
        max_new_tokens: case.max_new_tokens,
        stop_token_ids: model.eos_token_ids().to_vec(),
        top_logprobs: 0,
        keep_step_logits: true,
    };
    let out = generate::greedy(model, &embeds, &opts, |_| false)?;
    let want_tokens = &case.generated[ck];
    let first_mismatch = first_difference(&out.tokens, want_tokens);
    let d_step = step_logits_diff(
        &out.step_logits,
        want_steps,
        first_mismatch,
        out.tokens.len(),
    )?;

    let failures = judge(
        strict,
        tol,
        &[
            ("image features", d_feat, feat_scale),
            ("logits", d_logits, logit_scale),
            ("step logits", d_step, logit_scale),
        ],
        first_mismatch.map(|k| format!("greedy tokens differ from step {k}")),
    );
    Ok(Row {
        checkpoint: ck.to_string(),
        case: case.name.clone(),
        tiles: case.pixel_values.dim(0)?,
        prompt_tokens: case.input_ids.len(),
        image_features_max_abs_diff: d_feat,
        logits_max_abs_diff: d_logits,
        step_logits_max_abs_diff: Some(d_step),
        text_embeds_max_abs_diff: None,
        logit_scale,
        tokens_equal: first_mismatch.is_none(),
        first_token_mismatch: first_mismatch,
        tokens: out.tokens,
        expected_tokens: want_tokens.clone(),
        vision_ms,
        prefill_ms: out.prefill_ms,
        decode_ms: out.decode_ms,
        pass: failures.is_empty(),
        failures,
    })
}

/// First position where the greedy tokens differ (a shorter run differs where it ends).
pub(crate) fn first_difference<T: PartialEq>(got: &[T], want: &[T]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or_else(|| (got.len() != want.len()).then(|| got.len().min(want.len())))
}

/// Max abs difference of the step logits both runs share: step i depends on tokens 0..i
/// only, so steps are comparable up to and including the first mismatch.
pub(crate) fn step_logits_diff(
    got: &[Vec<f32>],
    want: &Tensor,
    first_mismatch: Option<usize>,
    tokens: usize,
) -> Result<f32> {
    let comparable = match first_mismatch {
        Some(k) => k + 1,
        None => tokens,
    }
    .min(got.len())
    .min(want.dim(0)?);
    let mut d = 0f32;
    for (i, row) in got.iter().take(comparable).enumerate() {
        let row = Tensor::new(row.as_slice(), &Device::Cpu)?;
        d = d.max(max_abs_diff(&row, &want.get(i)?).with_context(|| format!("step {i} logits"))?);
    }
    Ok(d)
}

/// Largest |x| of a fixture tensor (0 for an empty one).
fn scale(t: &Tensor) -> Result<f32> {
    if t.elem_count() == 0 {
        return Ok(0.0);
    }
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// One case of a LLaVA fixture: `cases/<name>.json` + `cases/<name>.safetensors`.
struct LlavaCase {
    name: String,
    input_ids: Vec<u32>,
    max_new_tokens: usize,
    generated: Vec<u32>,
    tensors: std::collections::HashMap<String, Tensor>,
}

fn read_llava_cases(root: &Path) -> Result<Vec<LlavaCase>> {
    let dir = root.join("cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = vec![];
    for p in paths {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| input_error(format!("{}: not valid JSON: {e}", p.display())))?;
        let ids = |field: &str| -> Result<Vec<u32>> {
            json_ids(&v[field]).ok_or_else(|| {
                input_error(format!(
                    "{}: `{field}` must be a list of token ids",
                    p.display()
                ))
            })
        };
        let tensors_path = p.with_extension("safetensors");
        let tensors = candle_core::safetensors::load(&tensors_path, &Device::Cpu)
            .map_err(|e| input_error(format!("{}: {e}", tensors_path.display())))?;
        for need in ["pixel_values", "image_features", "logits", "step_logits"] {
            if !tensors.contains_key(need) {
                return Err(input_error(format!(
                    "{}: no tensor `{need}`",
                    tensors_path.display()
                )));
            }
        }
        out.push(LlavaCase {
            name: p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
            input_ids: ids("input_ids")?,
            max_new_tokens: v["max_new_tokens"].as_u64().unwrap_or(8) as usize,
            generated: ids("generated_ids")?,
            tensors,
        });
    }
    if out.is_empty() {
        return Err(input_error(format!("{}: no cases", dir.display())));
    }
    Ok(out)
}

fn json_ids(v: &serde_json::Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|i| i.as_u64().map(|i| i as u32))
        .collect()
}

fn llava_rows(run: &Run, report: &mut Report) -> Result<()> {
    let root = run.root;
    if !root.join("cases").is_dir() {
        return Err(input_error(format!(
            "{}: not a LLaVA fixture folder (no cases/); make one with `python \
             tools/make_llava_fixtures.py`",
            root.display()
        )));
    }
    let cases = read_llava_cases(root)?;
    let names = select(checkpoint_dirs(root), run.checkpoints)?;
    // The cases hold one checkpoint's outputs (generated_ids is a plain list), so two
    // checkpoint folders cannot both be compared against them.
    let ck = match names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(input_error(format!(
                "{}: no checkpoint folder (a sub-folder with config.json)",
                root.display()
            )))
        }
        many => {
            return Err(input_error(format!(
                "{}: several checkpoint folders ({}); the cases belong to one, name it with --checkpoint",
                root.display(),
                many.join(", ")
            )))
        }
    };
    let t0 = Instant::now();
    let net = Llava::load(&root.join(&ck), run.device, run.dtype)
        .with_context(|| format!("loading {ck}"))?;
    report
        .load_ms
        .insert(ck.clone(), t0.elapsed().as_secs_f64() * 1e3);
    for case in &cases {
        let row = llava_check(&net, &ck, case, run.strict, run.tol)
            .with_context(|| format!("{}/{ck}", case.name))?;
        report.rows.push(row);
    }
    Ok(())
}

/// The last prompt positions compared (the model crate's test compares the same 8).
const LLAVA_LAST_LOGITS: usize = 8;

fn llava_check(net: &Llava, ck: &str, case: &LlavaCase, strict: bool, tol: f32) -> Result<Row> {
    let get = |n: &str| &case.tensors[n];
    let (want_feats, want_logits, want_steps) =
        (get("image_features"), get("logits"), get("step_logits"));
    let px = get("pixel_values");
    // A text-only case stores a [0, 3, H, W] tensor: no image, no features.
    let px = (px.dim(0)? > 0).then_some(px);

    let t0 = Instant::now();
    let feats = px.map(|p| net.image_features(p)).transpose()?;
    let d_feat = match &feats {
        Some(f) => {
            let host = to_host(f)?;
            max_abs_diff(&host, want_feats).context("image features")?
        }
        None => 0.0,
    };
    let vision_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t = case.input_ids.len();
    if want_logits.dim(0)? != t {
        return Err(input_error(format!(
            "{}: {} logit rows for a {t}-token prompt",
            case.name,
            want_logits.dim(0)?
        )));
    }
    let n = LLAVA_LAST_LOGITS.min(t);
    let rows = net.prompt_logits(&case.input_ids, px, n)?;
    let vocab = rows.first().map_or(0, Vec::len);
    let got = Tensor::from_vec(rows.concat(), (rows.len(), vocab), &Device::Cpu)?;
    let want_last = want_logits.narrow(0, t - n, n)?;
    let d_logits = max_abs_diff(&got, &want_last).context("logits")?;
    let logit_scale = scale(&want_last)?;
    let feat_scale = scale(want_feats)?;

    let embeds = net.input_embeds(&case.input_ids, feats.as_ref())?;
    let out = net.greedy(
        &embeds,
        case.max_new_tokens,
        net.eos_token_ids(),
        true,
        |_| false,
    )?;
    let first_mismatch = first_difference(&out.tokens, &case.generated);
    let d_step = step_logits_diff(
        &out.step_logits,
        want_steps,
        first_mismatch,
        out.tokens.len(),
    )?;
    let failures = judge(
        strict,
        tol,
        &[
            ("image features", d_feat, feat_scale),
            ("logits", d_logits, logit_scale),
            ("step logits", d_step, logit_scale),
        ],
        first_mismatch.map(|k| format!("greedy tokens differ from step {k}")),
    );
    Ok(Row {
        checkpoint: ck.to_string(),
        case: case.name.clone(),
        tiles: px.map_or(Ok(0), |p| p.dim(0))?,
        prompt_tokens: t,
        image_features_max_abs_diff: d_feat,
        logits_max_abs_diff: d_logits,
        step_logits_max_abs_diff: Some(d_step),
        text_embeds_max_abs_diff: None,
        logit_scale,
        tokens_equal: first_mismatch.is_none(),
        first_token_mismatch: first_mismatch,
        tokens: out.tokens,
        expected_tokens: case.generated.clone(),
        vision_ms,
        prefill_ms: out.prefill_ms,
        decode_ms: out.decode_ms,
        pass: failures.is_empty(),
        failures,
    })
}

/// Zero-shot models of a fixture folder: `<model>.json` naming an existing checkpoint folder,
/// with `<model>.safetensors` beside it; sorted.
fn zero_shot_models(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.with_extension("safetensors").is_file()
                && std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| v["checkpoint"].as_str().map(|c| root.join(c).is_dir()))
                    .unwrap_or(false)
        })
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
        .collect();
    out.sort();
    out
}

/// Option indices, best first; ties keep the lower index first (as `zero_shot::argmax`).
fn ranking(logits: &[f32]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    idx
}

fn zero_shot_rows(run: &Run, report: &mut Report) -> Result<()> {
    let root = run.root;
    let models = zero_shot_models(root);
    if models.is_empty() {
        return Err(input_error(format!(
            "{}: no zero-shot fixture (<model>.json naming its checkpoint folder, plus \
             <model>.safetensors); make them with `python tools/make_zero_shot_fixtures.py`",
            root.display()
        )));
    }
    let mut metas = vec![];
    for m in &models {
        let path = root.join(format!("{m}.json"));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .map_err(|e| input_error(format!("{}: not valid JSON: {e}", path.display())))?;
        metas.push((m.clone(), v));
    }
    // --checkpoint takes the model (clip) or its checkpoint folder (clip-tiny).
    let mut known: Vec<String> = models.clone();
    known.extend(
        metas
            .iter()
            .filter_map(|(_, v)| v["checkpoint"].as_str().map(str::to_string)),
    );
    select(known, run.checkpoints)?;
    for (model, meta) in &metas {
        let ck = meta["checkpoint"].as_str().unwrap_or_default().to_string();
        if !run.checkpoints.is_empty()
            && !run.checkpoints.contains(model)
            && !run.checkpoints.contains(&ck)
        {
            continue;
        }
        let rows = zero_shot_check(run, model, &ck, meta, report)
            .with_context(|| format!("{model}/{ck}"))?;
        report.rows.extend(rows);
    }
    Ok(())
}

fn zero_shot_check(
    run: &Run,
    model_name: &str,
    ck: &str,
    meta: &serde_json::Value,
    report: &mut Report,
) -> Result<Vec<Row>> {
    let root = run.root;
    let path = root.join(format!("{model_name}.safetensors"));
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| input_error(format!("{}: {e}", path.display())))?;
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| input_error(format!("{}: no tensor `{name}`", path.display())))
    };
    let (want_px, want_img, want_text, want_logits) = (
        get("pixel_values")?,
        get("image_embeds")?,
        get("text_embeds")?,
        get("logits_per_image")?,
    );
    let strings = |field: &str| -> Result<Vec<String>> {
        meta[field]
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| {
                input_error(format!(
                    "{model_name}.json: `{field}` must be a list of strings"
                ))
            })
    };
    let labels = strings("labels")?;
    let template = meta["template"]
        .as_str()
        .unwrap_or(zero_shot::DEFAULT_TEMPLATE);

    let t0 = Instant::now();
    let model = ZeroShotModel::load_dir(
        &root.join(ck),
        model_name.to_string(),
        run.device,
        run.dtype,
        template,
    )
    .with_context(|| format!("loading {ck}"))?;
    report
        .load_ms
        .insert(ck.to_string(), t0.elapsed().as_secs_f64() * 1e3);

    // Prompts and their ids: device-independent, but a wrong prompt would make every
    // embedding below meaningless, so a difference fails every row.
    let mut common_failures = vec![];
    let prompts = model.zero_shot_prompts(&labels);
    if prompts != strings("prompts")? {
        common_failures.push("option prompts differ from the fixture's".to_string());
    }
    let want_ids: Vec<Vec<u32>> = meta["input_ids"]
        .as_array()
        .and_then(|a| a.iter().map(json_ids).collect())
        .ok_or_else(|| {
            input_error(format!(
                "{model_name}.json: `input_ids` must be lists of ids"
            ))
        })?;
    for (p, want) in prompts.iter().zip(&want_ids) {
        if &model.tokenizer().encode(p)? != want {
            common_failures.push(format!("input ids of {p:?} differ from the fixture's"));
        }
    }

    // Text tower on the fixture's own ids, so the embeddings are compared on equal inputs.
    let t1 = Instant::now();
    let text: Vec<Vec<f32>> = want_ids
        .iter()
        .map(|ids| {
            Ok(model
                .net()
                .text_embeds(ids)?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?)
        })
        .collect::<Result<_>>()?;
    let text_ms = t1.elapsed().as_secs_f64() * 1e3;
    let dim = text.first().map_or(0, Vec::len);
    let got_text = Tensor::from_vec(text.concat(), (text.len(), dim), &Device::Cpu)?;
    let d_text = max_abs_diff(&got_text, want_text).context("text embeddings")?;
    let text_scale = scale(want_text)?;

    let t2 = Instant::now();
    let img = to_host(&model.net().image_embeds(&want_px.to_device(run.device)?)?)?;
    let n = img.dim(0)?;
    let vision_ms = t2.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64;
    let images = strings("images").unwrap_or_default();
    let mut rows = vec![];
    for i in 0..n {
        let want_row = want_img.get(i)?;
        let got_row = img.get(i)?;
        let d_img = max_abs_diff(&got_row, &want_row).context("image embeddings")?;
        let logits = model.net().logits(&got_row.to_vec1::<f32>()?, &text);
        let want_l = want_logits.get(i)?;
        let d_logits = max_abs_diff(&Tensor::new(logits.as_slice(), &Device::Cpu)?, &want_l)
            .context("logits_per_image")?;
        let got_rank = ranking(&logits);
        let want_rank = json_ids(&meta["ranking_per_image"][i])
            .unwrap_or_else(|| ranking(&want_l.to_vec1::<f32>().unwrap_or_default()));
        let mismatch = first_difference(&got_rank, &want_rank);
        let mut failures = judge(
            run.strict,
            run.tol,
            &[
                ("image embeddings", d_img, scale(&want_row)?),
                ("logits_per_image", d_logits, scale(&want_l)?),
                ("text embeddings", d_text, text_scale),
            ],
            mismatch.map(|k| format!("option ranking differs from place {k}")),
        );
        failures.extend(common_failures.iter().cloned());
        rows.push(Row {
            checkpoint: ck.to_string(),
            case: images
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("image{i}")),
            tiles: 1,
            prompt_tokens: want_ids.first().map_or(0, Vec::len),
            image_features_max_abs_diff: d_img,
            logits_max_abs_diff: d_logits,
            step_logits_max_abs_diff: None,
            text_embeds_max_abs_diff: Some(d_text),
            logit_scale: scale(&want_l)?,
            tokens_equal: mismatch.is_none(),
            first_token_mismatch: mismatch,
            tokens: got_rank,
            expected_tokens: want_rank,
            vision_ms,
            prefill_ms: text_ms,
            decode_ms: 0.0,
            pass: failures.is_empty(),
            failures,
        });
    }
    Ok(rows)
}

/// f32 on the CPU (copies back from the GPU, which also waits for it).
pub(crate) fn to_host(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
}

pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        return Err(anyhow!(
            "shape {:?} but the fixture has {:?}",
            a.dims(),
            b.dims()
        ));
    }
    let diff: Vec<f32> = (a - b)?.abs()?.flatten_all()?.to_vec1()?;
    // Fold by hand so a NaN anywhere shows up as NaN (Tensor::max would skip it).
    Ok(diff.iter().fold(0f32, |m, &x| {
        if x.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(x)
        }
    }))
}

fn read_cases(root: &Path) -> Result<Vec<Case>> {
    let dir = root.join("cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        // cases/<case>.json, not <case>.<checkpoint>.* companions.
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_stem()
                    .is_some_and(|s| !s.to_string_lossy().contains('.'))
        })
        .collect();
    paths.sort();
    let mut out = vec![];
    for p in paths {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| input_error(format!("{}: not valid JSON: {e}", p.display())))?;
        let ids = |x: &serde_json::Value, field: &str| -> Result<Vec<u32>> {
            x.as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|i| i.as_u64().map(|i| i as u32))
                        .collect::<Option<Vec<u32>>>()
                })
                .ok_or_else(|| {
                    input_error(format!(
                        "{}: `{field}` must be a list of token ids",
                        p.display()
                    ))
                })
        };
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut generated = BTreeMap::new();
        let gen = v["generated_ids"].as_object().ok_or_else(|| {
            input_error(format!(
                "{}: `generated_ids` must be an object",
                p.display()
            ))
        })?;
        for (ck, x) in gen {
            generated.insert(ck.clone(), ids(x, &format!("generated_ids.{ck}"))?);
        }
        out.push(Case {
            pixel_values: pixel_values(root, &name)?,
            input_ids: ids(&v["input_ids"], "input_ids")?,
            max_new_tokens: v["max_new_tokens"].as_u64().unwrap_or(8) as usize,
            generated,
            name,
        });
    }
    if out.is_empty() {
        return Err(input_error(format!("{}: no cases", dir.display())));
    }
    Ok(out)
}

/// `(u8 · (1/255) − mean) / std` in f32, as the GotOcr2 processor computes pixel_values
/// (the same normalisation the model crate's parity test applies to the stored tiles).
fn pixel_values(root: &Path, case: &str) -> Result<Tensor> {
    let path = root
        .join("cases")
        .join(format!("{case}.pixels.safetensors"));
    let t = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| input_error(format!("{}: {e}", path.display())))?;
    let get = |name: &str| {
        t.get(name)
            .ok_or_else(|| input_error(format!("{}: no tensor `{name}`", path.display())))
    };
    let u8s = get("pixel_values_u8")?.to_dtype(DType::F32)?;
    let mean = get("image_mean")?.reshape((1, 3, 1, 1))?;
    let std = get("image_std")?.reshape((1, 3, 1, 1))?;
    Ok((u8s * (1.0f32 / 255.0) as f64)?
        .broadcast_sub(&mean)?
        .broadcast_div(&std)?)
}

/// manifest.json's `transformers_version` (InternVL, LLaVA), else the `transformers` field of
/// the first zero-shot `<model>.json`.
fn transformers_version(root: &Path) -> Option<String> {
    let read = |p: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    if let Some(v) = read(root.join("manifest.json")) {
        return v["transformers_version"].as_str().map(str::to_string);
    }
    let model = zero_shot_models(root).into_iter().next()?;
    read(root.join(format!("{model}.json")))?["transformers"]
        .as_str()
        .map(str::to_string)
}

pub(crate) fn print_table(r: &Report) {
    let zs = r.family == Family::ZeroShot.name();
    let title = match r.family.as_str() {
        "llava" => Family::Llava.title(),
        "zero-shot" => Family::ZeroShot.title(),
        "internvl" => Family::InternVl.title(),
        other => other,
    };
    println!(
        "{title} parity vs transformers {} — {} {}, fixtures {}",
        r.transformers_version.as_deref().unwrap_or("?"),
        r.device,
        r.dtype,
        r.fixtures
    );
    let same = if zs {
        "option ranking"
    } else {
        "greedy tokens"
    };
    if r.strict {
        println!(
            "f32: every max abs diff must be <= {:.0e} and the {same} identical",
            r.tolerance
        );
    } else {
        println!(
            "{}: differences reported as reached; fails only over {:.0}% of scale",
            r.dtype,
            HALF_PRECISION_REL_BOUND * 100.0
        );
    }
    let (case_w, c1, c3, tok) = if zs {
        (17, "embeds", "text", "ranking")
    } else {
        (11, "features", "steps", "tokens")
    };
    println!(
        "{:<20} {:<case_w$} {:>5} {:>10} {:>10} {:>10} {:>8} {:>9}  result",
        "checkpoint", "case", "tiles", c1, "logits", c3, "scale", tok
    );
    for row in &r.rows {
        let tokens = match row.first_token_mismatch {
            None => format!("= {}", row.tokens.len()),
            Some(k) => format!("diff@{k}"),
        };
        let third = row
            .step_logits_max_abs_diff
            .or(row.text_embeds_max_abs_diff)
            .unwrap_or(0.0);
        println!(
            "{:<20} {:<case_w$} {:>5} {:>10.2e} {:>10.2e} {:>10.2e} {:>8.2} {:>9}  {}",
            row.checkpoint,
            row.case,
            row.tiles,
            row.image_features_max_abs_diff,
            row.logits_max_abs_diff,
            third,
            row.logit_scale,
            tokens,
            if row.pass {
                "ok".to_string()
            } else {
                format!("FAIL: {}", row.failures.join("; "))
            }
        );
    }
    let third = match (r.max_step_logits_diff, r.max_text_embeds_diff) {
        (Some(d), _) => format!("steps {d:.2e}"),
        (None, Some(d)) => format!("text {d:.2e}"),
        (None, None) => String::new(),
    };
    println!(
        "max: {c1} {:.2e}, logits {:.2e}, {third}; {same} {}; {}",
        r.max_image_features_diff,
        r.max_logits_diff,
        if r.all_tokens_equal {
            "all equal"
        } else {
            "NOT all equal"
        },
        if r.pass { "PASS" } else { "FAIL" }
    );
}
