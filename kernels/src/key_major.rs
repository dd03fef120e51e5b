//! The causal softmax on key-major attention blocks: each `t x t` block
//! holds row `j` = key `j` against every query, so query `i`'s scores are
//! column `i`. Every output column gets the bits [`crate::causal_softmax_fwd`]
//! and [`crate::causal_softmax_bwd`] give the same row of a query-major
//! block.
//!
//! Why the transposed layout: a row's max is order-free, but its sum of
//! exponentials and the backward's dot product are chains in column order
//! (so the bits stay those of the one-row kernel). Query-major, those
//! chains run down one row each, a scalar add after a scalar add. Key-major,
//! sixteen queries sit side by side in one vector ([`LANES`]) and each lane
//! walks its own chain in the same order, sixteen chains per instruction.
//!
//! Visible entries are key `j <= i` for query `i`: the upper triangle of a
//! key-major block, diagonal included. Outputs are 0 elsewhere, as in the
//! query-major kernels.

use crate::exp_in_place;

/// Queries handled side by side: one 16-lane vector of f32.
const LANES: usize = 16;

/// Floats of one [`pack`]ed block: key `j` keeps its `t - j` visible entries.
pub fn packed_len(t: usize) -> usize {
    t * (t + 1) / 2
}

/// Where key `j`'s visible entries start in a [`pack`]ed block of `t`.
fn packed_row(t: usize, j: usize) -> usize {
    j * t - j * j.saturating_sub(1) / 2
}

/// The visible entries of the key-major `t x t` block `p`, key after key,
/// into `out` ([`packed_len`] floats): the rest is zeros and need not be kept.
pub fn pack(p: &[f32], t: usize, out: &mut [f32]) {
    pack_strip(p, Strip { ld: t, rows: t, i0: 0, w: t }, t, out);
}

/// The visible entries of one strip (its `rows` keys) into their places
/// in a [`pack`]ed block of `t` queries.
pub fn pack_strip(p: &[f32], strip: Strip, t: usize, out: &mut [f32]) {
    let Strip { ld, rows, i0, w } = strip;
    for j in 0..rows.min(i0 + w) {
        let first = j.max(i0);
        let at = packed_row(t, j) + first - j;
        out[at..at + i0 + w - first].copy_from_slice(&p[j * ld + first - i0..j * ld + w]);
    }
}

/// Inverse of [`pack`]: the full block, zeros below the diagonal.
pub fn unpack(packed: &[f32], t: usize, p: &mut [f32]) {
    for j in 0..t {
        let at = packed_row(t, j);
        let (masked, visible) = p[j * t..(j + 1) * t].split_at_mut(j);
        masked.fill(0.0);
        visible.copy_from_slice(&packed[at..at + t - j]);
    }
}

/// Softmax of `scale * x` over each query's visible keys, for key-major
/// `t x t` blocks `xt` into `yt`; column `i` gets the bits row `i` gets
/// from [`crate::causal_softmax_fwd`].
pub fn causal_softmax_fwd(xt: &[f32], t: usize, scale: f32, yt: &mut [f32]) {
    for (xb, yb) in xt.chunks_exact(t * t).zip(yt.chunks_exact_mut(t * t)) {
        causal_softmax_fwd_strip(xb, yb, Strip { ld: t, rows: t, i0: 0, w: t }, scale);
    }
}

/// Backward of [`causal_softmax_fwd`] from its output `yt`: each column
/// gets the bits its row gets from [`crate::causal_softmax_bwd`],
/// `dx = scale * y * (dy - sum(dy * y))` on the visible part, 0 elsewhere.
pub fn causal_softmax_bwd(yt: &[f32], dyt: &[f32], t: usize, scale: f32, dxt: &mut [f32]) {
    let blocks = yt.chunks_exact(t * t).zip(dyt.chunks_exact(t * t)).zip(dxt.chunks_exact_mut(t * t));
    for ((yb, dyb), dxb) in blocks {
        causal_softmax_bwd_strip(yb, dyb, dxb, Strip { ld: t, rows: t, i0: 0, w: t }, scale);
    }
}

/// Queries `i0..i0 + w` of a key-major block as columns `0..w` of a
/// buffer with row stride `ld`: row `j` holds key `j`, and the strip has
/// `rows` of them (`i0 + w <= rows`; keys past the last query are all masked).
#[derive(Debug, Clone, Copy)]
pub struct Strip {
    pub ld: usize,
    pub rows: usize,
    pub i0: usize,
    pub w: usize,
}

