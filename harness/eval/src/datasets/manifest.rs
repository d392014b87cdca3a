//! A generic manifest: a CSV (`.csv`, or `.tsv` for tabs) with a header row, or JSON Lines
//! (`.jsonl`, `.ndjson`), one row per item. Options name the image, label, id, group, field,
//! question, options and cluster columns.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::{check_image, csv_rows, resolve, unknown_label, Collector, Opts};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::labels::normalize;
use crate::task::DatasetSpec;

const KEYS: &[&str] = &[
    "image_columns",
    "label_column",
    "id_column",
    "group_columns",
    "field_columns",
    "question_column",
    "options_column",
    "cluster_column",
];

/// Which columns mean what.
struct Columns {
    images: Vec<String>,
    label: String,
    id: Option<String>,
    groups: Vec<String>,
    fields: Vec<String>,
    question: Option<String>,
    options: Option<String>,
    cluster: Option<String>,
}

impl Columns {
    /// Every column a row is read from, for header checks.
    fn all(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.images.iter().map(String::as_str).collect();
        v.push(&self.label);
        v.extend(self.id.as_deref());
        v.extend(self.groups.iter().map(String::as_str));
        v.extend(self.fields.iter().map(String::as_str));
        v.extend(self.question.as_deref());
        v.extend(self.options.as_deref());
        v.extend(self.cluster.as_deref());
        v
    }
}

/// One cell: text, or a list (JSON arrays, for image columns).
enum Cell {
    Text(String),
    List(Vec<String>),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.trim().to_string(),
            Cell::List(v) => v.join(";"),
        }
    }
}

enum Format {
    Csv(u8),
    Jsonl,
}

