//! Experiment kind `royalty-scale` (bet 68): settle a network's traffic
//! through bet 14's ledger while byzantine servers swap manifest hashes and
//! bill ghost specialists, with unsigned or client-signed receipts, and audit
//! the result against ground truth. See [`crate::sim::royalty::scale`] for
//! the model and the threat model; its [`ScaleParams`] are the kind's
//! parameters as they stand.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Cell, Env, Kind, ParamProblem};
use crate::sim::royalty::scale::{self, ReceiptPolicy, ScaleOutcome, ScaleParams};

/// The `royalty-scale` kind.
pub struct RoyaltyScale;

/// The grid factors: a seed, and optional per-cell overrides of parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the network (coalition, keys, manifests), the traffic and the adversary.
    seed: u64,
    /// Overrides the `receipts` parameter for this cell: the arm.
    receipts: Option<ReceiptPolicy>,
    /// Overrides the `operations` parameter for this cell.
    operations: Option<usize>,
    /// Overrides the `byzantine_fraction` parameter for this cell.
    byzantine_fraction: Option<f64>,
}

crate::metrics! {
    /// What one royalties-at-scale audit measured.
    pub struct ScaleMetrics {
        /// Operations served, one genuine receipt each (count).
        pub operations: u64,
        /// Operations served by byzantine servers (count).
        pub byzantine_operations: u64,
        /// Byzantine servers (count).
        pub byzantine_servers: u64,
        /// Specialists registered, the catalogue plus the ghosts (count).
        pub registered_specialists: u64,
        /// Ghost specialists the coalition registered (count).
        pub ghosts_registered: u64,
        /// Registered specialists never served to any client, ghosts included (count).
        pub never_served_specialists: u64,
        /// Receipts handed to the ledger, genuine and fraudulent (count).
        pub submissions: u64,
        /// Submissions the ledger settled (count).
        pub accepted: u64,
        /// Genuine receipts submitted (count).
        pub genuine_submitted: u64,
        /// Genuine receipts the ledger refused; should be 0 (count).
        pub genuine_rejected: u64,
        /// Fraudulent submissions: swaps, ghost receipts and replays (count).
        pub fraud_submitted: u64,
        /// Fraudulent submissions the ledger refused (count).
        pub fraud_rejected: u64,
        /// Fraudulent submissions the ledger settled (count).
        pub fraud_accepted: u64,
        /// fraud_rejected / fraud_submitted (ratio; 1 when nothing was submitted).
        pub fraud_rejected_fraction: f64,
        /// Receipts naming an accomplice's specialist instead of the one served (count).
        pub swap_submitted: u64,
        /// Swapped receipts refused (count).
        pub swap_rejected: u64,
        /// Fabricated receipts for ghost specialists (count).
        pub ghost_submitted: u64,
        /// Ghost receipts refused (count).
        pub ghost_rejected: u64,
        /// Verbatim replays of paid receipts (count).
        pub replay_submitted: u64,
        /// Replays refused (count).
        pub replay_rejected: u64,
        /// Refusals because the id did not match the contents (count).
        pub rejected_id_mismatch: u64,
        /// Refusals because the receipt was already settled (count).
        pub rejected_replay: u64,
        /// Refusals for an unknown manifest, server or client (count).
        pub rejected_unknown: u64,
        /// Refusals for a missing client signature (count).
        pub rejected_missing_signature: u64,
        /// Refusals for a client signature that did not verify (count).
        pub rejected_bad_signature: u64,
        /// Settlements accepted for a receipt id already settled, counted by the simulation (count).
        pub double_counted: u64,
        /// Sum of the fees of the operations served (units).
        pub fees_served: u64,
        /// Sum of the fees of the accepted receipts (units).
        pub fees_accepted: u64,
        /// Sum of the trainer balances (units).
        pub trainer_paid_total: u64,
        /// Sum of the server balances (units).
        pub server_paid_total: u64,
        /// Sum of the client charges (units).
        pub clients_charged_total: u64,
        /// Sum of the fees of accepted fraudulent receipts (units).
        pub fraud_units_paid: u64,
        /// Trainer shares credited on accepted swaps, moved from the specialist served to an accomplice (units).
        pub royalty_diverted_units: u64,
        /// Units credited to trainers of specialists never served (units).
        pub unserved_royalty_units: u64,
        /// Never-served specialists credited any units (count).
        pub unserved_specialists_paid: u64,
        /// Shortfalls of honest trainers and servers plus overcharges of clients, against ground truth (units).
        pub honest_units_lost: u64,
        /// Settled receipts whose shares do not sum to the fee, plus 1 if credits and 1 if client charges do not sum to the settled fees (count).
        pub conservation_violations: u64,
        /// Largest |ledger balance - balance recomputed from the operations served| over every trainer, server and client account (units).
        pub max_abs_imbalance: u64,
    }
}

