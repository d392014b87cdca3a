//! `faceval parity`: the InternVL3 numerical-parity check of
//! `harness/models/tests/internvl_parity.rs` (and, on a folder written by
//! `tools/make_qwen2_vl_fixtures.py`, the Qwen2-VL / Qwen2.5-VL one of
//! `harness/models/tests/qwen2_vl_parity.rs`), as a command that runs on any device and dtype —
//! so the CUDA build can be checked on a GPU machine that has no Rust toolchain.
//!
//! For every checkpoint × case of the fixtures (written by `tools/make_internvl_fixtures.py`
//! with transformers): max abs difference of the image features, of the prompt's last logits
//! and of each greedy step's logits against transformers', and whether the greedy tokens are
//! identical. In f32 every difference must be within `--tol` (1e-4) and the tokens identical,
//! else exit 1. In bf16/f16 the differences are reported as reached; only a gross error fails
//! (over 5% of the fixture's largest value — the bound the model crate's half-precision test
//! uses, which catches a broken kernel) and token mismatches are reported, not failed: bf16
//! logits drift by ~0.15 on these fixtures while some greedy margins are ~0.05.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use faceval_eval::error::input_error;
use faceval_models::internvl::generate::{self, DecodeOptions};
use faceval_models::internvl::{self, InternVl};
use serde::Serialize;

/// Fraction of the fixture's largest magnitude a half-precision result may be off by.
pub(crate) const HALF_PRECISION_REL_BOUND: f32 = 0.05;

#[derive(Args)]
pub struct ParityArgs {
    /// Fixture folder (cases/, images/, one folder per checkpoint).
    #[arg(long, default_value = "harness/models/tests/fixtures/internvl")]
    pub fixtures: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Only these checkpoints (repeatable; default: every checkpoint folder the cases name).
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
    pub step_logits_max_abs_diff: f32,
    /// Largest |logit| transformers produced for the case's last prompt positions.
    pub logit_scale: f32,
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
    /// The model family checked (`InternVL`, `Qwen2-VL`).
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
    pub max_step_logits_diff: f32,
    pub all_tokens_equal: bool,
    pub pass: bool,
}

