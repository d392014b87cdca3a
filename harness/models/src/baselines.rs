//! The two floors every leaderboard shows: a seeded uniform random choice (FaceXBench's
//! "Random Choice" row) and the majority label of a reference split, fitted here by
//! [`MajorityModel::fit`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{Generation, Model, ModelInfo, Request};

/// Answers one of `request.choices` uniformly at random, seeded by the request's seed.
#[derive(Debug, Clone, Default)]
pub struct RandomModel;

impl Model for RandomModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "random".into(),
            kind: "baseline".into(),
            device: "cpu".into(),
            dtype: "none".into(),
            ..Default::default()
        }
    }

    fn generate(&mut self, request: &Request) -> anyhow::Result<Generation> {
        anyhow::ensure!(
            !request.choices.is_empty(),
            "the random baseline needs the item's choices, and this item has none (numeric tasks have no random floor)"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
        let pick = rng.gen_range(0..request.choices.len());
        Ok(Generation {
            text: request.choices[pick].clone(),
            ..Default::default()
        })
    }
}

/// Always answers the most frequent label of a reference split. When that label is one of
/// the item's keys (an option letter) it is answered as is; when it is an option's text, the
/// answer is that option's key; otherwise it is the label itself.
#[derive(Debug, Clone)]
pub struct MajorityModel {
    label: String,
}

impl MajorityModel {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// One answer of a reference split, as the majority floor counts it: a label (or option
/// letter) or a number.
#[derive(Debug, Clone, PartialEq)]
pub enum Vote {
    Label(String),
    Number(f64),
}

impl MajorityModel {
    /// Fit the floor to a reference split's answers: the median number when any vote is a
    /// number (the upper median), else the most frequent label. Ties go to the label with the
    /// lowest `rank` (the order the task lists its labels in), then to the alphabetically
    /// first, so the choice is deterministic. `None` when there are no votes.
    pub fn fit(
        votes: impl IntoIterator<Item = Vote>,
        rank: impl Fn(&str) -> usize,
    ) -> Option<Vote> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        let mut numbers = Vec::new();
        for vote in votes {
            match vote {
                Vote::Label(l) => *counts.entry(l).or_default() += 1,
                Vote::Number(x) => numbers.push(x),
            }
        }
        if !numbers.is_empty() {
            numbers.sort_by(f64::total_cmp);
            return Some(Vote::Number(numbers[numbers.len() / 2]));
        }
        counts
            .into_iter()
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| rank(&b.0).cmp(&rank(&a.0)))
                    .then_with(|| b.0.cmp(&a.0))
            })
            .map(|(l, _)| Vote::Label(l))
    }
}

impl Model for MajorityModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "majority".into(),
            kind: "baseline".into(),
            device: "cpu".into(),
            dtype: "none".into(),
            ..Default::default()
        }
    }

    fn generate(&mut self, request: &Request) -> anyhow::Result<Generation> {
        if request.choices.iter().any(|c| c == &self.label) {
            return Ok(Generation {
                text: self.label.clone(),
                ..Default::default()
            });
        }
        let wanted = self.label.trim().to_lowercase();
        let text = request
            .choice_texts
            .iter()
            .position(|t| t.trim().to_lowercase() == wanted)
            .map(|i| request.choices[i].clone())
            .unwrap_or_else(|| self.label.clone());
        Ok(Generation {
            text,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seed: u64) -> Request {
        Request {
            images: vec![],
            prompt: "q".into(),
            max_new_tokens: 8,
            stop: vec![],
            choices: vec!["A".into(), "B".into(), "C".into(), "D".into()],
            choice_texts: vec![
                "20-29".into(),
                "30-39".into(),
                "40-49".into(),
                "50-59".into(),
            ],
            seed,
        }
    }

    #[test]
    fn random_is_seeded_and_covers_every_choice() {
        let mut m = RandomModel;
        let a: Vec<String> = (0..400)
            .map(|s| m.generate(&request(s)).unwrap().text)
            .collect();
        let b: Vec<String> = (0..400)
            .map(|s| m.generate(&request(s)).unwrap().text)
            .collect();
        assert_eq!(a, b);
        for letter in ["A", "B", "C", "D"] {
            let n = a.iter().filter(|t| *t == letter).count();
            assert!((60..140).contains(&n), "{letter} drawn {n} times of 400");
        }
    }

    #[test]
    fn majority_fit_takes_the_most_frequent_label_ties_by_rank_and_the_upper_median() {
        let label = |l: &str| Vote::Label(l.into());
        let rank = |l: &str| {
            ["b", "a", "c"]
                .iter()
                .position(|x| *x == l)
                .unwrap_or(usize::MAX)
        };
        let votes = vec![label("a"), label("c"), label("a"), label("c")];
        // a and c tie; the task lists a first.
        assert_eq!(MajorityModel::fit(votes, rank), Some(label("a")));
        // Labels the task does not list lose ties to listed ones, then go alphabetically.
        assert_eq!(
            MajorityModel::fit(vec![label("z"), label("y")], rank),
            Some(label("y"))
        );
        let numbers = [3.0, 1.0, 2.0, 4.0].map(Vote::Number);
        assert_eq!(MajorityModel::fit(numbers, rank), Some(Vote::Number(3.0)));
        assert_eq!(MajorityModel::fit(vec![], rank), None);
    }

    #[test]
    fn majority_maps_label_to_option_key() {
        let mut m = MajorityModel::new("30-39");
        assert_eq!(m.generate(&request(0)).unwrap().text, "B");
        let mut m = MajorityModel::new("more than 70");
        assert_eq!(m.generate(&request(0)).unwrap().text, "more than 70");
    }
}
