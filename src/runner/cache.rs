//! The cell cache: one JSON file per finished cell, named by its key and
//! carrying a digest of its row, so a corrupted entry is detected and the
//! cell recomputed instead of trusted.
//!
//! Floats are stored as their IEEE-754 bit patterns (16 hex digits), not as
//! decimal numbers: JSON has no NaN, infinities or payloads, and a decimal
//! read back need not give the same bits. The digest covers the stored
//! form, so a row reads back bit for bit and an intact entry always
//! verifies (format 1 stored decimals and hashed the in-memory floats,
//! which made good entries look corrupted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ExitKind, FormatError, HasExitKind};
use crate::fsutil::FsError;
use crate::table::{Row, Value};

const CACHE_FORMAT: u32 = 2;

/// What a cache lookup or store can come to instead of a row: a lookup's
/// errors are misses (the cell is recomputed), a store's are reported.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No entry for the key.
    #[error("{}: no cache entry", path.display())]
    Absent { path: PathBuf },
    /// An entry of another format version (an older or newer harness wrote
    /// it): never trusted, kept for the harness that reads it.
    #[error(transparent)]
    Format(FormatError),
    /// An entry that does not parse, belongs to another key, or whose
    /// digest does not match its row.
    #[error("corrupted cache entry {} (digest mismatch)", path.display())]
    Corrupted { path: PathBuf },
    /// Writing an entry failed.
    #[error(transparent)]
    Write(#[from] FsError),
}

impl HasExitKind for CacheError {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Other
    }
}

/// Finished cells by key, under `<cache dir>/cells/<kernel family>/`.
#[derive(Debug, Clone)]
pub struct CellCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    key: String,
    row_sha256: String,
    row: BTreeMap<String, Stored>,
}

/// A value as the cache stores it: exact for every float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Stored {
    Bool(bool),
    Int(i64),
    /// `f64::to_bits` as 16 lower-case hex digits.
    F64(String),
    Str(String),
}

fn store(row: &Row) -> BTreeMap<String, Stored> {
    row.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::Bool(b) => Stored::Bool(*b),
                Value::Int(i) => Stored::Int(*i),
                Value::Float(f) => Stored::F64(format!("{:016x}", f.to_bits())),
                Value::Str(s) => Stored::Str(s.clone()),
            };
            (k.clone(), s)
        })
        .collect()
}

fn load(stored: &BTreeMap<String, Stored>) -> Option<Row> {
    stored
        .iter()
        .map(|(k, s)| {
            let v = match s {
                Stored::Bool(b) => Value::Bool(*b),
                Stored::Int(i) => Value::Int(*i),
                Stored::F64(hex) if hex.len() == 16 => Value::Float(f64::from_bits(u64::from_str_radix(hex, 16).ok()?)),
                Stored::F64(_) => return None,
                Stored::Str(s) => Value::Str(s.clone()),
            };
            Some((k.clone(), v))
        })
        .collect()
}

fn digest(stored: &BTreeMap<String, Stored>) -> String {
    crate::fsutil::sha256_hex(&serde_json::to_vec(stored).expect("rows serialise"))
}

