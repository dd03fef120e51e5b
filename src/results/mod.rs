//! Result bundles: a versioned on-disk format, written atomically and signed.
//!
//! A bundle is `results/<NN-slug>/<run-id>/` holding `manifest.json`,
//! `cells.csv`, `cells.parquet`, `verdict.json`, `plots/*.svg`, and last
//! `SHA256SUMS` with its minisign signature `SHA256SUMS.minisig`, and an
//! in-toto attestation of all of them (`attestation.intoto.jsonl`, see [`attest`]). It is built
//! in a hidden staging folder and renamed into place, so a bundle either
//! exists whole or not at all; bundles are never rewritten.

pub mod attest;
mod bundle;
mod error;
mod verify;

pub use attest::ATTESTATION;
pub use bundle::{
    BundleContents, CELLS_CSV, CELLS_PARQUET, ExperimentRef, GitInfo, LedgerRef, MANIFEST, MANIFEST_FORMAT,
    MANIFEST_FORMATS, Manifest, SUMS, SUMS_SIG, Threads, VERDICT, VerdictFile, plot_path, write,
};
pub use error::{BundleError, Result};
pub use verify::{
    BundleCheck, bundle_facts, find_bundles, find_bundles_in, read_manifest, read_rows, read_verdict, run_record,
    verify_bundle, write_attestation,
};
