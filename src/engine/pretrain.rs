//! Pre-training a base model from text: the training run a profile implies,
//! the content hash that names the result, and the manifest recorded beside
//! it. Where bases are kept is not decided here (see `services::BaseModels`).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::base::ENGINE_VERSION;
use super::base::{BaseModel, hash_json, weights_bytes};
use super::config::{ModelConfig, Profile};
use super::error::EngineError;
use super::error::Result;
use super::eval::{EvalConfig, EvalStats, evaluate};
use super::model::Weights;
use super::model::init_weights;
use super::optim::AdamW;
use super::train::{TrainConfig, TrainStats, train_full_resume};
use crate::services::Progress;

/// On-disk format version of base manifests.
pub const BASE_FORMAT: u32 = 1;

/// Held-out bytes a fresh base is evaluated on (the start of the general eval text).
pub const BASE_EVAL_BYTES: usize = 64 * 1024;

/// Everything recorded next to a cached base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseManifest {
    pub format: u32,
    pub engine: String,
    /// The cache key: SHA-256 of (engine version, config, training config, data hash).
    pub hash: String,
    pub profile: String,
    pub config: ModelConfig,
    pub train: TrainConfig,
    /// SHA-256 of the general training text.
    pub data_sha256: String,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    pub params: usize,
    pub stats: TrainStats,
    /// Held-out figures on the general evaluation text (first 64 KiB).
    pub eval: EvalStats,
}

/// What pre-training gives: the base, its manifest, and the exact
/// safetensors bytes whose digest the manifest records.
#[derive(Debug, Clone)]
pub struct Pretrained {
    pub base: BaseModel,
    pub manifest: BaseManifest,
    pub weights: Vec<u8>,
}

/// The pre-training run a profile implies for `seed` and `threads`.
pub fn pretrain_config(profile: &Profile, seed: u64, threads: usize) -> TrainConfig {
    TrainConfig {
        lr: profile.pretrain.lr,
        steps: profile.pretrain.steps,
        batch: profile.pretrain.batch,
        seq: profile.model.context,
        seed,
        warmup: profile.pretrain.warmup,
        min_lr_frac: 0.1,
        weight_decay: 0.1,
        clip: 1.0,
        aux_weight: 0.01,
        lora_scale: 1.0,
        threads,
        ..TrainConfig::default()
    }
}

/// Cache key of a base model.
pub fn base_key(config: &ModelConfig, train: &TrainConfig, data_sha256: &str) -> String {
    hash_json(&(ENGINE_VERSION, config, train, data_sha256))
}

/// The hash [`pretrain`] names the base of `profile` on `text` with: known
/// before any training, so a store can look it up first.
pub fn base_hash(profile: &Profile, text: &[u8], seed: u64, threads: usize) -> String {
    base_key(&profile.model, &pretrain_config(profile, seed, threads), &hex::encode(Sha256::digest(text)))
}

/// A pre-training run stopped after `step` steps: enough to go on with the
/// bits of an uninterrupted run (the engine's `*_resume` guarantee).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Steps taken.
    pub step: usize,
    /// The weights after `step` steps, as safetensors bytes.
    pub weights: Vec<u8>,
    /// The AdamW state ([`AdamW::to_bytes`]).
    pub optim: Vec<u8>,
    /// The loss of every step taken.
    pub losses: Vec<f32>,
    /// Wall seconds spent training so far.
    pub seconds: f64,
}

/// Where a resumable pre-training starts and how it saves its progress.
pub struct Resumable<'a> {
    /// The checkpoint to go on from (`None`: from the seeded init).
    pub from: Option<Checkpoint>,
    /// Save a checkpoint after every this many steps.
    pub every: usize,
    /// Called with each checkpoint (the caller stores it).
    pub save: &'a mut dyn FnMut(&Checkpoint) -> Result<()>,
}

/// Pre-train the base of `profile` on `text` (reporting steps and the
/// running loss to `progress`), then evaluate it on the first
/// [`BASE_EVAL_BYTES`] of `eval_text`. The run goes on from
/// `resumable.from` and hands a checkpoint to `resumable.save` every
/// `resumable.every` steps, so a killed run loses at most that many steps;
/// the base is bit for bit an uninterrupted run's.
#[allow(clippy::too_many_arguments)]
pub fn pretrain(
    profile: &Profile,
    text: &[u8],
    eval_text: &[u8],
    seed: u64,
    threads: usize,
    device: &Device,
    progress: &dyn Progress,
    resumable: Resumable<'_>,
) -> Result<Pretrained> {
    let data_sha256 = hex::encode(Sha256::digest(text));
    let train = pretrain_config(profile, seed, threads);
    let hash = base_key(&profile.model, &train, &data_sha256);
    let (mut weights, mut optim, mut losses, mut seconds) = match resumable.from {
        None => (init_weights(&profile.model, seed, device)?, None, vec![], 0.0),
        Some(c) => {
            let weights: Weights = candle_core::safetensors::load_buffer(&c.weights, device)?.into_iter().collect();
            let optim = AdamW::from_bytes(&c.optim)?;
            if optim.step_count() != c.step || c.losses.len() != c.step {
                return Err(EngineError::Malformed {
                    what: "pre-training checkpoint".into(),
                    detail: format!(
                        "step {} but the optimiser has taken {} and {} losses are recorded",
                        c.step,
                        optim.step_count(),
                        c.losses.len()
                    ),
                });
            }
            (weights, Some(optim), c.losses, c.seconds)
        }
    };
    let bar = progress.start("pretrain", "steps", train.steps as u64);
    bar.inc(losses.len() as u64);
    let mut ema = f32::NAN;
    let every = resumable.every.max(1);
    while losses.len() < train.steps {
        let until = (losses.len().saturating_add(every)).min(train.steps);
        let (segment, state) = train_full_resume(
            &profile.model,
            &mut weights,
            text,
            &train,
            optim.take(),
            until,
            device,
            &mut |_, loss| {
                ema = if ema.is_nan() { loss } else { 0.95 * ema + 0.05 * loss };
                bar.set_message(format!("loss {ema:.3}"));
                bar.inc(1);
            },
        )?;
        losses.extend(segment.losses);
        seconds += segment.seconds;
        if until < train.steps {
            (resumable.save)(&Checkpoint {
                step: until,
                weights: weights_bytes(&weights)?,
                optim: state.to_bytes()?,
                losses: losses.clone(),
                seconds,
            })?;
        }
        optim = Some(state);
    }
    bar.finish();
    let tokens = (losses.len() * train.batch * train.seq) as u64;
    let stats = TrainStats::of(losses, tokens, seconds, weights.values().map(Tensor::elem_count).sum());
    let base = BaseModel::from_weights(profile.model.clone(), weights, hash.clone(), device.clone());
    let eval =
        evaluate(&base, None, eval_text, &EvalConfig { max_bytes: BASE_EVAL_BYTES, threads, ..Default::default() })?;
    let bytes = base.weights_bytes()?;
    let manifest = BaseManifest {
        format: BASE_FORMAT,
        engine: ENGINE_VERSION.into(),
        hash,
        profile: profile.name.clone(),
        config: profile.model.clone(),
        train,
        data_sha256,
        weights_sha256: hex::encode(Sha256::digest(&bytes)),
        params: base.param_count(),
        stats,
        eval,
    };
    Ok(Pretrained { base, manifest, weights: bytes })
}
