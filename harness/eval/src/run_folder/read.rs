//! The one reader of run folders: the manifest, `predictions.jsonl` (last line of each key
//! wins, a line cut short by a crash is dropped; [`PredictionLines`] parses lines in parallel
//! into the full [`Prediction`] or a caller's lean record), the timing parts of
//! `metrics.json`, the one fold of circular rotations into questions, and the one answer to
//! "same task definition?".
//!
//! Everything that reads a run — scoring, audit, gate, sensitivity, report — comes through
//! here, so the rules of `docs/run-format.md` are applied in one place.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;

use super::schema::{
    Manifest, MetricsTelemetry, Outcome, Prediction, RunTelemetry, TaskRecord, Telemetry, MANIFEST,
    METRICS, PREDICTIONS,
};
use crate::error::input_error;

/// Read `manifest.json` of a run folder.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        input_error(format!(
            "{}: not a faceval run folder ({e}); expected {MANIFEST} and {PREDICTIONS}",
            dir.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| input_error(format!("{}: {e}", path.display())))
}

/// Predictions read back from a file, with what had to be skipped.
#[derive(Debug, Default)]
pub struct ReadPredictions {
    /// One per key: the last line of each `(task, id, rotation, variant)`.
    pub predictions: Vec<Prediction>,
    /// Earlier lines of a key that a later line replaced (retried errors).
    pub superseded: usize,
    /// Byte length of the valid prefix (every complete, parseable line).
    pub valid_len: u64,
    /// A final line that was cut short (a crash mid-write); it is dropped.
    pub truncated_tail: bool,
}

/// Read `predictions.jsonl`. A malformed line in the middle is an input error naming the
/// line; a last line without its newline is treated as a write cut short and dropped. Of
/// several lines with one key the last is kept.
pub fn read_predictions(path: &Path) -> Result<ReadPredictions> {
    let lines = PredictionLines::read(path)?;
    let read = lines.parse(Prediction::from_line)?;
    Ok(ReadPredictions {
        predictions: read.records,
        superseded: read.superseded,
        valid_len: read.valid_len,
        truncated_tail: read.truncated_tail,
    })
}

/// What the reader needs to know of a line's record: the key that makes a question unique
/// within a run, `(task, id, rotation, variant)`.
pub trait Keyed {
    fn key_parts(&self) -> (&str, &str, usize, usize);
}

impl Keyed for Prediction {
    fn key_parts(&self) -> (&str, &str, usize, usize) {
        (&self.task, &self.id, self.rotation, self.variant)
    }
}

/// `predictions.jsonl` held in memory, so that its lines can be parsed in parallel into any
/// record type: the full [`Prediction`] ([`read_predictions`]), or a reader's own lean record
/// that borrows from the text (the report reads tens of millions of lines and keeps only
/// correctness, groups and timings).
pub struct PredictionLines {
    path: PathBuf,
    text: String,
}

/// The records of a predictions file: one per key, the last line of each, in file order of
/// those last lines.
#[derive(Debug)]
pub struct Records<R> {
    pub records: Vec<R>,
    /// Earlier lines of a key that a later line replaced (retried errors).
    pub superseded: usize,
    /// Byte length of the valid prefix (every complete, parseable line).
    pub valid_len: u64,
    /// A final line that was cut short (a crash mid-write); it is dropped.
    pub truncated_tail: bool,
}

