//! Kind `hidden-noise` (bet 63): bet 61's diagonal (a user's norm-only
//! adapter on that user's held-out text) evaluated with seeded Gaussian
//! noise, relative to each token's RMS, added to the residual stream at one
//! block boundary, next to the bare base under the very same noise draws.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Budget, Memo, Slice, Workbench, memo};
use crate::engine::ablate::Intervention;
use crate::engine::eval::{EvalStats, evaluate, evaluate_intervened};
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `hidden-noise` kind.
pub struct HiddenNoise;

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the adapter's training (as in bet 61) and the noise draws.
    seed: u64,
    /// Whose adapter, on whose held-out text.
    user: String,
    /// Noise standard deviation relative to each token's hidden-state RMS.
    sigma: f64,
    /// The block boundary the noise is added at (`0..=layers`: before that block runs).
    boundary: usize,
    /// Held-out slice A, B or C.
    slice: Slice,
}

crate::metrics! {
    /// The personalisation gain with and without hidden-state noise.
    pub struct NoiseMetrics {
        /// Perplexity per byte of the adapted model under noise.
        pub ppl: f64,
        /// Perplexity per byte of the bare base under the same noise draws.
        pub base_ppl: f64,
        /// 1 - ppl / base_ppl under noise.
        pub gain: f64,
        /// The adapted model's perplexity without noise (bet 61's diagonal cell).
        pub clean_ppl: f64,
        /// The bare base's perplexity without noise.
        pub clean_base_ppl: f64,
        /// 1 - clean_ppl / clean_base_ppl.
        pub clean_gain: f64,
    }
}

/// The bench and the memoised noiseless evaluations of each adapter.
pub struct Ready {
    bench: Workbench,
    clean: Memo<EvalStats>,
}

impl Kind for HiddenNoise {
    const NAME: &'static str = "hidden-noise";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Add relative Gaussian noise to the hidden state at a block boundary; a user's adapter gain under noise vs without.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = NoiseMetrics;
    type Ready = Ready;

    fn check(budget: &Budget) -> Result<(), ParamProblem> {
        budget.check()
    }

    fn prepare(budget: &Budget, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready { bench: Workbench::new(budget.clone(), env)?, clean: Mutex::new(HashMap::new()) })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<NoiseMetrics> {
        let w = &r.bench;
        let slice = f.slice.split();
        let iv = Intervention::Noise { boundary: f.boundary, sigma: f.sigma, seed: f.seed };
        iv.check(w.base.config.layers)?;
        let trained = w.adapter("norm-only", &f.user, "real", f.seed)?;
        let text = w.corpus.eval(&f.user, slice)?;
        let ppl = evaluate_intervened(&w.base, Some(&trained.adapter), &text, &w.eval_cfg(), &iv)?.ppl;
        let base_ppl = evaluate_intervened(&w.base, None, &text, &w.eval_cfg(), &iv)?.ppl;
        let clean_ppl = memo(&r.clean, format!("{}/{}/{}", f.user, slice.name(), f.seed), || {
            Ok(evaluate(&w.base, Some(&trained.adapter), &text, &w.eval_cfg())?)
        })?
        .ppl;
        let clean_base_ppl = w.base_eval(&f.user, slice)?.ppl;
        Ok(NoiseMetrics {
            ppl,
            base_ppl,
            gain: 1.0 - ppl / base_ppl,
            clean_ppl,
            clean_base_ppl,
            clean_gain: 1.0 - clean_ppl / clean_base_ppl,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing::{cell, prepare};
    use crate::table::Value;

    fn at(sigma: f64, boundary: i64, seed: i64) -> crate::kinds::Cell {
        cell(&[
            ("seed", Value::Int(seed)),
            ("user", Value::Str("programmer".into())),
            ("sigma", Value::Float(sigma)),
            ("boundary", Value::Int(boundary)),
            ("slice", Value::Str("A".into())),
        ])
    }

    #[test]
    fn zero_noise_is_the_clean_evaluation_and_noise_moves_both_models() {
        let ready = prepare("hidden-noise", "eval_bytes = 2048\nsteps = 5");
        let zero = ready.run_cell(&at(0.0, 1, 0)).unwrap();
        for (noisy, clean) in [("ppl", "clean_ppl"), ("base_ppl", "clean_base_ppl"), ("gain", "clean_gain")] {
            assert_eq!(zero[noisy].as_f64().unwrap().to_bits(), zero[clean].as_f64().unwrap().to_bits(), "{noisy}");
        }
        let loud = ready.run_cell(&at(0.1, 1, 0)).unwrap();
        assert_eq!(loud["clean_ppl"], zero["clean_ppl"]);
        assert_ne!(loud["ppl"], zero["ppl"]);
        assert_ne!(loud["base_ppl"], zero["base_ppl"]);
        assert_eq!(ready.run_cell(&at(0.1, 1, 0)).unwrap()["ppl"], loud["ppl"], "seeded");
        let err = ready.run_cell(&at(0.1, 3, 0)).unwrap_err();
        assert!(format!("{err:#}").contains("boundary 3"), "{err:#}");
        assert!(ready.run_cell(&at(-1.0, 1, 0)).is_err());
    }

    #[test]
    fn catalogue_spec_runs_at_tiny_and_plots() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("63_hidden_noise.toml", "hidden-noise");
    }
}
