//! Federated training on the engine (bets 41 and 44): the `small` model
//! trained from a seeded init by M workers, each with a disjoint shard of
//! the general training text, its own replica and its own inner AdamW,
//! coordinated by DiLoCo or synchronous data parallelism
//! ([`crate::federated`]).
//!
//! A cell starts its own `bets federated-worker` processes on loopback
//! ports (or, with `mode = "in-process"`, runs the same replicas on
//! threads: the same bits) and stops them when it ends. Every arm of a
//! replicate shares the init, the shards and each worker's data order, so
//! arms differ only in how the workers are coordinated. Wall time is
//! reported and never decided on.

mod byzantine;
mod diloco;

pub use byzantine::ByzantineAggregation;
pub use diloco::Diloco;

use std::collections::BTreeMap;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Env, ParamProblem};
use crate::data::{Corpus, LoadOptions};
use crate::engine::config::Profile;
use crate::engine::eval::{EvalConfig, EvalStats, evaluate};
use crate::engine::model::init_weights;
use crate::engine::train::TrainConfig;
use crate::engine::{BaseModel, ModelConfig};
use crate::federated::{Fleet, InProcess, Layout, Processes, Replica, shard};
use crate::seed::derive_seed;

/// The longest a worker may take to answer one round (a `small` round of
/// 100 inner steps on a shared core takes about a minute).
const ROUND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(900);

/// Where the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One `bets federated-worker` process each, over loopback TCP.
    #[default]
    Processes,
    /// One thread each in this process (the same bits; for tests).
    InProcess,
}

/// The training every federated arm shares (defaults: `small`'s
/// pre-training learning rate and weight decay, two sequences a worker).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Training {
    /// Sequences per worker per inner step.
    pub batch: usize,
    /// Bytes per sequence (0: the model's context).
    pub seq: usize,
    /// Peak learning rate of the inner AdamW (and of the data-parallel one).
    pub lr: f64,
    /// Linear warm-up steps of the inner schedule (cosine to 0.1 x after).
    pub warmup: usize,
    /// Decoupled weight decay of the inner AdamW.
    pub weight_decay: f64,
    /// DiLoCo's outer learning rate.
    pub outer_lr: f64,
    /// DiLoCo's outer momentum (Nesterov).
    pub outer_momentum: f64,
    /// Held-out bytes of the general evaluation text each evaluation reads.
    pub eval_bytes: usize,
    /// Compute threads of each worker.
    pub worker_threads: usize,
    pub mode: Mode,
}

impl Default for Training {
    fn default() -> Training {
        Training {
            batch: 2,
            seq: 0,
            lr: 2e-3,
            warmup: 50,
            weight_decay: 0.1,
            outer_lr: 0.7,
            outer_momentum: 0.9,
            eval_bytes: 32 * 1024,
            worker_threads: 1,
            mode: Mode::Processes,
        }
    }
}

impl Training {
    fn check(&self) -> Result<(), ParamProblem> {
        ParamProblem::all_positive(&[
            ("batch", self.batch),
            ("eval_bytes", self.eval_bytes),
            ("worker_threads", self.worker_threads),
        ])?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ParamProblem::new("lr", "must be positive"));
        }
        if !(self.outer_lr > 0.0 && self.outer_lr.is_finite()) {
            return Err(ParamProblem::new("outer_lr", "must be positive"));
        }
        if !(0.0..1.0).contains(&self.outer_momentum) {
            return Err(ParamProblem::new("outer_momentum", "must be in [0, 1)"));
        }
        Ok(())
    }

    /// Worker `i`'s inner run of replicate `seed`: `steps` inner steps in all.
    fn inner(&self, model: &ModelConfig, steps: usize, seed: u64, i: usize) -> TrainConfig {
        TrainConfig {
            lr: self.lr,
            steps,
            batch: self.batch,
            seq: if self.seq == 0 { model.context } else { self.seq.min(model.context) },
            seed: derive_seed(&format!("{seed}/{i}"), "federated worker data order"),
            warmup: self.warmup,
            min_lr_frac: 0.1,
            weight_decay: self.weight_decay,
            clip: 1.0,
            aux_weight: 0.01,
            lora_scale: 1.0,
            threads: self.worker_threads,
            ..TrainConfig::default()
        }
    }
}

/// What every cell of a federated bet shares: the text and the model geometry.
pub struct Bench {
    pub training: Training,
    pub model: ModelConfig,
    pub layout: Layout,
    train_text: Vec<u8>,
    eval_text: Vec<u8>,
    inputs: BTreeMap<String, String>,
    threads: usize,
}

/// One replicate's workers, started.
pub struct Started {
    pub fleet: Box<dyn Fleet>,
    pub init: Vec<f32>,
    /// Tokens (bytes predicted) per inner step, all workers together.
    pub tokens_per_step: u64,
    pub started: Instant,
}

impl Bench {
    fn new(training: Training, env: &Env) -> anyhow::Result<Bench> {
        let corpus = Corpus::load(&env.paths.data_dir(), &LoadOptions::default())?;
        let model = Profile::from_name(&env.profile)?.model;
        let train_text = corpus.general_train();
        let eval_text = corpus.general_eval();
        let mut inputs = BTreeMap::new();
        inputs.insert("general_train".into(), hex::encode(Sha256::digest(&train_text)));
        inputs.insert("general_eval".into(), hex::encode(Sha256::digest(&eval_text)));
        let layout = Layout::of_model(&model);
        Ok(Bench { training, model, layout, train_text, eval_text, inputs, threads: env.threads })
    }

    /// Start `workers` workers of replicate `seed`, each for `steps` inner
    /// steps in all, from the replicate's seeded init.
    fn start(&self, workers: usize, steps: usize, seed: u64) -> anyhow::Result<Started> {
        let started = Instant::now();
        let shards = shard::shards(&self.train_text, workers, derive_seed(&seed.to_string(), "federated shards"));
        let trains: Vec<TrainConfig> = (0..workers).map(|i| self.training.inner(&self.model, steps, seed, i)).collect();
        let fleet: Box<dyn Fleet> = match self.training.mode {
            Mode::Processes => Box::new(Processes::start(
                &crate::workers::bets_program()?,
                &self.model,
                &trains,
                &shards,
                ROUND_DEADLINE,
            )?),
            Mode::InProcess => Box::new(InProcess::new(
                trains
                    .iter()
                    .zip(shards)
                    .map(|(t, s)| {
                        Replica::new(self.model.clone(), t.clone(), s, self.layout.clone(), candle_core::Device::Cpu)
                    })
                    .collect(),
            )),
        };
        let device = candle_core::Device::Cpu;
        let init = self.layout.flatten(&init_weights(
            &self.model,
            derive_seed(&seed.to_string(), "federated init"),
            &device,
        )?)?;
        let seq = trains[0].seq as u64;
        Ok(Started { fleet, init, tokens_per_step: workers as u64 * self.training.batch as u64 * seq, started })
    }

    /// Held-out figures of `params` on the general evaluation text.
    fn evaluate(&self, params: &[f32]) -> anyhow::Result<EvalStats> {
        let device = candle_core::Device::Cpu;
        let base = BaseModel::from_weights(
            self.model.clone(),
            self.layout.unflatten(params, &device)?,
            "federated".into(),
            device,
        );
        let cfg = EvalConfig { max_bytes: self.training.eval_bytes, threads: self.threads, ..Default::default() };
        Ok(evaluate(&base, None, &self.eval_text, &cfg)?)
    }
}
