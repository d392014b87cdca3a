//! One fuzz target per faceval parser, each through the parser's public entry point and seeded
//! from the repository's own files (see fuzz/src/lib.rs for the modes and docs/fuzzing.md).
//!
//! A target passes when no input panics or hangs; parser errors are the expected answer to
//! most generated inputs and are not checked here beyond "no panic" (their wording is tested
//! next to each parser).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use faceval_eval::datasets::read_task;
use faceval_eval::run_folder::{read_manifest, read_predictions, Prediction};
use faceval_eval::task::Task;
use faceval_fuzz::{committed_seeds, fuzz, repo_files, repo_root, Kind};
use faceval_models::internvl::preprocess::ProcessorConfig;
use faceval_models::internvl::text::InternVlText;
use faceval_models::internvl::weights::Weights;
use faceval_models::internvl::{CheckpointFiles, InternVlConfig};
use faceval_models::llava::preprocess::LlavaProcessorConfig;
use faceval_models::llava::text::LlavaText;
use faceval_models::llava::weights::LoadedWeights;
use faceval_models::llava::LlavaConfig;
use faceval_models::zero_shot::{Family, ImageProcessor, TextTokenizer, ZeroShotConfig};

const FIXTURES: &str = "harness/models/tests/fixtures";

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// A 2x2 PNG: readers only check that images exist, but a real one costs nothing.
fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(2, 2, image::Rgb([90, 120, 200]))
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A data root laid out as the shipped tasks expect (their `dataset.path`s), with the images
/// the seed label files name, so mutated label files reach the per-row checks.
fn data_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let img = png();
    for i in 1..=7 {
        write(
            &root.join(format!(
                "fairface/fairface-img-margin025-trainval/val/{i}.jpg"
            )),
            &img,
        );
    }
    for n in [
        "train_00001",
        "train_00002",
        "test_0001",
        "test_0002",
        "test_0003",
    ] {
        write(
            &root.join(format!("rafdb/basic/Image/aligned/{n}_aligned.jpg")),
            &img,
        );
    }
    for base in ["affectnet", "aflw2000", "jsonl"] {
        for n in ["a", "b", "c", "d"] {
            write(&root.join(format!("{base}/img/{n}.png")), &img);
        }
        for i in 0..4 {
            write(&root.join(format!("{base}/images/face_0000{i}.png")), &img);
        }
    }
    for p in [
        "fx_single/question_1.png",
        "fx_single/question_2.png",
        "fx_single/question_10.png",
        "fx_multi/question_1_1.png",
    ] {
        write(&root.join("facexbench/benchmark/images").join(p), &img);
    }
    std::fs::create_dir_all(root.join("utkface/UTKFace")).expect("mkdir");
    dir
}

fn task(name: &str) -> Task {
    Task::load(&repo_root().join("tasks").join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("shipped task {name}: {e:#}"))
}

/// Runs a reader over the file at `rel` (under the data root) holding the input.
fn read_with(root: &Path, rel: &str, input: &[u8], tasks: &[Task]) {
    write(&root.join(rel), input);
    for t in tasks {
        let _ = read_task(t, root);
    }
}

// ------------------------------------------------------------------------ dataset readers

#[test]
fn facexbench_json() {
    let root = data_root();
    let tasks = [task("facexbench")];
    fuzz(
        "facexbench_json",
        Kind::Json,
        committed_seeds("facexbench"),
        150,
        |input| {
            read_with(
                root.path(),
                "facexbench/benchmark/fx_single.json",
                input,
                &tasks,
            )
        },
    );
}

#[test]
fn fairface_csv() {
    let root = data_root();
    let tasks = [
        task("age-fairface"),
        task("gender-fairface"),
        task("race-fairface"),
    ];
    fuzz(
        "fairface_csv",
        Kind::Text,
        committed_seeds("fairface"),
        100,
        |input| {
            read_with(
                root.path(),
                "fairface/fairface_label_val.csv",
                input,
                &tasks,
            )
        },
    );
}

