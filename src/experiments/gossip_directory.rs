//! Experiment kind `gossip-directory` (bet 15): run the gossip directory
//! simulation for one seed and report convergence and expiry. See
//! [`crate::sim::gossip`] for the model.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Cell, Env, Experiment, Factor, Metric, Prepared, overrides, parse_params};
use crate::sim::gossip::{self, GossipOutcome, GossipParams, Mode, PeerSelection};
use crate::table::{ColumnType, Row, Value};

/// The `gossip-directory` kind.
pub struct GossipDirectory;

/// Spelling of [`Mode`] in specs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ModeName {
    Push,
    PushPull,
}

/// Spelling of [`PeerSelection`] in specs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PeersName {
    Uniform,
    Directory,
}

const MODES: &[&str] = &["push", "push-pull"];
const PEERS: &[&str] = &["uniform", "directory"];

fn mode(name: &str) -> Option<Mode> {
    match name {
        "push" => Some(Mode::Push),
        "push-pull" => Some(Mode::PushPull),
        _ => None,
    }
}

fn peers(name: &str) -> Option<PeerSelection> {
    match name {
        "uniform" => Some(PeerSelection::Uniform),
        "directory" => Some(PeerSelection::Directory),
        _ => None,
    }
}

/// `[procedure]` parameters; every one is optional and defaults to bet 15's
/// setting (1000 nodes, fanout 3, 5% loss) with light churn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    /// Live nodes, constant under churn (default 1000).
    nodes: usize,
    /// Peers each node contacts per round (default 3).
    fanout: usize,
    /// Probability that a message is lost (default 0.05).
    loss: f64,
    /// Fraction of live nodes replaced in each churn round (default 0.01).
    churn: f64,
    /// Rounds 1..=churn_rounds see churn (default 5).
    churn_rounds: usize,
    /// Rounds an entry stays held without a fresher heartbeat (default 20).
    ttl: u32,
    /// Rounds after the last membership change allowed for convergence
    /// (default 100).
    max_rounds: usize,
    /// Other nodes a node knows when it starts or joins (default 3).
    bootstrap: usize,
    /// `push` or `push-pull` (default `push`).
    mode: ModeName,
    /// `directory` (peers drawn from the held entries) or `uniform` (from the
    /// live nodes) (default `directory`).
    peers: PeersName,
}

impl Default for Params {
    fn default() -> Self {
        let d = GossipParams::default();
        Params {
            nodes: d.nodes,
            fanout: d.fanout,
            loss: d.loss,
            churn: d.churn,
            churn_rounds: d.churn_rounds,
            ttl: d.ttl,
            max_rounds: d.max_rounds,
            bootstrap: d.bootstrap,
            mode: match d.mode {
                Mode::Push => ModeName::Push,
                Mode::PushPull => ModeName::PushPull,
            },
            peers: match d.peers {
                PeerSelection::Uniform => PeersName::Uniform,
                PeerSelection::Directory => PeersName::Directory,
            },
        }
    }
}

impl Params {
    fn to_sim(&self) -> GossipParams {
        GossipParams {
            nodes: self.nodes,
            fanout: self.fanout,
            loss: self.loss,
            churn: self.churn,
            churn_rounds: self.churn_rounds,
            ttl: self.ttl,
            max_rounds: self.max_rounds,
            bootstrap: self.bootstrap,
            mode: match self.mode {
                ModeName::Push => Mode::Push,
                ModeName::PushPull => Mode::PushPull,
            },
            peers: match self.peers {
                PeersName::Uniform => PeerSelection::Uniform,
                PeersName::Directory => PeerSelection::Directory,
            },
        }
    }
}

