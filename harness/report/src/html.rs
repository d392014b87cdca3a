//! The report as one self-contained HTML file: inline CSS, figures as inline SVG, no scripts,
//! no fonts or anything else fetched over the network, so it opens the same offline, in a
//! mail attachment or on an air-gapped machine.
//!
//! Written by hand rather than with a template engine: the page is a fixed sequence of tables
//! whose every value needs escaping, and building it directly keeps that in one `esc` call.

use std::fmt::Write as _;

use crate::format::{self, ABSENT, PERF_HEADERS};
use crate::leaderboard::{BreakdownTable, Report, Section};
use crate::plots::Figure;

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub const CSS: &str = r#"
:root{--fg:#1d2430;--muted:#5b6675;--line:#d9dee5;--bg:#fff;--soft:#f5f7fa;--accent:#2f5d8a;--good:#1b7f3b;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:36px 0 8px;padding-top:8px;border-top:2px solid var(--line)}
h3{font-size:16px;margin:22px 0 6px}
p,li{max-width:980px}
.meta{color:var(--muted);margin:0 0 12px}
.notes{background:#fff8e6;border:1px solid #f0d58c;border-radius:6px;padding:8px 14px;margin:12px 0}
.notes li{margin:2px 0}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;margin:10px 0 4px}
nav a{color:var(--accent);text-decoration:none;border-bottom:1px dotted var(--accent)}
.scroll{overflow-x:auto;margin:6px 0 10px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:right;vertical-align:top;white-space:nowrap}
thead th{white-space:normal;min-width:4em}
td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:8em}
table.text td{white-space:normal;min-width:4em}
th{background:var(--soft);font-weight:600;text-align:center}
td.l,th.l{text-align:left}
tbody tr:nth-child(even) td{background:#fafbfc}
tr.ref td,th.ref{background:#eef4fb !important}
.ci{display:block;color:var(--muted);font-size:12px}
.n{display:block;color:var(--muted);font-size:11px}
.empty{color:var(--muted);font-style:italic}
.up{color:var(--good);font-weight:700}
.down{color:var(--bad);font-weight:700}
.note{color:var(--muted);font-size:13px}
.small{color:#8a5a00}
figure{margin:12px 0 20px}
figure svg{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
figcaption{color:var(--muted);font-size:13px;margin-top:4px}
details{margin:6px 0}
summary{cursor:pointer;color:var(--accent)}
code{font-size:12px;background:var(--soft);padding:1px 4px;border-radius:3px}
footer{margin-top:40px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:10px}
"#;

struct Page {
    s: String,
}

impl Page {
    fn push(&mut self, t: &str) {
        self.s.push_str(t);
    }
}

fn figure(p: &mut Page, f: &Figure) {
    let _ = write!(
        p.s,
        "<figure id=\"fig-{}\">{}<figcaption><b>{}</b> — {} <a href=\"plots/{}.png\">PNG</a></figcaption></figure>",
        esc(&f.name),
        strip_xml_decl(&f.svg),
        esc(&f.title),
        esc(&f.caption),
        esc(&f.name)
    );
}

/// SVG inlined in HTML must not carry an XML declaration.
fn strip_xml_decl(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// A task column's heading: the name, with version and fingerprint on a second line when
/// several definitions of the task are in the report.
fn column_head(c: &crate::leaderboard::Column) -> String {
    if c.label == c.variant.name {
        esc(&c.label)
    } else {
        format!(
            "{}<span class=\"n\">v{} · {}</span>",
            esc(&c.variant.name),
            esc(&c.variant.version),
            esc(crate::leaderboard::short(&c.variant.fingerprint))
        )
    }
}

/// A leaderboard cell: the number, its interval and n, with the ▲/▼ marker.
fn cell_html(cell: &Option<crate::leaderboard::Cell>, has_reference: bool) -> String {
    let Some(cell) = cell else {
        return format!("<td class=\"empty\">{ABSENT}</td>");
    };
    let t = format::cell_text(cell);
    if t.empty {
        return format!("<td class=\"empty\">{}</td>", esc(&t.main));
    }
    let mark_html = match format::marker(cell) {
        "▲" => "<span class=\"up\">▲</span> ",
        "▼" => "<span class=\"down\">▼</span> ",
        _ => "",
    };
    let title = if has_reference {
        format::significance_title(cell)
    } else {
        String::new()
    };
    format!(
        "<td title=\"{}\">{}{}<span class=\"ci\">{}</span><span class=\"n\">n = {}</span></td>",
        esc(&title),
        mark_html,
        esc(&t.main),
        esc(&t.interval),
        cell.n
    )
}

/// A model's label cell (`th` when models are columns).
fn model_label(r: &crate::leaderboard::Row, tag: &str) -> String {
    format!(
        "<{tag} class=\"l{}\">{}{}</{tag}>",
        if r.reference { " ref" } else { "" },
        esc(&r.label),
        if r.reference {
            " <span class=\"note\">(reference)</span>"
        } else {
            ""
        }
    )
}

/// Whether a models × tasks table is drawn with tasks as rows: when there are more tasks
/// than models, so that the page grows down rather than sideways (14 FaceXBench tasks and
/// three models fit a 1024-pixel window only this way).
fn tasks_as_rows(tasks: usize, models: usize) -> bool {
    tasks > models
}

/// A task's heading cell (`th`), with its version and fingerprint on hover.
fn task_head(c: &crate::leaderboard::Column, class: &str) -> String {
    format!(
        "<th{class} title=\"version {} · fingerprint {}\">{}</th>",
        esc(&c.variant.version),
        esc(crate::leaderboard::short(&c.variant.fingerprint)),
        column_head(c)
    )
}

/// A models × tasks table, or its transpose; `cell(row, column)` renders one cell.
fn grid(
    p: &mut Page,
    s: &Section,
    corner: &str,
    mut cell: impl FnMut(&crate::leaderboard::Row, usize) -> String,
) {
    p.push("<div class=\"scroll\"><table><thead><tr>");
    if tasks_as_rows(s.columns.len(), s.rows.len()) {
        let _ = write!(p.s, "<th class=\"l\">{}</th>", esc(corner));
        for r in &s.rows {
            p.push(&model_label(r, "th"));
        }
        p.push("</tr></thead><tbody>\n");
        for (c, col) in s.columns.iter().enumerate() {
            p.push("<tr>");
            p.push(&task_head(col, " class=\"l\""));
            for r in &s.rows {
                p.push(&cell(r, c));
            }
            p.push("</tr>\n");
        }
    } else {
        p.push("<th class=\"l\">Model</th>");
        for c in &s.columns {
            p.push(&task_head(c, ""));
        }
        p.push("</tr></thead><tbody>\n");
        for r in &s.rows {
            let _ = write!(
                p.s,
                "<tr{}>{}",
                if r.reference { " class=\"ref\"" } else { "" },
                model_label(r, "td")
            );
            for c in 0..s.columns.len() {
                p.push(&cell(r, c));
            }
            p.push("</tr>\n");
        }
    }
    p.push("</tbody></table></div>\n");
}

fn section_table(p: &mut Page, s: &Section, has_reference: bool) {
    grid(p, s, "Task", |r, c| cell_html(&r.cells[c], has_reference));
}

/// A table of plain text cells (escaped here); the first two columns are left-aligned.
fn text_table(p: &mut Page, (header, rows): &format::TextTable) {
    let align = |i: usize| if i < 2 { " class=\"l\"" } else { "" };
    // Text cells (a variant's wording, a group's name) wrap, so the table fits the window.
    p.push("<div class=\"scroll\"><table class=\"text\"><thead><tr>");
    for (i, h) in header.iter().enumerate() {
        let _ = write!(p.s, "<th{}>{}</th>", align(i), esc(h));
    }
    p.push("</tr></thead><tbody>");
    for r in rows {
        p.push("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(p.s, "<td{}>{}</td>", align(i), esc(c));
        }
        p.push("</tr>");
    }
    p.push("</tbody></table></div>\n");
}

fn breakdown_table(p: &mut Page, t: &BreakdownTable) {
    let _ = write!(
        p.s,
        "<h3>{} — by {}</h3><div class=\"scroll\"><table><thead><tr>",
        esc(&t.task),
        esc(&t.field)
    );
    let value = |i: Option<&faceval_eval::stats::Interval>| match i {
        Some(i) => format!(
            "<td>{}<span class=\"ci\">[{}, {}]</span><span class=\"n\">n = {}</span></td>",
            format::pct(i.estimate),
            format::pct(i.low),
            format::pct(i.high),
            i.n
        ),
        None => format!("<td class=\"empty\">{ABSENT}</td>"),
    };
    // Overall plus one column per category: transposed as the leaderboard is.
    if tasks_as_rows(t.columns.len() + 1, t.rows.len()) {
        let _ = write!(p.s, "<th class=\"l\">{}</th>", esc(&t.field));
        for r in &t.rows {
            let _ = write!(p.s, "<th class=\"l\">{}</th>", esc(&r.label));
        }
        p.push("</tr></thead><tbody>\n<tr><th class=\"l\">Overall</th>");
        for r in &t.rows {
            p.push(&value(r.overall.as_ref()));
        }
        p.push("</tr>\n");
        for (k, (_, name)) in t.columns.iter().enumerate() {
            let _ = write!(p.s, "<tr><th class=\"l\">{}</th>", esc(name));
            for r in &t.rows {
                p.push(&value(r.values[k].as_ref()));
            }
            p.push("</tr>\n");
        }
    } else {
        p.push("<th class=\"l\">Model</th><th>Overall</th>");
        for (_, name) in &t.columns {
            let _ = write!(p.s, "<th>{}</th>", esc(name));
        }
        p.push("</tr></thead><tbody>\n");
        for r in &t.rows {
            let _ = write!(p.s, "<tr><td class=\"l\">{}</td>", esc(&r.label));
            p.push(&value(r.overall.as_ref()));
            for v in &r.values {
                p.push(&value(v.as_ref()));
            }
            p.push("</tr>\n");
        }
    }
    p.push("</tbody></table></div>\n");
}

/// Render the whole report page.
pub fn render(report: &Report, figures: &[Figure], figure_notes: &[String]) -> String {
    let mut p = Page {
        s: String::with_capacity(1 << 20),
    };
    let fig = |name: &str| figures.iter().find(|f| f.name == name);
    let _ = write!(
        p.s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>{}</title><style>{}</style></head><body><main>\n",
        esc(&report.title),
        CSS
    );
    let _ = write!(
        p.s,
        "<h1>{}</h1><p class=\"meta\">{} run folder(s) · generated {} by faceval {}{}</p>",
        esc(&report.title),
        report.runs.len(),
        esc(&report.generated),
        esc(&report.faceval_version),
        match &report.reference {
            Some(r) => format!(" · reference model: <b>{}</b>", esc(r)),
            None => String::new(),
        }
    );
    if !report.notes.is_empty() {
        p.push("<div class=\"notes\"><ul>");
        for n in &report.notes {
            let _ = write!(p.s, "<li>{}</li>", esc(n));
        }
        p.push("</ul></div>\n");
    }
    p.push("<nav><a href=\"#leaderboard\">Leaderboard</a>");
    if !report.contamination.is_empty() {
        p.push("<a href=\"#contamination\">Contamination</a>");
    }
    if !report.facexbench.is_empty() {
        p.push("<a href=\"#facexbench\">FaceXBench</a>");
    }
    p.push("<a href=\"#parse-failures\">Parse failures</a><a href=\"#efficiency\">Efficiency</a><a href=\"#fairness\">Fairness</a>");
    if !report.confusion.is_empty() {
        p.push("<a href=\"#confusion\">Confusion matrices</a>");
    }
    if !report.calibration.is_empty() {
        p.push("<a href=\"#calibration\">Calibration</a>");
    }
    if !report.prompt_sensitivity.is_empty() {
        p.push("<a href=\"#prompt-sensitivity\">Prompt sensitivity</a>");
    }
    if !report.verification.is_empty() {
        p.push("<a href=\"#verification\">Face verification</a>");
    }
    p.push("<a href=\"#published\">Published reference</a><a href=\"#runs\">Runs</a></nav>\n");

    // Leaderboard.
    p.push("<section id=\"leaderboard\"><h2>Leaderboard</h2>\n");
    let _ = write!(
        p.s,
        "<p class=\"note\">Accuracy in %, with its 95% Wilson interval and the number of scored questions. \
         Unreadable answers count as wrong; questions that could not be asked are left out (see parse failures). {}</p>",
        match &report.reference {
            Some(r) => format!(
                "<span class=\"up\">▲</span>/<span class=\"down\">▼</span>: significantly better/worse than <b>{}</b> \
                 on the questions both answered (exact McNemar test, Holm-adjusted across each model's tasks, α = {}). \
                 Hover a cell for the difference and p-values.",
                esc(r),
                report.alpha
            ),
            None => "No reference model was chosen (<code>--reference</code>), so no significance markers are shown.".into(),
        }
    );
    let has_ref = report.reference.is_some();
    for (i, s) in report.sections.iter().enumerate() {
        if i > 0 {
            let _ = write!(p.s, "<h3>{}</h3>", esc(&s.title));
        }
        if let Some(n) = &s.note {
            let _ = write!(p.s, "<p class=\"note\">{}</p>", esc(n));
        }
        if s.columns.is_empty() {
            p.push("<p class=\"empty\">No tasks in these runs.</p>");
            continue;
        }
        section_table(&mut p, s, has_ref);
    }
    if let Some(f) = fig("accuracy") {
        figure(&mut p, f);
    }
    p.push("</section>\n");

    if !report.contamination.is_empty() {
        let _ = write!(
            p.s,
            "<section id=\"contamination\"><h2>Contamination</h2><p class=\"note\">Questions whose image was \
             found in the training set {} (<code>faceval overlap</code>: equal pixels, or a near copy by perceptual \
             hash) are split from the rest. Clean: accuracy without them. Full − clean: what the seen questions add to \
             the headline score; seen − clean: the two slices compared (Newcombe's interval for independent \
             proportions). A model that scores higher on seen questions may be remembering them.</p>\n",
            esc(report.overlap_reference.as_deref().unwrap_or(""))
        );
        for set in &report.contamination {
            let _ = write!(p.s, "<h3>{}</h3>", esc(&set.task));
            text_table(&mut p, &format::contamination_table(set));
        }
        p.push("</section>\n");
    }

    if !report.facexbench.is_empty() {
        p.push("<section id=\"facexbench\"><h2>FaceXBench</h2><p class=\"note\">Accuracy in %, micro-averaged over questions, \
                laid out as in the FaceLLM paper's table (category columns) and its per-task figure (sub-categories). \
                The published numbers are in <a href=\"#published\">Published reference</a>.</p>\n");
        for t in &report.facexbench {
            breakdown_table(&mut p, t);
        }
        p.push("</section>\n");
    }

    // Parse failures.
    p.push("<section id=\"parse-failures\"><h2>Parse failures</h2><p class=\"note\">Share of scored questions whose answer \
            could not be read (they count as wrong), with counts; questions that could not be asked at all are listed as errors.</p>\n");
    for s in &report.sections {
        if s.columns.is_empty() {
            continue;
        }
        if s.title != "Leaderboard" {
            let _ = write!(p.s, "<h3>{}</h3>", esc(&s.title));
        }
        grid(&mut p, s, "Task", |r, c| match &r.cells[c] {
            Some(c) if c.n > 0 => format!("<td>{}</td>", esc(&format::unparseable(c))),
            Some(_) => "<td class=\"empty\">no scored items</td>".to_string(),
            None => format!("<td class=\"empty\">{ABSENT}</td>"),
        });
    }
    p.push("</section>\n");

    // Efficiency.
    p.push("<section id=\"efficiency\"><h2>Efficiency</h2>\n");
    for n in &report.efficiency_notes {
        let _ = write!(p.s, "<p class=\"note\">{}</p>", esc(n));
    }
    p.push("<div class=\"scroll\"><table><thead><tr><th class=\"l\">Model</th><th>device</th><th>dtype</th><th>weights</th>");
    for h in PERF_HEADERS {
        let _ = write!(p.s, "<th>{h}</th>");
    }
    p.push("<th>source</th></tr></thead><tbody>");
    for r in &report.efficiency {
        let _ = write!(
            p.s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td>",
            esc(&r.label),
            esc(format::setting(&r.device)),
            esc(format::setting(&r.dtype)),
            if r.weight_bytes > 0 {
                format::bytes(r.weight_bytes as f64)
            } else {
                ABSENT.to_string()
            }
        );
        for c in format::perf_cells(&r.overall) {
            let _ = write!(p.s, "<td>{}</td>", esc(&c));
        }
        let _ = write!(
            p.s,
            "<td class=\"l note wrap\">{}</td></tr>",
            esc(r.overall.source.as_deref().unwrap_or(ABSENT))
        );
    }
    p.push("</tbody></table></div>\n");
    let task_names: Vec<String> = {
        let mut v: Vec<String> = report
            .efficiency
            .iter()
            .flat_map(|r| r.tasks.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if !task_names.is_empty() {
        // Tasks as rows, models as columns: there are usually more tasks than models.
        p.push("<details><summary>Per task: p50 / p95 latency, items/s</summary><div class=\"scroll\"><table><thead><tr><th class=\"l\">Task</th>");
        for r in &report.efficiency {
            let _ = write!(p.s, "<th class=\"l\">{}</th>", esc(&r.label));
        }
        p.push("</tr></thead><tbody>");
        for t in &task_names {
            let _ = write!(p.s, "<tr><th class=\"l\">{}</th>", esc(t));
            for r in &report.efficiency {
                match r.tasks.get(t) {
                    Some(perf) => {
                        let _ = write!(
                            p.s,
                            "<td>{} / {}<span class=\"n\">{} items/s</span></td>",
                            esc(&format::opt_ms(perf.p50_ms)),
                            esc(&format::opt_ms(perf.p95_ms)),
                            esc(&format::opt_rate(perf.items_per_s))
                        );
                    }
                    None => {
                        let _ = write!(p.s, "<td class=\"empty\">{ABSENT}</td>");
                    }
                }
            }
            p.push("</tr>");
        }
        p.push("</tbody></table></div></details>\n");
    }
    for name in ["latency-cdf", "vram"] {
        if let Some(f) = fig(name) {
            figure(&mut p, f);
        }
    }
    for n in figure_notes {
        let _ = write!(p.s, "<p class=\"note\">{}</p>", esc(n));
    }
    p.push("</section>\n");

    // Fairness.
    p.push("<section id=\"fairness\"><h2>Fairness</h2>\n");
    if report.fairness.is_empty() {
        p.push("<p class=\"empty\">No predictions carry group fields, so there is nothing to break down by group.</p>");
    } else {
        let _ = write!(
            p.s,
            "<p class=\"note\">Accuracy per group of each group field recorded with the questions. The gap is max − min group \
             accuracy over groups with at least {} questions (smaller groups are shown, marked *, but left out of the gap), \
             with a 95% within-group bootstrap interval. For intersections, chi-square tests and more measures run \
             <code>faceval audit</code>.</p>",
            report.fairness_min_group_size
        );
        let mut tasks: Vec<&str> = report.fairness.iter().map(|f| f.task.as_str()).collect();
        tasks.dedup();
        for task in tasks {
            let _ = write!(p.s, "<h3>{}</h3>", esc(task));
            p.push("<div class=\"scroll\"><table><thead><tr><th class=\"l\">Group field</th><th class=\"l\">Model</th><th>gap</th><th>worst group accuracy</th><th>missing</th></tr></thead><tbody>");
            for f in report.fairness.iter().filter(|f| f.task == task) {
                for r in &f.rows {
                    let measure = |m: &Option<faceval_eval::fairness::Measure>| match m {
                        Some(m) => match m.estimate {
                            Some(e) => match (m.low, m.high) {
                                (Some(l), Some(h)) => format!(
                                    "{}<span class=\"ci\">[{}, {}]</span>",
                                    format::pct(e),
                                    format::pct(l),
                                    format::pct(h)
                                ),
                                _ => format!(
                                    "{}<span class=\"ci\">{}</span>",
                                    format::pct(e),
                                    esc(m.reason.as_deref().unwrap_or(""))
                                ),
                            },
                            None => format!(
                                "<span class=\"empty\">{}</span>",
                                esc(m.reason.as_deref().unwrap_or(ABSENT))
                            ),
                        },
                        None => ABSENT.to_string(),
                    };
                    let _ = write!(
                        p.s,
                        "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&f.field),
                        esc(&r.label),
                        measure(&r.gap),
                        measure(&r.worst_group),
                        r.missing
                    );
                }
            }
            p.push("</tbody></table></div>\n");
            let slug = crate::plots::slug(task);
            if let Some(f) = fig(&format!("groups-{slug}")) {
                figure(&mut p, f);
            }
            p.push("<details><summary>Per-group accuracy tables</summary>");
            for f in report.fairness.iter().filter(|f| f.task == task) {
                let _ = write!(p.s, "<p><b>{}</b></p><div class=\"scroll\"><table><thead><tr><th class=\"l\">Model</th>", esc(&f.field));
                for g in &f.groups {
                    let _ = write!(p.s, "<th>{}</th>", esc(g));
                }
                p.push("</tr></thead><tbody>");
                for r in &f.rows {
                    let _ = write!(p.s, "<tr><td class=\"l\">{}</td>", esc(&r.label));
                    for g in &r.groups {
                        match g {
                            Some(g) => {
                                let _ = write!(
                                    p.s,
                                    "<td>{}{}<span class=\"ci\">[{}, {}]</span><span class=\"n\">n = {}</span></td>",
                                    format::pct(g.accuracy.estimate),
                                    if g.small { "<span class=\"small\">*</span>" } else { "" },
                                    format::pct(g.accuracy.low),
                                    format::pct(g.accuracy.high),
                                    g.n
                                );
                            }
                            None => {
                                let _ = write!(p.s, "<td class=\"empty\">{ABSENT}</td>");
                            }
                        }
                    }
                    p.push("</tr>");
                }
                p.push("</tbody></table></div>");
            }
            p.push("</details>\n");
        }
    }
    p.push("</section>\n");

    if !report.confusion.is_empty() {
        p.push("<section id=\"confusion\"><h2>Confusion matrices</h2>\n");
        for set in &report.confusion {
            let name = format!("confusion-{}", crate::plots::slug(&set.task));
            if let Some(f) = fig(&name) {
                figure(&mut p, f);
            }
        }
        p.push("</section>\n");
    }

    if !report.calibration.is_empty() {
        p.push("<section id=\"calibration\"><h2>Calibration</h2><p class=\"note\">For runs that scored the options \
                (<code>option_logprobs</code>): a softmax over the options gives the top option's probability (confidence). \
                ECE is the count-weighted mean of |accuracy − confidence| over 15 equal-width confidence bins, MCE the largest \
                bin gap, Brier the mean of Σ(p − y)² over the options; 95% percentile bootstrap intervals.</p>\n");
        for set in &report.calibration {
            let _ = write!(p.s, "<h3>{}</h3>", esc(&set.task));
            text_table(&mut p, &format::calibration_table(set));
            if let Some(f) = fig(&format!("reliability-{}", crate::plots::slug(&set.task))) {
                figure(&mut p, f);
            }
        }
        p.push("</section>\n");
    }

    if !report.prompt_sensitivity.is_empty() {
        p.push("<section id=\"prompt-sensitivity\"><h2>Prompt sensitivity</h2><p class=\"note\">Each item asked once per \
                phrasing of the question, on the items answered under every phrasing. Spread: best − worst accuracy. \
                Consistency: share of items right under every phrasing or wrong under every one. Best − worst: paired \
                difference with Newcombe's interval and the exact McNemar test. Headline scores use variant 0.</p>\n");
        for set in &report.prompt_sensitivity {
            let _ = write!(p.s, "<h3>{}</h3>", esc(&set.task));
            text_table(&mut p, &format::sensitivity_table(set));
        }
        p.push("</section>\n");
    }

    if !report.verification.is_empty() {
        p.push("<section id=\"verification\"><h2>Face verification</h2><p class=\"note\">Each item is two faces; the \
                score is the model's probability of \"same\" (answer likelihoods, first-token log-probabilities, or 1/0 from \
                the answer). AUC and EER from scikit-learn's ROC points, TMR at fixed FMRs; 95% bootstrap intervals resample \
                identities. Per group: FMR and FNMR at one global threshold set at a global FMR, with their max/min ratio and \
                difference across groups.</p>\n");
        for set in &report.verification {
            let _ = write!(p.s, "<h3>{}</h3>", esc(&set.task));
            text_table(&mut p, &format::verification_table(set));
            let groups = format::verification_groups_table(set);
            if !groups.1.is_empty() {
                text_table(&mut p, &groups);
            }
            if let Some(f) = fig(&format!("det-{}", crate::plots::slug(&set.task))) {
                figure(&mut p, f);
            }
        }
        p.push("</section>\n");
    }

    // Published.
    p.push("<section id=\"published\"><h2>Published reference results</h2><p class=\"note\">Numbers copied from the papers \
            (<code>baselines/published/</code>), not re-run here: other prompts, answer extraction and hardware may differ, \
            so compare with care.</p>\n");
    if report.published.is_empty() {
        p.push("<p class=\"empty\">No published tables were found.</p>");
    }
    for t in &report.published {
        let _ = write!(
            p.s,
            "<h3>{}</h3><p class=\"note\">{}</p><div class=\"scroll\"><table><thead><tr>",
            esc(&t.file),
            esc(&t.caption)
        );
        for h in &t.headers {
            let _ = write!(p.s, "<th>{}</th>", esc(h));
        }
        p.push("</tr></thead><tbody>");
        for r in &t.rows {
            p.push("<tr>");
            for (i, v) in r.iter().enumerate() {
                let left = v.parse::<f64>().is_err();
                let _ = write!(
                    p.s,
                    "<td{}>{}</td>",
                    if left || i == 0 { " class=\"l\"" } else { "" },
                    esc(v)
                );
            }
            p.push("</tr>");
        }
        p.push("</tbody></table></div>\n");
    }
    p.push("</section>\n");

    // Runs.
    p.push("<section id=\"runs\"><h2>Runs</h2><div class=\"scroll\"><table><thead><tr><th class=\"l\">Folder</th><th class=\"l\">Model</th><th class=\"l\">Row</th><th class=\"l\">Device</th><th class=\"l\">Started</th><th class=\"l\">Finished</th><th class=\"l\">Tasks</th></tr></thead><tbody>");
    for r in &report.runs {
        let _ = write!(
            p.s,
            "<tr><td class=\"l wrap\"><code>{}</code></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{} {}</td><td class=\"l wrap\">{}</td><td class=\"l wrap\">{}</td><td class=\"l wrap\">{}</td></tr>",
            esc(&r.dir),
            esc(&r.model),
            esc(&r.row),
            esc(&r.device),
            esc(&r.dtype),
            esc(&r.started),
            esc(r.finished.as_deref().unwrap_or("not finished")),
            esc(&r.tasks.join(", "))
        );
    }
    p.push("</tbody></table></div></section>\n");
    p.push("<footer>Made by <code>faceval report</code>. Intervals: Wilson for proportions, percentile bootstrap for MAE, \
            macro averages and gaps. Paired tests: exact McNemar with Holm's adjustment. The same content is in \
            <code>leaderboard.md</code> and <code>leaderboard.json</code> beside this file; figures as PNG under <code>plots/</code>.</footer>\n");
    p.push("</main></body></html>\n");
    p.s
}
