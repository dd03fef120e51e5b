//! Held-out evaluation: negative log-likelihood per byte, perplexity per byte
//! and bits per byte, for one model or for an output-space mixture of several.
//!
//! The text is cut into windows of `context + 1` bytes that overlap by one
//! byte, so every byte after the first is predicted exactly once.

use serde::{Deserialize, Serialize};

use super::ablate::Intervention;
use super::adapter::Adapter;
use super::base::BaseModel;
use super::error::{EngineError, Result};
use super::model::View;
use super::ops::{self, with_threads};

/// How to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Windows per forward pass.
    pub batch: usize,
    /// Evaluate only the first `max_bytes` bytes (0 = all).
    pub max_bytes: usize,
    /// Threads of the rayon pool (0 = rayon's default).
    pub threads: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { batch: 16, max_bytes: 0, threads: 0 }
    }
}

/// Held-out figures of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    /// Mean negative log-likelihood, nats per byte.
    pub nll: f64,
    /// Perplexity per byte, `exp(nll)`.
    pub ppl: f64,
    /// Bits per byte, `nll / ln 2`.
    pub bpb: f64,
    /// Bytes predicted.
    pub bytes: u64,
}

impl EvalStats {
    /// Figures from a sum of per-byte NLLs (nats) over `bytes` predictions.
    pub fn from_sum(sum_nll: f64, bytes: u64) -> EvalStats {
        let nll = sum_nll / bytes.max(1) as f64;
        EvalStats { nll, ppl: nll.exp(), bpb: nll / std::f64::consts::LN_2, bytes }
    }
}

/// `log(sum(exp(x))) - log(n)`: the log of the mean of probabilities given as logs.
pub fn log_mean_exp(logs: &[f64]) -> f64 {
    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + logs.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - (logs.len() as f64).ln()
}

/// How a view turns a batch of windows into logits: `(view, tokens, batch
/// index)`. [`plain_forward`] is every ordinary evaluation's.
type ForwardFn<'f> = &'f (dyn Fn(&View, &candle_core::Tensor, u64) -> Result<candle_core::Tensor> + Sync);

/// The ordinary forward pass.
fn plain_forward(v: &View, xs: &candle_core::Tensor, _batch: u64) -> Result<candle_core::Tensor> {
    Ok(v.forward(xs)?.logits)
}

/// Per-byte NLLs of `text` under each view, visited batch by batch:
/// `sink(nlls)` gets one `Vec<f32>` per view, aligned byte for byte.
fn for_each_batch(
    views: &[View],
    text: &[u8],
    cfg: &EvalConfig,
    forward: ForwardFn,
    sink: &mut dyn FnMut(&[Vec<f32>]),
) -> Result<()> {
    for_each_logits(views, text, cfg, forward, &mut |logits, ys| {
        let mut out = Vec::with_capacity(logits.len());
        for l in logits {
            out.push(ops::cross_entropy(l, ys)?.to_vec1::<f32>()?);
        }
        sink(&out);
        Ok(())
    })
}

/// The logits of `text` under each view, batch by batch: `sink(logits,
/// targets)` gets one `[N, vocab]` tensor per view and the `N` target bytes.
fn for_each_logits(
    views: &[View],
    text: &[u8],
    cfg: &EvalConfig,
    forward: ForwardFn,
    sink: &mut dyn FnMut(&[candle_core::Tensor], &candle_core::Tensor) -> Result<()>,
) -> Result<()> {
    let text = if cfg.max_bytes > 0 && text.len() > cfg.max_bytes { &text[..cfg.max_bytes] } else { text };
    if text.len() < 2 {
        return Err(EngineError::EmptyUser {
            user: "evaluation".into(),
            what: "held-out text".into(),
            hint: "at least 2 bytes are needed".into(),
        });
    }
    let ctx = views[0].cfg.context;
    let device = views[0].w("wte")?.device().clone();
    // (start, len) of each window's inputs; targets are shifted by one.
    let mut windows = Vec::new();
    let mut s = 0;
    while s + 1 < text.len() {
        let len = ctx.min(text.len() - 1 - s);
        windows.push((s, len));
        s += len;
    }
    let mut i = 0;
    let mut batch_index = 0u64;
    while i < windows.len() {
        let len = windows[i].1;
        let mut j = i;
        while j < windows.len() && j - i < cfg.batch.max(1) && windows[j].1 == len {
            j += 1;
        }
        let group = &windows[i..j];
        let mut xs = Vec::with_capacity(group.len() * len);
        let mut ys = Vec::with_capacity(group.len() * len);
        for &(st, l) in group {
            xs.extend(text[st..st + l].iter().map(|&b| b as u32));
            ys.extend(text[st + 1..st + l + 1].iter().map(|&b| b as u32));
        }
        let xs = candle_core::Tensor::from_vec(xs, (group.len(), len), &device)?;
        let ys = candle_core::Tensor::from_vec(ys, group.len() * len, &device)?;
        let logits = views.iter().map(|v| forward(v, &xs, batch_index)).collect::<Result<Vec<_>>>()?;
        sink(&logits, &ys)?;
        i = j;
        batch_index += 1;
    }
    Ok(())
}

