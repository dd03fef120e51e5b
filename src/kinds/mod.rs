//! Experiment kinds: each turns one cell of a bet's grid into engine or
//! simulation calls and returns one row of the tidy table.
//!
//! A kind is one type implementing [`Kind`]: its `Params` (a
//! `Deserialize + JsonSchema` struct, parsed and checked once, with key
//! paths in errors), its `Factors` (a `Deserialize + JsonSchema` struct a
//! cell's factor values are read into) and its `Metrics` (declared with
//! [`metrics!`](crate::metrics), which gives both the columns and the row).
//! Because every declaration is a type, `bets check` rejects a spec naming
//! an unknown parameter, factor or metric before any compute, `bets schema`
//! covers each kind's parameters, and a row cannot disagree with its
//! columns. Adding a kind means one module here and one line in
//! [`REGISTRY`].

pub mod adapters;
pub mod audit_log;
pub mod bandwidth_ledger;
pub mod bet_results;
mod columns;
pub mod federated;
pub mod gossip_directory;
mod memo;
mod params;
pub mod pipeline;
pub mod revocation_vote;
pub mod royalty_math;
pub mod royalty_scale;

pub use columns::{Factor, Metric, MetricValue, Metrics, factors_of};
pub use params::{ParamProblem, Parameters, parse_params};

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::services::{Paths, Progress};
use crate::table::{Row, Value};

/// Where an experiment may keep what it builds, and how hard it may work.
#[derive(Clone)]
pub struct Env {
    /// Where caches live (data, base models, adapters); never inside results/.
    pub paths: Paths,
    /// The run's profile: `tiny`, `small` or `paper`.
    pub profile: String,
    /// Threads the engine may use inside one cell.
    pub threads: usize,
    /// Where long preparation (pre-training) reports progress.
    pub progress: Arc<dyn Progress>,
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

/// Seeds derived from a key and a purpose (kept in [`crate::seed`]).
pub use crate::seed::derive_seed;

/// An experiment kind, declared by its types (see the module docs).
pub trait Kind: Send + Sync + 'static {
    /// The name a spec uses in `procedure.experiment`.
    const NAME: &'static str;
    /// Bumped whenever the same inputs would give different rows; part of
    /// every cell key, so old cached cells are not reused across versions.
    const VERSION: u32;
    /// One line for `bets list` and the spec reference.
    const SUMMARY: &'static str;
    /// `[procedure]` (without `experiment`): use `deny_unknown_fields` and
    /// defaults, so a typo is an error and the canonical form is complete.
    type Params: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;
    /// The grid factors; `Option` fields are optional factors.
    type Factors: DeserializeOwned + JsonSchema;
    /// The metric columns, declared with [`metrics!`](crate::metrics).
    type Metrics: Metrics;
    /// What every cell shares (data, a base model), built once per run.
    type Ready: Send + Sync + 'static;

    /// Range checks beyond the types; the problem names its key.
    fn check(_params: &Self::Params) -> Result<(), ParamProblem> {
        Ok(())
    }
    /// Build what the cells share.
    fn prepare(params: &Self::Params, env: &Env) -> anyhow::Result<Self::Ready>;
    /// Name -> SHA-256 of every input the cells depend on (corpus splits,
    /// base model); recorded in the manifest and hashed into cell keys.
    fn inputs(_ready: &Self::Ready) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// Run one cell. Must be deterministic given the cell and the thread count.
    fn run(ready: &Self::Ready, cell: &Cell, factors: Self::Factors) -> anyhow::Result<Self::Metrics>;
}

/// A kind as the rest of the harness sees it, whatever its types.
pub trait Experiment: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> u32;
    fn summary(&self) -> &'static str;
    /// The grid factors it understands.
    fn factors(&self) -> &[Factor];
    /// The metric columns it emits.
    fn metrics(&self) -> &[Metric];
    /// The JSON Schema of its `[procedure]` parameters.
    fn params_schema(&self) -> schemars::Schema;
    /// Parse and check `[procedure]` parameters (without `experiment`).
    fn parse_params(&self, raw: &toml::Table) -> Result<Parameters, ParamProblem>;
    /// Build what every cell shares (data, a base model) once per run.
    fn prepare(&self, params: &Parameters, env: &Env) -> anyhow::Result<Box<dyn Prepared>>;
}

