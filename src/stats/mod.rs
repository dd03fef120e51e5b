//! Statistics that tell a reader how much weight a verdict can bear (pure).
//!
//! A verdict is decided on one table of cells; these functions say how much
//! it would move under resampling of those cells ([`bootstrap`]), whether a
//! count of wins could be luck ([`sign_test`]), whether a criterion sits so
//! close to its threshold that the interval crosses it ([`criterion_flip`]),
//! and how to read many p-values at once ([`holm`]). Everything is a
//! function of its inputs and an explicit seed, so a report regenerated from
//! the same bundles shows the same numbers.

mod binomial;
mod bootstrap;

pub use binomial::{binomial_two_sided, sign_test};
pub use bootstrap::{Bootstrap, Interval, IntervalError, Resampling, bootstrap, percentile};

use std::collections::BTreeMap;

use crate::table::{Column, ColumnType, QueryError, Row, Table, Value};

/// Holm's step-down adjustment of `p` (any order; the result is in the same
/// order). It controls the family-wise error rate without assuming the tests
/// are independent, which is why the catalogue summary uses it: the bets
/// share a base model and data, so their tests are not independent.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(scaled);
        adjusted[i] = running;
    }
    adjusted
}

/// A criterion whose outcome changes when one quantity moves to an end of
/// its bootstrap interval: the verdict rests on where that end falls.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    /// The quantity that was moved.
    pub quantity: String,
    /// The interval end it was moved to.
    pub at: f64,
    /// What the criterion gives there (`None`: it became undecidable).
    pub holds: Option<bool>,
}

/// Whether a criterion flips inside the intervals of the quantities it uses.
///
/// Each quantity named in `uses` is moved, one at a time, to the low and then
/// the high end of its interval while the others keep their observed values,
/// and `expr` is evaluated again with [`crate::criteria::evaluate_expression`].
/// The first change of outcome is returned; `Ok(None)` means the criterion
/// gives the observed outcome at every end (it is robust to the resampling).
/// Quantities without an interval keep their observed value. Moving one
/// quantity at a time is exact for the usual monotone threshold criteria and
/// keeps the cost linear in the number of quantities.
pub fn criterion_flip(
    expr: &str,
    uses: &BTreeMap<String, Option<Value>>,
    intervals: &BTreeMap<String, (f64, f64)>,
) -> Result<Option<Flip>, QueryError> {
    let observed = evaluate(expr, uses, None)?;
    for (name, (lo, hi)) in intervals.iter().filter(|(n, _)| uses.contains_key(*n)) {
        for at in [*lo, *hi] {
            let holds = evaluate(expr, uses, Some((name, at)))?;
            if holds != observed {
                return Ok(Some(Flip { quantity: name.clone(), at, holds }));
            }
        }
    }
    Ok(None)
}

fn evaluate(
    expr: &str,
    uses: &BTreeMap<String, Option<Value>>,
    moved: Option<(&str, f64)>,
) -> Result<Option<bool>, QueryError> {
    let mut cols = Vec::new();
    let mut row = Row::new();
    for (name, value) in uses {
        let value = match moved {
            Some((m, at)) if m == name => Some(Value::Float(at)),
            _ => value.clone(),
        };
        let kind = value.as_ref().map(Value::column_type).unwrap_or(ColumnType::Float);
        cols.push(Column { name: name.clone(), kind });
        if let Some(v) = value {
            row.insert(name.clone(), v);
        }
    }
    let table = Table::from_rows(&cols, &[row])?;
    crate::criteria::evaluate_expression(&table, expr)
}

#[cfg(test)]
mod tests;
