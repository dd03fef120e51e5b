//! Kind `specialist-combiners` (bet 04): one specialist per domain (each
//! user's norm-only adapter) combined per byte as the output-space mixture
//! or the product of experts, against each specialist alone, on held-out
//! text of every domain.
//!
//! A cell is one (seed, domain, slice, combiner); the evaluation of every
//! combiner on one text is one pass over the same logits, computed once and
//! shared by the cells that read it. Cells report each text's mean NLL and
//! bytes, so the pooled perplexity of a combiner over every domain is
//! `exp(sum(nll * bytes) / sum(bytes))`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Budget, Slice, Workbench};
use crate::engine::eval::{CombinedStats, evaluate_combined};
use crate::kinds::memo::{Memo, memo};
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `specialist-combiners` kind.
pub struct SpecialistCombiners;

/// `[procedure]`: the specialists (one per domain) and the shared budget.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)] // the schema refuses unknown keys as the flattened Budget does
pub struct Params {
    /// Users whose norm-only specialists are combined, in order.
    users: Vec<String>,
    #[serde(flatten)]
    budget: Budget,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the specialists' training.
    seed: u64,
    /// Whose held-out text (one of `users`).
    domain: String,
    /// Held-out slice A, B or C.
    slice: Slice,
    /// `mixture`, `product`, or a user's name: that specialist alone.
    combiner: String,
}

crate::metrics! {
    /// One combiner on one held-out text.
    pub struct CombinerMetrics {
        /// Perplexity per byte.
        pub ppl: f64,
        /// Mean negative log-likelihood, nats per byte.
        pub nll: f64,
        /// Bytes predicted.
        pub bytes: u64,
        /// Perplexity of the best single specialist on the same text.
        pub best_single_ppl: f64,
    }
}

/// The specialists and their shared evaluations.
pub struct Ready {
    users: Vec<String>,
    bench: Workbench,
    evals: Memo<CombinedStats>,
}

impl Kind for SpecialistCombiners {
    const NAME: &'static str = "specialist-combiners";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Combine one norm-only specialist per domain per byte (mixture or product of experts) and compare with each alone.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = CombinerMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        p.budget.check()?;
        if p.users.len() < 2 {
            return Err(ParamProblem::new("users", "a combination needs at least two specialists"));
        }
        if p.users.iter().any(|u| u == "mixture" || u == "product") {
            return Err(ParamProblem::new("users", "`mixture` and `product` name combiners, not users"));
        }
        Ok(())
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready { users: p.users.clone(), bench: Workbench::new(p.budget.clone(), env)?, evals: Mutex::default() })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<CombinerMetrics> {
        if !r.users.contains(&f.domain) {
            anyhow::bail!("factor `domain`: `{}` is not one of procedure.users {:?}", f.domain, r.users);
        }
        let w = &r.bench;
        let stats = memo(&r.evals, format!("{}/{}/{}", f.seed, f.domain, f.slice.split().name()), || {
            let trained: Vec<_> =
                r.users.iter().map(|u| w.adapter("norm-only", u, "real", f.seed)).collect::<anyhow::Result<_>>()?;
            let refs: Vec<&crate::engine::Adapter> = trained.iter().map(|t| &*t.adapter).collect();
            let text = w.corpus.eval(&f.domain, f.slice.split())?;
            Ok(evaluate_combined(&w.base, &refs, &text, &w.eval_cfg())?)
        })?;
        let chosen = match f.combiner.as_str() {
            "mixture" => stats.mixture,
            "product" => stats.product,
            user => match r.users.iter().position(|u| u == user) {
                Some(i) => stats.singles[i],
                None => anyhow::bail!(
                    "factor `combiner`: `{user}` is neither `mixture`, `product` nor one of procedure.users {:?}",
                    r.users
                ),
            },
        };
        let best = stats.singles.iter().map(|s| s.ppl).fold(f64::INFINITY, f64::min);
        Ok(CombinerMetrics { ppl: chosen.ppl, nll: chosen.nll, bytes: chosen.bytes, best_single_ppl: best })
    }
}
