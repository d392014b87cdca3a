//! The `faceval` command line: evaluate face-understanding MLLMs on tasks, and score, merge,
//! import and inspect the runs. Exit codes: 0 success, 1 failure (or a gate regression),
//! 2 usage or input error.
//!
//! # Principal parts
//!
//! - `main.rs`: the clap tree ([`Cli`], [`Command`]) and the exit-code rule: an error marked
//!   as an input error (`faceval_eval::is_input_error`) exits 2, any other exits 1.
//! - `commands.rs`: `tasks`, `run`, `merge`, `import`, `score` and `demo`. Every command
//!   that needs a model gets it from `faceval_eval::registry` (manifest → `Box<dyn Model>`),
//!   which parses `--device`/`--dtype` once through `faceval_models::placement::Placement`.
//! - One file per larger command: `audit.rs`, `gate.rs`, `report.rs` (each: parse flags, ask
//!   `faceval-eval` to compute, ask `faceval-report` to render), `generate.rs` (one prompt),
//!   `serve.rs` (an OpenAI-compatible HTTP server), `bench.rs` (timings), `parity.rs`
//!   (checks against reference outputs).
//!
//! # How data flows
//!
//! Flags become options of the eval crate; the eval crate computes typed results from run
//! folders; the report crate renders them; this crate writes them to stdout or files and
//! chooses the exit code. No statistic or format rule is written here.
//!
//! # Where to start reading
//!
//! [`Command`] below for the list of commands, then `commands.rs` (`run`) for the common path.

mod audit;
mod bench;
mod commands;
mod gate;
mod generate;
mod overlap;
mod parity;
mod parity_qwen;
mod report;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "faceval",
    version,
    about = "Benchmark and evaluation harness for face-understanding multimodal LLMs"
)]
struct Cli {
    /// Folder of task TOML files that add to the built-in tasks; a file named like a built-in
    /// (`facexbench.toml`) replaces it. The shipped tasks are built in.
    #[arg(long, global = true, env = "FACEVAL_TASKS")]
    tasks_dir: Option<PathBuf>,
    /// Folder of model manifests (and `published/*.csv` tables) that add to the built-in ones;
    /// a file named like a built-in replaces it. The shipped baselines are built in.
    #[arg(long, global = true, env = "FACEVAL_BASELINES")]
    baselines_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, show or validate task definitions.
    Tasks {
        #[command(subcommand)]
        action: commands::TasksAction,
    },
    /// Evaluate a model on tasks into a run folder (resumes an interrupted run).
    Run(commands::RunArgs),
    /// Join the shards of a run (`--shard I/N`) into one run folder.
    Merge(commands::MergeArgs),
    /// Turn results made by other tools into a run folder.
    Import {
        #[command(subcommand)]
        format: commands::ImportFormat,
    },
    /// Recompute metrics.json of run folders from their predictions.
    Score(commands::ScoreArgs),
    /// Generate a synthetic face dataset and run every applicable task on the available models.
    Demo(commands::DemoArgs),
    /// Profile a model's efficiency on a task's first items: latency, TTFT, TPOT, throughput, peak memory.
    Bench(bench::BenchArgs),
    /// Check InternVL, LLaVA or CLIP/SigLIP against transformers' fixtures on a device and dtype.
    Parity(parity::ParityArgs),
    /// Fairness audit of run folders: per-group metrics, disparities, tests.
    Audit(audit::AuditArgs),
    /// Compare a candidate run with a baseline; exit 1 on a regression.
    Gate(gate::GateArgs),
    /// Serve a local model through an OpenAI-compatible HTTP API (/v1/chat/completions).
    Serve(serve::ServeArgs),
    /// Ask an InternVL checkpoint one question about some images; print the answer (or JSON with tokens and timings).
    Generate(generate::GenerateArgs),
    /// Write a seeded random-weight InternVL3 checkpoint (benchmarks, side-by-side timing).
    #[command(hide = true)]
    MakeCheckpoint(generate::MakeCheckpointArgs),
    /// Leaderboard over run folders: self-contained index.html, leaderboard.md/.json, plots.
    Report(report::ReportArgs),
    /// Find benchmark images that are copies of reference (training) images: exact pixels or
    /// perceptual-hash near matches; writes overlap.json.
    Overlap(overlap::OverlapArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Tasks { action } => commands::tasks(action, cli.tasks_dir.as_deref()),
        Command::Run(args) => {
            commands::run(args, cli.tasks_dir.as_deref(), cli.baselines_dir.as_deref())
        }
        Command::Merge(args) => commands::merge(args),
        Command::Import { format } => commands::import(format, cli.tasks_dir.as_deref()),
        Command::Score(args) => commands::score(args),
        Command::Demo(args) => commands::demo(args, cli.tasks_dir.as_deref()),
        Command::Serve(args) => serve::serve(args, cli.baselines_dir.as_deref()),
        Command::Generate(args) => generate::generate(args, cli.baselines_dir.as_deref()),
        Command::MakeCheckpoint(args) => generate::make_checkpoint(args),
        Command::Bench(args) => {
            bench::bench(args, cli.tasks_dir.as_deref(), cli.baselines_dir.as_deref())
        }
        Command::Parity(args) => parity::parity(args),
        Command::Audit(args) => audit::audit(args),
        Command::Gate(args) => gate::gate(args),
        Command::Report(args) => report::report(args, cli.baselines_dir.as_deref()),
        Command::Overlap(args) => overlap::overlap(args, cli.tasks_dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if faceval_eval::is_input_error(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
