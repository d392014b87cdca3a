//! Efficiency telemetry: latency percentiles per stage, TPOT, throughput, peak memory and the
//! hardware a run used (`docs/telemetry.md`).
//!
//! Latencies are summarised from `predictions.jsonl` alone (each line carries its `timings`),
//! so `metrics.json` stays recomputable from the run folder. What cannot be read back from
//! predictions — peak RSS, peak VRAM, the hardware — is measured while the run goes and
//! recorded in `manifest.json`.

use std::ffi::OsStr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

use crate::run_folder::{Outcome, Prediction};

/// Items asked first in each task of a run whose timings are left out of the summaries:
/// the first call pays for lazy initialisation (kernel selection, allocator growth, page
/// faults on freshly mapped weights) that later calls do not.
pub const DEFAULT_WARMUP: usize = 1;

/// How often the VRAM sampler reads NVML.
pub const SAMPLE_INTERVAL_MS: u64 = 50;

/// The percentile definition of [`percentile`], recorded in `metrics.json`.
pub const PERCENTILE_METHOD: &str =
    "linear interpolation between closest ranks (numpy.percentile default, Hyndman-Fan type 7)";

/// Questions per model call when `faceval run --batch-size` is not given.
pub const DEFAULT_BATCH_SIZE: usize = 1;

/// The `q`-th percentile (0–100) of `sorted` (ascending, finite), as numpy's default
/// `method="linear"`: rank `h = (n − 1)·q/100`, interpolated between the two nearest order
/// statistics. `None` for an empty slice.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 100.0) / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = h - lo as f64;
    // numpy's `_lerp` form: exact at both ends, monotone in `frac`.
    let (a, b) = (sorted[lo], sorted[hi]);
    Some(if frac >= 0.5 {
        b - (b - a) * (1.0 - frac)
    } else {
        a + (b - a) * frac
    })
}

/// Distribution of one figure over the items of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Summary of the finite values among `values`; `None` when there are none.
pub fn summarize(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let p = |q| percentile(&v, q).unwrap_or(f64::NAN);
    Some(Summary {
        n: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        p50: p(50.0),
        p90: p(90.0),
        p95: p(95.0),
        p99: p(99.0),
        max: v[v.len() - 1],
    })
}

/// Time per output token after the first, as vLLM's benchmarks define it:
/// `(e2e − TTFT) / (output_tokens − 1)`, only for outputs of at least two tokens.
pub fn tpot_ms(e2e_ms: f64, ttft_ms: f64, output_tokens: usize) -> Option<f64> {
    (output_tokens >= 2).then(|| (e2e_ms - ttft_ms) / (output_tokens - 1) as f64)
}

/// Whether a model reported its stage split for this item. A model that reports nothing
/// leaves all four at zero; a real stage never takes exactly 0 ns.
pub fn has_stage_split(t: &faceval_models::StepTimings) -> bool {
    t.preprocess_ms > 0.0 || t.vision_ms > 0.0 || t.prefill_ms > 0.0 || t.decode_ms > 0.0
}

/// Time to first token measured from the start of the model call, the origin of `e2e_ms`:
/// preprocessing, the vision encoder and the prefill.
pub fn ttft_ms(t: &faceval_models::StepTimings) -> f64 {
    t.preprocess_ms + t.vision_ms + t.prefill_ms
}

/// Latency and throughput of a set of model calls (one task, or a whole run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Telemetry {
    /// Model calls summarised: answered (not `error`), timed, and not warm-up.
    pub n: usize,
    /// Timed calls left out as warm-up.
    pub n_warmup: usize,
    /// Calls among `n` whose model reported its stage split (the stage summaries' n).
    pub n_stage_timed: usize,
    pub preprocess_ms: Option<Summary>,
    pub vision_ms: Option<Summary>,
    /// The language model's prompt pass up to the first token's logits.
    pub prefill_ms: Option<Summary>,
    /// preprocess + vision + prefill: first token, from the start of the model call.
    pub ttft_ms: Option<Summary>,
    pub decode_ms: Option<Summary>,
    /// The whole model call, measured by the runner around it.
    pub e2e_ms: Option<Summary>,
    /// `(e2e − ttft)/(output_tokens − 1)` over calls with at least two output tokens.
    pub tpot_ms: Option<Summary>,
    pub prompt_tokens: u64,
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

