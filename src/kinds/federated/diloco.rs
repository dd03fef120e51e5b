//! Kind `diloco` (bet 41): M workers train the model from a seeded init
//! with DiLoCo at K inner steps per round, or with synchronous data
//! parallelism at the same tokens (`arm = "sync"`); the held-out loss is
//! evaluated at `checkpoints` evenly spaced points of the run.
//!
//! A cell is one (arm, seed, checkpoint): the run of an (arm, seed) is
//! trained once, by whichever of its cells asks first, and every
//! checkpoint's cell reads its figures from that run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Bench, Training};
use crate::engine::eval::EvalStats;
use crate::federated::{Outer, Plan, Rule, Synced, diloco, sync_data_parallel};
use crate::kinds::memo::{Memo, memo};
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `diloco` kind.
pub struct Diloco;

/// `[procedure]` of `diloco` (unknown keys are refused by the flattened
/// [`Training`]).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct Params {
    /// Workers (M).
    pub workers: usize,
    /// Inner steps per worker over the whole run (= the data-parallel
    /// steps): a multiple of `checkpoints` x every arm's K.
    pub steps: usize,
    /// Evaluations, evenly spaced over the run (the last at its end).
    pub checkpoints: usize,
    #[serde(flatten)]
    pub training: Training,
}

impl Default for Params {
    fn default() -> Params {
        Params { workers: 4, steps: 1000, checkpoints: 5, training: Training::default() }
    }
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// `sync` (data parallelism, a synchronisation every step) or
    /// `diloco-k<K>` (DiLoCo with K inner steps per round).
    arm: String,
    /// Which evaluation of the run (1..=checkpoints).
    checkpoint: u64,
    /// The replicate: init, shards and data order.
    seed: u64,
}

crate::metrics! {
    /// One checkpoint of one arm's run.
    pub struct DilocoMetrics {
        /// Inner steps per round (0 for the data-parallel arm).
        pub k: u64,
        /// Whether this is the run's last checkpoint, its end (1) or not (0).
        pub at_end: u64,
        /// Tokens (bytes predicted) trained on so far, all workers together.
        pub tokens: u64,
        /// Held-out cross-entropy, nats per byte.
        pub nll: f64,
        /// Held-out perplexity per byte.
        pub ppl: f64,
        /// Synchronisations so far (rounds, or data-parallel steps).
        pub syncs: u64,
        /// Bytes the coordinator and the workers exchanged so far, both ways, frame headers included.
        pub bytes: u64,
        /// Whether the run stopped on a non-finite update or parameters (1) or not (0).
        pub diverged: u64,
        /// Mean training loss of the workers over the last synchronisation before this checkpoint.
        pub train_loss: f64,
        /// Wall seconds of the whole run (a measurement, not decided on).
        pub run_seconds: f64,
    }
}

/// One evaluation of a run.
#[derive(Debug, Clone)]
struct Point {
    tokens: u64,
    eval: EvalStats,
    syncs: u64,
    bytes: u64,
    train_loss: f64,
}

/// A trained (arm, seed).
#[derive(Debug, Clone)]
struct ArmRun {
    points: Vec<Point>,
    diverged: bool,
    seconds: f64,
}

/// What every cell shares.
pub struct Ready {
    params: Params,
    bench: Bench,
    runs: Memo<Arc<ArmRun>>,
}

/// The K of an arm name (`None` for `sync`).
fn arm_k(arm: &str) -> anyhow::Result<Option<usize>> {
    if arm == "sync" {
        return Ok(None);
    }
    match arm.strip_prefix("diloco-k").and_then(|k| k.parse::<usize>().ok()) {
        Some(k) if k > 0 => Ok(Some(k)),
        _ => anyhow::bail!("factor `arm`: `{arm}` is neither `sync` nor `diloco-k<K>` with K a positive integer"),
    }
}

impl Ready {
    fn train(&self, arm: &str, seed: u64) -> anyhow::Result<ArmRun> {
        let p = &self.params;
        let k = arm_k(arm)?;
        let every = p.steps / p.checkpoints;
        if let Some(k) = k
            && !every.is_multiple_of(k)
        {
            anyhow::bail!(
                "factor `arm` = {arm}: procedure.steps / procedure.checkpoints = {every} is not a multiple of K = {k}"
            );
        }
        let mut s = self.bench.start(p.workers, p.steps, seed)?;
        let steps_per_sync = k.unwrap_or(1);
        let mut points = Vec::with_capacity(p.checkpoints);
        let mut record = |at: Synced| {
            let steps = at.done * steps_per_sync;
            if steps.is_multiple_of(every) {
                points.push(Point {
                    tokens: steps as u64 * s.tokens_per_step,
                    eval: self.bench.evaluate(at.params)?,
                    syncs: at.traffic.syncs,
                    bytes: at.traffic.total(),
                    train_loss: at.loss,
                });
            }
            anyhow::Ok(())
        };
        let outcome = match k {
            Some(k) => {
                let plan = Plan {
                    k,
                    rounds: p.steps / k,
                    outer: Outer { lr: p.training.outer_lr, momentum: p.training.outer_momentum, nesterov: true },
                    rule: Rule::Mean,
                    byzantine: None,
                };
                diloco(s.fleet.as_mut(), s.init.clone(), &plan, &mut record)?
            }
            None => {
                let train = p.training.inner(&self.bench.model, p.steps, seed, 0);
                sync_data_parallel(s.fleet.as_mut(), &self.bench.layout, s.init.clone(), &train, &mut record)?
            }
        };
        Ok(ArmRun { points, diverged: outcome.diverged.is_some(), seconds: s.started.elapsed().as_secs_f64() })
    }
}

