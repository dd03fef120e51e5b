//! The cell cache: one JSON file per finished cell, named by its key and
//! carrying a digest of its row, so a corrupted entry is detected and the
//! cell recomputed instead of trusted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::table::Row;

const CACHE_FORMAT: u32 = 1;

/// Finished cells by key, under `<cache dir>/cells/`.
#[derive(Debug, Clone)]
pub struct CellCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    key: String,
    row_sha256: String,
    row: Row,
}

fn digest(row: &Row) -> String {
    crate::fsutil::sha256_hex(&serde_json::to_vec(row).expect("rows serialise"))
}

impl CellCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: &Path) -> CellCache {
        CellCache { dir: dir.to_path_buf() }
    }

    /// The file a key is stored in.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2.min(key.len())]).join(format!("{key}.json"))
    }

    /// A cached row, if present and intact. A corrupted entry is reported,
    /// removed and treated as absent (the cell is then recomputed).
    pub fn get(&self, key: &str) -> Option<Row> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(e) if e.format == CACHE_FORMAT && e.key == key && e.row_sha256 == digest(&e.row) => Some(e.row),
            _ => {
                tracing::warn!("corrupted cache entry {} (digest mismatch): recomputing the cell", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store a finished cell atomically.
    pub fn put(&self, key: &str, row: &Row) -> anyhow::Result<()> {
        let entry = Entry { format: CACHE_FORMAT, key: key.to_string(), row_sha256: digest(row), row: row.clone() };
        crate::fsutil::write_atomic(&self.path(key), &serde_json::to_vec_pretty(&entry)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Value;

    #[test]
    fn a_cached_row_round_trips_and_a_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CellCache::new(dir.path());
        let mut row = Row::new();
        row.insert("ppl".into(), Value::Float(3.25));
        cache.put("abcdef", &row).unwrap();
        assert_eq!(cache.get("abcdef"), Some(row));
        let path = cache.path("abcdef");
        let text = std::fs::read_to_string(&path).unwrap().replace("3.25", "3.26");
        std::fs::write(&path, text).unwrap();
        assert_eq!(cache.get("abcdef"), None);
        assert!(!path.exists(), "a corrupted entry is removed");
    }
}
