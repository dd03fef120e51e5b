//! CPU compute kernels for the bets engine: fused row-wise operations with
//! their hand-written backward passes, the AdamW update, packed ternary
//! matrix products ([`ternary`]), and a vectorised `exp` with the bits of
//! glibc's ([`exp`]) that the softmax, GELU and cross-entropy kernels use.
//!
//! Every kernel works on plain `f32` slices laid out row-major, so the engine
//! can wrap it in a candle custom op (and split rows across threads itself).
//! Each one has a plain, obviously-correct `f64` twin in [`reference`] that the
//! tests use as the oracle. Fusing matters on CPU: a GELU backward built from
//! candle's element-wise ops allocates about a dozen temporaries, the fused
//! kernel none.

pub mod exp;
pub mod key_major;
pub mod reference;
pub mod ternary;

pub use exp::exp_in_place;

/// `pub fn $name(args) -> ret` running `$body` compiled for AVX-512F where
/// the CPU has it, else as built. The body is the same source either way,
/// and Rust never fuses a multiply and an add on its own, so the wider
/// vectors change no bit: the element-wise kernels just run 16 lanes where
/// the baseline build gave them SSE's 4.
macro_rules! avx512_where_available {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: the feature was just detected.
                return unsafe { wide($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

avx512_where_available! {
    /// Root-mean-square normalisation with a gain and no bias.
    ///
    /// `x` and `y` hold `rows x d` values; `rstd` receives `1 / sqrt(mean(x^2) + eps)`
    /// per row (kept by callers that want to skip recomputing it). Each row's
    /// sum of squares is one chain in column order; [`ROW_GROUP`] rows run
    /// side by side (independent chains, the same bits), where one chain alone
    /// waited out each add's latency.
    pub fn rmsnorm_fwd(x: &[f32], gain: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f32]) => rmsnorm_fwd_body
}

#[inline(always)]
fn rmsnorm_fwd_body(x: &[f32], gain: &[f32], eps: f32, y: &mut [f32], rstd: &mut [f32]) {
    let d = gain.len();
    let grouped = rstd.len() - rstd.len() % ROW_GROUP;
    let (xg, xt) = x.split_at(grouped * d);
    let (yg, yt) = y.split_at_mut(grouped * d);
    let (rg, rt) = rstd.split_at_mut(grouped);
    for ((xs, ys), rs) in
        xg.chunks_exact(ROW_GROUP * d).zip(yg.chunks_exact_mut(ROW_GROUP * d)).zip(rg.chunks_exact_mut(ROW_GROUP))
    {
        let ss = row_sums(xs, xs, d, |a, _, _| a * a);
        for (((xr, yr), r), ss) in xs.chunks_exact(d).zip(ys.chunks_exact_mut(d)).zip(rs).zip(ss) {
            *r = rmsnorm_row(xr, gain, eps, ss, yr);
        }
    }
    for ((xr, yr), r) in xt.chunks_exact(d).zip(yt.chunks_exact_mut(d)).zip(rt) {
        let ss = xr.iter().map(|v| v * v).sum();
        *r = rmsnorm_row(xr, gain, eps, ss, yr);
    }
}

/// One row of [`rmsnorm_fwd`] given its sum of squares `ss`; returns its `rstd`.
#[inline(always)]
fn rmsnorm_row(xr: &[f32], gain: &[f32], eps: f32, ss: f32, yr: &mut [f32]) -> f32 {
    let s = 1.0 / (ss / gain.len() as f32 + eps).sqrt();
    for ((yv, xv), gv) in yr.iter_mut().zip(xr).zip(gain) {
        *yv = xv * s * gv;
    }
    s
}

/// `sum_j f(a[r][j], b[r][j], j)` for each of the [`ROW_GROUP`] rows of
/// width `d` in `a` and `b`, each row one chain in column order from 0.
#[inline(always)]
fn row_sums(a: &[f32], b: &[f32], d: usize, f: impl Fn(f32, f32, usize) -> f32) -> [f32; ROW_GROUP] {
    let ra: [&[f32]; ROW_GROUP] = std::array::from_fn(|k| &a[k * d..(k + 1) * d]);
    let rb: [&[f32]; ROW_GROUP] = std::array::from_fn(|k| &b[k * d..(k + 1) * d]);
    let mut acc = [0f32; ROW_GROUP];
    for j in 0..d {
        for k in 0..ROW_GROUP {
            acc[k] += f(ra[k][j], rb[k][j], j);
        }
    }
    acc
}

avx512_where_available! {
    /// Backward of [`rmsnorm_fwd`]: writes `dx` (rows x d) and *adds* the gain
    /// gradient into `dgain` (d), row after row, so row blocks can be reduced
    /// in a fixed order. Its per-row sums run [`ROW_GROUP`] rows side by side too.
    pub fn rmsnorm_bwd(x: &[f32], gain: &[f32], eps: f32, dy: &[f32], dx: &mut [f32], dgain: &mut [f32]) => rmsnorm_bwd_body
}

#[inline(always)]
fn rmsnorm_bwd_body(x: &[f32], gain: &[f32], eps: f32, dy: &[f32], dx: &mut [f32], dgain: &mut [f32]) {
    let d = gain.len();
    let rows = x.len() / d;
    let grouped = (rows - rows % ROW_GROUP) * d;
    let groups = x[..grouped].chunks_exact(ROW_GROUP * d).zip(dy[..grouped].chunks_exact(ROW_GROUP * d));
    for ((xs, dys), dxs) in groups.zip(dx[..grouped].chunks_exact_mut(ROW_GROUP * d)) {
        let ss = row_sums(xs, xs, d, |a, _, _| a * a);
        // dot = sum_j dy_j * g_j * x_j
        let dots = row_sums(dys, xs, d, |dy, x, j| dy * gain[j] * x);
        for (k, (xr, (dyr, dxr))) in
            xs.chunks_exact(d).zip(dys.chunks_exact(d).zip(dxs.chunks_exact_mut(d))).enumerate()
        {
            rmsnorm_bwd_row(xr, gain, eps, dyr, ss[k], dots[k], dxr, dgain);
        }
    }
    let rest = x[grouped..].chunks_exact(d).zip(dy[grouped..].chunks_exact(d));
    for ((xr, dyr), dxr) in rest.zip(dx[grouped..].chunks_exact_mut(d)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        // dot = sum_j dy_j * g_j * x_j
        let mut dot = 0.0f32;
        for ((dyv, gv), xv) in dyr.iter().zip(gain).zip(xr) {
            dot += dyv * gv * xv;
        }
        rmsnorm_bwd_row(xr, gain, eps, dyr, ss, dot, dxr, dgain);
    }
}

/// One row of [`rmsnorm_bwd`] given its sum of squares and `sum(dy * g * x)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rmsnorm_bwd_row(
    xr: &[f32],
    gain: &[f32],
    eps: f32,
    dyr: &[f32],
    ss: f32,
    dot: f32,
    dxr: &mut [f32],
    dgain: &mut [f32],
) {
    let d = gain.len();
    let s = 1.0 / (ss / d as f32 + eps).sqrt();
    let c = dot * s * s * s / d as f32;
    for (((dxv, dyv), gv), xv) in dxr.iter_mut().zip(dyr).zip(gain).zip(xr) {
        *dxv = dyv * gv * s - xv * c;
    }
    for ((dg, dyv), xv) in dgain.iter_mut().zip(dyr).zip(xr) {
        *dg += dyv * xv * s;
    }
}

/// Rows the causal softmax kernels work on side by side. Each row's max,
/// sum or dot product stays one chain in column order, as the row alone
/// would take it (so no bit changes), but eight independent chains keep the
/// core busy where a single chain waited out each add's latency.
const ROW_GROUP: usize = 8;

/// `f` folded over rows `i0..i0 + ROW_GROUP` of two causal `t x t` blocks
/// at once, each row's visible columns `0..=i` in order, starting from
/// `init`: what [`causal_softmax_fwd`] and [`causal_softmax_bwd`] reduce.
fn fold_rows(
    a: &[f32],
    b: &[f32],
    t: usize,
    i0: usize,
    init: f32,
    f: impl Fn(f32, f32, f32) -> f32,
) -> [f32; ROW_GROUP] {
    let span = |k: usize| (i0 + k) * t..(i0 + k) * t + i0 + k + 1;
    let ra: [&[f32]; ROW_GROUP] = std::array::from_fn(|k| &a[span(k)]);
    let rb: [&[f32]; ROW_GROUP] = std::array::from_fn(|k| &b[span(k)]);
    let mut acc = [init; ROW_GROUP];
    for j in 0..=i0 {
        for k in 0..ROW_GROUP {
            acc[k] = f(acc[k], ra[k][j], rb[k][j]);
        }
    }
    for k in 1..ROW_GROUP {
        for j in i0 + 1..=i0 + k {
            acc[k] = f(acc[k], ra[k][j], rb[k][j]);
        }
    }
    acc
}

/// Softmax over the last axis of `t x t` score blocks with a causal mask:
/// row `i` of each block only sees columns `0..=i`; masked entries become 0.
/// `scale` multiplies the scores first (the attention `1/sqrt(d_head)`).
/// Every row gets the bits [`softmax_row`] gives it.
pub fn causal_softmax_fwd(x: &[f32], t: usize, scale: f32, y: &mut [f32]) {
    let grouped = t - t % ROW_GROUP;
    for (xb, yb) in x.chunks_exact(t * t).zip(y.chunks_exact_mut(t * t)) {
        for i0 in (0..grouped).step_by(ROW_GROUP) {
            let max = fold_rows(xb, xb, t, i0, f32::NEG_INFINITY, |m, v, _| m.max(v * scale));
            for (k, m) in max.into_iter().enumerate() {
                let i = i0 + k;
                let (yr, rest) = yb[i * t..(i + 1) * t].split_at_mut(i + 1);
                for (yv, &xv) in yr.iter_mut().zip(&xb[i * t..i * t + i + 1]) {
                    *yv = xv * scale - m;
                }
                exp_in_place(yr);
                rest.fill(0.0);
            }
            let sum = fold_rows(yb, yb, t, i0, 0.0, |s, e, _| s + e);
            for (k, sum) in sum.into_iter().enumerate() {
                let i = i0 + k;
                let inv = 1.0 / sum;
                for yv in yb[i * t..i * t + i + 1].iter_mut() {
                    *yv *= inv;
                }
            }
        }
        for i in grouped..t {
            let (yr, rest) = yb[i * t..(i + 1) * t].split_at_mut(i + 1);
            softmax_row(&xb[i * t..i * t + i + 1], scale, yr);
            rest.fill(0.0);
        }
    }
}

/// Softmax of `scale * x` into `y` (same length): one visible row of
/// [`causal_softmax_fwd`], with the same bits, and the engine's decoding
/// softmax, so equal scores give equal weights on both paths.
pub fn softmax_row(x: &[f32], scale: f32, y: &mut [f32]) {
    let mut m = f32::NEG_INFINITY;
    for &v in x {
        m = m.max(v * scale);
    }
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv = xv * scale - m;
    }
    exp_in_place(y);
    let mut sum = 0.0f32;
    for &e in y.iter() {
        sum += e;
    }
    let inv = 1.0 / sum;
    for yv in y.iter_mut() {
        *yv *= inv;
    }
}

