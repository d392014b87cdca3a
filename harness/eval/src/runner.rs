//! Running a model over tasks into a run folder: read the dataset, build each question,
//! decode images in parallel, ask the model, score, and append — resuming where a previous
//! attempt stopped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use faceval_models::{Model, Request};
use rayon::prelude::*;

use crate::error::input_error;
use crate::item::{Item, ItemError, Target};
use crate::prompt::{questions_for, seed_from, sha256_hex, Question};
use crate::run_folder::{self, Manifest, Outcome, Prediction, RunWriter, Shard, TaskRecord};
use crate::score::{score_choice, score_text};
use crate::task::{QuestionStyle, Scoring, Task};
use crate::telemetry;

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

/// Decoded images of one item with their file hashes.
struct Decoded {
    images: Vec<Arc<image::DynamicImage>>,
    shas: Vec<String>,
}

fn decode(item: &Item) -> anyhow::Result<Decoded> {
    let mut images = Vec::with_capacity(item.images.len());
    let mut shas = Vec::with_capacity(item.images.len());
    for path in &item.images {
        let bytes = std::fs::read(path)
            .map_err(|e| input_error(format!("{}: cannot read image: {e}", path.display())))?;
        let img = faceval_models::image_io::decode(&bytes).map_err(|e| {
            input_error(format!("{}: not a decodable image: {e:#}", path.display()))
        })?;
        shas.push(sha256_hex(&bytes));
        images.push(Arc::new(img));
    }
    Ok(Decoded { images, shas })
}

