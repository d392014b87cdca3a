//! The two floors every leaderboard shows: a seeded uniform random choice (FaceXBench's
//! "Random Choice" row) and the majority label of a reference split.

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
    fn majority_maps_label_to_option_key() {
        let mut m = MajorityModel::new("30-39");
        assert_eq!(m.generate(&request(0)).unwrap().text, "B");
        let mut m = MajorityModel::new("more than 70");
        assert_eq!(m.generate(&request(0)).unwrap().text, "more than 70");
    }
}
