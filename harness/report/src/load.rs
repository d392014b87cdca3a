//! Reads run folders for a report: the manifest, the scores (`metrics.json`, recomputed when
//! missing), the optional `telemetry` object of `metrics.json`, and from `predictions.jsonl`
//! only what the report needs per question — correctness, groups and timings.
//!
//! Predictions come through the run folder's one reader (`PredictionLines`: parallel over
//! lines, last line of each key), parsed into a lean borrowed record rather than the full
//! `Prediction`, because a report may read tens of millions of lines; everything else in a
//! line is skipped by serde without being allocated.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use faceval_eval::metrics::{self, RunMetrics};
use faceval_eval::run_folder::{
    self, fold_rotations, Answered, Keyed, Manifest, MetricsTelemetry, Outcome, PredictionLines,
};
use rayon::prelude::*;
use serde::de::IgnoredAny;
use serde::Deserialize;

/// A run folder as the report sees it.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub metrics: RunMetrics,
    /// The timing parts of `metrics.json` (its `telemetry` object and any
    /// `tasks.<name>.telemetry`); `None` when the run has no readable `metrics.json`.
    pub telemetry: Option<MetricsTelemetry>,
    /// Per task: the scored questions, folded over rotations.
    pub items: BTreeMap<String, TaskItems>,
}

/// The questions of one task in one run, sorted by id.
#[derive(Debug, Clone, Default)]
pub struct TaskItems {
    pub ids: Vec<String>,
    /// Correct after folding rotations (a circular question is right only when every rotation is).
    pub correct: Vec<bool>,
    /// Group fields seen in this task's predictions, sorted.
    pub group_fields: Vec<String>,
    /// `groups[f][i]`: item i's level of field f as an index into `levels[f]`; `u32::MAX` when
    /// the item does not record that field.
    pub groups: Vec<Vec<u32>>,
    pub levels: Vec<Vec<String>>,
    /// Latency of each asked question (each rotation) in ms: the runner's `e2e_ms`, or the sum
    /// of the model's stages where that is missing; errors and warm-up calls left out.
    pub latency_ms: Vec<f32>,
}

impl TaskItems {
    /// The label column of group field `f`, with `""` for "not recorded" (the fairness
    /// module's convention).
    pub fn labels(&self, f: usize) -> Vec<&str> {
        self.groups[f]
            .iter()
            .map(|&c| {
                if c == u32::MAX {
                    ""
                } else {
                    self.levels[f][c as usize].as_str()
                }
            })
            .collect()
    }

    /// Correctness by id, for pairing with another run.
    pub fn by_id(&self) -> HashMap<&str, bool> {
        self.ids
            .iter()
            .map(String::as_str)
            .zip(self.correct.iter().copied())
            .collect()
    }
}

#[derive(Deserialize)]
struct LeanTimings {
    #[serde(default)]
    preprocess_ms: f64,
    #[serde(default)]
    vision_ms: f64,
    #[serde(default)]
    prefill_ms: f64,
    #[serde(default)]
    decode_ms: f64,
    /// Whole model call, measured by the runner (0 in runs made before it was recorded).
    #[serde(default)]
    e2e_ms: f64,
    #[serde(default)]
    warmup: bool,
}

/// The fields of a prediction line the report reads; serde skips the rest.
#[derive(Deserialize)]
struct LeanPrediction<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    task: Cow<'a, str>,
    #[serde(default)]
    rotation: usize,
    /// Prompt variant; the report's per-item views use variant 0 (the headline) only.
    #[serde(default)]
    variant: usize,
    #[serde(default)]
    correct: Option<bool>,
    /// Other tools may give only `correct` ([`Outcome::from_correct`]).
    #[serde(default)]
    outcome: Option<Outcome>,
    /// Only whether it is null matters, for an outcome told from `correct`.
    #[serde(default)]
    parsed: Option<IgnoredAny>,
    #[serde(default, borrow, deserialize_with = "pairs::deserialize")]
    groups: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    #[serde(default)]
    timings: Option<LeanTimings>,
}

impl LeanPrediction<'_> {
    fn outcome(&self) -> Outcome {
        self.outcome
            .unwrap_or_else(|| Outcome::from_correct(self.correct, self.parsed.is_none()))
    }
}

impl Keyed for LeanPrediction<'_> {
    fn key_parts(&self) -> (&str, &str, usize, usize) {
        (&self.task, &self.id, self.rotation, self.variant)
    }
}

impl Answered for LeanPrediction<'_> {
    fn id(&self) -> &str {
        &self.id
    }
    fn rotation(&self) -> usize {
        self.rotation
    }
    fn is_error(&self) -> bool {
        self.outcome() == Outcome::Error
    }
    fn is_correct(&self) -> bool {
        self.correct == Some(true)
    }
    fn is_unparseable(&self) -> bool {
        self.outcome() == Outcome::Unparseable
    }
}

