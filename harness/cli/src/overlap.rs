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
    /// The benchmark's data folder, as given to `faceval run --data` (default with `--run`:
    /// the run's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tasks whose items' images are checked (names or TOML files; default with `--run`:
    /// the run's tasks).
    #[arg(long = "task", num_args = 1..)]
    tasks: Vec<String>,
    /// A run folder: its data folder and tasks are the defaults of `--data` and `--task`, and
    /// its accuracy on the clean slice is printed at the end (as `faceval score --overlap`).
    #[arg(long)]
    run: Option<PathBuf>,
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
    let run = args
        .run
        .as_deref()
        .map(faceval_eval::run_folder::read_manifest)
        .transpose()?;
    let data =
        match (&args.data, &run) {
            (Some(d), _) => d.clone(),
            (None, Some(m)) => m.notes.get("data").map(PathBuf::from).ok_or_else(|| {
                input_error(format!(
                "--run {}: its manifest.json records no data folder (notes.data); give --data DIR",
                args.run.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            ))
            })?,
            (None, None) => return Err(input_error(
                "give the benchmark's data folder with --data DIR (or a run folder with --run RUN)",
            )),
        };
    let task_names: Vec<String> = match (&run, args.tasks.is_empty()) {
        (Some(m), true) => m.tasks.iter().map(|t| t.name.clone()).collect(),
        (None, true) => {
            return Err(input_error(
                "give the tasks to check with --task T... (or a run folder with --run RUN)",
            ))
        }
        _ => args.tasks.clone(),
    };
    let mut benchmark = Vec::new();
    for name in &task_names {
        let t = task::resolve(name, tasks_dir)?;
        if let Some(recorded) = run
            .as_ref()
            .and_then(|m| m.tasks.iter().find(|r| r.name == t.name()))
        {
            if recorded.fingerprint != t.fingerprint {
                eprintln!(
                    "warning: task {} is not the definition the run used (fingerprint {} here, {} in the run): item ids may differ",
                    t.name(),
                    t.fingerprint,
                    recorded.fingerprint
                );
            }
        }
        let read = datasets::read_task(&t, &data)?;
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
    if let (Some(dir), Some(manifest)) = (&args.run, &run) {
        let preds = faceval_eval::run_folder::read_predictions(
            &dir.join(faceval_eval::run_folder::PREDICTIONS),
        )?
        .predictions;
        let per_task = faceval_eval::contamination::run_contamination(manifest, &preds, &report);
        if per_task.is_empty() {
            eprintln!(
                "warning: {}: no task of the run has an accuracy to split",
                dir.display()
            );
        } else {
            println!("{} ({}):", dir.display(), manifest.model.name);
            let rows = per_task.iter().map(|(t, c)| (t.clone(), c));
            print!(
                "{}",
                faceval_report::format::plain_table(&faceval_report::format::contamination_rows(
                    "task", rows
                ))
            );
        }
    }
    println!("{}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
