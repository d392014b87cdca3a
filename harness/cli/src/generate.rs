//! `faceval generate`: ask a model (an InternVL or LLaVA checkpoint, a CLIP/SigLIP zero-shot
//! classifier, a served model) one question about some images and print the answer — the same
//! request path a run takes (chat template, tiling, greedy decoding), without a task or a run
//! folder. `--json` prints the tokens, the five best log-probabilities of every
//! step and the stage timings, for debugging and for timing against other implementations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use faceval_eval::error::input_error;
use faceval_eval::model_manifest::{self, ModelKind};
use faceval_models::{Model, Request};
use serde_json::json;

#[derive(Args)]
pub struct GenerateArgs {
    /// A checkpoint folder, hf://Org/Name[@rev], or a model manifest (file or name).
    #[arg(long)]
    pub model: String,
    /// Images, in prompt order (zero or more).
    #[arg(long = "image", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// The user text; the images come before it in the same turn.
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Stop at the first of these strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// An answer option (repeatable), e.g. `--choice happy --choice sad`: zero-shot classifiers
    /// and the random baseline choose among them; generative models ignore them.
    #[arg(long = "choice")]
    pub choices: Vec<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto (f32 on CPU, bf16 on CUDA), f32, bf16 or f16; default: the manifest's (auto).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Print one JSON object: text, token_ids, prompt_tokens, top_logprobs, timings.
    #[arg(long)]
    pub json: bool,
    /// Ask the same request this many times in one process (the model loaded once) and report
    /// every run's timings under `repeats`; `timings` are the last run's. For timing.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,
    /// InternVL: MiB of image features kept between calls (an image seen again skips the
    /// vision encoder); 0 turns the cache off, so every `--repeat` encodes the image anew.
    #[arg(long)]
    pub feature_cache_mb: Option<u64>,
}

fn read_image(path: &Path) -> anyhow::Result<image::DynamicImage> {
    let bytes = std::fs::read(path)
        .map_err(|e| input_error(format!("{}: cannot read image: {e}", path.display())))?;
    faceval_models::image_io::decode(&bytes)
        .map_err(|e| input_error(format!("{}: not a decodable image: {e:#}", path.display())))
}

pub fn generate(args: GenerateArgs, baselines_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let loaded = model_manifest::resolve(&args.model, baselines_dir)?;
    let m = &loaded.manifest;
    if m.kind == ModelKind::Majority {
        return Err(input_error(
            "faceval generate cannot ask the majority baseline: it needs a task's reference split",
        ));
    }
    let images = args
        .images
        .iter()
        .map(|p| read_image(p).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut model: Box<dyn Model> = if m.kind == ModelKind::Internvl {
        let mut model = faceval_eval::registry::load_internvl(
            &m.name,
            &m.source,
            &args.device,
            args.dtype.as_deref().unwrap_or(&m.dtype),
        )?;
        if let Some(mb) = args.feature_cache_mb {
            model.set_feature_cache_bytes(mb.saturating_mul(1 << 20));
        }
        Box::new(model)
    } else {
        match faceval_eval::registry::instantiate_on(&loaded, &args.device, args.dtype.as_deref())?
            .0
        {
            faceval_eval::runner::ModelHandle::Loaded(model) => model,
            faceval_eval::runner::ModelHandle::Majority => {
                return Err(input_error("the majority baseline needs a task"))
            }
        }
    };
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let request = Request {
        images,
        prompt: args.prompt.clone(),
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
        choices: args.choices.clone(),
        choice_texts: args.choices.clone(),
        seed: 0,
    };
    let mut repeats = Vec::with_capacity(args.repeat as usize);
    let mut last = None;
    for _ in 0..args.repeat {
        let started = Instant::now();
        let mut g = model.generate(&request)?;
        g.timings.e2e_ms = started.elapsed().as_secs_f64() * 1e3;
        repeats.push(g.timings.clone());
        last = Some(g);
    }
    let g = last.ok_or_else(|| anyhow::anyhow!("--repeat must be at least 1"))?;
    if args.json {
        let info = model.info();
        let decode_steps = g.token_ids.len().saturating_sub(1);
        let out = json!({
            "text": g.text,
            "token_ids": g.token_ids,
            "prompt_tokens": g.prompt_tokens,
            "top_logprobs": g.top_logprobs,
            "timings": g.timings,
            "repeats": repeats,
            // The first token comes from the prefill; each later one from one decode step.
            "decode_tokens_per_s": (decode_steps > 0 && g.timings.decode_ms > 0.0)
                .then(|| decode_steps as f64 / (g.timings.decode_ms / 1e3)),
            "load_ms": load_ms,
            "model": {
                "name": info.name,
                "source": m.source,
                "device": info.device,
                "dtype": info.dtype,
                "weight_bytes": info.weight_bytes,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", g.text);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct MakeCheckpointArgs {
    /// `tiny` (the demo model) or `1b` (InternVL3-1B dimensions, about 3.2 GB in f32).
    #[arg(long, default_value = "1b")]
    pub size: String,
    /// Folder to write (config.json, model.safetensors, tokenizer, templates).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Hidden `faceval make-checkpoint`: writes a seeded random-weight InternVL3 checkpoint in the
/// transformers 5.x format, for benchmarks and for timing against transformers on equal weights
/// (`tools/cpu_side_by_side.py`).
pub fn make_checkpoint(args: MakeCheckpointArgs) -> anyhow::Result<ExitCode> {
    use faceval_models::internvl::tiny::{write_checkpoint, TinySpec};
    let spec = TinySpec::by_name(&args.size).map_err(|e| input_error(format!("--size: {e}")))?;
    let started = Instant::now();
    write_checkpoint(&args.out, &spec, args.seed)?;
    eprintln!(
        "{}: {} parameters, seed {}, {:.1} s",
        args.out.display(),
        spec.param_count(),
        args.seed,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
