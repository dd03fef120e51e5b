//! Experiment kind `royalty-math` (bet 14): settle seeded request traffic
//! plus adversarial replays through the royalty ledger and audit the result.
//! See [`crate::sim::royalty`] for the model and the rounding rule; its
//! [`RoyaltyParams`] are the kind's parameters as they stand.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Cell, Env, Kind, ParamProblem};
use crate::sim::royalty::{self, RoyaltyOutcome, RoyaltyParams};

/// The `royalty-math` kind.
pub struct RoyaltyMath;

/// The grid factors: a seed, and optional per-cell overrides of parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the traffic (specialist, server, fee per request) and the adversary.
    seed: u64,
    /// Overrides the `requests` parameter for this cell.
    requests: Option<usize>,
    /// Overrides the `replay_fraction` parameter for this cell.
    replay_fraction: Option<f64>,
    /// Overrides the `tamper_fraction` parameter for this cell.
    tamper_fraction: Option<f64>,
}

crate::metrics! {
    /// What one settlement audit measured.
    pub struct RoyaltyMetrics {
        /// Genuine receipts issued, one per served request (count).
        pub receipts: u64,
        /// Receipts handed to the ledger: genuine, replayed and tampered (count).
        pub submissions: u64,
        /// Submissions the ledger settled (count).
        pub accepted: u64,
        /// Genuine receipts the ledger refused; should be 0 (count).
        pub genuine_rejected: u64,
        /// Verbatim resubmissions of already-submitted receipts (count).
        pub replays_submitted: u64,
        /// Replays the ledger refused (count).
        pub replays_rejected: u64,
        /// Copies with a genuine id but altered fee or server (count).
        pub tampered_submitted: u64,
        /// Tampered copies the ledger refused (count).
        pub tampered_rejected: u64,
        /// Settlements accepted for a receipt id that was already settled, counted by the simulation, not the ledger (count).
        pub double_counted: u64,
        /// Sum of the fees of the genuine receipts (units).
        pub fees_total: u64,
        /// Sum of every account balance at the end (units).
        pub paid_total: u64,
        /// Sum of the trainer balances (units).
        pub trainer_paid_total: u64,
        /// Sum of the server balances (units).
        pub server_paid_total: u64,
        /// Settled receipts whose trainer and server shares do not sum to the fee, plus 1 if the balances do not sum to the settled fees (count).
        pub conservation_violations: u64,
        /// Largest |ledger balance - balance recomputed from the genuine receipts| over all accounts (units).
        pub max_abs_imbalance: u64,
        /// trainer_paid_total / paid_total: the split actually paid, after flooring (ratio; 0 when nothing was paid).
        pub trainer_share_effective: f64,
    }
}

impl From<RoyaltyOutcome> for RoyaltyMetrics {
    fn from(o: RoyaltyOutcome) -> Self {
        let share = if o.paid_total == 0 { 0.0 } else { o.trainer_paid_total as f64 / o.paid_total as f64 };
        RoyaltyMetrics {
            receipts: o.receipts,
            submissions: o.submissions,
            accepted: o.accepted,
            genuine_rejected: o.genuine_rejected,
            replays_submitted: o.replays_submitted,
            replays_rejected: o.replays_rejected,
            tampered_submitted: o.tampered_submitted,
            tampered_rejected: o.tampered_rejected,
            double_counted: o.double_counted,
            fees_total: o.fees_total,
            paid_total: o.paid_total,
            trainer_paid_total: o.trainer_paid_total,
            server_paid_total: o.server_paid_total,
            conservation_violations: o.conservation_violations,
            max_abs_imbalance: o.max_abs_imbalance,
            trainer_share_effective: share,
        }
    }
}

impl Kind for RoyaltyMath {
    const NAME: &'static str = "royalty-math";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Settle seeded receipts plus adversarial replays through a 30/70 royalty ledger; audit conservation and double counting.";
    type Params = RoyaltyParams;
    type Factors = Factors;
    type Metrics = RoyaltyMetrics;
    type Ready = RoyaltyParams;

    fn check(params: &RoyaltyParams) -> Result<(), ParamProblem> {
        Ok(params.validate()?)
    }

    fn prepare(params: &RoyaltyParams, _env: &Env) -> anyhow::Result<RoyaltyParams> {
        Ok(params.clone())
    }

    fn run(params: &RoyaltyParams, cell: &Cell, f: Factors) -> anyhow::Result<RoyaltyMetrics> {
        let p = RoyaltyParams {
            requests: f.requests.unwrap_or(params.requests),
            replay_fraction: f.replay_fraction.unwrap_or(params.replay_fraction),
            tamper_fraction: f.tamper_fraction.unwrap_or(params.tamper_fraction),
            ..params.clone()
        };
        let o = royalty::simulate(&p, f.seed).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
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
    fn royalty_math_is_registered() {
        assert_eq!(find("royalty-math").map(|e| e.kind()), Some("royalty-math"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = prepare("royalty-math", "requests = 500\ntamper_fraction = 0.1");
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1))])).unwrap();
        let declared: Vec<_> = RoyaltyMetrics::columns().iter().map(|m| m.name).collect();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        let mut sorted = declared.clone();
        sorted.sort();
        assert_eq!(emitted, sorted);
        for m in RoyaltyMetrics::columns() {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["receipts"], Value::Int(500));
        assert_eq!(row["double_counted"], Value::Int(0));
        assert_eq!(row["conservation_violations"], Value::Int(0));
        assert_eq!(row["tampered_rejected"], Value::Int(50));
        assert_eq!(row["paid_total"], row["fees_total"]);
    }

    #[test]
    fn factors_override_parameters() {
        let ready = prepare("royalty-math", "");
        let row = ready
            .run_cell(&cell(&[
                ("seed", Value::Int(0)),
                ("requests", Value::Int(200)),
                ("replay_fraction", Value::Int(1)),
            ]))
            .unwrap();
        assert_eq!(row["receipts"], Value::Int(200));
        assert_eq!(row["replays_rejected"], Value::Int(200));
        let bad = ready.run_cell(&cell(&[("seed", Value::Int(0)), ("requests", Value::Int(-1))]));
        assert!(bad.unwrap_err().to_string().contains("`requests`"));
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = prepare("royalty-math", "requests = 300");
        let c = cell(&[("seed", Value::Int(4))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(check("royalty-math", ""), Ok(()));
        let e = check("royalty-math", "requests = 10\nfanout = 3").unwrap_err();
        assert!(e.contains("fanout"), "{e}");
        let e = check("royalty-math", "requests = \"many\"").unwrap_err();
        assert!(e.contains("requests"), "{e}");
        let e = check("royalty-math", "trainer_share_percent = 130").unwrap_err();
        assert!(e.contains("trainer_share_percent"), "{e}");
        let e = check("royalty-math", "replay_fraction = 2.0").unwrap_err();
        assert!(e.contains("replay_fraction"), "{e}");
    }

    #[test]
    fn a_cell_without_a_seed_is_an_error() {
        let ready = prepare("royalty-math", "");
        assert!(ready.run_cell(&cell(&[])).unwrap_err().to_string().contains("seed"));
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("14_royalty_math.toml", "royalty-math");
    }
}
