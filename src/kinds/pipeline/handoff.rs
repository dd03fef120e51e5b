//! Kind `hidden-handoff` (bet 05): specialist A (a `bets worker` process)
//! prefills a prompt and hands the envelope (prefix bytes, last hidden row,
//! KV cache, model identity) through the coordinator to specialist B
//! (another process), which continues greedily; B is also asked to run the
//! whole prompt itself. The two continuations are compared byte for byte
//! and logit for logit.
//!
//! `handoff` says who A is: `same-model` (another process serving B's very
//! model: B reuses the state), `other-specialist` (a process serving
//! another user's specialist: B sees a foreign identity and recomputes from
//! the prefix), or `other-specialist-blind`, the negative control, where B
//! reuses the foreign state anyway, to show that the identity check is what
//! keeps the hand-off exact.

use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Cards, LinkName, Prompts, START_WAIT, link_counts, reach};
use crate::kinds::adapters::{Budget, Workbench};
use crate::kinds::{Cell, Env, Kind, ParamProblem, derive_seed};
use crate::services::BaseModels;
use crate::workers::message::{Reply, Request, Trust};
use crate::workers::{Connection, Throttle, Timeouts, WorkerError, WorkerProcess, WorkerSpec};

/// The `hidden-handoff` kind.
pub struct HiddenHandoff;

/// `[procedure]` of `hidden-handoff` (unknown keys are refused by the
/// flattened [`Prompts`]).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct Params {
    #[serde(flatten)]
    pub prompts: Prompts,
    /// Whose norm-only specialist B is.
    pub receiver: String,
    /// Whose specialist the foreign A is.
    pub other: String,
    /// Peak AdamW learning rate of the specialists (the shared frame).
    pub lr: f64,
    /// Optimiser steps of the specialists.
    pub steps: usize,
    /// Seed of the base model's pre-training.
    pub base_seed: u64,
}

impl Default for Params {
    fn default() -> Params {
        let b = Budget::default();
        Params {
            prompts: Prompts::default(),
            receiver: "novelist".into(),
            other: "programmer".into(),
            lr: b.lr,
            steps: b.steps,
            base_seed: 0,
        }
    }
}

/// Who specialist A is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Handoff {
    /// Another process serving B's own model.
    SameModel,
    /// A process serving another user's specialist; B checks the identity.
    OtherSpecialist,
    /// The same, but B reuses the foreign state unchecked (negative control).
    OtherSpecialistBlind,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Who A is.
    handoff: Handoff,
    /// The link between the coordinator and each specialist.
    link: LinkName,
    /// The replicate: cell `seed` takes the seed-th chunk of prompts (and
    /// its link emulators draw their losses from the cell's key).
    seed: u64,
}

crate::metrics! {
    /// One chunk of hand-offs.
    pub struct HandoffMetrics {
        /// Prompts handed off.
        pub prompts: u64,
        /// Prompts whose continuation equals B on the whole prompt, bytes and every logit bit.
        pub exact: u64,
        /// Prompts whose continuation bytes differ from B on the whole prompt.
        pub divergent: u64,
        /// Hand-offs in which B reused the envelope's state.
        pub reused: u64,
        /// Mean bytes of an envelope.
        pub envelope_bytes: f64,
        /// Mean milliseconds from the prefill request to B's continuation (a measurement).
        pub handoff_ms: f64,
        /// Requests sent again after a timeout.
        pub retransmits: u64,
        /// Frames the link emulators dropped.
        pub frames_dropped: u64,
    }
}

/// What every cell shares: the cards of B's and the other specialist.
pub struct Ready {
    params: Params,
    bench: Workbench,
    cards: Cards,
    receiver: (std::path::PathBuf, String),
    other: (std::path::PathBuf, String),
    threads: usize,
}

