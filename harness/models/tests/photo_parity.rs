//! Real image files decode as FaceLLM's own inference decodes them, and give transformers'
//! answers. The fixtures (`tests/fixtures/photos/`, written by `tools/make_photo_fixtures.py`)
//! hold one photograph (scikit-image's astronaut) in every encoding faceval reads, the RGB
//! pixels that transformers' `load_image` (Pillow: `exif_transpose`, `convert("RGB")`) made of
//! each, and transformers' greedy tokens with top-5 log-probabilities on the tiny InternVL3
//! checkpoint, through the PIL image processor.
//!
//! Per file: faceval's decoded RGB bytes equal Pillow's, and generating from the file gives
//! identical tokens with log-probabilities within 1e-3. JPEG included: it is decoded by
//! libjpeg-turbo with Pillow's settings, so its bytes are Pillow's. The 16-bit PNGs are the
//! documented exception: faceval scales 16-bit samples to 8 bits where Pillow clips or
//! truncates them, so their reference is the 8-bit photograph they were made from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use faceval_models::internvl::InternVlModel;
use faceval_models::{image_io, Model, Request};
use serde_json::Value;

const LOGPROB_TOL: f64 = 1e-3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Value {
    let p = root().join("photos/manifest.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `python tools/make_photo_fixtures.py`",
            p.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn files(m: &Value) -> Vec<(String, Value)> {
    let files: Vec<(String, Value)> = m["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(files.len() >= 20, "{}", files.len());
    files
}

/// The reference RGB bytes of one file (a lossless PNG of what `load_image` produced).
fn reference_rgb(entry: &Value) -> image::RgbImage {
    let p = root()
        .join("photos")
        .join(entry["rgb_png"].as_str().unwrap());
    image::open(&p).unwrap().into_rgb8()
}

#[test]
fn every_encoding_decodes_to_pillows_pixels() {
    let m = manifest();
    let mut failures = vec![];
    let mut encodings = std::collections::BTreeSet::new();
    for (name, entry) in files(&m) {
        let ours = image_io::open(&root().join("photos").join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
            .into_rgb8();
        let want = reference_rgb(&entry);
        let size = entry["size_wh"].as_array().unwrap();
        assert_eq!(
            (ours.width() as u64, ours.height() as u64),
            (size[0].as_u64().unwrap(), size[1].as_u64().unwrap()),
            "{name}: size after orientation"
        );
        assert_eq!(ours.dimensions(), want.dimensions(), "{name}");
        let (mut max, mut n) = (0u8, 0usize);
        for (a, b) in ours.as_raw().iter().zip(want.as_raw()) {
            if a != b {
                n += 1;
                max = max.max(a.abs_diff(*b));
            }
        }
        eprintln!(
            "{name:28} {:5} {:>32}: {n} of {} bytes differ, max |diff| {max}",
            entry["pillow_mode"].as_str().unwrap(),
            entry["encoding"].as_str().unwrap(),
            want.as_raw().len()
        );
        if n > 0 {
            failures.push(format!("{name}: {n} bytes differ (max {max})"));
        }
        encodings.insert(entry["pillow_mode"].as_str().unwrap().to_string());
    }
    // Every Pillow mode the set is meant to cover is there.
    for mode in ["RGB", "L", "P", "RGBA", "CMYK", "I;16"] {
        assert!(encodings.contains(mode), "no {mode} file in the set");
    }
    let jpegs = files(&m)
        .iter()
        .filter(|(name, _)| name.ends_with(".jpg"))
        .count();
    assert!(jpegs >= 10, "only {jpegs} JPEG files in the set");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_encoding_gives_transformers_answers() {
    let m = manifest();
    let ckpt = root().join("internvl/tiny-300m-current");
    let mut model = InternVlModel::load(ckpt.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let prompt = m["prompt"].as_str().unwrap().to_string();
    let max_new_tokens = m["max_new_tokens"].as_u64().unwrap() as usize;
    let mut worst = 0f64;
    for (name, entry) in files(&m) {
        let img = image_io::open(&root().join("photos").join(&name)).unwrap();
        let request = Request {
            images: vec![Arc::new(img)],
            prompt: prompt.clone(),
            max_new_tokens,
            stop: vec![],
            choices: vec![],
            choice_texts: vec![],
            seed: 0,
        };
        let g = model.generate(&request).unwrap();
        let want: Vec<u32> = entry["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(g.token_ids, want, "{name}: greedy tokens");
        let steps = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(g.top_logprobs.len(), steps.len(), "{name}");
        let mut file_worst = 0f64;
        for (step, (ours, theirs)) in g.top_logprobs.iter().zip(steps).enumerate() {
            // Compare by token id: the top-5 of both sides, wherever both have the token.
            let mut matched = 0;
            for t in theirs.as_array().unwrap() {
                let id = t[0].as_u64().unwrap() as u32;
                let lp = t[1].as_f64().unwrap();
                if let Some((_, ours_lp)) = ours.iter().find(|(i, _)| *i == id) {
                    let d = (*ours_lp as f64 - lp).abs();
                    file_worst = file_worst.max(d);
                    assert!(
                        d <= LOGPROB_TOL,
                        "{name}: step {step} token {id}: logprob {ours_lp} vs transformers' {lp}"
                    );
                    matched += 1;
                }
            }
            assert!(
                matched >= 3,
                "{name}: step {step}: top-5 lists barely overlap: {ours:?} vs {theirs}"
            );
        }
        eprintln!("{name:28} tokens identical, max |logprob diff| {file_worst:.2e}");
        worst = worst.max(file_worst);
    }
    eprintln!("worst |logprob diff| over the photo set: {worst:.2e}");
}

#[test]
fn a_truncated_jpeg_is_an_error_naming_the_file() {
    // Pillow refuses a JPEG whose data ends early ("image file is truncated"); so does faceval,
    // rather than score a half-grey face.
    let whole = std::fs::read(root().join("photos/astronaut.jpg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &whole[..whole.len() * 2 / 3]).unwrap();
    let err = format!("{:#}", image_io::open(&cut).unwrap_err());
    assert!(
        err.contains("cut.jpg") && err.contains("Premature end of JPEG file"),
        "{err}"
    );
    // Every shorter prefix is an error too, never a panic.
    for n in (0..whole.len()).step_by(997) {
        assert!(
            image_io::decode(&whole[..n]).is_err(),
            "prefix of {n} bytes"
        );
    }
}
