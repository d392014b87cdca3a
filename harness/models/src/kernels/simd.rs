//! The element-wise kernels — `exp`, exact GELU, row softmax — and their run-time dispatch
//! between the baseline build (SSE2 on x86-64), AVX2 (8 lanes) and AVX-512F (16 lanes).
//!
//! The loops are written once and compiled per instruction set with `#[target_feature]`; the
//! instruction set is detected once per process. No FMA contraction happens (Rust never fuses
//! `a * b + c` on its own) and the softmax's partial sums have a fixed lane count, so every
//! build gives bit-identical results (tested).

use std::sync::OnceLock;

/// Lanes of the explicit partial max/sum in the softmax: fixed, so the summation order and
/// therefore the result do not depend on the instruction set the loop is compiled for. 16 is
/// one AVX-512 register, two AVX2 registers.
const LANES: usize = 16;

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Generic,
    Avx2,
    Avx512,
}

impl Isa {
    /// Whether this CPU can run the kernels built for `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Generic => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512f",
        }
    }
}

/// The widest instruction set this CPU has, detected once.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Generic)
    })
}

/// `e^x` in f32 for the softmax: Cephes' `expf` (range reduction by ln 2 split in two
/// constants, degree-6 polynomial, exponent bits set directly), about 1 ulp from libm's.
/// Unlike a libm call it vectorises, which is the point: the softmax takes one `exp` per
/// score. Inputs are clamped to the finite range; a softmax only passes `x - max ≤ 0`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2^23 trick (vectorises; `round` is a libm call on SSE2).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Exact (erf) GELU with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): the
/// formula torch's own vectorised CPU `erf` uses, so no further from transformers than
/// libm's `erff` (which candle's `gelu_erf` calls one element at a time).
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let az = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * az);
    let r = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let e = 1.0 - r * exp(-az * az);
    let erf = if z < 0.0 { -e } else { e };
    (erf + 1.0) * 0.5 * x
}

/// Softmax of one row in place: max, `exp(x - max)` and its sum over `LANES` partials,
/// then scaling by the reciprocal of the sum.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in m.iter().chain(chunks.remainder()) {
        max = if v > max { v } else { max };
    }
    let mut s = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp(c[i] - max);
            s[i] += c[i];
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    for v in s {
        sum += v;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

#[inline(always)]
fn softmax_rows_generic(buf: &mut [f32], width: usize) {
    for row in buf.chunks_exact_mut(width) {
        softmax_row(row);
    }
}

#[inline(always)]
fn bias_gelu_generic(xs: &mut [f32], bias: &[f32]) {
    for row in xs.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x = gelu_erf(*x + *b);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_rows_avx2(buf: &mut [f32], width: usize) {
    softmax_rows_generic(buf, width)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bias_gelu_avx2(xs: &mut [f32], bias: &[f32]) {
    bias_gelu_generic(xs, bias)
}

// AVX-512F builds of the same loops. Not measured: the development machine (AMD EPYC, AVX2)
// has no AVX-512; they are checked bit for bit against the baseline where a CPU has it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows_avx512(buf: &mut [f32], width: usize) {
    softmax_rows_generic(buf, width)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bias_gelu_avx512(xs: &mut [f32], bias: &[f32]) {
    bias_gelu_generic(xs, bias)
}

/// Softmax of each `width`-wide row of `buf`, in place, with the kernels built for `isa`
/// (which the caller has checked is [`Isa::available`]).
pub(super) fn softmax_rows_with(isa: Isa, buf: &mut [f32], width: usize) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    match isa {
        // SAFETY: the CPU has the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { softmax_rows_avx512(buf, width) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { softmax_rows_avx2(buf, width) },
        _ => softmax_rows_generic(buf, width),
    }
}

/// `x = gelu(x + bias)` over rows of `bias.len()`, in place, with the kernels built for `isa`.
pub(super) fn bias_gelu_with(isa: Isa, xs: &mut [f32], bias: &[f32]) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    match isa {
        // SAFETY: the CPU has the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { bias_gelu_avx512(xs, bias) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { bias_gelu_avx2(xs, bias) },
        _ => bias_gelu_generic(xs, bias),
    }
}

/// Row softmax with the widest kernels this CPU has.
pub(super) fn softmax_rows(buf: &mut [f32], width: usize) {
    softmax_rows_with(isa(), buf, width)
}

/// Bias + exact GELU with the widest kernels this CPU has.
pub(super) fn bias_gelu(xs: &mut [f32], bias: &[f32]) {
    bias_gelu_with(isa(), xs, bias)
}
