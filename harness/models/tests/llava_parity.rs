//! LLaVA-1.5 on candle against transformers 5.17: the fixtures in tests/fixtures/llava were
//! written by tools/make_llava_fixtures.py (tiny random LlavaForConditionalGeneration, f32,
//! eager attention). Prompt text and ids must be identical, pixel values within 1e-5, image
//! features and logits within 1e-4, greedy tokens identical.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use faceval_models::llava::{Llava, LlavaModel};
use faceval_models::{Model, Request};
use serde_json::Value;

const CASES: [&str; 4] = ["square", "wide", "two_images", "text_only"];

/// The committed fixtures, or another folder written by tools/make_llava_fixtures.py (e.g.
/// `--geometry llava-1.5`) named by `FACEVAL_LLAVA_FIXTURES`.
fn fixtures() -> PathBuf {
    match std::env::var_os("FACEVAL_LLAVA_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llava"),
    }
}

fn checkpoint() -> PathBuf {
    fixtures().join("tiny-llava")
}

struct Case {
    json: Value,
    tensors: HashMap<String, Tensor>,
    images: Vec<image::DynamicImage>,
}

fn case(name: &str) -> Case {
    let dir = fixtures().join("cases");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let images = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| image::open(fixtures().join(p.as_str().unwrap())).unwrap())
        .collect();
    Case {
        json,
        tensors,
        images,
    }
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rows_max_abs(rows: &[Vec<f32>], expected: &Tensor) -> f32 {
    let n = rows.len();
    let vocab = rows[0].len();
    let got = Tensor::from_vec(rows.concat(), (n, vocab), &Device::Cpu).unwrap();
    max_abs(&got, expected)
}

fn log_softmax(row: &[f32], i: u32) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
    row[i as usize] as f64 - m - s.ln()
}

