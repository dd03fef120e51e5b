//! Worker processes a coordinator starts and stops itself.
//!
//! A [`WorkerProcess`] is a real `bets worker` child listening on an
//! ephemeral loopback port (it prints `listening on ADDR` first thing).
//! Dropping the guard kills and reaps it; and because the child exits when
//! its standard input closes, it also ends when the coordinator is killed
//! outright, so no run leaves a worker behind.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::WorkerError;
use super::throttle::Throttle;

/// How to start one worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The model card ([`super::card::ModelCard`]) it loads.
    pub card: PathBuf,
    pub blocks: Range<usize>,
    pub threads: usize,
    pub throttle: Throttle,
}

/// The `bets` program workers are started from: `BETS_WORKER_PROGRAM` when
/// set, otherwise this very program when it is `bets`.
pub fn bets_program() -> Result<PathBuf, WorkerError> {
    if let Some(p) = std::env::var_os("BETS_WORKER_PROGRAM") {
        return Ok(PathBuf::from(p));
    }
    let start = |detail: String| WorkerError::Start { worker: "worker".into(), detail };
    let me = std::env::current_exe().map_err(|e| start(format!("cannot find this program: {e}")))?;
    match me.file_stem().and_then(|s| s.to_str()) {
        Some("bets") => Ok(me),
        _ => Err(start(format!(
            "workers run as `bets worker`, but this program is {}: set BETS_WORKER_PROGRAM to the bets binary",
            me.display()
        ))),
    }
}

/// A running worker; killed and reaped on drop.
pub struct WorkerProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    _stdin: ChildStdin,
    stderr: Arc<Mutex<String>>,
}

impl WorkerProcess {
    /// Start `program worker ...` and wait (at most `wait`) until it listens.
    pub fn spawn(program: &Path, spec: &WorkerSpec, name: &str, wait: Duration) -> Result<WorkerProcess, WorkerError> {
        let args: Vec<std::ffi::OsString> = vec![
            "worker".into(),
            "--card".into(),
            spec.card.clone().into(),
            "--blocks".into(),
            format!("{}..{}", spec.blocks.start, spec.blocks.end).into(),
            "--threads".into(),
            spec.threads.to_string().into(),
            "--throttle".into(),
            spec.throttle.to_string().into(),
        ];
        WorkerProcess::spawn_with(program, &args, name, wait)
    }

    /// Start `program ARGS --listen 127.0.0.1:0` (any `bets` serving verb)
    /// and wait (at most `wait`) until it reports its address.
    pub fn spawn_with(
        program: &Path,
        args: &[std::ffi::OsString],
        name: &str,
        wait: Duration,
    ) -> Result<WorkerProcess, WorkerError> {
        let start = |detail: String| WorkerError::Start { worker: name.to_string(), detail };
        let mut child = Command::new(program)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| start(format!("cannot start {}: {e}", program.display())))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().expect("stderr buffer");
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 8192 {
                    let cut = s.len() - 4096;
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
                    s.drain(..cut);
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut proc =
            WorkerProcess { name: name.to_string(), addr: ([127, 0, 0, 1], 0).into(), child, _stdin: stdin, stderr };
        let line = rx.recv_timeout(wait).map_err(|_| start(format!("did not report its address within {wait:?}")))?;
        let addr = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok());
        match addr {
            Some(a) => proc.addr = a,
            None => {
                let _ = proc.child.wait();
                std::thread::sleep(Duration::from_millis(100)); // let the stderr reader catch up
                return Err(start(format!("did not start: {}", proc.stderr_tail().trim())));
            }
        }
        Ok(proc)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last few KiB the worker wrote to standard error.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Kill the worker now and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
