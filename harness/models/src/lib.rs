//! Inference for face-understanding multimodal LLMs behind one [`Model`] trait.
//!
//! Every model faceval evaluates — FaceLLM, the InternVL3 baselines, the trivial floors —
//! answers the same [`Request`]: images plus one prompt, rendered byte-identically upstream.
//! This crate knows nothing of tasks, datasets or scoring.
//!
//! # Principal types
//!
//! - [`Model`] (`model.rs`): `generate` a [`Generation`] for a [`Request`], optionally in
//!   batches, streamed, or as per-choice log-likelihoods; [`ModelInfo`] describes the weights.
//! - The families: [`internvl`] (InternVL3 / FaceLLM), [`llava`], [`zero_shot`] (contrastive
//!   image–text scoring), [`openai`] (any OpenAI-compatible server) and [`baselines`] (random
//!   and majority floors).
//! - [`StepTimings`]: the per-stage timings every model reports, which telemetry summarises.
//!
//! # How data flows
//!
//! A checkpoint folder (or an `hf://` id fetched by [`hub`]) is read into a family's model;
//! [`image_io`] decodes images; the runner in `faceval-eval` builds a [`Request`] per question
//! and records the [`Generation`]. [`stream`] carries tokens as they are made, for
//! `faceval serve`.
//!
//! # Where to start reading
//!
//! `model.rs`, then one family's `mod.rs` (`internvl/mod.rs` is the reference one).

pub mod baselines;
pub mod chat_template;
pub mod checkpoint;
pub mod conversation;
pub mod generation;
pub mod hub;
pub mod image_io;
pub mod internvl;
pub mod kernels;
pub mod llava;
pub mod model;
pub mod nn;
pub mod openai;
pub mod placement;
pub mod preprocess;
pub mod qwen2_vl;
pub mod stream;
pub mod zero_shot;

pub use baselines::{MajorityModel, RandomModel, Vote};
pub use model::{Generation, Model, ModelInfo, ModelUnavailable, Request, StepTimings, Traffic};
