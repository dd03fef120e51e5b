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
//! Bits: every product is the call candle's matmul makes in the
//! composition, through the same `CpuStorage::matmul` with the same shapes,
//! strides and threads, and the GELU is the same kernel, so each expert's
//! output and gradients are the composition's. Each output row is written
//! once where the composition added it to a zero, which keeps it (up to
//! the sign of an exact zero). The tests check both bit for bit. The gate
//! (the router probability that scales each row) stays outside, so its
//! gradient reaches the router as before.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{Stash, f32s};

/// Elements of one rayon task of the GELU (as `ops::gelu` splits them; the
/// kernel is element-wise, so the split never changes a bit).
const GELU_TASK: usize = 4096;

/// Expert `e`'s activations, kept from the forward for the backward.
#[derive(Debug, Default)]
struct Kept {
    /// `x_e @ up_e`, `[m_e, f]`: the GELU's input.
    pre: Vec<f32>,
    /// `gelu(pre)`, `[m_e, f]`: the down projection's input.
    act: Vec<f32>,
}

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
        Ok(n)
    }

    /// Layout of expert `e`'s `[rows, cols]` block in a packed weight starting at `start`.
    fn block(&self, start: usize, e: usize, rows: usize, cols: usize) -> Layout {
        Layout::contiguous_with_offset((rows, cols), start + e * rows * cols)
    }
}

fn gather(src: &[f32], rows: &[usize], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        out.extend_from_slice(&src[r * d..(r + 1) * d]);
    }
    out
}

fn scatter(dst: &mut [f32], rows: &[usize], d: usize, src: &[f32]) {
    for (&r, row) in rows.iter().zip(src.chunks_exact(d)) {
        dst[r * d..(r + 1) * d].copy_from_slice(row);
    }
}

fn into_f32(s: CpuStorage) -> Result<Vec<f32>> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("experts: expected an f32 product"),
    }
}

/// `lhs [m, k] (laid out as lhs_l) @ rhs [k, n] (rhs_l)`, exactly as candle's CPU matmul.
fn matmul(
    lhs: &CpuStorage,
    lhs_l: &Layout,
    rhs: &CpuStorage,
    rhs_l: &Layout,
    mnk: (usize, usize, usize),
) -> Result<Vec<f32>> {
    let (m, n, k) = mnk;
    into_f32(lhs.matmul(rhs, (1, m, n, k), lhs_l, rhs_l)?)
}

fn gelu(pre: &[f32]) -> Vec<f32> {
    let mut act = vec![0f32; pre.len()];
    act.par_chunks_mut(GELU_TASK).zip(pre.par_chunks(GELU_TASK)).for_each(|(a, p)| kernels::gelu_fwd(p, a));
    act
}

/// Expert `e`'s GELU input and output for its rows `xe` (`[m, d]`).
fn activations(g: &Routing, xe: &[f32], up: &CpuStorage, up_start: usize, e: usize) -> Result<Kept> {
    let (m, d, f) = (xe.len() / g.d, g.d, g.f);
    let x = CpuStorage::F32(xe.to_vec());
    let pre = matmul(&x, &Layout::contiguous((m, d)), up, &g.block(up_start, e, d, f), (m, f, d))?;
    let act = gelu(&pre);
    Ok(Kept { pre, act })
}

