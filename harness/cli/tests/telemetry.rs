//! End-to-end tests of telemetry: every run's metrics.json carries latency summaries that agree
//! with its predictions.jsonl, the manifest records hardware and peak memory (or why VRAM could
//! not be read), and `faceval bench` profiles a task on the demo's synthetic data.

mod common;
use common::{faceval, repo_root};

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A multiple-choice task over `set.csv` in the data folder.
const EXPR_TASK: &str = r#"name = "expr"
[dataset]
reader = "manifest"
path = "set.csv"
options = { id_column = "id", label_column = "expression" }
[labels]
field = "expression"
values = ["happiness", "sadness", "anger", "neutral"]
[question]
style = "multiple_choice"
text = "Which expression?"
template = """{{ question }}
{% for o in options %}({{ o.letter }}) {{ o.text }}
{% endfor %}"""
[metrics]
report = ["accuracy"]
"#;

/// `n` items over four PNGs in a manifest CSV, one of them pointing at a missing image (an
/// item error, which telemetry must leave out), and a multiple-choice task reading it.
fn write_dataset(dir: &Path, n: usize) -> PathBuf {
    let images = dir.join("data/img");
    std::fs::create_dir_all(&images).unwrap();
    for k in 0..4u8 {
        let img =
            image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 ^ k, y as u8, 60 * k]));
        img.save(images.join(format!("{k}.png"))).unwrap();
    }
    let labels = ["happiness", "sadness", "anger", "neutral"];
    let mut csv = String::from("id,image,expression\n");
    for i in 0..n {
        let image = if i == 5 {
            "img/missing.png".to_string()
        } else {
            format!("img/{}.png", i % 4)
        };
        csv.push_str(&format!("item{i:04},{image},{}\n", labels[(i * 3) % 4]));
    }
    std::fs::write(dir.join("data/set.csv"), csv).unwrap();
    let task = dir.join("expr.toml");
    std::fs::write(&task, EXPR_TASK).unwrap();
    task
}

