//! `bets worker` (load a model card, listen on loopback, serve blocks),
//! `bets federated-worker` (load a job, serve one training replica) and
//! `bets specialist` (inspect and verify specialist folders).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use crate::cli::{FederatedWorkerArgs, WorkerArgs};
use crate::error::usage;
use crate::federated::serve::FederatedWorker;
use crate::federated::{Job, Replica};
use crate::workers::serve::{self, Handler, Worker};
use crate::workers::{ModelCard, Throttle};

/// Serve until standard input closes.
pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    let blocks = parse_blocks(&args.blocks)?;
    let throttle: Throttle = args.throttle.parse().map_err(|e: String| usage(format!("--throttle: {e}")))?;
    let listen = loopback(&args.listen)?;
    if args.threads == 0 {
        return Err(usage("--threads 0: expected at least 1".to_string()));
    }
    let card = ModelCard::load(&args.card)?;
    let model = card.open()?;
    let worker = Arc::new(Worker::new(model, blocks, args.threads, throttle).map_err(|e| usage(format!("{e:#}")))?);
    listen_and_serve(listen, worker)
}

/// Serve one federated replica until standard input closes.
pub fn federated_worker(args: &FederatedWorkerArgs) -> anyhow::Result<()> {
    let listen = loopback(&args.listen)?;
    let text = std::fs::read_to_string(&args.job).map_err(|e| usage(format!("--job {}: {e}", args.job.display())))?;
    let job: Job = serde_json::from_str(&text)
        .map_err(|e| usage(format!("--job {}: not a federated job ({e})", args.job.display())))?;
    let replica = Replica::from_job(&job, crate::engine::default_device())
        .map_err(|e| usage(format!("--job {}: {e:#}", args.job.display())))?;
    listen_and_serve(listen, Arc::new(FederatedWorker(Mutex::new(replica))))
}

/// `--listen`, which must be a loopback address.
fn loopback(arg: &str) -> anyhow::Result<SocketAddr> {
    let listen: SocketAddr = arg.parse().map_err(|e| usage(format!("--listen {arg}: expected IP:PORT ({e})")))?;
    if !listen.ip().is_loopback() {
        return Err(usage(format!("--listen {listen}: workers listen on a loopback address only")));
    }
    Ok(listen)
}

/// Bind, print `listening on ADDR`, and serve `handler` until stdin closes.
fn listen_and_serve<H: Handler>(listen: SocketAddr, handler: Arc<H>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    serve::exit_when_stdin_closes();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    serve::serve(listener, handler)
}

fn parse_blocks(s: &str) -> anyhow::Result<std::ops::Range<usize>> {
    let bad = || usage(format!("--blocks {s}: expected START..END, e.g. 0..2"));
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    Ok(a.trim().parse().map_err(|_| bad())?..b.trim().parse().map_err(|_| bad())?)
}

/// `bets specialist inspect|verify`.
pub fn specialist(cmd: &crate::cli::SpecialistCmd) -> anyhow::Result<()> {
    use crate::cli::SpecialistCmd;
    use crate::services::specialist;
    match cmd {
        SpecialistCmd::Inspect { dir } => {
            let m = specialist::read_manifest(dir, None)?;
            println!("id {}", m.id());
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(())
        }
        SpecialistCmd::Verify { dir, id } => match specialist::load(dir, id.as_deref()) {
            Ok(s) => {
                let c = &s.base.config;
                println!(
                    "ok  {} id {} ({} blocks, {} experts, d {}, {}{})",
                    dir.display(),
                    s.id,
                    c.layers,
                    c.experts,
                    c.d_model,
                    s.manifest.quant,
                    s.manifest.adapter_slot.as_deref().map(|a| format!(", adapter {a}")).unwrap_or_default()
                );
                Ok(())
            }
            Err(e) => Err(crate::error::classified(crate::error::ExitKind::Integrity, e.to_string())),
        },
    }
}
