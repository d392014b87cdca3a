//! Evaluation for faceval: tasks as data, dataset readers, prompts, answer extraction, runs
//! and their folder format, scoring with intervals, statistics and fairness.
//!
//! It depends on `faceval-models` only through the [`faceval_models::Model`] trait.

pub mod audit;
pub mod builtin;
pub mod calibration;
pub mod datasets;
pub mod demo;
pub mod error;
pub mod extract;
pub mod fairness;
pub mod gate;
pub mod hardware;
pub mod import;
pub mod item;
pub mod labels;
pub mod merge;
pub mod metrics;
pub mod model_manifest;
pub mod prompt;
pub mod run_folder;
pub mod runner;
pub mod score;
pub mod sensitivity;
pub mod stats;
pub mod task;
pub mod telemetry;

pub use error::{input_error, is_input_error, InputError};
pub use item::{Item, ItemError, ReadOutcome, Target};
pub use task::{Task, TaskSpec};
