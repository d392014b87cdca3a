//! `faceval import facexbench` scores a FaceXBench results folder exactly as FaceXBench's
//! `aggregate_results.py` does. The scripted predictions are the real-world answer strings of
//! `facexbench_extract_cases.json`, whose expected letters came from FaceXBench's own Python
//! function (tools/facexbench_extract_reference.py).

mod common;
use common::repo_root;

use std::collections::BTreeMap;

use serde_json::{json, Value};

#[test]
fn imported_results_score_like_aggregate_results() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("harness/eval/tests/fixtures/facexbench_extract_cases.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    let files = [
        ("bias_fairness", "age", "fairface_age"),
        ("face_localization", "crowd_counting", "jhucrowd"),
        ("tools_use", "tools_retrieval", "tools"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    // (category, subcategory) -> (correct, total), as aggregate_results.py counts them.
    let mut expected: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut docs: Vec<Value> = files
        .iter()
        .map(|(c, s, _)| json!({"category": c, "sub-category": s, "question_type": "MCQ", "questions": {}}))
        .collect();
    for (i, case) in cases.iter().enumerate() {
        let options = case["options"].as_array().unwrap();
        let letter = ["A", "B", "C", "D", "E", "F"][i % options.len().min(4)];
        let f = i % files.len();
        let doc = &mut docs[f];
        doc["questions"][format!("{}", i + 1)] = json!({
            "image_paths": [], "question_text": "q", "options": options,
            "correct_answer_option": letter, "prediction": case["output"],
        });
        let e = expected
            .entry((files[f].0.to_string(), files[f].1.to_string()))
            .or_default();
        e.1 += 1;
        if case["expected"].as_str() == Some(letter) {
            e.0 += 1;
        }
    }
    for ((_, _, stem), doc) in files.iter().zip(&docs) {
        std::fs::write(
            results.join(format!("{stem}.json")),
            serde_json::to_string_pretty(doc).unwrap(),
        )
        .unwrap();
    }
    let out = dir.path().join("run");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_faceval"))
        .current_dir(repo_root())
        .args([
            "import",
            "facexbench",
            &results.display().to_string(),
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let t = &metrics["tasks"]["facexbench"];
    let (k, n) = expected
        .values()
        .fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    assert_eq!(t["n"], n);
    assert!(
        k > 0 && k < n,
        "the scripted answers should be partly right ({k}/{n})"
    );
    assert_eq!(
        t["accuracy"]["estimate"].as_f64().unwrap(),
        k as f64 / n as f64
    );
    for ((category, sub), (k, n)) in &expected {
        assert_eq!(
            t["breakdown"]["category"][category]["estimate"]
                .as_f64()
                .unwrap(),
            *k as f64 / *n as f64,
            "{category}"
        );
        assert_eq!(t["breakdown"]["subcategory"][sub]["n"], *n as u64, "{sub}");
    }
    // Every prediction keeps the raw answer and the letter FaceXBench's function reads.
    let preds = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    assert_eq!(preds.lines().count(), n);
}