fn run(dir: &Path, task: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = faceval();
    cmd.args(["run", "--model", "random", "--task"])
        .arg(task)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The checks every summary must pass: ordered percentiles, n as given, bounds from the values.
fn check_summary(s: &Value, values: &[f64]) {
    assert_eq!(s["n"].as_u64().unwrap() as usize, values.len(), "{s}");
    let (min, p50, p90, p95, p99, max) = (
        f(&s["min"]),
        f(&s["p50"]),
        f(&s["p90"]),
        f(&s["p95"]),
        f(&s["p99"]),
        f(&s["max"]),
    );
    assert!(
        min <= p50 && p50 <= p90 && p90 <= p95 && p95 <= p99 && p99 <= max,
        "{s}"
    );
    let vmax = values.iter().copied().fold(f64::MIN, f64::max);
    let vmin = values.iter().copied().fold(f64::MAX, f64::min);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!(
        close(max, vmax) && close(min, vmin) && close(f(&s["mean"]), mean),
        "{s} vs {values:?}"
    );
}

#[test]
fn every_run_records_telemetry_consistent_with_its_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 40);
    let out = dir.path().join("run");
    ok(&run(dir.path(), &task, &out, &["--warmup", "3"], &[]));

    let preds: Vec<Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 40);
    let answered: Vec<&Value> = preds.iter().filter(|p| p["outcome"] != "error").collect();
    assert_eq!(answered.len(), 39, "item 5 has a missing image");
    // Every answered call is timed by the runner; the first three calls are warm-up.
    for (k, p) in answered.iter().enumerate() {
        let t = &p["timings"];
        assert!(f(&t["e2e_ms"]) > 0.0 && f(&t["wall_ms"]) > 0.0, "{p}");
        assert_eq!(t["warmup"].as_bool().unwrap_or(false), k < 3, "{p}");
        let stages = ["preprocess_ms", "vision_ms", "prefill_ms", "decode_ms"];
        for s in stages {
            assert!(f(&t["e2e_ms"]) >= f(&t[s]), "e2e below {s}: {p}");
        }
        // The random baseline reports no split, and none is invented for it.
        assert!(stages.iter().all(|s| f(&t[s]) == 0.0), "{p}");
    }
    let counted: Vec<&Value> = answered
        .iter()
        .copied()
        .filter(|p| p["timings"]["warmup"] != true)
        .collect();
    let e2e: Vec<f64> = counted.iter().map(|p| f(&p["timings"]["e2e_ms"])).collect();

    let metrics = read_json(&out.join("metrics.json"));
    let tel = &metrics["telemetry"];
    assert!(tel["percentile_method"].as_str().unwrap().contains("numpy"));
    assert_eq!(tel["warmup"], 3);
    assert_eq!(tel["batch_size"], 1);
    for t in [&tel["overall"], &tel["tasks"]["expr"]] {
        assert_eq!(t["n"], 36);
        assert_eq!(t["n_warmup"], 3);
        assert_eq!(t["n_stage_timed"], 0);
        check_summary(&t["e2e_ms"], &e2e);
        for s in [
            "preprocess_ms",
            "vision_ms",
            "prefill_ms",
            "ttft_ms",
            "decode_ms",
            "tpot_ms",
        ] {
            assert!(
                t[s].is_null(),
                "{s} must be null when the model reports no split: {t}"
            );
        }
        let wall: f64 = counted
            .iter()
            .map(|p| f(&p["timings"]["wall_ms"]))
            .sum::<f64>()
            / 1e3;
        assert!(close(f(&t["wall_s"]), wall));
        assert!(close(f(&t["items_per_s"]), 36.0 / wall));
        assert!(close(f(&t["model_time_s"]), e2e.iter().sum::<f64>() / 1e3));
        assert!(
            f(&t["wall_s"]) >= f(&t["model_time_s"]),
            "the runner's time includes the calls: {t}"
        );
    }
    // Scores stay where they were, free of timings.
    assert!(metrics["tasks"]["expr"].get("telemetry").is_none());

    let mem = &tel["memory"];
    assert!(mem["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{mem}");
    assert_ne!(
        mem["peak_vram_bytes"].is_null(),
        mem["vram_unavailable_reason"].is_null(),
        "{mem}"
    );
    assert_eq!(mem["weight_bytes"], 0);

    let manifest = read_json(&out.join("manifest.json"));
    assert_eq!(manifest["resources"], *mem);
    assert_eq!(manifest["warmup"], 3);
    assert_eq!(manifest["batch_size"], 1);
    assert_eq!(
        manifest["dtype"], "none",
        "the model's own dtype is recorded"
    );
    let hw = &manifest["hardware"];
    assert!(hw["cpu_threads"].as_u64().unwrap() >= 1 && hw["rayon_threads"].as_u64().unwrap() >= 1);
    assert!(!hw["os"].as_str().unwrap().is_empty());
    if cfg!(target_os = "linux") {
        assert!(hw["cpu_model"].is_string(), "{hw}");
    }
    assert_eq!(
        hw["gpus"].as_array().unwrap().is_empty(),
        hw["nvml_unavailable_reason"].is_string(),
        "{hw}"
    );

    // `faceval score` recomputes the same telemetry from the folder alone.
    let before = metrics["telemetry"].clone();
    std::fs::remove_file(out.join("metrics.json")).unwrap();
    ok(&faceval().arg("score").arg(&out).output().unwrap());
    assert_eq!(read_json(&out.join("metrics.json"))["telemetry"], before);
}

#[test]
fn missing_nvml_is_recorded_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 8);
    let out = dir.path().join("run");
    // Point NVML at a library that does not exist: the same path as a machine without driver.
    let lib = dir.path().join("no-such/libnvidia-ml.so.1");
    ok(&run(
        dir.path(),
        &task,
        &out,
        &[],
        &[("FACEVAL_NVML_LIB", lib.to_str().unwrap())],
    ));
    let manifest = read_json(&out.join("manifest.json"));
    let res = &manifest["resources"];
    assert!(
        res["peak_vram_bytes"].is_null() && res["peak_vram_process_bytes"].is_null(),
        "{res}"
    );
    let reason = res["vram_unavailable_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("NVML not found: no NVIDIA driver"),
        "{reason}"
    );
    assert!(manifest["hardware"]["nvml_unavailable_reason"]
        .as_str()
        .unwrap()
        .starts_with("NVML not found"));
    assert!(manifest["hardware"]["gpus"].as_array().unwrap().is_empty());
    let metrics = read_json(&out.join("metrics.json"));
    assert_eq!(
        metrics["telemetry"]["memory"]["vram_unavailable_reason"],
        reason
    );
    // The default warm-up is one call per task, recorded.
    assert_eq!(metrics["telemetry"]["warmup"], 1);
    assert_eq!(metrics["telemetry"]["overall"]["n_warmup"], 1);

    // Without the override, a machine with no NVIDIA driver says so too.
    let no_driver =
        !Path::new("/proc/driver/nvidia").exists() && !Path::new("/dev/nvidiactl").exists();
    if cfg!(target_os = "linux") && no_driver {
        let out2 = dir.path().join("run2");
        ok(&run(dir.path(), &task, &out2, &[], &[]));
        let res = &read_json(&out2.join("manifest.json"))["resources"];
        let reason = res["vram_unavailable_reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("NVML"), "{res}");
    }
}

