//! Every type of the run-folder format (`docs/run-format.md`), from `manifest.json` through
//! the lines of `predictions.jsonl` to the telemetry objects of `metrics.json`.
//!
//! This is the one place the format is spelled: readers and writers elsewhere use these types
//! and never look keys up by hand. Spellings older runs or other tools used are accepted here
//! as serde aliases, so a new spelling never needs a second reader. The score block of
//! `metrics.json` is [`crate::metrics::RunMetrics`]: its members are defined next to the
//! statistics that fill them.

use std::collections::BTreeMap;

use faceval_models::StepTimings;
use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";
pub const PREDICTIONS: &str = "predictions.jsonl";
pub const METRICS: &str = "metrics.json";

/// A task as the run recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TaskRecord {
    /// Task name, unique within a run.
    pub name: String,
    /// Task version from its TOML; a changed task gets a new version.
    pub version: String,
    /// sha256 of the task TOML.
    pub fingerprint: String,
    #[serde(default)]
    pub path: String,
    /// Which definition was used: `builtin` (compiled into faceval) or the task file's path.
    #[serde(default)]
    pub origin: String,
    /// The question style and metric list, so that tools can score without the TOML.
    #[serde(default)]
    pub style: String,
    /// Label set in order (empty for numeric tasks).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Group fields the task audits by default.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Fields the scores are broken down by (FaceXBench category, subcategory).
    #[serde(default)]
    pub breakdown: Vec<String>,
    /// Whether options are rotated and a question counts as right only when every rotation is.
    #[serde(default)]
    pub circular: bool,
    /// Prompt phrasings of a task with `[question] variants`: `question.text` (variant 0)
    /// first, then each listed variant. Empty for tasks without variants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

/// The model as the run recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ModelRecord {
    /// Model name as given to `faceval run`.
    pub name: String,
    /// Model family (`internvl`, `llava`, `zero_shot`, `openai`, a baseline, ...).
    #[serde(default)]
    pub kind: String,
    /// sha256 of the model manifest TOML (or of the name for built-ins).
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub weights_sha256: Option<String>,
    /// Bytes of model parameters.
    #[serde(default)]
    pub weight_bytes: u64,
    /// Where the weights came from (folder, hf:// id, URL).
    #[serde(default)]
    pub source: String,
    /// Which manifest was used: `builtin` (compiled into faceval), the manifest file's path, or
    /// `checkpoint` (a checkpoint folder or hf:// id named directly, no manifest).
    #[serde(default)]
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Shard {
    /// Which shard this run is, from 0.
    pub index: usize,
    /// How many shards the run was split into.
    pub count: usize,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Manifest {
    /// Format version of the run folder.
    #[serde(default = "format_version")]
    pub format: u32,
    /// Version of faceval that wrote the run.
    #[serde(default)]
    pub faceval_version: String,
    /// Git revision of faceval that wrote the run, when known.
    #[serde(default)]
    pub git_revision: String,
    /// The model asked.
    pub model: ModelRecord,
    /// The tasks asked, in order.
    pub tasks: Vec<TaskRecord>,
    /// Seed of every random choice (sampling, rotations, bootstraps).
    #[serde(default)]
    pub seed: u64,
    /// Device the model ran on (`cpu`, `cuda:0`, ...).
    #[serde(default)]
    pub device: String,
    /// Weight and activation dtype (`f32`, `bf16`, ...).
    #[serde(default)]
    pub dtype: String,
    /// When the run started (RFC 3339); kept over resumed attempts.
    #[serde(default)]
    pub started: String,
    /// When the run finished (RFC 3339); `null` while running or after a crash.
    #[serde(default)]
    pub finished: Option<String>,
    /// The command line of the latest attempt.
    #[serde(default)]
    pub argv: Vec<String>,
    /// `--limit`: items per task at most.
    #[serde(default)]
    pub limit: Option<usize>,
    /// `--shard I/N`, when the run is one shard of a larger one.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// Free-form facts: data folder, reference split used by `majority`, importer, ...
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
    /// The machine the run used (CPU, GPUs, driver); `null` for imports and older runs.
    #[serde(default)]
    pub hardware: Option<Hardware>,
    /// Questions per model call (1: every run asks one at a time).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Items per task whose timings telemetry leaves out as warm-up (`--warmup`).
    #[serde(default)]
    pub warmup: Option<usize>,
    /// Peak memory measured while the run went (the higher peak over resumed attempts).
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Served models: answers taken from the response cache, summed over the attempts of
    /// the run (`null` for local models and older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hits: Option<u64>,
    /// Served models: HTTP requests sent (retries included), summed over the attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<u64>,
}

fn format_version() -> u32 {
    1
}

/// How one question ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Correct,
    Wrong,
    /// The model answered but no answer could be extracted. Counts as wrong in accuracy and
    /// is reported as its own rate.
    Unparseable,
    /// The item could not be asked (bad row, missing or corrupt image, model error). Counted,
    /// reported, and excluded from accuracy's denominator.
    Error,
}

