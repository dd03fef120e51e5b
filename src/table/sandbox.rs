//! The SQL sandbox: spec SQL may read only the tables the harness registers.
//!
//! A bet is untrusted input, and polars SQL can read files (`read_csv`,
//! `read_parquet`, ...), create tables and run statements other than
//! queries. Every query is therefore parsed with polars' own parser (the
//! same sqlparser version and dialect) and checked on its syntax tree
//! against an allow-list before polars sees it: one `SELECT` statement
//! (CTEs, joins, subqueries, set operations allowed), relations that are
//! registered tables or the query's own CTEs, and an allow-list of scalar,
//! aggregate and window functions. Its cost is bounded too: the rows a
//! `FROM` clause can produce (the product of its relations' row bounds, a
//! worst case that ignores join predicates) must stay under
//! [`MAX_INTERMEDIATE_ROWS`], so a spec cannot hang a CI run with a cross
//! join.
//!
//! Refusals quote only the spec's own SQL, never data.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, LimitClause, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor,
    UnaryOperator, Value as SqlValue, Visit, Visitor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

/// The most rows any `FROM` clause of a query may produce in the worst case
/// (every relation's bound multiplied, as for a cross join).
pub const MAX_INTERMEDIATE_ROWS: u64 = 4_000_000;

/// Functions a query may call: arithmetic, comparison helpers, a few
/// bounded string functions, aggregates and window functions. Nothing that
/// reads files, builds large values from small inputs or works on arrays.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // maths
    "abs",
    "cbrt",
    "ceil",
    "ceiling",
    "div",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log1p",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "round",
    "trunc",
    "truncate",
    "sign",
    "sqrt",
    "cos",
    "sin",
    "tan",
    "acos",
    "asin",
    "atan",
    "atan2",
    "degrees",
    "radians", // conditionals
    "coalesce",
    "greatest",
    "if",
    "ifnull",
    "least",
    "nullif", // strings (bounded by their inputs)
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "starts_with",
    "ends_with",
    "strpos",
    "substr", // aggregates
    "avg",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "covar",
    "first",
    "last",
    "max",
    "median",
    "min",
    "quantile_cont",
    "quantile_disc",
    "stdev",
    "stddev",
    "stdev_samp",
    "stddev_samp",
    "sum",
    "total",
    "var",
    "variance",
    "var_samp", // window functions
    "rank",
    "dense_rank",
    "row_number",
    "first_value",
    "last_value",
    "lag",
    "lead",
];

/// Why a query was refused: the construct, in the spec's own words, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{construct} is not allowed: {why}")]
pub struct Refusal {
    /// The offending construct (`table function read_csv`, `statement DROP TABLE ...`).
    pub construct: String,
    pub why: String,
}

fn refuse(construct: impl Into<String>, why: impl Into<String>) -> Refusal {
    Refusal { construct: construct.into(), why: why.into() }
}

/// Parse `sql` and check that it is one sandboxed query over `tables`
/// (registered name -> its row count, or a bound on it).
pub fn check_query(sql: &str, tables: &[(&str, u64)]) -> Result<(), Refusal> {
    let statements =
        Parser::parse_sql(&GenericDialect, sql).map_err(|e| refuse("SQL that does not parse", format!("{e}")))?;
    let [statement] = statements.as_slice() else {
        return Err(refuse(format!("{} statements", statements.len()), "a quantity is exactly one SELECT query"));
    };
    let Statement::Query(query) = statement else {
        return Err(refuse(format!("statement `{}`", clip(&statement.to_string())), "only a SELECT query may run"));
    };
    let mut rows: BTreeMap<String, u64> = tables.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    let registered: Vec<String> = tables.iter().map(|(n, _)| n.to_string()).collect();
    // First the CTEs and derived tables, in order, so every name has a bound...
    query_rows(query, &mut rows);
    // ...then every node of the tree against the allow-list and the bound.
    let mut v = Sandbox { rows: &rows, registered: &registered, refusal: None };
    let _ = statement.visit(&mut v);
    match v.refusal {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

/// Check a criterion: one boolean SQL expression over the quantity table
/// `q`, in which every boolean operand names a quantity. A criterion whose
/// operand names none (`1 = 1`, `wins >= 12 OR TRUE`) or compares an
/// expression with itself is constant there: it could never fail, or never
/// hold, whatever the run measures.
pub fn check_criterion(expr: &str, quantities: &[String]) -> Result<(), Refusal> {
    let mut parser = Parser::new(&GenericDialect)
        .try_with_sql(expr)
        .map_err(|e| refuse("SQL that does not parse", format!("{e}")))?;
    let parsed = parser.parse_expr().map_err(|e| refuse("SQL that does not parse", format!("{e}")))?;
    if parser.peek_token().token != Token::EOF {
        return Err(refuse(
            format!("text after the expression `{}`", clip(&parsed.to_string())),
            "a criterion is one SQL boolean expression",
        ));
    }
    check_query(&format!("SELECT ({expr}) AS holds FROM q"), &[("q", 1)])?;
    let mut leaves = Vec::new();
    boolean_leaves(&parsed, &mut leaves);
    for leaf in leaves {
        let names = identifiers(leaf);
        if !names.iter().any(|n| quantities.contains(n)) {
            return Err(refuse(
                format!("the constant operand `{}`", clip(&leaf.to_string())),
                format!(
                    "it names no quantity, so the criterion cannot both fail and hold; name one of: {}",
                    quantities.join(", ")
                ),
            ));
        }
        if let Expr::BinaryOp { left, op, right } = leaf
            && is_comparison(op)
            && left.to_string() == right.to_string()
        {
            return Err(refuse(
                format!("the comparison `{}`", clip(&leaf.to_string())),
                "it compares an expression with itself, so its outcome is fixed",
            ));
        }
    }
    Ok(())
}

/// The operands of AND / OR / NOT (through parentheses): where a constant
/// makes a criterion unfalsifiable.
fn boolean_leaves<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor, right } => {
            boolean_leaves(left, out);
            boolean_leaves(right, out);
        }
        Expr::UnaryOp { op: UnaryOperator::Not, expr } | Expr::Nested(expr) => boolean_leaves(expr, out),
        other => out.push(other),
    }
}

