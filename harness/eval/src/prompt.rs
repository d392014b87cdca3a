//! Turning an item into the exact question every model sees: options (built, shuffled and
//! rotated deterministically), the rendered user text and its sha256.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::item::{Item, Target};
use crate::task::{QuestionStyle, Task};

/// Letters used for options, in order.
pub const LETTERS: &[&str] = &[
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S",
    "T", "U", "V", "W", "X", "Y", "Z",
];

/// One item, ready to put to a model.
#[derive(Debug, Clone)]
pub struct Question {
    /// The rendered user text.
    pub prompt: String,
    pub prompt_sha256: String,
    /// Answer keys: letters for multiple choice, label names for open questions, empty for numeric.
    pub choices: Vec<String>,
    /// Text behind each key.
    pub choice_texts: Vec<String>,
    /// Index of the right key, for multiple-choice and open questions.
    pub answer: Option<usize>,
    /// 0 unless the task is circular; then 0..choices.len().
    pub rotation: usize,
    /// 0 (`question.text`) unless the task lists `variants`; then 0..=variants.len().
    pub variant: usize,
}

/// A stable 64-bit seed from parts (sha256, so it does not depend on Rust's hasher).
pub fn seed_from(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The label index a target stands for, mapping numbers onto bins where the task has them.
pub fn target_label_index(task: &Task, target: &Target) -> Option<usize> {
    match target {
        Target::Label(l) => task.labels.index_of(l),
        Target::Number(x) if !task.spec.question.bins.is_empty() => {
            Some(bin_of(&task.spec.question.bins, *x))
        }
        _ => None,
    }
}

/// Index of the bin `x` falls in: bin i holds edges[i-1] <= x < edges[i].
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.iter().take_while(|e| x >= **e).count()
}

#[derive(Serialize)]
struct OptionView<'a> {
    letter: &'a str,
    text: &'a str,
}

/// The phrasings of a task's question: `question.text`, then each of `question.variants`
/// (just `[text]` for a task without variants).
pub fn phrasings(task: &Task) -> Vec<&str> {
    let q = &task.spec.question;
    std::iter::once(q.text.as_str())
        .chain(q.variants.iter().flatten().map(String::as_str))
        .collect()
}

