//! `faceval merge`: join the shard folders of one run (`--shard I/N` on several machines)
//! into a single run folder that scores and gates exactly like an unsharded run.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::input_error;
use crate::metrics::{self, RunMetrics};
use crate::run_folder::{self, Manifest, Prediction};

/// Merge shard run folders into `out`. All shards must come from the same model, tasks,
/// seed and limit, together cover every shard index once, and share no prediction.
pub fn merge(shards: &[PathBuf], out: &Path) -> anyhow::Result<RunMetrics> {
    let manifests: Vec<Manifest> = shards
        .iter()
        .map(|d| run_folder::read_manifest(d))
        .collect::<anyhow::Result<_>>()?;
    let first = &manifests[0];
    let task_set = |m: &Manifest| {
        m.tasks
            .iter()
            .map(|t| (t.name.clone(), t.fingerprint.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut seen_index = HashSet::new();
    let count = first.shard.as_ref().map(|s| s.count);
    for (dir, m) in shards.iter().zip(&manifests) {
        let differs = |what: &str| {
            input_error(format!(
                "{}: {what} differs from {}; only shards of one run can be merged",
                dir.display(),
                shards[0].display()
            ))
        };
        if m.model.name != first.model.name
            || m.model.fingerprint != first.model.fingerprint
            || m.model.weights_sha256 != first.model.weights_sha256
        {
            return Err(differs("the model"));
        }
        if task_set(m) != task_set(first) {
            return Err(differs("the task set or a task's fingerprint"));
        }
        if m.seed != first.seed || m.limit != first.limit {
            return Err(differs("the seed or --limit"));
        }
        let Some(shard) = &m.shard else {
            return Err(input_error(format!(
                "{}: not a shard (its manifest has no shard); nothing to merge",
                dir.display()
            )));
        };
        if Some(shard.count) != count {
            return Err(differs("the shard count"));
        }
        if !seen_index.insert(shard.index) {
            return Err(input_error(format!(
                "{}: shard {}/{} is given twice",
                dir.display(),
                shard.index,
                shard.count
            )));
        }
        if m.finished.is_none() {
            return Err(input_error(format!(
                "{}: shard {}/{} did not finish; rerun its command to resume it, then merge",
                dir.display(),
                shard.index,
                shard.count
            )));
        }
    }
    let count = count.unwrap_or(1);
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen_index.contains(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(input_error(format!(
            "shards {} are missing; a merged run must cover them all",
            missing.join(", ")
        )));
    }
    let mut all: Vec<Prediction> = Vec::new();
    let mut keys = HashSet::new();
    for dir in shards {
        for p in run_folder::read_predictions(&dir.join(run_folder::PREDICTIONS))?.predictions {
            if !keys.insert(p.key()) {
                return Err(input_error(format!(
                    "{}: question {} of task {} (rotation {}, variant {}) is also in another shard",
                    dir.display(),
                    p.id,
                    p.task,
                    p.rotation,
                    p.variant
                )));
            }
            all.push(p);
        }
    }
    // A stable order independent of shard order: by task as listed, then id, then variant,
    // then rotation.
    let order: BTreeMap<&str, usize> = first
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    all.sort_by(|a, b| {
        (order.get(a.task.as_str()), &a.id, a.variant, a.rotation).cmp(&(
            order.get(b.task.as_str()),
            &b.id,
            b.variant,
            b.rotation,
        ))
    });
    let mut manifest = first.clone();
    manifest.shard = None;
    manifest.started = manifests
        .iter()
        .map(|m| m.started.clone())
        .min()
        .unwrap_or_default();
    manifest.finished = manifests.iter().filter_map(|m| m.finished.clone()).max();
    manifest.notes.insert(
        "merged_from".into(),
        shards
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    std::fs::create_dir_all(out)
        .map_err(|e| input_error(format!("{}: cannot create: {e}", out.display())))?;
    write_predictions_atomic(&out.join(run_folder::PREDICTIONS), &all)?;
    run_folder::write_json_atomic(&out.join(run_folder::MANIFEST), &manifest)?;
    metrics::write_metrics(out)
}

/// Write a whole predictions file at once (temporary file, then rename).
pub fn write_predictions_atomic(path: &Path, predictions: &[Prediction]) -> anyhow::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for p in predictions {
        serde_json::to_writer(&mut f, p)?;
        f.write_all(b"\n")?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
