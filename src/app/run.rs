//! `bets run` and `bets merge`: execute a plan, decide, write a signed bundle.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Repo;
use super::register::short;
use crate::cli::RunArgs;
use crate::criteria::{CellCounts, Verdict};
use crate::error::{ExitKind, classified, usage};
use crate::pipeline;
use crate::registry::{Ledger, Registration};
use crate::results::{
    self, BundleContents, ExperimentRef, GitInfo, LedgerRef, MANIFEST_FORMAT, Manifest, Threads, VerdictFile,
};
use crate::runner::{CellCache, CellEvent, Compute, Shard};
use crate::table::Row;

/// `bets run SPEC`: the shard comes from `--shard`, else from a scheduler
/// task's environment (Slurm array, Kubernetes Indexed Job).
pub fn run(repo: &Repo, args: &RunArgs, progress: bool) -> anyhow::Result<()> {
    let (shard, source) = match args.shard {
        Some(s) => (Some(s), None),
        None => match crate::cluster::shard_from_env(|k| std::env::var(k).ok()).map_err(usage)? {
            Some((s, source)) => (Some(s), Some(source)),
            None => (None, None),
        },
    };
    if args.cells_only || args.prepare_only {
        return store_only(repo, args, shard, source, progress);
    }
    counted_run(repo, args, shard, Compute::Missing, progress)
}

/// The ledger entry a run of `bet` is checked against (none for an
/// exploratory run of an unregistered or changed spec); refuses the rest.
fn registration(ledger: &Ledger, bet: &crate::spec::Bet, args: &RunArgs) -> anyhow::Result<Option<LedgerRef>> {
    Ok(match ledger.registration(bet.spec.number, &bet.hash(), &bet.canonical()) {
        Registration::Current(e) => {
            Some(LedgerRef { seq: e.seq, kind: e.kind, entry_hash: ledger.hashes[e.seq as usize].clone() })
        }
        Registration::Unregistered if args.exploratory => None,
        Registration::Deviates { .. } if args.exploratory => None,
        Registration::Unregistered => {
            return Err(usage(format!(
                "bet {} is not registered: run `bets register {}` first (or --exploratory, never counted)",
                bet.spec.number,
                args.spec.display()
            )));
        }
        Registration::Deviates { entry, diff } => {
            return Err(usage(format!(
                "{} differs from its registration (ledger seq {}): amend it with `bets amend` and a reason, \
                 or run --exploratory. Changes:\n  {}",
                args.spec.display(),
                entry.seq,
                diff.join("\n  ")
            )));
        }
    })
}

/// What every run starts from: the spec loaded and planned for its
/// profile, the ledger verified, and the registration it is checked against.
struct Checked {
    bet: crate::spec::Bet,
    plan: crate::spec::Plan,
    ledger: Ledger,
    ledger_ref: Option<LedgerRef>,
}

fn checked(repo: &Repo, args: &RunArgs) -> anyhow::Result<Checked> {
    if args.jobs == 0 || args.threads == 0 {
        return Err(usage("-j and --threads must be at least 1"));
    }
    let bet = crate::spec::load(&args.spec)?;
    let plan = bet.plan(&args.profile)?;
    let ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&repo.trusted_keys()?)?;
    let ledger_ref = registration(&ledger, &bet, args)?;
    Ok(Checked { bet, plan, ledger, ledger_ref })
}

/// How a run of `args` executes: the repo's cell cache, its `-j` and
/// `--threads`, this shard.
fn settings(
    repo: &Repo,
    args: &RunArgs,
    shard: Option<Shard>,
    compute: Compute,
    observer: Option<crate::runner::CellObserver>,
    progress: bool,
) -> pipeline::Settings {
    pipeline::Settings {
        paths: repo.paths.clone(),
        jobs: args.jobs,
        threads: args.threads,
        shard,
        cells: CellCache::new(&repo.paths.cells_dir()),
        progress: std::sync::Arc::new(super::reporter::Reporter { enabled: progress }),
        compute,
        observer,
    }
}

