//! End-to-end runs of the real binary with the committed tiny CLIP and SigLIP checkpoints
//! (`harness/models/tests/fixtures/zero_shot`): a label task answered by generation (the
//! argmax option) and a multiple-choice task scored by likelihood, the answers equal to the
//! ranking of transformers' `logits_per_image` recorded in the fixtures, the template in the
//! run manifest, and a manifest whose kind disagrees with the checkpoint.

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    common::model_fixtures("")
}

const LABELS: [&str; 5] = ["happy", "sad", "surprised", "angry", "neutral"];
const IMAGES: [&str; 3] = ["face_448.png", "group_700x340.png", "face_520x500.png"];

fn task_toml(name: &str, style: &str, scoring: &str) -> String {
    common::ExpressionTask {
        name,
        labels: &LABELS,
        style,
        text: "Which expression does this face show?",
        template: common::LETTERED_TEMPLATE,
        scoring,
        max_new_tokens: 4,
    }
    .toml()
}

/// The three fixture images with targets `neutral`, `sad`, `happy`; an open label task
/// (generated) and a lettered multiple-choice task (likelihood).
fn setup(dir: &Path) -> Vec<PathBuf> {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    for f in IMAGES {
        std::fs::copy(
            fixtures().join("internvl/images").join(f),
            data.join("img").join(f),
        )
        .unwrap();
    }
    std::fs::write(
        data.join("set.csv"),
        format!(
            "id,image,expression,gender\na,img/{},neutral,Male\nb,img/{},sad,Female\nc,img/{},happy,Male\n",
            IMAGES[0], IMAGES[1], IMAGES[2]
        ),
    )
    .unwrap();
    let mut tasks = vec![];
    for (name, style, scoring) in [
        ("zs-open", "open", "generate"),
        ("zs-mc", "multiple_choice", "likelihood"),
    ] {
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, task_toml(name, style, scoring)).unwrap();
        tasks.push(p);
    }
    tasks
}

fn manifest(
    dir: &Path,
    name: &str,
    kind: &str,
    checkpoint: &str,
    template: Option<&str>,
) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let src = fixtures().join("zero_shot").join(checkpoint);
    let mut text = format!(
        "name = \"{name}\"\nkind = \"{kind}\"\nsource = {:?}\n",
        src.display().to_string()
    );
    if let Some(t) = template {
        text.push_str(&format!("zero_shot_template = {t:?}\n"));
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn run(dir: &Path, model: &Path, tasks: &[PathBuf], out: &Path) -> std::process::Output {
    faceval()
        .args(["run", "--model"])
        .arg(model)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--task"])
        .args(tasks)
        .output()
        .unwrap()
}

fn predictions(run: &Path) -> Vec<serde_json::Value> {
    common::read_predictions(run)
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn clip_run_answers_the_transformers_argmax() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = setup(dir.path());
    let m = manifest(dir.path(), "clip-tiny", "clip", "clip-tiny", None);
    let out = dir.path().join("run");
    let res = run(dir.path(), &m, &tasks, &out);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );

    let man = read_json(&out.join("manifest.json"));
    assert_eq!(man["model"]["kind"], "clip");
    assert_eq!(
        man["notes"]["zero_shot.template"],
        "a photo of a {label} face"
    );
    assert_eq!(man["dtype"], "f32");
    assert_eq!(man["model"]["weights_sha256"].as_str().unwrap().len(), 64);

    // What transformers ranks first for each image, with the same template and labels.
    let fx = read_json(&fixtures().join("zero_shot/clip.json"));
    assert_eq!(fx["template"], "a photo of a {label} face");
    assert_eq!(fx["labels"], serde_json::json!(LABELS));
    let expected: Vec<&str> = (0..3)
        .map(|i| LABELS[fx["argmax_per_image"][i].as_u64().unwrap() as usize])
        .collect();
    let targets = ["neutral", "sad", "happy"];
    let preds = predictions(&out);
    assert_eq!(preds.len(), 6);
    for p in &preds {
        let id = p["id"].as_str().unwrap().trim_start_matches("manifest:");
        let i = ["a", "b", "c"].iter().position(|x| *x == id).unwrap();
        assert!(p["error"].is_null(), "{p}");
        assert_eq!(p["parsed_label"], expected[i], "{p}");
        let correct = expected[i] == targets[i];
        assert_eq!(
            p["outcome"],
            if correct { "correct" } else { "wrong" },
            "{p}"
        );
        if p["task"] == "zs-open" {
            // generate(): the option itself, with the stage timings.
            assert_eq!(p["raw_output"], expected[i]);
            assert!(p["timings"]["vision_ms"].as_f64().unwrap() > 0.0, "{p}");
        } else {
            // Likelihood over lettered options: the letter of the top option.
            let k = LABELS.iter().position(|l| *l == expected[i]).unwrap();
            assert_eq!(p["raw_output"], ["A", "B", "C", "D", "E"][k], "{p}");
        }
    }
    // The metrics agree with the outcomes.
    let metrics = read_json(&out.join("metrics.json"));
    let n_correct = (0..3).filter(|&i| expected[i] == targets[i]).count() as f64;
    for t in ["zs-open", "zs-mc"] {
        let acc = metrics["tasks"][t]["accuracy"]["estimate"]
            .as_f64()
            .unwrap();
        assert!((acc - n_correct / 3.0).abs() < 1e-12, "{t}: {acc}");
    }
}

