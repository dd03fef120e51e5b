//! Kind `adapter-mixture` (bet 55): for a held-out user with no adapter, the
//! output-space mixture of every other user's norm-only adapter-conditioned
//! model (`logsumexp_i log p_i - log N` per byte) against the bare base.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Budget, Slice, Workbench};
use crate::engine::eval::evaluate_mixture;
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `adapter-mixture` kind.
pub struct AdapterMixture;

/// `[procedure]`: the user pool and the shared budget (unknown keys are
/// refused by the flattened [`Budget`]).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)] // the schema refuses unknown keys as the flattened Budget does
pub struct Params {
    /// Users whose adapters may enter a mixture.
    users: Vec<String>,
    #[serde(flatten)]
    budget: Budget,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the adapters' training.
    seed: u64,
    /// The user without an adapter.
    held_out: String,
    /// Held-out slice A, B or C.
    slice: Slice,
}

crate::metrics! {
    /// What one leave-one-out mixture measured.
    pub struct MixtureMetrics {
        /// Perplexity per byte of the mixture of the other users' models.
        pub ppl: f64,
        /// Perplexity per byte of the bare base on the same text.
        pub base_ppl: f64,
        /// 1 - ppl / base_ppl (positive: the mixture helps).
        pub gain: f64,
        /// Adapter-conditioned models in the mixture.
        pub models: usize,
    }
}

/// The pool and what its cells share.
pub struct Ready {
    users: Vec<String>,
    bench: Workbench,
}

impl Kind for AdapterMixture {
    const NAME: &'static str = "adapter-mixture";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Leave one user out: mix the other users' adapter-conditioned models in output space; compare with the base.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = MixtureMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        p.budget.check()?;
        if p.users.len() < 2 {
            return Err(ParamProblem::new("users", "a mixture needs at least two users in the pool"));
        }
        Ok(())
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready { users: p.users.clone(), bench: Workbench::new(p.budget.clone(), env)? })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<MixtureMetrics> {
        let w = &r.bench;
        let slice = f.slice.split();
        let others: Vec<_> = r
            .users
            .iter()
            .filter(|u| **u != f.held_out)
            .map(|u| w.adapter("norm-only", u, "real", f.seed))
            .collect::<anyhow::Result<_>>()?;
        let refs: Vec<Option<&crate::engine::adapter::Adapter>> = others.iter().map(|t| Some(&*t.adapter)).collect();
        let text = w.corpus.eval(&f.held_out, slice)?;
        let ppl = evaluate_mixture(&w.base, &refs, &text, &w.eval_cfg())?.ppl;
        let base_ppl = w.base_eval(&f.held_out, slice)?.ppl;
        Ok(MixtureMetrics { ppl, base_ppl, gain: 1.0 - ppl / base_ppl, models: refs.len() })
    }
}
