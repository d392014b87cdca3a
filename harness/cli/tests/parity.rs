//! End-to-end tests of `faceval parity` on the CPU: the InternVL, LLaVA and CLIP/SigLIP
//! fixtures pass within 1e-4 in f32 with identical greedy tokens (option rankings), LLaVA and
//! zero-shot also run in bf16, fixtures whose expected tokens or ranking are altered fail with
//! exit 1, and bad arguments are input errors (exit 2).

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/internvl")
}

fn parity_json(fixtures: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    parity_json_in(fixtures, "f32", extra)
}

fn parity_json_in(fixtures: &Path, dtype: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = faceval()
        .args(["parity", "--fixtures"])
        .arg(fixtures)
        .args(["--device", "cpu", "--dtype", dtype, "--json"])
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

#[test]
fn dtype_auto_follows_the_auto_rule_like_every_other_command() {
    // auto is f32 on the CPU, so the check is the strict one.
    let (code, r) = parity_json_in(
        &family_fixtures("zero_shot"),
        "auto",
        &["--checkpoint", "clip"],
    );
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["dtype"], "f32");
    assert_eq!(r["strict"], true);
}

fn family_fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/tests/fixtures/{name}"))
}

fn parity_dtype(fixtures: &Path, dtype: &str) -> (i32, serde_json::Value) {
    parity_json_in(fixtures, dtype, &[])
}

#[test]
fn llava_fixtures_match_transformers_in_f32_and_run_in_bf16() {
    let (code, r) = parity_dtype(&family_fixtures("llava"), "f32");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["family"], "llava");
    assert_eq!(r["strict"], true);
    assert_eq!(r["transformers_version"], "5.17.0");
    let rows = r["rows"].as_array().unwrap();
    let cases: Vec<&str> = rows.iter().map(|x| x["case"].as_str().unwrap()).collect();
    assert_eq!(cases, ["square", "text_only", "two_images", "wide"]);
    for row in rows {
        assert_eq!(row["checkpoint"], "tiny-llava");
        for key in [
            "image_features_max_abs_diff",
            "logits_max_abs_diff",
            "step_logits_max_abs_diff",
        ] {
            let d = row[key].as_f64().unwrap();
            assert!((0.0..=1e-4).contains(&d), "{} {key} = {d}", row["case"]);
        }
        assert_eq!(row["tokens"], row["expected_tokens"]);
        assert_eq!(row["tokens"].as_array().unwrap().len(), 8);
    }
    let two = rows.iter().find(|x| x["case"] == "two_images").unwrap();
    assert_eq!(two["tiles"], 2, "two images");
    // Images were compared: their features differ from transformers' by rounding, not zero.
    assert!(two["image_features_max_abs_diff"].as_f64().unwrap() > 0.0);

    // bf16: reported, not strict; a broken kernel would exceed 5% of the logits' scale.
    let (code, r) = parity_dtype(&family_fixtures("llava"), "bf16");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["strict"], false);
    assert_eq!(r["dtype"], "bf16");
    let d = r["max_logits_diff"].as_f64().unwrap();
    // Rounding moves bf16 logits (scale ~25) by ~0.3-0.5 here; identical to f32 would mean
    // the dtype was not applied.
    assert!(d > 1e-3 && d < 0.05 * 21.0, "bf16 logits diff {d}");
}

#[test]
fn zero_shot_fixtures_match_transformers_in_f32_and_run_in_bf16() {
    let (code, r) = parity_dtype(&family_fixtures("zero_shot"), "f32");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["family"], "zero-shot");
    assert_eq!(r["transformers_version"], "5.17.0");
    assert!(
        r["max_step_logits_diff"].is_null(),
        "no decoding in zero-shot"
    );
    let rows = r["rows"].as_array().unwrap();
    // 2 models × 3 images.
    assert_eq!(rows.len(), 6, "{r:#}");
    let mut cks: Vec<&str> = rows
        .iter()
        .map(|x| x["checkpoint"].as_str().unwrap())
        .collect();
    cks.dedup();
    assert_eq!(cks, ["clip-tiny", "siglip-tiny"]);
    for row in rows {
        for key in [
            "image_features_max_abs_diff",
            "logits_max_abs_diff",
            "text_embeds_max_abs_diff",
        ] {
            let d = row[key].as_f64().unwrap();
            assert!((0.0..=1e-4).contains(&d), "{} {key} = {d}", row["case"]);
        }
        assert_eq!(row["tokens_equal"], true);
        assert_eq!(row["tokens"], row["expected_tokens"]);
        assert_eq!(
            row["tokens"].as_array().unwrap().len(),
            5,
            "5 options ranked"
        );
    }
    // The fixtures' images disagree on the top option, so the ranking check sees the image.
    let tops: std::collections::BTreeSet<u64> = rows
        .iter()
        .filter(|x| x["checkpoint"] == "clip-tiny")
        .map(|x| x["tokens"][0].as_u64().unwrap())
        .collect();
    assert!(tops.len() > 1);

    let (code, r) = parity_dtype(&family_fixtures("zero_shot"), "bf16");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["strict"], false);
    let d = r["max_text_embeds_diff"].as_f64().unwrap();
    assert!(d > 1e-4, "the text tower ran in bf16: {d}");

    // --checkpoint takes the model name.
    let (code, r) = parity_json(&family_fixtures("zero_shot"), &["--checkpoint", "siglip"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["rows"].as_array().unwrap().len(), 3);
}

#[test]
fn a_changed_zero_shot_ranking_fails_in_f32() {
    let src = family_fixtures("zero_shot");
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let path = dst.join("clip.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let r0 = v["ranking_per_image"][0].as_array_mut().unwrap();
    r0.swap(0, 1);
    std::fs::write(&path, v.to_string()).unwrap();
    let (code, r) = parity_json(dst, &[]);
    assert_eq!(code, 1, "{r:#}");
    let bad: Vec<&serde_json::Value> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["pass"] == false)
        .collect();
    assert_eq!(bad.len(), 1, "{r:#}");
    assert_eq!(bad[0]["case"], "face_448.png");
    assert_eq!(bad[0]["first_token_mismatch"], 0);
}

#[test]
fn an_unknown_family_or_a_mismatched_folder_is_an_input_error() {
    let bad = faceval()
        .args(["parity", "--family", "gpt"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--family gpt"));
    // Told to read LLaVA fixtures from the zero-shot folder: no cases/ there.
    let wrong = faceval()
        .args(["parity", "--family", "llava", "--fixtures"])
        .arg(family_fixtures("zero_shot"))
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
}
