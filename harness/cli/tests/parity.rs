//! End-to-end tests of `faceval parity` on the CPU in f32: the InternVL fixtures pass within
//! 1e-4 with identical greedy tokens, a fixture whose expected tokens are altered fails with
//! exit 1, and bad arguments are input errors (exit 2).

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/internvl")
}

fn parity_json(fixtures: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = faceval()
        .args(["parity", "--fixtures"])
        .arg(fixtures)
        .args(["--device", "cpu", "--dtype", "f32", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

#[test]
fn every_checkpoint_and_case_matches_transformers_in_f32() {
    let (code, r) = parity_json(&fixtures(), &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["pass"], true);
    assert_eq!(r["strict"], true);
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["dtype"], "f32");
    let rows = r["rows"].as_array().unwrap();
    // 4 checkpoints × 3 cases in the shipped fixtures.
    assert_eq!(rows.len(), 12, "{r:#}");
    let mut checkpoints: Vec<&str> = rows
        .iter()
        .map(|x| x["checkpoint"].as_str().unwrap())
        .collect();
    checkpoints.dedup();
    assert_eq!(
        checkpoints,
        [
            "tiny-300m-current",
            "tiny-300m-legacy",
            "tiny-300m-original",
            "tiny-6b"
        ]
    );
    for row in rows {
        for key in [
            "image_features_max_abs_diff",
            "logits_max_abs_diff",
            "step_logits_max_abs_diff",
        ] {
            let d = row[key].as_f64().unwrap();
            assert!(
                (0.0..=1e-4).contains(&d),
                "{}/{} {key} = {d}",
                row["case"],
                row["checkpoint"]
            );
        }
        assert_eq!(row["tokens_equal"], true);
        assert_eq!(row["tokens"], row["expected_tokens"]);
        assert_eq!(row["tokens"].as_array().unwrap().len(), 8);
        assert!(
            row["logit_scale"].as_f64().unwrap() > 1.0,
            "the fixtures' logits are O(1)"
        );
        assert!(row["failures"].as_array().unwrap().is_empty());
    }
    let wide = rows.iter().find(|x| x["case"] == "wide").unwrap();
    assert_eq!(wide["tiles"], 3, "700x340 is a 2x1 grid plus a thumbnail");
    assert_eq!(r["transformers_version"], "5.17.0");
}

#[test]
fn altered_expected_tokens_fail_with_exit_1_and_name_the_step() {
    // A copy of the fixtures with one checkpoint, whose expected greedy tokens for `square`
    // are changed from the fourth step on.
    let src = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path();
    let ck = "tiny-300m-current";
    std::fs::create_dir_all(dst.join("cases")).unwrap();
    std::fs::create_dir_all(dst.join(ck)).unwrap();
    for e in std::fs::read_dir(src.join(ck)).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(ck).join(e.file_name())).unwrap();
    }
    for case in ["square", "wide", "two_images"] {
        for suffix in ["pixels.safetensors", &format!("{ck}.logits.safetensors")] {
            let name = format!("{case}.{suffix}");
            std::fs::copy(src.join("cases").join(&name), dst.join("cases").join(&name)).unwrap();
        }
        let mut v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(src.join("cases").join(format!("{case}.json"))).unwrap(),
        )
        .unwrap();
        if case == "square" {
            let ids = v["generated_ids"][ck].as_array_mut().unwrap();
            let t = ids[3].as_u64().unwrap();
            ids[3] = serde_json::json!((t + 1) % 360);
        }
        std::fs::write(
            dst.join("cases").join(format!("{case}.json")),
            v.to_string(),
        )
        .unwrap();
    }
    let (code, r) = parity_json(dst, &[]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["pass"], false);
    assert_eq!(r["all_tokens_equal"], false);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let square = rows.iter().find(|x| x["case"] == "square").unwrap();
    assert_eq!(square["first_token_mismatch"], 3);
    assert_eq!(square["pass"], false);
    let failures = square["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().contains("differ from step 3")),
        "{failures:?}"
    );
    // The logits themselves still match: only the expectation was altered.
    assert!(square["logits_max_abs_diff"].as_f64().unwrap() <= 1e-4);
    for other in rows.iter().filter(|x| x["case"] != "square") {
        assert_eq!(other["pass"], true, "{other:#}");
    }

    // The table form says FAIL on the same input.
    let out = faceval()
        .args(["parity", "--fixtures"])
        .arg(dst)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("diff@3") && text.trim_end().ends_with("FAIL"),
        "{text}"
    );
}

#[test]
fn bad_arguments_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = faceval()
        .args(["parity", "--fixtures"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not an InternVL fixture folder"));

    let unknown = faceval()
        .args(["parity", "--fixtures"])
        .arg(fixtures())
        .args(["--checkpoint", "tiny-9000"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("tiny-9000"));

    let dtype = faceval()
        .args(["parity", "--fixtures"])
        .arg(fixtures())
        .args(["--dtype", "f8"])
        .output()
        .unwrap();
    assert_eq!(dtype.status.code(), Some(2));
}
