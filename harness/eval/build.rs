//! Compiles the shipped `tasks/*.toml`, `baselines/*.toml` and `baselines/published/*.csv`
//! into the crate (`src/builtin.rs`), so that an installed `faceval` runs every shipped task
//! and model from any directory.
//!
//! Hand-written rather than `include_dir!`: on stable Rust `include_dir` does not tell cargo
//! when an embedded file changes, so an edited task would silently keep its old text. Here
//! each file goes through `include_str!` (rustc tracks it) and each folder is watched with
//! `rerun-if-changed` (cargo rescans it, so added and removed files are picked up too).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "{}: cannot list the shipped files to compile in: {e}",
            dir.display()
        )
    });
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn table(out: &mut String, name: &str, dir: &Path, ext: &str) {
    println!("cargo:rerun-if-changed={}", dir.display());
    writeln!(out, "pub static {name}: &[Shipped] = &[").unwrap();
    for p in files(dir, ext) {
        let file = p.file_name().unwrap().to_string_lossy().into_owned();
        let abs = p.canonicalize().unwrap();
        writeln!(
            out,
            "    Shipped {{ file: {file:?}, text: include_str!({:?}) }},",
            abs.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = String::new();
    table(&mut out, "TASKS", &root.join("tasks"), "toml");
    table(&mut out, "BASELINES", &root.join("baselines"), "toml");
    table(
        &mut out,
        "PUBLISHED",
        &root.join("baselines/published"),
        "csv",
    );
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("shipped.rs");
    std::fs::write(dest, out).unwrap();
}
