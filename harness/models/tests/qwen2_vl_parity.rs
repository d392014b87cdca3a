//! Qwen2-VL and Qwen2.5-VL on candle against transformers 5.24: the fixtures in
//! tests/fixtures/qwen2_vl were written by tools/make_qwen2_vl_fixtures.py (tiny random
//! checkpoints of both families, f32, eager attention). Rendered prompt, ids, grids and M-RoPE
//! positions must be identical, pixel values identical (bit for bit), image features and logits
//! within 1e-4, greedy tokens identical. Each test prints its measured figures (`--nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use faceval_models::qwen2_vl::{Qwen2Vl, Qwen2VlModel};
use faceval_models::{Model, Request};
use serde_json::Value;

const CASES: [&str; 4] = ["one_image", "two_images", "wide", "text_only"];
const FAMILIES: [(&str, &str); 2] = [
    ("qwen2_vl", "tiny-qwen2-vl"),
    ("qwen2_5_vl", "tiny-qwen2.5-vl"),
];

/// The committed fixtures, or another folder written by the tool (e.g. `--geometry hub`) named
/// by `FACEVAL_QWEN2_VL_FIXTURES`.
fn fixtures() -> PathBuf {
    match std::env::var_os("FACEVAL_QWEN2_VL_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_vl"),
    }
}

struct Case {
    json: Value,
    tensors: HashMap<String, Tensor>,
    images: Vec<image::DynamicImage>,
}

fn case(family: &str, name: &str) -> Case {
    let dir = fixtures().join("cases").join(family);
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

fn grids(v: &Value) -> Vec<[usize; 3]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let g = u32s(g);
            [g[0] as usize, g[1] as usize, g[2] as usize]
        })
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

fn request(c: &Case) -> Request {
    Request {
        images: c.images.iter().cloned().map(Arc::new).collect(),
        prompt: c.json["user_text"].as_str().unwrap().to_string(),
        max_new_tokens: c.json["max_new_tokens"].as_u64().unwrap() as usize,
        stop: vec![],
        choices: vec![],
        choice_texts: vec![],
        seed: 0,
    }
}

