//! Kind `adapter-mixture` (bet 55): for a held-out user with no adapter, the
//! output-space mixture of every other user's norm-only adapter-conditioned
//! model (`logsumexp_i log p_i - log N` per byte) against the bare base.
//!
//! Factors: `held_out` (the user without an adapter), `slice`, `seed`.
//! Parameter `users`: the pool the others are drawn from.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Budget, SLICES, Workbench, slice};
use crate::engine::eval::evaluate_mixture;
use crate::experiments::{Cell, Env, Experiment, Factor, Metric, Prepared, parse_params};
use crate::table::{ColumnType, Row, Value};

/// The `adapter-mixture` kind.
pub struct AdapterMixture;

/// Unknown keys are refused by the flattened [`Budget`].
#[derive(Debug, Clone, Deserialize)]
struct Params {
    /// Users whose adapters may enter a mixture.
    users: Vec<String>,
    #[serde(flatten)]
    budget: Budget,
}

const FACTORS: &[Factor] = &[
    Factor { name: "seed", kind: ColumnType::Int, required: true, allowed: &[], doc: "Seeds the adapters' training." },
    Factor {
        name: "held_out",
        kind: ColumnType::Str,
        required: true,
        allowed: &[],
        doc: "The user without an adapter.",
    },
    Factor { name: "slice", kind: ColumnType::Str, required: true, allowed: SLICES, doc: "Held-out slice A, B or C." },
];

const METRICS: &[Metric] = &[
    Metric {
        name: "ppl",
        kind: ColumnType::Float,
        doc: "Perplexity per byte of the mixture of the other users' models.",
    },
    Metric { name: "base_ppl", kind: ColumnType::Float, doc: "Perplexity per byte of the bare base on the same text." },
    Metric { name: "gain", kind: ColumnType::Float, doc: "1 - ppl / base_ppl (positive: the mixture helps)." },
    Metric { name: "models", kind: ColumnType::Int, doc: "Adapter-conditioned models in the mixture." },
];

fn params(table: &toml::Table) -> Result<Params, String> {
    let p: Params = parse_params(table)?;
    p.budget.check()?;
    if p.users.len() < 2 {
        return Err("users: a mixture needs at least two users in the pool".into());
    }
    Ok(p)
}

impl Experiment for AdapterMixture {
    fn kind(&self) -> &'static str {
        "adapter-mixture"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Leave one user out: mix the other users' adapter-conditioned models in output space; compare with the base."
    }

    fn factors(&self) -> &'static [Factor] {
        FACTORS
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn check_params(&self, table: &toml::Table) -> Result<(), String> {
        params(table).map(|_| ())
    }

    fn prepare(&self, table: &toml::Table, env: &Env) -> anyhow::Result<Box<dyn Prepared>> {
        let p = params(table).map_err(|e| anyhow::anyhow!("adapter-mixture: {e}"))?;
        Ok(Box::new(Ready { users: p.users, bench: Workbench::new(p.budget, env)? }))
    }
}

struct Ready {
    users: Vec<String>,
    bench: Workbench,
}

impl Prepared for Ready {
    fn inputs(&self) -> BTreeMap<String, String> {
        self.bench.inputs()
    }

    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row> {
        let w = &self.bench;
        let held_out = cell.str("held_out")?;
        let slice = slice(cell.str("slice")?)?;
        let seed = cell.seed()?;
        let others: Vec<_> = self
            .users
            .iter()
            .filter(|u| u.as_str() != held_out)
            .map(|u| w.adapter("norm-only", u, "real", seed))
            .collect::<anyhow::Result<_>>()?;
        let refs: Vec<Option<&crate::engine::adapter::Adapter>> = others.iter().map(|t| Some(&*t.adapter)).collect();
        let text = w.corpus.eval(held_out, slice)?;
        let ppl = evaluate_mixture(&w.base, &refs, &text, &w.eval_cfg())?.ppl;
        let base_ppl = w.base_eval(held_out, slice)?.ppl;
        Ok(Row::from([
            ("ppl".to_string(), Value::Float(ppl)),
            ("base_ppl".to_string(), Value::Float(base_ppl)),
            ("gain".to_string(), Value::Float(1.0 - ppl / base_ppl)),
            ("models".to_string(), Value::Int(refs.len() as i64)),
        ]))
    }
}
