//! Criteria over the results table -> a [`VerdictRecord`] (pure).
//!
//! Quantities are SQL queries over the table `cells`, each giving one
//! scalar; criteria are SQL boolean expressions over a one-row table `q` of
//! those quantities. The verdict is decided mechanically in the registered
//! order: CATASTROPHIC if its criterion holds, else STRICT, else LENIENT,
//! else FAIL; INCONCLUSIVE when a planned cell is missing or failed, or a
//! criterion cannot be decided (a quantity is NULL).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::table::{self, Column, ColumnType, QueryError, Row, Table, TableError, Value};

/// The outcome of a bet's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Catastrophic,
    Fail,
    Inconclusive,
    Lenient,
    Strict,
}

impl Verdict {
    /// Parse `strict`, `lenient`, ... (any case) as given to `--expect`.
    pub fn parse(s: &str) -> Option<Verdict> {
        Some(match s.to_ascii_lowercase().as_str() {
            "strict" => Verdict::Strict,
            "lenient" => Verdict::Lenient,
            "fail" => Verdict::Fail,
            "catastrophic" => Verdict::Catastrophic,
            "inconclusive" => Verdict::Inconclusive,
            _ => return None,
        })
    }

    /// Whether this verdict meets an expectation: STRICT meets LENIENT, and
    /// anything meets FAIL except CATASTROPHIC and INCONCLUSIVE.
    pub fn meets(self, expected: Verdict) -> bool {
        match expected {
            Verdict::Strict => self == Verdict::Strict,
            Verdict::Lenient => matches!(self, Verdict::Strict | Verdict::Lenient),
            Verdict::Fail => matches!(self, Verdict::Strict | Verdict::Lenient | Verdict::Fail),
            Verdict::Inconclusive | Verdict::Catastrophic => self == expected,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Strict => "STRICT",
            Verdict::Lenient => "LENIENT",
            Verdict::Fail => "FAIL",
            Verdict::Catastrophic => "CATASTROPHIC",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// A named quantity, its SQL, and the value it took (or why it has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantityValue {
    pub sql: String,
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One registered criterion and how it came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionOutcome {
    /// `catastrophic`, `strict` or `lenient`.
    pub level: String,
    pub expression: String,
    /// `None` when it could not be decided (a NULL quantity, an error).
    pub holds: Option<bool>,
    /// The quantities the expression names, with their values.
    pub uses: BTreeMap<String, Option<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Planned / finished / failed cell counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCounts {
    pub planned: usize,
    pub ok: usize,
    pub failed: usize,
}

impl CellCounts {
    /// Planned cells with no row at all (e.g. another shard's).
    pub fn missing(&self) -> usize {
        self.planned.saturating_sub(self.ok + self.failed)
    }
}

/// The verdict and every number it was decided on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    pub cells: CellCounts,
    pub quantities: BTreeMap<String, QuantityValue>,
    /// In decision order: catastrophic, strict, lenient.
    pub criteria: Vec<CriterionOutcome>,
}

/// The criteria of a bet, as registered.
#[derive(Debug, Clone)]
pub struct CriteriaSet<'a> {
    pub quantities: &'a BTreeMap<String, String>,
    pub strict: &'a str,
    pub lenient: Option<&'a str>,
    pub catastrophic: Option<&'a str>,
}

/// Decide the verdict of a results table (`cells`, with a `status` column
/// whose value is `ok` for finished cells). Quantities see only `ok` rows.
pub fn decide(set: &CriteriaSet<'_>, cells: &Table, counts: CellCounts) -> VerdictRecord {
    let ok_rows = match table::query(&[("all_cells", cells)], "SELECT * FROM all_cells WHERE status = 'ok'") {
        Ok(t) => t,
        Err(_) => cells.clone(),
    };
    let mut quantities = BTreeMap::new();
    for (name, sql) in set.quantities {
        let (value, error) = match table::query_scalar(&[("cells", &ok_rows)], sql) {
            Ok(v) => (v, None),
            Err(e) => (None, Some(e.to_string())),
        };
        quantities.insert(name.clone(), QuantityValue { sql: sql.clone(), value, error });
    }
    let qframe = quantity_frame(&quantities);
    let mut criteria = Vec::new();
    for (level, expr) in [("catastrophic", set.catastrophic), ("strict", Some(set.strict)), ("lenient", set.lenient)] {
        let Some(expr) = expr else { continue };
        let uses = quantities
            .iter()
            .filter(|(name, _)| mentions(expr, name))
            .map(|(name, q)| (name.clone(), q.value.clone()))
            .collect();
        let (holds, error) = match &qframe {
            Ok(q) => match evaluate_expression(q, expr) {
                Ok(h) => (h, None),
                Err(e) => (None, Some(e.to_string())),
            },
            Err(e) => (None, Some(e.to_string())),
        };
        criteria.push(CriterionOutcome { level: level.into(), expression: expr.into(), holds, uses, error });
    }
    let (verdict, reason) = judge(&criteria, counts);
    VerdictRecord { verdict, reason, cells: counts, quantities, criteria }
}

/// The decision rule itself, separated so it can be tested exhaustively.
fn judge(criteria: &[CriterionOutcome], counts: CellCounts) -> (Verdict, String) {
    if counts.failed > 0 || counts.missing() > 0 {
        return (
            Verdict::Inconclusive,
            format!("{} of {} planned cells missing or failed", counts.failed + counts.missing(), counts.planned),
        );
    }
    let get = |level: &str| criteria.iter().find(|c| c.level == level);
    for c in criteria {
        if c.holds.is_none() {
            let why = c.error.clone().unwrap_or_else(|| "a quantity it names is NULL".into());
            return (Verdict::Inconclusive, format!("the {} criterion could not be decided: {why}", c.level));
        }
    }
    if get("catastrophic").and_then(|c| c.holds) == Some(true) {
        return (Verdict::Catastrophic, "the catastrophic criterion holds".into());
    }
    if get("strict").and_then(|c| c.holds) == Some(true) {
        return (Verdict::Strict, "the strict criterion holds".into());
    }
    if get("lenient").and_then(|c| c.holds) == Some(true) {
        return (Verdict::Lenient, "the lenient criterion holds; the strict one does not".into());
    }
    (Verdict::Fail, "no criterion holds".into())
}

/// Evaluate one boolean SQL expression over a one-row quantities table.
/// `Ok(None)` means SQL NULL (undecidable).
pub fn evaluate_expression(quantities: &Table, expr: &str) -> Result<Option<bool>, QueryError> {
    let sql = format!("SELECT ({expr}) AS holds FROM q");
    let result = table::query(&[("q", quantities)], &sql)?;
    let value = result.scalar()?;
    if result.columns()[0].kind != ColumnType::Bool {
        return Err(QueryError::NotBoolean(expr.to_string()));
    }
    match value {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(QueryError::NotBoolean(expr.to_string())),
    }
}

fn quantity_frame(q: &BTreeMap<String, QuantityValue>) -> Result<Table, TableError> {
    let mut row = Row::new();
    let mut cols = Vec::new();
    for (name, v) in q {
        let kind = v.value.as_ref().map(Value::column_type).unwrap_or(ColumnType::Float);
        cols.push(Column { name: name.clone(), kind });
        if let Some(val) = &v.value {
            row.insert(name.clone(), val.clone());
        }
    }
    Table::from_rows(&cols, &[row])
}

/// Whether `name` occurs in `expr` as a whole identifier.
fn mentions(expr: &str, name: &str) -> bool {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == name)
}

#[cfg(test)]
mod tests;
