//! Per-user adapter experiments on the engine (bets 10, 37, 46, 49, 54, 55,
//! 60, 61), the specialists' mixtures and their audit (04, 17, 18), the
//! falsifications and controls that share their base and budget (31, 38,
//! 39, 40, 63), and the production wire format on the same footing (13, 52,
//! 53).
//!
//! Every kind here shares one [`Workbench`]: the corpus, the base model of
//! the run's profile, and memoised adapters and base evaluations, so an
//! adapter is trained once per (arm, user, data, seed) however many cells
//! evaluate it. Every arm of one bet shares the base, the budget (AdamW, `lr`,
//! `steps`) and the data order of a seed: arms differ only in what is
//! trainable.

mod audit_overhead;
mod average;
mod collapse;
mod combiners;
mod glass_box;
mod hidden_noise;
mod layer_skip;
mod manifest;
mod mixture;
mod replication;
mod soup;
mod train_eval;
mod wire_format;

pub use audit_overhead::AuditOverhead;
pub use average::AdapterAverage;
pub use collapse::ExpertCollapse;
pub use combiners::SpecialistCombiners;
pub use glass_box::GlassBox;
pub use hidden_noise::HiddenNoise;
pub use layer_skip::LayerSkip;
pub use manifest::SpecialistManifest;
pub use mixture::AdapterMixture;
pub use replication::ReplicationTrainEval;
pub use soup::WeightSoup;
pub use train_eval::AdapterTrainEval;
pub use wire_format::WireFormat;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::memo::{Memo, memo};
use super::{Env, ParamProblem};
use crate::data::{Corpus, LoadOptions, Split};
use crate::engine::BaseModel;
use crate::engine::adapter::{Adapter, TRAINABLE_SET_NAMES, Trainable, trainable_set};
use crate::engine::config::Profile;
use crate::engine::eval::{EvalConfig, EvalStats, evaluate};
use crate::engine::train::{TrainConfig, TrainStats, finetune};
use crate::services::{Adapters, BaseModels};

/// The name that stands for the base model's own text where a user is named.
pub const GENERAL: &str = "general";

/// Arms of the catalogue: what a fine-tune may change.
pub const ARMS: &[&str] = &TRAINABLE_SET_NAMES;

/// The training budget and evaluation settings every adapter kind shares;
/// defaults are the catalogue's shared frame (AdamW, lr 5e-5, 100 steps).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step (each the model's context long).
    pub batch: usize,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// LoRA rank of the `lora-r4` arm.
    pub lora_rank: usize,
    /// Evaluate at most this many bytes of each held-out text (0 = all).
    pub eval_bytes: usize,
    /// Also evaluate on the general held-out text (bet 10).
    pub general_eval: bool,
    /// Seed of the base model's pre-training.
    pub base_seed: u64,
    /// Users whose training splits are appended to the general text the
    /// base is pre-trained on (in this order; empty: the general text
    /// alone). The replication study's base-domain cause (bet 103): the
    /// original used a "programmer-fixture base". Held-out slices are never
    /// mixed in.
    pub base_mix: Vec<String>,
    /// The profile whose geometry and pre-training budget the base takes,
    /// whatever profile the run has (unset: the run's own). The
    /// replication study's scale cause (bet 107): the original's geometry
    /// is `paper`, so its counted runs use the `paper` base at any profile
    /// but `tiny`, whose override sets `tiny` for CI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geometry: Option<String>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            lr: 5e-5,
            steps: 100,
            batch: 8,
            warmup: 10,
            lora_rank: 4,
            eval_bytes: 0,
            general_eval: false,
            base_seed: 0,
            base_mix: vec![],
            geometry: None,
        }
    }
}

impl Budget {
    /// Range checks shared by every kind; the problem names the first bad key.
    pub fn check(&self) -> Result<(), ParamProblem> {
        let bad = [
            ("lr", self.lr.is_nan() || self.lr <= 0.0),
            ("steps", self.steps == 0),
            ("batch", self.batch == 0),
            ("lora_rank", self.lora_rank == 0),
        ];
        if let Some((key, _)) = bad.into_iter().find(|(_, bad)| *bad) {
            return Err(ParamProblem::new(key, "must be positive"));
        }
        if let Some(g) = self.geometry.as_deref().filter(|g| !Profile::NAMES.contains(g)) {
            return Err(ParamProblem::new(
                "geometry",
                format!("unknown profile `{g}`; expected one of {}", Profile::NAMES.join(", ")),
            ));
        }
        for (i, user) in self.base_mix.iter().enumerate() {
            if user == GENERAL {
                return Err(ParamProblem::new("base_mix", "`general` is the base's own text already: name users"));
            }
            if self.base_mix[..i].contains(user) {
                return Err(ParamProblem::new("base_mix", format!("`{user}` is named twice")));
            }
        }
        Ok(())
    }
}