/// Reads a JSON object as its `(key, value)` pairs in file order, so no map is built per line,
/// and borrows the strings from the line where they have no escapes (serde's own `Cow<str>`
/// always copies).
mod pairs {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};

    type Pairs<'de> = Vec<(Cow<'de, str>, Cow<'de, str>)>;

    struct Text<'de>(Cow<'de, str>);

    impl<'de> Deserialize<'de> for Text<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E: Error>(self, v: &str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping group fields to levels")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Text<'de>, Text<'de>>()? {
                    out.push((k.0, v.0));
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// Read one run folder.
pub fn read_run(dir: &Path) -> Result<RunData> {
    let manifest = run_folder::read_manifest(dir)?;
    let metrics = metrics::read_or_compute(dir)?;
    let telemetry = run_folder::read_metrics_telemetry(dir);
    let items = read_items(&dir.join(run_folder::PREDICTIONS))?;
    Ok(RunData {
        dir: dir.to_path_buf(),
        manifest,
        metrics,
        telemetry,
        items,
    })
}

/// Read `predictions.jsonl` into per-task items, through the run folder's one reader
/// ([`PredictionLines`]): a malformed line is an input error naming the file and line, a last
/// line without its newline is a write cut short and is dropped, and the last line of each
/// key counts, so the items agree with the scores.
pub fn read_items(path: &Path) -> Result<BTreeMap<String, TaskItems>> {
    let lines = PredictionLines::read(path)?;
    let read = lines.parse(serde_json::from_str::<LeanPrediction>)?;
    // Other prompt variants are scored in metrics.json's prompt_sensitivity block; the
    // per-item views (accuracy, groups, latency) follow the headline, variant 0.
    let mut by_task: BTreeMap<&str, Vec<&LeanPrediction>> = BTreeMap::new();
    for p in read.records.iter().filter(|p| p.variant == 0) {
        by_task.entry(p.task.as_ref()).or_default().push(p);
    }
    Ok(by_task
        .into_par_iter()
        .map(|(task, preds)| (task.to_string(), fold_task(preds)))
        .collect())
}

/// Fold one task's lines into questions: a question with an `error` line is left out (as
/// accuracy leaves it out); a circular question is right only when every rotation is.
fn fold_task(mut preds: Vec<&LeanPrediction>) -> TaskItems {
    preds.sort_unstable_by(|a, b| (&a.id, a.rotation).cmp(&(&b.id, b.rotation)));
    let mut out = TaskItems::default();
    let mut field_index: HashMap<&str, usize> = HashMap::new();
    let mut level_index: Vec<HashMap<&str, u32>> = Vec::new();
    let mut fields: Vec<&str> = Vec::new();
    // First pass: group fields, so every item gets one code per field.
    for p in &preds {
        for (k, _) in &p.groups {
            if !field_index.contains_key(k.as_ref()) {
                field_index.insert(k.as_ref(), fields.len());
                fields.push(k.as_ref());
                level_index.push(HashMap::new());
            }
        }
    }
    let mut levels: Vec<Vec<String>> = vec![Vec::new(); fields.len()];
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); fields.len()];
    for p in preds.iter().filter(|p| !p.is_error()) {
        // Warm-up calls pay one-off costs; telemetry leaves them out and so does the CDF.
        if let Some(t) = p.timings.as_ref().filter(|t| !t.warmup) {
            let stages = t.preprocess_ms + t.vision_ms + t.prefill_ms + t.decode_ms;
            let ms = if t.e2e_ms > 0.0 { t.e2e_ms } else { stages };
            out.latency_ms.push(ms as f32);
        }
    }
    // Every task folds by id here: a task that is not circular has one line per id, and the
    // report wants its questions sorted by id either way.
    let (questions, _) = fold_rotations(&preds, true);
    for q in questions {
        out.ids.push(q.first.id.to_string());
        out.correct.push(q.correct);
        let mut codes = vec![u32::MAX; fields.len()];
        for (k, v) in &q.first.groups {
            if v.is_empty() {
                continue;
            }
            let f = field_index[k.as_ref()];
            let next = levels[f].len() as u32;
            let code = *level_index[f].entry(v.as_ref()).or_insert_with(|| {
                levels[f].push(v.to_string());
                next
            });
            codes[f] = code;
        }
        for (f, c) in codes.into_iter().enumerate() {
            groups[f].push(c);
        }
    }
    // Sorted field names make reports stable whatever order the lines had.
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&f| fields[f]);
    out.group_fields = order.iter().map(|&f| fields[f].to_string()).collect();
    out.groups = order
        .iter()
        .map(|&f| std::mem::take(&mut groups[f]))
        .collect();
    out.levels = order
        .iter()
        .map(|&f| std::mem::take(&mut levels[f]))
        .collect();
    out
}
