//! Where a model's weights go: the device and dtype `--device` and `--dtype` name, parsed once
//! for every command and every family.

use anyhow::Result;
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
    crate::internvl::parse_device(s)
}

/// Parses `f32` / `bf16` / `f16` (and their long names).
pub fn parse_dtype(s: &str) -> Result<DType> {
    crate::internvl::parse_dtype(s)
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
}
