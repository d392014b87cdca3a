//! End-to-end tests of `faceval gate` and `faceval audit` on run folders whose right answer is
//! known: a real drop, a drop within noise, identical runs, a latency regression, runs that
//! cannot be compared, a bad gate.toml, and a merged sharded run against the unsharded one.

mod common;
use common::{faceval, repo_root, write_dataset};

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{json, Value};

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A run folder with one multiple-choice task `expr` whose question `i` is answered right
/// when `correct(i)`; groups alternate Male/Female. No metrics.json: the gate recomputes it.
fn write_run(dir: &Path, task: &str, fingerprint: &str, n: usize, correct: impl Fn(usize) -> bool) {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = json!({
        "format": 1,
        "model": {"name": dir.file_name().unwrap().to_string_lossy(), "fingerprint": "m"},
        "tasks": [{"name": task, "version": "1", "fingerprint": fingerprint, "style": "multiple_choice",
                   "labels": ["happiness", "sadness"], "groups": ["gender"], "breakdown": [], "circular": false}],
        "seed": 0
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let mut lines = String::new();
    for i in 0..n {
        let ok = correct(i);
        let truth = ["happiness", "sadness"][i % 2];
        let said = if ok {
            truth
        } else {
            ["sadness", "happiness"][i % 2]
        };
        let gender = ["Male", "Female"][(i / 2) % 2];
        let p = json!({
            "id": format!("item{i:05}"), "task": task, "rotation": 0,
            "prompt_sha256": "p".repeat(64),
            "parsed": if ok { "A" } else { "B" }, "target": "A",
            "parsed_label": said, "target_label": truth,
            "correct": ok, "outcome": if ok { "correct" } else { "wrong" },
            "groups": {"gender": gender}
        });
        lines.push_str(&p.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("predictions.jsonl"), lines).unwrap();
}

fn gate(base: &Path, cand: &Path, extra: &[&str]) -> Output {
    faceval()
        .args(["gate", "--baseline"])
        .arg(base)
        .arg("--candidate")
        .arg(cand)
        .args(extra)
        .output()
        .unwrap()
}

fn gate_json(base: &Path, cand: &Path, extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let out = gate(base, cand, &args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, text(&out))
}

fn accuracy_check(v: &Value) -> &Value {
    v["tasks"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "accuracy")
        .unwrap()
}

#[test]
fn a_real_drop_fails_with_exit_1_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    // 2,000 questions: 80% → 70%, the candidate losing 200 questions the baseline had.
    write_run(&base, "expr", "f", 2000, |i| i % 10 < 8);
    write_run(&cand, "expr", "f", 2000, |i| i % 10 < 7);
    let junit = dir.path().join("out/gate.xml");
    let md = dir.path().join("summary.md");
    let html = dir.path().join("gate.html");
    let (code, v, all) = gate_json(
        &base,
        &cand,
        &[
            "--junit",
            junit.to_str().unwrap(),
            "--markdown",
            md.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{all}");
    let acc = accuracy_check(&v);
    assert_eq!(acc["status"], "regression");
    let a = &acc["accuracy"];
    assert!((a["delta"]["estimate"].as_f64().unwrap() + 0.10).abs() < 1e-12);
    assert_eq!(a["counts"]["only_second"], 200); // only the baseline right
    assert_eq!(a["counts"]["only_first"], 0);
    assert!(a["mcnemar"]["p_value"].as_f64().unwrap() < 1e-30);
    assert!(a["upper_bound"].as_f64().unwrap() < -0.01);
    assert_eq!(v["passed"], false);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains("<testcase classname=\"faceval.gate.expr\" name=\"accuracy\""));
    assert!(xml.contains("<failure") && xml.contains("failures=\"1\""));
    assert!(std::fs::read_to_string(&md).unwrap().contains("❌ fail"));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<html") && page.contains("expr"), "gate page");
    assert!(!page.contains("PASS — no regression"));
    // The text table says so too.
    let out = gate(&base, &cand, &[]);
    assert_eq!(out.status.code(), Some(1));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("REGRESSION") && t.contains("FAIL"), "{t}");
}

#[test]
fn a_drop_within_noise_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    // 200 questions: the candidate loses 3 and gains 1 (−1 point), well within noise.
    write_run(&base, "expr", "f", 200, |i| i % 10 < 8);
    write_run(&cand, "expr", "f", 200, |i| {
        (i % 10 < 8 && ![0, 10, 20].contains(&i)) || i == 9
    });
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(0), "{all}");
    let acc = accuracy_check(&v);
    // 200 questions cannot show a 1-point drop: a warning, not a failure, by default.
    assert_eq!(acc["status"], "underpowered", "{all}");
    let a = &acc["accuracy"];
    assert!((a["delta"]["estimate"].as_f64().unwrap() + 0.01).abs() < 1e-12);
    assert!(a["p_value"].as_f64().unwrap() > 0.05);
    assert!(a["minimum_detectable_effect"].as_f64().unwrap() > 0.01);
    assert_eq!(v["warnings"], 1);
    // The same runs fail when underpowered checks are configured to fail.
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "fail_on_underpowered = true\n").unwrap();
    let (code, _, all) = gate_json(&base, &cand, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{all}");
}

