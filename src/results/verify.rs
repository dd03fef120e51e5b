//! Bundle verification: signature over SHA256SUMS, then every digest, then
//! no file that the sums do not list.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::bundle::{CELLS_PARQUET, MANIFEST, Manifest, SUMS, SUMS_SIG, VERDICT, VerdictFile};
use crate::error::integrity;
use crate::signing::TrustedKeys;
use crate::table::Row;

/// What a verified bundle is.
#[derive(Debug, Clone)]
pub struct BundleCheck {
    pub dir: PathBuf,
    pub signer: String,
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

/// Verify one bundle; any mismatch is an integrity error naming the file.
pub fn verify_bundle(dir: &Path, keys: &TrustedKeys) -> anyhow::Result<BundleCheck> {
    let sums_path = dir.join(SUMS);
    let sums =
        std::fs::read(&sums_path).map_err(|e| integrity(format!("{}: cannot read: {e}", sums_path.display())))?;
    let sig_path = dir.join(SUMS_SIG);
    let sig = std::fs::read_to_string(&sig_path)
        .map_err(|e| integrity(format!("{}: missing signature: {e}", sig_path.display())))?;
    let signer = keys.verify(&sums, &sig, &sig_path.display().to_string())?;
    let text = String::from_utf8(sums).map_err(|_| integrity(format!("{}: not UTF-8", sums_path.display())))?;
    let mut listed = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let (digest, name) = line
            .split_once("  ")
            .ok_or_else(|| integrity(format!("{} line {}: malformed", sums_path.display(), i + 1)))?;
        if name.contains("..") || name.starts_with('/') {
            return Err(integrity(format!("{} line {}: path escapes the bundle", sums_path.display(), i + 1)));
        }
        let path = dir.join(name);
        let bytes =
            std::fs::read(&path).map_err(|e| integrity(format!("{}: listed but unreadable: {e}", path.display())))?;
        if crate::fsutil::sha256_hex(&bytes) != digest {
            return Err(integrity(format!("{}: SHA-256 does not match SHA256SUMS", path.display())));
        }
        listed.push(name.to_string());
    }
    for extra in walk(dir)? {
        let rel = extra.strip_prefix(dir).unwrap_or(&extra).to_string_lossy().replace('\\', "/");
        if rel != SUMS && rel != SUMS_SIG && !listed.contains(&rel) {
            return Err(integrity(format!("{}: not listed in SHA256SUMS", extra.display())));
        }
    }
    Ok(BundleCheck { dir: dir.to_path_buf(), signer, files: listed.len() })
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// Read a bundle's manifest.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let p = dir.join(MANIFEST);
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a bundle manifest", p.display()))
}

/// Read a bundle's verdict.
pub fn read_verdict(dir: &Path) -> anyhow::Result<VerdictFile> {
    let p = dir.join(VERDICT);
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a verdict file", p.display()))
}

/// Read a bundle's rows back from its Parquet table (types preserved).
pub fn read_rows(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let p = dir.join(CELLS_PARQUET);
    let table = crate::table::Table::read_parquet(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(table.rows())
}

/// A bundle's manifest, verdict and the SHA-256 of its SHA256SUMS: what
/// the record is made of.
fn record_parts(dir: &Path) -> anyhow::Result<(Manifest, VerdictFile, String)> {
    let sums = dir.join(SUMS);
    let bytes = std::fs::read(&sums).with_context(|| format!("reading {}", sums.display()))?;
    Ok((read_manifest(dir)?, read_verdict(dir)?, crate::fsutil::sha256_hex(&bytes)))
}

/// What a bundle says about itself for the record check.
pub fn bundle_facts(dir: &Path, shown: &str) -> anyhow::Result<crate::registry::BundleFacts> {
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
pub fn run_record(dir: &Path) -> anyhow::Result<crate::registry::RunRecord> {
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
