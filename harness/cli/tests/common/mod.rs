//! Helpers shared by the end-to-end tests of the `faceval` binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary under test.
pub fn faceval() -> Command {
    Command::new(env!("CARGO_BIN_EXE_faceval"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A manifest dataset of `n` items over a few real PNGs, and a task reading it.
pub fn write_dataset(dir: &Path, n: usize) -> PathBuf {
    let images = dir.join("data/img");
    std::fs::create_dir_all(&images).unwrap();
    for k in 0..4u8 {
        let img = image::RgbImage::from_fn(96, 96, |x, y| {
            image::Rgb([(x as u8).wrapping_mul(k), y as u8, 40 * k])
        });
        img.save(images.join(format!("{k}.png"))).unwrap();
    }
    let labels = ["happiness", "sadness", "anger", "neutral"];
    let mut csv = String::from("id,image,expression,gender\n");
    for i in 0..n {
        csv.push_str(&format!(
            "item{i:05},img/{}.png,{},{}\n",
            i % 4,
            labels[(i * 7) % 4],
            ["Male", "Female"][i % 2]
        ));
    }
    std::fs::write(dir.join("data/set.csv"), csv).unwrap();
    let task = dir.join("expr.toml");
    std::fs::write(
        &task,
        r#"name = "expr"
[dataset]
reader = "manifest"
path = "set.csv"
options = { id_column = "id", label_column = "expression", group_columns = ["gender"] }
[labels]
field = "expression"
values = ["happiness", "sadness", "anger", "neutral"]
[question]
style = "multiple_choice"
text = "Which expression?"
template = """{{ question }}
{% for o in options %}({{ o.letter }}) {{ o.text }}
{% endfor %}"""
[metrics]
report = ["accuracy", "balanced_accuracy", "macro_f1", "confusion_matrix"]
[fairness]
groups = ["gender"]
"#,
    )
    .unwrap();
    task
}

/// The committed model fixtures: `harness/models/tests/fixtures/<sub>`.
pub fn model_fixtures(sub: &str) -> PathBuf {
    repo_root().join("harness/models/tests/fixtures").join(sub)
}

/// A run folder's predictions, in file order.
pub fn read_predictions(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An expression task over `set.csv` (manifest reader: `id`, `image`, `expression`, `gender`),
/// as the model tests write it; the fields are the parts they vary.
pub struct ExpressionTask<'a> {
    pub name: &'a str,
    pub labels: &'a [&'a str],
    pub style: &'a str,
    pub text: &'a str,
    /// The minijinja prompt template, TOML-quoted by the writer.
    pub template: &'a str,
    pub scoring: &'a str,
    pub max_new_tokens: usize,
}

/// The multiple-choice template the tests share: the question, then `(A) option` lines
/// (TOML `\n` escapes: [`ExpressionTask::toml`] writes it inside a basic string).
pub const LETTERED_TEMPLATE: &str =
    r"{{ question }}\n{% for o in options %}({{ o.letter }}) {{ o.text }}\n{% endfor %}";

impl ExpressionTask<'_> {
    pub fn toml(&self) -> String {
        let labels: Vec<String> = self.labels.iter().map(|l| format!("{l:?}")).collect();
        format!(
            r#"name = "{name}"
[dataset]
reader = "manifest"
path = "set.csv"
options = {{ id_column = "id", label_column = "expression", group_columns = ["gender"] }}
[labels]
field = "expression"
values = [{labels}]
[question]
style = "{style}"
text = "{text}"
template = "{template}"
scoring = "{scoring}"
max_new_tokens = {max_new_tokens}
[metrics]
report = ["accuracy"]
[fairness]
groups = ["gender"]
"#,
            name = self.name,
            labels = labels.join(", "),
            style = self.style,
            text = self.text,
            template = self.template,
            scoring = self.scoring,
            max_new_tokens = self.max_new_tokens,
        )
    }
}
