//! Published reference tables (`baselines/published/*.csv`): numbers copied from papers, shown
//! beside — never mixed into — the leaderboard of runs made here.
//!
//! Each file is CSV with `#` comment lines before the header; the comments say where the
//! numbers come from and become the table's caption. Column keys that name a FaceXBench
//! category are shown with the FaceLLM paper's column names.

use std::path::Path;

use anyhow::Result;
use faceval_eval::error::input_error;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct PublishedTable {
    /// File name, e.g. `facexbench-facellm-paper.csv`.
    pub file: String,
    /// The file's comment lines: the source of the numbers.
    pub caption: String,
    /// Header keys as in the file.
    pub keys: Vec<String>,
    /// Header names to show.
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Display names of the published FaceXBench table's columns (the paper's own names).
fn header_name(key: &str) -> String {
    match key {
        "model" => "Model",
        "size_group" => "Size",
        "overall" => "Overall",
        "bias_fairness" => "Bias & Fairness",
        "face_recognition" => "Face Recognition",
        "face_authentication" | "fas_deepfakes" => "Face Authentication",
        "face_analysis" | "attributes_expression" => "Face Analysis",
        "face_localization" => "Face Localization",
        "tools_use" => "Face Tools Use",
        "task" => "Task",
        "facexbench_subcategory" => "FaceXBench sub-category",
        "facellm_1b" => "FaceLLM-1B",
        "facellm_8b" => "FaceLLM-8B",
        "facellm_38b" => "FaceLLM-38B",
        other => return other.to_string(),
    }
    .to_string()
}

/// Read one published CSV.
pub fn read_table(path: &Path) -> Result<PublishedTable> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("{}: cannot read: {e}", path.display())))?;
    parse_table(&text, path)
}

/// Parse one published CSV; `path` names it in messages and gives the table's file name.
pub fn parse_table(text: &str, path: &Path) -> Result<PublishedTable> {
    let caption: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let keys: Vec<String> = reader
        .headers()
        .map_err(|e| input_error(format!("{}: {e}", path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| {
            input_error(format!(
                "{}: row {}: {e}",
                path.display(),
                i + 1 // data rows, after the header
            ))
        })?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(PublishedTable {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        caption: caption.join(" "),
        headers: keys.iter().map(|k| header_name(k)).collect(),
        keys,
        rows,
    })
}

/// Every `*.csv` in a folder, by file name. A missing folder gives no tables.
pub fn read_dir(dir: &Path) -> Result<Vec<PublishedTable>> {
    read_all(false, Some(dir))
}

/// The published tables: the shipped ones (`baselines/published/*.csv`, compiled into
/// faceval) when `builtin`, plus the `*.csv` files of `dir`, which replace shipped tables of
/// the same file name. A `dir` that does not exist adds nothing. Sorted by file name.
pub fn read_all(builtin: bool, dir: Option<&Path>) -> Result<Vec<PublishedTable>> {
    use faceval_eval::builtin::{self as shipped, Origin};
    shipped::all(&shipped::PUBLISHED_FILES, dir, true)?
        .into_iter()
        .filter(|d| builtin || d.origin != Origin::Builtin)
        .map(|d| parse_table(&d.text, &d.path))
        .collect()
}
