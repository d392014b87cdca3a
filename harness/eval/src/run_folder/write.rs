//! The writer of run folders: predictions appended one whole line at a time, JSON files
//! replaced atomically, and the check that a folder holds the same run before resuming it.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::read::{read_manifest, read_predictions};
use super::schema::{short_fingerprint, Key, Manifest, Outcome, Prediction, MANIFEST, PREDICTIONS};
use crate::error::input_error;

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
                    short_fingerprint(g),
                    short_fingerprint(f)
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
    use crate::run_folder::ModelRecord;

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
            score: None,
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
