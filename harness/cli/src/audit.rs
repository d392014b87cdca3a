//! `faceval audit`: the fairness audit of run folders (per-group metrics, disparities with
//! bootstrap intervals, chi-square tests with Holm and Benjamini–Hochberg adjustment), as a
//! Markdown report, JSON (`docs/audit.md`) or a self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use faceval_eval::audit::{self, AuditOptions, ProportionInterval};
use faceval_eval::error::input_error;

#[derive(Clone, Copy, ValueEnum)]
pub enum AuditFormat {
    Md,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum IntervalArg {
    Wilson,
    ClopperPearson,
}

#[derive(Args)]
pub struct AuditArgs {
    /// Run folders (several runs of one task are audited side by side).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Group fields, comma-separated (default: each task's `groups` in manifest.json).
    /// `age` reads `age_bin` when a run records only the bin.
    #[arg(long, value_delimiter = ',')]
    pub by: Option<Vec<String>>,
    /// Also audit every intersection of the fields (race × gender, ..., race × gender × age).
    #[arg(long)]
    pub intersections: bool,
    /// Smaller groups are shown, flagged and left out of gaps and tests
    /// (default: the task's fairness.min_group, else 30).
    #[arg(long)]
    pub min_group: Option<usize>,
    /// Interval for accuracies and errors.
    #[arg(long, value_enum, default_value = "wilson")]
    pub interval: IntervalArg,
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Bootstrap resamples for disparity intervals.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Audit only these tasks (repeatable).
    #[arg(long = "task")]
    pub tasks: Vec<String>,
    /// Positive class of two-label tasks for the binary measures (default: the second label).
    #[arg(long)]
    pub positive: Option<String>,
    /// Verification tasks: the global false match rate that sets the one threshold at which
    /// per-group FMR and FNMR are compared.
    #[arg(long, default_value_t = faceval_eval::verification::DEFAULT_GROUP_FMR)]
    pub group_fmr: f64,
    #[arg(long, value_enum, default_value = "md")]
    pub format: AuditFormat,
    /// Also write a self-contained HTML page of the audit.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// An overlap.json from `faceval overlap`: each checked task also shows its accuracy on
    /// the clean slice (questions whose images were not found in the training set).
    #[arg(long)]
    pub overlap: Option<PathBuf>,
}

pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    if let Some(by) = &args.by {
        if by.iter().any(|f| f.trim().is_empty()) {
            return Err(input_error(
                "--by: empty field name; give fields as race,gender,age",
            ));
        }
    }
    if !(args.group_fmr > 0.0 && args.group_fmr < 1.0) {
        return Err(input_error(format!(
            "--group-fmr {}: give a false match rate strictly between 0 and 1, such as 0.01",
            args.group_fmr
        )));
    }
    let options = AuditOptions {
        by: args
            .by
            .map(|v| v.into_iter().map(|f| f.trim().to_string()).collect()),
        intersections: args.intersections,
        min_group: args.min_group,
        interval: match args.interval {
            IntervalArg::Wilson => ProportionInterval::Wilson,
            IntervalArg::ClopperPearson => ProportionInterval::ClopperPearson,
        },
        confidence: args.confidence,
        resamples: args.resamples,
        tasks: args.tasks,
        positive: args.positive,
        overlap: args
            .overlap
            .as_deref()
            .map(faceval_eval::overlap::read)
            .transpose()?,
        group_fmr: args.group_fmr,
    };
    let report = audit::audit_dirs(&args.runs, &options)?;
    if let Some(path) = &args.html {
        crate::gate::write_file(path, &faceval_report::render_audit_html(&report))?;
    }
    match args.format {
        AuditFormat::Md => print!("{}", faceval_report::audit::to_markdown(&report)),
        AuditFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}
