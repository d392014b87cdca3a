//! Small network pieces shared by the families that load tensors by name with a shape check.

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::Linear;

/// A source of named tensors that checks each against the shape the config implies (and
/// names the tensor and the checkpoint when it is missing or has another shape).
pub trait TensorSource {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
}

/// `{prefix}.weight` `[out, inp]` (and `{prefix}.bias` `[out]` when `bias`) as a candle
/// [`Linear`].
pub fn linear(
    w: &impl TensorSource,
    prefix: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear> {
    let weight = w.get(&format!("{prefix}.weight"), &[out, inp])?;
    let bias = if bias {
        Some(w.get(&format!("{prefix}.bias"), &[out])?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}
