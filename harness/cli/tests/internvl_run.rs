//! End-to-end runs of the real binary on the committed tiny InternVL3 checkpoint
//! (`harness/models/tests/fixtures/internvl/tiny-300m-current`): generation and likelihood
//! scoring, a corrupt image and an over-long prompt as item errors, device and dtype in the
//! manifest, and `faceval generate` against the fixture's transformers greedy tokens.

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    common::model_fixtures("internvl")
}

fn checkpoint() -> String {
    fixtures().join("tiny-300m-current").display().to_string()
}

fn task_toml(name: &str, text: &str, scoring: &str) -> String {
    let template = format!(
        "{}Answer with the option's letter.",
        common::LETTERED_TEMPLATE
    );
    common::ExpressionTask {
        name,
        labels: &["happiness", "sadness", "anger", "neutral"],
        style: "multiple_choice",
        text,
        template: &template,
        scoring,
        max_new_tokens: 4,
    }
    .toml()
}

/// Four items over the fixture faces, one whose image is not an image; and three tasks:
/// generate, likelihood, and one whose prompt is longer than the model's 32768-token context.
fn setup(dir: &Path) -> Vec<PathBuf> {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    for f in ["face_448.png", "face_380x380.png", "face_520x500.png"] {
        std::fs::copy(fixtures().join("images").join(f), data.join("img").join(f)).unwrap();
    }
    std::fs::write(
        data.join("img/corrupt.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .unwrap();
    std::fs::write(
        data.join("set.csv"),
        "id,image,expression,gender\n\
         a,img/face_448.png,happiness,Male\n\
         b,img/face_380x380.png,sadness,Female\n\
         c,img/corrupt.png,anger,Male\n\
         d,img/face_520x500.png,neutral,Female\n",
    )
    .unwrap();
    let long_text = "Look at the face once more. ".repeat(12_000);
    let mut tasks = vec![];
    for (name, text, scoring) in [
        ("ivl-gen", "Which expression?", "generate"),
        ("ivl-lik", "Which expression?", "likelihood"),
        ("ivl-long", long_text.as_str(), "generate"),
    ] {
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, task_toml(name, text, scoring)).unwrap();
        tasks.push(p);
    }
    tasks
}

fn predictions(run: &Path) -> Vec<serde_json::Value> {
    common::read_predictions(run)
}

#[test]
fn run_internvl_generate_and_likelihood_with_item_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = setup(dir.path());
    let out = dir.path().join("run");
    let mut cmd = faceval();
    cmd.args(["run", "--model", &checkpoint(), "--data"])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .args(["--device", "cpu", "--task"])
        .args(&tasks);
    let res = cmd.output().unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["kind"], "internvl");
    assert_eq!(manifest["device"], "cpu");
    assert_eq!(manifest["dtype"], "f32", "auto is f32 on the CPU");
    // Which file the prompts were rendered from.
    let template = manifest["notes"]["prompt.template_source"]
        .as_str()
        .unwrap();
    assert!(template.ends_with("chat_template.jinja"), "{template}");
    assert_eq!(
        manifest["model"]["weights_sha256"].as_str().unwrap().len(),
        64
    );
    let file_bytes = std::fs::metadata(fixtures().join("tiny-300m-current/model.safetensors"))
        .unwrap()
        .len();
    let wb = manifest["model"]["weight_bytes"].as_u64().unwrap();
    assert!(
        wb > file_bytes * 9 / 10 && wb < file_bytes,
        "{wb} of {file_bytes}"
    );
    assert!(manifest["finished"].is_string());

    let preds = predictions(&out);
    let of = |task: &str, id: &str| {
        preds
            .iter()
            .find(|p| p["task"] == task && p["id"] == format!("manifest:{id}").as_str())
            .unwrap_or_else(|| panic!("no prediction for {task}/{id}"))
            .clone()
    };
    for id in ["a", "b", "d"] {
        let g = of("ivl-gen", id);
        assert_ne!(g["outcome"], "error", "{g}");
        assert!(g["error"].is_null(), "{g}");
        // One 448 px tile is 256 image tokens (the 520x500 face makes a grid plus thumbnail).
        assert!(g["prompt_tokens"].as_u64().unwrap() > 256, "{g}");
        let n = g["output_tokens"].as_u64().unwrap();
        assert!((1..=4).contains(&n), "{g}");
        assert!(g["timings"]["vision_ms"].as_f64().unwrap() > 0.0, "{g}");
        assert!(g["timings"]["prefill_ms"].as_f64().unwrap() > 0.0, "{g}");

        let l = of("ivl-lik", id);
        assert!(l["error"].is_null(), "{l}");
        assert!(
            ["correct", "wrong"].contains(&l["outcome"].as_str().unwrap()),
            "likelihood always picks an option: {l}"
        );
        assert!(
            ["A", "B", "C", "D"].contains(&l["raw_output"].as_str().unwrap()),
            "{l}"
        );

        let long = of("ivl-long", id);
        assert_eq!(long["outcome"], "error", "{long}");
        let msg = long["error"].as_str().unwrap();
        assert!(
            msg.contains("context is 32768 tokens") && msg.contains("max_position_embeddings"),
            "{msg}"
        );
    }
    for task in ["ivl-gen", "ivl-lik", "ivl-long"] {
        let c = of(task, "c");
        assert_eq!(c["outcome"], "error");
        assert!(c["error"].as_str().unwrap().contains("corrupt.png"), "{c}");
    }
    // Same run twice gives the same answers: greedy and likelihood are deterministic.
    let again = dir.path().join("again");
    let res = faceval()
        .args(["run", "--model", &checkpoint(), "--data"])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&again)
        .arg("--task")
        .args(&tasks[..2])
        .output()
        .unwrap();
    assert!(res.status.success());
    for p in predictions(&again) {
        let id = p["id"].as_str().unwrap().trim_start_matches("manifest:");
        let first = of(p["task"].as_str().unwrap(), id);
        assert_eq!(p["raw_output"], first["raw_output"]);
    }
}

