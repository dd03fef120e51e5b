//! Kind `adapter-train-eval`: train one user's adapter, evaluate it on a
//! held-out slice of (by default) the same user's text.
//!
//! Factors: `arm`, `user` (whose training text), `eval_user` (whose held-out
//! text; default `user`: the cross-user matrix of bet 61), `slice`, `data`
//! (`real`, or `random` for the noise floor of bet 60) and `seed`.

use std::collections::BTreeMap;

use super::{ARMS, Budget, DATA, SLICES, Workbench, slice};
use crate::engine::eval::evaluate;
use crate::experiments::{Cell, Env, Experiment, Factor, Metric, Prepared, parse_params};
use crate::table::{ColumnType, Row, Value};

/// The `adapter-train-eval` kind.
pub struct AdapterTrainEval;

const FACTORS: &[Factor] = &[
    Factor {
        name: "seed",
        kind: ColumnType::Int,
        required: true,
        allowed: &[],
        doc: "Seeds the data order and LoRA init.",
    },
    Factor { name: "arm", kind: ColumnType::Str, required: true, allowed: ARMS, doc: "What the fine-tune may change." },
    Factor {
        name: "user",
        kind: ColumnType::Str,
        required: true,
        allowed: &[],
        doc: "Whose training text the adapter learns.",
    },
    Factor {
        name: "eval_user",
        kind: ColumnType::Str,
        required: false,
        allowed: &[],
        doc: "Whose held-out text is evaluated (default: `user`).",
    },
    Factor { name: "slice", kind: ColumnType::Str, required: true, allowed: SLICES, doc: "Held-out slice A, B or C." },
    Factor {
        name: "data",
        kind: ColumnType::Str,
        required: false,
        allowed: DATA,
        doc: "`real` user text (default) or `random` uniform bytes of the same length (noise floor).",
    },
];

const fn float(name: &'static str, doc: &'static str) -> Metric {
    Metric { name, kind: ColumnType::Float, doc }
}

const METRICS: &[Metric] = &[
    float("ppl", "Held-out perplexity per byte of the adapted model on eval_user's slice."),
    float("bpb", "Held-out bits per byte of the adapted model."),
    float("base_ppl", "Held-out perplexity per byte of the bare base on the same text."),
    float("gain", "1 - ppl / base_ppl: relative improvement over the base (positive is better)."),
    float("train_loss", "Mean training cross-entropy of the last 10 steps (nats per byte; NaN for `none`)."),
    Metric { name: "adapter_bytes", kind: ColumnType::Int, doc: "Bytes of the adapter file (safetensors + header)." },
    Metric { name: "trainable_params", kind: ColumnType::Int, doc: "Scalars the optimiser updated." },
    float("general_ppl", "Perplexity per byte on the general held-out text (NaN unless general_eval)."),
    float("general_base_ppl", "The bare base's perplexity on the general held-out text (NaN unless general_eval)."),
    Metric { name: "eval_bytes", kind: ColumnType::Int, doc: "Bytes predicted in the held-out evaluation." },
];

impl Experiment for AdapterTrainEval {
    fn kind(&self) -> &'static str {
        "adapter-train-eval"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Fine-tune a per-user adapter (none, norm-only, LoRA-r4, full) on the base; evaluate it on held-out text."
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
        let budget: Budget = parse_params(params).map_err(|e| anyhow::anyhow!("adapter-train-eval: {e}"))?;
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
        let arm = cell.str("arm")?;
        let user = cell.str("user")?;
        let eval_user = cell.factors.get("eval_user").and_then(Value::as_str).unwrap_or(user);
        let data = cell.factors.get("data").and_then(Value::as_str).unwrap_or("real");
        let slice = slice(cell.str("slice")?)?;
        let trained = w.adapter(arm, user, data, cell.seed()?)?;
        let eval = evaluate(&w.base, Some(&trained.adapter), &w.corpus.eval(eval_user, slice)?, &w.eval_cfg())?;
        let base = w.base_eval(eval_user, slice)?;
        let (general, general_base) = if w.budget.general_eval {
            let g = evaluate(&w.base, Some(&trained.adapter), &w.corpus.general_eval(), &w.eval_cfg())?;
            (g.ppl, w.base_eval_general()?.ppl)
        } else {
            (f64::NAN, f64::NAN)
        };
        Ok(Row::from([
            ("ppl".to_string(), Value::Float(eval.ppl)),
            ("bpb".to_string(), Value::Float(eval.bpb)),
            ("base_ppl".to_string(), Value::Float(base.ppl)),
            ("gain".to_string(), Value::Float(1.0 - eval.ppl / base.ppl)),
            ("train_loss".to_string(), Value::Float(trained.stats.final_loss)),
            ("adapter_bytes".to_string(), Value::Int(trained.bytes as i64)),
            ("trainable_params".to_string(), Value::Int(trained.stats.trainable_params as i64)),
            ("general_ppl".to_string(), Value::Float(general)),
            ("general_base_ppl".to_string(), Value::Float(general_base)),
            ("eval_bytes".to_string(), Value::Int(eval.bytes as i64)),
        ]))
    }
}
