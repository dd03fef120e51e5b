//! Side-by-side speed of this engine and the same model in PyTorch (CPU,
//! same threads): training tokens/s, evaluation tokens/s and peak RSS, in
//! alternating runs, reported as medians and ratios.
//!
//! The PyTorch side is `benches/torch_reference.py`, run as a child process;
//! it is only ever used for this comparison. Both sides train on the same
//! seeded random bytes (speed does not depend on the text).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::Profile;
use super::error::{EngineError, Result};
use super::eval::{EvalConfig, evaluate};
use super::model::init_weights;
use super::pretrain::{BaseModel, pretrain_config};
use super::train::train_full;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub profiles: Vec<String>,
    pub threads: usize,
    /// Measured training steps per run (two warm-up steps come first).
    pub steps: usize,
    /// Alternating runs per engine.
    pub repeats: usize,
    /// Python interpreter with torch.
    pub python: String,
    /// Path of `torch_reference.py`.
    pub script: PathBuf,
}

/// One run of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub train_tokens_per_s: f64,
    pub eval_tokens_per_s: f64,
    /// Peak resident set size of the process during the run, MiB.
    pub peak_rss_mib: f64,
}

/// Medians and ratios for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub profile: String,
    pub batch: usize,
    pub seq: usize,
    pub candle: Figures,
    pub torch: Option<Figures>,
    /// candle / torch for tokens/s (above 1 = candle faster) and RSS (below 1 = candle smaller).
    pub ratio: Option<Figures>,
    pub candle_runs: Vec<Figures>,
    pub torch_runs: Vec<Figures>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub threads: usize,
    pub steps: usize,
    pub repeats: usize,
    /// Why the PyTorch side is missing, if it is.
    pub torch_note: Option<String>,
    pub rows: Vec<BenchRow>,
}

const WARMUP_STEPS: usize = 2;

fn random_text(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<u8>()).collect()
}

/// Reset the kernel's peak-RSS counter of this process (Linux); false elsewhere.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak RSS of this process in MiB (Linux `VmHWM`), 0 when unknown.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Train and evaluate `profile` once with this engine.
pub fn candle_run(profile: &Profile, threads: usize, steps: usize) -> Result<Figures> {
    reset_peak_rss();
    let device = Device::Cpu;
    let mut weights = init_weights(&profile.model, 0, &device)?;
    let mut tc = pretrain_config(profile, 0, threads);
    tc.steps = steps + WARMUP_STEPS;
    let text = random_text(1 << 20, 1);
    let mut marks = Vec::with_capacity(tc.steps);
    train_full(&profile.model, &mut weights, &text, &tc, &device, &mut |_, _| marks.push(Instant::now()))?;
    let span = marks[marks.len() - 1].duration_since(marks[WARMUP_STEPS - 1]).as_secs_f64();
    let train_tps = (steps * tc.batch * tc.seq) as f64 / span;
    let base = BaseModel::from_weights(profile.model.clone(), weights, "bench".into(), device);
    let eval_bytes = tc.batch * profile.model.context * 8 + 1;
    let ec = EvalConfig { batch: tc.batch, max_bytes: 0, threads };
    let t0 = Instant::now();
    let e = evaluate(&base, None, &random_text(eval_bytes, 2), &ec)?;
    let eval_tps = e.bytes as f64 / t0.elapsed().as_secs_f64();
    Ok(Figures { train_tokens_per_s: train_tps, eval_tokens_per_s: eval_tps, peak_rss_mib: peak_rss_mib() })
}

