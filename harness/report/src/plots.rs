//! The report's figures, drawn with plotters twice from one description: as SVG (inlined in
//! the HTML, text left to the browser as `<text>` elements) and as PNG (`plots/*.png`, text
//! rasterised with ab_glyph from the DejaVu Sans file embedded in the binary, so no system
//! font or fontconfig is needed).
//!
//! Figures: accuracy per task with 95% whiskers; per-group accuracy (one panel per group
//! field) and the max−min gap per task and field; latency CDF; peak VRAM; confusion heatmaps.

use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rayon::prelude::*;

use crate::leaderboard::{FairnessField, Report};

/// DejaVu Sans (Bitstream Vera licence, see `assets/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The embedded file is a valid font; a failure would only drop text from PNGs.
                let _ = plotters::style::register_font(name, style, FONT);
            }
        }
    });
}

/// A rendered figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem under `plots/`.
    pub name: String,
    pub title: String,
    pub caption: String,
    pub svg: String,
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Tableau 10: distinguishable, colour-blind aware, and print-safe.
const PALETTE: [(u8, u8, u8); 10] = [
    (0x4E, 0x79, 0xA7),
    (0xF2, 0x8E, 0x2B),
    (0xE1, 0x57, 0x59),
    (0x76, 0xB7, 0xB2),
    (0x59, 0xA1, 0x4F),
    (0xED, 0xC9, 0x48),
    (0xB0, 0x7A, 0xA1),
    (0xFF, 0x9D, 0xA7),
    (0x9C, 0x75, 0x5F),
    (0xBA, 0xB0, 0xAC),
];

/// Colour of series `i`; past ten, the palette repeats darker.
pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    let k = 1.0 - 0.28 * ((i / PALETTE.len()) % 3) as f64;
    RGBColor(
        (r as f64 * k) as u8,
        (g as f64 * k) as u8,
        (b as f64 * k) as u8,
    )
}

/// One row of estimates with intervals per series (`None` = not measured).
pub type Estimates = Vec<Option<(f64, f64, f64)>>;

/// A horizontal dot-and-whisker panel: rows down the side, one dot per series in each row.
#[derive(Debug, Clone)]
pub struct DotPanel {
    pub title: String,
    pub rows: Vec<String>,
    /// Per series, one estimate per row.
    pub values: Vec<Estimates>,
    pub x_range: (f64, f64),
    pub x_desc: String,
    pub percent: bool,
}

/// A confusion heatmap: panel title, labels, `matrix[target][answer]` (last column unparseable).
pub type HeatPanel = (String, Vec<String>, Vec<Vec<u64>>);

#[derive(Debug, Clone)]
pub enum Chart {
    Dots {
        series: Vec<String>,
        panels: Vec<DotPanel>,
    },
    Cdf {
        series: Vec<String>,
        /// Sorted latencies per series.
        values: Vec<Vec<f32>>,
        x_max: f64,
    },
    Bars {
        rows: Vec<String>,
        values: Vec<Option<f64>>,
        x_desc: String,
    },
    Heatmaps {
        panels: Vec<HeatPanel>,
    },
    /// Reliability diagram: per series, (mean confidence, accuracy) of each non-empty bin,
    /// against the diagonal of perfect calibration.
    Reliability {
        series: Vec<String>,
        points: Vec<Vec<(f64, f64)>>,
    },
    /// DET curve: per series, (FMR, FNMR) of each ROC point, both axes logarithmic from
    /// [`DET_FLOOR`] (rates below it are drawn at it) to 1.
    Det {
        series: Vec<String>,
        points: Vec<Vec<(f64, f64)>>,
    },
}

/// The smallest rate a DET curve shows; 0 has no place on a log axis.
pub const DET_FLOOR: f64 = 1e-4;

const ROW_MIN: u32 = 26;
const LEGEND_W: u32 = 220;
const LABEL_W: u32 = 200;

fn dot_row_height(n_series: usize) -> u32 {
    ROW_MIN.max(8 * n_series as u32 + 6)
}