impl PredictionLines {
    /// Read the file; a missing file has no lines.
    pub fn read(path: &Path) -> Result<PredictionLines> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(input_error(format!("{}: cannot read: {e}", path.display()))),
        };
        Ok(PredictionLines {
            path: path.to_path_buf(),
            text,
        })
    }

    /// Parse every complete line with `parse`, in parallel, following the rules of
    /// `docs/run-format.md`: blank lines are skipped; a malformed line is an input error
    /// naming the file and line (the first, whatever the parallel order); a last line
    /// without its newline is a write cut short and is dropped, parseable or not (it will be
    /// asked again, which is cheaper than trusting a half-finished write); of several lines
    /// with one key the last is kept.
    pub fn parse<'a, R, E>(
        &'a self,
        parse: impl Fn(&'a str) -> std::result::Result<R, E> + Sync,
    ) -> Result<Records<R>>
    where
        R: Keyed + Send,
        E: std::fmt::Display + Send,
    {
        let mut pieces: Vec<&str> = self.text.split('\n').collect();
        // The piece after the last newline: empty, blank, or a line cut short.
        let tail = pieces.pop().unwrap_or_default();
        let mut valid_len: u64 = pieces.iter().map(|l| l.len() as u64 + 1).sum();
        let truncated_tail = !tail.trim().is_empty();
        if !truncated_tail {
            valid_len += tail.len() as u64;
        }
        let parsed: Vec<std::result::Result<Option<R>, E>> = pieces
            .par_iter()
            .map(|line| {
                let body = line.trim();
                if body.is_empty() {
                    Ok(None)
                } else {
                    parse(body).map(Some)
                }
            })
            .collect();
        let mut records = Vec::with_capacity(parsed.len());
        for (i, p) in parsed.into_iter().enumerate() {
            match p {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(e) => {
                    return Err(input_error(format!(
                        "{}:{}: not a prediction record: {e}",
                        self.path.display(),
                        i + 1
                    )))
                }
            }
        }
        let superseded = keep_last_per_key(&mut records);
        Ok(Records {
            records,
            superseded,
            valid_len,
            truncated_tail,
        })
    }
}

/// Keep the last line of each key, in file order of those last lines; returns how many
/// earlier lines were dropped.
fn keep_last_per_key<R: Keyed>(records: &mut Vec<R>) -> usize {
    let mut last: HashMap<(&str, &str, usize, usize), usize> =
        HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        last.insert(r.key_parts(), i);
    }
    if last.len() == records.len() {
        return 0;
    }
    let keep: Vec<bool> = records
        .iter()
        .enumerate()
        .map(|(i, r)| last[&r.key_parts()] == i)
        .collect();
    let dropped = records.len() - last.len();
    drop(last);
    let mut keep = keep.into_iter();
    records.retain(|_| keep.next().unwrap_or(true));
    dropped
}

/// A run folder read whole: its manifest and every prediction (last line of each key).
pub struct LoadedRun {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub predictions: Vec<Prediction>,
}

impl LoadedRun {
    pub fn load(dir: &Path) -> Result<LoadedRun> {
        let manifest = read_manifest(dir)?;
        let predictions = read_predictions(&dir.join(PREDICTIONS))?.predictions;
        Ok(LoadedRun {
            dir: dir.to_path_buf(),
            manifest,
            predictions,
        })
    }

    /// Headline predictions (variant 0, `Prediction::is_headline`) of each task, in file
    /// order: audits and the gate score the task's own phrasing only.
    pub fn by_task(&self) -> HashMap<&str, Vec<&Prediction>> {
        let mut map: HashMap<&str, Vec<&Prediction>> = HashMap::new();
        for p in self.predictions.iter().filter(|p| p.is_headline()) {
            map.entry(p.task.as_str()).or_default().push(p);
        }
        map
    }
}

/// The timing parts of `metrics.json`; `None` when the file is missing or is not JSON. Each
/// part that does not read as its type is left out, never an error: timings are optional.
pub fn read_metrics_telemetry(dir: &Path) -> Option<MetricsTelemetry> {
    let text = std::fs::read_to_string(dir.join(METRICS)).ok()?;
    let raw: serde_json::Value = serde_json::from_str(&text).ok()?;
    let typed = |v: &serde_json::Value| {
        v.is_object()
            .then(|| serde_json::from_value::<Telemetry>(v.clone()).ok())
            .flatten()
    };
    let run = raw
        .get("telemetry")
        .filter(|t| t.is_object())
        .and_then(|t| serde_json::from_value::<RunTelemetry>(t.clone()).ok());
    let tasks = raw
        .get("tasks")
        .and_then(|t| t.as_object())
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), typed(v.get("telemetry")?)?)))
                .collect()
        })
        .unwrap_or_default();
    Some(MetricsTelemetry { run, tasks })
}

/// Whether two records name the same task definition: same version and same fingerprint.
/// Scores of different definitions measure different things and are never compared.
pub fn same_task(a: &TaskRecord, b: &TaskRecord) -> bool {
    a.version == b.version && a.fingerprint == b.fingerprint
}