struct Experts {
    routing: Routing,
    /// Each expert's activations, for the backward.
    kept: Stash<Vec<Kept>>,
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
        let x = f32s(s1, l1, "experts x")?;
        let (d, f) = (g.d, g.f);
        let mut y = vec![0f32; n * d];
        let keep = self.kept.keeps();
        let mut kept = Vec::with_capacity(if keep { g.experts() } else { 0 });
        for (e, rows) in g.rows.iter().enumerate() {
            if rows.is_empty() {
                kept.extend(keep.then(Kept::default));
                continue;
            }
            let m = rows.len();
            let a = activations(g, &gather(x, rows, d), s2, l2.start_offset(), e)?;
            let act = CpuStorage::F32(a.act);
            let ye = matmul(&act, &Layout::contiguous((m, f)), s3, &g.block(l3.start_offset(), e, f, d), (m, d, f))?;
            scatter(&mut y, rows, d, &ye);
            if let (true, CpuStorage::F32(act)) = (keep, act) {
                kept.push(Kept { pre: a.pre, act });
            }
        }
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
struct ExpertsBwd {
    routing: Routing,
    dy: Tensor,
    kept: Stash<Vec<Kept>>,
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
        let x = f32s(s1, l1, "experts x")?;
        let (dy_storage, dy_layout) = self.dy.storage_and_layout();
        let candle_core::Storage::Cpu(dy_cpu) = &*dy_storage else {
            candle_core::bail!("experts dy: expected a CPU tensor")
        };
        let dy = f32s(dy_cpu, dy_layout, "experts dy")?;
        let (d, f, experts) = (g.d, g.f, g.experts());
        let (nx, nw) = (n * d, experts * d * f);
        let mut out = vec![0f32; if self.weights { nx + 2 * nw } else { nx }];
        let (dx, dw) = out.split_at_mut(nx);
        let (dup, ddown) = dw.split_at_mut(if self.weights { nw } else { 0 });
        let (up_start, down_start) = (l2.start_offset(), l3.start_offset());
        let mut kept = self.kept.take().map(Vec::into_iter);
        for (e, rows) in g.rows.iter().enumerate() {
            let k = kept.as_mut().and_then(|it| it.next());
            if rows.is_empty() {
                continue;
            }
            let m = rows.len();
            let xe = gather(x, rows, d);
            let a = match k {
                Some(k) => k,
                None => activations(g, &xe, s2, up_start, e)?,
            };
            let (xl, dl, al) = (Layout::contiguous((m, d)), Layout::contiguous((m, d)), Layout::contiguous((m, f)));
            let dye = CpuStorage::F32(gather(dy, rows, d));
            // d act = dy_e @ down_e^T
            let down_t = g.block(down_start, e, f, d).transpose(0, 1)?;
            let dact = matmul(&dye, &dl, s3, &down_t, (m, f, d))?;
            if self.weights {
                // d down_e = act^T @ dy_e
                let act = CpuStorage::F32(a.act);
                let dd = matmul(&act, &al.transpose(0, 1)?, &dye, &dl, (f, d, m))?;
                ddown[e * f * d..(e + 1) * f * d].copy_from_slice(&dd);
            }
            let mut dpre = vec![0f32; m * f];
            dpre.par_chunks_mut(GELU_TASK)
                .zip(a.pre.par_chunks(GELU_TASK).zip(dact.par_chunks(GELU_TASK)))
                .for_each(|(o, (p, da))| kernels::gelu_bwd(p, da, o));
            let dpre = CpuStorage::F32(dpre);
            if self.weights {
                // d up_e = x_e^T @ d pre
                let xs = CpuStorage::F32(xe);
                let du = matmul(&xs, &xl.transpose(0, 1)?, &dpre, &al, (d, f, m))?;
                dup[e * d * f..(e + 1) * d * f].copy_from_slice(&du);
            }
            // d x_e = d pre @ up_e^T
            let up_t = g.block(up_start, e, d, f).transpose(0, 1)?;
            let dxe = matmul(&dpre, &al, s2, &up_t, (m, d, f))?;
            scatter(dx, rows, d, &dxe);
        }
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

    #[test]
    fn a_row_routed_past_the_input_is_an_error_naming_it() {
        let x = rand(&[4, 8], 1);
        let (up, down) = (rand(&[8, 16], 2), rand(&[16, 8], 3));
        let err = experts(&x, &up, &down, vec![vec![0, 9]]).unwrap_err().to_string();
        assert!(err.contains("row 9") && err.contains("4 rows"), "{err}");
    }
}