/// Backward of [`causal_softmax_fwd`] from its output `y`:
/// `dx = scale * y * (dy - sum(dy * y))` on the visible part, 0 elsewhere.
pub fn causal_softmax_bwd(y: &[f32], dy: &[f32], t: usize, scale: f32, dx: &mut [f32]) {
    let grouped = t - t % ROW_GROUP;
    for ((yb, dyb), dxb) in y.chunks_exact(t * t).zip(dy.chunks_exact(t * t)).zip(dx.chunks_exact_mut(t * t)) {
        let mut dots = [0f32; ROW_GROUP];
        for i in 0..t {
            let (k, group) = (i % ROW_GROUP, i - i % ROW_GROUP);
            if k == 0 && i < grouped {
                dots = fold_rows(yb, dyb, t, group, 0.0, |d, a, b| d + a * b);
            }
            let yr = &yb[i * t..i * t + i + 1];
            let dyr = &dyb[i * t..i * t + i + 1];
            let (dxr, rest) = dxb[i * t..(i + 1) * t].split_at_mut(i + 1);
            let dot = if i < grouped {
                dots[k]
            } else {
                let mut dot = 0.0f32;
                for (a, b) in yr.iter().zip(dyr) {
                    dot += a * b;
                }
                dot
            };
            for ((dxv, yv), dyv) in dxr.iter_mut().zip(yr).zip(dyr) {
                *dxv = scale * yv * (dyv - dot);
            }
            rest.fill(0.0);
        }
    }
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2 / pi)
const GELU_A: f32 = 0.044_715;

