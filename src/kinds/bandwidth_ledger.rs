//! Experiment kind `bandwidth-ledger` (bet 67): run one epoch of the
//! bandwidth ledger under loss and byzantine duplicate claims, and report
//! the per-node drift of the settled credit and the duplicate-claim audit.
//! See [`crate::sim::bandwidth`] for the model; its [`BandwidthParams`] are
//! the kind's parameters as they stand.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Cell, Env, Kind, ParamProblem};
use crate::sim::bandwidth::{self, BandwidthOutcome, BandwidthParams};

/// The `bandwidth-ledger` kind.
pub struct BandwidthLedger;

/// The grid factors: a seed, and optional per-cell overrides of parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the traffic, the byzantine nodes, their duplicate material and message loss.
    seed: u64,
    /// Overrides the `loss` parameter for this cell.
    loss: Option<f64>,
    /// Overrides the `nodes` parameter for this cell.
    nodes: Option<usize>,
    /// Overrides the `keepers` parameter for this cell.
    keepers: Option<usize>,
    /// Overrides the `grace` parameter for this cell.
    grace: Option<usize>,
    /// Overrides the `byzantine` parameter for this cell.
    byzantine: Option<f64>,
}

crate::metrics! {
    /// What one epoch of the bandwidth ledger measured. Drifts are fractions, not percent (0.005 = 0.5%).
    pub struct BandwidthMetrics {
        /// Median over nodes of |settled credit - bytes served| / bytes served; settled = median over keepers (fraction).
        pub drift_p50: f64,
        /// 95th percentile (nearest rank) over nodes of the settled per-node drift (fraction).
        pub drift_p95: f64,
        /// 99th percentile (nearest rank) over nodes of the settled per-node drift (fraction).
        pub drift_p99: f64,
        /// Largest settled per-node drift (fraction).
        pub drift_max: f64,
        /// 95th percentile over nodes of the worst single keeper's drift: the every-replica view (fraction).
        pub replica_drift_p95: f64,
        /// Largest drift of any node at any keeper (fraction).
        pub replica_drift_max: f64,
        /// Nodes whose settled credit differs from what they served (count).
        pub drifted_nodes: usize,
        /// Nodes that served anything: the population of the drift quantiles (count).
        pub nodes_served: usize,
        /// Byzantine nodes (count).
        pub byzantine_nodes: usize,
        /// Genuine claims, one final receipt per session served (count).
        pub claims: u64,
        /// Genuine claims a majority of keepers had not accepted when the epoch closed (count).
        pub claims_unsettled: u64,
        /// Bytes of those late claims (bytes).
        pub bytes_unsettled: u64,
        /// Bytes served in the epoch, ground truth (bytes).
        pub bytes_served: u64,
        /// Sum of the nodes' settled credits (bytes).
        pub bytes_settled: u64,
        /// Duplicate claims byzantine nodes sent at least once; those of claims acknowledged only in the closing round are never sent (count).
        pub duplicates_submitted: u64,
        /// Duplicate claims delivered and credited by no keeper (count).
        pub duplicates_rejected: u64,
        /// Duplicate claims credited by some keeper; must be 0 (count).
        pub duplicates_accepted: u64,
        /// Duplicate claims never delivered before the close (count).
        pub duplicates_undelivered: u64,
        /// Genuine claims some keeper refused on their first arrival; must be 0 (count).
        pub honest_rejected: u64,
        /// Genuine receipts resent because their batch went unacknowledged (count).
        pub retransmitted: u64,
        /// Messages sent: claim batches, acknowledgements, replication requests and replies (count).
        pub messages: u64,
        /// Messages lost in transit (count).
        pub messages_lost: u64,
        /// Bytes of every ledger message sent, lost ones included (bytes).
        pub ledger_bytes: u64,
    }
}

impl From<BandwidthOutcome> for BandwidthMetrics {
    fn from(o: BandwidthOutcome) -> Self {
        BandwidthMetrics {
            drift_p50: o.drift_p50,
            drift_p95: o.drift_p95,
            drift_p99: o.drift_p99,
            drift_max: o.drift_max,
            replica_drift_p95: o.replica_drift_p95,
            replica_drift_max: o.replica_drift_max,
            drifted_nodes: o.drifted_nodes,
            nodes_served: o.nodes_served,
            byzantine_nodes: o.byzantine_nodes,
            claims: o.claims,
            claims_unsettled: o.claims_unsettled,
            bytes_unsettled: o.bytes_unsettled,
            bytes_served: o.bytes_served,
            bytes_settled: o.bytes_settled,
            duplicates_submitted: o.duplicates_submitted,
            duplicates_rejected: o.duplicates_rejected,
            duplicates_accepted: o.duplicates_accepted,
            duplicates_undelivered: o.duplicates_undelivered,
            honest_rejected: o.honest_rejected,
            retransmitted: o.retransmitted,
            messages: o.messages,
            messages_lost: o.messages_lost,
            ledger_bytes: o.ledger_bytes,
        }
    }
}

