//! Kind `expert-collapse` (bets 38 and 39): every MoE block's experts
//! replaced by their element-wise average, the router kept or made uniform
//! (or, as the control arm `none`, nothing done);
//! the collapsed model's perplexity on the general held-out text against the
//! original's, the distinct bytes of a greedy sample, and (`step > 0`) the
//! same after that many steps of one full fine-tune of the collapsed model on
//! the general training text (the recovery curve).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Budget, Workbench};
use crate::engine::BaseModel;
use crate::engine::ablate::{RouterMode, collapse_experts};
use crate::engine::adapter::{Adapter, Trainable};
use crate::engine::eval::evaluate;
use crate::engine::optim::AdamW;
use crate::engine::train::{TrainConfig, finetune_resume};
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `expert-collapse` kind.
pub struct ExpertCollapse;

/// `[procedure]`: the greedy sample and the shared budget (`steps` is the
/// length of the recovery run, whose schedule every `step` checkpoint shares).
/// Deserialised by hand: serde's `flatten` would let an unknown key through.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)] // the schema refuses unknown keys as the flattened Budget does
pub struct Params {
    /// Bytes of the general held-out text that prompt the greedy sample.
    #[serde(default = "default_prompt")]
    prompt_bytes: usize,
    /// Bytes greedily sampled (fewer when the context fills up).
    #[serde(default = "default_sample")]
    sample_bytes: usize,
    #[serde(flatten)]
    budget: Budget,
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut take = |key: &str, default: usize| match map.remove(key) {
            None => Ok(default),
            Some(v) => serde_json::from_value(v).map_err(|e| D::Error::custom(format!("`{key}`: {e}"))),
        };
        let prompt_bytes = take("prompt_bytes", default_prompt())?;
        let sample_bytes = take("sample_bytes", default_sample())?;
        let budget = Budget::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(Params { prompt_bytes, sample_bytes, budget })
    }
}

fn default_prompt() -> usize {
    16
}

fn default_sample() -> usize {
    100
}

/// What is done to the base, as a grid factor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Collapse {
    /// Nothing: the original base (the "before" of a before/after).
    None,
    /// Experts averaged, the trained router unchanged.
    RouterKept,
    /// Experts averaged, zero router weights: probability 1/experts each, expert 0 taken.
    RouterUniform,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the recovery run's data order.
    seed: u64,
    /// What is done to the base: `none`, `router-kept` or `router-uniform`.
    collapse: Collapse,
    /// Recovery steps taken before evaluating (default 0: the collapsed model itself).
    step: Option<usize>,
    /// Peak learning rate of the recovery run (default: the budget's `lr`).
    lr: Option<f64>,
}

crate::metrics! {
    /// What one collapsed (and perhaps recovering) model measured.
    pub struct CollapseMetrics {
        /// Perplexity per byte on the general held-out text.
        pub ppl: f64,
        /// Perplexity per byte of the original (uncollapsed) base on the same text.
        pub base_ppl: f64,
        /// ppl / base_ppl.
        pub ratio: f64,
        /// Distinct byte values in the greedy sample.
        pub distinct_bytes: usize,
        /// Bytes in the greedy sample.
        pub sample_len: usize,
        /// Mean training loss of the last 10 recovery steps (NaN at step 0).
        pub train_loss: f64,
    }
}

/// A recovery run's checkpoints so far: (step, adapter, optimiser, the loss
/// of every step up to it).
type Checkpoints = Vec<(usize, Arc<Adapter>, AdamW, Vec<f32>)>;

/// Mean of the last 10 losses (NaN when there are none).
fn tail_loss(losses: &[f32]) -> f64 {
    let tail = &losses[losses.len().saturating_sub(10)..];
    if tail.is_empty() { f64::NAN } else { tail.iter().map(|&x| x as f64).sum::<f64>() / tail.len() as f64 }
}

/// The two collapsed models and the recovery runs' checkpoints.
pub struct Ready {
    bench: Workbench,
    prompt_bytes: usize,
    sample_bytes: usize,
    kept: BaseModel,
    uniform: BaseModel,
    runs: Mutex<HashMap<String, Arc<Mutex<Checkpoints>>>>,
}

