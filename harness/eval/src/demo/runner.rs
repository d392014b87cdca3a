//! The demo run: draw the synthetic dataset, point every shipped task whose target the
//! synthetic faces carry at it, run each available model, and write a summary.
//!
//! The tasks keep their own labels, prompts and metrics; only their `[dataset]` table is
//! replaced by the synthetic manifest, and their fingerprint covers that replacement, so a demo
//! run can never be mistaken for a run on the real dataset.

use std::fmt::Write as _;
use std::path::Path;

use crate::metrics::RunMetrics;
use crate::prompt::sha256_hex;
use crate::run_folder::{Manifest, ModelRecord};
use crate::runner::{self, ModelHandle, RunOptions};
use crate::task::{self, DatasetSpec, ReaderKind, Task};

use super::pairs::PairLayout;
use super::synth;

/// The synthetic column that carries a task's target, if any.
fn synthetic_column(task: &Task) -> Option<&'static str> {
    let numeric = task.spec.question.style == task::QuestionStyle::Numeric;
    match task.spec.labels.field.as_str() {
        "expression" => Some("expression"),
        "age" if numeric || !task.spec.question.bins.is_empty() => Some("age"),
        "age" => Some("age_bin"),
        "gender" => Some("gender"),
        "race" => Some("race"),
        "yaw" => Some("yaw"),
        "pitch" => Some("pitch"),
        "roll" => Some("roll"),
        "manipulated" => Some("manipulated"),
        _ => None,
    }
}

/// The task with its dataset replaced by the synthetic manifest (or, for FaceXBench tasks,
/// by the synthetic benchmark folder; for verification tasks, by the synthetic pair lists).
pub fn retarget(
    task: &Task,
    manifest_csv: &Path,
    benchmark: &Path,
    pairs: Option<&PairLayout>,
) -> Option<Task> {
    let mut t = task.clone();
    if task.spec.dataset.reader == ReaderKind::Facexbench {
        t.spec.dataset.path = benchmark.to_path_buf();
        t.spec.dataset.images = None;
        return Some(with_fingerprint(task, t));
    }
    if matches!(
        task.spec.dataset.reader,
        ReaderKind::LfwPairs | ReaderKind::RfwPairs
    ) {
        let pairs = pairs?;
        let mut options = toml::Table::new();
        options.insert("extension".into(), "png".into());
        let (path, images) = if task.spec.dataset.reader == ReaderKind::LfwPairs {
            (&pairs.lfw_list, &pairs.lfw_images)
        } else {
            let races = pairs.races.iter().map(|r| r.as_str().into()).collect();
            options.insert("races".into(), toml::Value::Array(races));
            (&pairs.rfw_lists, &pairs.rfw_images)
        };
        t.spec.dataset = DatasetSpec {
            reader: task.spec.dataset.reader,
            path: path.clone(),
            images: Some(images.clone()),
            options,
        };
        return Some(with_fingerprint(task, t));
    }
    let column = synthetic_column(task)?;
    let mut options = toml::Table::new();
    options.insert("label_column".into(), column.into());
    let groups = ["skin_tone", "race", "gender", "age_bin"];
    options.insert(
        "group_columns".into(),
        toml::Value::Array(groups.iter().map(|g| (*g).into()).collect()),
    );
    options.insert("cluster_column".into(), "identity".into());
    t.spec.dataset = DatasetSpec {
        reader: ReaderKind::Manifest,
        path: manifest_csv.to_path_buf(),
        images: None,
        options,
    };
    t.spec.fairness.groups = groups.iter().map(|g| g.to_string()).collect();
    t.spec.fairness.cluster = Some("identity".into());
    Some(with_fingerprint(task, t))
}

/// A fingerprint covering the original TOML and the dataset that replaced its own.
fn with_fingerprint(original: &Task, mut t: Task) -> Task {
    let source = &original.source;
    let replacement = toml::to_string(&t.spec.dataset).unwrap_or_default();
    t.fingerprint = sha256_hex(format!("{source}\n# demo dataset\n{replacement}").as_bytes());
    t
}

/// What a demo wrote.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The printable summary (also in `summary.md`).
    pub summary: String,
    /// One run folder per model, in model order.
    pub runs: Vec<std::path::PathBuf>,
}

