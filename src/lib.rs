//! `bets`: falsifiable machine-learning research, run for real.
//!
//! A *bet* is a TOML file (see `bets/README.md`) that states a hypothesis and
//! its STRICT / LENIENT / CATASTROPHIC criteria before anything runs. The
//! harness guarantees:
//!
//! - **Pre-registration**: a bet's canonical form is hashed and appended to a
//!   signed, hash-chained ledger ([`registry`]); a run of a spec that differs
//!   from its registration is refused unless it is amended or exploratory.
//! - **Mechanical verdicts**: criteria are sandboxed SQL over the run's tidy table,
//!   decided by [`criteria`] without a human in the loop.
//! - **Reproducibility**: every cell is content-addressed and cached
//!   ([`runner`]); the same inputs and thread count give the same bits.
//! - **Integrity**: result bundles carry SHA-256 sums signed in the minisign
//!   format and an in-toto attestation in DSSE envelopes ([`results`]);
//!   `bets verify` checks digests, signatures, attestations and ledger.
//!
//! The architecture, top to bottom (a layer uses the layers below it, never above):
//!
//! ```text
//! main -> cli (clap) -> app     the IO shell: builds Paths and the progress
//!                        |      reporter, prints, maps errors to exit codes
//!                     pipeline  plan -> execute -> decide -> bundle contents
//!                        |
//!   spec, runner, criteria, results, report, registry, tlog, signing, cluster
//!     |                     |
//!   kinds (Kind impls)      stats, table (table alone holds the dataframe crate)
//!     |
//!   workers                 engine blocks over processes and loopback TCP
//!     |
//!   engine, data, sim       never import spec, results, kinds or app;
//!   services                Paths, the stores (base models, adapters) and the
//!                           Progress trait, handed down by the app
//! ```
//!
//! Data flow, one path for every bet:
//!
//! ```text
//! spec (TOML) -> spec::load -> Bet (typed params per profile) -> registry (ledger entry)
//!   -> pipeline::run: Plan -> runner (cell keys, cache, -j, shards) -> kinds -> rows
//!   -> criteria -> Verdict -> pipeline::bundle_contents -> results (signed bundle) -> report
//! ```
//!
//! File map: [`spec`] parses and validates specs, [`kinds`] declares every
//! experiment kind (typed `Params`, `Factors`, `Metrics`; one file or folder
//! and one registry line each), [`pipeline`] is the one path of a run,
//! [`runner`] executes plans, [`criteria`] decides verdicts, [`registry`]
//! keeps the ledger (and checks that the record of counted runs is
//! complete), [`engine`] is the candle model (a library of parts with no IO
//! of its own), [`data`] fetches and splits the pinned corpus, [`sim`] holds
//! model-free simulations, [`services`] holds paths, progress and the model
//! and adapter stores, [`results`] writes and verifies bundles, [`report`]
//! renders plots, pages, confirmations and retractions, [`stats`] says how
//! much weight a verdict bears (bootstrap intervals, sign tests, Holm),
//! [`table`] is the tidy table (sandboxed SQL, CSV, Parquet), [`seed`]
//! derives named seeds, [`signing`] holds minisign keys and signatures,
//! [`tlog`] is the RFC 6962 Merkle log and its signed checkpoints, [`federated`]
//! holds federated training's aggregation rules, [`workers`]
//! runs a model's blocks in separate processes over TCP (and emulates WAN
//! links between them), [`cluster`] writes the Slurm and Kubernetes jobs that
//! run a bet's shards over a shared cell store, [`bench`]
//! compares the engine with PyTorch, [`app`] is the IO shell behind the CLI
//! ([`cli`], [`cli_engine`]), and [`error`] maps failures to the documented
//! exit codes.

/// mimalloc for every binary of the crate (the CLI and the test binaries alike):
/// the engine allocates a buffer per op, where it is faster than the system
/// allocator; [`engine::configure_allocator`] keeps its freed memory mapped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod bench;
pub mod cli;
pub mod cli_engine;
pub mod cluster;
pub mod criteria;
pub mod data;
pub mod engine;
pub mod error;
pub mod federated;
pub mod fsutil;
pub mod kinds;
pub mod pipeline;
pub mod registry;
pub mod report;
pub mod results;
pub mod runner;
pub mod seed;
pub mod services;
pub mod signing;
pub mod sim;
pub mod spec;
pub mod stats;
pub mod table;
/// The RFC 6962 Merkle log and C2SP signed checkpoints that commit the ledger's head.
pub mod tlog;
pub mod workers;

/// The harness version recorded in every manifest and ledger entry.
pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");
