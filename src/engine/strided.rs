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
//!
//! The same fact makes [`chain_into`] possible: a register-tiled AVX-512
//! product that forms each element as that one chain, without gemm's
//! packing and dispatch, for the attention's many small products (a test
//! checks it against gemm bit for bit).

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

/// Whether [`chain_into`] runs on this machine (AVX-512F, the one vector
/// path written; elsewhere callers keep [`gemm_into`]).
pub(super) fn chain_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `dst [m, n] = lhs [m, k] @ rhs [k, n]` on this thread, every element one
/// fused multiply-add chain along `k` in order from zero: the sum gemm's
/// main path forms when `k <= 512` ([`gemm_into`] on products that avoid
/// its small-product kernels: more than one row and column, more than 256
/// elements, `k > 2`), so the bits are the same, without gemm's packing and
/// dispatch, which dominate the many small products of attention.
///
/// `rhs` and `dst` must have column stride 1 (`n` runs along vector lanes);
/// `lhs` may have any strides (its elements are broadcast).
///
/// # Safety
/// As [`gemm_into`], and [`chain_kernel_available`] must be true.
pub(super) unsafe fn chain_into(m: usize, n: usize, k: usize, dst: MatMut, lhs: Mat, rhs: Mat) {
    debug_assert!(rhs.2 == 1 && dst.2 == 1, "chain_into needs unit column strides");
    #[cfg(target_arch = "x86_64")]
    unsafe {
        chain::product(m, n, k, dst, lhs, rhs)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, dst, lhs, rhs);
        unreachable!("chain_into is only called where chain_kernel_available()")
    }
}

/// Elements `start..start + len` of a buffer that parallel tasks write
/// ([`Shared`], possibly [`Unwritten`]), zeroed by the task about to write
/// them: the zeroes go to lines already in its cache, not through memory in
/// a pass of their own over the whole buffer.
///
/// # Safety
/// The range must lie in the buffer and belong to the calling task alone.
pub(super) unsafe fn zeroed_part<'a>(buf: Shared, start: usize, len: usize) -> &'a mut [f32] {
    unsafe {
        std::ptr::write_bytes(buf.ptr().add(start), 0, len);
        std::slice::from_raw_parts_mut(buf.ptr().add(start), len)
    }
}

/// `len` floats written chunk by chunk in parallel: `fill(i, c)` gets chunk
/// `i` (`chunk` floats, the last one shorter), zeroed by its own task just
/// before.
///
/// Why: the element-wise ops (norms, GELU, cross-entropy) wrote every
/// element of a [`zeroed`] buffer, whose zeroes went through memory in a
/// pass of their own; here each task zeroes its chunk in cache right before
/// writing it. The chunks are the tasks the ops had, so results do not change.
pub(super) fn chunks_written(len: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    chunks_written_with(len, chunk, fill).0
}

/// [`chunks_written`], with what each `fill` returns, in chunk order (a
/// reduction's per-chunk parts, to be summed in a fixed order).
pub(super) fn chunks_written_with<R: Send>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) -> R + Sync,
) -> (Vec<f32>, Vec<R>) {
    use rayon::prelude::*;
    let chunk = chunk.max(1);
    let mut out = Unwritten::new(len);
    let base = out.ptr();
    let parts = (0..len.div_ceil(chunk))
        .into_par_iter()
        .map(|i| {
            let (start, n) = (i * chunk, chunk.min(len - i * chunk));
            // SAFETY: chunk `i` lies within the buffer and is this task's alone.
            fill(i, unsafe { zeroed_part(base, start, n) })
        })
        .collect();
    // SAFETY: the chunks cover all `len` elements and each was zeroed.
    (unsafe { out.written() }, parts)
}

/// Whether `[m, k] @ [k, n]` with few columns (a router's logits, a LoRA
/// factor's product) runs on [`chain_into`] with the bits of candle's gemm
/// call: `n <= 16`, and the shape on gemm's main path, where each element is
/// one chain from zero (`k <= 512`, one depth block; `k > 2`, `n > 1`,
/// `m > 1` and `m * n > 256` keep it off gemm's vector-vector, gemv and
/// small-product kernels).
///
/// Why: gemm packs and splits such a product like a wide one; at `small`
/// the router's `[2048, 128] @ [128, 4]` ran at about 15 GFLOP/s.
pub(super) fn narrow_chain_fits(m: usize, n: usize, k: usize) -> bool {
    chain_kernel_available() && (2..=16).contains(&n) && (3..=512).contains(&k) && m > 1 && m * n > 256
}