#[test]
fn prompt_text_and_ids_are_identical() {
    let model = LlavaModel::load_dir(&checkpoint(), "tiny".into(), &Device::Cpu, DType::F32)
        .expect("load tiny llava");
    for name in CASES {
        let c = case(name);
        let text = c.json["user_text"].as_str().unwrap();
        let (rendered, expanded, ids) = model.text().build(c.images.len(), text).unwrap();
        assert_eq!(
            rendered,
            c.json["rendered_prompt"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            expanded,
            c.json["expanded_prompt"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(ids, u32s(&c.json["input_ids"]), "{name}");
    }
}

#[test]
fn pixel_values_match_the_clip_processor() {
    let model = LlavaModel::load_dir(&checkpoint(), "tiny".into(), &Device::Cpu, DType::F32)
        .expect("load tiny llava");
    for name in CASES {
        let c = case(name);
        let imgs: Vec<&image::DynamicImage> = c.images.iter().collect();
        if imgs.is_empty() {
            continue;
        }
        let px = model.processor().preprocess(&imgs, &Device::Cpu).unwrap();
        let d = max_abs(&px, &c.tensors["pixel_values"]);
        println!("{name}: pixel_values max abs diff {d:e}");
        assert!(d <= 1e-5, "{name}: pixel values differ by {d}");
    }
}

#[test]
fn features_logits_and_greedy_tokens_match_transformers() {
    let net = Llava::load(&checkpoint(), &Device::Cpu, DType::F32).expect("load tiny llava");
    let mut worst = (0f32, 0f32, 0f32);
    for name in CASES {
        let c = case(name);
        let ids = u32s(&c.json["input_ids"]);
        let (px, feats, df) = if c.images.is_empty() {
            (None, None, 0.0)
        } else {
            let px = &c.tensors["pixel_values"];
            let feats = net.image_features(px).unwrap();
            let df = max_abs(&feats, &c.tensors["image_features"]);
            assert!(df <= 1e-4, "{name}: image features differ by {df}");
            (Some(px), Some(feats), df)
        };

        // The prompt's last 8 positions: a prefill, then the KV cache one token at a time.
        let logits = &c.tensors["logits"];
        let t = logits.dim(0).unwrap();
        assert_eq!(t, ids.len());
        let rows = net.prompt_logits(&ids, px, 8).unwrap();
        let dl = rows_max_abs(&rows, &logits.narrow(0, t - 8, 8).unwrap());
        assert!(dl <= 1e-4, "{name}: prompt logits differ by {dl}");

        let embeds = net.input_embeds(&ids, feats.as_ref()).unwrap();
        let want = u32s(&c.json["generated_ids"]);
        let max_new = c.json["max_new_tokens"].as_u64().unwrap() as usize;
        let out = net
            .greedy(&embeds, max_new, net.eos_token_ids(), true, |_| false)
            .unwrap();
        assert_eq!(out.tokens, want, "{name}: greedy tokens");
        let ds = rows_max_abs(&out.step_logits, &c.tensors["step_logits"]);
        assert!(ds <= 1e-4, "{name}: step logits differ by {ds}");

        // Answer scoring: the first three greedy tokens as a continuation, scored from the
        // fixture's own step logits.
        let cont = want[..3].to_vec();
        let step_rows: Vec<Vec<f32>> = (0..3)
            .map(|i| c.tensors["step_logits"].get(i).unwrap().to_vec1().unwrap())
            .collect();
        let expect: f64 = (0..3).map(|i| log_softmax(&step_rows[i], cont[i])).sum();
        let got = net.continuation_logprobs(&embeds, &[cont]).unwrap()[0];
        assert!(
            (got - expect).abs() < 1e-3,
            "{name}: continuation logprob {got} vs {expect}"
        );

        println!(
            "{name}: image_features {df:e}, prompt logits (last 8) {dl:e}, step logits {ds:e}"
        );
        worst = (worst.0.max(df), worst.1.max(dl), worst.2.max(ds));
    }
    println!(
        "max abs diff over cases: image_features {:e}, prompt logits {:e}, step logits {:e}",
        worst.0, worst.1, worst.2
    );
}

#[test]
fn model_generate_gives_the_fixture_tokens() {
    let mut model = LlavaModel::load_dir(&checkpoint(), "tiny".into(), &Device::Cpu, DType::F32)
        .expect("load tiny llava");
    let info = model.info();
    assert_eq!(info.kind, "llava");
    assert!(info.weights_sha256.is_some());
    for name in CASES {
        let c = case(name);
        let req = Request {
            images: c.images.iter().cloned().map(Arc::new).collect(),
            prompt: c.json["user_text"].as_str().unwrap().to_string(),
            max_new_tokens: 8,
            stop: vec![],
            choices: vec![],
            choice_texts: vec![],
            seed: 0,
        };
        let g = model.generate(&req).unwrap();
        assert_eq!(g.token_ids, u32s(&c.json["generated_ids"]), "{name}");
        assert_eq!(g.text, c.json["generated_text"].as_str().unwrap(), "{name}");
        assert_eq!(
            g.prompt_tokens,
            c.json["input_ids"].as_array().unwrap().len()
        );
        assert_eq!(g.top_logprobs.len(), g.token_ids.len());
        assert_eq!(g.top_logprobs[0][0].0, g.token_ids[0]);
        assert!(g.timings.prefill_ms > 0.0);
        // Batched generation equals one-by-one.
        let b = model.generate_batch(std::slice::from_ref(&req));
        assert_eq!(b[0].as_ref().unwrap().token_ids, g.token_ids);
    }
}

#[test]
fn choice_logprobs_rank_answers_and_are_log_probabilities() {
    let mut model =
        LlavaModel::load_dir(&checkpoint(), "tiny".into(), &Device::Cpu, DType::F32).unwrap();
    let c = case("square");
    let req = Request {
        images: c.images.iter().cloned().map(Arc::new).collect(),
        prompt: "Answer with one word. Yes or No?".into(),
        max_new_tokens: 4,
        stop: vec![],
        choices: vec!["Yes".into(), "No".into(), "young adult".into()],
        choice_texts: vec!["Yes".into(), "No".into(), "young adult".into()],
        seed: 0,
    };
    let scores = model.choice_logprobs(&req).unwrap().unwrap();
    assert_eq!(scores.len(), 3);
    assert!(
        scores.iter().all(|s| s.is_finite() && *s < 0.0),
        "{scores:?}"
    );
    assert!(scores[0] != scores[1]);
}

fn copy_checkpoint(to: &Path) {
    for e in std::fs::read_dir(checkpoint()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn rewrite_weights(dir: &Path, f: impl Fn(HashMap<String, Tensor>) -> HashMap<String, Tensor>) {
    let path = dir.join("model.safetensors");
    let map = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&f(map), &path).unwrap();
}

#[test]
fn hub_spelling_loads_to_the_same_logits() {
    // llava-hf's hub repos name the tower `vision_tower.vision_model.*`; transformers 5 saves
    // `vision_tower.*`. Both must load to the same network.
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(tmp.path());
    rewrite_weights(tmp.path(), |m| {
        m.into_iter()
            .map(|(k, v)| match k.strip_prefix("vision_tower.") {
                Some(rest) => (format!("vision_tower.vision_model.{rest}"), v),
                None => (k, v),
            })
            .collect()
    });
    let a = Llava::load(&checkpoint(), &Device::Cpu, DType::F32).unwrap();
    let b = Llava::load(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    let c = case("square");
    let ids = u32s(&c.json["input_ids"]);
    let px = &c.tensors["pixel_values"];
    let la = a.prompt_logits(&ids, Some(px), 1).unwrap();
    let lb = b.prompt_logits(&ids, Some(px), 1).unwrap();
    assert_eq!(la, lb);
}

#[test]
fn a_mis_shaped_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(tmp.path());
    let bad = "language_model.model.layers.1.self_attn.k_proj.weight";
    let dims = std::cell::RefCell::new(vec![]);
    rewrite_weights(tmp.path(), |mut m| {
        let t = m.remove(bad).unwrap();
        dims.borrow_mut().extend_from_slice(t.dims());
        m.insert(
            bad.into(),
            t.narrow(0, 0, 16).unwrap().contiguous().unwrap(),
        );
        m
    });
    let (rows, cols) = (dims.borrow()[0], dims.borrow()[1]);
    let err = Llava::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains(bad), "{err}");
    assert!(
        err.contains(&format!("[16, {cols}]")) && err.contains(&format!("[{rows}, {cols}]")),
        "{err}"
    );
}

#[test]
fn a_missing_tensor_or_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(tmp.path());
    rewrite_weights(tmp.path(), |mut m| {
        m.remove("multi_modal_projector.linear_2.bias");
        m
    });
    let err = Llava::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("multi_modal_projector.linear_2.bias"), "{err}");

    for file in ["tokenizer.json", "model.safetensors", "config.json"] {
        let tmp = tempfile::tempdir().unwrap();
        copy_checkpoint(tmp.path());
        std::fs::remove_file(tmp.path().join(file)).unwrap();
        let err = LlavaModel::load_dir(tmp.path(), "x".into(), &Device::Cpu, DType::F32)
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains(file), "{file}: {err}");
    }
}