/// Summarise `preds`. `None` when no prediction carries a runner-measured time (imported runs,
/// or runs written before telemetry existed).
pub fn from_predictions<'a>(preds: impl IntoIterator<Item = &'a Prediction>) -> Option<Telemetry> {
    let mut counted: Vec<&Prediction> = Vec::new();
    let mut n_warmup = 0;
    for p in preds {
        // Failed calls are left out: their time measures the failure, not the model.
        if p.outcome == Outcome::Error || p.timings.e2e_ms <= 0.0 {
            continue;
        }
        if p.timings.warmup {
            n_warmup += 1;
        } else {
            counted.push(p);
        }
    }
    if counted.is_empty() && n_warmup == 0 {
        return None;
    }
    let split: Vec<&Prediction> = counted
        .iter()
        .copied()
        .filter(|p| has_stage_split(&p.timings))
        .collect();
    let stage =
        |f: fn(&faceval_models::StepTimings) -> f64| summarize(split.iter().map(|p| f(&p.timings)));
    let mut decode_tokens = 0u64;
    let mut decode_ms = 0.0;
    for p in &split {
        if p.output_tokens >= 2 {
            decode_tokens += (p.output_tokens - 1) as u64;
            decode_ms += p.timings.decode_ms;
        }
    }
    let prompt_tokens = counted.iter().map(|p| p.prompt_tokens as u64).sum();
    let output_tokens: u64 = counted.iter().map(|p| p.output_tokens as u64).sum();
    let wall_ms: f64 = counted.iter().map(|p| p.timings.wall_ms.max(0.0)).sum();
    let wall_s = (wall_ms > 0.0).then_some(wall_ms / 1e3);
    Some(Telemetry {
        n: counted.len(),
        n_warmup,
        n_stage_timed: split.len(),
        preprocess_ms: stage(|t| t.preprocess_ms),
        vision_ms: stage(|t| t.vision_ms),
        prefill_ms: stage(|t| t.prefill_ms),
        ttft_ms: stage(ttft_ms),
        decode_ms: stage(|t| t.decode_ms),
        e2e_ms: summarize(counted.iter().map(|p| p.timings.e2e_ms)),
        tpot_ms: summarize(
            split
                .iter()
                .filter_map(|p| tpot_ms(p.timings.e2e_ms, ttft_ms(&p.timings), p.output_tokens)),
        ),
        prompt_tokens,
        output_tokens,
        model_time_s: counted.iter().map(|p| p.timings.e2e_ms).sum::<f64>() / 1e3,
        wall_s,
        items_per_s: wall_s.map(|w| counted.len() as f64 / w),
        // Models that report no tokens (the baselines) get no token rate rather than 0.
        output_tokens_per_s: wall_s
            .filter(|_| output_tokens > 0)
            .map(|w| output_tokens as f64 / w),
        decode_tokens_per_s: (decode_ms > 0.0).then(|| decode_tokens as f64 / (decode_ms / 1e3)),
    })
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
    /// NVML samples taken (every [`SAMPLE_INTERVAL_MS`] ms).
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

/// The `telemetry` object at the top of `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RunTelemetry {
    pub percentile_method: String,
    /// Items per task left out as warm-up (`--warmup`); `null` when the run did not say.
    pub warmup: Option<usize>,
    pub batch_size: Option<usize>,
    pub device: String,
    pub dtype: String,
    /// Every task's calls together.
    pub overall: Option<Telemetry>,
    /// Each task's calls, by task name (tasks without timed calls are absent).
    #[serde(default)]
    pub tasks: std::collections::BTreeMap<String, Telemetry>,
    /// Peak memory from `manifest.json`; `null` when the run did not measure it.
    pub memory: Option<Resources>,
}

