//! A small FaceXBench-format benchmark folder built from the synthetic faces, so that the demo
//! exercises the real FaceXBench path — reader, prompt settings, extractor, category
//! breakdowns — with the shipped `facexbench*.toml` tasks unchanged but for their path.
//!
//! The layout mirrors the real one: `benchmark/<file>.json` with FaceXBench's keys, image
//! paths relative to the benchmark folder.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use super::synth::{SynthRow, AGE_BINS, EXPRESSIONS, GENDERS, RACES};
use crate::prompt::{seed_from, LETTERS};

const POSTPEND: &str =
    "Please answer the question and provide only the correct option letter, e.g., A, B, C, D.";
const YAW_BINS: [(&str, f64, f64); 4] = [
    ("-60 to -30 degrees", -60.0, -30.0),
    ("-30 to 0 degrees", -30.0, 0.0),
    ("0 to 30 degrees", 0.0, 30.0),
    ("30 to 60 degrees", 30.0, 60.1),
];

struct SubTask {
    file: &'static str,
    category: &'static str,
    subcategory: &'static str,
    prepend: &'static str,
    question: &'static str,
    /// The right answer and every candidate answer for a face.
    answer: fn(&SynthRow) -> (String, Vec<String>),
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

const SUBTASKS: &[SubTask] = &[
    SubTask {
        file: "synthetic_single_mcq_age",
        category: "bias_fairness",
        subcategory: "age",
        prepend: "Age estimation involves predicting the age group of a person from their face.",
        question: "Estimate the age group of the person in this image.",
        answer: |r| (r.spec.age_bin().to_string(), strings(&AGE_BINS)),
    },
    SubTask {
        file: "synthetic_single_mcq_gender",
        category: "bias_fairness",
        subcategory: "gender",
        prepend: "Gender prediction involves predicting the perceived gender of a person from their face.",
        question: "What is the gender of the person in this image?",
        answer: |r| (GENDERS[r.spec.gender].to_string(), strings(&GENDERS)),
    },
    SubTask {
        file: "synthetic_single_mcq_race",
        category: "bias_fairness",
        subcategory: "race",
        prepend: "Race estimation involves predicting the race group of a person from their face.",
        question: "What is the race of the person in this image?",
        answer: |r| (RACES[r.spec.race].to_string(), strings(&RACES)),
    },
    SubTask {
        file: "synthetic_single_mcq_expression",
        category: "attributes_expression",
        subcategory: "expression",
        prepend: "Expression recognition involves identifying the emotion a face shows.",
        question: "What is the facial expression of the person in this image?",
        answer: |r| (r.spec.expression.name().to_string(), strings(&EXPRESSIONS)),
    },
    SubTask {
        file: "synthetic_single_mcq_headpose",
        category: "face_localization",
        subcategory: "headpose",
        prepend: "Head pose estimation involves predicting the orientation of the head.",
        question: "What is the approximate yaw angle of the head in this image?",
        answer: |r| {
            let bin = YAW_BINS.iter().find(|(_, lo, hi)| r.spec.yaw >= *lo && r.spec.yaw < *hi).unwrap_or(&YAW_BINS[0]);
            (bin.0.to_string(), YAW_BINS.iter().map(|b| b.0.to_string()).collect())
        },
    },
    SubTask {
        file: "synthetic_single_mcq_deepfakes",
        category: "fas_deepfakes",
        subcategory: "deepfakes",
        prepend: "Deepfake detection involves telling real face images from manipulated ones.",
        question: "Is this face image real or manipulated?",
        answer: |r| {
            let truth = if r.spec.manipulation.is_some() { "Manipulated" } else { "Real" };
            (truth.to_string(), strings(&["Real", "Manipulated"]))
        },
    },
];

/// Write `benchmark/*.json` under `root` for the faces in `rows` (whose images live in
/// `images_dir`). Returns the benchmark folder.
pub fn write(
    root: &Path,
    images_dir: &Path,
    rows: &[SynthRow],
    seed: u64,
) -> anyhow::Result<PathBuf> {
    let bench = root.join("benchmark");
    std::fs::create_dir_all(&bench)?;
    for sub in SUBTASKS {
        let mut questions = Map::new();
        for (i, row) in rows.iter().enumerate() {
            let (truth, all) = (sub.answer)(row);
            let mut rng = ChaCha8Rng::seed_from_u64(seed_from(&[
                sub.file,
                &i.to_string(),
                &seed.to_string(),
            ]));
            let mut options: Vec<String> = all.into_iter().filter(|o| *o != truth).collect();
            options.shuffle(&mut rng);
            options.truncate(3);
            options.push(truth.clone());
            options.shuffle(&mut rng);
            let right = options.iter().position(|o| *o == truth).unwrap_or(0);
            let image = relative(
                &bench,
                &images_dir.join(Path::new(&row.image).file_name().unwrap_or_default()),
            );
            questions.insert(
                (i + 1).to_string(),
                json!({
                    "image_paths": [image],
                    "question_text": sub.question,
                    "options": options,
                    "correct_answer_option": LETTERS[right],
                    "answer": truth,
                }),
            );
        }
        let doc = json!({
            "category": sub.category,
            "sub-category": sub.subcategory,
            "dataset": "faceval-synthetic",
            "question_type": "MCQ",
            "num_images": "single",
            "prepend_text": sub.prepend,
            "postpend_text": POSTPEND,
            "questions": Value::Object(questions),
        });
        std::fs::write(
            bench.join(format!("{}.json", sub.file)),
            serde_json::to_string_pretty(&doc)?,
        )?;
    }
    Ok(bench)
}

/// `target` relative to `from` when both share the same parent chain (they do: both are
/// under the demo's data folder).
fn relative(from: &Path, target: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}
