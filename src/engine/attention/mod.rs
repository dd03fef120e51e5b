//! Fused causal self-attention on the CPU: forward and backward as one op
//! each, one task per (sequence, head).
//!
//! Why: composed from candle ops, attention is a batched matmul, a softmax
//! and a second batched matmul. Each of candle's per-batch gemm calls is
//! below gemm's threading threshold at our shapes (`128 x 128 x 32` at
//! `small`), and candle runs the batches one after another, so attention ran
//! on one thread while the others waited. It also materialised the scores
//! and the probabilities (`[batch, heads, T, T]` each, kept for the
//! backward), copied q, k, v and the output between `[B*T, d]` and
//! `[B, H, T, hd]`, and zeroed every fresh buffer.
//!
//! Here q, k and v stay in the `[B*T, d]` layout their projections give
//! (head `h` is columns `h*hd..(h+1)*hd`), every (sequence, head) block is
//! an independent rayon task, and the scores live only in a task's `T x T`
//! scratch. When a backward will follow, the forward keeps the
//! probabilities' causal half, packed (`B*H*T(T+1)/2` floats, half of the
//! full `T x T` blocks) and hands them to it, which unpacks each block into
//! its scratch; recomputing them instead costs a third `T x T x hd` product
//! and the softmax's every `exp` again. That is kept only up to
//! [`KEEP_LIMIT`] a layer: 2 MiB at `small`, where recomputing cost about
//! 3% of a training step, but 32 MiB at `paper`, 128 MiB a model, where
//! recomputing costs about 1% (alternating `bets bench engine` runs, within
//! their noise) and keeping them made the largest share of the peak memory
//! above PyTorch's half. Without a backward (evaluation) nothing is kept.
//!
//! Causality is used too: each product is split into row blocks
//! ([`ROW_BLOCK`]) that skip the masked half, which only ever adds exact
//! zeros.
//!
//! A block runs one of two ways, with the same bits:
//! - [`key_major`], on AVX-512 machines at most shapes
//!   ([`Geometry::chain_fits`]): the scores are kept key by key (query `i`
//!   is column `i`), so the softmax sums sixteen queries per vector
//!   instruction, and the products run on the chain kernel
//!   ([`super::strided::chain_into`]) instead of gemm's packing and
//!   dispatch. At `paper` one layer's attention forward took about 13 ms
//!   against 16 the other way, forward and backward about 48 ms against
//!   67 (alternating runs of the op alone, 2 threads);
//! - [`query_major`] elsewhere: gemm calls on query-major scores.
//!
//! The arithmetic is the composition's, sum for sum: every output element
//! is the same gemm dot product in the same order (gemm accumulates along
//! the inner dimension one term after another; the skipped terms are the
//! masked zeros at either end), and the softmax gives each query the row
//! kernel's bits; only the layouts read and written differ. The tests check
//! both ways against the composition bit for bit.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

mod key_major;
mod query_major;

use super::ops::{Stash, f32s};
use super::strided::{Shared, Unwritten, chain_kernel_available, row_blocks, zeroed};

/// Geometry of one attention call: `batch` sequences of `len` tokens,
/// `heads` heads of `head_dim` columns each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Geometry {
    fn d(&self) -> usize {
        self.heads * self.head_dim
    }

    /// (sequence, head) blocks: the tasks of one call.
    fn blocks(&self) -> usize {
        self.batch * self.heads
    }

    /// Whether the forward keeps its probabilities for the backward: when
    /// they fit in [`KEEP_LIMIT`].
    fn keeps_probabilities(&self) -> bool {
        self.blocks() * packed_len(self.len) * size_of::<f32>() <= KEEP_LIMIT
    }

    /// Whether [`chain_into`] gives this geometry's products gemm's bits:
    /// every product has more than one row and column and over 256
    /// elements (`len > 16`, `head_dim > 2`), and every sum is one chain
    /// (`len <= 512`).
    fn chain_fits(&self) -> bool {
        chain_kernel_available() && (17..=512).contains(&self.len) && (3..=512).contains(&self.head_dim)
    }

    /// Offset of block `task`'s first element in a `[B*T, d]` buffer.
    fn offset(&self, task: usize) -> usize {
        (task / self.heads) * self.len * self.d() + (task % self.heads) * self.head_dim
    }

    /// q, k and v as slices, each checked to be `[B*T, d]` and contiguous.
    fn inputs<'a>(&self, qkv: [(&'a CpuStorage, &Layout); 3]) -> Result<[&'a [f32]; 3]> {
        let mut out: [&[f32]; 3] = [&[]; 3];
        for (slot, ((s, l), what)) in out.iter_mut().zip(qkv.into_iter().zip(["q", "k", "v"])) {
            self.check(what, l)?;
            *slot = f32s(s, l, &format!("causal attention {what}"))?;
        }
        Ok(out)
    }

    fn check(&self, what: &str, l: &Layout) -> Result<()> {
        let want = (self.batch * self.len, self.d());
        if l.shape().dims2()? != want {
            candle_core::bail!("causal attention {what}: shape {:?}, expected {want:?}", l.dims());
        }
        Ok(())
    }
}

