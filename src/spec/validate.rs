//! Validation: raw TOML -> [`Bet`], collecting every problem with its key path.
//!
//! Structural problems (syntax, unknown keys, wrong types) come first; when
//! the structure is sound, every semantic check runs and all findings are
//! returned together. Quantities and criteria are checked by planning their
//! SQL against an empty table with the experiment's declared columns, so a
//! criterion naming an unknown metric fails here, not after compute.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::raw::{PROFILES, Section, SpecFile, TOP_LEVEL_KEYS};
use super::{Bet, Claim, Problem, SpecErrors, table_columns};
use crate::kinds::{self, Experiment, Parameters};
use crate::table::{self, Column, ColumnType, Row, Value, sandbox};

/// Numbers of the SharedLLM catalogue's bets.
pub const CATALOGUE_NUMBERS: std::ops::RangeInclusive<u32> = 1..=99;

/// Numbers of our own replication-study bets (section `replication`), kept
/// apart so they never collide with a catalogue number.
pub const STUDY_NUMBERS: std::ops::RangeInclusive<u32> = 101..=999;

/// Read and validate a spec file.
pub fn load(path: &Path) -> Result<Bet, SpecErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors(vec![Problem {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read the spec: {e}"),
            hint: None,
        }])
    })?;
    parse(path, &text)
}

/// Validate spec text that came from `path` (the path is used in messages
/// and for the file-name check).
pub fn parse(path: &Path, text: &str) -> Result<Bet, SpecErrors> {
    let mut c = Checker { file: path.to_path_buf(), problems: Vec::new() };
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            c.push("", format!("malformed TOML: {}", e.message()), Some(locate(text, e.span())));
            return Err(SpecErrors(c.problems));
        }
    };
    for key in table.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            c.push(key, "unknown key".into(), Some(format!("top-level keys are: {}", TOP_LEVEL_KEYS.join(", "))));
        }
    }
    if !c.problems.is_empty() {
        return Err(SpecErrors(c.problems));
    }
    let spec: SpecFile = match toml::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            c.push(&key_at(text, e.span()), e.message().to_string(), Some(locate(text, e.span())));
            return Err(SpecErrors(c.problems));
        }
    };
    let checked = c.check(&spec);
    match checked {
        Some((experiment, params)) if c.problems.is_empty() => {
            Ok(Bet { path: path.to_path_buf(), spec, experiment, params })
        }
        _ => Err(SpecErrors(c.problems)),
    }
}

struct Checker {
    file: PathBuf,
    problems: Vec<Problem>,
}

impl Checker {
    fn push(&mut self, key: &str, message: String, hint: Option<String>) {
        self.problems.push(Problem { file: self.file.clone(), key: key.to_string(), message, hint });
    }