#[test]
fn rafdb_labels() {
    let root = data_root();
    let tasks = [task("expression-rafdb")];
    fuzz(
        "rafdb_labels",
        Kind::Text,
        committed_seeds("rafdb"),
        50,
        |input| {
            read_with(
                root.path(),
                "rafdb/basic/EmoLabel/list_patition_label.txt",
                input,
                &tasks,
            )
        },
    );
}

/// UTKFace labels live in file names: each input line becomes one file of the folder (where
/// the OS allows the name), then the reader lists and parses them.
#[test]
fn utkface_names() {
    let root = data_root();
    let dir = root.path().join("utkface/UTKFace");
    let tasks = [task("age-utkface")];
    let img = png();
    fuzz(
        "utkface_names",
        Kind::Text,
        committed_seeds("utkface"),
        40,
        |input| {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let text = String::from_utf8_lossy(input);
            for name in text.lines().take(40) {
                if !name.is_empty() && !name.contains(['/', '\0']) && name.len() < 250 {
                    let _ = std::fs::write(dir.join(name), &img);
                }
            }
            for t in &tasks {
                let _ = read_task(t, root.path());
            }
        },
    );
}

/// The manifest reader through the CSV tasks that use it, and a JSONL manifest task made
/// from one of them (same reader, other file format).
#[test]
fn manifest_rows() {
    let root = data_root();
    let mut jsonl = std::fs::read_to_string(repo_root().join("tasks/pose-yaw.toml"))
        .expect("tasks/pose-yaw.toml");
    jsonl = jsonl
        .replace("aflw2000/pose.csv", "jsonl/ages.jsonl")
        .replace("images = \"aflw2000\"", "images = \"jsonl\"")
        .replace(
            "options = { label_column = \"yaw\" }",
            "options = { label_column = \"age\", id_column = \"key\", question_column = \"q\" }",
        );
    let jsonl_task = Task::parse(&jsonl, Path::new("fuzz-jsonl.toml")).expect("jsonl task");
    let csv_tasks = [task("expression-affectnet"), task("pose-yaw")];
    fuzz(
        "manifest_rows",
        Kind::Text,
        committed_seeds("manifest"),
        100,
        |input| {
            write(&root.path().join("affectnet/val.csv"), input);
            write(&root.path().join("aflw2000/pose.csv"), input);
            for t in &csv_tasks {
                let _ = read_task(t, root.path());
            }
            read_with(
                root.path(),
                "jsonl/ages.jsonl",
                input,
                std::slice::from_ref(&jsonl_task),
            );
        },
    );
}

// ------------------------------------------------------------------------ task and model TOML

fn toml_seeds(dir: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .expect("folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

/// Task TOML; a task that parses is then read against the data root, so its `[dataset]`
/// options reach the readers too.
#[test]
fn task_toml() {
    let root = data_root();
    write(
        &root.path().join("fairface/fairface_label_val.csv"),
        &committed_seeds("fairface")[0],
    );
    write(
        &root.path().join("affectnet/val.csv"),
        &committed_seeds("manifest")[0],
    );
    fuzz("task_toml", Kind::Toml, toml_seeds("tasks"), 200, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(t) = Task::parse(&text, Path::new("fuzz.toml")) {
            let _ = read_task(&t, root.path());
        }
    });
}

#[test]
fn model_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.toml");
    fuzz(
        "model_toml",
        Kind::Toml,
        toml_seeds("baselines"),
        120,
        |input| {
            std::fs::write(&path, input).expect("write");
            let _ = faceval_eval::model_manifest::load(&path);
        },
    );
}

// ------------------------------------------------------------------------ run folders

#[test]
fn predictions_jsonl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("predictions.jsonl");
    fuzz(
        "predictions_jsonl",
        Kind::Text,
        committed_seeds("predictions"),
        100,
        |input| {
            std::fs::write(&path, input).expect("write");
            let _ = read_predictions(&path);
            for line in String::from_utf8_lossy(input).lines().take(50) {
                if let Ok(p) = Prediction::from_line(line) {
                    let _ = (p.key(), p.is_headline());
                }
            }
        },
    );
}