fn is_comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
            | BinaryOperator::Spaceship
    )
}

/// Column names an expression mentions (the last part of compound names).
fn identifiers(e: &Expr) -> Vec<String> {
    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Identifier(i) => self.0.push(i.value.clone()),
                Expr::CompoundIdentifier(parts) => self.0.extend(parts.last().map(|i| i.value.clone())),
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut n = Names(Vec::new());
    let _ = e.visit(&mut n);
    n.0
}

/// The allow-list walk over every node of the statement.
struct Sandbox<'a> {
    rows: &'a BTreeMap<String, u64>,
    registered: &'a [String],
    refusal: Option<Refusal>,
}

impl Sandbox<'_> {
    fn stop(&mut self, r: Refusal) -> ControlFlow<()> {
        self.refusal = Some(r);
        ControlFlow::Break(())
    }

    fn allowed_tables(&self) -> String {
        let names: Vec<String> = self.registered.iter().map(|n| format!("`{n}`")).collect();
        format!("a query may read only {} and its own WITH tables", names.join(", "))
    }
}

impl Visitor for Sandbox<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        match s {
            Statement::Query(_) => ControlFlow::Continue(()),
            other => {
                self.stop(refuse(format!("statement `{}`", clip(&other.to_string())), "only a SELECT query may run"))
            }
        }
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if q.with.as_ref().is_some_and(|w| w.recursive) {
            return self.stop(refuse("WITH RECURSIVE", "recursion has no bound on its cost"));
        }
        let extra = [
            (q.for_clause.is_some(), "a FOR clause"),
            (q.settings.is_some(), "SETTINGS"),
            (q.format_clause.is_some(), "a FORMAT clause"),
            (!q.pipe_operators.is_empty(), "pipe operators"),
            (!q.locks.is_empty(), "a locking clause"),
        ];
        if let Some((_, what)) = extra.iter().find(|(present, _)| *present) {
            return self.stop(refuse(*what, "only plain SELECT queries may run"));
        }
        match q.body.as_ref() {
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                self.stop(refuse(format!("`{}`", clip(&q.body.to_string())), "only a SELECT query may run"))
            }
            SetExpr::Table(t) => self.stop(refuse(format!("`{}`", clip(&t.to_string())), "write SELECT ... FROM")),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            return self.stop(refuse(format!("`{}`", clip(&into.to_string())), "a query may not create tables"));
        }
        if !s.lateral_views.is_empty() || !s.connect_by.is_empty() {
            return self.stop(refuse("LATERAL VIEW / CONNECT BY", "only plain SELECT queries may run"));
        }
        let bound = select_rows(s, self.rows);
        if bound > MAX_INTERMEDIATE_ROWS {
            let from: Vec<String> = s.from.iter().map(|f| f.to_string()).collect();
            return self.stop(refuse(
                format!("the FROM clause `{}`", clip(&from.join(", "))),
                format!(
                    "it can produce up to {bound} rows (the product of its tables' rows), over the limit of \
                     {MAX_INTERMEDIATE_ROWS}; aggregate in a WITH table first, or join fewer copies"
                ),
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table { args: Some(_), .. } => self.stop(refuse(
                format!("the table function `{}`", clip(&t.to_string())),
                format!("it reads outside the results; {}", self.allowed_tables()),
            )),
            TableFactor::Table {
                name,
                args: None,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample: None,
                index_hints,
                ..
            } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => match single_name(name) {
                Some(n) if self.rows.contains_key(&n) => ControlFlow::Continue(()),
                _ => {
                    let shown = name.to_string();
                    let what = if shown.contains('/') || shown.contains('.') || shown.contains('\\') {
                        format!("the file path or qualified name `{}` used as a table", clip(&shown))
                    } else {
                        format!("the unknown table `{}`", clip(&shown))
                    };
                    self.stop(refuse(what, self.allowed_tables()))
                }
            },
            TableFactor::Derived { lateral: false, sample: None, .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => self.stop(refuse(
                format!("the table construct `{}`", clip(&other.to_string())),
                format!("only tables, subqueries and joins may appear in FROM; {}", self.allowed_tables()),
            )),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            if !ALLOWED_FUNCTIONS.contains(&name.as_str()) {
                return self.stop(refuse(
                    format!("the function `{}`", clip(&f.name.to_string())),
                    "it is not on the allow-list of scalar, aggregate and window functions (see bets/README.md)",
                ));
            }
        }
        ControlFlow::Continue(())
    }
}

fn single_name(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i.value.clone()),
        _ => None,
    }
}

