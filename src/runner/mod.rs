//! Plan execution: content-addressed cells, a cache that makes a killed run
//! resume, `-j` parallelism and `--shard i/n` splitting.
//!
//! A cell's key hashes everything that determines its row: the experiment
//! kind and version, the profile, the typed procedure parameters after
//! profile overrides (canonical: defaults filled in), the cell's factor values and the hashes of the experiment's
//! inputs (data, base model). Criteria are not part of the key, so amending
//! only the criteria re-decides the verdict without recomputing cells.

mod cache;

pub use cache::CellCache;

pub use crate::kinds::Cell;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::criteria::CellCounts;
use crate::kinds::{Env, Experiment, Prepared};
use crate::spec::Plan;
use crate::table::{Row, Value};

/// One of `count` parts of a run, 1-based like a CI matrix (`--shard 2/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether cell `i` of the plan belongs to this shard (round robin, so
    /// every shard gets a fair mix of the grid).
    pub fn contains(&self, i: usize) -> bool {
        i % self.count == self.index - 1
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("`{s}` is not a shard: expected i/n with 1 <= i <= n, e.g. 2/3");
        let (i, n) = s.split_once('/').ok_or_else(err)?;
        let (index, count): (usize, usize) =
            (i.trim().parse().map_err(|_| err())?, n.trim().parse().map_err(|_| err())?);
        if index == 0 || count == 0 || index > count {
            return Err(err());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a run does with the cells of its shard that the cache lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    /// Compute and cache them (a normal run, a shard task).
    #[default]
    Missing,
    /// Nothing: prepare the experiment's inputs (data, base model) and stop.
    Nothing,
    /// Refuse: every cell must already be cached (a merge from the store).
    Refuse,
}

/// Told of each cell as it is settled, from the thread that settled it.
pub type CellObserver = std::sync::Arc<dyn Fn(&Cell, CellEvent) + Send + Sync>;

/// How to execute a plan.
#[derive(Clone)]
pub struct RunOptions {
    /// Cells run at once.
    pub jobs: usize,
    pub shard: Option<Shard>,
    /// Where the count of finished cells is reported.
    pub progress: std::sync::Arc<dyn crate::services::Progress>,
    pub compute: Compute,
    /// Told of each cell as it is read back, computed or failed (a shard task's log).
    pub observer: Option<CellObserver>,
}

/// What executing a plan produced: rows in plan order (only this shard's).
#[derive(Debug, Clone)]
pub struct Execution {
    pub cells: Vec<Cell>,
    /// Full table rows: `cell`, factors, `status`, `error`, metrics.
    pub rows: Vec<Row>,
    pub counts: CellCounts,
    /// Cells taken from the cache rather than computed.
    pub cached: usize,
    /// What happened to each cell of this shard, in plan order.
    pub events: Vec<CellEvent>,
    /// The experiment's input hashes (recorded in the manifest).
    pub inputs: BTreeMap<String, String>,
}

/// What the runner did with one cell (by plan index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "event", content = "cell")]
pub enum CellEvent {
    /// Read back from the cell cache: nothing recomputed.
    Cached(usize),
    /// Computed by the experiment and cached.
    Computed(usize),
    /// Computed and failed (not cached; a rerun tries again).
    Failed(usize),
}

/// A cell's row (or why it failed), and whether it came from the cache.
type Outcome = (Result<Row, String>, bool);

/// The content hash of one cell (see the module docs for what it covers).
pub fn cell_key(
    experiment: &dyn Experiment,
    plan: &Plan,
    factors: &BTreeMap<String, Value>,
    inputs: &BTreeMap<String, String>,
) -> String {
    let doc = serde_json::json!({
        "experiment": experiment.kind(),
        "version": experiment.version(),
        "profile": plan.profile,
        "params": plan.params.canonical(),
        "factors": factors,
        "inputs": inputs,
    });
    crate::fsutil::sha256_hex(doc.to_string().as_bytes())
}

/// Every cell read back from `cache`, each once, none computed (a merge
/// from the store); a usage error naming the cells it lacks.
fn read_back_all(cells: &[Cell], cache: &CellCache) -> anyhow::Result<Vec<Outcome>> {
    let rows: Vec<Option<Row>> = cells.iter().map(|c| cache.get(&c.key)).collect();
    let missing: Vec<String> =
        cells.iter().zip(&rows).filter(|(_, r)| r.is_none()).map(|(c, _)| c.index.to_string()).collect();
    if !missing.is_empty() {
        return Err(crate::error::usage(format!(
            "{} of {} cells are not in the store {} (missing, computed on a CPU of another gemm kernel \
             family, or damaged and refused): cells {}; rerun the shard tasks that hold them",
            missing.len(),
            cells.len(),
            cache.dir().display(),
            missing.join(", ")
        )));
    }
    Ok(rows.into_iter().map(|r| (Ok(r.expect("checked above")), true)).collect())
}

/// Run `cells` on `opts.jobs` threads: each read back from `cache` when it
/// is there, else computed and cached.
fn compute_missing(cells: &[Cell], prepared: &dyn Prepared, opts: &RunOptions, cache: &CellCache) -> Vec<Outcome> {
    let bar = opts.progress.start("cells", "cells", cells.len() as u64);
    // Plain scoped threads pulling cell indices, not a rayon pool: a cell
    // that waits (on the engine's own pool, or on an adapter another cell is
    // training) must never pick up another cell on the same thread, which
    // rayon's work stealing would do, re-entering that wait and deadlocking.
    let tell = |cell: &Cell, event: CellEvent| {
        if let Some(observer) = &opts.observer {
            observer(cell, event);
        }
    };
    let run_one = |cell: &Cell| -> Outcome {
        if let Some(row) = cache.get(&cell.key) {
            tell(cell, CellEvent::Cached(cell.index));
            return (Ok(row), true);
        }
        let result = prepared.run_cell(cell).map_err(|e| format!("{e:#}"));
        match &result {
            Ok(row) => {
                if let Err(e) = cache.put(&cell.key, row) {
                    tracing::warn!("could not cache cell {}: {e:#}", cell.index);
                }
                tell(cell, CellEvent::Computed(cell.index));
            }
            Err(e) => {
                tracing::warn!("cell {} failed: {e}", cell.index);
                tell(cell, CellEvent::Failed(cell.index));
            }
        }
        (result, false)
    };
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Outcome>>> = cells.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.clamp(1, cells.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(cell) = cells.get(i) else { break };
                    let outcome = run_one(cell);
                    *slots[i].lock().expect("slot lock") = Some(outcome);
                    bar.inc(1);
                }
            });
        }
    });
    let outcomes = slots
        .into_iter()
        .map(|s| s.into_inner().expect("slot lock").unwrap_or((Err("cell did not run".into()), false)))
        .collect();
    bar.finish();
    outcomes
}