impl Kind for BandwidthLedger {
    const NAME: &'static str = "bandwidth-ledger";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Settle one epoch of client-signed bandwidth receipts through a keeper committee under message loss and byzantine duplicate claims; measure per-node drift and audit every duplicate.";
    type Params = BandwidthParams;
    type Factors = Factors;
    type Metrics = BandwidthMetrics;
    type Ready = BandwidthParams;

    fn check(params: &BandwidthParams) -> Result<(), ParamProblem> {
        Ok(params.validate()?)
    }

    fn prepare(params: &BandwidthParams, _env: &Env) -> anyhow::Result<BandwidthParams> {
        Ok(params.clone())
    }

    fn run(params: &BandwidthParams, cell: &Cell, f: Factors) -> anyhow::Result<BandwidthMetrics> {
        let p = BandwidthParams {
            loss: f.loss.unwrap_or(params.loss),
            nodes: f.nodes.unwrap_or(params.nodes),
            keepers: f.keepers.unwrap_or(params.keepers),
            grace: f.grace.unwrap_or(params.grace),
            byzantine: f.byzantine.unwrap_or(params.byzantine),
            ..params.clone()
        };
        let o = bandwidth::simulate(&p, f.seed).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(o.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::{cell, check, prepare};
    use crate::kinds::{Metrics, find};
    use crate::table::Value;

    const TINY: &str = "nodes = 100\nrounds = 8";

    #[test]
    fn bandwidth_ledger_is_registered() {
        assert_eq!(find("bandwidth-ledger").map(|e| e.kind()), Some("bandwidth-ledger"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = prepare("bandwidth-ledger", TINY);
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1))])).unwrap();
        let mut declared: Vec<_> = BandwidthMetrics::columns().iter().map(|m| m.name).collect();
        declared.sort();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        assert_eq!(emitted, declared);
        for m in BandwidthMetrics::columns() {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["claims"], Value::Int(100 * 2 * 8));
        assert_eq!(row["byzantine_nodes"], Value::Int(2));
        assert_eq!(row["duplicates_accepted"], Value::Int(0));
        assert_eq!(row["honest_rejected"], Value::Int(0));
    }

    #[test]
    fn factors_override_parameters() {
        let ready = prepare("bandwidth-ledger", TINY);
        let c = cell(&[
            ("seed", Value::Int(0)),
            ("loss", Value::Int(0)),
            ("nodes", Value::Int(50)),
            ("keepers", Value::Int(3)),
            ("byzantine", Value::Float(0.1)),
        ]);
        let row = ready.run_cell(&c).unwrap();
        assert_eq!(row["claims"], Value::Int(50 * 2 * 8));
        assert_eq!(row["byzantine_nodes"], Value::Int(5));
        assert_eq!(row["messages_lost"], Value::Int(0));
        assert_eq!(row["drift_max"], Value::Float(0.0));
        assert_eq!(row["bytes_settled"], row["bytes_served"]);
        // No grace round: the last round's claims reach only their home keeper.
        let row = ready
            .run_cell(&cell(&[("seed", Value::Int(0)), ("loss", Value::Int(0)), ("grace", Value::Int(0))]))
            .unwrap();
        assert_ne!(row["drift_max"], Value::Float(0.0));
        let bad = cell(&[("seed", Value::Int(0)), ("loss", Value::Float(1.0))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`loss`"));
        let bad = cell(&[("seed", Value::Int(0)), ("keepers", Value::Int(0))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`keepers`"));
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = prepare("bandwidth-ledger", TINY);
        let c = cell(&[("seed", Value::Int(7)), ("loss", Value::Float(0.05))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(check("bandwidth-ledger", ""), Ok(()));
        let e = check("bandwidth-ledger", "nodes = 10\nfanout = 3").unwrap_err();
        assert!(e.contains("fanout"), "{e}");
        let e = check("bandwidth-ledger", "keepers = \"five\"").unwrap_err();
        assert!(e.contains("keepers"), "{e}");
        let e = check("bandwidth-ledger", "loss = 1.5").unwrap_err();
        assert!(e.contains("loss"), "{e}");
        let e = check("bandwidth-ledger", "size_min = 100\nsize_max = 10").unwrap_err();
        assert!(e.contains("size_max"), "{e}");
    }

    #[test]
    fn a_cell_without_a_seed_is_an_error() {
        let ready = prepare("bandwidth-ledger", TINY);
        assert!(ready.run_cell(&cell(&[])).unwrap_err().to_string().contains("seed"));
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("67_bandwidth_ledger.toml", "bandwidth-ledger");
    }
}