fn base_prediction(task: &Task, item_id: &str, rotation: usize, variant: usize) -> Prediction {
    Prediction {
        id: item_id.to_string(),
        task: task.name().to_string(),
        rotation,
        variant,
        prompt_sha256: String::new(),
        image_sha256: vec![],
        raw_output: String::new(),
        parsed: None,
        target: None,
        parsed_label: None,
        target_label: None,
        parsed_value: None,
        target_value: None,
        correct: None,
        outcome: Outcome::Error,
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

fn error_prediction(
    task: &Task,
    item: &Item,
    (rotation, variant): (usize, usize),
    message: String,
) -> Prediction {
    let mut p = base_prediction(task, &item.id, rotation, variant);
    p.groups = item.groups.clone();
    p.cluster = item.cluster.clone();
    p.fields = breakdown_fields(task, item);
    p.error = Some(message);
    p
}

fn breakdown_fields(task: &Task, item: &Item) -> std::collections::BTreeMap<String, String> {
    task.spec
        .metrics
        .breakdown
        .iter()
        .filter_map(|f| item.fields.get(f).map(|v| (f.clone(), v.clone())))
        .collect()
}

/// A question ready to put to the model: its prediction so far (identity, groups, hashes)
/// and the request.
struct Prepared<'a> {
    item: &'a Item,
    question: &'a Question,
    prediction: Prediction,
    request: Request,
}

fn prepare<'a>(
    task: &Task,
    item: &'a Item,
    q: &'a Question,
    decoded: &Decoded,
    run_seed: u64,
) -> Prepared<'a> {
    let mut p = base_prediction(task, &item.id, q.rotation, q.variant);
    p.groups = item.groups.clone();
    p.cluster = item.cluster.clone();
    p.fields = breakdown_fields(task, item);
    p.prompt_sha256 = q.prompt_sha256.clone();
    p.image_sha256 = decoded.shas.clone();
    let spec = &task.spec.question;
    let (run_seed, rotation, variant) = (
        run_seed.to_string(),
        q.rotation.to_string(),
        q.variant.to_string(),
    );
    // Variant 0 keeps the seed a task without variants has.
    let mut seed_parts = vec![run_seed.as_str(), task.name(), &item.id, &rotation];
    if q.variant > 0 {
        seed_parts.push(&variant);
    }
    let request = Request {
        images: decoded.images.clone(),
        prompt: q.prompt.clone(),
        max_new_tokens: spec.max_new_tokens,
        stop: spec.stop.clone(),
        choices: q.choices.clone(),
        choice_texts: q.choice_texts.clone(),
        seed: seed_from(&seed_parts),
    };
    Prepared {
        item,
        question: q,
        prediction: p,
        request,
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Whether a task's questions are answered by option likelihood (else by generation).
fn by_likelihood(task: &Task) -> bool {
    let spec = &task.spec.question;
    spec.scoring == Scoring::Likelihood && spec.style != QuestionStyle::Numeric
}

/// Score one question by its options' likelihood: the prediction (scored, or failed as an item
/// error), or `None` when the model cannot score (generate and extract instead). Only
/// [`faceval_models::ModelUnavailable`] (the model cannot answer anything now) is an `Err`,
/// which stops the run so that rerunning resumes instead of recording every item as failed.
fn ask_likelihood(model: &mut dyn Model, job: &Prepared) -> anyhow::Result<Option<Prediction>> {
    // The runner times every model call itself, so that models which report no stage split
    // (baselines, likelihood scoring) still get an honest end-to-end time; the split stays
    // whatever the model reported (zeros = not reported), never estimated here.
    let started = Instant::now();
    let scored = model.choice_logprobs(&job.request);
    let mut p = job.prediction.clone();
    p.timings.e2e_ms = ms(started);
    match scored {
        Ok(Some(lp)) => {
            let best = argmax(&lp);
            let s = score_choice(job.question, best);
            if lp.len() == job.question.choices.len() {
                p.option_logprobs = Some(job.question.choices.iter().cloned().zip(lp).collect());
            }
            p.raw_output = best
                .and_then(|b| job.question.choices.get(b).cloned())
                .unwrap_or_default();
            Ok(Some(fill(p, s)))
        }
        Ok(None) => Ok(None),
        Err(e) if faceval_models::model::is_unavailable(&e) => Err(e),
        Err(e) => {
            p.error = Some(format!("{e:#}"));
            Ok(Some(p))
        }
    }
}

/// Score a generated answer (or record the item's failure). `e2e_ms` is the model call's
/// wall time — the batch's, for a batched call.
fn finish_generated(
    task: &Task,
    job: Prepared,
    generated: anyhow::Result<faceval_models::Generation>,
    e2e_ms: f64,
) -> Prediction {
    let mut p = job.prediction;
    match generated {
        Ok(g) => {
            let s = score_text(task, job.question, &job.item.target, &g.text);
            p.raw_output = g.text;
            p.timings = g.timings;
            p.timings.e2e_ms = e2e_ms;
            p.prompt_tokens = g.prompt_tokens;
            p.output_tokens = g.token_ids.len();
            with_score(task, fill(p, s))
        }
        Err(e) => {
            p.timings = Default::default();
            p.timings.e2e_ms = e2e_ms;
            p.error = Some(format!("{e:#}"));
            p
        }
    }
}

/// Verification tasks: the pair's `score` next to `parsed` (`docs/verification.md`); other
/// tasks' predictions pass through unchanged.
fn with_score(task: &Task, mut p: Prediction) -> Prediction {
    if let (QuestionStyle::Verification, [same, different]) =
        (task.spec.question.style, task.labels.values())
    {
        if p.outcome != Outcome::Error {
            p.score = crate::verification::pair_score(&p, same, different);
        }
    }
    p
}

fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, v) in values.iter().enumerate() {
        if !v.is_finite() {
            return None;
        }
        // Ties keep the earlier option: deterministic, never random.
        if best.is_none_or(|b| *v > values[b]) {
            best = Some(i);
        }
    }
    best
}

fn fill(mut p: Prediction, s: crate::score::Scored) -> Prediction {
    p.parsed = s.parsed;
    p.target = s.target;
    p.parsed_label = s.parsed_label;
    p.target_label = s.target_label;
    p.parsed_value = s.parsed_value;
    p.target_value = s.target_value;
    p.correct = s.correct;
    p.outcome = s.outcome.unwrap_or(Outcome::Error);
    p
}

/// The model a run asks. `Majority` is built per task, from that task's label counts.
pub enum ModelHandle {
    Loaded(Box<dyn Model>),
    Majority,
}

