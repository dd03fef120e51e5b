//! One block's attention with key-major `T x T` buffers (row `j` is key
//! `j`, query `i` is column `i`) and every product on the chain kernel
//! ([`chain_into`]): the path where that kernel runs
//! ([`super::Geometry::chain_fits`]).
//!
//! Why key-major: the softmax's per-query sums then run sixteen queries to
//! a vector ([`kernels::key_major`]), where query-major they were scalar
//! chains; the products read either layout through strides, and the chain
//! kernel only needs its right operand's rows contiguous, so q and dy are
//! transposed once per block for the scores. Every sum is the query-major
//! path's, term for term, so the bits are the same.

use kernels::key_major::{Strip, causal_softmax_bwd, causal_softmax_fwd, causal_softmax_fwd_strip, pack_strip, unpack};

use super::super::strided::{Mat, MatMut, chain_into, transpose_into};
use super::{Block, BlockGrads, Geometry, Scratch, causal_blocks};

/// `x^T` (`[hd, T]`, unit column stride) of the block at `x` in a
/// `[B*T, d]` buffer, copied into `xt`.
///
/// # Safety
/// `x` points at a block of a buffer of `g`'s shape.
unsafe fn transpose(g: &Geometry, x: *const f32, xt: &mut Vec<f32>) -> Mat {
    let (t, hd, d) = (g.len, g.head_dim, g.d());
    xt.resize(hd * t, 0.0);
    unsafe { transpose_into(t, hd, Mat(x, d as isize, 1), MatMut(xt.as_mut_ptr(), t as isize, 1)) };
    Mat(xt.as_ptr(), t as isize, 1)
}

/// `a^T`-major products of one block, query row block by row block: for
/// queries `r0..r1`, `out^T [0..r1, r0..r1] = b [0..r1] @ a^T [hd, r0..r1]`
/// (scores from q and k, or `dp` from dy and v). Entries of keys at or past
/// `r1` are never read for these queries.
///
/// # Safety
/// `a` and `b` point at blocks of buffers of `g`'s shape; `out` holds `T x T`.
unsafe fn key_major_product(g: &Geometry, a: *const f32, b: *const f32, xt: &mut Vec<f32>, out: &mut [f32]) {
    let (t, hd, d) = (g.len, g.head_dim, g.d() as isize);
    unsafe {
        let at = transpose(g, a, xt);
        for (r0, r1) in causal_blocks(t) {
            let dst = MatMut(out.as_mut_ptr().add(r0), t as isize, 1);
            chain_into(r1, r1 - r0, hd, dst, Mat(b, d, 1), Mat(at.0.add(r0), at.1, 1));
        }
    }
}

/// Key-major probabilities of one block into `w.p` (scores in `w.s`).
///
/// # Safety
/// As [`key_major_product`].
unsafe fn probabilities(g: &Geometry, scale: f32, b: Block, w: &mut Scratch) {
    unsafe { key_major_product(g, b.q, b.k, &mut w.xt, &mut w.s) };
    causal_softmax_fwd(&w.s, g.len, scale, &mut w.p);
}

/// `out [r0..r1] = x [r0..r1, 0..r1] @ m [0..r1]` for every query row block,
/// `x` given key-major (`xt`): the output (from p and v) and dq (from ds and k).
///
/// # Safety
/// `m` and `out` point at blocks of buffers of `g`'s shape; `out`'s is this task's alone.
unsafe fn query_rows(g: &Geometry, xt: &[f32], m: *const f32, out: *mut f32) {
    let (t, hd, d) = (g.len, g.head_dim, g.d());
    for (r0, r1) in causal_blocks(t) {
        // Element (i, j) of x is xt[j * t + i].
        unsafe {
            let lhs = Mat(xt.as_ptr().add(r0), 1, t as isize);
            chain_into(r1 - r0, hd, r1, MatMut(out.add(r0 * d), d as isize, 1), lhs, Mat(m, d as isize, 1));
        }
    }
}