#[test]
fn bench_profiles_a_task_on_the_demo_data() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    ok(&faceval()
        .current_dir(repo_root())
        .args(["demo", "--out", demo.to_str().unwrap(), "--faces", "16"])
        .output()
        .unwrap());
    let data = demo.join("data");
    assert!(data.join("manifest.csv").is_file());
    // A task over the demo's manifest with the generic manifest reader.
    let task = dir.path().join("demo-expression.toml");
    std::fs::write(
        &task,
        r#"name = "demo-expression"
[dataset]
reader = "manifest"
path = "manifest.csv"
options = { label_column = "expression", cluster_column = "identity" }
[labels]
field = "expression"
values = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
[question]
style = "multiple_choice"
text = "What is the facial expression of the person in this image?"
template = """{{ question }}
{% for o in options %}({{ o.letter }}) {{ o.text }}
{% endfor %}Answer with the option's letter."""
[metrics]
report = ["accuracy"]
"#,
    )
    .unwrap();
    let bench = |extra: &[&str]| {
        faceval()
            .args([
                "bench",
                "--model",
                "random",
                "--task",
                task.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&[
        "--repeat", "3", "--limit", "6", "--warmup", "1", "--format", "json",
    ]);
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["repeats"].as_u64(),
            report["limit"].as_u64(),
            report["warmup"].as_u64()
        ),
        (Some(3), Some(6), Some(1))
    );
    let figure = |name: &str| -> Value {
        report["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["figure"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for name in ["e2e", "items/s", "peak RSS"] {
        let fig = figure(name);
        let values: Vec<f64> = fig["values"].as_array().unwrap().iter().map(f).collect();
        assert_eq!(values.len(), 3, "{fig}");
        assert!(values.iter().all(|v| *v > 0.0), "{fig}");
        let mean = values.iter().sum::<f64>() / 3.0;
        assert!(close(f(&fig["mean"]), mean), "{fig}");
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!(close(f(&fig["sd"]), sd), "{fig}");
    }
    // The baseline reports no stage split: those rows are empty rather than made up.
    for name in ["preprocess", "vision", "TTFT", "decode", "TPOT"] {
        assert!(figure(name)["mean"].is_null(), "{name}");
    }
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for r in runs {
        assert_eq!(r["overall"]["n"], 5, "6 items, 1 warm-up: {r}");
    }
    let vram = figure("peak VRAM");
    let reason = runs[0]["memory"]["vram_unavailable_reason"].clone();
    assert_ne!(vram["mean"].is_null(), reason.is_null(), "{vram} {reason}");
    assert!(report["hardware"]["cpu_threads"].as_u64().unwrap() >= 1);

    // The table: one row per figure.
    let out = bench(&["--repeat", "2", "--limit", "4"]);
    ok(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "| preprocess",
        "| TTFT",
        "| e2e ",
        "| TPOT",
        "| tokens/s",
        "| items/s",
        "| peak RSS",
        "| peak VRAM",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    assert!(table.contains(" ± "), "{table}");

    // Nothing left to measure is a usage error.
    let out = bench(&["--limit", "1", "--warmup", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--warmup"));
}

/// The committed tiny InternVL3 checkpoint reports its stage split: the summaries of every
/// stage, TTFT, TPOT and the decode rate must agree with the lines they come from.
#[test]
fn internvl_stage_timings_agree_with_the_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/internvl");
    std::fs::create_dir_all(dir.path().join("data/img")).unwrap();
    std::fs::copy(
        fixtures.join("images/face_448.png"),
        dir.path().join("data/img/face.png"),
    )
    .unwrap();
    let labels = ["happiness", "sadness", "anger", "neutral"];
    let mut csv = String::from("id,image,expression\n");
    for i in 0..5 {
        csv.push_str(&format!("i{i},img/face.png,{}\n", labels[i % 4]));
    }
    std::fs::write(dir.path().join("data/set.csv"), csv).unwrap();
    let task = dir.path().join("expr.toml");
    let toml = EXPR_TASK.replace(
        "{% endfor %}\"\"\"",
        "{% endfor %}\"\"\"\nmax_new_tokens = 5",
    );
    std::fs::write(&task, toml).unwrap();
    let out = dir.path().join("run");
    let mut cmd = faceval();
    cmd.args(["run", "--model"])
        .arg(fixtures.join("tiny-300m-current"))
        .arg("--task")
        .arg(&task)
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out);
    ok(&cmd.output().unwrap());

    let preds: Vec<Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 5);
    let counted: Vec<&Value> = preds
        .iter()
        .filter(|p| p["timings"]["warmup"] != true)
        .collect();
    assert_eq!(counted.len(), 4, "one warm-up call by default");
    let stage = |p: &Value, k: &str| f(&p["timings"][k]);
    let mut tpots = Vec::new();
    let (mut dec_tokens, mut dec_ms) = (0.0, 0.0);
    for p in &preds {
        let sum: f64 = ["preprocess_ms", "vision_ms", "prefill_ms", "decode_ms"]
            .iter()
            .map(|k| stage(p, k))
            .sum();
        assert!(
            stage(p, "prefill_ms") > 0.0 && stage(p, "vision_ms") > 0.0,
            "{p}"
        );
        assert!(
            stage(p, "e2e_ms") >= sum,
            "the call contains its stages: {p}"
        );
    }
    for p in &counted {
        let out_tokens = p["output_tokens"].as_u64().unwrap() as f64;
        let ttft = stage(p, "preprocess_ms") + stage(p, "vision_ms") + stage(p, "prefill_ms");
        if out_tokens >= 2.0 {
            tpots.push((stage(p, "e2e_ms") - ttft) / (out_tokens - 1.0));
            dec_tokens += out_tokens - 1.0;
            dec_ms += stage(p, "decode_ms");
        }
    }
    let t = &read_json(&out.join("metrics.json"))["telemetry"]["overall"];
    assert_eq!(
        (t["n"].as_u64(), t["n_stage_timed"].as_u64()),
        (Some(4), Some(4)),
        "{t}"
    );
    for (k, key) in [
        ("preprocess_ms", "preprocess_ms"),
        ("vision_ms", "vision_ms"),
        ("prefill_ms", "prefill_ms"),
        ("decode_ms", "decode_ms"),
        ("e2e_ms", "e2e_ms"),
    ] {
        let values: Vec<f64> = counted.iter().map(|p| stage(p, key)).collect();
        check_summary(&t[k], &values);
        assert!(f(&t["e2e_ms"]["max"]) >= f(&t[k]["max"]));
    }
    let ttfts: Vec<f64> = counted
        .iter()
        .map(|p| stage(p, "preprocess_ms") + stage(p, "vision_ms") + stage(p, "prefill_ms"))
        .collect();
    check_summary(&t["ttft_ms"], &ttfts);
    assert!(
        !tpots.is_empty(),
        "the tiny model answers with several tokens"
    );
    check_summary(&t["tpot_ms"], &tpots);
    assert!(
        close(f(&t["decode_tokens_per_s"]), dec_tokens / (dec_ms / 1e3)),
        "{t}"
    );
    let manifest = read_json(&out.join("manifest.json"));
    assert_eq!(manifest["dtype"], "f32");
    assert!(manifest["resources"]["weight_bytes"].as_u64().unwrap() > 0);

    // bench fills every stage row for a model that reports its split.
    let out = faceval()
        .args(["bench", "--model"])
        .arg(fixtures.join("tiny-300m-current"))
        .arg("--task")
        .arg(&task)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args([
            "--repeat", "2", "--limit", "3", "--warmup", "0", "--format", "json",
        ])
        .output()
        .unwrap();
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for fig in report["figures"].as_array().unwrap() {
        let measured = !fig["mean"].is_null();
        let gpu_only = fig["figure"].as_str().unwrap().starts_with("peak VRAM");
        assert!(measured || gpu_only, "{fig}");
        // Every repeat is cold: the second encodes the images again instead of finding them
        // in the first repeat's feature cache (a hit costs well under a millisecond).
        if fig["figure"] == "vision" {
            let v: Vec<f64> = fig["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(v.len(), 2, "{fig}");
            assert!(v[1] > 0.25 * v[0] && v[1] > 1.0, "{fig}");
        }
    }
}
