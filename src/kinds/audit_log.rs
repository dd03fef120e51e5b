//! Experiment kind `audit-log` (bet 64): a dishonest log operator forges,
//! deletes or forks entries of a Merkle-committed inference log, and a
//! verifier holding an earlier signed checkpoint tries to catch it. See
//! [`crate::sim::audit_log`] for the model; its [`AuditLogParams`] are the
//! kind's parameters as they stand.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Cell, Env, Kind, ParamProblem};
use crate::sim::audit_log::{self, Attack, AuditLogOutcome, AuditLogParams, Verifier};

/// The `audit-log` kind.
pub struct AuditLog;

/// The grid factors: a seed, and optional per-cell overrides of parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the log's traffic and key, the honest sample and the adversary.
    seed: u64,
    /// Overrides the `attack` parameter for this cell.
    attack: Option<Attack>,
    /// Overrides the `verifier` parameter for this cell.
    verifier: Option<Verifier>,
    /// Overrides the `entries` parameter for this cell.
    entries: Option<usize>,
}

crate::metrics! {
    /// What one audit of the log measured.
    pub struct AuditLogMetrics {
        /// Entries in the honest log (count).
        pub entries: u64,
        /// Checkpoints the honest operator signed (count).
        pub checkpoints: u64,
        /// Of those, verified with the log's public key (count).
        pub checkpoints_verified: u64,
        /// Honest presentations (sampled entry, final checkpoint, consistency and inclusion proofs) checked (count).
        pub honest_checks: u64,
        /// Of those, refused by the verifier: false alarms (count).
        pub honest_rejected: u64,
        /// Attack presentations made (count).
        pub attempts: u64,
        /// Of those, refused by the verifier (count).
        pub detected: u64,
        /// Refused because the checkpoint's signature failed (count).
        pub detected_by_signature: u64,
        /// Refused because the presented log was smaller than the held checkpoint (count).
        pub detected_by_rollback: u64,
        /// Refused because the consistency proof with the held checkpoint failed (count).
        pub detected_by_consistency: u64,
        /// Refused because the entry's inclusion proof failed (count).
        pub detected_by_inclusion: u64,
        /// detected / attempts (fraction; 1 when there were no attempts).
        pub detected_fraction: f64,
    }
}

impl From<AuditLogOutcome> for AuditLogMetrics {
    fn from(o: AuditLogOutcome) -> Self {
        let fraction = if o.attempts == 0 { 1.0 } else { o.detected as f64 / o.attempts as f64 };
        AuditLogMetrics {
            entries: o.entries,
            checkpoints: o.checkpoints,
            checkpoints_verified: o.checkpoints_verified,
            honest_checks: o.honest_checks,
            honest_rejected: o.honest_rejected,
            attempts: o.attempts,
            detected: o.detected,
            detected_by_signature: o.detected_by_signature,
            detected_by_rollback: o.detected_by_rollback,
            detected_by_consistency: o.detected_by_consistency,
            detected_by_inclusion: o.detected_by_inclusion,
            detected_fraction: fraction,
        }
    }
}

impl Kind for AuditLog {
    const NAME: &'static str = "audit-log";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "A log operator forges, deletes or forks entries of an RFC 6962 inference log; count what a verifier holding an earlier signed checkpoint catches.";
    type Params = AuditLogParams;
    type Factors = Factors;
    type Metrics = AuditLogMetrics;
    type Ready = AuditLogParams;

    fn check(params: &AuditLogParams) -> Result<(), ParamProblem> {
        Ok(params.validate()?)
    }

    fn prepare(params: &AuditLogParams, _env: &Env) -> anyhow::Result<AuditLogParams> {
        Ok(params.clone())
    }

    fn run(params: &AuditLogParams, cell: &Cell, f: Factors) -> anyhow::Result<AuditLogMetrics> {
        let p = AuditLogParams {
            attack: f.attack.unwrap_or(params.attack),
            verifier: f.verifier.unwrap_or(params.verifier),
            entries: f.entries.unwrap_or(params.entries),
            ..params.clone()
        };
        let o = audit_log::simulate(&p, f.seed).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(o.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::{cell, check, prepare};
    use crate::kinds::{Metrics, find};
    use crate::table::Value;

    const SMALL: &str = "entries = 200\ncheckpoint_every = 20\nhonest_checks = 30\nattempts = 10";

    #[test]
    fn audit_log_is_registered() {
        assert_eq!(find("audit-log").map(|e| e.kind()), Some("audit-log"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = prepare("audit-log", SMALL);
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1)), ("attack", Value::from("fork"))])).unwrap();
        let mut declared: Vec<_> = AuditLogMetrics::columns().iter().map(|m| m.name).collect();
        declared.sort();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        assert_eq!(emitted, declared);
        for m in AuditLogMetrics::columns() {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["checkpoints"], Value::Int(10));
        assert_eq!(row["detected"], Value::Int(10));
        assert_eq!(row["detected_by_consistency"], Value::Int(10));
        assert_eq!(row["detected_fraction"], Value::Float(1.0));
        assert_eq!(row["honest_rejected"], Value::Int(0));
    }

    #[test]
    fn factors_override_parameters() {
        let ready = prepare("audit-log", SMALL);
        let c = cell(&[
            ("seed", Value::Int(0)),
            ("attack", Value::from("delete")),
            ("verifier", Value::from("latest-only")),
            ("entries", Value::Int(100)),
        ]);
        let row = ready.run_cell(&c).unwrap();
        assert_eq!(row["entries"], Value::Int(100));
        assert_eq!(row["detected"], Value::Int(0));
        let bad = cell(&[("seed", Value::Int(0)), ("attack", Value::from("bribe"))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("attack"));
        let bad = cell(&[("seed", Value::Int(0)), ("entries", Value::Int(30))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`checkpoint_every`"));
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = prepare("audit-log", SMALL);
        let c = cell(&[("seed", Value::Int(3)), ("attack", Value::from("forge"))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(check("audit-log", ""), Ok(()));
        let e = check("audit-log", "entries = 10\nfanout = 3").unwrap_err();
        assert!(e.contains("fanout"), "{e}");
        let e = check("audit-log", "attack = \"bribe\"").unwrap_err();
        assert!(e.contains("attack") || e.contains("bribe"), "{e}");
        let e = check("audit-log", "specialists = 1").unwrap_err();
        assert!(e.contains("specialists"), "{e}");
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("64_audit_log.toml", "audit-log");
    }
}
