//! `data.lock.toml`: the digests pinning every external input (the Brown
//! corpus package, the crate releases of the `programmer` user), compiled
//! into the binary.

use serde::Deserialize;

use super::crates::PinnedCrate;
use super::error::{DataError, Result};

/// The lock file pinning every external input, embedded at build time so a
/// binary can never silently accept other data.
pub const DATA_LOCK: &str = include_str!("../../data.lock.toml");

/// Parsed `data.lock.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLock {
    pub format: u32,
    pub brown: BrownLock,
    pub programmer: ProgrammerLock,
}

/// The pinned corpus package.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrownLock {
    pub package: String,
    pub version: String,
    /// SRI string (`sha512-<base64>`) as reported by the package manager.
    pub integrity: String,
    /// Lower-case hex SHA-256 of the tarball.
    pub sha256: String,
}

/// The crate releases whose sources make up the `programmer` user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgrammerLock {
    pub crates: Vec<PinnedCrate>,
}

impl DataLock {
    /// The lock compiled into this binary.
    pub fn embedded() -> Result<DataLock> {
        toml::from_str(DATA_LOCK)
            .map_err(|e| DataError::Malformed { what: "data.lock.toml".into(), detail: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_lock_parses() {
        let lock = DataLock::embedded().unwrap();
        assert_eq!(lock.brown.version, "1.9.80");
        assert!(lock.brown.integrity.starts_with("sha512-"));
    }
}
