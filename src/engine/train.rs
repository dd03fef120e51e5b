//! Training: AdamW ([`super::optim`]) with linear warm-up and cosine decay,
//! global-norm gradient clipping, seeded data order, and the trainable sets
//! of [`Trainable`].
//!
//! The same loop pre-trains a base (every weight trainable from a seeded
//! init) and fine-tunes adapters (only the chosen tensors are candle `Var`s;
//! every other weight takes the frozen path, so no gradient is computed for it).
//! A run can stop after any step and go on later from its tensors and
//! optimiser state (`*_resume`), with the bits of one uninterrupted run.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::adapter::{Adapter, Trainable, expected_shapes};
use super::base::BaseModel;
use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::model::{TernaryLinears, View, Weights, normal_vec, tensor_seed};
use super::ops;
pub use super::ops::with_threads;
use super::optim::{AdamW, AdamWConfig, Betas, Schedule};

/// Hyper-parameters of one training run. Everything that changes the result
/// is here, so callers can hash it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Bytes per sequence (at most the model's context).
    pub seq: usize,
    /// Seed of the data order (and of LoRA's `A` init).
    pub seed: u64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    pub min_lr_frac: f64,
    /// Decoupled weight decay (matrices only; gains are never decayed).
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Weight of the MoE load-balancing loss.
    pub aux_weight: f64,
    /// LoRA multiplier alpha / rank.
    pub lora_scale: f64,
    /// Threads of the rayon pool the run uses (0 = rayon's default).
    pub threads: usize,
    /// AdamW's betas and eps; left out of the serialised (hashed) form while
    /// they are the defaults every run used before they were configurable.
    #[serde(default, skip_serializing_if = "Betas::is_default")]
    pub betas: Betas,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 1e-3,
            steps: 100,
            batch: 8,
            seq: 64,
            seed: 0,
            warmup: 10,
            min_lr_frac: 0.1,
            weight_decay: 0.01,
            clip: 1.0,
            aux_weight: 0.01,
            lora_scale: 2.0,
            threads: 0,
            betas: Betas::default(),
        }
    }
}

impl TrainConfig {
    /// Learning rate at 0-based `step`: linear warm-up, then cosine to `min_lr_frac * lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.schedule().lr_at(step)
    }

    /// The learning-rate schedule of this run.
    pub fn schedule(&self) -> Schedule {
        Schedule { lr: self.lr, warmup: self.warmup, steps: self.steps, min_lr_frac: self.min_lr_frac }
    }

    /// The optimiser configuration of this run.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig { schedule: self.schedule(), betas: self.betas, weight_decay: self.weight_decay }
    }
}

/// What a training run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    pub steps: usize,
    /// Bytes predicted (batch x seq x steps).
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Cross-entropy (nats per byte) of the first batch.
    pub first_loss: f64,
    /// Mean cross-entropy of the last `min(10, steps)` batches.
    pub final_loss: f64,
    /// Cross-entropy of every step.
    pub losses: Vec<f32>,
    /// Scalars updated by the optimiser.
    pub trainable_params: usize,
}

/// Seeded sampler of `[batch, seq+1]` windows of a text.
pub struct Batcher<'a> {
    text: &'a [u8],
    seq: usize,
    rng: ChaCha8Rng,
}

impl<'a> Batcher<'a> {
    /// A sampler over `text`; `seq` is shortened if the text is short.
    pub fn new(text: &'a [u8], seq: usize, seed: u64) -> Result<Batcher<'a>> {
        if text.len() < 2 {
            return Err(EngineError::EmptyUser {
                user: "training".into(),
                what: "training text".into(),
                hint: "at least 2 bytes are needed".into(),
            });
        }
        let seq = seq.min(text.len() - 1);
        Ok(Batcher { text, seq, rng: ChaCha8Rng::seed_from_u64(tensor_seed(seed, "data-order")) })
    }

    /// Inputs and next-byte targets, both `[batch, seq]` u32.
    pub fn next(&mut self, batch: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut xs = Vec::with_capacity(batch * self.seq);
        let mut ys = Vec::with_capacity(batch * self.seq);
        for _ in 0..batch {
            let start = self.draw();
            let w = &self.text[start..start + self.seq + 1];
            xs.extend(w[..self.seq].iter().map(|&b| b as u32));
            ys.extend(w[1..].iter().map(|&b| b as u32));
        }
        Ok((Tensor::from_vec(xs, (batch, self.seq), device)?, Tensor::from_vec(ys, (batch, self.seq), device)?))
    }

    /// Skip the windows of `batches` batches of `batch` (resuming a run
    /// draws exactly what the uninterrupted run drew).
    pub fn skip(&mut self, batches: usize, batch: usize) {
        for _ in 0..batches * batch {
            self.draw();
        }
    }

    fn draw(&mut self) -> usize {
        self.rng.random_range(0..=self.text.len() - self.seq - 1)
    }

    /// The sequence length actually used.
    pub fn seq(&self) -> usize {
        self.seq
    }
}

/// The tensors a run trains, sorted by name; `lora` marks LoRA factors.
struct Params {
    vars: Vec<(String, Var)>,
    lora: bool,
}

impl Params {
    fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.vars.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect()
    }
}