/// Build the questions for one item: one per rotation when the task is circular (else one),
/// for each phrasing when it lists `variants` (variant-major: all rotations of variant 0,
/// then of variant 1, ...). Options, their order and rotations are the same in every
/// variant; only the `question` text differs.
pub fn questions_for(task: &Task, item: &Item) -> anyhow::Result<Vec<Question>> {
    let q = &task.spec.question;
    let item_seed = seed_from(&[&task.spec.name, &item.id, &q.seed.to_string()]);
    // Option texts and the index of the right one, before rotation.
    let (texts, answer): (Vec<String>, Option<usize>) = match (q.style, &item.target) {
        (QuestionStyle::Numeric, _) => (vec![], None),
        (_, Target::Choice(i)) => {
            anyhow::ensure!(
                *i < item.options.len(),
                "answer index {i} is outside the item's {} options",
                item.options.len()
            );
            let mut order: Vec<usize> = (0..item.options.len()).collect();
            if q.shuffle {
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(item_seed));
            }
            let texts = order.iter().map(|&k| item.options[k].clone()).collect();
            (texts, order.iter().position(|&k| k == *i))
        }
        (style, target) => {
            let labels = task.labels.values();
            let Some(right) = target_label_index(task, target) else {
                anyhow::bail!("target {target:?} is not in the task's label set");
            };
            let mut idx: Vec<usize> = (0..labels.len()).collect();
            if style == QuestionStyle::MultipleChoice
                && q.num_options > 0
                && q.num_options < labels.len()
            {
                let mut rng = ChaCha8Rng::seed_from_u64(item_seed ^ 0x9e37_79b9_7f4a_7c15);
                let mut others: Vec<usize> = idx.iter().copied().filter(|&k| k != right).collect();
                others.shuffle(&mut rng);
                idx = others.into_iter().take(q.num_options - 1).collect();
                idx.push(right);
                idx.sort_unstable();
            }
            if q.shuffle && style == QuestionStyle::MultipleChoice {
                idx.shuffle(&mut ChaCha8Rng::seed_from_u64(item_seed));
            }
            let texts = idx.iter().map(|&k| labels[k].clone()).collect();
            (texts, idx.iter().position(|&k| k == right))
        }
    };
    let rotations = if q.circular && q.style == QuestionStyle::MultipleChoice {
        texts.len().max(1)
    } else {
        1
    };
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("prompt", &q.template)?;
    let template = env.get_template("prompt")?;
    // Items with their own question (FaceXBench) have no variants: validation refuses them.
    let texts_by_variant: Vec<String> = match &item.question {
        Some(own) => vec![own.clone()],
        None => phrasings(task).into_iter().map(str::to_string).collect(),
    };
    let mut out = Vec::with_capacity(rotations * texts_by_variant.len());
    for (variant, question_text) in texts_by_variant.iter().enumerate() {
        for r in 0..rotations {
            let n = texts.len();
            let rotated: Vec<String> = (0..n).map(|k| texts[(k + r) % n].clone()).collect();
            let rotated_answer = answer.map(|a| (a + n - r) % n);
            let (choices, choice_texts) = match q.style {
                QuestionStyle::MultipleChoice => {
                    anyhow::ensure!(
                        n <= LETTERS.len(),
                        "{n} options are more than the 26 letters"
                    );
                    (
                        LETTERS[..n].iter().map(|s| s.to_string()).collect(),
                        rotated.clone(),
                    )
                }
                QuestionStyle::Open | QuestionStyle::Verification => {
                    (rotated.clone(), rotated.clone())
                }
                QuestionStyle::Numeric => (vec![], vec![]),
            };
            let options: Vec<OptionView> = if q.style == QuestionStyle::MultipleChoice {
                choices
                    .iter()
                    .zip(&rotated)
                    .map(|(l, t)| OptionView { letter: l, text: t })
                    .collect()
            } else {
                vec![]
            };
            let fields: BTreeMap<&str, &str> = item
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let prompt = template
                .render(minijinja::context! {
                    question => question_text,
                    options => options,
                    labels => task.labels.values(),
                    fields => fields,
                })
                .map_err(|e| {
                    anyhow::anyhow!("rendering the prompt of task {}: {e}", task.name())
                })?;
            out.push(Question {
                prompt_sha256: sha256_hex(prompt.as_bytes()),
                prompt,
                choices,
                choice_texts,
                answer: rotated_answer,
                rotation: r,
                variant,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn task(extra: &str) -> Task {
        let src = format!(
            r#"
name = "t"
[dataset]
reader = "manifest"
path = "m.csv"
[labels]
field = "expression"
values = ["anger", "fear", "happiness", "neutral", "sadness"]
[question]
style = "multiple_choice"
template = "{{{{ question }}}}\n{{% for o in options %}}({{{{ o.letter }}}}) {{{{ o.text }}}}\n{{% endfor %}}"
text = "Which expression?"
{extra}
"#
        );
        Task::parse(&src, Path::new("t.toml")).unwrap()
    }

    fn item(label: &str) -> Item {
        Item {
            id: "img1".into(),
            images: vec![],
            question: None,
            options: vec![],
            target: Target::Label(label.into()),
            groups: Default::default(),
            cluster: None,
            fields: Default::default(),
        }
    }

    #[test]
    fn renders_all_labels_in_order() {
        let qs = questions_for(&task(""), &item("fear")).unwrap();
        assert_eq!(qs.len(), 1);
        assert_eq!(
            qs[0].prompt,
            "Which expression?\n(A) anger\n(B) fear\n(C) happiness\n(D) neutral\n(E) sadness\n"
        );
        assert_eq!(qs[0].answer, Some(1));
        assert_eq!(qs[0].prompt_sha256, sha256_hex(qs[0].prompt.as_bytes()));
    }

    #[test]
    fn subsets_and_shuffles_deterministically_keeping_the_answer() {
        let t = task("num_options = 3\nshuffle = true\nseed = 7");
        let a = questions_for(&t, &item("sadness")).unwrap();
        let b = questions_for(&t, &item("sadness")).unwrap();
        assert_eq!(a[0].prompt, b[0].prompt);
        assert_eq!(a[0].choice_texts.len(), 3);
        assert_eq!(a[0].choice_texts[a[0].answer.unwrap()], "sadness");
    }

    #[test]
    fn circular_rotates_every_option_through_every_letter() {
        let qs = questions_for(&task("circular = true"), &item("fear")).unwrap();
        assert_eq!(qs.len(), 5);
        let answers: Vec<usize> = qs.iter().map(|q| q.answer.unwrap()).collect();
        assert_eq!(answers, vec![1, 0, 4, 3, 2]);
        for q in &qs {
            assert_eq!(q.choice_texts[q.answer.unwrap()], "fear");
        }
    }

    #[test]
    fn variants_share_options_and_differ_only_in_the_question() {
        let t = task("circular = true\nvariants = [\"Name the expression.\"]");
        let qs = questions_for(&t, &item("fear")).unwrap();
        assert_eq!(qs.len(), 10);
        let (v0, v1): (Vec<&Question>, Vec<&Question>) = qs.iter().partition(|q| q.variant == 0);
        assert_eq!((v0.len(), v1.len()), (5, 5));
        for (a, b) in v0.iter().zip(&v1) {
            assert_eq!(
                (a.rotation, &a.choice_texts, a.answer),
                (b.rotation, &b.choice_texts, b.answer)
            );
            assert!(a.prompt.starts_with("Which expression?\n"));
            assert!(b.prompt.starts_with("Name the expression.\n"));
            assert_eq!(a.prompt[17..], b.prompt[20..]);
            assert_ne!(a.prompt_sha256, b.prompt_sha256);
        }
        // Variant 0 is exactly the prompt of the task without variants.
        let plain = questions_for(&task("circular = true"), &item("fear")).unwrap();
        assert_eq!(plain[2].prompt_sha256, v0[2].prompt_sha256);
    }

    #[test]
    fn bins_map_numbers() {
        assert_eq!(bin_of(&[-15.0, 15.0], -40.0), 0);
        assert_eq!(bin_of(&[-15.0, 15.0], -15.0), 1);
        assert_eq!(bin_of(&[-15.0, 15.0], 20.0), 2);
    }
}