/// `out [c0..c1] = x^T [c0..c1, c0..t] @ m [c0..t]` for every key block,
/// `x` given key-major (`xt`): dv (from p and dy) and dk (from ds and q).
/// Queries before `c0` see no key of `c0..c1`, so the sums start at `c0`.
///
/// # Safety
/// As [`query_rows`].
unsafe fn key_rows(g: &Geometry, xt: &[f32], m: *const f32, out: *mut f32) {
    let (t, hd, d) = (g.len, g.head_dim, g.d());
    for (c0, c1) in causal_blocks(t) {
        // Element (j, i) of x^T is xt[j * t + i].
        unsafe {
            let lhs = Mat(xt.as_ptr().add(c0 * t + c0), t as isize, 1);
            let dst = MatMut(out.add(c0 * d), d as isize, 1);
            chain_into(c1 - c0, hd, t - c0, dst, lhs, Mat(m.add(c0 * d), d as isize, 1));
        }
    }
}

/// As [`super::query_major::forward`], on the chain kernel; `kept` gets
/// the probabilities packed key by key (`kernels::key_major::pack`).
///
/// Query row block by row block, so a block's scores and probabilities
/// (keys `0..r1` by its queries) stay in cache between the three steps.
///
/// # Safety
/// As [`super::query_major::forward`].
pub(super) unsafe fn forward(
    g: &Geometry,
    scale: f32,
    b: Block,
    y: *mut f32,
    mut kept: Option<&mut [f32]>,
    w: &mut Scratch,
) {
    let (t, hd, d) = (g.len, g.head_dim, g.d());
    unsafe {
        let qt = transpose(g, b.q, &mut w.xt);
        for (r0, r1) in causal_blocks(t) {
            let strip = Strip { ld: (r1 - r0).next_multiple_of(16), rows: r1, i0: r0, w: r1 - r0 };
            let (s, p) = (&mut w.s[..r1 * strip.ld], &mut w.p[..r1 * strip.ld]);
            // s^T [0..r1, r0..r1] = k [0..r1] @ q^T [hd, r0..r1]
            let dst = MatMut(s.as_mut_ptr(), strip.ld as isize, 1);
            chain_into(r1, strip.w, hd, dst, Mat(b.k, d as isize, 1), Mat(qt.0.add(r0), qt.1, 1));
            causal_softmax_fwd_strip(s, p, strip, scale);
            if let Some(kept) = kept.as_deref_mut() {
                pack_strip(p, strip, t, kept);
            }
            // y [r0..r1] = p [r0..r1, 0..r1] @ v [0..r1]; element (i, j) of p is p[j * ld + i].
            let lhs = Mat(p.as_ptr(), 1, strip.ld as isize);
            chain_into(strip.w, hd, r1, MatMut(y.add(r0 * d), d as isize, 1), lhs, Mat(b.v, d as isize, 1));
        }
    }
}

/// As [`super::query_major::backward`], on the chain kernel; `kept` holds
/// the probabilities as [`forward`] packed them.
///
/// # Safety
/// As [`super::query_major::backward`].
pub(super) unsafe fn backward(
    g: &Geometry,
    scale: f32,
    b: Block,
    dy: *const f32,
    out: BlockGrads,
    kept: Option<&[f32]>,
    w: &mut Scratch,
) {
    unsafe {
        match kept {
            Some(kept) => unpack(kept, g.len, &mut w.p),
            None => probabilities(g, scale, b, w),
        }
        key_major_product(g, dy, b.v, &mut w.xt, &mut w.dp);
        // ds^T (into s) from the softmax backward.
        causal_softmax_bwd(&w.p, &w.dp, g.len, scale, &mut w.s);
        key_rows(g, &w.p, dy, out.dv);
        key_rows(g, &w.s, b.q, out.dk);
        query_rows(g, &w.s, b.k, out.dq);
    }
}
