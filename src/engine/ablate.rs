//! Interventions for the falsification bets, beside the ordinary paths and
//! never inside them: a forward pass with one block skipped or with noise
//! added at a block boundary ([`Intervention`], run through the staged
//! forward), experts of every MoE block collapsed into their average
//! ([`collapse_experts`]), and the linear interpolation of two models'
//! weights ([`interpolate`]). With [`Intervention::None`] the forward is
//! [`View::forward`]'s, bit for bit.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::base::{BaseModel, hash_json};
use super::error::{EngineError, Result};
use super::model::{View, Weights, normal_vec, tensor_seed};

/// What to do to a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Intervention {
    /// Nothing: the full forward.
    None,
    /// Block `i` is the identity on the residual stream (it is not run).
    SkipBlock(usize),
    /// Before block `boundary` runs (`0..=layers`; `layers` is before the
    /// head), add Gaussian noise of standard deviation `sigma` times each
    /// token's RMS over `d_model` to the residual stream; the draws depend
    /// on `seed` and the forward's `call` index only.
    Noise { boundary: usize, sigma: f64, seed: u64 },
}

impl Intervention {
    /// Refuse a block or boundary the model does not have, or a bad sigma.
    pub fn check(&self, layers: usize) -> Result<()> {
        match *self {
            Intervention::None => Ok(()),
            Intervention::SkipBlock(i) if i < layers => Ok(()),
            Intervention::SkipBlock(i) => {
                Err(EngineError::Config(format!("cannot skip block {i}: the model has blocks 0..{layers}")))
            }
            Intervention::Noise { boundary, sigma, .. } => {
                if boundary > layers {
                    Err(EngineError::Config(format!("noise boundary {boundary} is past the model's {layers} blocks")))
                } else if !(sigma.is_finite() && sigma >= 0.0) {
                    Err(EngineError::Config(format!("noise sigma {sigma} must be finite and non-negative")))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// `x [N, d]` plus `sigma * rms(row) * N(0, 1)` per element, the draws seeded
/// by `seed`; `sigma = 0` returns `x` itself.
pub fn relative_noise(x: &Tensor, sigma: f64, seed: u64) -> Result<Tensor> {
    if sigma == 0.0 {
        return Ok(x.clone());
    }
    let (n, d) = x.dims2()?;
    let rms = x.sqr()?.mean_keepdim(D::Minus1)?.sqrt()?;
    let z = Tensor::from_vec(normal_vec(n * d, 1.0, seed), (n, d), x.device())?.to_dtype(x.dtype())?;
    Ok((x + (z.broadcast_mul(&rms)? * sigma)?)?)
}

impl View<'_> {
    /// Logits (`[B*T, vocab]`) of `tokens` (`[B, T]`) with `iv` applied; `call`
    /// numbers the forward (a batch index) so noise differs between batches
    /// yet is reproducible. [`Intervention::None`] is [`View::forward`].
    pub fn forward_intervened(&self, tokens: &Tensor, iv: &Intervention, call: u64) -> Result<Tensor> {
        let layers = self.cfg.layers;
        iv.check(layers)?;
        let h = self.embed(tokens)?;
        let h = match *iv {
            Intervention::None => self.forward_blocks(0..layers, h, None)?,
            Intervention::SkipBlock(i) => {
                let h = self.forward_blocks(0..i, h, None)?;
                self.forward_blocks(i + 1..layers, h, None)?
            }
            Intervention::Noise { boundary, sigma, seed } => {
                let mut h = self.forward_blocks(0..boundary, h, None)?;
                h.x = relative_noise(&h.x, sigma, tensor_seed(seed, &format!("hidden-noise/{call}")))?;
                self.forward_blocks(boundary..layers, h, None)?
            }
        };
        self.head(&h)
    }
}

/// What happens to the router when experts are collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouterMode {
    /// The trained router is kept: it still picks an expert (all now equal)
    /// and its softmax probability still scales the output.
    Kept,
    /// The router's weights are zeroed: every expert has probability
    /// `1 / experts`, token 0's argmax (expert 0) is taken, and the output is
    /// scaled by `1 / experts`.
    Uniform,
}

/// `base` with, in every MoE block, every expert's up and down weights
/// replaced by the element-wise mean over the block's experts (computed in
/// f64, so averaging identical experts returns them bit for bit), and the
/// router as `router` says. A dense model (one expert) is returned as it is
/// under a new hash.
pub fn collapse_experts(base: &BaseModel, router: RouterMode) -> Result<BaseModel> {
    let cfg = &base.config;
    let mut weights = base.weights.clone();
    if cfg.experts > 1 {
        for l in 0..cfg.layers {
            for part in ["up", "down"] {
                let names: Vec<String> =
                    (0..cfg.experts).map(|e| format!("blocks.{l}.moe.experts.{e}.{part}.weight")).collect();
                let mut sum = base.weights[&names[0]].to_dtype(DType::F64)?;
                for n in &names[1..] {
                    sum = (sum + base.weights[n].to_dtype(DType::F64)?)?;
                }
                let mean = (sum / cfg.experts as f64)?.to_dtype(base.weights[&names[0]].dtype())?;
                for n in names {
                    weights.insert(n, mean.clone());
                }
            }
            if router == RouterMode::Uniform {
                let name = format!("blocks.{l}.moe.router.weight");
                let zeros = base.weights[&name].zeros_like()?;
                weights.insert(name, zeros);
            }
        }
    }
    let hash = hash_json(&(&base.hash, "collapse-experts", router));
    Ok(BaseModel::from_weights(cfg.clone(), weights, hash, base.device.clone()))
}

/// `(1 - alpha) * a + alpha * b` for every tensor, in f32 (so `alpha = 0`
/// gives `a` and `alpha = 1` gives `b` bit for bit). Both must have the same
/// names and shapes.
pub fn interpolate(a: &Weights, b: &Weights, alpha: f64) -> Result<Weights> {
    if !alpha.is_finite() {
        return Err(EngineError::Config(format!("interpolation alpha {alpha} is not finite")));
    }
    let names_a: Vec<&String> = a.keys().collect();
    let names_b: Vec<&String> = b.keys().collect();
    if names_a != names_b {
        return Err(EngineError::Config("interpolated models have different tensors".into()));
    }
    let mut out = Weights::new();
    for (name, ta) in a {
        let tb = &b[name];
        if ta.dims() != tb.dims() {
            return Err(EngineError::Config(format!("`{name}` has shapes {:?} and {:?}", ta.dims(), tb.dims())));
        }
        out.insert(name.clone(), ((ta * (1.0 - alpha))? + (tb * alpha)?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::{ModelConfig, Profile};
    use crate::engine::train::Batcher;
    use candle_core::Device;

    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! \
how vexingly quick daft zebras jump; sphinx of black quartz, judge my vow.";

    fn cfg(layers: usize, experts: usize) -> ModelConfig {
        ModelConfig { layers, experts, ..Profile::from_name("tiny").unwrap().model }
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    fn batch() -> Tensor {
        Batcher::new(TEXT, 32, 1).unwrap().next(3, &Device::Cpu).unwrap().0
    }

    #[test]
    fn no_intervention_is_the_full_forward_bit_for_bit() {
        let base = BaseModel::random(&cfg(3, 2), 5, &Device::Cpu).unwrap();
        let view = base.view();
        let xs = batch();
        let full = view.forward(&xs).unwrap().logits;
        assert_eq!(bits(&view.forward_intervened(&xs, &Intervention::None, 0).unwrap()), bits(&full));
        let silent = Intervention::Noise { boundary: 1, sigma: 0.0, seed: 9 };
        assert_eq!(bits(&view.forward_intervened(&xs, &silent, 4).unwrap()), bits(&full), "sigma 0 is the identity");
        for i in 0..3 {
            let skipped = view.forward_intervened(&xs, &Intervention::SkipBlock(i), 0).unwrap();
            assert_ne!(bits(&skipped), bits(&full), "skipping block {i} changes a random model");
        }
    }

    #[test]
    fn skipping_a_block_that_adds_nothing_is_the_full_forward_bit_for_bit() {
        // Block 1 with zero output projections adds exactly zero to the
        // residual stream, so skipping it must change no bit, and skipping
        // block 0 (which does add something) must.
        let mut base = BaseModel::random(&cfg(3, 2), 6, &Device::Cpu).unwrap();
        for name in
            ["blocks.1.attn.o.weight", "blocks.1.moe.experts.0.down.weight", "blocks.1.moe.experts.1.down.weight"]
        {
            let z = base.weights[name].zeros_like().unwrap();
            base.weights.insert(name.into(), z);
        }
        let view = base.view();
        let xs = batch();
        let full = bits(&view.forward(&xs).unwrap().logits);
        assert_eq!(bits(&view.forward_intervened(&xs, &Intervention::SkipBlock(1), 0).unwrap()), full);
        assert_ne!(bits(&view.forward_intervened(&xs, &Intervention::SkipBlock(0), 0).unwrap()), full);
        assert!(view.forward_intervened(&xs, &Intervention::SkipBlock(3), 0).is_err(), "no block 3");
    }

    #[test]
    fn noise_is_relative_to_each_rows_rms_seeded_and_differs_by_call() {
        let x = Tensor::from_vec(vec![3f32, 4.0, 0.0, 0.0, 30.0, 40.0, 0.0, 0.0], (2, 4), &Device::Cpu).unwrap();
        let a = relative_noise(&x, 0.1, 1).unwrap();
        assert_eq!(bits(&a), bits(&relative_noise(&x, 0.1, 1).unwrap()), "seeded");
        assert_ne!(bits(&a), bits(&relative_noise(&x, 0.1, 2).unwrap()));
        // Row 1 is row 0 times 10, so with the same standard draws its noise is 10x:
        // the noise is the same draws scaled by sigma * rms (rms 2.5 and 25).
        let d = (a - &x).unwrap().to_vec2::<f32>().unwrap();
        let z = normal_vec(8, 1.0, 1);
        for (k, zk) in z.iter().enumerate() {
            let rms = if k < 4 { 2.5 } else { 25.0 };
            assert!((d[k / 4][k % 4] - 0.1 * rms * zk).abs() < 1e-5, "element {k}");
        }
        let base = BaseModel::random(&cfg(2, 2), 7, &Device::Cpu).unwrap();
        let view = base.view();
        let iv = Intervention::Noise { boundary: 1, sigma: 1e-2, seed: 3 };
        let xs = batch();
        let c0 = bits(&view.forward_intervened(&xs, &iv, 0).unwrap());
        assert_eq!(c0, bits(&view.forward_intervened(&xs, &iv, 0).unwrap()));
        assert_ne!(c0, bits(&view.forward_intervened(&xs, &iv, 1).unwrap()), "another batch, other draws");
        assert!(Intervention::Noise { boundary: 3, sigma: 0.1, seed: 0 }.check(2).is_err());
        assert!(Intervention::Noise { boundary: 2, sigma: -0.1, seed: 0 }.check(2).is_err());
    }

    #[test]
    fn averaging_identical_experts_is_the_identity_bit_for_bit() {
        for experts in [2, 3, 4] {
            let mut base = BaseModel::random(&cfg(2, experts), 8, &Device::Cpu).unwrap();
            for l in 0..2 {
                for part in ["up", "down"] {
                    let first = base.weights[&format!("blocks.{l}.moe.experts.0.{part}.weight")].clone();
                    for e in 1..experts {
                        base.weights.insert(format!("blocks.{l}.moe.experts.{e}.{part}.weight"), first.clone());
                    }
                }
            }
            let kept = collapse_experts(&base, RouterMode::Kept).unwrap();
            assert_eq!(kept.weights_bytes().unwrap(), base.weights_bytes().unwrap(), "{experts} experts");
            assert_ne!(kept.hash, base.hash, "a collapsed model is named apart from its base");
        }
    }

    #[test]
    fn collapse_averages_distinct_experts_and_a_uniform_router_scales_by_one_over_experts() {
        let base = BaseModel::random(&cfg(2, 2), 9, &Device::Cpu).unwrap();
        let kept = collapse_experts(&base, RouterMode::Kept).unwrap();
        let w = |m: &BaseModel, n: &str| m.weights[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (e0, e1) = (w(&base, "blocks.1.moe.experts.0.up.weight"), w(&base, "blocks.1.moe.experts.1.up.weight"));
        let avg = w(&kept, "blocks.1.moe.experts.1.up.weight");
        assert_eq!(avg, w(&kept, "blocks.1.moe.experts.0.up.weight"));
        assert!(avg.iter().zip(e0.iter().zip(&e1)).all(|(m, (a, b))| (m - (a + b) / 2.0).abs() < 1e-7));
        assert_eq!(w(&kept, "blocks.1.moe.router.weight"), w(&base, "blocks.1.moe.router.weight"));
        let uniform = collapse_experts(&base, RouterMode::Uniform).unwrap();
        assert!(w(&uniform, "blocks.0.moe.router.weight").iter().all(|&x| x == 0.0));
        // Same experts, so the uniform model's block output is the kept one's
        // expert output scaled by 1/2 instead of by the router's top probability.
        let h = Tensor::from_vec(normal_vec(5 * 32, 1.0, 2), (5, 32), &Device::Cpu).unwrap();
        let moe = View::new(&uniform.config, &uniform.weights).moe("blocks.0", &h).unwrap();
        let (yu, ru) = (moe.y, moe.routes);
        assert_eq!(ru, vec![0; 5]);
        let ye = View::new(&kept.config, &kept.weights).expert("blocks.0", 0, &h).unwrap();
        let diff = (yu - (ye * 0.5).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn interpolation_at_zero_and_one_reproduces_the_parents_bit_for_bit() {
        let a = BaseModel::random(&cfg(2, 2), 10, &Device::Cpu).unwrap();
        let b = BaseModel::random(&cfg(2, 2), 11, &Device::Cpu).unwrap();
        let bytes = |w: Weights| BaseModel::from_weights(a.config.clone(), w, "x".into(), Device::Cpu).weights_bytes();
        assert_eq!(bytes(interpolate(&a.weights, &b.weights, 0.0).unwrap()).unwrap(), a.weights_bytes().unwrap());
        assert_eq!(bytes(interpolate(&a.weights, &b.weights, 1.0).unwrap()).unwrap(), b.weights_bytes().unwrap());
        let mid = interpolate(&a.weights, &b.weights, 0.5).unwrap();
        let (x, y, m) = (&a.weights["wte"], &b.weights["wte"], &mid["wte"]);
        let want = ((x + y).unwrap() * 0.5).unwrap();
        assert!((m - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-6);
        let other = BaseModel::random(&cfg(3, 2), 12, &Device::Cpu).unwrap();
        assert!(interpolate(&a.weights, &other.weights, 0.5).is_err(), "different tensors");
        assert!(interpolate(&a.weights, &b.weights, f64::NAN).is_err());
    }
}
