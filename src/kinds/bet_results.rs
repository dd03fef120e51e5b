//! Kind `bet-results` (bet 62, a bet about bets): no new compute. Each cell
//! reads one other bet's latest counted result from its signed bundle under
//! `results/`, after verifying the bundle against the trusted keys, and
//! reports its verdict and which signed run it was. A bet with no verified
//! counted bundle fails its cell with an error naming the bet, so the meta
//! bet is INCONCLUSIVE rather than deciding on no evidence.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Cell, Env, Kind, ParamProblem};
use crate::criteria::Verdict;
use crate::results;
use crate::signing::TrustedKeys;

/// The `bet-results` kind.
pub struct BetResults;

/// `[procedure]`: the bets whose results are read.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Catalogue numbers of the bets read (every `bet` factor must be one).
    bets: Vec<u32>,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Unused (nothing is random); every grid has one.
    seed: u64,
    /// The bet whose latest counted result this cell reads.
    bet: u32,
}

crate::metrics! {
    /// One other bet's latest counted, verified result.
    pub struct ResultMetrics {
        /// Its verdict: STRICT, LENIENT, FAIL, CATASTROPHIC or INCONCLUSIVE.
        pub verdict: String,
        /// 1 when the verdict is STRICT, else 0.
        pub strict: usize,
        /// The run read.
        pub run_id: String,
        /// The profile it ran at.
        pub profile: String,
        /// The key that signed its bundle.
        pub signer: String,
        /// SHA-256 of its SHA256SUMS (what the signature covers).
        pub sums_sha256: String,
        /// The spec hash it ran under.
        pub spec_hash: String,
    }
}

/// The latest counted, verified run of one bet.
#[derive(Debug, Clone)]
struct Read {
    verdict: Verdict,
    run_id: String,
    profile: String,
    signer: String,
    sums_sha256: String,
    spec_hash: String,
}

/// What every cell reads: per bet, its latest verified counted run, or why
/// there is none.
pub struct Ready {
    reads: BTreeMap<u32, Result<Read, String>>,
}