#[test]
fn siglip_run_records_its_template() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = setup(dir.path());
    let template = "a close-up photo of a {label} face.";
    let m = manifest(
        dir.path(),
        "siglip-tiny",
        "siglip",
        "siglip-tiny",
        Some(template),
    );
    let out = dir.path().join("run");
    let res = run(dir.path(), &m, &tasks[..1], &out);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let man = read_json(&out.join("manifest.json"));
    assert_eq!(man["model"]["kind"], "siglip");
    assert_eq!(man["notes"]["zero_shot.template"], template);
    for p in predictions(&out) {
        assert!(p["error"].is_null(), "{p}");
        assert!(LABELS.contains(&p["raw_output"].as_str().unwrap()), "{p}");
        assert_eq!(p["parsed_label"], p["raw_output"]);
        let correct = p["parsed_label"] == p["target_label"];
        assert_eq!(
            p["outcome"],
            if correct { "correct" } else { "wrong" },
            "{p}"
        );
    }
}

#[test]
fn bad_zero_shot_manifests_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = setup(dir.path());
    // kind says SigLIP, the checkpoint is CLIP.
    let m = manifest(dir.path(), "wrong-kind", "siglip", "clip-tiny", None);
    let res = run(dir.path(), &m, &tasks, &dir.path().join("r1"));
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("kind = \"siglip\"") && err.contains("clip checkpoint"),
        "{err}"
    );
    // A template without {label}.
    let m = manifest(dir.path(), "no-label", "clip", "clip-tiny", Some("a face"));
    let res = run(dir.path(), &m, &tasks, &dir.path().join("r2"));
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("zero_shot_template") && err.contains("{label}"),
        "{err}"
    );
    // No source.
    let p = dir.path().join("nosrc.toml");
    std::fs::write(&p, "name = \"x\"\nkind = \"clip\"\n").unwrap();
    let res = run(dir.path(), &p, &tasks, &dir.path().join("r3"));
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("source is required for kind = \"clip\""));
}

#[test]
fn a_bare_checkpoint_folder_loads_by_its_model_type() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = setup(dir.path());
    let folder = fixtures().join("zero_shot/siglip-tiny");
    let out = dir.path().join("run");
    let res = run(dir.path(), &folder, &tasks[..1], &out);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let man = read_json(&out.join("manifest.json"));
    assert_eq!(man["model"]["kind"], "siglip");
    assert_eq!(
        man["notes"]["zero_shot.template"],
        "a photo of a {label} face"
    );
    let fx = read_json(&fixtures().join("zero_shot/siglip.json"));
    for p in predictions(&out) {
        let id = p["id"].as_str().unwrap().trim_start_matches("manifest:");
        let i = ["a", "b", "c"].iter().position(|x| *x == id).unwrap();
        let top = fx["argmax_per_image"][i].as_u64().unwrap() as usize;
        assert_eq!(p["raw_output"], LABELS[top], "{p}");
    }
}