/// Evaluate `base` (with `adapter` applied, if any) on held-out `text`.
pub fn evaluate(base: &BaseModel, adapter: Option<&Adapter>, text: &[u8], cfg: &EvalConfig) -> Result<EvalStats> {
    evaluate_by(base, adapter, text, cfg, &plain_forward)
}

/// [`evaluate`] with `iv` applied to every forward pass (batch `k` of the
/// text is forward call `k`, so noise is reproducible); with
/// [`Intervention::None`] it is [`evaluate`] bit for bit.
pub fn evaluate_intervened(
    base: &BaseModel,
    adapter: Option<&Adapter>,
    text: &[u8],
    cfg: &EvalConfig,
    iv: &Intervention,
) -> Result<EvalStats> {
    iv.check(base.config.layers)?;
    evaluate_by(base, adapter, text, cfg, &|v, xs, k| v.forward_intervened(xs, iv, k))
}

fn evaluate_by(
    base: &BaseModel,
    adapter: Option<&Adapter>,
    text: &[u8],
    cfg: &EvalConfig,
    forward: ForwardFn,
) -> Result<EvalStats> {
    if let Some(a) = adapter {
        a.check_against(base)?;
    }
    with_threads(cfg.threads, || {
        let view = base.view_with(adapter);
        let (mut sum, mut n) = (0f64, 0u64);
        for_each_batch(std::slice::from_ref(&view), text, cfg, forward, &mut |nll| {
            sum += nll[0].iter().map(|&x| x as f64).sum::<f64>();
            n += nll[0].len() as u64;
        })?;
        Ok(EvalStats::from_sum(sum, n))
    })
}

/// Evaluate the output-space mixture of several adapter-conditioned models:
/// `p(byte) = mean_i p_i(byte)`, i.e. `logsumexp_i log p_i - log N` per byte.
/// `None` entries stand for the base model itself.
pub fn evaluate_mixture(
    base: &BaseModel,
    adapters: &[Option<&Adapter>],
    text: &[u8],
    cfg: &EvalConfig,
) -> Result<EvalStats> {
    if adapters.is_empty() {
        return Err(EngineError::Config("a mixture needs at least one model".into()));
    }
    for a in adapters.iter().flatten() {
        a.check_against(base)?;
    }
    with_threads(cfg.threads, || {
        let views: Vec<View> = adapters.iter().map(|a| base.view_with(*a)).collect();
        let (mut sum, mut n) = (0f64, 0u64);
        let mut logs = vec![0f64; views.len()];
        for_each_batch(&views, text, cfg, &plain_forward, &mut |nll| {
            for k in 0..nll[0].len() {
                for (l, m) in logs.iter_mut().zip(nll) {
                    *l = -(m[k] as f64);
                }
                sum -= log_mean_exp(&logs);
            }
            n += nll[0].len() as u64;
        })?;
        Ok(EvalStats::from_sum(sum, n))
    })
}

/// Held-out figures of N specialists alone and combined per byte
/// ([`super::mixture`]): each single, the mixture and the product of experts,
/// all from the same logits.
#[derive(Debug, Clone, PartialEq)]
pub struct CombinedStats {
    pub singles: Vec<EvalStats>,
    pub mixture: EvalStats,
    pub product: EvalStats,
}

