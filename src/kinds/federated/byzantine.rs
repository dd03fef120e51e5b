//! Kind `byzantine-aggregation` (bet 44): DiLoCo over `workers` workers of
//! which `byzantine` (chosen by the replicate's seed) send a forged
//! pseudo-gradient in place of their honest one, aggregated by one rule;
//! the cell reports the final held-out loss. The forging happens at the
//! coordinator's door: the byzantine workers train honestly, and the
//! attacker knows every honest update of the round (the strongest
//! attacker the rules are meant to survive).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Bench, Training};
use crate::federated::attack::{Attack, byzantine_workers};
use crate::federated::{Byzantine, Outer, Plan, Rule, Synced, diloco};
use crate::kinds::memo::{Memo, memo};
use crate::kinds::{Cell, Env, Kind, ParamProblem};
use crate::seed::derive_seed;

/// The `byzantine-aggregation` kind.
pub struct ByzantineAggregation;

/// `[procedure]` of `byzantine-aggregation` (unknown keys are refused by
/// the flattened [`Training`]).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct Params {
    /// Workers (n).
    pub workers: usize,
    /// Byzantine workers among them (f); also the f the robust rules assume.
    pub byzantine: usize,
    /// Inner steps per round.
    pub k: usize,
    /// Rounds.
    pub rounds: usize,
    /// The `scale` attack's factor.
    pub scale: f64,
    /// The `gaussian` attack's standard deviation (per coordinate).
    pub sigma: f64,
    /// The `little-is-enough` attack's shift, in honest standard deviations.
    pub z: f64,
    /// The trimmed mean's trim fraction at each end.
    pub trim: f64,
    #[serde(flatten)]
    pub training: Training,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            workers: 8,
            byzantine: 1,
            k: 10,
            rounds: 20,
            scale: 1000.0,
            sigma: 1.0,
            z: 1.5,
            trim: 0.125,
            training: Training::default(),
        }
    }
}

/// An aggregation rule as a grid names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuleName {
    Mean,
    Median,
    TrimmedMean,
    Krum,
    /// The mean of the n - f best Krum scores.
    MultiKrum,
    Bulyan,
}

/// An attack as a grid names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttackName {
    /// Every worker honest.
    None,
    /// The honest pseudo-gradient times `scale`.
    Scale,
    SignFlip,
    /// Normal noise of standard deviation `sigma`.
    Gaussian,
    /// The honest mean minus `z` honest standard deviations, per coordinate.
    LittleIsEnough,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    rule: RuleName,
    attack: AttackName,
    /// The replicate: init, shards, data order, and which workers are byzantine.
    seed: u64,
}

crate::metrics! {
    /// One rule against one attack.
    pub struct ByzantineMetrics {
        /// Held-out cross-entropy of the final parameters, nats per byte (of the last finite ones if the run diverged).
        pub nll: f64,
        /// `nll` over that of the attack-free mean of the same replicate.
        pub loss_ratio: f64,
        /// Held-out perplexity per byte.
        pub ppl: f64,
        /// Whether an update or the parameters stopped being finite (1) or not (0).
        pub diverged: u64,
        /// Rounds whose update was applied.
        pub rounds_applied: u64,
        /// Mean training loss of the honest workers in the last applied round.
        pub train_loss: f64,
        /// Index of the byzantine worker (the first, if several; -1 without attack).
        pub byzantine_worker: i64,
        /// Bytes exchanged, both ways, frame headers included.
        pub bytes: u64,
        /// Wall seconds of the run (a measurement, not decided on).
        pub run_seconds: f64,
    }
}

/// What every cell shares: the runs so far, by (rule, attack, seed), so
/// the attack-free mean every cell is compared with is trained once.
pub struct Ready {
    params: Params,
    bench: Bench,
    runs: Memo<Arc<ByzantineMetrics>>,
}

impl Params {
    fn rule(&self, name: RuleName) -> Rule {
        let f = self.byzantine;
        match name {
            RuleName::Mean => Rule::Mean,
            RuleName::Median => Rule::Median,
            RuleName::TrimmedMean => Rule::TrimmedMean { trim: self.trim },
            RuleName::Krum => Rule::Krum { f },
            RuleName::MultiKrum => Rule::MultiKrum { f, m: self.workers - f },
            RuleName::Bulyan => Rule::Bulyan { f },
        }
    }

    fn attack(&self, name: AttackName) -> Option<Attack> {
        Some(match name {
            AttackName::None => return None,
            AttackName::Scale => Attack::Scale { factor: self.scale },
            AttackName::SignFlip => Attack::SignFlip,
            AttackName::Gaussian => Attack::Gaussian { sigma: self.sigma },
            AttackName::LittleIsEnough => Attack::LittleIsEnough { z: self.z },
        })
    }
}

impl Kind for ByzantineAggregation {
    const NAME: &'static str = "byzantine-aggregation";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "DiLoCo over n workers, f of them byzantine (scaled, sign-flipped, Gaussian or 'a little is enough' pseudo-gradients), aggregated by mean, median, trimmed mean, Krum, Multi-Krum or Bulyan; final held-out loss.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = ByzantineMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        ParamProblem::all_positive(&[("workers", p.workers), ("k", p.k), ("rounds", p.rounds)])?;
        if p.byzantine >= p.workers {
            return Err(ParamProblem::new("byzantine", format!("must be below workers ({})", p.workers)));
        }
        for (key, v) in [("scale", p.scale), ("sigma", p.sigma), ("z", p.z)] {
            if !v.is_finite() {
                return Err(ParamProblem::new(key, "must be finite"));
            }
        }
        if !(0.0..0.5).contains(&p.trim) {
            return Err(ParamProblem::new("trim", "must be in [0, 0.5)"));
        }
        p.training.check()
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready { params: p.clone(), bench: Bench::new(p.training.clone(), env)?, runs: Mutex::new(HashMap::new()) })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs.clone()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<ByzantineMetrics> {
        let own = r.run(f.rule, f.attack, f.seed)?;
        let reference = r.run(RuleName::Mean, AttackName::None, f.seed)?;
        Ok(ByzantineMetrics { loss_ratio: own.nll / reference.nll, ..(*own).clone() })
    }
}

