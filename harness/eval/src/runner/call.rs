//! The model calls: one question scored by its options' likelihood
//! ([`ask_likelihood`]), or a batch of generation questions in one call ([`ask_generation`]).
//! The runner times every call itself, so that models which report no stage split
//! (baselines, likelihood scoring) still get an honest end-to-end time. A
//! [`faceval_models::ModelUnavailable`] (the model cannot answer anything now) stops the run,
//! so that rerunning resumes instead of recording every item as failed.

use std::time::Instant;

use faceval_models::model::is_unavailable;
use faceval_models::{Model, Request};

use super::assemble::{self, Prepared};
use crate::item::Item;
use crate::run_folder::Prediction;
use crate::task::{QuestionStyle, Scoring, Task};

/// Milliseconds since `t`.
pub(super) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Whether a task's questions are answered by option likelihood (else by generation).
pub(super) fn by_likelihood(task: &Task) -> bool {
    let spec = &task.spec.question;
    spec.scoring == Scoring::Likelihood && spec.style != QuestionStyle::Numeric
}

/// Score one question by its options' likelihood: the prediction (scored, or failed as an item
/// error), or `None` when the model cannot score (generate and extract instead). Only a
/// [`faceval_models::ModelUnavailable`] is an `Err`.
pub(super) fn ask_likelihood(
    model: &mut dyn Model,
    job: &Prepared,
) -> anyhow::Result<Option<Prediction>> {
    let started = Instant::now();
    let scored = model.choice_logprobs(&job.request);
    let e2e_ms = ms(started);
    match scored {
        Ok(Some(lp)) => Ok(Some(assemble::from_likelihood(job, Ok(lp), e2e_ms))),
        Ok(None) => Ok(None),
        Err(e) if is_unavailable(&e) => Err(e),
        Err(e) => Ok(Some(assemble::from_likelihood(job, Err(e), e2e_ms))),
    }
}

/// What one generation call answered.
pub(super) struct Answered<'a> {
    /// The predictions to write, with their items.
    pub members: Vec<(Prediction, &'a Item)>,
    /// Set when the model became unavailable during the call: the run stops after writing
    /// `members`, and the rerun asks the rest.
    pub stop: Option<anyhow::Error>,
}

/// Ask the model `jobs` (generation questions of one task) in one call: `generate` for one,
/// `generate_batch` for more. A model that answers a different number of questions than it
/// was asked is an error.
pub(super) fn ask_generation<'a>(
    model: &mut dyn Model,
    task: &Task,
    jobs: Vec<Prepared<'a>>,
) -> anyhow::Result<Answered<'a>> {
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
        .any(|r| r.as_ref().is_err_and(is_unavailable));
    let mut answered = Answered {
        members: Vec::with_capacity(jobs.len()),
        stop: None,
    };
    for (job, result) in jobs.into_iter().zip(results) {
        match result {
            Err(e) if is_unavailable(&e) => {
                answered.stop.get_or_insert(e);
            }
            // Item errors next to an unavailable model are likely its doing: leave them to
            // the rerun.
            Err(_) if unavailable => {}
            r => {
                let item = job.item;
                answered
                    .members
                    .push((assemble::from_generation(task, job, r, e2e_ms), item));
            }
        }
    }
    Ok(answered)
}
