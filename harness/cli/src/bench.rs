//! `faceval bench`: the efficiency of one model on one task, without a run folder to keep.
//! It asks the task's first N items K times through the same runner as `faceval run` (in a
//! temporary folder) and prints one row per figure — stage latencies, TTFT, TPOT, throughput,
//! peak memory — as the mean ± standard deviation over the repeats, in the manner of
//! llama.cpp's llama-bench.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use faceval_eval::error::input_error;
use faceval_eval::hardware::Hardware;
use faceval_eval::metrics;
use faceval_eval::model_manifest;
use faceval_eval::run_folder::{self, Manifest};
use faceval_eval::runner::{self, ModelHandle, RunOptions};
use faceval_eval::task;
use faceval_eval::telemetry::{self, RunTelemetry, Summary};
use serde::Serialize;

#[derive(Args)]
pub struct BenchArgs {
    /// A model manifest (baselines/*.toml), its name, `random`, `majority`, or a checkpoint folder / hf:// id.
    #[arg(long)]
    pub model: String,
    /// A task name or TOML file.
    #[arg(long)]
    pub task: String,
    /// Folder the task's dataset paths are relative to.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Times to ask the items.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Calls at the start of each repeat left out of the figures.
    #[arg(long, default_value_t = telemetry::DEFAULT_WARMUP)]
    pub warmup: usize,
    /// Items asked per repeat (the task's first N).
    #[arg(long, default_value_t = 16)]
    pub limit: usize,
    /// Where models with weights run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of models with weights: auto, f32, bf16 or f16 (default: the manifest's).
    #[arg(long)]
    pub dtype: Option<String>,
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    pub format: BenchFormat,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    Table,
    Json,
}

/// One figure over the repeats.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub figure: &'static str,
    pub unit: &'static str,
    /// Mean over the repeats that have a value.
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1) over the repeats; `null` below two values.
    pub sd: Option<f64>,
    /// The figure of each repeat (`null` where it was not measured).
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    task: String,
    limit: usize,
    repeats: usize,
    warmup: usize,
    batch_size: Option<usize>,
    device: String,
    dtype: String,
    hardware: Option<Hardware>,
    figures: Vec<Figure>,
    /// Each repeat's telemetry as `metrics.json` records it.
    runs: Vec<RunTelemetry>,
}

type Pick = fn(&RunTelemetry) -> Option<f64>;

fn mean_of(s: &Option<Summary>) -> Option<f64> {
    s.as_ref().map(|s| s.mean)
}

const MIB: f64 = 1024.0 * 1024.0;

/// The rows, in the order they print.
fn figure_defs() -> Vec<(&'static str, &'static str, Pick)> {
    vec![
        ("preprocess", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.preprocess_ms))
        }),
        ("vision", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.vision_ms))
        }),
        ("prefill", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.prefill_ms))
        }),
        ("TTFT", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.ttft_ms))
        }),
        ("decode", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.decode_ms))
        }),
        ("e2e", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.e2e_ms))
        }),
        ("e2e p99", "ms", |t| {
            t.overall
                .as_ref()
                .and_then(|o| o.e2e_ms.as_ref().map(|s| s.p99))
        }),
        ("TPOT", "ms", |t| {
            t.overall.as_ref().and_then(|o| mean_of(&o.tpot_ms))
        }),
        ("decode tokens/s", "tok/s", |t| {
            t.overall.as_ref().and_then(|o| o.decode_tokens_per_s)
        }),
        ("tokens/s", "tok/s", |t| {
            t.overall.as_ref().and_then(|o| o.output_tokens_per_s)
        }),
        ("items/s", "item/s", |t| {
            t.overall.as_ref().and_then(|o| o.items_per_s)
        }),
        ("peak RSS", "MiB", |t| {
            t.memory
                .as_ref()
                .and_then(|m| m.peak_rss_bytes)
                .map(|b| b as f64 / MIB)
        }),
        ("peak VRAM", "MiB", |t| {
            t.memory
                .as_ref()
                .and_then(|m| m.peak_vram_bytes)
                .map(|b| b as f64 / MIB)
        }),
        ("peak VRAM (process)", "MiB", |t| {
            t.memory
                .as_ref()
                .and_then(|m| m.peak_vram_process_bytes)
                .map(|b| b as f64 / MIB)
        }),
    ]
}

/// Mean and sample standard deviation of the present values.
pub fn mean_sd(values: &[Option<f64>]) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return (None, None);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.len() >= 2)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt());
    (Some(mean), sd)
}

