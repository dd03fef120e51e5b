//! Kind `layer-skip` (bet 40): the base with one block made the identity on
//! the residual stream, evaluated on the general held-out text against the
//! full base.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Budget, Workbench};
use crate::engine::ablate::Intervention;
use crate::engine::eval::evaluate_intervened;
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `layer-skip` kind.
pub struct LayerSkip;

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Unused by the (deterministic) evaluation; every grid has one.
    seed: u64,
    /// The block skipped, `0..layers`.
    layer: usize,
}

crate::metrics! {
    /// What one skipped block cost.
    pub struct SkipMetrics {
        /// Perplexity per byte on the general held-out text with the block skipped.
        pub ppl: f64,
        /// Perplexity per byte of the full base on the same text.
        pub full_ppl: f64,
        /// ppl / full_ppl (1 = the block does nothing measurable).
        pub ratio: f64,
    }
}

impl Kind for LayerSkip {
    const NAME: &'static str = "layer-skip";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Skip one block of the base (identity on the residual stream); compare held-out ppl with the full base.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = SkipMetrics;
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

    fn run(w: &Workbench, _cell: &Cell, f: Factors) -> anyhow::Result<SkipMetrics> {
        let _ = f.seed;
        let text = w.corpus.general_eval();
        let ppl = evaluate_intervened(&w.base, None, &text, &w.eval_cfg(), &Intervention::SkipBlock(f.layer))?.ppl;
        let full_ppl = w.base_eval_general()?.ppl;
        Ok(SkipMetrics { ppl, full_ppl, ratio: ppl / full_ppl })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing::{cell, prepare};
    use crate::table::Value;

    #[test]
    fn a_skipped_block_is_measured_against_the_full_base_and_a_missing_block_is_an_error() {
        let ready = prepare("layer-skip", "eval_bytes = 2048");
        let row = ready.run_cell(&cell(&[("seed", Value::Int(0)), ("layer", Value::Int(1))])).unwrap();
        let (ppl, full) = (row["ppl"].as_f64().unwrap(), row["full_ppl"].as_f64().unwrap());
        assert!(ppl.is_finite() && full > 1.0 && ppl != full, "{ppl} vs {full}");
        assert_eq!(row["ratio"].as_f64().unwrap(), ppl / full);
        let err = ready.run_cell(&cell(&[("seed", Value::Int(0)), ("layer", Value::Int(2))])).unwrap_err();
        assert!(format!("{err:#}").contains("cannot skip block 2"), "{err:#}");
    }

    #[test]
    fn catalogue_spec_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("40_skip_one_layer.toml", "layer-skip");
    }
}
