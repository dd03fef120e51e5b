//! One gemm call on raw strided f32 matrices, for the fused ops
//! ([`super::attention`], [`super::experts`], and the weight gradients of
//! [`super::ops::linear`]) that run many small products side by side as
//! rayon tasks, each on its own thread.
//!
//! Why it keeps every bit of candle's CPU matmul: the call is the one
//! candle makes (alpha 0, beta 1, no conjugation, the output not read), and
//! gemm's result for an element does not depend on how the product is cut
//! into tasks. Each output element is one multiply-add chain along the
//! inner dimension `k` when `k <= 512` (longer ones are cut into depth
//! blocks whose size can depend on the output's shape), and threads share
//! out the rows and columns of the output, never `k`. So for `k <= 512` a
//! product split by rows gives the rows of the whole product, with two
//! exceptions [`row_blocks`] keeps clear of: gemm sends products of one
//! row, or of at most 256 elements in all, to kernels that sum in another
//! order. Products with a longer `k` (weight gradients, whose `k` is a
//! batch's tokens) are cut by rows only as [`weight_gradient_blocks`]
//! allows, where the depth blocks are the whole product's.

use gemm::Parallelism;

/// A strided f32 matrix: base pointer, row stride, column stride (elements).
#[derive(Clone, Copy)]
pub(super) struct Mat(pub *const f32, pub isize, pub isize);

/// A writable strided f32 matrix.
#[derive(Clone, Copy)]
pub(super) struct MatMut(pub *mut f32, pub isize, pub isize);

/// The base pointer of a buffer that parallel tasks write to, each only
/// its own elements, so writes never overlap.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub *mut f32);
// SAFETY: tasks write disjoint elements (see `Shared`); the buffers outlive the parallel loop.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The base pointer (a method, so closures capture the `Sync` wrapper, not the raw pointer).
    pub(super) fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// `dst [m, n] = lhs [m, k] @ rhs [k, n]` on this thread, as candle's CPU
/// matmul calls gemm (alpha 0, beta 1, no conjugation).
///
/// # Safety
/// The three matrices must be valid for their shapes and strides, and `dst`
/// must not overlap the inputs or another thread's writes.
pub(super) unsafe fn gemm_into(m: usize, n: usize, k: usize, dst: MatMut, lhs: Mat, rhs: Mat) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2,
            dst.1,
            false,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Elements below which [`zeroed`] zeroes on the calling thread: waking the
/// other threads costs more than they save.
const PAR_ZERO_MIN: usize = 1 << 16;

/// Elements each thread of [`zeroed`] zeroes at a time.
const PAR_ZERO_CHUNK: usize = 1 << 14;

/// `vec![0f32; len]`, zeroed by every thread of the current rayon pool.
///
/// Why: the fused ops' outputs and kept activations are megabytes, and the
/// one thread that runs the graph zeroed each before handing it to the
/// tasks, while the others waited: `memset` was about 6% of that thread's
/// samples in a profile of training at `small`. Zeroes are zeroes however
/// the work is split, so results do not change.
pub(super) fn zeroed(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if len < PAR_ZERO_MIN {
        return vec![0f32; len];
    }
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(PAR_ZERO_CHUNK).for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the loop above initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// `(r0, r1)` for the row blocks of an `m`-row product, `block` rows each;
/// the last takes the remainder, so no block is thinner than `block` (one
/// block when `m < 2 * block`). With `block * n > 256` no block reaches the
/// kernels of very small products that sum in another order.
pub(super) fn row_blocks(m: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocks = (m / block).max(1);
    (0..blocks).map(move |b| (b * block, if b + 1 == blocks { m } else { (b + 1) * block }))
}

/// Rows of a weight gradient's output per task of [`weight_gradient_blocks`]:
/// at least 64 (see [`row_blocks`]).
const WEIGHT_GRADIENT_ROWS: usize = 64;

/// Row blocks `(r0, r1)` of a weight gradient `[rows, cols] = a^T b` whose
/// inner dimension is a batch's tokens, for tasks that each make one
/// single-threaded gemm call; one block (the whole product) where cutting
/// would change bits.
///
/// The inner dimension can exceed 512 here, and gemm then cuts it into
/// depth blocks whose size depends only on that dimension, unless a product
/// has at most 64 rows and at most 64 columns: that small-product path cuts
/// it differently (512 deep where the other balances the blocks). Blocks
/// of [`WEIGHT_GRADIENT_ROWS`] rows with more than 64 columns stay on the
/// same path as the whole product, so each element is the same sum; with
/// 64 or fewer columns the product stays whole.
pub(super) fn weight_gradient_blocks(rows: usize, cols: usize) -> Vec<(usize, usize)> {
    let block = if cols > 64 { WEIGHT_GRADIENT_ROWS } else { rows.max(1) };
    row_blocks(rows, block).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_are_all_zeros_whatever_their_size() {
        for len in [0, 1, PAR_ZERO_MIN - 1, PAR_ZERO_MIN, PAR_ZERO_MIN + PAR_ZERO_CHUNK / 2, 5 * PAR_ZERO_MIN + 3] {
            let v = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| zeroed(len));
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "len {len}: a non-zero (or -0.0) element");
        }
    }

    #[test]
    fn weight_gradients_are_cut_only_when_wider_than_64_columns() {
        assert_eq!(weight_gradient_blocks(128, 128), [(0, 64), (64, 128)]);
        assert_eq!(weight_gradient_blocks(200, 65), [(0, 64), (64, 128), (128, 200)]);
        assert_eq!(weight_gradient_blocks(256, 64), [(0, 256)]);
        assert_eq!(weight_gradient_blocks(100, 512), [(0, 100)]);
        assert_eq!(weight_gradient_blocks(0, 4), [(0, 0)]);
    }

    #[test]
    fn row_blocks_cover_every_row_once_and_none_is_thin() {
        for (m, block) in [(0, 32), (5, 32), (32, 32), (63, 32), (64, 32), (100, 32), (300, 64)] {
            let blocks: Vec<_> = row_blocks(m, block).collect();
            let mut next = 0;
            for &(r0, r1) in &blocks {
                assert_eq!(r0, next, "m {m}: blocks must be contiguous");
                assert!(r1 - r0 >= block.min(m), "m {m}: block {r0}..{r1} is thinner than {block}");
                next = r1;
            }
            assert_eq!(next, m, "m {m}: every row is in a block");
        }
        assert_eq!(row_blocks(100, 32).collect::<Vec<_>>(), vec![(0, 32), (32, 64), (64, 100)]);
    }
}