/// What the fold of rotations needs to know of one prediction line; the full [`Prediction`]
/// and the report's lean borrowed record both answer it.
pub trait Answered {
    fn id(&self) -> &str;
    fn rotation(&self) -> usize;
    fn is_error(&self) -> bool;
    fn is_correct(&self) -> bool;
    fn is_unparseable(&self) -> bool;
}

impl Answered for Prediction {
    fn id(&self) -> &str {
        &self.id
    }
    fn rotation(&self) -> usize {
        self.rotation
    }
    fn is_error(&self) -> bool {
        self.outcome == Outcome::Error
    }
    fn is_correct(&self) -> bool {
        self.correct == Some(true)
    }
    fn is_unparseable(&self) -> bool {
        self.outcome == Outcome::Unparseable
    }
}

/// One scored question: the rotations of a circular question folded into one.
#[derive(Debug)]
pub struct Question<'a, P> {
    /// The line of the lowest rotation; its groups, labels and values are the question's.
    pub first: &'a P,
    /// Right only when every rotation is.
    pub correct: bool,
    /// Unreadable when any rotation is.
    pub unparseable: bool,
}

impl<P> Clone for Question<'_, P> {
    fn clone(&self) -> Self {
        Question {
            first: self.first,
            correct: self.correct,
            unparseable: self.unparseable,
        }
    }
}

/// Scored questions of one task and the number of error questions, following the scoring
/// rules of `docs/run-format.md`: error lines are left out; a circular question is correct
/// only when every rotation is, and is an error when any is. A task that is not circular
/// keeps its lines in the order given (one line is one question); a circular one comes out
/// sorted by id.
pub fn fold_rotations<'a, P: Answered>(
    preds: &[&'a P],
    circular: bool,
) -> (Vec<Question<'a, P>>, usize) {
    if !circular {
        // One line is one question: no need to gather rotations (this keeps a 10⁶-line
        // audit from spending its time sorting ids).
        let mut out = Vec::with_capacity(preds.len());
        let mut errors = 0;
        for &p in preds {
            if p.is_error() {
                errors += 1;
            } else {
                out.push(Question {
                    first: p,
                    correct: p.is_correct(),
                    unparseable: p.is_unparseable(),
                });
            }
        }
        return (out, errors);
    }
    let mut by_id: BTreeMap<&str, Vec<&'a P>> = BTreeMap::new();
    for &p in preds {
        by_id.entry(p.id()).or_default().push(p);
    }
    let mut out = Vec::with_capacity(by_id.len());
    let mut errors = 0;
    for (_, mut group) in by_id {
        group.sort_by_key(|p| p.rotation());
        if group.iter().any(|p| p.is_error()) {
            errors += 1;
            continue;
        }
        out.push(Question {
            first: group[0],
            correct: group.iter().all(|p| p.is_correct()),
            unparseable: group.iter().any(|p| p.is_unparseable()),
        });
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, rotation: usize, outcome: Outcome) -> Prediction {
        let v = serde_json::json!({"id": id, "task": "t", "rotation": rotation,
            "outcome": outcome, "correct": outcome == Outcome::Correct,
            "parsed": null, "target": null});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn circular_questions_fold_and_plain_lines_keep_their_order() {
        let preds = [
            line("b", 1, Outcome::Correct),
            line("a", 0, Outcome::Correct),
            line("b", 0, Outcome::Correct),
            line("a", 1, Outcome::Wrong),
            line("c", 0, Outcome::Correct),
            line("c", 1, Outcome::Error),
        ];
        let refs: Vec<&Prediction> = preds.iter().collect();
        let (questions, errors) = fold_rotations(&refs, true);
        assert_eq!(errors, 1);
        let got: Vec<(&str, usize, bool)> = questions
            .iter()
            .map(|q| (q.first.id.as_str(), q.first.rotation, q.correct))
            .collect();
        assert_eq!(got, [("a", 0, false), ("b", 0, true)]);
        let (lines, errors) = fold_rotations(&refs, false);
        assert_eq!((lines.len(), errors), (5, 1));
        assert_eq!(lines[0].first.id, "b");
    }
}
