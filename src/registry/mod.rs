//! The pre-registration ledger: an append-only, hash-chained, signed log of
//! bet specs (`bets/ledger.jsonl`, one JSON entry per line).
//!
//! A spec entry (register, amend) holds the canonical JSON of the spec and
//! its SHA-256; a run entry records counted result bundles (bet, run id, the
//! digest of the bundle's SHA256SUMS), so a deleted or swapped bundle is
//! caught (see [`record`]). Every entry carries the hash of the previous
//! line, the time and a minisign signature of its body. Editing any byte of
//! any line breaks either the chain (the next line's `prev`) or a signature;
//! `verify` finds both.

pub mod checkpoint;
mod diff;
mod error;
pub mod record;

pub use diff::diff_canonical;
pub use error::{At, LedgerError, Result};
pub use record::{BundleFacts, check_record};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::signing::{Signer, TrustedKeys};

/// Version of the ledger line format written now. Format 1 lines (spec
/// entries only) are still read and verified; format 2 adds run entries.
pub const LEDGER_FORMAT: u32 = 2;

/// The ledger line formats this build reads; a line of any other version
/// is an integrity error naming it (this build cannot verify it).
pub const LEDGER_FORMATS: &[u32] = &[1, 2];

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why an entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// First registration of a bet.
    Register,
    /// A new version of a registered bet, with a reason.
    Amend,
    /// Counted result bundles put on the record (a finished run, a merge,
    /// or a dated back-fill of bundles written before run entries existed).
    Runs,
}

impl EntryKind {
    /// Whether the entry registers a version of a spec.
    pub fn is_spec(self) -> bool {
        matches!(self, EntryKind::Register | EntryKind::Amend)
    }
}

/// One counted bundle on the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub bet: u32,
    pub slug: String,
    pub run_id: String,
    pub profile: String,
    /// The spec hash the run was made under.
    pub spec_hash: String,
    /// SHA-256 of the bundle's `SHA256SUMS` (which lists every file's digest).
    pub sums_sha256: String,
    pub verdict: String,
}

impl RunRecord {
    /// The bundle's folder relative to `results/`.
    pub fn bundle_path(&self) -> String {
        format!("{:02}-{}/{}", self.bet, self.slug, self.run_id)
    }
}

/// The newest entry of the ledger as a run saw it: recorded in bundles and
/// reports, so a ledger cut back to before it is detected. `root` makes it
/// a checkpoint too (size `seq + 1`), checkable with a consistency proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHead {
    pub seq: u64,
    /// SHA-256 of that ledger line.
    pub entry_hash: String,
    /// Standard-base64 RFC 6962 root of lines `0..=seq` (absent in heads
    /// recorded before the ledger was a Merkle log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub format: u32,
    /// Position in the ledger, from 0.
    pub seq: u64,
    pub kind: EntryKind,
    pub bet: u32,
    pub slug: String,
    /// SHA-256 of `canonical` (see `spec::Bet::canonical`).
    pub spec_hash: String,
    /// The registered spec itself, so a deviation can be shown as a diff.
    pub canonical: serde_json::Value,
    /// For an amendment: the spec hash it replaces.
    #[serde(default)]
    pub amends: Option<String>,
    /// For an amendment (or a back-filled run entry): why, in the author's words.
    #[serde(default)]
    pub reason: Option<String>,
    /// For a run entry: the bundles it puts on the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,
    /// RFC 3339 UTC.
    pub time: String,
    pub harness: String,
    /// SHA-256 of the previous line's bytes ([`GENESIS`] for the first).
    pub prev: String,
    /// Key id of the signer (a `bets/keys/<id>.pub`).
    pub signer: String,
    /// Minisign signature of the entry serialised with this field empty.
    pub signature: String,
}

impl Entry {
    /// The bytes that are signed: the entry with an empty signature.
    fn body(&self) -> Vec<u8> {
        let mut e = self.clone();
        e.signature = String::new();
        serde_json::to_vec(&e).expect("entries serialise")
    }
}

/// The ledger as read from disk, with each line's hash.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    /// SHA-256 of each line's bytes (without the newline).
    pub hashes: Vec<String>,
    /// RFC 6962 leaf hash of each line: the ledger as a Merkle log (see [`checkpoint`]).
    pub leaves: Vec<crate::tlog::Hash>,
}

/// How a spec stands against the ledger.
#[derive(Debug, Clone)]
pub enum Registration {
    /// Never registered.
    Unregistered,
    /// The spec matches its latest entry.
    Current(Entry),
    /// The spec differs from its latest entry; the diff says how.
    Deviates { entry: Entry, diff: Vec<String> },
}

