//! The coordinator: it holds the embeddings and the head and sends the
//! residual stream through a chain of block workers, one after the other
//! (the client-driven chain of Petals-style swarms), each keeping the KV
//! cache of its own blocks for the sequence.
//!
//! [`greedy`] is the one generation loop, whatever runs the blocks: in
//! this process ([`local_blocks`]) or on workers ([`Chain::blocks`]), so a
//! comparison of the two differs only in where the blocks ran.

use std::net::SocketAddr;
use std::ops::Range;

use super::client::{ConnStats, Connection, Timeouts, WorkerError};
use super::message::{Reply, Request, WireHidden};
use crate::engine::model::View;
use crate::engine::model::{argmax_rows, tokens};
use crate::engine::{Hidden, KvCache};

/// Contiguous block ranges splitting `layers` blocks over `workers`
/// workers as evenly as possible, the larger ranges first.
pub fn split(layers: usize, workers: usize) -> Result<Vec<Range<usize>>, String> {
    if workers == 0 || workers > layers {
        return Err(format!("cannot split {layers} blocks over {workers} workers (expected 1..={layers})"));
    }
    let (per, extra) = (layers / workers, layers % workers);
    let mut out = Vec::with_capacity(workers);
    let mut at = 0;
    for w in 0..workers {
        let n = per + usize::from(w < extra);
        out.push(at..at + n);
        at += n;
    }
    Ok(out)
}

/// One sequence's connections to a chain of workers that together serve
/// every block, in order.
pub struct Chain {
    stages: Vec<(Connection, Range<usize>)>,
}

impl Chain {
    /// Connect to `workers` (name, address), check that each serves
    /// `model_id` and that their blocks chain from 0 to `layers`.
    pub fn connect(
        workers: &[(String, SocketAddr)],
        model_id: &str,
        layers: usize,
        t: Timeouts,
    ) -> Result<Chain, WorkerError> {
        let mut stages = Vec::with_capacity(workers.len());
        let mut next = 0;
        for (name, addr) in workers {
            let mut conn = Connection::connect(*addr, name, t)?;
            let hello = conn.call(&Request::Hello)?;
            let unexpected = |detail: String| WorkerError::Unexpected { worker: conn.name.clone(), detail };
            match hello {
                Reply::Ready { model_id: id, start, end, layers: l, .. } => {
                    if id != model_id {
                        return Err(unexpected(format!("serves model {id}, expected {model_id}")));
                    }
                    if start as usize != next || l as usize != layers {
                        return Err(unexpected(format!(
                            "serves blocks {start}..{end} of {l}, expected a range from {next} of {layers}"
                        )));
                    }
                    next = end as usize;
                    stages.push((conn, start as usize..end as usize));
                }
                other => return Err(unexpected(format!("answered Hello with {other:?}"))),
            }
        }
        if next != layers {
            return Err(WorkerError::Unexpected {
                worker: "the chain".into(),
                detail: format!("covers blocks 0..{next}, the model has {layers}"),
            });
        }
        Ok(Chain { stages })
    }

    /// Run every block on `h`, stage after stage, attending over (and
    /// extending) each worker's cache for this sequence.
    pub fn blocks(&mut self, h: Hidden) -> Result<Hidden, WorkerError> {
        let device = h.x.device().clone();
        let mut wire = WireHidden::of(&h)
            .map_err(|e| WorkerError::Unexpected { worker: "the coordinator".into(), detail: e.to_string() })?;
        for (conn, _) in &mut self.stages {
            wire = match conn.call(&Request::Forward { hidden: wire, cached: true })? {
                Reply::Hidden(out) if out.rows == h.x.dims()[0] as u32 => out,
                other => {
                    return Err(WorkerError::Unexpected {
                        worker: conn.name.clone(),
                        detail: format!("answered Forward with {}", brief(&other)),
                    });
                }
            };
        }
        let mut out = wire
            .to_hidden(&device)
            .map_err(|e| WorkerError::Unexpected { worker: "the chain".into(), detail: e.to_string() })?;
        out.aux = h.aux;
        out.routes = h.routes;
        out.gates = h.gates;
        Ok(out)
    }

    /// Start a new sequence: every worker drops its cache.
    pub fn reset(&mut self) -> Result<(), WorkerError> {
        for (conn, _) in &mut self.stages {
            conn.call(&Request::Reset)?;
        }
        Ok(())
    }

    /// A new sequence: [`greedy`] generation of `max_new` bytes after
    /// `prompt`, the blocks on this chain.
    pub fn generate(&mut self, view: &View, prompt: &[u8], max_new: usize) -> Result<Generation, ChainError> {
        self.reset()?;
        greedy(view, prompt, max_new, |h| self.blocks(h).map_err(ChainError::from))
    }

    /// Each connection's counts, in chain order.
    pub fn stats(&self) -> Vec<ConnStats> {
        self.stages.iter().map(|(c, _)| c.stats).collect()
    }
}

