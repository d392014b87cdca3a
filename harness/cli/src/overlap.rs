//! `faceval overlap`: which benchmark images are copies of reference (training) images.
//! The matching is `faceval_eval::overlap`; this file reads the arguments, the tasks' items
//! and the folders, shows progress and writes `overlap.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use faceval_eval::overlap::{self, BenchmarkImage, OverlapReport};
use faceval_eval::{datasets, input_error, task};

#[derive(Args)]
pub struct OverlapArgs {
    /// Folder of reference images (a training set, e.g. FairFace's validation images), searched
    /// recursively.
    #[arg(long)]
    reference: PathBuf,
    /// The benchmark's data folder, as given to `faceval run --data`.
    #[arg(long)]
    data: PathBuf,
    /// Tasks whose items' images are checked (names or TOML files).
    #[arg(long = "task", required = true, num_args = 1..)]
    tasks: Vec<String>,
    /// Largest perceptual-hash distance (of 256 bits) counted as a near match.
    #[arg(long, default_value_t = overlap::DEFAULT_MAX_DISTANCE)]
    max_distance: u32,
    /// Where to write the result.
    #[arg(long, default_value = "overlap.json")]
    out: PathBuf,
}

pub fn overlap(args: OverlapArgs, tasks_dir: Option<&std::path::Path>) -> Result<ExitCode> {
    if !args.reference.is_dir() {
        return Err(input_error(format!(
            "--reference {}: not a folder of images",
            args.reference.display()
        )));
    }
    let mut benchmark = Vec::new();
    for name in &args.tasks {
        let t = task::resolve(name, tasks_dir)?;
        let read = datasets::read_task(&t, &args.data)?;
        for item in read.items {
            for path in item.images {
                benchmark.push(BenchmarkImage {
                    task: t.name().to_string(),
                    item_id: item.id.clone(),
                    path,
                });
            }
        }
    }
    let reference_files =
        overlap::image_files(&args.reference).map_err(|e| input_error(format!("{e:#}")))?;
    if reference_files.is_empty() {
        return Err(input_error(format!(
            "--reference {}: no image files (jpg, jpeg, png, bmp, webp, tif, tiff) in it",
            args.reference.display()
        )));
    }
    let bench_files: Vec<PathBuf> = benchmark.iter().map(|b| b.path.clone()).collect();

    let bar = indicatif::ProgressBar::new((reference_files.len() + bench_files.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "hashing {bar:30} {pos}/{len} images  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tick = || bar.inc(1);
    let (reference, mut unreadable) = overlap::fingerprint_all(&reference_files, &tick);
    let (hashed, bad) = overlap::fingerprint_all(&bench_files, &tick);
    bar.finish_and_clear();
    unreadable.extend(bad);
    // Pair the fingerprints back with their items (an image shown by several items is hashed
    // once per item; FaceXBench's images are not shared).
    let by_path: std::collections::HashMap<PathBuf, overlap::Fingerprint> =
        hashed.into_iter().collect();
    let checked: Vec<(BenchmarkImage, overlap::Fingerprint)> = benchmark
        .iter()
        .filter_map(|b| by_path.get(&b.path).map(|f| (b.clone(), f.clone())))
        .collect();
    let matches = overlap::find(&reference, &checked, args.max_distance);
    let checked_images: Vec<BenchmarkImage> = checked.into_iter().map(|(b, _)| b).collect();
    let report = OverlapReport {
        reference: args.reference.display().to_string(),
        reference_images: reference.len(),
        hash: overlap::HASH_DESCRIPTION.to_string(),
        max_distance: args.max_distance,
        summary: overlap::summarize(&checked_images, &matches),
        matches,
        unreadable,
    };
    let text = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    for (task, s) in &report.summary {
        println!(
            "{task}: {} of {} items show a reference image ({} exact, {} near, of {} images)",
            s.matched_items, s.items, s.exact, s.near, s.images
        );
    }
    if !report.unreadable.is_empty() {
        eprintln!(
            "warning: {} images could not be decoded and were not checked (listed under `unreadable`)",
            report.unreadable.len()
        );
    }
    println!("{}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
