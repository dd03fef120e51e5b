//! The worker pipeline over real processes and sockets (bets 02, 05, 45).
//!
//! A cell starts its own `bets worker` processes on loopback ports, puts a
//! WAN emulator in front of each when its `link` is not `direct`, runs its
//! chunk of prompts through them, compares every byte and logit with the
//! same generation in this process, and stops everything it started
//! (guards, also on error). What a cell measures in time (tokens/s,
//! hand-off latency) is reported beside the counts; the criteria read only
//! counts, which do not depend on timing.

mod handoff;
mod split;

pub use handoff::HiddenHandoff;
pub use split::WorkerPipeline;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ParamProblem;
use super::adapters::Workbench;
use crate::engine::Adapter;
use crate::services::BaseModels;
use crate::workers::{Link, LinkEmulator, ModelCard, WorkerError};

/// A link as a grid names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LinkName {
    /// Plain loopback TCP.
    Direct,
    /// 40 ms round trip, 5 ms jitter, 1% frame loss, 10 Mbit/s up, 50 down.
    Home,
    /// 100 ms round trip, 10 ms jitter, 0.5% frame loss, 100 Mbit/s each way.
    Transcontinental,
}

impl LinkName {
    fn link(self) -> Link {
        match self {
            LinkName::Direct => Link::Direct,
            LinkName::Home => Link::Home,
            LinkName::Transcontinental => Link::Transcontinental,
        }
    }
}

/// The prompts of a run: `prompt_bytes`-long windows of the base's general
/// held-out text, `prompts_per_chunk` per cell.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Prompts {
    /// Bytes of each prompt.
    pub prompt_bytes: usize,
    /// Prompts per cell (chunk `c` holds prompts `c * n .. (c + 1) * n`).
    pub prompts_per_chunk: usize,
    /// Bytes generated greedily after each prompt.
    pub new_tokens: usize,
}

impl Default for Prompts {
    fn default() -> Prompts {
        Prompts { prompt_bytes: 48, prompts_per_chunk: 10, new_tokens: 8 }
    }
}

impl Prompts {
    fn check(&self) -> Result<(), ParamProblem> {
        ParamProblem::all_positive(&[
            ("prompt_bytes", self.prompt_bytes),
            ("prompts_per_chunk", self.prompts_per_chunk),
            ("new_tokens", self.new_tokens),
        ])
    }

    /// The prompts of chunk `chunk`: disjoint windows, one every three
    /// prompt lengths, of `text`; `context` bounds prompt plus continuation.
    fn of_chunk(&self, text: &[u8], chunk: usize, context: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        if self.prompt_bytes + self.new_tokens > context {
            anyhow::bail!(
                "procedure.prompt_bytes + procedure.new_tokens = {} exceeds the model's context of {context} bytes",
                self.prompt_bytes + self.new_tokens
            );
        }
        let stride = 3 * self.prompt_bytes;
        (chunk * self.prompts_per_chunk..(chunk + 1) * self.prompts_per_chunk)
            .map(|i| {
                let at = i * stride;
                text.get(at..at + self.prompt_bytes).map(<[u8]>::to_vec).ok_or_else(|| {
                    anyhow::anyhow!(
                        "prompt {i} needs bytes {at}..{} of the held-out text, which has {}",
                        at + self.prompt_bytes,
                        text.len()
                    )
                })
            })
            .collect()
    }
}

/// The model cards a run's workers load, in a folder of their own.
pub struct Cards {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Cards {
    fn new() -> anyhow::Result<Cards> {
        Ok(Cards { dir: tempfile::tempdir()?, program: crate::workers::bets_program()? })
    }

    /// A card for the workbench's base, with `adapter` over it if any,
    /// saved as `<name>.json` (adapters beside it).
    fn write(
        &self,
        bench: &Workbench,
        models: &BaseModels,
        name: &str,
        adapter: Option<&Adapter>,
    ) -> anyhow::Result<(PathBuf, String)> {
        let weights = models.weights_path(&bench.base.hash);
        let adapter_path = match adapter {
            Some(a) => {
                let p = self.dir.path().join(format!("{name}.adapter.safetensors"));
                crate::fsutil::write_atomic(&p, &a.to_bytes()?)?;
                Some(p)
            }
            None => None,
        };
        let card = ModelCard::new(&bench.base, &weights, adapter_path.as_deref())?;
        let path = self.dir.path().join(format!("{name}.json"));
        card.save(&path)?;
        Ok((path, card.model_id()))
    }

    fn program(&self) -> &Path {
        &self.program
    }
}

/// A worker's address as the coordinator reaches it: directly, or through
/// a link emulator (kept alive beside it).
fn reach(
    addr: std::net::SocketAddr,
    link: LinkName,
    seed: u64,
) -> Result<(std::net::SocketAddr, Option<LinkEmulator>), WorkerError> {
    match link.link().config() {
        None => Ok((addr, None)),
        Some(cfg) => {
            let proxy = LinkEmulator::start(addr, cfg, seed)
                .map_err(|e| WorkerError::Start { worker: format!("link to {addr}"), detail: e.to_string() })?;
            Ok((proxy.addr(), Some(proxy)))
        }
    }
}

/// Frames carried and dropped by `links`.
fn link_counts(links: &[LinkEmulator]) -> (u64, u64) {
    links.iter().map(LinkEmulator::counts).fold((0, 0), |(f, d), (f2, d2, _)| (f + f2, d + d2))
}

/// How long to wait for a worker to report its address.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