/// Elements of one GELU step: the `exp` arguments of a chunk live on the stack.
const GELU_CHUNK: usize = 256;

avx512_where_available! {
    /// GELU, tanh approximation (the GPT-2 / PyTorch `approximate="tanh"` form).
    pub fn gelu_fwd(x: &[f32], y: &mut [f32]) => gelu_fwd_body
}

#[inline(always)]
fn gelu_fwd_body(x: &[f32], y: &mut [f32]) {
    let mut e = [0f32; GELU_CHUNK];
    for (xc, yc) in x.chunks(GELU_CHUNK).zip(y.chunks_mut(GELU_CHUNK)) {
        let e = tanh_exps(xc, &mut e);
        for ((yv, &xv), &ev) in yc.iter_mut().zip(xc).zip(e.iter()) {
            *yv = gelu_from_exp(xv, ev);
        }
    }
}

avx512_where_available! {
    /// [`gelu_fwd`] over `x` in place, with the same bits: for a buffer that
    /// holds the input until the output replaces it (the experts' backward
    /// turns the kept GELU input into its output this way).
    pub fn gelu_fwd_in_place(x: &mut [f32]) => gelu_fwd_in_place_body
}

#[inline(always)]
fn gelu_fwd_in_place_body(x: &mut [f32]) {
    let mut e = [0f32; GELU_CHUNK];
    for xc in x.chunks_mut(GELU_CHUNK) {
        let e = tanh_exps(xc, &mut e);
        for (xv, &ev) in xc.iter_mut().zip(e.iter()) {
            *xv = gelu_from_exp(*xv, ev);
        }
    }
}

