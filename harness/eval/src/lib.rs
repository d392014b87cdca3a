//! Evaluation for faceval: tasks as data, dataset readers, prompts, answer extraction, runs
//! and their folder format, scoring with intervals, statistics and fairness.
//!
//! # Principal types
//!
//! - [`Task`] (`task.rs`): one benchmark task read from TOML — dataset, question style, labels,
//!   groups — with a fingerprint so runs can tell whether two definitions are the same.
//! - [`Item`] (`item.rs`): one question of a task as a dataset reader produced it.
//! - [`run_folder`]: the public result format. `schema.rs` spells every type of it
//!   ([`run_folder::Manifest`], [`run_folder::Prediction`], the telemetry summaries),
//!   `read.rs` is the one reader ([`run_folder::LoadedRun`], the fold of circular rotations,
//!   [`run_folder::same_task`]) and `write.rs` the crash-safe writer.
//! - [`metrics::RunMetrics`], [`audit::AuditReport`] and [`gate::GateReport`]: what a run, a
//!   fairness audit and a baseline-vs-candidate gate compute. They are typed data; every
//!   rendering (text, Markdown, JUnit, HTML) lives in `faceval-report`.
//!
//! # How data flows
//!
//! ```text
//! task TOML ─▶ Task ─▶ datasets::read_task ─▶ Items ─▶ prompt ─▶ faceval_models::Model
//!                                                                     │
//!        metrics.json ◀─ metrics::compute ◀─ predictions.jsonl ◀─ score/extract ◀─┘
//!                            │                       │
//!                 audit / gate / sensitivity ◀── run_folder::read (LoadedRun, fold)
//! ```
//!
//! The [`runner`] plans which questions to ask, asks the model, scores each answer
//! ([`extract`], [`score`]), appends it to the run folder and finally writes `metrics.json`.
//! Everything downstream — [`metrics`], [`audit`], [`gate`], [`sensitivity`],
//! [`calibration`], [`merge`], [`import`] and the report crate — reads run folders through
//! [`run_folder`] alone, so any folder in the format (imported ones too) can be scored.
//! Statistics live in [`stats`] (intervals, bootstraps, paired tests, multiple testing, the
//! one type-7 quantile) and [`fairness`] (group accuracies, disparities); [`telemetry`]
//! summarises latencies from predictions and [`hardware`] measures the machine while a run
//! goes.
//!
//! # Where to start reading
//!
//! `run_folder/schema.rs` for the format, then `metrics.rs` for how a run is scored, then
//! `runner/mod.rs` for how a run is made. `docs/run-format.md` and `docs/task-format.md` describe
//! the same things for users.
//!
//! Model families are named only in [`registry`] (and the demo's tiny model); everything else
//! asks a [`faceval_models::Model`].

pub mod audit;
pub mod builtin;
pub mod calibration;
pub mod contamination;
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
pub mod overlap;
pub mod prompt;
pub mod registry;
pub mod run_folder;
pub mod runner;
pub mod score;
pub mod sensitivity;
pub mod stats;
pub mod task;
pub mod telemetry;
pub mod verification;

pub use error::{input_error, is_input_error, InputError};
pub use item::{Item, ItemError, ReadOutcome, Target};
pub use task::{Task, TaskSpec};