/// A bound on the rows a query returns, recording its CTEs' bounds in `rows`.
fn query_rows(q: &Query, rows: &mut BTreeMap<String, u64>) -> u64 {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            let r = query_rows(&cte.query, rows);
            let slot = rows.entry(cte.alias.name.value.clone()).or_insert(0);
            *slot = (*slot).max(r);
        }
    }
    let body = set_rows(&q.body, rows);
    let limit = match &q.limit_clause {
        Some(LimitClause::LimitOffset { limit: Some(l), .. })
        | Some(LimitClause::OffsetCommaLimit { limit: l, .. }) => literal_u64(l),
        _ => None,
    };
    limit.map_or(body, |l| l.min(body))
}

fn set_rows(s: &SetExpr, rows: &mut BTreeMap<String, u64>) -> u64 {
    match s {
        SetExpr::Select(sel) => {
            for t in relations(sel) {
                record_derived(t, rows);
            }
            select_rows(sel, rows)
        }
        SetExpr::Query(q) => query_rows(q, rows),
        SetExpr::SetOperation { left, right, .. } => set_rows(left, rows).saturating_add(set_rows(right, rows)),
        SetExpr::Values(v) => v.rows.len() as u64,
        _ => 0,
    }
}

/// Every relation a SELECT's FROM clause joins.
fn relations(s: &Select) -> impl Iterator<Item = &TableFactor> {
    s.from.iter().flat_map(|f| std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation)))
}

/// Record the bound of every derived table under `t` (keyed by its SQL),
/// so [`relation_rows`] can look it up.
fn record_derived(t: &TableFactor, rows: &mut BTreeMap<String, u64>) {
    match t {
        TableFactor::Derived { subquery, .. } => {
            let r = query_rows(subquery, rows);
            rows.insert(derived_key(subquery), r);
        }
        TableFactor::NestedJoin { table_with_joins: j, .. } => {
            for t in std::iter::once(&j.relation).chain(j.joins.iter().map(|j| &j.relation)) {
                record_derived(t, rows);
            }
        }
        _ => {}
    }
}

fn derived_key(q: &Query) -> String {
    format!("\0derived {q}")
}

/// A relation's row bound: a table's or CTE's rows, a derived table's
/// recorded bound, a nested join's product.
fn relation_rows(t: &TableFactor, rows: &BTreeMap<String, u64>) -> u64 {
    match t {
        TableFactor::Table { name, .. } => single_name(name).and_then(|n| rows.get(&n).copied()).unwrap_or(0),
        TableFactor::Derived { subquery, .. } => rows.get(&derived_key(subquery)).copied().unwrap_or(0),
        TableFactor::NestedJoin { table_with_joins: j, .. } => std::iter::once(&j.relation)
            .chain(j.joins.iter().map(|j| &j.relation))
            .fold(1u64, |p, t| p.saturating_mul(relation_rows(t, rows).max(1))),
        _ => 0,
    }
}

/// The worst-case rows of a SELECT's FROM clause: the product of its relations' bounds.
fn select_rows(s: &Select, rows: &BTreeMap<String, u64>) -> u64 {
    relations(s).fold(1u64, |p, t| p.saturating_mul(relation_rows(t, rows).max(1)))
}

