//! Bundle verification: signature over SHA256SUMS, then every digest, then
//! no file that the sums do not list.

use std::path::{Path, PathBuf};

use super::attest::{self, ATTESTATION};
use super::bundle::{CELLS_PARQUET, MANIFEST, MANIFEST_FORMATS, Manifest, SUMS, SUMS_SIG, VERDICT, VerdictFile};
use super::error::{BundleError, Result};
use crate::signing::{Signer, TrustedKeys};
use crate::table::Row;

/// What a verified bundle is.
#[derive(Debug, Clone)]
pub struct BundleCheck {
    pub dir: PathBuf,
    /// Key id of the minisign signature over `SHA256SUMS`.
    pub signer: String,
    /// Key id of the DSSE signatures of the attestation.
    pub attested_by: String,
    pub files: usize,
}

/// Every bundle under `results_dir` (folders holding a `SHA256SUMS`), sorted.
pub fn find_bundles(results_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(results_dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|bet| find_bundles_in(&bet.path()))
        .collect();
    out.sort();
    out
}

/// Verify one bundle (the signed sums, every digest, no unlisted file, then
/// the in-toto attestation); any mismatch is an integrity error naming the file.
pub fn verify_bundle(dir: &Path, keys: &TrustedKeys) -> Result<BundleCheck> {
    let (signer, listed) = verify_sums(dir, keys)?;
    let attested_by = attest::verify(dir, &listed, keys, &read_manifest(dir)?, &read_verdict(dir)?)?;
    Ok(BundleCheck { dir: dir.to_path_buf(), signer, attested_by, files: listed.len() })
}

/// Add the attestation to a bundle made before attestations existed (its
/// sums verified first); the bundle's own files are not touched. Returns
/// false when it already has one.
pub fn write_attestation(
    dir: &Path,
    keys: &TrustedKeys,
    signer: &Signer,
    attested: &str,
    reason: &str,
) -> Result<bool> {
    let (_, listed) = verify_sums(dir, keys)?;
    if dir.join(ATTESTATION).exists() {
        return Ok(false);
    }
    let subjects = attest::subjects(dir, &listed)?;
    let statements = attest::statements(&subjects, &read_manifest(dir)?, &read_verdict(dir)?, attested, Some(reason));
    crate::fsutil::write_atomic(&dir.join(ATTESTATION), &attest::sign_statements(&statements, signer)?)?;
    Ok(true)
}

/// Check the signature over `SHA256SUMS`, every digest it lists, and that
/// nothing else is in the bundle; returns the signer and the listed names.
fn verify_sums(dir: &Path, keys: &TrustedKeys) -> Result<(String, Vec<String>)> {
    let sums_path = dir.join(SUMS);
    let sums =
        std::fs::read(&sums_path).map_err(|error| BundleError::UnreadableSums { path: sums_path.clone(), error })?;
    let sig_path = dir.join(SUMS_SIG);
    let sig = std::fs::read_to_string(&sig_path)
        .map_err(|error| BundleError::MissingSignature { path: sig_path.clone(), error })?;
    let signer = keys.verify(&sums, &sig, &sig_path.display().to_string())?;
    let text = String::from_utf8(sums).map_err(|_| BundleError::SumsNotUtf8 { path: sums_path.clone() })?;
    let mut listed = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let (digest, name) =
            line.split_once("  ").ok_or_else(|| BundleError::MalformedSums { path: sums_path.clone(), line: i + 1 })?;
        if name.contains("..") || name.starts_with('/') {
            return Err(BundleError::EscapingPath { path: sums_path.clone(), line: i + 1 });
        }
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(error) => return Err(BundleError::ListedUnreadable { path, error }),
        };
        if crate::fsutil::sha256_hex(&bytes) != digest {
            return Err(BundleError::DigestMismatch { path });
        }
        listed.push(name.to_string());
    }
    for extra in walk(dir)? {
        let rel = extra.strip_prefix(dir).unwrap_or(&extra).to_string_lossy().replace('\\', "/");
        if rel != SUMS && rel != SUMS_SIG && rel != ATTESTATION && !listed.contains(&rel) {
            return Err(BundleError::Unlisted { path: extra });
        }
    }
    Ok((signer, listed))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = |error| BundleError::Io { action: "listing", path: dir.to_path_buf(), error };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(listing)? {
        let p = e.map_err(listing)?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// Read a bundle's manifest; a manifest of a format version this build
/// does not read is a [`FormatError`](crate::error::FormatError) naming it.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    read_json(&dir.join(MANIFEST), MANIFEST, "a bundle manifest")
}

