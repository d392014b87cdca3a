//! The shipped definitions, compiled in, and the one rule that decides which definition of a
//! name is used.
//!
//! `tasks/*.toml`, `baselines/*.toml` and `baselines/published/*.csv` are part of the binary
//! (see `build.rs`), so `faceval` runs every shipped task and model from any directory. A
//! folder given with `--tasks-dir` / `FACEVAL_TASKS` or `--baselines-dir` /
//! `FACEVAL_BASELINES` adds its files; a file whose name (`<name>.toml`) equals a built-in's
//! replaces the built-in. Run manifests record which one was used ([`Origin::label`]).

use std::path::{Path, PathBuf};

use crate::error::input_error;

/// One file shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Shipped {
    /// File name in the source tree, e.g. `facexbench.toml`.
    pub file: &'static str,
    pub text: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// What run manifests and `tasks list` say for a built-in definition.
pub const BUILTIN: &str = "builtin";

/// Where a definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled into the binary.
    Builtin,
    /// Read from this file.
    File(PathBuf),
}

impl Origin {
    /// `builtin`, or the file's path.
    pub fn label(&self) -> String {
        match self {
            Origin::Builtin => BUILTIN.to_string(),
            Origin::File(p) => p.display().to_string(),
        }
    }
}

/// One definition, built-in or read from a folder.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The file stem: what `--task` / `--model` name it by.
    pub name: String,
    /// The file name, e.g. `facexbench.toml`.
    pub file: String,
    pub origin: Origin,
    /// Where messages say it is: the file's path, or `tasks/<file>` (the shipped location,
    /// under `shipped_under`) for a built-in.
    pub path: PathBuf,
    pub text: String,
    /// A folder file that replaces a built-in of the same name.
    pub overrides_builtin: bool,
}

/// A kind of shipped definition: where it lives in the source tree and which extension it has.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub builtin: &'static [Shipped],
    /// Folder in the source tree (`tasks`, `baselines`, `baselines/published`).
    pub shipped_under: &'static str,
    pub ext: &'static str,
    /// What the definitions are, for messages (`task`, `model manifest`, `published table`).
    pub what: &'static str,
    /// The flag that adds a folder, for messages.
    pub flag: &'static str,
}

pub const TASK_FILES: Kind = Kind {
    builtin: TASKS,
    shipped_under: "tasks",
    ext: "toml",
    what: "task",
    flag: "--tasks-dir",
};

pub const MODEL_FILES: Kind = Kind {
    builtin: BASELINES,
    shipped_under: "baselines",
    ext: "toml",
    what: "model manifest",
    flag: "--baselines-dir",
};

pub const PUBLISHED_FILES: Kind = Kind {
    builtin: PUBLISHED,
    shipped_under: "baselines/published",
    ext: "csv",
    what: "published table",
    flag: "--baselines-dir",
};

fn builtin_definition(kind: &Kind, s: &Shipped) -> Definition {
    Definition {
        name: s
            .file
            .strip_suffix(&format!(".{}", kind.ext))
            .unwrap_or(s.file)
            .to_string(),
        file: s.file.to_string(),
        origin: Origin::Builtin,
        path: Path::new(kind.shipped_under).join(s.file),
        text: s.text.to_string(),
        overrides_builtin: false,
    }
}

/// The `*.<ext>` files of a folder, sorted by name. A folder that cannot be listed is an input
/// error naming it, unless `missing_ok` and it does not exist.
fn folder_files(kind: &Kind, dir: &Path, missing_ok: bool) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(input_error(format!(
                "{} {}: cannot list {} files: {e}",
                kind.flag,
                dir.display(),
                kind.what
            )))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == kind.ext))
        .collect();
    files.sort();
    Ok(files)
}

fn read_definition(kind: &Kind, path: &Path) -> anyhow::Result<Definition> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input_error(format!(
            "{}: cannot read {} file: {e}",
            path.display(),
            kind.what
        ))
    })?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let overrides_builtin = kind.builtin.iter().any(|s| s.file == file);
    Ok(Definition {
        name,
        file,
        origin: Origin::File(path.to_path_buf()),
        path: path.to_path_buf(),
        text,
        overrides_builtin,
    })
}

