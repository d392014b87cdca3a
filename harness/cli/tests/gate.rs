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

/// How a crafted run ends question i.
#[derive(Clone, Copy, PartialEq)]
enum Ans {
    Right,
    Wrong,
    /// An item error (a server that refused the request, a corrupt image).
    Error,
}

/// A crafted run folder: one multiple-choice task whose questions `ids` end as `answer(i)`;
/// groups alternate Male/Female. No metrics.json: the gate recomputes it.
struct Crafted<'a> {
    task: &'a str,
    fingerprint: &'a str,
    /// The model's fingerprint in the manifest.
    model: &'a str,
    finished: bool,
}

impl Default for Crafted<'_> {
    fn default() -> Self {
        Crafted {
            task: "expr",
            fingerprint: "f",
            model: "m",
            finished: true,
        }
    }
}

impl Crafted<'_> {
    fn write(
        &self,
        dir: &Path,
        ids: impl IntoIterator<Item = usize>,
        answer: impl Fn(usize) -> Ans,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = json!({
            "format": 1,
            "model": {"name": dir.file_name().unwrap().to_string_lossy(), "fingerprint": self.model},
            "tasks": [{"name": self.task, "version": "1", "fingerprint": self.fingerprint, "style": "multiple_choice",
                       "labels": ["happiness", "sadness"], "groups": ["gender"], "breakdown": [], "circular": false}],
            "seed": 0,
            "started": "2026-12-01T00:00:00Z",
            "finished": if self.finished { json!("2026-12-01T01:00:00Z") } else { Value::Null },
        });
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest).unwrap(),
        )
        .unwrap();
        let mut lines = String::new();
        for i in ids {
            let truth = ["happiness", "sadness"][i % 2];
            let gender = ["Male", "Female"][(i / 2) % 2];
            let mut p = json!({
                "id": format!("item{i:05}"), "task": self.task, "rotation": 0,
                "prompt_sha256": "p".repeat(64),
                "target": "A", "target_label": truth,
                "groups": {"gender": gender}
            });
            match answer(i) {
                Ans::Error => {
                    p["parsed"] = Value::Null;
                    p["correct"] = Value::Null;
                    p["outcome"] = json!("error");
                    p["error"] =
                        json!("http://127.0.0.1:8000/v1/chat/completions answered HTTP 500");
                }
                a => {
                    let ok = a == Ans::Right;
                    p["parsed"] = json!(if ok { "A" } else { "B" });
                    p["parsed_label"] = json!(if ok {
                        truth
                    } else {
                        ["sadness", "happiness"][i % 2]
                    });
                    p["raw_output"] = json!(if ok { "A" } else { "B" });
                    p["correct"] = json!(ok);
                    p["outcome"] = json!(if ok { "correct" } else { "wrong" });
                }
            }
            lines.push_str(&p.to_string());
            lines.push('\n');
        }
        std::fs::write(dir.join("predictions.jsonl"), lines).unwrap();
    }
}

