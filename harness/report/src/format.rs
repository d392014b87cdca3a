//! Number formatting shared by the HTML and Markdown renderers, so both show the same text.

use faceval_eval::calibration::CalibrationScores;
use faceval_eval::contamination::Contamination;
use faceval_eval::stats::Interval;

use crate::leaderboard::{
    CalibrationSet, Cell, ContaminationSet, Perf, SensitivitySet, VerificationSet,
};

/// Placeholder for a value that was not measured.
pub const ABSENT: &str = "—";

pub fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// `41.2 [38.1, 44.3]` in percent.
pub fn pct_interval(i: &Interval) -> String {
    format!("{} [{}, {}]", pct(i.estimate), pct(i.low), pct(i.high))
}

pub fn num_interval(i: &Interval) -> String {
    format!("{:.2} [{:.2}, {:.2}]", i.estimate, i.low, i.high)
}

/// The main number of a leaderboard cell and its interval, split for layout.
pub struct CellText {
    pub main: String,
    pub interval: String,
    pub empty: bool,
}

pub fn cell_text(cell: &Cell) -> CellText {
    if cell.n == 0 {
        return CellText {
            main: "no scored items".into(),
            interval: String::new(),
            empty: true,
        };
    }
    if let Some(a) = &cell.accuracy {
        return CellText {
            main: pct(a.estimate),
            interval: format!("[{}, {}]", pct(a.low), pct(a.high)),
            empty: false,
        };
    }
    if let Some(m) = &cell.mae {
        return CellText {
            main: format!("MAE {:.2}", m.estimate),
            interval: format!("[{:.2}, {:.2}]", m.low, m.high),
            empty: false,
        };
    }
    CellText {
        main: ABSENT.into(),
        interval: String::new(),
        empty: true,
    }
}

/// `▲`, `▼` or nothing.
pub fn marker(cell: &Cell) -> &'static str {
    match cell.significance.as_ref().and_then(|s| s.marker.as_deref()) {
        Some("better") => "▲",
        Some("worse") => "▼",
        _ => "",
    }
}

pub fn significance_title(cell: &Cell) -> String {
    match &cell.significance {
        Some(s) => format!(
            "vs reference on {} shared questions: difference {} points [{}, {}], McNemar p = {}, Holm p = {}",
            s.n_paired,
            pct(s.difference.estimate),
            pct(s.difference.low),
            pct(s.difference.high),
            p_value(s.p_value),
            p_value(s.p_holm)
        ),
        None => cell.significance_note.clone().unwrap_or_default(),
    }
}

pub fn p_value(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

pub fn opt_ms(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => ABSENT.into(),
    }
}

pub fn opt_rate(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}"))
        .unwrap_or_else(|| ABSENT.into())
}

/// Binary units, so that a small checkpoint is not shown as "0 MiB".
pub fn bytes(b: f64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    const KIB: f64 = 1024.0;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.0} MiB", b / MIB)
    } else if b >= KIB {
        format!("{:.0} KiB", b / KIB)
    } else {
        format!("{b:.0} B")
    }
}

/// A device or dtype as a run recorded it; models without weights record `none`, which is
/// "not applicable", not a precision.
pub fn setting(s: &str) -> &str {
    if s.is_empty() || s == "none" {
        ABSENT
    } else {
        s
    }
}

pub fn opt_bytes(x: Option<f64>) -> String {
    x.map(bytes).unwrap_or_else(|| ABSENT.into())
}

/// The efficiency columns of one row, in table order.
pub fn perf_cells(p: &Perf) -> [String; 5] {
    [
        opt_ms(p.p50_ms),
        opt_ms(p.p95_ms),
        opt_rate(p.items_per_s),
        opt_bytes(p.peak_vram_bytes),
        opt_bytes(p.peak_rss_bytes),
    ]
}

pub const PERF_HEADERS: [&str; 5] = [
    "p50 latency",
    "p95 latency",
    "items/s",
    "peak VRAM",
    "peak RSS",
];

/// Unparseable share of a cell, with the error count when there were errors.
pub fn unparseable(cell: &Cell) -> String {
    if cell.n == 0 {
        return "no scored items".into();
    }
    let mut s = match &cell.unparseable_rate {
        Some(r) => format!("{} ({}/{})", pct(r.estimate), cell.n_unparseable, cell.n),
        None => ABSENT.into(),
    };
    if cell.n_errors > 0 {
        s.push_str(&format!(" · {} errors", cell.n_errors));
    }
    s
}

