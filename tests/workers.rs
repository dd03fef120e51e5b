//! The worker pipeline with real `bets worker` processes on loopback TCP:
//! splits give one process's logits, dead, hung and garbled peers give
//! named errors in bounded time, the link emulator really delays and drops,
//! and no worker outlives its test (guards kill them, also on a failed
//! assertion).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bets::engine::envelope::Envelope;
use bets::engine::{BaseModel, ModelConfig};
use bets::workers::frame::{self, HEADER_BYTES};
use bets::workers::link::{Direction, LinkConfig};
use bets::workers::message::{Reply, Request, Trust};
use bets::workers::{
    Chain, Connection, LinkEmulator, ModelCard, Throttle, Timeouts, WorkerError, WorkerProcess, WorkerSpec, greedy,
    local_blocks, split,
};
use candle_core::Device;

const WAIT: Duration = Duration::from_secs(60);

fn program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bets"))
}

/// Four blocks at tiny width, so 2-, 3- and 4-way splits exist.
fn deep() -> ModelConfig {
    ModelConfig { vocab: 256, d_model: 32, layers: 4, heads: 2, experts: 2, expert_width: 64, context: 32 }
}

/// A random base saved in `dir` with its card.
fn model(dir: &Path, seed: u64) -> (BaseModel, PathBuf, String) {
    let base = BaseModel::random(&deep(), seed, &Device::Cpu).unwrap();
    let weights = dir.join(format!("base-{seed}.safetensors"));
    std::fs::write(&weights, base.weights_bytes().unwrap()).unwrap();
    let card = ModelCard::new(&base, &weights, None).unwrap();
    let path = dir.join(format!("card-{seed}.json"));
    card.save(&path).unwrap();
    (base, path, card.model_id())
}

fn spawn(card: &Path, blocks: std::ops::Range<usize>, throttle: Throttle, name: &str) -> WorkerProcess {
    let spec = WorkerSpec { card: card.into(), blocks, threads: 1, throttle };
    WorkerProcess::spawn(&program(), &spec, name, WAIT).unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

const PROMPTS: [&[u8]; 3] = [b"the quick brown ", b"fn main() {", b"Once upon a"];

#[test]
fn two_three_and_four_worker_splits_give_one_process_logits_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (base, card, id) = model(dir.path(), 1);
    let view = base.view();
    let reference: Vec<_> = PROMPTS.iter().map(|p| greedy(&view, p, 6, local_blocks(&view)).unwrap()).collect();
    let mut pids = Vec::new();
    for workers in [2, 3, 4] {
        let procs: Vec<WorkerProcess> = split(4, workers)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, r)| spawn(&card, r, Throttle::None, &format!("worker {i}")))
            .collect();
        pids.extend(procs.iter().map(WorkerProcess::pid));
        let addrs: Vec<_> = procs.iter().map(|p| (p.name.clone(), p.addr)).collect();
        let mut chain = Chain::connect(&addrs, &id, 4, Timeouts::default()).unwrap();
        for (prompt, want) in PROMPTS.iter().zip(&reference) {
            let got = chain.generate(&view, prompt, 6).unwrap();
            assert!(got.bit_identical(want), "{workers} workers, prompt {prompt:?}");
            assert_eq!(got.tokens.len(), 6);
        }
        // A chain with a gap, or of another model, is refused by name.
        let gap = [addrs[0].clone()];
        let e = Chain::connect(&gap, &id, 4, Timeouts::default()).err().unwrap().to_string();
        assert!(e.contains("covers blocks 0.."), "{e}");
        let e = Chain::connect(&addrs, "another-model", 4, Timeouts::default()).err().unwrap().to_string();
        assert!(e.contains("expected another-model"), "{e}");
    }
    assert!(pids.iter().all(|&p| !alive(p)), "every worker is gone once its guard is");
}

#[test]
fn a_slowed_worker_and_a_lossy_link_change_no_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (base, card, id) = model(dir.path(), 2);
    let view = base.view();
    let a = spawn(&card, 0..2, Throttle::Steady { factor: 5.0 }, "slow");
    let b = spawn(&card, 2..4, "ramp:1:10:3".parse().unwrap(), "ramp");
    let lossy = LinkConfig {
        one_way: Duration::from_millis(2),
        jitter: Duration::from_millis(2),
        loss: 0.2,
        up: Direction { rate: Some(50e6) },
        down: Direction { rate: None },
    };
    let pa = LinkEmulator::start(a.addr, lossy, 7).unwrap();
    let pb = LinkEmulator::start(b.addr, lossy, 8).unwrap();
    let t = Timeouts { initial_rto: Duration::from_millis(100), ..Timeouts::default() };
    let mut chain = Chain::connect(&[("a".into(), pa.addr()), ("b".into(), pb.addr())], &id, 4, t).unwrap();
    for prompt in PROMPTS {
        let got = chain.generate(&view, prompt, 8).unwrap();
        assert!(got.bit_identical(&greedy(&view, prompt, 8, local_blocks(&view)).unwrap()), "{prompt:?}");
    }
    let retransmits: u64 = chain.stats().iter().map(|s| s.retransmits).sum();
    let (frames, dropped, _) = pa.counts();
    assert!(dropped > 0 && retransmits > 0, "{dropped} frames dropped, {retransmits} retransmits");
    // Loss is drawn per frame at 20%: generous bounds around it.
    let rate = dropped as f64 / frames as f64;
    assert!((0.05..0.4).contains(&rate), "dropped {dropped} of {frames}");
}

