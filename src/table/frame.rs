//! polars glue: the opaque [`Table`] over a `DataFrame`, sandboxed SQL,
//! CSV and Parquet bytes.

use std::path::Path;

use polars::prelude::*;
use polars::sql::SQLContext;

use super::{Column as TableColumn, ColumnType, Row, Value};

/// The tidy table: named, typed columns and their rows.
///
/// Opaque on purpose: polars stays behind this module, so the rest of the
/// crate sees rows, [`Value`]s and [`ColumnType`]s only.
#[derive(Debug, Clone)]
pub struct Table {
    pub(super) df: DataFrame,
}

/// An operation on a table failed (columns that do not fit, an unreadable
/// file, bytes that are not a table). The message is polars' own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{0}")]
    Engine(String),
}

impl From<PolarsError> for TableError {
    fn from(e: PolarsError) -> Self {
        TableError::Engine(e.to_string())
    }
}

/// A SQL query over the table failed or did not give one scalar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query engine rejected or failed the query.
    #[error("{0}")]
    Engine(String),
    #[error("expected one row and one column, got {rows} row(s) x {cols} column(s)")]
    Shape { rows: usize, cols: usize },
    /// A criterion's expression gave something other than a boolean.
    #[error("`{0}` is not a boolean expression")]
    NotBoolean(String),
    /// The SQL left the sandbox (see [`super::sandbox`]); the engine never saw it.
    #[error("{0}")]
    Refused(#[from] super::sandbox::Refusal),
    /// Building a table to query failed.
    #[error(transparent)]
    Table(#[from] TableError),
}

impl From<PolarsError> for QueryError {
    fn from(e: PolarsError) -> Self {
        QueryError::Engine(e.to_string())
    }
}

impl Table {
    /// A table with exactly `columns`, in order; a row missing a column
    /// gives a null there (failed cells have no metrics).
    pub fn from_rows(columns: &[TableColumn], rows: &[Row]) -> Result<Table, TableError> {
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
                    ColumnType::Int => Column::new(
                        name,
                        rows.iter().map(|r| r.get(&c.name).and_then(Value::as_i64)).collect::<Vec<_>>(),
                    ),
                    ColumnType::Float => Column::new(
                        name,
                        rows.iter().map(|r| r.get(&c.name).and_then(Value::as_f64)).collect::<Vec<_>>(),
                    ),
                    ColumnType::Str => Column::new(
                        name,
                        rows.iter().map(|r| r.get(&c.name).map(|v| v.to_string())).collect::<Vec<Option<String>>>(),
                    ),
                }
            })
            .collect();
        Ok(Table { df: DataFrame::new(rows.len(), cols)? })
    }

    /// The rows (e.g. of a table read from Parquet); nulls are left out of
    /// the row, and values of any other column type read back as strings.
    pub fn rows(&self) -> Vec<Row> {
        let names = self.column_names();
        let mut rows = Vec::with_capacity(self.df.height());
        for i in 0..self.df.height() {
            let values = self.df.get(i).unwrap_or_default();
            let mut row = Row::new();
            for (name, v) in names.iter().zip(values) {
                if let Some(v) = any_to_value(&v) {
                    row.insert(name.clone(), v);
                }
            }
            rows.push(row);
        }
        rows
    }

    /// Number of rows.
    pub fn height(&self) -> usize {
        self.df.height()
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.df.width()
    }

    /// Column names, in table order.
    pub fn column_names(&self) -> Vec<String> {
        self.df.get_column_names().iter().map(|s| s.to_string()).collect()
    }

    /// Columns with the type their values read back as (see [`Table::rows`]):
    /// any integer width is `Int`, any float width `Float`, anything that is
    /// neither nor a boolean `Str`.
    pub fn columns(&self) -> Vec<TableColumn> {
        self.df
            .columns()
            .iter()
            .map(|c| {
                let dt = c.dtype();
                let kind = if dt.is_bool() {
                    ColumnType::Bool
                } else if dt.is_integer() {
                    ColumnType::Int
                } else if dt.is_float() {
                    ColumnType::Float
                } else {
                    ColumnType::Str
                };
                TableColumn { name: c.name().to_string(), kind }
            })
            .collect()
    }

    /// The single value of a one-row, one-column table (`None` for SQL
    /// NULL, e.g. the median of no rows).
    pub fn scalar(&self) -> Result<Option<Value>, QueryError> {
        if self.df.height() != 1 || self.df.width() != 1 {
            return Err(QueryError::Shape { rows: self.df.height(), cols: self.df.width() });
        }
        let v = self.df.get(0).unwrap_or_default().into_iter().next().unwrap_or(AnyValue::Null);
        Ok(any_to_value(&v))
    }

    /// CSV bytes (header, comma-separated, `\n` line ends).
    pub fn to_csv(&self) -> Result<Vec<u8>, TableError> {
        let mut buf = Vec::new();
        let mut df = self.df.clone();
        CsvWriter::new(&mut buf).include_header(true).finish(&mut df)?;
        Ok(buf)
    }

    /// Parquet bytes (deterministic: no timestamps in the footer).
    pub fn to_parquet(&self) -> Result<Vec<u8>, TableError> {
        let mut buf = Vec::new();
        let mut df = self.df.clone();
        ParquetWriter::new(&mut buf).finish(&mut df)?;
        Ok(buf)
    }

    /// Read a Parquet file written from [`Table::to_parquet`]'s bytes.
    pub fn read_parquet(path: &Path) -> Result<Table, TableError> {
        let read = || -> PolarsResult<DataFrame> {
            let f = std::fs::File::open(path)?;
            ParquetReader::new(f).finish()
        };
        Ok(Table { df: read()? })
    }
}

pub(super) fn any_to_value(v: &AnyValue<'_>) -> Option<Value> {
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
pub fn query_scalar(tables: &[(&str, &Table)], sql: &str) -> Result<Option<Value>, QueryError> {
    query(tables, sql)?.scalar()
}

/// Run `sql` over the given named tables and collect the result. The SQL
/// is checked by the sandbox first: it may read only these tables.
pub fn query(tables: &[(&str, &Table)], sql: &str) -> Result<Table, QueryError> {
    let bounds: Vec<(&str, u64)> = tables.iter().map(|(n, t)| (*n, t.df.height() as u64)).collect();
    super::sandbox::check_query(sql, &bounds)?;
    let mut ctx = SQLContext::new();
    for (name, t) in tables {
        ctx.register(name, t.df.clone().lazy());
    }
    Ok(Table { df: ctx.execute(sql)?.collect()? })
}