/// `dst [cols, rows] = src [rows, cols]^T`, both with unit column stride:
/// the chain kernel's operands that must run along vector lanes. Whole
/// 16 x 16 tiles go through vector shuffles where [`chain_kernel_available`].
///
/// # Safety
/// Both matrices must be valid for their shapes and strides and not overlap.
pub(super) unsafe fn transpose_into(rows: usize, cols: usize, src: Mat, dst: MatMut) {
    debug_assert!(src.2 == 1 && dst.2 == 1, "transpose_into needs unit column strides");
    let (mut r0, mut c0) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if chain_kernel_available() {
        (r0, c0) = (rows - rows % 16, cols - cols % 16);
        for r in (0..r0).step_by(16) {
            for c in (0..c0).step_by(16) {
                // SAFETY: the tile's 16 rows and columns are within both matrices.
                unsafe {
                    chain::transpose_tile(
                        src.0.offset(r as isize * src.1).add(c),
                        src.1,
                        dst.0.offset(c as isize * dst.1).add(r),
                        dst.1,
                    )
                };
            }
        }
    }
    // What the tiles left: the last rows across all columns, and the last
    // columns of the tiled rows.
    for r in 0..rows {
        let from = if r < r0 { c0 } else { 0 };
        for c in from..cols {
            // SAFETY: (r, c) is within both matrices.
            unsafe { *dst.0.offset(c as isize * dst.1 + r as isize) = *src.0.offset(r as isize * src.1 + c as isize) };
        }
    }
}

/// The AVX-512 body of [`chain_into`]: register tiles of [`chain::ROWS`]
/// rows by two 16-lane vectors, the last vector of a row masked.
#[cfg(target_arch = "x86_64")]
mod chain {
    use std::arch::x86_64::*;

    use super::{Mat, MatMut};

    /// Rows of one register tile: 12 rows x 2 vectors = 24 accumulators of
    /// the 32 vector registers, leaving room for the two `rhs` vectors and
    /// the broadcast.
    pub(super) const ROWS: usize = 12;

    /// Lanes of one vector.
    const LANES: usize = 16;

    /// The 16 x 16 tile at `src` (row stride `ls`) transposed to `dst` (row stride `ld`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_tile(src: *const f32, ls: isize, dst: *mut f32, ld: isize) {
        unsafe {
            let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.offset(i as isize * ls)));
            // Pairs of rows interleaved, then quads, then 128-bit lanes twice over.
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
            });
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let base = i / 4 * 4;
                let (a, b) = (t[base + (i % 4) / 2], t[base + 2 + (i % 4) / 2]);
                if i % 2 == 0 { _mm512_shuffle_ps::<0x44>(a, b) } else { _mm512_shuffle_ps::<0xee>(a, b) }
            });
            let v: [__m512; 16] = std::array::from_fn(|i| {
                let base = i / 8 * 8;
                let (a, b) = (u[base + i % 4], u[base + 4 + i % 4]);
                if i % 8 < 4 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xdd>(a, b) }
            });
            for i in 0..16 {
                let (a, b) = (v[i % 8], v[8 + i % 8]);
                let col = if i < 8 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xdd>(a, b) };
                _mm512_storeu_ps(dst.offset(i as isize * ld), col);
            }
        }
    }

    /// The lane mask of the vector that starts at column `c` of `n`.
    fn mask(n: usize, c: usize) -> __mmask16 {
        let lanes = n.saturating_sub(c).min(LANES);
        ((1u32 << lanes) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(m: usize, n: usize, k: usize, dst: MatMut, lhs: Mat, rhs: Mat) {
        let mut c = 0;
        while c < n {
            let masks = [mask(n, c), mask(n, c + LANES)];
            if n - c <= LANES {
                // One vector of columns left (the router's 4 or 16): tiles of
                // one vector, rather than a second one all masked off.
                unsafe { rows::<1>(m, c, k, masks, dst, lhs, rhs) };
            } else {
                unsafe { rows::<2>(m, c, k, masks, dst, lhs, rhs) };
            }
            c += 2 * LANES;
        }
    }

    /// Every row of columns `c..` (`V` vectors) of the product: tiles of
    /// ROWS rows, then smaller ones for the rest, each element the same chain.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows<const V: usize>(
        m: usize,
        c: usize,
        k: usize,
        masks: [__mmask16; 2],
        dst: MatMut,
        lhs: Mat,
        rhs: Mat,
    ) {
        let mut r = 0;
        while r < m {
            r += unsafe {
                match m - r {
                    rest if rest >= ROWS => tile::<ROWS, V>(r, c, k, masks, dst, lhs, rhs),
                    rest if rest >= 8 => tile::<8, V>(r, c, k, masks, dst, lhs, rhs),
                    rest if rest >= 4 => tile::<4, V>(r, c, k, masks, dst, lhs, rhs),
                    _ => tile::<1, V>(r, c, k, masks, dst, lhs, rhs),
                }
            };
        }
    }

    /// Rows `r..r + R`, columns `c..c + 16 V` (as `masks` allows) of the
    /// product; returns `R`, the rows done.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(
        r: usize,
        c: usize,
        k: usize,
        masks: [__mmask16; 2],
        dst: MatMut,
        lhs: Mat,
        rhs: Mat,
    ) -> usize {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        unsafe {
            let a = lhs.0.offset(r as isize * lhs.1);
            let b = rhs.0.add(c);
            for s in 0..k as isize {
                let row = b.offset(s * rhs.1);
                let bv: [__m512; V] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], row.add(v * LANES)));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.offset(i as isize * lhs.1 + s * lhs.2));
                    for (acc, bv) in acc.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(x, *bv, *acc);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                let out = dst.0.offset((r + i) as isize * dst.1).add(c);
                for (v, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(v * LANES), masks[v], *acc);
                }
            }
        }
        R
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

