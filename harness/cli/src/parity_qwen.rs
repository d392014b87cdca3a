//! `faceval parity` on Qwen2-VL / Qwen2.5-VL fixtures (`tools/make_qwen2_vl_fixtures.py`):
//! the checks of `harness/models/tests/qwen2_vl_parity.rs` — image features, full-prompt
//! logits, each greedy step's logits and the greedy tokens against transformers' — on any
//! device and dtype, with the InternVL command's pass rules (`parity::judge`) and report.
//!
//! Layout: `cases/<family>/<case>.{json,safetensors}`, and the checkpoint folder each case
//! names (`checkpoint`). Pixel values are taken from the fixture (the processor's own pixel
//! parity is a CPU-only matter, checked by the model crate's test).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use faceval_eval::error::input_error;
use faceval_models::placement::{device_location, dtype_name, Placement};
use faceval_models::qwen2_vl::Qwen2Vl;

use crate::parity::{
    first_difference, judge, max_abs_diff, print_table, step_logits_diff, to_host, ParityArgs,
    Report, Row,
};

const FAMILIES: [&str; 2] = ["qwen2_vl", "qwen2_5_vl"];

/// Whether `root` holds Qwen2-VL fixtures (`cases/qwen2_vl/` or `cases/qwen2_5_vl/`).
pub fn is_qwen_fixture(root: &Path) -> bool {
    FAMILIES.iter().any(|f| root.join("cases").join(f).is_dir())
}

struct Case {
    family: String,
    name: String,
    checkpoint: String,
    input_ids: Vec<u32>,
    grids: Vec<[usize; 3]>,
    max_new_tokens: usize,
    generated: Vec<u32>,
    tensors: std::collections::HashMap<String, Tensor>,
}