/// A table as text: header cells, then rows; the HTML and Markdown renderers lay it out.
pub type TextTable = (Vec<String>, Vec<Vec<String>>);

fn three_decimals(i: &Interval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high)
}

/// One task's calibration: per model the overall ECE, MCE and Brier with their bootstrap
/// intervals, then one row per group.
pub fn calibration_table(set: &CalibrationSet) -> TextTable {
    let header = ["Model", "Group", "n", "ECE", "MCE", "Brier"].map(String::from);
    let mut rows = Vec::new();
    for p in &set.panels {
        let c = &p.value;
        let line = |group: String, s: &CalibrationScores| {
            vec![
                p.label.clone(),
                group,
                s.n.to_string(),
                three_decimals(&s.ece),
                three_decimals(&s.mce),
                three_decimals(&s.brier),
            ]
        };
        rows.push(line("all".into(), &c.overall));
        for (field, values) in &c.groups {
            for (value, s) in values {
                rows.push(line(format!("{field} = {value}"), s));
            }
        }
    }
    (header.to_vec(), rows)
}

/// One task's prompt sensitivity, per model: a row per variant with its accuracy, then the
/// summary (spread, consistency, best against worst) in the last columns of the first row.
pub fn sensitivity_table(set: &SensitivitySet) -> TextTable {
    let header = [
        "Model",
        "Variant",
        "Accuracy % [95% CI]",
        "Items",
        "Spread (points)",
        "Consistency %",
        "Best − worst (points)",
        "McNemar p",
    ]
    .map(String::from);
    let mut rows = Vec::new();
    for p in &set.panels {
        let s = &p.value;
        for v in &s.variants {
            let tag = match (v.variant == s.best, v.variant == s.worst) {
                (true, _) => " (best)",
                (_, true) => " (worst)",
                _ => "",
            };
            let mut row = vec![
                p.label.clone(),
                format!("{}{tag}: {}", v.variant, v.phrasing),
                pct_interval(&v.accuracy),
            ];
            if v.variant == 0 {
                let d = &s.best_vs_worst.difference;
                row.extend([
                    format!("{} ({} left out)", s.n_items, s.n_left_out),
                    pct(s.spread),
                    pct_interval(&s.consistency),
                    format!("{} [{}, {}]", pct(d.estimate), pct(d.low), pct(d.high)),
                    p_value(s.best_vs_worst.mcnemar.p_value),
                ]);
            } else {
                row.extend(std::iter::repeat_n(String::new(), 5));
            }
            rows.push(row);
        }
    }
    (header.to_vec(), rows)
}

/// A difference in percentage points with its interval, signed: `+4.1 [−1.2, +9.0]`.
fn points_interval(i: &Interval) -> String {
    let signed = |x: f64| format!("{:+.1}", 100.0 * x).replace('-', "−");
    format!(
        "{} [{}, {}]",
        signed(i.estimate),
        signed(i.low),
        signed(i.high)
    )
}

fn opt_pct_interval(i: &Option<Interval>) -> String {
    i.as_ref().map_or_else(|| ABSENT.to_string(), pct_interval)
}

/// One task's contamination panel: per model the full, clean and contaminated accuracy, the
/// size of the contaminated slice, and what it adds to the headline score.
pub fn contamination_table(set: &ContaminationSet) -> TextTable {
    contamination_rows(
        "Model",
        set.panels.iter().map(|p| (p.label.clone(), &p.value)),
    )
}

/// Contamination rows under a first column named `first` (a model per row in the report, a
/// task per row in `faceval score`).
pub fn contamination_rows<'a>(
    first: &str,
    rows: impl IntoIterator<Item = (String, &'a Contamination)>,
) -> TextTable {
    let header = [
        first,
        "Full % [95% CI]",
        "Clean % [95% CI]",
        "Seen in training",
        "Seen % [95% CI]",
        "Full − clean (points)",
        "Seen − clean (points)",
    ]
    .map(String::from);
    let rows = rows
        .into_iter()
        .map(|(label, c)| {
            let share = if c.n > 0 {
                format!(
                    "{} of {} ({}%)",
                    c.n_contaminated,
                    c.n,
                    pct(c.n_contaminated as f64 / c.n as f64)
                )
            } else {
                ABSENT.to_string()
            };
            vec![
                label,
                opt_pct_interval(&c.full),
                opt_pct_interval(&c.clean),
                share,
                opt_pct_interval(&c.contaminated),
                c.full_minus_clean
                    .as_ref()
                    .map_or_else(|| ABSENT.to_string(), points_interval),
                c.contaminated_minus_clean
                    .as_ref()
                    .map_or_else(|| ABSENT.to_string(), points_interval),
            ]
        })
        .collect();
    (header.to_vec(), rows)
}