#[test]
fn identical_runs_have_p_1_and_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    write_run(&base, "expr", "f", 300, |i| i % 3 != 0);
    write_run(&cand, "expr", "f", 300, |i| i % 3 != 0);
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(0), "{all}");
    let a = &accuracy_check(&v)["accuracy"];
    assert_eq!(a["mcnemar"]["p_value"], 1.0);
    assert_eq!(a["p_value"], 1.0);
    assert!(a["minimum_detectable_effect"].is_null());
    assert_eq!(accuracy_check(&v)["status"], "pass");
}

#[test]
fn latency_regression_fails_only_when_telemetry_is_present() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    write_run(&base, "expr", "f", 300, |i| i % 3 != 0);
    write_run(&cand, "expr", "f", 300, |i| i % 3 != 0);
    // Without telemetry: not measured, never a failure.
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(0), "{all}");
    let lat = v["run_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "latency_p95")
        .unwrap();
    assert_eq!(lat["status"], "not_measured");
    // metrics.json with telemetry (docs/telemetry.md): p95 100 ms → 150 ms, VRAM unchanged.
    let metrics = |p95: f64| {
        json!({"model": "x", "tasks": {"expr": {"task": "expr", "version": "1", "n": 300,
            "telemetry": {"n": 300, "e2e_ms": {"n": 300, "mean": 80.0, "min": 50.0, "p50": 80.0, "p90": 95.0,
                                                "p95": p95, "p99": p95, "max": p95}}}},
              "telemetry": {"memory": {"peak_vram_bytes": 4_000_000_000u64}}})
    };
    std::fs::write(base.join("metrics.json"), metrics(100.0).to_string()).unwrap();
    std::fs::write(cand.join("metrics.json"), metrics(150.0).to_string()).unwrap();
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(1), "{all}");
    let lat = v["tasks"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "latency_p95")
        .unwrap();
    assert_eq!(lat["status"], "regression", "{all}");
    assert!((lat["telemetry"]["relative_change"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    let vram = v["run_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "peak_vram")
        .unwrap();
    assert_eq!(vram["status"], "pass");
    // A looser tolerance lets it pass.
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "latency_tolerance = 0.6\n").unwrap();
    let (code, _, all) = gate_json(&base, &cand, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{all}");
}

#[test]
fn runs_that_cannot_be_compared_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    write_run(&base, "expr", "f", 100, |i| i % 2 == 0);
    // Different tasks.
    let other = dir.path().join("other");
    write_run(&other, "pose", "g", 100, |i| i % 2 == 0);
    let out = gate(&base, &other, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("share no task"),
        "{}",
        text(&out)
    );
    // Same task name, another definition.
    let changed = dir.path().join("changed");
    write_run(&changed, "expr", "f2", 100, |i| i % 2 == 0);
    let out = gate(&base, &changed, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different task definitions"),
        "{}",
        text(&out)
    );
    // No shared items.
    let disjoint = dir.path().join("disjoint");
    write_run(&disjoint, "expr", "f", 100, |i| i % 2 == 0);
    let preds = std::fs::read_to_string(disjoint.join("predictions.jsonl")).unwrap();
    std::fs::write(
        disjoint.join("predictions.jsonl"),
        preds.replace("\"item", "\"other"),
    )
    .unwrap();
    let out = gate(&base, &disjoint, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("share no question"),
        "{}",
        text(&out)
    );
    // Different prompts on shared items.
    let reprompted = dir.path().join("reprompted");
    write_run(&reprompted, "expr", "f", 100, |i| i % 2 == 0);
    let preds = std::fs::read_to_string(reprompted.join("predictions.jsonl")).unwrap();
    std::fs::write(
        reprompted.join("predictions.jsonl"),
        preds.replace(&"p".repeat(64), &"q".repeat(64)),
    )
    .unwrap();
    let out = gate(&base, &reprompted, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different prompts"),
        "{}",
        text(&out)
    );
    // An unknown gate.toml key names the key and lists the valid ones.
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "max_drop = 1.0\nmax_dorp = 2.0\n").unwrap();
    let out = gate(&base, &base, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_dorp") && err.contains("fairness_tolerance") && err.contains("gate.toml"),
        "{err}"
    );
    // A missing run folder.
    let out = gate(&base, &dir.path().join("nope"), &[]);
    assert_eq!(out.status.code(), Some(2));
}

fn run(dir: &Path, task: &Path, out: &Path, seed: &str, shard: Option<String>) {
    let mut cmd = faceval();
    cmd.current_dir(repo_root())
        .args(["run", "--model", "random", "--task"])
        .arg(task);
    cmd.arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(["--seed", seed]);
    if let Some(s) = shard {
        cmd.args(["--shard", &s]);
    }
    let o = cmd.stdout(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_merged_sharded_run_gates_like_the_unsharded_one() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 600);
    let base = dir.path().join("base");
    run(dir.path(), &task, &base, "1", None);
    let whole = dir.path().join("whole");
    run(dir.path(), &task, &whole, "2", None);
    let mut shards = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("shard{i}"));
        run(dir.path(), &task, &out, "2", Some(format!("{i}/3")));
        shards.push(out);
    }
    let merged = dir.path().join("merged");
    let o = faceval()
        .arg("merge")
        .args(&shards)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Latency differs between any two runs; this test is about accuracy and fairness.
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        "latency_tolerance = 1e9\nvram_tolerance = 1e9\nmin_group = 20\n",
    )
    .unwrap();
    let c = ["--config", cfg.to_str().unwrap()];
    let (code_whole, v_whole, all) = gate_json(&base, &whole, &c);
    assert!(code_whole == Some(0) || code_whole == Some(1), "{all}");
    let (code_merged, v_merged, all) = gate_json(&base, &merged, &c);
    assert_eq!(code_merged, code_whole, "{all}");
    let strip = |v: &Value| -> Vec<Value> {
        v["tasks"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["name"] == "accuracy" || c["name"].as_str().unwrap().starts_with("fairness:")
            })
            .cloned()
            .collect()
    };
    assert_eq!(strip(&v_merged), strip(&v_whole));
    assert_eq!(v_merged["tasks"][0]["n"], 600);
    assert!(
        strip(&v_whole).len() == 2,
        "accuracy and fairness:gender: {v_whole}"
    );
    // A run against itself passes with p = 1.
    let (code, v, all) = gate_json(&merged, &whole, &c);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(accuracy_check(&v)["accuracy"]["mcnemar"]["p_value"], 1.0);
}