/// GELU of `x` from `e`, its [`tanh_exps`] entry: one expression for both
/// forward kernels, so they agree bit for bit.
#[inline(always)]
fn gelu_from_exp(x: f32, e: f32) -> f32 {
    0.5 * x * (1.0 + tanh_from_exp(e))
}

avx512_where_available! {
    /// Backward of [`gelu_fwd`]: `dx = dy * gelu'(x)`.
    pub fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) => gelu_bwd_body
}

#[inline(always)]
fn gelu_bwd_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let mut e = [0f32; GELU_CHUNK];
    for ((xc, dyc), dxc) in x.chunks(GELU_CHUNK).zip(dy.chunks(GELU_CHUNK)).zip(dx.chunks_mut(GELU_CHUNK)) {
        let e = tanh_exps(xc, &mut e);
        for (((dxv, &xv), &dyv), &ev) in dxc.iter_mut().zip(xc).zip(dyc).zip(e.iter()) {
            let th = tanh_from_exp(ev);
            let du = GELU_C * (1.0 + 3.0 * GELU_A * xv * xv);
            *dxv = dyv * (0.5 * (1.0 + th) + 0.5 * xv * (1.0 - th * th) * du);
        }
    }
}

/// `exp(2u)` for the tanh of each `x` of a chunk (`u` the GELU's inner
/// argument, clamped to +-15), into the front of `buf`, all at once so the
/// `exp` runs vectorised.
fn tanh_exps<'a>(xc: &[f32], buf: &'a mut [f32; GELU_CHUNK]) -> &'a [f32] {
    let e = &mut buf[..xc.len()];
    for (ev, &xv) in e.iter_mut().zip(xc) {
        let u = GELU_C * (xv + GELU_A * xv * xv * xv);
        *ev = 2.0 * u.clamp(-15.0, 15.0);
    }
    exp_in_place(e);
    e
}

