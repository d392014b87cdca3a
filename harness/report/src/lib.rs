//! Renders faceval results — leaderboards, fairness audits, gate decisions — as Markdown,
//! JSON, text, JUnit XML and self-contained HTML.
//!
//! This crate presents; `faceval-eval` computes. Every renderer of faceval lives here, and
//! each takes a typed result from the eval crate.
//!
//! # Principal types
//!
//! - [`Report`] (`leaderboard.rs`): a leaderboard computed once from run folders — sections of
//!   models × tasks, significance against a reference, efficiency, fairness fields, notes.
//! - [`load::RunData`]: a run folder as a report reads it. Scores come from `metrics.json`
//!   (recomputed when missing), timings from the typed [`faceval_eval::run_folder`] schema,
//!   and per-question correctness from a lean parallel reader of `predictions.jsonl`, folded
//!   with the eval crate's one fold of rotations.
//! - [`Rendered`]: a report in every format, ready to [`write`].
//!
//! # How data flows
//!
//! ```text
//! run folders ─▶ load::read_run ─▶ leaderboard::build_from ─▶ Report
//!                                                             │
//!                      plots (SVG/PNG) ◀──────────────────────┤
//!                      html / markdown / JSON ◀───────────────┘  render ─▶ write
//!
//! eval::gate::GateReport   ─▶ gate::{to_text, to_markdown, to_junit}, pages::render_gate_html
//! eval::audit::AuditReport ─▶ audit::to_markdown, pages::render_audit_html
//! ```
//!
//! # Where to start reading
//!
//! `leaderboard.rs` (`build_from`) for what a report contains, then `html.rs` and
//! `markdown.rs` for how it is laid out; `gate.rs` and `audit.rs` for the command outputs.
//! The format is described in `docs/reports.md`.

pub mod audit;
pub mod format;
pub mod gate;
pub mod html;
pub mod leaderboard;
pub mod load;
pub mod markdown;
pub mod pages;
pub mod plots;
pub mod published;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

pub use leaderboard::{build, build_from, Report, ReportOptions};
pub use pages::{render_audit_html, render_gate_html};
pub use plots::Figure;

/// A report rendered in every format, not yet written.
pub struct Rendered {
    pub html: String,
    pub markdown: String,
    pub json: String,
    pub figures: Vec<Figure>,
}

#[derive(Serialize)]
struct FigureRef<'a> {
    name: &'a str,
    title: &'a str,
    caption: &'a str,
    png: String,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    format: u32,
    #[serde(flatten)]
    report: &'a Report,
    figures: Vec<FigureRef<'a>>,
    figure_notes: &'a [String],
}

/// Draw the figures and render HTML, Markdown and JSON.
pub fn render(report: &Report) -> Result<Rendered> {
    let (figures, notes) = plots::figures(report)?;
    let html = html::render(report, &figures, &notes);
    let markdown = markdown::render(report, &figures, &notes);
    let json = serde_json::to_string_pretty(&JsonReport {
        format: 1,
        report,
        figures: figures
            .iter()
            .map(|f| FigureRef {
                name: &f.name,
                title: &f.title,
                caption: &f.caption,
                png: format!("plots/{}.png", f.name),
            })
            .collect(),
        figure_notes: &notes,
    })?;
    Ok(Rendered {
        html,
        markdown,
        json,
        figures,
    })
}

/// Write a rendered report into `out` (created if needed).
pub fn write(rendered: &Rendered, out: &Path) -> Result<()> {
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots)
        .with_context(|| format!("{}: cannot create the report folder", plots.display()))?;
    let put = |name: &Path, bytes: &[u8]| {
        std::fs::write(name, bytes).with_context(|| format!("{}: cannot write", name.display()))
    };
    put(&out.join("index.html"), rendered.html.as_bytes())?;
    put(&out.join("leaderboard.md"), rendered.markdown.as_bytes())?;
    put(&out.join("leaderboard.json"), rendered.json.as_bytes())?;
    for f in &rendered.figures {
        put(&plots.join(format!("{}.png", f.name)), &f.png)?;
    }
    Ok(())
}

/// Read runs, render and write the report; returns it for a summary.
pub fn generate(runs: &[PathBuf], options: &ReportOptions, out: &Path) -> Result<Report> {
    let report = build(runs, options)?;
    let rendered = render(&report)?;
    write(&rendered, out)?;
    Ok(report)
}
