//! `bets bench ternary`: the ternary wire format's speed and memory, side by
//! side with float in one run, reported as ratios.
//!
//! - the packed matrix-vector product (`kernels::ternary`, the path this CPU
//!   dispatches to) against candle's f32 matmul of the same `[1, k] x [k, k]`
//!   shape, and the kernel's effective bandwidth (packed bytes read per
//!   second) against this machine's measured read bandwidth (summing a
//!   256 MiB buffer), all on one thread, alternating, best of `repeats`;
//! - generation tokens/s (greedy decoding with a KV cache) and peak RSS of
//!   a geometry's float and ternary forms, each in its own child process
//!   (`bets bench generate`) so one's memory does not count in the other's.
//!   The weights are seeded random (speed does not depend on their values).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use kernels::ternary::{self, ScaleGranularity, Ternary};
use serde::{Deserialize, Serialize};

use super::{BenchError, Result, peak_rss_mib, reset_peak_rss};
use crate::engine::config::Profile;
use crate::engine::ops::with_threads;
use crate::engine::ternary::{TernaryBase, quantize};
use crate::engine::{BaseModel, EngineError};

/// What to measure.
#[derive(Debug, Clone)]
pub struct TernaryBenchConfig {
    /// Square matrix sizes of the kernel comparison.
    pub sizes: Vec<usize>,
    /// Geometries of the generation comparison.
    pub profiles: Vec<String>,
    /// Alternating timed runs per side.
    pub repeats: usize,
    /// Engine threads of the generation runs.
    pub threads: usize,
    /// This executable (the generation runs are its children).
    pub exe: PathBuf,
    /// Where the model files of the generation runs are written.
    pub scratch: PathBuf,
}

/// One matrix size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRow {
    pub size: usize,
    pub packed_bytes: usize,
    /// Best seconds per product.
    pub ternary_s: f64,
    pub f32_s: f64,
    /// f32 time / ternary time (above 1: the ternary kernel is faster).
    pub speedup: f64,
    /// Packed bytes read per second, GB/s.
    pub ternary_gb_per_s: f64,
    /// ternary_gb_per_s / the measured read bandwidth.
    pub bandwidth_fraction: f64,
}

/// One generation run, as a child prints it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenFigures {
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub peak_rss_mib: f64,
    pub model_file_bytes: u64,
}

/// Float against ternary for one geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRow {
    pub profile: String,
    pub float: GenFigures,
    pub ternary: GenFigures,
    /// ternary / float tokens/s (above 1: ternary decodes faster).
    pub speed_ratio: f64,
    /// ternary / float peak RSS (below 1: ternary is smaller).
    pub rss_ratio: f64,
    /// float / ternary file bytes.
    pub size_ratio: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TernaryReport {
    /// The kernel path this CPU runs (`avx512`, `avx2`, `portable`).
    pub path: String,
    pub repeats: usize,
    pub threads: usize,
    /// Single-thread read bandwidth, GB/s (best of the runs).
    pub read_gb_per_s: f64,
    pub kernels: Vec<KernelRow>,
    pub generation: Vec<GenRow>,
}

fn best_time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Best single-thread GB/s summing a 256 MiB buffer of f32 (in 16 lanes, so it vectorises).
pub fn read_bandwidth(repeats: usize) -> f64 {
    let buf: Vec<f32> = (0..(64usize << 20)).map(|i| (i % 7) as f32).collect();
    let mut sink = 0f32;
    let s = best_time(repeats, || {
        let acc = buf.chunks_exact(16).fold([0f32; 16], |mut acc, c| {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v;
            }
            acc
        });
        sink += acc.iter().sum::<f32>();
    });
    std::hint::black_box(sink);
    (buf.len() * 4) as f64 / s / 1e9
}

fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Time the packed product and candle's f32 matmul at `k x k`, alternating.
pub fn kernel_row(k: usize, repeats: usize, read_gb_per_s: f64) -> Result<KernelRow> {
    let w = lcg(k * k, 1);
    let t = Ternary::quantize_absmean(&w, k, k, ScaleGranularity::PerRow)
        .map_err(|e| EngineError::Malformed { what: "bench matrix".into(), detail: e.to_string() })?;
    let x = lcg(k, 2);
    let mut y = vec![0f32; k];
    let path = ternary::Path::detect();
    let wt = Tensor::from_vec(w, (k, k), &Device::Cpu).map_err(EngineError::from)?;
    let xt = Tensor::from_vec(x.clone(), (1, k), &Device::Cpu).map_err(EngineError::from)?;
    let (mut tern, mut float) = (f64::INFINITY, f64::INFINITY);
    with_threads(1, || -> Result<()> {
        for _ in 0..repeats.max(1) {
            tern = tern.min(best_time(3, || ternary::gemm_with(path, &t, &x, &mut y)));
            let mut err = None;
            float = float.min(best_time(3, || {
                if let Err(e) = xt.matmul(&wt) {
                    err = Some(e);
                }
            }));
            if let Some(e) = err {
                return Err(EngineError::from(e).into());
            }
        }
        Ok(())
    })?;
    std::hint::black_box(&y);
    let gbps = t.packed_bytes() as f64 / tern / 1e9;
    Ok(KernelRow {
        size: k,
        packed_bytes: t.packed_bytes(),
        ternary_s: tern,
        f32_s: float,
        speedup: float / tern,
        ternary_gb_per_s: gbps,
        bandwidth_fraction: gbps / read_gb_per_s,
    })
}