    /// Run every semantic check; returns the experiment when it is known,
    /// with its parameters under every profile.
    fn check(&mut self, s: &SpecFile) -> Option<(&'static dyn Experiment, BTreeMap<String, Parameters>)> {
        self.check_identity(s);
        if matches!(s.claim, Claim::Personalisation) && s.controls.is_empty() {
            self.push(
                "controls",
                "a personalisation claim must declare a negative control".into(),
                Some("e.g. [controls] noise-floor = { bet = 60 }".into()),
            );
        }
        for (i, n) in s.depends_on.iter().chain(&s.tests_headline_of).enumerate() {
            if *n == s.number {
                self.push(&format!("depends_on[{i}]"), "a bet cannot depend on itself".into(), None);
            }
        }
        let Some(exp) = kinds::find(&s.procedure.experiment) else {
            let known: Vec<_> = kinds::all().iter().map(|e| e.kind()).collect();
            self.push(
                "procedure.experiment",
                format!("unknown experiment kind `{}`", s.procedure.experiment),
                Some(format!("known kinds: {}", known.join(", "))),
            );
            return None;
        };
        let base_ok = self.check_params("procedure", exp, &s.procedure.params).is_some();
        self.check_grid("grid", exp, &s.grid, true);
        for (name, over) in &s.profiles {
            if !PROFILES.contains(&name.as_str()) {
                self.push(
                    &format!("profiles.{name}"),
                    "unknown profile".into(),
                    Some(format!("one of {}", PROFILES.join(", "))),
                );
                continue;
            }
            for f in over.grid.keys() {
                if !s.grid.contains_key(f) {
                    self.push(
                        &format!("profiles.{name}.grid.{f}"),
                        "a profile may only override factors of the top-level grid".into(),
                        Some(format!("grid factors: {}", s.grid.keys().cloned().collect::<Vec<_>>().join(", "))),
                    );
                }
            }
            self.check_grid(&format!("profiles.{name}.grid"), exp, &over.grid, false);
        }
        let mut params = BTreeMap::new();
        for profile in PROFILES {
            let mut raw = s.procedure.params.clone();
            let over = s.profiles.get(*profile).map(|o| &o.procedure).filter(|o| !o.is_empty());
            let parsed = match over {
                // Without overrides a profile's parameters are the base's.
                None if !base_ok => None,
                None => exp.parse_params(&raw).ok(),
                Some(over) => {
                    raw.extend(over.clone());
                    self.check_params(&format!("profiles.{profile}.procedure"), exp, &raw)
                }
            };
            if let Some(p) = parsed {
                params.insert(profile.to_string(), p);
            }
        }
        let columns = table_columns(exp, s.grid.keys().map(String::as_str));
        self.check_plots(s, &columns);
        self.check_quantities_and_criteria(s, &columns);
        Some((exp, params))
    }

    /// Parse parameters; a problem is filed under `at` plus its key path,
    /// once even if a profile's overrides inherit it from the base.
    fn check_params(&mut self, at: &str, exp: &dyn Experiment, raw: &toml::Table) -> Option<Parameters> {
        match exp.parse_params(raw) {
            Ok(p) => Some(p),
            Err(e) => {
                let key = if e.key.is_empty() { at.to_string() } else { format!("{at}.{}", e.key) };
                let inherited = self.problems.iter().any(|p| {
                    p.message == e.message
                        && p.key.strip_prefix("procedure") == key.split_once(".procedure").map(|(_, k)| k)
                });
                if !inherited {
                    self.push(&key, e.message, None);
                }
                None
            }
        }
    }

    fn check_identity(&mut self, s: &SpecFile) {
        let study = s.section == Section::Replication;
        if study && !STUDY_NUMBERS.contains(&s.number) {
            self.push(
                "number",
                format!("{} is out of range for section `replication`", s.number),
                Some("a study number 101..=999".into()),
            );
        } else if !study && !CATALOGUE_NUMBERS.contains(&s.number) {
            let hint = if STUDY_NUMBERS.contains(&s.number) {
                "a catalogue number 1..=99 (101 and up are for section `replication`)"
            } else {
                "a catalogue number 1..=99"
            };
            self.push("number", format!("{} is out of range", s.number), Some(hint.into()));
        }
        let kebab = !s.slug.is_empty()
            && s.slug.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            && !s.slug.starts_with('-')
            && !s.slug.ends_with('-');
        if !kebab {
            self.push(
                "slug",
                format!("`{}` is not kebab-case", s.slug),
                Some("lower-case letters, digits and -".into()),
            );
        }
        let expected = format!("{:02}_{}.toml", s.number, s.slug.replace('-', "_"));
        let actual = self.file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if kebab && actual != expected {
            self.push(
                "",
                format!("file name `{actual}` does not match number and slug"),
                Some(format!("rename it to `{expected}`")),
            );
        }
        for (key, text) in [("title", &s.title), ("hypothesis", &s.hypothesis)] {
            if text.trim().is_empty() {
                self.push(key, "must not be empty".into(), None);
            }
        }
    }

