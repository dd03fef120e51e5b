//! Bet specifications: parse the TOML, validate it against the experiment's
//! declarations (every problem at once), and plan the replication grid.
//!
//! Nothing raw passes beyond this module: the rest of the harness sees a
//! validated [`Bet`] and the [`Plan`] of one profile.

mod raw;
mod schema;
mod validate;

pub use raw::{Claim, Control, Criteria, PROFILES, PlotKind, PlotSpec, Procedure, ProfileOverride, Section, SpecFile};
pub use schema::json_schema;
pub use validate::{CATALOGUE_NUMBERS, STUDY_NUMBERS, load, parse};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::kinds::{Experiment, Parameters};
use crate::table::{Column, ColumnType, Value};

/// The profile `bets run` uses when none is given.
pub const DEFAULT_PROFILE: &str = "small";

/// One thing wrong with a spec, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path, e.g. `criteria.strict` or `grid.arm` (empty for the file).
    pub key: String,
    pub message: String,
    /// What would be accepted instead.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in one or more specs (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<Problem>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// A validated bet: its file, its parsed spec, its experiment kind and its
/// typed parameters under every profile (parsed once, at validation).
#[derive(Clone)]
pub struct Bet {
    pub path: PathBuf,
    pub spec: SpecFile,
    pub experiment: &'static dyn Experiment,
    /// Profile name -> parameters after that profile's overrides.
    pub params: BTreeMap<String, Parameters>,
}

impl fmt::Debug for Bet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bet").field("path", &self.path).field("number", &self.spec.number).finish()
    }
}

/// The grid and parameters of one profile, expanded into cell points.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub profile: String,
    /// Procedure parameters after the profile's overrides, typed and canonical.
    pub params: Parameters,
    /// Grid after the profile's overrides.
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Every combination of factor values, in a fixed order (factors sorted
    /// by name, values in the order listed, last factor fastest).
    pub points: Vec<BTreeMap<String, Value>>,
}

impl Bet {
    /// `NN-slug`, the name of the bet's results folder.
    pub fn id(&self) -> String {
        format!("{:02}-{}", self.spec.number, self.spec.slug)
    }

    /// The registered part of the spec as canonical JSON (sorted keys):
    /// everything that decides what runs and how it is judged. Title,
    /// section, plots and notes are presentation and may change freely.
    pub fn canonical(&self) -> serde_json::Value {
        let s = &self.spec;
        let mut canonical = serde_json::json!({
            "number": s.number,
            "slug": s.slug,
            "hypothesis": s.hypothesis,
            "claim": s.claim,
            "depends_on": s.depends_on,
            "tests_headline_of": s.tests_headline_of,
            "procedure": s.procedure,
            "grid": s.grid,
            "controls": s.controls,
            "profiles": s.profiles,
            "quantities": s.quantities,
            "criteria": s.criteria,
        });
        // Only where a bet declares them, so the hashes of earlier
        // registrations stay what they were.
        if !s.measured.is_empty() {
            canonical["measured"] = serde_json::json!(s.measured);
        }
        canonical
    }

    /// SHA-256 of [`Bet::canonical`]: the spec hash the ledger registers.
    pub fn hash(&self) -> String {
        crate::fsutil::sha256_hex(self.canonical().to_string().as_bytes())
    }

    /// Expand the grid and parameters of `profile`.
    pub fn plan(&self, profile: &str) -> Result<Plan, SpecErrors> {
        let Some(params) = self.params.get(profile).cloned() else {
            return Err(SpecErrors(vec![Problem {
                file: self.path.clone(),
                key: String::new(),
                message: format!("unknown profile `{profile}`"),
                hint: Some(format!("one of {}", PROFILES.join(", "))),
            }]));
        };
        let over = self.spec.profiles.get(profile).cloned().unwrap_or_default();
        let mut grid = self.spec.grid.clone();
        for (k, v) in over.grid {
            grid.insert(k, v);
        }
        Ok(Plan { profile: profile.to_string(), points: expand(&grid), params, grid })
    }

    /// The registered criteria, as the criteria module takes them.
    pub fn criteria_set(&self) -> crate::criteria::CriteriaSet<'_> {
        let c = &self.spec.criteria;
        crate::criteria::CriteriaSet {
            quantities: &self.spec.quantities,
            strict: &c.strict,
            lenient: c.lenient.as_deref(),
            catastrophic: c.catastrophic.as_deref(),
        }
    }

    /// Columns of the tidy table, in order: `cell`, the factors (sorted),
    /// `status`, `error`, then the experiment's metrics as declared.
    pub fn columns(&self) -> Vec<Column> {
        table_columns(self.experiment, self.spec.grid.keys().map(String::as_str))
    }
}

/// The tidy-table columns for an experiment and a set of factor names.
pub fn table_columns<'a>(experiment: &dyn Experiment, factors: impl Iterator<Item = &'a str>) -> Vec<Column> {
    let mut cols = vec![Column { name: "cell".into(), kind: ColumnType::Int }];
    for name in factors {
        let kind = experiment.factors().iter().find(|f| f.name == name).map(|f| f.kind).unwrap_or(ColumnType::Str);
        cols.push(Column { name: name.to_string(), kind });
    }
    cols.push(Column { name: "status".into(), kind: ColumnType::Str });
    cols.push(Column { name: "error".into(), kind: ColumnType::Str });
    for m in experiment.metrics() {
        cols.push(Column { name: m.name.to_string(), kind: m.kind });
    }
    cols
}

