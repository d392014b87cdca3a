//! Prediction assembly: everything between an item and a line of `predictions.jsonl` except
//! the model call itself. [`prepare`] builds a question's request (decoded images, seed) and
//! its prediction so far; [`from_generation`] and [`from_likelihood`] score the model's
//! answer into it; [`reader_error`] and [`item_error`] record items that could not be asked.

use std::sync::Arc;

use faceval_models::{Generation, Request};

use crate::error::input_error;
use crate::item::{Item, ItemError};
use crate::prompt::{seed_from, sha256_hex, Question};
use crate::run_folder::{Outcome, Prediction};
use crate::score::{score_choice, score_text, Scored};
use crate::task::{QuestionStyle, Task};

/// Decoded images of one item with their file hashes.
pub(super) struct Decoded {
    images: Vec<Arc<image::DynamicImage>>,
    shas: Vec<String>,
}

/// Read, decode and hash an item's images; a missing or undecodable file is an input error
/// naming it.
pub(super) fn decode(item: &Item) -> anyhow::Result<Decoded> {
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

/// The prediction of an item the dataset reader could not read (its rotation and variant 0).
pub(super) fn reader_error(task: &Task, e: &ItemError) -> Prediction {
    let mut p = base_prediction(task, &e.id, 0, 0);
    p.error = Some(format!("{}: {}", e.location, e.message));
    p
}

/// The prediction of a question that could not be asked (its questions or images failed).
pub(super) fn item_error(
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
pub(super) struct Prepared<'a> {
    pub item: &'a Item,
    pub question: &'a Question,
    pub prediction: Prediction,
    pub request: Request,
}

pub(super) fn prepare<'a>(
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

/// Score a question answered by its options' log-likelihoods `scored` (or record the item's
/// failure). `e2e_ms` is the model call's wall time.
pub(super) fn from_likelihood(
    job: &Prepared,
    scored: anyhow::Result<Vec<f64>>,
    e2e_ms: f64,
) -> Prediction {
    let mut p = job.prediction.clone();
    // The split stays whatever the model reported (zeros = not reported), never estimated.
    p.timings.e2e_ms = e2e_ms;
    match scored {
        Ok(lp) => {
            let best = argmax(&lp);
            let s = score_choice(job.question, best);
            if lp.len() == job.question.choices.len() {
                p.option_logprobs = Some(job.question.choices.iter().cloned().zip(lp).collect());
            }
            p.raw_output = best
                .and_then(|b| job.question.choices.get(b).cloned())
                .unwrap_or_default();
            fill(p, s)
        }
        Err(e) => {
            p.error = Some(format!("{e:#}"));
            p
        }
    }
}

/// Verification tasks: the pair's `score` next to `parsed` (`docs/verification.md`); other
/// tasks' predictions pass through unchanged.
pub(super) fn with_score(task: &Task, mut p: Prediction) -> Prediction {
    if let (QuestionStyle::Verification, [same, different]) =
        (task.spec.question.style, task.labels.values())
    {
        if p.outcome != Outcome::Error {
            p.score = crate::verification::pair_score(&p, same, different);
        }
    }
    p
}

/// Score a generated answer (or record the item's failure). `e2e_ms` is the model call's
/// wall time — the batch's, for a batched call.
pub(super) fn from_generation(
    task: &Task,
    job: Prepared,
    generated: anyhow::Result<Generation>,
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

fn fill(mut p: Prediction, s: Scored) -> Prediction {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_keeps_the_first_of_ties_and_refuses_non_finite_scores() {
        assert_eq!(argmax(&[-1.0, -0.5, -0.5]), Some(1));
        assert_eq!(argmax(&[-1.0, f64::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }
}
