//! The workers of a federated run, as the coordinator sees them: either
//! replicas in this process ([`InProcess`], one thread each: fast tests) or
//! `bets federated-worker` processes on loopback TCP ([`Processes`]: the
//! counted runs). Both run the same [`Replica`] code with the same thread
//! count, so they give the same bits; both count the bytes each worker is
//! sent and sends back, frame headers included.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::replica::{Gradient, JOB_FORMAT, Job, Replica, Trained};
use super::wire::{FedReply, FedRequest};
use crate::engine::ModelConfig;
use crate::engine::train::TrainConfig;
use crate::workers::{Connection, Timeouts, WorkerProcess};

/// Bytes each worker was sent and sent back, and the synchronisations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Per worker: bytes the coordinator sent it.
    pub sent: Vec<u64>,
    /// Per worker: bytes it sent the coordinator.
    pub received: Vec<u64>,
    /// Rounds or steps at which every worker exchanged with the coordinator.
    pub syncs: u64,
}

impl Traffic {
    fn new(m: usize) -> Traffic {
        Traffic { sent: vec![0; m], received: vec![0; m], syncs: 0 }
    }

    /// Bytes in both directions, all workers.
    pub fn total(&self) -> u64 {
        self.sent.iter().sum::<u64>() + self.received.iter().sum::<u64>()
    }
}

/// The workers of one run.
pub trait Fleet {
    /// Workers.
    fn size(&self) -> usize;
    /// Every worker takes `k` inner steps from `start` (DiLoCo).
    fn rounds(&mut self, start: &[f32], k: usize) -> anyhow::Result<Vec<Trained>>;
    /// Every worker's gradient of its next batch at `params`.
    fn gradients(&mut self, params: &[f32]) -> anyhow::Result<Vec<Gradient>>;
    /// What has crossed the wire so far.
    fn traffic(&self) -> &Traffic;
}

/// Replicas in this process, each on its own thread.
pub struct InProcess {
    replicas: Vec<Replica>,
    traffic: Traffic,
}

impl InProcess {
    pub fn new(replicas: Vec<Replica>) -> InProcess {
        let traffic = Traffic::new(replicas.len());
        InProcess { replicas, traffic }
    }

    /// Run `f` on every replica at once; count the bytes `request` and
    /// each reply (`reply_bytes`) would take on the wire.
    fn each<T: Send>(
        &mut self,
        request: &FedRequest,
        f: impl Fn(&mut Replica) -> crate::engine::Result<T> + Sync,
        reply_bytes: impl Fn(&T) -> u64,
    ) -> anyhow::Result<Vec<T>> {
        let out: Vec<crate::engine::Result<T>> = std::thread::scope(|s| {
            let handles: Vec<_> = self.replicas.iter_mut().map(|r| s.spawn(|| f(r))).collect();
            handles.into_iter().map(|h| h.join().expect("a replica thread panicked")).collect()
        });
        let mut done = Vec::with_capacity(out.len());
        for (i, r) in out.into_iter().enumerate() {
            let value = r.with_context(|| format!("worker {i}"))?;
            self.traffic.sent[i] += request.wire_bytes();
            self.traffic.received[i] += reply_bytes(&value);
            done.push(value);
        }
        self.traffic.syncs += 1;
        Ok(done)
    }
}

impl Fleet for InProcess {
    fn size(&self) -> usize {
        self.replicas.len()
    }

    fn rounds(&mut self, start: &[f32], k: usize) -> anyhow::Result<Vec<Trained>> {
        let req = FedRequest::Round { k: k as u32, params: start.to_vec() };
        self.each(&req, |r| r.round(start, k), |t| FedReply::vector_bytes(t.params.len()))
    }

    fn gradients(&mut self, params: &[f32]) -> anyhow::Result<Vec<Gradient>> {
        let req = FedRequest::Gradient { params: params.to_vec() };
        self.each(&req, |r| r.gradient(params), |g| FedReply::vector_bytes(g.grad.len()))
    }

    fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}

/// `bets federated-worker` processes, one connection each; stopped on drop.
pub struct Processes {
    conns: Vec<Connection>,
    procs: Vec<WorkerProcess>,
    traffic: Traffic,
    _dir: tempfile::TempDir,
}

/// How long a worker may take to start.
const START_WAIT: Duration = Duration::from_secs(60);