pub(super) fn read(spec: &DatasetSpec, ctx: &Ctx, data_root: &Path) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("manifest", &spec.options, KEYS)?;
    let label = match opts.string("label_column")? {
        Some(l) => l,
        None if !ctx.field.is_empty() => ctx.field.to_string(),
        None => {
            return Err(input_error(
                "the manifest reader needs dataset.options.label_column or labels.field to know which column holds the target",
            ))
        }
    };
    let cols = Columns {
        images: opts
            .list("image_columns")?
            .unwrap_or_else(|| vec!["image".to_string()]),
        label,
        id: opts.string("id_column")?,
        groups: opts.list("group_columns")?.unwrap_or_default(),
        fields: opts.list("field_columns")?.unwrap_or_default(),
        question: opts.string("question_column")?,
        options: opts.string("options_column")?,
        cluster: opts.string("cluster_column")?,
    };
    let path = resolve(data_root, &spec.path);
    if !path.is_file() {
        return Err(input_error(format!(
            "dataset.path = {}: manifest not found; expected a .csv, .tsv or .jsonl file with one row per item",
            path.display()
        )));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let format = match ext.as_str() {
        "csv" => Format::Csv(b','),
        "tsv" => Format::Csv(b'\t'),
        "jsonl" | "ndjson" => Format::Jsonl,
        other => {
            return Err(input_error(format!(
                "dataset.path = {}: unknown manifest extension \"{other}\"; expected .csv, .tsv, .jsonl or .ndjson",
                path.display()
            )))
        }
    };
    let image_root = match &spec.images {
        Some(p) => resolve(data_root, p),
        None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if !image_root.is_dir() {
        return Err(input_error(format!(
            "dataset.images = {}: folder not found; expected the folder the manifest's image paths are relative to",
            image_root.display()
        )));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reader = RowReader {
        cols: &cols,
        ctx,
        image_root,
        shown: path.display().to_string(),
        stem,
    };
    let mut out = Collector::default();
    match format {
        Format::Csv(delimiter) => reader.csv(&path, delimiter, &mut out)?,
        Format::Jsonl => reader.jsonl(&path, &mut out)?,
    }
    Ok(out.finish())
}

struct RowReader<'a> {
    cols: &'a Columns,
    ctx: &'a Ctx<'a>,
    image_root: PathBuf,
    shown: String,
    stem: String,
}

impl RowReader<'_> {
    fn csv(&self, path: &Path, delimiter: u8, out: &mut Collector) -> anyhow::Result<()> {
        let shown = &self.shown;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_path(path)
            .map_err(|e| input_error(format!("{shown}: cannot open: {e}")))?;
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| input_error(format!("{shown}:1: cannot read the header: {e}")))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let missing: Vec<&str> = self
            .cols
            .all()
            .into_iter()
            .filter(|c| !headers.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            return Err(input_error(format!(
                "{shown}:1: missing column(s) {} named in the task; the header has: {}",
                missing.join(", "),
                headers.join(", ")
            )));
        }
        for (line, record) in csv_rows(&mut reader, shown, headers.len(), out)? {
            let row: HashMap<String, Cell> = headers
                .iter()
                .cloned()
                .zip(record.iter().map(|v| Cell::Text(v.to_string())))
                .collect();
            self.row(line, &row, out);
        }
        Ok(())
    }

    fn jsonl(&self, path: &Path, out: &mut Collector) -> anyhow::Result<()> {
        let shown = &self.shown;
        let bytes =
            std::fs::read(path).map_err(|e| input_error(format!("{shown}: cannot read: {e}")))?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let location = format!("{shown}:{line}");
            let value: Value = match serde_json::from_str(raw) {
                Ok(v) => v,
                Err(e) => {
                    out.error(
                        location.clone(),
                        location,
                        format!("malformed row: not valid JSON: {e}"),
                    );
                    continue;
                }
            };
            let Value::Object(obj) = value else {
                out.error(
                    location.clone(),
                    location,
                    "malformed row: expected a JSON object",
                );
                continue;
            };
            let row: HashMap<String, Cell> = obj
                .into_iter()
                .filter_map(|(k, v)| json_cell(v).map(|c| (k, c)))
                .collect();
            self.row(line, &row, out);
        }
        Ok(())
    }

    /// Turn one row into an item or an error.
    fn row(&self, line: usize, row: &HashMap<String, Cell>, out: &mut Collector) {
        let location = format!("{}:{line}", self.shown);
        let text = |c: &str| row.get(c).map(Cell::text).filter(|s| !s.is_empty());
        let cols = self.cols;
        let mut raw_images = Vec::new();
        for c in &cols.images {
            match row.get(c) {
                Some(Cell::List(v)) => raw_images.extend(
                    v.iter()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                ),
                Some(Cell::Text(s)) => raw_images.extend(
                    s.split(';')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                ),
                None => {}
            }
        }
        let id = match &cols.id {
            Some(c) => match text(c) {
                Some(v) => format!("manifest:{v}"),
                None => {
                    let fallback = format!("manifest:{}:{line}", self.stem);
                    out.error(fallback, location, format!("column {c}: the id is empty"));
                    return;
                }
            },
            None => match raw_images.first() {
                Some(first) => format!("manifest:{first}"),
                None => format!("manifest:{}:{line}", self.stem),
            },
        };
        if !cols.images.is_empty() && raw_images.is_empty() {
            out.error(
                id,
                location,
                format!("no image path in column(s) {}", cols.images.join(", ")),
            );
            return;
        }
        let Some(raw_label) = text(&cols.label) else {
            out.error(
                id,
                location,
                format!("column {}: the label is empty or missing", cols.label),
            );
            return;
        };
        let mut options = Vec::new();
        let target = if let Some(oc) = &cols.options {
            options = text(oc)
                .unwrap_or_default()
                .split(';')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if options.len() < 2 {
                out.error(
                    id,
                    location,
                    format!(
                        "column {oc}: {} option(s); give at least 2 separated by ';'",
                        options.len()
                    ),
                );
                return;
            }
            match choice_index(&options, &raw_label, self.ctx) {
                Some(i) => Target::Choice(i),
                None => {
                    out.error(
                        id,
                        location,
                        format!(
                            "column {}: label \"{raw_label}\" is not one of the options ({})",
                            cols.label,
                            options.join("; ")
                        ),
                    );
                    return;
                }
            }
        } else if !self.ctx.labels.is_empty() {
            match self.ctx.labels.canonical(&raw_label) {
                Some(l) => Target::Label(l.to_string()),
                None => {
                    let message = unknown_label(&cols.label, &raw_label, self.ctx.labels);
                    out.error(id, location, format!("column {}: {message}", cols.label));
                    return;
                }
            }
        } else {
            match raw_label.parse::<f64>() {
                Ok(v) if v.is_finite() => Target::Number(v),
                _ => {
                    out.error(
                        id,
                        location,
                        format!("column {}: \"{raw_label}\" is not a number (the task has no labels, so targets are numeric)", cols.label),
                    );
                    return;
                }
            }
        };
        let mut images = Vec::with_capacity(raw_images.len());
        for raw in &raw_images {
            let p = resolve(&self.image_root, Path::new(raw));
            if let Err(message) = check_image(&p) {
                out.error(id, location, message);
                return;
            }
            images.push(p);
        }
        let pick = |names: &[String]| -> BTreeMap<String, String> {
            names
                .iter()
                .filter_map(|c| text(c).map(|v| (c.clone(), v)))
                .collect()
        };
        let item = Item {
            id,
            images,
            question: cols.question.as_deref().and_then(text),
            options,
            target,
            groups: pick(&cols.groups),
            cluster: cols.cluster.as_deref().and_then(text),
            fields: pick(&cols.fields),
        };
        out.item(item, location);
    }
}

/// The option the label names: same text, then same after normalisation, then same label
/// through the task's synonyms.
fn choice_index(options: &[String], label: &str, ctx: &Ctx) -> Option<usize> {
    options
        .iter()
        .position(|o| o == label)
        .or_else(|| {
            options
                .iter()
                .position(|o| normalize(o) == normalize(label))
        })
        .or_else(|| {
            let want = ctx.labels.index_of(label)?;
            options
                .iter()
                .position(|o| ctx.labels.index_of(o) == Some(want))
        })
}

fn json_cell(v: Value) -> Option<Cell> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cell::Text(s)),
        Value::Number(n) => Some(Cell::Text(n.to_string())),
        Value::Bool(b) => Some(Cell::Text(b.to_string())),
        Value::Array(a) => Some(Cell::List(
            a.into_iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect(),
        )),
        other @ Value::Object(_) => Some(Cell::Text(other.to_string())),
    }
}
