//! `bets report`: read the verified bundles and the ledger, render the
//! report tree (pure, in `report`), sign confirmations and retractions, and
//! write reports/ so that it holds exactly what was rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Repo;
use crate::error::integrity;
use crate::registry::{Ledger, diff_canonical};
use crate::report::model::{BetReport, Catalogue, LedgerEvent, Rejected, RunInfo};
use crate::report::{self, analysis, replication};
use crate::results;
use crate::signing::{Signer, TrustedKeys};
use crate::spec::{Bet, Criteria};
use crate::stats::Bootstrap;

/// Folders and files of reports/ that `bets report` owns: anything else in
/// them that it did not render is stale and removed.
const MANAGED: &[&str] =
    &["SUMMARY.md", "SUMMARY.json", "REPLICATION.md", "bets", "html", "plots", "retractions", "confirmations"];

/// `bets report`.
pub fn report(repo: &Repo, resamples: usize) -> anyhow::Result<()> {
    if resamples == 0 {
        return Err(crate::error::usage("--resamples must be at least 1"));
    }
    let bets = repo.all_bets()?;
    let keys = repo.trusted_keys()?;
    let ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&keys)?;
    let catalogue = load_catalogue(repo, &bets, &ledger, &keys, Bootstrap { resamples, ..Bootstrap::default() })?;
    let rendered = report::render(&catalogue);
    let mut out: BTreeMap<String, Vec<u8>> =
        rendered.files.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    for (dest, src) in &rendered.assets {
        let bytes = std::fs::read(repo.root.join(src)).with_context(|| format!("reading plot {src}"))?;
        out.insert(dest.clone(), bytes);
    }
    let mut signer = None;
    for d in &rendered.documents {
        for ext in ["md", "json"] {
            let name = format!("{}.{ext}", d.path());
            let comment = format!("bets {} bet {} run {} {name}", d.kind().word().to_lowercase(), d.bet(), d.run_id());
            let sig = signature(repo, &keys, &mut signer, &name, &out[&name], &comment)?;
            out.insert(format!("{name}.minisig"), sig.into_bytes());
        }
    }
    sync_tree(&repo.reports_dir, &out)?;
    let pages = rendered.files.keys().filter(|k| k.starts_with("bets/")).count();
    let (retractions, confirmations) = rendered.documents.iter().fold((0, 0), |(r, c), d| match d.kind() {
        report::history::DocKind::Retraction => (r + 1, c),
        report::history::DocKind::Confirmation => (r, c + 1),
    });
    println!(
        "wrote {}: SUMMARY.md, SUMMARY.json, {pages} bet page(s), HTML in {}/, {} plot(s), {retractions} retraction(s), {confirmations} confirmation(s)",
        repo.relative(&repo.reports_dir),
        report::HTML_DIR,
        rendered.assets.len() / 2,
    );
    if !catalogue.rejected.is_empty() {
        for r in &catalogue.rejected {
            eprintln!("FAIL {}: {}", r.path, r.error);
        }
        return Err(integrity(format!(
            "{} bundle(s) failed verification and were left out of the report",
            catalogue.rejected.len()
        )));
    }
    Ok(())
}

