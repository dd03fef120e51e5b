//! `bets attest --reason`: the dated migration that gives bundles written
//! before attestations existed their in-toto attestation.

use std::path::PathBuf;

use super::Repo;
use crate::results;

/// Attest every verified bundle under `paths` (default: all of results/)
/// that has no attestation yet; the predicate carries today's date and the
/// reason, and no existing file of a bundle is touched.
pub fn attest(repo: &Repo, paths: &[PathBuf], reason: &str) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        return Err(crate::error::usage("--reason must say why these bundles are attested after the fact"));
    }
    let bundles = if paths.is_empty() {
        results::find_bundles(&repo.results_dir)
    } else {
        paths
            .iter()
            .flat_map(|p| if p.join(results::SUMS).is_file() { vec![p.clone()] } else { results::find_bundles_in(p) })
            .collect()
    };
    // The signer first: a key made on first use is then trusted too.
    let signer = repo.signer()?;
    let keys = repo.trusted_keys()?;
    let today = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (mut added, mut had) = (0, 0);
    for b in &bundles {
        if results::write_attestation(b, &keys, &signer, &today, reason)? {
            println!("attested  {}", repo.relative(&b.join(results::ATTESTATION)));
            added += 1;
        } else {
            had += 1;
        }
        results::verify_bundle(b, &keys)?;
    }
    println!("{added} bundle(s) attested by {} on {today}; {had} already had an attestation", signer.key_id);
    Ok(())
}