/// tanh(u) from `e = exp(2u)`: accurate to a few ulps in f32 for the
/// clamped `u` of [`tanh_exps`].
#[inline(always)]
fn tanh_from_exp(e: f32) -> f32 {
    (e - 1.0) / (e + 1.0)
}

/// Cross-entropy of `rows x v` logits against integer targets: writes the
/// per-row negative log-likelihood `logsumexp(row) - row[target]`.
pub fn cross_entropy_fwd(logits: &[f32], targets: &[u32], v: usize, nll: &mut [f32]) {
    for ((row, &t), out) in logits.chunks_exact(v).zip(targets).zip(nll.iter_mut()) {
        *out = logsumexp(row) - row[t as usize];
    }
}

/// Backward of [`cross_entropy_fwd`]: `dlogits = g_row * (softmax(row) - onehot(target))`.
pub fn cross_entropy_bwd(logits: &[f32], targets: &[u32], g: &[f32], v: usize, dlogits: &mut [f32]) {
    for (((row, &t), &gr), drow) in logits.chunks_exact(v).zip(targets).zip(g).zip(dlogits.chunks_exact_mut(v)) {
        let lse = logsumexp(row);
        for (d, &x) in drow.iter_mut().zip(row) {
            *d = x - lse;
        }
        exp_in_place(drow);
        for d in drow.iter_mut() {
            *d *= gr;
        }
        drow[t as usize] -= gr;
    }
}

/// Elements of one [`logsumexp`] step (its `exp` arguments live on the stack).
const LSE_CHUNK: usize = 256;

/// Numerically stable `log(sum(exp(row)))`.
pub fn logsumexp(row: &[f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    let mut buf = [0f32; LSE_CHUNK];
    let mut s = 0.0f32;
    for c in row.chunks(LSE_CHUNK) {
        let e = &mut buf[..c.len()];
        for (ev, &x) in e.iter_mut().zip(c) {
            *ev = x - m;
        }
        exp_in_place(e);
        for &ev in e.iter() {
            s += ev;
        }
    }
    m + s.ln()
}

/// Hyper-parameters of one AdamW update (decoupled weight decay, PyTorch's form).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

avx512_where_available! {
    /// One AdamW step in place; `step` counts from 1 (bias correction).
    /// `grad_scale` multiplies the gradient first (gradient clipping).
    pub fn adamw_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, step: u32, grad_scale: f32) => adamw_step_body
}