#[test]
fn a_worker_killed_mid_request_is_a_named_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (base, card, _) = model(dir.path(), 3);
    // 200x slower: a whole-model generation takes long enough to kill it mid-way.
    let mut w = spawn(&card, 0..4, Throttle::Steady { factor: 200.0 }, "doomed");
    let pid = w.pid();
    let t = Timeouts { deadline: Duration::from_secs(120), ..Timeouts::default() };
    let mut conn = Connection::connect(w.addr, "doomed", t).unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        w.kill();
        w
    });
    let e = conn.call(&Request::Generate { prompt: b"hello".to_vec(), max_new: 20 }).unwrap_err();
    let w = killer.join().unwrap();
    // Died, not Timeout: told at once when the socket closed, not at the deadline.
    assert!(matches!(e, WorkerError::Died { .. }), "{e}");
    assert!(e.to_string().contains("doomed"), "the error names the worker: {e}");
    assert!(!alive(pid));
    drop(w);
    drop(base);
}

#[test]
fn a_hung_worker_times_out_with_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, card, _) = model(dir.path(), 4);
    // Full speed for its first request, then ten million times slower: an
    // unresponsive worker without signals (the guard kills it at the end).
    let hang = Throttle::Ramp { from: 1.0, to: 1e7, period: 2 };
    let w = spawn(&card, 0..4, hang, "frozen");
    let t = Timeouts {
        initial_rto: Duration::from_millis(100),
        min_rto: Duration::from_millis(50),
        max_rto: Duration::from_millis(200),
        deadline: Duration::from_secs(2),
    };
    let mut conn = Connection::connect(w.addr, "frozen", t).unwrap();
    assert!(matches!(conn.call(&Request::Hello).unwrap(), Reply::Ready { .. }));
    let e = conn.call(&Request::Hello).unwrap_err();
    assert!(matches!(e, WorkerError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("frozen"), "{e}");
    assert!(conn.stats.retransmits >= 2, "it retried before giving up: {:?}", conn.stats);
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let (h, p) = frame::read_frame(s).unwrap();
    Reply::decode(h.tag, &p).unwrap()
}

