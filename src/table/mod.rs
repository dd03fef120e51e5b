//! The tidy results table: one row per cell, factor columns then metric columns.
//!
//! Experiments produce [`Row`]s of plain [`Value`]s; this module turns them
//! into a [`Table`] for criteria (sandboxed SQL), CSV and Parquet, and gives
//! the bootstrap its unit grouping and resampling. It is the only module
//! that names polars: a `Table` keeps its polars `DataFrame` private.

mod frame;
pub mod sandbox;
mod units;

pub use frame::{QueryError, Table, TableError, query, query_scalar};

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One value of a factor or a metric.
///
/// Untagged so that TOML and JSON read naturally (`seed = [0, 1]`,
/// `arm = ["full"]`); integers stay integers so seeds hash exactly. JSON has
/// no NaN: serde_json writes a non-finite float as `null`, so `null` reads
/// back as a NaN float (a metric that was not measured).
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, an integer, a float or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v).map(Value::Int).map_err(|_| E::custom(format!("{v} does not fit in an i64")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Float(f64::NAN))
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Float(f64::NAN))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Value {
    /// The column type this value belongs to.
    pub fn column_type(&self) -> ColumnType {
        match self {
            Value::Bool(_) => ColumnType::Bool,
            Value::Int(_) => ColumnType::Int,
            Value::Float(_) => ColumnType::Float,
            Value::Str(_) => ColumnType::Str,
        }
    }

    /// Integer view (floats are not truncated: they give `None`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Numeric view: integers widen to floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// String view.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as i64)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

/// The type of a table column, declared by experiments for their metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Bool,
    Int,
    Float,
    Str,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Bool => "bool",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Str => "string",
        })
    }
}

/// One row of the tidy table, keyed by column name (ordered, so it hashes
/// and serialises deterministically).
pub type Row = BTreeMap<String, Value>;

