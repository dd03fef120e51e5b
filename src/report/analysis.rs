//! The statistics of one run, computed from its verdict and its cells
//! (pure: the caller reads the bundle).

use std::collections::BTreeMap;

use super::model::{Analysis, Catalogue, CellsView, CriterionStats, HolmRow, SignTest};
use crate::results::VerdictFile;
use crate::stats::{self, Bootstrap, Resampling};
use crate::table::{self, Table};

/// The factor cells are resampled by when the table has it: every spec's
/// grid has `seed`, and arms are compared within a seed.
pub const CLUSTER_FACTOR: &str = "seed";

/// Bootstrap intervals of the decisive quantities, fragility of each
/// criterion and sign tests of win counts, for a run with table `cells`.
///
/// Quantities are recomputed with the SQL recorded in the verdict (what was
/// decided), not the spec's current text.
pub fn analyse(verdict: &VerdictFile, cells: &Table, cfg: &Bootstrap) -> Analysis {
    let record = &verdict.record;
    let ok = table::query(&[("all_cells", cells)], "SELECT * FROM all_cells WHERE status = 'ok'")
        .unwrap_or_else(|_| cells.clone());
    let decisive: Vec<&String> = {
        let mut names: Vec<&String> = record.criteria.iter().flat_map(|c| c.uses.keys()).collect();
        names.sort();
        names.dedup();
        names
    };
    let sql: Vec<(&str, &str)> =
        decisive.iter().filter_map(|n| record.quantities.get(*n).map(|q| (n.as_str(), q.sql.as_str()))).collect();
    let (resampling, resampling_text) = resampling_of(&ok);
    let intervals = stats::bootstrap(&ok, &resampling, &sql, cfg, &verdict.run_id);
    let ends: BTreeMap<String, (f64, f64)> = intervals
        .iter()
        .filter_map(|(n, r)| match r {
            Ok(Some(i)) => Some((n.clone(), (i.low, i.high))),
            _ => None,
        })
        .collect();
    let criteria = record
        .criteria
        .iter()
        .map(|c| {
            if c.holds.is_none() {
                return CriterionStats { level: c.level.clone(), flip: None, note: Some("undecided".into()) };
            }
            match stats::criterion_flip(&c.expression, &c.uses, &ends) {
                Ok(flip) => CriterionStats {
                    level: c.level.clone(),
                    flip: flip.map(|f| (f.quantity, f.at, f.holds)),
                    note: None,
                },
                Err(e) => CriterionStats { level: c.level.clone(), flip: None, note: Some(e.to_string()) },
            }
        })
        .collect();
    let columns = cells.column_names();
    let rows = cells.rows();
    Analysis {
        run_id: verdict.run_id.clone(),
        resampling: resampling_text,
        intervals,
        criteria,
        sign_tests: sign_tests(verdict),
        cells: CellsView { columns, rows },
    }
}

/// How the ok cells `ok` are resampled, and that in words: whole seeds
/// when the table has a `seed` column, else rows.
pub fn resampling_of(ok: &Table) -> (Resampling, String) {
    match ok.units_by(CLUSTER_FACTOR) {
        Some(units) => (
            Resampling::Clusters { factor: CLUSTER_FACTOR.into() },
            format!("clusters of `{CLUSTER_FACTOR}` ({} drawn with replacement)", units.len()),
        ),
        None => (Resampling::Rows, format!("rows ({} drawn with replacement)", ok.height())),
    }
}

/// Sign tests of the run's win counts.
///
/// Convention (the catalogue's own names): a quantity named `wins` or
/// `<prefix>_wins` counts paired comparisons one arm won. Its number of
/// trials is the quantity `<prefix>_trials` or `<prefix>_pairs`, else
/// `trials` or `pairs`, else `<prefix>_wins + <prefix>_losses` (ties left
/// out). Two win counts with no trials of their own count the two sides of
/// one comparison (e.g. `real_wins` and `random_wins`): they give a single
/// test of one against the other, over their sum. A win count that none of
/// these completes is not tested: a threshold like `wins >= 12` alone does
/// not say out of how many.
pub fn sign_tests(verdict: &VerdictFile) -> Vec<SignTest> {
    let q = &verdict.record.quantities;
    let count = |name: &str| {
        q.get(name).and_then(|v| v.value.as_ref()).and_then(|v| v.as_f64()).filter(|x| *x >= 0.0 && x.fract() == 0.0)
    };
    let win_counts: Vec<(&String, &str, f64)> = q
        .keys()
        .filter_map(|name| {
            let prefix = name.strip_suffix("wins").filter(|p| p.is_empty() || p.ends_with('_'))?;
            Some((name, prefix, count(name)?))
        })
        .collect();
    let mut out = Vec::new();
    let mut unpaired = Vec::new();
    for (name, prefix, wins) in &win_counts {
        let own = ["trials", "pairs"].iter().find_map(|t| count(&format!("{prefix}{t}")));
        let shared = ["trials", "pairs"].iter().find_map(|t| count(t));
        let trials = own.or(shared).or_else(|| count(&format!("{prefix}losses")).map(|l| l + wins));
        match trials {
            Some(trials) if *wins <= trials => {
                out.push(SignTest { quantity: name.to_string(), wins: *wins as u64, trials: trials as u64, p: 0.0 })
            }
            Some(_) => {}
            None => unpaired.push((*name, *wins)),
        }
    }
    if let [(a, wa), (b, wb)] = unpaired[..] {
        out.push(SignTest { quantity: format!("{a} vs {b}"), wins: wa as u64, trials: (wa + wb) as u64, p: 0.0 });
    }
    for t in &mut out {
        t.p = stats::sign_test(t.wins, t.trials);
    }
    out
}

/// Every sign test of the catalogue's latest counted runs, with Holm's
/// adjustment over the whole family (bet order, then quantity).
pub fn holm_family(catalogue: &Catalogue) -> Vec<HolmRow> {
    let mut rows: Vec<HolmRow> = catalogue
        .bets
        .iter()
        .filter_map(|b| b.analysis.as_ref().map(|a| (b.number, a)))
        .flat_map(|(bet, a)| {
            a.sign_tests.iter().map(move |t| HolmRow {
                bet,
                quantity: t.quantity.clone(),
                wins: t.wins,
                trials: t.trials,
                p: t.p,
                p_holm: t.p,
            })
        })
        .collect();
    let adjusted = stats::holm(&rows.iter().map(|r| r.p).collect::<Vec<_>>());
    for (r, a) in rows.iter_mut().zip(adjusted) {
        r.p_holm = a;
    }
    rows
}
