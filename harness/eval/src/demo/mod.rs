//! `faceval demo`: everything needed to run the harness end to end on a fresh machine with
//! no weights and no data. [`synth`] draws a small labelled face dataset from a seed.

pub mod facexbench;
pub mod pairs;
pub mod runner;
pub mod synth;
pub mod tiny_model;

pub use synth::{draw_face, generate, specs, FaceSpec, SynthDataset, SynthRow, MANIFEST_COLUMNS};
