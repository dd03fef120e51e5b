//! Side-by-side speed of this engine and the same model in PyTorch (CPU,
//! same threads): training tokens/s, evaluation tokens/s and peak RSS, in
//! alternating runs, reported as medians and ratios; and training FLOP/s
//! next to the machine's matmul peak (a large square f32 matmul through the
//! same gemm and threads, measured in the same run), so the distance to the
//! limit is visible.
//!
//! The PyTorch side is `benches/torch_reference.py` (`Paths::torch_reference`),
//! run as a child process; it is only ever used for this comparison. Both
//! sides train on the same seeded random bytes (speed does not depend on the
//! text). This lives outside the engine because it runs processes and reads
//! `/proc`; it drives the engine like any other caller.

pub mod ternary;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::engine::config::{ModelConfig, Profile};
use crate::engine::eval::{EvalConfig, evaluate};
use crate::engine::model::init_weights;
use crate::engine::ops::with_threads;
use crate::engine::pretrain::pretrain_config;
use crate::engine::train::train_full;
use crate::engine::{BaseModel, EngineError};

/// What a bench run can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The PyTorch side could not be run, or failed.
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// The PyTorch side printed something other than its figures.
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    /// The engine side failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The bench's result type.
pub type Result<T> = std::result::Result<T, BenchError>;

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

/// Best-of-runs figures and ratios for one profile.
///
/// "Best" is the highest tokens/s and the lowest peak RSS over the
/// alternating runs (as hyperfine reports the minimum time): on a shared
/// machine, interference only ever slows a run down, so the best run is the
/// closest to what the engine can do. Medians are kept alongside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub profile: String,
    pub batch: usize,
    pub seq: usize,
    /// Model FLOPs of one trained token ([`train_flops_per_token`]).
    pub train_flops_per_token: f64,
    pub candle: Figures,
    pub torch: Option<Figures>,
    /// candle / torch of the best figures, for tokens/s (above 1 = candle
    /// faster) and RSS (below 1 = candle smaller).
    pub ratio: Option<Figures>,
    pub candle_median: Figures,
    pub torch_median: Option<Figures>,
    /// candle / torch of the medians.
    pub ratio_median: Option<Figures>,
    pub candle_runs: Vec<Figures>,
    pub torch_runs: Vec<Figures>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub threads: usize,
    pub steps: usize,
    pub repeats: usize,
    /// Best f32 GFLOP/s of a [`PEAK_MATMUL_N`]-square matmul through candle's gemm, same threads.
    pub matmul_peak_gflops: f64,
    /// Why the PyTorch side is missing, if it is.
    pub torch_note: Option<String>,
    pub rows: Vec<BenchRow>,
}

const WARMUP_STEPS: usize = 2;

/// Tokens each timed evaluation covers at least (and never under 8
/// batches): at `small` a single pass of 8 batches took about 0.2 s, and
/// its ratio swung 0.92-1.21x between runs.
const EVAL_TOKENS: usize = 1 << 16;

/// Windows of `context` bytes in a timed evaluation at `batch` windows a
/// batch: whole batches, at least 8, covering [`EVAL_TOKENS`]. Both engines
/// first evaluate one untimed batch (a warm-up, as training has).
pub fn eval_windows(batch: usize, context: usize) -> usize {
    batch * EVAL_TOKENS.div_ceil(batch * context).max(8)
}

fn random_text(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<u8>()).collect()
}

/// Side of the square matmul that measures the machine's peak.
pub const PEAK_MATMUL_N: usize = 1024;