    fn check_grid(&mut self, at: &str, exp: &dyn Experiment, grid: &BTreeMap<String, Vec<Value>>, full: bool) {
        if full {
            for f in exp.factors().iter().filter(|f| f.required) {
                if !grid.contains_key(&f.name) {
                    self.push(&format!("{at}.{}", f.name), "required factor is missing".into(), Some(f.doc.clone()));
                }
            }
        }
        for (name, values) in grid {
            let key = format!("{at}.{name}");
            let Some(decl) = exp.factors().iter().find(|f| &f.name == name) else {
                let names: Vec<_> = exp.factors().iter().map(|f| f.name.as_str()).collect();
                self.push(
                    &key,
                    format!("experiment `{}` has no factor `{name}`", exp.kind()),
                    Some(format!("its factors: {}", names.join(", "))),
                );
                continue;
            };
            if values.is_empty() {
                self.push(&key, "lists no values".into(), None);
            }
            for (i, v) in values.iter().enumerate() {
                let ok = v.column_type() == decl.kind
                    || (decl.kind == ColumnType::Float && v.column_type() == ColumnType::Int);
                if !ok {
                    self.push(
                        &format!("{key}[{i}]"),
                        format!("`{v}` is a {}, expected a {}", v.column_type(), decl.kind),
                        None,
                    );
                } else if let Value::Str(s) = v
                    && !decl.allowed.is_empty()
                    && !decl.allowed.contains(s)
                {
                    self.push(
                        &format!("{key}[{i}]"),
                        format!("`{s}` is not allowed"),
                        Some(format!("one of {}", decl.allowed.join(", "))),
                    );
                }
                if values[..i].contains(v) {
                    self.push(&format!("{key}[{i}]"), format!("`{v}` is listed twice"), None);
                }
            }
        }
    }

    fn check_plots(&mut self, s: &SpecFile, columns: &[Column]) {
        let has = |n: &str| columns.iter().any(|c| c.name == n);
        for (i, p) in s.plots.iter().enumerate() {
            let needs_series = matches!(p.kind, super::PlotKind::Heatmap | super::PlotKind::WinGrid);
            if needs_series && p.series.is_none() {
                self.push(
                    &format!("plots[{i}].series"),
                    "a heatmap or win-grid needs `series` (its rows)".into(),
                    None,
                );
            }
            if p.kind == super::PlotKind::WinGrid && (p.by.is_none() || p.arms.len() != 2) {
                self.push(
                    &format!("plots[{i}]"),
                    "a win-grid needs `by` (the arm factor) and two `arms`".into(),
                    Some("e.g. by = \"arm\", arms = [\"norm-only\", \"full\"]".into()),
                );
            }
            if let Some(r) = p.reference {
                if p.kind != super::PlotKind::Points {
                    self.push(
                        &format!("plots[{i}].reference"),
                        "a reference line belongs to a `points` plot".into(),
                        None,
                    );
                } else if !r.is_finite() || (p.log_y && r <= 0.0) {
                    self.push(
                        &format!("plots[{i}].reference"),
                        format!("{r} cannot be drawn on this axis"),
                        Some(if p.log_y { "a positive number on a log axis" } else { "a finite number" }.into()),
                    );
                }
            } else if p.reference_label.is_some() {
                self.push(&format!("plots[{i}].reference_label"), "a label needs `reference`".into(), None);
            }
            for (k, name) in
                [("x", Some(&p.x)), ("y", Some(&p.y)), ("series", p.series.as_ref()), ("by", p.by.as_ref())]
            {
                if let Some(name) = name
                    && !has(name)
                {
                    self.push(&format!("plots[{i}].{k}"), format!("no column `{name}`"), Some(column_hint(columns)));
                }
            }
        }
    }

