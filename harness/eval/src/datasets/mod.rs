//! Readers for the dataset formats users already have on disk. Each reader turns a folder or
//! label file into [`Item`](crate::item::Item)s; a task's `[dataset]` table picks the reader
//! and its options. See `docs/datasets.md` for the layouts each reader expects.
//!
//! Contract shared by every reader:
//! - a missing data folder or label file, or a file without the expected columns, is an
//!   input error (exit 2) that says what was expected there;
//! - an individually bad row, file name or image becomes an [`ItemError`](crate::item::ItemError)
//!   with `path:line` (or `path`) and the read goes on;
//! - images are checked to exist but never decoded here;
//! - item ids come from the dataset's own keys and are prefixed with the reader name;
//! - the output order is stable (file order, or sorted paths for folder readers).

use std::path::Path;

use crate::item::ReadOutcome;
use crate::labels::LabelSet;
use crate::task::{DatasetSpec, ReaderKind, Task};

pub mod bins;
mod common;
mod facexbench;
mod fairface;
mod folders;
mod manifest;
mod pairs;
mod rafdb;
mod utkface;

pub use bins::{fairface_age_bin, AgeBins, FAIRFACE_AGE_BINS};
pub use facexbench::python_str;
pub use fairface::{FAIRFACE_GENDERS, FAIRFACE_RACES};
pub use pairs::RFW_RACES;

/// What every reader gets besides its spec: the label set and the name of the target field.
pub(crate) struct Ctx<'a> {
    pub labels: &'a LabelSet,
    /// `labels.field` of the task; empty when the caller did not say (see [`read`]).
    pub field: &'a str,
}

/// Every image file below `root` as the folder readers find them: recursively, sorted,
/// hidden entries skipped, by the readers' default extensions.
pub fn image_files(root: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let extensions = common::default_extensions();
    Ok(common::walk_files(root)?
        .into_iter()
        .filter(|p| common::has_image_extension(p, &extensions))
        .collect())
}

/// Read the dataset a task names, resolving relative paths against `data_root`.
///
/// This entry point does not know the task's `labels.field`; readers that need it (fairface,
/// utkface, manifest) infer it from the label set where they can. Prefer [`read_task`] (or
/// [`read_with_field`]) when a [`Task`] is at hand.
///
/// A data folder without the expected files is an input error (exit 2). Rows, files or
/// labels that are individually bad become [`crate::item::ItemError`]s in the outcome.
pub fn read(
    spec: &DatasetSpec,
    labels: &LabelSet,
    data_root: &Path,
) -> anyhow::Result<ReadOutcome> {
    read_with_field(spec, labels, "", data_root)
}

/// Read a task's dataset with its label set and its `labels.field`.
pub fn read_task(task: &Task, data_root: &Path) -> anyhow::Result<ReadOutcome> {
    read_with_field(
        &task.spec.dataset,
        &task.labels,
        &task.spec.labels.field,
        data_root,
    )
}

/// [`read`] with the target field named explicitly (`age`, `gender`, `race`, `expression`, a
/// manifest column...). An empty `field` means "infer it".
pub fn read_with_field(
    spec: &DatasetSpec,
    labels: &LabelSet,
    field: &str,
    data_root: &Path,
) -> anyhow::Result<ReadOutcome> {
    let ctx = Ctx {
        labels,
        field: field.trim(),
    };
    match spec.reader {
        ReaderKind::Facexbench => facexbench::read(spec, &ctx, data_root),
        ReaderKind::Fairface => fairface::read(spec, &ctx, data_root),
        ReaderKind::Utkface => utkface::read(spec, &ctx, data_root),
        ReaderKind::Rafdb => rafdb::read(spec, &ctx, data_root),
        ReaderKind::Manifest => manifest::read(spec, &ctx, data_root),
        ReaderKind::Folders => folders::read(spec, &ctx, data_root),
        ReaderKind::LfwPairs => pairs::read_lfw(spec, &ctx, data_root),
        ReaderKind::RfwPairs => pairs::read_rfw(spec, &ctx, data_root),
    }
}
