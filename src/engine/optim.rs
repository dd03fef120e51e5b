//! AdamW whose state outlives a call: its configuration (learning-rate
//! schedule, betas, eps, weight decay) and state (first and second moments
//! per parameter, step count), saved to and loaded from bytes so a run can
//! stop and go on with the same bits as one uninterrupted run.
//!
//! The bytes are a safetensors file: tensors `m.<name>` and `v.<name>` (each
//! in its parameter's shape) and one metadata entry `bets-optim`, a JSON
//! [`OptimHeader`] with the format version, the step count and the
//! configuration. A file of another format version is refused by name.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use super::error::OptimStateError;
use super::error::Result;

/// Elements of one rayon task of the AdamW update.
const ADAMW_TASK: usize = 1 << 14;

/// On-disk format version of optimiser state.
pub const OPTIM_FORMAT: u32 = 1;

/// The safetensors metadata key holding the [`OptimHeader`].
pub const OPTIM_META_KEY: &str = "bets-optim";

/// Linear warm-up to `lr`, then cosine decay to `min_lr_frac * lr` at `steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Steps of the whole run (the end of the cosine).
    pub steps: usize,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_frac: f64,
}

impl Schedule {
    /// Learning rate at 0-based `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps.saturating_sub(self.warmup)).max(1) as f64;
        let p = ((step - self.warmup) as f64 / span).min(1.0);
        let c = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        self.lr * (self.min_lr_frac + (1.0 - self.min_lr_frac) * c)
    }
}

/// AdamW's moment decay rates and denominator guard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Betas {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for Betas {
    /// The values every run used before they were configurable.
    fn default() -> Self {
        Betas { beta1: 0.9, beta2: 0.95, eps: 1e-8 }
    }
}

impl Betas {
    /// Whether these are [`Betas::default`] (then they are left out of hashed configs).
    pub fn is_default(&self) -> bool {
        *self == Betas::default()
    }
}

/// Everything that fixes what an AdamW step does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub schedule: Schedule,
    pub betas: Betas,
    /// Decoupled weight decay, applied to tensors of rank 2 or more only
    /// (matrices; gains are never decayed).
    pub weight_decay: f64,
}

/// The JSON header stored under [`OPTIM_META_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimHeader {
    pub format: u32,
    /// Steps taken so far.
    pub step: usize,
    pub config: AdamWConfig,
    /// Parameter names in update order.
    pub params: Vec<String>,
}

/// One parameter's moments.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    name: String,
    shape: Vec<usize>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW over a fixed, ordered list of named parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    config: AdamWConfig,
    step: usize,
    slots: Vec<Slot>,
}

impl AdamW {
    /// Fresh state (zero moments, step 0) for `params`, in update order.
    pub fn new(config: AdamWConfig, params: &[(String, Vec<usize>)]) -> AdamW {
        let slots = params
            .iter()
            .map(|(name, shape)| {
                let n = shape.iter().product();
                Slot { name: name.clone(), shape: shape.clone(), m: vec![0f32; n], v: vec![0f32; n] }
            })
            .collect();
        AdamW { config, step: 0, slots }
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The configuration.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.config.schedule.lr_at(self.step)
    }