    fn check_quantities_and_criteria(&mut self, s: &SpecFile, columns: &[Column]) {
        let empty = match table::Table::from_rows(columns, &[]) {
            Ok(df) => df,
            Err(e) => {
                self.push("grid", format!("cannot build the results table: {e}"), None);
                return;
            }
        };
        let mut qrow = Row::new();
        let mut qcols = Vec::new();
        let cells = largest_grid(s);
        for (name, sql) in &s.quantities {
            let key = format!("quantities.{name}");
            if !is_identifier(name) {
                self.push(
                    &key,
                    "a quantity name must be a lower-case SQL identifier".into(),
                    Some("letters, digits, _".into()),
                );
                continue;
            }
            if columns.iter().any(|c| &c.name == name) {
                self.push(&key, format!("`{name}` is already a column of the table"), Some("pick another name".into()));
            }
            if let Err(r) = sandbox::check_query(sql, &[("cells", cells)]) {
                self.push(
                    &key,
                    format!("the SQL leaves the sandbox: {r}"),
                    Some(format!("a quantity is one SELECT over the table `cells` ({cells} rows at most)")),
                );
                continue;
            }
            match table::query(&[("cells", &empty)], sql) {
                Err(e) => self.push(
                    &key,
                    format!("the SQL does not plan over the results table: {e}"),
                    Some(column_hint(columns)),
                ),
                Ok(df) if df.width() != 1 => {
                    self.push(&key, format!("must select one column, selects {}", df.width()), None)
                }
                Ok(_) => {
                    qcols.push(Column { name: name.clone(), kind: ColumnType::Float });
                    qrow.insert(name.clone(), Value::Float(0.0));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, name) in s.measured.iter().enumerate() {
            let key = format!("measured[{i}]");
            if !s.quantities.contains_key(name) {
                let names: Vec<_> = s.quantities.keys().cloned().collect();
                self.push(&key, format!("no quantity `{name}`"), Some(format!("quantities: {}", names.join(", "))));
            } else if !seen.insert(name) {
                self.push(&key, format!("`{name}` is named twice"), None);
            }
        }
        let qframe = match table::Table::from_rows(&qcols, &[qrow]) {
            Ok(df) => df,
            Err(_) => return,
        };
        let c = &s.criteria;
        for (level, expr) in
            [("strict", Some(&c.strict)), ("lenient", c.lenient.as_ref()), ("catastrophic", c.catastrophic.as_ref())]
        {
            let Some(expr) = expr else { continue };
            let key = format!("criteria.{level}");
            let names: Vec<_> = s.quantities.keys().cloned().collect();
            if let Err(r) = sandbox::check_criterion(expr, &names) {
                self.push(
                    &key,
                    format!("refused: {r}"),
                    Some(format!("criteria name quantities: {}", names.join(", "))),
                );
                continue;
            }
            match crate::criteria::evaluate_expression(&qframe, expr) {
                Ok(_) => {}
                Err(e) => {
                    self.push(&key, e.to_string(), Some(format!("criteria name quantities: {}", names.join(", "))))
                }
            }
        }
    }
}

/// The most cells any profile plans (the row bound the SQL sandbox uses).
fn largest_grid(s: &SpecFile) -> u64 {
    let size = |grid: &BTreeMap<String, Vec<Value>>| grid.values().fold(1u64, |p, v| p.saturating_mul(v.len() as u64));
    let mut best = size(&s.grid);
    for over in s.profiles.values() {
        let mut grid = s.grid.clone();
        grid.extend(over.grid.clone());
        best = best.max(size(&grid));
    }
    best
}

fn column_hint(columns: &[Column]) -> String {
    let names: Vec<_> = columns.iter().map(|c| format!("{} ({})", c.name, c.kind)).collect();
    format!("table `cells` has columns: {}", names.join(", "))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// "line L, column C: <that line>" for a byte span of the text.
fn locate(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return "check the file's syntax".into() };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    format!("line {line}, column {col}: {}", line_text.trim())
}

/// The dotted key path of the table that contains a byte offset, plus the
/// key on that line, as far as a line scan can tell (for type errors).
fn key_at(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let mut table = String::new();
    let mut key = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if offset <= start && start < offset + line.len() {
            if let Some((k, _)) = t.split_once('=')
                && !t.starts_with('[')
            {
                key = k.trim().to_string();
            }
            break;
        }
        offset += line.len();
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}