impl Kind for HiddenHandoff {
    const NAME: &'static str = "hidden-handoff";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Hand a prefilled generation (envelope) from one specialist process to another and compare its continuation with the receiver's own.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = HandoffMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        p.prompts.check()?;
        if p.receiver == p.other {
            return Err(ParamProblem::new("other", "must name another user than `receiver`"));
        }
        Budget { lr: p.lr, steps: p.steps, ..Budget::default() }.check()
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        let budget = Budget { lr: p.lr, steps: p.steps, base_seed: p.base_seed, ..Budget::default() };
        let bench = Workbench::new(budget, env)?;
        let models = BaseModels::new(env.paths.models_dir());
        let cards = Cards::new()?;
        let card = |user: &str| -> anyhow::Result<(std::path::PathBuf, String)> {
            let trained = bench.adapter("norm-only", user, "real", 0)?;
            cards.write(&bench, &models, user, Some(&trained.adapter))
        };
        let receiver = card(&p.receiver)?;
        let other = card(&p.other)?;
        Ok(Ready { params: p.clone(), bench, cards, receiver, other, threads: env.threads })
    }

    fn inputs(r: &Ready) -> std::collections::BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, cell: &Cell, f: Factors) -> anyhow::Result<HandoffMetrics> {
        let cfg = &r.bench.base.config;
        let prompts = r.params.prompts.of_chunk(&r.bench.corpus.general_eval(), f.seed as usize, cfg.context)?;
        let a_card = match f.handoff {
            Handoff::SameModel => &r.receiver.0,
            Handoff::OtherSpecialist | Handoff::OtherSpecialistBlind => &r.other.0,
        };
        let trust = if f.handoff == Handoff::OtherSpecialistBlind { Trust::Blind } else { Trust::CheckIdentity };
        let whole = 0..cfg.layers;
        let spec = |card: &std::path::PathBuf| WorkerSpec {
            card: card.clone(),
            blocks: whole.clone(),
            threads: r.threads,
            throttle: Throttle::None,
        };
        let a = WorkerProcess::spawn(r.cards.program(), &spec(a_card), "specialist A", START_WAIT)?;
        let b = WorkerProcess::spawn(r.cards.program(), &spec(&r.receiver.0), "specialist B", START_WAIT)?;
        let (a_addr, a_link) = reach(a.addr, f.link, derive_seed(&cell.key, "link/a"))?;
        let (b_addr, b_link) = reach(b.addr, f.link, derive_seed(&cell.key, "link/b"))?;
        let mut to_a = Connection::connect(a_addr, &a.name, Timeouts::default())?;
        let mut to_b = Connection::connect(b_addr, &b.name, Timeouts::default())?;

        let n = r.params.prompts.new_tokens as u32;
        let (mut exact, mut divergent, mut reused, mut env_bytes, mut handoff_s) = (0u64, 0u64, 0u64, 0u64, 0f64);
        for prompt in &prompts {
            let started = Instant::now();
            let envelope = match to_a.call(&Request::Prefill { tokens: prompt.clone() })? {
                Reply::Envelope(e) => e,
                other => return Err(unexpected(&to_a, "Prefill", &other).into()),
            };
            env_bytes += envelope.len() as u64;
            let (got, got_logits, was_reused) = tokens(&mut to_b, Request::Continue { envelope, max_new: n, trust })?;
            handoff_s += started.elapsed().as_secs_f64();
            let (want, want_logits, _) = tokens(&mut to_b, Request::Generate { prompt: prompt.clone(), max_new: n })?;
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            exact += u64::from(got == want && bits(&got_logits) == bits(&want_logits));
            divergent += u64::from(got != want);
            reused += u64::from(was_reused);
        }
        let retransmits = to_a.stats.retransmits + to_b.stats.retransmits;
        let links: Vec<_> = a_link.into_iter().chain(b_link).collect();
        let (_, frames_dropped) = link_counts(&links);
        drop((to_a, to_b, links, a, b));
        let count = prompts.len() as f64;
        Ok(HandoffMetrics {
            prompts: prompts.len() as u64,
            exact,
            divergent,
            reused,
            envelope_bytes: env_bytes as f64 / count,
            handoff_ms: 1000.0 * handoff_s / count,
            retransmits,
            frames_dropped,
        })
    }
}

fn unexpected(conn: &Connection, what: &str, got: &Reply) -> WorkerError {
    let got: String = format!("{got:?}").chars().take(80).collect();
    WorkerError::Unexpected { worker: conn.name.clone(), detail: format!("answered {what} with {got}") }
}

/// Send a request answered by generated bytes.
fn tokens(conn: &mut Connection, req: Request) -> Result<(Vec<u8>, Vec<f32>, bool), WorkerError> {
    let what = if matches!(req, Request::Continue { .. }) { "Continue" } else { "Generate" };
    match conn.call(&req)? {
        Reply::Tokens { tokens, logits, reused } => Ok((tokens, logits, reused)),
        other => Err(unexpected(conn, what, &other)),
    }
}