/// A finished run of `n` questions, question `i` right when `correct(i)`.
fn write_run(dir: &Path, task: &str, fingerprint: &str, n: usize, correct: impl Fn(usize) -> bool) {
    Crafted {
        task,
        fingerprint,
        ..Default::default()
    }
    .write(
        dir,
        0..n,
        |i| if correct(i) { Ans::Right } else { Ans::Wrong },
    );
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
    check(v, "accuracy")
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
fn the_runners_per_task_latency_is_used_over_the_run_wide_figure() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    write_run(&base, "expr", "f", 300, |i| i % 3 != 0);
    write_run(&cand, "expr", "f", 300, |i| i % 3 != 0);
    // metrics.json as the runner writes it (docs/run-format.md): per-task telemetry under
    // `telemetry.tasks.<name>`. The task's p95 goes 100 ms → 150 ms while the run-wide
    // figure stays 100 ms, so only the per-task figure shows the regression.
    let summary = |p95: f64| {
        json!({"n": 300, "mean": 80.0, "min": 50.0, "p50": 80.0, "p90": 95.0,
               "p95": p95, "p99": p95, "max": p95})
    };
    let metrics = |task_p95: f64| {
        json!({"model": "x", "tasks": {"expr": {"task": "expr", "version": "1", "n": 300}},
               "telemetry": {"overall": {"n": 300, "e2e_ms": summary(100.0)},
                             "tasks": {"expr": {"n": 300, "e2e_ms": summary(task_p95)}},
                             "memory": {"peak_vram_bytes": 4_000_000_000u64}}})
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
        .unwrap_or_else(|| panic!("no per-task latency check: {all}"));
    assert_eq!(lat["status"], "regression", "{all}");
    assert!((lat["telemetry"]["relative_change"].as_f64().unwrap() - 0.5).abs() < 1e-12);
    assert!(
        !v["run_checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "latency_p95"),
        "the run-wide latency is not checked when tasks have their own: {all}"
    );
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

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["tasks"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {v}"))
}

fn run_check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["run_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no run check {name}: {v}"))
}

#[test]
fn a_candidate_whose_every_answer_is_an_error_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    write_run(&base, "expr", "f", 100, |i| i % 10 < 8);
    // A server that rejected every request.
    Crafted::default().write(&cand, 0..100, |_| Ans::Error);
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(1), "{all}");
    let t = &v["tasks"][0];
    assert_eq!(t["new_errors"], 100, "{all}");
    assert_eq!(t["new_errors_baseline_right"], 80);
    // Errors are outcomes: paired as wrong answers, not dropped.
    assert_eq!(t["n"], 100);
    assert_eq!(check(&v, "errors")["status"], "regression");
    let acc = check(&v, "accuracy");
    assert_eq!(acc["status"], "regression", "{all}");
    assert_eq!(acc["accuracy"]["candidate_accuracy"], 0.0);
    assert_eq!(acc["accuracy"]["counts"]["only_second"], 80);
    assert_eq!(check(&v, "completeness")["status"], "pass");
    // The readable outputs say so.
    let out = gate(&base, &cand, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "100 new errors on questions the baseline answered (80 of them right in the baseline)"
        ),
        "{text}"
    );
}

#[test]
fn a_candidate_with_5_of_100_questions_is_incomplete_unless_partial_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    write_run(&base, "expr", "f", 100, |i| i % 10 < 8);
    // A run that stopped after 5 questions, although its manifest says it finished (a
    // wrong --limit does exactly that).
    Crafted::default().write(&cand, 0..5, |i| {
        if i % 10 < 8 {
            Ans::Right
        } else {
            Ans::Wrong
        }
    });
    let junit = dir.path().join("gate.xml");
    let (code, v, all) = gate_json(&base, &cand, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(v["tasks"][0]["missing"], 95);
    let c = check(&v, "completeness");
    assert_eq!(c["status"], "incomplete");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("lacks 95 of the 100 questions"),
        "{c}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("type=\"incomplete\""), "{xml}");
    // --allow-partial compares the 5 shared questions (all as in the baseline) and passes,
    // stating how many are missing.
    let (code, v, all) = gate_json(&base, &cand, &["--allow-partial"]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(v["tasks"][0]["n"], 5);
    let c = check(&v, "completeness");
    assert_eq!(c["status"], "incomplete");
    assert!(
        c["message"].as_str().unwrap().contains("lacks 95")
            && c["message"]
                .as_str()
                .unwrap()
                .contains("only the shared questions"),
        "{c}"
    );
    assert_eq!(v["passed"], true);
    let out = gate(&base, &cand, &["--allow-partial"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("incomplete⚠") && text.contains("95 missing"),
        "{text}"
    );
    // The same through gate.toml.
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "require_complete = false\n").unwrap();
    let (code, _, all) = gate_json(&base, &cand, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{all}");

    // Every question present, but the manifest says the run never finished.
    let unfinished = dir.path().join("unfinished");
    Crafted {
        finished: false,
        ..Default::default()
    }
    .write(&unfinished, 0..100, |i| {
        if i % 10 < 8 {
            Ans::Right
        } else {
            Ans::Wrong
        }
    });
    let (code, v, all) = gate_json(&base, &unfinished, &[]);
    assert_eq!(code, Some(1), "{all}");
    let c = run_check(&v, "completeness");
    assert_eq!(c["status"], "incomplete");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("no `finished` time"),
        "{c}"
    );
    let (code, _, all) = gate_json(&base, &unfinished, &["--allow-partial"]);
    assert_eq!(code, Some(0), "{all}");
}

