//! Matching the two runs: the shared lines of a task, aligned, as questions paired across the
//! runs, with the errors each run made.

use super::*;

/// The shared, comparable part of one task.
pub(super) struct Shared<'a> {
    pub(super) record: &'a TaskRecord,
    /// Shared lines, aligned: `base[i]` and `cand[i]` have the same key.
    pub(super) base: Vec<&'a Prediction>,
    pub(super) cand: Vec<&'a Prediction>,
    pub(super) baseline_only: usize,
    pub(super) candidate_only: usize,
    /// Baseline lines with an answer (not `error`) that the candidate lacks, in file order.
    pub(super) missing: Vec<&'a Prediction>,
}

pub(super) fn match_task<'a>(
    record: &'a TaskRecord,
    cand_record: &TaskRecord,
    base: &[&'a Prediction],
    cand: &[&'a Prediction],
    dirs: (&Path, &Path),
) -> Result<Shared<'a>> {
    if !same_task(record, cand_record) {
        return Err(input_error(format!(
            "task {}: the runs used different task definitions (baseline {} has version {}, fingerprint {}…; \
             candidate {} has version {}, fingerprint {}…), so their scores cannot be compared. \
             Rerun the baseline with the current task",
            record.name,
            dirs.0.display(),
            record.version,
            record.short_fingerprint(),
            dirs.1.display(),
            cand_record.version,
            cand_record.short_fingerprint()
        )));
    }
    // The variant is part of the key: a phrasing is only ever paired with the same phrasing
    // (`LoadedRun::by_task` hands the gate variant 0 only; the key keeps that true if not).
    let cand_by_key: HashMap<(&str, usize, usize), &Prediction> = cand
        .iter()
        .map(|p| ((p.id.as_str(), p.rotation, p.variant), *p))
        .collect();
    let mut shared_base = Vec::new();
    let mut shared_cand = Vec::new();
    let mut missing = Vec::new();
    let mut prompt_mismatch = Vec::new();
    for b in base {
        let Some(p) = cand_by_key.get(&(b.id.as_str(), b.rotation, b.variant)) else {
            if b.outcome != Outcome::Error {
                missing.push(*b);
            }
            continue;
        };
        if !b.prompt_sha256.is_empty()
            && !p.prompt_sha256.is_empty()
            && b.prompt_sha256 != p.prompt_sha256
        {
            prompt_mismatch.push(p.id.as_str());
        }
        shared_base.push(*b);
        shared_cand.push(*p);
    }
    if !prompt_mismatch.is_empty() {
        return Err(input_error(format!(
            "task {}: {} shared questions were asked with different prompts (prompt_sha256 differs), e.g. {}; \
             the runs are not comparable",
            record.name,
            prompt_mismatch.len(),
            prompt_mismatch
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // A candidate with no line of the task at all is incomplete (reported as such), not
    // incomparable; ids that never match are.
    if shared_base.is_empty() && !cand.is_empty() {
        return Err(input_error(format!(
            "task {}: the runs share no question (baseline {} has {} predictions, candidate {} has {}); \
             item ids must match to compare",
            record.name,
            dirs.0.display(),
            base.len(),
            dirs.1.display(),
            cand.len()
        )));
    }
    Ok(Shared {
        record,
        baseline_only: base.len() - shared_base.len(),
        candidate_only: cand.len() - shared_cand.len(),
        base: shared_base,
        cand: shared_cand,
        missing,
    })
}

/// How one question ended in one run (a circular question: over its shared rotations, an
/// error when any is one, right only when all are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Right,
    Wrong,
    Error,
}

impl Answer {
    fn of(p: &Prediction) -> Answer {
        match (p.outcome, p.correct) {
            (Outcome::Error, _) => Answer::Error,
            (_, Some(true)) => Answer::Right,
            _ => Answer::Wrong,
        }
    }

    fn and(self, other: Answer) -> Answer {
        match (self, other) {
            (Answer::Error, _) | (_, Answer::Error) => Answer::Error,
            (Answer::Right, Answer::Right) => Answer::Right,
            _ => Answer::Wrong,
        }
    }
}

/// One shared question as both runs ended it; `first` is the baseline's first line of it
/// (its groups are the question's).
pub(super) struct Unit<'a> {
    pub(super) base: Answer,
    pub(super) cand: Answer,
    pub(super) first: &'a Prediction,
}

/// The shared lines of a task as questions: one per line, or one per id for circular tasks.
pub(super) fn units<'a>(s: &Shared<'a>) -> Vec<Unit<'a>> {
    let lines = s.base.iter().zip(&s.cand).map(|(b, c)| Unit {
        base: Answer::of(b),
        cand: Answer::of(c),
        first: b,
    });
    if !s.record.circular {
        return lines.collect();
    }
    let mut by_id: BTreeMap<&str, Unit<'a>> = BTreeMap::new();
    for u in lines {
        match by_id.entry(u.first.id.as_str()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(u);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let seen = e.get_mut();
                seen.base = seen.base.and(u.base);
                seen.cand = seen.cand.and(u.cand);
                if u.first.rotation < seen.first.rotation {
                    seen.first = u.first;
                }
            }
        }
    }
    by_id.into_values().collect()
}

/// Paired correctness `(baseline, candidate, question)` and the error counts of one task.
pub(super) struct Pairing<'a> {
    pub(super) pairs: Vec<(bool, bool, &'a Prediction)>,
    pub(super) new_errors: usize,
    pub(super) new_errors_baseline_right: usize,
    pub(super) errors_in_both: usize,
    pub(super) baseline_errors: usize,
}

/// Errors are outcomes: a candidate error where the baseline answered is a wrong answer;
/// questions the baseline could not answer cannot be paired and are counted instead.
pub(super) fn pair_units<'a>(units: &[Unit<'a>]) -> Pairing<'a> {
    let mut out = Pairing {
        pairs: Vec::with_capacity(units.len()),
        new_errors: 0,
        new_errors_baseline_right: 0,
        errors_in_both: 0,
        baseline_errors: 0,
    };
    for u in units {
        match (u.base, u.cand) {
            (Answer::Error, Answer::Error) => out.errors_in_both += 1,
            (Answer::Error, _) => out.baseline_errors += 1,
            (b, c) => {
                if c == Answer::Error {
                    out.new_errors += 1;
                    if b == Answer::Right {
                        out.new_errors_baseline_right += 1;
                    }
                }
                out.pairs
                    .push((b == Answer::Right, c == Answer::Right, u.first));
            }
        }
    }
    out
}