/// `--cells-only` / `--prepare-only`: fill the store and stop. No bundle,
/// no ledger entry, no bet lock and no secret key: a cluster task.
fn store_only(
    repo: &Repo,
    args: &RunArgs,
    shard: Option<Shard>,
    source: Option<crate::cluster::ShardSource>,
    progress: bool,
) -> anyhow::Result<()> {
    let Checked { bet, plan, .. } = checked(repo, args)?;
    let compute = if args.prepare_only { Compute::Nothing } else { Compute::Missing };
    let observer: crate::runner::CellObserver = std::sync::Arc::new(|cell: &crate::runner::Cell, event: CellEvent| {
        let what = match event {
            CellEvent::Cached(_) => "already in the store",
            CellEvent::Computed(_) => "computed",
            CellEvent::Failed(_) => "failed",
        };
        println!("cell {} {what} ({})", cell.index, short(&cell.key));
    });
    let settings = settings(repo, args, shard, compute, Some(observer), progress);
    let part = match (shard, source) {
        (Some(s), Some(src)) => format!("shard {s} (from {src})"),
        (Some(s), None) => format!("shard {s}"),
        (None, _) => "all cells".to_string(),
    };
    let exec = pipeline::run(&bet, &args.profile, &settings)?.exec;
    let store = repo.relative(repo.paths.cache_dir());
    if args.prepare_only {
        println!(
            "bet {} profile {}: prepared in {store} ({} input(s))",
            bet.spec.number,
            plan.profile,
            exec.inputs.len()
        );
        return Ok(());
    }
    let computed = exec.events.iter().filter(|e| matches!(e, CellEvent::Computed(_))).count();
    println!(
        "bet {} profile {} {part}: {} cells, {} already in the store, {computed} computed, {} failed; store {store}",
        bet.spec.number,
        plan.profile,
        exec.cells.len(),
        exec.cached,
        exec.counts.failed
    );
    if exec.counts.failed > 0 {
        return Err(classified(ExitKind::Other, format!("{} cell(s) failed; rerun this task", exec.counts.failed)));
    }
    Ok(())
}

/// A run that writes a signed bundle (a counted one unless exploratory or a shard).
fn counted_run(
    repo: &Repo,
    args: &RunArgs,
    shard: Option<Shard>,
    compute: Compute,
    progress: bool,
) -> anyhow::Result<()> {
    let expect = match &args.expect {
        None => None,
        Some(s) => {
            Some(Verdict::parse(s).ok_or_else(|| usage(format!("--expect `{s}`: expected strict, lenient or fail")))?)
        }
    };
    let Checked { bet, plan, ledger, ledger_ref } = checked(repo, args)?;
    let signer = repo.signer()?;
    let bet_dir = repo.paths.bet_results(&bet.id());
    let _lock = lock_bet(&bet_dir, bet.spec.number)?;

    let started = now();
    let settings = settings(repo, args, shard, compute, None, progress);
    eprintln!(
        "bet {} `{}` profile {}: {} cells{}",
        bet.spec.number,
        bet.spec.slug,
        plan.profile,
        plan.points.len(),
        shard.map(|s| format!(" (shard {s})")).unwrap_or_default()
    );
    let pipeline::Decided { plan, exec, record, table } = pipeline::run(&bet, &args.profile, &settings)?;
    let run_id = new_run_id(&bet_dir, &plan.profile, shard);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        harness: crate::HARNESS_VERSION.to_string(),
        bet: bet.spec.number,
        slug: bet.spec.slug.clone(),
        title: bet.spec.title.clone(),
        run_id: run_id.clone(),
        profile: plan.profile.clone(),
        exploratory: args.exploratory,
        spec_file: repo.relative(&args.spec),
        spec_hash: bet.hash(),
        ledger: ledger_ref,
        ledger_head: ledger.head(),
        git: git_info(&repo.root),
        cargo_lock_sha256: crate::fsutil::sha256_file(&repo.paths.cargo_lock()).ok(),
        experiment: ExperimentRef { kind: bet.experiment.kind().into(), version: bet.experiment.version() },
        params: plan.params.canonical().clone(),
        grid: plan.grid.clone(),
        threads: Threads { jobs: args.jobs, engine: args.threads },
        inputs: exec.inputs.clone(),
        shard,
        merged_from: vec![],
        cells: exec.counts,
        cached_cells: exec.cached,
        started,
        finished: now(),
        signer: signer.key_id.clone(),
    };
    let contents = pipeline::bundle_contents(&bet, &plan, manifest, record, &table, &exec.rows)?;
    let dir = results::write(&bet_dir, &contents, &signer)?;
    let recorded = if !args.exploratory && shard.is_none() { Some(put_on_record(repo, &dir, &signer)?) } else { None };
    report_written(repo, &dir, &contents, recorded, expect)
}

