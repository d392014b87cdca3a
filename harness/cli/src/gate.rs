//! `faceval gate`: compare a candidate run with a baseline run and exit 1 on a regression
//! (accuracy drop beyond `max_drop`, new errors, latency, VRAM or fairness gap beyond
//! tolerance) or an incomplete candidate, 0 when it passes, 2 on input errors. The decision rule is in `docs/gate.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use faceval_eval::gate::{self, GateConfig};

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
        gate::write_file(path, &gate::to_junit(&report))?;
    }
    if let Some(path) = &args.markdown {
        gate::write_file(path, &gate::to_markdown(&report))?;
    }
    if let Some(path) = &args.html {
        let html = faceval_report::render_gate_html(&serde_json::to_value(&report)?);
        gate::write_file(path, &html)?;
    }
    match args.format {
        GateFormat::Text => print!("{}", gate::to_text(&report)),
        GateFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        GateFormat::Md => print!("{}", gate::to_markdown(&report)),
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
