//! One block's attention with query-major `T x T` buffers (row `i` is
//! query `i`) and every product a gemm call: the path wherever the chain
//! kernel does not run ([`super::Geometry::chain_fits`]).

use super::super::strided::{Mat, MatMut, gemm_into};
use super::{Block, BlockGrads, Geometry, Scratch, causal_blocks, packed_len};

/// The visible (on and below the diagonal) entries of the `t x t` block
/// `p`, row after row, into `out` ([`packed_len`] floats): the masked half
/// is all zeros and need not be kept.
pub(super) fn pack(p: &[f32], t: usize, out: &mut [f32]) {
    for i in 0..t {
        let at = packed_len(i);
        out[at..at + i + 1].copy_from_slice(&p[i * t..i * t + i + 1]);
    }
}

/// Inverse of [`pack`]: the full `t x t` block, zeros above the diagonal.
pub(super) fn unpack(packed: &[f32], t: usize, p: &mut [f32]) {
    for i in 0..t {
        let at = packed_len(i);
        let (visible, masked) = p[i * t..(i + 1) * t].split_at_mut(i + 1);
        visible.copy_from_slice(&packed[at..at + i + 1]);
        masked.fill(0.0);
    }
}

/// Scores and probabilities of one block into `s` and `p`: `s = q k^T`
/// on and below the diagonal's row blocks (the rest of `s` is left as it
/// was: the softmax never reads it), then `p = causal_softmax(scale * s)`.
///
/// # Safety
/// `b` points at a block of buffers of `g`'s shape.
unsafe fn probabilities(g: &Geometry, scale: f32, b: Block, s: &mut [f32], p: &mut [f32]) {
    let (t, hd, d) = (g.len, g.head_dim, g.d() as isize);
    for (r0, r1) in causal_blocks(t) {
        // q [r0..r1, hd] @ k^T [hd, 0..r1]: k's transpose has row stride 1, column stride d.
        unsafe {
            let dst = MatMut(s.as_mut_ptr().add(r0 * t), t as isize, 1);
            gemm_into(r1 - r0, r1, hd, dst, Mat(b.q.offset(r0 as isize * d), d, 1), Mat(b.k, 1, d));
        }
    }
    kernels::causal_softmax_fwd(s, t, scale, p);
}

/// `y = softmax(q k^T) v` of one block into `y`; the probabilities
/// [`pack`]ed into `kept` when it is given.
///
/// # Safety
/// `b` and `y` point at blocks of buffers of `g`'s shape; `y`'s block is this task's alone.
pub(super) unsafe fn forward(
    g: &Geometry,
    scale: f32,
    b: Block,
    y: *mut f32,
    kept: Option<&mut [f32]>,
    w: &mut Scratch,
) {
    let (t, hd, d) = (g.len, g.head_dim, g.d() as isize);
    unsafe {
        probabilities(g, scale, b, &mut w.s, &mut w.p);
        if let Some(kept) = kept {
            pack(&w.p, t, kept);
        }
        // y [r0..r1] = p [r0..r1, 0..r1] @ v [0..r1, hd]
        for (r0, r1) in causal_blocks(t) {
            let lhs = Mat(w.p.as_ptr().add(r0 * t), t as isize, 1);
            gemm_into(r1 - r0, hd, r1, MatMut(y.add(r0 * g.d()), d, 1), lhs, Mat(b.v, d, 1));
        }
    }
}

/// The gradients of one block from its output gradient `dy` and the
/// forward's probabilities (`kept`, packed) or, without them, recomputed.
///
/// # Safety
/// As [`forward`]; `dy` and `out` point at blocks of buffers of `g`'s shape.
pub(super) unsafe fn backward(
    g: &Geometry,
    scale: f32,
    b: Block,
    dy: *const f32,
    out: BlockGrads,
    kept: Option<&[f32]>,
    w: &mut Scratch,
) {
    let (t, hd, d) = (g.len, g.head_dim, g.d());
    let (di, ti) = (d as isize, t as isize);
    unsafe {
        match kept {
            Some(kept) => unpack(kept, t, &mut w.p),
            None => probabilities(g, scale, b, &mut w.s, &mut w.p),
        }
        let (p, s, dp) = (&w.p, &mut w.s, &mut w.dp);
        for (r0, r1) in causal_blocks(t) {
            // dp [r0..r1, 0..r1] = dy [r0..r1] @ v^T [hd, 0..r1]
            let dst = MatMut(dp.as_mut_ptr().add(r0 * t), ti, 1);
            gemm_into(r1 - r0, r1, hd, dst, Mat(dy.add(r0 * d), di, 1), Mat(b.v, 1, di));
        }
        // ds (into s) from the softmax backward, which reads only the causal part of dp.
        kernels::causal_softmax_bwd(p, dp, t, scale, s);
        for (c0, c1) in causal_blocks(t) {
            // Rows above c0 see no key of c0..c1, so the sums run over rows c0..t.
            let (cols, rows) = (c1 - c0, t - c0);
            // dv [c0..c1] = p^T [c0..c1, c0..t] @ dy [c0..t]
            let lhs = Mat(p.as_ptr().add(c0 * t + c0), 1, ti);
            gemm_into(cols, hd, rows, MatMut(out.dv.add(c0 * d), di, 1), lhs, Mat(dy.add(c0 * d), di, 1));
            // dk [c0..c1] = ds^T [c0..c1, c0..t] @ q [c0..t]
            let lhs = Mat(s.as_ptr().add(c0 * t + c0), 1, ti);
            gemm_into(cols, hd, rows, MatMut(out.dk.add(c0 * d), di, 1), lhs, Mat(b.q.add(c0 * d), di, 1));
        }
        for (r0, r1) in causal_blocks(t) {
            // dq [r0..r1] = ds [r0..r1, 0..r1] @ k [0..r1]
            let lhs = Mat(s.as_ptr().add(r0 * t), ti, 1);
            gemm_into(r1 - r0, hd, r1, MatMut(out.dq.add(r0 * d), di, 1), lhs, Mat(b.k, di, 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing keeps every visible entry and unpacking restores the block,
    /// zeros above the diagonal included, whatever was in the scratch before.
    #[test]
    fn packed_probabilities_round_trip() {
        let t = 5;
        let mut p = vec![0f32; t * t];
        for i in 0..t {
            for j in 0..=i {
                p[i * t + j] = (i * 10 + j) as f32 + 0.5;
            }
        }
        let mut packed = vec![0f32; packed_len(t)];
        pack(&p, t, &mut packed);
        assert_eq!(packed.len(), 15);
        assert_eq!(packed[..4], [0.5, 10.5, 11.5, 20.5]);
        let mut back = vec![f32::NAN; t * t];
        unpack(&packed, t, &mut back);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&p));
    }
}
