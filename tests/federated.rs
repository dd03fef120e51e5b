//! Federated training with real `bets federated-worker` processes on
//! loopback TCP and with in-process replicas: DiLoCo's degenerate case is
//! plain training bit for bit, the two modes give the same parameters and
//! count the same bytes, a killed worker is a named error at once, and no
//! worker outlives its test (the fleet's guards kill them, also on a
//! failed assertion).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bets::engine::ModelConfig;
use bets::engine::model::init_weights;
use bets::engine::train::{TrainConfig, train_full};
use bets::federated::attack::Attack;
use bets::federated::{
    Byzantine, Fleet, InProcess, Layout, Outer, Plan, Processes, Replica, Rule, diloco, shard, sync_data_parallel,
};
use bets::workers::WorkerError;
use candle_core::Device;

/// Longest wait for one reply (a tiny round takes milliseconds).
const DEADLINE: Duration = Duration::from_secs(120);

fn program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bets"))
}

fn tiny() -> ModelConfig {
    bets::engine::Profile::from_name("tiny").unwrap().model
}

/// A fixed training text: this crate's own sources, as committed.
fn text() -> Vec<u8> {
    let mut t = include_bytes!("../src/engine/train.rs").to_vec();
    t.extend_from_slice(include_bytes!("../src/federated/diloco.rs"));
    t
}

fn train_cfg(steps: usize, seed: u64) -> TrainConfig {
    TrainConfig { lr: 3e-3, steps, batch: 2, seq: 32, seed, warmup: 2, threads: 1, ..TrainConfig::default() }
}

fn init(cfg: &ModelConfig) -> (Layout, Vec<f32>) {
    let w = init_weights(cfg, 5, &Device::Cpu).unwrap();
    let layout = Layout::of(&w);
    let flat = layout.flatten(&w).unwrap();
    (layout, flat)
}