impl From<ScaleOutcome> for ScaleMetrics {
    fn from(o: ScaleOutcome) -> Self {
        let (submitted, rejected) = (o.fraud_submitted(), o.fraud_rejected());
        let fraction = if submitted == 0 { 1.0 } else { rejected as f64 / submitted as f64 };
        ScaleMetrics {
            operations: o.operations,
            byzantine_operations: o.byzantine_operations,
            byzantine_servers: o.byzantine_servers,
            registered_specialists: o.registered_specialists,
            ghosts_registered: o.ghosts_registered,
            never_served_specialists: o.never_served_specialists,
            submissions: o.submissions,
            accepted: o.accepted,
            genuine_submitted: o.genuine_submitted,
            genuine_rejected: o.genuine_rejected,
            fraud_submitted: submitted,
            fraud_rejected: rejected,
            fraud_accepted: submitted - rejected,
            fraud_rejected_fraction: fraction,
            swap_submitted: o.swap_submitted,
            swap_rejected: o.swap_rejected,
            ghost_submitted: o.ghost_submitted,
            ghost_rejected: o.ghost_rejected,
            replay_submitted: o.replay_submitted,
            replay_rejected: o.replay_rejected,
            rejected_id_mismatch: o.rejected_id_mismatch,
            rejected_replay: o.rejected_replay,
            rejected_unknown: o.rejected_unknown,
            rejected_missing_signature: o.rejected_missing_signature,
            rejected_bad_signature: o.rejected_bad_signature,
            double_counted: o.double_counted,
            fees_served: o.fees_served,
            fees_accepted: o.fees_accepted,
            trainer_paid_total: o.trainer_paid_total,
            server_paid_total: o.server_paid_total,
            clients_charged_total: o.clients_charged_total,
            fraud_units_paid: o.fraud_units_paid,
            royalty_diverted_units: o.royalty_diverted_units,
            unserved_royalty_units: o.unserved_royalty_units,
            unserved_specialists_paid: o.unserved_specialists_paid,
            honest_units_lost: o.honest_units_lost,
            conservation_violations: o.conservation_violations,
            max_abs_imbalance: o.max_abs_imbalance,
        }
    }
}

impl Kind for RoyaltyScale {
    const NAME: &'static str = "royalty-scale";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Settle a network's receipts while byzantine servers swap manifest hashes and bill ghost specialists, unsigned or client-signed; audit fraud paid and conservation.";
    type Params = ScaleParams;
    type Factors = Factors;
    type Metrics = ScaleMetrics;
    type Ready = ScaleParams;

    fn check(params: &ScaleParams) -> Result<(), ParamProblem> {
        Ok(params.validate()?)
    }

    fn prepare(params: &ScaleParams, _env: &Env) -> anyhow::Result<ScaleParams> {
        Ok(params.clone())
    }

