//! Fused attention on CUDA for the vision encoder, through `candle-flash-attn`
//! (FlashAttention-2) behind the cargo feature `flash-attn`: the score matrix stays in shared
//! memory instead of a `heads × tokens × tokens` tensor per layer, and the softmax is computed
//! in f32 whatever the input dtype (as torch's SDPA does).
//!
//! Everywhere else — feature off, CPU, f32, a head size FlashAttention does not take —
//! [`fused_attention`] returns `None` and the caller keeps its composed ops (on the CPU in
//! f32, this module's own fused CPU kernels), so the default build and the CPU path are
//! unchanged.
//!
//! Status: written against candle-flash-attn 0.11's `flash_attn(q, k, v, scale, causal)`; not
//! built or measured yet (building it means compiling FlashAttention's CUDA kernels, which
//! the 2-core development machine was not given the time for), see docs/gpu.md.

use candle_core::Tensor;

/// Whether this build has the FlashAttention path (the `flash-attn` feature).
pub const FLASH_ATTN_BUILT: bool = cfg!(feature = "flash-attn");

/// `softmax(q·kᵀ/√head_dim)·v` for `[b, t, heads·head_dim]` q, k, v (views of a stacked qkv
/// projection are fine) as `[b, t, heads·head_dim]`, heads side by side as transformers'
/// reshape puts them — when FlashAttention applies: the feature is on, the tensors are on a
/// CUDA device in bf16 or f16, and `head_dim` is a multiple of 8 up to 256 (InternViT-300M:
/// 64; InternViT-6B: 128). `None` otherwise.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    head_dim: usize,
) -> Option<candle_core::Result<Tensor>> {
    #[cfg(feature = "flash-attn")]
    {
        use candle_core::DType;
        let half = matches!(q.dtype(), DType::BF16 | DType::F16);
        if q.device().is_cuda() && half && head_dim % 8 == 0 && head_dim <= 256 {
            return Some(flash(q, k, v, heads, head_dim));
        }
    }
    let _ = (q, k, v, heads, head_dim);
    None
}

#[cfg(feature = "flash-attn")]
fn flash(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    let (b, t, c) = q.dims3()?;
    // candle-flash-attn takes [batch, seq, heads, head_dim] with a dense last dimension; the
    // narrowed q/k/v views are made contiguous first (one copy each, as the composed path's
    // transposes also make).
    let split = |x: &Tensor| x.contiguous()?.reshape((b, t, heads, head_dim));
    let scale = (head_dim as f32).powf(-0.5);
    let out = candle_flash_attn::flash_attn(&split(q)?, &split(k)?, &split(v)?, scale, false)?;
    out.reshape((b, t, c))
}
