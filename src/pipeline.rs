//! The one path every run takes: plan -> execute -> decide -> bundle
//! contents. `bets run`, `bets merge`, `bets regress` and the end-to-end
//! tests all go through here, so none of them re-implements a step.
//!
//! Pure of policy: the caller chooses the profile, the cell cache and where
//! progress goes, and what to do with the contents (sign and write them,
//! compare them with a baseline, assert on them).

use std::sync::Arc;

use crate::criteria::{self, CellCounts, VerdictRecord};
use crate::kinds::Env;
use crate::results::{BundleContents, MANIFEST_FORMAT, Manifest, VerdictFile};
use crate::runner::{self, CellCache, CellObserver, Compute, Execution, RunOptions, Shard};
use crate::services::{Paths, Progress};
use crate::spec::{Bet, Plan};
use crate::table::{Row, Table};

/// How to run a bet's plan.
#[derive(Clone)]
pub struct Settings {
    pub paths: Paths,
    /// Cells run at once.
    pub jobs: usize,
    /// Threads the engine uses inside one cell.
    pub threads: usize,
    pub shard: Option<Shard>,
    /// Where finished cells are cached (and read back on a rerun).
    pub cells: CellCache,
    pub progress: Arc<dyn Progress>,
    /// What to do with cells the cache lacks (compute them, by default).
    pub compute: Compute,
    /// Told of each cell as it is settled (a shard task's log).
    pub observer: Option<CellObserver>,
}

/// A plan executed and decided.
pub struct Decided {
    pub plan: Plan,
    pub exec: Execution,
    pub record: VerdictRecord,
    /// The tidy table of this run's rows.
    pub table: Table,
}

/// Plan `bet` at `profile`, execute it, decide the verdict.
pub fn run(bet: &Bet, profile: &str, s: &Settings) -> anyhow::Result<Decided> {
    let plan = bet.plan(profile)?;
    let env =
        Env { paths: s.paths.clone(), profile: plan.profile.clone(), threads: s.threads, progress: s.progress.clone() };
    let opts = RunOptions {
        jobs: s.jobs,
        shard: s.shard,
        progress: s.progress.clone(),
        compute: s.compute,
        observer: s.observer.clone(),
    };
    let exec = runner::execute(bet.experiment, &plan, &env, &opts, &s.cells)?;
    let (record, table) = decide(bet, &exec.rows, exec.counts)?;
    Ok(Decided { plan, exec, record, table })
}

/// The verdict of `rows` under the bet's registered criteria, and their table.
pub fn decide(bet: &Bet, rows: &[Row], counts: CellCounts) -> anyhow::Result<(VerdictRecord, Table)> {
    let table = Table::from_rows(&bet.columns(), rows)?;
    let record = criteria::decide(&bet.criteria_set(), &table, counts);
    Ok((record, table))
}

/// Everything a bundle holds, ready to be signed and written.
pub fn bundle_contents(
    bet: &Bet,
    plan: &Plan,
    manifest: Manifest,
    record: VerdictRecord,
    table: &Table,
    rows: &[Row],
) -> anyhow::Result<BundleContents> {
    let verdict = VerdictFile {
        format: MANIFEST_FORMAT,
        bet: bet.spec.number,
        run_id: manifest.run_id.clone(),
        profile: manifest.profile.clone(),
        exploratory: manifest.exploratory,
        counted: !manifest.exploratory && manifest.shard.is_none(),
        record,
    };
    let plots = crate::report::bundle_plots(bet, plan, rows)?;
    Ok(BundleContents { manifest, verdict, cells_csv: table.to_csv()?, cells_parquet: table.to_parquet()?, plots })
}
