//! RAF-DB basic emotions: `EmoLabel/list_patition_label.txt` with lines `train_00001.jpg 5`
//! (labels 1-7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral) and images in
//! `Image/aligned` (`train_00001_aligned.jpg`) or `Image/original` (`train_00001.jpg`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::common::{check_image, resolve, unknown_label, Collector, Opts};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::task::DatasetSpec;

const KEYS: &[&str] = &["split"];
const LABEL_FILE: &str = "list_patition_label.txt";

/// RAF-DB's basic expression names, label 1 first.
pub const EXPRESSIONS: [&str; 7] = [
    "Surprise",
    "Fear",
    "Disgust",
    "Happiness",
    "Sadness",
    "Anger",
    "Neutral",
];

pub(super) fn read(spec: &DatasetSpec, ctx: &Ctx, data_root: &Path) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("rafdb", &spec.options, KEYS)?;
    let split = opts.string("split")?.unwrap_or_else(|| "test".to_string());
    if !["test", "train", "all"].contains(&split.as_str()) {
        return Err(input_error(format!(
            "dataset.options.split = \"{split}\"; expected \"test\", \"train\" or \"all\""
        )));
    }
    if ctx.labels.is_empty() {
        return Err(input_error(
            "the rafdb reader needs labels.values (the expression names, e.g. \"surprise\")",
        ));
    }
    let given = resolve(data_root, &spec.path);
    let label_file = find_label_file(&given)?;
    let base = base_folder(&label_file);
    let image_root = match &spec.images {
        Some(p) => {
            let r = resolve(data_root, p);
            if !r.is_dir() {
                return Err(input_error(format!(
                    "dataset.images = {}: folder not found; expected RAF-DB's Image/aligned or Image/original",
                    r.display()
                )));
            }
            r
        }
        None => ["Image/aligned", "Image/original"]
            .iter()
            .map(|s| base.join(s))
            .find(|p| p.is_dir())
            .unwrap_or_else(|| base.clone()),
    };
    let shown = label_file.display().to_string();
    let text = std::fs::read(&label_file)
        .map_err(|e| input_error(format!("{shown}: cannot read: {e}")))?;
    let text = String::from_utf8_lossy(&text);
    let mut out = Collector::default();
    for (i, raw_line) in text.lines().enumerate() {
        let location = format!("{shown}:{}", i + 1);
        let line = raw_line.trim();
        if line.is_empty() {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let name = tokens[0];
        let id = format!("rafdb:{name}");
        let row_split = if name.starts_with("train") {
            "train"
        } else if name.starts_with("test") {
            "test"
        } else {
            ""
        };
        if split != "all" {
            if row_split.is_empty() {
                out.error(
                    id,
                    location,
                    format!(
                        "cannot tell the split of \"{name}\" (expected a train_ or test_ prefix)"
                    ),
                );
                continue;
            }
            if row_split != split {
                continue;
            }
        }
        let [_, label] = tokens[..] else {
            out.error(
                id,
                location,
                format!("malformed line \"{line}\"; expected \"<image name> <label 1-7>\""),
            );
            continue;
        };
        let Some(expression) = label
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| EXPRESSIONS.get(n))
        else {
            out.error(
                id,
                location,
                format!("label \"{label}\" is not 1-7 ({})", EXPRESSIONS.join(", ")),
            );
            continue;
        };
        let Some(canonical) = ctx.labels.canonical(expression) else {
            out.error(
                id,
                location,
                unknown_label("expression", expression, ctx.labels),
            );
            continue;
        };
        let image = match find_image(&image_root, name) {
            Ok(p) => p,
            Err(message) => {
                out.error(id, location, message);
                continue;
            }
        };
        let mut fields = BTreeMap::new();
        fields.insert("split".to_string(), row_split.to_string());
        fields.insert("rafdb_label".to_string(), label.to_string());
        let item = Item {
            id,
            images: vec![image],
            question: None,
            options: vec![],
            target: Target::Label(canonical.to_string()),
            groups: BTreeMap::new(),
            cluster: None,
            fields,
        };
        out.item(item, location);
    }
    Ok(out.finish())
}

/// The label file itself, or where RAF-DB keeps it below a folder.
fn find_label_file(given: &Path) -> anyhow::Result<PathBuf> {
    if given.is_file() {
        return Ok(given.to_path_buf());
    }
    if given.is_dir() {
        for rel in [
            LABEL_FILE,
            "EmoLabel/list_patition_label.txt",
            "basic/EmoLabel/list_patition_label.txt",
        ] {
            let p = given.join(rel);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(input_error(format!(
        "dataset.path = {}: RAF-DB label file not found; expected {LABEL_FILE} (RAF-DB basic's EmoLabel/{LABEL_FILE}) or a folder holding it or EmoLabel/",
        given.display()
    )))
}

/// The RAF-DB `basic/` folder: the label file's folder, or its parent when that is `EmoLabel`.
fn base_folder(label_file: &Path) -> PathBuf {
    let dir = label_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "EmoLabel") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// `name` as listed, or the aligned crop's name `<stem>_aligned.<ext>`.
fn find_image(root: &Path, name: &str) -> Result<PathBuf, String> {
    let plain = root.join(name);
    if check_image(&plain).is_ok() {
        return Ok(plain);
    }
    let p = Path::new(name);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "jpg".into());
    let aligned = root.join(format!("{stem}_aligned.{ext}"));
    if check_image(&aligned).is_ok() {
        return Ok(aligned);
    }
    Err(format!(
        "image file not found: {} (nor {})",
        plain.display(),
        aligned.display()
    ))
}
