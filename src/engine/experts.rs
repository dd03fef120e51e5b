//! The experts of a top-1 mixture-of-experts layer as one CPU op, forward
//! and backward: every token through the expert it is routed to.
//!
//! Why: composed from candle ops, each expert gathers its tokens with
//! `index_select` and adds its output into the layer's output with
//! `index_add`. Candle's backward of both gives a full `[N, d]` gradient
//! per expert (a tensor of zeros, then a copy and an add), so a layer's
//! backward moved 2 x experts full-size tensors: at `paper` (16 experts,
//! `N` = 8192, `d` = 256) about 1 GB of memory traffic a layer by our
//! count, on one thread. Here one op gathers each expert's rows, runs the expert and
//! writes its rows of the output; its backward gives one `[N, d]` gradient
//! and the weight gradients.
//!
//! The work runs as rayon tasks of one expert's block of rows
//! ([`ROW_TASK`]) each: gather the rows, up-project, GELU, down-project,
//! write the rows of the output. Run expert after expert, each product
//! threaded inside gemm, a layer's experts at `small` ran at about 67
//! GFLOP/s on 2 cores (an instrumented `bets bench engine` step), the
//! gathers and copies between the products on one thread.
//!
//! Bits: every product is a gemm call with candle's arguments
//! ([`super::strided`]): the row-wise ones cut into row blocks, which
//! changes no element, and the weight gradients (whose inner dimension is
//! the rows, never cut) by row blocks of the gradient only as
//! [`super::strided::weight_gradient_blocks`] allows. The GELU is the same kernel,
//! so each expert's output and gradients are the composition's. Each
//! output row is written once where the composition added it to a zero,
//! which keeps it (up to the sign of an exact zero). The tests check both
//! bit for bit. The gate (the router probability that scales each row)
//! stays outside, so its gradient reaches the router as before.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{Stash, f32s};
use super::strided::{Mat, MatMut, Shared, Unwritten, gemm_into, row_blocks, weight_gradient_blocks, zeroed_part};

/// Rows of one expert in one task: each expert's rows are cut into blocks
/// of this many ([`row_blocks`]), so the work shares out over the threads
/// however unevenly the router spreads the tokens.
const ROW_TASK: usize = 64;

/// The experts' GELU inputs (`x_e @ up_e`), kept from the forward for the
/// backward: every routed row's, expert after expert (expert `e`'s rows
/// from `Routing::starts()[e]`), `f` columns each. The GELU's output is not
/// kept: the backward recomputes it in place once its input is no longer
/// needed, which halves what a layer holds between forward and backward
/// (16 MiB a layer at `paper`) for one more GELU.
type Kept = Vec<f32>;

/// Sizes and routes of one call.
#[derive(Debug, Clone)]
struct Routing {
    d: usize,
    f: usize,
    /// Each expert's rows of `x`, in row order.
    rows: Vec<Vec<usize>>,
}

impl Routing {
    fn experts(&self) -> usize {
        self.rows.len()
    }

    /// Check `x [N, d]`, `up [E*d, f]` and `down [E*f, d]`, all contiguous; gives `N`.
    fn check(&self, x: &Layout, up: &Layout, down: &Layout) -> Result<usize> {
        let (n, d) = x.shape().dims2()?;
        let e = self.experts();
        let want = [(up, (e * self.d, self.f), "up"), (down, (e * self.f, self.d), "down")];
        if d != self.d {
            candle_core::bail!("experts: input has {d} features, the experts take {}", self.d);
        }
        for (l, shape, what) in want {
            if l.shape().dims2()? != shape || !l.is_contiguous() {
                candle_core::bail!("experts {what}: shape {:?}, expected contiguous {shape:?}", l.dims());
            }
        }
        if let Some(bad) = self.rows.iter().flatten().find(|&&r| r >= n) {
            candle_core::bail!("experts: row {bad} routed, but the input has {n} rows");
        }
        // Tasks write their rows of the output side by side: a row routed twice would be written twice.
        let mut seen = vec![false; n];
        if let Some(twice) = self.rows.iter().flatten().find(|&&r| std::mem::replace(&mut seen[r], true)) {
            candle_core::bail!("experts: row {twice} routed to more than one expert");
        }
        Ok(n)
    }