/// The most a layer's forward keeps of its probabilities for the backward
/// (packed, [`packed_len`] floats a block); above it the backward recomputes them.
const KEEP_LIMIT: usize = 8 << 20;

/// Rows of a causal block handled by one product: row block `r0..r1`
/// needs keys `0..r1` only, so about half of each `T x T` product (the
/// masked half) is never computed. The skipped terms are exact zeros, so
/// every sum equals the full product's.
const ROW_BLOCK: usize = 32;

/// Row blocks of a `t`-row causal block ([`row_blocks`] of [`ROW_BLOCK`]).
fn causal_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    row_blocks(t, ROW_BLOCK)
}

/// Floats of one packed causal `t x t` block: each query keeps its
/// visible entries, `t(t+1)/2` in all, whichever the layout.
fn packed_len(t: usize) -> usize {
    t * (t + 1) / 2
}

/// One (sequence, head) block: pointers to its first element in the
/// `[B*T, d]` buffers of q, k and v.
#[derive(Clone, Copy)]
struct Block {
    q: *const f32,
    k: *const f32,
    v: *const f32,
}

impl Block {
    /// The block whose first element is at `off` in q, k and v.
    ///
    /// # Safety
    /// `off` must lie within the three buffers.
    unsafe fn at([q, k, v]: [&[f32]; 3], off: usize) -> Block {
        unsafe { Block { q: q.as_ptr().add(off), k: k.as_ptr().add(off), v: v.as_ptr().add(off) } }
    }
}

/// A block's gradients: pointers to its first element in the `[B*T, d]`
/// thirds of the backward's output.
#[derive(Clone, Copy)]
struct BlockGrads {
    dq: *mut f32,
    dk: *mut f32,
    dv: *mut f32,
}

/// A task's `T x T` buffers, reused from block to block, and room for one
/// transposed `[hd, T]` operand.
#[derive(Default)]
struct Scratch {
    s: Vec<f32>,
    p: Vec<f32>,
    dp: Vec<f32>,
    xt: Vec<f32>,
}

impl Scratch {
    /// Buffers for blocks of `t` tokens: `t` rows of `t` floats, padded
    /// to whole vectors for the key-major path's strips; `dp` only for a
    /// backward.
    fn for_len(t: usize, backward: bool) -> Scratch {
        let n = t * t.next_multiple_of(16);
        let dp = if backward { vec![0f32; n] } else { Vec::new() };
        Scratch { s: vec![0f32; n], p: vec![0f32; n], dp, xt: Vec::new() }
    }
}

/// Run `task(scratch, block index, block offset)` for every (sequence, head)
/// block in parallel, each thread with its own [`Scratch`] (with the
/// backward's buffer when `backward`).
fn for_each_block(g: &Geometry, backward: bool, task: impl Fn(&mut Scratch, usize, usize) + Sync) {
    (0..g.blocks())
        .into_par_iter()
        .for_each_init(|| Scratch::for_len(g.len, backward), |scratch, i| task(scratch, i, g.offset(i)));
}

