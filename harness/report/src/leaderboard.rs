//! The report's content, computed once from the runs and then rendered three ways (HTML,
//! Markdown, JSON): leaderboard sections, paired significance against a reference model,
//! FaceXBench tables in the FaceLLM paper's layout, parse failures, efficiency, per-group
//! accuracy and gaps, and the published reference tables.
//!
//! Runs of one task with different versions or fingerprints are never put in one column:
//! the most common definition of each task forms the main leaderboard, and every other one
//! gets its own section with a note.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use faceval_eval::calibration::Calibration;
use faceval_eval::contamination::Contamination;
use faceval_eval::error::input_error;
use faceval_eval::fairness::{self, FairnessOptions, GroupAccuracy, Measure};
use faceval_eval::metrics::{Confusion, TaskMetrics};
use faceval_eval::run_folder::{Resources, Telemetry};
use faceval_eval::sensitivity::PromptSensitivity;
use faceval_eval::stats::{self, Interval};
use faceval_eval::verification::Verification;
use rayon::prelude::*;
use serde::Serialize;

use crate::load::{self, RunData};
use crate::published::{self, PublishedTable};

/// What to put in a report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub title: String,
    /// Model (or row label) every other row is tested against.
    pub reference: Option<String>,
    /// Show the shipped published tables (`baselines/published/*.csv`, compiled in).
    pub published_builtin: bool,
    /// Folder of published tables that add to (or, by file name, replace) the shipped ones.
    /// With neither, the section is empty.
    pub published_dir: Option<PathBuf>,
    /// Significance level for the ▲/▼ markers, after Holm's adjustment.
    pub alpha: f64,
    /// Bootstrap resamples for the gap intervals.
    pub resamples: usize,
    /// Images found in a training set (`faceval overlap`): adds the contamination panel,
    /// accuracy on the clean slice beside the full one (`docs/overlap.md`).
    pub overlap: Option<faceval_eval::overlap::OverlapReport>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            title: "faceval report".into(),
            reference: None,
            published_builtin: false,
            published_dir: None,
            alpha: 0.05,
            // Half the audit's 2,000: the gaps here are an overview (the audit is the formal
            // one), and the bootstrap is most of a large report's compute time.
            resamples: 1000,
            overlap: None,
        }
    }
}

/// FaceXBench category keys and the FaceLLM paper's column names, in the paper's order.
pub const FACEXBENCH_CATEGORIES: [(&str, &str); 6] = [
    ("bias_fairness", "Bias & Fairness"),
    ("face_recognition", "Face Recognition"),
    ("fas_deepfakes", "Face Authentication"),
    ("attributes_expression", "Face Analysis"),
    ("face_localization", "Face Localization"),
    ("tools_use", "Face Tools Use"),
];

/// FaceXBench sub-category keys and FaceLLM's task names, in its per-task figure's order.
pub const FACEXBENCH_SUBCATEGORIES: [(&str, &str); 14] = [
    ("age", "Age estimation"),
    ("gender", "Gender prediction"),
    ("race", "Race estimation"),
    ("hr_fr", "High-res face recognition"),
    ("lr_fr", "Low-res face recognition"),
    ("celebrity_identification", "Celebrity identification"),
    ("fas", "Face anti-spoofing"),
    ("deepfakes", "Deepfake detection"),
    ("attributes", "Attributes prediction"),
    ("expression", "Expression recognition"),
    ("headpose", "Head-pose estimation"),
    ("crowd_counting", "Crowd counting"),
    ("segmentation", "Face parsing"),
    ("tools_retrieval", "Face tools retrieval"),
];

/// One definition of a task: runs agree on it when name, version and fingerprint agree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TaskVariant {
    pub name: String,
    pub version: String,
    pub fingerprint: String,
}

impl TaskVariant {
    /// `name`, or `name (v2 · 1a2b3c4d)` when the version must be told apart.
    pub fn label(&self, qualified: bool) -> String {
        if qualified {
            format!(
                "{} (v{} · {})",
                self.name,
                self.version,
                short(&self.fingerprint)
            )
        } else {
            self.name.clone()
        }
    }
}

pub fn short(hex: &str) -> &str {
    &hex[..hex.len().min(8)]
}

/// One run folder as listed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub dir: String,
    pub model: String,
    pub row: String,
    pub kind: String,
    pub device: String,
    pub dtype: String,
    pub started: String,
    pub finished: Option<String>,
    pub tasks: Vec<String>,
    pub notes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub variant: TaskVariant,
    pub label: String,
    pub style: String,
    pub runs: usize,
}

