//! Base models: pre-trained once per (profile, training data, seed, threads),
//! cached under `<cache>/models/<hash>/` and named by that content hash.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{ModelConfig, Profile};
use super::data::Corpus;
use super::error::{EngineError, Result, io_err};
use super::eval::{EvalConfig, EvalStats, evaluate};
use super::model::{Weights, init_weights};
use super::train::{TrainConfig, TrainStats, train_full};

/// Bumped whenever the model's maths or the training loop change, so stale
/// cached bases are never reused.
pub const ENGINE_VERSION: &str = "fractal-moe-1";

/// On-disk format version of base manifests.
pub const BASE_FORMAT: u32 = 1;

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

/// A frozen base model that adapters are trained against.
#[derive(Debug, Clone)]
pub struct BaseModel {
    pub config: ModelConfig,
    /// Content hash naming this base (adapters record it).
    pub hash: String,
    pub weights: Weights,
    pub device: Device,
    /// Present for bases built by [`base_model`] (absent for ad-hoc ones).
    pub manifest: Option<BaseManifest>,
}

impl BaseModel {
    /// Wrap weights already in memory (tests, experiments that build their own).
    pub fn from_weights(config: ModelConfig, weights: Weights, hash: String, device: Device) -> BaseModel {
        BaseModel { config, hash, weights, device, manifest: None }
    }

    /// A randomly initialised base (tests): hash derived from config and seed.
    pub fn random(config: &ModelConfig, seed: u64, device: &Device) -> Result<BaseModel> {
        let weights = init_weights(config, seed, device)?;
        let hash = hash_json(&(ENGINE_VERSION, "random", config, seed));
        Ok(BaseModel::from_weights(config.clone(), weights, hash, device.clone()))
    }

    /// Weights as safetensors bytes (sorted names, deterministic).
    pub fn weights_bytes(&self) -> Result<Vec<u8>> {
        let data: Vec<(&String, &Tensor)> = self.weights.iter().collect();
        safetensors::serialize(data, None)
            .map_err(|e| EngineError::Malformed { what: "base weights".into(), detail: e.to_string() })
    }

    /// Total scalars.
    pub fn param_count(&self) -> usize {
        self.weights.values().map(|t| t.elem_count()).sum()
    }
}

/// The compute device: the first CUDA GPU when built with `cuda` and one is present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

fn hash_json<T: Serialize>(v: &T) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).expect("serialisable")))
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
    }
}

/// Cache key of a base model.
pub fn base_key(config: &ModelConfig, train: &TrainConfig, data_sha256: &str) -> String {
    hash_json(&(ENGINE_VERSION, config, train, data_sha256))
}

/// Folder of a cached base.
pub fn base_dir(cache_dir: &Path, hash: &str) -> PathBuf {
    cache_dir.join("models").join(hash)
}

/// The base model of `profile` pre-trained on the corpus's general text:
/// loaded from the cache when present, otherwise trained (with a progress bar
/// showing the loss when `progress`) and cached.
pub fn base_model(
    profile: &Profile,
    corpus: &Corpus,
    cache_dir: &Path,
    seed: u64,
    threads: usize,
    progress: &dyn crate::services::Progress,
) -> Result<BaseModel> {
    let text = corpus.general_train();
    let data_sha256 = hex::encode(Sha256::digest(&text));
    let train = pretrain_config(profile, seed, threads);
    let hash = base_key(&profile.model, &train, &data_sha256);
    let dir = base_dir(cache_dir, &hash);
    let device = default_device();
    if dir.join("manifest.json").is_file() {
        return load_base(&dir, &device);
    }
    let mut weights = init_weights(&profile.model, seed, &device)?;
    let bar = progress.start("pretrain", "steps", train.steps as u64);
    let mut ema = f32::NAN;
    let stats = train_full(&profile.model, &mut weights, &text, &train, &device, &mut |_, loss| {
        ema = if ema.is_nan() { loss } else { 0.95 * ema + 0.05 * loss };
        bar.set_message(format!("loss {ema:.3}"));
        bar.inc(1);
    })?;
    bar.finish();
    let mut base = BaseModel::from_weights(profile.model.clone(), weights, hash.clone(), device);
    let eval = evaluate(
        &base,
        None,
        &corpus.general_eval(),
        &EvalConfig { max_bytes: 64 * 1024, threads, ..Default::default() },
    )?;
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
    write(&dir.join("model.safetensors"), &bytes)?;
    // The manifest is written last: its presence means the base is complete.
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write(&dir.join("manifest.json"), &json)?;
    base.manifest = Some(manifest);
    Ok(base)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes).map_err(|e| EngineError::Io {
        context: format!("{e:#}"),
        source: std::io::Error::other("atomic write failed"),
    })
}

/// Load a cached base from its folder, checking the weights' digest.
pub fn load_base(dir: &Path, device: &Device) -> Result<BaseModel> {
    let mpath = dir.join("manifest.json");
    let raw = std::fs::read(&mpath).map_err(io_err(format!("reading {}", mpath.display())))?;
    let manifest: BaseManifest = serde_json::from_slice(&raw)
        .map_err(|e| EngineError::Malformed { what: mpath.display().to_string(), detail: e.to_string() })?;
    let wpath = dir.join("model.safetensors");
    let bytes = std::fs::read(&wpath).map_err(io_err(format!("reading {}", wpath.display())))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != manifest.weights_sha256 {
        return Err(EngineError::Integrity {
            what: wpath.display().to_string(),
            expected: manifest.weights_sha256.clone(),
            actual,
        });
    }
    let weights: Weights = candle_core::safetensors::load_buffer(&bytes, device)?.into_iter().collect();
    Ok(BaseModel {
        config: manifest.config.clone(),
        hash: manifest.hash.clone(),
        weights,
        device: device.clone(),
        manifest: Some(manifest),
    })
}
