//! Factor and metric declarations, each made from one Rust type so that the
//! columns a kind declares and the rows it emits cannot disagree.
//!
//! - Metrics: the [`metrics!`](crate::metrics) macro declares a struct and,
//!   from the same field list, its columns (name, type, doc) and its row.
//! - Factors: a kind's `Factors` struct derives `Deserialize + JsonSchema`;
//!   the declarations (type, required, allowed values, doc) are read from
//!   its JSON Schema and each cell's factor values are deserialized into it.

use schemars::JsonSchema;
use serde_json::Value as Json;

use crate::table::{ColumnType, Row, Value};

/// A metric column an experiment emits for every cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: ColumnType,
    /// What it measures, with its unit; shown by `bets list` and the docs.
    pub doc: &'static str,
}

/// A grid factor an experiment understands.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub name: String,
    pub kind: ColumnType,
    /// A spec's grid must list this factor.
    pub required: bool,
    /// Allowed values for string factors; empty means any.
    pub allowed: Vec<String>,
    pub doc: String,
}

/// A type a metric field may have, and how it becomes a table value.
pub trait MetricValue {
    const KIND: ColumnType;
    fn into_value(self) -> Value;
}

macro_rules! metric_ints {
    ($($t:ty),*) => {$(
        impl MetricValue for $t {
            const KIND: ColumnType = ColumnType::Int;
            fn into_value(self) -> Value {
                Value::from(self)
            }
        }
    )*};
}
metric_ints!(i64, u64, usize);

impl MetricValue for f64 {
    const KIND: ColumnType = ColumnType::Float;
    fn into_value(self) -> Value {
        Value::Float(self)
    }
}

impl MetricValue for bool {
    const KIND: ColumnType = ColumnType::Bool;
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl MetricValue for String {
    const KIND: ColumnType = ColumnType::Str;
    fn into_value(self) -> Value {
        Value::Str(self)
    }
}

/// A kind's metrics: its columns and one cell's row, from one declaration.
pub trait Metrics {
    /// The columns, in declaration order.
    fn columns() -> Vec<Metric>;
    /// This cell's values, one per column.
    fn into_row(self) -> Row;
}

/// Declare a kind's metrics struct: every field is a column, its doc
/// comment the column's doc, its type the column's type.
///
/// ```ignore
/// bets::metrics! {
///     /// What one cell measures.
///     pub struct GossipMetrics {
///         /// Rounds until the directory was full (rounds).
///         pub rounds_to_full: u64,
///     }
/// }
/// ```
#[macro_export]
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])+ $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])+ $fvis $field: $ty ),*
        }

        impl $crate::kinds::Metrics for $name {
            fn columns() -> Vec<$crate::kinds::Metric> {
                vec![$(
                    $crate::kinds::Metric {
                        name: stringify!($field),
                        kind: <$ty as $crate::kinds::MetricValue>::KIND,
                        doc: concat!($($doc),+).trim_ascii(),
                    }
                ),*]
            }

            fn into_row(self) -> $crate::table::Row {
                let mut row = $crate::table::Row::new();
                $( row.insert(
                    stringify!($field).to_string(),
                    $crate::kinds::MetricValue::into_value(self.$field),
                ); )*
                row
            }
        }
    };
}

/// The factor declarations of a `Factors` type, read from its JSON Schema:
/// a property is a factor; `required` lists the factors a grid must have;
/// an `enum` of strings lists the allowed values; the doc comment is the doc.
pub fn factors_of<F: JsonSchema>() -> Vec<Factor> {
    let schema = inline_schema::<F>();
    let root = schema.as_value();
    let required: Vec<&str> =
        root.get("required").and_then(Json::as_array).into_iter().flatten().filter_map(Json::as_str).collect();
    let Some(props) = root.get("properties").and_then(Json::as_object) else { return Vec::new() };
    props
        .iter()
        .map(|(name, p)| Factor {
            name: name.clone(),
            kind: json_kind(p),
            required: required.contains(&name.as_str()),
            allowed: string_enum(p),
            doc: p.get("description").and_then(Json::as_str).unwrap_or_default().to_string(),
        })
        .collect()
}