/// Paired comparison of a row with the reference on the questions both answered.
#[derive(Debug, Clone, Serialize)]
pub struct Significance {
    pub n_paired: u64,
    pub accuracy: f64,
    pub reference_accuracy: f64,
    /// Row minus reference, Newcombe interval.
    pub difference: Interval,
    /// McNemar's exact test.
    pub p_value: f64,
    /// Holm-adjusted across the row's tasks in the section.
    pub p_holm: f64,
    /// `"better"`, `"worse"`, or `None` when not significant.
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub n: usize,
    pub n_predictions: usize,
    pub n_errors: usize,
    pub n_unparseable: usize,
    pub accuracy: Option<Interval>,
    pub mae: Option<Interval>,
    pub balanced_accuracy: Option<Interval>,
    pub macro_f1: Option<Interval>,
    pub unparseable_rate: Option<Interval>,
    pub significance: Option<Significance>,
    /// A note in place of a significance marker (no shared items, ...).
    pub significance_note: Option<String>,
    #[serde(skip)]
    pub run: usize,
    #[serde(skip)]
    pub confusion: Option<Confusion>,
    #[serde(skip)]
    pub breakdown: BTreeMap<String, BTreeMap<String, Interval>>,
    /// ECE, MCE, Brier and reliability bins, where the run scored options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Accuracy per prompt variant, where the task lists variants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_sensitivity: Option<PromptSensitivity>,
    /// Accuracy on the clean slice, where the report was given an overlap that checked this
    /// task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contamination: Option<Contamination>,
    /// AUC, EER, TMR@FMR and per-group FMR/FNMR, for verification tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub model: String,
    pub reference: bool,
    /// One entry per column of the section.
    pub cells: Vec<Option<Cell>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    pub note: Option<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

/// One FaceXBench table (overall and categories, or sub-categories) for one task variant.
#[derive(Debug, Clone, Serialize)]
pub struct BreakdownTable {
    pub task: String,
    pub field: String,
    /// `(key, column name)`.
    pub columns: Vec<(String, String)>,
    pub rows: Vec<BreakdownRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakdownRow {
    pub label: String,
    pub overall: Option<Interval>,
    pub n: usize,
    pub values: Vec<Option<Interval>>,
}

/// Speed and memory of a model, overall or on one task. Every field may be absent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Perf {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub items_per_s: Option<f64>,
    pub peak_vram_bytes: Option<f64>,
    pub peak_rss_bytes: Option<f64>,
    /// `"telemetry"` (metrics.json), `"predictions"` (timings in predictions.jsonl) or `None`.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EfficiencyRow {
    pub label: String,
    pub weight_bytes: u64,
    pub device: String,
    pub dtype: String,
    pub overall: Perf,
    pub tasks: BTreeMap<String, Perf>,
}

/// Per-group accuracy of every model on one group field of one task.
#[derive(Debug, Clone, Serialize)]
pub struct FairnessField {
    pub task: String,
    pub field: String,
    /// Union of the groups seen, sorted.
    pub groups: Vec<String>,
    pub rows: Vec<FairnessRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FairnessRow {
    pub label: String,
    /// Aligned with the field's `groups`.
    pub groups: Vec<Option<GroupAccuracy>>,
    /// Max − min accuracy over groups with n ≥ the minimum size, bootstrap interval.
    pub gap: Option<Measure>,
    pub worst_group: Option<Measure>,
    pub missing: usize,
}

/// Per-question latencies of one model, pooled over tasks.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySeries {
    pub label: String,
    #[serde(skip)]
    pub sorted_ms: Vec<f32>,
    pub n: usize,
}

/// One row's (model's) view of one task in a per-task figure or table.
#[derive(Debug, Clone, Serialize)]
pub struct Panel<T> {
    pub label: String,
    #[serde(flatten)]
    pub value: T,
}

/// A per-task set of panels: confusion matrices, calibration, prompt sensitivity.
#[derive(Debug, Clone, Serialize)]
pub struct PanelSet<T> {
    pub task: String,
    pub panels: Vec<Panel<T>>,
}

pub type ConfusionSet = PanelSet<Confusion>;
pub type CalibrationSet = PanelSet<Calibration>;
pub type SensitivitySet = PanelSet<PromptSensitivity>;
pub type ContaminationSet = PanelSet<Contamination>;
pub type VerificationSet = PanelSet<Verification>;

/// Everything a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    pub generated: String,
    pub faceval_version: String,
    pub reference: Option<String>,
    pub alpha: f64,
    pub runs: Vec<RunInfo>,
    pub notes: Vec<String>,
    pub sections: Vec<Section>,
    pub facexbench: Vec<BreakdownTable>,
    pub efficiency: Vec<EfficiencyRow>,
    pub efficiency_notes: Vec<String>,
    pub fairness: Vec<FairnessField>,
    pub fairness_min_group_size: usize,
    #[serde(skip)]
    pub latency: Vec<LatencySeries>,
    #[serde(skip)]
    pub confusion: Vec<ConfusionSet>,
    /// Tasks whose runs scored options: ECE, MCE, Brier per model (`docs/calibration.md`).
    pub calibration: Vec<CalibrationSet>,
    /// Tasks with prompt variants (`docs/prompt-sensitivity.md`).
    pub prompt_sensitivity: Vec<SensitivitySet>,
    /// Tasks the overlap checked: full, clean and contaminated accuracy per model
    /// (`docs/overlap.md`); empty without `--overlap`.
    pub contamination: Vec<ContaminationSet>,
    /// The overlap's reference folder and threshold, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap_reference: Option<String>,
    /// Verification tasks: AUC, EER, TMR@FMR, per-group FMR/FNMR and DET curves
    /// (`docs/verification.md`).
    pub verification: Vec<VerificationSet>,
    pub published: Vec<PublishedTable>,
}

impl Report {
    /// Every column of every section, in order.
    pub fn all_columns(&self) -> impl Iterator<Item = (&Section, usize, &Column)> {
        self.sections
            .iter()
            .flat_map(|s| s.columns.iter().enumerate().map(move |(i, c)| (s, i, c)))
    }
}

/// Read the run folders and compute the report.
pub fn build(run_dirs: &[PathBuf], options: &ReportOptions) -> Result<Report> {
    if run_dirs.is_empty() {
        return Err(input_error("a report needs at least one run folder"));
    }
    let runs: Vec<RunData> = run_dirs
        .par_iter()
        .map(|d| load::read_run(d))
        .collect::<Result<_>>()?;
    build_from(runs, options)
}