fn make_params(kind: &Trainable, base: &BaseModel, cfg: &TrainConfig, from: Option<&Adapter>) -> Result<Params> {
    let shapes = expected_shapes(kind, base);
    let mut vars = Vec::new();
    let lora = matches!(kind, Trainable::Lora { .. });
    for (name, shape) in shapes {
        let t = if let Some(a) = from {
            a.tensors[&name].copy()?
        } else if lora {
            if name.ends_with(".lora_b") {
                Tensor::zeros(shape, candle_core::DType::F32, &base.device)?
            } else {
                let std = 1.0 / (shape[0] as f32).sqrt();
                let n = shape.iter().product();
                Tensor::from_vec(normal_vec(n, std, tensor_seed(cfg.seed, &name)), shape, &base.device)?
            }
        } else {
            base.weights[&name].copy()?
        };
        vars.push((name, Var::from_tensor(&t)?));
    }
    Ok(Params { vars, lora })
}

/// The optimiser a run goes on with: `from` checked against the run, or fresh.
fn optimiser(cfg: &TrainConfig, params: &Params, from: Option<AdamW>) -> Result<AdamW> {
    let config = cfg.adamw();
    match from {
        Some(opt) => {
            opt.check_matches(&config, &params.shapes())?;
            Ok(opt)
        }
        None => Ok(AdamW::new(config, &params.shapes())),
    }
}