#[test]
fn audit_reports_groups_and_rejects_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    // Men right 90% of the time, women 60%: a gap of 30 points on 2,000 questions.
    write_run(&base, "expr", "f", 2000, |i| {
        if (i / 2) % 2 == 0 {
            i % 10 != 0
        } else {
            i % 10 < 6
        }
    });
    let out = faceval()
        .arg("audit")
        .arg(&base)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &v["runs"][0]["tasks"][0]["groupings"][0];
    assert_eq!(g["name"], "gender");
    let gap = g["measures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "difference_between_groups")
        .unwrap();
    assert!(
        (gap["estimate"].as_f64().unwrap() - 0.30).abs() < 1e-12,
        "{gap}"
    );
    assert!(gap["low"].as_f64().unwrap() < 0.30 && gap["high"].as_f64().unwrap() > 0.30);
    assert!(g["p_holm"].as_f64().unwrap() < 1e-10);
    // Two labels: fairlearn's binary measures with `sadness` (the second label) as positive.
    assert_eq!(v["runs"][0]["tasks"][0]["positive_label"], "sadness");
    assert!(g["binary"]["measures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "equalized_odds_difference"));
    // Markdown is the default.
    let out = faceval()
        .arg("audit")
        .arg(&base)
        .args(["--min-group", "5000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        md.contains("# Fairness audit")
            && md.contains("⚠ small")
            && md.contains("no group is large enough"),
        "{md}"
    );
    // --html writes a self-contained page through the report crate.
    let html = dir.path().join("audit.html");
    let out = faceval()
        .arg("audit")
        .arg(&base)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.to_lowercase().contains("<html") && page.contains("difference_between_groups"));
    // Unknown field: exit 2, listing the available ones.
    let out = faceval()
        .arg("audit")
        .arg(&base)
        .args(["--by", "hair"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hair") && err.contains("available fields: gender"),
        "{err}"
    );
    // Runs of one task with different fingerprints are refused.
    let other = dir.path().join("other");
    write_run(&other, "expr", "g", 100, |i| i % 2 == 0);
    let out = faceval()
        .arg("audit")
        .arg(&base)
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be compared"),
        "{}",
        text(&out)
    );
}
