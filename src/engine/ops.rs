//! Differentiable building blocks: fused CPU custom ops with their own
//! backward (wrapping `kernels`), and plain candle compositions of the same
//! maths, used on other devices and as the gradient oracle in tests.
//!
//! Why custom ops: candle-nn's fused `rms_norm` / `softmax_last_dim` have no
//! backward (gradients silently zero), and compositions of small element-wise
//! ops allocate a tensor per op. Why [`frozen_matmul`]: candle's matmul
//! backward always computes the weight gradient, even for a constant; for a
//! norm-only or LoRA fine-tune that is wasted work. Why [`linear`]: candle's
//! matmul backward computes a weight's gradient after the input's, on
//! threads that it leaves idle; [`linear`] runs the two side by side.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};
use kernels::ternary::{self, Ternary};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::strided::{
    Mat, MatMut, Unwritten, chain_into, chunks_written, chunks_written_with, gemm_into, narrow_chain_fits, row_blocks,
    weight_gradient_blocks, zeroed,
};

/// Rows handed to one rayon task. Fixed (not derived from the thread count)
/// so reductions happen in the same order whatever the pool size.
const ROWS_PER_TASK: usize = 64;

/// The f32 elements of a contiguous CPU tensor's storage; `what` names it in errors.
pub(super) fn f32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: expected f32 storage") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

fn u32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [u32]> {
    let CpuStorage::U32(v) = s else { candle_core::bail!("{what}: expected u32 storage") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

fn use_fused(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Run `f` on a rayon pool of `threads` threads (0: the global pool), so a
/// run's parallelism, and with it its bits, is fixed by its configuration.
///
/// The pools are built once per thread count and kept for the process:
/// building one per call started fresh threads for every evaluation, whose
/// allocator heaps then began empty (fresh pages, each zeroed by the kernel).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    if threads == 0 {
        return f();
    }
    match pool(threads) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// The process's rayon pool of `threads` threads, built on first use; `None`
/// when the OS refuses the threads.
fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>> = Mutex::new(BTreeMap::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Some(p.clone());
    }
    let p = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok()?);
    pools.insert(threads, p.clone());
    Some(p)
}

/// What a custom op's forward keeps for its backward (activations it would
/// otherwise recompute): kept only when a backward can follow, that is when
/// an input is tracked, and taken once, by the backward or the op it hands
/// them to.
pub(super) struct Stash<T> {
    keep: bool,
    slot: Mutex<Option<T>>,
}

impl<T> Stash<T> {
    /// An empty stash that keeps what it is given when any of `inputs` is tracked.
    pub(super) fn for_inputs(inputs: &[&Tensor]) -> Stash<T> {
        Stash { keep: inputs.iter().any(|t| t.track_op()), slot: Mutex::new(None) }
    }

    /// A stash that keeps nothing: the backward recomputes what it needs.
    pub(super) fn never() -> Stash<T> {
        Stash { keep: false, slot: Mutex::new(None) }
    }

    /// A stash holding `value` (an op's backward handing its forward's activations on).
    pub(super) fn holding(value: Option<T>) -> Stash<T> {
        Stash { keep: true, slot: Mutex::new(value) }
    }

    /// Whether [`Stash::put`] keeps anything: the forward need not build it otherwise.
    pub(super) fn keeps(&self) -> bool {
        self.keep
    }

    /// Keep `value` (dropped at once when the stash does not keep).
    pub(super) fn put(&self, value: T) {
        if self.keep {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        }
    }

    /// What was kept, once; `None` afterwards (a second backward recomputes).
    pub(super) fn take(&self) -> Option<T> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

// ---------------------------------------------------------------- RMSNorm

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "bets-rmsnorm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "rmsnorm x")?;
        let g = f32s(s2, l2, "rmsnorm gain")?;
        let d = g.len();
        let rows = d * ROWS_PER_TASK;
        let y = chunks_written(x.len(), rows, |i, yc| {
            let xc = &x[i * rows..i * rows + yc.len()];
            let mut r = vec![0f32; xc.len() / d];
            kernels::rmsnorm_fwd(xc, g, self.eps, yc, &mut r);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, g: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.elem_count();
        let d = g.elem_count();
        let packed = x.apply_op3_no_bwd(g, &dy.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dg = packed.narrow(0, n, d)?.reshape(g.shape())?;
        Ok((Some(dx), Some(dg)))
    }
}

/// Backward of [`RmsNorm`]: one flat output `[dx (n) | dgain (d)]`.
struct RmsNormBwd {
    eps: f32,
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "bets-rmsnorm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "rmsnorm x")?;
        let g = f32s(s2, l2, "rmsnorm gain")?;
        let dy = f32s(s3, l3, "rmsnorm dy")?;
        let (n, d) = (x.len(), g.len());
        let rows = d * ROWS_PER_TASK;
        // dx chunk by chunk, the last chunk also holding the gain's gradient
        // (zeros there), which is then the sum of the chunks' parts, in order.
        let (mut out, partial) = chunks_written_with(n + d, rows, |i, dxc| {
            let at = i * rows;
            let dxc = &mut dxc[..rows.min(n.saturating_sub(at))];
            if dxc.is_empty() {
                return None; // a chunk of the gain's gradient alone
            }
            let mut dgc = vec![0f32; d];
            kernels::rmsnorm_bwd(&x[at..at + dxc.len()], g, self.eps, &dy[at..at + dxc.len()], dxc, &mut dgc);
            Some(dgc)
        });
        let dg = &mut out[n..];
        for p in partial.into_iter().flatten() {
            for (a, b) in dg.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + d)))
    }
}

