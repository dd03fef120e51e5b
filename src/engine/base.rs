//! The frozen base model (geometry, weights, content hash) that adapters are
//! trained against and evaluations run on; the bottom of the engine's module
//! graph, so adapter, train, eval and pretrain all build on it without a cycle.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::model::{TernaryLinears, View, Weights, init_weights};

/// Bumped whenever the model's maths or the training loop change, so stale
/// cached bases (and adapters) are never reused.
pub const ENGINE_VERSION: &str = "fractal-moe-1";

/// A frozen base model that adapters are trained against.
#[derive(Debug, Clone)]
pub struct BaseModel {
    pub config: ModelConfig,
    /// Content hash naming this base (adapters record it).
    pub hash: String,
    /// Float tensors: every weight, or for a ternary base the embeddings and norm gains.
    pub weights: Weights,
    pub device: Device,
    /// The packed linears of a ternary base ([`super::ternary`]); `None` for a float base.
    pub ternary: Option<Arc<TernaryLinears>>,
}

impl BaseModel {
    /// Wrap weights already in memory (tests, experiments that build their own).
    pub fn from_weights(config: ModelConfig, weights: Weights, hash: String, device: Device) -> BaseModel {
        BaseModel { config, hash, weights, device, ternary: None }
    }

    /// A randomly initialised base (tests): hash derived from config and seed.
    pub fn random(config: &ModelConfig, seed: u64, device: &Device) -> Result<BaseModel> {
        let weights = init_weights(config, seed, device)?;
        let hash = hash_json(&(ENGINE_VERSION, "random", config, seed));
        Ok(BaseModel::from_weights(config.clone(), weights, hash, device.clone()))
    }

    /// A base from the safetensors bytes [`BaseModel::weights_bytes`] gives.
    pub fn from_bytes(config: ModelConfig, hash: String, bytes: &[u8], device: &Device) -> Result<BaseModel> {
        let weights: Weights = candle_core::safetensors::load_buffer(bytes, device)?.into_iter().collect();
        Ok(BaseModel::from_weights(config, weights, hash, device.clone()))
    }

    /// Weights as safetensors bytes (sorted names, deterministic).
    pub fn weights_bytes(&self) -> Result<Vec<u8>> {
        weights_bytes(&self.weights)
    }

    /// Total scalars (packed weights count one each).
    pub fn param_count(&self) -> usize {
        let packed: usize = self.ternary.iter().flat_map(|m| m.values()).map(|t| t.rows() * t.cols()).sum();
        self.weights.values().map(|t| t.elem_count()).sum::<usize>() + packed
    }

    /// The model as it is, float or ternary, with nothing overlaid.
    pub fn view(&self) -> View<'_> {
        let mut view = View::new(&self.config, &self.weights);
        view.ternary = self.ternary.as_deref();
        view
    }

    /// The model with `adapter` overlaid, or as it is without one.
    pub fn view_with<'a>(&'a self, adapter: Option<&'a super::adapter::Adapter>) -> View<'a> {
        match adapter {
            Some(a) => a.view(self),
            None => self.view(),
        }
    }

    /// Whether the linears are packed ternary (the base is then frozen:
    /// only norm-only adapters train on it).
    pub fn is_ternary(&self) -> bool {
        self.ternary.is_some()
    }
}

/// Weights as safetensors bytes (sorted names, deterministic): a stored
/// base, or a pre-training checkpoint.
pub fn weights_bytes(weights: &Weights) -> Result<Vec<u8>> {
    let data: Vec<(&String, &Tensor)> = weights.iter().collect();
    safetensors::serialize(data, None)
        .map_err(|e| EngineError::Malformed { what: "model weights".into(), detail: e.to_string() })
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

/// Lower-case hex SHA-256 of a value's JSON form (cache keys).
pub(crate) fn hash_json<T: Serialize>(v: &T) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).expect("serialisable")))
}