    fn run(params: &ScaleParams, cell: &Cell, f: Factors) -> anyhow::Result<ScaleMetrics> {
        let p = ScaleParams {
            receipts: f.receipts.unwrap_or(params.receipts),
            operations: f.operations.unwrap_or(params.operations),
            byzantine_fraction: f.byzantine_fraction.unwrap_or(params.byzantine_fraction),
            ..params.clone()
        };
        let o = scale::simulate(&p, f.seed).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(o.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::{cell, check, prepare};
    use crate::kinds::{Metrics, find};
    use crate::table::Value;

    const SMALL: &str = "operations = 1000\nspecialists = 100\nservers = 40\nclients = 200";

    #[test]
    fn royalty_scale_is_registered() {
        assert_eq!(find("royalty-scale").map(|e| e.kind()), Some("royalty-scale"));
        let e = find("royalty-scale").unwrap();
        let receipts = e.factors().iter().find(|f| f.name == "receipts").unwrap();
        assert_eq!(receipts.allowed, ["unsigned", "client-signed"]);
        assert!(!receipts.required);
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = prepare("royalty-scale", SMALL);
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1)), ("receipts", Value::from("unsigned"))])).unwrap();
        let mut declared: Vec<_> = ScaleMetrics::columns().iter().map(|m| m.name).collect();
        declared.sort();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        assert_eq!(emitted, declared);
        for m in ScaleMetrics::columns() {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["operations"], Value::Int(1000));
        assert_eq!(row["byzantine_servers"], Value::Int(2));
        assert_eq!(row["conservation_violations"], Value::Int(0));
        assert_eq!(row["ghost_rejected"], Value::Int(0));
        let int = |name: &str| match row[name] {
            Value::Int(i) => i,
            ref v => panic!("{name} = {v:?}"),
        };
        assert_eq!(int("fraud_accepted"), int("ghost_submitted") + int("swap_submitted"));
    }

    #[test]
    fn the_receipts_factor_selects_the_arm() {
        let ready = prepare("royalty-scale", SMALL);
        let run =
            |arm: &str| ready.run_cell(&cell(&[("seed", Value::Int(2)), ("receipts", Value::from(arm))])).unwrap();
        let (unsigned, signed) = (run("unsigned"), run("client-signed"));
        assert_eq!(unsigned["fees_served"], signed["fees_served"]);
        assert_eq!(signed["fraud_accepted"], Value::Int(0));
        assert_eq!(signed["fraud_rejected_fraction"], Value::Float(1.0));
        assert_eq!(signed["unserved_royalty_units"], Value::Int(0));
        assert_ne!(unsigned["fraud_accepted"], Value::Int(0));
        // The default arm is the client-signed one.
        assert_eq!(ready.run_cell(&cell(&[("seed", Value::Int(2))])).unwrap(), signed);
        let bad = ready.run_cell(&cell(&[("seed", Value::Int(0)), ("receipts", Value::from("notarised"))]));
        assert!(bad.unwrap_err().to_string().contains("`receipts`"));
    }

    #[test]
    fn factors_override_parameters() {
        let ready = prepare("royalty-scale", SMALL);
        let row = ready
            .run_cell(&cell(&[
                ("seed", Value::Int(0)),
                ("operations", Value::Int(300)),
                ("byzantine_fraction", Value::Int(0)),
            ]))
            .unwrap();
        assert_eq!(row["operations"], Value::Int(300));
        assert_eq!(row["fraud_submitted"], Value::Int(0));
        assert_eq!(row["fraud_rejected_fraction"], Value::Float(1.0));
        let bad = ready.run_cell(&cell(&[("seed", Value::Int(0)), ("operations", Value::Int(0))]));
        assert!(bad.unwrap_err().to_string().contains("`operations`"));
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = prepare("royalty-scale", SMALL);
        let c = cell(&[("seed", Value::Int(4)), ("receipts", Value::from("client-signed"))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(check("royalty-scale", ""), Ok(()));
        let e = check("royalty-scale", "operations = 10\nrequests = 3").unwrap_err();
        assert!(e.contains("requests"), "{e}");
        let e = check("royalty-scale", "receipts = \"notarised\"").unwrap_err();
        assert!(e.contains("receipts") || e.contains("notarised"), "{e}");
        let e = check("royalty-scale", "byzantine_fraction = 2.0").unwrap_err();
        assert!(e.contains("byzantine_fraction"), "{e}");
        let e = check("royalty-scale", "ghosts_per_byzantine = 0").unwrap_err();
        assert!(e.contains("ghost_receipts_per_op"), "{e}");
    }

    #[test]
    fn a_cell_without_a_seed_is_an_error() {
        let ready = prepare("royalty-scale", SMALL);
        assert!(ready.run_cell(&cell(&[])).unwrap_err().to_string().contains("seed"));
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("68_royalty_scale.toml", "royalty-scale");
    }
}
