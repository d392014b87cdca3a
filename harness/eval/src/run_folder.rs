//! The run folder, faceval's public result format (`docs/run-format.md`):
//! `manifest.json`, `predictions.jsonl` (one line per asked question) and `metrics.json`.
//!
//! Writing is crash-safe. Each prediction is appended as one whole line and flushed; a line
//! cut short by `kill -9` is dropped on reopening, and questions already answered are skipped,
//! so rerunning the same command finishes the run with nothing lost or duplicated. JSON files
//! other than predictions are replaced atomically (write to a temporary file, then rename).

use std::collections::{BTreeMap, HashSet};
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    #[serde(default)]
    pub prompt_sha256: String,
    #[serde(default)]
    pub image_sha256: Vec<String>,
    #[serde(default)]
    pub raw_output: String,
    /// The extracted answer: an option letter, a label, or a number as text; `None` when
    /// nothing could be extracted.
    #[serde(default)]
    pub parsed: Option<String>,
    /// The right answer in the same form as `parsed`.
    #[serde(default)]
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
}

impl Prediction {
    /// The key that makes a line unique within a run.
    pub fn key(&self) -> (String, String, usize) {
        (self.task.clone(), self.id.clone(), self.rotation)
    }
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
    pub predictions: Vec<Prediction>,
    /// Byte length of the valid prefix (every complete, parseable line).
    pub valid_len: u64,
    /// A final line that was cut short (a crash mid-write); it is dropped.
    pub truncated_tail: bool,
}

/// Read `predictions.jsonl`. A malformed line in the middle is an input error naming the
/// line; a last line without its newline is treated as a write cut short and dropped.
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
        match serde_json::from_str::<Prediction>(body) {
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
    Ok(out)
}

/// Appends predictions to a run folder and knows which questions are done.
pub struct RunWriter {
    dir: PathBuf,
    file: File,
    done: HashSet<(String, String, usize)>,
    pub resumed: usize,
}

impl RunWriter {
    /// Open (or create) a run folder. When it already holds a manifest, the model, task
    /// fingerprints, seed and shard must match, or the error says to choose another `--out`.
    pub fn open(dir: &Path, manifest: &Manifest) -> anyhow::Result<RunWriter> {
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
        let done: HashSet<_> = read.predictions.iter().map(Prediction::key).collect();
        let resumed = done.len();
        Ok(RunWriter {
            dir: dir.to_path_buf(),
            file,
            done,
            resumed,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_done(&self, task: &str, id: &str, rotation: usize) -> bool {
        self.done
            .contains(&(task.to_string(), id.to_string(), rotation))
    }

    /// Append one prediction as a single line and flush it to the OS.
    pub fn append(&mut self, p: &Prediction) -> anyhow::Result<()> {
        if !self.done.insert(p.key()) {
            return Ok(());
        }
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
            let mut w = RunWriter::open(dir.path(), &manifest()).unwrap();
            w.append(&pred("a")).unwrap();
            w.append(&pred("b")).unwrap();
        }
        // Simulate a kill in the middle of writing the third line.
        let path = dir.path().join(PREDICTIONS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"c","task":"t","outc"#).unwrap();
        drop(f);
        let mut w = RunWriter::open(dir.path(), &manifest()).unwrap();
        assert_eq!(w.resumed, 2);
        assert!(w.is_done("t", "a", 0) && !w.is_done("t", "c", 0));
        w.append(&pred("c")).unwrap();
        w.append(&pred("a")).unwrap(); // already done: not written twice
        let read = read_predictions(&path).unwrap();
        let ids: Vec<_> = read.predictions.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(!read.truncated_tail);
    }

    #[test]
    fn different_model_refuses_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        RunWriter::open(dir.path(), &manifest()).unwrap();
        let mut other = manifest();
        other.model.name = "majority".into();
        let err = RunWriter::open(dir.path(), &other).err().unwrap();
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