#[test]
fn malformed_and_truncated_frames_are_refused_and_the_worker_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_, card, _) = model(dir.path(), 5);
    let w = spawn(&card, 0..2, Throttle::None, "strict");
    // Garbage: an error frame, then the connection ends.
    let mut s = TcpStream::connect(w.addr).unwrap();
    s.write_all(&[0x42; HEADER_BYTES]).unwrap();
    match read_reply(&mut s) {
        Reply::Error(m) => assert!(m.contains("bad magic"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0, "closed after garbage");
    // A flipped payload bit: refused on its checksum.
    let mut s = TcpStream::connect(w.addr).unwrap();
    let (tag, p) = Request::Prefill { tokens: b"abc".to_vec() }.encode();
    let mut bytes = frame::encode(tag, 1, &p);
    *bytes.last_mut().unwrap() ^= 0x10;
    s.write_all(&bytes).unwrap();
    match read_reply(&mut s) {
        Reply::Error(m) => assert!(m.contains("checksum"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // A well-framed but undecodable payload: an error reply; the connection stays.
    let mut s = TcpStream::connect(w.addr).unwrap();
    s.write_all(&frame::encode(2, 1, &[1, 2, 3])).unwrap();
    match read_reply(&mut s) {
        Reply::Error(m) => assert!(m.contains("malformed request payload"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let (tag, p) = Request::Hello.encode();
    s.write_all(&frame::encode(tag, 2, &p)).unwrap();
    assert!(matches!(read_reply(&mut s), Reply::Ready { start: 0, end: 2, .. }));
    // Truncated: the header announces more than ever comes.
    let mut s = TcpStream::connect(w.addr).unwrap();
    let bytes = frame::encode(tag, 1, &[0u8; 100]);
    s.write_all(&bytes[..HEADER_BYTES + 10]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    match read_reply(&mut s) {
        Reply::Error(m) => assert!(m.contains("truncated payload"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // A whole-model request to a partial worker is refused by name.
    let mut conn = Connection::connect(w.addr, "strict", Timeouts::default()).unwrap();
    let e = conn.call(&Request::Prefill { tokens: b"abc".to_vec() }).unwrap_err().to_string();
    assert!(e.contains("needs a whole-model worker"), "{e}");
    assert!(matches!(conn.call(&Request::Hello).unwrap(), Reply::Ready { .. }), "it serves on");
}

#[test]
fn the_link_emulator_adds_the_configured_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (_, card, _) = model(dir.path(), 6);
    let w = spawn(&card, 0..4, Throttle::None, "far");
    let slow = LinkConfig {
        one_way: Duration::from_millis(40),
        jitter: Duration::ZERO,
        loss: 0.0,
        up: Direction { rate: None },
        down: Direction { rate: None },
    };
    let proxy = LinkEmulator::start(w.addr, slow, 1).unwrap();
    let rtt = |addr| {
        let mut c = Connection::connect(addr, "far", Timeouts::default()).unwrap();
        c.call(&Request::Hello).unwrap();
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                c.call(&Request::Hello).unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        times[2]
    };
    let (direct, proxied) = (rtt(w.addr), rtt(proxy.addr()));
    assert!(proxied >= Duration::from_millis(80), "two one-way delays of 40 ms: {proxied:?}");
    assert!(proxied.as_secs_f64() / direct.as_secs_f64() > 2.0, "direct {direct:?}, proxied {proxied:?}");
    let (frames, dropped, bytes) = proxy.counts();
    assert_eq!((frames, dropped), (12, 0), "6 requests and 6 replies, none lost");
    assert!(bytes > 12 * HEADER_BYTES as u64);
}

#[test]
fn an_envelope_continues_in_another_process_exactly_and_a_foreign_one_is_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, card_b, _) = model(dir.path(), 7);
    let (_, card_other, _) = model(dir.path(), 8);
    let a_same = spawn(&card_b, 0..4, Throttle::None, "A");
    let a_other = spawn(&card_other, 0..4, Throttle::None, "A'");
    let b = spawn(&card_b, 0..4, Throttle::None, "B");
    let connect = |w: &WorkerProcess| Connection::connect(w.addr, &w.name, Timeouts::default()).unwrap();
    let (mut same, mut other, mut to_b) = (connect(&a_same), connect(&a_other), connect(&b));
    let prompt = b"a prompt to hand".to_vec();
    let tokens = |c: &mut Connection, req: Request| match c.call(&req).unwrap() {
        Reply::Tokens { tokens, logits, reused } => (tokens, logits, reused),
        other => panic!("{other:?}"),
    };
    let want = tokens(&mut to_b, Request::Generate { prompt: prompt.clone(), max_new: 6 });
    let envelope = |c: &mut Connection| match c.call(&Request::Prefill { tokens: prompt.clone() }).unwrap() {
        Reply::Envelope(e) => e,
        other => panic!("{other:?}"),
    };
    let from_same = envelope(&mut same);
    let from_other = envelope(&mut other);
    assert_eq!(Envelope::from_bytes(&from_same, &Device::Cpu).unwrap().prefix, prompt);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (env, trust, reuse) in [(&from_same, Trust::CheckIdentity, true), (&from_other, Trust::CheckIdentity, false)] {
        let got = tokens(&mut to_b, Request::Continue { envelope: env.clone(), max_new: 6, trust });
        assert_eq!(got.2, reuse);
        assert_eq!((&got.0, bits(&got.1)), (&want.0, bits(&want.1)));
    }
    let blind = tokens(&mut to_b, Request::Continue { envelope: from_other, max_new: 6, trust: Trust::Blind });
    assert!(blind.2);
    assert_ne!(bits(&blind.1), bits(&want.1), "another model's state changes the logits");
}

#[test]
fn a_worker_exits_when_its_parent_closes_its_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (_, card, _) = model(dir.path(), 9);
    let mut child = std::process::Command::new(program())
        .args(["worker", "--blocks", "0..4", "--card"])
        .arg(&card)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("listening on 127.0.0.1:"), "{line}");
    drop(child.stdin.take());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the worker outlived its closed stdin");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Bad arguments are refused by name before anything listens.
    let out = std::process::Command::new(program())
        .args(["worker", "--blocks", "0..4", "--listen", "0.0.0.0:0", "--card"])
        .arg(&card)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback address only"));
    let out = std::process::Command::new(program())
        .args(["worker", "--blocks", "2..9", "--card"])
        .arg(&card)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("within 0..4"), "{}", String::from_utf8_lossy(&out.stderr));
}
