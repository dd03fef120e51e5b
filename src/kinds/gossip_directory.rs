//! Experiment kind `gossip-directory` (bet 15): run the gossip directory
//! simulation for one seed and report convergence and expiry. See
//! [`crate::sim::gossip`] for the model; its [`GossipParams`] are the kind's
//! parameters as they stand.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Cell, Env, Kind, ParamProblem};
use crate::sim::gossip::{self, GossipOutcome, GossipParams, Mode, PeerSelection};

/// The `gossip-directory` kind.
pub struct GossipDirectory;

/// The grid factors: a seed, and optional per-cell overrides of parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds membership (bootstrap, churn), peer choice and message loss.
    seed: u64,
    /// Overrides the `nodes` parameter for this cell.
    nodes: Option<usize>,
    /// Overrides the `fanout` parameter for this cell.
    fanout: Option<usize>,
    /// Overrides the `loss` parameter for this cell.
    loss: Option<f64>,
    /// Overrides the `churn` parameter for this cell.
    churn: Option<f64>,
    /// Overrides the `mode` parameter for this cell.
    mode: Option<Mode>,
    /// Overrides the `peers` parameter for this cell.
    peers: Option<PeerSelection>,
}

crate::metrics! {
    /// What one gossip simulation measured.
    pub struct GossipMetrics {
        /// Rounds after the last membership change until every live node held every live entry; max_rounds + 1 if never (rounds).
        pub rounds_to_full: usize,
        /// Round, counted from the cold start (round 0), at which the directory first became full after the last membership change (rounds).
        pub full_at_round: usize,
        /// Whether rounds_to_full <= 3 * log2(nodes).
        pub converged_within_bound: bool,
        /// floor(3 * log2(nodes)): the largest rounds_to_full within the bound (rounds).
        pub bound_rounds: usize,
        /// Nodes that left during the run (count).
        pub departed: usize,
        /// Whether every departed entry was gone from every live node within ttl + bound_rounds rounds of its owner leaving, and stayed gone.
        pub departed_expired: bool,
        /// Largest delay, over departed entries, from the owner leaving to the entry being gone from every live node (rounds; 0 without departures).
        pub expiry_rounds_max: usize,
        /// (live node, departed entry) pairs still held at the end of the run (count).
        pub stale_entries_end: usize,
        /// Times a live node let the entry of a live owner expire (count).
        pub false_expiries: usize,
        /// Gossip messages sent, replies included (count).
        pub messages_sent: u64,
        /// Messages lost in transit (count).
        pub messages_lost: u64,
        /// Messages addressed to nodes that had left (count).
        pub messages_to_departed: u64,
        /// Rounds simulated; the run stops once the directory is full and every departed entry has expired (rounds).
        pub rounds_run: usize,
    }
}

impl From<GossipOutcome> for GossipMetrics {
    fn from(o: GossipOutcome) -> Self {
        GossipMetrics {
            rounds_to_full: o.rounds_to_full,
            full_at_round: o.full_at_round,
            converged_within_bound: o.converged_within_bound,
            bound_rounds: o.bound_rounds,
            departed: o.departed,
            departed_expired: o.departed_expired,
            expiry_rounds_max: o.expiry_rounds_max,
            stale_entries_end: o.stale_entries_end,
            false_expiries: o.false_expiries,
            messages_sent: o.messages_sent,
            messages_lost: o.messages_lost,
            messages_to_departed: o.messages_to_departed,
            rounds_run: o.rounds_run,
        }
    }
}

impl Kind for GossipDirectory {
    const NAME: &'static str = "gossip-directory";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Keep a specialist directory by gossip alone under loss and churn; measure rounds to a full directory and expiry of departed entries.";
    type Params = GossipParams;
    type Factors = Factors;
    type Metrics = GossipMetrics;
    type Ready = GossipParams;

    fn check(params: &GossipParams) -> Result<(), ParamProblem> {
        Ok(params.validate()?)
    }

    fn prepare(params: &GossipParams, _env: &Env) -> anyhow::Result<GossipParams> {
        Ok(params.clone())
    }

    fn run(params: &GossipParams, cell: &Cell, f: Factors) -> anyhow::Result<GossipMetrics> {
        let p = GossipParams {
            nodes: f.nodes.unwrap_or(params.nodes),
            fanout: f.fanout.unwrap_or(params.fanout),
            loss: f.loss.unwrap_or(params.loss),
            churn: f.churn.unwrap_or(params.churn),
            mode: f.mode.unwrap_or(params.mode),
            peers: f.peers.unwrap_or(params.peers),
            ..params.clone()
        };
        let o = gossip::simulate(&p, f.seed).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(o.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::{cell, check, prepare};
    use crate::kinds::{Metrics, find};
    use crate::table::Value;

    #[test]
    fn gossip_directory_is_registered() {
        assert_eq!(find("gossip-directory").map(|e| e.kind()), Some("gossip-directory"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = prepare("gossip-directory", "nodes = 100\nchurn = 0.05");
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1))])).unwrap();
        let mut declared: Vec<_> = GossipMetrics::columns().iter().map(|m| m.name).collect();
        declared.sort();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        assert_eq!(emitted, declared);
        for m in GossipMetrics::columns() {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["departed"], Value::Int(25));
        assert_eq!(row["bound_rounds"], Value::Int(19)); // 3 * log2(100) = 19.93
    }

    #[test]
    fn factors_override_parameters() {
        let ready = prepare("gossip-directory", "nodes = 50\nchurn = 0.0");
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
        let ready = prepare("gossip-directory", "nodes = 120\nchurn = 0.05");
        let c = cell(&[("seed", Value::Int(7))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(check("gossip-directory", ""), Ok(()));
        let e = check("gossip-directory", "nodes = 10\nreplay_fraction = 0.1").unwrap_err();
        assert!(e.contains("replay_fraction"), "{e}");
        let e = check("gossip-directory", "fanout = 2.5").unwrap_err();
        assert!(e.contains("fanout"), "{e}");
        let e = check("gossip-directory", "mode = \"broadcast\"").unwrap_err();
        assert!(e.contains("mode") || e.contains("broadcast"), "{e}");
        let e = check("gossip-directory", "loss = 1.5").unwrap_err();
        assert!(e.contains("loss"), "{e}");
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("15_gossip_directory.toml", "gossip-directory");
    }
}
