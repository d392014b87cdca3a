//! Inference for face-understanding multimodal LLMs behind one [`Model`] trait.
//!
//! Every model faceval evaluates — FaceLLM, the InternVL3 baselines, the trivial floors —
//! answers the same [`Request`]: images plus one prompt, rendered byte-identically upstream.
//! This crate knows nothing of tasks, datasets or scoring.

pub mod baselines;
pub mod chat_template;
pub mod checkpoint;
pub mod device;
pub mod generation;
pub mod hub;
pub mod image_io;
pub mod internvl;
pub mod llava;
pub mod model;
pub mod nn;
pub mod openai;
pub mod preprocess;
pub mod qwen2_vl;
pub mod stream;
pub mod zero_shot;

pub use baselines::{MajorityModel, RandomModel};
pub use model::{Generation, Model, ModelInfo, ModelUnavailable, Request, StepTimings, Traffic};