#[test]
fn hub_style_tokenizer_pipeline_gives_transformers_ids() {
    // Llama tokenizer.json files written by transformers 4.x use the older pipeline (Prepend + Replace
    // normalizer); transformers 5.17 reads them as is, and so does faceval.
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(tmp.path());
    std::fs::copy(
        fixtures().join("legacy-tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("legacy-tokenizer-ids.json")).unwrap(),
    )
    .unwrap();
    let model =
        LlavaModel::load_dir(tmp.path(), "legacy".into(), &Device::Cpu, DType::F32).unwrap();
    let mut differs = false;
    for name in CASES {
        let c = case(name);
        let text = c.json["user_text"].as_str().unwrap();
        let (_, _, ids) = model.text().build(c.images.len(), text).unwrap();
        assert_eq!(ids, u32s(&want["input_ids"][name]), "{name}");
        differs |= ids != u32s(&c.json["input_ids"]);
    }
    assert!(differs, "the two pipelines should differ somewhere");
}

#[test]
fn bf16_loads_and_generates() {
    // Not a parity bar (bf16 rounding moves logits by ~1e-2); the path must run end to end.
    let mut model = LlavaModel::load_dir(&checkpoint(), "tiny".into(), &Device::Cpu, DType::BF16)
        .expect("load tiny llava in bf16");
    assert_eq!(model.info().dtype, "bf16");
    let c = case("square");
    let req = Request {
        images: c.images.iter().cloned().map(Arc::new).collect(),
        prompt: c.json["user_text"].as_str().unwrap().to_string(),
        max_new_tokens: 8,
        stop: vec![],
        choices: vec![],
        choice_texts: vec![],
        seed: 0,
    };
    let g = model.generate(&req).unwrap();
    assert!(!g.token_ids.is_empty() && g.token_ids.len() <= 8);
    assert!(g
        .top_logprobs
        .iter()
        .flatten()
        .all(|(_, lp)| lp.is_finite() && *lp <= 0.0));
}

#[test]
fn sharded_checkpoint_loads_to_the_same_logits() {
    // Two shards + model.safetensors.index.json, as the 7B/13B repos ship.
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(tmp.path());
    let single = tmp.path().join("model.safetensors");
    let all = candle_core::safetensors::load(&single, &Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
    let mut weight_map = serde_json::Map::new();
    for (name, t) in all {
        let k = usize::from(name.starts_with("language_model."));
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        weight_map.insert(name.clone(), Value::String(file));
        shards[k].insert(name, t);
    }
    for (k, shard) in shards.iter().enumerate() {
        let file = tmp
            .path()
            .join(format!("model-0000{}-of-00002.safetensors", k + 1));
        candle_core::safetensors::save(shard, &file).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let a = Llava::load(&checkpoint(), &Device::Cpu, DType::F32).unwrap();
    let b = Llava::load(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    let c = case("wide");
    let ids = u32s(&c.json["input_ids"]);
    let px = &c.tensors["pixel_values"];
    assert_eq!(
        a.prompt_logits(&ids, Some(px), 2).unwrap(),
        b.prompt_logits(&ids, Some(px), 2).unwrap()
    );
    assert_eq!(a.weight_bytes(), b.weight_bytes());
}

#[test]
fn transformers5_processor_files_give_the_same_inputs() {
    // transformers 5's processor.save_pretrained writes the image processor nested in
    // processor_config.json and the template as chat_template.jinja (no
    // preprocessor_config.json, no chat_template.json).
    let tmp = tempfile::tempdir().unwrap();
    copy_checkpoint(tmp.path());
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join(f)).unwrap()).unwrap()
    };
    let mut proc_cfg = read("processor_config.json");
    proc_cfg["image_processor"] = read("preprocessor_config.json");
    let template = read("chat_template.json")["chat_template"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(tmp.path().join("preprocessor_config.json")).unwrap();
    std::fs::remove_file(tmp.path().join("chat_template.json")).unwrap();
    std::fs::write(
        tmp.path().join("processor_config.json"),
        proc_cfg.to_string(),
    )
    .unwrap();
    std::fs::write(tmp.path().join("chat_template.jinja"), template).unwrap();
    let model = LlavaModel::load_dir(tmp.path(), "v5".into(), &Device::Cpu, DType::F32).unwrap();
    for name in ["wide", "two_images"] {
        let c = case(name);
        let (_, _, ids) = model
            .text()
            .build(c.images.len(), c.json["user_text"].as_str().unwrap())
            .unwrap();
        assert_eq!(ids, u32s(&c.json["input_ids"]), "{name}");
        let imgs: Vec<&image::DynamicImage> = c.images.iter().collect();
        let px = model.processor().preprocess(&imgs, &Device::Cpu).unwrap();
        assert_eq!(max_abs(&px, &c.tensors["pixel_values"]), 0.0, "{name}");
    }
}
