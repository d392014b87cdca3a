//! The run folder, faceval's public result format (`docs/run-format.md`):
//! `manifest.json`, `predictions.jsonl` (one line per asked question) and `metrics.json`.
//!
//! Writing is crash-safe. Each prediction is appended as one whole line and flushed; a line
//! cut short by `kill -9` is dropped on reopening, and questions already answered are skipped,
//! so rerunning the same command finishes the run with nothing lost or duplicated. JSON files
//! other than predictions are replaced atomically (write to a temporary file, then rename).
//!
//! A question may have several lines: a rerun retries the questions whose outcome was `error`
//! and appends the new answer. Every reader takes the **last line of each key**
//! `(task, id, rotation, variant)`, so lines are never rewritten in place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::input_error;
use faceval_models::StepTimings;

pub const MANIFEST: &str = "manifest.json";
pub const PREDICTIONS: &str = "predictions.jsonl";
pub const METRICS: &str = "metrics.json";

/// A task as the run recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TaskRecord {
    pub name: String,
    pub version: String,
    /// sha256 of the task TOML.
    pub fingerprint: String,
    #[serde(default)]
    pub path: String,
    /// Which definition was used: `builtin` (compiled into faceval) or the task file's path.
    #[serde(default)]
    pub origin: String,
    /// The question style and metric list, so that tools can score without the TOML.
    #[serde(default)]
    pub style: String,
    /// Label set in order (empty for numeric tasks).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Group fields the task audits by default.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub breakdown: Vec<String>,
    #[serde(default)]
    pub circular: bool,
    /// Prompt phrasings of a task with `[question] variants`: `question.text` (variant 0)
    /// first, then each listed variant. Empty for tasks without variants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

/// The model as the run recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ModelRecord {
    pub name: String,
    #[serde(default)]
    pub kind: String,
    /// sha256 of the model manifest TOML (or of the name for built-ins).
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub weights_sha256: Option<String>,
    #[serde(default)]
    pub weight_bytes: u64,
    #[serde(default)]
    pub source: String,
    /// Which manifest was used: `builtin` (compiled into faceval), the manifest file's path, or
    /// `checkpoint` (a checkpoint folder or hf:// id named directly, no manifest).
    #[serde(default)]
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Manifest {
    /// Format version of the run folder.
    #[serde(default = "format_version")]
    pub format: u32,
    #[serde(default)]
    pub faceval_version: String,
    #[serde(default)]
    pub git_revision: String,
    pub model: ModelRecord,
    pub tasks: Vec<TaskRecord>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub dtype: String,
    #[serde(default)]
    pub started: String,
    #[serde(default)]
    pub finished: Option<String>,
    #[serde(default)]
    pub argv: Vec<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub shard: Option<Shard>,
    /// Free-form facts: data folder, reference split used by `majority`, importer, ...
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
    /// The machine the run used (CPU, GPUs, driver); `null` for imports and older runs.
    #[serde(default)]
    pub hardware: Option<crate::telemetry::Hardware>,
    /// Questions per model call (1: every run asks one at a time).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Items per task whose timings telemetry leaves out as warm-up (`--warmup`).
    #[serde(default)]
    pub warmup: Option<usize>,
    /// Peak memory measured while the run went (the higher peak over resumed attempts).
    #[serde(default)]
    pub resources: Option<crate::telemetry::Resources>,
    /// Served models: answers taken from the response cache, summed over the attempts of
    /// the run (`null` for local models and older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hits: Option<u64>,
    /// Served models: HTTP requests sent (retries included), summed over the attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<u64>,
}

fn format_version() -> u32 {
    1
}

/// How one question ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Correct,
    Wrong,
    /// The model answered but no answer could be extracted. Counts as wrong in accuracy and
    /// is reported as its own rate.
    Unparseable,
    /// The item could not be asked (bad row, missing or corrupt image, model error). Counted,
    /// reported, and excluded from accuracy's denominator.
    Error,
}

