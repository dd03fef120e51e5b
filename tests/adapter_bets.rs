//! Every adapter bet of the catalogue (10, 37, 46, 49, 54, 55, 60, 61) runs
//! at the `tiny` profile end to end on the real pinned corpus: the grid
//! plans, every cell trains and evaluates, the row holds the declared
//! metrics, and the registered criteria decide a verdict.

use std::path::Path;
use std::sync::Arc;

use bets::criteria::Verdict;
use bets::pipeline::{self, Decided, Settings};
use bets::runner::{CellCache, CellEvent};
use bets::services::{Paths, Silent};

/// Settings for a run at tiny with caches under `dir`.
fn settings(dir: &Path, jobs: usize) -> Settings {
    Settings {
        paths: Paths::new(dir, Some(dir.to_path_buf()), None, None),
        jobs,
        threads: 1,
        shard: None,
        cells: CellCache::new(&dir.join("cells")),
        progress: Arc::new(Silent),
        compute: Default::default(),
        observer: None,
    }
}

const ADAPTER_BETS: &[&str] = &[
    "10_specialist_per_person.toml",
    "37_norm_only_finetune.toml",
    "46_norm_replication.toml",
    "49_adapter_shootout.toml",
    "54_adapter_averaging.toml",
    "55_adapter_mixture.toml",
    "60_noise_floor.toml",
    "61_confusion_matrix.toml",
];

#[test]
fn every_adapter_bet_runs_at_tiny_and_is_decided() {
    let work = tempfile::tempdir().unwrap();
    let settings = settings(work.path(), 2);
    for name in ADAPTER_BETS {
        let bet = bets::spec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bets").join(name)).unwrap();
        let Decided { plan, exec, record, .. } = pipeline::run(&bet, "tiny", &settings).unwrap();
        assert_eq!(exec.counts.ok, plan.points.len(), "{name}: every cell finishes: {:?}", exec.rows);
        for row in &exec.rows {
            for m in bet.experiment.metrics() {
                assert!(row.contains_key(m.name), "{name}: metric {} missing", m.name);
            }
            let ppl = row["ppl"].as_f64().unwrap();
            assert!(ppl.is_finite() && ppl > 1.0 && ppl < 256.0, "{name}: ppl {ppl} is a per-byte perplexity");
        }
        assert_ne!(record.verdict, Verdict::Inconclusive, "{name}: {}", record.reason);
    }
}

#[test]
fn a_norm_only_adapter_leaves_the_base_perplexity_column_unchanged_across_arms() {
    // base_ppl is the bare base on the same text: identical for every arm of
    // one (user, slice), which is what makes `gain` comparable across arms.
    let work = tempfile::tempdir().unwrap();
    let bet = bets::spec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bets/46_norm_replication.toml")).unwrap();
    let exec = pipeline::run(&bet, "tiny", &settings(work.path(), 1)).unwrap().exec;
    let base: Vec<f64> = exec.rows.iter().map(|r| r["base_ppl"].as_f64().unwrap()).collect();
    assert!(base.windows(2).all(|w| w[0] == w[1]), "{base:?}");
    let bytes: Vec<i64> = exec
        .rows
        .iter()
        .filter(|r| r["arm"].as_str() == Some("norm-only"))
        .map(|r| r["adapter_bytes"].as_i64().unwrap())
        .collect();
    let gains = exec.rows.iter().find(|r| r["arm"].as_str() == Some("norm-only")).unwrap()["trainable_params"]
        .as_i64()
        .unwrap();
    assert!(bytes.iter().all(|b| *b <= 4 * gains + 512), "norm-only files {bytes:?} for {gains} gains");
}

#[test]
fn a_rerun_of_a_finished_adapter_bet_recomputes_no_cell() {
    // Float metrics (ppl, bpb, gain) must read back from the cache bit for
    // bit, or a resumed sweep silently recomputes finished cells.
    let work = tempfile::tempdir().unwrap();
    let settings = settings(work.path(), 2);
    for name in ["49_adapter_shootout.toml", "61_confusion_matrix.toml"] {
        let bet = bets::spec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("bets").join(name)).unwrap();
        let first = pipeline::run(&bet, "tiny", &settings).unwrap();
        let (plan, first) = (first.plan, first.exec);
        assert!(first.events.iter().all(|e| matches!(e, CellEvent::Computed(_))), "{name}: {:?}", first.events);
        let again = pipeline::run(&bet, "tiny", &settings).unwrap().exec;
        let recomputed: Vec<_> = again.events.iter().filter(|e| !matches!(e, CellEvent::Cached(_))).collect();
        assert_eq!(recomputed, Vec::<&CellEvent>::new(), "{name}: every finished cell is reused");
        assert_eq!(again.events.len(), plan.points.len());
        assert_eq!(bits(&again.rows), bits(&first.rows), "{name}: the cached rows are the computed ones, bit for bit");
    }
}

/// Rows with every float as its bit pattern (NaN metrics compare equal to themselves).
fn bits(rows: &[bets::table::Row]) -> Vec<Vec<(String, String)>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|(k, v)| {
                    let shown = match v {
                        bets::table::Value::Float(f) => format!("f64:{:016x}", f.to_bits()),
                        other => format!("{other:?}"),
                    };
                    (k.clone(), shown)
                })
                .collect()
        })
        .collect()
}