impl Processes {
    /// Start one worker per shard (`trains[i]` is worker i's inner run,
    /// its `threads` the worker's compute threads) from `program`, and
    /// check that each trains a model of `model`'s size. A reply may take
    /// up to `deadline` (a whole round of inner steps). Loopback TCP loses
    /// nothing, so a request is never sent twice: the bytes counted are
    /// the bytes a run needs, whatever the timing.
    pub fn start(
        program: &Path,
        model: &ModelConfig,
        trains: &[TrainConfig],
        shards: &[Vec<u8>],
        deadline: Duration,
    ) -> anyhow::Result<Processes> {
        let timeouts = Timeouts { initial_rto: deadline, min_rto: deadline, max_rto: deadline, deadline };
        let dir = tempfile::tempdir()?;
        let expected = super::flat::Layout::of_model(model).len();
        let mut procs = Vec::with_capacity(shards.len());
        let mut conns = Vec::with_capacity(shards.len());
        for (i, (train, shard)) in trains.iter().zip(shards).enumerate() {
            let shard_path = dir.path().join(format!("shard-{i}.bin"));
            crate::fsutil::write_atomic(&shard_path, shard)?;
            let job = Job {
                format: JOB_FORMAT,
                model: model.clone(),
                train: train.clone(),
                shard: shard_path,
                shard_sha256: hex::encode(Sha256::digest(shard)),
            };
            let job_path = dir.path().join(format!("job-{i}.json"));
            crate::fsutil::write_atomic(&job_path, serde_json::to_string_pretty(&job)?.as_bytes())?;
            let args: Vec<OsString> = vec!["federated-worker".into(), "--job".into(), job_path.into()];
            let name = format!("federated worker {i}");
            let proc = WorkerProcess::spawn_with(program, &args, &name, START_WAIT)?;
            let mut conn = Connection::connect(proc.addr, &name, timeouts)?;
            match conn.exchange::<_, FedReply>(&FedRequest::Hello)? {
                FedReply::Ready { params, .. } if params as usize == expected => {}
                other => anyhow::bail!("{name}: expected a model of {expected} parameters, got {}", other.describe()),
            }
            procs.push(proc);
            conns.push(conn);
        }
        let traffic = Traffic::new(conns.len());
        Ok(Processes { conns, procs, traffic, _dir: dir })
    }

    /// The worker processes (to kill one in a test).
    pub fn processes(&mut self) -> &mut [WorkerProcess] {
        &mut self.procs
    }

    /// Send `req` to every worker at once and collect the replies.
    fn each(&mut self, req: &FedRequest) -> anyhow::Result<Vec<FedReply>> {
        let before: Vec<(u64, u64)> = self.conns.iter().map(|c| (c.stats.bytes_sent, c.stats.bytes_received)).collect();
        let out: Vec<Result<FedReply, crate::workers::WorkerError>> = std::thread::scope(|s| {
            let handles: Vec<_> = self.conns.iter_mut().map(|c| s.spawn(move || c.exchange(req))).collect();
            handles.into_iter().map(|h| h.join().expect("a connection thread panicked")).collect()
        });
        for (i, c) in self.conns.iter().enumerate() {
            self.traffic.sent[i] += c.stats.bytes_sent - before[i].0;
            self.traffic.received[i] += c.stats.bytes_received - before[i].1;
        }
        self.traffic.syncs += 1;
        out.into_iter().map(|r| r.map_err(anyhow::Error::from)).collect()
    }
}

impl Fleet for Processes {
    fn size(&self) -> usize {
        self.conns.len()
    }

    fn rounds(&mut self, start: &[f32], k: usize) -> anyhow::Result<Vec<Trained>> {
        let replies = self.each(&FedRequest::Round { k: k as u32, params: start.to_vec() })?;
        replies
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                FedReply::Trained { params, loss } => Ok(Trained { params, loss }),
                other => anyhow::bail!("federated worker {i}: answered a round with {}", other.describe()),
            })
            .collect()
    }

    fn gradients(&mut self, params: &[f32]) -> anyhow::Result<Vec<Gradient>> {
        let replies = self.each(&FedRequest::Gradient { params: params.to_vec() })?;
        replies
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                FedReply::Gradient { grad, loss } => Ok(Gradient { grad, loss }),
                other => anyhow::bail!("federated worker {i}: answered a gradient request with {}", other.describe()),
            })
            .collect()
    }

    fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}