#[test]
fn run_manifest_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    fuzz(
        "run_manifest_json",
        Kind::Json,
        committed_seeds("run_manifest"),
        200,
        |input| {
            std::fs::write(dir.path().join("manifest.json"), input).expect("write");
            let _ = read_manifest(dir.path());
        },
    );
}

// ------------------------------------------------------------------------ checkpoints

/// The first 8 + N bytes (length prefix and JSON header) of a safetensors file.
fn safetensors_header(path: &str) -> Vec<u8> {
    let bytes = repo_files(&[path]).remove(0);
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    bytes[..8 + n].to_vec()
}

/// The data section a header asks for: the largest `data_offsets` end, when it parses and is
/// small enough to write; otherwise a short section (the loader must say it does not fit).
fn data_len(header_json: &[u8]) -> usize {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(header_json) else {
        return 16;
    };
    let end = v
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if end <= 8 << 20 {
        end as usize
    } else {
        16
    }
}

/// Copies a fixture checkpoint folder without its weights (config, tokenizer, processor).
fn model_dir(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = repo_root().join(FIXTURES).join(fixture);
    for e in std::fs::read_dir(&src).expect("fixture folder").flatten() {
        let p = e.path();
        let name = p.file_name().expect("name").to_string_lossy().to_string();
        if p.is_file() && !name.ends_with(".safetensors") && !name.ends_with(".index.json") {
            std::fs::copy(&p, dir.path().join(&name)).expect("copy");
        }
    }
    dir
}

/// Safetensors headers: the length prefix is usually made to match the mutated header (else
/// nearly every case dies at the first check), and the data section is sized to the header.
#[test]
fn safetensors_headers() {
    let internvl = model_dir("internvl/tiny-300m-current");
    let llava = model_dir("llava/tiny-llava");
    let llava_config = LlavaConfig::from_file(&llava.path().join("config.json")).expect("config");
    let seeds = vec![
        safetensors_header(&format!(
            "{FIXTURES}/internvl/tiny-300m-current/model.safetensors"
        )),
        safetensors_header(&format!("{FIXTURES}/internvl/tiny-6b/model.safetensors")),
        safetensors_header(&format!("{FIXTURES}/llava/tiny-llava/model.safetensors")),
        safetensors_header(&format!("{FIXTURES}/zero_shot/clip-tiny/model.safetensors")),
    ];
    fuzz("safetensors_header", Kind::Bytes, seeds, 60, |input| {
        let mut file = input.to_vec();
        // The last byte of the input picks the variant, so a saved input replays the same way.
        let variant = input.last().copied().unwrap_or(0) % 4;
        if file.len() >= 8 && variant != 0 {
            let n = (file.len() - 8) as u64;
            file[..8].copy_from_slice(&n.to_le_bytes());
        }
        let header = file.get(8..).unwrap_or_default();
        file.resize(file.len() + data_len(header), 0);
        for dir in [internvl.path(), llava.path()] {
            std::fs::write(dir.join("model.safetensors"), &file).expect("write");
        }
        if let Ok(files) = CheckpointFiles::locate(internvl.path()) {
            let _ = Weights::open(&files, &Device::Cpu, DType::F32);
        }
        if let Ok(files) = CheckpointFiles::locate(llava.path()) {
            let _ = LoadedWeights::load(&files, &llava_config, &Device::Cpu, DType::F32);
        }
    });
}