impl Outcome {
    /// The outcome of a line that gives `correct` but no `outcome` (tools other than faceval
    /// often write only that): `true` is `correct`, `false` is `wrong` (`unparseable` when
    /// `parsed` is null) and `null` is `error`.
    pub fn from_correct(correct: Option<bool>, parsed_is_null: bool) -> Outcome {
        match correct {
            Some(true) => Outcome::Correct,
            Some(false) if parsed_is_null => Outcome::Unparseable,
            Some(false) => Outcome::Wrong,
            None => Outcome::Error,
        }
    }

    /// The spelling in `predictions.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Correct => "correct",
            Outcome::Wrong => "wrong",
            Outcome::Unparseable => "unparseable",
            Outcome::Error => "error",
        }
    }
}

/// One line of `predictions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    /// Item id, unique within the task.
    pub id: String,
    /// Task name, as in the manifest.
    pub task: String,
    /// 0 unless the task is circular.
    #[serde(default)]
    pub rotation: usize,
    /// Which phrasing of the question was asked (`docs/prompt-sensitivity.md`): 0 is
    /// `question.text`, k is the task's k-th `variants` entry. Left out when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub variant: usize,
    /// sha256 of the rendered prompt: two runs asked the same question when these agree.
    #[serde(default)]
    pub prompt_sha256: String,
    /// sha256 of each image sent with the prompt, in order.
    #[serde(default)]
    pub image_sha256: Vec<String>,
    /// What the model answered, verbatim.
    #[serde(default)]
    pub raw_output: String,
    /// The extracted answer: an option letter, a label, or a number as text; `None` when
    /// nothing could be extracted. Required in every line (it may be `null`).
    #[serde(deserialize_with = "Option::deserialize")]
    pub parsed: Option<String>,
    /// Verification tasks (`docs/verification.md`): the model's probability that the two
    /// faces are one person, from the two answers' likelihoods, from the first generated
    /// token's log-probabilities, or 1/0 from the answer it generated. Written right after
    /// `parsed`; left out when none could be had (an unreadable answer) and for other tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The right answer in the same form as `parsed`. Required in every line (may be `null`).
    #[serde(deserialize_with = "Option::deserialize")]
    pub target: Option<String>,
    /// Label (or option text) behind `parsed` and `target`, for per-class metrics.
    #[serde(default)]
    pub parsed_label: Option<String>,
    #[serde(default)]
    pub target_label: Option<String>,
    /// Numeric tasks: the predicted and true numbers.
    #[serde(default)]
    pub parsed_value: Option<f64>,
    #[serde(default)]
    pub target_value: Option<f64>,
    /// `None` for errors; numeric tasks set it from bin agreement when they have bins.
    #[serde(default)]
    pub correct: Option<bool>,
    /// How the question ended.
    pub outcome: Outcome,
    /// Group fields of the item (gender, race, age bin, ...) for fairness audits.
    #[serde(default)]
    pub groups: BTreeMap<String, String>,
    /// Items sharing a cluster (e.g. one identity) are not independent; used for clustered errors.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Breakdown fields (FaceXBench category, subcategory).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Stage timings of the model call (`docs/telemetry.md`).
    #[serde(default)]
    pub timings: StepTimings,
    /// Tokens in the prompt, images included, as the model counted them.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Tokens the model generated.
    #[serde(default)]
    pub output_tokens: usize,
    /// Why an `error` question could not be asked.
    #[serde(default)]
    pub error: Option<String>,
    /// Log-likelihood of each option, keyed like `parsed` and `target` (option letter, or
    /// label for open questions), where the model scored the options
    /// (`docs/calibration.md`). Left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_logprobs: Option<BTreeMap<String, f64>>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// What makes a question unique within a run: `(task, id, rotation, variant)`.
pub type Key = (String, String, usize, usize);

impl TaskRecord {
    /// The first 12 hex digits of the fingerprint, for messages.
    pub fn short_fingerprint(&self) -> &str {
        short_fingerprint(&self.fingerprint)
    }
}

/// The first 12 characters of a fingerprint, for messages.
pub fn short_fingerprint(fingerprint: &str) -> &str {
    &fingerprint[..12.min(fingerprint.len())]
}

impl Prediction {
    /// The key that makes a question unique within a run; when a file has several lines of
    /// one key, the last one counts.
    pub fn key(&self) -> Key {
        (
            self.task.clone(),
            self.id.clone(),
            self.rotation,
            self.variant,
        )
    }