/// Evaluate `adapters` over `base` alone, as their mixture and as their
/// product of experts, on held-out `text`.
pub fn evaluate_combined(
    base: &BaseModel,
    adapters: &[&Adapter],
    text: &[u8],
    cfg: &EvalConfig,
) -> Result<CombinedStats> {
    if adapters.is_empty() {
        return Err(EngineError::Config("a combination needs at least one specialist".into()));
    }
    for a in adapters {
        a.check_against(base)?;
    }
    with_threads(cfg.threads, || {
        let views: Vec<View> = adapters.iter().map(|a| a.view(base)).collect();
        let (mut singles, mut mixture, mut product, mut n) = (vec![0f64; views.len()], 0f64, 0f64, 0u64);
        for_each_logits(&views, text, cfg, &plain_forward, &mut |logits, ys| {
            let rows: Vec<Vec<Vec<f32>>> =
                logits.iter().map(|l| l.to_vec2::<f32>()).collect::<candle_core::Result<_>>()?;
            for (k, &y) in ys.to_vec1::<u32>()?.iter().enumerate() {
                let per: Vec<&[f32]> = rows.iter().map(|r| r[k].as_slice()).collect();
                let c = super::mixture::combine(&per, y as usize);
                for (s, l) in singles.iter_mut().zip(&c.singles) {
                    *s -= l;
                }
                mixture -= c.mixture;
                product -= c.product;
                n += 1;
            }
            Ok(())
        })?;
        Ok(CombinedStats {
            singles: singles.into_iter().map(|s| EvalStats::from_sum(s, n)).collect(),
            mixture: EvalStats::from_sum(mixture, n),
            product: EvalStats::from_sum(product, n),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_is_exp_of_mean_nll_on_a_hand_built_case() {
        // Three bytes predicted with probabilities 1/2, 1/4, 1/8: NLLs ln2, 2ln2, 3ln2.
        let ln2 = std::f64::consts::LN_2;
        let s = EvalStats::from_sum(ln2 + 2.0 * ln2 + 3.0 * ln2, 3);
        assert!((s.nll - 2.0 * ln2).abs() < 1e-12);
        assert!((s.ppl - 4.0).abs() < 1e-12, "ppl {}", s.ppl);
        assert!((s.bpb - 2.0).abs() < 1e-12, "bpb {}", s.bpb);
    }

    #[test]
    fn one_specialist_combined_is_that_specialist_and_agrees_with_evaluate() {
        let cfg = crate::engine::config::Profile::from_name("tiny").unwrap().model;
        let base = BaseModel::random(&cfg, 2, &candle_core::Device::Cpu).unwrap();
        let names = crate::engine::model::gain_names(&cfg);
        let tensors = names.iter().map(|n| (n.clone(), (base.weights[n].clone() * 1.1).unwrap())).collect();
        let adapter = Adapter {
            kind: crate::engine::Trainable::NormOnly,
            base_hash: base.hash.clone(),
            lora_scale: 1.0,
            tensors,
        };
        let text: Vec<u8> = (0..300u32).map(|i| b"abcdefgh \n"[(i * 7 % 10) as usize]).collect();
        let ecfg = EvalConfig { batch: 4, ..Default::default() };
        let c = evaluate_combined(&base, &[&adapter], &text, &ecfg).unwrap();
        assert_eq!(c.mixture.nll.to_bits(), c.singles[0].nll.to_bits(), "log-mean-exp of one term is that term");
        assert!((c.product.nll - c.singles[0].nll).abs() < 1e-9);
        let plain = evaluate(&base, Some(&adapter), &text, &ecfg).unwrap();
        assert_eq!(plain.bytes, c.singles[0].bytes);
        assert!((plain.nll - c.singles[0].nll).abs() < 1e-5, "{} vs {}", plain.nll, c.singles[0].nll);
        // Two copies of one specialist: their mixture is that specialist.
        let two = evaluate_combined(&base, &[&adapter, &adapter], &text, &ecfg).unwrap();
        assert!((two.mixture.nll - c.mixture.nll).abs() < 1e-12);
        assert!(evaluate_combined(&base, &[], &text, &ecfg).is_err());
    }

    #[test]
    fn evaluation_without_an_intervention_is_the_ordinary_evaluation_bit_for_bit() {
        let cfg = crate::engine::config::Profile::from_name("tiny").unwrap().model;
        let base = BaseModel::random(&cfg, 1, &candle_core::Device::Cpu).unwrap();
        let text: Vec<u8> = (0..300u32).map(|i| b"abcdefgh \n"[(i * 7 % 10) as usize]).collect();
        let ecfg = EvalConfig { batch: 4, ..Default::default() };
        let plain = evaluate(&base, None, &text, &ecfg).unwrap();
        let none = evaluate_intervened(&base, None, &text, &ecfg, &Intervention::None).unwrap();
        assert_eq!(plain.nll.to_bits(), none.nll.to_bits());
        let silent = Intervention::Noise { boundary: 1, sigma: 0.0, seed: 3 };
        assert_eq!(evaluate_intervened(&base, None, &text, &ecfg, &silent).unwrap().nll.to_bits(), plain.nll.to_bits());
        let skip = evaluate_intervened(&base, None, &text, &ecfg, &Intervention::SkipBlock(0)).unwrap();
        assert_ne!(skip.nll, plain.nll);
        assert_eq!(skip.bytes, plain.bytes);
        assert!(evaluate_intervened(&base, None, &text, &ecfg, &Intervention::SkipBlock(2)).is_err());
    }

    #[test]
    fn log_mean_exp_averages_probabilities() {
        let v = log_mean_exp(&[(0.5f64).ln(), (0.25f64).ln()]);
        assert!((v - (0.375f64).ln()).abs() < 1e-12);
        assert!((log_mean_exp(&[-3.0]) + 3.0).abs() < 1e-12);
    }
}
