//! Experiment kind `revocation-vote` (bet 66): revoke a misbehaving
//! specialist by gossip vote among byzantine nodes and churn, and audit how
//! fast it is revoked and whether an honest one ever is. See
//! [`crate::sim::revocation`] for the protocol, the adversary and the audit;
//! its [`RevocationParams`] are the kind's parameters as they stand.
//!
//! Every cell runs the whole simulation. The optional factor
//! `observe_round` picks the round whose state the per-round metrics
//! (`revoked_fraction`, `votes_held_fraction`, `honest_votes_max_fraction`)
//! report, so a grid of `observe_round` x `seed` draws the revocation curve;
//! the run-level metrics are the same in every cell of one seed. The cells
//! of one seed share one simulation: it runs once per (parameters, seed) in
//! a run, whichever cell asks first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;

use super::memo::{Memo, memo};
use super::{Cell, Env, Kind, ParamProblem};
use crate::sim::revocation::{self, RevocationOutcome, RevocationParams};

/// The `revocation-vote` kind.
pub struct RevocationVote;

/// The grid factors: a seed, the round to observe, and optional per-cell
/// overrides of parameters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds membership (byzantine seats, churn), evidence, peer choice and message loss.
    seed: u64,
    /// Round (0..=max_rounds) whose state the per-round metrics report; default max_rounds (the end).
    observe_round: Option<usize>,
    /// Overrides the `nodes` parameter for this cell.
    nodes: Option<usize>,
    /// Overrides the `churn` parameter for this cell.
    churn: Option<f64>,
    /// Overrides the `loss` parameter for this cell.
    loss: Option<f64>,
    /// Overrides the `fanout` parameter for this cell.
    fanout: Option<usize>,
    /// Overrides the `detection` parameter for this cell.
    detection: Option<f64>,
    /// Overrides the `false_accusation` parameter for this cell.
    false_accusation: Option<f64>,
    /// Overrides the `equivocate` parameter for this cell.
    equivocate: Option<bool>,
    /// Overrides the `withhold` parameter for this cell.
    withhold: Option<bool>,
}

crate::metrics! {
    /// What one revocation simulation measured.
    pub struct RevocationMetrics {
        /// At observe_round: fraction of the live honest nodes that consider the misbehaving specialist revoked (the least-revoked one when several) (ratio).
        pub revoked_fraction: f64,
        /// At observe_round: mean over live honest nodes of the votes counted toward revoking the misbehaving specialist, over the presumed-honest membership; revoking needs just above the quorum fraction (ratio).
        pub votes_held_fraction: f64,
        /// At observe_round: largest count toward revoking an honest specialist at any live honest node, over the presumed-honest membership (ratio; 0 without honest specialists).
        pub honest_votes_max_fraction: f64,
        /// Whether the revoked fraction reached target within max_rounds.
        pub reached_target: bool,
        /// First round at which the revoked fraction reached target; max_rounds + 1 when it did not (rounds).
        pub rounds_to_target: usize,
        /// Lowest revoked fraction from rounds_to_target to the end; 0 when the target was not reached (ratio).
        pub revoked_fraction_min_after: f64,
        /// Revoked fraction after the last round (ratio).
        pub revoked_fraction_final: f64,
        /// Honest specialists revoked by at least one honest node at some round: the catastrophe (count).
        pub honest_revoked: usize,
        /// (honest node, honest specialist) revocations over the run (count).
        pub honest_revocations: u64,
        /// Largest count toward revoking an honest specialist at any live honest node over the run (votes).
        pub peak_honest_votes: usize,
        /// Votes a node must count to revoke: more than quorum of the presumed-honest membership (votes).
        pub threshold: usize,
        /// Byzantine nodes, constant through churn (count).
        pub byzantine_nodes: usize,
        /// Honest votes cast against misbehaving specialists (count).
        pub honest_votes_cast: u64,
        /// Honest votes cast against honest specialists (count).
        pub false_accusations: u64,
        /// Distinct signed votes byzantine identities cast against honest specialists (count).
        pub byzantine_votes_cast: u64,
        /// (byzantine identity, specialist) pairs signed twice (count).
        pub equivocations_made: u64,
        /// Of those, held in both versions by some honest node by the end (count).
        pub equivocations_detected: u64,
        /// Gossip messages sent, replies included; the byzantine flood is not counted (count).
        pub messages_sent: u64,
        /// Gossip messages lost in transit (count).
        pub messages_lost: u64,
        /// Pushes honest nodes sent to byzantine peers (count).
        pub messages_to_byzantine: u64,
        /// Nodes that left during the run (count).
        pub departed: usize,
    }
}

