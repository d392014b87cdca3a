//! `faceval generate` on every local model kind: the answer it prints is the one the model
//! gives in a run (InternVL is covered by tests/internvl_run.rs and tests/parity.rs).

mod common;

use common::{faceval, repo_root};

fn fixture(path: &str) -> String {
    repo_root()
        .join("harness/models/tests/fixtures")
        .join(path)
        .display()
        .to_string()
}

fn face() -> String {
    fixture("internvl/images/face_448.png")
}

#[test]
fn a_zero_shot_classifier_answers_with_one_of_the_choices() {
    let out = faceval()
        .args(["generate", "--model", &fixture("zero_shot/clip-tiny")])
        .args(["--image", &face(), "--prompt", "unused", "--json"])
        .args(["--choice", "happy", "--choice", "sad", "--choice", "angry"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(["happy", "sad", "angry"].contains(&text), "{text}");
    assert!(v["model"]["name"].as_str().unwrap().ends_with("clip-tiny"));
}

#[test]
fn a_zero_shot_classifier_without_choices_is_a_clear_error() {
    let out = faceval()
        .args(["generate", "--model", &fixture("zero_shot/siglip-tiny")])
        .args(["--image", &face(), "--prompt", "unused"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("option") || err.contains("choice"), "{err}");
}

#[test]
fn llava_generates_the_same_tokens_twice_and_reports_its_stages() {
    let run = || {
        let out = faceval()
            .args(["generate", "--model", &fixture("llava/tiny-llava")])
            .args(["--image", &face(), "--prompt", "What is shown?"])
            .args(["--max-new-tokens", "5", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a["token_ids"], b["token_ids"]);
    assert_eq!(a["token_ids"].as_array().unwrap().len(), 5);
    assert!(a["timings"]["vision_ms"].as_f64().unwrap() > 0.0);
    assert!(a["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn majority_is_refused_with_exit_2() {
    let out = faceval()
        .args(["generate", "--model", "majority", "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
