//! The unit of evaluation: one question about zero or more images, with its target.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the right answer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A label from the task's label set (canonical spelling).
    Label(String),
    /// A number: age in years, yaw in degrees.
    Number(f64),
    /// Index into the item's own `options` (FaceXBench's `correct_answer_option`).
    Choice(usize),
}

/// One question, as a dataset reader produces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Stable across runs and machines: derived from the dataset's own keys, never from order
    /// of discovery alone.
    pub id: String,
    /// Image paths, absolute (readers resolve them against the data folder).
    pub images: Vec<PathBuf>,
    /// Per-item question text, when the dataset has one (FaceXBench); tasks with a fixed
    /// question leave it `None` and the template supplies the text.
    pub question: Option<String>,
    /// Per-item answer options, when the dataset fixes them (FaceXBench).
    pub options: Vec<String>,
    pub target: Target,
    /// Group fields for fairness (race, gender, age bin, ...).
    pub groups: BTreeMap<String, String>,
    /// Items that share an image or identity share a cluster, for clustered standard errors.
    pub cluster: Option<String>,
    /// Other per-item fields a template or a breakdown may use (`category`, `subcategory`,
    /// `prepend_text`, `postpend_text`, `context`, `dataset`, ...).
    pub fields: BTreeMap<String, String>,
}

/// A row, file or image that could not become a valid item. It is counted in the results,
/// never silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemError {
    /// The item's id when it could be derived, else `"<file>:<line>"`.
    pub id: String,
    /// `path` or `path:line` where the problem is.
    pub location: String,
    pub message: String,
}

/// What a reader returns: the valid items and the errors, both in a stable order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOutcome {
    pub items: Vec<Item>,
    pub errors: Vec<ItemError>,
}