impl Chart {
    /// Pixel size for this chart's content.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Chart::Dots { series, panels } => {
                let rh = dot_row_height(series.len());
                let h: u32 = panels
                    .iter()
                    .map(|p| 90 + rh * p.rows.len() as u32)
                    .sum::<u32>();
                let legend_h = 30 + 18 * series.len() as u32;
                (980, h.max(legend_h).max(160))
            }
            Chart::Cdf { series, .. } => (980, 420u32.max(60 + 18 * series.len() as u32)),
            // A square plot beside the legend.
            Chart::Reliability { series, .. } => {
                (LEGEND_W + 460, 440u32.max(60 + 18 * series.len() as u32))
            }
            Chart::Det { series, .. } => (
                det_legend_width(series) + 460,
                440u32.max(60 + 18 * series.len() as u32),
            ),
            Chart::Bars { rows, .. } => (980, 90 + 28 * rows.len() as u32),
            Chart::Heatmaps { panels } => {
                let k = panels.iter().map(|p| p.1.len()).max().unwrap_or(1).max(1) as u32;
                let cell = if k > 12 { 16 } else { 28 };
                let pw = 150 + cell * (k + 1) + 20;
                let ph = 70 + cell * k + 30;
                let cols = (960 / pw).clamp(1, 4).min(panels.len() as u32).max(1);
                let rows = (panels.len() as u32).div_ceil(cols);
                (pw * cols, ph * rows)
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        match self {
            Chart::Dots { series, panels } => draw_dots(root, series, panels),
            Chart::Cdf {
                series,
                values,
                x_max,
            } => draw_cdf(root, series, values, *x_max),
            Chart::Bars {
                rows,
                values,
                x_desc,
            } => draw_bars(root, rows, values, x_desc),
            Chart::Heatmaps { panels } => draw_heatmaps(root, panels),
            Chart::Reliability { series, points } => draw_reliability(root, series, points),
            Chart::Det { series, points } => draw_det(root, series, points),
        }
    }
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

fn anchored(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    font(size).pos(Pos::new(h, v))
}

/// Shorten a label to `max` characters with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[String],
) -> Result<(), String> {
    draw_legend_upto(area, series, 24)
}

/// Legend width that shows every label whole (DET curves name a model and a group per line):
/// about 8 px per character of 13 px text, plus the marker.
fn det_legend_width(series: &[String]) -> u32 {
    let longest = series.iter().map(|s| s.chars().count()).max().unwrap_or(0) as u32;
    LEGEND_W.max(40 + 8 * longest)
}

