//! Read-only commands: check, schema, list, status, verify.

use std::path::PathBuf;

use serde::Serialize;

use super::Repo;
use crate::error::integrity;
use crate::registry::{Ledger, Registration};
use crate::results;
use crate::spec::{self, SpecErrors};

/// `bets check`: validate specs, print every problem, exit 2 if any.
pub fn check(repo: &Repo, specs: &[PathBuf]) -> anyhow::Result<()> {
    let files = if specs.is_empty() { repo.spec_files()? } else { specs.to_vec() };
    let mut problems = Vec::new();
    let mut numbers = std::collections::BTreeMap::new();
    for f in &files {
        match spec::load(f) {
            Ok(bet) => {
                if let Some(other) = numbers.insert(bet.spec.number, f.clone()) {
                    problems.push(spec::Problem {
                        file: f.clone(),
                        key: "number".into(),
                        message: format!("number {} is also used by {}", bet.spec.number, other.display()),
                        hint: None,
                    });
                } else {
                    println!("ok  {}", f.display());
                }
            }
            Err(SpecErrors(mut ps)) => problems.append(&mut ps),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(SpecErrors(problems).into()) }
}

/// `bets schema`: the JSON Schema of a spec file.
pub fn schema() -> anyhow::Result<()> {
    let schema = spec::json_schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}

#[derive(Serialize)]
struct BetLine {
    number: u32,
    slug: String,
    title: String,
    section: spec::Section,
    claim: spec::Claim,
    experiment: String,
    file: String,
}

#[derive(Serialize)]
struct ExperimentLine {
    kind: &'static str,
    version: u32,
    summary: &'static str,
    factors: Vec<(&'static str, String, bool)>,
    metrics: Vec<(&'static str, String, &'static str)>,
}

/// `bets list`: the bets (or experiment kinds).
pub fn list(repo: &Repo, json: bool, experiments: bool) -> anyhow::Result<()> {
    if experiments {
        let lines: Vec<ExperimentLine> = crate::kinds::all()
            .into_iter()
            .map(|e| ExperimentLine {
                kind: e.kind(),
                version: e.version(),
                summary: e.summary(),
                factors: e.factors().iter().map(|f| (f.name.as_str(), f.kind.to_string(), f.required)).collect(),
                metrics: e.metrics().iter().map(|m| (m.name, m.kind.to_string(), m.doc)).collect(),
            })
            .collect();
        if json {
            println!("{}", serde_json::to_string_pretty(&lines)?);
        } else {
            for l in lines {
                println!("{} (v{}): {}", l.kind, l.version, l.summary);
                for (n, k, req) in l.factors {
                    println!("  factor {n}: {k}{}", if req { " (required)" } else { "" });
                }
                for (n, k, doc) in l.metrics {
                    println!("  metric {n}: {k} - {doc}");
                }
            }
        }
        return Ok(());
    }
    let lines: Vec<BetLine> = repo
        .all_bets()?
        .into_iter()
        .map(|b| BetLine {
            number: b.spec.number,
            slug: b.spec.slug.clone(),
            title: b.spec.title.clone(),
            section: b.spec.section,
            claim: b.spec.claim,
            experiment: b.spec.procedure.experiment.clone(),
            file: repo.relative(&b.path),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for l in lines {
            println!("{:02} {:<28} {:<20} {}", l.number, l.slug, l.experiment, l.title);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct StatusLine {
    number: u32,
    slug: String,
    /// `registered`, `deviates` or `unregistered`.
    registration: String,
    amendments: usize,
    /// Bundle folders on disk.
    runs: usize,
    /// Counted runs on the ledger's record.
    recorded_runs: usize,
    /// Recorded runs whose bundle is gone (`bets verify` fails).
    missing_bundles: usize,
    /// The newest recorded run's verdict.
    last_verdict: Option<String>,
    last_profile: Option<String>,
    last_run: Option<String>,
}

/// `bets status`: every bet's registration, runs and last counted verdict.
pub fn status(repo: &Repo, json: bool) -> anyhow::Result<()> {
    let ledger = Ledger::open(&repo.ledger)?;
    let mut lines = Vec::new();
    for bet in repo.all_bets()? {
        let registration = match ledger.registration(bet.spec.number, &bet.hash(), &bet.canonical()) {
            Registration::Unregistered => "unregistered",
            Registration::Current(_) => "registered",
            Registration::Deviates { .. } => "deviates",
        };
        let amendments = ledger.history(bet.spec.number).len().saturating_sub(1);
        let bundles = results::find_bundles_in(&repo.paths.bet_results(&bet.id()));
        // The last verdict comes from the record, which deleting a bundle cannot change.
        let recorded: Vec<_> = ledger.run_records().filter(|(_, r)| r.bet == bet.spec.number).collect();
        let missing = recorded
            .iter()
            .filter(|(_, r)| !repo.results_dir.join(r.bundle_path()).join(results::SUMS).is_file())
            .count();
        let last = recorded.last().map(|(_, r)| r);
        lines.push(StatusLine {
            number: bet.spec.number,
            slug: bet.spec.slug.clone(),
            registration: registration.into(),
            amendments,
            runs: bundles.len(),
            recorded_runs: recorded.len(),
            missing_bundles: missing,
            last_verdict: last.map(|r| r.verdict.clone()),
            last_profile: last.map(|r| r.profile.clone()),
            last_run: last.map(|r| r.run_id.clone()),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        println!("{:<4}{:<28}{:<14}{:>6}{:>6}  last verdict", "#", "slug", "registration", "amend", "runs");
        for l in lines {
            let mut last = match (&l.last_verdict, &l.last_profile, &l.last_run) {
                (Some(v), Some(p), Some(r)) => format!("{v} ({p}, {r})"),
                _ => "-".into(),
            };
            if l.missing_bundles > 0 {
                last.push_str(&format!("  [{} recorded bundle(s) missing: run bets verify]", l.missing_bundles));
            }
            println!(
                "{:<4}{:<28}{:<14}{:>6}{:>6}  {last}",
                format!("{:02}", l.number),
                l.slug,
                l.registration,
                l.amendments,
                l.runs
            );
        }
    }
    Ok(())
}

/// `bets verify`: the ledger chain, every bundle (or the given paths), and
/// the record: counted bundles and ledger run entries name each other, and
/// every ledger position a bundle or report saw is still in the chain.
/// Reports every failure, then exits 3 if there was any.
pub fn verify(repo: &Repo, paths: &[PathBuf]) -> anyhow::Result<()> {
    let keys = repo.trusted_keys()?;
    let mut failures = Vec::new();
    let ledger = match Ledger::open(&repo.ledger).and_then(|l| l.verify(&keys).map(|_| l)) {
        Ok(l) => Some(l),
        Err(e) => {
            failures.push(format!("{e:#}"));
            None
        }
    };
    let check_ledger = paths.is_empty() || paths.iter().any(|p| p.extension().is_some_and(|e| e == "jsonl"));
    if check_ledger && let Some(l) = &ledger {
        println!("ok  {} ({} entries, chain and signatures)", repo.relative(&repo.ledger), l.entries.len());
        let problems = crate::registry::checkpoint::check_checkpoint_file(l, &keys);
        if problems.is_empty() && !l.entries.is_empty() {
            println!(
                "ok  {} (signed, covers all {} entries)",
                repo.relative(&repo.paths.ledger_checkpoint()),
                l.entries.len()
            );
        }
        failures.extend(problems);
    }
    let mut bundles = Vec::new();
    if paths.is_empty() {
        bundles = results::find_bundles(&repo.results_dir);
    }
    for p in paths.iter().filter(|p| p.extension().is_none_or(|e| e != "jsonl")) {
        if p.join(results::SUMS).exists() || p.join(results::MANIFEST).exists() {
            bundles.push(p.clone());
        } else if p.is_dir() {
            bundles.extend(results::find_bundles_in(p));
        } else {
            failures.push(format!("{}: not a bundle, a bet's results folder or the ledger", p.display()));
        }
    }
    let mut facts = Vec::new();
    for b in &bundles {
        match results::verify_bundle(b, &keys) {
            Ok(c) => {
                println!(
                    "ok  {} ({} files, signed by {}, attested by {})",
                    repo.relative(b),
                    c.files,
                    c.signer,
                    c.attested_by
                );
                match results::bundle_facts(b, &repo.relative(b)) {
                    Ok(f) => facts.push(f),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if let Some(l) = &ledger {
        let before = failures.len();
        failures.extend(crate::registry::check_record(l, &facts, paths.is_empty()));
        failures.extend(report_heads(repo, l));
        if failures.len() == before && (paths.is_empty() || !facts.is_empty()) {
            let recorded = l.run_records().count();
            println!("ok  the record ({recorded} recorded run(s); every counted bundle is on it)");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        Err(integrity(format!("{} integrity failure(s)", failures.len())))
    }
}

/// The ledger heads the committed reports saw must still be in the chain.
fn report_heads(repo: &Repo, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    for recorded in crate::report::recorded_heads(&repo.reports_dir) {
        let (path, head) = match recorded {
            Ok(found) => found,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if !ledger.contains(&head) {
            problems.push(format!(
                "{}: was generated when {} ended at seq {}, which is no longer in the chain (the ledger was \
                 truncated or rewritten)",
                repo.relative(&path),
                repo.relative(&repo.ledger),
                head.seq
            ));
        }
    }
    problems
}

/// `bets record-runs --reason`: put every verified counted bundle that no
/// run entry records yet on the record, as one signed, dated entry.
pub fn record_runs(repo: &Repo, reason: &str) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        return Err(crate::error::usage("--reason must say why these runs were not recorded when they finished"));
    }
    let keys = repo.trusted_keys()?;
    let mut ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&keys)?;
    let mut records = Vec::new();
    for b in results::find_bundles(&repo.results_dir) {
        results::verify_bundle(&b, &keys)?;
        let f = results::bundle_facts(&b, &repo.relative(&b))?;
        let known = ledger.run_records().any(|(_, r)| r.bet == f.bet && r.run_id == f.run_id);
        if f.counted && !known {
            records.push(results::run_record(&b)?);
        }
    }
    if records.is_empty() {
        println!("every counted bundle is already on the record");
        return Ok(());
    }
    let signer = repo.signer()?;
    let n = records.len();
    let entry = ledger.append(crate::registry::run_entry(records, Some(reason.to_string())), &signer)?;
    println!("put {n} run(s) on the record: {} seq {}", repo.relative(&repo.ledger), entry.seq);
    for r in &entry.runs {
        println!("  results/{} ({}, {})", r.bundle_path(), r.profile, r.verdict);
    }
    Ok(())
}
