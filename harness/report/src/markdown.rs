//! The report as Markdown (`leaderboard.md`): the same tables and notes as the HTML page, with
//! the figures linked as PNG files under `plots/`.

use std::fmt::Write as _;

use crate::format::{self, ABSENT, PERF_HEADERS};
use crate::leaderboard::Report;
use crate::plots::Figure;

/// Table cells may not contain `|` or line breaks.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn header(out: &mut String, cols: &[String]) {
    let _ = writeln!(
        out,
        "| {} |",
        cols.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(
        out,
        "|{}|",
        cols.iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
}

fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(
        out,
        "| {} |",
        cells.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
    );
}

pub(crate) fn table(out: &mut String, (cols, rows): &crate::format::TextTable) {
    header(out, cols);
    for r in rows {
        row(out, r);
    }
    out.push('\n');
}

fn image(out: &mut String, figures: &[Figure], name: &str) {
    if let Some(f) = figures.iter().find(|f| f.name == name) {
        let _ = writeln!(
            out,
            "\n![{}](plots/{}.png)\n\n*{}*\n",
            f.title, f.name, f.caption
        );
    }
}

pub fn render(report: &Report, figures: &[Figure], figure_notes: &[String]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", report.title);
    let _ = writeln!(
        o,
        "{} run folder(s) · generated {} by faceval {}{}\n",
        report.runs.len(),
        report.generated,
        report.faceval_version,
        report
            .reference
            .as_ref()
            .map(|r| format!(" · reference model: **{r}**"))
            .unwrap_or_default()
    );
    for n in &report.notes {
        let _ = writeln!(o, "> {n}\n");
    }
    let _ = writeln!(o, "## Leaderboard\n");
    let _ = writeln!(
        o,
        "Accuracy in %, [95% Wilson interval], n scored questions. {}\n",
        match &report.reference {
            Some(r) => format!(
                "▲/▼: significantly better/worse than **{r}** on shared questions (exact McNemar, Holm across each model's tasks, α = {}).",
                report.alpha
            ),
            None => "No reference model (`--reference`), so no significance markers.".into(),
        }
    );
    for (i, s) in report.sections.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(o, "### {}\n", s.title);
        }
        if let Some(n) = &s.note {
            let _ = writeln!(o, "{n}\n");
        }
        if s.columns.is_empty() {
            let _ = writeln!(o, "No tasks in these runs.\n");
            continue;
        }
        let mut cols = vec!["Model".to_string()];
        cols.extend(s.columns.iter().map(|c| c.label.clone()));
        header(&mut o, &cols);
        for r in &s.rows {
            let mut cells = vec![if r.reference {
                format!("{} (reference)", r.label)
            } else {
                r.label.clone()
            }];
            for c in &r.cells {
                cells.push(match c {
                    None => ABSENT.into(),
                    Some(c) => {
                        let t = format::cell_text(c);
                        if t.empty {
                            t.main
                        } else {
                            let m = format::marker(c);
                            format!(
                                "{}{} {} n={}",
                                if m.is_empty() {
                                    String::new()
                                } else {
                                    format!("{m} ")
                                },
                                t.main,
                                t.interval,
                                c.n
                            )
                        }
                    }
                });
            }
            row(&mut o, &cells);
        }
        o.push('\n');
    }
    image(&mut o, figures, "accuracy");

    if !report.contamination.is_empty() {
        let _ = writeln!(
            o,
            "## Contamination\n\nQuestions whose image was found in the training set {} are split from the rest: clean accuracy beside the full one; full − clean is what the seen questions add to the headline score (`docs/overlap.md`).\n",
            report.overlap_reference.as_deref().unwrap_or("")
        );
        for set in &report.contamination {
            let _ = writeln!(o, "### {}\n", set.task);
            table(&mut o, &crate::format::contamination_table(set));
        }
    }

    if !report.facexbench.is_empty() {
        let _ = writeln!(o, "## FaceXBench\n\nAccuracy in %, micro-averaged over questions, in the FaceLLM paper's layout.\n");
        for t in &report.facexbench {
            let _ = writeln!(o, "### {} — by {}\n", t.task, t.field);
            let mut cols = vec!["Model".to_string(), "Overall".to_string()];
            cols.extend(t.columns.iter().map(|c| c.1.clone()));
            header(&mut o, &cols);
            for r in &t.rows {
                let mut cells = vec![r.label.clone()];
                cells.push(
                    r.overall
                        .as_ref()
                        .map(format::pct_interval)
                        .unwrap_or_else(|| ABSENT.into()),
                );
                for v in &r.values {
                    cells.push(
                        v.as_ref()
                            .map(format::pct_interval)
                            .unwrap_or_else(|| ABSENT.into()),
                    );
                }
                row(&mut o, &cells);
            }
            o.push('\n');
        }
    }

    let _ = writeln!(o, "## Parse failures\n\nUnparseable share of scored questions in % (count/n); errors are questions that could not be asked.\n");
    for s in &report.sections {
        if s.columns.is_empty() {
            continue;
        }
        if s.title != "Leaderboard" {
            let _ = writeln!(o, "### {}\n", s.title);
        }
        let mut cols = vec!["Model".to_string()];
        cols.extend(s.columns.iter().map(|c| c.label.clone()));
        header(&mut o, &cols);
        for r in &s.rows {
            let mut cells = vec![r.label.clone()];
            for c in &r.cells {
                cells.push(match c {
                    Some(c) => format::unparseable(c),
                    None => ABSENT.into(),
                });
            }
            row(&mut o, &cells);
        }
        o.push('\n');
    }

    let _ = writeln!(o, "## Efficiency\n");
    for n in &report.efficiency_notes {
        let _ = writeln!(o, "{n}\n");
    }
    let mut cols: Vec<String> = ["Model", "device", "dtype", "weights"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cols.extend(PERF_HEADERS.iter().map(|s| s.to_string()));
    cols.push("source".into());
    header(&mut o, &cols);
    for r in &report.efficiency {
        let mut cells = vec![
            r.label.clone(),
            format::setting(&r.device).to_string(),
            format::setting(&r.dtype).to_string(),
            if r.weight_bytes > 0 {
                format::bytes(r.weight_bytes as f64)
            } else {
                ABSENT.into()
            },
        ];
        cells.extend(format::perf_cells(&r.overall));
        cells.push(r.overall.source.clone().unwrap_or_else(|| ABSENT.into()));
        row(&mut o, &cells);
    }
    o.push('\n');
    image(&mut o, figures, "latency-cdf");
    image(&mut o, figures, "vram");
    for n in figure_notes {
        let _ = writeln!(o, "{n}\n");
    }

    let _ = writeln!(o, "## Fairness\n");
    if report.fairness.is_empty() {
        let _ = writeln!(o, "No predictions carry group fields.\n");
    } else {
        let _ = writeln!(
            o,
            "Gap = max − min group accuracy over groups with n ≥ {}, [95% within-group bootstrap interval].\n",
            report.fairness_min_group_size
        );
        header(
            &mut o,
            &[
                "Task".into(),
                "Group field".into(),
                "Model".into(),
                "gap".into(),
                "worst group".into(),
            ],
        );
        for f in &report.fairness {
            for r in &f.rows {
                let m = |m: &Option<faceval_eval::fairness::Measure>| match m {
                    Some(m) => match (m.estimate, m.low, m.high) {
                        (Some(e), Some(l), Some(h)) => format!(
                            "{} [{}, {}]",
                            format::pct(e),
                            format::pct(l),
                            format::pct(h)
                        ),
                        (Some(e), _, _) => format!(
                            "{} ({})",
                            format::pct(e),
                            m.reason.clone().unwrap_or_default()
                        ),
                        _ => m.reason.clone().unwrap_or_else(|| ABSENT.into()),
                    },
                    None => ABSENT.into(),
                };
                row(
                    &mut o,
                    &[
                        f.task.clone(),
                        f.field.clone(),
                        r.label.clone(),
                        m(&r.gap),
                        m(&r.worst_group),
                    ],
                );
            }
        }
        o.push('\n');
        let mut tasks: Vec<&str> = report.fairness.iter().map(|f| f.task.as_str()).collect();
        tasks.dedup();
        for t in tasks {
            image(
                &mut o,
                figures,
                &format!("groups-{}", crate::plots::slug(t)),
            );
        }
    }

    if !report.confusion.is_empty() {
        let _ = writeln!(o, "## Confusion matrices\n");
        for set in &report.confusion {
            image(
                &mut o,
                figures,
                &format!("confusion-{}", crate::plots::slug(&set.task)),
            );
        }
    }

    if !report.calibration.is_empty() {
        let _ = writeln!(o, "## Calibration\n\nECE and MCE over 15 equal-width confidence bins, multi-class Brier; 95% bootstrap intervals (`docs/calibration.md`).\n");
        for set in &report.calibration {
            let _ = writeln!(o, "### {}\n", set.task);
            table(&mut o, &crate::format::calibration_table(set));
            image(
                &mut o,
                figures,
                &format!("reliability-{}", crate::plots::slug(&set.task)),
            );
        }
    }

    if !report.prompt_sensitivity.is_empty() {
        let _ = writeln!(o, "## Prompt sensitivity\n\nAccuracy per phrasing on the items answered under all of them; headline scores use variant 0 (`docs/prompt-sensitivity.md`).\n");
        for set in &report.prompt_sensitivity {
            let _ = writeln!(o, "### {}\n", set.task);
            table(&mut o, &crate::format::sensitivity_table(set));
        }
    }

    if !report.verification.is_empty() {
        let _ = writeln!(o, "## Face verification\n\nThe score is the model's probability of \"same\". AUC and EER from scikit-learn's ROC points; 95% bootstrap intervals resample identities. Per group: FMR and FNMR at one global threshold set at a global FMR (`docs/verification.md`).\n");
        for set in &report.verification {
            let _ = writeln!(o, "### {}\n", set.task);
            table(&mut o, &crate::format::verification_table(set));
            let groups = crate::format::verification_groups_table(set);
            if !groups.1.is_empty() {
                table(&mut o, &groups);
            }
            image(
                &mut o,
                figures,
                &format!("det-{}", crate::plots::slug(&set.task)),
            );
        }
    }

    let _ = writeln!(o, "## Published reference results\n\nCopied from the papers (`baselines/published/`), not re-run here.\n");
    for t in &report.published {
        let _ = writeln!(o, "### {}\n\n{}\n", t.file, t.caption);
        header(&mut o, &t.headers);
        for r in &t.rows {
            row(&mut o, r);
        }
        o.push('\n');
    }

    let _ = writeln!(o, "## Runs\n");
    header(
        &mut o,
        &[
            "Folder".into(),
            "Model".into(),
            "Row".into(),
            "Finished".into(),
            "Tasks".into(),
        ],
    );
    for r in &report.runs {
        row(
            &mut o,
            &[
                format!("`{}`", r.dir),
                r.model.clone(),
                r.row.clone(),
                r.finished.clone().unwrap_or_else(|| "not finished".into()),
                r.tasks.join(", "),
            ],
        );
    }
    o
}
