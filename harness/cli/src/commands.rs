//! One function per subcommand; each returns the process exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use faceval_eval::error::input_error;
use faceval_eval::metrics::{self, RunMetrics};
use faceval_eval::model_manifest::{self, ModelKind};
use faceval_eval::registry;
use faceval_eval::run_folder::{Manifest, ModelRecord, Shard};
use faceval_eval::runner::{self, ModelHandle, RunOptions};
use faceval_eval::task::{self, Task};

#[derive(Subcommand)]
pub enum TasksAction {
    /// One line per task in the tasks folder.
    List,
    /// A task's file and what it resolves to.
    Show { name: String },
    /// Check task files (all of them when none is named). Exits 2 if any is invalid.
    Validate { names: Vec<String> },
}

#[derive(Args)]
pub struct RunArgs {
    /// A model manifest (baselines/*.toml), its name, `random`, `majority`, or a checkpoint folder / hf:// id.
    #[arg(long)]
    pub model: String,
    /// Task names or TOML files.
    #[arg(long = "task", required = true, num_args = 1..)]
    pub tasks: Vec<String>,
    /// Folder the tasks' dataset paths are relative to.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Run folder (default: runs/<model>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the first N items of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// This machine's part of the run, `I/N` with 0 ≤ I < N.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop at the first bad item instead of recording it as an item error.
    #[arg(long)]
    pub strict: bool,
    /// Rerunning into an existing run folder asks again the questions recorded as `error`
    /// (a server error after the retries, a timeout, an image that was missing); this keeps
    /// them as they are.
    #[arg(long)]
    pub no_retry_errors: bool,
    /// Model calls at the start of each task whose timings telemetry leaves out (still scored).
    #[arg(long, default_value_t = faceval_eval::telemetry::DEFAULT_WARMUP)]
    pub warmup: usize,
    /// Generation questions per model call (consecutive items of a task); answers are the
    /// same at any size. For served models, the requests in flight at once.
    #[arg(long, default_value_t = faceval_eval::telemetry::DEFAULT_BATCH_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_size: usize,
    /// Where models with weights run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of models with weights: auto (f32 on CPU, bf16 on CUDA), f32, bf16 or f16.
    /// Overrides the manifest's `dtype`.
    #[arg(long)]
    pub dtype: Option<String>,
    /// InternVL: MiB of image features kept so that questions about an image already seen
    /// skip the vision encoder (default 1024; 0 turns the cache off). Answers do not change.
    #[arg(long)]
    pub feature_cache_mb: Option<u64>,
}

pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("expected I/N such as 0/4, got {s:?}"))?;
    let index: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("shard index {i:?} is not a number"))?;
    let count: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("shard count {n:?} is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("shard {index}/{count}: need 0 ≤ I < N"));
    }
    Ok(Shard { index, count })
}

#[derive(Args)]
pub struct MergeArgs {
    /// Shard run folders.
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Subcommand)]
pub enum ImportFormat {
    /// FaceXBench / VLMEvalKit prediction JSONs: benchmark files whose questions carry a `prediction`.
    Facexbench {
        results_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Model name to record.
        #[arg(long, default_value = "imported")]
        model_name: String,
        /// The task whose fingerprint and record the run carries.
        #[arg(long, default_value = "facexbench")]
        task: String,
    },
}

