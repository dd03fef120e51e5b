//! Optional grid factors that override a procedure parameter for one cell, so
//! that a grid can sweep a parameter (`loss = [0.0, 0.05]`) without one spec
//! per value.

use crate::table::Value;

use super::Cell;

/// The factor `name` as a non-negative integer, if the cell has it.
pub(crate) fn count(cell: &Cell, name: &str) -> anyhow::Result<Option<usize>> {
    match cell.factors.get(name) {
        None => Ok(None),
        Some(Value::Int(i)) if *i >= 0 => Ok(Some(*i as usize)),
        Some(v) => anyhow::bail!("cell {}: factor `{name}` must be a non-negative integer, got {v}", cell.index),
    }
}

/// The factor `name` as a number (integers widen), if the cell has it.
pub(crate) fn number(cell: &Cell, name: &str) -> anyhow::Result<Option<f64>> {
    match cell.factors.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("cell {}: factor `{name}` must be a number, got {v}", cell.index)),
    }
}

/// The factor `name` as a string, if the cell has it.
pub(crate) fn string<'c>(cell: &'c Cell, name: &str) -> anyhow::Result<Option<&'c str>> {
    match cell.factors.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("cell {}: factor `{name}` must be a string, got {v}", cell.index)),
    }
}