struct RowPlan {
    label: String,
    model: String,
    /// Variant → run index.
    tasks: BTreeMap<TaskVariant, usize>,
    runs: Vec<usize>,
}

fn variant_of(run: &RunData, task: &str) -> Option<TaskVariant> {
    run.manifest
        .tasks
        .iter()
        .find(|t| t.name == task)
        .map(|t| TaskVariant {
            name: t.name.clone(),
            version: t.version.clone(),
            fingerprint: t.fingerprint.clone(),
        })
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Rows: one per model; runs of one model that ran the same task definition twice get a row
/// each, labelled with their folder, because they cannot be merged silently.
fn plan_rows(runs: &[RunData]) -> Vec<RowPlan> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_model: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in runs.iter().enumerate() {
        let m = r.manifest.model.name.as_str();
        if !by_model.contains_key(m) {
            order.push(m);
        }
        by_model.entry(m).or_default().push(i);
    }
    let mut rows = Vec::new();
    for m in order {
        let idx = &by_model[m];
        let variants = |i: usize| -> Vec<TaskVariant> {
            runs[i]
                .manifest
                .tasks
                .iter()
                .filter_map(|t| variant_of(&runs[i], &t.name))
                .collect()
        };
        let mut seen = BTreeSet::new();
        let clash = idx
            .iter()
            .flat_map(|&i| variants(i))
            .any(|v| !seen.insert(v));
        if clash {
            for &i in idx {
                rows.push(RowPlan {
                    label: format!("{m} · {}", dir_name(&runs[i].dir)),
                    model: m.to_string(),
                    tasks: variants(i).into_iter().map(|v| (v, i)).collect(),
                    runs: vec![i],
                });
            }
        } else {
            let mut tasks = BTreeMap::new();
            for &i in idx {
                for v in variants(i) {
                    tasks.insert(v, i);
                }
            }
            rows.push(RowPlan {
                label: m.to_string(),
                model: m.to_string(),
                tasks,
                runs: idx.clone(),
            });
        }
    }
    rows
}

fn cell_from(m: Option<&TaskMetrics>, run: usize) -> Cell {
    let m = m.cloned().unwrap_or_default();
    Cell {
        n: m.n,
        n_predictions: m.n_predictions,
        n_errors: m.n_errors,
        n_unparseable: m.n_unparseable,
        accuracy: m.accuracy,
        mae: m.mae,
        balanced_accuracy: m.balanced_accuracy,
        macro_f1: m.macro_f1,
        unparseable_rate: m.unparseable_rate,
        significance: None,
        significance_note: None,
        run,
        confusion: m.confusion_matrix,
        breakdown: m.breakdown,
        calibration: m.calibration,
        prompt_sensitivity: m.prompt_sensitivity,
        contamination: m.contamination,
        verification: m.verification,
    }
}

