//! `bets worker`: one process serving a range of a model's blocks over TCP.
//!
//! Each connection is one sequence: its own thread, its own KV cache, its
//! own request numbers. A request whose number is the last one answered is
//! a retransmission (the reply was lost or late) and gets the stored reply
//! again, never a second pass through the blocks, so a lossy link cannot
//! feed the cache the same tokens twice. Malformed frames are answered
//! with an error frame and end the connection; the worker keeps serving
//! others. The process exits when its standard input closes, so a worker
//! never outlives the coordinator that started it, however that one ends.

use std::io::{BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::card::ServedModel;
use super::frame::{self, FrameError};
use super::message::{Reply, Request, Trust, WireHidden};
use super::throttle::Throttle;
use crate::engine::KvCache;
use crate::engine::envelope::Envelope;

/// What a worker serves, and how.
pub struct Worker {
    pub model: ServedModel,
    /// The blocks this worker runs (`0..layers` for a whole-model worker).
    pub blocks: Range<usize>,
    pub throttle: Throttle,
    pool: rayon::ThreadPool,
    served: AtomicU64,
}

impl Worker {
    /// A worker of `blocks` of `model`, computing on `threads` threads.
    pub fn new(model: ServedModel, blocks: Range<usize>, threads: usize, throttle: Throttle) -> anyhow::Result<Worker> {
        let layers = model.base.config.layers;
        if blocks.start >= blocks.end || blocks.end > layers {
            anyhow::bail!("--blocks {}..{}: expected a non-empty range within 0..{layers}", blocks.start, blocks.end);
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?;
        Ok(Worker { model, blocks, throttle, pool, served: AtomicU64::new(0) })
    }

    fn whole(&self) -> bool {
        self.blocks == (0..self.model.base.config.layers)
    }

    /// Answer one request, updating `cache` (this connection's).
    fn respond(&self, req: Request, cache: &mut KvCache) -> Reply {
        let started = Instant::now();
        let reply = self.pool.install(|| self.compute(req, cache)).unwrap_or_else(|e| Reply::Error(format!("{e:#}")));
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.throttle.delay(n, started.elapsed()));
        reply
    }

    fn compute(&self, req: Request, cache: &mut KvCache) -> anyhow::Result<Reply> {
        let view = self.model.view();
        let cfg = &self.model.base.config;
        let need_whole = |what: &str| -> anyhow::Result<()> {
            if self.whole() {
                Ok(())
            } else {
                anyhow::bail!("{what} needs a whole-model worker; this one serves blocks {:?}", self.blocks)
            }
        };
        Ok(match req {
            Request::Hello => Reply::Ready {
                model_id: self.model.id.clone(),
                start: self.blocks.start as u32,
                end: self.blocks.end as u32,
                layers: cfg.layers as u32,
                d_model: cfg.d_model as u32,
            },
            Request::Reset => {
                *cache = KvCache::new();
                Reply::Done
            }
            Request::Forward { hidden, cached } => {
                if hidden.cols as usize != cfg.d_model {
                    anyhow::bail!("hidden state of width {}, the model's is {}", hidden.cols, cfg.d_model);
                }
                let h = hidden.to_hidden(&self.model.base.device)?;
                let out = view.forward_blocks(self.blocks.clone(), h, cached.then_some(cache))?;
                Reply::Hidden(WireHidden::of(&out)?)
            }
            Request::Prefill { tokens } => {
                need_whole("a prefill")?;
                let state = view.prefill(&tokens)?;
                Reply::Envelope(Envelope { model_id: self.model.id.clone(), prefix: tokens, state }.to_bytes()?)
            }
            Request::Continue { envelope, max_new, trust } => {
                need_whole("a continuation")?;
                let env = Envelope::from_bytes(&envelope, &self.model.base.device)?;
                let reused = env.model_id == self.model.id || trust == Trust::Blind;
                let state = if reused { env.state } else { view.prefill(&env.prefix)? };
                tokens_reply(view.continue_from(state, max_new as usize)?, reused)
            }
            Request::Generate { prompt, max_new } => {
                need_whole("a generation")?;
                tokens_reply(view.continue_from(view.prefill(&prompt)?, max_new as usize)?, false)
            }
        })
    }
}

fn tokens_reply(c: crate::engine::Continuation, reused: bool) -> Reply {
    Reply::Tokens { tokens: c.tokens, logits: c.logits.concat(), reused }
}

/// What a served process answers, whatever its messages: the pipeline's
/// [`Worker`], or a federated worker ([`crate::federated::serve`]).
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state (a KV cache; nothing).
    type Session;
    /// A new connection's state.
    fn session(&self) -> Self::Session;
    /// The reply frame (tag, payload) to a request frame.
    fn answer(&self, tag: u8, payload: &[u8], session: &mut Self::Session) -> (u8, Vec<u8>);
    /// The error reply carrying `message`.
    fn error(&self, message: String) -> (u8, Vec<u8>);
}

impl Handler for Worker {
    type Session = KvCache;

    fn session(&self) -> KvCache {
        KvCache::new()
    }

    fn answer(&self, tag: u8, payload: &[u8], cache: &mut KvCache) -> (u8, Vec<u8>) {
        match Request::decode(tag, payload) {
            Ok(req) => self.respond(req, cache),
            Err(e) => Reply::Error(e.to_string()),
        }
        .encode()
    }

    fn error(&self, message: String) -> (u8, Vec<u8>) {
        Reply::Error(message).encode()
    }
}

/// Serve connections on `listener` until the process ends.
pub fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>) -> anyhow::Result<()> {
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        std::thread::spawn(move || {
            if let Err(e) = connection(conn, handler.as_ref()) {
                tracing::info!("connection ended: {e}");
            }
        });
    }
    Ok(())
}

/// One connection's request loop (see the module docs for retransmissions).
fn connection<H: Handler>(conn: TcpStream, handler: &H) -> Result<(), FrameError> {
    conn.set_nodelay(true)?;
    let mut reader = conn.try_clone()?;
    let mut writer = BufWriter::new(conn);
    let mut session = handler.session();
    let mut last: Option<(u64, Vec<u8>)> = None;
    loop {
        let (header, payload) = match frame::read_frame(&mut reader) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Malformed(m)) => {
                let (tag, p) = handler.error(format!("malformed frame: {m}"));
                let _ = frame::write_frame(&mut writer, tag, 0, &p);
                return Err(FrameError::Malformed(m));
            }
            Err(e) => return Err(e),
        };
        let bytes = match &last {
            Some((seq, reply)) if *seq == header.seq => reply.clone(),
            Some((seq, _)) if header.seq < *seq => continue, // a stale duplicate: already answered
            _ => {
                let (tag, p) = handler.answer(header.tag, &payload, &mut session);
                let bytes = frame::encode(tag, header.seq, &p);
                last = Some((header.seq, bytes.clone()));
                bytes
            }
        };
        writer.write_all(&bytes)?;
        writer.flush()?;
    }
}

/// Exit the process when standard input reaches its end (the parent holds
/// the other end of the pipe; it closes however the parent ends).
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match std::io::Read::read(&mut stdin, &mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}
