//! What a run measures of the machine while it goes: the hardware (CPU, memory, GPUs through
//! NVML), peak resident memory, and GPU memory sampled on a background thread. Recorded in
//! `manifest.json` as [`Hardware`] and [`Resources`] (`docs/telemetry.md`).

use std::ffi::OsStr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

pub use crate::run_folder::schema::{GpuInfo, Hardware, Resources};

/// How often the VRAM sampler reads NVML.
pub const SAMPLE_INTERVAL_MS: u64 = 50;

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
