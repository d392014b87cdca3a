//! CLIP / SigLIP zero-shot parity with transformers 5.17 on the tiny random checkpoints made by
//! `tools/make_zero_shot_fixtures.py` (fixtures in tests/fixtures/zero_shot): input ids, pixel
//! values, image and text embeddings, `logits_per_image` and the option ranking; plus the
//! loading and request errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use faceval_models::internvl::preprocess::load_image;
use faceval_models::zero_shot::{self, ZeroShotModel, DEFAULT_TEMPLATE};
use faceval_models::{Model, Request};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zero_shot")
}

fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/internvl/images")
}

struct Case {
    meta: Value,
    tensors: std::collections::HashMap<String, Tensor>,
    model: ZeroShotModel,
}

fn case(kind: &str) -> Case {
    let root = fixtures();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(format!("{kind}.json"))).unwrap())
            .unwrap();
    let tensors =
        candle_core::safetensors::load(root.join(format!("{kind}.safetensors")), &Device::Cpu)
            .unwrap();
    let dir = root.join(meta["checkpoint"].as_str().unwrap());
    let model = ZeroShotModel::load_dir(
        &dir,
        kind.to_string(),
        &Device::Cpu,
        DType::F32,
        DEFAULT_TEMPLATE,
    )
    .unwrap();
    Case {
        meta,
        tensors,
        model,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn row(t: &Tensor, i: usize) -> Vec<f32> {
    t.get(i)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn ranking(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    // Stable sort, descending: ties keep the lower index first, like zero_shot::argmax.
    idx.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap());
    idx
}

fn check_parity(kind: &str) {
    let mut c = case(kind);
    let labels = strings(&c.meta["labels"]);
    assert_eq!(c.meta["template"].as_str().unwrap(), DEFAULT_TEMPLATE);

    // Prompts and input ids.
    let prompts = c.model.zero_shot_prompts(&labels);
    assert_eq!(prompts, strings(&c.meta["prompts"]));
    for (p, want) in prompts.iter().zip(c.meta["input_ids"].as_array().unwrap()) {
        assert_eq!(
            c.model.tokenizer().encode(p).unwrap(),
            ids(want),
            "{kind}: {p:?}"
        );
    }
    for (text, want) in c.meta["tokenizer_cases"].as_object().unwrap() {
        assert_eq!(
            c.model.tokenizer().encode_unpadded(text).unwrap(),
            ids(want),
            "{kind}: {text:?}"
        );
    }

    // Pixels, embeddings, logits, ranking: every fixture image.
    let text_want = &c.tensors["text_embeds"];
    let mut text_diff = 0f32;
    for (i, p) in prompts.iter().enumerate() {
        let got = c.model.prompt_embedding(p).unwrap();
        text_diff = text_diff.max(max_abs(&got, &row(text_want, i)));
    }
    let (mut px_diff, mut img_diff, mut logit_diff) = (0f32, 0f32, 0f32);
    for (i, name) in strings(&c.meta["images"]).iter().enumerate() {
        let img = load_image(&image_dir().join(name)).unwrap();
        let px = c.model.pixel_values(&img).unwrap();
        px_diff = px_diff.max(max_abs(
            &px.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &row(&c.tensors["pixel_values"], i),
        ));
        let emb = c.model.net().image_embeds(&px).unwrap();
        img_diff = img_diff.max(max_abs(&row(&emb, 0), &row(&c.tensors["image_embeds"], i)));
        let s = c.model.score(&img, &labels).unwrap();
        let want = row(&c.tensors["logits_per_image"], i);
        logit_diff = logit_diff.max(max_abs(&s.logits, &want));
        let want_rank: Vec<usize> = c.meta["ranking_per_image"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(ranking(&s.logits), want_rank, "{kind} {name}: ranking");
        assert_eq!(ranking(&want), want_rank);
        assert_eq!(
            zero_shot::argmax(&s.logits),
            Some(c.meta["argmax_per_image"][i].as_u64().unwrap() as usize)
        );
    }
    // The fixtures are seeded so that images disagree on the top option: the ranking check
    // then tells images apart instead of passing on a constant answer.
    let tops: std::collections::BTreeSet<u64> = c.meta["argmax_per_image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(
        tops.len() > 1,
        "{kind}: every image has the same top option"
    );
    eprintln!(
        "{kind}: max |diff| pixel_values {px_diff:e}, image_embeds {img_diff:e}, text_embeds {text_diff:e}, logits_per_image {logit_diff:e}"
    );
    assert!(px_diff <= 1e-6, "{kind}: pixel_values differ by {px_diff}");
    assert!(
        img_diff <= 1e-5,
        "{kind}: image_embeds differ by {img_diff}"
    );
    assert!(
        text_diff <= 1e-5,
        "{kind}: text_embeds differ by {text_diff}"
    );
    assert!(logit_diff <= 1e-5, "{kind}: logits differ by {logit_diff}");
}

#[test]
fn clip_matches_transformers() {
    check_parity("clip");
}

#[test]
fn siglip_matches_transformers() {
    check_parity("siglip");
}

fn request(images: usize, labels: &[&str]) -> Request {
    let img = Arc::new(load_image(&image_dir().join("face_448.png")).unwrap());
    Request {
        images: (0..images).map(|_| img.clone()).collect(),
        prompt: "What emotion does this face show?".into(),
        max_new_tokens: 8,
        stop: vec![],
        choices: labels.iter().map(|s| s.to_string()).collect(),
        choice_texts: labels.iter().map(|s| s.to_string()).collect(),
        seed: 0,
    }
}

#[test]
fn generate_and_choice_logprobs_follow_the_logits() {
    for kind in ["clip", "siglip"] {
        let mut c = case(kind);
        let labels = strings(&c.meta["labels"]);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let req = request(1, &refs);
        let want = row(&c.tensors["logits_per_image"], 0);
        let best = zero_shot::argmax(&want).unwrap();
        let g = c.model.generate(&req).unwrap();
        assert_eq!(g.text, labels[best], "{kind}");
        assert!(g.timings.vision_ms > 0.0 && g.timings.prefill_ms >= 0.0);
        let lp = c.model.choice_logprobs(&req).unwrap().unwrap();
        let total: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // log-softmax keeps the logits' differences.
        for i in 0..lp.len() {
            assert!(((lp[i] - lp[0]) - (want[i] - want[0]) as f64).abs() < 1e-4);
        }
        // Lettered multiple choice: the option texts are scored, the letter is answered.
        let mut mc = req.clone();
        mc.choices = (0..labels.len())
            .map(|i| ((b'A' + i as u8) as char).to_string())
            .collect();
        let g = c.model.generate(&mc).unwrap();
        assert_eq!(g.text, mc.choices[best]);
    }
}

#[test]
fn bad_requests_are_errors() {
    let mut c = case("clip");
    let e = c
        .model
        .generate(&request(2, &["happy", "sad"]))
        .unwrap_err();
    assert!(format!("{e:#}").contains("exactly one image"), "{e:#}");
    let e = c
        .model
        .choice_logprobs(&request(0, &["happy"]))
        .unwrap_err();
    assert!(format!("{e:#}").contains("got 0"), "{e:#}");
    let e = c.model.generate(&request(1, &[])).unwrap_err();
    assert!(format!("{e:#}").contains("answer options"), "{e:#}");
    let dir = fixtures().join("clip-tiny");
    let e = ZeroShotModel::load_dir(&dir, "x".into(), &Device::Cpu, DType::F32, "a {thing}")
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("{label}"), "{e:#}");
}

fn copy_checkpoint(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> String {
    match ZeroShotModel::load_dir(dir, "x".into(), &Device::Cpu, DType::F32, DEFAULT_TEMPLATE) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn config_that_disagrees_with_a_tensor_names_it() {
    let tmp = copy_checkpoint("clip-tiny");
    edit_config(tmp.path(), |v| v["text_config"]["hidden_size"] = 32.into());
    let e = load_err(tmp.path());
    assert!(
        e.contains("text_model.embeddings.token_embedding.weight") && e.contains("shape"),
        "{e}"
    );

    let tmp = copy_checkpoint("siglip-tiny");
    edit_config(tmp.path(), |v| {
        v["vision_config"]["hidden_size"] = 32.into()
    });
    let e = load_err(tmp.path());
    assert!(e.contains("vision_model.") && e.contains("shape"), "{e}");

    let tmp = copy_checkpoint("siglip-tiny");
    edit_config(tmp.path(), |v| v["model_type"] = "llava".into());
    assert!(load_err(tmp.path()).contains("model_type \"llava\""));

    let tmp = copy_checkpoint("clip-tiny");
    edit_config(tmp.path(), |v| v["vision_config"]["image_size"] = 48.into());
    let e = load_err(tmp.path());
    // Either the position table or the processor check catches it; both name what is wrong.
    assert!(
        e.contains("position_embedding") || e.contains("vision tower takes"),
        "{e}"
    );
}

#[test]
fn missing_files_are_named() {
    for (ckpt, file) in [
        ("clip-tiny", "tokenizer.json"),
        ("siglip-tiny", "spiece.model"),
        ("clip-tiny", "model.safetensors"),
        ("siglip-tiny", "config.json"),
    ] {
        let tmp = copy_checkpoint(ckpt);
        std::fs::remove_file(tmp.path().join(file)).unwrap();
        let e = load_err(tmp.path());
        assert!(e.contains(file), "{ckpt} without {file}: {e}");
    }
    let e = load_err(&fixtures().join("no-such-checkpoint"));
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn half_precision_runs_close_to_f32() {
    // Half precision must load and run (pixels are cast inside) with logits near f32's. CUDA
    // runs default to bf16, which candle's CPU matmul lacks, so f16 stands in for it here.
    for kind in ["clip", "siglip"] {
        let f32_case = case(kind);
        let want = row(&f32_case.tensors["logits_per_image"], 0);
        let labels = strings(&f32_case.meta["labels"]);
        let dtype = DType::F16;
        let dir = fixtures().join(f32_case.meta["checkpoint"].as_str().unwrap());
        let mut m =
            ZeroShotModel::load_dir(&dir, kind.into(), &Device::Cpu, dtype, DEFAULT_TEMPLATE)
                .unwrap();
        assert_eq!(m.info().dtype, "f16");
        let img = load_image(&image_dir().join("face_448.png")).unwrap();
        let got = m.score(&img, &labels).unwrap().logits;
        let d = max_abs(&got, &want);
        eprintln!("{kind} {dtype:?}: max |logit diff| vs f32 {d:e}");
        assert!(d < 0.02, "{kind} {dtype:?}: {d}");
    }
}