/// Append the ledger run entry that makes a counted bundle part of the
/// record; returns the entry's seq.
fn put_on_record(repo: &Repo, dir: &Path, signer: &crate::signing::Signer) -> anyhow::Result<u64> {
    let record = results::run_record(dir)?;
    let mut ledger = Ledger::open(&repo.ledger)?;
    let entry = ledger.append(crate::registry::run_entry(vec![record], None), signer).with_context(|| {
        format!(
            "{} was written but not put on the record; add it with `bets record-runs --reason ...`",
            repo.relative(dir)
        )
    })?;
    Ok(entry.seq)
}

/// `bets merge`: join the shard bundles of one run into a bundle with a
/// verdict, or (given one spec) the cells its shard tasks put in the store.
pub fn merge(repo: &Repo, paths: &[PathBuf], profile: &str, threads: usize, progress: bool) -> anyhow::Result<()> {
    if let [spec] = paths
        && spec.extension().is_some_and(|e| e == "toml")
    {
        let args = RunArgs {
            spec: spec.clone(),
            profile: profile.to_string(),
            jobs: 1,
            threads,
            shard: None,
            exploratory: false,
            expect: None,
            cells_only: false,
            prepare_only: false,
        };
        return counted_run(repo, &args, None, Compute::Refuse, progress);
    }
    if paths.is_empty() {
        return Err(usage("bets merge needs a bet's results folder or shard bundles"));
    }
    let mut shards = Vec::new();
    for p in paths {
        if p.join(results::MANIFEST).is_file() {
            shards.push(p.clone());
        } else {
            shards.extend(results::find_bundles_in(p));
        }
    }
    let keys = repo.trusted_keys()?;
    let mut manifests = Vec::new();
    for dir in &shards {
        let m = results::read_manifest(dir)?;
        if m.shard.is_some() {
            results::verify_bundle(dir, &keys)?;
            manifests.push((dir.clone(), m));
        }
    }
    let Some((_, first)) = manifests.last().cloned() else {
        return Err(usage("no shard bundles found to merge"));
    };
    // The newest group: same spec, profile and shard count as the latest shard.
    let count = first.shard.map(|s| s.count).unwrap_or(1);
    let group: Vec<_> = manifests
        .into_iter()
        .filter(|(_, m)| {
            m.spec_hash == first.spec_hash && m.profile == first.profile && m.shard.map(|s| s.count) == Some(count)
        })
        .collect();
    let mut by_index: BTreeMap<usize, (PathBuf, Manifest)> = BTreeMap::new();
    for (d, m) in group {
        by_index.insert(m.shard.map(|s| s.index).unwrap_or(0), (d, m));
    }
    let missing: Vec<_> = (1..=count).filter(|i| !by_index.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(usage(format!(
            "cannot merge: shard(s) {} of {count} missing for spec {} profile {}",
            missing.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
            short(&first.spec_hash),
            first.profile
        )));
    }
    let bet = crate::spec::load(&repo.root.join(&first.spec_file))?;
    if bet.hash() != first.spec_hash {
        return Err(usage(format!("{} changed since the shards ran: cannot merge them under it", first.spec_file)));
    }
    let plan = bet.plan(&first.profile)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut counts = CellCounts { planned: plan.points.len(), ok: 0, failed: 0 };
    let mut cached = 0;
    let mut merged_from = Vec::new();
    for (dir, m) in by_index.values() {
        rows.extend(results::read_rows(dir)?);
        counts.ok += m.cells.ok;
        counts.failed += m.cells.failed;
        cached += m.cached_cells;
        merged_from.push(m.run_id.clone());
    }
    rows.sort_by_key(|r| r.get("cell").and_then(|v| v.as_i64()).unwrap_or(i64::MAX));
    let (record, table) = pipeline::decide(&bet, &rows, counts)?;
    let ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&keys)?;
    let signer = repo.signer()?;
    let bet_dir = repo.paths.bet_results(&bet.id());
    let _lock = lock_bet(&bet_dir, bet.spec.number)?;
    let run_id = new_run_id(&bet_dir, &plan.profile, None);
    let last = &by_index.values().last().expect("at least one shard").1;
    let manifest = Manifest {
        run_id: run_id.clone(),
        shard: None,
        merged_from,
        cells: counts,
        cached_cells: cached,
        started: by_index.values().map(|(_, m)| m.started.clone()).min().unwrap_or_default(),
        finished: now(),
        signer: signer.key_id.clone(),
        ledger_head: ledger.head(),
        ..last.clone()
    };
    let contents = pipeline::bundle_contents(&bet, &plan, manifest, record, &table, &rows)?;
    let dir = results::write(&bet_dir, &contents, &signer)?;
    let seq = put_on_record(repo, &dir, &signer)?;
    report_written(repo, &dir, &contents, Some(seq), None)
}

