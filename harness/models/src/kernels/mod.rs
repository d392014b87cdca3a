//! Fused f32 kernels on the CPU (today: the InternViT vision tower's layers).
//!
//! Why hand-written: candle composes a layer from ops that each allocate a fresh output, and
//! its attention materialises the `heads × tokens × tokens` score matrix (67 MB per layer for
//! one 448 px tile), so a `perf` profile of the composed layer shows page faults (zeroing new
//! pages), single-threaded element-wise ops (bias, GELU's `erff`, layer scale) and a scalar
//! `expf` loop in the softmax next to the matmuls. Here the matmuls are still the `gemm`
//! crate's (the one candle calls), and everything around them is one pass over data already in
//! cache.
//!
//! - [`attention`]: multi-head attention over blocks of query rows, no full score matrix;
//! - [`BiasAct`], [`BiasScaleResidual`]: the in-place epilogues of the matmuls (bias, exact
//!   GELU, layer scale, residual);
//! - `simd`: `exp`, exact GELU and the row softmax, compiled for the baseline (SSE2), AVX2 and
//!   AVX-512F and chosen once per process at run time ([`isa`]), so one binary runs the widest
//!   kernels a machine has. The arithmetic is the same in every build (fixed lanes, no FMA
//!   contraction), so results do not depend on the machine.
//!
//! The matmuls' own AVX-512 kernels come from `gemm`'s `x86-v4` feature, which this crate
//! turns on (Cargo.toml); `gemm` also picks them at run time.
//!
//! On CUDA, [`fused_attention`] runs the vision attention through FlashAttention-2 when the
//! `flash-attn` cargo feature is on (unbuilt and unmeasured so far; see its module).
//!
//! A process-wide switch ([`set_fused_cpu_kernels`]) sends layers back to candle's composed
//! ops, for A/B benchmarks and for checking the kernels.

mod attention;
mod epilogue;
mod flash;
mod simd;

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, Layout};

pub use attention::attention;
pub use epilogue::{BiasAct, BiasScaleResidual};
pub use flash::{fused_attention, FLASH_ATTN_BUILT};
pub use simd::{isa, Isa};

/// Whether CPU f32 layers use the fused kernels (the default).
static FUSED_CPU_KERNELS: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU f32 kernels on or off, process-wide. Off, layers take the composed
/// candle ops that every other device uses.
pub fn set_fused_cpu_kernels(on: bool) {
    FUSED_CPU_KERNELS.store(on, Ordering::Relaxed);
}

/// Whether the fused CPU f32 kernels are on (see [`set_fused_cpu_kernels`]).
pub fn fused_cpu_kernels() -> bool {
    FUSED_CPU_KERNELS.load(Ordering::Relaxed)
}

fn f32_slice<'a>(s: &'a CpuStorage, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("{what}: the fused CPU kernels take f32"),
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    Ok(&f32_slice(s, what)?[a..b])
}

fn contiguous_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: the fused CPU kernels take f32"),
    }
}

#[cfg(test)]
mod tests {
    use super::simd;

    #[test]
    fn exp_softmax_and_gelu_are_close_to_libm() {
        let mut row: Vec<f32> = (0..1000).map(|i| -30.0 + i as f32 * 0.031).collect();
        let want: Vec<f32> = {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        };
        let n = row.len();
        simd::softmax_rows(&mut row, n);
        for (g, w) in row.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.max(1e-30) + 1e-12,
                "softmax {g} vs {w}"
            );
        }
        let xs: Vec<f32> = (0..2001).map(|i| -10.0 + i as f32 * 0.01).collect();
        let mut got = xs.clone();
        simd::bias_gelu(&mut got, &vec![0f32; xs.len()]);
        for (x, g) in xs.iter().zip(&got) {
            let w =
                (candle_core::cpu::erf::erf_f64(*x as f64 / 2f64.sqrt()) + 1.0) * 0.5 * *x as f64;
            assert!(
                (*g as f64 - w).abs() <= 2e-7 * x.abs().max(1.0) as f64,
                "gelu({x}) = {g}, want {w}"
            );
        }
    }

    #[test]
    fn every_instruction_set_this_cpu_has_gives_identical_bits() {
        // The dispatch must not change results: each variant the CPU can run is compared with
        // the baseline build bit for bit (AVX-512 is skipped where the CPU lacks it).
        let base_row: Vec<f32> = (0..1037)
            .map(|i| ((i * 37) % 101) as f32 * 0.173 - 8.0)
            .collect();
        let bias: Vec<f32> = (0..61).map(|i| i as f32 * 0.01 - 0.3).collect();
        let base_x: Vec<f32> = (0..61 * 17)
            .map(|i| ((i * 13) % 97) as f32 * 0.11 - 5.0)
            .collect();
        let mut want_s = base_row.clone();
        simd::softmax_rows_with(simd::Isa::Generic, &mut want_s, 1037);
        let mut want_g = base_x.clone();
        simd::bias_gelu_with(simd::Isa::Generic, &mut want_g, &bias);
        let mut checked = 0;
        for isa in [simd::Isa::Avx2, simd::Isa::Avx512] {
            if !isa.available() {
                continue;
            }
            let mut s = base_row.clone();
            simd::softmax_rows_with(isa, &mut s, 1037);
            assert_eq!(s, want_s, "{isa:?} softmax");
            let mut g = base_x.clone();
            simd::bias_gelu_with(isa, &mut g, &bias);
            assert_eq!(g, want_g, "{isa:?} gelu");
            checked += 1;
        }
        // x86-64 CI machines all have AVX2; elsewhere only the baseline exists.
        #[cfg(target_arch = "x86_64")]
        assert!(checked >= 1 || !simd::Isa::Avx2.available());
        let _ = checked;
    }
}