pub fn parity(args: ParityArgs) -> Result<ExitCode> {
    let root = &args.fixtures;
    if crate::parity_qwen::is_qwen_fixture(root) {
        return crate::parity_qwen::parity(&args);
    }
    if !root.join("cases").is_dir() {
        return Err(input_error(format!(
            "{}: not an InternVL fixture folder (no cases/); make one with `python \
             tools/make_internvl_fixtures.py`",
            root.display()
        )));
    }
    let device = internvl::parse_device(&args.device)
        .map_err(|e| input_error(format!("--device: {e:#}")))?;
    let dtype =
        internvl::parse_dtype(&args.dtype).map_err(|e| input_error(format!("--dtype: {e:#}")))?;
    let strict = dtype == DType::F32;
    let cases = read_cases(root)?;

    let mut names: Vec<String> = cases
        .iter()
        .flat_map(|c| c.generated.keys().cloned())
        .filter(|n| root.join(n).is_dir())
        .collect();
    names.sort();
    names.dedup();
    if !args.checkpoints.is_empty() {
        for want in &args.checkpoints {
            if !names.contains(want) {
                return Err(input_error(format!(
                    "--checkpoint {want}: not among the fixture's checkpoints ({})",
                    names.join(", ")
                )));
            }
        }
        names.retain(|n| args.checkpoints.contains(n));
    }
    if names.is_empty() {
        return Err(input_error(format!(
            "{}: no checkpoint folder matches the cases",
            root.display()
        )));
    }

    let mut report = Report {
        family: "InternVL".into(),
        fixtures: root.display().to_string(),
        device: device_name(&device),
        dtype: internvl::dtype_name(dtype).to_string(),
        strict,
        tolerance: args.tol,
        transformers_version: transformers_version(root),
        load_ms: BTreeMap::new(),
        rows: vec![],
        max_image_features_diff: 0.0,
        max_logits_diff: 0.0,
        max_step_logits_diff: 0.0,
        all_tokens_equal: true,
        pass: true,
    };
    for ck in &names {
        let model = InternVl::load(&root.join(ck), &device, dtype)
            .with_context(|| format!("loading {ck}"))?;
        report.load_ms.insert(ck.clone(), model.load_ms());
        for case in cases.iter().filter(|c| c.generated.contains_key(ck)) {
            let row = check(root, &model, ck, case, strict, args.tol)
                .with_context(|| format!("{}/{ck}", case.name))?;
            report.max_image_features_diff = report
                .max_image_features_diff
                .max(row.image_features_max_abs_diff);
            report.max_logits_diff = report.max_logits_diff.max(row.logits_max_abs_diff);
            report.max_step_logits_diff = report
                .max_step_logits_diff
                .max(row.step_logits_max_abs_diff);
            report.all_tokens_equal &= row.tokens_equal;
            report.pass &= row.pass;
            report.rows.push(row);
        }
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
    let first_mismatch = out
        .tokens
        .iter()
        .zip(want_tokens)
        .position(|(a, b)| a != b)
        .or_else(|| {
            (out.tokens.len() != want_tokens.len()).then(|| out.tokens.len().min(want_tokens.len()))
        });
    // Step i's logits depend on tokens 0..i only, so they are comparable up to the first mismatch.
    let comparable = match first_mismatch {
        Some(k) => k + 1,
        None => out.tokens.len(),
    }
    .min(out.step_logits.len())
    .min(want_steps.dim(0)?);
    let mut d_step = 0f32;
    for (i, got) in out.step_logits.iter().take(comparable).enumerate() {
        let got = Tensor::new(got.as_slice(), &Device::Cpu)?;
        d_step = d_step.max(
            max_abs_diff(&got, &want_steps.get(i)?).with_context(|| format!("step {i} logits"))?,
        );
    }

    let failures = judge(
        strict,
        tol,
        [
            ("image features", d_feat, feat_scale),
            ("logits", d_logits, logit_scale),
            ("step logits", d_step, logit_scale),
        ],
        first_mismatch,
    );
    Ok(Row {
        checkpoint: ck.to_string(),
        case: case.name.clone(),
        tiles: case.pixel_values.dim(0)?,
        prompt_tokens: case.input_ids.len(),
        image_features_max_abs_diff: d_feat,
        logits_max_abs_diff: d_logits,
        step_logits_max_abs_diff: d_step,
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

/// What fails a row: in f32 any difference over `tol` or any token mismatch; in half
/// precision a difference over `HALF_PRECISION_REL_BOUND` of its scale; a NaN in every dtype.
pub(crate) fn judge(
    strict: bool,
    tol: f32,
    diffs: [(&str, f32, f32); 3],
    first_mismatch: Option<usize>,
) -> Vec<String> {
    let mut failures = vec![];
    if strict {
        for (what, d, _) in diffs {
            if d > tol {
                failures.push(format!("{what} differ by {d:.3e} > {tol:.0e}"));
            }
        }
        if let Some(k) = first_mismatch {
            failures.push(format!("greedy tokens differ from step {k}"));
        }
    } else {
        for (what, d, scale) in diffs {
            if d > HALF_PRECISION_REL_BOUND * scale {
                failures.push(format!(
                    "{what} differ by {d:.3e}, over {:.0}% of their scale {scale:.3}",
                    HALF_PRECISION_REL_BOUND * 100.0
                ));
            }
        }
    }
    // NaN compares false above; treat it as a failure in every dtype.
    for (what, d, _) in diffs {
        if !d.is_finite() {
            failures.push(format!("{what}: difference is {d}"));
        }
    }
    failures
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

fn transformers_version(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("manifest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["transformers_version"].as_str().map(str::to_string)
}

pub(crate) fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

pub(crate) fn print_table(r: &Report) {
    println!(
        "{} parity vs transformers {} — {} {}, fixtures {}",
        r.family,
        r.transformers_version.as_deref().unwrap_or("?"),
        r.device,
        r.dtype,
        r.fixtures
    );
    if r.strict {
        println!(
            "f32: every max abs diff must be <= {:.0e} and the greedy tokens identical",
            r.tolerance
        );
    } else {
        println!(
            "{}: differences reported as reached; fails only over {:.0}% of scale",
            r.dtype,
            HALF_PRECISION_REL_BOUND * 100.0
        );
    }
    println!(
        "{:<20} {:<11} {:>5} {:>10} {:>10} {:>10} {:>8} {:>9}  result",
        "checkpoint", "case", "tiles", "features", "logits", "steps", "scale", "tokens"
    );
    for row in &r.rows {
        let tokens = match row.first_token_mismatch {
            None => format!("= {}", row.tokens.len()),
            Some(k) => format!("diff@{k}"),
        };
        println!(
            "{:<20} {:<11} {:>5} {:>10.2e} {:>10.2e} {:>10.2e} {:>8.2} {:>9}  {}",
            row.checkpoint,
            row.case,
            row.tiles,
            row.image_features_max_abs_diff,
            row.logits_max_abs_diff,
            row.step_logits_max_abs_diff,
            row.logit_scale,
            tokens,
            if row.pass {
                "ok".to_string()
            } else {
                format!("FAIL: {}", row.failures.join("; "))
            }
        );
    }
    println!(
        "max: features {:.2e}, logits {:.2e}, steps {:.2e}; greedy tokens {}; {}",
        r.max_image_features_diff,
        r.max_logits_diff,
        r.max_step_logits_diff,
        if r.all_tokens_equal {
            "all equal"
        } else {
            "NOT all equal"
        },
        if r.pass { "PASS" } else { "FAIL" }
    );
}
