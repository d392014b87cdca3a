//! Batching and caching must not change what InternVL says, on the tiny random-weight fixture
//! checkpoints (`tests/fixtures/internvl`, see `internvl_parity.rs`), in f32 on CPU:
//!
//! - `Model::generate_batch` over requests with different prompt lengths, images (one repeated,
//!   two in one request, none), `max_new_tokens` and a stop string gives the tokens and text of
//!   `Model::generate` one request at a time, and top log-probabilities within 1e-5;
//! - the packed prefill split into groups (a small token budget) changes nothing either;
//! - scoring answer continuations in one packed pass equals scoring them one by one (1e-5);
//! - the image-feature cache: a repeated image is a hit, skips preprocessing and vision, and
//!   gives exactly the uncached model's output; the byte budget evicts least recently used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use faceval_models::internvl::generate::{self, DecodeOptions};
use faceval_models::internvl::model::FeatureCacheStats;
use faceval_models::internvl::InternVlModel;
use faceval_models::{Generation, Model, Request};
use image::DynamicImage;

const LOGPROB_TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    match std::env::var_os("INTERNVL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/internvl"),
    }
}

fn load(checkpoint: &str) -> InternVlModel {
    let dir = fixtures().join(checkpoint);
    InternVlModel::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32)
        .unwrap_or_else(|e| panic!("loading {checkpoint}: {e:#}"))
}

