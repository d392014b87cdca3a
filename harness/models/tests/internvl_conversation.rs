//! An original InternVL checkpoint with no chat template anywhere is prompted as its own
//! `chat()` prompts it: from the conversation template `config.json` names (`internvl2_5`),
//! system prompt included. The reference (`tests/fixtures/internvl/conversation/cases.json`)
//! was recorded by `tools/make_conversation_fixtures.py`, which runs InternVL's `chat()` source
//! unchanged with transformers' model doing the generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use faceval_models::internvl::InternVlModel;
use faceval_models::{Model, Request};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/internvl")
}

/// `tiny-300m-original` copied with the `chat_template` field taken out of
/// tokenizer_config.json, so that no file carries a Jinja template.
fn checkpoint_without_template(dir: &Path) -> PathBuf {
    let src = fixtures().join("tiny-300m-original");
    let dst = dir.join("original-no-template");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    let tc = dst.join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&tc).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&tc, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    for name in [
        "chat_template.jinja",
        "chat_template.json",
        "processor_config.json",
    ] {
        assert!(!dst.join(name).exists(), "{name} would carry a template");
    }
    dst
}

#[test]
fn without_a_chat_template_prompts_ids_and_tokens_match_chat() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("conversation/cases.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(reference["template"], "internvl2_5");
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint_without_template(tmp.path());
    let mut model = InternVlModel::load(ckpt.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let source = model.prompt_template_source().unwrap();
    assert!(
        source.contains("\"internvl2_5\"") && source.contains("config.json"),
        "{source}"
    );
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let user_text = case["user_text"].as_str().unwrap();
        let images: Vec<_> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Arc::new(image::open(fixtures().join(p.as_str().unwrap())).unwrap()))
            .collect();
        let tiles: Vec<usize> = case["num_patches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect();
        let (prompt, ids) = model.text().build(&tiles, user_text).unwrap();
        assert_eq!(
            prompt,
            case["prompt"].as_str().unwrap(),
            "{name}: prompt text"
        );
        let want_ids: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want_ids, "{name}: prompt ids");
        let eos = case["eos_token_id"].as_u64().unwrap() as u32;
        assert!(
            model.text().stop_token_ids().contains(&eos),
            "{name}: chat() stops at {eos}"
        );
        let g = model
            .generate(&Request {
                images,
                prompt: user_text.to_string(),
                max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
                stop: vec![],
                choices: vec![],
                choice_texts: vec![],
                seed: 0,
            })
            .unwrap();
        let want: Vec<u32> = case["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // The model tiles the images itself: the same tiles, so the same prompt length.
        assert_eq!(g.prompt_tokens, want_ids.len(), "{name}: prompt length");
        assert_eq!(g.token_ids, want, "{name}: greedy tokens");
    }
}

#[test]
fn an_unknown_conversation_template_is_an_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint_without_template(tmp.path());
    let cfg = ckpt.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"internvl2_5\"", "\"vicuna_v1.1\"");
    std::fs::write(&cfg, text).unwrap();
    let err = match InternVlModel::load(ckpt.to_str().unwrap(), &Device::Cpu, DType::F32) {
        Ok(_) => panic!("loaded a checkpoint whose template faceval cannot render"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("config.json")
            && err.contains("vicuna_v1.1")
            && err.contains("chat_template.jinja"),
        "{err}"
    );
}
