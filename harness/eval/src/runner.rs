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
}

/// The task record a manifest stores.
pub fn task_record(task: &Task) -> TaskRecord {
    let s = &task.spec;
    TaskRecord {
        name: s.name.clone(),
        version: s.version.clone(),
        fingerprint: task.fingerprint.clone(),
        path: task.path.display().to_string(),
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
        let img = image::load_from_memory(&bytes)
            .map_err(|e| input_error(format!("{}: not a decodable image: {e}", path.display())))?;
        shas.push(sha256_hex(&bytes));
        images.push(Arc::new(img));
    }
    Ok(Decoded { images, shas })
}

fn base_prediction(task: &Task, item_id: &str, rotation: usize) -> Prediction {
    Prediction {
        id: item_id.to_string(),
        task: task.name().to_string(),
        rotation,
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
    }
}

fn error_prediction(task: &Task, item: &Item, rotation: usize, message: String) -> Prediction {
    let mut p = base_prediction(task, &item.id, rotation);
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

/// Ask one question and score the answer. An item's failure is recorded in the prediction;
/// only [`faceval_models::ModelUnavailable`] (the model cannot answer anything now) is an
/// `Err`, which stops the run so that rerunning resumes instead of recording every item as failed.
fn ask(
    model: &mut dyn Model,
    task: &Task,
    item: &Item,
    q: &Question,
    decoded: &Decoded,
    run_seed: u64,
) -> anyhow::Result<Prediction> {
    let mut p = base_prediction(task, &item.id, q.rotation);
    p.groups = item.groups.clone();
    p.cluster = item.cluster.clone();
    p.fields = breakdown_fields(task, item);
    p.prompt_sha256 = q.prompt_sha256.clone();
    p.image_sha256 = decoded.shas.clone();
    let spec = &task.spec.question;
    let request = Request {
        images: decoded.images.clone(),
        prompt: q.prompt.clone(),
        max_new_tokens: spec.max_new_tokens,
        stop: spec.stop.clone(),
        choices: q.choices.clone(),
        choice_texts: q.choice_texts.clone(),
        seed: seed_from(&[
            &run_seed.to_string(),
            task.name(),
            &item.id,
            &q.rotation.to_string(),
        ]),
    };
    // The runner times every model call itself, so that models which report no stage split
    // (baselines, likelihood scoring) still get an honest end-to-end time; the split stays
    // whatever the model reported (zeros = not reported), never estimated here.
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    if spec.scoring == Scoring::Likelihood && spec.style != QuestionStyle::Numeric {
        let started = Instant::now();
        let scored = model.choice_logprobs(&request);
        p.timings.e2e_ms = ms(started);
        match scored {
            Ok(Some(lp)) => {
                let best = argmax(&lp);
                let s = score_choice(q, best);
                p.raw_output = best
                    .and_then(|b| q.choices.get(b).cloned())
                    .unwrap_or_default();
                return Ok(fill(p, s));
            }
            Ok(None) => {} // the model cannot score: generate and extract instead
            Err(e) if faceval_models::model::is_unavailable(&e) => return Err(e),
            Err(e) => {
                p.error = Some(format!("{e:#}"));
                return Ok(p);
            }
        }
    }
    let started = Instant::now();
    let generated = model.generate(&request);
    let e2e_ms = ms(started);
    match generated {
        Ok(g) => {
            let s = score_text(task, q, &item.target, &g.text);
            p.raw_output = g.text;
            p.timings = g.timings;
            p.timings.e2e_ms = e2e_ms;
            p.prompt_tokens = g.prompt_tokens;
            p.output_tokens = g.token_ids.len();
            Ok(fill(p, s))
        }
        Err(e) if faceval_models::model::is_unavailable(&e) => Err(e),
        Err(e) => {
            p.timings.e2e_ms = e2e_ms;
            p.error = Some(format!("{e:#}"));
            Ok(p)
        }
    }
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

/// Run the model on `tasks` into `opts.out`, leaving the first
/// [`telemetry::DEFAULT_WARMUP`] calls of each task out of the telemetry. Metrics are written
/// at the end.
pub fn run(
    handle: &mut ModelHandle,
    manifest: Manifest,
    tasks: &[Task],
    opts: &RunOptions,
) -> anyhow::Result<RunSummary> {
    run_with_warmup(handle, manifest, tasks, opts, telemetry::DEFAULT_WARMUP)
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
    let mut manifest = manifest;
    manifest.tasks = tasks.iter().map(task_record).collect();
    manifest.shard = opts.shard.clone();
    manifest.limit = opts.limit;
    manifest.seed = opts.seed;
    manifest.warmup = Some(warmup);
    manifest.batch_size = Some(telemetry::BATCH_SIZE);
    if manifest.hardware.is_none() {
        manifest.hardware = Some(telemetry::hardware());
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
    // Peaks of an earlier attempt of this run, kept when it is resumed.
    let earlier = run_folder::read_manifest(&opts.out)
        .ok()
        .and_then(|m| m.resources);
    let monitor = telemetry::ResourceMonitor::start();
    let mut writer = RunWriter::open(&opts.out, &manifest)?;
    let mut summary = RunSummary {
        resumed: writer.resumed,
        ..Default::default()
    };
    for task in tasks {
        let (mut items, mut errors) = load_items(task, opts)?;
        let mut majority;
        let model: &mut dyn Model = match handle {
            ModelHandle::Loaded(m) => m.as_mut(),
            ModelHandle::Majority => {
                majority = faceval_models::MajorityModel::new(majority_label(task, &items));
                &mut majority
            }
        };
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
            if writer.is_done(task.name(), &e.id, 0) {
                continue;
            }
            let mut p = base_prediction(task, &e.id, 0);
            p.error = Some(format!("{}: {}", e.location, e.message));
            writer.append(&p)?;
            summary.errors += 1;
        }
        // Questions are built up front (cheap) so that resume can skip finished rotations.
        let pending: Vec<(&Item, anyhow::Result<Vec<Question>>)> = items
            .iter()
            .map(|i| (i, questions_for(task, i)))
            .filter(|(i, qs)| match qs {
                Ok(qs) => qs
                    .iter()
                    .any(|q| !writer.is_done(task.name(), &i.id, q.rotation)),
                Err(_) => !writer.is_done(task.name(), &i.id, 0),
            })
            .collect();
        let bar = progress_bar(opts.progress, pending.len() as u64, task.name());
        // Calls made for this task in this attempt (warm-up is per attempt: a resumed run is
        // cold again), and the end of the previous call, for `timings.wall_ms`.
        let mut calls = 0usize;
        let mut mark = Instant::now();
        // Decode a chunk of items in parallel, then ask them in order.
        for chunk in pending.chunks(32) {
            let decoded: Vec<anyhow::Result<Decoded>> =
                chunk.par_iter().map(|(i, _)| decode(i)).collect();
            for ((item, questions), dec) in chunk.iter().zip(decoded) {
                let item: &Item = item;
                let questions = match questions {
                    Ok(q) => q,
                    Err(e) => {
                        writer.append(&error_prediction(task, item, 0, format!("{e:#}")))?;
                        summary.errors += 1;
                        continue;
                    }
                };
                let dec = match dec {
                    Ok(d) => d,
                    Err(e) => {
                        if opts.strict {
                            return Err(e);
                        }
                        for q in questions {
                            if !writer.is_done(task.name(), &item.id, q.rotation) {
                                writer.append(&error_prediction(
                                    task,
                                    item,
                                    q.rotation,
                                    format!("{e:#}"),
                                ))?;
                                summary.errors += 1;
                            }
                        }
                        continue;
                    }
                };
                for q in questions {
                    if writer.is_done(task.name(), &item.id, q.rotation) {
                        continue;
                    }
                    let mut p = ask(model, task, item, q, &dec, opts.seed)?;
                    p.timings.warmup = calls < warmup;
                    calls += 1;
                    p.timings.wall_ms = mark.elapsed().as_secs_f64() * 1e3;
                    mark = Instant::now();
                    if let Target::Number(x) = item.target {
                        p.target_value.get_or_insert(x);
                    }
                    if p.outcome == Outcome::Error {
                        summary.errors += 1;
                    }
                    writer.append(&p)?;
                    summary.asked += 1;
                }
                bar.inc(1);
            }
            writer.sync()?;
        }
        bar.finish_and_clear();
    }
    writer.sync()?;
    let mut resources = monitor.finish();
    resources.weight_bytes = manifest.model.weight_bytes;
    if let Some(e) = &earlier {
        resources = resources.max(e);
    }
    let mut on_disk = run_folder::read_manifest(&opts.out)?;
    on_disk.resources = Some(resources);
    run_folder::write_json_atomic(&opts.out.join(run_folder::MANIFEST), &on_disk)?;
    crate::metrics::write_metrics(&opts.out)?;
    manifest.finished = Some(chrono::Utc::now().to_rfc3339());
    on_disk.finished = manifest.finished;
    run_folder::write_json_atomic(&opts.out.join(run_folder::MANIFEST), &on_disk)?;
    Ok(summary)
}

fn progress_bar(enabled: bool, len: u64, task: &str) -> indicatif::ProgressBar {
    // Quiet in CI logs and pipes; a bar only on an interactive terminal.
    if !enabled || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
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