/// config.json in every dialect the loaders read (InternVL current/legacy/original/6B,
/// LLaVA, CLIP, SigLIP), given to every config parser; what parses is asked for the sizes the
/// loaders derive from it right away.
#[test]
fn config_json() {
    let seeds = repo_files(&[
        "harness/models/tests/fixtures/internvl/tiny-300m-current/config.json",
        "harness/models/tests/fixtures/internvl/tiny-300m-legacy/config.json",
        "harness/models/tests/fixtures/internvl/tiny-300m-original/config.json",
        "harness/models/tests/fixtures/internvl/tiny-6b/config.json",
        "harness/models/tests/fixtures/llava/tiny-llava/config.json",
        "harness/models/tests/fixtures/zero_shot/clip-tiny/config.json",
        "harness/models/tests/fixtures/zero_shot/siglip-tiny/config.json",
    ]);
    let path = Path::new("config.json");
    fuzz("config_json", Kind::Json, seeds, 200, |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(c) = InternVlConfig::from_json_str(&text) {
            let _ = (
                c.vision.head_dim(),
                c.vision.patch_grid(),
                c.vision.num_patches(),
                c.projector_in_dim(),
            );
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Ok(c) = LlavaConfig::from_value(&v, "config.json") {
                let _ = (
                    c.vision.num_patches(),
                    c.vision.to_candle(),
                    c.text.head_dim(),
                    c.text.to_candle(),
                    c.candle_hidden_index(),
                    c.tokens_per_image(),
                );
            }
        }
        let _ = ZeroShotConfig::from_json(&text, path);
    });
}

// ------------------------------------------------------------------------ tokenizer files

/// The three kinds of checkpoint text stacks, each in its own folder copy.
struct TextDirs {
    internvl: tempfile::TempDir,
    llava: tempfile::TempDir,
    clip: tempfile::TempDir,
}

impl TextDirs {
    fn new() -> TextDirs {
        TextDirs {
            internvl: model_dir("internvl/tiny-300m-current"),
            llava: model_dir("llava/tiny-llava"),
            clip: model_dir("zero_shot/clip-tiny"),
        }
    }

    /// Writes `input` as `name` in the folders that have that file, then loads each text
    /// stack and builds one prompt with an image, as a run does first.
    fn load(&self, names: &[(&str, bool, bool, bool)], input: &[u8]) {
        for (name, i, l, c) in names {
            for (on, dir) in [(i, &self.internvl), (l, &self.llava), (c, &self.clip)] {
                if *on {
                    std::fs::write(dir.path().join(name), input).expect("write");
                }
            }
        }
        if let Ok(t) = InternVlText::from_dir(self.internvl.path(), 4) {
            if let Ok((_, ids)) = t.build(&[1, 2], "Which letter? A or B") {
                let _ = t.decode(&ids, false);
            }
        }
        if let Ok(t) = LlavaText::from_dir(self.llava.path(), "<image>", 4) {
            if let Ok((_, _, ids)) = t.build(1, "What is shown?") {
                let _ = t.decode(&ids, true);
            }
        }
        if let Ok(t) = TextTokenizer::from_dir(self.clip.path(), Family::Clip, 16) {
            let _ = t.encode("a photo of a happy face");
        }
    }
}

#[test]
fn tokenizer_json() {
    let dirs = TextDirs::new();
    let seeds = repo_files(&[
        "harness/models/tests/fixtures/internvl/tiny-300m-current/tokenizer.json",
        "harness/models/tests/fixtures/llava/tiny-llava/tokenizer.json",
        "harness/models/tests/fixtures/llava/legacy-tokenizer.json",
        "harness/models/tests/fixtures/zero_shot/clip-tiny/tokenizer.json",
    ]);
    fuzz("tokenizer_json", Kind::Json, seeds, 15, |input| {
        dirs.load(&[("tokenizer.json", true, true, true)], input);
    });
}

#[test]
fn tokenizer_config_json() {
    let dirs = TextDirs::new();
    let seeds = repo_files(&[
        "harness/models/tests/fixtures/internvl/tiny-300m-current/tokenizer_config.json",
        "harness/models/tests/fixtures/internvl/tiny-300m-original/tokenizer_config.json",
        "harness/models/tests/fixtures/llava/tiny-llava/tokenizer_config.json",
        "harness/models/tests/fixtures/zero_shot/clip-tiny/tokenizer_config.json",
        "harness/models/tests/fixtures/zero_shot/siglip-tiny/tokenizer_config.json",
    ]);
    fuzz("tokenizer_config_json", Kind::Json, seeds, 15, |input| {
        dirs.load(&[("tokenizer_config.json", true, true, true)], input);
    });
}