/// A column of the table with its type, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json_and_toml_and_nan_survives_as_null() {
        let row: Row = Row::from([
            ("a".to_string(), Value::Int(3)),
            ("b".to_string(), Value::Float(0.5)),
            ("c".to_string(), Value::Str("x".into())),
            ("d".to_string(), Value::Bool(true)),
            ("e".to_string(), Value::Float(f64::NAN)),
        ]);
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(json, r#"{"a":3,"b":0.5,"c":"x","d":true,"e":null}"#);
        let back: Row = serde_json::from_str(&json).unwrap();
        assert_eq!(back["a"], Value::Int(3));
        assert!(matches!(back["e"], Value::Float(x) if x.is_nan()));
        assert_eq!(serde_json::to_string(&back).unwrap(), json, "the cache digest is stable");
        let t: BTreeMap<String, Vec<Value>> = toml::from_str("seed = [0, 1]\narm = [\"full\"]\nlr = [5e-5]").unwrap();
        assert_eq!(t["seed"], vec![Value::Int(0), Value::Int(1)]);
        assert_eq!(t["lr"], vec![Value::Float(5e-5)]);
    }

    fn small() -> Table {
        let cols = [
            Column { name: "seed".into(), kind: ColumnType::Int },
            Column { name: "arm".into(), kind: ColumnType::Str },
            Column { name: "x".into(), kind: ColumnType::Float },
            Column { name: "ok".into(), kind: ColumnType::Bool },
        ];
        let rows: Vec<Row> = [(1, "a", 0.5), (0, "b", 1.5), (1, "b", 2.0)]
            .iter()
            .map(|(seed, arm, x)| {
                Row::from([
                    ("seed".to_string(), Value::Int(*seed)),
                    ("arm".to_string(), Value::from(*arm)),
                    ("x".to_string(), Value::Float(*x)),
                    ("ok".to_string(), Value::Bool(*seed == 1)),
                ])
            })
            .collect();
        Table::from_rows(&cols, &rows).unwrap()
    }

    #[test]
    fn a_table_keeps_its_declared_columns_and_gives_its_rows_back() {
        let cols = [
            Column { name: "seed".into(), kind: ColumnType::Int },
            Column { name: "ppl".into(), kind: ColumnType::Float },
        ];
        let rows = vec![Row::from([("seed".to_string(), Value::Int(3))])];
        let t = Table::from_rows(&cols, &rows).unwrap();
        assert_eq!((t.height(), t.width()), (1, 2));
        assert_eq!(t.column_names(), vec!["seed", "ppl"]);
        assert_eq!(t.columns(), cols);
        assert_eq!(t.rows(), rows, "the missing metric is a null, left out of the row");
        assert_eq!(t.to_csv().unwrap(), b"seed,ppl\n3,\n");
    }

    #[test]
    fn csv_and_parquet_bytes_are_deterministic_and_parquet_reads_back() {
        let t = small();
        assert_eq!(
            String::from_utf8(t.to_csv().unwrap()).unwrap(),
            "seed,arm,x,ok\n1,a,0.5,true\n0,b,1.5,false\n1,b,2.0,true\n"
        );
        let bytes = t.to_parquet().unwrap();
        assert_eq!(bytes, small().to_parquet().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        std::fs::write(&path, &bytes).unwrap();
        let back = Table::read_parquet(&path).unwrap();
        assert_eq!(back.rows(), t.rows());
        assert_eq!(back.columns(), t.columns());
        assert!(Table::read_parquet(&dir.path().join("none.parquet")).is_err());
    }

    #[test]
    fn queries_are_sandboxed_and_a_scalar_needs_one_row_and_one_column() {
        let t = small();
        let cells = [("cells", &t)];
        assert_eq!(query_scalar(&cells, "SELECT SUM(x) FROM cells WHERE ok").unwrap(), Some(Value::Float(2.5)));
        assert_eq!(query_scalar(&cells, "SELECT MAX(x) FROM cells WHERE arm = 'c'").unwrap(), None);
        let err = query_scalar(&cells, "SELECT seed, x FROM cells").unwrap_err();
        assert_eq!(err.to_string(), "expected one row and one column, got 3 row(s) x 2 column(s)");
        assert!(matches!(query(&cells, "SELECT * FROM read_csv('x.csv')"), Err(QueryError::Refused(_))));
        let counted = query(&cells, "SELECT arm, COUNT(*) AS n FROM cells GROUP BY arm ORDER BY arm").unwrap();
        assert_eq!(counted.columns()[1].kind, ColumnType::Int, "any integer width reads as Int");
        assert_eq!(counted.rows()[1]["n"], Value::Int(2));
    }

    #[test]
    fn units_group_rows_by_the_factor_in_ascending_order() {
        let t = small();
        assert_eq!(t.units_by("seed"), Some(vec![vec![1], vec![0, 2]]));
        assert_eq!(t.units_by("arm"), Some(vec![vec![0], vec![1, 2]]));
        assert_eq!(t.units_by("slice"), None);
    }

    #[test]
    fn later_copies_of_a_unit_get_factor_values_found_nowhere_in_the_table() {
        let t = small();
        let taken = t.take(&[2, 2, 0]).unwrap();
        let seeds: Vec<Value> = taken.rows().iter().map(|r| r["seed"].clone()).collect();
        assert_eq!(seeds, vec![Value::Int(1), Value::Int(1), Value::Int(1)]);
        // Unit seed=1 (rows 0, 2) drawn twice: the second copy is seed 1 + 1.
        let drawn = t.take_relabelled(&[0, 2, 0, 2], "seed", &[0, 0, 1, 1]).unwrap();
        let seeds: Vec<Value> = drawn.rows().iter().map(|r| r["seed"].clone()).collect();
        assert_eq!(seeds, vec![Value::Int(1), Value::Int(1), Value::Int(2), Value::Int(2)]);
        let drawn = t.take_relabelled(&[1, 2, 1], "arm", &[0, 0, 1]).unwrap();
        let arms: Vec<Value> = drawn.rows().iter().map(|r| r["arm"].clone()).collect();
        assert_eq!(arms, vec![Value::from("b"), Value::from("b"), Value::from("b#1")]);
        let plain = t.take_relabelled(&[1, 0], "seed", &[0, 0]).unwrap();
        assert_eq!(plain.rows(), t.take(&[1, 0]).unwrap().rows(), "no later copy: a plain take");
    }
}