/// The prompt every generation run continues.
const PROMPT: &[u8] = b"The jury said it ";

/// One generation run in this process: load `model` (a float safetensors
/// file of `profile`'s geometry, or a packed ternary file), decode to the
/// end of the context, report tokens/s of the decoding and this process's peak RSS.
pub fn generate_once(profile: &str, model: &Path, ternary: bool, threads: usize) -> Result<GenFigures> {
    reset_peak_rss();
    let bytes = std::fs::read(model)
        .map_err(|e| BenchError::Command { command: format!("reading {}", model.display()), detail: e.to_string() })?;
    let device = Device::Cpu;
    let base = if ternary {
        TernaryBase::from_bytes(&bytes, &device)?.into_base(&bytes, &device)
    } else {
        BaseModel::from_bytes(Profile::from_name(profile)?.model, "bench".into(), &bytes, &device)?
    };
    let model_file_bytes = bytes.len() as u64;
    drop(bytes);
    let n = base.config.context - PROMPT.len();
    let (out, secs) = with_threads(threads, || -> Result<(Vec<u8>, f64)> {
        let t0 = Instant::now();
        let out = base.view().generate(PROMPT, n)?;
        Ok((out, t0.elapsed().as_secs_f64()))
    })?;
    Ok(GenFigures {
        tokens: out.len(),
        tokens_per_s: out.len() as f64 / secs,
        peak_rss_mib: peak_rss_mib(),
        model_file_bytes,
    })
}

