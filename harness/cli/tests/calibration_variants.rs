//! Issue 17, parts 3 and 4 end to end on the committed tiny InternVL3 checkpoint: a
//! likelihood-scored task with prompt `variants` records `option_logprobs` and a `variant` per
//! line; metrics.json gets `calibration` and `prompt_sensitivity` blocks (headline scores on
//! variant 0); a rerun resumes with nothing to ask; the gate pairs variant 0 only; the report
//! draws the reliability diagram and the prompt-sensitivity table; a bad `variants` exits 2.

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

use serde_json::Value;

const VARIANTS: &str =
    r#"variants = ["Name the facial expression.", "How does this person feel?"]"#;

fn fixtures() -> PathBuf {
    common::model_fixtures("internvl")
}

fn task_toml(variants: &str) -> String {
    let template = format!(
        "{}Answer with the option's letter.",
        common::LETTERED_TEMPLATE
    );
    common::ExpressionTask {
        name: "ivl-var",
        labels: &["happiness", "sadness", "anger", "neutral"],
        style: "multiple_choice",
        text: "Which expression?",
        template: &template,
        scoring: "likelihood",
        max_new_tokens: 4,
    }
    .toml()
    .replace("template = ", &format!("{variants}\ntemplate = "))
}

/// Three fixture faces (two Male, one Female) and the task file.
fn setup(dir: &Path, variants: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("img")).unwrap();
    for f in ["face_448.png", "face_380x380.png", "face_520x500.png"] {
        std::fs::copy(fixtures().join("images").join(f), data.join("img").join(f)).unwrap();
    }
    std::fs::write(
        data.join("set.csv"),
        "id,image,expression,gender\n\
         a,img/face_448.png,happiness,Male\n\
         b,img/face_380x380.png,sadness,Female\n\
         d,img/face_520x500.png,neutral,Male\n",
    )
    .unwrap();
    let task = dir.join("ivl-var.toml");
    std::fs::write(&task, task_toml(variants)).unwrap();
    task
}

