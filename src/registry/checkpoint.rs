//! The ledger as an RFC 6962 Merkle log: its lines are the leaves, and
//! every append publishes a signed checkpoint (C2SP tlog-checkpoint, signed
//! with the ledger key) in `bets/ledger.checkpoint`.
//!
//! The hash chain already lets the repository check itself; the log lets
//! anyone *outside* it who kept an older checkpoint (a witness, a CI log, a
//! reader of an old report) check that today's ledger extends the one they
//! saw, with a consistency proof any RFC 6962 verifier accepts
//! (`bets tlog consistency --old FILE`), so a truncated, forked or rewritten
//! ledger is caught even by someone who holds nothing else.

use std::path::{Path, PathBuf};

use super::{Ledger, LedgerError, Result};
use crate::signing::{Signer, TrustedKeys};
use crate::tlog::checkpoint::{Checkpoint, SignedNote};
use crate::tlog::{self, Hash, Tree};

/// Where the signed checkpoint of a ledger lives (`ledger.checkpoint` beside it).
pub fn checkpoint_path(ledger: &Path) -> PathBuf {
    crate::services::Paths::checkpoint_of(ledger)
}

/// How a checkpoint stands against the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consistency {
    /// The ledger's first `size` lines have the checkpoint's root.
    Consistent,
    /// The checkpoint names another log.
    OtherLog { expected: String, found: String },
    /// The checkpoint counts more entries than the ledger holds.
    Truncated { checkpoint: u64, ledger: u64 },
    /// The first `size` lines are not the ones that were signed.
    Forked { size: u64 },
}

impl Consistency {
    /// What is wrong, for messages (`None` when consistent).
    pub fn problem(&self) -> Option<String> {
        match self {
            Consistency::Consistent => None,
            Consistency::OtherLog { expected, found } => {
                Some(format!("the checkpoint is for log `{found}`, this ledger is `{expected}`"))
            }
            Consistency::Truncated { checkpoint, ledger } => Some(format!(
                "the checkpoint counts {checkpoint} entries but the ledger holds {ledger}: the ledger was truncated"
            )),
            Consistency::Forked { size } => Some(format!(
                "the ledger's first {size} entries are not the ones the checkpoint signed: the history was \
                 rewritten (a fork)"
            )),
        }
    }
}

impl Ledger {
    /// The ledger as a Merkle tree over its lines.
    pub fn tree(&self) -> Tree {
        Tree::from_leaf_hashes(self.leaves.clone())
    }

    /// The log's name: `bets-ledger/` and the start of the first line's hash
    /// (so two repositories' ledgers never share an origin).
    pub fn origin(&self) -> Option<String> {
        self.hashes.first().map(|h| format!("bets-ledger/{}", &h[..16]))
    }

    /// The Merkle root of the first `size` lines (`None` past the end).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        (size as usize <= self.leaves.len()).then(|| tlog::root(&self.leaves[..size as usize]))
    }

    /// The checkpoint of the whole ledger (`None` while it is empty).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        Some(Checkpoint {
            origin: self.origin()?,
            size: self.leaves.len() as u64,
            root: self.root_at(self.leaves.len() as u64)?,
            extensions: Vec::new(),
        })
    }

    /// Whether the ledger extends what `cp` signed.
    pub fn consistency(&self, cp: &Checkpoint) -> Consistency {
        let expected = self.origin().unwrap_or_else(|| "(an empty ledger)".into());
        if cp.origin != expected {
            return Consistency::OtherLog { expected, found: cp.origin.clone() };
        }
        match self.root_at(cp.size) {
            None => Consistency::Truncated { checkpoint: cp.size, ledger: self.leaves.len() as u64 },
            Some(root) if root != cp.root => Consistency::Forked { size: cp.size },
            Some(_) => Consistency::Consistent,
        }
    }
}

/// Sign the ledger's current checkpoint and write it beside the ledger.
pub fn write_checkpoint(ledger: &Ledger, signer: &Signer) -> Result<PathBuf> {
    let cp = ledger.checkpoint().ok_or(LedgerError::EmptyLedger)?;
    let note = signer.note_signer()?.sign_checkpoint(&cp).map_err(LedgerError::Note)?;
    let path = checkpoint_path(&ledger.path);
    crate::fsutil::write_atomic(&path, note.as_bytes())?;
    Ok(path)
}