/// An experiment made ready to run cells.
pub trait Prepared: Send + Sync {
    /// See [`Kind::inputs`].
    fn inputs(&self) -> BTreeMap<String, String>;
    /// One cell's metrics (the runner adds the factor columns).
    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row>;
}

/// A [`Kind`] behind [`Experiment`], with its declarations read once.
struct Registered<K> {
    factors: Vec<Factor>,
    metrics: Vec<Metric>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Registered<K> {
    fn boxed() -> Box<dyn Experiment> {
        Box::new(Registered::<K> {
            factors: factors_of::<K::Factors>(),
            metrics: K::Metrics::columns(),
            kind: PhantomData,
        })
    }
}

impl<K: Kind> Experiment for Registered<K> {
    fn kind(&self) -> &'static str {
        K::NAME
    }

    fn version(&self) -> u32 {
        K::VERSION
    }

    fn summary(&self) -> &'static str {
        K::SUMMARY
    }

    fn factors(&self) -> &[Factor] {
        &self.factors
    }

    fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    fn params_schema(&self) -> schemars::Schema {
        columns::inline_schema::<K::Params>()
    }

    fn parse_params(&self, raw: &toml::Table) -> Result<Parameters, ParamProblem> {
        let typed: K::Params = parse_params(raw)?;
        K::check(&typed)?;
        Ok(Parameters::new(typed))
    }

    fn prepare(&self, params: &Parameters, env: &Env) -> anyhow::Result<Box<dyn Prepared>> {
        let typed = params
            .get::<K::Params>()
            .ok_or_else(|| anyhow::anyhow!("{}: parameters of another kind were passed", K::NAME))?;
        Ok(Box::new(ReadyKind::<K>(K::prepare(typed, env)?)))
    }
}

struct ReadyKind<K: Kind>(K::Ready);

impl<K: Kind> Prepared for ReadyKind<K> {
    fn inputs(&self) -> BTreeMap<String, String> {
        K::inputs(&self.0)
    }

    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row> {
        let json = serde_json::to_value(&cell.factors)?;
        let factors: K::Factors = serde_path_to_error::deserialize(json).map_err(|e| match e.path().to_string() {
            path if path == "." => anyhow::anyhow!("cell {}: {}", cell.index, e.inner()),
            path => anyhow::anyhow!("cell {}: factor `{path}`: {}", cell.index, e.inner()),
        })?;
        Ok(K::run(&self.0, cell, factors)?.into_row())
    }
}

/// Every experiment kind the harness knows: one line per kind.
static REGISTRY: LazyLock<Vec<Box<dyn Experiment>>> = LazyLock::new(|| {
    vec![
        Registered::<adapters::AdapterTrainEval>::boxed(),
        Registered::<adapters::AdapterAverage>::boxed(),
        Registered::<adapters::AdapterMixture>::boxed(),
        Registered::<adapters::LayerSkip>::boxed(),
        Registered::<adapters::ExpertCollapse>::boxed(),
        Registered::<adapters::HiddenNoise>::boxed(),
        Registered::<adapters::WeightSoup>::boxed(),
        Registered::<adapters::WireFormat>::boxed(),
        Registered::<adapters::SpecialistCombiners>::boxed(),
        Registered::<adapters::GlassBox>::boxed(),
        Registered::<adapters::AuditOverhead>::boxed(),
        Registered::<adapters::SpecialistManifest>::boxed(),
        Registered::<adapters::ReplicationTrainEval>::boxed(),
        Registered::<audit_log::AuditLog>::boxed(),
        Registered::<bandwidth_ledger::BandwidthLedger>::boxed(),
        Registered::<bet_results::BetResults>::boxed(),
        Registered::<federated::ByzantineAggregation>::boxed(),
        Registered::<federated::Diloco>::boxed(),
        Registered::<gossip_directory::GossipDirectory>::boxed(),
        Registered::<pipeline::HiddenHandoff>::boxed(),
        Registered::<pipeline::WorkerPipeline>::boxed(),
        Registered::<revocation_vote::RevocationVote>::boxed(),
        Registered::<royalty_math::RoyaltyMath>::boxed(),
        Registered::<royalty_scale::RoyaltyScale>::boxed(),
    ]
});