#[inline(always)]
fn adamw_step_body(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, step: u32, grad_scale: f32) {
    let bc1 = 1.0 - h.beta1.powi(step as i32);
    let bc2 = 1.0 - h.beta2.powi(step as i32);
    let decay = 1.0 - h.lr * h.weight_decay;
    for (((pv, &gv), mv), vv) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let gv = gv * grad_scale;
        *mv = h.beta1 * *mv + (1.0 - h.beta1) * gv;
        *vv = h.beta2 * *vv + (1.0 - h.beta2) * gv * gv;
        let mhat = *mv / bc1;
        let vhat = *vv / bc2;
        *pv = *pv * decay - h.lr * mhat / (vhat.sqrt() + h.eps);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn data(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic, no dependency.
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!((x as f64 - y).abs() <= tol * (1.0 + y.abs()), "index {i}: kernel {x} vs reference {y}");
        }
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    #[test]
    fn rmsnorm_matches_the_reference_forward_and_backward() {
        let (rows, d) = (5, 12);
        let x = data(rows * d, 1);
        let g = data(d, 2);
        let dy = data(rows * d, 3);
        let mut y = vec![0.0; rows * d];
        let mut rstd = vec![0.0; rows];
        rmsnorm_fwd(&x, &g, 1e-5, &mut y, &mut rstd);
        close(&y, &reference::rmsnorm_fwd(&f64s(&x), &f64s(&g), 1e-5), 1e-5);
        let mut dx = vec![0.0; rows * d];
        let mut dg = vec![0.0; d];
        rmsnorm_bwd(&x, &g, 1e-5, &dy, &mut dx, &mut dg);
        let (rdx, rdg) = reference::rmsnorm_bwd(&f64s(&x), &f64s(&g), 1e-5, &f64s(&dy));
        close(&dx, &rdx, 1e-5);
        close(&dg, &rdg, 1e-5);
    }

    #[test]
    fn causal_softmax_matches_the_reference_forward_and_backward() {
        let (b, t) = (3, 7);
        let x = data(b * t * t, 4);
        let dy = data(b * t * t, 5);
        let mut y = vec![0.0; b * t * t];
        causal_softmax_fwd(&x, t, 0.5, &mut y);
        let ry = reference::causal_softmax_fwd(&f64s(&x), t, 0.5);
        close(&y, &ry, 1e-6);
        let mut dx = vec![0.0; b * t * t];
        causal_softmax_bwd(&y, &dy, t, 0.5, &mut dx);
        close(&dx, &reference::causal_softmax_bwd(&ry, &f64s(&dy), t, 0.5), 1e-5);
    }

    /// RMSNorm's grouped rows get the bits of rows taken one at a time (a
    /// call of one row each), forward and backward, the gain gradient's
    /// row-by-row sum included.
    #[test]
    fn grouped_rmsnorm_rows_equal_rows_taken_one_at_a_time() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (rows, d) in [(8, 16), (19, 128), (3, 5), (64, 256)] {
            let (x, g, dy) = (data(rows * d, 21), data(d, 22), data(rows * d, 23));
            let (mut y, mut rstd) = (vec![0.0; rows * d], vec![0.0; rows]);
            rmsnorm_fwd(&x, &g, 1e-5, &mut y, &mut rstd);
            let (mut dx, mut dg) = (vec![0.0; rows * d], vec![0.0; d]);
            rmsnorm_bwd(&x, &g, 1e-5, &dy, &mut dx, &mut dg);
            let (mut y1, mut r1, mut dx1, mut dg1) =
                (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows * d], vec![0.0; d]);
            for r in 0..rows {
                let row = r * d..(r + 1) * d;
                rmsnorm_fwd(&x[row.clone()], &g, 1e-5, &mut y1[row.clone()], &mut r1[r..r + 1]);
                rmsnorm_bwd(&x[row.clone()], &g, 1e-5, &dy[row.clone()], &mut dx1[row], &mut dg1);
            }
            assert_eq!(bits(&y), bits(&y1), "forward, {rows} x {d}");
            assert_eq!(bits(&rstd), bits(&r1), "rstd, {rows} x {d}");
            assert_eq!(bits(&dx), bits(&dx1), "dx, {rows} x {d}");
            assert_eq!(bits(&dg), bits(&dg1), "dgain, {rows} x {d}");
        }
    }

    /// The kernels that reduce eight rows side by side give each row the
    /// bits of that row reduced alone (the remainder rows included).
    #[test]
    fn grouped_causal_softmax_rows_equal_rows_taken_one_at_a_time() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for t in [1, 7, 8, 32, 37] {
            let (x, dy) = (data(2 * t * t, 11), data(2 * t * t, 12));
            let mut y = vec![0.0; 2 * t * t];
            causal_softmax_fwd(&x, t, 0.3, &mut y);
            let mut want = vec![0.0; 2 * t * t];
            for (xb, wb) in x.chunks_exact(t * t).zip(want.chunks_exact_mut(t * t)) {
                for i in 0..t {
                    softmax_row(&xb[i * t..i * t + i + 1], 0.3, &mut wb[i * t..i * t + i + 1]);
                }
            }
            assert_eq!(bits(&y), bits(&want), "forward, t {t}");
            let mut dx = vec![0.0; 2 * t * t];
            causal_softmax_bwd(&y, &dy, t, 0.3, &mut dx);
            let mut want = vec![0.0; 2 * t * t];
            for r in 0..2 * t {
                let i = r % t;
                let (yr, dyr) = (&y[r * t..r * t + i + 1], &dy[r * t..r * t + i + 1]);
                let mut dot = 0.0f32;
                for (a, b) in yr.iter().zip(dyr) {
                    dot += a * b;
                }
                for j in 0..=i {
                    want[r * t + j] = 0.3 * yr[j] * (dyr[j] - dot);
                }
            }
            assert_eq!(bits(&dx), bits(&want), "backward, t {t}");
        }
    }

    #[test]
    fn gelu_matches_the_reference_forward_and_backward() {
        let mut x = data(200, 6);
        x.extend([-30.0, -8.0, 0.0, 8.0, 30.0]);
        let dy = data(x.len(), 7);
        let mut y = vec![0.0; x.len()];
        gelu_fwd(&x, &mut y);
        close(&y, &reference::gelu_fwd(&f64s(&x)), 2e-6);
        let mut in_place = x.clone();
        gelu_fwd_in_place(&mut in_place);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&in_place), bits(&y), "in place, the same bits");
        let mut dx = vec![0.0; x.len()];
        gelu_bwd(&x, &dy, &mut dx);
        close(&dx, &reference::gelu_bwd(&f64s(&x), &f64s(&dy)), 2e-6);
    }

    #[test]
    fn cross_entropy_matches_the_reference_forward_and_backward() {
        let (rows, v) = (4, 9);
        let x = data(rows * v, 8);
        let t = [0u32, 8, 3, 3];
        let g = [0.25f32, 0.5, 1.0, -1.0];
        let mut nll = vec![0.0; rows];
        cross_entropy_fwd(&x, &t, v, &mut nll);
        close(&nll, &reference::cross_entropy_fwd(&f64s(&x), &t, v), 1e-6);
        let mut d = vec![0.0; rows * v];
        cross_entropy_bwd(&x, &t, &g, v, &mut d);
        close(&d, &reference::cross_entropy_bwd(&f64s(&x), &t, &f64s(&g), v), 1e-6);
    }

    #[test]
    fn adamw_matches_the_reference_over_three_steps() {
        let h = AdamW { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        let mut p = data(16, 9);
        let (mut m, mut v) = (vec![0.0; 16], vec![0.0; 16]);
        let mut rp = f64s(&p);
        let (mut rm, mut rv) = (vec![0.0; 16], vec![0.0; 16]);
        for step in 1..=3 {
            let g = data(16, 10 + step);
            adamw_step(&mut p, &g, &mut m, &mut v, &h, step, 0.5);
            reference::adamw_step(&mut rp, &f64s(&g), &mut rm, &mut rv, &h, step, 0.5);
        }
        close(&p, &rp, 1e-5);
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr_times_sign_of_gradient() {
        // Hand-computed: with m = v = 0, step 1 gives mhat / sqrt(vhat) = sign(g).
        let h = AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 0.0, weight_decay: 0.0 };
        let mut p = vec![1.0f32, 1.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        adamw_step(&mut p, &[3.0, -0.5], &mut m, &mut v, &h, 1, 1.0);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6, "{p:?}");
    }
}
