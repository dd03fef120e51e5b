//! Atomic file writes and hashing helpers shared by every module that writes.
//!
//! Writes go to a temporary file in the destination folder, are flushed to
//! disk, then renamed over the target: a killed process leaves either the old
//! file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// A file operation that failed: what was being done to which path, and
/// the IO error (the message is `{context}: {error}`).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {error}")]
pub struct FsError {
    /// What was being done, with the path (`writing results/x/cells.csv`).
    pub context: String,
    /// The IO error.
    pub error: std::io::Error,
}

fn fs_err(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> FsError {
    move |error| FsError { context: context(), error }
}

/// Move a completed folder `from` to `to`, which is only ever created this
/// way, so whatever is there is complete. If another process got there
/// first (two runs fetching into a cold cache at once), its copy is kept
/// and ours is left for the caller's temporary folder to remove.
pub fn publish_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(_) if to.is_dir() => Ok(()),
        other => other,
    }
}

/// Write `bytes` to `path` atomically, creating parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fs_err(|| format!("creating folder {}", dir.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(fs_err(|| format!("creating a temporary file in {}", dir.display())))?;
    tmp.write_all(bytes).map_err(fs_err(|| format!("writing {}", path.display())))?;
    tmp.as_file().sync_all().map_err(fs_err(|| format!("flushing {}", path.display())))?;
    tmp.persist(path).map_err(|e| fs_err(|| format!("renaming into {}", path.display()))(e.error))?;
    Ok(())
}

/// Append one line to `path` and flush it to disk (for append-only logs).
pub fn append_line(path: &Path, line: &str) -> Result<(), FsError> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fs_err(|| format!("creating folder {}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(fs_err(|| format!("opening {} for append", path.display())))?;
    f.write_all(format!("{line}\n").as_bytes()).map_err(fs_err(|| format!("appending to {}", path.display())))?;
    f.sync_all().map_err(fs_err(|| format!("flushing {}", path.display())))?;
    Ok(())
}

/// Lower-case hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, FsError> {
    let bytes = std::fs::read(path).map_err(fs_err(|| format!("reading {}", path.display())))?;
    Ok(sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_onto_a_folder_another_process_published_keeps_theirs() {
        let root = tempfile::tempdir().unwrap();
        let (ours, theirs, to) = (root.path().join("ours"), root.path().join("theirs"), root.path().join("final"));
        for (dir, text) in [(&ours, "ours"), (&theirs, "theirs")] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("f"), text).unwrap();
        }
        publish_dir(&theirs, &to).unwrap();
        publish_dir(&ours, &to).unwrap();
        assert_eq!(std::fs::read_to_string(to.join("f")).unwrap(), "theirs");
        assert!(publish_dir(&root.path().join("none"), &root.path().join("elsewhere")).is_err());
    }
}