fn draw_legend_upto<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[String],
    max_chars: usize,
) -> Result<(), String> {
    area.draw(&Text::new(
        "Models",
        (10, 14),
        anchored(14, HPos::Left, VPos::Center),
    ))
    .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let y = 36 + 18 * i as i32;
        area.draw(&Circle::new((16, y), 5, color(i).filled()))
            .map_err(err)?;
        area.draw(&Text::new(
            // 24 characters of 13 px text fit the 192 px beside the marker, capitals included.
            clip(s, max_chars),
            (28, y),
            anchored(13, HPos::Left, VPos::Center),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn draw_dots<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[String],
    panels: &[DotPanel],
) -> Result<(), String> {
    let (w, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(w - LEGEND_W);
    draw_legend(&legend, series)?;
    let rh = dot_row_height(series.len());
    let mut rest = plot;
    for panel in panels {
        let h = 90 + rh * panel.rows.len() as u32;
        let (area, below) = rest.split_vertically(h);
        rest = below;
        draw_dot_panel(&area, series.len(), panel)?;
    }
    Ok(())
}

fn draw_dot_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    n_series: usize,
    panel: &DotPanel,
) -> Result<(), String> {
    let n = panel.rows.len().max(1) as f64;
    let (x0, x1) = panel.x_range;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, font(16))
        .margin(8)
        .margin_right(16)
        .x_label_area_size(40)
        .y_label_area_size(LABEL_W)
        .build_cartesian_2d(x0..x1, 0f64..n)
        .map_err(err)?;
    let percent = panel.percent;
    let fmt = move |v: &f64| {
        if percent {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.2}")
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(11)
        .x_label_formatter(&fmt)
        .x_desc(panel.x_desc.as_str())
        .label_style(font(12))
        .axis_desc_style(font(13))
        .light_line_style(RGBColor(240, 240, 240))
        .x_max_light_lines(1)
        .y_max_light_lines(1)
        .draw()
        .map_err(err)?;
    // Alternate row shading keeps a model's dot attached to its row when there are many.
    chart
        .draw_series((0..panel.rows.len()).filter(|r| r % 2 == 1).map(|r| {
            Rectangle::new(
                [(x0, r as f64), (x1, r as f64 + 1.0)],
                RGBColor(246, 246, 246).filled(),
            )
        }))
        .map_err(err)?;
    let base = area.get_base_pixel();
    for (r, name) in panel.rows.iter().enumerate() {
        // Row r is drawn top-down.
        let y = n - r as f64 - 0.5;
        let (px, py) = chart.backend_coord(&(x0, y));
        area.draw(&Text::new(
            clip(name, 30),
            (px - base.0 - 8, py - base.1),
            anchored(13, HPos::Right, VPos::Center),
        ))
        .map_err(err)?;
    }
    let ns = n_series.max(1) as f64;
    for (s, vals) in panel.values.iter().enumerate() {
        let c = color(s);
        let pts: Vec<(f64, f64, f64, f64)> = vals
            .iter()
            .enumerate()
            .filter_map(|(r, v)| {
                let (e, lo, hi) = (*v)?;
                let y = n - r as f64 - 1.0 + 0.1 + 0.8 * (s as f64 + 0.5) / ns;
                Some((y, e, lo, hi))
            })
            .collect();
        chart
            .draw_series(pts.iter().map(|&(y, _, lo, hi)| {
                PathElement::new(vec![(lo.max(x0), y), (hi.min(x1), y)], c.stroke_width(2))
            }))
            .map_err(err)?;
        chart
            .draw_series(
                pts.iter()
                    .map(|&(y, e, _, _)| Circle::new((e.clamp(x0, x1), y), 4, c.filled())),
            )
            .map_err(err)?;
    }
    Ok(())
}

/// At most this many points per CDF line: quantiles, not every item.
const CDF_POINTS: usize = 400;

fn draw_cdf<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[String],
    values: &[Vec<f32>],
    x_max: f64,
) -> Result<(), String> {
    let (w, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(w - LEGEND_W);
    draw_legend(&legend, series)?;
    let axes = (
        "Latency per question (CDF)",
        x_max.max(1e-3),
        "latency (ms)",
        "share of questions",
    );
    let mut chart = line_chart(&plot, axes)?;
    for (s, v) in values.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        let n = v.len();
        let step = (n / CDF_POINTS).max(1);
        let mut pts: Vec<(f64, f64)> = (0..n)
            .step_by(step)
            .map(|i| (v[i] as f64, (i + 1) as f64 / n as f64))
            .collect();
        pts.push((v[n - 1] as f64, 1.0));
        chart
            .draw_series(LineSeries::new(pts, color(s).stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}

/// Caption, x maximum, x and y descriptions of a [`line_chart`].
type Axes<'a> = (&'a str, f64, &'a str, &'a str);

/// Axes for lines over `0..x_max` × `0..1`, drawn with their light mesh.
fn line_chart<'a, DB: DrawingBackend>(
    plot: &'a DrawingArea<DB, Shift>,
    (caption, x_max, x_desc, y_desc): Axes,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let mut chart = ChartBuilder::on(plot)
        .caption(caption, font(16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(font(12))
        .axis_desc_style(font(13))
        .light_line_style(RGBColor(240, 240, 240))
        .x_max_light_lines(1)
        .y_max_light_lines(1)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// A square plot area with the series' legend to its right; the legend is drawn here. Square,
/// so that a diagonal (perfect calibration, equal error rates) is at 45 degrees.
fn square_plot_beside_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[String],
    legend_w: u32,
    max_chars: usize,
) -> Result<DrawingArea<DB, Shift>, String> {
    let (w, h) = root.dim_in_pixel();
    let side = (w - legend_w).min(h);
    let (plot, rest) = root.split_horizontally(side);
    let (legend, _) = rest.split_horizontally(legend_w.min(w - side));
    draw_legend_upto(&legend, series, max_chars)?;
    Ok(plot)
}

fn draw_reliability<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[String],
    points: &[Vec<(f64, f64)>],
) -> Result<(), String> {
    let plot = square_plot_beside_legend(root, series, LEGEND_W, 24)?;
    let axes = (
        "Reliability (15 confidence bins)",
        1.0,
        "confidence (top option's probability)",
        "accuracy",
    );
    let mut chart = line_chart(&plot, axes)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            RGBColor(150, 150, 150).stroke_width(1),
        ))
        .map_err(err)?;
    for (s, pts) in points.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(pts.clone(), color(s).stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color(s).filled())))
            .map_err(err)?;
    }
    Ok(())
}