/// Read a bundle's verdict (its format version checked like the manifest's).
pub fn read_verdict(dir: &Path) -> Result<VerdictFile> {
    read_json(&dir.join(VERDICT), VERDICT, "a verdict file")
}

/// Read a versioned JSON file of a bundle: its format first, then its shape.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, file: &'static str, what: &'static str) -> Result<T> {
    let bytes = read(path)?;
    crate::error::check_json_format(file, path.display(), &bytes, MANIFEST_FORMATS).map_err(BundleError::Format)?;
    serde_json::from_slice(&bytes).map_err(|e| BundleError::Malformed {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| BundleError::Io { action: "reading", path: path.to_path_buf(), error })
}

/// Read a bundle's rows back from its Parquet table (types preserved).
pub fn read_rows(dir: &Path) -> Result<Vec<Row>> {
    let p = dir.join(CELLS_PARQUET);
    let table = crate::table::Table::read_parquet(&p).map_err(|error| BundleError::Table { path: p.clone(), error })?;
    Ok(table.rows())
}

/// A bundle's manifest, verdict and the SHA-256 of its SHA256SUMS: what
/// the record is made of.
fn record_parts(dir: &Path) -> Result<(Manifest, VerdictFile, String)> {
    let bytes = read(&dir.join(SUMS))?;
    Ok((read_manifest(dir)?, read_verdict(dir)?, crate::fsutil::sha256_hex(&bytes)))
}

/// What a bundle says about itself for the record check.
pub fn bundle_facts(dir: &Path, shown: &str) -> Result<crate::registry::BundleFacts> {
    let (m, v, sums_sha256) = record_parts(dir)?;
    Ok(crate::registry::BundleFacts {
        shown: shown.to_string(),
        folder: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        bet: m.bet,
        run_id: m.run_id,
        counted: v.counted,
        sums_sha256,
        ledger: m.ledger.map(|l| (l.seq, l.kind, l.entry_hash)),
        head: m.ledger_head,
    })
}

/// The ledger run record of a bundle (just written, or being back-filled).
pub fn run_record(dir: &Path) -> Result<crate::registry::RunRecord> {
    let (m, v, sums_sha256) = record_parts(dir)?;
    Ok(crate::registry::RunRecord {
        bet: m.bet,
        slug: m.slug,
        run_id: m.run_id,
        profile: m.profile,
        spec_hash: m.spec_hash,
        sums_sha256,
        verdict: v.record.verdict.to_string(),
    })
}

/// Bundles directly inside one bet's results folder, sorted by run id.
pub fn find_bundles_in(bet_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(bet_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            !hidden && p.join(SUMS).is_file()
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ExitKind, FormatError, HasExitKind, Versions};

    #[test]
    fn a_manifest_or_verdict_of_an_unknown_version_is_a_named_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let read = |file: &str, d: &Path| match file {
            MANIFEST => read_manifest(d).map(|_| ()),
            _ => read_verdict(d).map(|_| ()),
        };
        for file in [MANIFEST, VERDICT] {
            std::fs::write(dir.path().join(file), r#"{"format": 999, "a_field_of_the_future": true}"#).unwrap();
            let err = read(file, dir.path()).unwrap_err();
            match &err {
                BundleError::Format(FormatError::UnknownVersion { what, path, found, supported }) => {
                    assert_eq!((*what, *found, *supported), (file, 999, Versions(MANIFEST_FORMATS)));
                    assert_eq!(*path, dir.path().join(file).display().to_string());
                }
                other => panic!("{file}: expected an unknown version, got {other:?}"),
            }
            assert!(err.to_string().contains("format version 999"), "{err}");
            assert!(err.to_string().contains("versions 1 and 2"), "{err}");
            assert_eq!(err.exit_kind(), ExitKind::Integrity);
            std::fs::write(dir.path().join(file), r#"{"bet": 1}"#).unwrap();
            assert!(matches!(read(file, dir.path()), Err(BundleError::Format(FormatError::MissingVersion { .. }))));
            std::fs::write(dir.path().join(file), r#"{"format": 2}"#).unwrap();
            let err = read(file, dir.path()).unwrap_err();
            assert!(matches!(err, BundleError::Malformed { .. }), "a known version of the wrong shape: {err:?}");
            assert_eq!(err.exit_kind(), ExitKind::Other);
        }
    }
}