/// Prepare the experiment, then run every cell of the plan that belongs to
/// the shard, reusing cached cells and caching each new one as it finishes.
pub fn execute(
    experiment: &dyn Experiment,
    plan: &Plan,
    env: &Env,
    opts: &RunOptions,
    cache: &CellCache,
) -> anyhow::Result<Execution> {
    let prepared = experiment.prepare(&plan.params, env)?;
    let inputs = prepared.inputs();
    let cells: Vec<Cell> = plan
        .points
        .iter()
        .enumerate()
        .filter(|(i, _)| opts.shard.is_none_or(|s| s.contains(*i)))
        .map(|(i, p)| Cell { index: i, factors: p.clone(), key: cell_key(experiment, plan, p, &inputs) })
        .collect();
    let outcomes: Vec<Outcome> = match opts.compute {
        Compute::Nothing => {
            let counts = CellCounts { planned: plan.points.len(), ok: 0, failed: 0 };
            return Ok(Execution { cells, rows: vec![], counts, cached: 0, events: vec![], inputs });
        }
        Compute::Refuse => read_back_all(&cells, cache)?,
        Compute::Missing => compute_missing(&cells, prepared.as_ref(), opts, cache),
    };

    let mut rows = Vec::with_capacity(cells.len());
    let mut counts = CellCounts { planned: plan.points.len(), ok: 0, failed: 0 };
    let mut cached = 0;
    let mut events = Vec::with_capacity(cells.len());
    for (cell, (outcome, hit)) in cells.iter().zip(outcomes) {
        events.push(match (&outcome, hit) {
            (Ok(_), true) => CellEvent::Cached(cell.index),
            (Ok(_), false) => CellEvent::Computed(cell.index),
            (Err(_), _) => CellEvent::Failed(cell.index),
        });
        let mut row = Row::new();
        row.insert("cell".into(), Value::Int(cell.index as i64));
        row.extend(cell.factors.clone());
        match outcome {
            Ok(metrics) => {
                counts.ok += 1;
                cached += hit as usize;
                row.insert("status".into(), Value::Str("ok".into()));
                row.extend(metrics);
            }
            Err(e) => {
                counts.failed += 1;
                row.insert("status".into(), Value::Str("failed".into()));
                row.insert("error".into(), Value::Str(e));
            }
        }
        rows.push(row);
    }
    Ok(Execution { cells, rows, counts, cached, events, inputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_the_plan() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 3 });
        let mine: Vec<usize> = (0..7).filter(|i| s.contains(*i)).collect();
        assert_eq!(mine, vec![1, 4]);
        let all: usize = (1..=3).map(|i| (0..7).filter(|c| Shard { index: i, count: 3 }.contains(*c)).count()).sum();
        assert_eq!(all, 7);
    }

    #[test]
    fn malformed_shards_are_rejected_with_the_expected_form() {
        for bad in ["0/3", "4/3", "1", "a/b", "1/0"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("expected i/n"), "{bad}: {e}");
        }
    }
}
