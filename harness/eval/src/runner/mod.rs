//! Running a model over tasks into a run folder: read the dataset, build each question,
//! decode images in parallel, ask the model, score, and append — resuming where a previous
//! attempt stopped.
//!
//! [`run_with`] is the entry point ([`run`] is it with the default [`RunSettings`]). It is a
//! short list of named stages, one file each:
//!
//! 1. `finalise::complete` — the manifest gets the tasks, settings, machine and placement.
//! 2. `plan.rs` — read every task's items (writing reader errors), fit the majority floor,
//!    list the questions still pending, and interleave tasks chunk by chunk.
//! 3. `execute.rs` — decode each chunk's images ahead of the model and ask it; `call.rs`
//!    makes the model calls and `assemble.rs` turns items and answers into predictions.
//!    `progress.rs` draws the bars.
//! 4. `finalise::finish` — resources, traffic, `metrics.json` and `finished`.
//!
//! Start reading at [`run_with`].

mod assemble;
mod call;
mod execute;
mod finalise;
mod plan;
mod progress;

use std::path::PathBuf;
use std::time::Instant;

use crate::error::input_error;
use crate::run_folder::{Manifest, RunWriter, Shard};
use crate::task::Task;
use crate::telemetry;

pub use crate::registry::ModelHandle;
pub use finalise::task_record;
pub use plan::{in_shard, interleave, load_items, CHUNK_ITEMS};

/// What `faceval run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data_root: PathBuf,
    pub out: PathBuf,
    pub limit: Option<usize>,
    pub shard: Option<Shard>,
    pub seed: u64,
    /// Stop at the first item error instead of recording it.
    pub strict: bool,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub asked: usize,
    pub resumed: usize,
    pub errors: usize,
    /// Questions recorded as `error` by an earlier attempt and asked again in this one.
    pub retried: usize,
    /// Of those, the ones that failed again.
    pub still_failing: usize,
}

/// How a run asks the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSettings {
    /// Model calls at the start of each task (in this attempt) whose timings telemetry
    /// leaves out; they are scored as usual.
    pub warmup: usize,
    /// Generation questions per model call ([`faceval_models::Model::generate_batch`]);
    /// likelihood-scored questions are asked one at a time.
    pub batch_size: usize,
    /// Ask again the questions an earlier attempt recorded as `error` (a 500 after the
    /// retries, a timeout), so that a transient failure does not stay a hole in the run.
    pub retry_errors: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            warmup: telemetry::DEFAULT_WARMUP,
            batch_size: telemetry::DEFAULT_BATCH_SIZE,
            retry_errors: true,
        }
    }
}

/// Run the model on `tasks` into `opts.out` with the default [`RunSettings`]: the first
/// [`telemetry::DEFAULT_WARMUP`] calls of each task are left out of the telemetry. Metrics
/// are written at the end.
pub fn run(
    handle: &mut ModelHandle,
    manifest: Manifest,
    tasks: &[Task],
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    run_with(handle, manifest, tasks, opts, RunSettings::default())
}

/// Run the model on `tasks` into `opts.out` as `settings` say. Tasks are interleaved chunk
/// by chunk ([`interleave`]); each chunk's images are decoded on the rayon pool while the
/// model answers the previous chunk.
pub fn run_with(
    handle: &mut ModelHandle,
    manifest: Manifest,
    tasks: &[Task],
    opts: &RunOptions,
    settings: RunSettings,
) -> anyhow::Result<RunSummary> {
    if settings.batch_size == 0 {
        return Err(input_error(
            "--batch-size 0: a model call asks at least one question",
        ));
    }
    let manifest = finalise::complete(manifest, handle, tasks, opts, settings);
    let earlier = finalise::Earlier::read(&opts.out);
    let monitor = crate::hardware::ResourceMonitor::start();
    let mut writer = RunWriter::open(&opts.out, &manifest, settings.retry_errors)?;
    let resumed = writer.resumed;

    let fit_majority = matches!(handle, ModelHandle::Majority);
    let mut read = plan::read_tasks(tasks, opts, fit_majority, &mut writer)?;
    let plans = plan::pending(tasks, &read.items, &writer);
    let schedule = plan::schedule(&plans, settings.batch_size);
    let mut progress = progress::task_progress(
        opts.progress,
        plans.iter().map(|p| (p.task.name(), p.pending.len())),
    );

    let mut asking = execute::Asking {
        writer: &mut writer,
        summary: RunSummary {
            resumed,
            errors: read.reader_errors,
            ..Default::default()
        },
        mark: Instant::now(),
        settings,
        seed: opts.seed,
        strict: opts.strict,
    };
    execute::ask_all(
        &mut asking,
        handle,
        &mut read.majority,
        &plans,
        &schedule,
        &mut progress,
    )?;
    let mut summary = asking.summary;
    summary.retried = writer.retried;
    summary.still_failing = writer.still_failing;
    writer.sync()?;
    finalise::finish(&opts.out, handle, &manifest, earlier, monitor)?;
    Ok(summary)
}
