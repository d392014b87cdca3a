//! InternVL3-1B-sized inference on the CPU in f32: vision forward (one 448 px tile through
//! InternViT-300M and the projector), prefill (the whole prompt through Qwen2-0.5B-sized layers
//! up to the first token's logits) and one decode step (one token after the prompt's KV cache).
//!
//! The checkpoint has the dimensions of InternVL3-1B with seeded random weights, written once by
//! `faceval_models::internvl::tiny` into the benches' target tmpdir (about 3.2 GB; set
//! `FACEVAL_BENCH_CHECKPOINT` to use another folder) and loaded like any checkpoint. Speed does
//! not depend on the weights' values. Sample counts are small: one vision forward takes seconds
//! on two cores. `docs/performance.md` has the figures and the transformers comparison.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use faceval_models::internvl::tiny::{write_checkpoint, TinySpec};
use faceval_models::internvl::{vision, InternVlModel};

/// The prompt of `tools/cpu_side_by_side.py`.
const PROMPT: &str = "Describe the face in this image.";

fn checkpoint() -> PathBuf {
    if let Some(dir) = std::env::var_os("FACEVAL_BENCH_CHECKPOINT") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("internvl3-1b-random-seed0");
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "writing the InternVL3-1B-sized checkpoint to {}",
            dir.display()
        );
        write_checkpoint(&dir, &TinySpec::internvl3_1b(), 0).expect("write the bench checkpoint");
    }
    dir
}

/// The bench checkpoint on the CPU in f32, loaded through the model registry like any
/// checkpoint `faceval run` loads.
fn load(dir: &Path) -> InternVlModel {
    faceval_eval::registry::load_internvl("bench", &dir.display().to_string(), "cpu", "f32")
        .expect("load the bench checkpoint")
}

fn face() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../harness/models/tests/fixtures/internvl/images/face_448.png")
}

fn internvl(c: &mut Criterion) {
    let dir = checkpoint();
    let model = load(&dir);
    let net = model.network();
    let pixels = model.processor().preprocess_paths(&[face()]).unwrap();
    let (_, ids) = model.text().build(&pixels.tiles_per_image, PROMPT).unwrap();
    let px = pixels.to_tensor(net.device()).unwrap();
    let feats = net.image_features(&px).unwrap();
    let embeds = net.input_embeds(&ids, Some(&feats)).unwrap();
    eprintln!(
        "prompt: {} tokens ({} tiles); {} parameters",
        ids.len(),
        pixels.tiles_per_image.iter().sum::<usize>(),
        TinySpec::internvl3_1b().param_count()
    );

    let mut g = c.benchmark_group("internvl3_1b_cpu_f32");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    g.bench_function("vision_forward_1_tile", |b| {
        b.iter(|| net.image_features(&px).unwrap())
    });
    // The same forward through candle's composed ops (the path other devices take), for an
    // A/B against the fused CPU kernels in one process on the same machine state.
    vision::set_fused_cpu_kernels(false);
    g.bench_function("vision_forward_1_tile_composed_ops", |b| {
        b.iter(|| net.image_features(&px).unwrap())
    });
    vision::set_fused_cpu_kernels(true);
    g.bench_function("prefill", |b| {
        b.iter(|| {
            let mut cache = net.new_cache();
            let h = net.forward(&embeds, &mut cache).unwrap();
            let t = h.dim(1).unwrap();
            net.logits(&h.narrow(1, t - 1, 1).unwrap()).unwrap()
        })
    });
    let mut prefilled = net.new_cache();
    net.forward(&embeds, &mut prefilled).unwrap();
    let next = net.language_model().embed_ids(&[151]).unwrap();
    g.bench_function("decode_step", |b| {
        b.iter(|| {
            // A copy of the prompt's cache (reference-counted tensors), so every step sees the
            // same context length.
            let mut cache = prefilled.clone();
            let h = net.forward(&next, &mut cache).unwrap();
            net.logits(&h).unwrap()
        })
    });
    g.finish();
}

