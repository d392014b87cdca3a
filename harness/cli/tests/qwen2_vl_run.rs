//! End-to-end `faceval run` of a `kind = "qwen2_vl"` manifest pointing at the committed tiny
//! Qwen2-VL checkpoint (`harness/models/tests/fixtures/qwen2_vl/tiny-qwen2-vl`): the item that
//! is the fixture's `one_image` case answers with transformers' greedy text, likelihood scoring
//! picks a label, a bare Qwen2.5-VL folder loads as `qwen2_vl`, and `faceval parity` checks both
//! families' fixtures.

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    common::model_fixtures("")
}

const QUESTION: &str = "Describe the face in this image.";

fn task_toml(name: &str, scoring: &str) -> String {
    common::ExpressionTask {
        name,
        labels: &["happiness", "sadness", "anger", "neutral"],
        style: "open",
        text: QUESTION,
        template: "{{ question }}",
        scoring,
        max_new_tokens: 8,
    }
    .toml()
}

fn run(model: &Path, data: &Path, out: &Path, tasks: &[PathBuf]) {
    let res = faceval()
        .arg("run")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--task"])
        .args(tasks)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn run_qwen2_vl_manifest_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    for f in ["face_448.png", "group_700x340.png"] {
        std::fs::copy(
            fixtures().join("internvl/images").join(f),
            data.join("img").join(f),
        )
        .unwrap();
    }
    std::fs::write(
        data.join("set.csv"),
        "id,image,expression,gender\n\
         a,img/face_448.png,happiness,Male\n\
         b,img/group_700x340.png,sadness,Female\n",
    )
    .unwrap();
    let gen_task = dir.path().join("qwen-gen.toml");
    std::fs::write(&gen_task, task_toml("qwen-gen", "generate")).unwrap();
    let lik_task = dir.path().join("qwen-lik.toml");
    std::fs::write(&lik_task, task_toml("qwen-lik", "likelihood")).unwrap();
    let ckpt = fixtures().join("qwen2_vl/tiny-qwen2-vl");
    let manifest = dir.path().join("tiny-qwen2-vl.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"tiny-qwen2-vl\"\nkind = \"qwen2_vl\"\nsource = \"{}\"\ndtype = \"auto\"\n",
            ckpt.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    run(&manifest, &data, &out, &[gen_task, lik_task]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["model"]["kind"], "qwen2_vl");
    assert_eq!(m["model"]["weights_sha256"].as_str().unwrap().len(), 64);
    let preds = common::read_predictions(&out);
    assert_eq!(preds.len(), 4);
    for p in &preds {
        assert!(p["error"].is_null(), "{p}");
        if p["task"] == "qwen-lik" {
            assert!(
                ["happiness", "sadness", "anger", "neutral"]
                    .contains(&p["raw_output"].as_str().unwrap()),
                "likelihood picks a label: {p}"
            );
        }
    }
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("qwen2_vl/cases/qwen2_vl/one_image.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(case["user_text"], QUESTION);
    let a = preds
        .iter()
        .find(|p| p["task"] == "qwen-gen" && p["id"] == "manifest:a")
        .unwrap();
    assert_eq!(a["raw_output"], case["generated_text"]);
    assert_eq!(
        a["prompt_tokens"].as_u64().unwrap() as usize,
        case["input_ids"].as_array().unwrap().len()
    );
    assert!(a["timings"]["vision_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_bare_qwen2_5_vl_folder_loads_as_qwen2_vl() {
    let dir = tempfile::tempdir().unwrap();
    let task = common::write_dataset(dir.path(), 2);
    let out = dir.path().join("run");
    let res = faceval()
        .arg("run")
        .arg("--model")
        .arg(fixtures().join("qwen2_vl/tiny-qwen2.5-vl"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .args(["--limit", "1", "--task"])
        .arg(&task)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["model"]["kind"], "qwen2_vl");
    let preds = common::read_predictions(&out);
    assert_eq!(preds.len(), 1);
    assert!(preds[0]["error"].is_null(), "{}", preds[0]);
}

#[test]
fn parity_command_checks_both_qwen_families() {
    let res = faceval()
        .arg("parity")
        .arg("--fixtures")
        .arg(fixtures().join("qwen2_vl"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(r["pass"], true);
    assert_eq!(r["all_tokens_equal"], true);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().any(|x| x["checkpoint"] == "tiny-qwen2.5-vl"));
    assert!(r["max_logits_diff"].as_f64().unwrap() <= 1e-4);
}
