//! Kind `replication-train-eval` (the replication study, bets 101 and up):
//! bet 46's procedure, train one user's adapter and evaluate it on a
//! held-out slice of the same user's text, with one of the causes our
//! verdicts may differ from the original's by as a grid factor: how much of
//! the user's training text the adapter sees (`train_bytes`, the first N
//! bytes of the train split, recorded by hash) and the peak learning rate
//! (`lr`). A cell with neither factor is bet 46's cell, bit for bit. The
//! base's domain and scale are procedure parameters every adapter kind has
//! (`base_mix`, users' training text mixed into the base's pre-training;
//! `geometry`, the profile whose model the base is).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Arm, Budget, Slice, Workbench};
use crate::engine::eval::evaluate;
use crate::kinds::{Cell, Env, Kind, ParamProblem};

/// The `replication-train-eval` kind.
pub struct ReplicationTrainEval;

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Seeds the data order.
    seed: u64,
    /// What the fine-tune may change.
    arm: Arm,
    /// Whose training text the adapter learns and whose held-out text is evaluated.
    user: String,
    /// Held-out slice A, B or C.
    slice: Slice,
    /// Train on the first this many bytes of the user's train split (0 or
    /// absent: all of it).
    train_bytes: Option<u64>,
    /// Peak AdamW learning rate of this cell (default: the procedure's `lr`).
    lr: Option<f64>,
}

crate::metrics! {
    /// What one adapter evaluation measured, and on what it was trained.
    pub struct ReplicationMetrics {
        /// Held-out perplexity per byte of the adapted model.
        pub ppl: f64,
        /// Held-out perplexity per byte of the bare base on the same text.
        pub base_ppl: f64,
        /// 1 - ppl / base_ppl: relative improvement over the base (positive is better).
        pub gain: f64,
        /// Mean training cross-entropy of the last 10 steps (nats per byte).
        pub train_loss: f64,
        /// Scalars the optimiser updated.
        pub trainable_params: usize,
        /// Bytes of training text the adapter saw.
        pub train_text_bytes: u64,
        /// SHA-256 of that training text.
        pub train_sha256: String,
        /// The peak learning rate used.
        pub lr_used: f64,
        /// Bytes predicted in the held-out evaluation.
        pub eval_bytes: u64,
    }
}

impl Kind for ReplicationTrainEval {
    const NAME: &'static str = "replication-train-eval";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Bet 46's adapter train-and-evaluate with one cause of disagreement (training bytes, learning rate) as a factor.";
    type Params = Budget;
    type Factors = Factors;
    type Metrics = ReplicationMetrics;
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