fn brief(r: &Reply) -> String {
    match r {
        Reply::Hidden(h) => format!("a hidden state of {} rows", h.rows),
        other => format!("{other:?}").chars().take(80).collect(),
    }
}

/// What a greedy generation computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Logits of every prompt position, row by row (`prompt.len() * vocab`).
    pub prompt_logits: Vec<f32>,
    /// The generated bytes.
    pub tokens: Vec<u8>,
    /// The logits each generated byte was chosen from.
    pub step_logits: Vec<Vec<f32>>,
}

impl Generation {
    /// Whether every logit of both is the same f32 bit pattern.
    pub fn bit_identical(&self, other: &Generation) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        bits(&self.prompt_logits) == bits(&other.prompt_logits)
            && self.step_logits.len() == other.step_logits.len()
            && self.step_logits.iter().zip(&other.step_logits).all(|(a, b)| bits(a) == bits(b))
    }

    /// The largest absolute difference of any logit (infinite when the
    /// shapes differ).
    pub fn max_abs_diff(&self, other: &Generation) -> f64 {
        let diff = |a: &[f32], b: &[f32]| -> f64 {
            if a.len() != b.len() {
                return f64::INFINITY;
            }
            a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
        };
        if self.step_logits.len() != other.step_logits.len() {
            return f64::INFINITY;
        }
        self.step_logits
            .iter()
            .zip(&other.step_logits)
            .map(|(a, b)| diff(a, b))
            .fold(diff(&self.prompt_logits, &other.prompt_logits), f64::max)
    }
}

/// Greedy generation of `max_new` bytes after `prompt` (fewer when the
/// context fills up): embeddings and head here, the blocks wherever
/// `blocks` runs them (with a cache there for the sequence).
pub fn greedy<E>(
    view: &View,
    prompt: &[u8],
    max_new: usize,
    mut blocks: impl FnMut(Hidden) -> Result<Hidden, E>,
) -> Result<Generation, E>
where
    E: From<crate::engine::EngineError>,
{
    if prompt.is_empty() {
        return Err(crate::engine::EngineError::Config("generation needs a prompt".into()).into());
    }
    let device = view.w("wte")?.device().clone();
    let h = blocks(view.embed_at(&tokens(prompt, &device)?, 0)?)?;
    let logits = view.head(&h)?;
    let prompt_logits = flat(&logits)?;
    let mut row = last_row(&logits)?;
    let mut out = Generation { prompt_logits, tokens: Vec::new(), step_logits: Vec::new() };
    let mut pos = prompt.len();
    while out.tokens.len() < max_new {
        let next = argmax_rows(&row)?[0] as u8;
        out.tokens.push(next);
        out.step_logits.push(flat(&row)?);
        if out.tokens.len() == max_new || pos >= view.cfg.context {
            break;
        }
        let h = blocks(view.embed_at(&tokens(&[next], &device)?, pos)?)?;
        row = view.head(&h)?;
        pos += 1;
    }
    Ok(out)
}

fn flat(t: &candle_core::Tensor) -> crate::engine::Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1()?)
}

fn last_row(t: &candle_core::Tensor) -> crate::engine::Result<candle_core::Tensor> {
    Ok(t.narrow(0, t.dim(0)? - 1, 1)?)
}

/// Every block in this process, with a cache of its own: the reference a
/// chain of workers is compared with.
pub fn local_blocks<'v>(view: &'v View<'v>) -> impl FnMut(Hidden) -> crate::engine::Result<Hidden> + 'v {
    let mut cache = KvCache::new();
    move |h| view.forward_blocks(0..view.cfg.layers, h, Some(&mut cache))
}

/// The error of a generation through workers.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_evenly_and_contiguously() {
        assert_eq!(split(4, 2).unwrap(), [0..2, 2..4]);
        assert_eq!(split(4, 3).unwrap(), [0..2, 2..3, 3..4]);
        assert_eq!(split(4, 4).unwrap(), [0..1, 1..2, 2..3, 3..4]);
        assert!(split(4, 5).unwrap_err().contains("cannot split 4 blocks over 5"));
        assert!(split(4, 0).is_err());
    }

    #[test]
    fn the_local_reference_is_the_engine_generation() {
        let cfg = crate::engine::Profile::from_name("tiny").unwrap().model;
        let base = crate::engine::BaseModel::random(&cfg, 1, &candle_core::Device::Cpu).unwrap();
        let view = base.view();
        let g = greedy(&view, b"abc", 5, local_blocks(&view)).unwrap();
        assert_eq!(g.tokens, view.generate(b"abc", 5).unwrap());
        assert_eq!(g.prompt_logits.len(), 3 * cfg.vocab);
        assert!(g.bit_identical(&g.clone()));
        assert_eq!(g.max_abs_diff(&g), 0.0);
    }
}
