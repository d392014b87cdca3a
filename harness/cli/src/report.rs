//! `faceval report RUN... [--out DIR] [--reference MODEL]`: a leaderboard over run folders as
//! one self-contained `index.html`, with `leaderboard.md`, `leaderboard.json` and
//! `plots/*.png` beside it (docs/reports.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use faceval_report::ReportOptions;

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (each with manifest.json and predictions.jsonl).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Report folder.
    #[arg(long, default_value = "reports/latest")]
    pub out: PathBuf,
    /// Model (or row label) to test every other model against: ▲/▼ mark significant
    /// differences (exact McNemar on shared questions, Holm across tasks).
    #[arg(long)]
    pub reference: Option<String>,
    /// Page title.
    #[arg(long, default_value = "faceval report")]
    pub title: String,
    /// Significance level for the markers.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// An overlap.json from `faceval overlap`: adds the contamination panel, accuracy on the
    /// clean slice (questions whose images were not found in the training set) beside the
    /// full one.
    #[arg(long)]
    pub overlap: Option<PathBuf>,
}

pub fn report(args: ReportArgs, baselines_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        return Err(faceval_eval::error::input_error(format!(
            "--alpha must be in (0, 1), got {}",
            args.alpha
        )));
    }
    let options = ReportOptions {
        title: args.title,
        reference: args.reference,
        published_builtin: true,
        published_dir: baselines_dir.map(|d| d.join("published")),
        alpha: args.alpha,
        overlap: args
            .overlap
            .as_deref()
            .map(faceval_eval::overlap::read)
            .transpose()?,
        ..Default::default()
    };
    let report = faceval_report::generate(&args.runs, &options, &args.out)?;
    let rows: usize = report.sections.first().map_or(0, |s| s.rows.len());
    println!(
        "report: {} ({} run folders, {} models, {} sections) → {}",
        args.out.join("index.html").display(),
        report.runs.len(),
        rows,
        report.sections.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