/// Model FLOPs of training on one token of a `seq`-long window: three times
/// the forward's (backward costs two forwards), counting each multiply-add
/// as two. The forward per token is every linear a token passes through
/// (q, k, v, o, the router, the one expert it is routed to, the LM head)
/// plus attention's two matmuls over the whole window (`q k^T` and `att v`,
/// computed unmasked, as both engines do). Embedding lookups, norms and
/// softmaxes are not counted (the usual MFU convention).
pub fn train_flops_per_token(cfg: &ModelConfig, seq: usize) -> f64 {
    let (d, f, e) = (cfg.d_model as f64, cfg.expert_width as f64, cfg.experts as f64);
    let router = if cfg.experts > 1 { d * e } else { 0.0 };
    let per_layer = 2.0 * (4.0 * d * d + router + 2.0 * d * f) + 4.0 * seq as f64 * d;
    let forward = cfg.layers as f64 * per_layer + 2.0 * d * cfg.vocab as f64;
    3.0 * forward
}

/// The machine's f32 matmul peak through candle's gemm on `threads`
/// threads: GFLOP/s of the best of `reps` [`PEAK_MATMUL_N`]-square products.
pub fn matmul_peak_gflops(threads: usize, reps: usize) -> Result<f64> {
    let n = PEAK_MATMUL_N;
    let a = candle_core::Tensor::from_vec(random_f32(n * n, 3), (n, n), &Device::Cpu).map_err(EngineError::from)?;
    let b = candle_core::Tensor::from_vec(random_f32(n * n, 4), (n, n), &Device::Cpu).map_err(EngineError::from)?;
    with_threads(threads, || {
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) + 1 {
            let t0 = Instant::now();
            let c = a.matmul(&b).map_err(EngineError::from)?;
            let secs = t0.elapsed().as_secs_f64();
            drop(c);
            best = best.min(secs);
        }
        Ok(2.0 * (n as f64).powi(3) / best / 1e9)
    })
}

fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
}

/// Reset the kernel's peak-RSS counter of this process (Linux); false elsewhere.
pub(crate) fn reset_peak_rss() -> bool {
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
    let ctx = profile.model.context;
    let ec = EvalConfig { batch: tc.batch, max_bytes: 0, threads };
    evaluate(&base, None, &random_text(tc.batch * ctx + 1, 3), &ec)?;
    let eval_text = random_text(eval_windows(tc.batch, ctx) * ctx + 1, 2);
    let t0 = Instant::now();
    let e = evaluate(&base, None, &eval_text, &ec)?;
    let eval_tps = e.bytes as f64 / t0.elapsed().as_secs_f64();
    Ok(Figures { train_tokens_per_s: train_tps, eval_tokens_per_s: eval_tps, peak_rss_mib: peak_rss_mib() })
}

