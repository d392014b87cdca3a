//! Pieces every reader shares: option checking, path resolution, image look-ups, sorted
//! folder walks and the collector that keeps ids unique and errors counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::input_error;
use crate::item::{Item, ItemError, ReadOutcome};
use crate::labels::LabelSet;

/// Image file extensions the folder readers pick up (compared lowercase).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];

/// `p` as given when absolute, else below `data_root`.
pub fn resolve(data_root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_root.join(p)
    }
}

/// A reader's `[dataset.options]`, checked against the keys it knows.
pub struct Opts<'a> {
    reader: &'static str,
    table: &'a toml::Table,
}

impl<'a> Opts<'a> {
    /// Reject any key not in `known`, naming it and the valid ones.
    pub fn new(
        reader: &'static str,
        table: &'a toml::Table,
        known: &[&str],
    ) -> anyhow::Result<Self> {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let valid = if known.is_empty() {
                    format!("the {reader} reader takes no options")
                } else {
                    format!("valid keys for the {reader} reader: {}", known.join(", "))
                };
                return Err(input_error(format!(
                    "dataset.options: unknown key \"{key}\"; {valid}"
                )));
            }
        }
        Ok(Opts { reader, table })
    }

    fn type_error(&self, key: &str, want: &str, got: &toml::Value) -> anyhow::Error {
        input_error(format!(
            "dataset.options.{key} (reader {}) must be {want}, not {}",
            self.reader,
            got.type_str()
        ))
    }

    pub fn bool(&self, key: &str, default: bool) -> anyhow::Result<bool> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.type_error(key, "true or false", v)),
        }
    }

    pub fn string(&self, key: &str) -> anyhow::Result<Option<String>> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.type_error(key, "a string", v)),
        }
    }

    /// A list of strings; a single string is taken as a one-element list.
    pub fn list(&self, key: &str) -> anyhow::Result<Option<Vec<String>>> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(self.type_error(key, "a list of strings", other)),
                })
                .collect::<anyhow::Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.type_error(key, "a list of strings", v)),
        }
    }
}

/// Gathers items and errors in reading order. A second item with an id already seen becomes
/// an error pointing at the first, so ids stay unique without losing the row from the counts.
#[derive(Default)]
pub struct Collector {
    items: Vec<Item>,
    errors: Vec<ItemError>,
    seen: HashMap<String, String>,
}

impl Collector {
    pub fn item(&mut self, item: Item, location: String) {
        if let Some(first) = self.seen.get(&item.id) {
            let message = format!("duplicate id \"{}\"; first seen at {first}", item.id);
            self.errors.push(ItemError {
                id: item.id,
                location,
                message,
            });
            return;
        }
        self.seen.insert(item.id.clone(), location);
        self.items.push(item);
    }

    pub fn error(
        &mut self,
        id: impl Into<String>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ItemError {
            id: id.into(),
            location: location.into(),
            message: message.into(),
        });
    }

    pub fn finish(self) -> ReadOutcome {
        ReadOutcome {
            items: self.items,
            errors: self.errors,
        }
    }
}

/// `Err` naming the path when the image file is not there. Images are not decoded here.
pub fn check_image(path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("image file not found: {}", path.display()))
    }
}

pub fn has_image_extension(path: &Path, extensions: &[String]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

pub fn default_extensions() -> Vec<String> {
    IMAGE_EXTENSIONS.iter().map(|s| s.to_string()).collect()
}

/// Every file below `root` (following symlinks), sorted by path so the order does not depend
/// on the file system. Hidden entries (`.DS_Store`, `.git`) are skipped.
pub fn walk_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    // A symlink loop would otherwise recurse forever; no real dataset nests this deep.
    if depth > 32 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// `path` relative to `root` with `/` separators, for ids that read the same on every OS.
pub fn relative_id(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// "unknown <what> label "x"; expected one of a, b, c" for item errors.
pub fn unknown_label(what: &str, raw: &str, labels: &LabelSet) -> String {
    format!(
        "unknown {what} label \"{raw}\"; expected one of: {}",
        labels.values().join(", ")
    )
}

/// Choose the field whose known raw values the label set recognises most often. Used when
/// the caller did not pass `labels.field`.
pub fn infer_field(
    labels: &LabelSet,
    candidates: &[(&'static str, &[&str])],
) -> Option<&'static str> {
    candidates
        .iter()
        .map(|(name, values)| {
            (
                *name,
                values
                    .iter()
                    .filter(|v| labels.canonical(v).is_some())
                    .count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
        .map(|(name, _)| name)
}

/// The well-formed rows of a CSV with their line numbers. A row the parser rejects, or one
/// with the wrong number of columns, becomes an item error at `file:line` and is skipped; an
/// I/O error ends the read as an input error.
pub fn csv_rows<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    shown: &str,
    columns: usize,
    out: &mut Collector,
) -> anyhow::Result<Vec<(usize, csv::StringRecord)>> {
    let mut rows = Vec::new();
    let mut last_error_line = 0;
    for result in reader.records() {
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                if e.is_io_error() {
                    return Err(input_error(format!("{shown}: read failed: {e}")));
                }
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                // A reader that keeps failing at the same place would loop forever.
                if line != 0 && line == last_error_line {
                    break;
                }
                last_error_line = line;
                let location = format!("{shown}:{line}");
                out.error(location.clone(), location, format!("malformed row: {e}"));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0) as usize;
        if record.len() != columns {
            let location = format!("{shown}:{line}");
            out.error(
                location.clone(),
                location,
                format!(
                    "malformed row: expected {columns} columns, found {}",
                    record.len()
                ),
            );
            continue;
        }
        rows.push((line, record));
    }
    Ok(rows)
}