pub fn parity(args: &ParityArgs) -> Result<ExitCode> {
    let root = &args.fixtures;
    let Placement { device, dtype } =
        faceval_eval::registry::placement_flags(&args.device, &args.dtype)?;
    let strict = dtype == DType::F32;
    let mut cases = read_cases(root)?;
    if !args.checkpoints.is_empty() {
        let known: Vec<String> = cases.iter().map(|c| c.checkpoint.clone()).collect();
        for want in &args.checkpoints {
            if !known.contains(want) {
                return Err(input_error(format!(
                    "--checkpoint {want}: not among the fixture's checkpoints ({})",
                    known.join(", ")
                )));
            }
        }
        cases.retain(|c| args.checkpoints.contains(&c.checkpoint));
    }
    let mut report = Report {
        family: "Qwen2-VL / Qwen2.5-VL".into(),
        fixtures: root.display().to_string(),
        device: device_location(&device),
        dtype: dtype_name(dtype).to_string(),
        strict,
        tolerance: args.tol,
        transformers_version: None,
        load_ms: BTreeMap::new(),
        rows: vec![],
        max_image_features_diff: 0.0,
        max_logits_diff: 0.0,
        max_step_logits_diff: Some(0.0),
        max_text_embeds_diff: None,
        all_tokens_equal: true,
        pass: true,
    };
    let mut loaded: BTreeMap<String, Qwen2Vl> = BTreeMap::new();
    for case in &cases {
        if !loaded.contains_key(&case.checkpoint) {
            let t0 = Instant::now();
            let net = Qwen2Vl::load(&root.join(&case.checkpoint), &device, dtype)
                .with_context(|| format!("loading {}", case.checkpoint))?;
            report
                .load_ms
                .insert(case.checkpoint.clone(), t0.elapsed().as_secs_f64() * 1e3);
            loaded.insert(case.checkpoint.clone(), net);
        }
        let row = check(&loaded[&case.checkpoint], case, strict, args.tol)
            .with_context(|| format!("{}/{}", case.family, case.name))?;
        report.max_image_features_diff = report
            .max_image_features_diff
            .max(row.image_features_max_abs_diff);
        report.max_logits_diff = report.max_logits_diff.max(row.logits_max_abs_diff);
        report.max_step_logits_diff = Some(
            report
                .max_step_logits_diff
                .unwrap_or(0.0)
                .max(row.step_logits_max_abs_diff.unwrap_or(0.0)),
        );
        report.all_tokens_equal &= row.tokens_equal;
        report.pass &= row.pass;
        report.rows.push(row);
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

fn check(net: &Qwen2Vl, case: &Case, strict: bool, tol: f32) -> Result<Row> {
    let get = |name: &str| {
        case.tensors.get(name).ok_or_else(|| {
            input_error(format!(
                "case {}/{}: no tensor `{name}`",
                case.family, case.name
            ))
        })
    };
    let (want_logits, want_steps) = (get("logits")?, get("step_logits")?);
    let t0 = Instant::now();
    let (feats, d_feat, feat_scale) = if case.grids.is_empty() {
        (None, 0.0, 0.0)
    } else {
        let want = get("image_features")?;
        let f = net.image_features(&get("pixel_values")?.to_device(net.device())?, &case.grids)?;
        let d = max_abs_diff(&to_host(&f)?, want).context("image features")?;
        let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        (Some(f), d, scale)
    };
    let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
    let pixels = get("pixel_values")?.to_device(net.device())?;
    let logits = to_host(&net.prompt_logits(
        &case.input_ids,
        (!case.grids.is_empty()).then_some((&pixels, case.grids.as_slice())),
    )?)?;
    let d_logits = max_abs_diff(&logits, want_logits).context("logits")?;
    let logit_scale = want_logits
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let embeds = net.input_embeds(&case.input_ids, feats.as_ref())?;
    let (pos, delta) = net.positions(&case.input_ids, &case.grids)?;
    let out = net.greedy(
        &embeds,
        &pos,
        delta,
        case.max_new_tokens,
        net.eos_token_ids(),
        true,
        |_| false,
    )?;
    let want_tokens = &case.generated;
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
        checkpoint: case.checkpoint.clone(),
        case: case.name.clone(),
        tiles: case.grids.len(),
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

fn read_cases(root: &Path) -> Result<Vec<Case>> {
    let mut out = vec![];
    for family in FAMILIES {
        let dir = root.join("cases").join(family);
        if !dir.is_dir() {
            continue;
        }
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| input_error(format!("{}: not valid JSON: {e}", p.display())))?;
            let nums = |field: &str| -> Result<Vec<u64>> {
                v[field]
                    .as_array()
                    .and_then(|a| a.iter().map(|i| i.as_u64()).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| {
                        input_error(format!(
                            "{}: `{field}` must be a list of integers",
                            p.display()
                        ))
                    })
            };
            let grids = v["image_grid_thw"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|g| {
                            let g = g.as_array()?;
                            Some([
                                g.first()?.as_u64()? as usize,
                                g.get(1)?.as_u64()? as usize,
                                g.get(2)?.as_u64()? as usize,
                            ])
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    input_error(format!(
                        "{}: `image_grid_thw` must be a list of [t, h, w]",
                        p.display()
                    ))
                })?;
            let tensors_path = p.with_extension("safetensors");
            let tensors = candle_core::safetensors::load(&tensors_path, &Device::Cpu)
                .map_err(|e| input_error(format!("{}: {e}", tensors_path.display())))?;
            out.push(Case {
                family: family.to_string(),
                name: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
                checkpoint: v["checkpoint"]
                    .as_str()
                    .ok_or_else(|| input_error(format!("{}: no `checkpoint`", p.display())))?
                    .to_string(),
                input_ids: nums("input_ids")?.into_iter().map(|x| x as u32).collect(),
                grids,
                max_new_tokens: v["max_new_tokens"].as_u64().unwrap_or(8) as usize,
                generated: nums("generated_ids")?
                    .into_iter()
                    .map(|x| x as u32)
                    .collect(),
                tensors,
            });
        }
    }
    if out.is_empty() {
        return Err(input_error(format!("{}: no cases", root.display())));
    }
    Ok(out)
}