/// The latest counted run of bet `number` among the bundles under
/// `results_dir` that verify against `keys`; bundles that do not verify, or
/// that hold another bet, are passed over (they never contribute a result).
fn latest_counted(results_dir: &Path, keys: &TrustedKeys, number: u32) -> Result<Read, String> {
    let prefix = format!("{number:02}-");
    let mut dirs: Vec<_> = std::fs::read_dir(results_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .collect();
    dirs.sort();
    let mut found: Option<Read> = None;
    let mut passed_over = Vec::new();
    for dir in dirs.iter().flat_map(|d| results::find_bundles_in(d)) {
        let read = (|| -> anyhow::Result<Option<Read>> {
            let check = results::verify_bundle(&dir, keys)?;
            let manifest = results::read_manifest(&dir)?;
            let verdict = results::read_verdict(&dir)?;
            if manifest.bet != number || verdict.bet != number || verdict.run_id != manifest.run_id {
                anyhow::bail!("holds bet {} run {}", manifest.bet, manifest.run_id);
            }
            if !verdict.counted {
                return Ok(None);
            }
            let sums = std::fs::read(dir.join(results::SUMS))?;
            Ok(Some(Read {
                verdict: verdict.record.verdict,
                run_id: manifest.run_id,
                profile: manifest.profile,
                signer: check.signer,
                sums_sha256: crate::fsutil::sha256_hex(&sums),
                spec_hash: manifest.spec_hash,
            }))
        })();
        match read {
            Ok(Some(r)) => {
                if found.as_ref().is_none_or(|f| f.run_id < r.run_id) {
                    found = Some(r);
                }
            }
            Ok(None) => {}
            Err(e) => passed_over.push(format!("{}: {e:#}", dir.display())),
        }
    }
    found.ok_or_else(|| {
        let why =
            if passed_over.is_empty() { String::new() } else { format!(" (not verified: {})", passed_over.join("; ")) };
        format!(
            "bet {number} has no verified counted bundle under {}{why}: refusing to decide on no evidence",
            results_dir.display()
        )
    })
}

impl Kind for BetResults {
    const NAME: &'static str = "bet-results";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Read other bets' latest counted results from their verified, signed bundles (a bet about bets; no compute).";
    type Params = Params;
    type Factors = Factors;
    type Metrics = ResultMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        if p.bets.is_empty() {
            return Err(ParamProblem::new("bets", "a bet about bets reads at least one bet"));
        }
        Ok(())
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        let keys = TrustedKeys::load(&env.paths.keys_dir())?;
        let dir = env.paths.results_dir();
        Ok(Ready { reads: p.bets.iter().map(|&n| (n, latest_counted(&dir, &keys, n))).collect() })
    }

    /// The SHA256SUMS digest of every bundle read: a new counted run of a
    /// read bet changes the cell keys, so no cached cell outlives it.
    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.reads
            .iter()
            .map(|(n, read)| {
                let v = match read {
                    Ok(r) => format!("{} {}", r.run_id, r.sums_sha256),
                    Err(_) => "none".to_string(),
                };
                (format!("bet-{n:02}"), v)
            })
            .collect()
    }

    fn run(r: &Ready, _cell: &Cell, f: Factors) -> anyhow::Result<ResultMetrics> {
        let _ = f.seed;
        let read = r
            .reads
            .get(&f.bet)
            .ok_or_else(|| anyhow::anyhow!("bet {} is not in the procedure's `bets`", f.bet))?
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let m = read.clone();
        Ok(ResultMetrics {
            verdict: m.verdict.to_string(),
            strict: usize::from(m.verdict == Verdict::Strict),
            run_id: m.run_id,
            profile: m.profile,
            signer: m.signer,
            sums_sha256: m.sums_sha256,
            spec_hash: m.spec_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::kinds::testing::cell;
    use crate::services::{Paths, Silent};
    use crate::table::Value;

    fn env_at(root: &Path) -> Env {
        Env {
            paths: Paths::new(root, Some(std::env::temp_dir().join("bets-test-cache")), None, None),
            profile: "tiny".into(),
            threads: 1,
            progress: Arc::new(Silent),
        }
    }

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn prepare_at(root: &Path, bets: &str) -> Box<dyn crate::kinds::Prepared> {
        let e = crate::kinds::find("bet-results").unwrap();
        e.prepare(&e.parse_params(&format!("bets = {bets}").parse().unwrap()).unwrap(), &env_at(root)).unwrap()
    }

    fn at(bet: i64) -> Cell {
        cell(&[("seed", Value::Int(0)), ("bet", Value::Int(bet))])
    }

    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            let dest = to.join(p.file_name().unwrap());
            if p.is_dir() { copy_tree(&p, &dest) } else { std::fs::copy(&p, &dest).map(|_| ()).unwrap() }
        }
    }

    #[test]
    fn the_latest_counted_verified_bundle_is_read_with_its_signer_and_run() {
        let ready = prepare_at(&repo(), "[60]");
        let row = ready.run_cell(&at(60)).unwrap();
        let run_id = row["run_id"].as_str().unwrap().to_string();
        let latest = results::find_bundles_in(&repo().join("results/60-noise-floor"))
            .into_iter()
            .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
            .max()
            .unwrap();
        assert_eq!(run_id, latest);
        let verdict = results::read_verdict(&repo().join("results/60-noise-floor").join(&run_id)).unwrap();
        assert_eq!(row["verdict"].as_str().unwrap(), verdict.record.verdict.to_string());
        assert_eq!(row["strict"].as_i64().unwrap(), i64::from(verdict.record.verdict == Verdict::Strict));
        assert!(!row["signer"].as_str().unwrap().is_empty());
        assert!(ready.run_cell(&at(61)).is_err(), "61 is not in the procedure's bets");
    }

    #[test]
    fn a_bet_without_a_verified_counted_bundle_refuses_to_decide() {
        // An empty repository: nothing to read.
        let empty = tempfile::tempdir().unwrap();
        let err = prepare_at(empty.path(), "[60]").run_cell(&at(60)).unwrap_err();
        assert!(format!("{err:#}").contains("bet 60 has no verified counted bundle"), "{err:#}");
        // A copy of the real bundles with every verdict of bet 60 tampered
        // with: none verifies, so 60 has no result while 61 still does.
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&repo().join("bets/keys"), &tmp.path().join("bets/keys"));
        for b in ["60-noise-floor", "61-confusion-matrix"] {
            copy_tree(&repo().join("results").join(b), &tmp.path().join("results").join(b));
        }
        for dir in results::find_bundles_in(&tmp.path().join("results/60-noise-floor")) {
            let p = dir.join(results::VERDICT);
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(
                &p,
                text.replacen("\"FAIL\"", "\"STRICT\"", 1).replacen("\"CATASTROPHIC\"", "\"STRICT\"", 1) + " ",
            )
            .unwrap();
        }
        let ready = prepare_at(tmp.path(), "[60, 61]");
        let err = ready.run_cell(&at(60)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bet 60 has no verified counted bundle") && msg.contains("not verified"), "{msg}");
        assert!(ready.run_cell(&at(61)).is_ok());
        // Without trusted keys nothing verifies either.
        let nokeys = tempfile::tempdir().unwrap();
        copy_tree(&repo().join("results/61-confusion-matrix"), &nokeys.path().join("results/61-confusion-matrix"));
        assert!(prepare_at(nokeys.path(), "[61]").run_cell(&at(61)).is_err());
    }

    #[test]
    fn catalogue_spec_runs_at_tiny_on_the_published_results_and_plots() {
        let bet = crate::spec::load(&repo().join("bets/62_retraction.toml")).unwrap();
        assert_eq!(bet.experiment.kind(), "bet-results");
        let plan = bet.plan("tiny").unwrap();
        let ready = bet.experiment.prepare(&plan.params, &env_at(&repo())).unwrap();
        let mut rows = Vec::new();
        for (index, point) in plan.points.iter().enumerate() {
            let c = Cell { index, factors: point.clone(), key: format!("tiny-{index}") };
            let mut row = ready.run_cell(&c).unwrap();
            row.extend(point.clone());
            rows.push(row);
        }
        assert_eq!(rows.len(), 4);
        for p in &bet.spec.plots {
            let opts = crate::report::points_options(p);
            let svg =
                crate::report::plot::metric_by_condition(&rows, &p.x, &p.y, p.series.as_deref(), "t", &opts).unwrap();
            assert_eq!(svg.matches("<circle").count(), rows.len(), "{} by {}", p.y, p.x);
        }
    }

    #[test]
    fn the_meta_bet_is_inconclusive_when_a_read_bet_has_no_verified_result() {
        let empty = tempfile::tempdir().unwrap();
        let bet = crate::spec::load(&repo().join("bets/62_retraction.toml")).unwrap();
        let settings = crate::pipeline::Settings {
            paths: env_at(empty.path()).paths,
            jobs: 1,
            threads: 1,
            shard: None,
            cells: crate::runner::CellCache::new(&empty.path().join("cells")),
            progress: Arc::new(Silent),
            compute: Default::default(),
            observer: None,
        };
        let decided = crate::pipeline::run(&bet, "tiny", &settings).unwrap();
        assert_eq!(decided.record.verdict, Verdict::Inconclusive, "{}", decided.record.reason);
        assert_eq!(decided.exec.counts.ok, 0);
    }
}
