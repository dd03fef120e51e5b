//! One federated worker's replica: its data shard, its model copy and its
//! own inner AdamW state, driven one request at a time by a coordinator.
//! The same type answers in-process (tests, [`super::fleet::InProcess`])
//! and inside a `bets federated-worker` process ([`super::serve`]), so both
//! modes compute the same bits.
//!
//! - [`Replica::round`] (DiLoCo): start from the coordinator's parameters,
//!   take `k` inner AdamW steps on the shard (the optimiser state carries
//!   over between rounds, the learning-rate schedule spans every inner
//!   step), and hand back the parameters it ended on;
//! - [`Replica::gradient`] (synchronous data parallelism): the gradient of
//!   the shard's next batch at the coordinator's parameters.

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::flat::Layout;
use crate::engine::model::Weights;
use crate::engine::optim::AdamW;
use crate::engine::train::{Batcher, TrainConfig, full_gradients, train_full_resume};
use crate::engine::{ModelConfig, Result};

/// Format version of a [`Job`] file.
pub const JOB_FORMAT: u32 = 1;

/// Everything a worker process needs, written by the coordinator: the model
/// geometry, the inner training run, and its shard (a file of the
/// coordinator's own temporary folder, checked against its SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub format: u32,
    pub model: ModelConfig,
    /// The inner run: `steps` is every inner step of the whole training
    /// (the schedule's end), `seed` the shard's data order, `threads` the
    /// worker's compute threads.
    pub train: TrainConfig,
    pub shard: PathBuf,
    pub shard_sha256: String,
}

/// A worker's replica.
pub struct Replica {
    model: ModelConfig,
    train: TrainConfig,
    shard: Vec<u8>,
    layout: Layout,
    optim: Option<AdamW>,
    /// Batches drawn by [`Replica::gradient`] so far.
    batches: usize,
    device: Device,
}

/// What a DiLoCo round hands back.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// The parameters after the round's inner steps.
    pub params: Vec<f32>,
    /// Mean training cross-entropy of the round's inner steps.
    pub loss: f64,
}

/// What a data-parallel step hands back.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient {
    /// Every parameter's gradient, flat, in layout order.
    pub grad: Vec<f32>,
    /// The batch's cross-entropy.
    pub loss: f64,
}

impl Replica {
    /// A replica training `model` with `train` on `shard`; `layout` is the
    /// model's (the coordinator's flat vectors follow it).
    pub fn new(model: ModelConfig, train: TrainConfig, shard: Vec<u8>, layout: Layout, device: Device) -> Replica {
        Replica { model, train, shard, layout, optim: None, batches: 0, device }
    }

    /// The replica a job file describes; a shard whose hash differs from
    /// the job's is refused.
    pub fn from_job(job: &Job, device: Device) -> anyhow::Result<Replica> {
        if job.format != JOB_FORMAT {
            anyhow::bail!("job format {}, this build reads {JOB_FORMAT}", job.format);
        }
        let shard = std::fs::read(&job.shard).map_err(|e| anyhow::anyhow!("{}: {e}", job.shard.display()))?;
        let got = hex::encode(Sha256::digest(&shard));
        if got != job.shard_sha256 {
            anyhow::bail!("{}: SHA-256 {got}, the job expects {}", job.shard.display(), job.shard_sha256);
        }
        job.model.validate()?;
        let layout = Layout::of_model(&job.model);
        Ok(Replica::new(job.model.clone(), job.train.clone(), shard, layout, device))
    }

    /// Scalars of the model.
    pub fn param_count(&self) -> usize {
        self.layout.len()
    }

    /// Bytes of the shard.
    pub fn shard_bytes(&self) -> usize {
        self.shard.len()
    }

    fn weights(&self, flat: &[f32]) -> Result<Weights> {
        self.layout.unflatten(flat, &self.device)
    }

    /// `k` inner steps from `start` (fewer if the run's `steps` end first).
    pub fn round(&mut self, start: &[f32], k: usize) -> Result<Trained> {
        let mut w = self.weights(start)?;
        let optim = self.optim.take();
        let until = optim.as_ref().map_or(0, AdamW::step_count) + k;
        let (stats, optim) = train_full_resume(
            &self.model,
            &mut w,
            &self.shard,
            &self.train,
            optim,
            until,
            &self.device,
            &mut |_, _| {},
        )?;
        self.optim = Some(optim);
        let loss = stats.losses.iter().map(|&l| l as f64).sum::<f64>() / stats.losses.len().max(1) as f64;
        Ok(Trained { params: self.layout.flatten(&w)?, loss })
    }

    /// The gradient of the shard's next batch at `params`.
    pub fn gradient(&mut self, params: &[f32]) -> Result<Gradient> {
        let w = self.weights(params)?;
        let mut batcher = Batcher::new(&self.shard, self.train.seq.min(self.model.context), self.train.seed)?;
        batcher.skip(self.batches, self.train.batch);
        let (xs, ys) = batcher.next(self.train.batch, &self.device)?;
        self.batches += 1;
        let (loss, gs) = full_gradients(&self.model, &w, &xs, &ys, &self.train)?;
        Ok(Gradient { grad: gs.concat(), loss: loss as f64 })
    }
}
