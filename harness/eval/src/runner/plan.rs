//! Planning a run: read every task's items (writing the reader's item errors), fit the
//! majority floor, list the questions still to ask after a resume, and order them chunk by
//! chunk across tasks. Start at [`read_tasks`], then [`pending`] and [`schedule`].

use std::ops::Range;

use anyhow::Context;
use faceval_models::MajorityModel;

use super::assemble;
use super::RunOptions;
use crate::error::input_error;
use crate::item::{Item, ItemError};
use crate::prompt::{questions_for, seed_from, Question};
use crate::registry::fit_majority;
use crate::run_folder::{RunWriter, Shard};
use crate::task::Task;

/// Items whose images are decoded together (in parallel) while the model answers the
/// previous chunk. Tasks are interleaved chunk by chunk.
pub const CHUNK_ITEMS: usize = 32;

/// Read a task's items, resolve clusters and apply `--limit`. Sharding comes after (see
/// [`in_shard`]), so that the shards of a limited run partition the same items.
pub fn load_items(task: &Task, opts: &RunOptions) -> anyhow::Result<(Vec<Item>, Vec<ItemError>)> {
    // Binned numeric tasks read numbers and bin them; the label set names the bins.
    let empty = crate::labels::LabelSet::default();
    let labels = if task.spec.question.bins.is_empty() {
        &task.labels
    } else {
        &empty
    };
    let outcome = crate::datasets::read_with_field(
        &task.spec.dataset,
        labels,
        &task.spec.labels.field,
        &opts.data_root,
    )
    .with_context(|| format!("task {}", task.name()))?;
    let (mut items, mut errors) = (outcome.items, outcome.errors);
    if let Some(field) = &task.spec.fairness.cluster {
        for item in &mut items {
            item.cluster = if field == "image" {
                item.images.first().map(|p| p.display().to_string())
            } else {
                item.fields
                    .get(field)
                    .or_else(|| item.groups.get(field))
                    .cloned()
            };
        }
    }
    if let Some(limit) = opts.limit {
        items.truncate(limit);
        errors.truncate(limit.saturating_sub(items.len()));
    }
    Ok((items, errors))
}

/// Whether an item id belongs to this shard: a stable hash of the id, so shards partition
/// the items whatever order the reader gives them in.
pub fn in_shard(shard: Option<&Shard>, id: &str) -> bool {
    shard.is_none_or(|s| (seed_from(&[id]) % s.count as u64) as usize == s.index)
}

/// Every task's items in this shard, read before any question is asked.
pub(super) struct TaskItems {
    /// Per task, in the order the tasks were given.
    pub items: Vec<Vec<Item>>,
    /// Per task, the fitted majority floor when the run asks `majority`.
    pub majority: Vec<Option<MajorityModel>>,
    /// Reader errors written in this attempt.
    pub reader_errors: usize,
}

/// Read every task's items first: reader errors are written (or stop a `--strict` run) before
/// any question is asked, and the interleaved order needs every task's pending count. With
/// `fit_majority_floor`, each task's majority floor is fitted to its own items.
pub(super) fn read_tasks(
    tasks: &[Task],
    opts: &RunOptions,
    fit_majority_floor: bool,
    writer: &mut RunWriter,
) -> anyhow::Result<TaskItems> {
    let mut read = TaskItems {
        items: Vec::with_capacity(tasks.len()),
        majority: Vec::with_capacity(tasks.len()),
        reader_errors: 0,
    };
    for task in tasks {
        let (mut items, mut errors) = load_items(task, opts)?;
        // The majority floor is fitted before sharding, so that every shard answers the same
        // label.
        read.majority
            .push(fit_majority_floor.then(|| fit_majority(task, &items)));
        items.retain(|i| in_shard(opts.shard.as_ref(), &i.id));
        errors.retain(|e| in_shard(opts.shard.as_ref(), &e.id));
        if opts.strict {
            if let Some(e) = errors.first() {
                return Err(input_error(format!(
                    "{}: {} (--strict stops at the first item error)",
                    e.location, e.message
                )));
            }
        }
        for e in &errors {
            if writer.is_done(task.name(), &e.id, 0, 0) {
                continue;
            }
            writer.append(&assemble::reader_error(task, e))?;
            read.reader_errors += 1;
        }
        read.items.push(items);
    }
    Ok(read)
}

/// One task's questions still to ask in this attempt.
pub(super) struct Plan<'a> {
    pub task: &'a Task,
    /// Questions are built up front (cheap) so that resume can skip finished rotations.
    pub pending: Vec<(&'a Item, anyhow::Result<Vec<Question>>)>,
}

/// Per task, the items with a question the run folder does not hold yet.
pub(super) fn pending<'a>(
    tasks: &'a [Task],
    items: &'a [Vec<Item>],
    writer: &RunWriter,
) -> Vec<Plan<'a>> {
    tasks
        .iter()
        .zip(items)
        .map(|(task, items)| Plan {
            task,
            pending: items
                .iter()
                .map(|i| (i, questions_for(task, i)))
                .filter(|(i, qs)| match qs {
                    Ok(qs) => qs
                        .iter()
                        .any(|q| !writer.is_done(task.name(), &i.id, q.rotation, q.variant)),
                    Err(_) => !writer.is_done(task.name(), &i.id, 0, 0),
                })
                .collect(),
        })
        .collect()
}

/// The order to ask `plans` in: [`interleave`]d by chunks of [`CHUNK_ITEMS`] items, or of
/// one batch when a batch is larger.
pub(super) fn schedule(plans: &[Plan], batch_size: usize) -> Vec<(usize, Range<usize>)> {
    // A chunk holds at least one batch.
    let chunk = CHUNK_ITEMS.max(batch_size);
    interleave(
        &plans.iter().map(|p| p.pending.len()).collect::<Vec<_>>(),
        chunk,
    )
}

/// The order a run asks its tasks' items in: chunk k of every task (in the order the tasks
/// were given), then chunk k + 1. `lens[t]` is task t's number of pending items; each entry
/// is `(t, range of its pending items)`. Tasks that ask about the same images in the same
/// order (FairFace age, gender and race) thus ask about each face close together in time, so
/// a model's per-image cache is still warm when the next task reaches the face.
pub fn interleave(lens: &[usize], chunk: usize) -> Vec<(usize, Range<usize>)> {
    let chunk = chunk.max(1);
    let rounds = lens.iter().map(|n| n.div_ceil(chunk)).max().unwrap_or(0);
    let mut order = Vec::new();
    for k in 0..rounds {
        for (t, &n) in lens.iter().enumerate() {
            let start = k * chunk;
            if start < n {
                order.push((t, start..(start + chunk).min(n)));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_takes_chunk_k_of_every_task_before_chunk_k_plus_1() {
        let order = interleave(&[70, 0, 33, 64], 32);
        assert_eq!(
            order,
            vec![
                (0, 0..32),
                (2, 0..32),
                (3, 0..32),
                (0, 32..64),
                (2, 32..33),
                (3, 32..64),
                (0, 64..70),
            ]
        );
        // Every pending item of every task is asked exactly once, each task in its own order.
        for (t, n) in [(0usize, 70usize), (2, 33), (3, 64)] {
            let covered: Vec<usize> = order
                .iter()
                .filter(|(u, _)| *u == t)
                .flat_map(|(_, r)| r.clone())
                .collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>());
        }
        assert!(interleave(&[], 32).is_empty());
        assert!(interleave(&[0, 0], 32).is_empty());
        // A zero chunk is treated as one item per chunk rather than looping forever.
        assert_eq!(interleave(&[2], 0), vec![(0, 0..1), (0, 1..2)]);
    }
}