/// One line of `predictions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub id: String,
    pub task: String,
    /// 0 unless the task is circular.
    #[serde(default)]
    pub rotation: usize,
    /// Which phrasing of the question was asked (`docs/prompt-sensitivity.md`): 0 is
    /// `question.text`, k is the task's k-th `variants` entry. Left out when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub variant: usize,
    #[serde(default)]
    pub prompt_sha256: String,
    #[serde(default)]
    pub image_sha256: Vec<String>,
    #[serde(default)]
    pub raw_output: String,
    /// The extracted answer: an option letter, a label, or a number as text; `None` when
    /// nothing could be extracted. Required in every line (it may be `null`).
    #[serde(deserialize_with = "Option::deserialize")]
    pub parsed: Option<String>,
    /// The right answer in the same form as `parsed`. Required in every line (may be `null`).
    #[serde(deserialize_with = "Option::deserialize")]
    pub target: Option<String>,
    /// Label (or option text) behind `parsed` and `target`, for per-class metrics.
    #[serde(default)]
    pub parsed_label: Option<String>,
    #[serde(default)]
    pub target_label: Option<String>,
    /// Numeric tasks: the predicted and true numbers.
    #[serde(default)]
    pub parsed_value: Option<f64>,
    #[serde(default)]
    pub target_value: Option<f64>,
    /// `None` for errors; numeric tasks set it from bin agreement when they have bins.
    #[serde(default)]
    pub correct: Option<bool>,
    pub outcome: Outcome,
    #[serde(default)]
    pub groups: BTreeMap<String, String>,
    #[serde(default)]
    pub cluster: Option<String>,
    /// Breakdown fields (FaceXBench category, subcategory).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub timings: StepTimings,
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub output_tokens: usize,
    #[serde(default)]
    pub error: Option<String>,
    /// Log-likelihood of each option, keyed like `parsed` and `target` (option letter, or
    /// label for open questions), where the model scored the options
    /// (`docs/calibration.md`). Left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_logprobs: Option<BTreeMap<String, f64>>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// What makes a question unique within a run: `(task, id, rotation, variant)`.
pub type Key = (String, String, usize, usize);

impl Prediction {
    /// The key that makes a question unique within a run; when a file has several lines of
    /// one key, the last one counts.
    pub fn key(&self) -> Key {
        (
            self.task.clone(),
            self.id.clone(),
            self.rotation,
            self.variant,
        )
    }

    /// Whether the line counts towards the headline scores (accuracy, fairness, gate): the
    /// task's own phrasing, variant 0. Other variants feed the prompt-sensitivity block only.
    pub fn is_headline(&self) -> bool {
        self.variant == 0
    }

    /// Parse one line of `predictions.jsonl`. `outcome` may be left out when `correct` is
    /// given (tools other than faceval often write only that): `true` is `correct`, `false`
    /// is `wrong` (`unparseable` when `parsed` is null) and `null` is `error`.
    pub fn from_line(line: &str) -> serde_json::Result<Prediction> {
        match serde_json::from_str::<Prediction>(line) {
            Ok(p) => Ok(p),
            Err(first) => {
                // The slow path only runs on lines the fast one refused.
                let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str(line) else {
                    return Err(first);
                };
                if obj.contains_key("outcome") {
                    return Err(first);
                }
                let outcome = match obj.get("correct") {
                    Some(serde_json::Value::Bool(true)) => "correct",
                    Some(serde_json::Value::Bool(false)) => match obj.get("parsed") {
                        Some(serde_json::Value::Null) => "unparseable",
                        _ => "wrong",
                    },
                    Some(serde_json::Value::Null) => "error",
                    _ => return Err(first),
                };
                obj.insert("outcome".into(), outcome.into());
                serde_json::from_value(serde_json::Value::Object(obj))
            }
        }
    }
}

/// Keep the last line of each key, in file order of those last lines; returns how many
/// earlier lines were dropped.
fn keep_last_per_key(predictions: &mut Vec<Prediction>) -> usize {
    let mut last: HashMap<(&str, &str, usize, usize), usize> =
        HashMap::with_capacity(predictions.len());
    for (i, p) in predictions.iter().enumerate() {
        last.insert((&p.task, &p.id, p.rotation, p.variant), i);
    }
    if last.len() == predictions.len() {
        return 0;
    }
    let keep: Vec<bool> = predictions
        .iter()
        .enumerate()
        .map(|(i, p)| last[&(p.task.as_str(), p.id.as_str(), p.rotation, p.variant)] == i)
        .collect();
    let dropped = predictions.len() - last.len();
    drop(last);
    let mut keep = keep.into_iter();
    predictions.retain(|_| keep.next().unwrap_or(true));
    dropped
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f =
        File::create(&tmp).map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", tmp.display()))?;
    serde_json::to_writer_pretty(&mut f, value)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("{}: cannot replace: {e}", path.display()))?;
    Ok(())
}

