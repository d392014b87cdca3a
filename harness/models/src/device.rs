//! Device and dtype names: parsing the command line's `--device` / `--dtype`, and the short
//! names run manifests record. Shared by every model family.

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device};

/// Parses "cpu" / "cuda" / "cuda:N" into a candle device.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ord = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| anyhow!("bad device {s:?}: expected cuda:<ordinal>"))?,
                None => 0,
            };
            Device::new_cuda(ord).map_err(|e| {
                anyhow!(
                    "cannot open CUDA device {ord}: {e} (is faceval-models built with \
                     --features cuda, and is a GPU visible?)"
                )
            })
        }
        other => bail!("unknown device {other:?}: expected cpu, cuda or cuda:<ordinal>"),
    }
}

/// Parses "f32" / "bf16" / "f16" (and their long names).
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => bail!("unknown dtype {other:?}: expected f32, bf16 or f16"),
    }
}

/// Short device name for manifests: `cpu`, `cuda` or `metal`.
pub fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// Short dtype name for manifests.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "other",
    }
}