impl RevocationMetrics {
    fn new(o: &RevocationOutcome, observe: usize) -> Self {
        let (at, last) = (o.curve[observe], o.curve[o.curve.len() - 1]);
        RevocationMetrics {
            revoked_fraction: at.revoked_fraction,
            votes_held_fraction: at.votes_held_fraction,
            honest_votes_max_fraction: at.honest_votes_max_fraction,
            reached_target: o.reached,
            rounds_to_target: o.rounds_to_target,
            revoked_fraction_min_after: o.revoked_fraction_min_after,
            revoked_fraction_final: last.revoked_fraction,
            honest_revoked: o.honest_revoked,
            honest_revocations: o.honest_revocations,
            peak_honest_votes: o.peak_honest_votes,
            threshold: o.threshold,
            byzantine_nodes: o.byzantine_nodes,
            honest_votes_cast: o.honest_votes_cast,
            false_accusations: o.false_accusations,
            byzantine_votes_cast: o.byzantine_votes_cast,
            equivocations_made: o.equivocations_made,
            equivocations_detected: o.equivocations_detected,
            messages_sent: o.messages_sent,
            messages_lost: o.messages_lost,
            messages_to_byzantine: o.messages_to_byzantine,
            departed: o.departed,
        }
    }
}

/// What the cells of a run share: the parameters, and each simulation
/// already run, by its parameters and seed.
pub struct Simulations {
    params: RevocationParams,
    runs: Memo<Arc<RevocationOutcome>>,
}

impl Simulations {
    /// The outcome of `params` at `seed`, simulated on first use; a cell
    /// asking while another simulates it waits for that result.
    fn outcome(&self, params: &RevocationParams, seed: u64) -> anyhow::Result<Arc<RevocationOutcome>> {
        let key = format!("{}/{seed}", serde_json::to_string(params).expect("parameters serialise"));
        memo(&self.runs, key, || Ok(Arc::new(revocation::simulate(params, seed)?)))
    }
}

impl Kind for RevocationVote {
    const NAME: &'static str = "revocation-vote";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Revoke a misbehaving specialist by gossip vote among byzantine nodes and churn; measure rounds until a target fraction of the honest nodes revoke it, and whether any honest specialist is.";
    type Params = RevocationParams;
    type Factors = Factors;
    type Metrics = RevocationMetrics;
    type Ready = Simulations;

    fn check(params: &RevocationParams) -> Result<(), ParamProblem> {
        Ok(params.validate()?)
    }

    fn prepare(params: &RevocationParams, _env: &Env) -> anyhow::Result<Simulations> {
        Ok(Simulations { params: params.clone(), runs: Mutex::new(HashMap::new()) })
    }

    fn run(ready: &Simulations, cell: &Cell, f: Factors) -> anyhow::Result<RevocationMetrics> {
        let params = &ready.params;
        let p = RevocationParams {
            nodes: f.nodes.unwrap_or(params.nodes),
            churn: f.churn.unwrap_or(params.churn),
            loss: f.loss.unwrap_or(params.loss),
            fanout: f.fanout.unwrap_or(params.fanout),
            detection: f.detection.unwrap_or(params.detection),
            false_accusation: f.false_accusation.unwrap_or(params.false_accusation),
            equivocate: f.equivocate.unwrap_or(params.equivocate),
            withhold: f.withhold.unwrap_or(params.withhold),
            ..params.clone()
        };
        let observe = f.observe_round.unwrap_or(p.max_rounds);
        if observe > p.max_rounds {
            anyhow::bail!("cell {}: `observe_round` {observe} is past max_rounds = {}", cell.index, p.max_rounds);
        }
        let o = ready.outcome(&p, f.seed).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(RevocationMetrics::new(&o, observe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::{cell, check, prepare};
    use crate::kinds::{Metrics, find};
    use crate::table::Value;

    #[test]
    fn revocation_vote_is_registered() {
        assert_eq!(find("revocation-vote").map(|e| e.kind()), Some("revocation-vote"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = prepare("revocation-vote", "nodes = 100\nmax_rounds = 12");
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1))])).unwrap();
        let mut declared: Vec<_> = RevocationMetrics::columns().iter().map(|m| m.name).collect();
        declared.sort();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        assert_eq!(emitted, declared);
        for m in RevocationMetrics::columns() {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["threshold"], Value::Int(51)); // more than 2/3 of 75
        assert_eq!(row["byzantine_nodes"], Value::Int(25));
        assert_eq!(row["departed"], Value::Int(10 * 12));
        // Without observe_round the per-round metrics are the end state.
        assert_eq!(row["revoked_fraction"], row["revoked_fraction_final"]);
    }