impl Kind for Diloco {
    const NAME: &'static str = "diloco";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Train the model from a seeded init on M workers' disjoint shards with DiLoCo (K inner AdamW steps per round, outer Nesterov step) or synchronous data parallelism at equal tokens; held-out loss at evenly spaced checkpoints, bytes exchanged.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = DilocoMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        ParamProblem::all_positive(&[("workers", p.workers), ("steps", p.steps), ("checkpoints", p.checkpoints)])?;
        if !p.steps.is_multiple_of(p.checkpoints) {
            return Err(ParamProblem::new("steps", format!("must be a multiple of checkpoints ({})", p.checkpoints)));
        }
        p.training.check()
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready { params: p.clone(), bench: Bench::new(p.training.clone(), env)?, runs: Mutex::new(HashMap::new()) })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs.clone()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<DilocoMetrics> {
        let k = arm_k(&f.arm)?;
        let c = f.checkpoint as usize;
        if c == 0 || c > r.params.checkpoints {
            anyhow::bail!("factor `checkpoint` = {c}: expected 1..={}", r.params.checkpoints);
        }
        let run = memo(&r.runs, format!("{}/{}", f.arm, f.seed), || Ok(Arc::new(r.train(&f.arm, f.seed)?)))?;
        let nan = EvalStats { nll: f64::NAN, ppl: f64::NAN, bpb: f64::NAN, bytes: 0 };
        let (tokens, eval, syncs, bytes, train_loss) = match run.points.get(c - 1) {
            Some(pt) => (pt.tokens, pt.eval, pt.syncs, pt.bytes, pt.train_loss),
            // The run diverged before this checkpoint.
            None => (0, nan, 0, 0, f64::NAN),
        };
        Ok(DilocoMetrics {
            k: k.unwrap_or(0) as u64,
            at_end: (c == r.params.checkpoints) as u64,
            tokens,
            nll: eval.nll,
            ppl: eval.ppl,
            syncs,
            bytes,
            diverged: run.diverged as u64,
            train_loss,
            run_seconds: run.seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing;
    use crate::table::Value;

    const TINY: &str = "workers = 2\nsteps = 4\ncheckpoints = 2\nbatch = 1\nseq = 16\nwarmup = 1\neval_bytes = 512\nmode = \"in-process\"";

    fn cell(arm: &str, checkpoint: i64) -> crate::kinds::Cell {
        testing::cell(&[
            ("arm", Value::Str(arm.into())),
            ("checkpoint", Value::Int(checkpoint)),
            ("seed", Value::Int(0)),
        ])
    }

    #[test]
    fn arms_train_at_equal_tokens_and_count_their_synchronisations_and_bytes() {
        let ready = testing::prepare("diloco", TINY);
        let sync = ready.run_cell(&cell("sync", 2)).unwrap();
        let k2 = ready.run_cell(&cell("diloco-k2", 2)).unwrap();
        let k2_half = ready.run_cell(&cell("diloco-k2", 1)).unwrap();
        // 2 workers x 1 sequence x 16 bytes x 4 steps.
        assert_eq!(sync["tokens"], Value::Int(128));
        assert_eq!(k2["tokens"], Value::Int(128));
        assert_eq!(k2_half["tokens"], Value::Int(64));
        assert_eq!(
            (sync["syncs"].clone(), k2["syncs"].clone(), k2_half["syncs"].clone()),
            (Value::Int(4), Value::Int(2), Value::Int(1))
        );
        assert_eq!((sync["k"].clone(), k2["k"].clone()), (Value::Int(0), Value::Int(2)));
        // Per round and worker: 28-byte headers, 8 + 12 bytes of fields, 4 bytes a parameter each way.
        let n =
            crate::federated::Layout::of_model(&crate::engine::Profile::from_name("tiny").unwrap().model).len() as i64;
        assert_eq!(k2["bytes"], Value::Int(2 * 2 * (28 + 8 + 4 * n + 28 + 12 + 4 * n)));
        for row in [&sync, &k2, &k2_half] {
            let nll = row["nll"].as_f64().unwrap();
            assert!(nll.is_finite() && nll > 0.0 && nll < 6.0, "{nll}");
            assert_eq!(row["diverged"], Value::Int(0));
        }
        assert_eq!(ready.run_cell(&cell("diloco-k2", 2)).unwrap(), k2, "a run is trained once and read again");
    }

    #[test]
    fn bad_arms_checkpoints_and_step_counts_are_named_errors() {
        let ready = testing::prepare("diloco", TINY);
        let e = ready.run_cell(&cell("diloco-k3", 1)).unwrap_err().to_string();
        assert!(e.contains("not a multiple of K = 3"), "{e}");
        let e = ready.run_cell(&cell("fedavg", 1)).unwrap_err().to_string();
        assert!(e.contains("factor `arm`") && e.contains("fedavg"), "{e}");
        let e = ready.run_cell(&cell("sync", 3)).unwrap_err().to_string();
        assert!(e.contains("factor `checkpoint` = 3"), "{e}");
        let e = testing::check("diloco", "steps = 10\ncheckpoints = 3").unwrap_err();
        assert!(e.starts_with("steps:"), "{e}");
        let e = testing::check("diloco", "outer_momentum = 1.0").unwrap_err();
        assert!(e.starts_with("outer_momentum:"), "{e}");
        let e = testing::check("diloco", "stepz = 10").unwrap_err();
        assert!(e.contains("unknown field `stepz`"), "{e}");
    }
}
