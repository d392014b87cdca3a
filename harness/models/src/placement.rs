//! Where a model's weights go: the device and dtype `--device` and `--dtype` name, parsed once
//! for every command and every family ([`Placement::parse`], with the `auto` rule), and the
//! names run manifests and parity reports give them back ([`device_name`], [`dtype_name`],
//! [`device_location`]).

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device};

/// A device and dtype, parsed from their command-line spellings.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    pub dtype: DType,
}

impl Placement {
    /// Parse `device` (`cpu`, `cuda`, `cuda:N`) and `dtype` (`auto`, `f32`, `bf16`, `f16` and
    /// their long names). The error names the part that failed: `device: …` or `dtype: …`.
    pub fn parse(device: &str, dtype: &str) -> Result<Placement, PlacementError> {
        let device = parse_device(device).map_err(PlacementError::Device)?;
        let dtype = parse_dtype(resolve_dtype(dtype, &device)).map_err(PlacementError::Dtype)?;
        Ok(Placement { device, dtype })
    }
}

/// Which half of a placement did not parse.
#[derive(Debug)]
pub enum PlacementError {
    Device(anyhow::Error),
    Dtype(anyhow::Error),
}

/// The auto rule: `auto` is f32 on the CPU (candle's CPU kernels are fastest and exact there)
/// and bf16 on CUDA (what the checkpoints are stored in); anything else is kept as given.
pub fn resolve_dtype<'a>(requested: &'a str, device: &Device) -> &'a str {
    match requested {
        "auto" if device.is_cpu() => "f32",
        "auto" => "bf16",
        other => other,
    }
}

/// Parses `cpu`, `cuda` or `cuda:<ordinal>` and opens the device.
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

/// Parses `f32` / `bf16` / `f16` (and their long names); `auto` is resolved before, by
/// [`resolve_dtype`].
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

/// Device name with its ordinal, for parity reports: `cpu`, `cuda:N` or `metal:N`.
pub fn device_location(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_the_cpu_and_errors_name_their_half() {
        let p = Placement::parse("cpu", "auto").unwrap();
        assert!(p.device.is_cpu() && p.dtype == DType::F32);
        assert_eq!(Placement::parse("cpu", "bf16").unwrap().dtype, DType::BF16);
        assert!(matches!(
            Placement::parse("tpu", "f32"),
            Err(PlacementError::Device(_))
        ));
        assert!(matches!(
            Placement::parse("cpu", "f8"),
            Err(PlacementError::Dtype(_))
        ));
    }

    #[test]
    fn names_round_trip_what_parses() {
        let p = Placement::parse("cpu", "bfloat16").unwrap();
        assert_eq!(device_name(&p.device), "cpu");
        assert_eq!(device_location(&p.device), "cpu");
        assert_eq!(dtype_name(p.dtype), "bf16");
        assert!(parse_device("cuda:x").is_err());
    }
}