#[test]
fn ten_new_errors_where_the_baseline_was_right_are_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    let base_answer = |i: usize| if i % 10 < 8 { Ans::Right } else { Ans::Wrong };
    Crafted::default().write(&base, 0..1000, base_answer);
    // The candidate times out on 10 questions the baseline got right; all else equal.
    let failed = |i: usize| i.is_multiple_of(10) && i < 100;
    Crafted::default().write(&cand, 0..1000, |i| {
        if failed(i) {
            Ans::Error
        } else {
            base_answer(i)
        }
    });
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(1), "{all}");
    let e = check(&v, "errors");
    assert_eq!(e["status"], "regression", "{all}");
    assert_eq!(v["tasks"][0]["new_errors"], 10);
    assert_eq!(v["tasks"][0]["new_errors_baseline_right"], 10);
    // In the accuracy comparison they are 10 questions only the baseline got right.
    let acc = &check(&v, "accuracy")["accuracy"];
    assert_eq!(acc["counts"]["only_second"], 10);
    assert_eq!(acc["counts"]["only_first"], 0);
    assert_eq!(v["tasks"][0]["n"], 1000);
    // Tolerating 10 new errors (per task in gate.toml) lets the errors check pass.
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "max_drop = 2.0\n[task.expr]\nmax_new_errors = 10\n").unwrap();
    let (code, v, all) = gate_json(&base, &cand, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(check(&v, "errors")["status"], "pass", "{all}");
    assert_eq!(code, Some(0), "{all}");
}

#[test]
fn errors_in_both_runs_are_reported_and_not_counted_against_the_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    // Ten questions whose image is corrupt: an error whoever answers.
    let answer = |i: usize| {
        if i % 10 == 3 {
            Ans::Error
        } else if i % 10 < 8 {
            Ans::Right
        } else {
            Ans::Wrong
        }
    };
    Crafted::default().write(&base, 0..100, answer);
    Crafted::default().write(&cand, 0..100, answer);
    let (code, v, all) = gate_json(&base, &cand, &[]);
    assert_eq!(code, Some(0), "{all}");
    let t = &v["tasks"][0];
    assert_eq!(t["errors_in_both"], 10);
    assert_eq!(t["new_errors"], 0);
    assert_eq!(t["n"], 90);
    assert_eq!(t["missing"], 0);
    let e = check(&v, "errors");
    assert_eq!(e["status"], "pass");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("10 errors in both runs are not counted"),
        "{e}"
    );
    assert_eq!(check(&v, "completeness")["status"], "pass");
}