/// Parse and range-check the procedure table into simulation parameters.
fn sim_params(params: &toml::Table) -> Result<GossipParams, String> {
    let p = parse_params::<Params>(params)?.to_sim();
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

const FACTORS: &[Factor] = &[
    Factor {
        name: "seed",
        kind: ColumnType::Int,
        required: true,
        allowed: &[],
        doc: "Seeds membership (bootstrap, churn), peer choice and message loss.",
    },
    Factor {
        name: "nodes",
        kind: ColumnType::Int,
        required: false,
        allowed: &[],
        doc: "Overrides the `nodes` parameter for this cell.",
    },
    Factor {
        name: "fanout",
        kind: ColumnType::Int,
        required: false,
        allowed: &[],
        doc: "Overrides the `fanout` parameter for this cell.",
    },
    Factor {
        name: "loss",
        kind: ColumnType::Float,
        required: false,
        allowed: &[],
        doc: "Overrides the `loss` parameter for this cell.",
    },
    Factor {
        name: "churn",
        kind: ColumnType::Float,
        required: false,
        allowed: &[],
        doc: "Overrides the `churn` parameter for this cell.",
    },
    Factor {
        name: "mode",
        kind: ColumnType::Str,
        required: false,
        allowed: MODES,
        doc: "Overrides the `mode` parameter for this cell.",
    },
    Factor {
        name: "peers",
        kind: ColumnType::Str,
        required: false,
        allowed: PEERS,
        doc: "Overrides the `peers` parameter for this cell.",
    },
];

const fn int(name: &'static str, doc: &'static str) -> Metric {
    Metric { name, kind: ColumnType::Int, doc }
}

const METRICS: &[Metric] = &[
    int(
        "rounds_to_full",
        "Rounds after the last membership change until every live node held every live entry; max_rounds + 1 if never (rounds).",
    ),
    int(
        "full_at_round",
        "Round, counted from the cold start (round 0), at which the directory first became full after the last membership change (rounds).",
    ),
    Metric {
        name: "converged_within_bound",
        kind: ColumnType::Bool,
        doc: "Whether rounds_to_full <= 3 * log2(nodes).",
    },
    int("bound_rounds", "floor(3 * log2(nodes)): the largest rounds_to_full within the bound (rounds)."),
    int("departed", "Nodes that left during the run (count)."),
    Metric {
        name: "departed_expired",
        kind: ColumnType::Bool,
        doc: "Whether every departed entry was gone from every live node within ttl + bound_rounds rounds of its owner leaving, and stayed gone.",
    },
    int(
        "expiry_rounds_max",
        "Largest delay, over departed entries, from the owner leaving to the entry being gone from every live node (rounds; 0 without departures).",
    ),
    int("stale_entries_end", "(live node, departed entry) pairs still held at the end of the run (count)."),
    int("false_expiries", "Times a live node let the entry of a live owner expire (count)."),
    int("messages_sent", "Gossip messages sent, replies included (count)."),
    int("messages_lost", "Messages lost in transit (count)."),
    int("messages_to_departed", "Messages addressed to nodes that had left (count)."),
    int(
        "rounds_run",
        "Rounds simulated; the run stops once the directory is full and every departed entry has expired (rounds).",
    ),
];

impl Experiment for GossipDirectory {
    fn kind(&self) -> &'static str {
        "gossip-directory"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Keep a specialist directory by gossip alone under loss and churn; measure rounds to a full directory and expiry of departed entries."
    }

    fn factors(&self) -> &'static [Factor] {
        FACTORS
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn check_params(&self, params: &toml::Table) -> Result<(), String> {
        sim_params(params).map(|_| ())
    }

    fn prepare(&self, params: &toml::Table, _env: &Env) -> anyhow::Result<Box<dyn Prepared>> {
        let params = sim_params(params).map_err(|e| anyhow::anyhow!("gossip-directory: {e}"))?;
        Ok(Box::new(Ready { params }))
    }
}

/// Validated parameters; the simulation needs no data.
struct Ready {
    params: GossipParams,
}

