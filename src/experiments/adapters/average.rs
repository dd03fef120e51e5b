//! Kind `adapter-average` (bet 54): the element-wise mean of two users'
//! norm-only adapters, evaluated on each user's held-out text next to the
//! bare base and the user's own adapter.
//!
//! Factors: `pair` (`userA+userB`), `member` (`first` or `second`: whose text
//! is evaluated), `slice`, `seed`.

use std::collections::BTreeMap;

use super::{Budget, SLICES, Workbench, slice};
use crate::engine::adapter::Adapter;
use crate::engine::eval::evaluate;
use crate::experiments::{Cell, Env, Experiment, Factor, Metric, Prepared, parse_params};
use crate::table::{ColumnType, Row, Value};

/// The `adapter-average` kind.
pub struct AdapterAverage;

const FACTORS: &[Factor] = &[
    Factor { name: "seed", kind: ColumnType::Int, required: true, allowed: &[], doc: "Seeds both adapters' training." },
    Factor {
        name: "pair",
        kind: ColumnType::Str,
        required: true,
        allowed: &[],
        doc: "Two users, `a+b`, whose adapters are averaged.",
    },
    Factor {
        name: "member",
        kind: ColumnType::Str,
        required: true,
        allowed: &["first", "second"],
        doc: "Whose held-out text is evaluated: the pair's first or second user.",
    },
    Factor { name: "slice", kind: ColumnType::Str, required: true, allowed: SLICES, doc: "Held-out slice A, B or C." },
];

const METRICS: &[Metric] = &[
    Metric {
        name: "ppl",
        kind: ColumnType::Float,
        doc: "Perplexity per byte of the averaged adapter on the member's slice.",
    },
    Metric {
        name: "own_ppl",
        kind: ColumnType::Float,
        doc: "Perplexity per byte of the member's own adapter on the same text.",
    },
    Metric { name: "base_ppl", kind: ColumnType::Float, doc: "Perplexity per byte of the bare base on the same text." },
    Metric { name: "gain", kind: ColumnType::Float, doc: "1 - ppl / base_ppl for the averaged adapter." },
];

impl Experiment for AdapterAverage {
    fn kind(&self) -> &'static str {
        "adapter-average"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Average two users' norm-only adapters element-wise; evaluate on each user's held-out text."
    }

    fn factors(&self) -> &'static [Factor] {
        FACTORS
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn check_params(&self, params: &toml::Table) -> Result<(), String> {
        parse_params::<Budget>(params)?.check()
    }

    fn prepare(&self, params: &toml::Table, env: &Env) -> anyhow::Result<Box<dyn Prepared>> {
        let budget: Budget = parse_params(params).map_err(|e| anyhow::anyhow!("adapter-average: {e}"))?;
        Ok(Box::new(Ready(Workbench::new(budget, env)?)))
    }
}

struct Ready(Workbench);

impl Prepared for Ready {
    fn inputs(&self) -> BTreeMap<String, String> {
        self.0.inputs()
    }

    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row> {
        let w = &self.0;
        let pair = cell.str("pair")?;
        let (a, b) = pair.split_once('+').ok_or_else(|| anyhow::anyhow!("pair `{pair}` is not `userA+userB`"))?;
        let user = if cell.str("member")? == "first" { a } else { b };
        let slice = slice(cell.str("slice")?)?;
        let seed = cell.seed()?;
        let ta = w.adapter("norm-only", a, "real", seed)?;
        let tb = w.adapter("norm-only", b, "real", seed)?;
        let avg = Adapter::average(&[&ta.adapter, &tb.adapter])?;
        let own = if user == a { &ta } else { &tb };
        let text = w.corpus.eval(user, slice)?;
        let ppl = evaluate(&w.base, Some(&avg), &text, &w.eval_cfg())?.ppl;
        let own_ppl = evaluate(&w.base, Some(&own.adapter), &text, &w.eval_cfg())?.ppl;
        let base_ppl = w.base_eval(user, slice)?.ppl;
        Ok(Row::from([
            ("ppl".to_string(), Value::Float(ppl)),
            ("own_ppl".to_string(), Value::Float(own_ppl)),
            ("base_ppl".to_string(), Value::Float(base_ppl)),
            ("gain".to_string(), Value::Float(1.0 - ppl / base_ppl)),
        ]))
    }
}