    /// Whether the line counts towards the headline scores (accuracy, fairness, gate): the
    /// task's own phrasing, variant 0. Other variants feed the prompt-sensitivity block only.
    pub fn is_headline(&self) -> bool {
        self.variant == 0
    }

    /// Parse one line of `predictions.jsonl`. `outcome` may be left out when `correct` is
    /// given ([`Outcome::from_correct`]).
    pub fn from_line(line: &str) -> serde_json::Result<Prediction> {
        match serde_json::from_str::<Prediction>(line) {
            Ok(p) => Ok(p),
            Err(first) => {
                // The slow path only runs on lines the fast one refused.
                let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str(line) else {
                    return Err(first);
                };
                if obj.contains_key("outcome") {
                    return Err(first);
                }
                let correct = match obj.get("correct") {
                    Some(serde_json::Value::Bool(b)) => Some(*b),
                    Some(serde_json::Value::Null) => None,
                    _ => return Err(first),
                };
                let parsed_is_null = matches!(obj.get("parsed"), Some(serde_json::Value::Null));
                let outcome = Outcome::from_correct(correct, parsed_is_null);
                obj.insert("outcome".into(), outcome.as_str().into());
                serde_json::from_value(serde_json::Value::Object(obj))
            }
        }
    }
}

/// Distribution of one figure over the items of a run. A member left out reads as 0, so a
/// summary other tools wrote with only some percentiles still reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Summary {
    /// Values summarised.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Median (type-7 percentile, like every percentile here).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

/// Latency and throughput of a set of model calls (one task, or a whole run). A member left
/// out reads as its default, so telemetry written by other tools reads with what it has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct Telemetry {
    /// Model calls summarised: answered (not `error`), timed, and not warm-up.
    pub n: usize,
    /// Timed calls left out as warm-up.
    pub n_warmup: usize,
    /// Calls among `n` whose model reported its stage split (the stage summaries' n).
    pub n_stage_timed: usize,
    /// Image decoding and resizing inside the model call.
    pub preprocess_ms: Option<Summary>,
    /// The vision encoder.
    pub vision_ms: Option<Summary>,
    /// The language model's prompt pass up to the first token's logits.
    pub prefill_ms: Option<Summary>,
    /// preprocess + vision + prefill: first token, from the start of the model call.
    pub ttft_ms: Option<Summary>,
    /// The decode loop after the first token.
    pub decode_ms: Option<Summary>,
    /// The whole model call, measured by the runner around it. Other tools' spellings
    /// (`latency_ms`, `e2e`, `latency`, `total_ms`) read as this.
    #[serde(
        alias = "latency_ms",
        alias = "e2e",
        alias = "latency",
        alias = "total_ms"
    )]
    pub e2e_ms: Option<Summary>,
    /// `(e2e − ttft)/(output_tokens − 1)` over calls with at least two output tokens.
    pub tpot_ms: Option<Summary>,
    /// Prompt tokens over the calls.
    pub prompt_tokens: u64,
    /// Output tokens over the calls.
    pub output_tokens: u64,
    /// Sum of `e2e_ms`, in seconds.
    pub model_time_s: f64,
    /// Runner wall time of these calls (image decoding, scoring and writing included).
    pub wall_s: Option<f64>,
    /// `n / wall_s`.
    pub items_per_s: Option<f64>,
    /// `output_tokens / wall_s`; `null` when no call reported a token.
    pub output_tokens_per_s: Option<f64>,
    /// Tokens made by the decode loop per second of decoding: Σ(output_tokens − 1) / Σ decode,
    /// over calls with a stage split and at least two tokens (the first token comes from the
    /// prefill, so it is not counted against decode time; this is 1000 / token-weighted TPOT).
    pub decode_tokens_per_s: Option<f64>,
}

/// Peak memory of a run, measured while it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Resources {
    /// Peak resident set size of the process since it started (Linux `VmHWM`; `getrusage`
    /// elsewhere), model weights in host memory included.
    pub peak_rss_bytes: Option<u64>,
    /// Peak of the memory in use on the visible GPUs (summed over them), all processes
    /// included; `null` when NVML is unavailable.
    pub peak_vram_bytes: Option<u64>,
    /// GPU memory in use when sampling started: `peak_vram_bytes` minus this is what the run
    /// added, when nothing else ran on the GPUs.
    pub vram_baseline_bytes: Option<u64>,
    /// Peak of this process's own GPU memory as NVML lists it; `null` when NVML does not list
    /// the process (it used no GPU, or it runs in its own PID namespace).
    pub peak_vram_process_bytes: Option<u64>,
    /// Why `peak_vram_bytes` is `null`.
    pub vram_unavailable_reason: Option<String>,
    /// NVML samples taken (every [`crate::hardware::SAMPLE_INTERVAL_MS`] ms).
    #[serde(default)]
    pub vram_samples: u64,
    /// Bytes of model parameters in memory (`ModelInfo.weight_bytes`).
    #[serde(default)]
    pub weight_bytes: u64,
}