/// Threads of the base model's pre-training: fixed, so that the base (and
/// every cell's result) does not depend on `-j` or `--threads`.
pub const PRETRAIN_THREADS: usize = 2;

/// A trained adapter with its training statistics and its size on disk.
#[derive(Clone)]
pub struct Trained {
    pub adapter: Arc<Adapter>,
    pub stats: Arc<TrainStats>,
    pub bytes: u64,
}

/// What every cell of an adapter bet shares.
pub struct Workbench {
    pub budget: Budget,
    pub corpus: Corpus,
    pub base: BaseModel,
    threads: usize,
    store: Adapters,
    adapters: Memo<Trained>,
    base_evals: Memo<EvalStats>,
}

/// The text the base is pre-trained on: the general training text, then
/// each `mix` user's training split, separated like documents.
pub fn base_text(corpus: &Corpus, mix: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut text = corpus.general_train();
    for user in mix {
        text.extend_from_slice(b"\n\n");
        text.extend_from_slice(&corpus.train(user)?);
    }
    Ok(text)
}

impl Workbench {
    /// Load (fetching if needed) the corpus and build or load the base of
    /// the run's profile (or of the budget's `geometry`).
    pub fn new(budget: Budget, env: &Env) -> anyhow::Result<Workbench> {
        let corpus = Corpus::load(&env.paths.data_dir(), &LoadOptions::default())?;
        let profile = Profile::from_name(budget.geometry.as_deref().unwrap_or(&env.profile))?;
        let (base, _) = BaseModels::new(env.paths.models_dir()).get_or_pretrain(
            &profile,
            &base_text(&corpus, &budget.base_mix)?,
            &corpus.general_eval(),
            budget.base_seed,
            PRETRAIN_THREADS,
            env.progress.as_ref(),
        )?;
        Ok(Workbench {
            budget,
            corpus,
            base,
            threads: env.threads,
            store: Adapters::new(env.paths.adapters_dir()),
            adapters: Mutex::new(HashMap::new()),
            base_evals: Mutex::new(HashMap::new()),
        })
    }

    /// A workbench on `base` (e.g. a ternary form of this one's) sharing
    /// the corpus, the budget and the adapter store, with memos of its own.
    pub fn on_base(&self, base: BaseModel) -> Workbench {
        Workbench {
            budget: self.budget.clone(),
            corpus: self.corpus.clone(),
            base,
            threads: self.threads,
            store: self.store.clone(),
            adapters: Mutex::new(HashMap::new()),
            base_evals: Mutex::new(HashMap::new()),
        }
    }

    /// Hashes of everything the cells depend on: the base and every split.
    pub fn inputs(&self) -> BTreeMap<String, String> {
        let mut inputs = BTreeMap::new();
        inputs.insert("base_model".to_string(), self.base.hash.clone());
        inputs.insert("general_train".to_string(), self.corpus.general_train_hash());
        if !self.budget.base_mix.is_empty() {
            inputs.insert("base_mix".to_string(), self.budget.base_mix.join("+"));
        }
        if let Some(g) = &self.budget.geometry {
            inputs.insert("geometry".to_string(), g.clone());
        }
        for user in self.corpus.users() {
            for split in [Split::Train, Split::A, Split::B, Split::C] {
                if let Ok(h) = self.corpus.split_hash(user, split) {
                    inputs.insert(format!("{user}/{}", split.name()), h);
                }
            }
        }
        inputs
    }

    /// Evaluation settings of this budget.
    pub fn eval_cfg(&self) -> EvalConfig {
        EvalConfig { max_bytes: self.budget.eval_bytes, threads: self.threads, ..Default::default() }
    }

    fn trainable(&self, arm: &str) -> anyhow::Result<Trainable> {
        Ok(trainable_set(arm, self.budget.lora_rank)?)
    }

    /// The training text of `user`: real, or (`random`) seeded uniform
    /// random bytes of the same length.
    fn train_text(&self, user: &str, data: &str, seed: u64) -> anyhow::Result<Vec<u8>> {
        let real = self.corpus.train(user)?;
        Ok(match data {
            "random" => {
                let mut bytes = vec![0u8; real.len()];
                let stream = super::derive_seed(user, &format!("noise-floor/{seed}"));
                rand_chacha::ChaCha8Rng::seed_from_u64(stream).fill_bytes(&mut bytes);
                bytes
            }
            _ => real,
        })
    }

    /// The adapter of (arm, user, data, seed), trained on first use. Trained
    /// adapters are also kept on disk under `<cache>/adapters/`, keyed by
    /// the base, the training text and the budget, so bets that share an
    /// adapter (46, 49, 60 and 61 all train the programmer's norm-only
    /// adapter at seed 0) train it once.
    pub fn adapter(&self, arm: &str, user: &str, data: &str, seed: u64) -> anyhow::Result<Trained> {
        self.adapter_on(arm, &format!("{user}/{data}"), seed, self.budget.lr, || self.train_text(user, data, seed))
    }