/// Cartesian product of the grid, last factor varying fastest.
fn expand(grid: &BTreeMap<String, Vec<Value>>) -> Vec<BTreeMap<String, Value>> {
    let mut points = vec![BTreeMap::new()];
    for (name, values) in grid {
        let mut next = Vec::with_capacity(points.len() * values.len());
        for p in &points {
            for v in values {
                let mut q = p.clone();
                q.insert(name.clone(), v.clone());
                next.push(q);
            }
        }
        points = next;
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
number = 46
slug = "norm-replication"
title = "T"
section = "per-user-adapters"
hypothesis = "H"
claim = "personalisation"

[procedure]
experiment = "adapter-train-eval"
steps = 100

[grid]
seed = [0, 1]
arm = ["norm-only", "full"]
user = ["programmer"]
slice = ["A", "B"]

[profiles.tiny]
grid = { seed = [7] }
procedure = { steps = 3 }

[controls]
noise = { bet = 60 }

[quantities]
n = "SELECT COUNT(*) FROM cells"

[criteria]
strict = "n > 0"
"#;

    fn bet(text: &str) -> Bet {
        parse(std::path::Path::new("bets/46_norm_replication.toml"), text).unwrap()
    }

    #[test]
    fn measured_quantities_are_registered_and_must_be_quantities() {
        let base = bet(SPEC).hash();
        let with = |m: &str| SPEC.replace("[procedure]", &format!("measured = {m}\n\n[procedure]"));
        // An empty list is the default: the registered hash of older bets stays.
        assert_eq!(bet(&with("[]")).hash(), base);
        let measured = bet(&with(r#"["n"]"#));
        assert_eq!(measured.spec.measured, ["n"]);
        assert_ne!(measured.hash(), base, "declaring a quantity measured is part of the registration");
        let path = std::path::Path::new("bets/46_norm_replication.toml");
        let err = parse(path, &with(r#"["n", "wall", "n"]"#)).unwrap_err().to_string();
        assert!(err.contains("measured[1]") && err.contains("no quantity `wall`"), "{err}");
        assert!(err.contains("measured[2]") && err.contains("`n` is named twice"), "{err}");
    }

    #[test]
    fn the_grid_expands_in_sorted_factor_order_with_the_last_factor_fastest() {
        let plan = bet(SPEC).plan("small").unwrap();
        assert_eq!(plan.points.len(), 8);
        let key = |p: &BTreeMap<String, Value>| format!("{}/{}/{}", p["arm"], p["seed"], p["slice"]);
        let order: Vec<String> = plan.points.iter().map(key).collect();
        assert_eq!(order[..3], ["norm-only/0/A".to_string(), "norm-only/0/B".into(), "norm-only/1/A".into()]);
        assert_eq!(order[7], "full/1/B");
    }

    #[test]
    fn a_profile_overrides_grid_factors_and_parameters() {
        let plan = bet(SPEC).plan("tiny").unwrap();
        assert_eq!(plan.grid["seed"], vec![Value::Int(7)]);
        assert_eq!(plan.params.canonical()["steps"], 3);
        assert_eq!(bet(SPEC).plan("small").unwrap().params.canonical()["steps"], 100);
        assert_eq!(plan.points.len(), 4);
        assert!(bet(SPEC).plan("huge").is_err());
    }

    #[test]
    fn presentation_fields_do_not_change_the_registered_hash_but_criteria_do() {
        let base = bet(SPEC).hash();
        assert_eq!(bet(&SPEC.replace("title = \"T\"", "title = \"Other\"")).hash(), base);
        assert_ne!(bet(&SPEC.replace("n > 0", "n > 1")).hash(), base);
        assert_ne!(bet(&SPEC.replace("steps = 100", "steps = 101")).hash(), base);
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn the_file_name_must_match_number_and_slug() {
        let e = parse(std::path::Path::new("bets/47_x.toml"), SPEC).unwrap_err();
        assert!(e.to_string().contains("rename it to `46_norm_replication.toml`"), "{e}");
    }

    #[test]
    fn numbers_101_and_up_are_replication_study_bets_and_only_those() {
        let study = SPEC.replace("number = 46", "number = 101").replace("per-user-adapters", "replication");
        let path = std::path::Path::new("bets/101_norm_replication.toml");
        assert_eq!(parse(path, &study).unwrap().id(), "101-norm-replication");
        let problem = |path: &str, text: &str| {
            let SpecErrors(p) = parse(std::path::Path::new(path), text).unwrap_err();
            (p[0].key.clone(), p[0].message.clone(), p[0].hint.clone().unwrap_or_default())
        };
        let (key, message, hint) =
            problem("bets/101_norm_replication.toml", &study.replace("replication\"", "federated\""));
        assert_eq!((key.as_str(), message.as_str()), ("number", "101 is out of range"));
        assert!(hint.contains("101 and up are for section `replication`"), "{hint}");
        let (key, message, _) =
            problem("bets/46_norm_replication.toml", &SPEC.replace("per-user-adapters", "replication"));
        assert_eq!((key.as_str(), message.as_str()), ("number", "46 is out of range for section `replication`"));
        let (_, message, _) = problem("bets/1000_norm_replication.toml", &study.replace("101", "1000"));
        assert_eq!(message, "1000 is out of range for section `replication`");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = SPEC
            .replace("arm = [\"norm-only\", \"full\"]", "arm = [\"norm-only\", \"half\"]")
            .replace("n > 0", "m > 0");
        let SpecErrors(problems) = parse(std::path::Path::new("bets/46_norm_replication.toml"), &text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["grid.arm[1]", "criteria.strict"], "{problems:?}");
    }
}