/// Core loop shared by pre-training and fine-tuning: steps
/// `optim.step_count()..until`. `on_step(step, loss)` is called after every
/// step (progress bars).
#[allow(clippy::too_many_arguments)]
fn run(
    model_cfg: &ModelConfig,
    base: &Weights,
    ternary: Option<&TernaryLinears>,
    params: &Params,
    optim: &mut AdamW,
    until: usize,
    text: &[u8],
    cfg: &TrainConfig,
    device: &Device,
    on_step: &mut dyn FnMut(usize, f32),
) -> Result<TrainStats> {
    let seq = cfg.seq.min(model_cfg.context);
    let mut batcher = Batcher::new(text, seq, cfg.seed)?;
    let start = optim.step_count();
    batcher.skip(start, cfg.batch);
    let steps = until.saturating_sub(start);
    let mut losses = Vec::with_capacity(steps);
    let t0 = Instant::now();
    for step in start..until {
        let (xs, ys) = batcher.next(cfg.batch, device)?;
        let (loss_val, gs) = batch_gradients(model_cfg, base, ternary, params, &xs, &ys, cfg)?;
        let scale = clip_scale(&gs, cfg.clip);
        optim.step(&params.vars, &gs, scale, device)?;
        losses.push(loss_val);
        on_step(step, loss_val);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let tokens = (steps * cfg.batch * batcher.seq()) as u64;
    Ok(TrainStats::of(losses, tokens, seconds, params.vars.iter().map(|(_, v)| v.elem_count()).sum()))
}

impl TrainStats {
    /// The statistics of a run from the loss of each of its steps, the
    /// bytes it predicted and its wall time.
    pub fn of(losses: Vec<f32>, tokens: u64, seconds: f64, trainable_params: usize) -> TrainStats {
        let tail = &losses[losses.len().saturating_sub(10)..];
        TrainStats {
            steps: losses.len(),
            tokens,
            seconds,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            first_loss: losses.first().copied().unwrap_or(f32::NAN) as f64,
            final_loss: if tail.is_empty() {
                f64::NAN
            } else {
                tail.iter().map(|&x| x as f64).sum::<f64>() / tail.len() as f64
            },
            losses,
            trainable_params,
        }
    }
}

/// The cross-entropy of one batch (without the auxiliary term) and the flat
/// gradient of every parameter of `params` (zeros where none flows).
fn batch_gradients(
    model_cfg: &ModelConfig,
    base: &Weights,
    ternary: Option<&TernaryLinears>,
    params: &Params,
    xs: &Tensor,
    ys: &Tensor,
    cfg: &TrainConfig,
) -> Result<(f32, Vec<Vec<f32>>)> {
    let mut view = View::new(model_cfg, base);
    view.ternary = ternary;
    for (name, var) in &params.vars {
        if params.lora {
            view.lora.insert(name.clone(), var.as_tensor().clone());
        } else {
            view.over.insert(name.clone(), var.as_tensor().clone());
        }
    }
    view.lora_scale = cfg.lora_scale;
    let fwd = view.forward(xs)?;
    let nll = ops::cross_entropy(&fwd.logits, &ys.flatten_all()?)?.mean_all()?;
    let loss_val = nll.to_scalar::<f32>()?;
    let loss = match (&fwd.aux, cfg.aux_weight) {
        (Some(a), w) if w > 0.0 => (&nll + (a * w)?)?,
        _ => nll,
    };
    let grads = loss.backward()?;
    // Copied out side by side: at `paper` they are 72 MB a step.
    let gs = params
        .vars
        .par_iter()
        .map(|(_, var)| {
            Ok(match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0f32; var.elem_count()],
            })
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    Ok((loss_val, gs))
}

/// The factor that clips gradients `gs` to global norm `clip` (1 when the
/// norm is within it or not finite).
pub fn clip_scale(gs: &[Vec<f32>], clip: f64) -> f32 {
    let norm: f64 = gs.iter().flatten().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt();
    if norm > clip && norm.is_finite() { (clip / norm) as f32 } else { 1.0 }
}

/// Gradients of every weight of `weights` (sorted by name, as
/// [`train_full`] orders them) on the batch `xs` -> `ys`, and its
/// cross-entropy: one data-parallel worker's share of a synchronous step.
pub fn full_gradients(
    model_cfg: &ModelConfig,
    weights: &Weights,
    xs: &Tensor,
    ys: &Tensor,
    cfg: &TrainConfig,
) -> Result<(f32, Vec<Vec<f32>>)> {
    with_threads(cfg.threads, || {
        let vars: Vec<(String, Var)> =
            weights.iter().map(|(n, t)| Ok((n.clone(), Var::from_tensor(t)?))).collect::<Result<_>>()?;
        batch_gradients(model_cfg, &Weights::new(), None, &Params { vars, lora: false }, xs, ys, cfg)
    })
}

/// Fine-tune `base` on `text`, changing only the `kind` tensors; returns the
/// adapter (apart from the base) and the run's statistics.
pub fn finetune(base: &BaseModel, kind: Trainable, text: &[u8], cfg: &TrainConfig) -> Result<(Adapter, TrainStats)> {
    finetune_with(base, kind, text, cfg, &mut |_, _| {})
}

/// [`finetune`] with a per-step callback `(step, loss)`.
pub fn finetune_with(
    base: &BaseModel,
    kind: Trainable,
    text: &[u8],
    cfg: &TrainConfig,
    on_step: &mut (dyn FnMut(usize, f32) + Send),
) -> Result<(Adapter, TrainStats)> {
    let (adapter, _, stats) = finetune_resume(base, kind, text, cfg, None, cfg.steps, on_step)?;
    Ok((adapter, stats))
}

/// Fine-tune up to step `until` (at most `cfg.steps`, which still sets the
/// schedule): from scratch when `from` is `None`, else going on from a
/// stopped run's adapter and optimiser state. Stopping at `k` and resuming
/// to `cfg.steps` gives the bits of one run; the stats cover this call's steps.
pub fn finetune_resume(
    base: &BaseModel,
    kind: Trainable,
    text: &[u8],
    cfg: &TrainConfig,
    from: Option<(&Adapter, AdamW)>,
    until: usize,
    on_step: &mut (dyn FnMut(usize, f32) + Send),
) -> Result<(Adapter, AdamW, TrainStats)> {
    if base.is_ternary() && !matches!(kind, Trainable::None | Trainable::NormOnly) {
        return Err(EngineError::Config(format!(
            "a ternary base is frozen: only norm-only adapters train on it, not {kind}"
        )));
    }
    with_threads(cfg.threads, || {
        let (from_adapter, from_optim) = match from {
            Some((a, o)) => {
                if a.kind != kind || a.base_hash != base.hash {
                    return Err(EngineError::AdapterMismatch(format!(
                        "resuming a {} run from a {} adapter (or on another base)",
                        kind, a.kind
                    )));
                }
                a.check_against(base)?;
                (Some(a), Some(o))
            }
            None => (None, None),
        };
        let params = make_params(&kind, base, cfg, from_adapter)?;
        let mut optim = optimiser(cfg, &params, from_optim)?;
        let stats = if kind == Trainable::None {
            TrainStats {
                steps: 0,
                tokens: 0,
                seconds: 0.0,
                tokens_per_s: 0.0,
                first_loss: f64::NAN,
                final_loss: f64::NAN,
                losses: vec![],
                trainable_params: 0,
            }
        } else {
            let until = until.min(cfg.steps);
            let ternary = base.ternary.as_deref();
            run(&base.config, &base.weights, ternary, &params, &mut optim, until, text, cfg, &base.device, on_step)?
        };
        let tensors: BTreeMap<String, Tensor> =
            params.vars.iter().map(|(n, v)| (n.clone(), v.as_detached_tensor())).collect();
        let adapter = Adapter { kind, base_hash: base.hash.clone(), lora_scale: cfg.lora_scale, tensors };
        Ok((adapter, optim, stats))
    })
}

/// Train every weight of `weights` in place on `text` (pre-training).
pub fn train_full(
    model_cfg: &ModelConfig,
    weights: &mut Weights,
    text: &[u8],
    cfg: &TrainConfig,
    device: &Device,
    on_step: &mut (dyn FnMut(usize, f32) + Send),
) -> Result<TrainStats> {
    let (stats, _) = train_full_resume(model_cfg, weights, text, cfg, None, cfg.steps, device, on_step)?;
    Ok(stats)
}

/// [`train_full`] up to step `until` (at most `cfg.steps`), going on from
/// `optim` when given (`weights` then hold the stopped run's weights). A
/// run that fails leaves in `weights` the weights it had reached.
#[allow(clippy::too_many_arguments)]
pub fn train_full_resume(
    model_cfg: &ModelConfig,
    weights: &mut Weights,
    text: &[u8],
    cfg: &TrainConfig,
    optim: Option<AdamW>,
    until: usize,
    device: &Device,
    on_step: &mut (dyn FnMut(usize, f32) + Send),
) -> Result<(TrainStats, AdamW)> {
    with_threads(cfg.threads, || {
        // While training, the variables are the weights: each tensor is
        // moved into its variable (a copy, then the original is dropped)
        // rather than kept beside it, one model fewer in memory (68 MiB at
        // `paper`). They go back into `weights` however the run ends.
        let params = Params { vars: into_vars(weights)?, lora: false };
        let trained = optimiser(cfg, &params, optim).and_then(|mut optim| {
            let empty = Weights::new();
            let until = until.min(cfg.steps);
            let stats = run(model_cfg, &empty, None, &params, &mut optim, until, text, cfg, device, on_step)?;
            Ok((stats, optim))
        });
        put_back(weights, params.vars);
        trained
    })
}

/// Move every tensor of `weights` into a variable, in name order; on an
/// error every tensor is back in `weights`.
fn into_vars(weights: &mut Weights) -> Result<Vec<(String, Var)>> {
    let mut vars = Vec::with_capacity(weights.len());
    let mut rest = std::mem::take(weights).into_iter();
    for (n, t) in rest.by_ref() {
        match Var::from_tensor(&t) {
            Ok(v) => vars.push((n, v)),
            Err(e) => {
                weights.insert(n, t);
                weights.extend(rest);
                put_back(weights, vars);
                return Err(e.into());
            }
        }
    }
    Ok(vars)
}

/// The variables' tensors back into `weights`.
fn put_back(weights: &mut Weights, vars: Vec<(String, Var)>) {
    for (n, v) in vars {
        weights.insert(n, v.as_detached_tensor());
    }
}
