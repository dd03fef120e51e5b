//! Kind `weight-soup` (bet 31): every tensor of two specialists linearly
//! interpolated, `(1 - alpha) * first + alpha * second`, evaluated on both
//! specialists' held-out text pooled. The specialists are either trained
//! from independent initialisations (each pre-trained from scratch on one
//! user's text with the profile's pre-training budget, different init seeds)
//! or, as the framing arm, two full fine-tunes of the one shared base.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Budget, Memo, PRETRAIN_THREADS, Workbench, memo};
use crate::data::Split;
use crate::engine::BaseModel;
use crate::engine::ablate::interpolate;
use crate::engine::config::Profile;
use crate::engine::eval::{EvalStats, evaluate};
use crate::engine::model::Weights;
use crate::kinds::{Cell, Env, Kind, ParamProblem};
use crate::services::BaseModels;

/// The `weight-soup` kind.
pub struct WeightSoup;

/// Where the two specialists come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Each pre-trained from its own seeded initialisation on one user's text.
    Independent,
    /// Two full fine-tunes (the budget's lr and steps) of the shared base.
    FineTunes,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Replication: the independent specialists' init seeds are
    /// `1000 + 2 * seed` and `1001 + 2 * seed`; the fine-tunes' data order is `seed`.
    seed: u64,
    /// Two users, `a+b`: the first is alpha = 0, the second alpha = 1.
    pair: String,
    /// `independent` or `fine-tunes`.
    origin: Origin,
    /// Interpolation weight of the second specialist, in [0, 1].
    alpha: f64,
}

crate::metrics! {
    /// What one interpolated model measured.
    pub struct SoupMetrics {
        /// Perplexity per byte on the pooled held-out text of both users.
        pub ppl: f64,
        /// Perplexity per byte on the first user's held-out text.
        pub ppl_first: f64,
        /// Perplexity per byte on the second user's held-out text.
        pub ppl_second: f64,
    }
}

/// The bench, the environment the specialists are pre-trained in, and the
/// specialists built so far.
pub struct Ready {
    bench: Workbench,
    env: Env,
    specialists: Memo<Arc<BaseModel>>,
}

impl Ready {
    /// The specialist of `user` pre-trained from scratch on that user's
    /// training text from init seed `init`: kept in the base-model store by
    /// content hash (profile, text, seed), so it is trained once.
    fn independent(&self, user: &str, init: u64) -> anyhow::Result<Arc<BaseModel>> {
        memo(&self.specialists, format!("{user}/{init}"), || {
            let profile = Profile::from_name(&self.env.profile)?;
            let (model, _) = BaseModels::new(self.env.paths.models_dir()).get_or_pretrain(
                &profile,
                &self.bench.corpus.train(user)?,
                &self.bench.corpus.eval(user, Split::A)?,
                init,
                PRETRAIN_THREADS,
                self.env.progress.as_ref(),
            )?;
            Ok(Arc::new(model))
        })
    }

    /// Both specialists' weights.
    fn parents(&self, origin: Origin, a: &str, b: &str, seed: u64) -> anyhow::Result<(Weights, Weights)> {
        Ok(match origin {
            Origin::Independent => (
                self.independent(a, 1000 + 2 * seed)?.weights.clone(),
                self.independent(b, 1001 + 2 * seed)?.weights.clone(),
            ),
            Origin::FineTunes => (
                self.bench.adapter("full", a, "real", seed)?.adapter.tensors.clone(),
                self.bench.adapter("full", b, "real", seed)?.adapter.tensors.clone(),
            ),
        })
    }
}

/// Byte-weighted pooling of two evaluations (the pooled text's figures, up
/// to the one window that would straddle the junction).
fn pooled(a: &EvalStats, b: &EvalStats) -> EvalStats {
    EvalStats::from_sum(a.nll * a.bytes as f64 + b.nll * b.bytes as f64, a.bytes + b.bytes)
}

impl Kind for WeightSoup {
    const NAME: &'static str = "weight-soup";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Interpolate every weight of two specialists (independent inits, or fine-tunes of one base); ppl on their pooled held-out text.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = SoupMetrics;
    type Ready = Ready;

    fn check(budget: &Budget) -> Result<(), ParamProblem> {
        budget.check()
    }

    fn prepare(budget: &Budget, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready {
            bench: Workbench::new(budget.clone(), env)?,
            env: env.clone(),
            specialists: Mutex::new(HashMap::new()),
        })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<SoupMetrics> {
        let pair = &f.pair;
        let (a, b) = pair.split_once('+').ok_or_else(|| anyhow::anyhow!("pair `{pair}` is not `userA+userB`"))?;
        if !(0.0..=1.0).contains(&f.alpha) {
            anyhow::bail!("factor `alpha` must be in [0, 1], got {}", f.alpha);
        }
        let (wa, wb) = r.parents(f.origin, a, b, f.seed)?;
        let base = &r.bench.base;
        let soup = BaseModel::from_weights(
            base.config.clone(),
            interpolate(&wa, &wb, f.alpha)?,
            format!("soup/{:?}/{pair}/{}/{}", f.origin, f.seed, f.alpha),
            base.device.clone(),
        );
        let cfg = r.bench.eval_cfg();
        let ea = evaluate(&soup, None, &r.bench.corpus.eval(a, Split::A)?, &cfg)?;
        let eb = evaluate(&soup, None, &r.bench.corpus.eval(b, Split::A)?, &cfg)?;
        Ok(SoupMetrics { ppl: pooled(&ea, &eb).ppl, ppl_first: ea.ppl, ppl_second: eb.ppl })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing::{cell, prepare};
    use crate::table::Value;

    fn at(origin: &str, alpha: f64) -> crate::kinds::Cell {
        cell(&[
            ("seed", Value::Int(0)),
            ("pair", Value::Str("programmer+novelist".into())),
            ("origin", Value::Str(origin.into())),
            ("alpha", Value::Float(alpha)),
        ])
    }

    #[test]
    fn the_pooled_ppl_lies_between_its_parts_and_independent_parents_are_other_models() {
        let ready = prepare("weight-soup", "eval_bytes = 2048\nsteps = 5");
        let (zero, one, mid) = (
            ready.run_cell(&at("fine-tunes", 0.0)).unwrap(),
            ready.run_cell(&at("fine-tunes", 1.0)).unwrap(),
            ready.run_cell(&at("fine-tunes", 0.5)).unwrap(),
        );
        assert_ne!(zero["ppl"], one["ppl"]);
        assert_ne!(mid["ppl"], zero["ppl"]);
        for r in [&zero, &one, &mid] {
            let (p, a, b) =
                (r["ppl"].as_f64().unwrap(), r["ppl_first"].as_f64().unwrap(), r["ppl_second"].as_f64().unwrap());
            assert!(p >= a.min(b) && p <= a.max(b), "pooled {p} between {a} and {b}");
        }
        let ind = ready.run_cell(&at("independent", 0.0)).unwrap();
        assert_ne!(ind["ppl"], zero["ppl"], "independent specialists are other models");
        assert!(ready.run_cell(&at("independent", 1.5)).is_err());
    }

    #[test]
    fn catalogue_spec_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("31_weight_soup.toml", "weight-soup");
    }
}