/// Peak resident set size of this process, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        if let Some(v) = proc_status_kib("VmHWM") {
            return Some(v * 1024);
        }
    }
    rusage_max_rss()
}

#[cfg(target_os = "linux")]
fn proc_status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

#[cfg(unix)]
fn rusage_max_rss() -> Option<u64> {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let v = usage.ru_maxrss as u64;
    // macOS reports bytes; Linux and the BSDs kibibytes.
    Some(if cfg!(target_os = "macos") {
        v
    } else {
        v * 1024
    })
}

#[cfg(not(unix))]
fn rusage_max_rss() -> Option<u64> {
    None
}

/// One GPU as NVML describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: Option<u64>,
}

/// The machine a run used, recorded in `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Hardware {
    pub os: String,
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
    pub gpu_driver_version: Option<String>,
    /// The CUDA version the driver supports (NVML `cudaDriverGetVersion`), e.g. `12.4`.
    pub cuda_version: Option<String>,
    /// Why NVML could not be used; `null` when it could.
    pub nvml_unavailable_reason: Option<String>,
}

/// Describe this machine.
pub fn hardware() -> Hardware {
    let mut h = Hardware {
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpu_model: cpu_model(),
        cpu_threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rayon_threads: rayon::current_num_threads(),
        memory_total_bytes: mem_total_bytes(),
        ..Default::default()
    };
    match init_nvml() {
        Ok(nvml) => {
            h.gpu_driver_version = nvml.sys_driver_version().ok();
            h.cuda_version = nvml
                .sys_cuda_driver_version()
                .ok()
                .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
            let count = nvml.device_count().unwrap_or(0);
            for index in 0..count {
                if let Ok(d) = nvml.device_by_index(index) {
                    h.gpus.push(GpuInfo {
                        index,
                        name: d.name().unwrap_or_default(),
                        memory_total_bytes: d.memory_info().ok().map(|m| m.total),
                    });
                }
            }
            if h.gpus.is_empty() {
                h.nvml_unavailable_reason = Some("NVML initialised but lists no GPU".into());
            }
        }
        Err(reason) => h.nvml_unavailable_reason = Some(reason),
    }
    h
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    // x86 has `model name`; arm64 kernels may only give `Hardware`, POWER `cpu`, s390 `processor 0`.
    for key in ["model name", "Hardware", "cpu model", "cpu", "uarch"] {
        let found = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    })
}

/// Open NVML: `$FACEVAL_NVML_LIB` when set, else the crate's default (`libnvidia-ml.so.1`,
/// what the driver installs, or `nvml.dll`), else on Linux the unversioned name that only
/// development packages add. The error is a sentence for `vram_unavailable_reason`.
fn init_nvml() -> Result<Nvml, String> {
    if let Some(path) = std::env::var_os("FACEVAL_NVML_LIB") {
        return Nvml::builder()
            .lib_path(&path)
            .init()
            .map_err(|e| describe_nvml_error(&e, &path.to_string_lossy()));
    }
    let default_name = if cfg!(windows) {
        "nvml.dll"
    } else {
        "libnvidia-ml.so.1"
    };
    let first = match Nvml::init() {
        Ok(n) => return Ok(n),
        // The library loaded but refused: that is the answer, not a missing file.
        Err(e) if !matches!(e, NvmlError::LibloadingError(_)) => {
            return Err(describe_nvml_error(&e, default_name))
        }
        Err(e) => e,
    };
    if cfg!(target_os = "linux") {
        if let Ok(n) = Nvml::builder()
            .lib_path(OsStr::new("libnvidia-ml.so"))
            .init()
        {
            return Ok(n);
        }
    }
    Err(describe_nvml_error(&first, default_name))
}