#[test]
fn every_output_states_the_smallest_detectable_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    // 200 questions, 4 discordant: too few to see a 1-point drop (underpowered, a warning).
    write_run(&base, "expr", "f", 200, |i| i % 10 < 8);
    write_run(&cand, "expr", "f", 200, |i| {
        (i % 10 < 8 && ![0, 10, 20].contains(&i)) || i == 9
    });
    let (junit, md) = (dir.path().join("g.xml"), dir.path().join("g.md"));
    let (code, v, all) = gate_json(
        &base,
        &cand,
        &[
            "--junit",
            junit.to_str().unwrap(),
            "--markdown",
            md.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{all}");
    let sentence = v["power"].as_str().unwrap().to_string();
    assert!(
        sentence
            .starts_with("The smallest true accuracy drop this comparison detects with 80% power")
            && sentence.contains("expr ")
            && sentence.contains("(n = 200)"),
        "{sentence}"
    );
    let drop = v["tasks"][0]["detectable_drop"].as_f64().unwrap();
    // max_drop (1 point) plus the MDE at 4 discordant pairs in 200.
    let mde = accuracy_check(&v)["accuracy"]["minimum_detectable_effect"]
        .as_f64()
        .unwrap();
    assert!((drop - (1.0 + 100.0 * mde)).abs() < 1e-9, "{drop} vs {mde}");
    assert!(
        sentence.contains(&format!("{drop:.1} points")),
        "{sentence}"
    );
    let text = String::from_utf8_lossy(&gate(&base, &cand, &[]).stdout).to_string();
    assert!(text.contains(&sentence), "{text}");
    assert!(std::fs::read_to_string(&md).unwrap().contains(&sentence));
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("The smallest true accuracy drop"));
    // Identical runs have no discordant pair: the statement is still made (an upper bound).
    let (_, v, _) = gate_json(&base, &base, &[]);
    assert!(
        v["tasks"][0]["detectable_drop"].as_f64().unwrap() > 1.0,
        "{v}"
    );
    // --strict makes an underpowered check fail.
    let (code, v, all) = gate_json(&base, &cand, &["--strict"]);
    assert_eq!(check(&v, "accuracy")["status"], "underpowered", "{all}");
    assert_eq!(code, Some(1), "{all}");
}

#[test]
fn two_different_models_with_the_same_outputs_carry_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    let answer = |i: usize| if i % 10 < 8 { Ans::Right } else { Ans::Wrong };
    Crafted::default().write(&base, 0..200, answer);
    // A new checkpoint, answered by the old one's server or cache: every byte the same.
    Crafted {
        model: "new-checkpoint",
        ..Default::default()
    }
    .write(&cand, 0..200, answer);
    let (junit, md) = (dir.path().join("g.xml"), dir.path().join("g.md"));
    let (code, v, all) = gate_json(
        &base,
        &cand,
        &[
            "--junit",
            junit.to_str().unwrap(),
            "--markdown",
            md.to_str().unwrap(),
        ],
    );
    // A warning, not a failure.
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(v["same_outputs"]["suspect"], true);
    assert_eq!(v["same_outputs"]["identical"], 200);
    let notice = v["notices"][0].as_str().unwrap();
    assert!(
        notice.contains("same server") && notice.contains("stale") && notice.contains("200 of 200"),
        "{notice}"
    );
    let text = String::from_utf8_lossy(&gate(&base, &cand, &[]).stdout).to_string();
    assert!(
        text.contains("WARNING: The two runs come from different models"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&md).unwrap().contains("stale"));
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("WARNING: The two runs"));
    // The same model twice is no surprise.
    let (_, v, _) = gate_json(&base, &base, &[]);
    assert_eq!(v["notices"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_per_task_overrides_are_input_errors_that_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    write_run(&base, "expr", "f", 100, |i| i % 2 == 0);
    let cfg = dir.path().join("gate.toml");
    for (toml, key) in [
        (
            "[task.expr]\nfairness_tolerance = nan\n",
            "task.expr.fairness_tolerance",
        ),
        (
            "[task.expr]\nfairness_tolerance = -1.0\n",
            "task.expr.fairness_tolerance",
        ),
        ("[task.expr]\nmax_drop = nan\n", "task.expr.max_drop"),
        ("[task.expr]\nmax_drop = -2.0\n", "task.expr.max_drop"),
        ("[task.expr]\nmax_new_errors = -1\n", "max_new_errors"),
        (
            "[task.expr]\nfairness_tolerence = 2.0\n",
            "fairness_tolerence",
        ),
    ] {
        std::fs::write(&cfg, toml).unwrap();
        let out = gate(&base, &base, &["--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{toml}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key) && err.contains("gate.toml"),
            "{toml}: {err}"
        );
    }
}