#[test]
fn run_internvl_records_the_requested_dtype_and_rejects_bad_devices() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = setup(dir.path());
    let out = dir.path().join("bf16");
    let res = faceval()
        .args([
            "run",
            "--model",
            &checkpoint(),
            "--dtype",
            "bf16",
            "--limit",
            "1",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .arg("--task")
        .arg(&tasks[0])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["dtype"], "bf16");
    assert_ne!(predictions(&out)[0]["outcome"], "error");

    for (flag, value, needle) in [
        ("--device", "tpu", "unknown device"),
        ("--dtype", "f8", "unknown dtype"),
    ] {
        let res = faceval()
            .args(["run", "--model", &checkpoint(), flag, value, "--data"])
            .arg(dir.path().join("data"))
            .arg("--out")
            .arg(dir.path().join("bad"))
            .arg("--task")
            .arg(&tasks[0])
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn generate_json_matches_transformers_greedy_tokens() {
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases/square.json")).unwrap(),
    )
    .unwrap();
    let prompt = case["messages"][0]["content"][1]["text"].as_str().unwrap();
    let image = fixtures().join(case["images"][0].as_str().unwrap());
    let max_new = case["max_new_tokens"].as_u64().unwrap().to_string();
    let res = faceval()
        .args(["generate", "--model", &checkpoint(), "--image"])
        .arg(&image)
        .args(["--prompt", prompt, "--max-new-tokens", &max_new, "--json"])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(out["token_ids"], case["generated_ids"]["tiny-300m-current"]);
    assert_eq!(
        out["prompt_tokens"].as_u64().unwrap() as usize,
        case["input_ids"].as_array().unwrap().len()
    );
    let steps = out["top_logprobs"].as_array().unwrap();
    assert_eq!(steps.len(), out["token_ids"].as_array().unwrap().len());
    for (step, tok) in steps.iter().zip(out["token_ids"].as_array().unwrap()) {
        let pairs = step.as_array().unwrap();
        assert_eq!(pairs.len(), 5);
        assert_eq!(&pairs[0][0], tok, "greedy takes the best token");
        let lps: Vec<f64> = pairs.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(
            lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0,
            "{lps:?}"
        );
    }
    assert_eq!(out["text"], case["generated_text"]["tiny-300m-current"]);
    for stage in ["preprocess_ms", "vision_ms", "prefill_ms", "decode_ms"] {
        assert!(out["timings"][stage].as_f64().unwrap() > 0.0, "{stage}");
    }
    assert_eq!(out["model"]["dtype"], "f32");

    // Without --json: the answer alone.
    let plain = faceval()
        .args(["generate", "--model", &checkpoint(), "--image"])
        .arg(&image)
        .args(["--prompt", prompt, "--max-new-tokens", &max_new])
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout).trim_end_matches('\n'),
        case["generated_text"]["tiny-300m-current"]
            .as_str()
            .unwrap()
    );

    // A missing image is an input error naming the file.
    let bad = faceval()
        .args([
            "generate",
            "--model",
            &checkpoint(),
            "--image",
            "/nonexistent/x.png",
        ])
        .args(["--prompt", "hi"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/x.png"));
}
