//! The model card a coordinator writes for the workers it starts: which
//! weights to load (a float base, optionally a norm-only adapter over it),
//! with the digest of each, so a worker refuses a file that changed and
//! every process names the model by the same content identity.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::model::View;
use crate::engine::{Adapter, BaseModel, ModelConfig, default_device};
use crate::fsutil::{sha256_hex, write_atomic};

/// Bumped whenever a card's fields change meaning.
pub const CARD_FORMAT: u32 = 1;

/// What a worker loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub format: u32,
    pub config: ModelConfig,
    /// The base's own content hash (what adapters record).
    pub base_hash: String,
    /// The base's safetensors file, and its SHA-256.
    pub weights: PathBuf,
    pub weights_sha256: String,
    /// A norm-only (or any) adapter file over the base, and its SHA-256.
    pub adapter: Option<PathBuf>,
    pub adapter_sha256: Option<String>,
}

/// A loaded model and its identity.
pub struct ServedModel {
    pub base: BaseModel,
    pub adapter: Option<Adapter>,
    /// SHA-256 over base hash, weights digest and adapter digest.
    pub id: String,
}

impl ServedModel {
    /// The model with its adapter, if any, overlaid.
    pub fn view(&self) -> View<'_> {
        self.base.view_with(self.adapter.as_ref())
    }
}

/// What a card can fail with; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("{path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: SHA-256 {actual}, the card says {expected}")]
    Integrity { path: PathBuf, expected: String, actual: String },
}

fn read(path: &Path) -> Result<Vec<u8>, CardError> {
    std::fs::read(path).map_err(|e| CardError::Read { path: path.into(), detail: e.to_string() })
}

fn checked(path: &Path, expected: &str) -> Result<Vec<u8>, CardError> {
    let bytes = read(path)?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(CardError::Integrity { path: path.into(), expected: expected.into(), actual });
    }
    Ok(bytes)
}

impl ModelCard {
    /// A card for `base` stored at `weights`, with the adapter stored at `adapter`.
    pub fn new(base: &BaseModel, weights: &Path, adapter: Option<&Path>) -> Result<ModelCard, CardError> {
        let digest = |p: &Path| read(p).map(|b| sha256_hex(&b));
        Ok(ModelCard {
            format: CARD_FORMAT,
            config: base.config.clone(),
            base_hash: base.hash.clone(),
            weights: weights.into(),
            weights_sha256: digest(weights)?,
            adapter: adapter.map(Path::to_path_buf),
            adapter_sha256: adapter.map(digest).transpose()?,
        })
    }

    /// The content identity of the model this card names.
    pub fn model_id(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.base_hash, &self.weights_sha256, self.adapter_sha256.as_deref().unwrap_or("-")] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Write the card as JSON (atomically).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        Ok(write_atomic(path, &serde_json::to_vec_pretty(self)?)?)
    }

    /// Read a card.
    pub fn load(path: &Path) -> Result<ModelCard, CardError> {
        let bytes = read(path)?;
        let card: ModelCard = serde_json::from_slice(&bytes)
            .map_err(|e| CardError::Read { path: path.into(), detail: format!("not a model card: {e}") })?;
        if card.format != CARD_FORMAT {
            return Err(CardError::Read {
                path: path.into(),
                detail: format!("card format {}, this build reads {CARD_FORMAT}", card.format),
            });
        }
        Ok(card)
    }

    /// Load the weights (checking each digest) and the adapter.
    pub fn open(&self) -> Result<ServedModel, CardError> {
        let engine =
            |path: &Path, e: crate::engine::EngineError| CardError::Read { path: path.into(), detail: e.to_string() };
        let bytes = checked(&self.weights, &self.weights_sha256)?;
        let base = BaseModel::from_bytes(self.config.clone(), self.base_hash.clone(), &bytes, &default_device())
            .map_err(|e| engine(&self.weights, e))?;
        let adapter = match (&self.adapter, &self.adapter_sha256) {
            (Some(p), Some(d)) => Some(Adapter::from_bytes(&checked(p, d)?, &base).map_err(|e| engine(p, e))?),
            (None, None) => None,
            _ => {
                return Err(CardError::Read {
                    path: self.weights.clone(),
                    detail: "an adapter needs both a path and a digest".into(),
                });
            }
        };
        Ok(ServedModel { base, adapter, id: self.model_id() })
    }
}
