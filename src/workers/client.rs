//! The coordinator's end of one worker connection: numbered requests,
//! answered one at a time, retransmitted when a reply is late.
//!
//! Over a lossy link (the emulator drops whole frames) a request or its
//! reply can vanish. The client then sends the same request again, with
//! the same number, after a retransmission timeout estimated as TCP does
//! (RFC 6298: smoothed round trip plus four deviations, doubled on every
//! retry, samples only from requests sent once); the worker answers a
//! repeated number from its stored reply. A reply to an older number is a
//! late duplicate and is skipped. A closed socket is [`WorkerError::Died`]
//! at once; no reply at all within the deadline is [`WorkerError::Timeout`].

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use super::frame::{self, FrameError, Header};
use super::message::{Reply, Request, Wire};

/// Timeouts of a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Retransmission timeout before the first round trip is measured.
    pub initial_rto: Duration,
    /// Bounds of the estimated timeout.
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// Longest wait for one reply, retransmissions included, before the
    /// worker is declared unresponsive.
    pub deadline: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(4),
            deadline: Duration::from_secs(60),
        }
    }
}

/// What talking to a worker can fail with; each names the worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{worker}: cannot connect: {detail}")]
    Connect { worker: String, detail: String },
    #[error("{worker}: the worker died or closed the connection ({detail})")]
    Died { worker: String, detail: String },
    #[error("{worker}: no reply within {waited:?}")]
    Timeout { worker: String, waited: Duration },
    #[error("{worker}: sent a malformed frame: {detail}")]
    Garbage { worker: String, detail: String },
    #[error("{worker}: refused the request: {message}")]
    Refused { worker: String, message: String },
    #[error("{worker}: {detail}")]
    Unexpected { worker: String, detail: String },
    #[error("{worker}: {detail}")]
    Start { worker: String, detail: String },
}

/// Counts of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub requests: u64,
    pub retransmits: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// The RFC 6298 estimator.
#[derive(Debug, Clone, Copy)]
struct Rto {
    srtt: Option<f64>,
    rttvar: f64,
    t: Timeouts,
}

impl Rto {
    fn current(&self) -> Duration {
        let secs = match self.srtt {
            None => self.t.initial_rto.as_secs_f64(),
            Some(s) => s + (4.0 * self.rttvar).max(0.001),
        };
        Duration::from_secs_f64(secs).clamp(self.t.min_rto, self.t.max_rto)
    }

    fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
    }
}

type Frames = Receiver<Result<(Header, Vec<u8>), FrameError>>;

/// One open connection to a worker.
pub struct Connection {
    pub name: String,
    stream: TcpStream,
    frames: Frames,
    seq: u64,
    rto: Rto,
    pub stats: ConnStats,
}

impl Connection {
    /// Connect to the worker at `addr`, called `name` in errors.
    pub fn connect(addr: SocketAddr, name: &str, t: Timeouts) -> Result<Connection, WorkerError> {
        let worker = format!("{name} ({addr})");
        let connect = |detail: String| WorkerError::Connect { worker: worker.clone(), detail };
        let stream = TcpStream::connect_timeout(&addr, t.deadline).map_err(|e| connect(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| connect(e.to_string()))?;
        let mut reader = stream.try_clone().map_err(|e| connect(e.to_string()))?;
        let (tx, frames) = channel();
        std::thread::spawn(move || {
            loop {
                let got = frame::read_frame(&mut reader);
                let end = got.is_err();
                if tx.send(got).is_err() || end {
                    return;
                }
            }
        });
        Ok(Connection {
            name: worker,
            stream,
            frames,
            seq: 0,
            rto: Rto { srtt: None, rttvar: 0.0, t },
            stats: ConnStats::default(),
        })
    }

    /// Send `req` and wait for its reply (an error reply is [`WorkerError::Refused`]).
    pub fn call(&mut self, req: &Request) -> Result<Reply, WorkerError> {
        self.exchange(req)
    }

    /// [`Connection::call`] for any message set: send `req`, wait for an `R`.
    pub fn exchange<Q: Wire, R: Wire>(&mut self, req: &Q) -> Result<R, WorkerError> {
        self.seq += 1;
        let (tag, payload) = req.encode();
        let bytes = frame::encode(tag, self.seq, &payload);
        let started = Instant::now();
        self.send(&bytes)?;
        self.stats.requests += 1;
        let mut rto = self.rto.current();
        let mut resent = false;
        let mut sent_at = started;
        loop {
            let waited = started.elapsed();
            if waited >= self.rto.t.deadline {
                return Err(WorkerError::Timeout { worker: self.name.clone(), waited });
            }
            let wait = rto.saturating_sub(sent_at.elapsed()).min(self.rto.t.deadline - waited);
            match self.frames.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Ok((h, p))) => {
                    if h.seq != self.seq {
                        continue; // a late duplicate of an earlier reply
                    }
                    self.stats.bytes_received += (frame::HEADER_BYTES + p.len()) as u64;
                    if !resent {
                        self.rto.sample(started.elapsed());
                    }
                    return match R::decode(h.tag, &p) {
                        Ok(reply) => match reply.refusal() {
                            Some(message) => {
                                Err(WorkerError::Refused { worker: self.name.clone(), message: message.to_string() })
                            }
                            None => Ok(reply),
                        },
                        Err(e) => Err(WorkerError::Garbage { worker: self.name.clone(), detail: e.to_string() }),
                    };
                }
                Ok(Err(FrameError::Malformed(m))) => {
                    return Err(WorkerError::Garbage { worker: self.name.clone(), detail: m });
                }
                Ok(Err(e)) => return Err(WorkerError::Died { worker: self.name.clone(), detail: e.to_string() }),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(WorkerError::Died { worker: self.name.clone(), detail: "reader ended".into() });
                }
                Err(RecvTimeoutError::Timeout) => {
                    if sent_at.elapsed() >= rto {
                        self.send(&bytes)?;
                        self.stats.retransmits += 1;
                        resent = true;
                        sent_at = Instant::now();
                        rto = (rto * 2).min(self.rto.t.max_rto);
                    }
                }
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), WorkerError> {
        self.stats.bytes_sent += bytes.len() as u64;
        self.stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush())
            .map_err(|e| WorkerError::Died { worker: self.name.clone(), detail: e.to_string() })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_follows_rfc_6298_and_stays_in_bounds() {
        let t = Timeouts::default();
        let mut r = Rto { srtt: None, rttvar: 0.0, t };
        assert_eq!(r.current(), Duration::from_secs(1));
        r.sample(Duration::from_millis(100));
        // srtt 100 ms + 4 x 50 ms.
        assert_eq!(r.current(), Duration::from_millis(300));
        r.sample(Duration::from_millis(100));
        // rttvar 0.75 x 50 = 37.5 ms; srtt stays 100 ms.
        assert_eq!(r.current(), Duration::from_millis(250));
        for _ in 0..100 {
            r.sample(Duration::from_micros(10));
        }
        assert_eq!(r.current(), t.min_rto);
    }
}