/// Read `manifest.json` of a run folder.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
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
pub fn read_predictions(path: &Path) -> anyhow::Result<ReadPredictions> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadPredictions::default()),
        Err(e) => return Err(input_error(format!("{}: cannot read: {e}", path.display()))),
    };
    let mut reader = BufReader::new(file);
    let mut out = ReadPredictions::default();
    let mut line = String::new();
    let mut line_no = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = line.ends_with('\n');
        let body = line.trim();
        if body.is_empty() {
            out.valid_len += n as u64;
            continue;
        }
        match Prediction::from_line(body) {
            Ok(p) if complete => {
                out.predictions.push(p);
                out.valid_len += n as u64;
            }
            // A parseable last line without newline: the newline write was lost. Drop it too;
            // it will be asked again, which is cheaper than trusting a half-finished write.
            Ok(_) => {
                out.truncated_tail = true;
                break;
            }
            Err(_) if !complete => {
                out.truncated_tail = true;
                break;
            }
            Err(e) => {
                return Err(input_error(format!(
                    "{}:{line_no}: not a prediction record: {e}",
                    path.display()
                )));
            }
        }
    }
    out.superseded = keep_last_per_key(&mut out.predictions);
    Ok(out)
}

/// Appends predictions to a run folder and knows which questions are done.
pub struct RunWriter {
    dir: PathBuf,
    file: File,
    done: HashSet<Key>,
    /// Questions whose last line was an `error` when the folder was opened, to be asked again.
    to_retry: HashSet<Key>,
    /// Questions answered in an earlier attempt and kept.
    pub resumed: usize,
    /// Earlier errors asked again in this attempt, and how many of those failed again.
    pub retried: usize,
    pub still_failing: usize,
}

