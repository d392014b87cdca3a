//! `faceval overlap` on committed images with known copies and near misses
//! (`harness/eval/tests/fixtures/overlap`, written by `tools/make_overlap_fixtures.py`): it
//! finds exactly the copies (exact pixels, JPEG re-encodings, ±10% resizes, PNG↔JPEG) and
//! none of the near misses (another crop, a mirror, another face, another photograph).

mod common;

use std::path::PathBuf;

use common::faceval;
use serde_json::Value;

fn fixtures() -> PathBuf {
    common::repo_root().join("harness/eval/tests/fixtures/overlap")
}

const TASK: &str = r#"
name = "overlap-probe"
version = "1"
description = "folders reader over the overlap fixtures"

[dataset]
reader = "folders"
path = "benchmark"

[labels]
field = "class"
values = ["a", "b"]

[question]
style = "multiple_choice"
text = "Which class?"
template = "{{ question }}"
"#;

#[test]
fn finds_every_copy_and_no_near_miss() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("overlap-probe.toml");
    std::fs::write(&task, TASK).unwrap();
    let out = dir.path().join("overlap.json");
    let res = faceval()
        .current_dir(dir.path())
        .args(["overlap", "--reference"])
        .arg(fixtures().join("reference"))
        .arg("--data")
        .arg(fixtures())
        .arg("--task")
        .arg(&task)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let summary_line = stdout.lines().next().unwrap_or_default().to_string();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    let matches = report["matches"].as_array().unwrap();
    for (file, want) in expected.as_object().unwrap() {
        let found = matches
            .iter()
            .find(|m| m["image"].as_str().unwrap().ends_with(file.as_str()));
        eprintln!(
            "{file:22} want {:5} got {}",
            want["kind"].as_str().unwrap(),
            found.map_or("none".to_string(), |m| format!(
                "{} {} distance {}",
                m["kind"], m["reference"], m["distance"]
            ))
        );
        match (want["kind"].as_str().unwrap(), found) {
            ("miss", None) => {}
            ("miss", Some(m)) => panic!("{file}: a near miss was matched: {m}"),
            (_, None) => panic!("{file}: a copy was not found"),
            (kind, Some(m)) => {
                assert_eq!(m["kind"], kind, "{file}");
                let reference = want["reference"].as_str().unwrap();
                assert!(
                    m["reference"].as_str().unwrap().ends_with(reference),
                    "{file}: {m}"
                );
                assert_eq!(m["task"], "overlap-probe");
                assert!(
                    m["item_id"].as_str().unwrap().starts_with("folders:"),
                    "{m}"
                );
            }
        }
    }
    assert_eq!(
        summary_line,
        "overlap-probe: 6 of 10 items show a reference image (2 exact, 4 near, of 10 images)"
    );
    assert_eq!(matches.len(), 6);
    assert_eq!(report["reference_images"], 4);
    assert_eq!(report["summary"]["overlap-probe"]["matched_items"], 6);
    assert!(report["unreadable"].as_array().unwrap().is_empty());
}

#[test]
fn a_missing_reference_folder_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let res = faceval()
        .current_dir(dir.path())
        .args([
            "overlap",
            "--reference",
            "nowhere",
            "--data",
            ".",
            "--task",
            "facexbench",
        ])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("--reference nowhere"), "{err}");
}