/// Compute the report from runs already read.
pub fn build_from(mut runs: Vec<RunData>, options: &ReportOptions) -> Result<Report> {
    if let Some(overlap) = &options.overlap {
        add_contamination(&mut runs, overlap);
    }
    let plans = plan_rows(&runs);
    // How many rows ran each definition of each task.
    let mut variants: BTreeMap<String, BTreeMap<TaskVariant, usize>> = BTreeMap::new();
    for p in &plans {
        for v in p.tasks.keys() {
            *variants
                .entry(v.name.clone())
                .or_default()
                .entry(v.clone())
                .or_default() += 1;
        }
    }
    let mut main_cols = Vec::new();
    let mut alternates = Vec::new();
    for (name, vs) in &variants {
        // The definition most rows ran leads; ties go to the higher version, then fingerprint.
        let main = vs
            .iter()
            .max_by(|a, b| {
                a.1.cmp(b.1)
                    .then_with(|| a.0.version.cmp(&b.0.version))
                    .then_with(|| a.0.fingerprint.cmp(&b.0.fingerprint))
            })
            .map(|(v, _)| v.clone());
        let qualified = vs.len() > 1;
        for (v, count) in vs {
            let style = style_of(&runs, &plans, v);
            let col = Column {
                variant: v.clone(),
                label: v.label(qualified),
                style,
                runs: *count,
            };
            if Some(v) == main.as_ref() {
                main_cols.push(col);
            } else {
                alternates.push((name.clone(), col));
            }
        }
    }
    let mut sections = vec![make_section(
        "Leaderboard".into(),
        None,
        main_cols,
        &plans,
        &runs,
    )];
    // Other definitions, one section per set of rows that ran them: a model evaluated on a
    // variant of many tasks gets one table, not one per task.
    let mut by_rows: BTreeMap<Vec<String>, Vec<Column>> = BTreeMap::new();
    for (_, col) in alternates {
        let rows: Vec<String> = plans
            .iter()
            .filter(|p| p.tasks.contains_key(&col.variant))
            .map(|p| p.label.clone())
            .collect();
        by_rows.entry(rows).or_default().push(col);
    }
    for (rows, cols) in by_rows {
        let defs: Vec<String> = cols
            .iter()
            .map(|c| {
                format!(
                    "{} v{} ({})",
                    c.variant.name,
                    c.variant.version,
                    short(&c.variant.fingerprint)
                )
            })
            .collect();
        sections.push(make_section(
            format!("Other task definitions — {}", rows.join(", ")),
            Some(format!(
                "These rows ran other definitions of these tasks than the main leaderboard (task \
                 version or TOML fingerprint differ: {}). Their scores are not comparable with the \
                 main table and are kept apart.",
                defs.join(", ")
            )),
            cols,
            &plans,
            &runs,
        ));
    }
    let reference = match &options.reference {
        None => None,
        Some(r) => Some(resolve_reference(r, &plans)?),
    };
    if let Some(reference) = &reference {
        for s in &mut sections {
            add_significance(s, reference, &runs, options.alpha)?;
        }
    }
    let fairness_options = FairnessOptions {
        bootstrap: stats::BootstrapConfig {
            resamples: options.resamples,
            ..Default::default()
        },
        ..Default::default()
    };
    let facexbench = facexbench_tables(&sections);
    let (efficiency, efficiency_notes) = efficiency(&plans, &runs);
    let fairness = fairness_fields(&sections, &runs, &fairness_options)?;
    let latency = latency_series(&plans, &runs);
    let confusion = panel_sets(&sections, |c| c.confusion.clone());
    let calibration = panel_sets(&sections, |c| c.calibration.clone());
    let prompt_sensitivity = panel_sets(&sections, |c| c.prompt_sensitivity.clone());
    let contamination = panel_sets(&sections, |c| c.contamination.clone());
    let verification = panel_sets(&sections, |c| c.verification.clone());
    let published =
        published::read_all(options.published_builtin, options.published_dir.as_deref())?;
    let notes = run_notes(&runs);
    let run_infos = runs
        .iter()
        .enumerate()
        .map(|(i, r)| RunInfo {
            dir: r.dir.display().to_string(),
            model: r.manifest.model.name.clone(),
            row: plans
                .iter()
                .find(|p| p.runs.contains(&i))
                .map(|p| p.label.clone())
                .unwrap_or_default(),
            kind: r.manifest.model.kind.clone(),
            device: r.manifest.device.clone(),
            dtype: r.manifest.dtype.clone(),
            started: r.manifest.started.clone(),
            finished: r.manifest.finished.clone(),
            tasks: r.manifest.tasks.iter().map(|t| t.name.clone()).collect(),
            notes: r.manifest.notes.clone(),
        })
        .collect();
    Ok(Report {
        title: options.title.clone(),
        generated: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        faceval_version: env!("CARGO_PKG_VERSION").into(),
        reference: reference.map(|r| r.1),
        alpha: options.alpha,
        runs: run_infos,
        notes,
        sections,
        facexbench,
        efficiency,
        efficiency_notes,
        fairness,
        fairness_min_group_size: fairness_options.min_group_size,
        latency,
        confusion,
        calibration,
        prompt_sensitivity,
        contamination,
        overlap_reference: options.overlap.as_ref().map(|o| {
            format!(
                "{} ({} images; near = perceptual-hash distance ≤ {} of 256 bits)",
                o.reference, o.reference_images, o.max_distance
            )
        }),
        verification,
        published,
    })
}

/// Each run's clean-slice accuracy on the tasks the overlap checked, into its metrics (the
/// cells take it from there). Tasks without an accuracy (numeric ones) are skipped.
fn add_contamination(runs: &mut [RunData], overlap: &faceval_eval::overlap::OverlapReport) {
    for run in runs {
        for (task, items) in &run.items {
            let Some(m) = run.metrics.tasks.get_mut(task) else {
                continue;
            };
            if m.accuracy.is_none() || !overlap.summary.contains_key(task) {
                continue;
            }
            let questions = items
                .ids
                .iter()
                .map(String::as_str)
                .zip(items.correct.iter().copied());
            m.contamination = Some(faceval_eval::contamination::split(task, questions, overlap));
        }
    }
}

fn style_of(runs: &[RunData], plans: &[RowPlan], v: &TaskVariant) -> String {
    plans
        .iter()
        .find_map(|p| p.tasks.get(v))
        .and_then(|&i| runs[i].manifest.tasks.iter().find(|t| t.name == v.name))
        .map(|t| t.style.clone())
        .unwrap_or_default()
}

fn make_section(
    title: String,
    note: Option<String>,
    columns: Vec<Column>,
    plans: &[RowPlan],
    runs: &[RunData],
) -> Section {
    let rows = plans
        .iter()
        .filter(|p| columns.iter().any(|c| p.tasks.contains_key(&c.variant)))
        .map(|p| Row {
            label: p.label.clone(),
            model: p.model.clone(),
            reference: false,
            cells: columns
                .iter()
                .map(|c| {
                    p.tasks
                        .get(&c.variant)
                        .map(|&i| cell_from(runs[i].metrics.tasks.get(&c.variant.name), i))
                })
                .collect(),
        })
        .collect();
    Section {
        title,
        note,
        columns,
        rows,
    }
}

