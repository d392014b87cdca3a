//! The run's manifest: [`complete`] fills in what the run was asked and where it runs before
//! the first prediction is written; [`finish`] adds what the run measured (resources, HTTP
//! traffic), writes the metrics and stamps `finished`. Totals carry over from an earlier
//! attempt of the same run folder ([`Earlier`]).

use std::path::Path;

use super::{ModelHandle, RunOptions, RunSettings};
use crate::hardware::ResourceMonitor;
use crate::run_folder::{self, Manifest, Resources, TaskRecord};
use crate::task::Task;

/// The task record a manifest stores.
pub fn task_record(task: &Task) -> TaskRecord {
    let s = &task.spec;
    TaskRecord {
        name: s.name.clone(),
        version: s.version.clone(),
        fingerprint: task.fingerprint.clone(),
        path: task.path.display().to_string(),
        origin: task.origin.label(),
        // The TOML spelling (`multiple_choice`, `open`, `numeric`), as docs/run-format.md says.
        style: serde_json::to_value(s.question.style)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        labels: if s.question.bin_labels.is_empty() {
            task.labels.values().to_vec()
        } else {
            s.question.bin_labels.clone()
        },
        groups: s.fairness.groups.clone(),
        breakdown: s.metrics.breakdown.clone(),
        circular: s.question.circular,
        variants: if s.question.variants.is_some() {
            crate::prompt::phrasings(task)
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            vec![]
        },
    }
}

/// The caller's manifest with what this run was asked (tasks, shard, limit, seed, settings),
/// the machine, and where the loaded model says it runs.
pub(super) fn complete(
    mut manifest: Manifest,
    handle: &ModelHandle,
    tasks: &[Task],
    opts: &RunOptions,
    settings: RunSettings,
) -> Manifest {
    manifest.tasks = tasks.iter().map(task_record).collect();
    manifest.shard = opts.shard.clone();
    manifest.limit = opts.limit;
    manifest.seed = opts.seed;
    manifest.warmup = Some(settings.warmup);
    manifest.batch_size = Some(settings.batch_size);
    if manifest.hardware.is_none() {
        manifest.hardware = Some(crate::hardware::hardware());
    }
    if let ModelHandle::Loaded(m) = handle {
        // What the loaded model says beats the caller's default.
        let info = m.info();
        if !info.dtype.is_empty() {
            manifest.dtype = info.dtype;
        }
        if !info.device.is_empty() {
            manifest.device = info.device;
        }
        if manifest.model.weight_bytes == 0 {
            manifest.model.weight_bytes = info.weight_bytes;
        }
    }
    manifest
}

/// Peaks and traffic of an earlier attempt of this run, kept when it is resumed. Read before
/// the run writer opens the folder.
pub(super) struct Earlier {
    resources: Option<Resources>,
    http_requests: Option<u64>,
    cache_hits: Option<u64>,
}

impl Earlier {
    pub fn read(out: &Path) -> Earlier {
        let manifest = run_folder::read_manifest(out).ok();
        Earlier {
            resources: manifest.as_ref().and_then(|m| m.resources.clone()),
            http_requests: manifest.as_ref().and_then(|m| m.http_requests),
            cache_hits: manifest.as_ref().and_then(|m| m.cache_hits),
        }
    }
}

/// Record the run's resources and traffic in the manifest on disk, write `metrics.json`,
/// then stamp `finished` (last, so a manifest with `finished` has its metrics).
pub(super) fn finish(
    out: &Path,
    handle: &ModelHandle,
    manifest: &Manifest,
    earlier: Earlier,
    monitor: ResourceMonitor,
) -> anyhow::Result<()> {
    let mut resources = monitor.finish();
    resources.weight_bytes = manifest.model.weight_bytes;
    if let Some(e) = &earlier.resources {
        resources = resources.max(e);
    }
    let mut on_disk = run_folder::read_manifest(out)?;
    on_disk.resources = Some(resources);
    if let ModelHandle::Loaded(m) = handle {
        if let Some(t) = m.traffic() {
            // Totals over the attempts of the run, like the memory peaks.
            on_disk.http_requests = Some(earlier.http_requests.unwrap_or(0) + t.http_requests);
            on_disk.cache_hits = Some(earlier.cache_hits.unwrap_or(0) + t.cache_hits);
        }
    }
    run_folder::write_json_atomic(&out.join(run_folder::MANIFEST), &on_disk)?;
    crate::metrics::write_metrics(out)?;
    on_disk.finished = Some(chrono::Utc::now().to_rfc3339());
    run_folder::write_json_atomic(&out.join(run_folder::MANIFEST), &on_disk)?;
    Ok(())
}