/// A table as aligned plain text for a terminal: columns padded to their widest cell
/// (counted in characters), two spaces apart.
pub fn plain_table((header, rows): &TextTable) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn optional(i: &Option<Interval>, show: fn(&Interval) -> String) -> String {
    i.as_ref().map_or_else(|| ABSENT.to_string(), show)
}

/// A max/min ratio with its interval, "∞" when the smallest rate is 0, and the estimate
/// alone when the interval is unbounded.
fn ratio_text(spread: &faceval_eval::verification::Spread) -> String {
    match (&spread.max_min_ratio_interval, spread.max_min_ratio) {
        (Some(i), _) => num_interval(i),
        (None, Some(r)) => format!("{r:.2} [unbounded above]"),
        // Two groups or more but a smallest rate of 0; fewer groups have no spread at all.
        (None, None) if spread.max_min_difference.is_some() => "∞ (a group's rate is 0)".into(),
        (None, None) => ABSENT.into(),
    }
}

/// One verification task, per model: pairs, AUC and EER with their identity-cluster
/// bootstrap intervals, the EER threshold and the accuracy there, and TMR at each FMR.
pub fn verification_table(set: &VerificationSet) -> TextTable {
    let mut header = [
        "Model",
        "Pairs (genuine/impostor)",
        "AUC [95% CI]",
        "EER % [95% CI]",
        "Threshold at EER",
        "Accuracy there %",
    ]
    .map(String::from)
    .to_vec();
    let fmrs: Vec<f64> = set
        .panels
        .first()
        .map(|p| p.value.tmr_at_fmr.iter().map(|t| t.fmr).collect())
        .unwrap_or_default();
    header.extend(fmrs.iter().map(|f| format!("TMR % @ FMR {f}")));
    let rows = set
        .panels
        .iter()
        .map(|p| {
            let v = &p.value;
            let mut row = vec![
                p.label.clone(),
                format!("{} ({}/{})", v.n, v.n_genuine, v.n_impostor),
                three_decimals(&v.auc),
                pct_interval(&v.eer),
                format!("{:.4}", v.threshold_eer),
                pct(v.accuracy_at_threshold_eer),
            ];
            row.extend(fmrs.iter().map(|f| {
                v.tmr_at_fmr
                    .iter()
                    .find(|t| t.fmr == *f)
                    .map_or_else(|| ABSENT.to_string(), |t| pct(t.tmr))
            }));
            row
        })
        .collect();
    (header, rows)
}

/// One verification task's per-group error rates at the global threshold, per model and
/// group field: a row per group, then the max/min ratio and max − min difference rows.
pub fn verification_groups_table(set: &VerificationSet) -> TextTable {
    let header = [
        "Model",
        "Group",
        "Genuine/impostor",
        "FMR % [95% CI]",
        "FNMR % [95% CI]",
        "AUC",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for p in &set.panels {
        let v = &p.value;
        let threshold = v
            .group_threshold
            .map_or_else(|| "+inf".to_string(), |t| format!("{t:.4}"));
        for (field, b) in &v.groups {
            for (value, g) in &b.groups {
                rows.push(vec![
                    p.label.clone(),
                    format!("{field} = {value}"),
                    format!("{}/{}", g.n_genuine, g.n_impostor),
                    optional(&g.fmr, pct_interval),
                    optional(&g.fnmr, pct_interval),
                    g.auc
                        .map_or_else(|| ABSENT.to_string(), |a| format!("{a:.3}")),
                ]);
            }
            rows.push(vec![
                p.label.clone(),
                format!(
                    "{field}: max/min ratio (threshold {threshold} at FMR {})",
                    v.group_fmr
                ),
                String::new(),
                ratio_text(&b.fmr),
                ratio_text(&b.fnmr),
                String::new(),
            ]);
            rows.push(vec![
                p.label.clone(),
                format!("{field}: max − min (points)"),
                String::new(),
                optional(&b.fmr.max_min_difference, pct_interval),
                optional(&b.fnmr.max_min_difference, pct_interval),
                String::new(),
            ]);
        }
    }
    (header, rows)
}