/// RMSNorm over the last axis with a gain and no bias: `x / rms(x) * gain`.
pub fn rms_norm(x: &Tensor, gain: &Tensor, eps: f32) -> Result<Tensor> {
    if use_fused(x) { x.contiguous()?.apply_op2(gain, RmsNorm { eps }) } else { rms_norm_plain(x, gain, eps) }
}

/// [`rms_norm`] from candle's differentiable element-wise ops.
pub fn rms_norm_plain(x: &Tensor, gain: &Tensor, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (ms + eps as f64)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(gain)
}

// ---------------------------------------------------------- causal softmax

struct CausalSoftmax {
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "bets-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "causal softmax")?;
        let t = l.dims()[l.dims().len() - 1];
        let mut y = zeroed(x.len());
        y.par_chunks_mut(t * t).zip(x.par_chunks(t * t)).for_each(|(yc, xc)| {
            kernels::causal_softmax_fwd(xc, t, self.scale, yc);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &CausalSoftmaxBwd { scale: self.scale })?))
    }
}

struct CausalSoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxBwd {
    fn name(&self) -> &'static str {
        "bets-causal-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = f32s(s1, l1, "causal softmax y")?;
        let dy = f32s(s2, l2, "causal softmax dy")?;
        let t = l1.dims()[l1.dims().len() - 1];
        let mut dx = zeroed(y.len());
        dx.par_chunks_mut(t * t).zip(y.par_chunks(t * t).zip(dy.par_chunks(t * t))).for_each(|(o, (a, b))| {
            kernels::causal_softmax_bwd(a, b, t, self.scale, o);
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax of `scale * scores` over the last axis of `[.., T, T]` blocks,
/// with row `i` seeing columns `0..=i` only (masked weights are exactly 0).
pub fn causal_softmax(scores: &Tensor, scale: f32) -> Result<Tensor> {
    if use_fused(scores) {
        scores.contiguous()?.apply_op1(CausalSoftmax { scale })
    } else {
        causal_softmax_plain(scores, scale)
    }
}

/// [`causal_softmax`] from candle's differentiable ops (mask with -inf, softmax).
pub fn causal_softmax_plain(scores: &Tensor, scale: f32) -> Result<Tensor> {
    let t = scores.dim(D::Minus1)?;
    let mask: Vec<f32> = (0..t * t).map(|k| if k % t <= k / t { 0.0 } else { f32::NEG_INFINITY }).collect();
    let mask = Tensor::from_vec(mask, (t, t), scores.device())?;
    let s = (scores * scale as f64)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax(&s, D::Minus1)
}

/// Forward-only causal softmax of `[.., Tq, Tk]` score blocks whose `Tq`
/// query rows are the last `Tq` of `Tk` positions (decoding with a KV cache).
struct CausalSoftmaxOffset {
    scale: f32,
}

impl CustomOp1 for CausalSoftmaxOffset {
    fn name(&self) -> &'static str {
        "bets-causal-softmax-offset"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "causal softmax")?;
        let dims = l.dims();
        let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if tq > tk {
            candle_core::bail!("causal softmax: {tq} query rows but only {tk} key columns");
        }
        let mut y = zeroed(x.len());
        y.par_chunks_mut(tq * tk).zip(x.par_chunks(tq * tk)).for_each(|(yb, xb)| {
            for i in 0..tq {
                // The row kernel of `kernels::causal_softmax_fwd`, so equal
                // scores give equal weights.
                let seen = tk - tq + i + 1;
                let (yr, rest) = yb[i * tk..(i + 1) * tk].split_at_mut(seen);
                kernels::softmax_row(&xb[i * tk..i * tk + seen], self.scale, yr);
                rest.fill(0.0);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// Softmax of `scale * scores` over `[.., Tq, Tk]` blocks where query row
/// `i` is position `Tk - Tq + i` and sees columns `0..=Tk - Tq + i`: the
/// attention of new tokens over a KV cache plus themselves. Inference only
/// (no backward); with `Tq == Tk` it is [`causal_softmax`].
pub fn causal_softmax_offset(scores: &Tensor, scale: f32) -> Result<Tensor> {
    if use_fused(scores) {
        scores.contiguous()?.apply_op1_no_bwd(&CausalSoftmaxOffset { scale })
    } else {
        causal_softmax_offset_plain(scores, scale)
    }
}

/// [`causal_softmax_offset`] from candle's ops (mask with -inf, softmax).
pub fn causal_softmax_offset_plain(scores: &Tensor, scale: f32) -> Result<Tensor> {
    let (tq, tk) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    if tq > tk {
        candle_core::bail!("causal softmax: {tq} query rows but only {tk} key columns");
    }
    let mask: Vec<f32> =
        (0..tq * tk).map(|k| if k % tk <= tk - tq + k / tk { 0.0 } else { f32::NEG_INFINITY }).collect();
    let mask = Tensor::from_vec(mask, (tq, tk), scores.device())?;
    let s = (scores * scale as f64)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax(&s, D::Minus1)
}

// -------------------------------------------------------------------- GELU

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "bets-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "gelu")?;
        let y = chunks_written(x.len(), 4096, |i, yc| kernels::gelu_fwd(&x[i * 4096..i * 4096 + yc.len()], yc));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluBwd)?))
    }
}

struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "bets-gelu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "gelu x")?;
        let dy = f32s(s2, l2, "gelu dy")?;
        let dx = chunks_written(x.len(), 4096, |i, o| {
            let at = i * 4096..i * 4096 + o.len();
            kernels::gelu_bwd(&x[at.clone()], &dy[at], o)
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// GELU (tanh approximation).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) { x.contiguous()?.apply_op1(Gelu) } else { gelu_plain(x) }
}

/// [`gelu`] from candle's differentiable ops.
pub fn gelu_plain(x: &Tensor) -> Result<Tensor> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let u = ((x + (x.powf(3.0)? * 0.044715)?)? * c)?;
    ((u.tanh()? + 1.0)? * 0.5)?.mul(x)
}

// ----------------------------------------------------------- cross-entropy

struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "bets-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "cross-entropy logits")?;
        let t = u32s(s2, l2, "cross-entropy targets")?;
        let v = l1.dims()[1];
        if let Some(bad) = t.iter().find(|&&k| k as usize >= v) {
            candle_core::bail!("cross-entropy: target {bad} out of range {v}");
        }
        let nll = chunks_written(t.len(), ROWS_PER_TASK, |i, o| {
            let rows = i * ROWS_PER_TASK..i * ROWS_PER_TASK + o.len();
            kernels::cross_entropy_fwd(&x[rows.start * v..rows.end * v], &t[rows], v, o)
        });
        Ok((CpuStorage::F32(nll), Shape::from(t.len())))
    }

    fn bwd(&self, x: &Tensor, t: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(x.apply_op3_no_bwd(t, &g.contiguous()?, &CrossEntropyBwd)?), None))
    }
}

