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
