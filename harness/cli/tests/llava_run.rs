//! End-to-end `faceval run` of a `kind = "llava"` manifest pointing at the committed tiny
//! LLaVA-1.5 checkpoint (`harness/models/tests/fixtures/llava/tiny-llava`): the raw outputs
//! in predictions.jsonl equal what `LlavaModel::generate` gives directly, and on the fixture's
//! `square` case they equal transformers' greedy tokens; likelihood scoring picks a label.

mod common;
use common::faceval;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use faceval_models::llava::LlavaModel;
use faceval_models::{Model, Request};

fn fixtures() -> PathBuf {
    common::model_fixtures("")
}

const QUESTION: &str = "Describe the face in this image.";

fn task_toml(name: &str, style: &str, scoring: &str) -> String {
    common::ExpressionTask {
        name,
        labels: &["happiness", "sadness", "anger", "neutral"],
        style,
        text: QUESTION,
        template: "{{ question }}",
        scoring,
        max_new_tokens: 8,
    }
    .toml()
}

fn predictions(run: &Path) -> Vec<serde_json::Value> {
    common::read_predictions(run)
}

#[test]
fn run_llava_manifest_matches_the_model_and_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    let images = ["face_448.png", "group_700x340.png", "face_520x500.png"];
    for f in images {
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
         b,img/group_700x340.png,sadness,Female\n\
         c,img/face_520x500.png,neutral,Female\n",
    )
    .unwrap();
    let gen_task = dir.path().join("llava-gen.toml");
    std::fs::write(&gen_task, task_toml("llava-gen", "open", "generate")).unwrap();
    let lik_task = dir.path().join("llava-lik.toml");
    std::fs::write(&lik_task, task_toml("llava-lik", "open", "likelihood")).unwrap();
    let ckpt = fixtures().join("llava/tiny-llava");
    let manifest = dir.path().join("tiny-llava.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"tiny-llava\"\nkind = \"llava\"\nsource = \"{}\"\ndtype = \"auto\"\n",
            ckpt.display()
        ),
    )
    .unwrap();

    let out = dir.path().join("run");
    let res = faceval()
        .arg("run")
        .arg("--model")
        .arg(&manifest)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["--device", "cpu", "--task"])
        .arg(&gen_task)
        .arg(&lik_task)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["model"]["kind"], "llava");
    assert_eq!(m["dtype"], "f32");
    assert_eq!(m["model"]["weights_sha256"].as_str().unwrap().len(), 64);

    let preds = predictions(&out);
    assert_eq!(preds.len(), 6);
    let mut model = LlavaModel::load_dir(
        &ckpt,
        "tiny".into(),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let want_sha = faceval_eval::prompt::sha256_hex(QUESTION.as_bytes());
    for (id, file) in ["a", "b", "c"].iter().zip(images) {
        let of = |task: &str| {
            preds
                .iter()
                .find(|p| p["task"] == task && p["id"] == format!("manifest:{id}").as_str())
                .unwrap_or_else(|| panic!("no prediction for {task}/{id}"))
                .clone()
        };
        let g = of("llava-gen");
        assert!(g["error"].is_null(), "{g}");
        // The runner sent exactly the question text, so a direct call reproduces the item.
        assert_eq!(g["prompt_sha256"], want_sha.as_str());
        let img = image::open(data.join("img").join(file)).unwrap();
        let direct = model
            .generate(&Request {
                images: vec![Arc::new(img)],
                prompt: QUESTION.into(),
                max_new_tokens: 8,
                stop: vec![],
                choices: vec![],
                choice_texts: vec![],
                seed: 0,
            })
            .unwrap();
        assert_eq!(g["raw_output"], direct.text.as_str(), "{id}");
        assert_eq!(g["output_tokens"], direct.token_ids.len());
        assert_eq!(g["prompt_tokens"], direct.prompt_tokens);
        assert!(g["timings"]["vision_ms"].as_f64().unwrap() > 0.0);

        let l = of("llava-lik");
        assert!(l["error"].is_null(), "{l}");
        assert!(
            ["happiness", "sadness", "anger", "neutral"]
                .contains(&l["raw_output"].as_str().unwrap()),
            "likelihood picks a label: {l}"
        );
    }

    // Item a is the fixture's `square` case: transformers' greedy tokens, decoded.
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("llava/cases/square.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(case["user_text"], QUESTION);
    let a = preds
        .iter()
        .find(|p| p["task"] == "llava-gen" && p["id"] == "manifest:a")
        .unwrap();
    assert_eq!(a["raw_output"], case["generated_text"]);
    assert_eq!(
        a["prompt_tokens"].as_u64().unwrap() as usize,
        case["input_ids"].as_array().unwrap().len()
    );
}

#[test]
fn llava_manifest_without_source_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, "name = \"x\"\nkind = \"llava\"\n").unwrap();
    let task = common::write_dataset(dir.path(), 2);
    let res = faceval()
        .arg("run")
        .arg("--model")
        .arg(&manifest)
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(dir.path().join("run"))
        .arg("--task")
        .arg(&task)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("source is required") && err.contains("llava"),
        "{err}"
    );
}

#[test]
fn a_bare_llava_folder_loads_as_llava() {
    // `--model <folder>` reads config.json's model_type ("llava").
    let dir = tempfile::tempdir().unwrap();
    let task = common::write_dataset(dir.path(), 2);
    let out = dir.path().join("run");
    let res = faceval()
        .arg("run")
        .arg("--model")
        .arg(fixtures().join("llava/tiny-llava"))
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
    assert_eq!(m["model"]["kind"], "llava");
    let preds = predictions(&out);
    assert_eq!(preds.len(), 1);
    assert!(preds[0]["error"].is_null(), "{}", preds[0]);
}