impl RunWriter {
    /// Open (or create) a run folder. When it already holds a manifest, the model, task
    /// fingerprints, seed and shard must match, or the error says to choose another `--out`.
    /// With `retry_errors`, questions whose last line is an `error` count as not done, so
    /// the caller asks them again and the new line supersedes the old one.
    pub fn open(dir: &Path, manifest: &Manifest, retry_errors: bool) -> anyhow::Result<RunWriter> {
        std::fs::create_dir_all(dir).map_err(|e| {
            input_error(format!("{}: cannot create run folder: {e}", dir.display()))
        })?;
        let manifest_path = dir.join(MANIFEST);
        if manifest_path.exists() {
            let old = read_manifest(dir)?;
            check_resumable(dir, &old, manifest)?;
            let mut m = manifest.clone();
            m.started = old.started.clone();
            m.finished = None;
            write_json_atomic(&manifest_path, &m)?;
        } else {
            write_json_atomic(&manifest_path, manifest)?;
        }
        let pred_path = dir.join(PREDICTIONS);
        let read = read_predictions(&pred_path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&pred_path)
            .map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", pred_path.display()))?;
        // Drop a line cut short by a crash so the next append starts on a fresh line.
        file.set_len(read.valid_len)?;
        file.seek(SeekFrom::End(0))?;
        let (errors, answered): (Vec<&Prediction>, Vec<&Prediction>) = read
            .predictions
            .iter()
            .partition(|p| retry_errors && p.outcome == Outcome::Error);
        let done: HashSet<_> = answered.iter().map(|p| p.key()).collect();
        Ok(RunWriter {
            dir: dir.to_path_buf(),
            file,
            resumed: done.len(),
            done,
            to_retry: errors.iter().map(|p| p.key()).collect(),
            retried: 0,
            still_failing: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_done(&self, task: &str, id: &str, rotation: usize, variant: usize) -> bool {
        self.done
            .contains(&(task.to_string(), id.to_string(), rotation, variant))
    }

    /// Append one prediction as a single line and flush it to the OS.
    pub fn append(&mut self, p: &Prediction) -> anyhow::Result<()> {
        let key = p.key();
        if self.done.contains(&key) {
            return Ok(());
        }
        if self.to_retry.remove(&key) {
            self.retried += 1;
            if p.outcome == Outcome::Error {
                self.still_failing += 1;
            }
        }
        self.done.insert(key);
        let mut line = serde_json::to_vec(p)?;
        line.push(b'\n');
        // One write call per line: a kill between lines leaves whole lines only, and a kill
        // inside the call leaves a tail without newline that `read_predictions` drops.
        self.file.write_all(&line)?;
        self.file.flush()?;
        Ok(())
    }

    /// Force predictions to disk (called every few items and at the end).
    pub fn sync(&mut self) -> anyhow::Result<()> {
        self.file.sync_data()?;
        Ok(())
    }
}

fn check_resumable(dir: &Path, old: &Manifest, new: &Manifest) -> anyhow::Result<()> {
    let mut why = Vec::new();
    if old.model.fingerprint != new.model.fingerprint || old.model.name != new.model.name {
        why.push(format!("model {} ≠ {}", old.model.name, new.model.name));
    }
    if old.model.weights_sha256 != new.model.weights_sha256 {
        why.push("model weights differ".to_string());
    }
    let fp = |m: &Manifest| {
        m.tasks
            .iter()
            .map(|t| (t.name.clone(), t.fingerprint.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (fp(old), fp(new));
    for (name, f) in &b {
        if let Some(g) = a.get(name) {
            if g != f {
                why.push(format!(
                    "task {name} changed since the run started (fingerprint {}… ≠ {}…)",
                    &g[..12.min(g.len())],
                    &f[..12.min(f.len())]
                ));
            }
        }
    }
    if old.seed != new.seed {
        why.push(format!("seed {} ≠ {}", old.seed, new.seed));
    }
    if old.shard != new.shard {
        why.push("shard differs".to_string());
    }
    if why.is_empty() {
        return Ok(());
    }
    Err(input_error(format!(
        "{} holds a run that this command cannot resume: {}. Use another --out, or delete the folder to start over.",
        dir.display(),
        why.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(id: &str) -> Prediction {
        Prediction {
            id: id.into(),
            task: "t".into(),
            rotation: 0,
            variant: 0,
            prompt_sha256: "p".into(),
            image_sha256: vec![],
            raw_output: "A".into(),
            parsed: Some("A".into()),
            target: Some("A".into()),
            parsed_label: None,
            target_label: None,
            parsed_value: None,
            target_value: None,
            correct: Some(true),
            outcome: Outcome::Correct,
            groups: Default::default(),
            cluster: None,
            fields: Default::default(),
            timings: Default::default(),
            prompt_tokens: 0,
            output_tokens: 0,
            error: None,
            option_logprobs: None,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            model: ModelRecord {
                name: "random".into(),
                fingerprint: "f".into(),
                ..Default::default()
            },
            tasks: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn truncated_tail_is_dropped_and_run_resumes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = RunWriter::open(dir.path(), &manifest(), true).unwrap();
            w.append(&pred("a")).unwrap();
            w.append(&pred("b")).unwrap();
        }
        // Simulate a kill in the middle of writing the third line.
        let path = dir.path().join(PREDICTIONS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"c","task":"t","outc"#).unwrap();
        drop(f);
        let mut w = RunWriter::open(dir.path(), &manifest(), true).unwrap();
        assert_eq!(w.resumed, 2);
        assert!(w.is_done("t", "a", 0, 0) && !w.is_done("t", "c", 0, 0));
        w.append(&pred("c")).unwrap();
        w.append(&pred("a")).unwrap(); // already done: not written twice
        let read = read_predictions(&path).unwrap();
        let ids: Vec<_> = read.predictions.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(!read.truncated_tail);
    }

    #[test]
    fn errors_are_retried_and_the_last_line_of_a_key_counts() {
        let dir = tempfile::tempdir().unwrap();
        let failed = |id: &str| Prediction {
            outcome: Outcome::Error,
            correct: None,
            parsed: None,
            error: Some("HTTP 500".into()),
            ..pred(id)
        };
        {
            let mut w = RunWriter::open(dir.path(), &manifest(), true).unwrap();
            w.append(&pred("a")).unwrap();
            w.append(&failed("b")).unwrap();
            w.append(&failed("c")).unwrap();
        }
        // Keeping errors: everything is done.
        let w = RunWriter::open(dir.path(), &manifest(), false).unwrap();
        assert_eq!(w.resumed, 3);
        assert!(w.is_done("t", "b", 0, 0));
        drop(w);
        // Retrying: b and c are asked again; b now succeeds, c fails again.
        let mut w = RunWriter::open(dir.path(), &manifest(), true).unwrap();
        assert_eq!(w.resumed, 1);
        assert!(!w.is_done("t", "b", 0, 0) && !w.is_done("t", "c", 0, 0));
        w.append(&pred("b")).unwrap();
        w.append(&failed("c")).unwrap();
        w.append(&pred("b")).unwrap(); // done now: not written twice
        assert_eq!((w.retried, w.still_failing), (2, 1));
        drop(w);
        let read = read_predictions(&dir.path().join(PREDICTIONS)).unwrap();
        assert_eq!(read.superseded, 2);
        let got: Vec<(&str, Outcome)> = read
            .predictions
            .iter()
            .map(|p| (p.id.as_str(), p.outcome))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Outcome::Correct),
                ("b", Outcome::Correct),
                ("c", Outcome::Error)
            ]
        );
    }

    #[test]
    fn outcome_may_be_given_by_correct_alone() {
        let line = |extra: &str| format!(r#"{{"id":"x","task":"t","target":"A",{extra}}}"#);
        let outcome = |extra: &str| Prediction::from_line(&line(extra)).map(|p| p.outcome);
        assert_eq!(
            outcome(r#""parsed":"A","correct":true"#).unwrap(),
            Outcome::Correct
        );
        assert_eq!(
            outcome(r#""parsed":"B","correct":false"#).unwrap(),
            Outcome::Wrong
        );
        assert_eq!(
            outcome(r#""parsed":null,"correct":false"#).unwrap(),
            Outcome::Unparseable
        );
        assert_eq!(
            outcome(r#""parsed":null,"correct":null"#).unwrap(),
            Outcome::Error
        );
        // Neither, or a required field missing: the serde error names the field.
        let err = outcome(r#""parsed":"A""#).unwrap_err().to_string();
        assert!(err.contains("outcome"), "{err}");
        let err = outcome(r#""correct":true"#).unwrap_err().to_string();
        assert!(err.contains("parsed"), "{err}");
    }

    #[test]
    fn variants_are_part_of_the_key_and_absent_fields_read_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RunWriter::open(dir.path(), &manifest(), true).unwrap();
        w.append(&pred("a")).unwrap();
        let mut v1 = pred("a");
        v1.variant = 1;
        v1.option_logprobs = Some([("A".to_string(), -0.1), ("B".to_string(), -2.4)].into());
        assert!(w.is_done("t", "a", 0, 0) && !w.is_done("t", "a", 0, 1));
        w.append(&v1).unwrap();
        w.append(&v1).unwrap(); // done: not written twice
        drop(w);
        let text = std::fs::read_to_string(dir.path().join(PREDICTIONS)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        // Variant 0 and no option_logprobs: the line is exactly what it was before them.
        assert!(!lines[0].contains("variant") && !lines[0].contains("option_logprobs"));
        assert!(lines[1].contains(r#""variant":1"#), "{}", lines[1]);
        assert!(lines[1].contains(r#""option_logprobs":{"A":-0.1,"B":-2.4}"#));
        let read = read_predictions(&dir.path().join(PREDICTIONS)).unwrap();
        assert_eq!(read.superseded, 0);
        assert_eq!(read.predictions[1], v1);
        assert!(read.predictions[0].is_headline() && !read.predictions[1].is_headline());
        let w = RunWriter::open(dir.path(), &manifest(), true).unwrap();
        assert_eq!(w.resumed, 2);
    }

    #[test]
    fn different_model_refuses_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        RunWriter::open(dir.path(), &manifest(), true).unwrap();
        let mut other = manifest();
        other.model.name = "majority".into();
        let err = RunWriter::open(dir.path(), &other, true).err().unwrap();
        assert!(crate::error::is_input_error(&err));
        assert!(err.to_string().contains("cannot resume"), "{err}");
    }

    #[test]
    fn malformed_middle_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PREDICTIONS);
        let good = serde_json::to_string(&pred("a")).unwrap();
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read_predictions(&path).unwrap_err().to_string();
        assert!(err.contains("predictions.jsonl:2"), "{err}");
    }
}