/// Print what was written, from the values computed (nothing is read back).
fn report_written(
    repo: &Repo,
    dir: &Path,
    contents: &BundleContents,
    recorded: Option<u64>,
    expect: Option<Verdict>,
) -> anyhow::Result<()> {
    let (v, m) = (&contents.verdict, &contents.manifest);
    println!("{}", render_verdict(v));
    println!("bundle: {}", repo.relative(dir));
    for f in [results::CELLS_CSV, results::CELLS_PARQUET, results::VERDICT, results::MANIFEST, results::SUMS_SIG] {
        println!("  {}", repo.relative(&dir.join(f)));
    }
    let mut plots: Vec<_> = contents.plots.iter().map(|(name, _)| results::plot_path(dir, name)).collect();
    plots.sort();
    for p in plots {
        println!("  {}", repo.relative(&p));
    }
    if let Some(seq) = recorded {
        println!("on the record: {} seq {seq}", repo.relative(&repo.ledger));
    }
    if m.exploratory {
        println!("(exploratory run: not counted as a verdict)");
    }
    if let Some(expected) = expect
        && !v.record.verdict.meets(expected)
    {
        return Err(classified(
            ExitKind::Regression,
            format!("verdict {} does not meet --expect {}", v.record.verdict, expected),
        ));
    }
    Ok(())
}

/// The verdict and the numbers behind it, for a terminal.
pub fn render_verdict(v: &VerdictFile) -> String {
    let r = &v.record;
    let mut out = format!(
        "verdict: {} ({}); cells {} ok, {} failed, {} missing of {}",
        r.verdict,
        r.reason,
        r.cells.ok,
        r.cells.failed,
        r.cells.missing(),
        r.cells.planned
    );
    for c in &r.criteria {
        let holds = match c.holds {
            Some(true) => "holds",
            Some(false) => "does not hold",
            None => "undecided",
        };
        let uses: Vec<String> = c
            .uses
            .iter()
            .map(|(k, v)| format!("{k} = {}", v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())))
            .collect();
        let expr = c.expression.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!("\n  {:<12} {:<14} {expr}  [{}]", c.level, holds, uses.join(", ")));
    }
    out
}

/// A per-bet lock so two runs of the same bet never interleave their files.
fn lock_bet(bet_dir: &Path, number: u32) -> anyhow::Result<File> {
    std::fs::create_dir_all(bet_dir).with_context(|| format!("creating {}", bet_dir.display()))?;
    let path = crate::services::Paths::bet_lock(bet_dir);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(classified(
            ExitKind::Other,
            format!("bet {number} is already running: {} is held by another process", path.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

fn new_run_id(bet_dir: &Path, profile: &str, shard: Option<Shard>) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = match shard {
        Some(s) => format!("{stamp}-{profile}-shard-{}-of-{}", s.index, s.count),
        None => format!("{stamp}-{profile}"),
    };
    let mut id = base.clone();
    let mut n = 2;
    while bet_dir.join(&id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn git_info(root: &Path) -> GitInfo {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    GitInfo {
        commit: git(&["rev-parse", "HEAD"]),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
    }
}