    /// Parameter names and shapes, in update order.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.slots.iter().map(|s| (s.name.clone(), s.shape.clone())).collect()
    }

    /// Refuse state that belongs to another run (other config or parameters).
    pub fn check_matches(&self, config: &AdamWConfig, params: &[(String, Vec<usize>)]) -> Result<()> {
        if &self.config != config {
            return Err(OptimStateError::Mismatch(format!(
                "saved configuration {:?}, this run's {:?}",
                self.config, config
            ))
            .into());
        }
        if self.params() != params {
            return Err(OptimStateError::Mismatch(format!(
                "saved for {} parameters, this run trains {} (or their names or shapes differ)",
                self.slots.len(),
                params.len()
            ))
            .into());
        }
        Ok(())
    }

    /// One update of every parameter from its flat gradient, gradients first
    /// multiplied by `grad_scale` (clipping); then the step count advances.
    pub fn step(&mut self, vars: &[(String, Var)], grads: &[Vec<f32>], grad_scale: f32, device: &Device) -> Result<()> {
        if vars.len() != self.slots.len() || grads.len() != self.slots.len() {
            return Err(OptimStateError::Mismatch(format!(
                "a step of {} parameters with {} gradients, for state of {}",
                vars.len(),
                grads.len(),
                self.slots.len()
            ))
            .into());
        }
        let lr = self.lr() as f32;
        let (b, weight_decay, step) = (self.config.betas, self.config.weight_decay as f32, self.step as u32 + 1);
        // Element-wise, so running the parameters side by side and splitting
        // each over threads never changes a bit.
        vars.par_iter().zip(grads.par_iter()).zip(self.slots.par_iter_mut()).try_for_each(
            |(((_, var), g), slot)| {
                let decay = if var.rank() >= 2 { weight_decay } else { 0.0 };
                let h = kernels::AdamW { lr, beta1: b.beta1, beta2: b.beta2, eps: b.eps, weight_decay: decay };
                let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                p.par_chunks_mut(ADAMW_TASK)
                    .zip(g.par_chunks(ADAMW_TASK))
                    .zip(slot.m.par_chunks_mut(ADAMW_TASK).zip(slot.v.par_chunks_mut(ADAMW_TASK)))
                    .for_each(|((p, g), (m, v))| kernels::adamw_step(p, g, m, v, &h, step, grad_scale));
                var.set(&Tensor::from_vec(p, var.shape(), device)?)
            },
        )?;
        self.step += 1;
        Ok(())
    }

    /// The state as safetensors bytes (deterministic: one header, tensors by name).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = OptimHeader {
            format: OPTIM_FORMAT,
            step: self.step,
            config: self.config,
            params: self.slots.iter().map(|s| s.name.clone()).collect(),
        };
        let meta = HashMap::from([(OPTIM_META_KEY.to_string(), serde_json::to_string(&header).expect("serialises"))]);
        let mut tensors = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            tensors.push((format!("m.{}", s.name), Tensor::from_vec(s.m.clone(), s.shape.clone(), &Device::Cpu)?));
            tensors.push((format!("v.{}", s.name), Tensor::from_vec(s.v.clone(), s.shape.clone(), &Device::Cpu)?));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
            .map_err(|e| OptimStateError::Malformed(e.to_string()).into())
    }

    /// State from [`AdamW::to_bytes`]; an unknown format version or missing
    /// moments are named errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<AdamW> {
        let bad = |d: String| OptimStateError::Malformed(d);
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(OPTIM_META_KEY))
            .ok_or_else(|| bad(format!("no `{OPTIM_META_KEY}` header")))?;
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let found = value.get("format").and_then(serde_json::Value::as_u64).ok_or_else(|| bad("no format".into()))?;
        if found != OPTIM_FORMAT as u64 {
            return Err(OptimStateError::UnknownFormat { found: found as u32, expected: OPTIM_FORMAT }.into());
        }
        let header: OptimHeader = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let mut tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?.into_iter().collect();
        let mut slots = Vec::with_capacity(header.params.len());
        for name in &header.params {
            let mut take = |k: &str| -> Result<Tensor> {
                tensors.remove(&format!("{k}.{name}")).ok_or_else(|| bad(format!("no `{k}.{name}` tensor")).into())
            };
            let (m, v) = (take("m")?, take("v")?);
            if m.dims() != v.dims() {
                return Err(bad(format!("moments of `{name}` differ in shape")).into());
            }
            let shape = m.dims().to_vec();
            slots.push(Slot {
                name: name.clone(),
                shape,
                m: m.flatten_all()?.to_vec1::<f32>()?,
                v: v.flatten_all()?.to_vec1::<f32>()?,
            });
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(format!("unexpected tensor `{extra}`")).into());
        }
        Ok(AdamW { config: header.config, step: header.step, slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdamWConfig {
        AdamWConfig {
            schedule: Schedule { lr: 0.1, warmup: 0, steps: 10, min_lr_frac: 1.0 },
            betas: Betas::default(),
            weight_decay: 0.5,
        }
    }

    #[test]
    fn one_step_matches_the_hand_computed_adamw_update() {
        // A matrix (decayed) and a gain (not decayed), gradient 2 for every entry.
        let w = Var::from_tensor(&Tensor::from_vec(vec![1f32; 4], (2, 2), &Device::Cpu).unwrap()).unwrap();
        let g = Var::from_tensor(&Tensor::from_vec(vec![1f32; 2], 2, &Device::Cpu).unwrap()).unwrap();
        let vars = vec![("g".to_string(), g.clone()), ("w".to_string(), w.clone())];
        let mut opt = AdamW::new(config(), &[("g".into(), vec![2]), ("w".into(), vec![2, 2])]);
        opt.step(&vars, &[vec![2.0; 2], vec![2.0; 4]], 1.0, &Device::Cpu).unwrap();
        // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = 0.1 (to f32).
        let gain = g.as_tensor().to_vec1::<f32>().unwrap();
        assert!(gain.iter().all(|&x| (x - 0.9).abs() < 1e-6), "{gain:?}");
        // Decoupled decay first: 1 * (1 - 0.1 * 0.5) - 0.1 = 0.85.
        let mat = w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(mat.iter().all(|&x| (x - 0.85).abs() < 1e-6), "{mat:?}");
        assert_eq!(opt.step_count(), 1);
    }

    #[test]
    fn state_round_trips_through_bytes_exactly() {
        let w = Var::from_tensor(&Tensor::from_vec(vec![0.5f32, -1.0, 2.0], 3, &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(config(), &[("w".into(), vec![3])]);
        for k in 0..3 {
            let vars = vec![("w".to_string(), w.clone())];
            opt.step(&vars, &[vec![0.3 * k as f32, -0.7, 1.1]], 0.9, &Device::Cpu).unwrap();
        }
        let bytes = opt.to_bytes().unwrap();
        let back = AdamW::from_bytes(&bytes).unwrap();
        assert_eq!(back, opt);
        assert_eq!(back.to_bytes().unwrap(), bytes);
        assert_eq!(back.step_count(), 3);
    }

    #[test]
    fn bad_bytes_and_other_versions_are_named_errors() {
        use crate::engine::EngineError;
        let err = AdamW::from_bytes(b"not safetensors").unwrap_err();
        assert!(matches!(err, EngineError::Optim(OptimStateError::Malformed(_))), "{err}");
        let opt = AdamW::new(config(), &[("w".into(), vec![3])]);
        let bytes = opt.to_bytes().unwrap();
        let text = serde_json::to_string(&OptimHeader {
            format: OPTIM_FORMAT,
            step: 0,
            config: config(),
            params: vec!["w".into()],
        })
        .unwrap();
        let other = text.replacen(&format!("\"format\":{OPTIM_FORMAT}"), "\"format\":99", 1);
        let meta = HashMap::from([(OPTIM_META_KEY.to_string(), other)]);
        let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        let future = safetensors::serialize([("m.w", &t), ("v.w", &t)], Some(meta)).unwrap();
        let err = AdamW::from_bytes(&future).unwrap_err();
        assert!(
            matches!(err, EngineError::Optim(OptimStateError::UnknownFormat { found: 99, expected: OPTIM_FORMAT })),
            "{err}"
        );
        assert!(err.to_string().contains("format version 99"), "{err}");
        let missing =
            safetensors::serialize([("m.w", &t)], Some(HashMap::from([(OPTIM_META_KEY.to_string(), text.clone())])))
                .unwrap();
        let err = AdamW::from_bytes(&missing).unwrap_err();
        assert!(err.to_string().contains("v.w"), "{err}");
        assert!(AdamW::from_bytes(&bytes).is_ok());
        let mismatch = AdamW::from_bytes(&bytes).unwrap().check_matches(&config(), &[("x".into(), vec![3])]);
        assert!(matches!(mismatch, Err(EngineError::Optim(OptimStateError::Mismatch(_)))));
    }
}