/// Every experiment kind, in registry order.
pub fn all() -> Vec<&'static dyn Experiment> {
    REGISTRY.iter().map(|e| e.as_ref()).collect()
}

/// Look an experiment kind up by name.
pub fn find(kind: &str) -> Option<&'static dyn Experiment> {
    all().into_iter().find(|e| e.kind() == kind)
}

/// Helpers for the kinds' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An environment whose caches are under the system's temp folder.
    pub fn env() -> Env {
        let tmp = std::env::temp_dir();
        Env {
            paths: Paths::new(&tmp, Some(tmp.join("bets-test-cache")), None, None),
            profile: "tiny".into(),
            threads: 1,
            progress: Arc::new(crate::services::Silent),
        }
    }

    /// Held while a test prepares a kind: the first preparation fetches the
    /// corpus and pre-trains the tiny base into the shared test cache, which
    /// two tests at once would race on.
    static PREPARING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Kind `kind` prepared with the `[procedure]` parameters in `toml`.
    pub fn prepare(kind: &str, toml: &str) -> Box<dyn Prepared> {
        let e = find(kind).expect("a registered kind");
        let _one = PREPARING.lock().unwrap_or_else(|p| p.into_inner());
        e.prepare(&e.parse_params(&toml.parse().unwrap()).unwrap(), &env()).unwrap()
    }

    /// Whether kind `kind` accepts the parameters in `toml` (the problem as text).
    pub fn check(kind: &str, toml: &str) -> Result<(), String> {
        find(kind)
            .expect("a registered kind")
            .parse_params(&toml.parse().unwrap())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Run the catalogue spec `file` (under bets/) at tiny and draw each of
    /// its plots from the rows; every plot must show one point per cell
    /// (plus one legend marker per value of its `series`, if any).
    pub fn catalogue_spec_runs_at_tiny_and_plots(file: &str, kind: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bets").join(file);
        let bet = crate::spec::load(&path).unwrap();
        assert_eq!(bet.experiment.kind(), kind);
        let plan = bet.plan("tiny").unwrap();
        let ready = {
            let _one = PREPARING.lock().unwrap_or_else(|p| p.into_inner());
            bet.experiment.prepare(&plan.params, &env()).unwrap()
        };
        let mut rows = Vec::new();
        for (index, point) in plan.points.iter().enumerate() {
            let c = Cell { index, factors: point.clone(), key: format!("tiny-{index}") };
            let mut row = ready.run_cell(&c).unwrap();
            row.extend(point.clone());
            rows.push(row);
        }
        for p in &bet.spec.plots {
            let opts = crate::report::points_options(p);
            let svg =
                crate::report::plot::metric_by_condition(&rows, &p.x, &p.y, p.series.as_deref(), "t", &opts).unwrap();
            // One circle per cell, plus one legend marker per series value.
            let legend = p.series.as_ref().map_or(0, |s| {
                rows.iter().map(|r| format!("{:?}", r[s])).collect::<std::collections::BTreeSet<_>>().len()
            });
            assert_eq!(svg.matches("<circle").count(), rows.len() + legend, "{} by {}", p.y, p.x);
        }
    }

    /// A cell with the given factors.
    pub fn cell(factors: &[(&str, Value)]) -> Cell {
        Cell {
            index: 0,
            factors: factors.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            key: "test-cell".into(),
        }
    }
}