fn child(cfg: &TernaryBenchConfig, profile: &str, model: &Path, ternary: bool) -> Result<GenFigures> {
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["bench", "generate", "--profile", profile, "--threads", &cfg.threads.to_string(), "--model"]).arg(model);
    if ternary {
        cmd.arg("--ternary");
    }
    let out = cmd
        .output()
        .map_err(|e| BenchError::Command { command: cfg.exe.display().to_string(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(BenchError::Command {
            command: format!("{} bench generate", cfg.exe.display()),
            detail: String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string(),
        });
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line)
        .map_err(|e| BenchError::Malformed { what: "bench generate output".into(), detail: format!("{e}: {line}") })
}

fn best_gen(runs: &[GenFigures]) -> GenFigures {
    GenFigures {
        tokens: runs[0].tokens,
        tokens_per_s: runs.iter().map(|r| r.tokens_per_s).fold(f64::NAN, f64::max),
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(f64::NAN, f64::min),
        model_file_bytes: runs[0].model_file_bytes,
    }
}

/// Write a geometry's seeded random float base and its ternary form to `dir`.
fn model_files(profile: &str, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let p = Profile::from_name(profile)?;
    let base = BaseModel::random(&p.model, 0, &Device::Cpu)?;
    let float = dir.join(format!("{profile}-float.safetensors"));
    let tern = dir.join(format!("{profile}-ternary.safetensors"));
    let write = |path: &Path, bytes: &[u8]| {
        crate::fsutil::write_atomic(path, bytes)
            .map_err(|e| BenchError::Command { command: format!("writing {}", path.display()), detail: e.to_string() })
    };
    write(&float, &base.weights_bytes()?)?;
    write(&tern, &quantize(&base, ScaleGranularity::PerRow)?.to_bytes()?)?;
    Ok((float, tern))
}

/// Run the whole comparison; `log` gets a line per measurement.
pub fn run(cfg: &TernaryBenchConfig, log: &mut dyn FnMut(String)) -> Result<TernaryReport> {
    let read = with_threads(1, || read_bandwidth(cfg.repeats));
    log(format!("read bandwidth (1 thread): {read:.2} GB/s"));
    let mut kernels = Vec::new();
    for &k in &cfg.sizes {
        let row = kernel_row(k, cfg.repeats, read)?;
        log(format!("{k}x{k}: {row:?}"));
        kernels.push(row);
    }
    let mut generation = Vec::new();
    for profile in &cfg.profiles {
        let (float_file, tern_file) = model_files(profile, &cfg.scratch)?;
        let (mut f, mut t) = (Vec::new(), Vec::new());
        for r in 0..cfg.repeats.max(1) {
            f.push(child(cfg, profile, &float_file, false)?);
            t.push(child(cfg, profile, &tern_file, true)?);
            log(format!("{profile} run {r}: float {:?} / ternary {:?}", f[r], t[r]));
        }
        let (float, ternary) = (best_gen(&f), best_gen(&t));
        generation.push(GenRow {
            profile: profile.clone(),
            float,
            ternary,
            speed_ratio: ternary.tokens_per_s / float.tokens_per_s,
            rss_ratio: ternary.peak_rss_mib / float.peak_rss_mib,
            size_ratio: float.model_file_bytes as f64 / ternary.model_file_bytes as f64,
        });
    }
    Ok(TernaryReport {
        path: ternary::Path::detect().name().into(),
        repeats: cfg.repeats,
        threads: cfg.threads,
        read_gb_per_s: read,
        kernels,
        generation,
    })
}

/// The report as Markdown tables.
pub fn render_markdown(r: &TernaryReport) -> String {
    let mut s = format!(
        "Ternary kernel (`{}` path) vs candle f32 matmul, one thread, best of {} alternating runs; \
         read bandwidth {:.2} GB/s\n\n| k x k | packed bytes | ternary us | f32 us | speed-up | packed GB/s | of read bandwidth |\n|---:|---:|---:|---:|---:|---:|---:|\n",
        r.path, r.repeats, r.read_gb_per_s
    );
    for k in &r.kernels {
        s.push_str(&format!(
            "| {0}x{0} | {1} | {2:.1} | {3:.1} | {4:.2}x | {5:.2} | {6:.0}% |\n",
            k.size,
            k.packed_bytes,
            k.ternary_s * 1e6,
            k.f32_s * 1e6,
            k.speedup,
            k.ternary_gb_per_s,
            100.0 * k.bandwidth_fraction
        ));
    }
    if !r.generation.is_empty() {
        s.push_str(&format!(
            "\nGeneration (greedy, KV cache, {} engine threads, each form in its own process)\n\n\
             | geometry | form | file bytes | tokens/s | peak RSS MiB |\n|---|---|---:|---:|---:|\n",
            r.threads
        ));
        for g in &r.generation {
            for (form, f) in [("float", &g.float), ("ternary", &g.ternary)] {
                s.push_str(&format!(
                    "| {} | {form} | {} | {:.0} | {:.1} |\n",
                    g.profile, f.model_file_bytes, f.tokens_per_s, f.peak_rss_mib
                ));
            }
            s.push_str(&format!(
                "| {} | ternary / float | {:.3}x | {:.2}x | {:.2}x |\n",
                g.profile,
                1.0 / g.size_ratio,
                g.speed_ratio,
                g.rss_ratio
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_run_decodes_to_the_end_of_the_context_from_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let (float, tern) = model_files("tiny", dir.path()).unwrap();
        let context = Profile::from_name("tiny").unwrap().model.context;
        for (file, ternary) in [(&float, false), (&tern, true)] {
            let g = generate_once("tiny", file, ternary, 1).unwrap();
            assert_eq!(g.tokens, context - PROMPT.len());
            assert_eq!(g.model_file_bytes, std::fs::metadata(file).unwrap().len());
            assert!(g.tokens_per_s > 0.0);
        }
        // A float file read as ternary is refused, not misread.
        assert!(generate_once("tiny", &float, true, 1).is_err());
    }

    #[test]
    fn a_kernel_row_accounts_the_packed_bytes_and_the_report_renders_each_ratio() {
        let row = kernel_row(64, 1, 1.0).unwrap();
        // 64 rows of 4 words and one scale each.
        assert_eq!(row.packed_bytes, 64 * (4 * 4 + 4));
        assert!(row.speedup > 0.0 && row.speedup.is_finite());
        let g = GenFigures { tokens: 10, tokens_per_s: 100.0, peak_rss_mib: 40.0, model_file_bytes: 1000 };
        let t = GenFigures { tokens_per_s: 300.0, peak_rss_mib: 20.0, model_file_bytes: 100, ..g };
        assert_eq!(best_gen(&[g, GenFigures { tokens_per_s: 50.0, peak_rss_mib: 30.0, ..g }]).peak_rss_mib, 30.0);
        let report = TernaryReport {
            path: "portable".into(),
            repeats: 1,
            threads: 1,
            read_gb_per_s: 1.0,
            kernels: vec![row],
            generation: vec![GenRow {
                profile: "tiny".into(),
                float: g,
                ternary: t,
                speed_ratio: 3.0,
                rss_ratio: 0.5,
                size_ratio: 10.0,
            }],
        };
        let md = render_markdown(&report);
        assert!(md.contains("| 64x64 | 1280 |"), "{md}");
        assert!(md.contains("| tiny | ternary / float | 0.100x | 3.00x | 0.50x |"), "{md}");
    }
}