struct CausalAttention {
    geometry: Geometry,
    scale: f32,
    /// Whether the block runs key-major on the chain kernel ([`key_major`])
    /// or query-major on gemm ([`query_major`]).
    chain: bool,
    /// The forward's probabilities, each block packed (`key_major::pack` or
    /// [`query_major::pack`], as `chain` says), for the backward.
    kept: Stash<Vec<f32>>,
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "bets-causal-attention"
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
        let g = self.geometry;
        let [q, k, v] = g.inputs([(s1, l1), (s2, l2), (s3, l3)])?;
        let t = g.len;
        let keep = self.kept.keeps();
        let tri = packed_len(t);
        let mut kept = if keep { zeroed(g.blocks() * tri) } else { Vec::new() };
        let probs = Shared(kept.as_mut_ptr());
        let forward = if self.chain { key_major::forward } else { query_major::forward };
        let mut y = Unwritten::new(q.len());
        let out = y.ptr();
        for_each_block(&g, false, |scratch, task, off| {
            // SAFETY: `off` is the block's first element in buffers of
            // `B*T*d` elements; each task writes only its own block of
            // `y` and its own packed slice of the kept probabilities.
            unsafe {
                let block = Block::at([q, k, v], off);
                let kept = keep.then(|| std::slice::from_raw_parts_mut(probs.ptr().add(task * tri), tri));
                forward(&g, self.scale, block, out.ptr().add(off), kept, scratch);
            }
        });
        // SAFETY: the blocks' products wrote every element (each block's rows
        // of its head's columns).
        let y = unsafe { y.written() };
        self.kept.put(kept);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = q.elem_count();
        let kept = self.kept.take();
        let bwd = CausalAttentionBwd {
            geometry: self.geometry,
            scale: self.scale,
            chain: self.chain,
            dy: dy.contiguous()?,
            kept,
        };
        let packed = q.apply_op3_no_bwd(k, v, &bwd)?;
        let part = |i: usize| packed.narrow(0, i * n, n)?.reshape(q.shape());
        Ok((Some(part(0)?), Some(part(1)?), Some(part(2)?)))
    }
}

/// Backward of [`CausalAttention`]: `[dq | dk | dv]` flat, from q, k, v,
/// the output gradient it holds and the forward's probabilities (recomputed
/// when the forward kept none: a second backward over one graph).
struct CausalAttentionBwd {
    geometry: Geometry,
    scale: f32,
    chain: bool,
    dy: Tensor,
    kept: Option<Vec<f32>>,
}

impl CustomOp3 for CausalAttentionBwd {
    fn name(&self) -> &'static str {
        "bets-causal-attention-bwd"
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
        let g = self.geometry;
        let (dy_storage, dy_layout) = self.dy.storage_and_layout();
        let Storage::Cpu(dy_cpu) = &*dy_storage else {
            candle_core::bail!("causal attention dy: expected a CPU tensor")
        };
        g.check("dy", dy_layout)?;
        let [q, k, v] = g.inputs([(s1, l1), (s2, l2), (s3, l3)])?;
        let dy = f32s(dy_cpu, dy_layout, "causal attention dy")?;
        let (t, n) = (g.len, q.len());
        let kept = self.kept.as_deref();
        let tri = packed_len(t);
        let backward = if self.chain { key_major::backward } else { query_major::backward };
        let mut grads = Unwritten::new(3 * n);
        let out = grads.ptr();
        for_each_block(&g, true, |scratch, task, off| {
            // SAFETY: as in the forward; the three gradients are the
            // `n`-element thirds of `grads` and each task writes only its block.
            unsafe {
                let block = Block::at([q, k, v], off);
                let grads =
                    BlockGrads { dq: out.ptr().add(off), dk: out.ptr().add(n + off), dv: out.ptr().add(2 * n + off) };
                let kept = kept.map(|all| &all[task * tri..(task + 1) * tri]);
                backward(&g, self.scale, block, dy.as_ptr().add(off), grads, kept, scratch);
            }
        });
        // SAFETY: as in the forward, for each of the three gradients.
        let grads = unsafe { grads.written() };
        Ok((CpuStorage::F32(grads), Shape::from(3 * n)))
    }
}

/// Causal multi-head self-attention of `q`, `k`, `v` (`[B*T, d]` each, as
/// the projections give them; head `h` is columns `h*hd..(h+1)*hd`) with
/// scores scaled by `scale`: `[B*T, d]`, the heads side by side, ready for
/// the output projection. Fused on the CPU in f32, else [`causal_attention_plain`].
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, geometry: Geometry, scale: f32) -> Result<Tensor> {
    fused_attention(q, k, v, geometry, scale, geometry.chain_fits())
}

/// [`causal_attention`], its products on the chain kernel or not as `chain` says.
fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, geometry: Geometry, scale: f32, chain: bool) -> Result<Tensor> {
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        let kept = if geometry.keeps_probabilities() { Stash::for_inputs(&[q, k, v]) } else { Stash::never() };
        let op = CausalAttention { geometry, scale, chain, kept };
        q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
    } else {
        causal_attention_plain(q, k, v, geometry, scale)
    }
}