fn image(name: &str) -> Arc<DynamicImage> {
    let path = fixtures().join("images").join(name);
    Arc::new(image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn request(images: &[&Arc<DynamicImage>], prompt: &str, max_new_tokens: usize) -> Request {
    Request {
        images: images.iter().map(|i| Arc::clone(i)).collect(),
        prompt: prompt.to_string(),
        max_new_tokens,
        stop: vec![],
        choices: vec![],
        choice_texts: vec![],
        seed: 0,
    }
}

/// Requests that differ in every way batching has to handle.
fn mixed_requests() -> Vec<Request> {
    let face = image("face_448.png");
    let wide = image("group_700x340.png");
    let small = image("face_380x380.png");
    let rgba = image("face_520x500.png");
    vec![
        request(&[&face], "Describe the face in this image.", 9),
        request(
            &[&wide],
            "How many people are in this picture, and what are their ages, genders and \
             expressions? Answer in one sentence.",
            14,
        ),
        // The same face again, with another question: a feature-cache hit inside the batch.
        request(&[&face], "Age?", 5),
        request(&[&small, &rgba], "Are these the same person?", 11),
        request(&[], "Say something about faces.", 7),
        request(&[&face], "One token only.", 1),
        request(&[&small], "Nothing at all.", 0),
    ]
}

/// Asserts that `b` is the same generation as `a` (timings aside); returns the largest
/// log-probability difference.
fn assert_same(a: &Generation, b: &Generation, what: &str) -> f32 {
    assert_eq!(a.token_ids, b.token_ids, "{what}: tokens differ");
    assert_eq!(a.text, b.text, "{what}: text differs");
    assert_eq!(a.prompt_tokens, b.prompt_tokens, "{what}: prompt length");
    assert_eq!(a.top_logprobs.len(), b.top_logprobs.len(), "{what}: steps");
    let mut worst = 0f32;
    for (step, (x, y)) in a.top_logprobs.iter().zip(&b.top_logprobs).enumerate() {
        let ids = |v: &Vec<(u32, f32)>| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(ids(x), ids(y), "{what}: top tokens at step {step}");
        for (p, q) in x.iter().zip(y) {
            let d = (p.1 - q.1).abs();
            assert!(
                d <= LOGPROB_TOL,
                "{what}: step {step} token {} logprob {} vs {} (|d| = {d:e})",
                p.0,
                p.1,
                q.1
            );
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
fn batch_n_equals_batch_1() {
    for ck in ["tiny-300m-current", "tiny-6b"] {
        let mut requests = mixed_requests();
        let mut single = load(ck);
        let mut alone: Vec<Generation> = requests
            .iter()
            .map(|r| single.generate(r).unwrap_or_else(|e| panic!("{ck}: {e:#}")))
            .collect();
        // A stop string taken from the first answer, so that request stops early on its own.
        let first = alone[0].text.clone();
        let mut cut = first.char_indices().map(|(i, _)| i).filter(|&i| i > 0);
        if let (Some(a), Some(b)) = (cut.next(), cut.next()) {
            let mut stopped = requests[0].clone();
            stopped.stop = vec![first[a..b].to_string()];
            stopped.prompt.push_str(" Briefly.");
            alone.push(single.generate(&stopped).unwrap());
            requests.push(stopped);
        }
        assert!(alone.iter().any(|g| g.token_ids.len() >= 5));
        assert!(alone.iter().any(|g| g.token_ids.is_empty()));

        let mut batched = load(ck);
        let together = batched.generate_batch(&requests);
        assert_eq!(together.len(), requests.len());
        let mut worst = 0f32;
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            let b = b
                .as_ref()
                .unwrap_or_else(|e| panic!("{ck} request {i}: {e:#}"));
            worst = worst.max(assert_same(a, b, &format!("{ck} request {i}")));
            assert!(b.timings.prefill_ms > 0.0 && b.timings.decode_ms >= 0.0);
        }
        // Four distinct images, each encoded once; the face is used four times, the small
        // face twice.
        let stats = batched.feature_cache_stats();
        assert_eq!(stats.misses, 4, "{ck}: {stats:?}");
        assert!(stats.hits >= 3, "{ck}: {stats:?}");
        eprintln!(
            "{ck}: batch of {} equals batch 1; max |top logprob diff| = {worst:e}",
            requests.len()
        );

        // Batch 2 and a batch holding one request are the same again.
        let pair = batched.generate_batch(&requests[1..3]);
        for (k, g) in pair.iter().enumerate() {
            assert_same(
                &alone[k + 1],
                g.as_ref().unwrap(),
                &format!("{ck} pair {k}"),
            );
        }
        let one = batched.generate_batch(&requests[3..4]);
        assert_same(&alone[3], one[0].as_ref().unwrap(), &format!("{ck} one"));
    }
}

#[test]
fn a_failing_request_does_not_fail_the_batch() {
    let mut m = load("tiny-300m-current");
    let face = image("face_448.png");
    // Past the context: the prompt is longer than max_position_embeddings tokens.
    let long = "face ".repeat(m.context_length() + 10);
    let requests = vec![
        request(&[&face], "Describe the face.", 4),
        request(&[], &long, 4),
        request(&[&face], "And again.", 3),
    ];
    let out = m.generate_batch(&requests);
    let err = out[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
    for i in [0, 2] {
        let want = m.generate(&requests[i]).unwrap();
        assert_same(&want, out[i].as_ref().unwrap(), &format!("request {i}"));
    }
}

#[test]
fn prefill_groups_and_greedy_batch_match_greedy() {
    // At the network level: one prefill group, one group per prompt, and batch 1.
    let m = load("tiny-6b");
    let net = m.network();
    let prompts = [
        (vec!["face_448.png"], "Describe the face.", 6),
        (vec!["group_700x340.png"], "Who is here?", 9),
        (
            vec![],
            "Plain text, a little longer than the others are.",
            4,
        ),
    ];
    let mut embeds = vec![];
    let mut opts = vec![];
    for (imgs, text, n) in prompts {
        let paths: Vec<PathBuf> = imgs
            .iter()
            .map(|i| fixtures().join("images").join(i))
            .collect();
        let (tiles, feats) = if paths.is_empty() {
            (vec![], None)
        } else {
            let px = m.processor().preprocess_paths(&paths).unwrap();
            let f = net
                .image_features(&px.to_tensor(net.device()).unwrap())
                .unwrap();
            (px.tiles_per_image.clone(), Some(f))
        };
        let (_, ids) = m.text().build(&tiles, text).unwrap();
        embeds.push(net.input_embeds(&ids, feats.as_ref()).unwrap());
        opts.push(DecodeOptions {
            max_new_tokens: n,
            stop_token_ids: vec![],
            top_logprobs: 5,
            keep_step_logits: true,
        });
    }
    let alone: Vec<_> = embeds
        .iter()
        .zip(&opts)
        .map(|(e, o)| generate::greedy(net, e, o, |_| false).unwrap())
        .collect();
    for budget in [usize::MAX, 1, 600] {
        let outs = generate::greedy_batch(net, &embeds, &opts, budget, |_, _| false).unwrap();
        for (i, (a, b)) in alone.iter().zip(outs).enumerate() {
            let b = b.unwrap();
            assert_eq!(a.tokens, b.tokens, "budget {budget}, prompt {i}");
            assert_eq!(a.stop, b.stop);
            assert_eq!(a.tokens.len(), opts[i].max_new_tokens);
            for (x, y) in a.step_logits.iter().zip(&b.step_logits) {
                let d = x
                    .iter()
                    .zip(y)
                    .fold(0f32, |acc, (p, q)| acc.max((p - q).abs()));
                assert!(
                    d <= 1e-5,
                    "budget {budget}, prompt {i}: logits differ by {d}"
                );
            }
        }
    }
}

#[test]
fn batched_choice_scoring_equals_sequential() {
    for ck in ["tiny-300m-current", "tiny-6b"] {
        let m = load(ck);
        let net = m.network();
        let px = m
            .processor()
            .preprocess_paths(&[fixtures().join("images/face_520x500.png")])
            .unwrap();
        let feats = net
            .image_features(&px.to_tensor(net.device()).unwrap())
            .unwrap();
        let (_, ids) = m
            .text()
            .build(&px.tiles_per_image, "What is the age of this person?")
            .unwrap();
        let embeds = net.input_embeds(&ids, Some(&feats)).unwrap();
        // Different lengths, equal lengths, one-token answers, a shared first token.
        let conts: Vec<Vec<u32>> = vec![
            vec![5],
            vec![7, 9, 11, 362],
            vec![9, 7],
            vec![9, 8],
            vec![100, 101, 102, 103, 104, 105, 362],
            vec![12],
        ];
        let batched = generate::continuation_logprobs(net, &embeds, &conts).unwrap();
        let sequential = generate::continuation_logprobs_sequential(net, &embeds, &conts).unwrap();
        let worst = batched
            .iter()
            .zip(&sequential)
            .fold(0f64, |acc, (a, b)| acc.max((a - b).abs()));
        eprintln!("{ck}: batched vs sequential choice scores differ by at most {worst:e}");
        assert!(worst <= 1e-5, "{ck}: {batched:?} vs {sequential:?}");
        assert!(batched.iter().all(|s| s.is_finite() && *s < 0.0));
        let err = generate::continuation_logprobs(net, &embeds, &[vec![5], vec![]]);
        assert!(err.unwrap_err().to_string().contains("empty"));
    }
}

#[test]
fn feature_cache_hits_repeat_images_without_changing_outputs() {
    let mut cached = load("tiny-300m-current");
    let mut uncached = load("tiny-300m-current");
    uncached.set_feature_cache_bytes(0);
    let face = image("face_448.png");
    let q1 = request(&[&face], "How old is this person?", 6);
    let q2 = request(&[&face], "What is this person's gender?", 6);
    // The same pixels with an alpha channel: the processor drops alpha, so the key does too.
    let rgba = Arc::new(DynamicImage::ImageRgba8(face.to_rgba8()));
    let q3 = request(&[&rgba], "How old is this person?", 6);

    let first = cached.generate(&q1).unwrap();
    assert_eq!(
        cached.feature_cache_stats(),
        FeatureCacheStats {
            hits: 0,
            misses: 1,
            evictions: 0,
            entries: 1,
            bytes: 256 * 64 * 4,
            capacity_bytes: faceval_models::internvl::model::DEFAULT_FEATURE_CACHE_BYTES,
        }
    );
    let second = cached.generate(&q2).unwrap();
    let third = cached.generate(&q3).unwrap();
    let stats = cached.feature_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 1, 1));
    assert_same(&uncached.generate(&q1).unwrap(), &first, "first ask");
    assert_same(&uncached.generate(&q2).unwrap(), &second, "second ask");
    assert_same(&first, &third, "rgba copy");
    assert_eq!(uncached.feature_cache_stats().hits, 0);
    // A hit neither tiles nor encodes: its vision time is the splice only.
    eprintln!(
        "miss: preprocess {:.2} ms, vision {:.2} ms; hit: preprocess {:.2} ms, vision {:.2} ms",
        first.timings.preprocess_ms,
        first.timings.vision_ms,
        second.timings.preprocess_ms,
        second.timings.vision_ms
    );
    assert!(second.timings.vision_ms < first.timings.vision_ms);

    // A budget of one image's features: a second image evicts the first.
    cached.set_feature_cache_bytes(256 * 64 * 4);
    let other = image("face_380x380.png");
    cached.generate(&q1).unwrap();
    cached.generate(&request(&[&other], "How old?", 2)).unwrap();
    cached.generate(&q1).unwrap();
    let s = cached.feature_cache_stats();
    assert_eq!(
        (s.hits, s.misses, s.evictions, s.entries),
        (0, 3, 2, 1),
        "{s:?}"
    );
    assert!(s.bytes <= s.capacity_bytes);
    cached.generate(&q2).unwrap();
    assert_eq!(cached.feature_cache_stats().hits, 1);
}