/// Run the PyTorch reference once in a child process.
pub fn torch_run(cfg: &BenchConfig, profile: &Profile) -> Result<Figures> {
    let tc = pretrain_config(profile, 0, cfg.threads);
    let spec = serde_json::json!({
        "model": profile.model, "batch": tc.batch, "seq": tc.seq, "steps": cfg.steps,
        "warmup_steps": WARMUP_STEPS, "threads": cfg.threads, "lr": tc.lr,
        "eval_windows": eval_windows(tc.batch, profile.model.context), "eval_warmup_windows": tc.batch,
    });
    let out = Command::new(&cfg.python)
        .arg(&cfg.script)
        .arg(spec.to_string())
        .output()
        .map_err(|e| BenchError::Command { command: cfg.python.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(BenchError::Command {
            command: format!("{} {}", cfg.python, cfg.script.display()),
            detail: String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string(),
        });
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line)
        .map_err(|e| BenchError::Malformed { what: "torch_reference.py output".into(), detail: format!("{e}: {line}") })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

fn best(runs: &[Figures]) -> Figures {
    Figures {
        train_tokens_per_s: runs.iter().map(|f| f.train_tokens_per_s).fold(f64::NAN, f64::max),
        eval_tokens_per_s: runs.iter().map(|f| f.eval_tokens_per_s).fold(f64::NAN, f64::max),
        peak_rss_mib: runs.iter().map(|f| f.peak_rss_mib).fold(f64::NAN, f64::min),
    }
}

fn ratio(c: &Figures, t: &Figures) -> Figures {
    Figures {
        train_tokens_per_s: c.train_tokens_per_s / t.train_tokens_per_s,
        eval_tokens_per_s: c.eval_tokens_per_s / t.eval_tokens_per_s,
        peak_rss_mib: c.peak_rss_mib / t.peak_rss_mib,
    }
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
    let matmul_peak_gflops = matmul_peak_gflops(cfg.threads, 5)?;
    log(format!("matmul peak: {matmul_peak_gflops:.1} GFLOP/s ({PEAK_MATMUL_N}-square f32, {} threads)", cfg.threads));
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
        let candle = best(&cr);
        let torch = (!tr.is_empty()).then(|| best(&tr));
        let candle_median = medians(&cr);
        let torch_median = (!tr.is_empty()).then(|| medians(&tr));
        let tc = pretrain_config(&profile, 0, cfg.threads);
        rows.push(BenchRow {
            profile: name.clone(),
            batch: tc.batch,
            seq: tc.seq,
            train_flops_per_token: train_flops_per_token(&profile.model, tc.seq),
            candle,
            torch,
            ratio: torch.map(|t| ratio(&candle, &t)),
            candle_median,
            torch_median,
            ratio_median: torch_median.map(|t| ratio(&candle_median, &t)),
            candle_runs: cr,
            torch_runs: tr,
        });
    }
    Ok(BenchReport {
        threads: cfg.threads,
        steps: cfg.steps,
        repeats: cfg.repeats,
        matmul_peak_gflops,
        torch_note,
        rows,
    })
}

/// The report as a Markdown table.
pub fn render_markdown(r: &BenchReport) -> String {
    let mut s = format!(
        "Engine vs PyTorch eager (CPU, {} threads, {} measured steps, best of {} alternating runs; medians in parentheses)\n\n",
        r.threads, r.steps, r.repeats
    );
    s.push_str(
        "| profile | batch x seq | engine | train tok/s | eval tok/s | peak RSS MiB |\n|---|---|---|---:|---:|---:|\n",
    );
    for row in &r.rows {
        let mut line = |who: &str, f: &Figures, m: &Figures, is_ratio: bool| {
            let cell =
                |a: f64, b: f64| if is_ratio { format!("{a:.2}x ({b:.2}x)") } else { format!("{a:.0} ({b:.0})") };
            s.push_str(&format!(
                "| {} | {}x{} | {} | {} | {} | {} |\n",
                row.profile,
                row.batch,
                row.seq,
                who,
                cell(f.train_tokens_per_s, m.train_tokens_per_s),
                cell(f.eval_tokens_per_s, m.eval_tokens_per_s),
                cell(f.peak_rss_mib, m.peak_rss_mib)
            ));
        };
        line("candle", &row.candle, &row.candle_median, false);
        if let (Some(t), Some(m)) = (&row.torch, &row.torch_median) {
            line("pytorch", t, m, false);
        }
        if let (Some(q), Some(m)) = (&row.ratio, &row.ratio_median) {
            line("ratio", q, m, true);
        }
    }
    s.push_str(&format!(
        "\nTraining FLOP/s (model FLOPs, best run) against the matmul peak: {:.1} GFLOP/s, a {PEAK_MATMUL_N}-square f32 matmul through the same gemm on {} threads\n\n",
        r.matmul_peak_gflops, r.threads
    ));
    s.push_str("| profile | FLOPs/token | engine | train GFLOP/s | of peak |\n|---|---:|---|---:|---:|\n");
    for row in &r.rows {
        let mut line = |who: &str, f: &Figures| {
            let gflops = f.train_tokens_per_s * row.train_flops_per_token / 1e9;
            s.push_str(&format!(
                "| {} | {:.3e} | {} | {:.1} | {:.0}% |\n",
                row.profile,
                row.train_flops_per_token,
                who,
                gflops,
                100.0 * gflops / r.matmul_peak_gflops
            ));
        };
        line("candle", &row.candle);
        if let Some(t) = &row.torch {
            line("pytorch", t);
        }
    }
    if let Some(n) = &r.torch_note {
        s.push_str(&format!("\n{n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(train: f64, eval: f64, rss: f64) -> Figures {
        Figures { train_tokens_per_s: train, eval_tokens_per_s: eval, peak_rss_mib: rss }
    }

    #[test]
    fn best_takes_the_fastest_run_and_the_smallest_memory_and_ratios_divide() {
        let runs = [f(10.0, 50.0, 300.0), f(30.0, 40.0, 200.0), f(20.0, 60.0, 250.0)];
        assert_eq!(best(&runs), f(30.0, 60.0, 200.0));
        assert_eq!(medians(&runs), f(20.0, 50.0, 250.0));
        assert_eq!(ratio(&f(30.0, 60.0, 200.0), &f(60.0, 30.0, 800.0)), f(0.5, 2.0, 0.25));
    }

    #[test]
    fn the_markdown_report_shows_best_and_median_ratios() {
        let c = f(30.0, 60.0, 200.0);
        let t = f(60.0, 30.0, 800.0);
        let row = BenchRow {
            profile: "tiny".into(),
            batch: 8,
            seq: 32,
            train_flops_per_token: 2.0e6,
            candle: c,
            torch: Some(t),
            ratio: Some(ratio(&c, &t)),
            candle_median: c,
            torch_median: Some(t),
            ratio_median: Some(ratio(&c, &t)),
            candle_runs: vec![c],
            torch_runs: vec![t],
        };
        let r = BenchReport {
            threads: 2,
            steps: 5,
            repeats: 1,
            matmul_peak_gflops: 0.24,
            torch_note: None,
            rows: vec![row],
        };
        let md = render_markdown(&r);
        assert!(md.contains("| tiny | 8x32 | ratio | 0.50x (0.50x) | 2.00x (2.00x) | 0.25x (0.25x) |"), "{md}");
        // 30 tok/s x 2e6 FLOPs = 0.06 GFLOP/s = 25% of 0.24; torch 60 tok/s = 50%.
        assert!(md.contains("| tiny | 2.000e6 | candle | 0.1 | 25% |"), "{md}");
        assert!(md.contains("| tiny | 2.000e6 | pytorch | 0.1 | 50% |"), "{md}");
        assert!(md.contains("0.2 GFLOP/s, a 1024-square f32 matmul"), "{md}");
    }

    #[test]
    fn timed_evaluations_are_whole_batches_of_at_least_eight_covering_64k_tokens() {
        assert_eq!(eval_windows(8, 32), 2048, "tiny: 256 batches of 8 windows of 32 bytes are 65,536 tokens");
        assert_eq!(eval_windows(16, 128), 512, "small: 32 batches");
        assert_eq!(eval_windows(32, 256), 256, "paper: 8 batches already cover 2^16 tokens");
        assert_eq!(eval_windows(3, 1000), 66, "rounded up to whole batches: 22 of 3,000 tokens");
        assert_eq!(eval_windows(32, 512), 256, "never under 8 batches");
    }

    #[test]
    fn training_flops_count_every_linear_a_token_passes_and_attention_over_the_window() {
        let cfg = ModelConfig { vocab: 256, d_model: 8, layers: 2, heads: 2, experts: 4, expert_width: 16, context: 4 };
        // Per layer: 2 * (4*64 + 8*4 + 2*8*16) = 1088, attention 4*4*8 = 128;
        // two layers 2432, LM head 2*8*256 = 4096; forward 6528, training x3.
        assert_eq!(train_flops_per_token(&cfg, 4), 19584.0);
        // One expert has no router.
        let dense = ModelConfig { experts: 1, ..cfg };
        assert_eq!(train_flops_per_token(&dense, 4), 19584.0 - 3.0 * 2.0 * 2.0 * 32.0);
    }
}