    /// The adapter of (arm, user, seed) trained at peak learning rate `lr`
    /// on the first `bytes` bytes of the user's real training text (all of
    /// it for `None`): the replication study's causes (bets 101 and up).
    /// With neither changed it is [`Workbench::adapter`]'s real-data adapter.
    pub fn adapter_varied(
        &self,
        arm: &str,
        user: &str,
        bytes: Option<usize>,
        lr: f64,
        seed: u64,
    ) -> anyhow::Result<Trained> {
        let mut what = format!("{user}/real");
        if let Some(n) = bytes {
            what.push_str(&format!("/first-{n}"));
        }
        if lr.to_bits() != self.budget.lr.to_bits() {
            what.push_str(&format!("/lr-{lr:e}"));
        }
        self.adapter_on(arm, &what, seed, lr, || {
            let mut text = self.train_text(user, "real", seed)?;
            if let Some(n) = bytes {
                if n > text.len() {
                    anyhow::bail!("user `{user}` has {} training bytes, fewer than the {n} asked for", text.len());
                }
                text.truncate(n);
            }
            Ok(text)
        })
    }

    /// The adapter named `what` (memo key, with arm and seed) trained at
    /// peak `lr` on `text()`, from memory, from disk or trained now.
    fn adapter_on(
        &self,
        arm: &str,
        what: &str,
        seed: u64,
        lr: f64,
        text: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Trained> {
        memo(&self.adapters, format!("{arm}/{what}/{seed}"), || {
            let text = text()?;
            let trainable = self.trainable(arm)?;
            let cfg = TrainConfig {
                lr,
                steps: self.budget.steps,
                batch: self.budget.batch,
                seq: self.base.config.context,
                seed,
                warmup: self.budget.warmup,
                threads: self.threads,
                ..TrainConfig::default()
            };
            let key = crate::fsutil::sha256_hex(
                serde_json::json!({
                    "engine": crate::engine::pretrain::ENGINE_VERSION,
                    "base": self.base.hash,
                    "trainable": trainable.to_string(),
                    "text": crate::fsutil::sha256_hex(&text),
                    "train": cfg,
                })
                .to_string()
                .as_bytes(),
            );
            if let Some(t) = self.store.load(&key, &self.base) {
                return Ok(Trained { adapter: Arc::new(t.adapter), stats: Arc::new(t.stats), bytes: t.bytes });
            }
            let (adapter, stats) = finetune(&self.base, trainable, &text, &cfg)?;
            let bytes = self.store.save(&key, &adapter, &stats)?;
            Ok(Trained { adapter: Arc::new(adapter), stats: Arc::new(stats), bytes })
        })
    }

    /// The bare base evaluated on `user`'s held-out `slice` (memoised);
    /// `general` names the base's own held-out text ([`Workbench::held_out`]).
    pub fn base_eval(&self, user: &str, slice: Split) -> anyhow::Result<EvalStats> {
        memo(&self.base_evals, format!("{user}/{}", slice.name()), || {
            Ok(evaluate(&self.base, None, &self.held_out(user, slice)?, &self.eval_cfg())?)
        })
    }

    /// A held-out slice of `user`'s text, or of the base's own held-out
    /// text when `user` is [`GENERAL`].
    pub fn held_out(&self, user: &str, slice: Split) -> anyhow::Result<Vec<u8>> {
        Ok(if user == GENERAL { self.corpus.general_eval_slice(slice) } else { self.corpus.eval(user, slice)? })
    }

    /// The bare base on the general held-out text (memoised).
    pub fn base_eval_general(&self) -> anyhow::Result<EvalStats> {
        memo(&self.base_evals, "general".into(), || {
            Ok(evaluate(&self.base, None, &self.corpus.general_eval(), &self.eval_cfg())?)
        })
    }
}

/// A held-out slice, as a grid factor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Slice {
    A,
    B,
    C,
}

impl Slice {
    /// The corpus split this slice is.
    pub fn split(self) -> Split {
        match self {
            Slice::A => Split::A,
            Slice::B => Split::B,
            Slice::C => Split::C,
        }
    }
}

/// What an adapter trains on, as a grid factor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Data {
    /// The user's own text.
    #[default]
    Real,
    /// Seeded uniform random bytes of the same length (the noise floor).
    Random,
}

impl Data {
    /// The name the adapter cache and the memo use.
    pub fn name(self) -> &'static str {
        match self {
            Data::Real => "real",
            Data::Random => "random",
        }
    }
}

/// An arm of [`ARMS`], as a grid factor names it (its schema lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arm(String);

impl Arm {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Arm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if ARMS.contains(&name.as_str()) {
            Ok(Arm(name))
        } else {
            Err(serde::de::Error::custom(format!("unknown arm `{name}`: expected one of {}", ARMS.join(", "))))
        }
    }
}

impl JsonSchema for Arm {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Arm".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "enum": ARMS })
    }
}
