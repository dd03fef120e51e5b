//! The coordinator's two training loops over a [`Fleet`]:
//!
//! - [`diloco`] (Douillard et al. 2023): every round, each worker takes `k`
//!   inner AdamW steps from the global parameters; the pseudo-gradients
//!   (round-start minus round-end parameters, formed in f64, exactly) are
//!   aggregated by a [`Rule`] (after any byzantine workers' updates have
//!   been replaced by forged ones), and the outer optimiser, SGD with
//!   Nesterov momentum, steps the global parameters;
//! - [`sync_data_parallel`]: every step, each worker computes the gradient
//!   of one batch of its shard at the global parameters; their mean is
//!   clipped and taken by one AdamW (the baseline arm of bet 41).
//!
//! With one worker, `k = 1`, outer learning rate 1 and no momentum, DiLoCo
//! is plain training bit for bit, and so is data parallelism with one
//! worker: both are tested in `tests/federated.rs`.

use candle_core::{Device, Var};

use super::aggregate::{self, AggregateError};
use super::attack::Attack;
use super::flat::Layout;
use super::fleet::Fleet;
use crate::engine::optim::AdamW;
use crate::engine::train::{TrainConfig, clip_scale};

/// How the workers' updates become one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Mean,
    Median,
    /// Drop `floor(trim * n)` values at each end of every coordinate.
    TrimmedMean {
        trim: f64,
    },
    /// Krum against `f` byzantine workers.
    Krum {
        f: usize,
    },
    /// The mean of the `m` best Krum scores.
    MultiKrum {
        f: usize,
        m: usize,
    },
    Bulyan {
        f: usize,
    },
}

impl Rule {
    /// Aggregate `updates` (see [`super::aggregate`]).
    pub fn aggregate(&self, updates: &[&[f64]]) -> Result<Vec<f64>, AggregateError> {
        match *self {
            Rule::Mean => aggregate::mean(updates),
            Rule::Median => aggregate::median(updates),
            Rule::TrimmedMean { trim } => aggregate::trimmed_mean(updates, trim),
            Rule::Krum { f } => aggregate::krum(updates, f),
            Rule::MultiKrum { f, m } => aggregate::multi_krum(updates, f, m),
            Rule::Bulyan { f } => aggregate::bulyan(updates, f),
        }
    }
}

/// DiLoCo's outer optimiser: SGD with (Nesterov) momentum, as
/// `torch.optim.SGD(lr, momentum, nesterov)` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outer {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

impl Default for Outer {
    /// The DiLoCo paper's outer learning rate 0.7 and Nesterov momentum 0.9.
    fn default() -> Outer {
        Outer { lr: 0.7, momentum: 0.9, nesterov: true }
    }
}

/// Byzantine workers of a run: who they are and what they send.
#[derive(Debug, Clone, PartialEq)]
pub struct Byzantine {
    pub attack: Attack,
    /// Their indices (see [`super::attack::byzantine_workers`]).
    pub workers: Vec<usize>,
    /// Root of the forged noise's seeds.
    pub seed: u64,
}

/// One DiLoCo run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Inner steps per round.
    pub k: usize,
    pub rounds: usize,
    pub outer: Outer,
    pub rule: Rule,
    pub byzantine: Option<Byzantine>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The last finite global parameters.
    pub params: Vec<f32>,
    /// Rounds (or steps) whose update was applied.
    pub completed: usize,
    /// The round (or step) at which an update or the parameters stopped
    /// being finite; training ends there.
    pub diverged: Option<usize>,
    /// Mean training loss of the honest workers, per completed round.
    pub losses: Vec<f64>,
}

/// Where a run stands after an applied round or step.
#[derive(Debug, Clone, Copy)]
pub struct Synced<'a> {
    /// Rounds (DiLoCo) or steps (data parallelism) applied so far.
    pub done: usize,
    /// The global parameters now.
    pub params: &'a [f32],
    /// What has crossed the wire so far.
    pub traffic: &'a super::fleet::Traffic,
    /// Mean training loss of the honest workers in this round or step.
    pub loss: f64,
}