fn draw_det<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[String],
    points: &[Vec<(f64, f64)>],
) -> Result<(), String> {
    let plot = square_plot_beside_legend(root, series, det_legend_width(series), usize::MAX)?;
    let mut chart = ChartBuilder::on(&plot)
        .caption("DET curve", font(16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((DET_FLOOR..1.0).log_scale(), (DET_FLOOR..1.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("false match rate (FMR)")
        .y_desc("false non-match rate (FNMR)")
        .x_label_formatter(&|x| format!("{x:e}"))
        .y_label_formatter(&|y| format!("{y:e}"))
        .label_style(font(12))
        .axis_desc_style(font(13))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    // The EER line: where FMR = FNMR.
    chart
        .draw_series(LineSeries::new(
            [(DET_FLOOR, DET_FLOOR), (1.0, 1.0)],
            RGBColor(150, 150, 150).stroke_width(1),
        ))
        .map_err(err)?;
    let floor = |(x, y): (f64, f64)| (x.clamp(DET_FLOOR, 1.0), y.clamp(DET_FLOOR, 1.0));
    for (s, pts) in points.iter().enumerate() {
        let pts: Vec<(f64, f64)> = pts.iter().copied().map(floor).collect();
        chart
            .draw_series(LineSeries::new(pts, color(s).stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}

/// A DET curve's points, with the segments that change both rates filled in. Between two ROC
/// points (tied scores) the rates move linearly, which is a curve on log axes: drawn as one
/// straight line it would cross the diagonal at the wrong place. Each such segment gets points
/// spaced geometrically towards both ends. Curves of many points are left as they are.
fn det_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    const MAX_POINTS: usize = 2000;
    if points.len() > MAX_POINTS {
        return points.to_vec();
    }
    // 0, then 1e-4 .. 1/2 geometrically, mirrored towards 1.
    let near: Vec<f64> = (0..=16)
        .map(|k| 0.5 * 10f64.powf(-4.0 + 4.0 * k as f64 / 16.0))
        .collect();
    let steps: Vec<f64> = std::iter::once(0.0)
        .chain(near.iter().copied())
        .chain(near.iter().rev().skip(1).map(|t| 1.0 - t))
        .chain(std::iter::once(1.0))
        .collect();
    let mut out = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        match points.get(i + 1) {
            Some(&(nx, ny)) if nx != x && ny != y => {
                out.extend(
                    steps[..steps.len() - 1]
                        .iter()
                        .map(|t| (x + t * (nx - x), y + t * (ny - y))),
                );
            }
            _ => out.push((x, y)),
        }
    }
    out
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[String],
    values: &[Option<f64>],
    x_desc: &str,
) -> Result<(), String> {
    let n = rows.len().max(1) as f64;
    let max = values
        .iter()
        .flatten()
        .cloned()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption("Peak GPU memory", font(16))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(LABEL_W)
        .build_cartesian_2d(0f64..max, 0f64..n)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(x_desc)
        .label_style(font(12))
        .axis_desc_style(font(13))
        .light_line_style(RGBColor(240, 240, 240))
        .x_max_light_lines(1)
        .y_max_light_lines(1)
        .draw()
        .map_err(err)?;
    let base = root.get_base_pixel();
    for (r, (name, v)) in rows.iter().zip(values).enumerate() {
        let y = n - r as f64 - 1.0;
        let (px, py) = chart.backend_coord(&(0.0, y + 0.5));
        root.draw(&Text::new(
            clip(name, 30),
            (px - base.0 - 8, py - base.1),
            anchored(13, HPos::Right, VPos::Center),
        ))
        .map_err(err)?;
        match v {
            Some(v) => {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y + 0.2), (*v, y + 0.8)],
                        color(r).filled(),
                    )))
                    .map_err(err)?;
            }
            None => {
                root.draw(&Text::new(
                    "not measured",
                    (px - base.0 + 6, py - base.1),
                    anchored(12, HPos::Left, VPos::Center).color(&RGBColor(120, 120, 120)),
                ))
                .map_err(err)?;
            }
        }
    }
    Ok(())
}

