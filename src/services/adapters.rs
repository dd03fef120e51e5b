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

/// Version of `stats.json` (the statistics with a `format` field). Entries
/// written before the field existed have no `format` and are this version.
pub const STATS_FORMAT: u32 = 1;

/// `stats.json` as written: the format, then the statistics.
#[derive(serde::Serialize)]
struct StoredStats<'a> {
    format: u32,
    #[serde(flatten)]
    stats: &'a TrainStats,
}

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

    /// The entry `key`, if complete and loadable on `base` (anything else,
    /// an entry of another format version included, reads as absent, so it
    /// is trained again and overwritten).
    pub fn load(&self, key: &str, base: &BaseModel) -> Option<StoredAdapter> {
        let dir = self.entry(key);
        let spath = dir.join(STATS_FILE);
        let sbytes = std::fs::read(&spath).ok()?;
        let found = match crate::error::json_format(&sbytes) {
            crate::error::FoundFormat::Absent => crate::error::FoundFormat::Version(STATS_FORMAT.into()),
            found => found,
        };
        if let Err(e) = crate::error::check_version("adapter stats", spath.display(), found, &[STATS_FORMAT]) {
            tracing::info!("{e}: training the adapter again");
            return None;
        }
        let stats: TrainStats = serde_json::from_slice(&sbytes).ok()?;
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
        let stored = StoredStats { format: STATS_FORMAT, stats };
        crate::fsutil::write_atomic(&dir.join(STATS_FILE), &serde_json::to_vec(&stored)?)?;
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
        let spath = store.entry("k").join(STATS_FILE);
        let written = std::fs::read_to_string(&spath).unwrap();
        assert!(written.starts_with(&format!("{{\"format\":{STATS_FORMAT},")), "{written}");
        // Stats written before the format field existed read as format 1.
        let unversioned = written.replacen(&format!("\"format\":{STATS_FORMAT},"), "", 1);
        std::fs::write(&spath, &unversioned).unwrap();
        assert_eq!(store.load("k", &base).unwrap().stats, stats);
        // A newer format is a miss (trained again), never trusted.
        std::fs::write(&spath, written.replacen(&format!("\"format\":{STATS_FORMAT}"), "\"format\":999", 1)).unwrap();
        assert!(store.load("k", &base).is_none(), "an entry of an unknown version reads as absent");
        std::fs::remove_file(store.entry("k").join(STATS_FILE)).unwrap();
        assert!(store.load("k", &base).is_none(), "no stats: an incomplete entry");
    }
}