#[test]
fn pixels_prompt_ids_and_positions_are_identical() {
    for (family, ckpt) in FAMILIES {
        let m = Qwen2VlModel::load_dir(
            &fixtures().join(ckpt),
            ckpt.into(),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        for name in CASES {
            let c = case(family, name);
            let want_grids = grids(&c.json["image_grid_thw"]);
            let imgs: Vec<&image::DynamicImage> = c.images.iter().collect();
            let merge = m.processor().merge_size.pow(2);
            if !imgs.is_empty() {
                let p = m.processor().preprocess(&imgs).unwrap();
                assert_eq!(p.grids, want_grids, "{family}/{name}: grids");
                let got = p.to_tensor(&Device::Cpu).unwrap();
                let d = max_abs(&got, &c.tensors["pixel_values"]);
                println!("{family}/{name}: pixel values max abs diff {d:e}");
                assert_eq!(d, 0.0, "{family}/{name}: pixel values differ");
            }
            let per_image: Vec<usize> = want_grids
                .iter()
                .map(|g| g[0] * g[1] * g[2] / merge)
                .collect();
            let rendered = m
                .text()
                .render(imgs.len(), c.json["user_text"].as_str().unwrap());
            assert_eq!(
                rendered.unwrap(),
                c.json["rendered_prompt"].as_str().unwrap(),
                "{family}/{name}: rendered prompt"
            );
            let (expanded, ids) = m
                .text()
                .build(&per_image, c.json["user_text"].as_str().unwrap())
                .unwrap();
            assert_eq!(expanded, c.json["expanded_prompt"].as_str().unwrap());
            assert_eq!(ids, u32s(&c.json["input_ids"]), "{family}/{name}: ids");
            let (pos, delta) = m.network().positions(&ids, &want_grids).unwrap();
            let want = c.tensors["position_ids"].to_vec2::<i64>().unwrap();
            for (k, axis) in want.iter().enumerate() {
                let got: Vec<i64> = pos.iter().map(|p| p[k]).collect();
                assert_eq!(&got, axis, "{family}/{name}: M-RoPE axis {k}");
            }
            assert_eq!(delta, c.json["rope_delta"].as_i64().unwrap());
        }
    }
}

#[test]
fn image_features_and_logits_match_transformers() {
    for (family, ckpt) in FAMILIES {
        let net = Qwen2Vl::load(&fixtures().join(ckpt), &Device::Cpu, DType::F32).unwrap();
        for name in CASES {
            let c = case(family, name);
            let g = grids(&c.json["image_grid_thw"]);
            let ids = u32s(&c.json["input_ids"]);
            let px = &c.tensors["pixel_values"];
            let pixels = (!g.is_empty()).then_some((px, g.as_slice()));
            if let Some((px, g)) = pixels {
                let f = net.image_features(px, g).unwrap();
                let d = max_abs(&f, &c.tensors["image_features"]);
                println!("{family}/{name}: image features max abs diff {d:e}");
                assert!(d <= 1e-4, "{family}/{name}: image features differ by {d}");
            }
            let logits = net.prompt_logits(&ids, pixels).unwrap();
            let d = max_abs(&logits, &c.tensors["logits"]);
            println!("{family}/{name}: prompt logits max abs diff {d:e}");
            assert!(d <= 1e-4, "{family}/{name}: logits differ by {d}");
        }
    }
}

#[test]
fn greedy_tokens_and_step_logits_match_transformers() {
    for (family, ckpt) in FAMILIES {
        let mut m = Qwen2VlModel::load_dir(
            &fixtures().join(ckpt),
            ckpt.into(),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        for name in CASES {
            let c = case(family, name);
            let g = grids(&c.json["image_grid_thw"]);
            let ids = u32s(&c.json["input_ids"]);
            let net = m.network();
            let feats = (!g.is_empty())
                .then(|| net.image_features(&c.tensors["pixel_values"], &g))
                .transpose()
                .unwrap();
            let embeds = net.input_embeds(&ids, feats.as_ref()).unwrap();
            let (pos, delta) = net.positions(&ids, &g).unwrap();
            let want = u32s(&c.json["generated_ids"]);
            let out = net
                .greedy(
                    &embeds,
                    &pos,
                    delta,
                    want.len(),
                    m.stop_token_ids(),
                    true,
                    |_| false,
                )
                .unwrap();
            assert_eq!(out.tokens, want, "{family}/{name}: greedy tokens");
            let rows: Vec<f32> = out.step_logits.concat();
            let got = Tensor::from_vec(
                rows,
                (out.step_logits.len(), out.step_logits[0].len()),
                &Device::Cpu,
            )
            .unwrap();
            let d = max_abs(&got, &c.tensors["step_logits"]);
            println!("{family}/{name}: greedy step logits max abs diff {d:e}");
            assert!(d <= 1e-4, "{family}/{name}: step logits differ by {d}");
            // The Model front gives the same tokens from the images themselves.
            let g = m.generate(&request(&c)).unwrap();
            assert_eq!(g.token_ids, want, "{family}/{name}: Model::generate");
            assert_eq!(g.prompt_tokens, ids.len());
            assert_eq!(g.top_logprobs.len(), want.len());
        }
    }
}

#[test]
fn batch_answers_equal_batch_one_and_choices_score() {
    let (family, ckpt) = FAMILIES[0];
    let mut m = Qwen2VlModel::load_dir(
        &fixtures().join(ckpt),
        ckpt.into(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let reqs: Vec<Request> = CASES.iter().map(|n| request(&case(family, n))).collect();
    let batch = m.generate_batch(&reqs);
    for (r, b) in reqs.iter().zip(batch) {
        let one = m.generate(r).unwrap();
        assert_eq!(b.unwrap().token_ids, one.token_ids);
    }
    // Choice scoring: the greedy first token's answer must score at least as high as any
    // other single-token answer, and scores are log-probabilities (≤ 0).
    let mut r = request(&case(family, "one_image"));
    r.choices = vec!["Yes".into(), "No".into(), "young adult".into()];
    let scores = m.choice_logprobs(&r).unwrap().unwrap();
    assert_eq!(scores.len(), 3);
    assert!(
        scores.iter().all(|s| s.is_finite() && *s <= 0.0),
        "{scores:?}"
    );
    assert_ne!(scores[0], scores[1]);
}

/// A writable copy of a fixture checkpoint, with `edit` applied to its tensors and config.
fn broken_copy(
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut Value),
) -> (tempfile::TempDir, PathBuf) {
    let src = fixtures().join("tiny-qwen2-vl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut tensors, &mut config);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    (tmp, dir)
}

fn load_error(dir: &Path) -> String {
    match Qwen2Vl::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn missing_tensor_names_the_tensor_and_the_folder() {
    let (_tmp, dir) = broken_copy("missing", |t, _| {
        t.remove("visual.merger.mlp.2.bias").unwrap();
    });
    let err = load_error(&dir);
    assert!(err.contains("visual.merger.mlp.2.bias"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("[64]"), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor_the_file_and_both_shapes() {
    let (_tmp, dir) = broken_copy("shape", |t, _| {
        t.insert(
            "model.norm.weight".into(),
            Tensor::ones(65, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_error(&dir);
    assert!(err.contains("`model.norm.weight`"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("[65]") && err.contains("[64]"), "{err}");
}

#[test]
fn unknown_rope_scaling_type_names_the_config_and_the_type() {
    let (_tmp, dir) = broken_copy("rope", |_, c| {
        c["text_config"]["rope_parameters"]["rope_type"] = "yarn".into();
    });
    let err = load_error(&dir);
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("\"yarn\""), "{err}");
    // The 4.x spelling (`rope_scaling.type` at the top level) is checked the same way.
    let (_tmp, dir) = broken_copy("rope4", |_, c| {
        let tc = c["text_config"].take();
        for (k, v) in tc.as_object().unwrap() {
            if k != "rope_parameters" {
                c[k] = v.clone();
            }
        }
        c.as_object_mut().unwrap().remove("text_config");
        c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0});
    });
    let err = load_error(&dir);
    assert!(err.contains("\"dynamic\""), "{err}");
}

#[test]
fn hub_style_config_loads_with_the_same_logits() {
    // transformers 4.x hub files: text fields at the top level, `rope_scaling` with
    // `type: mrope`, `rope_theta` beside it, `in_chans` in the vision config.
    let (_tmp, dir) = broken_copy("hub", |_, c| {
        let tc = c["text_config"].take();
        for (k, v) in tc.as_object().unwrap() {
            if k != "rope_parameters" {
                c[k] = v.clone();
            }
        }
        let rp = tc["rope_parameters"].clone();
        c.as_object_mut().unwrap().remove("text_config");
        c["rope_scaling"] =
            serde_json::json!({"type": "mrope", "mrope_section": rp["mrope_section"]});
        c["rope_theta"] = rp["rope_theta"].clone();
        let vc = c["vision_config"].as_object_mut().unwrap();
        let ch = vc.remove("in_channels").unwrap();
        vc.insert("in_chans".into(), ch);
    });
    let net = Qwen2Vl::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let c = case("qwen2_vl", "wide");
    let g = grids(&c.json["image_grid_thw"]);
    let logits = net
        .prompt_logits(
            &u32s(&c.json["input_ids"]),
            Some((&c.tensors["pixel_values"], &g)),
        )
        .unwrap();
    let d = max_abs(&logits, &c.tensors["logits"]);
    assert!(d <= 1e-4, "hub-style config: logits differ by {d}");
}
