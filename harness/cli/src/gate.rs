//! `faceval gate`: compare a candidate run with a baseline run and exit 1 on a regression
//! (accuracy drop beyond `max_drop`, new errors, latency, VRAM or fairness gap beyond
//! tolerance) or an incomplete candidate, 0 when it passes, 2 on input errors. The decision rule is in `docs/gate.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use faceval_eval::error::input_error;
use faceval_eval::gate::{self, GateConfig};
use faceval_report::gate as render;

#[derive(Clone, Copy, ValueEnum)]
pub enum GateFormat {
    Text,
    Json,
    Md,
}

#[derive(Args)]
pub struct GateArgs {
    /// The reference run folder.
    #[arg(long)]
    pub baseline: PathBuf,
    /// The run to check.
    #[arg(long)]
    pub candidate: PathBuf,
    /// Thresholds (see docs/gate.md); defaults apply without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// What goes to stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub format: GateFormat,
    /// Also write JUnit XML (one testcase per task and check) for CI.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Also write a Markdown summary (e.g. to $GITHUB_STEP_SUMMARY).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also write a self-contained HTML page of the decision.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Compare the shared questions only when the candidate lacks some or did not finish
    /// (it warns instead of failing as `incomplete`); gate.toml `require_complete = false`.
    #[arg(long)]
    pub allow_partial: bool,
    /// Fail on underpowered checks instead of warning; gate.toml `fail_on_underpowered = true`.
    #[arg(long)]
    pub strict: bool,
}

pub fn gate(args: GateArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => GateConfig::load(path)?,
        None => GateConfig::default(),
    };
    if args.allow_partial {
        config.require_complete = false;
    }
    if args.strict {
        config.fail_on_underpowered = true;
    }
    let report = gate::gate_dirs(&args.baseline, &args.candidate, &config)?;
    if let Some(path) = &args.junit {
        write_file(path, &render::to_junit(&report))?;
    }
    if let Some(path) = &args.markdown {
        write_file(path, &render::to_markdown(&report))?;
    }
    if let Some(path) = &args.html {
        write_file(path, &faceval_report::render_gate_html(&report))?;
    }
    match args.format {
        GateFormat::Text => print!("{}", render::to_text(&report)),
        GateFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        GateFormat::Md => print!("{}", render::to_markdown(&report)),
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Write a text file, naming it in the error.
pub fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| input_error(format!("{}: cannot create: {e}", parent.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| input_error(format!("{}: cannot write: {e}", path.display())))
}