fn replicas(cfg: &ModelConfig, layout: &Layout, trains: &[TrainConfig], shards: &[Vec<u8>]) -> InProcess {
    InProcess::new(
        trains
            .iter()
            .zip(shards)
            .map(|(t, s)| Replica::new(cfg.clone(), t.clone(), s.clone(), layout.clone(), Device::Cpu))
            .collect(),
    )
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn diloco_with_one_worker_k1_outer_lr_1_and_no_momentum_is_plain_training_bit_for_bit() {
    let cfg = tiny();
    let (layout, start) = init(&cfg);
    let text = text();
    let train = train_cfg(6, 11);
    let mut plain = layout.unflatten(&start, &Device::Cpu).unwrap();
    let stats = train_full(&cfg, &mut plain, &text, &train, &Device::Cpu, &mut |_, _| {}).unwrap();
    let plain = layout.flatten(&plain).unwrap();
    assert_ne!(plain, start, "training moved the weights");

    let plan = Plan {
        k: 1,
        rounds: 6,
        outer: Outer { lr: 1.0, momentum: 0.0, nesterov: false },
        rule: Rule::Mean,
        byzantine: None,
    };
    let mut fleet = replicas(&cfg, &layout, std::slice::from_ref(&train), std::slice::from_ref(&text));
    let out = diloco(&mut fleet, start.clone(), &plan, &mut |_| Ok(())).unwrap();
    assert_eq!(out.params, plain, "DiLoCo K=1, M=1, lr 1, no momentum");
    assert_eq!(out.completed, 6);
    assert_eq!(out.diverged, None);
    assert_eq!(out.losses.iter().map(|&l| l as f32).collect::<Vec<_>>(), stats.losses);

    // Data parallelism with one worker is plain training too.
    let mut fleet = replicas(&cfg, &layout, std::slice::from_ref(&train), std::slice::from_ref(&text));
    let out = sync_data_parallel(&mut fleet, &layout, start, &train, &mut |_| Ok(())).unwrap();
    assert_eq!(out.params, plain, "data parallelism with one worker");
    assert_eq!(fleet.traffic().syncs, 6);
}

#[test]
fn worker_processes_and_in_process_replicas_give_identical_parameters_and_bytes() {
    let cfg = tiny();
    let (layout, start) = init(&cfg);
    let shards = shard::shards(&text(), 3, 2);
    let trains: Vec<TrainConfig> = (0..3).map(|i| train_cfg(4, 20 + i)).collect();
    let plan = Plan {
        k: 2,
        rounds: 2,
        outer: Outer::default(),
        rule: Rule::Median,
        byzantine: Some(Byzantine { attack: Attack::Scale { factor: 1000.0 }, workers: vec![1], seed: 3 }),
    };
    let mut local = replicas(&cfg, &layout, &trains, &shards);
    let a = diloco(&mut local, start.clone(), &plan, &mut |_| Ok(())).unwrap();
    let mut procs = Processes::start(&program(), &cfg, &trains, &shards, DEADLINE).unwrap();
    let mut seen = Vec::new();
    let b = diloco(&mut procs, start.clone(), &plan, &mut |s| {
        seen.push((s.done, s.traffic.syncs));
        Ok(())
    })
    .unwrap();
    assert_eq!(a, b, "same parameters, losses and ending");
    assert_ne!(a.params, start);
    assert_eq!(seen, [(1, 1), (2, 2)]);
    assert_eq!(local.traffic(), procs.traffic(), "the same bytes each way per worker");
    // Each round: a 28-byte header, k, the count and 4 bytes a parameter each way.
    let n = layout.len() as u64;
    assert_eq!(procs.traffic().sent, vec![2 * (28 + 8 + 4 * n); 3]);
    assert_eq!(procs.traffic().received, vec![2 * (28 + 12 + 4 * n); 3]);

    // Synchronous data parallelism over processes, against threads.
    let train = train_cfg(3, 0);
    let mut local = replicas(&cfg, &layout, &trains, &shards);
    let a = sync_data_parallel(&mut local, &layout, start.clone(), &train, &mut |_| Ok(())).unwrap();
    let mut procs = Processes::start(&program(), &cfg, &trains, &shards, DEADLINE).unwrap();
    let b = sync_data_parallel(&mut procs, &layout, start, &train, &mut |_| Ok(())).unwrap();
    assert_eq!(a, b);
    assert_eq!(local.traffic(), procs.traffic());
}

#[test]
fn the_mean_under_a_1000x_attack_moves_far_and_the_median_does_not() {
    let cfg = tiny();
    let (layout, start) = init(&cfg);
    let shards = shard::shards(&text(), 5, 4);
    let trains: Vec<TrainConfig> = (0..5).map(|i| train_cfg(4, 40 + i)).collect();
    let distance = |p: &[f32]| p.iter().zip(&start).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let run = |rule, attack: Option<Attack>| {
        let plan = Plan {
            k: 2,
            rounds: 2,
            outer: Outer::default(),
            rule,
            byzantine: attack.map(|attack| Byzantine { attack, workers: vec![2], seed: 1 }),
        };
        diloco(&mut replicas(&cfg, &layout, &trains, &shards), start.clone(), &plan, &mut |_| Ok(())).unwrap()
    };
    let clean = distance(&run(Rule::Mean, None).params);
    let attacked_mean = run(Rule::Mean, Some(Attack::Scale { factor: 1000.0 }));
    let attacked_median = distance(&run(Rule::Median, Some(Attack::Scale { factor: 1000.0 })).params);
    let moved = attacked_mean.diverged.map_or(distance(&attacked_mean.params), |_| f64::INFINITY);
    assert!(moved > 50.0 * clean, "mean under attack moved {moved}, clean {clean}");
    assert!(attacked_median < 2.0 * clean, "median under attack moved {attacked_median}, clean {clean}");
}

#[test]
fn a_killed_worker_is_a_named_error_at_once_and_no_worker_outlives_the_fleet() {
    let cfg = tiny();
    let (_, start) = init(&cfg);
    let shards = shard::shards(&text(), 2, 9);
    let trains: Vec<TrainConfig> = (0..2).map(|i| train_cfg(4, i)).collect();
    let mut procs = Processes::start(&program(), &cfg, &trains, &shards, DEADLINE).unwrap();
    let pids: Vec<u32> = procs.processes().iter().map(|p| p.pid()).collect();
    assert!(pids.iter().all(|&p| alive(p)));
    procs.processes()[1].kill();
    let err = procs.rounds(&start, 1).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("federated worker 1") && text.contains("died"), "{text}");
    // Died, not Timeout: the closed socket was reported, not waited on
    // until the deadline.
    assert!(matches!(err.downcast_ref::<WorkerError>(), Some(WorkerError::Died { .. })), "{text}");
    drop(procs);
    std::thread::sleep(Duration::from_millis(100));
    for p in pids {
        assert!(!alive(p), "worker {p} outlived its fleet");
    }
}

#[test]
fn a_job_whose_shard_was_changed_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("shard.bin");
    std::fs::write(&shard, b"some training text for one worker").unwrap();
    let job = bets::federated::Job {
        format: bets::federated::replica::JOB_FORMAT,
        model: tiny(),
        train: train_cfg(1, 0),
        shard: shard.clone(),
        shard_sha256: "00".repeat(32),
    };
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, serde_json::to_string(&job).unwrap()).unwrap();
    let out = std::process::Command::new(program())
        .args(["federated-worker", "--job"])
        .arg(&job_path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHA-256") && err.contains("shard.bin"), "{err}");
    let out = std::process::Command::new(program())
        .args(["federated-worker", "--job"])
        .arg(&job_path)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
}
