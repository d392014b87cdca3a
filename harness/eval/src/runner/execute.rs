//! Asking the planned questions: [`ask_all`] walks the schedule, decoding each chunk's images
//! on the rayon pool one chunk ahead of the model, and writes every prediction as soon as its
//! model call returns. [`Asking::ask_chunk`] is one chunk: item errors, likelihood questions
//! one at a time, generation questions in batches.

use std::ops::Range;
use std::time::Instant;

use faceval_models::{MajorityModel, Model};
use rayon::prelude::*;

use super::assemble::{self, Decoded, Prepared};
use super::call::{self, ms};
use super::plan::Plan;
use super::progress::TaskProgress;
use super::{ModelHandle, RunSettings, RunSummary};
use crate::item::{Item, Target};
use crate::prompt::Question;
use crate::run_folder::{Outcome, Prediction, RunWriter};
use crate::task::Task;

/// What the asking loop updates as it goes.
pub(super) struct Asking<'w> {
    pub writer: &'w mut RunWriter,
    pub summary: RunSummary,
    /// End of the previous model call's bookkeeping, for `timings.wall_ms`.
    pub mark: Instant,
    pub settings: RunSettings,
    pub seed: u64,
    pub strict: bool,
}

/// Ask every planned question in `schedule` order. `majority[t]` is task t's fitted floor
/// when the run asks `majority`.
pub(super) fn ask_all(
    asking: &mut Asking,
    handle: &mut ModelHandle,
    majority: &mut [Option<MajorityModel>],
    plans: &[Plan],
    schedule: &[(usize, Range<usize>)],
    progress: &mut [TaskProgress],
) -> anyhow::Result<()> {
    let to_decode: Vec<Vec<&Item>> = schedule
        .iter()
        .map(|(t, r)| {
            plans[*t].pending[r.clone()]
                .iter()
                .map(|(i, _)| *i)
                .collect()
        })
        .collect();
    std::thread::scope(|s| -> anyhow::Result<()> {
        // Decoding (read, decode, sha256) runs one chunk ahead of the model: the channel
        // holds at most one decoded chunk besides the one being decoded. When the asking loop
        // stops early, dropping `rx` makes the next send fail and the decoder ends.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<anyhow::Result<Decoded>>>(1);
        let to_decode = &to_decode;
        s.spawn(move || {
            for items in to_decode {
                let decoded: Vec<_> = items.par_iter().map(|i| assemble::decode(i)).collect();
                if tx.send(decoded).is_err() {
                    break;
                }
            }
        });
        for (t, range) in schedule {
            let decoded = rx
                .recv()
                .map_err(|_| anyhow::anyhow!("the image decoding thread stopped early"))?;
            let plan = &plans[*t];
            let model: &mut dyn Model = match (&mut *handle, &mut majority[*t]) {
                (_, Some(m)) => m,
                (ModelHandle::Loaded(m), None) => m.as_mut(),
                (ModelHandle::Majority, None) => {
                    anyhow::bail!("internal: no majority model for task {}", plan.task.name())
                }
            };
            asking.ask_chunk(
                model,
                plan,
                &plan.pending[range.clone()],
                decoded,
                &mut progress[*t],
            )?;
            if range.end == plan.pending.len() {
                progress[*t].bar.finish_and_clear();
            }
        }
        Ok(())
    })
}

impl Asking<'_> {
    /// Write the predictions of one model call (one question, or a batch's members). The
    /// runner time since the previous call is shared evenly among the members, so that
    /// `wall_ms` still sums to the run's time; the call is warm-up (all its members) when it
    /// is among the task's first `warmup` calls.
    fn record_call(
        &mut self,
        progress: &mut TaskProgress,
        members: Vec<(Prediction, &Item)>,
    ) -> anyhow::Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let wall_ms = ms(self.mark) / members.len() as f64;
        let warmup = progress.calls < self.settings.warmup;
        progress.calls += 1;
        for (mut p, item) in members {
            p.timings.warmup = warmup;
            p.timings.wall_ms = wall_ms;
            if let Target::Number(x) = item.target {
                p.target_value.get_or_insert(x);
            }
            if p.outcome == Outcome::Error {
                self.summary.errors += 1;
            }
            self.writer.append(&p)?;
            self.summary.asked += 1;
        }
        self.mark = Instant::now();
        Ok(())
    }

    /// Ask the model the queued generation questions in one call. A
    /// [`faceval_models::ModelUnavailable`] in any member stops the run: the members that
    /// were answered are written, the others left for the rerun to ask.
    fn flush(
        &mut self,
        model: &mut dyn Model,
        task: &Task,
        progress: &mut TaskProgress,
        queue: &mut Vec<Prepared>,
    ) -> anyhow::Result<()> {
        if queue.is_empty() {
            return Ok(());
        }
        let answered = call::ask_generation(model, task, std::mem::take(queue))?;
        self.record_call(progress, answered.members)?;
        match answered.stop {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Ask one chunk of a task's items, whose images were decoded ahead.
    fn ask_chunk(
        &mut self,
        model: &mut dyn Model,
        plan: &Plan,
        chunk: &[(&Item, anyhow::Result<Vec<Question>>)],
        decoded: Vec<anyhow::Result<Decoded>>,
        progress: &mut TaskProgress,
    ) -> anyhow::Result<()> {
        let task = plan.task;
        let name = task.name();
        let mut queue: Vec<Prepared> = Vec::with_capacity(self.settings.batch_size);
        for ((item, questions), dec) in chunk.iter().zip(decoded) {
            let item: &Item = item;
            let questions = match questions {
                Ok(q) => q,
                Err(e) => {
                    self.writer.append(&assemble::item_error(
                        task,
                        item,
                        (0, 0),
                        format!("{e:#}"),
                    ))?;
                    self.summary.errors += 1;
                    progress.bar.inc(1);
                    continue;
                }
            };
            let dec = match dec {
                Ok(d) => d,
                Err(e) => {
                    if self.strict {
                        return Err(e);
                    }
                    for q in questions {
                        if !self.writer.is_done(name, &item.id, q.rotation, q.variant) {
                            self.writer.append(&assemble::item_error(
                                task,
                                item,
                                (q.rotation, q.variant),
                                format!("{e:#}"),
                            ))?;
                            self.summary.errors += 1;
                        }
                    }
                    progress.bar.inc(1);
                    continue;
                }
            };
            for q in questions {
                if self.writer.is_done(name, &item.id, q.rotation, q.variant) {
                    continue;
                }
                let job = assemble::prepare(task, item, q, &dec, self.seed);
                if call::by_likelihood(task) {
                    if let Some(p) = call::ask_likelihood(model, &job)? {
                        self.record_call(progress, vec![(assemble::with_score(task, p), item)])?;
                        continue;
                    }
                }
                queue.push(job);
                if queue.len() >= self.settings.batch_size {
                    self.flush(model, task, progress, &mut queue)?;
                }
            }
            progress.bar.inc(1);
        }
        // Batches stay within a chunk: they hold consecutive items of one task.
        self.flush(model, task, progress, &mut queue)?;
        self.writer.sync()
    }
}
