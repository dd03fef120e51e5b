//! Atomic file writes and hashing helpers shared by every module that writes.
//!
//! Writes go to a temporary file in the destination folder, are flushed to
//! disk, then renamed over the target: a killed process leaves either the old
//! file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Write `bytes` to `path` atomically, creating parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("flushing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Append one line to `path` and flush it to disk (for append-only logs).
pub fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} for append", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes()).with_context(|| format!("appending to {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// Lower-case hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}