/// Run the PyTorch reference once in a child process.
pub fn torch_run(cfg: &BenchConfig, profile: &Profile) -> Result<Figures> {
    let tc = pretrain_config(profile, 0, cfg.threads);
    let spec = serde_json::json!({
        "model": profile.model, "batch": tc.batch, "seq": tc.seq, "steps": cfg.steps,
        "warmup_steps": WARMUP_STEPS, "threads": cfg.threads, "lr": tc.lr, "eval_windows": tc.batch * 8,
    });
    let out = Command::new(&cfg.python)
        .arg(&cfg.script)
        .arg(spec.to_string())
        .output()
        .map_err(|e| EngineError::Command { command: cfg.python.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(EngineError::Command {
            command: format!("{} {}", cfg.python, cfg.script.display()),
            detail: String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string(),
        });
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line).map_err(|e| EngineError::Malformed {
        what: "torch_reference.py output".into(),
        detail: format!("{e}: {line}"),
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

fn medians(runs: &[Figures]) -> Figures {
    Figures {
        train_tokens_per_s: median(&runs.iter().map(|f| f.train_tokens_per_s).collect::<Vec<_>>()),
        eval_tokens_per_s: median(&runs.iter().map(|f| f.eval_tokens_per_s).collect::<Vec<_>>()),
        peak_rss_mib: median(&runs.iter().map(|f| f.peak_rss_mib).collect::<Vec<_>>()),
    }
}

/// Measure every profile, alternating candle and PyTorch runs; `log` gets one line per run.
pub fn run(cfg: &BenchConfig, log: &mut dyn FnMut(String)) -> Result<BenchReport> {
    let mut torch_note = None;
    let probe = Command::new(&cfg.python).args(["-c", "import torch"]).output();
    let torch_ok = matches!(&probe, Ok(o) if o.status.success());
    if !torch_ok {
        torch_note =
            Some(format!("`{} -c 'import torch'` failed: PyTorch side skipped (pip install torch)", cfg.python));
    }
    let mut rows = Vec::new();
    for name in &cfg.profiles {
        let profile = Profile::from_name(name)?;
        let (mut cr, mut tr) = (Vec::new(), Vec::new());
        for r in 0..cfg.repeats.max(1) {
            let c = candle_run(&profile, cfg.threads, cfg.steps)?;
            log(format!("{name} run {r}: candle {c:?}"));
            cr.push(c);
            if torch_ok {
                let t = torch_run(cfg, &profile)?;
                log(format!("{name} run {r}: torch  {t:?}"));
                tr.push(t);
            }
        }
        let candle = medians(&cr);
        let torch = (!tr.is_empty()).then(|| medians(&tr));
        let ratio = torch.map(|t| Figures {
            train_tokens_per_s: candle.train_tokens_per_s / t.train_tokens_per_s,
            eval_tokens_per_s: candle.eval_tokens_per_s / t.eval_tokens_per_s,
            peak_rss_mib: candle.peak_rss_mib / t.peak_rss_mib,
        });
        let tc = pretrain_config(&profile, 0, cfg.threads);
        rows.push(BenchRow {
            profile: name.clone(),
            batch: tc.batch,
            seq: tc.seq,
            candle,
            torch,
            ratio,
            candle_runs: cr,
            torch_runs: tr,
        });
    }
    Ok(BenchReport { threads: cfg.threads, steps: cfg.steps, repeats: cfg.repeats, torch_note, rows })
}

/// The report as a Markdown table.
pub fn render_markdown(r: &BenchReport) -> String {
    let mut s = format!(
        "Engine vs PyTorch eager (CPU, {} threads, {} measured steps, median of {} alternating runs)\n\n",
        r.threads, r.steps, r.repeats
    );
    s.push_str(
        "| profile | batch x seq | engine | train tok/s | eval tok/s | peak RSS MiB |\n|---|---|---|---:|---:|---:|\n",
    );
    for row in &r.rows {
        let mut line = |who: &str, f: &Figures, fmt_ratio: bool| {
            if fmt_ratio {
                s.push_str(&format!(
                    "| {} | {}x{} | {} | {:.2}x | {:.2}x | {:.2}x |\n",
                    row.profile, row.batch, row.seq, who, f.train_tokens_per_s, f.eval_tokens_per_s, f.peak_rss_mib
                ));
            } else {
                s.push_str(&format!(
                    "| {} | {}x{} | {} | {:.0} | {:.0} | {:.0} |\n",
                    row.profile, row.batch, row.seq, who, f.train_tokens_per_s, f.eval_tokens_per_s, f.peak_rss_mib
                ));
            }
        };
        line("candle", &row.candle, false);
        if let Some(t) = &row.torch {
            line("pytorch", t, false);
        }
        if let Some(q) = &row.ratio {
            line("ratio", q, true);
        }
    }
    if let Some(n) = &r.torch_note {
        s.push_str(&format!("\n{n}\n"));
    }
    s
}
