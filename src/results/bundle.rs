//! The bundle schema and its atomic, signed writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{BundleError, Result};
use crate::criteria::{CellCounts, VerdictRecord};
use crate::runner::Shard;
use crate::signing::Signer;
use crate::table::Value;

/// Version of `manifest.json` and `verdict.json` (2 adds `ledger_head`).
pub const MANIFEST_FORMAT: u32 = 2;
/// The manifest and verdict formats this build reads; a file of any other
/// version is an integrity error naming it (this build cannot verify it).
pub const MANIFEST_FORMATS: &[u32] = &[1, 2];
pub const MANIFEST: &str = "manifest.json";
pub const CELLS_CSV: &str = "cells.csv";
pub const CELLS_PARQUET: &str = "cells.parquet";
pub const VERDICT: &str = "verdict.json";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.minisig";

/// Everything needed to reproduce and audit a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub harness: String,
    pub bet: u32,
    pub slug: String,
    pub title: String,
    pub run_id: String,
    pub profile: String,
    /// Exploratory runs are never counted as a verdict.
    pub exploratory: bool,
    /// Repo-relative path of the spec.
    pub spec_file: String,
    pub spec_hash: String,
    /// The ledger entry the spec matched (none for an exploratory run of an
    /// unregistered or deviating spec).
    pub ledger: Option<LedgerRef>,
    /// The ledger's newest entry when the run was decided; `bets verify`
    /// checks that it is still in the chain (format 2; absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_head: Option<crate::registry::LedgerHead>,
    pub git: GitInfo,
    pub cargo_lock_sha256: Option<String>,
    pub experiment: ExperimentRef,
    /// Procedure parameters after profile overrides.
    pub params: serde_json::Value,
    /// Grid after profile overrides.
    pub grid: BTreeMap<String, Vec<Value>>,
    pub threads: Threads,
    /// The experiment's input hashes (data splits, base model).
    pub inputs: BTreeMap<String, String>,
    /// Set when this bundle holds one shard of a run.
    pub shard: Option<Shard>,
    /// Run ids of the shard bundles a merged bundle was made from.
    #[serde(default)]
    pub merged_from: Vec<String>,
    pub cells: CellCounts,
    pub cached_cells: usize,
    pub started: String,
    pub finished: String,
    pub signer: String,
}

/// Which ledger entry a run was checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRef {
    pub seq: u64,
    pub kind: crate::registry::EntryKind,
    /// SHA-256 of the ledger line.
    pub entry_hash: String,
}

/// The code a run was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    pub commit: Option<String>,
    pub dirty: Option<bool>,
}

/// Experiment kind and version (part of every cell key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRef {
    pub kind: String,
    pub version: u32,
}

/// Parallelism of a run: cells at once, and engine threads per cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threads {
    pub jobs: usize,
    pub engine: usize,
}

/// `verdict.json`: the decision and every number it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictFile {
    pub format: u32,
    pub bet: u32,
    pub run_id: String,
    pub profile: String,
    pub exploratory: bool,
    /// Whether this verdict counts: not exploratory and not a lone shard.
    pub counted: bool,
    #[serde(flatten)]
    pub record: VerdictRecord,
}

/// The files of a bundle, ready to be written.
pub struct BundleContents {
    pub manifest: Manifest,
    pub verdict: VerdictFile,
    pub cells_csv: Vec<u8>,
    pub cells_parquet: Vec<u8>,
    /// File name (in `plots/`) -> SVG text.
    pub plots: Vec<(String, String)>,
}

/// Write a bundle into `bet_dir/<run id>/`: staged in a hidden folder,
/// checksummed, signed, attested, then renamed into place. Returns the final path.
pub fn write(bet_dir: &Path, contents: &BundleContents, signer: &Signer) -> Result<PathBuf> {
    let run_id = &contents.manifest.run_id;
    let final_dir = bet_dir.join(run_id);
    if final_dir.exists() {
        return Err(BundleError::Exists { dir: final_dir });
    }
    let staging = crate::services::Paths::bundle_staging(bet_dir, run_id);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|error| BundleError::Io {
            action: "clearing",
            path: staging.clone(),
            error,
        })?;
    }
    let plots = crate::services::Paths::bundle_plots(&staging);
    std::fs::create_dir_all(&plots).map_err(|error| BundleError::Io { action: "creating", path: plots, error })?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (MANIFEST.into(), pretty(MANIFEST, &contents.manifest)?),
        (CELLS_CSV.into(), contents.cells_csv.clone()),
        (CELLS_PARQUET.into(), contents.cells_parquet.clone()),
        (VERDICT.into(), pretty(VERDICT, &contents.verdict)?),
    ];
    for (name, svg) in &contents.plots {
        files.push((format!("plots/{name}"), svg.clone().into_bytes()));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sums = String::new();
    for (name, bytes) in &files {
        crate::fsutil::write_atomic(&staging.join(name), bytes)?;
        sums.push_str(&format!("{}  {name}\n", crate::fsutil::sha256_hex(bytes)));
    }
    crate::fsutil::write_atomic(&staging.join(SUMS), sums.as_bytes())?;
    let comment = format!("bets bet {} run {run_id} spec {}", contents.manifest.bet, contents.manifest.spec_hash);
    let sig = signer.sign(sums.as_bytes(), &comment)?;
    crate::fsutil::write_atomic(&staging.join(SUMS_SIG), sig.as_bytes())?;
    let listed: Vec<String> = files.into_iter().map(|(name, _)| name).collect();
    let subjects = super::attest::subjects(&staging, &listed)?;
    let statements =
        super::attest::statements(&subjects, &contents.manifest, &contents.verdict, &contents.manifest.finished, None);
    let attestation = super::attest::sign_statements(&statements, signer)?;
    crate::fsutil::write_atomic(&staging.join(super::attest::ATTESTATION), &attestation)?;
    std::fs::rename(&staging, &final_dir).map_err(|error| BundleError::Move {
        from: staging.clone(),
        to: final_dir.clone(),
        error,
    })?;
    Ok(final_dir)
}

/// Pretty JSON with a final newline.
fn pretty<T: Serialize>(file: &'static str, v: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| BundleError::Serialise { file, detail: e.to_string() })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The file of plot `name` in the bundle at `bundle`.
pub fn plot_path(bundle: &Path, name: &str) -> PathBuf {
    crate::services::Paths::bundle_plots(bundle).join(name)
}
