//! What reading, verifying and appending to the ledger (and its signed
//! checkpoint) can fail with, one variant per failure, naming the file and
//! line.

use std::path::PathBuf;

use crate::error::{ExitKind, FormatError, HasExitKind};
use crate::fsutil::FsError;
use crate::signing::SigningError;
use crate::tlog::checkpoint::CheckpointError;

/// Where in the ledger a problem is: `bets/ledger.jsonl line 3 (bet 14)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The ledger file as shown.
    pub file: String,
    /// Line number, from 1.
    pub line: usize,
    /// The bet the entry names.
    pub bet: u32,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {} (bet {})", self.file, self.line, self.bet)
    }
}

/// Everything the ledger can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger (or its lock) exists but cannot be read or opened.
    #[error("{action} {}: {error}", path.display())]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    /// A line that does not parse as a ledger entry.
    #[error("{file} line {line}: not a ledger entry: {detail}")]
    NotAnEntry { file: String, line: usize, detail: String },
    /// A line of a format version this build does not read.
    #[error(transparent)]
    Format(FormatError),
    /// An entry whose `seq` is not its position.
    #[error("{at}: seq is {found}, expected {expected}")]
    Seq { at: At, found: u64, expected: u64 },
    /// An entry whose `prev` is not the hash of the line before it.
    #[error("{at}: chain broken: prev does not match the hash of line {previous}")]
    ChainBroken { at: At, previous: usize },
    /// A spec entry whose `spec_hash` is not the hash of its spec.
    #[error("{at}: spec_hash does not match the registered spec")]
    SpecHash { at: At },
    /// A spec entry (register, amend) that records runs.
    #[error("{at}: a spec entry may not record runs")]
    SpecEntryWithRuns { at: At },
    /// A run entry that records no run.
    #[error("{at}: a run entry records no run")]
    RunEntryWithoutRuns { at: At },
    /// An entry signed by another key than the one it names.
    #[error("{at}: claims signer {claimed} but is signed by {actual}")]
    WrongSigner { at: At, claimed: String, actual: String },
    /// A signature that does not verify, or signing failed.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// Appending a line or writing the checkpoint failed.
    #[error(transparent)]
    Write(#[from] FsError),
    /// A checkpoint asked of an empty ledger.
    #[error("an empty ledger has no checkpoint")]
    EmptyLedger,
    /// Signing the checkpoint note failed.
    #[error(transparent)]
    Note(CheckpointError),
    /// A checkpoint file that is not a signed note.
    #[error("not a signed checkpoint: {0}")]
    NotASignedNote(CheckpointError),
    /// A signed note whose text is not a checkpoint.
    #[error("not a checkpoint: {0}")]
    NotACheckpoint(CheckpointError),
    /// A checkpoint with no signature by any trusted key.
    #[error("it carries no signature by a trusted key (bets/keys/)")]
    NoTrustedSignature,
    /// A checkpoint whose signature by a trusted key's name does not verify.
    #[error(transparent)]
    BadCheckpointSignature(CheckpointError),
}

impl HasExitKind for LedgerError {
    fn exit_kind(&self) -> ExitKind {
        use LedgerError::*;
        match self {
            Io { .. } | Write(_) | EmptyLedger | Note(_) => ExitKind::Other,
            Signing(e) => e.exit_kind(),
            NotAnEntry { .. }
            | Format(_)
            | Seq { .. }
            | ChainBroken { .. }
            | SpecHash { .. }
            | SpecEntryWithRuns { .. }
            | RunEntryWithoutRuns { .. }
            | WrongSigner { .. }
            | NotASignedNote(_)
            | NotACheckpoint(_)
            | NoTrustedSignature
            | BadCheckpointSignature(_) => ExitKind::Integrity,
        }
    }
}

/// The registry's result type.
pub type Result<T> = std::result::Result<T, LedgerError>;