/// Removes the temporary run folders however the bench ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bench(
    args: BenchArgs,
    tasks_dir: Option<&Path>,
    baselines_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if args.repeat == 0 {
        return Err(input_error("--repeat must be at least 1"));
    }
    if args.limit <= args.warmup {
        return Err(input_error(format!(
            "--limit {} leaves nothing to measure after --warmup {}; ask more items or warm up less",
            args.limit, args.warmup
        )));
    }
    let loaded = model_manifest::resolve(&args.model, baselines_dir)?;
    let task = task::resolve(&args.task, tasks_dir)?;
    if !args.data.is_dir() {
        return Err(input_error(format!(
            "--data {}: no such folder; it should hold the dataset the task names (see docs/datasets.md)",
            args.data.display()
        )));
    }
    let (mut handle, record) =
        faceval_eval::registry::instantiate_on(&loaded, &args.device, args.dtype.as_deref())?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp =
        TempDir(std::env::temp_dir().join(format!("faceval-bench-{}-{nanos}", std::process::id())));
    let mut runs = Vec::with_capacity(args.repeat);
    let mut last_manifest: Option<Manifest> = None;
    for k in 0..args.repeat {
        // Each repeat times a cold run: nothing cached by the previous one.
        if let ModelHandle::Loaded(model) = &mut handle {
            model.clear_caches();
        }
        let out = tmp.0.join(format!("repeat-{k}"));
        let manifest = Manifest {
            format: 1,
            faceval_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: env!("FACEVAL_GIT_REV").into(),
            model: record.clone(),
            device: "cpu".into(),
            dtype: "f32".into(),
            started: chrono::Utc::now().to_rfc3339(),
            argv: std::env::args().collect(),
            ..Default::default()
        };
        let opts = RunOptions {
            data_root: args.data.clone(),
            out: out.clone(),
            limit: Some(args.limit),
            shard: None,
            seed: args.seed,
            strict: false,
            progress: args.format == BenchFormat::Table,
        };
        let settings = runner::RunSettings {
            warmup: args.warmup,
            ..runner::RunSettings::default()
        };
        runner::run_with(
            &mut handle,
            manifest,
            std::slice::from_ref(&task),
            &opts,
            settings,
        )?;
        let m = metrics::read_or_compute(&out)?;
        let t = m.telemetry.unwrap_or_default();
        if t.overall.as_ref().is_none_or(|o| o.n == 0) {
            let errors = m.tasks.values().map(|t| t.n_errors).sum::<usize>();
            return Err(input_error(format!(
                "task {}: no call could be timed ({errors} item errors; see the data folder {})",
                task.name(),
                args.data.display()
            )));
        }
        runs.push(t);
        last_manifest = Some(run_folder::read_manifest(&out)?);
    }
    let figures: Vec<Figure> = figure_defs()
        .into_iter()
        .map(|(figure, unit, pick)| {
            let values: Vec<Option<f64>> = runs.iter().map(pick).collect();
            let (mean, sd) = mean_sd(&values);
            Figure {
                figure,
                unit,
                mean,
                sd,
                values,
            }
        })
        .collect();
    let manifest = last_manifest.unwrap_or_default();
    let report = BenchReport {
        model: record.name.clone(),
        task: task.name().to_string(),
        limit: args.limit,
        repeats: args.repeat,
        warmup: args.warmup,
        batch_size: manifest.batch_size,
        device: manifest.device.clone(),
        dtype: manifest.dtype.clone(),
        hardware: manifest.hardware.clone(),
        figures,
        runs,
    };
    match args.format {
        BenchFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        BenchFormat::Table => print_table(&report),
    }
    Ok(ExitCode::SUCCESS)
}

/// Decimals that suit a figure's size (llama-bench prints two; sub-millisecond baselines need more).
fn decimals(x: f64) -> usize {
    match x.abs() {
        a if a >= 100.0 => 1,
        a if a >= 1.0 => 2,
        _ => 4,
    }
}

fn fmt_cell(mean: Option<f64>, sd: Option<f64>) -> String {
    match (mean, sd) {
        (Some(m), Some(s)) => {
            let d = decimals(m);
            format!("{m:.d$} ± {s:.d$}")
        }
        (Some(m), None) => format!("{m:.0$}", decimals(m)),
        (None, _) => "—".to_string(),
    }
}

fn print_table(r: &BenchReport) {
    let n = r
        .runs
        .first()
        .and_then(|t| t.overall.as_ref())
        .map(|o| o.n)
        .unwrap_or(0);
    println!(
        "faceval bench: model {}, task {}, {} items × {} repeats ({} warm-up calls left out of each, {} timed), batch size {}",
        r.model,
        r.task,
        r.limit,
        r.repeats,
        r.warmup,
        n,
        r.batch_size.unwrap_or(1)
    );
    if let Some(h) = &r.hardware {
        let gpus: Vec<String> = h.gpus.iter().map(|g| g.name.clone()).collect();
        println!(
            "device {} / dtype {}; CPU {} ({} threads){}",
            r.device,
            r.dtype,
            h.cpu_model.as_deref().unwrap_or("unknown"),
            h.cpu_threads,
            if gpus.is_empty() {
                String::new()
            } else {
                format!(
                    "; GPU {} (driver {}, CUDA {})",
                    gpus.join(", "),
                    h.gpu_driver_version.as_deref().unwrap_or("?"),
                    h.cuda_version.as_deref().unwrap_or("?")
                )
            }
        );
    }
    println!();
    println!("| {:<20} | {:>26} | {:<6} |", "figure", "mean ± sd", "unit");
    println!("|{:-<22}|{:->28}|{:-<8}|", ":", ":", ":");
    for f in &r.figures {
        let cell = fmt_cell(f.mean, f.sd);
        println!("| {:<20} | {:>26} | {:<6} |", f.figure, cell, f.unit);
    }
    let stages_missing = r
        .figures
        .iter()
        .any(|f| f.figure == "TTFT" && f.mean.is_none());
    if stages_missing {
        println!("\nThe model reports no stage split: only end-to-end figures are measured.");
    }
    if let Some(reason) = r
        .runs
        .iter()
        .filter_map(|t| t.memory.as_ref())
        .find_map(|m| m.vram_unavailable_reason.clone())
    {
        println!("VRAM not measured: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sd_over_present_values() {
        // statistics.stdev([1.0, 2.0, 4.0]) = 1.5275252316519468 (Python 3).
        let (m, s) = mean_sd(&[Some(1.0), None, Some(2.0), Some(4.0)]);
        assert!((m.unwrap() - 7.0 / 3.0).abs() < 1e-12);
        assert!((s.unwrap() - 1.5275252316519468).abs() < 1e-12);
        assert_eq!(mean_sd(&[Some(3.0)]), (Some(3.0), None));
        assert_eq!(mean_sd(&[None, None]), (None, None));
    }
}