fn literal_u64(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// At most 120 characters of SQL, on one line, for messages.
fn clip(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 120 {
        format!("{}...", one_line.chars().take(117).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELLS: &[(&str, u64)] = &[("cells", 30)];

    fn refused(sql: &str) -> Refusal {
        check_query(sql, CELLS).expect_err(sql)
    }

    #[test]
    fn the_catalogue_shapes_of_query_pass() {
        for sql in [
            "SELECT MEDIAN(gain) FROM cells",
            "SELECT AVG(CASE WHEN converged THEN 1.0 ELSE 0.0 END) FROM cells WHERE fanout = 3",
            "SELECT COUNT(*) FROM cells n JOIN cells f ON n.seed = f.seed WHERE n.arm = 'a' AND f.arm = 'b'",
            "WITH m AS (SELECT \"user\", arm, MEDIAN(ppl) AS p FROM cells GROUP BY \"user\", arm) \
             SELECT COUNT(*) FROM m n JOIN m l ON n.\"user\" = l.\"user\" JOIN m f ON n.\"user\" = f.\"user\"",
            "SELECT MAX(x) FROM (SELECT ppl AS x FROM cells) t",
            "SELECT COUNT(*) FROM cells WHERE ppl < (SELECT MEDIAN(ppl) FROM cells)",
            "SELECT 1",
        ] {
            check_query(sql, CELLS).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn table_functions_are_refused_by_name() {
        for f in ["read_csv", "read_parquet", "read_json", "read_ipc"] {
            let r = refused(&format!("SELECT * FROM {f}('/etc/hostname')"));
            assert!(r.construct.contains(f), "{r}");
            assert!(r.construct.starts_with("the table function"), "{r}");
        }
    }

    #[test]
    fn unknown_tables_and_paths_are_refused() {
        let r = refused("SELECT * FROM secrets");
        assert_eq!(r.construct, "the unknown table `secrets`");
        assert!(check_query("SELECT * FROM '/etc/passwd'", CELLS).is_err());
        let r = refused("SELECT * FROM \"/root/.config/bets/bets.key\"");
        assert!(r.construct.contains("file path"), "{r}");
        let r = refused("SELECT * FROM main.cells");
        assert!(r.construct.contains("qualified"), "{r}");
    }

    #[test]
    fn statements_other_than_one_query_are_refused() {
        for sql in [
            "CREATE TABLE t AS SELECT * FROM read_csv('x.csv')",
            "DROP TABLE cells",
            "SHOW TABLES",
            "EXPLAIN SELECT 1",
            "SELECT 1; SELECT 2",
            "SELECT * INTO t FROM cells",
        ] {
            let r = refused(sql);
            assert!(!r.construct.is_empty(), "{sql}");
        }
    }

    #[test]
    fn functions_off_the_allow_list_and_unnest_are_refused() {
        assert_eq!(refused("SELECT LPAD('x', 1000000000, 'y')").construct, "the function `LPAD`");
        assert!(refused("SELECT * FROM UNNEST([1, 2]) AS t(a)").construct.contains("UNNEST"));
        assert!(refused("WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r").construct.contains("RECURSIVE"));
    }

    #[test]
    fn a_join_that_could_blow_up_is_refused_and_one_that_cannot_passes() {
        let big = &[("cells", 1000)];
        check_query("SELECT COUNT(*) FROM cells a, cells b", big).unwrap();
        let r = check_query("SELECT COUNT(*) FROM cells a, cells b, cells c", big).unwrap_err();
        assert!(r.why.contains("1000000000 rows"), "{r}");
        // Aggregating first keeps a three-way join small.
        check_query(
            "WITH m AS (SELECT arm, MIN(ppl) AS p FROM cells GROUP BY arm LIMIT 10) \
             SELECT COUNT(*) FROM m a, m b, m c",
            big,
        )
        .unwrap();
        // The bound follows derived tables too.
        let r = check_query("SELECT COUNT(*) FROM (SELECT * FROM cells a, cells b) x, cells c", big).unwrap_err();
        assert!(r.why.contains("over the limit"), "{r}");
    }

    #[test]
    fn criteria_must_name_a_quantity_in_every_operand() {
        let q = vec!["wins".to_string(), "pairs".to_string()];
        check_criterion("wins >= 12 AND pairs = 15", &q).unwrap();
        check_criterion("NOT (wins < 5)", &q).unwrap();
        check_criterion("wins * 1.0 / pairs >= 0.8", &q).unwrap();
        assert!(check_criterion("1 = 1", &q).unwrap_err().construct.contains("`1 = 1`"));
        assert!(check_criterion("wins >= 12 OR TRUE", &q).unwrap_err().construct.contains("`true`"));
        assert!(check_criterion("wins = wins", &q).unwrap_err().why.contains("itself"));
        assert!(check_criterion("other > 3", &q).unwrap_err().why.contains("names no quantity"));
        assert!(check_criterion("wins > 1) AS holds FROM q; SELECT (1", &q).is_err());
        let r = check_criterion("wins > (SELECT MAX(x) FROM read_csv('/etc/hostname'))", &q).unwrap_err();
        assert!(r.construct.contains("read_csv"), "{r}");
    }
}