/// White → blue by row share; dark text on light cells and white on dark ones.
fn heat(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * s) as u8;
    RGBColor(
        lerp(255.0, 0x1f as f64),
        lerp(255.0, 0x4e as f64),
        lerp(255.0, 0x8c as f64),
    )
}

fn draw_heatmaps<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[HeatPanel],
) -> Result<(), String> {
    let k = panels.iter().map(|p| p.1.len()).max().unwrap_or(1).max(1) as u32;
    let cell: i32 = if k > 12 { 16 } else { 28 };
    let pw = 150 + cell as u32 * (k + 1) + 20;
    let (w, _) = root.dim_in_pixel();
    let cols = (w / pw).max(1) as usize;
    let ph = 70 + cell as u32 * k + 30;
    for (p, (title, labels, matrix)) in panels.iter().enumerate() {
        let (col, row) = ((p % cols) as i32, (p / cols) as i32);
        let ox = col * pw as i32;
        let oy = row * ph as i32;
        root.draw(&Text::new(
            clip(title, 34),
            (ox + 10, oy + 14),
            anchored(14, HPos::Left, VPos::Center),
        ))
        .map_err(err)?;
        let gx = ox + 150;
        let gy = oy + 60;
        let kk = labels.len();
        // Columns: the labels by number, then "?" for unparseable answers.
        for c in 0..=kk {
            let t = if c == kk {
                "?".to_string()
            } else {
                (c + 1).to_string()
            };
            root.draw(&Text::new(
                t,
                (gx + c as i32 * cell + cell / 2, gy - 10),
                anchored(11, HPos::Center, VPos::Center),
            ))
            .map_err(err)?;
        }
        root.draw(&Text::new(
            "predicted →",
            (gx, oy + 34),
            anchored(11, HPos::Left, VPos::Center).color(&RGBColor(90, 90, 90)),
        ))
        .map_err(err)?;
        for (r, label) in labels.iter().enumerate() {
            let y = gy + r as i32 * cell;
            root.draw(&Text::new(
                format!("{} {}", r + 1, clip(label, 16)),
                (gx - 6, y + cell / 2),
                anchored(11, HPos::Right, VPos::Center),
            ))
            .map_err(err)?;
            let counts = matrix.get(r).cloned().unwrap_or_default();
            let total: u64 = counts.iter().sum();
            for (c, &v) in counts.iter().enumerate().take(kk + 1) {
                let share = if total == 0 {
                    0.0
                } else {
                    v as f64 / total as f64
                };
                let x = gx + c as i32 * cell;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell - 1, y + cell - 1)],
                    heat(share).filled(),
                ))
                .map_err(err)?;
                if cell >= 24 && v > 0 {
                    let text_color = if share > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        v.to_string(),
                        (x + cell / 2, y + cell / 2),
                        anchored(10, HPos::Center, VPos::Center).color(&text_color),
                    ))
                    .map_err(err)?;
                }
            }
        }
    }
    Ok(())
}

/// Draw `chart` as SVG and PNG.
pub fn render(name: &str, title: &str, caption: &str, chart: &Chart) -> Result<Figure> {
    register_fonts();
    let (w, h) = chart.size();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        chart
            .draw(&root)
            .map_err(|e| anyhow!("plot {name} (svg): {e}"))?;
        root.present().map_err(|e| anyhow!("plot {name}: {e:?}"))?;
    }
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        chart
            .draw(&root)
            .map_err(|e| anyhow!("plot {name} (png): {e}"))?;
        root.present().map_err(|e| anyhow!("plot {name}: {e:?}"))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image_rgb(&buf, w, h)
        .map_err(|e| anyhow!("plot {name}: PNG encoding: {e}"))?;
    Ok(Figure {
        name: name.to_string(),
        title: title.to_string(),
        caption: caption.to_string(),
        svg,
        png,
        width: w,
        height: h,
    })
}