    /// Where each expert's rows start among all routed rows, and their total last.
    fn starts(&self) -> Vec<usize> {
        let mut out = vec![0];
        for r in &self.rows {
            out.push(out[out.len() - 1] + r.len());
        }
        out
    }

    /// Every (expert, row block) with rows: the tasks of the row-wise products.
    fn tasks(&self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (e, rows) in self.rows.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            out.extend(row_blocks(rows.len(), ROW_TASK).map(|(r0, r1)| (e, r0, r1)));
        }
        out
    }
}

/// Write the rows of `src` (`width` columns) to rows `rows` of the buffer at `dst`.
///
/// # Safety
/// `dst` must hold every row named, and no other task may write those rows.
unsafe fn scatter_to(dst: Shared, rows: &[usize], width: usize, src: &[f32]) {
    for (&r, row) in rows.iter().zip(src.chunks_exact(width)) {
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst.ptr().add(r * width), width) };
    }
}

/// A task's `len` elements from `start` of a buffer shared by the tasks.
///
/// # Safety
/// The range must lie in the buffer and belong to this task alone.
unsafe fn part<'a>(buf: Shared, start: usize, len: usize) -> &'a mut [f32] {
    unsafe { std::slice::from_raw_parts_mut(buf.ptr().add(start), len) }
}

/// Copy rows `rows` of `src` (`width` columns) one after another to the
/// buffer at `dst`, which may be uninitialised.
///
/// # Safety
/// `dst` must hold `rows.len()` rows of `width`, and no other task may write them.
unsafe fn gather_to(dst: *mut f32, src: &[f32], rows: &[usize], width: usize) {
    for (i, &r) in rows.iter().enumerate() {
        let row = &src[r * width..(r + 1) * width];
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(i * width), width) };
    }
}

/// `pre = xe @ up_e` for one block of `m` rows, written through `pre` (which
/// may be uninitialised); gives the written rows.
///
/// # Safety
/// `up` points at expert `e`'s `[d, f]` block; `pre` holds `m` rows, no
/// other task's.
unsafe fn pre_activations<'a>(g: &Routing, xe: &[f32], up: *const f32, pre: *mut f32) -> &'a mut [f32] {
    let (m, d, f) = (xe.len() / g.d, g.d as isize, g.f as isize);
    unsafe {
        gemm_into(m, g.f, g.d, MatMut(pre, f, 1), Mat(xe.as_ptr(), d, 1), Mat(up, f, 1));
        std::slice::from_raw_parts_mut(pre, m * g.f)
    }
}

/// `pre = xe @ up_e` and `act = gelu(pre)` for one block of `m` rows.
///
/// # Safety
/// As [`pre_activations`]; `act` holds `m` rows too.
unsafe fn activations(g: &Routing, xe: &[f32], up: *const f32, pre: *mut f32, act: &mut [f32]) {
    let pre = unsafe { pre_activations(g, xe, up, pre) };
    kernels::gelu_fwd(pre, act);
}

struct Experts {
    routing: Routing,
    /// Each expert's activations, for the backward.
    kept: Stash<Kept>,
}

