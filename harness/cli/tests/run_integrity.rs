//! A run folder cannot hide a failure: rerunning retries the questions recorded as `error`
//! (the new line supersedes the old one for every reader), and predictions written by other
//! tools are read with defaults for every optional field.

mod common;
use common::{faceval, read_predictions, write_dataset};

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(dir: &Path, task: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = faceval()
        .args(["run", "--model", "random", "--task"])
        .arg(task)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn metrics(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn a_rerun_retries_errors_and_the_last_line_counts() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 40);
    // Items 3, 7, 11, ... use img/3.png: take it away, as a flaky network share would.
    let image = dir.path().join("data/img/3.png");
    let saved = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    let out = dir.path().join("run");
    run(dir.path(), &task, &out, &[]);
    let first = read_predictions(&out);
    let errors: Vec<&Value> = first.iter().filter(|p| p["outcome"] == "error").collect();
    assert_eq!(errors.len(), 10, "{first:?}");
    assert_eq!(metrics(&out)["tasks"]["expr"]["n_errors"], 10);

    // --no-retry-errors keeps them: nothing is asked.
    let o = run(dir.path(), &task, &out, &["--no-retry-errors"]);
    assert_eq!(read_predictions(&out).len(), 40);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("asked 0 questions, resumed 40"), "{said}");

    // The image is back: the rerun asks the 10 again and appends their answers.
    std::fs::write(&image, saved).unwrap();
    let o = run(dir.path(), &task, &out, &[]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("asked 10 questions, resumed 30, retried 10 earlier errors (0 still fail), 0 item errors"),
        "{said}"
    );
    let lines = read_predictions(&out);
    assert_eq!(
        lines.len(),
        50,
        "the old error lines stay; the new ones follow"
    );
    let m = metrics(&out);
    assert_eq!(m["tasks"]["expr"]["n_errors"], 0, "{m}");
    assert_eq!(m["tasks"]["expr"]["n"], 40, "{m}");

    // Every reader takes the last line: the run equals one that never failed.
    let clean = dir.path().join("clean");
    run(dir.path(), &task, &clean, &[]);
    let answers = |lines: &[Value]| -> std::collections::BTreeMap<String, Value> {
        lines
            .iter()
            .map(|p| (p["id"].as_str().unwrap().to_string(), p["parsed"].clone()))
            .collect()
    };
    assert_eq!(answers(&lines), answers(&read_predictions(&clean)));
    assert_eq!(
        metrics(&out)["tasks"]["expr"]["accuracy"],
        metrics(&clean)["tasks"]["expr"]["accuracy"]
    );
    // The gate and the report read it the same way.
    let o = faceval()
        .args(["gate", "--format", "json", "--baseline"])
        .arg(&clean)
        .arg("--candidate")
        .arg(&out)
        .args(["--allow-partial"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert_eq!(v["tasks"][0]["n"], 40, "{}", text(&o));
    assert_eq!(v["tasks"][0]["new_errors"], 0, "{}", text(&o));
    let report = dir.path().join("report");
    let o = faceval()
        .arg("report")
        .arg(&out)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("leaderboard.json")).unwrap())
            .unwrap();
    assert!(board.to_string().contains("\"n\":40"), "{board}");
}

#[test]
fn predictions_from_other_tools_need_only_the_required_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("other-tool");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("manifest.json"),
        json!({
            "model": {"name": "other-tool"},
            "tasks": [{"name": "expr", "version": "1", "fingerprint": "f", "style": "multiple_choice",
                       "labels": ["happiness", "sadness"]}],
            "finished": "2026-12-01T00:00:00Z"
        })
        .to_string(),
    )
    .unwrap();
    // No timings, token counts, fields, cluster, rotation or labels; `outcome` or only
    // `correct`.
    let lines = [
        json!({"id": "a", "task": "expr", "parsed": "A", "target": "A", "outcome": "correct", "correct": true}),
        json!({"id": "b", "task": "expr", "parsed": "B", "target": "A", "correct": false}),
        json!({"id": "c", "task": "expr", "parsed": null, "target": "A", "correct": false}),
        json!({"id": "d", "task": "expr", "parsed": null, "target": "A", "correct": null}),
        json!({"id": "e", "task": "expr", "parsed": "A", "target": "A", "correct": true, "timings": {"e2e_ms": 5.0}}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(out.join("predictions.jsonl"), body).unwrap();
    let o = faceval().arg("score").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let m = metrics(&out);
    let t = &m["tasks"]["expr"];
    assert_eq!(t["n"], 4, "{m}");
    assert_eq!(t["n_errors"], 1, "{m}");
    assert_eq!(t["n_unparseable"], 1, "{m}");
    assert!(
        (t["accuracy"]["estimate"].as_f64().unwrap() - 0.5).abs() < 1e-12,
        "{m}"
    );

    // A required field missing: the error names the file, line and field, exit 2.
    let bad = json!({"id": "f", "task": "expr", "target": "A", "outcome": "wrong"});
    std::fs::write(
        out.join("predictions.jsonl"),
        format!("{}\n{bad}\n", lines[0]),
    )
    .unwrap();
    std::fs::remove_file(out.join("metrics.json")).unwrap();
    let o = faceval().arg("score").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("predictions.jsonl:2") && err.contains("parsed"),
        "{err}"
    );
    // Neither `outcome` nor `correct`.
    let bad = json!({"id": "f", "task": "expr", "parsed": "A", "target": "A"});
    std::fs::write(out.join("predictions.jsonl"), format!("{bad}\n")).unwrap();
    let o = faceval().arg("score").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("outcome"),
        "{}",
        text(&o)
    );
}
