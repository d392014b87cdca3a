//! In-place epilogues of the vision layers' matmuls: bias (+ exact GELU), and bias + layer
//! scale + residual, each one parallel pass over a matmul output nothing else holds.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout};
use rayon::prelude::*;

use super::simd::bias_gelu;
use super::{contiguous, contiguous_mut};

/// Rows per task in the element-wise epilogues.
const EPILOGUE_ROWS: usize = 16;

/// `y = act(y + bias)` in place on a `[rows, bias.len()]` matmul output; `act` is the
/// exact GELU or nothing.
pub struct BiasAct {
    pub bias: Vec<f32>,
    pub gelu: bool,
}

impl InplaceOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "internvit-bias-act"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let n = self.bias.len();
        let xs = contiguous_mut(s, l, self.name())?;
        if xs.len() % n != 0 {
            candle_core::bail!("{}: rows of {} for a bias of {n}", self.name(), xs.len());
        }
        let bias = &self.bias[..];
        xs.par_chunks_mut(n * EPILOGUE_ROWS).for_each(|block| {
            if self.gelu {
                bias_gelu(block, bias)
            } else {
                for row in block.chunks_exact_mut(n) {
                    for (x, b) in row.iter_mut().zip(bias) {
                        *x += *b;
                    }
                }
            }
        });
        Ok(())
    }
}

/// `y = residual + scale · (y + bias)` in place on a `[rows, bias.len()]` matmul output:
/// a layer-scaled residual branch, rounded step by step as the composed ops round it.
pub struct BiasScaleResidual {
    pub bias: Vec<f32>,
    pub scale: Vec<f32>,
}

impl InplaceOp2 for BiasScaleResidual {
    fn name(&self) -> &'static str {
        "internvit-bias-scale-residual"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        r: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<()> {
        let n = self.bias.len();
        let xs = contiguous_mut(s, l, self.name())?;
        let res = contiguous(r, rl, self.name())?;
        if xs.len() != res.len() || xs.len() % n != 0 || self.scale.len() != n {
            candle_core::bail!("{}: shapes do not match", self.name());
        }
        xs.par_chunks_mut(n * EPILOGUE_ROWS)
            .zip(res.par_chunks(n * EPILOGUE_ROWS))
            .for_each(|(block, rblock)| {
                for (row, rrow) in block.chunks_exact_mut(n).zip(rblock.chunks_exact(n)) {
                    for (((x, r), b), g) in
                        row.iter_mut().zip(rrow).zip(&self.bias).zip(&self.scale)
                    {
                        *x = (*x + *b) * *g + *r;
                    }
                }
            });
        Ok(())
    }
}