/// Every definition of a kind: the built-ins, plus the files of `dir` (which replace built-ins
/// of the same name), sorted by name. `missing_ok` lets a `dir` that does not exist add
/// nothing (the published tables under `--baselines-dir`, which may have none).
pub fn all(kind: &Kind, dir: Option<&Path>, missing_ok: bool) -> anyhow::Result<Vec<Definition>> {
    let mut defs: Vec<Definition> = kind
        .builtin
        .iter()
        .map(|s| builtin_definition(kind, s))
        .collect();
    if let Some(dir) = dir {
        for path in folder_files(kind, dir, missing_ok)? {
            let d = read_definition(kind, &path)?;
            defs.retain(|b| b.file != d.file);
            defs.push(d);
        }
    }
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(defs)
}

/// The definition named `name` (`<name>.<ext>`): the folder's file when `dir` has one, else the
/// built-in. `None` when neither has it.
pub fn find(kind: &Kind, dir: Option<&Path>, name: &str) -> anyhow::Result<Option<Definition>> {
    let file = format!("{name}.{}", kind.ext);
    if let Some(dir) = dir {
        let candidate = dir.join(&file);
        if candidate.is_file() {
            return read_definition(kind, &candidate).map(Some);
        }
    }
    Ok(kind
        .builtin
        .iter()
        .find(|s| s.file == file)
        .map(|s| builtin_definition(kind, s)))
}

/// The names `all` would give, for "known: ..." lists in messages; empty when the folder
/// cannot be listed (the message is about something else).
pub fn known_names(kind: &Kind, dir: Option<&Path>) -> Vec<String> {
    all(kind, dir, true)
        .map(|v| v.into_iter().map(|d| d.name).collect())
        .unwrap_or_else(|_| {
            all(kind, None, true)
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.name)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_files_are_compiled_in() {
        let names: Vec<&str> = TASKS.iter().map(|s| s.file).collect();
        assert!(names.contains(&"facexbench.toml"), "{names:?}");
        assert!(BASELINES.iter().any(|s| s.file == "facellm-1b.toml"));
        assert!(PUBLISHED
            .iter()
            .any(|s| s.file == "facexbench-facellm-paper.csv"));
        // The same bytes as the source tree's files.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for s in TASKS {
            let on_disk = std::fs::read_to_string(root.join("tasks").join(s.file)).unwrap();
            assert_eq!(on_disk, s.text, "{}", s.file);
        }
        assert_eq!(
            std::fs::read_dir(root.join("tasks"))
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml"))
                .count(),
            TASKS.len()
        );
    }

    #[test]
    fn a_folder_adds_files_and_overrides_builtins_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("facexbench.toml"), "# mine\n").unwrap();
        std::fs::write(dir.path().join("extra.toml"), "# extra\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a task").unwrap();
        let defs = all(&TASK_FILES, Some(dir.path()), false).unwrap();
        assert_eq!(defs.len(), TASKS.len() + 1);
        let fx = defs.iter().find(|d| d.name == "facexbench").unwrap();
        assert_eq!(fx.origin, Origin::File(dir.path().join("facexbench.toml")));
        assert!(fx.overrides_builtin);
        assert_eq!(fx.text, "# mine\n");
        let extra = defs.iter().find(|d| d.name == "extra").unwrap();
        assert!(!extra.overrides_builtin);
        let age = defs.iter().find(|d| d.name == "age-fairface").unwrap();
        assert_eq!(age.origin, Origin::Builtin);
        assert_eq!(age.origin.label(), "builtin");
        assert_eq!(age.path, Path::new("tasks/age-fairface.toml"));

        let found = find(&TASK_FILES, Some(dir.path()), "facexbench")
            .unwrap()
            .unwrap();
        assert_eq!(found.text, "# mine\n");
        let builtin = find(&TASK_FILES, None, "facexbench").unwrap().unwrap();
        assert_eq!(builtin.origin, Origin::Builtin);
        assert!(find(&TASK_FILES, Some(dir.path()), "nope")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_missing_folder_is_an_input_error_naming_the_flag() {
        let err = all(&TASK_FILES, Some(Path::new("/no/such/folder")), false).unwrap_err();
        assert!(crate::error::is_input_error(&err));
        let msg = err.to_string();
        assert!(msg.contains("--tasks-dir /no/such/folder"), "{msg}");
        assert_eq!(
            all(&PUBLISHED_FILES, Some(Path::new("/no/such/folder")), true)
                .unwrap()
                .len(),
            PUBLISHED.len()
        );
    }
}
