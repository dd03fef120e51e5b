//! The adapter store: trained adapters kept by cache key in the folder it
//! is handed (`Paths::adapters_dir`), as `<key>/adapter.safetensors` and
//! `<key>/stats.json`, the stats written last (their presence marks a
//! complete entry). The key is the caller's (it decides what an adapter
//! depends on); the store only keeps and returns bytes.

use std::path::PathBuf;

use crate::engine::train::TrainStats;
use crate::engine::{Adapter, BaseModel};

/// File of an adapter's tensors inside its entry.
pub const ADAPTER_FILE: &str = "adapter.safetensors";
/// File of an adapter's training statistics inside its entry.
pub const STATS_FILE: &str = "stats.json";

/// A stored adapter: the adapter, how its training went, its size in bytes.
#[derive(Debug, Clone)]
pub struct StoredAdapter {
    pub adapter: Adapter,
    pub stats: TrainStats,
    /// Bytes of the adapter file.
    pub bytes: u64,
}

/// Trained adapters by cache key.
#[derive(Debug, Clone)]
pub struct Adapters {
    dir: PathBuf,
}

impl Adapters {
    /// The store kept in `dir` (`Paths::adapters_dir`).
    pub fn new(dir: impl Into<PathBuf>) -> Adapters {
        Adapters { dir: dir.into() }
    }

    /// Folder of the entry `key`.
    pub fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The entry `key`, if complete and loadable on `base` (anything else
    /// reads as absent, so it is trained again and overwritten).
    pub fn load(&self, key: &str, base: &BaseModel) -> Option<StoredAdapter> {
        let dir = self.entry(key);
        let stats: TrainStats = serde_json::from_slice(&std::fs::read(dir.join(STATS_FILE)).ok()?).ok()?;
        let bytes = std::fs::read(dir.join(ADAPTER_FILE)).ok()?;
        let adapter = Adapter::from_bytes(&bytes, base).ok()?;
        Some(StoredAdapter { adapter, stats, bytes: bytes.len() as u64 })
    }

    /// Store `adapter` and `stats` under `key` atomically; returns the adapter file's size.
    pub fn save(&self, key: &str, adapter: &Adapter, stats: &TrainStats) -> anyhow::Result<u64> {
        let dir = self.entry(key);
        let bytes = adapter.to_bytes()?;
        crate::fsutil::write_atomic(&dir.join(ADAPTER_FILE), &bytes)?;
        // The stats are written last: their presence marks a complete entry.
        crate::fsutil::write_atomic(&dir.join(STATS_FILE), &serde_json::to_vec(stats)?)?;
        Ok(bytes.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ModelConfig, Profile, TrainConfig, Trainable, finetune};
    use candle_core::Device;

    fn tiny() -> ModelConfig {
        Profile::from_name("tiny").unwrap().model
    }

    #[test]
    fn a_saved_adapter_loads_back_bit_exactly_and_an_incomplete_entry_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Adapters::new(dir.path());
        let base = BaseModel::random(&tiny(), 1, &Device::Cpu).unwrap();
        let cfg = TrainConfig { steps: 2, batch: 2, seq: 16, threads: 1, ..Default::default() };
        let (a, stats) = finetune(&base, Trainable::NormOnly, b"some text to learn from, twice over.", &cfg).unwrap();
        assert!(store.load("k", &base).is_none());
        let n = store.save("k", &a, &stats).unwrap();
        let back = store.load("k", &base).unwrap();
        assert_eq!(back.bytes, n);
        assert_eq!(back.adapter.to_bytes().unwrap(), a.to_bytes().unwrap());
        assert_eq!(back.stats, stats);
        let other = BaseModel::random(&tiny(), 2, &Device::Cpu).unwrap();
        assert!(store.load("k", &other).is_none(), "an adapter of another base is not returned");
        std::fs::remove_file(store.entry("k").join(STATS_FILE)).unwrap();
        assert!(store.load("k", &base).is_none(), "no stats: an incomplete entry");
    }
}