/// The most frequent target of `items`: a label, an option letter, or the median number.
/// Ties go to the label listed first (or the earlier letter), so the choice is deterministic.
pub fn majority_label(task: &Task, items: &[Item]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut numbers = Vec::new();
    for item in items {
        match &item.target {
            Target::Label(l) => *counts.entry(l.clone()).or_default() += 1,
            Target::Choice(i) => {
                *counts
                    .entry(
                        crate::prompt::LETTERS
                            .get(*i)
                            .copied()
                            .unwrap_or("?")
                            .to_string(),
                    )
                    .or_default() += 1
            }
            Target::Number(x) if task.spec.question.style == QuestionStyle::Numeric => {
                numbers.push(*x)
            }
            Target::Number(x) => {
                let b = crate::prompt::bin_of(&task.spec.question.bins, *x);
                *counts
                    .entry(
                        task.spec
                            .question
                            .bin_labels
                            .get(b)
                            .cloned()
                            .unwrap_or_default(),
                    )
                    .or_default() += 1
            }
        }
    }
    if !numbers.is_empty() {
        numbers.sort_by(f64::total_cmp);
        return crate::score::format_number(numbers[numbers.len() / 2]);
    }
    let order = |l: &String| task.labels.index_of(l).unwrap_or(usize::MAX);
    counts
        .into_iter()
        .max_by(|a, b| {
            a.1.cmp(&b.1)
                .then_with(|| order(&b.0).cmp(&order(&a.0)))
                .then_with(|| b.0.cmp(&a.0))
        })
        .map(|(l, _)| l)
        .unwrap_or_default()
}

/// How a run asks the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSettings {
    /// Model calls at the start of each task (in this attempt) whose timings telemetry
    /// leaves out; they are scored as usual.
    pub warmup: usize,
    /// Generation questions per model call ([`Model::generate_batch`]); likelihood-scored
    /// questions are asked one at a time.
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

/// Items whose images are decoded together (in parallel) while the model answers the
/// previous chunk. Tasks are interleaved chunk by chunk.
pub const CHUNK_ITEMS: usize = 32;

/// The order a run asks its tasks' items in: chunk k of every task (in the order the tasks
/// were given), then chunk k + 1. `lens[t]` is task t's number of pending items; each entry
/// is `(t, range of its pending items)`. Tasks that ask about the same images in the same
/// order (FairFace age, gender and race) thus ask about each face close together in time, so
/// a model's per-image cache is still warm when the next task reaches the face.
pub fn interleave(lens: &[usize], chunk: usize) -> Vec<(usize, std::ops::Range<usize>)> {
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

/// Run the model on `tasks` into `opts.out`, leaving the first
/// [`telemetry::DEFAULT_WARMUP`] calls of each task out of the telemetry. Metrics are written
/// at the end.
pub fn run(
    handle: &mut ModelHandle,
    manifest: Manifest,
    tasks: &[Task],
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    run_with(handle, manifest, tasks, opts, RunSettings::default())
}

/// [`run`], with the first `warmup` model calls of each task (in this attempt) marked as
/// warm-up: they are scored as usual and left out of the latency summaries.
pub fn run_with_warmup(
    handle: &mut ModelHandle,
    manifest: Manifest,
    tasks: &[Task],
    opts: &RunOptions,
    warmup: usize,
) -> anyhow::Result<RunSummary> {
    let settings = RunSettings {
        warmup,
        ..RunSettings::default()
    };
    run_with(handle, manifest, tasks, opts, settings)
}

/// One task's questions still to ask in this attempt.
struct Plan<'a> {
    task: &'a Task,
    /// Questions are built up front (cheap) so that resume can skip finished rotations.
    pending: Vec<(&'a Item, anyhow::Result<Vec<Question>>)>,
}

/// What the asking loop updates as it goes.
struct Asking<'w> {
    writer: &'w mut RunWriter,
    summary: RunSummary,
    /// End of the previous model call's bookkeeping, for `timings.wall_ms`.
    mark: Instant,
    settings: RunSettings,
    seed: u64,
}