impl Ready {
    fn collapsed(&self, collapse: Collapse) -> &BaseModel {
        match collapse {
            Collapse::None => &self.bench.base,
            Collapse::RouterKept => &self.kept,
            Collapse::RouterUniform => &self.uniform,
        }
    }

    /// The recovery run of (collapse, lr, seed) stopped at `step`: resumed from
    /// the latest checkpoint before it, which gives the bits of one
    /// uninterrupted run whatever order the cells come in.
    fn recovered(&self, collapse: Collapse, lr: f64, seed: u64, step: usize) -> anyhow::Result<(Arc<Adapter>, f64)> {
        let b = &self.bench.budget;
        let base = self.collapsed(collapse);
        let cfg = TrainConfig {
            lr,
            steps: b.steps,
            batch: b.batch,
            seq: base.config.context,
            seed,
            warmup: b.warmup,
            threads: self.bench.threads,
            ..TrainConfig::default()
        };
        let run =
            self.runs.lock().expect("runs lock").entry(format!("{collapse:?}/{lr:e}/{seed}")).or_default().clone();
        let mut run = run.lock().expect("run lock");
        if let Some((_, a, _, losses)) = run.iter().find(|(s, ..)| *s == step) {
            return Ok((a.clone(), tail_loss(losses)));
        }
        let from = run.iter().filter(|(s, ..)| *s < step).max_by_key(|(s, ..)| *s);
        let mut losses = from.map(|(.., l)| l.clone()).unwrap_or_default();
        let text = self.bench.corpus.general_train();
        let (adapter, optim, stats) = finetune_resume(
            base,
            Trainable::Full,
            &text,
            &cfg,
            from.map(|(_, a, o, _)| (&**a, o.clone())),
            step,
            &mut |_, _| {},
        )?;
        let adapter = Arc::new(adapter);
        losses.extend(stats.losses);
        let loss = tail_loss(&losses);
        run.push((step, adapter.clone(), optim, losses));
        Ok((adapter, loss))
    }
}

