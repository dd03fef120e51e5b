//! Kind `adapter-average` (bet 54): the element-wise mean of two users'
//! norm-only adapters, evaluated on each user's held-out text next to the
//! bare base and the user's own adapter.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Budget, Slice, Workbench};
use crate::engine::adapter::Adapter;
use crate::engine::eval::evaluate;
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `adapter-average` kind.
pub struct AdapterAverage;

/// Whose held-out text is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Member {
    First,
    Second,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds both adapters' training.
    seed: u64,
    /// Two users, `a+b`, whose adapters are averaged.
    pair: String,
    /// Whose held-out text is evaluated: the pair's first or second user.
    member: Member,
    /// Held-out slice A, B or C.
    slice: Slice,
}

crate::metrics! {
    /// What one evaluation of an averaged adapter measured.
    pub struct AverageMetrics {
        /// Perplexity per byte of the averaged adapter on the member's slice.
        pub ppl: f64,
        /// Perplexity per byte of the member's own adapter on the same text.
        pub own_ppl: f64,
        /// Perplexity per byte of the bare base on the same text.
        pub base_ppl: f64,
        /// 1 - ppl / base_ppl for the averaged adapter.
        pub gain: f64,
    }
}

impl Kind for AdapterAverage {
    const NAME: &'static str = "adapter-average";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Average two users' norm-only adapters element-wise; evaluate on each user's held-out text.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = AverageMetrics;
    type Ready = Workbench;

    fn check(budget: &Budget) -> Result<(), ParamProblem> {
        budget.check()
    }

    fn prepare(budget: &Budget, env: &Env) -> anyhow::Result<Workbench> {
        Workbench::new(budget.clone(), env)
    }

    fn inputs(w: &Workbench) -> BTreeMap<String, String> {
        w.inputs()
    }

    fn run(w: &Workbench, _cell: &Cell, f: Factors) -> anyhow::Result<AverageMetrics> {
        let pair = &f.pair;
        let (a, b) = pair.split_once('+').ok_or_else(|| anyhow::anyhow!("pair `{pair}` is not `userA+userB`"))?;
        let user = if f.member == Member::First { a } else { b };
        let slice = f.slice.split();
        let ta = w.adapter("norm-only", a, "real", f.seed)?;
        let tb = w.adapter("norm-only", b, "real", f.seed)?;
        let avg = Adapter::average(&[&ta.adapter, &tb.adapter])?;
        let own = if user == a { &ta } else { &tb };
        let text = w.corpus.eval(user, slice)?;
        let ppl = evaluate(&w.base, Some(&avg), &text, &w.eval_cfg())?.ppl;
        let own_ppl = evaluate(&w.base, Some(&own.adapter), &text, &w.eval_cfg())?.ppl;
        let base_ppl = w.base_eval(user, slice)?.ppl;
        Ok(AverageMetrics { ppl, own_ppl, base_ppl, gain: 1.0 - ppl / base_ppl })
    }
}