impl CellCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: &Path) -> CellCache {
        CellCache { dir: dir.to_path_buf() }
    }

    /// The folder the cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a key is stored in.
    pub fn path(&self, key: &str) -> PathBuf {
        crate::services::Paths::cell_file(&self.dir, key)
    }

    /// A cached row, if present and intact. A corrupted entry is reported,
    /// removed and treated as absent (the cell is then recomputed); an entry
    /// of another format version is a miss too, but kept.
    pub fn get(&self, key: &str) -> Option<Row> {
        match self.lookup(key) {
            Ok(row) => Some(row),
            Err(CacheError::Format(e)) => {
                tracing::info!("{e}: recomputing the cell");
                None
            }
            Err(e @ CacheError::Corrupted { .. }) => {
                tracing::warn!("{e}: recomputing the cell");
                let _ = std::fs::remove_file(self.path(key));
                None
            }
            Err(_) => None,
        }
    }

    /// A cached row, or why there is none (no side effects; [`Self::get`]
    /// logs and removes corrupted entries). The format is checked before
    /// the entry's shape: another version may have other fields.
    pub fn lookup(&self, key: &str) -> Result<Row, CacheError> {
        let path = self.path(key);
        let Ok(bytes) = std::fs::read(&path) else { return Err(CacheError::Absent { path }) };
        let found = crate::error::json_format(&bytes);
        if found != crate::error::FoundFormat::Absent {
            crate::error::check_version("cell cache entry", path.display(), found, &[CACHE_FORMAT])
                .map_err(CacheError::Format)?;
        }
        serde_json::from_slice::<Entry>(&bytes)
            .ok()
            .filter(|e| e.key == key && e.row_sha256 == digest(&e.row))
            .and_then(|e| load(&e.row))
            .ok_or(CacheError::Corrupted { path })
    }

    /// Store a finished cell atomically.
    pub fn put(&self, key: &str, row: &Row) -> Result<(), CacheError> {
        let stored = store(row);
        let entry = Entry { format: CACHE_FORMAT, key: key.to_string(), row_sha256: digest(&stored), row: stored };
        let bytes = serde_json::to_vec_pretty(&entry).expect("cache entries have string keys and serialise");
        Ok(crate::fsutil::write_atomic(&self.path(key), &bytes)?)
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
        // 3.25 is 0x400a000000000000; flip one bit of its mantissa.
        let text = std::fs::read_to_string(&path).unwrap().replace("400a000000000000", "400a000000000001");
        std::fs::write(&path, text).unwrap();
        assert_eq!(cache.get("abcdef"), None);
        assert!(!path.exists(), "a corrupted entry is removed");
    }

    #[test]
    fn awkward_floats_read_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CellCache::new(dir.path());
        let floats = [
            f64::from_bits(1),       // the smallest subnormal
            f64::MIN_POSITIVE / 3.0, // another subnormal
            0.1 + 0.2,               // needs 17 significant digits
            1.0 / 3.0,
            f64::from_bits(0x000f_ffff_ffff_ffff), // the largest subnormal, a classic bad case for parsers
            f64::NAN,
            f64::from_bits(0x7ff8_0000_dead_beef), // a NaN with a payload
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MAX,
        ];
        let mut row = Row::new();
        for (i, f) in floats.iter().enumerate() {
            row.insert(format!("m{i:02}"), Value::Float(*f));
        }
        row.insert("n".into(), Value::Int(i64::MIN));
        row.insert("s".into(), Value::Str("ok".into()));
        row.insert("b".into(), Value::Bool(false));
        cache.put("k1", &row).unwrap();
        let back = cache.get("k1").expect("an intact entry is a hit");
        for (i, f) in floats.iter().enumerate() {
            match &back[&format!("m{i:02}")] {
                Value::Float(g) => assert_eq!(g.to_bits(), f.to_bits(), "float {i}: {f:e} came back as {g:e}"),
                other => panic!("float {i} came back as {other:?}"),
            }
        }
        assert_eq!(back["n"], Value::Int(i64::MIN));
        assert_eq!(back["s"], Value::Str("ok".into()));
        assert!(cache.path("k1").exists(), "a good entry is never thrown away");
        assert!(cache.get("k1").is_some(), "and reads back again");
    }

    #[test]
    fn an_entry_of_the_old_format_is_recomputed_quietly_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CellCache::new(dir.path());
        let path = cache.path("oldkey");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"format":1,"key":"oldkey","row_sha256":"x","row":{"ppl":3.25}}"#).unwrap();
        assert_eq!(cache.get("oldkey"), None);
        assert!(path.exists(), "an entry of another format is not corrupted, only not ours");
    }

    #[test]
    fn an_entry_of_an_unknown_version_is_a_named_miss_and_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CellCache::new(dir.path());
        let mut row = Row::new();
        row.insert("ppl".into(), Value::Float(3.25));
        cache.put("newkey", &row).unwrap();
        let path = cache.path("newkey");
        // A well-formed entry in every other respect: only the version differs.
        let text = std::fs::read_to_string(&path).unwrap().replace("\"format\": 2", "\"format\": 999");
        assert!(text.contains("999"), "{text}");
        std::fs::write(&path, &text).unwrap();
        match cache.lookup("newkey") {
            Err(CacheError::Format(FormatError::UnknownVersion { what, found, supported, .. })) => {
                assert_eq!((what, found, supported.0), ("cell cache entry", 999, &[CACHE_FORMAT][..]));
            }
            other => panic!("expected an unknown version, got {other:?}"),
        }
        assert_eq!(cache.get("newkey"), None, "a miss: the cell is recomputed");
        assert!(path.exists(), "and the entry is kept for the harness that wrote it");
        assert!(matches!(cache.lookup("absent"), Err(CacheError::Absent { .. })));
        std::fs::write(&path, r#"{"key":"newkey"}"#).unwrap();
        assert!(matches!(cache.lookup("newkey"), Err(CacheError::Corrupted { .. })), "no version: not an entry");
    }
}
