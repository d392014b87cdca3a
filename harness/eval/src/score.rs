//! Scoring one answer: extract it with the task's extractor and compare it with the target.
//! Deterministic by construction: an answer that cannot be read is `Unparseable`, never a
//! guess.

use crate::extract;
use crate::item::Target;
use crate::prompt::{bin_of, Question};
use crate::run_folder::Outcome;
use crate::task::{ExtractorKind, QuestionStyle, Task};

/// The scored form of one answer, ready to go into a prediction line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scored {
    pub parsed: Option<String>,
    pub target: Option<String>,
    pub parsed_label: Option<String>,
    pub target_label: Option<String>,
    pub parsed_value: Option<f64>,
    pub target_value: Option<f64>,
    pub correct: Option<bool>,
    pub outcome: Option<Outcome>,
}

/// Score a chosen key index (from extraction or from likelihoods) against the question.
pub fn score_choice(question: &Question, chosen: Option<usize>) -> Scored {
    let key = |i: usize| question.choices.get(i).cloned();
    let text = |i: usize| question.choice_texts.get(i).cloned();
    let correct = match (chosen, question.answer) {
        (Some(c), Some(a)) => Some(c == a),
        (None, Some(_)) => Some(false),
        _ => None,
    };
    Scored {
        parsed: chosen.and_then(key),
        target: question.answer.and_then(key),
        parsed_label: chosen.and_then(text),
        target_label: question.answer.and_then(text),
        correct,
        outcome: Some(match (chosen, correct) {
            (None, _) => Outcome::Unparseable,
            (_, Some(true)) => Outcome::Correct,
            _ => Outcome::Wrong,
        }),
        ..Default::default()
    }
}

/// Extract and score a generated answer.
pub fn score_text(task: &Task, question: &Question, target: &Target, output: &str) -> Scored {
    let q = &task.spec.question;
    match q.style {
        QuestionStyle::Numeric => {
            let truth = match target {
                Target::Number(x) => Some(*x),
                _ => None,
            };
            let value = extract::extract_number(output);
            let bins = &q.bins;
            let label_of = |x: f64| q.bin_labels.get(bin_of(bins, x)).cloned();
            let correct = match (value, truth) {
                (Some(v), Some(t)) if !bins.is_empty() => Some(bin_of(bins, v) == bin_of(bins, t)),
                (None, Some(_)) if !bins.is_empty() => Some(false),
                _ => None,
            };
            Scored {
                parsed: value.map(format_number),
                target: truth.map(format_number),
                parsed_label: value.and_then(label_of),
                target_label: truth.and_then(label_of),
                parsed_value: value,
                target_value: truth,
                correct,
                outcome: Some(match (value, correct) {
                    (None, _) => Outcome::Unparseable,
                    (Some(_), Some(false)) => Outcome::Wrong,
                    // Without bins a numeric answer is neither right nor wrong; MAE scores it.
                    _ => Outcome::Correct,
                }),
            }
        }
        QuestionStyle::Open | QuestionStyle::Verification => {
            let chosen = extract::extract_label(output, &task.labels).and_then(|l| {
                question
                    .choice_texts
                    .iter()
                    .position(|t| t == &task.labels.values()[l])
            });
            score_choice(question, chosen)
        }
        QuestionStyle::MultipleChoice => {
            let chosen = match q.extractor {
                ExtractorKind::Facexbench => {
                    extract::extract_facexbench(output, &question.choice_texts)
                }
                ExtractorKind::Strict => extract::extract_strict_choice(
                    output,
                    &question.choices,
                    &question.choice_texts,
                ),
            };
            score_choice(question, chosen)
        }
    }
}

/// Numbers as Python's `str()` would print them for integers and short decimals.
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}
