//! InternVL preprocessing and prompt building against fixtures produced by transformers
//! (tools/make_internvl_fixtures.py): uint8 tiles, normalised pixels, rendered prompts and
//! input ids must match what `InternVLProcessor` produced.

use std::fs;
use std::path::{Path, PathBuf};

use faceval_models::internvl::preprocess::{load_image, ProcessorConfig};
use faceval_models::internvl::text::{user_messages, InternVlText};
use safetensors::SafeTensors;
use serde_json::Value;

const CASES: [&str; 3] = ["square", "wide", "two_images"];
const CHECKPOINTS: [&str; 4] = [
    "tiny-300m-legacy",
    "tiny-300m-current",
    "tiny-300m-original",
    "tiny-6b",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/internvl")
}

fn case_json(case: &str) -> Value {
    let p = fixtures().join(format!("cases/{case}.json"));
    serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap()
}

fn fixture_u8(case: &str) -> (Vec<u8>, Vec<usize>, Vec<f32>, Vec<f32>) {
    let bytes = fs::read(fixtures().join(format!("cases/{case}.pixels.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let px = st.tensor("pixel_values_u8").unwrap();
    assert_eq!(px.dtype(), safetensors::Dtype::U8);
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    (
        px.data().to_vec(),
        px.shape().to_vec(),
        f32s("image_mean"),
        f32s("image_std"),
    )
}

/// Whether the fixtures came from transformers' PIL image backend (torchvision absent).
fn pil_backend() -> bool {
    let p = fixtures().join("manifest.json");
    let m: Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
    m["image_processor_backend"].as_str().unwrap() == "GotOcr2ImageProcessorPil"
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Our uint8 tiles of one case, flattened CHW per tile like the fixture.
fn our_u8(cfg: &ProcessorConfig, case: &Value) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut counts = Vec::new();
    for rel in case["images"].as_array().unwrap() {
        let img = load_image(&fixtures().join(rel.as_str().unwrap())).unwrap();
        let tiles = cfg.tiles_u8(&img);
        counts.push(tiles.len());
        for t in &tiles {
            let raw = t.as_raw();
            for c in 0..3 {
                out.extend(raw.iter().skip(c).step_by(3));
            }
        }
    }
    (out, counts)
}

#[test]
fn processor_config_reads_every_layout() {
    for ckpt in CHECKPOINTS {
        let cfg = ProcessorConfig::from_dir(&fixtures().join(ckpt)).unwrap();
        assert_eq!((cfg.tile_height, cfg.tile_width), (448, 448), "{ckpt}");
        assert_eq!((cfg.min_patches, cfg.max_patches), (1, 12), "{ckpt}");
        assert!(cfg.crop_to_patches && cfg.use_thumbnail, "{ckpt}");
        assert_eq!(cfg.image_seq_length, 256, "{ckpt}");
        assert_eq!(cfg.image_mean, [0.485, 0.456, 0.406], "{ckpt}");
        assert_eq!(cfg.image_std, [0.229, 0.224, 0.225], "{ckpt}");
    }
}

#[test]
fn tiles_match_transformers() {
    let cfg = ProcessorConfig::from_dir(&fixtures().join("tiny-300m-current")).unwrap();
    for case in CASES {
        let j = case_json(case);
        let (want, shape, _, _) = fixture_u8(case);
        let (got, counts) = our_u8(&cfg, &j);
        let want_counts: Vec<usize> = j["num_tiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(counts, want_counts, "{case}: tiles per image");
        assert_eq!(
            shape,
            vec![counts.iter().sum::<usize>(), 3, 448, 448],
            "{case}"
        );
        assert_eq!(got.len(), want.len(), "{case}");
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let n_diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        // The resampler is Pillow's algorithm: fixtures made with transformers' PIL backend
        // must match exactly. Made with the torchvision backend they may differ by the
        // measured torch-vs-Pillow delta the case records (at most 2 on these images).
        let bound = if pil_backend() {
            0
        } else {
            j["torch_native_u8_resize_max_abs_diff_vs_fixture"]
                .as_u64()
                .unwrap()
                .max(1) as u8
        };
        assert!(
            max_diff <= bound,
            "{case}: max |diff| {max_diff} over {n_diff} values"
        );
        if case == "square" {
            assert_eq!(n_diff, 0, "square 448 image must pass through unchanged");
        }
        eprintln!(
            "{case}: max uint8 diff {max_diff}, {n_diff} of {} values differ",
            got.len()
        );
    }
}

#[test]
fn normalised_pixels_match_transformers_arithmetic() {
    let cfg = ProcessorConfig::from_dir(&fixtures().join("tiny-300m-legacy")).unwrap();
    for case in CASES {
        let j = case_json(case);
        let (want_u8, shape, mean, std) = fixture_u8(case);
        assert_eq!(mean, cfg.image_mean.to_vec());
        assert_eq!(std, cfg.image_std.to_vec());
        let images: Vec<_> = j["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| load_image(&fixtures().join(r.as_str().unwrap())).unwrap())
            .collect();
        let px = cfg.preprocess(&images.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(px.num_tiles(), shape[0], "{case}");
        let t = px.to_tensor(&candle_core::Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[shape[0], 3, 448, 448]);
        // The fixture's pixel_values equal the processor's exactly when normalised with
        // transformers' arithmetic (the script asserts it), so normalising the fixture's uint8
        // the same way must agree with ours to within one uint8 step.
        let plane = 448 * 448;
        let mut worst = 0f32;
        for (i, (&u, &ours)) in want_u8.iter().zip(&px.data).enumerate() {
            let c = (i / plane) % 3;
            let reference = ((u as f64 * (1.0 / 255.0)) as f32 - mean[c]) / std[c];
            worst = worst.max((reference - ours).abs());
        }
        let one_step = 1.0 / 255.0 / cfg.image_std.iter().cloned().fold(f32::INFINITY, f32::min);
        assert!(
            worst <= one_step + 1e-6,
            "{case}: max normalised diff {worst}"
        );
        if case == "square" || pil_backend() {
            assert_eq!(worst, 0.0, "{case}: must be bit-exact");
        }
    }
}

#[test]
fn prompts_and_ids_match_transformers() {
    for ckpt in CHECKPOINTS {
        let dir = fixtures().join(ckpt);
        let cfg = ProcessorConfig::from_dir(&dir).unwrap();
        let text = InternVlText::from_dir(&dir, cfg.image_seq_length).unwrap();
        for case in CASES {
            let j = case_json(case);
            let tiles: Vec<usize> = j["num_tiles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let rendered = text.render(&j["messages"], true).unwrap();
            assert_eq!(
                rendered,
                j["rendered_prompt"].as_str().unwrap(),
                "{ckpt}/{case}: rendered prompt"
            );
            let (expanded, ids) = text.build_messages(&j["messages"], &tiles).unwrap();
            assert_eq!(
                expanded,
                j["expanded_prompt"].as_str().unwrap(),
                "{ckpt}/{case}: expanded prompt"
            );
            assert_eq!(ids, ids_of(&j["input_ids"]), "{ckpt}/{case}: input_ids");
            let n_ctx = ids.iter().filter(|&&i| i == text.image_token_id).count();
            assert_eq!(
                n_ctx,
                j["num_image_tokens"].as_u64().unwrap() as usize,
                "{ckpt}/{case}"
            );
            assert_eq!(
                text.image_token_id as u64,
                j["image_token_id"].as_u64().unwrap()
            );
        }
    }
}

#[test]
fn build_is_one_user_turn_with_images_first() {
    let dir = fixtures().join("tiny-300m-current");
    let text = InternVlText::from_dir(&dir, 256).unwrap();
    // The square case is exactly one image then the text.
    let j = case_json("square");
    let user_text = j["messages"][0]["content"][1]["text"].as_str().unwrap();
    assert_eq!(user_messages(1, user_text), j["messages"]);
    let (expanded, ids) = text.build(&[1], user_text).unwrap();
    assert_eq!(expanded, j["expanded_prompt"].as_str().unwrap());
    assert_eq!(ids, ids_of(&j["input_ids"]));
    // Two image parts render two placeholders, each expanded by its own tile count.
    let (two, _) = text.build(&[1, 3], user_text).unwrap();
    assert_eq!(two.matches("<img>").count(), 2);
    assert_eq!(two.matches("<IMG_CONTEXT>").count(), 4 * 256);
    // Tile counts that do not match the placeholders are an error, not a silent truncation.
    let err = text
        .build_messages(&j["messages"], &[1, 1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 image placeholder"), "{err}");
}

#[test]
fn stop_tokens_and_decode() {
    for ckpt in CHECKPOINTS {
        let dir = fixtures().join(ckpt);
        let text = InternVlText::from_dir(&dir, 256).unwrap();
        let im_end = text.tokenizer().token_to_id("<|im_end|>").unwrap();
        assert!(
            text.stop_token_ids().contains(&im_end),
            "{ckpt}: {:?}",
            text.stop_token_ids()
        );
        for case in CASES {
            let j = case_json(case);
            let gen = ids_of(&j["generated_ids"][ckpt]);
            let want = j["generated_text"][ckpt].as_str().unwrap();
            assert_eq!(text.decode(&gen, false).unwrap(), want, "{ckpt}/{case}");
        }
        // Round trip of plain text through the byte-level BPE.
        let s = "Describe the face: age 42, émotion neutre.";
        assert_eq!(text.decode(&text.encode(s).unwrap(), false).unwrap(), s);
    }
}

#[test]
fn template_with_python_methods_and_system_turn() {
    // Templates in the wild call Python string methods and raise_exception; render one.
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-300m-current");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let tmpl = "{% for m in messages %}{% if m['role'] not in ['system','user','assistant'] %}{{ raise_exception('bad role') }}{% endif %}\
<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'].strip() }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'].strip() }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    fs::write(
        dir.path().join("chat_template.json"),
        serde_json::json!({"chat_template": tmpl}).to_string(),
    )
    .unwrap();
    let text = InternVlText::from_dir(dir.path(), 256).unwrap();
    let msgs = serde_json::json!([
        {"role": "system", "content": "  Be brief. "},
        {"role": "user", "content": [{"type": "text", "text": " Hi "}]}
    ]);
    assert_eq!(
        text.render(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let bad = serde_json::json!([{"role": "robot", "content": "x"}]);
    let err = text.render(&bad, true).unwrap_err().to_string();
    assert!(err.contains("bad role"), "{err}");
}

#[test]
fn corrupt_image_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken_face.png");
    let mut bytes = fs::read(fixtures().join("images/face_448.png")).unwrap();
    bytes.truncate(200);
    fs::write(&path, &bytes).unwrap();
    let err = load_image(&path).unwrap_err();
    assert!(format!("{err:#}").contains("broken_face.png"), "{err:#}");
    let cfg = ProcessorConfig::default();
    let err = cfg
        .preprocess_paths(std::slice::from_ref(&path))
        .unwrap_err();
    assert!(format!("{err:#}").contains("broken_face.png"), "{err:#}");
    let missing = dir.path().join("no_such_image.jpg");
    let err = load_image(&missing).unwrap_err();
    assert!(format!("{err:#}").contains("no_such_image.jpg"), "{err:#}");
}
