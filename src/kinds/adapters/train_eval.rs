//! Kind `adapter-train-eval`: train one user's adapter, evaluate it on a
//! held-out slice of (by default) the same user's text.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Arm, Budget, Data, Slice, Workbench};
use crate::engine::eval::evaluate;
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `adapter-train-eval` kind.
pub struct AdapterTrainEval;

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the data order and LoRA init.
    seed: u64,
    /// What the fine-tune may change.
    arm: Arm,
    /// Whose training text the adapter learns.
    user: String,
    /// Whose held-out text is evaluated (default: `user`).
    eval_user: Option<String>,
    /// Held-out slice A, B or C.
    slice: Slice,
    /// `real` user text (default) or `random` uniform bytes of the same length (noise floor).
    data: Option<Data>,
}

crate::metrics! {
    /// What one adapter evaluation measured.
    pub struct TrainEvalMetrics {
        /// Held-out perplexity per byte of the adapted model on eval_user's slice.
        pub ppl: f64,
        /// Held-out bits per byte of the adapted model.
        pub bpb: f64,
        /// Held-out perplexity per byte of the bare base on the same text.
        pub base_ppl: f64,
        /// 1 - ppl / base_ppl: relative improvement over the base (positive is better).
        pub gain: f64,
        /// Mean training cross-entropy of the last 10 steps (nats per byte; NaN for `none`).
        pub train_loss: f64,
        /// Bytes of the adapter file (safetensors + header).
        pub adapter_bytes: u64,
        /// Scalars the optimiser updated.
        pub trainable_params: usize,
        /// Perplexity per byte on the general held-out text (NaN unless general_eval).
        pub general_ppl: f64,
        /// The bare base's perplexity on the general held-out text (NaN unless general_eval).
        pub general_base_ppl: f64,
        /// Bytes predicted in the held-out evaluation.
        pub eval_bytes: u64,
    }
}

impl Kind for AdapterTrainEval {
    const NAME: &'static str = "adapter-train-eval";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Fine-tune a per-user adapter (none, norm-only, LoRA-r4, full) on the base; evaluate it on held-out text.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = TrainEvalMetrics;
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

    fn run(w: &Workbench, _cell: &Cell, f: Factors) -> anyhow::Result<TrainEvalMetrics> {
        let eval_user = f.eval_user.as_deref().unwrap_or(&f.user);
        let slice = f.slice.split();
        let trained = w.adapter(f.arm.as_str(), &f.user, f.data.unwrap_or_default().name(), f.seed)?;
        let eval = evaluate(&w.base, Some(&trained.adapter), &w.corpus.eval(eval_user, slice)?, &w.eval_cfg())?;
        let base = w.base_eval(eval_user, slice)?;
        let (general, general_base) = if w.budget.general_eval {
            let g = evaluate(&w.base, Some(&trained.adapter), &w.corpus.general_eval(), &w.eval_cfg())?;
            (g.ppl, w.base_eval_general()?.ppl)
        } else {
            (f64::NAN, f64::NAN)
        };
        Ok(TrainEvalMetrics {
            ppl: eval.ppl,
            bpb: eval.bpb,
            base_ppl: base.ppl,
            gain: 1.0 - eval.ppl / base.ppl,
            train_loss: trained.stats.final_loss,
            adapter_bytes: trained.bytes,
            trainable_params: trained.stats.trainable_params,
            general_ppl: general,
            general_base_ppl: general_base,
            eval_bytes: eval.bytes,
        })
    }
}