/// An output buffer of `len` floats that tasks write in full through its
/// raw pointer before anyone reads it: [`zeroed`] without the zeroes.
///
/// Why: most fused outputs are written whole by products ([`gemm_into`],
/// [`chain_into`], which write every element, zeros when `k` is 0) or row
/// copies, so [`zeroed`]'s zeroes were all overwritten: `memset` was about
/// 6% of the samples of training at `small`.
pub(super) struct Unwritten {
    buf: Vec<f32>,
    len: usize,
}

impl Unwritten {
    pub(super) fn new(len: usize) -> Self {
        Unwritten { buf: Vec::with_capacity(len), len }
    }

    /// Where tasks write (raw pointers only: no reference to an element
    /// before it is written).
    pub(super) fn ptr(&mut self) -> Shared {
        Shared(self.buf.as_mut_ptr())
    }

    /// The buffer, now that it is written.
    ///
    /// # Safety
    /// Every one of the `len` elements must have been written.
    pub(super) unsafe fn written(mut self) -> Vec<f32> {
        // SAFETY: the caller vouches that all `len` elements are initialised.
        unsafe { self.buf.set_len(self.len) };
        self.buf
    }
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
    fn chunks_written_hands_each_chunk_once_zeroed_in_order() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 4), (12, 4), (100_000, 4096)] {
            let v = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
                drop(vec![f32::NAN; len]);
                chunks_written(len, chunk, |i, c| {
                    assert!(c.iter().all(|&x| x.to_bits() == 0), "chunk {i} arrives zeroed");
                    assert_eq!(c.len(), chunk.min(len - i * chunk));
                    for (j, x) in c.iter_mut().enumerate() {
                        *x = (i * chunk + j) as f32;
                    }
                })
            });
            assert_eq!(v, (0..len).map(|j| j as f32).collect::<Vec<_>>(), "len {len}, chunk {chunk}");
        }
    }

    #[test]
    fn zeroed_buffers_are_all_zeros_whatever_their_size() {
        for len in [0, 1, PAR_ZERO_MIN - 1, PAR_ZERO_MIN, PAR_ZERO_MIN + PAR_ZERO_CHUNK / 2, 5 * PAR_ZERO_MIN + 3] {
            let v = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| zeroed(len));
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "len {len}: a non-zero (or -0.0) element");
        }
    }

    /// The chain kernel gives gemm's bits: square and ragged shapes, the
    /// last vector of a row part-masked, a transposed (strided) left
    /// operand, remainder row tiles, and the longest chain, 512.
    #[test]
    fn chain_products_equal_gemm_bit_for_bit() {
        if !chain_kernel_available() {
            return;
        }
        let rand = |n: usize, seed: u64| -> Vec<f32> {
            let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (0..n)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
                })
                .collect()
        };
        for (m, n, k, transposed) in [
            (32, 32, 32, false),
            (45, 77, 16, false),
            (17, 8, 300, true),
            (64, 256, 512, false),
            (23, 40, 5, true),
            (2048, 4, 128, false),
            (300, 16, 256, false),
            (4096, 16, 512, false),
            (1000, 2, 32, false),
            (65, 4, 3, false),
        ] {
            let (a, b) = (rand(m * k, 1), rand(k * n, 2));
            // lhs [m, k] as stored, or stored transposed ([k, m]) and read through strides.
            let lhs = if transposed { Mat(a.as_ptr(), 1, m as isize) } else { Mat(a.as_ptr(), k as isize, 1) };
            let rhs = Mat(b.as_ptr(), n as isize, 1);
            let (mut want, mut got) = (vec![0f32; m * n], vec![f32::NAN; m * n]);
            unsafe {
                gemm_into(m, n, k, MatMut(want.as_mut_ptr(), n as isize, 1), lhs, rhs);
                chain_into(m, n, k, MatMut(got.as_mut_ptr(), n as isize, 1), lhs, rhs);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{m} x {n} x {k}, lhs transposed: {transposed}");
        }
    }

    #[test]
    fn transposes_put_every_element_in_its_place() {
        for (rows, cols) in [(16, 16), (256, 32), (77, 8), (40, 33), (5, 3)] {
            let (ls, ld) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * ls).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; cols * ld];
            unsafe {
                transpose_into(rows, cols, Mat(src.as_ptr(), ls as isize, 1), MatMut(dst.as_mut_ptr(), ld as isize, 1))
            };
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * ld + r], src[r * ls + c], "{rows} x {cols}: element ({r}, {c})");
                }
            }
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
