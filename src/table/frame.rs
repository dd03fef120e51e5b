//! polars glue: rows <-> DataFrame, SQL scalars, CSV and Parquet export.

use std::path::Path;

use polars::prelude::*;
use polars::sql::SQLContext;

use super::{Column as TableColumn, ColumnType, Row, Value};

/// A SQL query over the table failed or did not give one scalar.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Polars(String),
    #[error("expected one row and one column, got {rows} row(s) x {cols} column(s)")]
    Shape { rows: usize, cols: usize },
    /// The SQL left the sandbox (see [`super::sandbox`]); polars never saw it.
    #[error("{0}")]
    Refused(#[from] super::sandbox::Refusal),
}

impl From<PolarsError> for QueryError {
    fn from(e: PolarsError) -> Self {
        QueryError::Polars(e.to_string())
    }
}

/// Build a DataFrame with exactly `columns`, in order; a row missing a
/// column gives a null there (failed cells have no metrics).
pub fn frame_from_rows(columns: &[TableColumn], rows: &[Row]) -> PolarsResult<DataFrame> {
    let cols: Vec<Column> = columns
        .iter()
        .map(|c| {
            let name = PlSmallStr::from(c.name.as_str());
            match c.kind {
                ColumnType::Bool => Column::new(
                    name,
                    rows.iter()
                        .map(|r| r.get(&c.name).and_then(|v| if let Value::Bool(b) = v { Some(*b) } else { None }))
                        .collect::<Vec<_>>(),
                ),
                ColumnType::Int => {
                    Column::new(name, rows.iter().map(|r| r.get(&c.name).and_then(Value::as_i64)).collect::<Vec<_>>())
                }
                ColumnType::Float => {
                    Column::new(name, rows.iter().map(|r| r.get(&c.name).and_then(Value::as_f64)).collect::<Vec<_>>())
                }
                ColumnType::Str => Column::new(
                    name,
                    rows.iter().map(|r| r.get(&c.name).map(|v| v.to_string())).collect::<Vec<Option<String>>>(),
                ),
            }
        })
        .collect();
    DataFrame::new(rows.len(), cols)
}

/// Rows back out of a DataFrame (e.g. one read from Parquet); nulls are
/// left out of the row.
pub fn rows_from_frame(df: &DataFrame) -> PolarsResult<Vec<Row>> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let mut rows = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let values = df.get(i).unwrap_or_default();
        let mut row = Row::new();
        for (name, v) in names.iter().zip(values) {
            if let Some(v) = any_to_value(&v) {
                row.insert(name.clone(), v);
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

fn any_to_value(v: &AnyValue<'_>) -> Option<Value> {
    Some(match v {
        AnyValue::Null => return None,
        AnyValue::Boolean(b) => Value::Bool(*b),
        AnyValue::String(s) => Value::Str(s.to_string()),
        AnyValue::StringOwned(s) => Value::Str(s.to_string()),
        AnyValue::Int8(x) => Value::Int(*x as i64),
        AnyValue::Int16(x) => Value::Int(*x as i64),
        AnyValue::Int32(x) => Value::Int(*x as i64),
        AnyValue::Int64(x) => Value::Int(*x),
        AnyValue::UInt8(x) => Value::Int(*x as i64),
        AnyValue::UInt16(x) => Value::Int(*x as i64),
        AnyValue::UInt32(x) => Value::Int(*x as i64),
        AnyValue::UInt64(x) => Value::Int(*x as i64),
        AnyValue::Float32(x) => Value::Float(*x as f64),
        AnyValue::Float64(x) => Value::Float(*x),
        other => Value::Str(other.to_string()),
    })
}

/// Run `sql` over the given named tables and return its single scalar
/// (`None` for SQL NULL, e.g. the median of no rows).
pub fn query_scalar(tables: &[(&str, &DataFrame)], sql: &str) -> Result<Option<Value>, QueryError> {
    let df = query(tables, sql)?;
    if df.height() != 1 || df.width() != 1 {
        return Err(QueryError::Shape { rows: df.height(), cols: df.width() });
    }
    let v = df.get(0).unwrap_or_default().into_iter().next().unwrap_or(AnyValue::Null);
    Ok(any_to_value(&v))
}

/// Run `sql` over the given named tables and collect the result. The SQL
/// is checked by the sandbox first: it may read only these tables.
pub fn query(tables: &[(&str, &DataFrame)], sql: &str) -> Result<DataFrame, QueryError> {
    let bounds: Vec<(&str, u64)> = tables.iter().map(|(n, df)| (*n, df.height() as u64)).collect();
    super::sandbox::check_query(sql, &bounds)?;
    let mut ctx = SQLContext::new();
    for (name, df) in tables {
        ctx.register(name, (*df).clone().lazy());
    }
    Ok(ctx.execute(sql)?.collect()?)
}

/// CSV bytes of a frame (header, comma-separated, `\n` line ends).
pub fn write_csv(df: &DataFrame) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    let mut df = df.clone();
    CsvWriter::new(&mut buf).include_header(true).finish(&mut df)?;
    Ok(buf)
}

/// Parquet bytes of a frame (deterministic: no timestamps in the footer).
pub fn write_parquet(df: &DataFrame) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    let mut df = df.clone();
    ParquetWriter::new(&mut buf).finish(&mut df)?;
    Ok(buf)
}

/// Read a Parquet file written by [`write_parquet`].
pub fn read_parquet(path: &Path) -> PolarsResult<DataFrame> {
    let f = std::fs::File::open(path)?;
    ParquetReader::new(f).finish()
}