/// A real run (the `random` floor) over the fixture images, then the overlap with `--run`,
/// and `score`, `audit` and `report` with `--overlap`: each shows the clean slice, and the
/// slices agree with the run's own predictions split by hand.
#[test]
fn clean_slice_through_overlap_run_score_audit_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let bench = fixtures().join("benchmark");
    let mut csv = String::from("id,image,class,site\n");
    let mut k = 0;
    for class in ["a", "b"] {
        let mut files: Vec<_> = std::fs::read_dir(bench.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            // Each image asked twice, so the slices are big enough to hold both outcomes.
            for copy in 0..2 {
                let stem = f.file_stem().unwrap().to_string_lossy();
                csv.push_str(&format!(
                    "{stem}-{copy},{},{class},{}\n",
                    f.display(),
                    ["x", "y"][k % 2]
                ));
                k += 1;
            }
        }
    }
    std::fs::write(dir.path().join("set.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("probe.toml"),
        r#"name = "probe"
[dataset]
reader = "manifest"
path = "set.csv"
options = { id_column = "id", label_column = "class", group_columns = ["site"] }
[labels]
field = "class"
values = ["a", "b"]
[question]
style = "multiple_choice"
text = "Which class?"
template = "{{ question }}"
"#,
    )
    .unwrap();
    let run_in = |args: &[&str]| {
        let out = faceval()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let text = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert!(
            out.status.success(),
            "faceval {args:?}: {}\n{}",
            text.0,
            text.1
        );
        text
    };
    run_in(&[
        "run",
        "--model",
        "random",
        "--task",
        "probe.toml",
        "--data",
        ".",
        "--out",
        "run",
    ]);
    let reference = fixtures().join("reference");
    let (stdout, _) = run_in(&[
        "--tasks-dir",
        ".",
        "overlap",
        "--reference",
        reference.to_str().unwrap(),
        "--run",
        "run",
        "--out",
        "overlap.json",
    ]);
    assert!(
        stdout.contains(
            "probe: 12 of 20 items show a reference image (4 exact, 8 near, of 20 images)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("Clean % [95% CI]"), "{stdout}");

    // The expected slices, from predictions.jsonl and overlap.json directly.
    let overlap: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("overlap.json")).unwrap())
            .unwrap();
    let matched: std::collections::BTreeSet<String> = overlap["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["item_id"].as_str().unwrap().to_string())
        .collect();
    let (mut clean, mut seen) = ((0, 0), (0, 0));
    for line in std::fs::read_to_string(dir.path().join("run/predictions.jsonl"))
        .unwrap()
        .lines()
    {
        let p: Value = serde_json::from_str(line).unwrap();
        let slice = if matched.contains(p["id"].as_str().unwrap()) {
            &mut seen
        } else {
            &mut clean
        };
        slice.0 += usize::from(p["correct"] == true);
        slice.1 += 1;
    }
    assert_eq!((clean.1, seen.1), (8, 12));

    let (stdout, stderr) = run_in(&["score", "run", "--overlap", "overlap.json"]);
    assert!(
        stdout.contains("contamination: images found in"),
        "{stdout}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/metrics.json")).unwrap(),
    )
    .unwrap();
    let c = &metrics["tasks"]["probe"]["contamination"];
    assert_eq!(c["n"], 20);
    assert_eq!(c["n_contaminated"], 12);
    assert_eq!(c["matched_not_scored"], 0);
    let estimate = |v: &Value| v["estimate"].as_f64().unwrap();
    assert_eq!(estimate(&c["clean"]), clean.0 as f64 / 8.0);
    assert_eq!(estimate(&c["contaminated"]), seen.0 as f64 / 12.0);
    assert_eq!(estimate(&c["full"]), (clean.0 + seen.0) as f64 / 20.0);
    let d = &c["contaminated_minus_clean"];
    assert!((estimate(d) - (seen.0 as f64 / 12.0 - clean.0 as f64 / 8.0)).abs() < 1e-12);
    assert!(d["low"].as_f64().unwrap() < estimate(d) && estimate(d) < d["high"].as_f64().unwrap());
    assert_eq!(d["method"], "newcombe_independent");
    let f = &c["full_minus_clean"];
    assert!((estimate(f) - 0.6 * estimate(d)).abs() < 1e-12);
    assert!((f["low"].as_f64().unwrap() - 0.6 * d["low"].as_f64().unwrap()).abs() < 1e-12);

    let (stdout, _) = run_in(&["audit", "run", "--overlap", "overlap.json"]);
    assert!(
        stdout.contains("accuracy on the clean slice beside the full one"),
        "{stdout}"
    );
    assert!(stdout.contains("12 of 20 (60.0%)"), "{stdout}");
    let (json, _) = run_in(&[
        "audit",
        "run",
        "--overlap",
        "overlap.json",
        "--format",
        "json",
    ]);
    let audit: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(audit["runs"][0]["tasks"][0]["contamination"], *c);

    run_in(&[
        "report",
        "run",
        "--overlap",
        "overlap.json",
        "--out",
        "page",
    ]);
    let html = std::fs::read_to_string(dir.path().join("page/index.html")).unwrap();
    assert!(html.contains("<section id=\"contamination\">"));
    assert!(html.contains("12 of 20 (60.0%)"));
    let md = std::fs::read_to_string(dir.path().join("page/leaderboard.md")).unwrap();
    assert!(md.contains("## Contamination"), "{md}");
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("page/leaderboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(board["contamination"][0]["task"], "probe");

    // An overlap of other tasks is said, not silently ignored; a bad file is a usage error.
    let other = overlap.to_string().replace("\"probe\"", "\"other\"");
    std::fs::write(dir.path().join("other.json"), other).unwrap();
    let (_, stderr) = run_in(&["score", "run", "--overlap", "other.json"]);
    assert!(
        stderr.contains("checked tasks other; this run scored probe"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("bad.json"), "{\"matches\": 3}").unwrap();
    let out = faceval()
        .current_dir(dir.path())
        .args(["report", "run", "--overlap", "bad.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--overlap bad.json: not an overlap.json"),
        "{err}"
    );
}
