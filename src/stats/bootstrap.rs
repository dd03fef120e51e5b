//! A seeded percentile bootstrap over the cells of a run.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::seed::derive_seed;
use crate::table::{self, QueryError, Table, TableError, Value};

/// How many resamples, at what level, from which seed. Part of what a report
/// records, because the interval is a function of all three.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Root of every resampling stream (each run derives its own from it).
    pub seed: u64,
    /// Resampled tables per run; 1000 keeps a 95% interval's ends stable to
    /// about a percentile while a report of the catalogue stays quick.
    pub resamples: usize,
    /// Coverage of the percentile interval, e.g. 0.95.
    pub level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { seed: 20_250_101, resamples: 1000, level: 0.95 }
    }
}

/// What is drawn with replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resampling {
    /// Single rows: right when cells are independent of each other.
    Rows,
    /// Whole groups of rows sharing a value of `factor` (e.g. `seed`), so a
    /// comparison of arms joined on that factor stays paired. A group drawn
    /// twice gets a fresh value of the factor for its second copy, so a join
    /// on the factor pairs each copy with itself and never across copies.
    Clusters {
        /// The column whose values define the clusters.
        factor: String,
    },
}

/// A bootstrap interval of one quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The quantity on the table as observed.
    pub estimate: Option<f64>,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
    /// Resamples where the quantity had a value (NULLs are left out).
    pub defined: usize,
    /// Resamples drawn.
    pub resamples: usize,
    /// Units drawn from (rows or clusters); one unit gives a degenerate
    /// interval, which a reader must see as "no replication", not certainty.
    pub units: usize,
}

/// Why a quantity has no interval.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntervalError {
    /// The quantity fails on the observed table.
    #[error("{0}")]
    Query(QueryError),
    /// The quantity is not numeric, so it has no percentiles.
    #[error("`{0}` is not a number")]
    NotANumber(Value),
    /// Clustered resampling by a factor the table lacks.
    #[error("the table has no column `{0}` to resample by")]
    NoFactor(String),
    /// Drawing a resampled table failed.
    #[error("resampling failed: {0}")]
    Resampling(TableError),
}

/// Written as its message, as a report shows it.
impl Serialize for IntervalError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Percentile bootstrap intervals of SQL quantities over `cells` (the ok
/// rows of a run, as table `cells`).
///
/// Every quantity is computed on the same resampled tables, so intervals of
/// related quantities are consistent with each other. `stream` (e.g. the run
/// id) picks this run's random stream from `cfg.seed`: two runs never share
/// draws, and the same run always gets the same ones. A quantity that is not
/// numeric, or fails on the observed table, gives `Err`; one that is NULL on
/// every resample gives `Ok(None)`.
pub fn bootstrap(
    cells: &Table,
    resampling: &Resampling,
    quantities: &[(&str, &str)],
    cfg: &Bootstrap,
    stream: &str,
) -> BTreeMap<String, Result<Option<Interval>, IntervalError>> {
    let mut out = BTreeMap::new();
    let mut live: Vec<(&str, &str, Option<f64>)> = Vec::new();
    for (name, sql) in quantities {
        match table::query_scalar(&[("cells", cells)], sql) {
            Err(e) => {
                out.insert(name.to_string(), Err(IntervalError::Query(e)));
            }
            Ok(Some(v)) if v.as_f64().is_none() => {
                out.insert(name.to_string(), Err(IntervalError::NotANumber(v)));
            }
            Ok(v) => live.push((name, sql, v.as_ref().and_then(Value::as_f64))),
        }
    }
    if live.is_empty() {
        return out;
    }
    let units = match resampling {
        Resampling::Rows => (0..cells.height()).map(|i| vec![i]).collect(),
        Resampling::Clusters { factor } => match cells.units_by(factor) {
            Some(u) => u,
            None => {
                for (name, _, _) in live {
                    out.insert(name.to_string(), Err(IntervalError::NoFactor(factor.clone())));
                }
                return out;
            }
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(&cfg.seed.to_string(), stream));
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.resamples); live.len()];
    for _ in 0..cfg.resamples {
        let frame = match resample(cells, resampling, &units, &mut rng) {
            Ok(f) => f,
            Err(e) => {
                for (name, _, _) in &live {
                    out.insert(name.to_string(), Err(IntervalError::Resampling(e.clone())));
                }
                return out;
            }
        };
        for (q, (_, sql, _)) in live.iter().enumerate() {
            if let Ok(Some(v)) = table::query_scalar(&[("cells", &frame)], sql)
                && let Some(x) = v.as_f64()
                && !x.is_nan()
            {
                samples[q].push(x);
            }
        }
    }
    let tail = (1.0 - cfg.level) / 2.0;
    for ((name, _, estimate), mut s) in live.into_iter().zip(samples) {
        if s.is_empty() {
            out.insert(name.to_string(), Ok(None));
            continue;
        }
        s.sort_by(f64::total_cmp);
        let interval = Interval {
            estimate,
            low: percentile(&s, tail),
            high: percentile(&s, 1.0 - tail),
            defined: s.len(),
            resamples: cfg.resamples,
            units: units.len(),
        };
        out.insert(name.to_string(), Ok(Some(interval)));
    }
    out
}

/// The `q` quantile of sorted values, interpolating linearly between order
/// statistics (Hyndman and Fan's type 7, numpy's default), so the ends of an
/// interval can be checked by hand.
///
/// # Panics
/// On an empty slice.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of nothing");
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// An unbiased index in `0..n` by rejection (kept here rather than taken
/// from `rand`'s range sampling so the draws never change with a rand
/// release: old reports must regenerate bit for bit).
fn index(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

fn resample(
    cells: &Table,
    resampling: &Resampling,
    units: &[Vec<usize>],
    rng: &mut ChaCha8Rng,
) -> Result<Table, TableError> {
    let mut rows: Vec<usize> = Vec::with_capacity(cells.height());
    // 0 for a cluster's first copy, else a number unique to this copy.
    let mut copies: Vec<usize> = Vec::with_capacity(cells.height());
    let mut drawn = vec![false; units.len()];
    let mut duplicates = 0;
    for _ in 0..units.len() {
        let u = index(rng, units.len());
        let copy = if drawn[u] {
            duplicates += 1;
            duplicates
        } else {
            drawn[u] = true;
            0
        };
        for &r in &units[u] {
            rows.push(r);
            copies.push(copy);
        }
    }
    match resampling {
        Resampling::Rows => cells.take(&rows),
        Resampling::Clusters { factor } => cells.take_relabelled(&rows, factor, &copies),
    }
}
