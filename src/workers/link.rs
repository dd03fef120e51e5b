//! A userspace WAN emulator: a loopback TCP proxy between a coordinator and
//! a worker that delays, jitters, rate-limits and drops whole frames.
//!
//! Each direction of each proxied connection is modelled as its own link.
//! A frame enters the link when its last byte arrives; it is serialised at
//! the link's rate after the frames before it (`bytes x 8 / rate`), then
//! spends the one-way latency plus a uniform jitter in `[0, jitter]`
//! in flight, and is never delivered before the frame ahead of it (a TCP
//! stream does not reorder). With probability `loss` the frame is lost
//! after using its share of the link; the protocol's retransmission
//! ([`super::client`]) recovers it. Loss is drawn per frame from a seeded
//! generator per direction, so the same frame sequence loses the same
//! frames. Bytes that are not frames of the protocol are passed through
//! untouched, so the endpoint reports them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::frame::{HEADER_BYTES, Header};

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Direction {
    /// Bits per second (`None`: unlimited).
    pub rate: Option<f64>,
}

/// A link's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Latency each way (half the round trip without jitter).
    pub one_way: Duration,
    /// Extra delay per frame, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Coordinator to worker (a home user's uplink).
    pub up: Direction,
    /// Worker to coordinator.
    pub down: Direction,
}

/// The named links the bets run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    /// Plain loopback TCP, no proxy.
    Direct,
    /// A home connection: 40 ms round trip, 5 ms jitter, 1% loss, 10 Mbit/s
    /// up and 50 Mbit/s down.
    Home,
    /// Across a continent: 100 ms round trip, 10 ms jitter, 0.5% loss,
    /// 100 Mbit/s each way.
    Transcontinental,
}

impl Link {
    /// Every named link.
    pub const ALL: [Link; 3] = [Link::Direct, Link::Home, Link::Transcontinental];

    /// The name a grid uses.
    pub fn name(self) -> &'static str {
        match self {
            Link::Direct => "direct",
            Link::Home => "home",
            Link::Transcontinental => "transcontinental",
        }
    }

    /// The emulated behaviour (`None` for the direct link).
    pub fn config(self) -> Option<LinkConfig> {
        let ms = Duration::from_millis;
        let mbit = |m: f64| Direction { rate: Some(m * 1e6) };
        match self {
            Link::Direct => None,
            Link::Home => {
                Some(LinkConfig { one_way: ms(20), jitter: ms(5), loss: 0.01, up: mbit(10.0), down: mbit(50.0) })
            }
            Link::Transcontinental => {
                Some(LinkConfig { one_way: ms(50), jitter: ms(10), loss: 0.005, up: mbit(100.0), down: mbit(100.0) })
            }
        }
    }
}

/// What an emulator has carried, over every connection and both directions.
#[derive(Debug, Default)]
pub struct LinkCounts {
    pub frames: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes: AtomicU64,
}

/// A running proxy; stopped (every connection closed) on drop.
pub struct LinkEmulator {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<LinkCounts>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl LinkEmulator {
    /// Listen on an ephemeral loopback port and forward each connection to
    /// `target` through a link of `cfg`; `seed` fixes the losses.
    pub fn start(target: SocketAddr, cfg: LinkConfig, seed: u64) -> std::io::Result<LinkEmulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LinkCounts::default());
        let open = Arc::new(Mutex::new(Vec::new()));
        let (s, c, o) = (Arc::clone(&stop), Arc::clone(&counts), Arc::clone(&open));
        let accept = std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                if let Ok(mut list) = o.lock() {
                    list.push(client.try_clone().expect("clone"));
                    list.push(server.try_clone().expect("clone"));
                }
                let base = seed.wrapping_mul(1_000_003).wrapping_add(2 * n as u64);
                pump(client, s2, cfg, cfg.up, base, Arc::clone(&c));
                pump(server, c2, cfg, cfg.down, base + 1, Arc::clone(&c));
            }
        });
        Ok(LinkEmulator { addr, stop, counts, open, accept: Some(accept) })
    }

    /// Where to connect instead of the worker.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frames carried, frames dropped, bytes carried so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        (c.frames.load(Ordering::Relaxed), c.dropped.load(Ordering::Relaxed), c.bytes.load(Ordering::Relaxed))
    }
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Ok(list) = self.open.lock() {
            for s in list.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One direction: a reader that times each frame through the link and a
/// writer that delivers it when due.
fn pump(mut from: TcpStream, mut to: TcpStream, cfg: LinkConfig, dir: Direction, seed: u64, counts: Arc<LinkCounts>) {
    let (tx, rx) = channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut link_free = Instant::now();
        let mut last_delivery = Instant::now();
        loop {
            let mut head = [0u8; HEADER_BYTES];
            if from.read_exact(&mut head).is_err() {
                break;
            }
            let Ok(h) = Header::parse(&head) else {
                // Not our protocol: pass everything through as it comes.
                let _ = tx.send((Instant::now(), head.to_vec()));
                let mut buf = [0u8; 8192];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                break;
            };
            let mut frame = head.to_vec();
            let got = (&mut from).take(h.len as u64).read_to_end(&mut frame).unwrap_or(0);
            if got < h.len as usize {
                let _ = tx.send((Instant::now(), frame)); // the truncated rest, for the endpoint to refuse
                break;
            }
            let arrived = Instant::now();
            let serialise = dir.rate.map(|r| Duration::from_secs_f64(frame.len() as f64 * 8.0 / r)).unwrap_or_default();
            link_free = link_free.max(arrived) + serialise;
            let jitter = cfg.jitter.mul_f64(rng.random::<f64>());
            let due = (link_free + cfg.one_way + jitter).max(last_delivery);
            counts.frames.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
            if rng.random::<f64>() < cfg.loss {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            last_delivery = due;
            if tx.send((due, frame)).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