impl Strip {
    /// Its queries in groups of up to [`LANES`]: (first column, width).
    fn groups(self) -> impl Iterator<Item = (usize, usize)> {
        (0..self.w).step_by(LANES).map(move |c| (c, LANES.min(self.w - c)))
    }

    /// Key `j`'s entries for the group at column `c` of width `w`.
    fn lane(self, j: usize, c: usize, w: usize) -> std::ops::Range<usize> {
        j * self.ld + c..j * self.ld + c + w
    }
}

/// [`causal_softmax_fwd`] on one strip of queries: writes all `rows` rows
/// of the strip's columns of `y` (zeros where masked).
pub fn causal_softmax_fwd_strip(x: &[f32], y: &mut [f32], strip: Strip, scale: f32) {
    assert!(strip.i0 + strip.w <= strip.rows && strip.w <= strip.ld, "a strip within its buffer: {strip:?}");
    EXPS.with_borrow_mut(|e| {
        if e.len() < strip.rows * LANES {
            e.resize(strip.rows * LANES, 0.0);
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            return unsafe { fwd_avx512(x, y, strip, scale, e) };
        }
        fwd(x, y, strip, scale, e)
    })
}

thread_local! {
    /// [`fwd`]'s buffer for one group's exponentials, kept between calls.
    static EXPS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd_avx512(x: &[f32], y: &mut [f32], strip: Strip, scale: f32, e: &mut [f32]) {
    fwd(x, y, strip, scale, e)
}

/// [`causal_softmax_bwd`] on one strip of queries: writes all `rows` rows
/// of the strip's columns of `dx` (zeros where masked).
pub fn causal_softmax_bwd_strip(y: &[f32], dy: &[f32], dx: &mut [f32], strip: Strip, scale: f32) {
    assert!(strip.i0 + strip.w <= strip.rows && strip.w <= strip.ld, "a strip within its buffer: {strip:?}");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { bwd_avx512(y, dy, dx, strip, scale) };
    }
    bwd(y, dy, dx, strip, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bwd_avx512(y: &[f32], dy: &[f32], dx: &mut [f32], strip: Strip, scale: f32) {
    bwd(y, dy, dx, strip, scale)
}

/// Up to [`LANES`] values as one full group, zeros past their end, so
/// the lane loops have a fixed length and vectorise.
#[inline(always)]
fn lanes(x: &[f32]) -> [f32; LANES] {
    if let Ok(full) = <[f32; LANES]>::try_from(x) {
        return full;
    }
    let mut out = [0f32; LANES];
    out[..x.len()].copy_from_slice(x);
    out
}

/// The [`LANES`] values of `x` from `at`.
#[inline(always)]
fn full(x: &[f32], at: usize) -> &[f32; LANES] {
    x[at..at + LANES].try_into().expect("a full group")
}

/// The [`LANES`] values of `x` from `at`, to write.
#[inline(always)]
fn full_mut(x: &mut [f32], at: usize) -> &mut [f32; LANES] {
    (&mut x[at..at + LANES]).try_into().expect("a full group")
}

/// Which lanes of key `j`'s row in the group of queries `q0..q0 + w` are
/// visible (key `j` at or before query `q0 + l`).
#[inline(always)]
fn visible(j: usize, q0: usize, w: usize) -> [bool; LANES] {
    std::array::from_fn(|l| l < w && j <= q0 + l)
}

/// The forward on one strip, `e` holding at least `rows * LANES` floats:
/// one group's exponentials, key by key, in L1 across the passes.
#[inline(always)]
fn fwd(x: &[f32], y: &mut [f32], strip: Strip, scale: f32, e: &mut [f32]) {
    for (c, w) in strip.groups() {
        let q0 = strip.i0 + c;
        let keys = q0 + w;
        let lane = |j: usize| strip.lane(j, c, w);
        // Keys before the group are visible to all of a full group's
        // queries: whole vectors, no mask.
        let open = if w == LANES { q0 } else { 0 };
        // The max is order-free; each lane sees its visible keys only.
        let mut m = [f32::NEG_INFINITY; LANES];
        for j in 0..open {
            let x = full(x, j * strip.ld + c);
            for l in 0..LANES {
                m[l] = m[l].max(x[l] * scale);
            }
        }
        for j in open..keys {
            let (x, vis) = (lanes(&x[lane(j)]), visible(j, q0, w));
            for l in 0..LANES {
                m[l] = if vis[l] { m[l].max(x[l] * scale) } else { m[l] };
            }
        }
        // exp(scale * x - max); masked entries (and lanes past `w`) exp(-inf) = +0.
        let e = &mut e[..keys * LANES];
        for (j, ej) in e.chunks_exact_mut(LANES).enumerate() {
            if j < open {
                let x = full(x, j * strip.ld + c);
                for l in 0..LANES {
                    ej[l] = x[l] * scale - m[l];
                }
            } else {
                let (x, vis) = (lanes(&x[lane(j)]), visible(j, q0, w));
                for l in 0..LANES {
                    ej[l] = if vis[l] { x[l] * scale - m[l] } else { f32::NEG_INFINITY };
                }
            }
        }
        exp_in_place(e);
        // Each lane's sum runs over keys in order; the masked +0 entries
        // (past a query's last key) leave a sum of non-negative terms as it was.
        let mut sum = [0f32; LANES];
        for ej in e.chunks_exact(LANES) {
            for l in 0..LANES {
                sum[l] += ej[l];
            }
        }
        let inv = sum.map(|s| 1.0 / s);
        for (j, ej) in e.chunks_exact(LANES).enumerate() {
            let p: [f32; LANES] = std::array::from_fn(|l| ej[l] * inv[l]);
            if w == LANES {
                *full_mut(y, j * strip.ld + c) = p;
            } else {
                y[lane(j)].copy_from_slice(&p[..w]);
            }
        }
        for j in keys..strip.rows {
            y[lane(j)].fill(0.0);
        }
    }
}

#[inline(always)]
fn bwd(y: &[f32], dy: &[f32], dx: &mut [f32], strip: Strip, scale: f32) {
    for (c, w) in strip.groups() {
        let q0 = strip.i0 + c;
        let keys = q0 + w;
        let lane = |j: usize| strip.lane(j, c, w);
        let open = if w == LANES { q0 } else { 0 };
        // Each lane's dot product over its visible keys, in order.
        let mut dot = [0f32; LANES];
        for j in 0..open {
            let (y, dy) = (full(y, j * strip.ld + c), full(dy, j * strip.ld + c));
            for l in 0..LANES {
                dot[l] += y[l] * dy[l];
            }
        }
        for j in open..keys {
            let (y, dy, vis) = (lanes(&y[lane(j)]), lanes(&dy[lane(j)]), visible(j, q0, w));
            for l in 0..LANES {
                dot[l] = if vis[l] { dot[l] + y[l] * dy[l] } else { dot[l] };
            }
        }
        for j in 0..open {
            let (y, dy) = (full(y, j * strip.ld + c), full(dy, j * strip.ld + c));
            let out: [f32; LANES] = std::array::from_fn(|l| scale * y[l] * (dy[l] - dot[l]));
            *full_mut(dx, j * strip.ld + c) = out;
        }
        for j in open..keys {
            let (y, dy, vis) = (lanes(&y[lane(j)]), lanes(&dy[lane(j)]), visible(j, q0, w));
            let out: [f32; LANES] = std::array::from_fn(|l| if vis[l] { scale * y[l] * (dy[l] - dot[l]) } else { 0.0 });
            dx[lane(j)].copy_from_slice(&out[..w]);
        }
        for j in keys..strip.rows {
            dx[lane(j)].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's test data, doubled (exactly): values in [-4, 4).
    fn data(n: usize, seed: u32) -> Vec<f32> {
        crate::tests::data(n, seed).into_iter().map(|x| x * 2.0).collect()
    }

    /// Each `t x t` block of `x` transposed.
    fn transpose(x: &[f32], t: usize) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for (xb, ob) in x.chunks_exact(t * t).zip(out.chunks_exact_mut(t * t)) {
            for i in 0..t {
                for j in 0..t {
                    ob[j * t + i] = xb[i * t + j];
                }
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Key-major forward and backward are the query-major kernels
    /// transposed, bit for bit, at widths around the lane count and ragged
    /// ones, with whatever the masked half of the inputs holds.
    #[test]
    fn key_major_softmax_is_the_query_major_one_transposed_bit_for_bit() {
        for t in [1, 5, 16, 17, 32, 37, 77, 128] {
            let (x, dy) = (data(2 * t * t, 1 + t as u32), data(2 * t * t, 2 + t as u32));
            let mut y = vec![0f32; x.len()];
            crate::causal_softmax_fwd(&x, t, 0.37, &mut y);
            let mut yt = vec![f32::NAN; x.len()];
            causal_softmax_fwd(&transpose(&x, t), t, 0.37, &mut yt);
            assert_eq!(bits(&yt), bits(&transpose(&y, t)), "forward, t {t}");
            let mut dx = vec![0f32; x.len()];
            crate::causal_softmax_bwd(&y, &dy, t, 0.37, &mut dx);
            let mut dxt = vec![f32::NAN; x.len()];
            causal_softmax_bwd(&yt, &transpose(&dy, t), t, 0.37, &mut dxt);
            assert_eq!(bits(&dxt), bits(&transpose(&dx, t)), "backward, t {t}");
        }
    }

    /// Scores far apart (exponentials that underflow to 0) and equal ones
    /// keep the query-major bits too.
    #[test]
    fn extreme_scores_keep_the_bits() {
        let t = 20;
        let mut x = data(t * t, 9);
        for (n, v) in x.iter_mut().enumerate() {
            *v = match n % 5 {
                0 => 300.0,
                1 => -300.0,
                2 => 0.0,
                _ => *v,
            };
        }
        let mut y = vec![0f32; t * t];
        crate::causal_softmax_fwd(&x, t, 1.0, &mut y);
        let mut yt = vec![0f32; t * t];
        causal_softmax_fwd(&transpose(&x, t), t, 1.0, &mut yt);
        assert_eq!(bits(&yt), bits(&transpose(&y, t)));
    }

    /// A strip of queries in its own narrow buffer gets the columns the
    /// whole block gets, forward and backward.
    #[test]
    fn a_strip_gets_the_bits_of_its_columns_in_the_block() {
        let t = 77;
        let (xt, dyt) = (data(t * t, 3), data(t * t, 4));
        let (mut yt, mut dxt) = (vec![0f32; t * t], vec![0f32; t * t]);
        causal_softmax_fwd(&xt, t, 0.2, &mut yt);
        causal_softmax_bwd(&yt, &dyt, t, 0.2, &mut dxt);
        for (i0, w, ld) in [(0, 32, 32), (32, 45, 48), (64, 13, 16), (5, 20, 24)] {
            let cut = |v: &[f32]| {
                let mut out = vec![f32::NAN; t * ld];
                for j in 0..t {
                    out[j * ld..j * ld + w].copy_from_slice(&v[j * t + i0..j * t + i0 + w]);
                }
                out
            };
            let strip = Strip { ld, rows: t, i0, w };
            let mut y = vec![f32::NAN; t * ld];
            causal_softmax_fwd_strip(&cut(&xt), &mut y, strip, 0.2);
            let mut dx = vec![f32::NAN; t * ld];
            causal_softmax_bwd_strip(&y, &cut(&dyt), &mut dx, strip, 0.2);
            for j in 0..t {
                let (got, want) = (&y[j * ld..j * ld + w], &yt[j * t + i0..j * t + i0 + w]);
                assert_eq!(bits(got), bits(want), "forward, strip {strip:?}, key {j}");
                let (got, want) = (&dx[j * ld..j * ld + w], &dxt[j * t + i0..j * t + i0 + w]);
                assert_eq!(bits(got), bits(want), "backward, strip {strip:?}, key {j}");
            }
        }
    }

    #[test]
    fn packing_keeps_the_visible_entries_and_unpacking_restores_the_block() {
        let t = 5;
        let mut p = vec![0f32; t * t];
        for j in 0..t {
            for i in j..t {
                p[j * t + i] = (j * 10 + i) as f32 + 0.5;
            }
        }
        let mut packed = vec![0f32; packed_len(t)];
        pack(&p, t, &mut packed);
        assert_eq!(packed.len(), 15);
        assert_eq!(packed[..7], [0.5, 1.5, 2.5, 3.5, 4.5, 11.5, 12.5]);
        assert_eq!(packed[14], 44.5);
        let mut back = vec![f32::NAN; t * t];
        unpack(&packed, t, &mut back);
        assert_eq!(bits(&back), bits(&p));
        // Packed strip by strip (each in its own buffer), the same floats.
        let mut by_strips = vec![f32::NAN; packed_len(t)];
        for (i0, w) in [(0, 2), (2, 3)] {
            let strip: Vec<f32> = (0..t).flat_map(|j| p[j * t + i0..j * t + i0 + w].to_vec()).collect();
            pack_strip(&strip, Strip { ld: w, rows: i0 + w, i0, w }, t, &mut by_strips);
        }
        assert_eq!(bits(&by_strips), bits(&packed));
    }
}