/// A callback after every applied round or step.
pub type OnSync<'a> = dyn FnMut(Synced<'_>) -> anyhow::Result<()> + 'a;

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Train `init` with DiLoCo on `fleet` (see the module docs).
pub fn diloco(fleet: &mut dyn Fleet, init: Vec<f32>, plan: &Plan, on_round: &mut OnSync) -> anyhow::Result<Outcome> {
    let m = fleet.size();
    let mut global = init;
    let mut velocity = vec![0f64; global.len()];
    let mut losses = Vec::with_capacity(plan.rounds);
    let byzantine: &[usize] = plan.byzantine.as_ref().map_or(&[], |b| &b.workers);
    for round in 0..plan.rounds {
        let outs = fleet.rounds(&global, plan.k)?;
        let honest_losses: Vec<f64> =
            outs.iter().enumerate().filter(|(i, _)| !byzantine.contains(i)).map(|(_, t)| t.loss).collect();
        let mut deltas: Vec<Vec<f64>> =
            outs.iter().map(|t| global.iter().zip(&t.params).map(|(&p, &e)| p as f64 - e as f64).collect()).collect();
        if let Some(b) = &plan.byzantine {
            let honest: Vec<&[f64]> = (0..m).filter(|i| !b.workers.contains(i)).map(|i| deltas[i].as_slice()).collect();
            let forged: Vec<(usize, Vec<f64>)> = b
                .workers
                .iter()
                .map(|&w| {
                    let seed = crate::seed::derive_seed(&format!("{}/{round}/{w}", b.seed), "forged update");
                    (w, b.attack.forge(&deltas[w], &honest, seed))
                })
                .collect();
            for (w, f) in forged {
                deltas[w] = f;
            }
        }
        let refs: Vec<&[f64]> = deltas.iter().map(Vec::as_slice).collect();
        let update = match plan.rule.aggregate(&refs) {
            Ok(u) => u,
            Err(AggregateError::NonFinite { .. }) => {
                return Ok(Outcome { params: global, completed: round, diverged: Some(round), losses });
            }
            Err(e) => return Err(e.into()),
        };
        let o = plan.outer;
        let next: Vec<f32> = if o.momentum == 0.0 {
            global.iter().zip(&update).map(|(&p, &u)| (p as f64 - o.lr * u) as f32).collect()
        } else {
            for (v, &u) in velocity.iter_mut().zip(&update) {
                *v = o.momentum * *v + u;
            }
            global
                .iter()
                .zip(&update)
                .zip(&velocity)
                .map(|((&p, &u), &v)| {
                    let step = if o.nesterov { u + o.momentum * v } else { v };
                    (p as f64 - o.lr * step) as f32
                })
                .collect()
        };
        if !finite(&next) {
            return Ok(Outcome { params: global, completed: round, diverged: Some(round), losses });
        }
        global = next;
        let loss = honest_losses.iter().sum::<f64>() / honest_losses.len().max(1) as f64;
        losses.push(loss);
        on_round(Synced { done: round + 1, params: &global, traffic: fleet.traffic(), loss })?;
    }
    Ok(Outcome { params: global, completed: plan.rounds, diverged: None, losses })
}

/// Train `init` for `train.steps` synchronous data-parallel steps: the
/// workers' gradients averaged (in f64), clipped to `train.clip`, one AdamW
/// step with `train`'s schedule.
pub fn sync_data_parallel(
    fleet: &mut dyn Fleet,
    layout: &Layout,
    init: Vec<f32>,
    train: &TrainConfig,
    on_step: &mut OnSync,
) -> anyhow::Result<Outcome> {
    let device = Device::Cpu;
    let weights = layout.unflatten(&init, &device)?;
    let vars: Vec<(String, Var)> =
        weights.iter().map(|(n, t)| Ok((n.clone(), Var::from_tensor(t)?))).collect::<anyhow::Result<_>>()?;
    let mut optim = AdamW::new(train.adamw(), &layout.0);
    let mut global = init;
    let mut losses = Vec::with_capacity(train.steps);
    for step in 0..train.steps {
        let grads = fleet.gradients(&global)?;
        let n = grads.len() as f64;
        let mean: Vec<f32> =
            (0..global.len()).map(|j| (grads.iter().map(|g| g.grad[j] as f64).sum::<f64>() / n) as f32).collect();
        if !finite(&mean) {
            return Ok(Outcome { params: global, completed: step, diverged: Some(step), losses });
        }
        let parts: Vec<Vec<f32>> = layout.split(&mean)?.into_iter().map(<[f32]>::to_vec).collect();
        let scale = clip_scale(&parts, train.clip);
        crate::engine::ops::with_threads(train.threads, || optim.step(&vars, &parts, scale, &device))?;
        let mut next = Vec::with_capacity(global.len());
        for (_, v) in &vars {
            next.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        if !finite(&next) {
            return Ok(Outcome { params: global, completed: step, diverged: Some(step), losses });
        }
        global = next;
        let loss = grads.iter().map(|g| g.loss).sum::<f64>() / n;
        losses.push(loss);
        on_step(Synced { done: step + 1, params: &global, traffic: fleet.traffic(), loss })?;
    }
    Ok(Outcome { params: global, completed: train.steps, diverged: None, losses })
}