#[derive(Args)]
pub struct ScoreArgs {
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// An overlap.json from `faceval overlap`: also score each checked task on its clean
    /// slice (questions whose images were not found in the training set), written to
    /// metrics.json as `contamination` (docs/overlap.md).
    #[arg(long)]
    pub overlap: Option<PathBuf>,
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "reports/demo")]
    pub out: PathBuf,
    /// Synthetic faces to draw.
    #[arg(long, default_value_t = 240)]
    pub faces: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Where `tasks list` / `validate` say a task comes from: `builtin`, or its file (and whether
/// that file replaces a built-in of the same name).
fn origin_note(def: &faceval_eval::builtin::Definition) -> String {
    if def.overrides_builtin {
        format!("{} (replaces the built-in)", def.origin.label())
    } else {
        def.origin.label()
    }
}

pub fn tasks(action: TasksAction, tasks_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match action {
        TasksAction::List => {
            for def in task::all(tasks_dir)? {
                match Task::from_definition(&def) {
                    Ok(t) => println!(
                        "{:<24} v{:<3} {:<11} {:<16} {:<8} {}",
                        t.name(),
                        t.spec.version,
                        t.spec.dataset.reader.as_str(),
                        format!("{:?}", t.spec.question.style).to_lowercase(),
                        origin_note(&def),
                        t.spec.description
                    ),
                    Err(e) => println!("{:<24} INVALID ({}): {e:#}", def.name, origin_note(&def)),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksAction::Show { name } => {
            let t = task::resolve(&name, tasks_dir)?;
            let from = match &t.origin {
                faceval_eval::builtin::Origin::Builtin => {
                    format!("builtin ({} in the faceval sources)", t.path.display())
                }
                faceval_eval::builtin::Origin::File(p) => p.display().to_string(),
            };
            println!("# {} (v{}) from {from}", t.name(), t.spec.version);
            println!("# fingerprint sha256:{}", t.fingerprint);
            println!("# labels: {}", t.labels.values().join(", "));
            println!("{}", t.source);
            Ok(ExitCode::SUCCESS)
        }
        TasksAction::Validate { names } => {
            let mut bad = 0;
            let check = |t: anyhow::Result<Task>, bad: &mut usize| match t {
                Ok(t) => println!("ok       {} ({})", t.name(), t.origin.label()),
                Err(e) => {
                    *bad += 1;
                    println!("invalid  {e:#}");
                }
            };
            let count = if names.is_empty() {
                let defs = task::all(tasks_dir)?;
                for def in &defs {
                    check(Task::from_definition(def), &mut bad);
                }
                defs.len()
            } else {
                for n in &names {
                    check(task::resolve(n, tasks_dir), &mut bad);
                }
                names.len()
            };
            if bad > 0 {
                return Err(input_error(format!(
                    "{bad} of {count} task files are invalid"
                )));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn base_manifest(record: ModelRecord) -> Manifest {
    Manifest {
        format: 1,
        faceval_version: env!("CARGO_PKG_VERSION").into(),
        git_revision: env!("FACEVAL_GIT_REV").into(),
        model: record,
        tasks: vec![],
        device: "cpu".into(),
        dtype: "f32".into(),
        started: chrono::Utc::now().to_rfc3339(),
        argv: std::env::args().collect(),
        ..Default::default()
    }
}

pub fn run(
    args: RunArgs,
    tasks_dir: Option<&Path>,
    baselines_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let loaded = model_manifest::resolve(&args.model, baselines_dir)?;
    let tasks: Vec<Task> = args
        .tasks
        .iter()
        .map(|t| task::resolve(t, tasks_dir))
        .collect::<anyhow::Result<_>>()?;
    if !args.data.is_dir() {
        return Err(input_error(format!(
            "--data {}: no such folder; it should hold the datasets the tasks name (see docs/datasets.md)",
            args.data.display()
        )));
    }
    let (mut handle, record) =
        registry::instantiate_on(&loaded, &args.device, args.dtype.as_deref())?;
    if let (Some(mb), ModelHandle::Loaded(model)) = (args.feature_cache_mb, &mut handle) {
        model.set_feature_cache_bytes(mb.saturating_mul(1 << 20));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&loaded.manifest.name));
    let mut manifest = base_manifest(record);
    if let ModelHandle::Loaded(model) = &handle {
        // Models with weights say where they run; the weightless floors keep the defaults.
        let info = model.info();
        if !info.dtype.is_empty() && info.dtype != "none" {
            manifest.device = info.device;
            manifest.dtype = info.dtype;
        }
        if let Some(source) = model.prompt_template_source() {
            manifest
                .notes
                .insert("prompt.template_source".into(), source);
        }
    }
    manifest
        .notes
        .insert("data".into(), args.data.display().to_string());
    if matches!(loaded.manifest.kind, ModelKind::Clip | ModelKind::Siglip) {
        // The prompt set is template x each question's options (recorded per prediction).
        manifest.notes.insert(
            "zero_shot.template".into(),
            registry::zero_shot_template(&loaded.manifest).to_string(),
        );
    }
    if matches!(handle, ModelHandle::Majority) {
        manifest.notes.insert(
            "majority.reference".into(),
            "the evaluated split itself (oracle floor)".into(),
        );
    }
    let opts = RunOptions {
        data_root: args.data,
        out: out.clone(),
        limit: args.limit,
        shard: args.shard,
        seed: args.seed,
        strict: args.strict,
        progress: true,
    };
    let settings = runner::RunSettings {
        warmup: args.warmup,
        batch_size: args.batch_size,
        retry_errors: !args.no_retry_errors,
    };
    let summary = runner::run_with(&mut handle, manifest, &tasks, &opts, settings)?;
    let metrics = metrics::read_or_compute(&out)?;
    let retried = if summary.retried > 0 {
        format!(
            ", retried {} earlier errors ({} still fail)",
            summary.retried, summary.still_failing
        )
    } else {
        String::new()
    };
    eprintln!(
        "{}: asked {} questions, resumed {}{retried}, {} item errors",
        out.display(),
        summary.asked,
        summary.resumed,
        summary.errors
    );
    print_metrics(&metrics);
    Ok(ExitCode::SUCCESS)
}

pub fn print_metrics(m: &RunMetrics) {
    println!(
        "{:<28} {:>6} {:>22} {:>8} {:>7}",
        "task", "n", "accuracy [95% CI]", "unparse", "errors"
    );
    for (name, t) in &m.tasks {
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
            .or_else(|| {
                t.mae
                    .as_ref()
                    .map(|a| format!("MAE {:.2} [{:.2}, {:.2}]", a.estimate, a.low, a.high))
            })
            .unwrap_or_else(|| "—".into());
        let unp = t
            .unparseable_rate
            .as_ref()
            .map(|u| format!("{:.1}%", 100.0 * u.estimate))
            .unwrap_or_else(|| "—".into());
        println!(
            "{:<28} {:>6} {:>22} {:>8} {:>7}",
            name, t.n, acc, unp, t.n_errors
        );
    }
}

pub fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let merged = faceval_eval::merge::merge(&args.shards, &args.out)?;
    print_metrics(&merged);
    Ok(ExitCode::SUCCESS)
}

pub fn import(format: ImportFormat, tasks_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match format {
        ImportFormat::Facexbench {
            results_dir,
            out,
            model_name,
            task,
        } => {
            let t = task::resolve(&task, tasks_dir).with_context(|| "the import records a task")?;
            let mut manifest = base_manifest(ModelRecord {
                name: model_name.clone(),
                kind: "imported".into(),
                fingerprint: faceval_eval::prompt::sha256_hex(model_name.as_bytes()),
                ..Default::default()
            });
            manifest.device = "unknown".into();
            manifest.dtype = "unknown".into();
            manifest
                .notes
                .insert("imported_from".into(), results_dir.display().to_string());
            let m = faceval_eval::import::import_facexbench(&results_dir, &out, &t, manifest)?;
            print_metrics(&m);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let overlap = args
        .overlap
        .as_deref()
        .map(faceval_eval::overlap::read)
        .transpose()?;
    for dir in &args.runs {
        let m = metrics::write_metrics_with_overlap(dir, overlap.as_ref())?;
        println!("# {}", dir.display());
        print_metrics(&m);
        if let (Some(o), Some(path)) = (&overlap, &args.overlap) {
            print_contamination(&m, o, path);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The clean-slice table of `faceval score --overlap`, with a warning where the overlap and
/// the run do not line up.
fn print_contamination(
    m: &RunMetrics,
    overlap: &faceval_eval::overlap::OverlapReport,
    path: &Path,
) {
    let rows: Vec<(String, &faceval_eval::contamination::Contamination)> = m
        .tasks
        .iter()
        .filter_map(|(name, t)| Some((name.clone(), t.contamination.as_ref()?)))
        .collect();
    if rows.is_empty() {
        eprintln!(
            "warning: {} checked tasks {}; this run scored {} with an accuracy, so no clean slice \
             was computed (run `faceval overlap` with this run's --task names)",
            path.display(),
            overlap
                .summary
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            m.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return;
    }
    println!(
        "\ncontamination: images found in {} ({} images; near = hash distance ≤ {} of 256 bits)",
        overlap.reference, overlap.reference_images, overlap.max_distance
    );
    let table = faceval_report::format::contamination_rows(
        "task",
        rows.iter().map(|(t, c)| (t.clone(), *c)),
    );
    print!("{}", faceval_report::format::plain_table(&table));
    for (task, c) in &rows {
        if c.matched_not_scored > 0 {
            eprintln!(
                "warning: {task}: {} items {} found in the training set are not scored in this run \
                 (a run on part of the data, or an overlap computed on other data)",
                c.matched_not_scored,
                path.display()
            );
        }
    }
}

/// The demo: runs into `out/runs/`, `summary.md`, and the leaderboard page over those runs
/// (`index.html` with `leaderboard.md`/`.json` and `plots/` beside it) in `out`. The page's
/// path is the last line printed.
pub fn demo(args: DemoArgs, tasks_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let outcome =
        faceval_eval::demo::runner::run_demo(&args.out, tasks_dir, args.faces, args.seed)?;
    println!("{}", outcome.summary);
    let options = faceval_report::ReportOptions {
        title: "faceval demo".into(),
        // The floor every real model has to beat.
        reference: Some("majority".into()),
        published_builtin: true,
        ..Default::default()
    };
    let report = faceval_report::generate(&outcome.runs, &options, &args.out)?;
    println!(
        "Leaderboard ({} run folders, {} sections), with leaderboard.md, leaderboard.json and plots/ beside it:",
        report.runs.len(),
        report.sections.len()
    );
    println!("{}", args.out.join("index.html").display());
    Ok(ExitCode::SUCCESS)
}