struct CrossEntropyBwd;

impl CustomOp3 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "bets-cross-entropy-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "cross-entropy logits")?;
        let t = u32s(s2, l2, "cross-entropy targets")?;
        let g = f32s(s3, l3, "cross-entropy grad")?;
        let v = l1.dims()[1];
        let dx = chunks_written(x.len(), v * ROWS_PER_TASK, |i, o| {
            let rows = i * ROWS_PER_TASK..i * ROWS_PER_TASK + o.len() / v;
            kernels::cross_entropy_bwd(&x[rows.start * v..rows.end * v], &t[rows.clone()], &g[rows], v, o)
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Per-row negative log-likelihood of `targets` (u32, `[N]`) under `logits` (`[N, V]`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if use_fused(logits) {
        logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)
    } else {
        cross_entropy_plain(logits, targets)
    }
}

/// [`cross_entropy`] from candle's differentiable ops.
pub fn cross_entropy_plain(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    lsm.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

// ------------------------------------------------------------------ linear

/// `x [m, k] @ w [k, n]` as candle's CPU matmul computes it, for the linear
/// ops below: the same gemm call, or for a narrow product
/// ([`narrow_chain_fits`]) the chain kernel, with the same bits; `what`
/// names the op in errors.
fn matmul_2d(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, what: &str) -> Result<(CpuStorage, Shape)> {
    let (m, k) = l1.shape().dims2()?;
    let (k2, n) = l2.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("{what}: inner dimensions {k} and {k2} differ");
    }
    let contiguous_f32 = |s: &CpuStorage, l: &Layout| matches!(s, CpuStorage::F32(_)) && l.is_contiguous();
    if narrow_chain_fits(m, n, k) && contiguous_f32(s1, l1) && contiguous_f32(s2, l2) {
        let (x, w) = (f32s(s1, l1, what)?, f32s(s2, l2, what)?);
        let mut y = Unwritten::new(m * n);
        let out = y.ptr();
        row_blocks(m, NARROW_ROWS).collect::<Vec<_>>().into_par_iter().for_each(|(r0, r1)| {
            // SAFETY: rows r0..r1 of the output are this task's; the operands
            // are contiguous `[m, k]` and `[k, n]`.
            unsafe {
                let dst = MatMut(out.ptr().add(r0 * n), n as isize, 1);
                chain_into(
                    r1 - r0,
                    n,
                    k,
                    dst,
                    Mat(x.as_ptr().add(r0 * k), k as isize, 1),
                    Mat(w.as_ptr(), n as isize, 1),
                );
            }
        });
        // SAFETY: the row blocks cover all `m` rows and the chain kernel writes every element.
        return Ok((CpuStorage::F32(unsafe { y.written() }), Shape::from((m, n))));
    }
    let out = s1.matmul(s2, (1, m, n, k), l1, l2)?;
    Ok((out, Shape::from((m, n))))
}

/// Rows per task of a narrow product in [`matmul_2d`].
const NARROW_ROWS: usize = 256;

/// A trained weight's product `x [N, in] @ w [in, out]`, with both
/// gradients computed side by side.
///
/// Why: candle's matmul backward computes `dx = dy w^T` and then
/// `dw = x^T dy`, one after the other. `dw` is a small output (`in x out`,
/// 128 x 128 at `small`) over a long inner dimension (the batch's tokens),
/// and gemm left one of two threads idle through much of it: in a profile
/// of training at `small`, the backward's matmuls were the largest share of
/// the time the graph's thread worked alone. Here `dw` runs beside `dx`, cut
/// into row blocks ([`WeightGradient`]).
struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "bets-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        matmul_2d(s1, l1, s2, l2, "linear")
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = linear_grads(x, w, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dx` and `dw` of `x @ w` from its output gradient `dy`: `dx` exactly as
/// candle's matmul backward computes it, `dw` beside it ([`WeightGradient`]).
fn linear_grads(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    if !x.is_contiguous() {
        return Ok((dy.matmul(&w.t()?)?, x.t()?.matmul(dy)?));
    }
    let (dx, dw) = rayon::join(|| dy.matmul(&w.t()?), || x.apply_op2_no_bwd(&dy.contiguous()?, &WeightGradient));
    Ok((dx?, dw?))
}

/// `x + y @ w`, a residual connection and the trained projection that
/// feeds it, as one op.
///
/// Why memory: composed, the projection's output is a tensor of its own
/// that the graph holds until the backward, though no gradient reads it
/// (8 MiB a layer at `paper`). Here the sum is written over the product.
/// The bits are the composition's: the product is [`Linear`]'s, each sum is
/// the same f32 addition, the gradient of `x` is the output's gradient
/// itself (as candle's add passes it on) and those of `y` and `w` are
/// [`Linear`]'s.
struct ResidualLinear;

impl CustomOp3 for ResidualLinear {
    fn name(&self) -> &'static str {
        "bets-residual-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, shape) = matmul_2d(s2, l2, s3, l3, "residual linear")?;
        if l1.shape() != &shape {
            candle_core::bail!("residual linear: residual {:?}, product {:?}", l1.dims(), shape.dims());
        }
        let x = f32s(s1, l1, "residual linear x")?;
        let CpuStorage::F32(mut sum) = out else { candle_core::bail!("residual linear: expected an f32 product") };
        sum.par_chunks_mut(ELEMENTWISE_CHUNK).zip(x.par_chunks(ELEMENTWISE_CHUNK)).for_each(|(s, x)| {
            for (s, &x) in s.iter_mut().zip(x) {
                // `x + s` as candle's add computes it: f32 addition is commutative, bit for bit.
                *s += x;
            }
        });
        Ok((CpuStorage::F32(sum), shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        y: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dy, dw) = linear_grads(y, w, dout)?;
        Ok((Some(dout.clone()), Some(dy), Some(dw)))
    }
}

/// `x + y * gate`: the mixture's expert outputs `y [N, d]`, each row
/// scaled by its router probability `gate [N, 1]`, added to the residual
/// stream `x [N, d]`, as one op.
///
/// Why memory: composed, the scaled outputs are a tensor of their own that
/// the graph holds until the backward (8 MiB a layer at `paper`), though
/// no gradient reads them. The forward computes each element as the
/// composition does (`x + (y * gate)`); the backward is the composition's
/// own candle ops on the output's gradient, so every gradient keeps its bits.
struct GatedResidual;

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "bets-gated-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, d) = l2.shape().dims2()?;
        if l1.shape().dims2()? != (n, d) || l3.shape().dims2()? != (n, 1) {
            candle_core::bail!(
                "gated residual: residual {:?}, outputs {:?}, gate {:?}; expected [N, d], [N, d], [N, 1]",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let (x, y, gate) =
            (f32s(s1, l1, "gated residual x")?, f32s(s2, l2, "gated residual y")?, f32s(s3, l3, "gate")?);
        let rows = (ELEMENTWISE_CHUNK / d.max(1)).max(1);
        let out = chunks_written(n * d, rows * d, |c, out| {
            let at = c * rows * d;
            for (i, out) in out.chunks_mut(d).enumerate() {
                let (x, y, g) = (&x[at + i * d..], &y[at + i * d..], gate[c * rows + i]);
                for ((o, &x), &y) in out.iter_mut().zip(x).zip(y) {
                    *o = x + y * g;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, d))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        y: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // As candle's backward of `x + y.broadcast_mul(gate)`: the add passes
        // the gradient on, the product's gives `dout * gate` to `y` and to
        // the broadcast `dout * y`, which sums its rows into a zero gradient.
        let dy = dout.broadcast_mul(gate)?;
        let dgate = gate.zeros_like()?.add(&dout.mul(y)?.sum_keepdim(1)?)?;
        Ok((Some(dout.clone()), Some(dy), Some(dgate)))
    }
}

/// `x + y * gate` for `x, y [N, d]` and `gate [N, 1]`: [`GatedResidual`] on
/// the CPU in f32, candle's ops elsewhere; the same bits either way.
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    if use_fused(y) && x.dtype() == DType::F32 && gate.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(&y.contiguous()?, &gate.contiguous()?, GatedResidual)
    } else {
        x + y.broadcast_mul(gate)?
    }
}

/// Elements per task of [`ResidualLinear`]'s sum: candle's own unit for
/// element-wise maps (vendored patch 3), large enough to amortise a task.
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

/// `dw [in, out] = x^T dy` from `x [N, in]` and `dy [N, out]`, both contiguous.
///
/// The bits are those of candle's `x.t().matmul(dy)`: the output's rows are
/// cut into [`weight_gradient_blocks`], each a single-threaded gemm call,
/// and gemm's result for an element does not depend on how the rows are cut
/// ([`super::strided`]).
struct WeightGradient;

impl CustomOp2 for WeightGradient {
    fn name(&self) -> &'static str {
        "bets-weight-gradient"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, din) = l1.shape().dims2()?;
        let (n2, dout) = l2.shape().dims2()?;
        if n != n2 {
            candle_core::bail!("weight gradient: x has {n} rows, dy {n2}");
        }
        let (x, dy) = (f32s(s1, l1, "weight gradient x")?, f32s(s2, l2, "weight gradient dy")?);
        let mut dw = Unwritten::new(din * dout);
        let out = dw.ptr();
        weight_gradient_blocks(din, dout).into_par_iter().for_each(|(r0, r1)| {
            // SAFETY: rows r0..r1 of `dw` are this task's alone; x's columns
            // r0..r1 (row stride 1, column stride `din`) are x^T's rows r0..r1.
            unsafe {
                let dst = MatMut(out.ptr().add(r0 * dout), dout as isize, 1);
                gemm_into(
                    r1 - r0,
                    dout,
                    n,
                    dst,
                    Mat(x.as_ptr().add(r0), 1, din as isize),
                    Mat(dy.as_ptr(), dout as isize, 1),
                );
            }
        });
        // SAFETY: the row blocks cover all `din` rows, and gemm writes every
        // element of its destination (zeros when `n` is 0).
        let dw = unsafe { dw.written() };
        Ok((CpuStorage::F32(dw), Shape::from((din, dout))))
    }
}

/// `x [N, in] @ w [in, out]` for a trained weight `w`: [`Linear`] on the
/// CPU in f32, candle's matmul elsewhere; the same bits either way.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if use_fused(x) && x.rank() == 2 { x.apply_op2(w, Linear) } else { x.matmul(w) }
}

/// `x + y [N, in] @ w [in, out]` for a trained weight `w`: [`ResidualLinear`]
/// on the CPU in f32, candle's add and [`linear`] elsewhere; the same bits either way.
pub fn residual_linear(x: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if use_fused(y) && y.rank() == 2 && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(y, w, ResidualLinear)
    } else {
        x + linear(y, w)?
    }
}

struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "bets-frozen-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        matmul_2d(s1, l1, s2, l2, "frozen matmul")
    }

    fn bwd(&self, _x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(dy.matmul(&w.t()?)?), None))
    }
}

/// `x [N, in] @ w [in, out]` whose backward returns no gradient for `w`:
/// the frozen-weight path that makes norm-only and LoRA fine-tunes cheaper.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if use_fused(x) { x.apply_op2(w, FrozenMatmul) } else { x.matmul(&w.detach()) }
}

// ----------------------------------------------------------- ternary linear

/// `x [N, in] -> [N, out]` through a packed ternary matrix.
struct TernaryLinear(Arc<Ternary>);

/// Output rows of one task when `x` has a single row (a decode step): the
/// matrix-vector product is split over output rows instead.
const OUT_ROWS_PER_TASK: usize = 256;

impl CustomOp1 for TernaryLinear {
    fn name(&self) -> &'static str {
        "bets-ternary-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = &self.0;
        let (n, k) = l.shape().dims2()?;
        if k != t.cols() {
            candle_core::bail!("ternary linear: input has {k} features, the matrix takes {}", t.cols());
        }
        let x = f32s(s, l, "ternary linear x")?;
        let (rows, path) = (t.rows(), ternary::Path::detect());
        let mut y = zeroed(n * rows);
        if n == 1 {
            y.par_chunks_mut(OUT_ROWS_PER_TASK).enumerate().for_each(|(i, yc)| {
                let start = i * OUT_ROWS_PER_TASK;
                ternary::gemm_rows_with(path, t, start..start + yc.len(), x, yc);
            });
        } else {
            y.par_chunks_mut(rows * ROWS_PER_TASK).zip(x.par_chunks(k * ROWS_PER_TASK)).for_each(|(yc, xc)| {
                ternary::gemm_with(path, t, xc, yc);
            });
        }
        Ok((CpuStorage::F32(y), Shape::from((n, rows))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&TernaryLinearT(self.0.clone()))?))
    }
}

/// The activation gradient of [`TernaryLinear`]: `dy [N, out] -> dx [N, in]`.
struct TernaryLinearT(Arc<Ternary>);

impl CustomOp1 for TernaryLinearT {
    fn name(&self) -> &'static str {
        "bets-ternary-linear-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = &self.0;
        let (n, rows) = l.shape().dims2()?;
        if rows != t.rows() {
            candle_core::bail!("ternary linear backward: gradient has {rows} features, the matrix gives {}", t.rows());
        }
        let dy = f32s(s, l, "ternary linear dy")?;
        let (k, path) = (t.cols(), ternary::Path::detect());
        let mut dx = zeroed(n * k);
        dx.par_chunks_mut(k * ROWS_PER_TASK).zip(dy.par_chunks(rows * ROWS_PER_TASK)).for_each(|(dxc, dyc)| {
            ternary::gemm_t_with(path, t, dyc, dxc);
        });
        Ok((CpuStorage::F32(dx), Shape::from((n, k))))
    }
}

/// `x [N, in]` through the packed ternary `t` (`[out, in]` rows times the
/// row scales): `[N, out]`. Its backward gives the gradient of `x` only,
/// the ternary weights being frozen. Off the CPU (or on other dtypes) the
/// matrix is dequantised and multiplied in float.
pub fn ternary_linear(x: &Tensor, t: &Arc<Ternary>) -> Result<Tensor> {
    if use_fused(x) {
        return x.contiguous()?.apply_op1(TernaryLinear(t.clone()));
    }
    let w = Tensor::from_vec(t.dequantize(), (t.rows(), t.cols()), x.device())?.to_dtype(x.dtype())?;
    x.matmul(&w.t()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A seeded `[-1, 1)` tensor (an LCG: no dependency on the model's RNG).
    pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The bits of every element of `t`: what the bit-for-bit tests compare.
    pub(crate) fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Gradients of `sum(f(x) * w)` through the fused and the plain op agree.
    fn check_grads(x: &Tensor, fused: impl Fn(&Tensor) -> Tensor, plain: impl Fn(&Tensor) -> Tensor, tol: f32) {
        let xv = Var::from_tensor(x).unwrap();
        let yf = fused(xv.as_tensor());
        let yp = plain(xv.as_tensor());
        assert!(max_diff(&yf, &yp) < tol, "forward differs by {}", max_diff(&yf, &yp));
        let w = rand(yf.dims(), 99);
        let gf = (yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (yp * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (gf.get(xv.as_tensor()).unwrap(), gp.get(xv.as_tensor()).unwrap());
        assert!(max_diff(a, b) < tol, "gradient differs by {}", max_diff(a, b));
    }

    #[test]
    fn fused_rmsnorm_gradients_match_the_plain_composition() {
        let x = rand(&[70, 16], 1);
        let g = Var::from_tensor(&(rand(&[16], 2) + 1.5).unwrap()).unwrap();
        check_grads(
            &x,
            |x| rms_norm(x, g.as_tensor(), 1e-5).unwrap(),
            |x| rms_norm_plain(x, g.as_tensor(), 1e-5).unwrap(),
            2e-5,
        );
        // and the gain gradient, with a part-filled last task of rows and with whole ones only
        for rows in [70, 128] {
            let x = rand(&[rows, 16], 3);
            let w = rand(&[rows, 16], 4);
            let gf = (rms_norm(&x, g.as_tensor(), 1e-5).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gp =
                (rms_norm_plain(&x, g.as_tensor(), 1e-5).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(max_diff(gf.get(g.as_tensor()).unwrap(), gp.get(g.as_tensor()).unwrap()) < 2e-5, "{rows} rows");
        }
    }

    #[test]
    fn fused_causal_softmax_gradients_match_the_plain_composition() {
        let x = rand(&[2, 3, 9, 9], 5);
        check_grads(&x, |x| causal_softmax(x, 0.7).unwrap(), |x| causal_softmax_plain(x, 0.7).unwrap(), 2e-6);
    }

    #[test]
    fn offset_causal_softmax_equals_the_last_rows_of_the_square_one_bit_for_bit() {
        let x = rand(&[2, 3, 9, 9], 10);
        let full = causal_softmax(&x, 0.7).unwrap();
        for tq in [1, 4, 9] {
            let rows = x.narrow(2, 9 - tq, tq).unwrap();
            let part = causal_softmax_offset(&rows, 0.7).unwrap();
            let want = full.narrow(2, 9 - tq, tq).unwrap();
            let bits = |t: &Tensor| {
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>()
            };
            assert_eq!(bits(&part), bits(&want), "tq {tq}");
            let plain = causal_softmax_offset_plain(&rows, 0.7).unwrap();
            assert!(max_diff(&plain, &want) < 2e-6, "tq {tq}: plain differs by {}", max_diff(&plain, &want));
        }
    }

    #[test]
    fn fused_gelu_gradients_match_the_plain_composition() {
        let x = (rand(&[5000], 6) * 4.0).unwrap();
        check_grads(&x, |x| gelu(x).unwrap(), |x| gelu_plain(x).unwrap(), 2e-6);
    }

    #[test]
    fn fused_cross_entropy_gradients_match_the_plain_composition() {
        let x = (rand(&[130, 256], 7) * 3.0).unwrap();
        let t: Vec<u32> = (0..130u32).map(|i| (i * 37) % 256).collect();
        let t = Tensor::from_vec(t, 130, &Device::Cpu).unwrap();
        check_grads(&x, |x| cross_entropy(x, &t).unwrap(), |x| cross_entropy_plain(x, &t).unwrap(), 2e-5);
    }

    /// `fused` against `plain` (each of `[x, y, z]`) bit for bit, the output
    /// and every input's gradient, on random inputs of `shapes`. `x` is a
    /// residual, used a second time in the loss as a block's norm input is,
    /// so its gradient is the sum of two contributions.
    fn residual_op_matches(
        shapes: [(usize, usize); 3],
        seed: u64,
        fused: impl Fn([&Tensor; 3]) -> Result<Tensor>,
        plain: impl Fn([&Tensor; 3]) -> Result<Tensor>,
    ) {
        let vars = [0, 1, 2].map(|k| Var::from_tensor(&rand(&[shapes[k].0, shapes[k].1], seed + k as u64)).unwrap());
        let inputs = [0, 1, 2].map(|k| vars[k].as_tensor());
        let out_shape = [shapes[0].0, shapes[0].1];
        let (r, r2) = (rand(&out_shape, seed + 3), rand(&out_shape, seed + 4));
        let loss = |out: &Tensor| ((out * &r).unwrap() + (inputs[0] * &r2).unwrap()).unwrap().sum_all().unwrap();
        let (f, p) = (fused(inputs).unwrap(), plain(inputs).unwrap());
        assert_eq!(bits(&f), bits(&p), "{shapes:?}: output");
        let (gf, gp) = (loss(&f).backward().unwrap(), loss(&p).backward().unwrap());
        for (k, v) in vars.iter().enumerate() {
            let grad = |gs: &candle_core::backprop::GradStore| bits(gs.get(v.as_tensor()).unwrap());
            assert_eq!(grad(&gf), grad(&gp), "{shapes:?}: gradient of input {k}");
        }
    }

    #[test]
    fn residual_linear_equals_the_composition_bit_for_bit() {
        for (i, &(n, din, dout)) in [(300, 200, 96), (64, 128, 128), (33, 16, 8)].iter().enumerate() {
            residual_op_matches(
                [(n, dout), (n, din), (din, dout)],
                100 + 10 * i as u64,
                |[x, y, w]| residual_linear(x, y, w),
                |[x, y, w]| x + y.matmul(w)?,
            );
        }
    }

    #[test]
    fn gated_residual_equals_the_composition_bit_for_bit() {
        for (i, &(n, d)) in [(300, 96), (70, 256), (5, 3)].iter().enumerate() {
            residual_op_matches(
                [(n, d), (n, d), (n, 1)],
                200 + 10 * i as u64,
                |[x, y, g]| gated_residual(x, y, g),
                |[x, y, g]| x + y.broadcast_mul(g)?,
            );
        }
        let err = gated_residual(&rand(&[4, 3], 1), &rand(&[4, 3], 2), &rand(&[4, 3], 3)).unwrap_err().to_string();
        assert!(err.contains("gated residual") && err.contains("gate [4, 3]"), "{err}");
    }

    #[test]
    fn residual_linear_names_a_residual_of_the_wrong_shape() {
        let err = residual_linear(&rand(&[4, 3], 1), &rand(&[4, 2], 2), &rand(&[2, 5], 3)).unwrap_err().to_string();
        assert!(err.contains("residual linear") && err.contains("[4, 3]") && err.contains("[4, 5]"), "{err}");
    }

    #[test]
    fn linear_equals_candles_matmul_and_its_gradients_bit_for_bit() {
        let bits = |t: &Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        // (tokens, in, out): weight gradients cut into row blocks (out > 64)
        // or whole, over inner dimensions below, at and above gemm's 512-deep
        // blocks, including one (700) that is not a multiple of them.
        for (i, &(n, din, dout)) in
            [(300, 200, 96), (700, 200, 96), (1024, 128, 128), (700, 130, 40), (33, 16, 8)].iter().enumerate()
        {
            let x = Var::from_tensor(&rand(&[n, din], 20 + i as u64)).unwrap();
            let w = Var::from_tensor(&rand(&[din, dout], 40 + i as u64)).unwrap();
            let r = rand(&[n, dout], 60 + i as u64);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            let (yl, gl, yp, gp) = pool.install(|| {
                let yl = linear(x.as_tensor(), w.as_tensor()).unwrap();
                let gl = (&yl * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let yp = x.as_tensor().matmul(w.as_tensor()).unwrap();
                let gp = (&yp * &r).unwrap().sum_all().unwrap().backward().unwrap();
                (yl, gl, yp, gp)
            });
            let shape = format!("{n} x {din} x {dout}");
            assert_eq!(bits(&yl), bits(&yp), "{shape}: output");
            for (v, what) in [(&x, "dx"), (&w, "dw")] {
                assert_eq!(
                    bits(gl.get(v.as_tensor()).unwrap()),
                    bits(gp.get(v.as_tensor()).unwrap()),
                    "{shape}: {what}"
                );
            }
        }
    }

    #[test]
    fn narrow_products_equal_candles_matmul_bit_for_bit() {
        // Router logits at `tiny`, `small` and `paper`, a LoRA factor, and
        // shapes that stay on gemm (too few rows, too wide, too deep).
        let shapes =
            [(256, 32, 2), (2048, 128, 4), (8192, 256, 16), (300, 64, 8), (60, 32, 4), (64, 32, 17), (100, 600, 4)];
        for (m, k, n) in shapes {
            let (x, w) = (rand(&[m, k], 1), rand(&[k, n], 2));
            let want = x.matmul(&w).unwrap();
            for y in [linear(&x, &w).unwrap(), frozen_matmul(&x, &w).unwrap()] {
                assert_eq!(bits(&y), bits(&want), "[{m}, {k}] @ [{k}, {n}]");
            }
        }
    }

    #[test]
    fn frozen_matmul_matches_matmul_and_skips_the_weight_gradient() {
        let x = Var::from_tensor(&rand(&[6, 5], 8)).unwrap();
        let w = Var::from_tensor(&rand(&[5, 4], 9)).unwrap();
        let yf = frozen_matmul(x.as_tensor(), w.as_tensor()).unwrap();
        let yp = x.as_tensor().matmul(w.as_tensor()).unwrap();
        assert_eq!(max_diff(&yf, &yp), 0.0);
        let gf = yf.sum_all().unwrap().backward().unwrap();
        let gp = yp.sum_all().unwrap().backward().unwrap();
        assert!(gf.get(w.as_tensor()).is_none(), "frozen weight must get no gradient");
        assert_eq!(max_diff(gf.get(x.as_tensor()).unwrap(), gp.get(x.as_tensor()).unwrap()), 0.0);
    }
}