fn run(dir: &Path, task: &Path, out: &Path) -> std::process::Output {
    faceval()
        .args(["run", "--model"])
        .arg(fixtures().join("tiny-300m-current"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--task"])
        .arg(task)
        .output()
        .unwrap()
}

fn ok(res: &std::process::Output) {
    assert!(
        res.status.success(),
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}

fn softmax(lp: &serde_json::Map<String, Value>) -> Vec<(String, f64)> {
    let max = lp
        .values()
        .map(|v| v.as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let z: f64 = lp.values().map(|v| (v.as_f64().unwrap() - max).exp()).sum();
    lp.iter()
        .map(|(k, v)| (k.clone(), (v.as_f64().unwrap() - max).exp() / z))
        .collect()
}

#[test]
fn likelihood_task_with_variants_records_calibration_and_prompt_sensitivity() {
    let dir = tempfile::tempdir().unwrap();
    let task = setup(dir.path(), VARIANTS);
    let out = dir.path().join("run");
    ok(&run(dir.path(), &task, &out));

    let preds = common::read_predictions(&out);
    assert_eq!(preds.len(), 9, "3 items x 3 phrasings");
    for p in &preds {
        let lp = p["option_logprobs"]
            .as_object()
            .unwrap_or_else(|| panic!("{p}"));
        let keys: Vec<&str> = lp.keys().map(String::as_str).collect();
        assert_eq!(keys, ["A", "B", "C", "D"], "{p}");
        assert!(lp.values().all(|v| v.as_f64().unwrap().is_finite()), "{p}");
        // The recorded answer is the most likely option.
        let probs = softmax(lp);
        let top = probs
            .iter()
            .fold(&probs[0], |b, x| if x.1 > b.1 { x } else { b });
        assert_eq!(p["parsed"], top.0.as_str(), "{p}");
    }
    // Variant 0 lines carry no `variant` key (runs without variants read as before).
    let variant = |p: &Value| p["variant"].as_u64().unwrap_or(0);
    assert_eq!(
        preds.iter().filter(|p| p.get("variant").is_none()).count(),
        3
    );
    for id in ["manifest:a", "manifest:b", "manifest:d"] {
        let mut shas: Vec<&str> = preds
            .iter()
            .filter(|p| p["id"] == id)
            .map(|p| p["prompt_sha256"].as_str().unwrap())
            .collect();
        shas.sort_unstable();
        shas.dedup();
        assert_eq!(shas.len(), 3, "each phrasing is its own prompt: {id}");
    }

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["tasks"][0]["variants"],
        serde_json::json!([
            "Which expression?",
            "Name the facial expression.",
            "How does this person feel?"
        ])
    );

    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let m = &metrics["tasks"]["ivl-var"];
    // Headline: variant 0 only.
    assert_eq!(m["n"], 3, "{m}");
    let right0 = preds
        .iter()
        .filter(|p| variant(p) == 0 && p["correct"] == true)
        .count() as f64;
    assert_eq!(m["accuracy"]["estimate"].as_f64().unwrap(), right0 / 3.0);

    let c = &m["calibration"];
    assert_eq!(c["bins"], 15, "{c}");
    assert_eq!(c["n"], 3);
    assert_eq!(c["n_without_probabilities"], 0);
    let bins = c["reliability"].as_array().unwrap();
    assert_eq!(bins.len(), 15);
    assert_eq!(
        bins.iter().map(|b| b["n"].as_u64().unwrap()).sum::<u64>(),
        3
    );
    // Brier from the variant-0 lines, independently of faceval's code.
    let brier: f64 = preds
        .iter()
        .filter(|p| variant(p) == 0)
        .map(|p| {
            softmax(p["option_logprobs"].as_object().unwrap())
                .iter()
                .map(|(k, pk)| (pk - f64::from(u8::from(p["target"] == k.as_str()))).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / 3.0;
    assert!(
        (c["brier"]["estimate"].as_f64().unwrap() - brier).abs() < 1e-9,
        "{c}"
    );
    for name in ["ece", "mce", "brier"] {
        let i = &c[name];
        let (lo, est, hi) = (
            i["low"].as_f64().unwrap(),
            i["estimate"].as_f64().unwrap(),
            i["high"].as_f64().unwrap(),
        );
        assert!(lo <= est && est <= hi, "{name}: {i}");
        assert_eq!(i["method"], "percentile_bootstrap");
    }
    assert_eq!(c["groups"]["gender"]["Male"]["n"], 2, "{c}");
    assert_eq!(c["groups"]["gender"]["Female"]["n"], 1, "{c}");

    let s = &m["prompt_sensitivity"];
    assert_eq!(s["n_items"], 3, "{s}");
    let accs: Vec<f64> = s["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["accuracy"]["estimate"].as_f64().unwrap())
        .collect();
    assert_eq!(accs.len(), 3);
    for (v, acc) in accs.iter().enumerate() {
        let right = preds
            .iter()
            .filter(|p| variant(p) == v as u64 && p["correct"] == true)
            .count() as f64;
        assert_eq!(*acc, right / 3.0, "variant {v}");
    }
    let spread = accs.iter().cloned().fold(f64::MIN, f64::max)
        - accs.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        (s["spread"].as_f64().unwrap() - spread).abs() < 1e-12,
        "{s}"
    );
    let consistent = ["manifest:a", "manifest:b", "manifest:d"]
        .iter()
        .filter(|id| {
            let c: Vec<bool> = preds
                .iter()
                .filter(|p| p["id"] == **id)
                .map(|p| p["correct"] == true)
                .collect();
            c.iter().all(|x| *x == c[0])
        })
        .count() as f64;
    assert_eq!(
        s["consistency"]["estimate"].as_f64().unwrap(),
        consistent / 3.0
    );
    assert_ne!(s["best"], s["worst"]);
    assert!(s["best_vs_worst"]["mcnemar"]["p_value"].as_f64().unwrap() <= 1.0);

    // A rerun finds every (id, rotation, variant) done and asks nothing.
    ok(&run(dir.path(), &task, &out));
    assert_eq!(common::read_predictions(&out).len(), 9);

    // The gate compares variant 0 only: a candidate whose other variants are missing is
    // neither incomplete nor different.
    let cand = dir.path().join("cand");
    std::fs::create_dir_all(&cand).unwrap();
    std::fs::copy(out.join("manifest.json"), cand.join("manifest.json")).unwrap();
    let kept: String = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"variant\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(cand.join("predictions.jsonl"), kept).unwrap();
    let gate = faceval()
        .args(["gate", "--format", "json", "--baseline"])
        .arg(&out)
        .arg("--candidate")
        .arg(&cand)
        .output()
        .unwrap();
    ok(&gate);
    let g: Value = serde_json::from_slice(&gate.stdout).unwrap();
    let t = &g["tasks"][0];
    assert_eq!(
        (&t["shared"], &t["missing"], &t["baseline_only"]),
        (&3.into(), &0.into(), &0.into()),
        "{g}"
    );
    assert_eq!(g["passed"], true, "{g}");

    // The report: reliability diagram (inline SVG) and the prompt-sensitivity table.
    let report = dir.path().join("report");
    let res = faceval()
        .arg("report")
        .arg(&out)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    ok(&res);
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(
        html.contains("id=\"calibration\""),
        "no calibration section"
    );
    assert!(
        html.contains("id=\"fig-reliability-ivl-var\""),
        "no reliability diagram"
    );
    assert!(html.contains("id=\"prompt-sensitivity\""));
    assert!(html.contains("How does this person feel?"));
    assert!(!html.contains("<script"), "the report page has no scripts");
    let md = std::fs::read_to_string(report.join("leaderboard.md")).unwrap();
    assert!(md.contains("## Calibration") && md.contains("## Prompt sensitivity"));
}

#[test]
fn malformed_variants_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (variants, why) in [
        ("variants = []", "is empty"),
        ("variants = [\"Which expression?\"]", "repeats"),
        ("variants = \"Name it.\"", "variants"),
    ] {
        let task = setup(dir.path(), variants);
        let res = run(dir.path(), &task, &dir.path().join("bad"));
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{variants}: {err}");
        assert!(err.contains("ivl-var.toml"), "{err}");
        assert!(err.contains(why), "{variants}: {err}");
        assert!(err.contains("12"), "names the line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
