//! `bets regress`: rerun every published bet at its CI profile and compare
//! the verdict and quantities with the committed baselines, like a snapshot
//! test of the catalogue's findings.
//!
//! A bet is *published* when results/ holds a verified, counted bundle of
//! it. Reruns compute every cell afresh (a temporary cell cache: a cached
//! cell would hide exactly the change CI is looking for) and write no
//! bundle; data and base models still come from the local cache, as in
//! `bets run`. The baselines compared are those of this machine's gemm
//! kernel family (`engine::gemm_kernels`), bit-exact within a family. Exit
//! 4 with a table of drifts when anything differs; a missing baseline is an
//! error that says to run `--accept`.

use std::path::PathBuf;

use anyhow::Context;

use super::Repo;
use crate::error::{ExitKind, classified};
use crate::report::baseline::{self, Baseline, CI_PROFILE, Drift};
use crate::results;
use crate::runner::CellCache;
use crate::spec::Bet;

/// Options of `bets regress`, resolved from the CLI.
#[derive(Debug, Clone)]
pub struct RegressOptions {
    /// Record the reruns as the new baselines.
    pub accept: bool,
    /// Relative tolerance overriding each baseline's own.
    pub tolerance: Option<f64>,
    pub jobs: usize,
    pub progress: bool,
}

/// `bets regress [--accept] [--tolerance R]`.
pub fn regress(repo: &Repo, opts: &RegressOptions) -> anyhow::Result<()> {
    if let Some(t) = opts.tolerance
        && !(t >= 0.0 && t.is_finite())
    {
        return Err(crate::error::usage(format!("--tolerance {t}: expected a finite number >= 0")));
    }
    if opts.jobs == 0 {
        return Err(crate::error::usage("-j must be at least 1"));
    }
    let keys = repo.trusted_keys()?;
    let published: Vec<Bet> = repo
        .all_bets()?
        .into_iter()
        .filter(|b| {
            results::find_bundles_in(&repo.paths.bet_results(&b.id()))
                .iter()
                .any(|d| results::verify_bundle(d, &keys).is_ok() && results::read_verdict(d).is_ok_and(|v| v.counted))
        })
        .collect();
    if published.is_empty() {
        println!("no published bet (no verified, counted bundle in results/): nothing to regress");
        return Ok(());
    }
    let kernels = crate::engine::gemm_kernels();
    println!("gemm kernels {kernels}: baselines {}", baseline::file_name(CI_PROFILE, kernels));
    let scratch = tempfile::tempdir().context("creating a temporary cell cache")?;
    let mut drifts: Vec<Drift> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for bet in &published {
        let (now, decisive, measured) = rerun(repo, bet, opts, &scratch.path().join(bet.id()))?;
        let path = baseline_path(repo, bet, kernels);
        let old: Option<Baseline> = baseline::read(&path)?;
        if opts.accept {
            let mut new = now.clone();
            new.tolerance = opts.tolerance.or(old.as_ref().map(|o| o.tolerance)).unwrap_or(0.0);
            let changes = old.as_ref().map(|o| baseline::compare(o, &new, &decisive, 0.0).len());
            let mut bytes = serde_json::to_vec_pretty(&new)?;
            bytes.push(b'\n');
            crate::fsutil::write_atomic(&path, &bytes)?;
            let what = match changes {
                None => "new baseline".to_string(),
                Some(0) => "unchanged".to_string(),
                Some(n) => format!("{n} change(s) accepted"),
            };
            println!(
                "accepted {:02} {}: {} ({what}) -> {}",
                bet.spec.number,
                bet.spec.slug,
                baseline::verdict_text(new.verdict),
                repo.relative(&path)
            );
            continue;
        }
        match old {
            None => {
                println!("MISSING {:02} {}: no baseline {}", bet.spec.number, bet.spec.slug, repo.relative(&path));
                missing.push(repo.relative(&path));
            }
            Some(old) => {
                if !measured.is_empty() {
                    println!("    measured, not compared: {}", measured.join(", "));
                }
                let tolerance = opts.tolerance.unwrap_or(old.tolerance);
                let found = baseline::compare(&old, &now, &decisive, tolerance);
                if found.is_empty() {
                    let how = if tolerance == 0.0 { "bit-exact".to_string() } else { format!("within {tolerance}") };
                    let criteria = match now.criteria.len() {
                        0 => String::new(),
                        n => format!(", {n} criterion outcome(s)"),
                    };
                    println!(
                        "ok  {:02} {}: {}{criteria} and {} quantities {how}",
                        bet.spec.number,
                        bet.spec.slug,
                        baseline::verdict_text(now.verdict),
                        now.quantities.len()
                    );
                } else {
                    println!("DRIFT {:02} {}: {} difference(s)", bet.spec.number, bet.spec.slug, found.len());
                    drifts.extend(found);
                }
            }
        }
    }
    if !drifts.is_empty() {
        println!("\n{}", baseline::drift_table(&drifts));
        let mut msg = format!(
            "{} drift(s) from the CI baselines: a published finding no longer reproduces at profile {CI_PROFILE} \
             (gemm kernels {kernels}); \
             if the change is intended, review it and run `bets regress --accept`",
            drifts.len()
        );
        if !missing.is_empty() {
            msg.push_str(&format!("; also missing: {}", missing.join(", ")));
        }
        return Err(classified(ExitKind::Regression, msg));
    }
    if !missing.is_empty() {
        return Err(classified(
            ExitKind::Other,
            format!(
                "no CI baseline for {} (gemm kernels {kernels}): run `bets regress --accept` to record the \
                 current verdicts and numbers (check them first), then commit the baseline file(s)",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Where a bet's CI baseline for the gemm kernel family `kernels` lives: beside its bundles.
pub fn baseline_path(repo: &Repo, bet: &Bet, kernels: &str) -> PathBuf {
    repo.paths.bet_results(&bet.id()).join(baseline::file_name(CI_PROFILE, kernels))
}

/// Rerun a bet at the CI profile with a fresh cell cache; returns the
/// baseline it would write, the names of its decisive quantities, and its
/// measured quantities as `name = value` (shown, never compared).
fn rerun(
    repo: &Repo,
    bet: &Bet,
    opts: &RegressOptions,
    cells: &std::path::Path,
) -> anyhow::Result<(Baseline, Vec<String>, Vec<String>)> {
    let settings = crate::pipeline::Settings {
        paths: repo.paths.clone(),
        jobs: opts.jobs,
        threads: 1,
        shard: None,
        cells: CellCache::new(cells),
        progress: std::sync::Arc::new(super::reporter::Reporter { enabled: opts.progress }),
        compute: Default::default(),
        observer: None,
    };
    let crate::pipeline::Decided { plan, record, .. } = crate::pipeline::run(bet, CI_PROFILE, &settings)?;
    let mut decisive: Vec<String> = record.criteria.iter().flat_map(|c| c.uses.keys().cloned()).collect();
    decisive.sort();
    decisive.dedup();
    let experiment = format!("{} v{}", bet.experiment.kind(), bet.experiment.version());
    let measured = &bet.spec.measured;
    let shown = measured
        .iter()
        .map(|m| {
            let value = record.quantities.get(m).and_then(|q| q.value.as_ref());
            format!("{m} = {}", value.map_or("NULL".to_string(), |v| v.to_string()))
        })
        .collect();
    let baseline =
        Baseline::of(bet.spec.number, &bet.spec.slug, &plan.profile, &bet.hash(), &experiment, &record, measured);
    Ok((baseline, decisive, shown))
}