/// The JSON Schema of `T` with every subschema inlined (no `$defs`), so it
/// can be read field by field and embedded in another schema as it stands.
pub fn inline_schema<T: JsonSchema>() -> schemars::Schema {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    settings.into_generator().into_root_schema_for::<T>()
}

/// The column type of a JSON Schema (nullable types and `anyOf` with null
/// reduce to the non-null part).
fn json_kind(p: &Json) -> ColumnType {
    let types: Vec<&str> = match p.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ => {
            let subs = p.get("anyOf").or_else(|| p.get("oneOf")).and_then(Json::as_array);
            if let Some(sub) = subs.into_iter().flatten().find(|s| s.get("type").and_then(Json::as_str) != Some("null"))
            {
                return json_kind(sub);
            }
            if p.get("enum").is_some() || p.get("const").is_some() {
                return ColumnType::Str;
            }
            Vec::new()
        }
    };
    match types.into_iter().find(|t| *t != "null") {
        Some("integer") => ColumnType::Int,
        Some("number") => ColumnType::Float,
        Some("boolean") => ColumnType::Bool,
        _ => ColumnType::Str,
    }
}

/// The allowed string values of an enum schema (unit variants are an
/// `enum`, or a `oneOf` of `const`s when documented), else empty.
fn string_enum(p: &Json) -> Vec<String> {
    if let Some(values) = p.get("enum").and_then(Json::as_array) {
        return values.iter().filter_map(Json::as_str).map(str::to_string).collect();
    }
    if let Some(c) = p.get("const").and_then(Json::as_str) {
        return vec![c.to_string()];
    }
    let subs = p.get("anyOf").or_else(|| p.get("oneOf")).and_then(Json::as_array);
    subs.into_iter().flatten().flat_map(string_enum).collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    crate::metrics! {
        /// Test metrics.
        struct Example {
            /// Rounds it took
            /// (rounds).
            rounds: u64,
            /// Whether it held.
            held: bool,
            /// A ratio.
            share: f64,
        }
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Push,
        PushPull,
    }

    /// Factors.
    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct ExampleFactors {
        /// The seed.
        seed: u64,
        /// Overrides the loss.
        loss: Option<f64>,
        /// How it gossips.
        mode: Option<Mode>,
        /// Who.
        user: String,
    }

    #[test]
    fn one_declaration_gives_the_columns_and_the_row() {
        let cols = Example::columns();
        let names: Vec<_> = cols.iter().map(|m| (m.name, m.kind)).collect();
        assert_eq!(names, [("rounds", ColumnType::Int), ("held", ColumnType::Bool), ("share", ColumnType::Float)]);
        assert_eq!(cols[0].doc, "Rounds it took (rounds).");
        let row = Example { rounds: 3, held: true, share: f64::NAN }.into_row();
        assert_eq!(row["rounds"], Value::Int(3));
        assert_eq!(row["held"], Value::Bool(true));
        assert!(matches!(row["share"], Value::Float(f) if f.is_nan()));
        assert_eq!(row.len(), 3);
    }

    #[test]
    fn factor_declarations_come_from_the_schema() {
        let fs = factors_of::<ExampleFactors>();
        let by = |n: &str| fs.iter().find(|f| f.name == n).unwrap().clone();
        assert_eq!(fs.len(), 4);
        assert_eq!(
            (by("seed").kind, by("seed").required, by("seed").doc.as_str()),
            (ColumnType::Int, true, "The seed.")
        );
        assert_eq!((by("loss").kind, by("loss").required), (ColumnType::Float, false));
        assert_eq!(by("mode").kind, ColumnType::Str);
        assert_eq!(by("mode").allowed, ["push", "push-pull"]);
        assert!(!by("mode").required);
        assert_eq!((by("user").kind, by("user").required, by("user").allowed.len()), (ColumnType::Str, true, 0));
    }
}
