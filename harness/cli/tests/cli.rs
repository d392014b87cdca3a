//! End-to-end tests of the `faceval` binary: exit codes, resume after `kill -9`, sharding and
//! merge, FaceXBench import, and the demo.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{faceval, repo_root, write_dataset};

fn run_args(dir: &Path, task: &Path, out: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--model".into(),
        "random".into(),
        "--task".into(),
        task.display().to_string(),
        "--data".into(),
        dir.join("data").display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--seed".into(),
        "3".into(),
    ]
}

/// Predictions without timings, sorted by key, for comparing two runs.
fn comparable(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let mut v: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            let mut p: serde_json::Value = serde_json::from_str(l).unwrap();
            p.as_object_mut().unwrap().remove("timings");
            p
        })
        .collect();
    v.sort_by_key(|p| {
        (
            p["task"].to_string(),
            p["id"].to_string(),
            p["rotation"].to_string(),
        )
    });
    v
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn resume_after_kill_9_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    let task = write_dataset(dir.path(), n);
    let reference = dir.path().join("reference");
    let status = faceval()
        .args(run_args(dir.path(), &task, &reference))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let out = dir.path().join("killed");
    let mut child = faceval()
        .args(run_args(dir.path(), &task, &out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let preds = out.join("predictions.jsonl");
    let started = Instant::now();
    while count_lines(&preds) < 50 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let at_kill = count_lines(&preds);
    assert!(
        at_kill > 0 && at_kill < n,
        "the kill must land mid-run (had {at_kill} of {n} lines)"
    );
    assert!(!out.join("metrics.json").exists());

    let status = faceval()
        .args(run_args(dir.path(), &task, &out))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let resumed = comparable(&out);
    assert_eq!(resumed.len(), n);
    assert_eq!(
        resumed,
        comparable(&reference),
        "a resumed run must equal an uninterrupted one"
    );
    let m1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let m2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(
        m1["tasks"]["expr"]["accuracy"],
        m2["tasks"]["expr"]["accuracy"]
    );
}

#[test]
fn shards_merge_into_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 300);
    let whole = dir.path().join("whole");
    assert!(faceval()
        .args(run_args(dir.path(), &task, &whole))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let mut shards = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("shard{i}"));
        let mut args = run_args(dir.path(), &task, &out);
        args.extend(["--shard".into(), format!("{i}/3")]);
        assert!(faceval()
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success());
        shards.push(out);
    }
    let merged = dir.path().join("merged");
    let mut args: Vec<String> = vec!["merge".into()];
    args.extend(shards.iter().map(|s| s.display().to_string()));
    args.extend(["--out".into(), merged.display().to_string()]);
    let out = faceval().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(comparable(&merged), comparable(&whole));
    let read = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("metrics.json")).unwrap()).unwrap()
    };
    assert_eq!(read(&merged)["tasks"], read(&whole)["tasks"]);

    // Merging with a shard missing is refused with exit 2.
    let out = faceval()
        .args(["merge", &shards[0].display().to_string(), "--out", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

#[test]
fn input_errors_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 4);
    // Unknown task name.
    let out = faceval()
        .args([
            "run",
            "--model",
            "random",
            "--task",
            "no-such-task",
            "--data",
            ".",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task"));
    // Unknown model name.
    let out = faceval()
        .args([
            "run",
            "--model",
            "no-such-model",
            "--task",
            &task.display().to_string(),
            "--data",
            ".",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model"));
    // Malformed TOML names the file and line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[dataset\nreader = 1\n").unwrap();
    let out = faceval()
        .args(["tasks", "validate", &bad.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.toml") && text.contains("line 2"),
        "{text}"
    );
    // A data folder without the expected files.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = faceval()
        .args([
            "run",
            "--model",
            "random",
            "--task",
            &task.display().to_string(),
            "--data",
            &empty.display().to_string(),
            "--out",
        ])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set.csv"));
    // A usage error.
    let out = faceval().args(["run", "--shard", "3/2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn corrupt_image_is_an_item_error_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 8);
    std::fs::write(dir.path().join("data/img/2.png"), b"not a png at all").unwrap();
    let out_dir = dir.path().join("run");
    let out = faceval()
        .args(run_args(dir.path(), &task, &out_dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preds = comparable(&out_dir);
    let errors: Vec<_> = preds.iter().filter(|p| p["outcome"] == "error").collect();
    assert_eq!(errors.len(), 2, "items 2 and 6 use the corrupt image");
    assert!(errors[0]["error"].as_str().unwrap().contains("2.png"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(m["tasks"]["expr"]["n_errors"], 2);
    assert_eq!(m["tasks"]["expr"]["n"], 6);
    // --strict stops instead, with exit 2.
    let mut args = run_args(dir.path(), &task, &dir.path().join("strict"));
    args.push("--strict".into());
    let out = faceval().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_shipped_task_validates() {
    let out = faceval()
        .current_dir(repo_root())
        .args(["tasks", "validate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "expression-rafdb",
        "age-fairface",
        "gender-fairface",
        "race-fairface",
        "age-utkface",
        "pose-yaw",
        "forensics-deepfake",
        "facexbench",
    ] {
        assert!(
            text.contains(&format!("ok       {name} ")),
            "{name} missing from:\n{text}"
        );
    }
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let res = faceval()
        .current_dir(repo_root())
        .args(["demo", "--out", &out.display().to_string(), "--faces", "96"])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    // The demo writes the leaderboard page over its runs, and prints its path last.
    let stdout = String::from_utf8_lossy(&res.stdout);
    let page = out.join("index.html");
    assert_eq!(
        stdout.lines().last(),
        Some(page.display().to_string().as_str()),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("tiny-internvl3"));
    let board: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    assert_eq!(board["reference"], "majority");
    assert!(out.join("leaderboard.md").is_file());
    assert!(std::fs::read_dir(out.join("plots")).unwrap().count() > 0);
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("| random | expression-rafdb | 96 |"),
        "{summary}"
    );
    assert!(
        summary.contains("| majority | age-utkface | 96 |"),
        "{summary}"
    );
    for model in ["random", "majority"] {
        let run = out.join("runs").join(model);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap())
                .unwrap();
        assert!(manifest["finished"].is_string());
        let preds = std::fs::read_to_string(run.join("predictions.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(preds.lines().next().unwrap()).unwrap();
        assert_eq!(first["prompt_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(first["image_sha256"][0].as_str().unwrap().len(), 64);
        assert!(first["groups"]["skin_tone"].is_string());
    }
    // The tiny random-weight InternVL3 is written as a checkpoint and run through the real path.
    let ckpt = out.join("models/tiny-internvl3");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
    ] {
        assert!(
            ckpt.join(f).is_file(),
            "{f} missing from the demo checkpoint"
        );
    }
    assert!(
        summary.contains("| tiny-internvl3 | expression-rafdb | 32 |"),
        "{summary}"
    );
    assert!(summary.contains("chance by construction"), "{summary}");
    let run = out.join("runs/tiny-internvl3");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["kind"], "internvl");
    assert_eq!(manifest["dtype"], "f32");
    assert_eq!(
        manifest["model"]["weights_sha256"].as_str().unwrap().len(),
        64
    );
    assert!(manifest["finished"].is_string());
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(run.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!preds.is_empty());
    for p in &preds {
        // Asked as every model is asked: answers, often unparseable, never errors.
        assert_ne!(p["outcome"], "error", "{p}");
        assert!(p["output_tokens"].as_u64().unwrap() <= 16, "{p}");
        assert!(p["timings"]["e2e_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert_eq!(manifest["notes"]["demo.max_new_tokens"], "16");
    // The same task definitions as the floors, so that one leaderboard holds all three.
    let majority: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs/majority/manifest.json")).unwrap(),
    )
    .unwrap();
    let fingerprints = |m: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
        m["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    t["fingerprint"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(fingerprints(&manifest), fingerprints(&majority));
}
