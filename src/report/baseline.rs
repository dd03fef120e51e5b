//! CI baselines of published bets, and the comparison `bets regress` makes
//! (pure; `app::regress` reruns the bets and reads and writes the files).
//!
//! A baseline is what a bet gave at its CI profile when someone last
//! accepted it on purpose (`bets regress --accept`): the verdict and every
//! quantity. The engine and the simulations are deterministic, so the
//! default comparison is bit-exact; a tolerance (relative, on numbers) can be
//! given for a bet whose numbers are not, on the command line or in its
//! baseline file. Bit-exact holds within one family of gemm kernels (the
//! CPU decides which candle's gemm runs), so there is a baseline file per
//! family ([`file_name`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::criteria::{CellCounts, Verdict, VerdictRecord};
use crate::error::{ExitKind, FormatError, HasExitKind};
use crate::table::Value;

/// Version of a baseline file.
pub const BASELINE_FORMAT: u32 = 1;

/// The baseline formats this build reads.
pub const BASELINE_FORMATS: &[u32] = &[BASELINE_FORMAT];

/// What reading a baseline file can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file exists but cannot be read.
    #[error("reading {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// A baseline of a format version this build does not read (written by
    /// another harness: run that one, or accept new baselines on purpose).
    #[error(transparent)]
    Format(FormatError),
    /// The file is not a baseline.
    #[error("{} is not a baseline (format {BASELINE_FORMAT}): {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },
}

impl HasExitKind for BaselineError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            BaselineError::Io { .. } | BaselineError::Malformed { .. } => ExitKind::Other,
            BaselineError::Format(e) => e.exit_kind(),
        }
    }
}

/// Read the baseline at `path` (`None` when there is none): its format
/// version first, then its shape.
pub fn read(path: &Path) -> Result<Option<Baseline>, BaselineError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(BaselineError::Io { path: path.to_path_buf(), error }),
    };
    crate::error::check_json_format("baseline", path.display(), &bytes, BASELINE_FORMATS)
        .map_err(BaselineError::Format)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| BaselineError::Malformed { path: path.to_path_buf(), detail: e.to_string() })
}

/// The profile CI reruns published bets at.
pub const CI_PROFILE: &str = "tiny";

/// The gemm kernel family ([`crate::engine::gemm_kernels`]) of the baselines
/// whose file name names none: every baseline recorded before baselines were
/// kept per family was recorded on AVX-512F machines.
pub const REFERENCE_KERNELS: &str = "x86_64-avx512f";

/// File name of a bet's baseline for the gemm kernel family `kernels`
/// inside its results folder: `baseline-<profile>.json` for
/// [`REFERENCE_KERNELS`], `baseline-<profile>.<kernels>.json` for any other
/// (their numbers round differently, so each family has its own).
pub fn file_name(profile: &str, kernels: &str) -> String {
    if kernels == REFERENCE_KERNELS {
        format!("baseline-{profile}.json")
    } else {
        format!("baseline-{profile}.{kernels}.json")
    }
}

/// `results/<NN-slug>/baseline-tiny.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Baseline file format version.
    pub format: u32,
    /// Catalogue number.
    pub bet: u32,
    /// The bet's slug, so the file says what it is.
    pub slug: String,
    /// The profile the rerun used (`tiny`).
    pub profile: String,
    /// The spec the baseline was taken under; a changed spec is a drift
    /// until someone accepts the new numbers.
    pub spec_hash: String,
    /// Experiment kind and version that produced it.
    pub experiment: String,
    /// The verdict the rerun gave; `null` when a criterion reads a measured
    /// quantity, whose outcome no two runs need share (then `criteria` holds
    /// the outcomes that are compared).
    pub verdict: Option<Verdict>,
    /// Planned, ok and failed cells of the rerun.
    pub cells: CellCounts,
    /// Every quantity but the measured ones, NULL as `null`.
    pub quantities: BTreeMap<String, Option<Value>>,
    /// The quantities the spec declares measured (read off a clock): left
    /// out of `quantities`, never compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured: Vec<String>,
    /// When the verdict is not kept: level -> whether each criterion that
    /// reads no measured quantity holds (`null`: undecided).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub criteria: BTreeMap<String, Option<bool>>,
    /// Relative tolerance for numbers (0 = bit-exact), kept with the
    /// baseline so a non-deterministic bet documents its own slack.
    #[serde(default)]
    pub tolerance: f64,
}

impl Baseline {
    /// The baseline a fresh rerun would write; `measured` names the
    /// quantities the spec declares measured.
    pub fn of(
        bet: u32,
        slug: &str,
        profile: &str,
        spec_hash: &str,
        experiment: &str,
        record: &VerdictRecord,
        measured: &[String],
    ) -> Baseline {
        let reads_measured = |c: &crate::criteria::CriterionOutcome| c.uses.keys().any(|k| measured.contains(k));
        let verdict_measured = record.criteria.iter().any(reads_measured);
        let criteria = if verdict_measured {
            record.criteria.iter().filter(|c| !reads_measured(c)).map(|c| (c.level.clone(), c.holds)).collect()
        } else {
            BTreeMap::new()
        };
        let mut measured = measured.to_vec();
        measured.sort();
        Baseline {
            format: BASELINE_FORMAT,
            bet,
            slug: slug.to_string(),
            profile: profile.to_string(),
            spec_hash: spec_hash.to_string(),
            experiment: experiment.to_string(),
            verdict: (!verdict_measured).then_some(record.verdict),
            cells: record.cells,
            quantities: record
                .quantities
                .iter()
                .filter(|(k, _)| !measured.contains(k))
                .map(|(k, q)| (k.clone(), q.value.clone()))
                .collect(),
            measured,
            criteria,
            tolerance: 0.0,
        }
    }
}