/// Open a signed checkpoint (a note signed by one of the trusted keys);
/// returns it with the name of the key that signed it.
pub fn open_checkpoint(note: &str, keys: &TrustedKeys) -> Result<(Checkpoint, String)> {
    let parsed = SignedNote::parse(note).map_err(LedgerError::NotASignedNote)?;
    let mut last = LedgerError::NoTrustedSignature;
    for v in keys.note_verifiers() {
        match v.verify(&parsed) {
            Ok(()) => {
                let cp = Checkpoint::parse_text(&parsed.text).map_err(LedgerError::NotACheckpoint)?;
                return Ok((cp, v.name));
            }
            Err(e @ crate::tlog::checkpoint::CheckpointError::BadSignature { .. }) => {
                last = LedgerError::BadCheckpointSignature(e)
            }
            Err(_) => {}
        }
    }
    Err(last)
}

/// Every problem with the ledger's own checkpoint file: missing, not
/// signed by a trusted key, inconsistent with the ledger, or stale (it must
/// cover every entry, since every append rewrites it).
pub fn check_checkpoint_file(ledger: &Ledger, keys: &TrustedKeys) -> Vec<String> {
    let path = checkpoint_path(&ledger.path);
    let shown = path.display().to_string();
    if ledger.entries.is_empty() {
        return Vec::new();
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return vec![format!(
                "{shown}: cannot read the ledger's signed checkpoint ({e}); `bets tlog checkpoint --write` signs one"
            )];
        }
    };
    let cp = match open_checkpoint(&text, keys) {
        Ok((cp, _)) => cp,
        Err(e) => return vec![format!("{shown}: {e}")],
    };
    if let Some(p) = ledger.consistency(&cp).problem() {
        return vec![format!("{shown}: {p}")];
    }
    if cp.size < ledger.entries.len() as u64 {
        return vec![format!(
            "{shown}: covers {} of the ledger's {} entries (every append re-signs it; `bets tlog checkpoint --write` \
             brings it up to date)",
            cp.size,
            ledger.entries.len()
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EntryKind, new_entry};

    fn ledger(lines: &[&str]) -> Ledger {
        let hashes = lines.iter().map(|l| crate::fsutil::sha256_hex(l.as_bytes())).collect();
        let leaves = lines.iter().map(|l| tlog::leaf_hash(l.as_bytes())).collect();
        let entries = lines.iter().map(|_| new_entry(EntryKind::Register, 1, "x", serde_json::json!({}))).collect();
        Ledger { path: "bets/ledger.jsonl".into(), entries, hashes, leaves }
    }

    #[test]
    fn a_ledger_is_consistent_with_its_own_older_checkpoints() {
        let l = ledger(&["a", "b", "c", "d", "e"]);
        for size in 1..=5 {
            let cp = Checkpoint { size, root: l.root_at(size).unwrap(), ..l.checkpoint().unwrap() };
            assert_eq!(l.consistency(&cp), Consistency::Consistent, "size {size}");
        }
        assert_eq!(l.checkpoint().unwrap().root, tlog::root(&l.leaves));
        assert_eq!(l.origin().unwrap(), format!("bets-ledger/{}", &crate::fsutil::sha256_hex(b"a")[..16]));
    }

    #[test]
    fn truncation_forks_and_other_logs_are_told_apart() {
        let full = ledger(&["a", "b", "c", "d"]);
        let cp = full.checkpoint().unwrap();
        let cut = ledger(&["a", "b", "c"]);
        assert_eq!(cut.consistency(&cp), Consistency::Truncated { checkpoint: 4, ledger: 3 });
        let forked = ledger(&["a", "b", "x", "d"]);
        assert_eq!(forked.consistency(&cp), Consistency::Forked { size: 4 });
        let other = ledger(&["z"]);
        assert!(matches!(other.consistency(&cp), Consistency::OtherLog { .. }));
        assert!(cut.consistency(&cp).problem().unwrap().contains("truncated"));
    }
}
