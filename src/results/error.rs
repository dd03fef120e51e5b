//! What writing, verifying and reading result bundles can fail with, one
//! variant per failure, each naming the file.

use std::path::PathBuf;

use crate::error::{ExitKind, FormatError, HasExitKind};
use crate::fsutil::FsError;
use crate::signing::SigningError;
use crate::table::TableError;

/// Everything a bundle can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A bundle folder that already exists (bundles are append-only).
    #[error("{} already exists: bundles are never rewritten", dir.display())]
    Exists { dir: PathBuf },
    /// A file operation on a bundle failed (`action`: reading, clearing,
    /// creating, listing).
    #[error("{action} {}: {error}", path.display())]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    /// The staged bundle could not be renamed into place.
    #[error("moving {} into {}: {error}", from.display(), to.display())]
    Move { from: PathBuf, to: PathBuf, error: std::io::Error },
    /// A bundle file could not be serialised.
    #[error("serialising {file}: {detail}")]
    Serialise { file: &'static str, detail: String },
    /// Writing a bundle file failed.
    #[error(transparent)]
    Write(#[from] FsError),
    /// Signing the sums, or checking their signature, failed.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// `SHA256SUMS` cannot be read.
    #[error("{}: cannot read: {error}", path.display())]
    UnreadableSums { path: PathBuf, error: std::io::Error },
    /// `SHA256SUMS.minisig` is missing or unreadable.
    #[error("{}: missing signature: {error}", path.display())]
    MissingSignature { path: PathBuf, error: std::io::Error },
    /// `SHA256SUMS` is not UTF-8.
    #[error("{}: not UTF-8", path.display())]
    SumsNotUtf8 { path: PathBuf },
    /// A line of `SHA256SUMS` that is not `<digest>  <name>`.
    #[error("{} line {line}: malformed", path.display())]
    MalformedSums { path: PathBuf, line: usize },
    /// A listed name that leaves the bundle (`..`, absolute).
    #[error("{} line {line}: path escapes the bundle", path.display())]
    EscapingPath { path: PathBuf, line: usize },
    /// A listed file that cannot be read.
    #[error("{}: listed but unreadable: {error}", path.display())]
    ListedUnreadable { path: PathBuf, error: std::io::Error },
    /// A file whose digest is not the listed one.
    #[error("{}: SHA-256 does not match SHA256SUMS", path.display())]
    DigestMismatch { path: PathBuf },
    /// A file in the bundle that the sums do not list.
    #[error("{}: not listed in SHA256SUMS", path.display())]
    Unlisted { path: PathBuf },
    /// A manifest or verdict that does not parse (`what`: `a bundle manifest`).
    #[error("{} is not {what}: {detail}", path.display())]
    Malformed { what: &'static str, path: PathBuf, detail: String },
    /// A manifest or verdict of a format version this build does not read.
    #[error(transparent)]
    Format(FormatError),
    /// The in-toto attestation is missing, unsigned by a trusted key, or
    /// says something the bundle does not.
    #[error("{path}: attestation: {detail}")]
    Attestation { path: String, detail: String },
    /// The cells table cannot be read.
    #[error("reading {}: {error}", path.display())]
    Table { path: PathBuf, error: TableError },
}

impl HasExitKind for BundleError {
    fn exit_kind(&self) -> ExitKind {
        use BundleError::*;
        match self {
            Exists { .. } | Io { .. } | Move { .. } | Serialise { .. } | Write(_) | Malformed { .. } | Table { .. } => {
                ExitKind::Other
            }
            Signing(e) => e.exit_kind(),
            UnreadableSums { .. }
            | MissingSignature { .. }
            | SumsNotUtf8 { .. }
            | MalformedSums { .. }
            | EscapingPath { .. }
            | ListedUnreadable { .. }
            | DigestMismatch { .. }
            | Unlisted { .. }
            | Attestation { .. }
            | Format(_) => ExitKind::Integrity,
        }
    }
}

/// The results module's result type.
pub type Result<T> = std::result::Result<T, BundleError>;