/// Every bet with its ledger history, verified runs and the statistics of
/// its latest counted run. A bundle that fails verification is left out and
/// listed; it never contributes a number.
pub fn load_catalogue(
    repo: &Repo,
    bets: &[Bet],
    ledger: &Ledger,
    keys: &TrustedKeys,
    bootstrap: Bootstrap,
) -> anyhow::Result<Catalogue> {
    let mut rejected = Vec::new();
    let mut reports = Vec::new();
    let mut study_cells = BTreeMap::new();
    for bet in bets {
        let mut runs = Vec::new();
        for dir in results::find_bundles_in(&repo.paths.bet_results(&bet.id())) {
            match load_run(repo, &dir, keys, bet.spec.number) {
                Ok(run) => runs.push(run),
                Err(e) => rejected.push(Rejected { path: repo.relative(&dir), error: format!("{e:#}") }),
            }
        }
        runs.sort_by(|a, b| a.manifest.run_id.cmp(&b.manifest.run_id));
        let analysis = match runs.iter().rev().find(|r| r.verdict.counted) {
            None => None,
            Some(run) => {
                let path = repo.root.join(&run.dir).join(results::CELLS_PARQUET);
                let cells =
                    crate::table::Table::read_parquet(&path).with_context(|| format!("reading {}", path.display()))?;
                let a = analysis::analyse(&run.verdict, &cells, &bootstrap);
                if bet.spec.section == crate::spec::Section::Replication {
                    study_cells.insert(bet.spec.number, cells);
                }
                Some(a)
            }
        };
        let history = ledger.history(bet.spec.number);
        let registration: Vec<LedgerEvent> = history
            .iter()
            .enumerate()
            .map(|(i, e)| LedgerEvent {
                seq: e.seq,
                kind: e.kind,
                time: e.time.clone(),
                reason: e.reason.clone(),
                spec_hash: e.spec_hash.clone(),
                changes: if i == 0 { vec![] } else { diff_canonical(&history[i - 1].canonical, &e.canonical) },
                criteria: serde_json::from_value::<Criteria>(e.canonical["criteria"].clone()).ok(),
            })
            .collect();
        let s = &bet.spec;
        let profile = runs.iter().rev().find(|r| r.verdict.counted).map(|r| r.manifest.profile.clone());
        reports.push(BetReport {
            procedure: written_procedure(s, profile.as_deref()),
            number: s.number,
            slug: s.slug.clone(),
            title: s.title.clone(),
            section: kebab(&s.section),
            claim: kebab(&s.claim),
            hypothesis: s.hypothesis.clone(),
            notes: s.notes.clone(),
            depends_on: s.depends_on.clone(),
            tests_headline_of: s.tests_headline_of.clone(),
            controls: s.controls.iter().map(|(k, c)| (k.clone(), c.bet)).collect(),
            quantities: s.quantities.clone(),
            criteria: registration.last().and_then(|e| e.criteria.clone()).unwrap_or_else(|| s.criteria.clone()),
            registration,
            runs,
            analysis,
        });
    }
    reports.sort_by_key(|b| b.number);
    let replication = reports
        .iter()
        .filter_map(|b| study_cells.get(&b.number).map(|cells| replication::findings(b, cells, &reports, &bootstrap)))
        .flatten()
        .collect();
    let published = match std::fs::read_to_string(repo.paths.published()) {
        Ok(text) => Some(replication::parse_published(&repo.relative(&repo.paths.published()), &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", repo.paths.published().display()))),
    };
    Ok(Catalogue { bets: reports, rejected, bootstrap, ledger_head: ledger.head(), published, replication })
}

/// The procedure's parameters as `spec` writes them, with `profile`'s
/// overrides applied.
fn written_procedure(spec: &crate::spec::SpecFile, profile: Option<&str>) -> BTreeMap<String, serde_json::Value> {
    let mut params = spec.procedure.params.clone();
    if let Some(o) = profile.and_then(|p| spec.profiles.get(p)) {
        params.extend(o.procedure.clone());
    }
    params.into_iter().filter_map(|(k, v)| serde_json::to_value(v).ok().map(|v| (k, v))).collect()
}

fn kebab<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn load_run(repo: &Repo, dir: &Path, keys: &TrustedKeys, number: u32) -> anyhow::Result<RunInfo> {
    let check = results::verify_bundle(dir, keys)?;
    let manifest = results::read_manifest(dir)?;
    let verdict = results::read_verdict(dir)?;
    if manifest.bet != number || verdict.bet != number || verdict.run_id != manifest.run_id {
        return Err(integrity(format!(
            "{}: holds bet {} run {} but sits in bet {number}'s folder",
            dir.display(),
            manifest.bet,
            manifest.run_id
        )));
    }
    let mut plots: Vec<String> = std::fs::read_dir(crate::services::Paths::bundle_plots(dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".svg"))
        .collect();
    plots.sort();
    Ok(RunInfo { dir: repo.relative(dir), manifest, verdict, signer: check.signer, plots })
}

/// The signature of a document: the one already on disk when the document
/// is unchanged and it still verifies (signatures are randomised, so
/// re-signing would change the tree on every run), else a new one.
fn signature(
    repo: &Repo,
    keys: &TrustedKeys,
    signer: &mut Option<Signer>,
    name: &str,
    bytes: &[u8],
    comment: &str,
) -> anyhow::Result<String> {
    let path = repo.reports_dir.join(name);
    let sig_path = crate::services::Paths::signature_of(&path);
    if std::fs::read(&path).ok().as_deref() == Some(bytes)
        && let Ok(old) = std::fs::read_to_string(&sig_path)
        && keys.verify(bytes, &old, name).is_ok()
    {
        return Ok(old);
    }
    if signer.is_none() {
        *signer = Some(repo.signer()?);
    }
    Ok(signer.as_ref().expect("just loaded").sign(bytes, comment)?)
}

/// Make the managed part of `root` hold exactly `files` (relative paths):
/// write what changed, remove what was not rendered, drop empty folders.
fn sync_tree(root: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    for (rel, bytes) in files {
        let path = root.join(rel);
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            crate::fsutil::write_atomic(&path, bytes)?;
        }
    }
    let keep: BTreeSet<PathBuf> = files.keys().map(|k| root.join(k)).collect();
    for m in MANAGED {
        let p = root.join(m);
        if p.is_file() && !keep.contains(&p) {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        } else if p.is_dir() {
            prune(&p, &keep)?;
        }
    }
    Ok(())
}

/// Remove files not in `keep` under `dir`; true when `dir` ends up empty
/// (and is removed).
fn prune(dir: &Path, keep: &BTreeSet<PathBuf>) -> anyhow::Result<bool> {
    let mut empty = true;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            empty &= prune(&p, keep)?;
        } else if keep.contains(&p) {
            empty = false;
        } else {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    if empty {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(empty)
}