impl Ledger {
    /// Read the ledger (a missing file is an empty ledger). A line that is
    /// not a ledger entry, or of a format version this build does not read,
    /// is an integrity error naming the line.
    pub fn open(path: &Path) -> Result<Ledger> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(LedgerError::Io { action: "reading", path: path.to_path_buf(), error }),
        };
        let mut entries = Vec::new();
        let mut hashes = Vec::new();
        let mut leaves = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let file = path.display();
            crate::error::check_json_format(
                "ledger entry",
                format_args!("{file} line {}", i + 1),
                line.as_bytes(),
                LEDGER_FORMATS,
            )
            .map_err(LedgerError::Format)?;
            let entry: Entry = serde_json::from_str(line).map_err(|e| LedgerError::NotAnEntry {
                file: file.to_string(),
                line: i + 1,
                detail: e.to_string(),
            })?;
            entries.push(entry);
            hashes.push(crate::fsutil::sha256_hex(line.as_bytes()));
            leaves.push(crate::tlog::leaf_hash(line.as_bytes()));
        }
        Ok(Ledger { path: path.to_path_buf(), entries, hashes, leaves })
    }

    /// Check sequence numbers, the hash chain and every signature.
    pub fn verify(&self, keys: &TrustedKeys) -> Result<()> {
        for (i, e) in self.entries.iter().enumerate() {
            let at = At { file: self.path.display().to_string(), line: i + 1, bet: e.bet };
            if e.seq != i as u64 {
                return Err(LedgerError::Seq { at, found: e.seq, expected: i as u64 });
            }
            let prev = if i == 0 { GENESIS } else { &self.hashes[i - 1] };
            if e.prev != prev {
                return Err(LedgerError::ChainBroken { at, previous: i });
            }
            if e.kind.is_spec() {
                let spec_hash = crate::fsutil::sha256_hex(e.canonical.to_string().as_bytes());
                if e.spec_hash != spec_hash {
                    return Err(LedgerError::SpecHash { at });
                }
                if !e.runs.is_empty() {
                    return Err(LedgerError::SpecEntryWithRuns { at });
                }
            } else if e.runs.is_empty() {
                return Err(LedgerError::RunEntryWithoutRuns { at });
            }
            let signer = keys.verify(&e.body(), &e.signature, &at.to_string())?;
            if signer != e.signer {
                return Err(LedgerError::WrongSigner { at, claimed: e.signer.clone(), actual: signer });
            }
        }
        Ok(())
    }

    /// The latest spec entry of a bet (registration or amendment).
    pub fn latest(&self, bet: u32) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.bet == bet && e.kind.is_spec())
    }

    /// Every spec entry of a bet, oldest first (registration, then amendments).
    pub fn history(&self, bet: u32) -> Vec<&Entry> {
        self.entries.iter().filter(|e| e.bet == bet && e.kind.is_spec()).collect()
    }

    /// The newest entry, as bundles and reports record it.
    pub fn head(&self) -> Option<LedgerHead> {
        let seq = self.entries.len().checked_sub(1)?;
        let root = self.root_at(seq as u64 + 1)?;
        Some(LedgerHead {
            seq: seq as u64,
            entry_hash: self.hashes[seq].clone(),
            root: Some(crate::tlog::hash::to_base64(&root)),
        })
    }

    /// Whether `head` is still an entry of this chain, with the same root.
    pub fn contains(&self, head: &LedgerHead) -> bool {
        let root = self.root_at(head.seq + 1).map(|r| crate::tlog::hash::to_base64(&r));
        let same_root = head.root.is_none() || head.root == root;
        self.hashes.get(head.seq as usize).is_some_and(|h| *h == head.entry_hash) && same_root
    }

    /// Every recorded run with the seq of the entry that records it.
    pub fn run_records(&self) -> impl Iterator<Item = (u64, &RunRecord)> {
        self.entries.iter().flat_map(|e| e.runs.iter().map(move |r| (e.seq, r)))
    }

    /// How a spec with this number, hash and canonical form stands.
    pub fn registration(&self, bet: u32, spec_hash: &str, canonical: &serde_json::Value) -> Registration {
        match self.latest(bet) {
            None => Registration::Unregistered,
            Some(e) if e.spec_hash == spec_hash => Registration::Current(e.clone()),
            Some(e) => Registration::Deviates { entry: e.clone(), diff: diff_canonical(&e.canonical, canonical) },
        }
    }

    /// Sign and append an entry (its `seq`, `prev`, `signer` and `signature`
    /// are filled in here), holding a lock so two writers never interleave,
    /// then publish the new signed checkpoint.
    pub fn append(&mut self, mut entry: Entry, signer: &Signer) -> Result<Entry> {
        let lock_path = crate::services::Paths::ledger_lock(&self.path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| LedgerError::Io { action: "opening", path: lock_path.clone(), error })?;
        lock.lock().map_err(|error| LedgerError::Io { action: "locking", path: lock_path.clone(), error })?;
        // Re-read under the lock: another process may have appended.
        let fresh = Ledger::open(&self.path)?;
        *self = fresh;
        entry.seq = self.entries.len() as u64;
        entry.prev = self.hashes.last().cloned().unwrap_or_else(|| GENESIS.to_string());
        entry.signer = signer.key_id.clone();
        entry.signature = String::new();
        let comment = match entry.kind {
            EntryKind::Runs => format!("bets ledger seq {} runs {}", entry.seq, entry.runs.len()),
            _ => format!("bets ledger seq {} bet {} spec {}", entry.seq, entry.bet, entry.spec_hash),
        };
        entry.signature = signer.sign(&entry.body(), &comment)?;
        let line = serde_json::to_string(&entry).expect("entries serialise");
        crate::fsutil::append_line(&self.path, &line)?;
        self.hashes.push(crate::fsutil::sha256_hex(line.as_bytes()));
        self.leaves.push(crate::tlog::leaf_hash(line.as_bytes()));
        self.entries.push(entry.clone());
        checkpoint::write_checkpoint(self, signer)?;
        Ok(entry)
    }
}