impl Resources {
    /// The peaks over two attempts of the same run (a resumed run keeps the higher peak).
    pub fn max(self, other: &Resources) -> Resources {
        let mx = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Resources {
            peak_rss_bytes: mx(self.peak_rss_bytes, other.peak_rss_bytes),
            peak_vram_bytes: mx(self.peak_vram_bytes, other.peak_vram_bytes),
            vram_baseline_bytes: self.vram_baseline_bytes.or(other.vram_baseline_bytes),
            peak_vram_process_bytes: mx(
                self.peak_vram_process_bytes,
                other.peak_vram_process_bytes,
            ),
            vram_unavailable_reason: match (self.peak_vram_bytes, other.peak_vram_bytes) {
                (None, None) => self
                    .vram_unavailable_reason
                    .or(other.vram_unavailable_reason.clone()),
                _ => None,
            },
            vram_samples: self.vram_samples + other.vram_samples,
            weight_bytes: self.weight_bytes.max(other.weight_bytes),
        }
    }
}

/// The `telemetry` object at the top of `metrics.json`. A member left out reads as its
/// default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct RunTelemetry {
    /// How percentiles were computed ([`crate::telemetry::PERCENTILE_METHOD`]).
    pub percentile_method: String,
    /// Items per task left out as warm-up (`--warmup`); `null` when the run did not say.
    pub warmup: Option<usize>,
    /// Questions per model call; `null` when the run did not say.
    pub batch_size: Option<usize>,
    /// Device of the run, from the manifest.
    pub device: String,
    /// Dtype of the run, from the manifest.
    pub dtype: String,
    /// Every task's calls together.
    pub overall: Option<Telemetry>,
    /// Each task's calls, by task name (tasks without timed calls are absent).
    #[serde(default)]
    pub tasks: BTreeMap<String, Telemetry>,
    /// Peak memory from `manifest.json`; `null` when the run did not measure it.
    pub memory: Option<Resources>,
}

/// One GPU as NVML describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GpuInfo {
    /// NVML device index.
    pub index: u32,
    /// Marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Memory of the GPU; `null` when NVML could not say.
    pub memory_total_bytes: Option<u64>,
}

/// The machine a run used, recorded in `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Hardware {
    /// `std::env::consts::OS`.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// `model name` from /proc/cpuinfo (or the nearest field other architectures have).
    pub cpu_model: Option<String>,
    /// Hardware threads this process may use (`std::thread::available_parallelism`).
    pub cpu_threads: usize,
    /// Threads of the rayon pool that decodes images and runs CPU kernels.
    pub rayon_threads: usize,
    /// MemTotal from /proc/meminfo.
    pub memory_total_bytes: Option<u64>,
    /// GPUs NVML lists (empty without NVML).
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// NVIDIA driver version; `null` without NVML.
    pub gpu_driver_version: Option<String>,
    /// The CUDA version the driver supports (NVML `cudaDriverGetVersion`), e.g. `12.4`.
    pub cuda_version: Option<String>,
    /// Why NVML could not be used; `null` when it could.
    pub nvml_unavailable_reason: Option<String>,
}

/// The timing parts of `metrics.json`, for readers that need no scores (the gate, the report):
/// read on their own, each part is kept when it reads and left out when it does not, so a
/// malformed timing never hides the others.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsTelemetry {
    /// The `telemetry` object.
    pub run: Option<RunTelemetry>,
    /// `tasks.<name>.telemetry`, where a writer put per-task telemetry beside the scores.
    pub tasks: BTreeMap<String, Telemetry>,
}

impl MetricsTelemetry {
    /// A task's telemetry: `tasks.<name>.telemetry` where a writer put it beside the scores,
    /// else `telemetry.tasks.<name>`, where the runner's metrics put it.
    pub fn task(&self, name: &str) -> Option<&Telemetry> {
        self.tasks
            .get(name)
            .or_else(|| self.run.as_ref()?.tasks.get(name))
    }

    /// `telemetry.overall`.
    pub fn overall(&self) -> Option<&Telemetry> {
        self.run.as_ref()?.overall.as_ref()
    }

    /// `telemetry.memory`.
    pub fn memory(&self) -> Option<&Resources> {
        self.run.as_ref()?.memory.as_ref()
    }
}