fn describe_nvml_error(e: &NvmlError, lib: &str) -> String {
    match e {
        NvmlError::LibloadingError(inner) => {
            format!("NVML not found: no NVIDIA driver ({lib}: {inner})")
        }
        NvmlError::DriverNotLoaded => "NVML: the NVIDIA driver is not loaded".into(),
        NvmlError::NoPermission => "NVML: no permission to talk to the NVIDIA driver".into(),
        NvmlError::FailedToLoadSymbol(s) => {
            format!("NVML too old for this build: missing symbol {s}")
        }
        other => format!("NVML failed to initialise: {other}"),
    }
}

/// What the sampler thread found.
#[derive(Debug, Default)]
struct VramPeaks {
    device_peak: Option<u64>,
    baseline: Option<u64>,
    process_peak: Option<u64>,
    reason: Option<String>,
    samples: u64,
}

/// Samples GPU memory every [`SAMPLE_INTERVAL_MS`] ms on a background thread while a run goes.
pub struct ResourceMonitor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<VramPeaks>>,
}

impl ResourceMonitor {
    /// Start sampling. Never fails: without NVML the thread records why and ends.
    pub fn start() -> ResourceMonitor {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("faceval-vram".into())
            .spawn(move || sample_vram(rx))
            .ok();
        ResourceMonitor {
            stop: Some(tx),
            thread,
        }
    }

    /// Stop sampling and return the peaks (with peak RSS read now).
    pub fn finish(mut self) -> Resources {
        drop(self.stop.take());
        let peaks = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_else(|| VramPeaks {
                reason: Some("the VRAM sampler thread could not run".into()),
                ..Default::default()
            });
        Resources {
            peak_rss_bytes: peak_rss_bytes(),
            peak_vram_bytes: peaks.device_peak,
            vram_baseline_bytes: peaks.baseline,
            peak_vram_process_bytes: peaks.process_peak,
            vram_unavailable_reason: peaks.reason,
            vram_samples: peaks.samples,
            weight_bytes: 0,
        }
    }
}

impl Drop for ResourceMonitor {
    fn drop(&mut self) {
        // Dropping the sender ends the thread's wait; it is not joined on error paths.
        drop(self.stop.take());
    }
}