trait WriteRgb {
    fn write_image_rgb(self, buf: &[u8], w: u32, h: u32) -> image::ImageResult<()>;
}

impl<W: std::io::Write> WriteRgb for image::codecs::png::PngEncoder<W> {
    fn write_image_rgb(self, buf: &[u8], w: u32, h: u32) -> image::ImageResult<()> {
        use image::ImageEncoder;
        self.write_image(buf, w, h, image::ExtendedColorType::Rgb8)
    }
}

/// A file-name-safe stem.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Figures for a report, and notes for the figures that could not be drawn.
pub fn figures(report: &Report) -> Result<(Vec<Figure>, Vec<String>)> {
    let mut specs: Vec<(String, String, String, Chart)> = Vec::new();
    let mut notes = Vec::new();
    // Accuracy per task, main leaderboard.
    if let Some(main) = report.sections.first() {
        let cols: Vec<usize> = (0..main.columns.len())
            .filter(|&c| {
                main.rows.iter().any(|r| {
                    r.cells[c]
                        .as_ref()
                        .and_then(|x| x.accuracy.as_ref())
                        .is_some()
                })
            })
            .collect();
        if !cols.is_empty() {
            let series: Vec<String> = main.rows.iter().map(|r| r.label.clone()).collect();
            let values = main
                .rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|&c| {
                            let a = r.cells[c].as_ref()?.accuracy.as_ref()?;
                            Some((a.estimate, a.low, a.high))
                        })
                        .collect()
                })
                .collect();
            specs.push((
                "accuracy".into(),
                "Accuracy per task".into(),
                "Dots are accuracy, whiskers the 95% Wilson interval.".into(),
                Chart::Dots {
                    series,
                    panels: vec![DotPanel {
                        title: "Accuracy per task (95% interval)".into(),
                        rows: cols
                            .iter()
                            // One definition per task name in the main table: names suffice.
                            .map(|&c| main.columns[c].variant.name.clone())
                            .collect(),
                        values,
                        x_range: (0.0, 1.0),
                        x_desc: "accuracy".into(),
                        percent: true,
                    }],
                },
            ));
        }
    }
    // Fairness: one figure per task. Its first panel is the max − min gap per group field
    // (the fields where some model has a measurable gap), the others the per-group accuracies
    // of each field, so a reader sees the gap and which group is behind it together.
    let mut tasks: Vec<&str> = report.fairness.iter().map(|f| f.task.as_str()).collect();
    tasks.dedup();
    for task in &tasks {
        let fields: Vec<&FairnessField> =
            report.fairness.iter().filter(|f| f.task == *task).collect();
        let mut series: Vec<String> = Vec::new();
        for f in &fields {
            for r in &f.rows {
                if !series.contains(&r.label) {
                    series.push(r.label.clone());
                }
            }
        }
        let row_of = |f: &FairnessField, s: &str| f.rows.iter().find(|r| r.label == s).cloned();
        let gap_of = |f: &FairnessField, s: &str| row_of(f, s)?.gap?.estimate;
        let (measured, unmeasured): (Vec<&FairnessField>, Vec<&FairnessField>) = fields
            .iter()
            .partition(|f| series.iter().any(|s| gap_of(f, s).is_some()));
        let mut caption = format!(
            "Top: max − min group accuracy per group field, over groups with at least {} questions, \
             with a 95% within-group bootstrap interval. Below: accuracy per group with its 95% Wilson interval.",
            report.fairness_min_group_size
        );
        if !unmeasured.is_empty() {
            let names: Vec<&str> = unmeasured.iter().map(|f| f.field.as_str()).collect();
            caption.push_str(&format!(
                " Left out of the gap panel, since no model has two groups of {} questions or more in them: {}.",
                report.fairness_min_group_size,
                names.join(", ")
            ));
        }
        // A gap drawn without whiskers says why.
        let mut bare: Vec<String> = Vec::new();
        for f in &measured {
            for s in &series {
                if let Some(g) = row_of(f, s).and_then(|r| r.gap) {
                    if g.estimate.is_some() && (g.low.is_none() || g.high.is_none()) {
                        bare.push(format!(
                            "{} ({s}): {}",
                            f.field,
                            g.reason.as_deref().unwrap_or("no interval")
                        ));
                    }
                }
            }
        }
        if !bare.is_empty() {
            caption.push_str(&format!(" Gaps without an interval: {}.", bare.join("; ")));
        }
        let mut panels = Vec::new();
        if !measured.is_empty() {
            let values: Vec<Estimates> = series
                .iter()
                .map(|s| {
                    measured
                        .iter()
                        .map(|f| {
                            let g = row_of(f, s)?.gap?;
                            let e = g.estimate?;
                            Some((e, g.low.unwrap_or(e), g.high.unwrap_or(e)))
                        })
                        .collect()
                })
                .collect();
            let hi = values
                .iter()
                .flatten()
                .flatten()
                .map(|v| v.2)
                .fold(0.1, f64::max)
                .min(1.0);
            panels.push(DotPanel {
                title: format!("{task}: max − min group accuracy"),
                rows: measured.iter().map(|f| f.field.clone()).collect(),
                values,
                x_range: (0.0, (hi * 1.05).min(1.0)),
                x_desc: "gap (accuracy points)".into(),
                percent: true,
            });
        }
        for f in &fields {
            panels.push(DotPanel {
                title: format!("{task}: accuracy by {}", f.field),
                rows: f.groups.clone(),
                values: series
                    .iter()
                    .map(|s| {
                        let row = f.rows.iter().find(|r| &r.label == s);
                        f.groups
                            .iter()
                            .enumerate()
                            .map(|(g, _)| {
                                let ga = row?.groups[g].as_ref()?;
                                Some((ga.accuracy.estimate, ga.accuracy.low, ga.accuracy.high))
                            })
                            .collect()
                    })
                    .collect(),
                x_range: (0.0, 1.0),
                x_desc: "accuracy".into(),
                percent: true,
            });
        }
        specs.push((
            format!("groups-{}", slug(task)),
            format!("{task}: fairness"),
            caption,
            Chart::Dots { series, panels },
        ));
    }
    // Latency CDF.
    let measured: Vec<&crate::leaderboard::LatencySeries> = report
        .latency
        .iter()
        .filter(|s| s.sorted_ms.iter().any(|&x| x > 0.0))
        .collect();
    if measured.is_empty() {
        notes.push("Latency CDF: every per-question time in predictions.jsonl is zero or missing, so there is nothing to plot.".into());
    } else {
        let x_max = measured
            .iter()
            .map(|s| s.sorted_ms[((s.sorted_ms.len() - 1) as f64 * 0.99) as usize] as f64)
            .fold(0.0, f64::max)
            * 1.05;
        specs.push((
            "latency-cdf".into(),
            "Latency per question".into(),
            "Share of questions answered within a time (sum of preprocess, vision, prefill and decode), up to the 99th percentile.".into(),
            Chart::Cdf {
                series: measured.iter().map(|s| s.label.clone()).collect(),
                values: measured.iter().map(|s| s.sorted_ms.clone()).collect(),
                x_max,
            },
        ));
    }
    // Peak VRAM.
    let vram: Vec<Option<f64>> = report
        .efficiency
        .iter()
        .map(|r| r.overall.peak_vram_bytes.map(|b| b / (1u64 << 30) as f64))
        .collect();
    if vram.iter().any(Option::is_some) {
        specs.push((
            "vram".into(),
            "Peak GPU memory".into(),
            "Peak VRAM per model, from the runs' telemetry.".into(),
            Chart::Bars {
                rows: report.efficiency.iter().map(|r| r.label.clone()).collect(),
                values: vram,
                x_desc: "GiB".into(),
            },
        ));
    } else {
        notes.push(
            "Peak VRAM: not measured in any run. Runs on a GPU record it (NVML, sampled while the run goes); \
             CPU runs and served models have none."
                .into(),
        );
    }
    // Confusion matrices.
    for set in &report.confusion {
        specs.push((
            format!("confusion-{}", slug(&set.task)),
            format!("{}: confusion matrices", set.task),
            "Rows are the true labels, columns the answers (\"?\" = unparseable); shading is the share of the row.".into(),
            Chart::Heatmaps {
                panels: set
                    .panels
                    .iter()
                    .map(|p| (p.label.clone(), p.value.labels.clone(), p.value.matrix.clone()))
                    .collect(),
            },
        ));
    }
    // Reliability diagrams, one per task whose runs scored options.
    for set in &report.calibration {
        specs.push((
            format!("reliability-{}", slug(&set.task)),
            format!("{}: reliability diagram", set.task),
            "Accuracy against mean confidence in each of 15 equal-width confidence bins (empty bins left out); the grey diagonal is perfect calibration.".into(),
            Chart::Reliability {
                series: set.panels.iter().map(|p| p.label.clone()).collect(),
                points: set
                    .panels
                    .iter()
                    .map(|p| {
                        p.value
                            .reliability
                            .iter()
                            .filter_map(|b| Some((b.confidence?, b.accuracy?)))
                            .collect()
                    })
                    .collect(),
            },
        ));
    }
    // DET curves, one per verification task: each model overall, then per group.
    for set in &report.verification {
        let mut series = Vec::new();
        let mut points = Vec::new();
        let det = |roc: &[faceval_eval::verification::RocPoint]| -> Vec<(f64, f64)> {
            det_points(&roc.iter().map(|p| (p.fpr, 1.0 - p.tpr)).collect::<Vec<_>>())
        };
        for p in &set.panels {
            series.push(p.label.clone());
            points.push(det(&p.value.roc));
            for b in p.value.groups.values() {
                for (value, g) in &b.groups {
                    if !g.roc.is_empty() {
                        series.push(format!("{} · {value}", p.label));
                        points.push(det(&g.roc));
                    }
                }
            }
        }
        specs.push((
            format!("det-{}", slug(&set.task)),
            format!("{}: DET curve", set.task),
            format!("Each model overall, then each model per group (labelled model · group). False non-match rate against false match rate at every threshold, both axes logarithmic (rates under {DET_FLOOR} drawn at {DET_FLOOR}); the grey diagonal is FMR = FNMR, where the curves cross it is the EER."),
            Chart::Det { series, points },
        ));
    }
    // Names must be unique files.
    let mut seen = std::collections::HashMap::new();
    for s in specs.iter_mut() {
        let k = seen.entry(s.0.clone()).or_insert(0);
        *k += 1;
        if *k > 1 {
            s.0 = format!("{}-{}", s.0, k);
        }
    }
    let figs = specs
        .par_iter()
        .map(|(name, title, caption, chart)| render(name, title, caption, chart))
        .collect::<Result<Vec<_>>>()?;
    Ok((figs, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det_points_fill_in_diagonal_segments_only() {
        // Chance level, (FMR, FNMR) from (0, 1) to (1, 0): straight on linear axes only.
        let pts = det_points(&[(0.0, 1.0), (1.0, 0.0)]);
        assert_eq!(pts.first(), Some(&(0.0, 1.0)));
        assert_eq!(pts.last(), Some(&(1.0, 0.0)));
        assert!(pts.len() > 30, "{}", pts.len());
        assert!(pts.iter().all(|(x, y)| (x + y - 1.0).abs() < 1e-12));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        // Points near both ends, where log axes stretch the segment.
        assert!(pts.iter().any(|&(x, _)| x > 0.0 && x < 1e-3));
        assert!(pts.iter().any(|&(_, y)| y > 0.0 && y < 1e-3));
        // Horizontal and vertical steps are straight on log axes too: left as they are.
        let steps = [(0.0, 1.0), (0.0, 0.5), (0.25, 0.5), (1.0, 0.5)];
        assert_eq!(det_points(&steps), steps);
    }
}