/// [`causal_attention`] composed from candle ops and the causal softmax:
/// the path off the CPU and the tests' oracle.
pub fn causal_attention_plain(q: &Tensor, k: &Tensor, v: &Tensor, geometry: Geometry, scale: f32) -> Result<Tensor> {
    let Geometry { batch: b, len: t, heads: nh, head_dim: hd } = geometry;
    let split = |x: &Tensor| x.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let att = super::ops::causal_softmax(&q.matmul(&k.t()?)?, scale)?;
    att.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * t, nh * hd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::tests::{bits, rand};
    use candle_core::{Device, Var};

    /// The fused op and the composition agree bit for bit, forward and
    /// every gradient, at the shapes of `tiny`, `small`, `paper`, ragged
    /// ones and one short enough for gemm's small-product kernels; with
    /// the products on gemm and (where it runs) on the chain kernel.
    #[test]
    fn fused_attention_equals_the_composition_bit_for_bit() {
        // The last is over the keeping limit: its first backward recomputes too.
        let geometries = [
            (3, 32, 2, 16),
            (2, 128, 4, 32),
            (1, 256, 2, 32),
            (2, 77, 3, 8),
            (16, 256, 4, 4),
            (2, 9, 2, 8),
            (2, 20, 2, 16),
        ];
        let paths = [false, true].into_iter().filter(|&chain| !chain || chain_kernel_available());
        for ((b, t, nh, hd), chain) in geometries.into_iter().flat_map(|g| paths.clone().map(move |c| (g, c))) {
            let g = Geometry { batch: b, len: t, heads: nh, head_dim: hd };
            assert_eq!(g.keeps_probabilities(), b < 16, "{g:?}");
            let chain = chain && g.chain_fits();
            let vars: Vec<Var> =
                (0..3).map(|i| Var::from_tensor(&(rand(&[b * t, nh * hd], i) * 2.0).unwrap()).unwrap()).collect();
            let (q, k, v) = (vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor());
            let scale = 1.0 / (hd as f32).sqrt();
            let fused = fused_attention(q, k, v, g, scale, chain).unwrap();
            let plain = causal_attention_plain(q, k, v, g, scale).unwrap();
            assert_eq!(bits(&fused), bits(&plain), "forward {g:?}, chain kernel {chain}");
            let w = rand(&[b * t, nh * hd], 9);
            let gf = (&fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
            // A second backward over the same graph finds no kept
            // probabilities and recomputes them: the same bits again.
            let gf2 = (&fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, x) in ["q", "k", "v"].iter().zip([q, k, v]) {
                assert_eq!(bits(gf.get(x).unwrap()), bits(gp.get(x).unwrap()), "d{name} {g:?}, chain kernel {chain}");
                let again = bits(gf2.get(x).unwrap());
                assert_eq!(again, bits(gp.get(x).unwrap()), "recomputed d{name} {g:?}, chain kernel {chain}");
            }
        }
    }

    /// Position `i` of a sequence depends only on positions `0..=i`.
    #[test]
    fn fused_attention_is_causal() {
        let g = Geometry { batch: 1, len: 12, heads: 2, head_dim: 4 };
        let (q, k, v) = (rand(&[12, 8], 1), rand(&[12, 8], 2), rand(&[12, 8], 3));
        let before = causal_attention(&q, &k, &v, g, 0.5).unwrap();
        let mut later = k.to_vec2::<f32>().unwrap();
        later[7].iter_mut().for_each(|x| *x += 1.0);
        let k2 = Tensor::new(later, &Device::Cpu).unwrap();
        let after = causal_attention(&q, &k2, &v, g, 0.5).unwrap();
        let (a, b) = (before.to_vec2::<f32>().unwrap(), after.to_vec2::<f32>().unwrap());
        assert_eq!(a[..7], b[..7], "rows before the changed key must not move");
        assert_ne!(a[7], b[7], "the changed key's own row sees it");
    }

    /// Training keeps the probabilities at `small` (2 MiB a layer) and
    /// recomputes them at `paper` (32 MiB).
    #[test]
    fn probabilities_are_kept_up_to_the_limit() {
        let small = Geometry { batch: 16, len: 128, heads: 4, head_dim: 32 };
        let paper = Geometry { batch: 32, len: 256, heads: 8, head_dim: 32 };
        assert!(small.keeps_probabilities());
        assert!(!paper.keeps_probabilities());
    }

    #[test]
    fn a_wrong_shape_is_an_error_naming_it() {
        let g = Geometry { batch: 2, len: 8, heads: 2, head_dim: 4 };
        let x = rand(&[15, 8], 1);
        let err = causal_attention(&x, &x, &x, g, 1.0).unwrap_err().to_string();
        assert!(err.contains("causal attention q") && err.contains("[15, 8]"), "{err}");
    }
}