impl CustomOp3 for Experts {
    fn name(&self) -> &'static str {
        "bets-experts"
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
        let g = &self.routing;
        let n = g.check(l1, l2, l3)?;
        let (x, up, down) = (f32s(s1, l1, "experts x")?, f32s(s2, l2, "experts up")?, f32s(s3, l3, "experts down")?);
        let (d, f) = (g.d, g.f);
        let starts = g.starts();
        let routed = starts[g.experts()];
        // Without a backward to follow (evaluation), the activations live in
        // each task's scratch, in cache, instead of full-size buffers.
        let keep = self.kept.keeps();
        let mut kept = Unwritten::new(if keep { routed * f } else { 0 });
        let mut y = Unwritten::new(n * d);
        let (out, pre) = (y.ptr(), kept.ptr());
        if routed < n {
            // Rows routed to no expert are zeros.
            // SAFETY: the buffer holds `n * d` elements.
            unsafe { std::ptr::write_bytes(out.ptr(), 0, n * d) };
        }
        g.tasks().into_par_iter().for_each_init(
            || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            |(xe, ye, pre_scratch, act_scratch), (e, r0, r1)| {
                let (rows, m) = (&g.rows[e][r0..r1], r1 - r0);
                xe.resize(m * d, 0.0);
                ye.resize(m * d, 0.0);
                // SAFETY: `xe` is the task's own scratch of `m` rows; the
                // task's rows of `pre` (from its expert's start) and of `y`
                // (its routed rows) are its own.
                unsafe {
                    gather_to(xe.as_mut_ptr(), x, rows, d);
                    act_scratch.resize(m * f, 0.0);
                    let pre = if keep {
                        pre.ptr().add((starts[e] + r0) * f)
                    } else {
                        pre_scratch.resize(m * f, 0.0);
                        pre_scratch.as_mut_ptr()
                    };
                    let act = &mut act_scratch[..];
                    activations(g, xe, up.as_ptr().add(e * d * f), pre, act);
                    let down = Mat(down.as_ptr().add(e * f * d), d as isize, 1);
                    gemm_into(m, d, f, MatMut(ye.as_mut_ptr(), d as isize, 1), Mat(act.as_ptr(), f as isize, 1), down);
                    scatter_to(out, rows, d, ye);
                }
            },
        );
        // SAFETY: the tasks wrote every routed row of `pre` (the up products)
        // and of `y` (row copies); unrouted rows of `y` were zeroed above.
        let (y, kept) = unsafe { (y.written(), kept.written()) };
        self.kept.put(kept);
        Ok((CpuStorage::F32(y), Shape::from((n, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        up: &Tensor,
        down: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let weights = up.track_op() || down.track_op();
        let kept = Stash::holding(self.kept.take());
        let op = ExpertsBwd { routing: self.routing.clone(), dy: dy.contiguous()?, kept, weights };
        let packed = x.apply_op3_no_bwd(up, down, &op)?;
        let (nx, nu, nd) = (x.elem_count(), up.elem_count(), down.elem_count());
        let dx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        if !weights {
            return Ok((Some(dx), None, None));
        }
        let dup = packed.narrow(0, nx, nu)?.reshape(up.shape())?;
        let ddown = packed.narrow(0, nx + nu, nd)?.reshape(down.shape())?;
        Ok((Some(dx), Some(dup), Some(ddown)))
    }
}

/// Backward of [`Experts`]: `[dx | dup | ddown]` flat (`[dx]` alone when
/// the weights are frozen), from the output gradient it holds and the
/// forward's activations (recomputed when it kept none).
///
/// Two rounds of tasks: the row-wise products (`d act`, the GELU's
/// backward, `dx`) by (expert, row block), then the weight gradients by
/// (expert, weight, block of the gradient's rows). Their inner dimension is
/// the expert's rows, which is never cut; the gradients' own rows are cut
/// only as [`weight_gradient_blocks`] allows.
struct ExpertsBwd {
    routing: Routing,
    dy: Tensor,
    kept: Stash<Kept>,
    weights: bool,
}

impl CustomOp3 for ExpertsBwd {
    fn name(&self) -> &'static str {
        "bets-experts-bwd"
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
        let g = &self.routing;
        let n = g.check(l1, l2, l3)?;
        let (x, up, down) = (f32s(s1, l1, "experts x")?, f32s(s2, l2, "experts up")?, f32s(s3, l3, "experts down")?);
        let (dy_storage, dy_layout) = self.dy.storage_and_layout();
        let candle_core::Storage::Cpu(dy_cpu) = &*dy_storage else {
            candle_core::bail!("experts dy: expected a CPU tensor")
        };
        let dy = f32s(dy_cpu, dy_layout, "experts dy")?;
        let (d, f, experts) = (g.d, g.f, g.experts());
        let (di, fi) = (d as isize, f as isize);
        let (nx, nw) = (n * d, experts * d * f);
        let starts = g.starts();
        let routed = starts[experts];
        let mut kept = self.kept.take();
        let recompute = kept.is_none();
        // Recomputed when the forward kept none (a second backward over one graph).
        let mut recomputed = Unwritten::new(if recompute { routed * f } else { 0 });
        // The GELU inputs, which each row task turns into the GELU's outputs
        // once its gradient is done: the down weights' gradients read them so.
        let pre_p = match kept.as_mut() {
            Some(kept) => Shared(kept.as_mut_ptr()),
            None => recomputed.ptr(),
        };
        // Each expert's rows of x and dy and its GELU's input gradient, packed as `Kept`.
        let (mut xs, mut dys, mut dpre) =
            (Unwritten::new(routed * d), Unwritten::new(routed * d), Unwritten::new(routed * f));
        let mut out = Unwritten::new(if self.weights { nx + 2 * nw } else { nx });
        let (xs_p, dys_p, dpre_p, out_p) = (xs.ptr(), dys.ptr(), dpre.ptr(), out.ptr());
        // SAFETY (the two writes): `out` holds `nx` elements of dx, then
        // each expert's `d * f` of d up, then each one's `f * d` of d down.
        if routed < n {
            // Rows routed to no expert get no gradient.
            unsafe { std::ptr::write_bytes(out_p.ptr(), 0, nx) };
        }
        if self.weights {
            // Experts without rows get zero weight gradients.
            for e in (0..experts).filter(|&e| g.rows[e].is_empty()) {
                unsafe {
                    std::ptr::write_bytes(out_p.ptr().add(nx + e * d * f), 0, d * f);
                    std::ptr::write_bytes(out_p.ptr().add(nx + nw + e * f * d), 0, f * d);
                }
            }
        }
        g.tasks().into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(dact, dxe), (e, r0, r1)| {
                let (rows, m, at) = (&g.rows[e][r0..r1], r1 - r0, starts[e] + r0);
                dact.resize(m * f, 0.0);
                dxe.resize(m * d, 0.0);
                // SAFETY: the task's rows of the packed buffers (from its
                // expert's start) and of dx (its routed rows) are its own;
                // each is written before a slice of it is made.
                unsafe {
                    gather_to(xs_p.ptr().add(at * d), x, rows, d);
                    gather_to(dys_p.ptr().add(at * d), dy, rows, d);
                    let (xe, dye) = (part(xs_p, at * d, m * d), part(dys_p, at * d, m * d));
                    let pre = if recompute {
                        pre_activations(g, xe, up.as_ptr().add(e * d * f), pre_p.ptr().add(at * f))
                    } else {
                        part(pre_p, at * f, m * f)
                    };
                    // d act = dy_e @ down_e^T
                    let down_t = Mat(down.as_ptr().add(e * f * d), 1, di);
                    gemm_into(m, f, d, MatMut(dact.as_mut_ptr(), fi, 1), Mat(dye.as_ptr(), di, 1), down_t);
                    let dpre = zeroed_part(dpre_p, at * f, m * f);
                    kernels::gelu_bwd(pre, dact, dpre);
                    kernels::gelu_fwd_in_place(pre);
                    // d x_e = d pre @ up_e^T
                    let up_t = Mat(up.as_ptr().add(e * d * f), 1, fi);
                    gemm_into(m, d, f, MatMut(dxe.as_mut_ptr(), di, 1), Mat(dpre.as_ptr(), fi, 1), up_t);
                    scatter_to(out_p, rows, d, dxe);
                }
            },
        );
        if self.weights {
            // (expert, up or down, row block of its gradient): the blocks of
            // `weight_gradient_blocks`, so an expert with many rows no longer
            // leaves the other threads idle while it finishes.
            let products: Vec<(usize, bool, (usize, usize))> = (0..experts)
                .filter(|&e| !g.rows[e].is_empty())
                .flat_map(|e| {
                    let up = weight_gradient_blocks(d, f).into_iter().map(move |b| (e, true, b));
                    up.chain(weight_gradient_blocks(f, d).into_iter().map(move |b| (e, false, b)))
                })
                .collect();
            products.into_par_iter().for_each(|(e, is_up, (r0, r1))| {
                let (at, m) = (starts[e], g.rows[e].len());
                // SAFETY: each (expert, weight, row block) writes only its own rows of `out`.
                unsafe {
                    if is_up {
                        // d up_e [r0..r1] = (x_e^T @ d pre) [r0..r1]: x_e's columns r0..r1
                        let dst = MatMut(out_p.ptr().add(nx + e * d * f + r0 * f), fi, 1);
                        let lhs = Mat(xs_p.ptr().add(at * d + r0), 1, di);
                        gemm_into(r1 - r0, f, m, dst, lhs, Mat(dpre_p.ptr().add(at * f), fi, 1));
                    } else {
                        // d down_e [r0..r1] = (act^T @ dy_e) [r0..r1]: act's columns r0..r1
                        // (the GELU outputs, which replaced its inputs in `pre_p`)
                        let dst = MatMut(out_p.ptr().add(nx + nw + e * f * d + r0 * d), di, 1);
                        let lhs = Mat(pre_p.ptr().add(at * f + r0), 1, fi);
                        gemm_into(r1 - r0, d, m, dst, lhs, Mat(dys_p.ptr().add(at * d), di, 1));
                    }
                }
            });
        }
        // SAFETY: the row tasks wrote every routed row of the packed buffers
        // and of dx (unrouted rows were zeroed above); the weight gradients'
        // row blocks cover each expert with rows, and gemm writes every
        // element of its destination.
        let out = unsafe { out.written() };
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// Every row of `x` (`[N, d]`) through its expert: row `r` of the result is
/// `down_e(gelu(up_e(x_r)))` for the `e` with `r` in `rows[e]`. `up` is
/// the experts' up weights stacked (`[E*d, f]`), `down` their down weights
/// (`[E*f, d]`). CPU and f32 only: [`super::model::View::moe`] composes the
/// same from candle ops elsewhere.
pub fn experts(x: &Tensor, up: &Tensor, down: &Tensor, rows: Vec<Vec<usize>>) -> Result<Tensor> {
    let (d, f) = (x.dim(1)?, up.dim(1)?);
    let op = Experts { routing: Routing { d, f, rows }, kept: Stash::for_inputs(&[x, up, down]) };
    x.contiguous()?.apply_op3(&up.contiguous()?, &down.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{Device, Var};

    use super::*;
    use crate::engine::config::ModelConfig;
    use crate::engine::model::{View, Weights, init_weights};
    use crate::engine::ops::tests::{bits, rand};

    /// The fused experts and the composition they replace give the same
    /// output and the same gradient for the input and every weight, bit
    /// for bit: with trained weights (pre-training) and frozen ones (an
    /// adapter's fine-tune), and when an expert gets no token.
    #[test]
    fn fused_experts_equal_the_composition_bit_for_bit() {
        for (d, f, experts, n, train_weights) in [
            (32, 64, 2, 256, true),
            (128, 256, 4, 300, true),
            (64, 128, 16, 200, true),
            (64, 128, 16, 8, true),
            (32, 64, 4, 40, false),
            // Experts of hundreds of rows, cut into row blocks of `ROW_TASK`.
            (32, 64, 2, 1000, true),
            (128, 256, 4, 2048, false),
        ] {
            let cfg = ModelConfig { vocab: 256, d_model: d, layers: 1, heads: 2, experts, expert_width: f, context: 8 };
            let base = init_weights(&cfg, 7, &Device::Cpu).unwrap();
            let vars: BTreeMap<String, Var> = base
                .iter()
                .filter(|(name, _)| train_weights && name.contains(".moe."))
                .map(|(name, t)| (name.clone(), Var::from_tensor(t).unwrap()))
                .collect();
            let mut view = View::new(&cfg, &base);
            view.over = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
            let h = Var::from_tensor(&(rand(&[n, d], 3) * 3.0).unwrap()).unwrap();
            let w = rand(&[n, d], 4);
            let run = |fused: bool| {
                let out = view.moe_with("blocks.0", h.as_tensor(), fused).unwrap();
                let loss = ((&out.y * &w).unwrap().sum_all().unwrap() + out.aux.unwrap()).unwrap();
                (out.y, out.routes, loss.backward().unwrap())
            };
            let (yf, rf, gf) = run(true);
            let (yp, rp, gp) = run(false);
            let what = format!("d {d}, f {f}, {experts} experts, {n} rows");
            assert_eq!(rf, rp, "{what}: routes");
            if n < experts {
                let used: std::collections::BTreeSet<u32> = rf.iter().copied().collect();
                assert!(used.len() < experts, "{what}: some expert must get no token");
            }
            assert_eq!(bits(&yf), bits(&yp), "{what}: output");
            assert_eq!(bits(gf.get(h.as_tensor()).unwrap()), bits(gp.get(h.as_tensor()).unwrap()), "{what}: dx");
            for (name, v) in &vars {
                match (gf.get(v.as_tensor()), gp.get(v.as_tensor())) {
                    (Some(a), Some(b)) => assert_eq!(bits(a), bits(b), "{what}: d {name}"),
                    // An expert no token reached: zeros from the fused op, none from the composition.
                    (Some(a), None) => assert!(bits(a).iter().all(|&x| x == 0), "{what}: d {name}"),
                    (a, b) => panic!("{what}: d {name}: fused {:?}, composed {:?}", a.is_some(), b.is_some()),
                }
            }
            if !train_weights {
                let ws: Weights = base.clone();
                assert!(ws.keys().all(|name| gf.get(&ws[name]).is_none()), "{what}: a frozen weight got a gradient");
            }
        }
    }

    /// Rows routed to no expert come out as zeros with zero gradients, and
    /// an expert without rows gets zero weight gradients, though the
    /// buffers are not zeroed up front: a freed buffer of NaNs of the same
    /// size is there for the allocator to hand back.
    #[test]
    fn unrouted_rows_and_idle_experts_get_zeros() {
        let (n, d, f) = (6, 8, 16);
        for _ in 0..2 {
            drop(vec![f32::NAN; 3 * 2 * d * f + n * d]);
            let x = Var::from_tensor(&rand(&[n, d], 1)).unwrap();
            let (up, down) =
                (Var::from_tensor(&rand(&[3 * d, f], 2)).unwrap(), Var::from_tensor(&rand(&[3 * f, d], 3)).unwrap());
            let rows = vec![vec![0, 2], vec![], vec![5]];
            let y = experts(x.as_tensor(), up.as_tensor(), down.as_tensor(), rows.clone()).unwrap();
            let grads = (&y * rand(&[n, d], 4)).unwrap().sum_all().unwrap().backward().unwrap();
            let (yv, dx) = (y.to_vec2::<f32>().unwrap(), grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap());
            for r in [1, 3, 4] {
                assert!(yv[r].iter().chain(&dx[r]).all(|&v| v.to_bits() == 0), "row {r} was routed nowhere");
            }
            for (e, rows) in rows.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
                let xe = x.as_tensor().index_select(&idx, 0).unwrap();
                let pre = xe.matmul(&up.as_tensor().narrow(0, e * d, d).unwrap()).unwrap();
                let want = crate::engine::ops::gelu(&pre)
                    .unwrap()
                    .matmul(&down.as_tensor().narrow(0, e * f, f).unwrap())
                    .unwrap();
                assert_eq!(bits(&y.index_select(&idx, 0).unwrap()), bits(&want), "expert {e}'s rows");
            }
            let (dup, ddown) = (grads.get(up.as_tensor()).unwrap(), grads.get(down.as_tensor()).unwrap());
            assert!(bits(&dup.narrow(0, d, d).unwrap()).iter().all(|&b| b == 0), "idle expert 1: d up");
            assert!(bits(&ddown.narrow(0, f, f).unwrap()).iter().all(|&b| b == 0), "idle expert 1: d down");
            assert!(bits(dup).iter().any(|&b| b != 0), "the busy experts' gradients are not all zero");
        }
    }

    #[test]
    fn a_row_routed_past_the_input_is_an_error_naming_it() {
        let x = rand(&[4, 8], 1);
        let (up, down) = (rand(&[8, 16], 2), rand(&[16, 8], 3));
        let err = experts(&x, &up, &down, vec![vec![0, 9]]).unwrap_err().to_string();
        assert!(err.contains("row 9") && err.contains("4 rows"), "{err}");
        let (up2, down2) = (rand(&[16, 16], 2), rand(&[32, 8], 3));
        let err = experts(&x, &up2, &down2, vec![vec![0, 2], vec![2, 3]]).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("more than one expert"), "{err}");
    }
}