impl Prepared for Ready {
    fn inputs(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row> {
        let mut p = self.params.clone();
        if let Some(n) = overrides::count(cell, "nodes")? {
            p.nodes = n;
        }
        if let Some(n) = overrides::count(cell, "fanout")? {
            p.fanout = n;
        }
        if let Some(f) = overrides::number(cell, "loss")? {
            p.loss = f;
        }
        if let Some(f) = overrides::number(cell, "churn")? {
            p.churn = f;
        }
        if let Some(s) = overrides::string(cell, "mode")? {
            p.mode = mode(s).ok_or_else(|| {
                anyhow::anyhow!("cell {}: factor `mode` must be one of {MODES:?}, got {s:?}", cell.index)
            })?;
        }
        if let Some(s) = overrides::string(cell, "peers")? {
            p.peers = peers(s).ok_or_else(|| {
                anyhow::anyhow!("cell {}: factor `peers` must be one of {PEERS:?}, got {s:?}", cell.index)
            })?;
        }
        let o = gossip::simulate(&p, cell.seed()?).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(row(&o))
    }
}

fn row(o: &GossipOutcome) -> Row {
    let ints = [
        ("rounds_to_full", o.rounds_to_full as u64),
        ("full_at_round", o.full_at_round as u64),
        ("bound_rounds", o.bound_rounds as u64),
        ("departed", o.departed as u64),
        ("expiry_rounds_max", o.expiry_rounds_max as u64),
        ("stale_entries_end", o.stale_entries_end as u64),
        ("false_expiries", o.false_expiries as u64),
        ("messages_sent", o.messages_sent),
        ("messages_lost", o.messages_lost),
        ("messages_to_departed", o.messages_to_departed),
        ("rounds_run", o.rounds_run as u64),
    ];
    let mut row: Row = ints.into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
    row.insert("converged_within_bound".into(), Value::Bool(o.converged_within_bound));
    row.insert("departed_expired".into(), Value::Bool(o.departed_expired));
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::find;

    fn table(src: &str) -> toml::Table {
        src.parse().unwrap()
    }

    fn cell(factors: &[(&str, Value)]) -> Cell {
        Cell {
            index: 0,
            factors: factors.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            key: "test-cell".into(),
        }
    }

    fn env() -> Env {
        Env { cache_dir: std::env::temp_dir(), profile: "tiny".into(), threads: 1, progress: std::sync::Arc::new(crate::services::Silent) }
    }

    #[test]
    fn gossip_directory_is_registered() {
        assert_eq!(find("gossip-directory").map(|e| e.kind()), Some("gossip-directory"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = GossipDirectory.prepare(&table("nodes = 100\nchurn = 0.05"), &env()).unwrap();
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1))])).unwrap();
        let mut declared: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        declared.sort();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        assert_eq!(emitted, declared);
        for m in METRICS {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["departed"], Value::Int(25));
        assert_eq!(row["bound_rounds"], Value::Int(19)); // 3 * log2(100) = 19.93
    }

    #[test]
    fn factors_override_parameters() {
        let ready = GossipDirectory.prepare(&table("nodes = 50\nchurn = 0.0"), &env()).unwrap();
        let c = cell(&[
            ("seed", Value::Int(0)),
            ("fanout", Value::Int(49)),
            ("loss", Value::Int(0)),
            ("mode", Value::from("push-pull")),
            ("peers", Value::from("uniform")),
        ]);
        let row = ready.run_cell(&c).unwrap();
        assert_eq!(row["rounds_to_full"], Value::Int(1));
        assert_eq!(row["messages_sent"], Value::Int(2 * 50 * 49));
        let bad = cell(&[("seed", Value::Int(0)), ("mode", Value::from("broadcast"))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`mode`"));
        let bad = cell(&[("seed", Value::Int(0)), ("fanout", Value::Int(50))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`fanout`"));
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = GossipDirectory.prepare(&table("nodes = 120\nchurn = 0.05"), &env()).unwrap();
        let c = cell(&[("seed", Value::Int(7))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(GossipDirectory.check_params(&toml::Table::new()), Ok(()));
        let e = GossipDirectory.check_params(&table("nodes = 10\nreplay_fraction = 0.1")).unwrap_err();
        assert!(e.contains("replay_fraction"), "{e}");
        let e = GossipDirectory.check_params(&table("fanout = 2.5")).unwrap_err();
        assert!(e.contains("fanout"), "{e}");
        let e = GossipDirectory.check_params(&table("mode = \"broadcast\"")).unwrap_err();
        assert!(e.contains("mode") || e.contains("broadcast"), "{e}");
        let e = GossipDirectory.check_params(&table("loss = 1.5")).unwrap_err();
        assert!(e.contains("loss"), "{e}");
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bets/15_gossip_directory.toml");
        let bet = crate::spec::load(&path).unwrap();
        assert_eq!(bet.experiment.kind(), "gossip-directory");
        let plan = bet.plan("tiny").unwrap();
        let ready = bet.experiment.prepare(&plan.params, &env()).unwrap();
        let mut rows = Vec::new();
        for (index, point) in plan.points.iter().enumerate() {
            let c = Cell { index, factors: point.clone(), key: format!("tiny-{index}") };
            let mut row = ready.run_cell(&c).unwrap();
            row.extend(point.clone());
            rows.push(row);
        }
        for p in &bet.spec.plots {
            let opts = crate::report::plot::PlotOptions { log_y: p.log_y, ..Default::default() };
            let svg =
                crate::report::plot::metric_by_condition(&rows, &p.x, &p.y, p.series.as_deref(), "t", &opts).unwrap();
            assert_eq!(svg.matches("<circle").count(), rows.len(), "{} by {}", p.y, p.x);
        }
    }
}
