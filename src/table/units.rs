//! What a resampling of the table needs: rows grouped into units by a
//! factor, and rows taken by index with repeated units relabelled.

use std::collections::BTreeMap;

use polars::prelude::{AnyValue, Column, IdxCa, IdxSize, PolarsResult};

use super::Value;
use super::frame::{Table, TableError};

impl Table {
    /// Row indices grouped by the value of `factor`, groups in ascending
    /// order of the value (`None` when the table has no such column).
    pub fn units_by(&self, factor: &str) -> Option<Vec<Vec<usize>>> {
        let col = self.df.column(factor).ok()?;
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut order: Vec<(Option<Value>, String)> = Vec::new();
        for i in 0..self.df.height() {
            let v = col.get(i).ok()?;
            let key = v.to_string();
            if !groups.contains_key(&key) {
                order.push((unit_value(&v), key.clone()));
            }
            groups.entry(key).or_default().push(i);
        }
        order.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
        Some(order.into_iter().map(|(_, k)| groups.remove(&k).unwrap_or_default()).collect())
    }

    /// The rows at `indices`, in that order (an index may repeat, as in a
    /// bootstrap draw).
    pub fn take(&self, indices: &[usize]) -> Result<Table, TableError> {
        Ok(Table { df: self.take_frame(indices)? })
    }

    /// [`Table::take`] for a draw of whole units: `copies[i]` is 0 where row
    /// `i` belongs to the first copy of its unit, else a number unique to
    /// that copy. Rows of a later copy get a value of `factor` that occurs
    /// nowhere in this table (beyond the maximum for integers, a `#copy`
    /// suffix otherwise), so a join on the factor pairs each copy with
    /// itself and never across copies. With no later copies this is `take`.
    pub fn take_relabelled(&self, indices: &[usize], factor: &str, copies: &[usize]) -> Result<Table, TableError> {
        let mut frame = self.take_frame(indices)?;
        if copies.iter().any(|&c| c > 0) {
            let col = frame.column(factor)?.clone();
            let relabelled = relabel(&col, copies, self.df.column(factor)?)?;
            frame.with_column(relabelled)?;
        }
        Ok(Table { df: frame })
    }

    fn take_frame(&self, indices: &[usize]) -> PolarsResult<polars::prelude::DataFrame> {
        let rows: Vec<IdxSize> = indices.iter().map(|&r| r as IdxSize).collect();
        self.df.take(&IdxCa::from_vec("idx".into(), rows))
    }
}

/// A unit's value, for ordering units (the plain types a table is built from).
fn unit_value(v: &AnyValue<'_>) -> Option<Value> {
    match v {
        AnyValue::Int64(x) => Some(Value::Int(*x)),
        AnyValue::Int32(x) => Some(Value::Int(*x as i64)),
        AnyValue::Float64(x) => Some(Value::Float(*x)),
        AnyValue::String(s) => Some(Value::Str(s.to_string())),
        AnyValue::StringOwned(s) => Some(Value::Str(s.to_string())),
        AnyValue::Boolean(b) => Some(Value::Bool(*b)),
        _ => None,
    }
}

/// Give the second and later copies of a unit values of the factor that
/// occur nowhere in the original column.
fn relabel(col: &Column, copies: &[usize], original: &Column) -> PolarsResult<Column> {
    let name = col.name().clone();
    let values: Vec<AnyValue<'_>> = (0..col.len()).map(|i| col.get(i)).collect::<Result<_, _>>()?;
    if values.iter().all(|v| matches!(v, AnyValue::Int64(_) | AnyValue::Null)) {
        let max = (0..original.len())
            .filter_map(|i| match original.get(i) {
                Ok(AnyValue::Int64(x)) => Some(x),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let ints: Vec<Option<i64>> = values
            .iter()
            .zip(copies)
            .map(|(v, &c)| match v {
                AnyValue::Int64(x) if c == 0 => Some(*x),
                AnyValue::Int64(_) => Some(max + c as i64),
                _ => None,
            })
            .collect();
        return Ok(Column::new(name, ints));
    }
    let strs: Vec<Option<String>> = values
        .iter()
        .zip(copies)
        .map(|(v, &c)| match unit_value(v) {
            None => None,
            Some(Value::Str(s)) if c == 0 => Some(s),
            Some(other) if c == 0 => Some(other.to_string()),
            Some(other) => Some(format!("{other}#{c}")),
        })
        .collect();
    Ok(Column::new(name, strs))
}