/// One difference between a baseline and a rerun.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// The bet that drifted.
    pub bet: u32,
    /// `verdict`, `spec_hash`, `experiment`, `cells` or a quantity name.
    pub what: String,
    /// The baseline's value, every bit shown.
    pub baseline: String,
    /// The rerun's value, every bit shown.
    pub now: String,
    /// Whether a criterion names it (the verdict itself counts as decisive).
    pub decisive: bool,
}

/// Every difference between `baseline` and `now`; numbers within relative
/// `tolerance` of each other are equal (0 compares the f64 bits, so even
/// -0.0 and 0.0 differ; NaN equals NaN only bit for bit).
pub fn compare(baseline: &Baseline, now: &Baseline, decisive: &[String], tolerance: f64) -> Vec<Drift> {
    let mut out = Vec::new();
    let mut push = |what: &str, b: String, n: String, decisive: bool| {
        out.push(Drift { bet: now.bet, what: what.into(), baseline: b, now: n, decisive });
    };
    if baseline.verdict != now.verdict {
        push("verdict", verdict_text(baseline.verdict), verdict_text(now.verdict), true);
    }
    if baseline.measured != now.measured {
        push("measured", baseline.measured.join(", "), now.measured.join(", "), false);
    }
    let levels: std::collections::BTreeSet<&String> = baseline.criteria.keys().chain(now.criteria.keys()).collect();
    for level in levels {
        let (b, n) = (baseline.criteria.get(level), now.criteria.get(level));
        if b != n {
            let show = |h: Option<&Option<bool>>| match h {
                None => "(absent)".to_string(),
                Some(None) => "undecided".to_string(),
                Some(Some(h)) => if *h { "holds" } else { "does not hold" }.to_string(),
            };
            push(&format!("criteria.{level}"), show(b), show(n), true);
        }
    }
    if baseline.spec_hash != now.spec_hash {
        push("spec_hash", baseline.spec_hash.clone(), now.spec_hash.clone(), false);
    }
    if baseline.experiment != now.experiment {
        push("experiment", baseline.experiment.clone(), now.experiment.clone(), false);
    }
    if baseline.cells != now.cells {
        let c = |c: &CellCounts| format!("{}/{}/{} planned/ok/failed", c.planned, c.ok, c.failed);
        push("cells", c(&baseline.cells), c(&now.cells), false);
    }
    let names: std::collections::BTreeSet<&String> = baseline.quantities.keys().chain(now.quantities.keys()).collect();
    for name in names {
        let b = baseline.quantities.get(name);
        let n = now.quantities.get(name);
        let same = match (b, n) {
            (Some(b), Some(n)) => same_value(b.as_ref(), n.as_ref(), tolerance),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let show = |v: Option<&Option<Value>>| match v {
                None => "(absent)".to_string(),
                Some(None) => "NULL".to_string(),
                Some(Some(v)) => exact(v),
            };
            push(name, show(b), show(n), decisive.contains(name));
        }
    }
    out
}

/// A kept verdict, or what stands in for one that reads a measured quantity.
pub fn verdict_text(v: Option<Verdict>) -> String {
    v.map_or_else(|| "verdict not compared (it reads a measured quantity)".to_string(), |v| v.to_string())
}

/// A value with every bit of a float visible (`{:?}` round-trips).
fn exact(v: &Value) -> String {
    match v {
        Value::Float(x) => format!("{x:?}"),
        other => other.to_string(),
    }
}

fn same_value(a: Option<&Value>, b: Option<&Value>, tolerance: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::Float(x)), Some(Value::Float(y))) if tolerance == 0.0 => x.to_bits() == y.to_bits(),
        (Some(x), Some(y)) if tolerance == 0.0 => x == y,
        (Some(x), Some(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= tolerance * x.abs().max(y.abs()),
            _ => x == y,
        },
        _ => false,
    }
}

/// The drift table for a terminal.
pub fn drift_table(drifts: &[Drift]) -> String {
    let w = |f: &dyn Fn(&Drift) -> usize, min: usize| drifts.iter().map(f).max().unwrap_or(0).max(min);
    let (ww, bw, nw) = (w(&|d| d.what.len(), 8), w(&|d| d.baseline.len(), 8), w(&|d| d.now.len(), 3));
    let mut out = format!("{:<4} {:<ww$} {:<bw$} {:<nw$} decisive\n", "bet", "what", "baseline", "now");
    for d in drifts {
        out.push_str(&format!(
            "{:<4} {:<ww$} {:<bw$} {:<nw$} {}\n",
            format!("{:02}", d.bet),
            d.what,
            d.baseline,
            d.now,
            if d.decisive { "yes" } else { "no" }
        ));
    }
    out
}
