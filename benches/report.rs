//! Report rendering at leaderboard scale: 30 models × 20 tasks, 100,000 predictions per model
//! (5,000 per task, FaceXBench's size), with three group fields, timings and a confusion matrix
//! per task. Measures `faceval report` end to end: read the run folders, compute significance
//! and per-group gaps, draw every figure as SVG and PNG, write HTML, Markdown and JSON.
//!
//! `RAYON_NUM_THREADS=2 cargo bench -p faceval-benches --bench report`
//! The run folders are generated once under the system temp folder and reused.
//! `FACEVAL_REPORT_BENCH_PREDICTIONS` changes the predictions per model.

use std::io::Write;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use faceval_report::ReportOptions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MODELS: usize = 30;
const TASKS: usize = 20;
const LABELS: [&str; 4] = ["A", "B", "C", "D"];
const RACES: [&str; 7] = [
    "Black",
    "East Asian",
    "Indian",
    "Latino_Hispanic",
    "Middle Eastern",
    "Southeast Asian",
    "White",
];
const AGES: [&str; 9] = [
    "0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+",
];

fn per_model() -> usize {
    std::env::var("FACEVAL_REPORT_BENCH_PREDICTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn write_run(dir: &Path, m: usize, per_task: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let tasks: Vec<serde_json::Value> = (0..TASKS)
        .map(|t| {
            serde_json::json!({"name": format!("task-{t:02}"), "version": "1",
                "fingerprint": format!("{t:064x}"), "style": "multiple_choice",
                "labels": LABELS, "groups": ["race", "gender", "age_bin"], "breakdown": []})
        })
        .collect();
    let manifest = serde_json::json!({"model": {"name": format!("model-{m:02}"), "kind": "bench"},
        "tasks": tasks, "seed": 0, "device": "cuda", "dtype": "bf16",
        "started": "2025-01-01T00:00:00Z", "finished": "2025-01-01T01:00:00Z"});
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(m as u64);
    let skill = 0.3 + 0.5 * m as f64 / MODELS as f64;
    let speed = 20.0 + 5.0 * m as f64;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(dir.join("predictions.jsonl")).unwrap());
    for t in 0..TASKS {
        for i in 0..per_task {
            // The same questions (and groups) for every model, so they pair.
            let mut q = ChaCha8Rng::seed_from_u64((t * 1_000_003 + i) as u64);
            let target = q.gen_range(0..4);
            let race = RACES[q.gen_range(0..7)];
            let gender = if q.gen_bool(0.5) { "Female" } else { "Male" };
            let age = AGES[q.gen_range(0..9)];
            let unparseable = rng.gen_bool(0.02);
            let correct = !unparseable && rng.gen_bool(skill);
            let parsed = if correct {
                target
            } else {
                (target + 1 + rng.gen_range(0..3)) % 4
            };
            let pre = rng.gen_range(1.0..3.0);
            let vis = speed * rng.gen_range(0.8..1.2);
            let pf = 2.0 * speed * rng.gen_range(0.8..1.5);
            let dec = rng.gen_range(5.0..40.0);
            let parsed_json = if unparseable {
                "null".to_string()
            } else {
                format!("\"{}\"", LABELS[parsed])
            };
            writeln!(
                out,
                "{{\"id\":\"task-{t:02}:{i}\",\"task\":\"task-{t:02}\",\"rotation\":0,\"raw_output\":\"{}\",\
                 \"parsed\":{parsed_json},\"target\":\"{}\",\"parsed_label\":{parsed_json},\"target_label\":\"{}\",\
                 \"correct\":{correct},\"outcome\":\"{}\",\"groups\":{{\"race\":\"{race}\",\"gender\":\"{gender}\",\"age_bin\":\"{age}\"}},\
                 \"timings\":{{\"preprocess_ms\":{pre:.3},\"vision_ms\":{vis:.3},\"prefill_ms\":{pf:.3},\"decode_ms\":{dec:.3},\"e2e_ms\":{:.3}}},\
                 \"prompt_tokens\":300,\"output_tokens\":3}}",
                if unparseable { "I am not sure" } else { LABELS[parsed] },
                LABELS[target],
                LABELS[target],
                if unparseable { "unparseable" } else if correct { "correct" } else { "wrong" },
                pre + vis + pf + dec,
            )
            .unwrap();
        }
    }
    out.flush().unwrap();
    drop(out);
    faceval_eval::metrics::write_metrics(dir).unwrap();
}

fn runs() -> Vec<PathBuf> {
    let n = per_model();
    let root = std::env::temp_dir().join(format!("faceval-report-bench-{MODELS}x{TASKS}x{n}"));
    let dirs: Vec<PathBuf> = (0..MODELS)
        .map(|m| root.join(format!("model-{m:02}")))
        .collect();
    if !root.join("complete").exists() {
        eprintln!(
            "generating {MODELS} run folders with {n} predictions each under {}",
            root.display()
        );
        for (m, d) in dirs.iter().enumerate() {
            write_run(d, m, n / TASKS);
        }
        std::fs::write(root.join("complete"), b"").unwrap();
    }
    dirs
}

fn bench(c: &mut Criterion) {
    let dirs = runs();
    let out = std::env::temp_dir().join("faceval-report-bench-out");
    let options = ReportOptions {
        reference: Some("model-00".into()),
        ..Default::default()
    };
    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.bench_function(
        "30 models × 20 tasks, 100k predictions each: read + compute",
        |b| b.iter(|| faceval_report::build(&dirs, &options).unwrap()),
    );
    let report = faceval_report::build(&dirs, &options).unwrap();
    g.bench_function("render figures, HTML, Markdown, JSON and write", |b| {
        b.iter(|| {
            let r = faceval_report::render(&report).unwrap();
            faceval_report::write(&r, &out).unwrap();
        })
    });
    g.bench_function("end to end (faceval report)", |b| {
        b.iter(|| faceval_report::generate(&dirs, &options, &out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