/// Per task: model calls made in this attempt (warm-up is per attempt: a resumed run is cold
/// again) and its progress bar.
struct TaskProgress {
    calls: usize,
    bar: indicatif::ProgressBar,
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
        let jobs = std::mem::take(queue);
        let started = Instant::now();
        let results = if let [one] = jobs.as_slice() {
            vec![model.generate(&one.request)]
        } else {
            let requests: Vec<Request> = jobs.iter().map(|j| j.request.clone()).collect();
            model.generate_batch(&requests)
        };
        let e2e_ms = ms(started);
        if results.len() != jobs.len() {
            anyhow::bail!(
                "model {} answered {} of a batch of {} questions",
                model.info().name,
                results.len(),
                jobs.len()
            );
        }
        let unavailable = results
            .iter()
            .any(|r| r.as_ref().is_err_and(faceval_models::model::is_unavailable));
        let mut stop = None;
        let mut members = Vec::with_capacity(jobs.len());
        for (job, result) in jobs.into_iter().zip(results) {
            match result {
                Err(e) if faceval_models::model::is_unavailable(&e) => {
                    stop.get_or_insert(e);
                }
                // Item errors next to an unavailable model are likely its doing: leave them
                // to the rerun.
                Err(_) if unavailable => {}
                r => {
                    let item = job.item;
                    members.push((finish_generated(task, job, r, e2e_ms), item));
                }
            }
        }
        self.record_call(progress, members)?;
        match stop {
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
        strict: bool,
    ) -> anyhow::Result<()> {
        let task = plan.task;
        let name = task.name();
        let mut queue: Vec<Prepared> = Vec::with_capacity(self.settings.batch_size);
        for ((item, questions), dec) in chunk.iter().zip(decoded) {
            let item: &Item = item;
            let questions = match questions {
                Ok(q) => q,
                Err(e) => {
                    self.writer
                        .append(&error_prediction(task, item, (0, 0), format!("{e:#}")))?;
                    self.summary.errors += 1;
                    progress.bar.inc(1);
                    continue;
                }
            };
            let dec = match dec {
                Ok(d) => d,
                Err(e) => {
                    if strict {
                        return Err(e);
                    }
                    for q in questions {
                        if !self.writer.is_done(name, &item.id, q.rotation, q.variant) {
                            self.writer.append(&error_prediction(
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
                let job = prepare(task, item, q, &dec, self.seed);
                if by_likelihood(task) {
                    if let Some(p) = ask_likelihood(model, &job)? {
                        self.record_call(progress, vec![(with_score(task, p), item)])?;
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

/// [`run`] with explicit [`RunSettings`]. Tasks are interleaved chunk by chunk
/// ([`interleave`]); each chunk's images are decoded on the rayon pool while the model
/// answers the previous chunk.
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
    let mut manifest = manifest;
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
    // Peaks and traffic of an earlier attempt of this run, kept when it is resumed.
    let earlier_manifest = run_folder::read_manifest(&opts.out).ok();
    let earlier = earlier_manifest.as_ref().and_then(|m| m.resources.clone());
    let earlier_traffic = earlier_manifest
        .as_ref()
        .map_or((None, None), |m| (m.http_requests, m.cache_hits));
    let monitor = crate::hardware::ResourceMonitor::start();
    let mut writer = RunWriter::open(&opts.out, &manifest, settings.retry_errors)?;
    let resumed = writer.resumed;

    // Every task's items first: reader errors are written (or stop a --strict run) before
    // any question is asked, and the interleaved order needs every task's pending count.
    let mut loaded: Vec<Vec<Item>> = Vec::with_capacity(tasks.len());
    let mut majority: Vec<Option<faceval_models::MajorityModel>> = Vec::new();
    let mut reader_errors = 0;
    for task in tasks {
        let (mut items, mut errors) = load_items(task, opts)?;
        // The majority floor is built per task, from that task's label counts (before
        // sharding, so that every shard answers the same label).
        majority.push(
            matches!(handle, ModelHandle::Majority)
                .then(|| faceval_models::MajorityModel::new(majority_label(task, &items))),
        );
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
            let mut p = base_prediction(task, &e.id, 0, 0);
            p.error = Some(format!("{}: {}", e.location, e.message));
            writer.append(&p)?;
            reader_errors += 1;
        }
        loaded.push(items);
    }
    let plans: Vec<Plan> = tasks
        .iter()
        .zip(&loaded)
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
        .collect();
    let bars = progress_bars(opts.progress);
    let mut progress: Vec<TaskProgress> = plans
        .iter()
        .map(|p| TaskProgress {
            calls: 0,
            bar: add_bar(bars.as_ref(), p.pending.len() as u64, p.task.name()),
        })
        .collect();
    // A chunk holds at least one batch.
    let chunk = CHUNK_ITEMS.max(settings.batch_size);
    let schedule = interleave(
        &plans.iter().map(|p| p.pending.len()).collect::<Vec<_>>(),
        chunk,
    );
    let to_decode: Vec<Vec<&Item>> = schedule
        .iter()
        .map(|(t, r)| {
            plans[*t].pending[r.clone()]
                .iter()
                .map(|(i, _)| *i)
                .collect()
        })
        .collect();

    let mut asking = Asking {
        writer: &mut writer,
        summary: RunSummary {
            resumed,
            errors: reader_errors,
            ..Default::default()
        },
        mark: Instant::now(),
        settings,
        seed: opts.seed,
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        // Decoding (read, decode, sha256) runs one chunk ahead of the model: the channel
        // holds at most one decoded chunk besides the one being decoded. When the asking loop
        // stops early, dropping `rx` makes the next send fail and the decoder ends.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<anyhow::Result<Decoded>>>(1);
        let to_decode = &to_decode;
        s.spawn(move || {
            for items in to_decode {
                let decoded: Vec<_> = items.par_iter().map(|i| decode(i)).collect();
                if tx.send(decoded).is_err() {
                    break;
                }
            }
        });
        for (t, range) in &schedule {
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
                opts.strict,
            )?;
            if range.end == plan.pending.len() {
                progress[*t].bar.finish_and_clear();
            }
        }
        Ok(())
    })?;
    let mut summary = asking.summary;
    summary.retried = writer.retried;
    summary.still_failing = writer.still_failing;
    writer.sync()?;
    let mut resources = monitor.finish();
    resources.weight_bytes = manifest.model.weight_bytes;
    if let Some(e) = &earlier {
        resources = resources.max(e);
    }
    let mut on_disk = run_folder::read_manifest(&opts.out)?;
    on_disk.resources = Some(resources);
    if let ModelHandle::Loaded(m) = &*handle {
        if let Some(t) = m.traffic() {
            // Totals over the attempts of the run, like the memory peaks.
            let earlier = |v: Option<u64>| v.unwrap_or(0);
            on_disk.http_requests = Some(earlier(earlier_traffic.0) + t.http_requests);
            on_disk.cache_hits = Some(earlier(earlier_traffic.1) + t.cache_hits);
        }
    }
    run_folder::write_json_atomic(&opts.out.join(run_folder::MANIFEST), &on_disk)?;
    crate::metrics::write_metrics(&opts.out)?;
    manifest.finished = Some(chrono::Utc::now().to_rfc3339());
    on_disk.finished = manifest.finished;
    run_folder::write_json_atomic(&opts.out.join(run_folder::MANIFEST), &on_disk)?;
    Ok(summary)
}

/// One progress bar per task, shown together (tasks advance in turn); `None` when quiet.
fn progress_bars(enabled: bool) -> Option<indicatif::MultiProgress> {
    // Quiet in CI logs and pipes; bars only on an interactive terminal.
    if !enabled || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    Some(indicatif::MultiProgress::new())
}

fn add_bar(
    bars: Option<&indicatif::MultiProgress>,
    len: u64,
    task: &str,
) -> indicatif::ProgressBar {
    let Some(bars) = bars else {
        return indicatif::ProgressBar::hidden();
    };
    let bar = bars.add(indicatif::ProgressBar::new(len));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len} items  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(task.to_string());
    bar
}

/// Paths of a run folder's files, for callers that only have the folder.
pub fn predictions_path(dir: &Path) -> PathBuf {
    dir.join(run_folder::PREDICTIONS)
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

    #[test]
    fn argmax_keeps_the_first_of_ties_and_refuses_non_finite_scores() {
        assert_eq!(argmax(&[-1.0, -0.5, -0.5]), Some(1));
        assert_eq!(argmax(&[-1.0, f64::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }
}