/// The reference row: a row label, or a model name with a single row.
fn resolve_reference(name: &str, plans: &[RowPlan]) -> Result<(String, String)> {
    if let Some(p) = plans.iter().find(|p| p.label == name) {
        return Ok((p.label.clone(), p.label.clone()));
    }
    let by_model: Vec<&RowPlan> = plans.iter().filter(|p| p.model == name).collect();
    match by_model.len() {
        1 => Ok((by_model[0].label.clone(), by_model[0].label.clone())),
        0 => Err(input_error(format!(
            "--reference {name}: no run of that model; the runs hold {}",
            plans
                .iter()
                .map(|p| p.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(input_error(format!(
            "--reference {name}: that model has several rows ({}); name one of them",
            by_model
                .iter()
                .map(|p| p.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// McNemar's exact test of each row against the reference on shared questions, per task, with
/// Holm's adjustment across the row's tasks in the section.
fn add_significance(
    section: &mut Section,
    reference: &(String, String),
    runs: &[RunData],
    alpha: f64,
) -> Result<()> {
    let Some(ref_idx) = section.rows.iter().position(|r| r.label == reference.0) else {
        return Ok(());
    };
    section.rows[ref_idx].reference = true;
    let ref_maps: Vec<Option<HashMap<&str, bool>>> = section.rows[ref_idx]
        .cells
        .iter()
        .enumerate()
        .map(|(c, cell)| {
            let cell = cell.as_ref()?;
            Some(
                runs[cell.run]
                    .items
                    .get(&section.columns[c].variant.name)?
                    .by_id(),
            )
        })
        .collect();
    let columns = section.columns.clone();
    for (r, row) in section.rows.iter_mut().enumerate() {
        if r == ref_idx {
            continue;
        }
        let mut tested: Vec<(usize, stats::PairedComparison)> = Vec::new();
        for (c, cell) in row.cells.iter_mut().enumerate() {
            let (Some(cell), Some(refs)) = (cell.as_mut(), ref_maps[c].as_ref()) else {
                continue;
            };
            let Some(items) = runs[cell.run].items.get(&columns[c].variant.name) else {
                cell.significance_note = Some("no predictions to pair".into());
                continue;
            };
            let mut mine = Vec::new();
            let mut theirs = Vec::new();
            for (id, ok) in items.ids.iter().zip(&items.correct) {
                if let Some(r) = refs.get(id.as_str()) {
                    mine.push(*ok);
                    theirs.push(*r);
                }
            }
            if mine.is_empty() {
                cell.significance_note = Some("no questions shared with the reference".into());
                continue;
            }
            let cmp = stats::compare_paired(&mine, &theirs, 0.95, alpha, 0.8)?;
            tested.push((c, cmp));
        }
        if tested.is_empty() {
            continue;
        }
        let p: Vec<f64> = tested.iter().map(|t| t.1.mcnemar.p_value).collect();
        let adjusted = stats::holm(&p)?;
        for ((c, cmp), p_holm) in tested.into_iter().zip(adjusted) {
            let marker =
                (p_holm < alpha && cmp.counts.only_first != cmp.counts.only_second).then(|| {
                    if cmp.counts.only_first > cmp.counts.only_second {
                        "better".to_string()
                    } else {
                        "worse".to_string()
                    }
                });
            if let Some(cell) = row.cells[c].as_mut() {
                cell.significance = Some(Significance {
                    n_paired: cmp.counts.n(),
                    accuracy: cmp.accuracy_first,
                    reference_accuracy: cmp.accuracy_second,
                    difference: cmp.difference.clone(),
                    p_value: cmp.mcnemar.p_value,
                    p_holm,
                    marker,
                });
            }
        }
    }
    Ok(())
}

/// FaceXBench tables: every task whose scores break down by `category` gets the paper's
/// category table, and by `subcategory` the per-task table.
fn facexbench_tables(sections: &[Section]) -> Vec<BreakdownTable> {
    let mut out = Vec::new();
    for s in sections {
        for (c, col) in s.columns.iter().enumerate() {
            for (field, known) in [
                ("category", &FACEXBENCH_CATEGORIES[..]),
                ("subcategory", &FACEXBENCH_SUBCATEGORIES[..]),
            ] {
                let cells: Vec<(&Row, &Cell)> = s
                    .rows
                    .iter()
                    .filter_map(|r| Some((r, r.cells[c].as_ref()?)))
                    .filter(|(_, cell)| cell.breakdown.contains_key(field))
                    .collect();
                if cells.is_empty() {
                    continue;
                }
                let mut columns: Vec<(String, String)> = known
                    .iter()
                    .map(|(k, n)| (k.to_string(), n.to_string()))
                    .collect();
                let seen: BTreeSet<&String> = cells
                    .iter()
                    .flat_map(|(_, cell)| cell.breakdown[field].keys())
                    .collect();
                for k in seen {
                    if !columns.iter().any(|(key, _)| key == k) {
                        columns.push((k.clone(), k.clone()));
                    }
                }
                let rows = cells
                    .iter()
                    .map(|(r, cell)| BreakdownRow {
                        label: r.label.clone(),
                        overall: cell.accuracy.clone(),
                        n: cell.n,
                        values: columns
                            .iter()
                            .map(|(k, _)| cell.breakdown[field].get(k).cloned())
                            .collect(),
                    })
                    .collect();
                out.push(BreakdownTable {
                    task: col.label.clone(),
                    field: field.into(),
                    columns,
                    rows,
                });
            }
        }
    }
    out
}

/// Efficiency figures from a telemetry summary (docs/telemetry.md): latency is the whole
/// model call (`e2e_ms`); memory sits in the run-level `memory` object.
fn perf_from_telemetry(t: Option<&Telemetry>, memory: Option<&Resources>) -> Perf {
    let e2e = t.and_then(|t| t.e2e_ms.as_ref());
    Perf {
        p50_ms: e2e.map(|s| s.p50),
        p95_ms: e2e.map(|s| s.p95),
        items_per_s: t.and_then(|t| t.items_per_s),
        peak_vram_bytes: memory.and_then(|m| m.peak_vram_bytes).map(|b| b as f64),
        peak_rss_bytes: memory.and_then(|m| m.peak_rss_bytes).map(|b| b as f64),
        source: Some("telemetry".into()),
    }
}

/// A task's telemetry ([`faceval_eval::run_folder::MetricsTelemetry::task`]).
fn task_telemetry<'a>(run: &'a RunData, task: &str) -> Option<&'a Telemetry> {
    run.telemetry.as_ref()?.task(task)
}

/// Type-7 quantile of sorted values.
fn quantile(sorted: &[f32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let wide: Vec<f64> = sorted.iter().map(|&x| f64::from(x)).collect();
    Some(stats::quantile_sorted(&wide, q))
}

fn perf_from_latencies(sorted: &[f32]) -> Perf {
    if sorted.is_empty() || sorted.iter().all(|&x| x == 0.0) {
        return Perf::default();
    }
    Perf {
        p50_ms: quantile(sorted, 0.5),
        p95_ms: quantile(sorted, 0.95),
        source: Some("predictions".into()),
        ..Default::default()
    }
}

/// Fill what telemetry lacks from the predictions' own timings.
fn merge_perf(mut t: Perf, fallback: Perf) -> Perf {
    if t.p50_ms.is_none() && fallback.p50_ms.is_some() {
        t.p50_ms = fallback.p50_ms;
        t.p95_ms = fallback.p95_ms;
        t.source = Some(match t.source {
            Some(_) => "telemetry + predictions".into(),
            None => "predictions".into(),
        });
    }
    t
}

fn sorted(mut v: Vec<f32>) -> Vec<f32> {
    v.sort_unstable_by(f32::total_cmp);
    v
}

fn efficiency(plans: &[RowPlan], runs: &[RunData]) -> (Vec<EfficiencyRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut any_telemetry = false;
    for p in plans {
        let mut tasks = BTreeMap::new();
        let mut pooled: Vec<f32> = Vec::new();
        for (v, &i) in &p.tasks {
            let run = &runs[i];
            let lat = run
                .items
                .get(&v.name)
                .map(|t| sorted(t.latency_ms.clone()))
                .unwrap_or_default();
            pooled.extend_from_slice(&lat);
            let tele = task_telemetry(run, &v.name).map(|t| perf_from_telemetry(Some(t), None));
            any_telemetry |= tele.is_some();
            tasks.insert(
                v.name.clone(),
                merge_perf(tele.unwrap_or_default(), perf_from_latencies(&lat)),
            );
        }
        // An overall figure from telemetry only makes sense for a row made of one run.
        let overall_tele = match p.runs.as_slice() {
            [i] => runs[*i]
                .telemetry
                .as_ref()
                .filter(|t| t.run.is_some())
                .map(|t| perf_from_telemetry(t.overall(), t.memory())),
            _ => None,
        };
        any_telemetry |= overall_tele.is_some();
        let first = &runs[p.runs[0]].manifest;
        rows.push(EfficiencyRow {
            label: p.label.clone(),
            weight_bytes: first.model.weight_bytes,
            device: first.device.clone(),
            dtype: first.dtype.clone(),
            overall: merge_perf(
                overall_tele.unwrap_or_default(),
                perf_from_latencies(&sorted(pooled)),
            ),
            tasks,
        });
    }
    let mut notes = Vec::new();
    if !any_telemetry {
        notes.push(
            "No run recorded telemetry (metrics.json has no `telemetry` object): throughput and \
             peak memory are not known. Latency percentiles, where shown, come from the per-question \
             timings in predictions.jsonl."
                .into(),
        );
    }
    if rows.iter().all(|r| r.overall.p50_ms.is_none()) {
        notes.push("Every recorded per-question time is zero (baselines that do no inference), so no latency is shown.".into());
    }
    (rows, notes)
}

/// Per-group accuracy and gaps for every task and group field, all rows.
fn fairness_fields(
    sections: &[Section],
    runs: &[RunData],
    options: &FairnessOptions,
) -> Result<Vec<FairnessField>> {
    // (column label, task name, field, rows that ran it as (row label, run index)).
    type Job = (String, String, String, Vec<(String, usize)>);
    let mut jobs: Vec<Job> = Vec::new();
    for s in sections {
        for (c, col) in s.columns.iter().enumerate() {
            let mut fields: BTreeSet<&String> = BTreeSet::new();
            let mut members = Vec::new();
            for r in &s.rows {
                if let Some(cell) = &r.cells[c] {
                    if let Some(items) = runs[cell.run].items.get(&col.variant.name) {
                        fields.extend(items.group_fields.iter());
                        members.push((r.label.clone(), cell.run));
                    }
                }
            }
            for f in fields {
                jobs.push((
                    col.label.clone(),
                    col.variant.name.clone(),
                    f.clone(),
                    members.clone(),
                ));
            }
        }
    }
    jobs.par_iter()
        .enumerate()
        .map(|(j, (task_label, task, field, members))| {
            let mut rows = Vec::new();
            for (label, run) in members {
                let items = &runs[*run].items[task.as_str()];
                let Some(f) = items.group_fields.iter().position(|x| x == field) else {
                    continue;
                };
                let labels = items.labels(f);
                if items.correct.is_empty() || labels.iter().all(|l| l.is_empty()) {
                    continue;
                }
                let grouping = fairness::group_by(&[(field.as_str(), labels.as_slice())])?;
                let opts = FairnessOptions {
                    bootstrap: options.bootstrap.salted(j as u64),
                    ..*options
                };
                let groups = fairness::group_accuracy(&items.correct, &grouping, &opts)?;
                let measures = fairness::accuracy_disparities(&groups, &opts)?;
                let pick = |name: &str| measures.iter().find(|m| m.name == name).cloned();
                rows.push((
                    label.clone(),
                    groups,
                    pick("difference_between_groups"),
                    pick("worst_group_accuracy"),
                    grouping.missing,
                ));
            }
            let keys: BTreeSet<String> = rows
                .iter()
                .flat_map(|r| r.1.iter().map(|g| g.key.clone()))
                .collect();
            let keys: Vec<String> = keys.into_iter().collect();
            Ok(FairnessField {
                task: task_label.clone(),
                field: field.clone(),
                rows: rows
                    .into_iter()
                    .map(|(label, groups, gap, worst, missing)| FairnessRow {
                        label,
                        groups: keys
                            .iter()
                            .map(|k| groups.iter().find(|g| &g.key == k).cloned())
                            .collect(),
                        gap,
                        worst_group: worst,
                        missing,
                    })
                    .collect(),
                groups: keys,
            })
        })
        .filter(|f: &Result<FairnessField>| f.as_ref().map(|f| !f.rows.is_empty()).unwrap_or(true))
        .collect()
}

fn latency_series(plans: &[RowPlan], runs: &[RunData]) -> Vec<LatencySeries> {
    plans
        .iter()
        .map(|p| {
            let mut all: Vec<f32> = Vec::new();
            for (v, &i) in &p.tasks {
                if let Some(items) = runs[i].items.get(&v.name) {
                    all.extend_from_slice(&items.latency_ms);
                }
            }
            let n = all.len();
            LatencySeries {
                label: p.label.clone(),
                sorted_ms: sorted(all),
                n,
            }
        })
        .collect()
}

/// Per column (task) of every section, one panel per row whose cell has what `pick` takes.
fn panel_sets<T>(sections: &[Section], pick: impl Fn(&Cell) -> Option<T>) -> Vec<PanelSet<T>> {
    let mut out = Vec::new();
    for s in sections {
        for (c, col) in s.columns.iter().enumerate() {
            let panels: Vec<Panel<T>> = s
                .rows
                .iter()
                .filter_map(|r| {
                    Some(Panel {
                        label: r.label.clone(),
                        value: pick(r.cells[c].as_ref()?)?,
                    })
                })
                .collect();
            if !panels.is_empty() {
                out.push(PanelSet {
                    task: col.label.clone(),
                    panels,
                });
            }
        }
    }
    out
}

/// Facts a reader must know to read the numbers right.
fn run_notes(runs: &[RunData]) -> Vec<String> {
    let mut notes = Vec::new();
    if runs.iter().any(|r| {
        r.manifest
            .notes
            .get("data")
            .is_some_and(|d| d.contains("synthetic"))
    }) {
        notes.push(
            "Some runs are on synthetic demo faces (`faceval demo`): their scores show the harness \
             working, not the ability of any face model."
                .into(),
        );
    }
    let facellm_on_fairface = runs.iter().any(|r| {
        r.manifest
            .model
            .name
            .to_ascii_lowercase()
            .contains("facellm")
            && r.manifest.tasks.iter().any(|t| t.name.contains("fairface"))
    });
    if facellm_on_fairface {
        notes.push(
            "FaceLLM was trained on FairFaceGPT, made from the FairFace validation images: its \
             FairFace results are in-distribution."
                .into(),
        );
    }
    let partial: Vec<String> = runs
        .iter()
        .filter(|r| r.manifest.finished.is_none())
        .map(|r| r.dir.display().to_string())
        .collect();
    if !partial.is_empty() {
        notes.push(format!(
            "Unfinished runs (no `finished` time in manifest.json): {}. Their scores cover the questions answered so far.",
            partial.join(", ")
        ));
    }
    let limited: Vec<String> = runs
        .iter()
        .filter(|r| r.manifest.limit.is_some() || r.manifest.shard.is_some())
        .map(|r| r.dir.display().to_string())
        .collect();
    if !limited.is_empty() {
        notes.push(format!(
            "Runs on part of the data (--limit or one --shard): {}.",
            limited.join(", ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use faceval_eval::run_folder::RunTelemetry;
    use serde_json::json;
    use std::io::Write as _;

    /// Write a run folder with one task; item i is right when `right(i)`.
    fn write_run(
        dir: &Path,
        model: &str,
        task: (&str, &str, &str),
        n: usize,
        right: impl Fn(usize) -> bool,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = json!({
            "model": {"name": model},
            "tasks": [{"name": task.0, "version": task.1, "fingerprint": task.2,
                        "style": "multiple_choice", "labels": ["a", "b"], "breakdown": []}],
            "seed": 0, "finished": "2025-01-01T00:00:00Z"
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        let mut f = std::fs::File::create(dir.join("predictions.jsonl")).unwrap();
        for i in 0..n {
            let ok = right(i);
            let target = if i % 2 == 0 { "a" } else { "b" };
            let parsed = if ok {
                target
            } else if target == "a" {
                "b"
            } else {
                "a"
            };
            let line = json!({
                "id": format!("q{i}"), "task": task.0, "outcome": if ok {"correct"} else {"wrong"},
                "correct": ok, "parsed": parsed, "target": target,
                "parsed_label": parsed, "target_label": target,
                "groups": {"gender": if i % 3 == 0 {"F"} else {"M"}},
                "timings": {"preprocess_ms": 1.0, "vision_ms": 2.0, "prefill_ms": 3.0, "decode_ms": (i % 7) as f64}
            });
            writeln!(f, "{line}").unwrap();
        }
    }

    #[test]
    fn significance_sections_and_empty_runs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let fp = "aa".repeat(32);
        write_run(&d.join("ref"), "ref", ("t", "1", &fp), 400, |i| i % 2 == 0);
        // Right on every question the reference gets right, and on 60% of the rest.
        write_run(&d.join("good"), "good", ("t", "1", &fp), 400, |i| {
            i % 2 == 0 || i % 5 != 1
        });
        write_run(&d.join("same"), "same", ("t", "1", &fp), 400, |i| {
            i % 2 == 0
        });
        write_run(
            &d.join("other"),
            "other",
            ("t", "2", &"bb".repeat(32)),
            50,
            |_| true,
        );
        write_run(&d.join("empty"), "empty", ("t", "1", &fp), 0, |_| true);
        let runs: Vec<PathBuf> = ["ref", "good", "same", "other", "empty"]
            .iter()
            .map(|r| d.join(r))
            .collect();
        let options = ReportOptions {
            reference: Some("ref".into()),
            resamples: 200,
            ..Default::default()
        };
        let report = build(&runs, &options).unwrap();
        assert_eq!(
            report.sections.len(),
            2,
            "version 2 of t goes into its own section"
        );
        let main = &report.sections[0];
        assert_eq!(main.columns[0].variant.version, "1");
        assert!(report.sections[1]
            .note
            .as_deref()
            .unwrap()
            .contains("not comparable"));
        let cell = |label: &str| {
            main.rows.iter().find(|r| r.label == label).unwrap().cells[0]
                .clone()
                .unwrap()
        };
        let good = cell("good");
        let sig = good.significance.as_ref().unwrap();
        assert_eq!(sig.marker.as_deref(), Some("better"));
        assert_eq!(sig.n_paired, 400);
        assert!(sig.p_holm < 1e-6);
        let same = cell("same");
        assert_eq!(same.significance.as_ref().unwrap().marker, None);
        assert_eq!(same.significance.as_ref().unwrap().p_value, 1.0);
        let empty = cell("empty");
        assert_eq!(empty.n, 0);
        assert_eq!(crate::format::cell_text(&empty).main, "no scored items");
        assert!(
            main.rows
                .iter()
                .find(|r| r.label == "ref")
                .unwrap()
                .reference
        );
        // Fairness: gender F is every third question.
        let f = report
            .fairness
            .iter()
            .find(|f| f.field == "gender")
            .unwrap();
        assert_eq!(f.groups, vec!["F", "M"]);
        let r = f.rows.iter().find(|r| r.label == "ref").unwrap();
        assert_eq!(r.groups[0].as_ref().unwrap().n, 134);
        // Latency from predictions: 6 + (i % 7) ms.
        let eff = report.efficiency.iter().find(|e| e.label == "ref").unwrap();
        assert_eq!(eff.overall.source.as_deref(), Some("predictions"));
        assert!((eff.overall.p50_ms.unwrap() - 9.0).abs() < 1e-9);
        assert!(eff.overall.items_per_s.is_none());

        let rendered = crate::render(&report).unwrap();
        assert!(rendered.html.contains("no scored items"));
        assert!(rendered.html.contains("class=\"up\">▲"));
        assert!(
            !rendered.html.contains("0.0 [0.0"),
            "an empty run is never 0%"
        );
        assert!(rendered.markdown.contains("▲ "));
        let json: serde_json::Value = serde_json::from_str(&rendered.json).unwrap();
        assert_eq!(
            json["sections"][0]["rows"][1]["cells"][0]["significance"]["marker"],
            "better"
        );
        for f in &rendered.figures {
            assert!(f.png.starts_with(b"\x89PNG"), "{}", f.name);
            assert!(f.svg.contains("<svg"), "{}", f.name);
        }
        assert!(rendered.figures.iter().any(|f| f.name == "accuracy"));
        assert!(rendered.figures.iter().any(|f| f.name == "latency-cdf"));
        assert!(rendered
            .figures
            .iter()
            .any(|f| f.name.starts_with("confusion-")));
    }

    #[test]
    fn unknown_reference_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        write_run(&dir.path().join("a"), "a", ("t", "1", "ff"), 10, |_| true);
        let err = build(
            &[dir.path().join("a")],
            &ReportOptions {
                reference: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(faceval_eval::is_input_error(&err));
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn telemetry_in_the_documented_shape_is_read() {
        let t: RunTelemetry = serde_json::from_value(json!({
            "overall": {"e2e_ms": {"p50": 12.5, "p95": 30.0}, "items_per_s": 4.2},
            "tasks": {"t": {"e2e_ms": {"p50": 11.0, "p95": 29.0}, "items_per_s": 4.0}},
            "memory": {"peak_vram_bytes": 5368709120u64, "peak_rss_bytes": 1073741824u64}
        }))
        .unwrap();
        let p = perf_from_telemetry(t.overall.as_ref(), t.memory.as_ref());
        assert_eq!(p.p50_ms, Some(12.5));
        assert_eq!(p.p95_ms, Some(30.0));
        assert_eq!(p.items_per_s, Some(4.2));
        assert_eq!(p.peak_vram_bytes, Some(5368709120.0));
        let missing = perf_from_telemetry(None, None);
        assert_eq!(missing.p50_ms, None);
        assert_eq!(
            crate::format::perf_cells(&missing)[2],
            crate::format::ABSENT
        );
    }
}