/// Run the demo into `out`: one run folder per model under `out/runs/`, and `summary.md`.
pub fn run_demo(
    out: &Path,
    tasks_dir: Option<&Path>,
    faces: usize,
    seed: u64,
) -> anyhow::Result<DemoOutcome> {
    let data = out.join("data");
    let dataset = synth::generate(&data, faces, seed)?;
    let manifest_csv = dataset
        .manifest
        .canonicalize()
        .unwrap_or(dataset.manifest.clone());
    let data_abs = data.canonicalize().unwrap_or(data.clone());
    let benchmark = super::facexbench::write(
        &data_abs.join("facexbench"),
        &data_abs.join("images"),
        &dataset.rows,
        seed,
    )?;
    let pairs = super::pairs::write(&data_abs.join("pairs"), &data_abs, &dataset.rows)?;
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    for def in task::all(tasks_dir)? {
        let t = Task::from_definition(&def)?;
        match retarget(&t, &manifest_csv, &benchmark, pairs.as_ref()) {
            Some(r) => tasks.push(r),
            None => skipped.push(t.name().to_string()),
        }
    }
    let models: Vec<(&str, ModelHandle)> = vec![
        (
            "random",
            ModelHandle::Loaded(Box::new(faceval_models::RandomModel)),
        ),
        ("majority", ModelHandle::Majority),
        (
            super::tiny_model::NAME,
            ModelHandle::Loaded(Box::new(super::tiny_model::prepare(out, seed)?)),
        ),
    ];
    let mut results: Vec<(String, RunMetrics)> = Vec::new();
    let mut runs = Vec::new();
    for (name, mut handle) in models {
        let run_dir = out.join("runs").join(name);
        // A demo always starts clean: the synthetic data may have been redrawn with another seed.
        let _ = std::fs::remove_dir_all(&run_dir);
        let mut manifest = Manifest {
            format: 1,
            faceval_version: env!("CARGO_PKG_VERSION").into(),
            model: ModelRecord {
                name: name.into(),
                kind: "baseline".into(),
                fingerprint: sha256_hex(name.as_bytes()),
                origin: crate::builtin::BUILTIN.into(),
                ..Default::default()
            },
            device: "cpu".into(),
            dtype: "none".into(),
            started: chrono::Utc::now().to_rfc3339(),
            argv: std::env::args().collect(),
            notes: [
                (
                    "data".to_string(),
                    "synthetic demo faces (faceval demo)".to_string(),
                ),
                ("demo.seed".to_string(), seed.to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        if let ModelHandle::Loaded(model) = &handle {
            super::tiny_model::describe(&mut manifest, model.as_ref());
        }
        let opts = RunOptions {
            data_root: data.clone(),
            out: run_dir.clone(),
            limit: (name == super::tiny_model::NAME).then_some(super::tiny_model::ITEMS_PER_TASK),
            shard: None,
            seed,
            strict: false,
            progress: true,
        };
        // A uniform pick needs options: numeric tasks have no random floor. Every other model
        // asks the same task definitions, so the report puts all of them in one leaderboard;
        // what a model cannot answer shows as unparseable, where it belongs.
        let applicable: Vec<Task> = tasks
            .iter()
            .filter(|t| name != "random" || t.spec.question.style != task::QuestionStyle::Numeric)
            .cloned()
            .collect();
        runner::run(&mut handle, manifest, &applicable, &opts)?;
        results.push((name.to_string(), crate::metrics::read_or_compute(&run_dir)?));
        runs.push(run_dir);
    }
    let summary = render_summary(&results, faces, &skipped);
    std::fs::write(out.join("summary.md"), &summary)?;
    Ok(DemoOutcome { summary, runs })
}

fn render_summary(results: &[(String, RunMetrics)], faces: usize, skipped: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# faceval demo\n");
    let _ = writeln!(
        s,
        "{faces} synthetic faces, drawn from a seed. The models here are the floors every leaderboard shows: \
         their scores are chance (random) or the majority rate by construction, not evidence about any face model. \
         `tiny-internvl3` is the real InternVL3 inference path (chat template, tiling, InternViT, projector, Qwen2 with its KV cache) \
         on a tiny checkpoint with seeded random weights, written to `models/tiny-internvl3/`: \
         its scores are chance by construction too. It answers the first {} items of each task, asked exactly as the \
         other models are asked, with answers of at most {} tokens; what random weights generate rarely parses, so \
         most of its answers are unparseable (counted as wrong, and reported as such).\n",
        super::tiny_model::ITEMS_PER_TASK,
        super::tiny_model::MAX_NEW_TOKENS
    );
    let _ = writeln!(
        s,
        "| model | task | n | accuracy [95% CI] | MAE [95% CI] | unparseable | errors |"
    );
    let _ = writeln!(s, "|---|---|---:|---|---|---:|---:|");
    for (model, m) in results {
        for (task, t) in &m.tasks {
            let acc = t
                .accuracy
                .as_ref()
                .map(|a| {
                    format!(
                        "{:.1} [{:.1}, {:.1}]",
                        100.0 * a.estimate,
                        100.0 * a.low,
                        100.0 * a.high
                    )
                })
                .unwrap_or_else(|| "—".into());
            let mae = t
                .mae
                .as_ref()
                .map(|a| format!("{:.2} [{:.2}, {:.2}]", a.estimate, a.low, a.high))
                .unwrap_or_else(|| "—".into());
            let unp = t
                .unparseable_rate
                .as_ref()
                .map(|u| format!("{:.1}%", 100.0 * u.estimate))
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                s,
                "| {model} | {task} | {} | {acc} | {mae} | {unp} | {} |",
                t.n, t.n_errors
            );
        }
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            s,
            "\nTasks without a synthetic counterpart (need their real dataset): {}.",
            skipped.join(", ")
        );
    }
    s
}
