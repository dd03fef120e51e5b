//! Every versioned file committed to the repository reads with this build's
//! version checks: the ledger, every bundle's manifest and verdict, the CI
//! baselines and the ledger heads the reports recorded.

use std::path::Path;

use bets::report::baseline;
use bets::services::Paths;

fn paths() -> Paths {
    Paths::new(Path::new(env!("CARGO_MANIFEST_DIR")), None, None, None)
}

#[test]
fn the_committed_ledger_bundles_baselines_and_reports_are_of_versions_this_build_reads() {
    let paths = paths();
    let ledger = bets::registry::Ledger::open(&paths.ledger()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!ledger.entries.is_empty());
    assert!(ledger.entries.iter().all(|e| bets::registry::LEDGER_FORMATS.contains(&e.format)));
    let bundles = bets::results::find_bundles(&paths.results_dir());
    assert!(!bundles.is_empty());
    for b in &bundles {
        let m = bets::results::read_manifest(b).unwrap_or_else(|e| panic!("{e}"));
        let v = bets::results::read_verdict(b).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.run_id, v.run_id, "{}", b.display());
    }
    let mut baselines = 0;
    for bet in std::fs::read_dir(paths.results_dir()).unwrap() {
        let path = bet.unwrap().path().join(baseline::file_name(baseline::CI_PROFILE));
        if let Some(b) = baseline::read(&path).unwrap_or_else(|e| panic!("{e}")) {
            assert_eq!(b.format, baseline::BASELINE_FORMAT);
            baselines += 1;
        }
    }
    assert!(baselines > 0);
    let heads = bets::report::recorded_heads(&paths.reports_dir());
    assert!(!heads.is_empty());
    for h in heads {
        let (path, head) = h.unwrap_or_else(|e| panic!("{e}"));
        assert!(ledger.contains(&head), "{}", path.display());
    }
}
