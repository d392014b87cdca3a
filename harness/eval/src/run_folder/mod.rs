//! The run folder, faceval's public result format (`docs/run-format.md`):
//! `manifest.json`, `predictions.jsonl` (one line per asked question) and `metrics.json`.
//!
//! - [`schema`] spells every type of the format, once, with old spellings as serde aliases.
//! - [`read`] is the one reader: manifest, predictions, the timing parts of `metrics.json`,
//!   the fold of circular rotations and [`same_task`].
//! - [`write`] appends predictions and replaces JSON files atomically.
//!
//! Writing is crash-safe. Each prediction is appended as one whole line and flushed; a line
//! cut short by `kill -9` is dropped on reopening, and questions already answered are skipped,
//! so rerunning the same command finishes the run with nothing lost or duplicated. JSON files
//! other than predictions are replaced atomically (write to a temporary file, then rename).
//!
//! A question may have several lines: a rerun retries the questions whose outcome was `error`
//! and appends the new answer. Every reader takes the **last line of each key**
//! `(task, id, rotation, variant)`, so lines are never rewritten in place.

pub mod read;
pub mod schema;
pub mod write;

pub use read::*;
pub use schema::*;
pub use write::*;