fn sample_vram(stop: mpsc::Receiver<()>) -> VramPeaks {
    let nvml = match init_nvml() {
        Ok(n) => n,
        Err(reason) => {
            return VramPeaks {
                reason: Some(reason),
                ..Default::default()
            }
        }
    };
    let devices: Vec<_> = (0..nvml.device_count().unwrap_or(0))
        .filter_map(|i| nvml.device_by_index(i).ok())
        .collect();
    if devices.is_empty() {
        return VramPeaks {
            reason: Some("NVML initialised but lists no GPU".into()),
            ..Default::default()
        };
    }
    let pid = std::process::id();
    let mut peaks = VramPeaks::default();
    loop {
        let used: Vec<u64> = devices
            .iter()
            .filter_map(|d| d.memory_info().ok().map(|m| m.used))
            .collect();
        if !used.is_empty() {
            let total: u64 = used.iter().sum();
            peaks.baseline.get_or_insert(total);
            peaks.device_peak = Some(peaks.device_peak.unwrap_or(0).max(total));
            peaks.samples += 1;
        }
        let mine: Option<u64> = devices
            .iter()
            .filter_map(|d| d.running_compute_processes().ok())
            .flatten()
            .filter(|p| p.pid == pid)
            .filter_map(|p| match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            })
            .reduce(|a, b| a + b);
        if let Some(b) = mine {
            peaks.process_peak = Some(peaks.process_peak.unwrap_or(0).max(b));
        }
        match stop.recv_timeout(Duration::from_millis(SAMPLE_INTERVAL_MS)) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            _ => break,
        }
    }
    if peaks.device_peak.is_none() {
        peaks.reason = Some("NVML could not read GPU memory".into());
    }
    peaks
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from numpy 2.4.6:
    //   python3 -c "import numpy as np; x=np.array([12.5,3.0,7.25,100.0,41.0,5.5,9.0,18.75,2.0,64.0,33.3,27.0]);
    //               print([float(np.percentile(x,q)) for q in (50,90,95,99)], float(x.mean()))"
    const XS: [f64; 12] = [
        12.5, 3.0, 7.25, 100.0, 41.0, 5.5, 9.0, 18.75, 2.0, 64.0, 33.3, 27.0,
    ];
    const NP_P50: f64 = 15.625;
    const NP_P90: f64 = 61.70000000000001;
    const NP_P95: f64 = 80.19999999999997;
    const NP_P99: f64 = 96.04000000000002;
    const NP_MEAN: f64 = 26.941666666666666;

    #[test]
    fn percentiles_match_numpy_linear() {
        let s = summarize(XS).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert!(close(s.p50, NP_P50), "{}", s.p50);
        assert!(close(s.p90, NP_P90), "{}", s.p90);
        assert!(close(s.p95, NP_P95), "{}", s.p95);
        assert!(close(s.p99, NP_P99), "{}", s.p99);
        assert!(close(s.mean, NP_MEAN), "{}", s.mean);
        assert_eq!((s.n, s.min, s.max), (12, 2.0, 100.0));
        // Two values: np.percentile([4.0, 1.0], [50, 90, 95, 99]) = [2.5, 3.7, 3.85, 3.97].
        let s = summarize([4.0, 1.0]).unwrap();
        for (got, want) in [(s.p50, 2.5), (s.p90, 3.7), (s.p95, 3.85), (s.p99, 3.97)] {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        // One value: every percentile is that value; none for no values (NaN is dropped).
        let s = summarize([7.0, f64::NAN]).unwrap();
        assert_eq!((s.n, s.p50, s.p99, s.max), (1, 7.0, 7.0, 7.0));
        assert!(summarize(std::iter::empty()).is_none());
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 100.0), Some(2.0));
    }

    #[test]
    fn tpot_follows_vllm() {
        // 10 output tokens, first after 30 ms, last at 120 ms: (120 − 30)/(10 − 1) = 10 ms.
        assert_eq!(tpot_ms(120.0, 30.0, 10), Some(10.0));
        // A single token has no time between tokens.
        assert_eq!(tpot_ms(50.0, 50.0, 1), None);
        assert_eq!(tpot_ms(50.0, 50.0, 0), None);
    }

    fn pred(id: &str, t: faceval_models::StepTimings, out: usize, outcome: Outcome) -> Prediction {
        let line = serde_json::json!({"id": id, "task": "t", "outcome": outcome, "output_tokens": out,
            "prompt_tokens": 100, "timings": t, "parsed": null, "target": null});
        serde_json::from_value(line).unwrap()
    }

    fn timings(
        pre: f64,
        vis: f64,
        prefill: f64,
        dec: f64,
        e2e: f64,
        wall: f64,
    ) -> faceval_models::StepTimings {
        faceval_models::StepTimings {
            preprocess_ms: pre,
            vision_ms: vis,
            prefill_ms: prefill,
            decode_ms: dec,
            e2e_ms: e2e,
            wall_ms: wall,
            warmup: false,
        }
    }

    #[test]
    fn telemetry_of_crafted_predictions() {
        let mut warm = timings(50.0, 50.0, 50.0, 50.0, 400.0, 900.0);
        warm.warmup = true;
        let preds = vec![
            pred("w", warm, 5, Outcome::Correct),
            // TTFT 2+8+10 = 20 ms, e2e 110 ms, 10 tokens: TPOT (110 − 20)/9 = 10 ms.
            pred(
                "a",
                timings(2.0, 8.0, 10.0, 88.0, 110.0, 120.0),
                10,
                Outcome::Correct,
            ),
            // TTFT 40 ms, e2e 70 ms, 4 tokens: TPOT 10 ms.
            pred(
                "b",
                timings(5.0, 15.0, 20.0, 29.0, 70.0, 80.0),
                4,
                Outcome::Wrong,
            ),
            // One token: counted for latency, not for TPOT.
            pred(
                "c",
                timings(1.0, 1.0, 8.0, 0.0, 10.0, 20.0),
                1,
                Outcome::Unparseable,
            ),
            // A model that reports no split: e2e only.
            pred(
                "d",
                timings(0.0, 0.0, 0.0, 0.0, 30.0, 30.0),
                0,
                Outcome::Correct,
            ),
            // Errors and untimed lines are left out.
            pred(
                "e",
                timings(1.0, 1.0, 1.0, 1.0, 5.0, 5.0),
                3,
                Outcome::Error,
            ),
            pred(
                "f",
                timings(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
                3,
                Outcome::Correct,
            ),
        ];
        let t = from_predictions(&preds).unwrap();
        assert_eq!((t.n, t.n_warmup, t.n_stage_timed), (4, 1, 3));
        let tpot = t.tpot_ms.unwrap();
        assert_eq!(tpot.n, 2);
        assert!((tpot.mean - 10.0).abs() < 1e-12 && (tpot.max - 10.0).abs() < 1e-12);
        assert_eq!(t.e2e_ms.as_ref().unwrap().n, 4);
        assert_eq!(t.e2e_ms.as_ref().unwrap().max, 110.0);
        assert_eq!(t.ttft_ms.as_ref().unwrap().max, 40.0);
        assert_eq!(t.output_tokens, 15);
        assert_eq!(t.prompt_tokens, 400);
        assert!((t.model_time_s - 0.22).abs() < 1e-12);
        assert!((t.wall_s.unwrap() - 0.25).abs() < 1e-12);
        assert!((t.items_per_s.unwrap() - 16.0).abs() < 1e-9);
        assert!((t.output_tokens_per_s.unwrap() - 60.0).abs() < 1e-9);
        // (9 + 3) tokens over (88 + 29) ms of decoding.
        assert!((t.decode_tokens_per_s.unwrap() - 12.0 / 0.117).abs() < 1e-9);
        // Imported predictions carry no runner time: no telemetry at all.
        assert!(from_predictions(&preds[6..]).is_none());
    }

    #[test]
    fn resources_keep_the_higher_peak() {
        let a = Resources {
            peak_rss_bytes: Some(10),
            vram_unavailable_reason: Some("NVML not found".into()),
            vram_samples: 0,
            ..Default::default()
        };
        let b = Resources {
            peak_rss_bytes: Some(20),
            peak_vram_bytes: Some(5),
            vram_samples: 3,
            ..Default::default()
        };
        let m = a.max(&b);
        assert_eq!(
            (m.peak_rss_bytes, m.peak_vram_bytes, m.vram_samples),
            (Some(20), Some(5), 3)
        );
        assert!(m.vram_unavailable_reason.is_none());
    }

    #[test]
    fn monitor_reports_rss_and_vram_or_why_not() {
        let r = ResourceMonitor::start().finish();
        assert!(r.peak_rss_bytes.unwrap_or(0) > 0 || !cfg!(unix));
        // Exactly one of a VRAM peak and a reason for its absence.
        assert_ne!(
            r.peak_vram_bytes.is_some(),
            r.vram_unavailable_reason.is_some(),
            "{r:?}"
        );
        let h = hardware();
        assert!(h.cpu_threads >= 1 && h.rayon_threads >= 1);
        assert_eq!(
            h.gpus.is_empty(),
            h.nvml_unavailable_reason.is_some(),
            "{h:?}"
        );
        if h.gpus.is_empty() {
            let reason = r.vram_unavailable_reason.unwrap();
            assert!(reason.starts_with("NVML"), "{reason}");
        }
    }
}