/// Chat templates: the `.jinja` file (InternVL) and LLaVA's `chat_template.json`; a seed that
/// is not JSON is wrapped as LLaVA's `{"chat_template": ...}`.
#[test]
fn chat_template() {
    let dirs = TextDirs::new();
    let seeds = repo_files(&[
        "harness/models/tests/fixtures/internvl/tiny-300m-current/chat_template.jinja",
        "harness/models/tests/fixtures/llava/tiny-llava/chat_template.json",
    ]);
    fuzz("chat_template", Kind::Text, seeds, 25, |input| {
        let text = String::from_utf8_lossy(input);
        let json = if serde_json::from_slice::<serde_json::Value>(input).is_ok() {
            input.to_vec()
        } else {
            serde_json::to_vec(&serde_json::json!({ "chat_template": text })).expect("json")
        };
        std::fs::write(dirs.llava.path().join("chat_template.json"), &json).expect("write");
        dirs.load(&[("chat_template.jinja", true, false, false)], input);
    });
}

/// processor_config.json / preprocessor_config.json for the three image processors.
#[test]
fn processor_json() {
    let internvl = model_dir("internvl/tiny-300m-current");
    let llava = model_dir("llava/tiny-llava");
    let clip = model_dir("zero_shot/clip-tiny");
    let llava_config = LlavaConfig::from_file(&llava.path().join("config.json")).expect("config");
    let seeds = repo_files(&[
        "harness/models/tests/fixtures/internvl/tiny-300m-current/processor_config.json",
        "harness/models/tests/fixtures/internvl/tiny-300m-original/preprocessor_config.json",
        "harness/models/tests/fixtures/llava/tiny-llava/processor_config.json",
        "harness/models/tests/fixtures/llava/tiny-llava/preprocessor_config.json",
        "harness/models/tests/fixtures/zero_shot/clip-tiny/preprocessor_config.json",
        "harness/models/tests/fixtures/zero_shot/siglip-tiny/processor_config.json",
    ]);
    fuzz("processor_json", Kind::Json, seeds, 80, |input| {
        for dir in [internvl.path(), llava.path(), clip.path()] {
            std::fs::write(dir.join("processor_config.json"), input).expect("write");
            std::fs::write(dir.join("preprocessor_config.json"), input).expect("write");
        }
        let _ = ProcessorConfig::from_dir(internvl.path());
        let _ = LlavaProcessorConfig::from_dir(llava.path(), &llava_config);
        let _ = ImageProcessor::from_dir(clip.path(), Family::Clip);
        let _ = ImageProcessor::from_dir(clip.path(), Family::Siglip);
    });
}

// ------------------------------------------------------------------------ OpenAI responses

/// Chat-completion bodies as an OpenAI-compatible server might send them, good or broken,
/// with stop strings that include the awkward empty one.
#[test]
fn openai_response() {
    let stops: Vec<String> = ["\n", "STOP", "", "."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    fuzz(
        "openai_response",
        Kind::Json,
        committed_seeds("openai"),
        200,
        |input| {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) else {
                return;
            };
            for k in 0..stops.len() {
                let _ = faceval_models::openai::parse_completion(&v, &stops[..k]);
            }
            // The first token's alternatives, as the backend reads them for choice scoring.
            let top: Vec<(String, f64)> = v
                .pointer("/choices/0/logprobs/content/0/top_logprobs")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    Some((
                        t.get("token")?.as_str()?.to_string(),
                        t.get("logprob")?.as_f64()?,
                    ))
                })
                .collect();
            let choices = ["A".to_string(), "B".to_string(), " C".to_string()];
            let _ = faceval_models::openai::score_choices_first_token(&choices, &top);
        },
    );
}

// ------------------------------------------------------------------------ images

/// Corrupt images: every photo fixture (all formats and sample layouts the decoder handles)
/// and the small RGB PNGs.
#[test]
fn image_decode() {
    let seeds: Vec<Vec<u8>> = faceval_fuzz::files_under(&repo_root().join(FIXTURES).join("photos"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x != "json"))
        .map(|(_, b)| b)
        .collect();
    fuzz("image_decode", Kind::Bytes, seeds, 40, |input| {
        let _ = faceval_models::image_io::sniff(input);
        let _ = faceval_models::image_io::decode(input);
    });
}
