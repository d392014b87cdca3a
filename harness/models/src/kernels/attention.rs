//! Multi-head attention on the CPU over blocks of query rows: scores, softmax and the
//! product with v per block, with no full score matrix and no transposed copies.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;
use super::simd::softmax_rows;

/// Query rows per attention block: the block's scores (rows × tokens f32, 1 MB for 1025
/// tokens) stay in a core's L2 cache between the two matmuls and the softmax. Measured on
/// InternViT-300M (16 heads × 1025 tokens): 256 rows beat 64 and 128 (larger gemm tiles,
/// fewer tasks), with 80 blocks still enough to share among cores.
const QUERY_BLOCK: usize = 256;

/// A pointer the attention tasks share; each task writes a disjoint block of the output.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (query block, head) regions of one live allocation.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, so that closures capture the whole (Sync) wrapper, not its raw field.
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers pass offsets inside the allocation (see the attention task).
        unsafe { self.0.add(offset) }
    }
}

/// `[b, t, c]` view of f32 storage with a dense last dimension:
/// (b, t, c, batch stride, row stride, offset).
fn view3(l: &Layout, what: &str) -> candle_core::Result<[usize; 6]> {
    let (b, t, c) = l.shape().dims3()?;
    let s = l.stride();
    if s[2] != 1 {
        candle_core::bail!("{what}: the head dimension must be dense (strides {s:?})");
    }
    Ok([b, t, c, s[0], s[1], l.start_offset()])
}

/// Multi-head attention `softmax(q·kᵀ·scale)·v` for `[b, t, heads·head_dim]` q, k, v
/// (views with any row stride, such as column slices of one stacked qkv projection) to a
/// contiguous `[b, t, heads·head_dim]` output, heads side by side as transformers'
/// reshape puts them. Work is split into (tile, head, block of `QUERY_BLOCK` query rows)
/// tasks: scores for the block, softmax in place, times v straight into the output's
/// columns for that head. No transposed copies of q/k/v and no full score matrix.
struct Attention {
    heads: usize,
    head_dim: usize,
    scale: f32,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "internvit-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let what = self.name();
        let (q, k, v) = (
            f32_slice(qs, what)?,
            f32_slice(ks, what)?,
            f32_slice(vs, what)?,
        );
        let [b, t, c, qb, qr, qo] = view3(ql, what)?;
        let [kb_, kt, kc, kb, kr, ko] = view3(kl, what)?;
        let [vb_, vt, vc, vb, vr, vo] = view3(vl, what)?;
        let (heads, d) = (self.heads, self.head_dim);
        if (kb_, kt, kc) != (b, t, c) || (vb_, vt, vc) != (b, t, c) || heads * d != c {
            candle_core::bail!("{what}: q, k, v shapes or head count do not match");
        }
        let mut out = vec![0f32; b * t * c];
        let optr = OutPtr(out.as_mut_ptr());
        let block = QUERY_BLOCK.min(t);
        let blocks = t.div_ceil(block);
        (0..b * heads * blocks).into_par_iter().for_each_init(
            || vec![0f32; block * t],
            |scores, task| {
                let (bi, h, blk) = (
                    task / (heads * blocks),
                    (task / blocks) % heads,
                    task % blocks,
                );
                let r0 = blk * block;
                let rows = block.min(t - r0);
                // gemm(m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs,
                // rhs_cs, rhs_rs, alpha, beta, ..): dst = alpha·dst + beta·lhs·rhs. Tasks
                // already fill the cores, so each gemm runs single-threaded.
                // SAFETY: every pointer/stride pair stays inside its storage: rows r0..
                // r0+rows and columns h·d..(h+1)·d of tile bi, as the views were checked.
                unsafe {
                    // scores[rows, t] = scale · q[r0.., h] · k[.., h]ᵀ
                    gemm::gemm(
                        rows,
                        t,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        t as isize,
                        false,
                        q.as_ptr().add(qo + bi * qb + r0 * qr + h * d),
                        1,
                        qr as isize,
                        k.as_ptr().add(ko + bi * kb + h * d),
                        kr as isize,
                        1,
                        0f32,
                        self.scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                softmax_rows(&mut scores[..rows * t], t);
                // SAFETY: as above; the output block (rows r0.., columns of head h) is
                // written by this task only.
                unsafe {
                    // out[r0.., h] = scores[rows, t] · v[.., h]
                    gemm::gemm(
                        rows,
                        d,
                        t,
                        optr.at(bi * t * c + r0 * c + h * d),
                        1,
                        c as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        t as isize,
                        v.as_ptr().add(vo + bi * vb + h * d),
                        1,
                        vr as isize,
                        0f32,
                        1f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from_dims(&[b, t, c])))
    }
}

/// `softmax(q·kᵀ/√head_dim)·v` for `[b, t, heads·head_dim]` f32 q, k, v on the CPU (see
/// the module docs); the output is contiguous `[b, t, heads·head_dim]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    let op = Attention {
        heads,
        head_dim,
        scale: (head_dim as f32).powf(-0.5),
    };
    q.apply_op3_no_bwd(k, v, &op)
}