impl Kind for ExpertCollapse {
    const NAME: &'static str = "expert-collapse";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Average every MoE block's experts into one (router kept or uniform); held-out ppl, a greedy sample, and a recovery fine-tune.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = CollapseMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        p.budget.check()?;
        if p.prompt_bytes == 0 {
            return Err(ParamProblem::new("prompt_bytes", "a greedy sample needs a prompt of at least one byte"));
        }
        if p.sample_bytes == 0 {
            return Err(ParamProblem::new("sample_bytes", "must be positive"));
        }
        Ok(())
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        let bench = Workbench::new(p.budget.clone(), env)?;
        let kept = collapse_experts(&bench.base, RouterMode::Kept)?;
        let uniform = collapse_experts(&bench.base, RouterMode::Uniform)?;
        Ok(Ready {
            bench,
            prompt_bytes: p.prompt_bytes,
            sample_bytes: p.sample_bytes,
            kept,
            uniform,
            runs: Mutex::new(HashMap::new()),
        })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<CollapseMetrics> {
        let w = &r.bench;
        let step = f.step.unwrap_or(0);
        let lr = f.lr.unwrap_or(w.budget.lr);
        if step > w.budget.steps {
            anyhow::bail!("step {step} is past the recovery run's {} steps", w.budget.steps);
        }
        if lr.is_nan() || lr <= 0.0 {
            anyhow::bail!("factor `lr` must be positive, got {lr}");
        }
        let base = r.collapsed(f.collapse);
        let (adapter, train_loss) = if step == 0 {
            (None, f64::NAN)
        } else {
            let (a, loss) = r.recovered(f.collapse, lr, f.seed, step)?;
            (Some(a), loss)
        };
        let text = w.corpus.general_eval();
        let ppl = match (&adapter, f.collapse) {
            // The original itself: its memoised evaluation (the same bits).
            (None, Collapse::None) => w.base_eval_general()?.ppl,
            _ => evaluate(base, adapter.as_deref(), &text, &w.eval_cfg())?.ppl,
        };
        let prompt = &text[..r.prompt_bytes.min(text.len())];
        let view = base.view_with(adapter.as_deref());
        let sample = view.generate(prompt, r.sample_bytes)?;
        let distinct = sample.iter().collect::<std::collections::BTreeSet<_>>().len();
        let base_ppl = w.base_eval_general()?.ppl;
        Ok(CollapseMetrics {
            ppl,
            base_ppl,
            ratio: ppl / base_ppl,
            distinct_bytes: distinct,
            sample_len: sample.len(),
            train_loss,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing::{cell, check, prepare};
    use crate::table::Value;

    fn at(collapse: &str, step: i64) -> crate::kinds::Cell {
        cell(&[("seed", Value::Int(0)), ("collapse", Value::Str(collapse.into())), ("step", Value::Int(step))])
    }

    #[test]
    fn a_collapsed_model_is_measured_against_the_original_and_recovery_resumes_to_the_bits_of_one_run() {
        let params = "eval_bytes = 2048\nsteps = 6\nwarmup = 2\nlr = 1e-3";
        let ready = prepare("expert-collapse", params);
        let row = |r: &dyn crate::kinds::Prepared, router: &str, step: i64| r.run_cell(&at(router, step)).unwrap();
        let kept = row(&*ready, "router-kept", 0);
        let uniform = row(&*ready, "router-uniform", 0);
        let none = row(&*ready, "none", 0);
        assert_eq!(kept["base_ppl"], uniform["base_ppl"], "one original for every arm");
        assert_eq!(none["ppl"], none["base_ppl"], "no collapse is the original, bit for bit");
        assert_eq!(none["ratio"].as_f64().unwrap(), 1.0);
        assert_ne!(kept["ppl"], uniform["ppl"], "the router matters");
        assert_ne!(kept["ppl"], none["ppl"]);
        assert!(kept["train_loss"].as_f64().unwrap().is_nan());
        let n = kept["sample_len"].as_i64().unwrap();
        assert!(n > 0 && kept["distinct_bytes"].as_i64().unwrap() <= n);
        // Step 6 first (one run 0..6), then 3 (a fresh run 0..3), then 6 again
        // through a fresh bench that resumes 3 -> 6: the same bits.
        let six = row(&*ready, "router-kept", 6);
        let three = row(&*ready, "router-kept", 3);
        assert_ne!(six["ppl"], three["ppl"]);
        let other = prepare("expert-collapse", params);
        assert_eq!(row(&*other, "router-kept", 3)["ppl"], three["ppl"]);
        let resumed = row(&*other, "router-kept", 6);
        assert_eq!(resumed["ppl"].as_f64().unwrap().to_bits(), six["ppl"].as_f64().unwrap().to_bits());
        assert_eq!(resumed["train_loss"].as_f64().unwrap().to_bits(), six["train_loss"].as_f64().unwrap().to_bits());
        let err = ready.run_cell(&at("router-kept", 7)).unwrap_err();
        assert!(format!("{err:#}").contains("past the recovery run"), "{err:#}");
    }

    #[test]
    fn bad_parameters_are_refused_by_key() {
        assert!(check("expert-collapse", "prompt_bytes = 0").unwrap_err().contains("prompt_bytes"));
        assert!(check("expert-collapse", "sample_bytes = 0").unwrap_err().contains("sample_bytes"));
        assert!(check("expert-collapse", "steps = 0").unwrap_err().contains("steps"));
        assert!(check("expert-collapse", "routr = 1").unwrap_err().contains("routr"));
        assert!(check("expert-collapse", "prompt_bytes = \"x\"").unwrap_err().contains("prompt_bytes"));
        assert!(check("expert-collapse", "prompt_bytes = 8\nsample_bytes = 50\nlr = 1e-4").is_ok());
    }

    #[test]
    fn catalogue_specs_run_at_tiny_and_plot() {
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("38_expert_collapse.toml", "expert-collapse");
        crate::kinds::testing::catalogue_spec_runs_at_tiny_and_plots("39_collapse_recovery.toml", "expert-collapse");
    }
}
