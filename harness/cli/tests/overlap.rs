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
