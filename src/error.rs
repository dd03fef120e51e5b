//! Error kinds that decide the process exit code (documented in README.md),
//! and the error every versioned on-disk format shares.
//!
//! Modules below the app return typed errors (one thiserror enum each) that
//! know their [`ExitKind`] through [`HasExitKind`]; `main` walks the
//! `anyhow` chain with [`exit_kind`] and the first error it recognises
//! decides. Only the app builds [`classified`] errors, for failures it finds
//! itself (a verdict that misses `--expect`, a bet already running).

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

/// A typed error that says which exit code it ends the process with, so
/// the code is decided once, at the top, from what went wrong.
pub trait HasExitKind {
    /// The exit kind of this error.
    fn exit_kind(&self) -> ExitKind;
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

impl HasExitKind for Classified {
    fn exit_kind(&self) -> ExitKind {
        self.kind
    }
}

impl HasExitKind for crate::spec::SpecErrors {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Usage
    }
}

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

/// The exit code for an error: the first cause in the chain whose type is
/// known here decides (a classified message, invalid specs, or one of the
/// typed errors below the app), else 1.
pub fn exit_kind(err: &anyhow::Error) -> ExitKind {
    err.chain().find_map(known_kind).unwrap_or(ExitKind::Other)
}

fn known_kind(cause: &(dyn std::error::Error + 'static)) -> Option<ExitKind> {
    fn kind<E: HasExitKind + std::error::Error + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<ExitKind> {
        cause.downcast_ref::<E>().map(E::exit_kind)
    }
    kind::<Classified>(cause)
        .or_else(|| kind::<crate::spec::SpecErrors>(cause))
        .or_else(|| kind::<crate::registry::LedgerError>(cause))
        .or_else(|| kind::<crate::results::BundleError>(cause))
        .or_else(|| kind::<crate::signing::SigningError>(cause))
        .or_else(|| kind::<crate::report::baseline::BaselineError>(cause))
        .or_else(|| kind::<FormatError>(cause))
}

/// The versions of a format this build reads, for messages: `version 2`,
/// `versions 1 and 2`, `versions 1, 2 and 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions(pub &'static [u32]);

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("no version"),
            [one] => write!(f, "version {one}"),
            [init @ .., last] => {
                let init: Vec<String> = init.iter().map(u32::to_string).collect();
                write!(f, "versions {} and {last}", init.join(", "))
            }
        }
    }
}

/// A file of a format version this build does not read: written by
/// another (usually newer) harness, or not one of its files at all. It
/// names the file, the version found and the versions this build reads.
///
/// On its own it is a usage error (run the harness that wrote the file);
/// the ledger and bundles wrap it as an integrity failure, since what this
/// build cannot read it cannot verify, and the cell cache treats it as a
/// miss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file's `format` is not one this build reads.
    #[error("{path}: {what} has format version {found}, which this build does not read (it reads {supported})")]
    UnknownVersion { what: &'static str, path: String, found: u64, supported: Versions },
    /// The file has no `format` where the format requires one.
    #[error("{path}: {what} has no format version (this build reads {supported})")]
    MissingVersion { what: &'static str, path: String, supported: Versions },
}

impl HasExitKind for FormatError {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Usage
    }
}

/// What a JSON document says its format is, read before its shape is
/// trusted (another version may have other fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundFormat {
    /// Not a JSON object, or `format` is not a whole number: the
    /// document's own parse names what is wrong.
    Unreadable,
    /// A JSON object without a `format` field.
    Absent,
    /// The `format` field's value.
    Version(u64),
}

/// The `format` field of a JSON document.
pub fn json_format(bytes: &[u8]) -> FoundFormat {
    #[derive(serde::Deserialize)]
    struct Peek {
        format: Option<serde_json::Value>,
    }
    // A struct also deserialises from a JSON array: only an object has fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return FoundFormat::Unreadable;
    }
    match serde_json::from_slice::<Peek>(bytes) {
        Err(_) => FoundFormat::Unreadable,
        Ok(Peek { format: None }) => FoundFormat::Absent,
        Ok(Peek { format: Some(v) }) => v.as_u64().map_or(FoundFormat::Unreadable, FoundFormat::Version),
    }
}

/// Check a JSON document's `format` against the versions this build reads
/// (`path` names the file in the error). A document whose format cannot be
/// read passes: parsing it fails with a message of its own.
pub fn check_json_format(
    what: &'static str,
    path: impl fmt::Display,
    bytes: &[u8],
    supported: &'static [u32],
) -> Result<(), FormatError> {
    check_version(what, path, json_format(bytes), supported)
}

/// Check a format version already read (see [`json_format`]).
pub fn check_version(
    what: &'static str,
    path: impl fmt::Display,
    found: FoundFormat,
    supported: &'static [u32],
) -> Result<(), FormatError> {
    let supported_v = Versions(supported);
    match found {
        FoundFormat::Unreadable => Ok(()),
        FoundFormat::Version(v) if supported.iter().any(|s| u64::from(*s) == v) => Ok(()),
        FoundFormat::Version(found) => {
            Err(FormatError::UnknownVersion { what, path: path.to_string(), found, supported: supported_v })
        }
        FoundFormat::Absent => {
            Err(FormatError::MissingVersion { what, path: path.to_string(), supported: supported_v })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_version_names_the_file_the_version_and_what_this_build_reads() {
        let err =
            check_json_format("manifest.json", "results/x/manifest.json", br#"{"format": 999}"#, &[1, 2]).unwrap_err();
        assert_eq!(
            err,
            FormatError::UnknownVersion {
                what: "manifest.json",
                path: "results/x/manifest.json".into(),
                found: 999,
                supported: Versions(&[1, 2]),
            }
        );
        assert_eq!(
            err.to_string(),
            "results/x/manifest.json: manifest.json has format version 999, which this build does not read (it \
             reads versions 1 and 2)"
        );
        let missing = check_json_format("baseline", "b.json", br#"{"bet": 1}"#, &[1]).unwrap_err();
        assert_eq!(missing.to_string(), "b.json: baseline has no format version (this build reads version 1)");
    }

    #[test]
    fn known_versions_and_unreadable_documents_pass_the_check() {
        assert_eq!(check_json_format("x", "p", br#"{"format": 2, "other": [1]}"#, &[1, 2]), Ok(()));
        assert_eq!(json_format(b"not json"), FoundFormat::Unreadable);
        assert_eq!(json_format(br#"{"format": "two"}"#), FoundFormat::Unreadable);
        assert_eq!(json_format(br#"[1]"#), FoundFormat::Unreadable);
        assert_eq!(check_json_format("x", "p", b"not json", &[1]), Ok(()));
        assert_eq!(Versions(&[1, 2, 3]).to_string(), "versions 1, 2 and 3");
    }

    #[test]
    fn the_first_known_cause_in_the_chain_decides_the_exit_kind() {
        let format = FormatError::MissingVersion { what: "x", path: "p".into(), supported: Versions(&[1]) };
        assert_eq!(exit_kind(&anyhow::Error::new(format.clone())), ExitKind::Usage);
        let wrapped = anyhow::Error::new(format).context("while reading");
        assert_eq!(exit_kind(&wrapped), ExitKind::Usage, "context on top keeps the kind");
        assert_eq!(exit_kind(&integrity("x").context(usage("y").to_string())), ExitKind::Integrity);
        assert_eq!(exit_kind(&anyhow::anyhow!("plain")), ExitKind::Other);
        let spec = crate::spec::SpecErrors(vec![]);
        assert_eq!(exit_kind(&anyhow::Error::new(spec)), ExitKind::Usage);
    }
}