/// A fresh, unsigned entry for a spec (filled in by [`Ledger::append`]).
pub fn new_entry(kind: EntryKind, bet: u32, slug: &str, canonical: serde_json::Value) -> Entry {
    Entry {
        format: LEDGER_FORMAT,
        seq: 0,
        kind,
        bet,
        slug: slug.to_string(),
        spec_hash: crate::fsutil::sha256_hex(canonical.to_string().as_bytes()),
        canonical,
        amends: None,
        reason: None,
        runs: Vec::new(),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        harness: crate::HARNESS_VERSION.to_string(),
        prev: String::new(),
        signer: String::new(),
        signature: String::new(),
    }
}

/// A fresh, unsigned run entry putting `runs` on the record (filled in by
/// [`Ledger::append`]). `bet`, `slug` and `spec_hash` name the run's bet
/// when all runs belong to one; a back-fill over several bets has bet 0.
pub fn run_entry(runs: Vec<RunRecord>, reason: Option<String>) -> Entry {
    let one = runs.first().filter(|f| runs.iter().all(|r| r.bet == f.bet && r.spec_hash == f.spec_hash));
    let mut e = new_entry(
        EntryKind::Runs,
        one.map_or(0, |r| r.bet),
        one.map_or("runs", |r| r.slug.as_str()),
        serde_json::Value::Null,
    );
    e.spec_hash = one.map(|r| r.spec_hash.clone()).unwrap_or_default();
    e.reason = reason;
    e.runs = runs;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitKind, FormatError, HasExitKind, Versions};

    fn line(format: u32) -> String {
        let e = Entry { format, ..new_entry(EntryKind::Register, 14, "royalty-math", serde_json::json!({"a": 1})) };
        serde_json::to_string(&e).unwrap()
    }

    #[test]
    fn lines_of_both_formats_this_build_reads_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, format!("{}\n{}\n", line(1), line(LEDGER_FORMAT))).unwrap();
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.entries.iter().map(|e| e.format).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_line_of_an_unknown_version_is_a_named_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        // A newer line may carry fields this build has never heard of: the
        // version is what is reported, not the unknown field.
        let newer = line(999).replacen('{', r#"{"witnesses":[],"#, 1);
        std::fs::write(&path, format!("{}\n{newer}\n", line(2))).unwrap();
        let err = Ledger::open(&path).unwrap_err();
        match &err {
            LedgerError::Format(FormatError::UnknownVersion { what, path: shown, found, supported }) => {
                assert_eq!((*what, *found, *supported), ("ledger entry", 999, Versions(LEDGER_FORMATS)));
                assert_eq!(*shown, format!("{} line 2", path.display()));
            }
            other => panic!("expected an unknown version, got {other:?}"),
        }
        assert_eq!(err.exit_kind(), ExitKind::Integrity);
        assert_eq!(crate::error::exit_kind(&anyhow::Error::new(err)), ExitKind::Integrity);
        let missing = line(2).replacen(r#""format":2,"#, "", 1);
        std::fs::write(&path, format!("{missing}\n")).unwrap();
        assert!(matches!(Ledger::open(&path), Err(LedgerError::Format(FormatError::MissingVersion { .. }))));
        std::fs::write(&path, "not json\n").unwrap();
        let err = Ledger::open(&path).unwrap_err();
        assert!(matches!(err, LedgerError::NotAnEntry { line: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("line 1: not a ledger entry"), "{err}");
    }
}