    fn run(w: &Workbench, _cell: &Cell, f: Factors) -> anyhow::Result<ReplicationMetrics> {
        let lr = f.lr.unwrap_or(w.budget.lr);
        if !(lr.is_finite() && lr > 0.0) {
            anyhow::bail!("lr = {lr}: expected a positive learning rate");
        }
        let bytes = f.train_bytes.filter(|&n| n > 0).map(|n| n as usize);
        let text = {
            let mut t = w.corpus.train(&f.user)?;
            if let Some(n) = bytes {
                t.truncate(n);
            }
            t
        };
        let trained = w.adapter_varied(f.arm.as_str(), &f.user, bytes, lr, f.seed)?;
        let slice = f.slice.split();
        let eval = evaluate(&w.base, Some(&trained.adapter), &w.corpus.eval(&f.user, slice)?, &w.eval_cfg())?;
        let base = w.base_eval(&f.user, slice)?;
        Ok(ReplicationMetrics {
            ppl: eval.ppl,
            base_ppl: base.ppl,
            gain: 1.0 - eval.ppl / base.ppl,
            train_loss: trained.stats.final_loss,
            trainable_params: trained.stats.trainable_params,
            train_text_bytes: text.len() as u64,
            train_sha256: crate::fsutil::sha256_hex(&text),
            lr_used: lr,
            eval_bytes: eval.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kinds::testing;
    use crate::table::Value;

    const TINY: &str = "steps = 3\neval_bytes = 2048";

    fn cell(extra: &[(&str, Value)]) -> crate::kinds::Cell {
        let mut factors = vec![
            ("seed", Value::Int(0)),
            ("arm", Value::Str("norm-only".into())),
            ("user", Value::Str("novelist".into())),
            ("slice", Value::Str("A".into())),
        ];
        factors.extend(extra.iter().cloned());
        testing::cell(&factors)
    }

    #[test]
    fn without_its_factors_a_cell_is_bet_46s_and_a_prefix_is_trained_on_and_recorded() {
        let plain = testing::prepare("adapter-train-eval", TINY).run_cell(&cell(&[])).unwrap();
        let study = testing::prepare("replication-train-eval", TINY);
        let same = study.run_cell(&cell(&[])).unwrap();
        for metric in ["ppl", "base_ppl", "gain", "train_loss", "trainable_params", "eval_bytes"] {
            assert_eq!(same[metric], plain[metric], "{metric}");
        }
        assert_eq!(same["lr_used"], Value::Float(5e-5));
        let explicit = study.run_cell(&cell(&[("lr", Value::Float(5e-5))])).unwrap();
        assert_eq!(explicit["ppl"], same["ppl"], "the default learning rate named explicitly");
        let all = study.run_cell(&cell(&[("train_bytes", Value::Int(0))])).unwrap();
        assert_eq!((&all["ppl"], &all["train_sha256"]), (&same["ppl"], &same["train_sha256"]), "0 bytes = all");

        let prefix = study.run_cell(&cell(&[("train_bytes", Value::Int(4096))])).unwrap();
        assert_eq!(prefix["train_text_bytes"], Value::Int(4096));
        let sha = |r: &crate::table::Row| r["train_sha256"].as_str().unwrap().to_string();
        assert_eq!(sha(&prefix).len(), 64);
        assert_ne!(sha(&prefix), sha(&same));
        assert_ne!(prefix["ppl"], same["ppl"], "4 KiB of text is another adapter");
        let faster = study.run_cell(&cell(&[("lr", Value::Float(1e-2))])).unwrap();
        assert_eq!((faster["lr_used"].clone(), sha(&faster)), (Value::Float(1e-2), sha(&same)));
        assert_ne!(faster["ppl"], same["ppl"]);

        let e = study.run_cell(&cell(&[("train_bytes", Value::Int(1 << 40))])).unwrap_err().to_string();
        assert!(e.contains("fewer than the 1099511627776 asked for"), "{e}");
        let e = study.run_cell(&cell(&[("lr", Value::Float(-1.0))])).unwrap_err().to_string();
        assert!(e.contains("lr = -1: expected a positive learning rate"), "{e}");
    }

    #[test]
    fn geometry_names_a_profile_and_at_the_runs_own_profile_changes_nothing() {
        let e = testing::check("replication-train-eval", &format!("{TINY}\ngeometry = \"huge\"")).unwrap_err();
        assert!(
            e.contains("geometry") && e.contains("unknown profile `huge`; expected one of tiny, small, paper"),
            "{e}"
        );
        let plain = testing::prepare("replication-train-eval", TINY);
        let pinned = testing::prepare("replication-train-eval", &format!("{TINY}\ngeometry = \"tiny\""));
        let (p, q) = (plain.inputs(), pinned.inputs());
        assert_eq!((p["base_model"].as_str(), p.get("geometry")), (q["base_model"].as_str(), None));
        assert_eq!(q["geometry"], "tiny");
        assert_eq!(plain.run_cell(&cell(&[])).unwrap(), pinned.run_cell(&cell(&[])).unwrap());
    }

    #[test]
    fn a_base_pretrained_with_a_users_training_text_is_another_base() {
        let problem = |extra: &str| testing::check("replication-train-eval", &format!("{TINY}\n{extra}")).unwrap_err();
        let e = problem("base_mix = [\"general\"]");
        assert!(e.contains("base_mix") && e.contains("`general` is the base's own text already"), "{e}");
        let e = problem("base_mix = [\"novelist\", \"novelist\"]");
        assert!(e.contains("`novelist` is named twice"), "{e}");

        let plain = testing::prepare("replication-train-eval", TINY);
        let mixed = testing::prepare("replication-train-eval", &format!("{TINY}\nbase_mix = [\"novelist\"]"));
        let (p, m) = (plain.inputs(), mixed.inputs());
        assert_ne!(p["base_model"], m["base_model"]);
        assert_eq!((p.get("base_mix"), m["base_mix"].as_str()), (None, "novelist"));
        let (a, b) = (plain.run_cell(&cell(&[])).unwrap(), mixed.run_cell(&cell(&[])).unwrap());
        assert_eq!(a["train_sha256"], b["train_sha256"], "the adapter's own text is unchanged");
        assert_ne!(a["base_ppl"], b["base_ppl"], "the novelist's held-out text under another base");
    }
}
