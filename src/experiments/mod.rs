//! Experiment kinds: each turns one cell of a bet's grid into engine or
//! simulation calls and returns one row of the tidy table.
//!
//! An experiment *declares* its factors, parameters and metrics, so that a
//! spec naming an unknown metric or factor is rejected by `bets check`, long
//! before any compute. Adding a kind means one module here and one line in
//! [`all`].

pub mod adapters;
pub mod gossip_directory;
mod overrides;
pub mod royalty_math;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use crate::table::{ColumnType, Row, Value};

/// A metric column an experiment emits for every cell.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: ColumnType,
    /// What it measures, with its unit; shown by `bets list` and the docs.
    pub doc: &'static str,
}

/// A grid factor an experiment understands.
#[derive(Debug, Clone, Copy)]
pub struct Factor {
    pub name: &'static str,
    pub kind: ColumnType,
    /// A spec's grid must list this factor.
    pub required: bool,
    /// Allowed values for string factors; empty means any.
    pub allowed: &'static [&'static str],
    pub doc: &'static str,
}

/// Where an experiment may keep what it builds, and how hard it may work.
#[derive(Clone)]
pub struct Env {
    /// Root of the local cache (data, base models); never inside results/.
    pub cache_dir: PathBuf,
    /// The run's profile: `tiny`, `small` or `paper`.
    pub profile: String,
    /// Threads the engine may use inside one cell.
    pub threads: usize,
    /// Where long preparation (pre-training) reports progress.
    pub progress: std::sync::Arc<dyn crate::services::Progress>,
}

/// One point of the replication grid, as an experiment sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Position in the plan (stable for a given spec and profile).
    pub index: usize,
    /// Factor name -> value, e.g. `seed = 3`, `arm = "norm-only"`.
    pub factors: BTreeMap<String, Value>,
    /// Content hash of everything that determines this cell's result; also
    /// the root of every RNG seed the cell uses.
    pub key: String,
}

impl Cell {
    /// The integer factor `name` (e.g. `seed`), or an error naming the cell.
    pub fn int(&self, name: &str) -> anyhow::Result<i64> {
        self.factors
            .get(name)
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow::anyhow!("cell {} has no integer factor `{name}`", self.index))
    }

    /// The string factor `name` (e.g. `arm`), or an error naming the cell.
    pub fn str(&self, name: &str) -> anyhow::Result<&str> {
        self.factors
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("cell {} has no string factor `{name}`", self.index))
    }

    /// The `seed` factor as an RNG seed.
    pub fn seed(&self) -> anyhow::Result<u64> {
        Ok(self.int("seed")? as u64)
    }
}

/// Seeds derived from a key and a purpose (kept in [`crate::seed`]).
pub use crate::seed::derive_seed;

/// An experiment kind, registered in [`all`].
pub trait Experiment: Send + Sync {
    /// The name a spec uses in `procedure.experiment`.
    fn kind(&self) -> &'static str;
    /// Bumped whenever the same inputs would give different rows; part of
    /// every cell key, so old cached cells are not reused across versions.
    fn version(&self) -> u32;
    /// One line for `bets list` and the spec reference.
    fn summary(&self) -> &'static str;
    /// The grid factors it understands.
    fn factors(&self) -> &'static [Factor];
    /// The metric columns it emits.
    fn metrics(&self) -> &'static [Metric];
    /// Check the procedure parameters (everything in `[procedure]` except
    /// `experiment`); the error names the offending key.
    fn check_params(&self, params: &toml::Table) -> Result<(), String>;
    /// Build what every cell shares (data, a base model) once per run.
    fn prepare(&self, params: &toml::Table, env: &Env) -> anyhow::Result<Box<dyn Prepared>>;
}

/// An experiment made ready to run cells.
pub trait Prepared: Send + Sync {
    /// Name -> SHA-256 of every input the cells depend on (corpus splits,
    /// base model); recorded in the manifest and hashed into cell keys.
    fn inputs(&self) -> BTreeMap<String, String>;
    /// Run one cell and return its metrics (factor columns are added by the
    /// runner). Must be deterministic given the cell and the thread count.
    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row>;
}

/// Deserialize procedure parameters into a typed struct (which should use
/// `#[serde(deny_unknown_fields)]`), turning the error into a one-line hint.
pub fn parse_params<T: DeserializeOwned>(params: &toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(params.clone())).map_err(|e| e.to_string().trim().to_string())
}

/// Every experiment kind the harness knows.
pub fn all() -> Vec<&'static dyn Experiment> {
    vec![
        &adapters::AdapterTrainEval,
        &adapters::AdapterAverage,
        &adapters::AdapterMixture,
        &gossip_directory::GossipDirectory,
        &royalty_math::RoyaltyMath,
    ]
}

/// Look an experiment kind up by name.
pub fn find(kind: &str) -> Option<&'static dyn Experiment> {
    all().into_iter().find(|e| e.kind() == kind)
}
