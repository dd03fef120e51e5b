//! Error kinds that decide the process exit code (documented in README.md).
//!
//! Inner modules return typed errors; `main` walks the `anyhow` chain and maps
//! the first classified error it finds to an exit code.

use std::fmt;

/// Why the process failed, as far as a caller (CI, a script) cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Any other failure (IO, engine, a lock held by another run).
    Other = 1,
    /// Bad usage or an invalid / unregistered / deviating spec.
    Usage = 2,
    /// An integrity failure: digest, signature or ledger chain.
    Integrity = 3,
    /// A published finding no longer holds, or a verdict missed `--expect`.
    Regression = 4,
}

/// An error that carries its exit kind; wrap any message with it.
#[derive(Debug)]
pub struct Classified {
    pub kind: ExitKind,
    pub message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// Build an `anyhow::Error` that exits with `kind`.
pub fn classified(kind: ExitKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified { kind, message: message.into() })
}

/// Shorthand for a usage error (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    classified(ExitKind::Usage, message)
}

/// Shorthand for an integrity error (exit 3).
pub fn integrity(message: impl Into<String>) -> anyhow::Error {
    classified(ExitKind::Integrity, message)
}

/// The exit code for an error: the first classified cause decides, else 1.
pub fn exit_kind(err: &anyhow::Error) -> ExitKind {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.kind;
        }
        if cause.downcast_ref::<crate::spec::SpecErrors>().is_some() {
            return ExitKind::Usage;
        }
    }
    ExitKind::Other
}