    #[test]
    fn observe_round_picks_the_round_and_leaves_the_run_alone() {
        let ready = prepare("revocation-vote", "nodes = 60\nmax_rounds = 8");
        let at = |r: i64| ready.run_cell(&cell(&[("seed", Value::Int(2)), ("observe_round", Value::Int(r))])).unwrap();
        let (start, end) = (at(0), at(8));
        assert_eq!(start["revoked_fraction"], Value::Float(0.0));
        assert_eq!(start["votes_held_fraction"], Value::Float(0.0));
        assert_eq!(start["honest_votes_max_fraction"], Value::Float(0.0));
        assert_eq!(end["revoked_fraction"], end["revoked_fraction_final"]);
        for m in ["rounds_to_target", "honest_revoked", "messages_sent", "revoked_fraction_final"] {
            assert_eq!(start[m], end[m], "{m}");
        }
        let late = ready.run_cell(&cell(&[("seed", Value::Int(2)), ("observe_round", Value::Int(9))]));
        assert!(late.unwrap_err().to_string().contains("`observe_round`"));
    }

    #[test]
    fn factors_override_parameters() {
        let ready = prepare("revocation-vote", "nodes = 10\nbyzantine = 0.0\nchurn = 0.0\nmax_rounds = 5");
        let c = cell(&[
            ("seed", Value::Int(0)),
            ("fanout", Value::Int(9)),
            ("loss", Value::Int(0)),
            ("detection", Value::Int(1)),
        ]);
        let row = ready.run_cell(&c).unwrap();
        assert_eq!(row["rounds_to_target"], Value::Int(1));
        assert_eq!(row["messages_sent"], Value::Int(10 * 9 * 2 * 5));
        let bad = cell(&[("seed", Value::Int(0)), ("fanout", Value::Int(10))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`fanout`"));
        let bad = cell(&[("seed", Value::Int(0)), ("equivocate", Value::from("sometimes"))]);
        assert!(ready.run_cell(&bad).unwrap_err().to_string().contains("`equivocate`"));
    }

    #[test]
    fn the_cells_of_one_seed_share_one_simulation() {
        let params = RevocationParams { nodes: 60, max_rounds: 6, ..RevocationParams::default() };
        let ready = RevocationVote::prepare(&params, &crate::kinds::testing::env()).unwrap();
        let at = |seed, round| Factors { seed, observe_round: Some(round), ..Factors::default() };
        let c = cell(&[]);
        for round in 0..=6 {
            RevocationVote::run(&ready, &c, at(3, round)).unwrap();
        }
        RevocationVote::run(&ready, &c, at(4, 0)).unwrap();
        assert_eq!(ready.runs.lock().unwrap().len(), 2);
        let direct = revocation::simulate(&params, 3).unwrap();
        assert_eq!(RevocationVote::run(&ready, &c, at(3, 2)).unwrap(), RevocationMetrics::new(&direct, 2));
        let other = Factors { churn: Some(0.0), ..at(3, 2) };
        RevocationVote::run(&ready, &c, other).unwrap();
        assert_eq!(ready.runs.lock().unwrap().len(), 3, "another parameter is another simulation");
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = prepare("revocation-vote", "nodes = 120");
        let c = cell(&[("seed", Value::Int(7)), ("observe_round", Value::Int(5))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(check("revocation-vote", ""), Ok(()));
        assert_eq!(check("revocation-vote", "quorum = \"3/4\""), Ok(()));
        let e = check("revocation-vote", "nodes = 10\nttl = 3").unwrap_err();
        assert!(e.contains("ttl"), "{e}");
        let e = check("revocation-vote", "quorum = 0.67").unwrap_err();
        assert!(e.contains("quorum"), "{e}");
        let e = check("revocation-vote", "quorum = \"two thirds\"").unwrap_err();
        assert!(e.contains("quorum") && e.contains("\"2/3\""), "{e}");
        let e = check("revocation-vote", "quorum = \"4/3\"").unwrap_err();
        assert!(e.contains("quorum"), "{e}");
        let e = check("revocation-vote", "detection = 2.0").unwrap_err();
        assert!(e.contains("detection"), "{e}");
        let e = check("revocation-vote", "equivocate = 1").unwrap_err();
        assert!(e.contains("equivocate"), "{e}");
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("66_revocation_vote.toml", "revocation-vote");
    }
}