impl Ready {
    /// The run of `rule` against `attack` in replicate `seed`, trained once.
    fn run(&self, rule: RuleName, attack: AttackName, seed: u64) -> anyhow::Result<Arc<ByzantineMetrics>> {
        memo(&self.runs, format!("{rule:?}/{attack:?}/{seed}"), || Ok(Arc::new(self.train(rule, attack, seed)?)))
    }

    fn train(&self, rule: RuleName, attack: AttackName, seed: u64) -> anyhow::Result<ByzantineMetrics> {
        let p = &self.params;
        let byzantine = p.attack(attack).map(|attack| Byzantine {
            attack,
            workers: byzantine_workers(p.workers, p.byzantine, derive_seed(&seed.to_string(), "byzantine workers")),
            seed: derive_seed(&seed.to_string(), "forged updates"),
        });
        let first = byzantine.as_ref().and_then(|b| b.workers.first().map(|&w| w as i64)).unwrap_or(-1);
        let plan = Plan {
            k: p.k,
            rounds: p.rounds,
            outer: Outer { lr: p.training.outer_lr, momentum: p.training.outer_momentum, nesterov: true },
            rule: p.rule(rule),
            byzantine,
        };
        let mut s = self.bench.start(p.workers, p.k * p.rounds, seed)?;
        let mut last_loss = f64::NAN;
        let mut record = |at: Synced| {
            last_loss = at.loss;
            anyhow::Ok(())
        };
        let outcome = diloco(s.fleet.as_mut(), s.init.clone(), &plan, &mut record)
            .map_err(|e| anyhow::anyhow!("rule {rule:?} against attack {attack:?}: {e:#}"))?;
        let eval = self.bench.evaluate(&outcome.params)?;
        let non_finite = !eval.nll.is_finite();
        Ok(ByzantineMetrics {
            nll: eval.nll,
            loss_ratio: 1.0,
            ppl: eval.ppl,
            diverged: (outcome.diverged.is_some() || non_finite) as u64,
            rounds_applied: outcome.completed as u64,
            train_loss: last_loss,
            byzantine_worker: first,
            bytes: s.fleet.traffic().total(),
            run_seconds: s.started.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing;
    use crate::table::Value;

    const TINY: &str = "workers = 5\nbyzantine = 1\nk = 1\nrounds = 2\nbatch = 1\nseq = 16\nwarmup = 1\neval_bytes = 512\nmode = \"in-process\"";

    fn cell(rule: &str, attack: &str) -> crate::kinds::Cell {
        testing::cell(&[
            ("rule", Value::Str(rule.into())),
            ("attack", Value::Str(attack.into())),
            ("seed", Value::Int(0)),
        ])
    }

    #[test]
    fn each_rule_runs_against_each_attack_and_is_compared_with_the_attack_free_mean() {
        let ready = testing::prepare("byzantine-aggregation", TINY);
        let clean = ready.run_cell(&cell("mean", "none")).unwrap();
        assert_eq!(clean["loss_ratio"], Value::Float(1.0));
        assert_eq!(clean["byzantine_worker"], Value::Int(-1));
        let scaled_mean = ready.run_cell(&cell("mean", "scale")).unwrap();
        let scaled_median = ready.run_cell(&cell("median", "scale")).unwrap();
        let worker = scaled_median["byzantine_worker"].as_i64().unwrap();
        assert!((0..5).contains(&worker));
        assert_eq!(scaled_mean["byzantine_worker"], Value::Int(worker), "the replicate picks the byzantine worker");
        let ratio = |r: &crate::table::Row| r["loss_ratio"].as_f64().unwrap();
        let mean_hurt =
            scaled_mean["diverged"] == Value::Int(1) || !ratio(&scaled_mean).is_finite() || ratio(&scaled_mean) > 1.5;
        assert!(mean_hurt, "a 1000x update through the mean: {scaled_mean:?}");
        assert!(ratio(&scaled_median) < 1.2, "the median shrugs it off: {scaled_median:?}");
        for rule in ["trimmed-mean", "krum", "multi-krum"] {
            for attack in ["sign-flip", "gaussian", "little-is-enough"] {
                let row = ready.run_cell(&cell(rule, attack)).unwrap();
                assert_eq!(row["rounds_applied"], Value::Int(2), "{rule} x {attack}");
            }
        }
        // Bulyan needs n >= 4f + 3 = 7 workers: a named error with 5.
        let e = ready.run_cell(&cell("bulyan", "scale")).unwrap_err().to_string();
        assert!(e.contains("Bulyan with f = 1 needs at least 7 updates, got 5"), "{e}");
        let e = testing::check("byzantine-aggregation", "workers = 4\nbyzantine = 4").unwrap_err();
        assert!(e.starts_with("byzantine:"), "{e}");
    }
}