/// Batching on the same checkpoint: four questions about one face (features cached, so only
/// the decoder runs) answered one at a time and as one `generate_batch`, and seven answer
/// choices scored one forward pass each and in one packed pass. Both pairs give the same
/// outputs (`harness/models/tests/internvl_batch.rs`); the bench measures the time.
fn internvl_batching(c: &mut Criterion) {
    use faceval_models::internvl::generate;
    use faceval_models::{Model, Request};
    use std::sync::Arc;

    let dir = checkpoint();
    let mut model = load(&dir);
    let face_image = Arc::new(faceval_models::internvl::preprocess::load_image(&face()).unwrap());
    let ask = |prompt: &str| Request {
        images: vec![face_image.clone()],
        prompt: prompt.to_string(),
        max_new_tokens: 8,
        stop: vec![],
        choices: vec![],
        choice_texts: vec![],
        seed: 0,
    };
    let requests = vec![
        ask(PROMPT),
        ask("How old is this person?"),
        ask("What is the gender of this person?"),
        ask("What is the race of this person? Answer with one word."),
    ];
    // Encodes the face once; every later request hits the feature cache.
    let miss = model.generate(&requests[0]).unwrap().timings;
    // One pass of each, for the stage split (criterion times only the whole call).
    let alone: Vec<_> = requests
        .iter()
        .map(|r| model.generate(r).unwrap())
        .collect();
    let together: Vec<_> = model
        .generate_batch(&requests)
        .into_iter()
        .map(|g| g.unwrap())
        .collect();
    let sum = |f: fn(&faceval_models::StepTimings) -> f64| -> f64 {
        alone.iter().map(|g| f(&g.timings)).sum()
    };
    eprintln!(
        "feature cache: miss preprocess {:.1} ms + vision {:.1} ms; hit preprocess {:.1} ms + \
         vision {:.1} ms ({:?})",
        miss.preprocess_ms,
        miss.vision_ms,
        alone[0].timings.preprocess_ms,
        alone[0].timings.vision_ms,
        model.feature_cache_stats()
    );
    eprintln!(
        "4 requests one at a time: prefill {:.0} ms, decode {:.0} ms (sums); as one batch: \
         prefill {:.0} ms, decode {:.0} ms; tokens equal: {}",
        sum(|t| t.prefill_ms),
        sum(|t| t.decode_ms),
        together[0].timings.prefill_ms,
        together[0].timings.decode_ms,
        alone
            .iter()
            .zip(&together)
            .all(|(a, b)| a.token_ids == b.token_ids)
    );

    let mut g = c.benchmark_group("internvl3_1b_cpu_f32_batching");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30));
    g.bench_function("generate_4x8_tokens_one_at_a_time", |b| {
        b.iter(|| {
            for r in &requests {
                model.generate(r).unwrap();
            }
        })
    });
    g.bench_function("generate_4x8_tokens_batch_4", |b| {
        b.iter(|| {
            for g in model.generate_batch(&requests) {
                g.unwrap();
            }
        })
    });

    let net = model.network();
    let pixels = model.processor().preprocess_paths(&[face()]).unwrap();
    let (_, ids) = model
        .text()
        .build(&pixels.tiles_per_image, "What is the race of this person?")
        .unwrap();
    let feats = net
        .image_features(&pixels.to_tensor(net.device()).unwrap())
        .unwrap();
    let embeds = net.input_embeds(&ids, Some(&feats)).unwrap();
    // Seven FairFace-like answers of 2 to 5 tokens (ids of the fixture tokenizer's range).
    let options: Vec<Vec<u32>> = (0..7u32)
        .map(|i| (0..2 + i % 4).map(|j| 20 + 7 * i + j).collect())
        .collect();
    g.bench_function("choice_scores_7_sequential", |b| {
        b.iter(|| generate::continuation_logprobs_sequential(net, &embeds, &options).unwrap())
    });
    g.bench_function("choice_scores_7_packed", |b| {
        b.iter(|| generate::continuation_logprobs(net, &embeds, &options).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No plots: plotters needs system fonts that minimal machines lack.
    config = Criterion::default().without_plots();
    targets = internvl, internvl_batching
}
criterion_main!(benches);
