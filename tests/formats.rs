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
    // Every family's baseline file (`baseline-tiny.json`, `baseline-tiny.<kernels>.json`).
    for bet in std::fs::read_dir(paths.results_dir()).unwrap() {
        let dir = bet.unwrap().path();
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for f in files {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with(&format!("baseline-{}", baseline::CI_PROFILE)) && name.ends_with(".json")) {
                continue;
            }
            let b = baseline::read(&path).unwrap_or_else(|e| panic!("{e}")).expect("the file exists");
            assert_eq!(b.format, baseline::BASELINE_FORMAT, "{}", path.display());
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

mod common;

use common::{TestRepo, code, stderr};

#[test]
fn a_ledger_line_of_an_unknown_version_stops_every_command_with_exit_3_naming_it() {
    let repo = TestRepo::new();
    repo.ok(&["register", common::SPEC]);
    let path = Paths::new(repo.dir.path(), None, None, None).ledger();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"format\":2,", "\"format\":999,", 1)).unwrap();
    for args in [&["verify"][..], &["run", common::SPEC, "--profile", "tiny"], &["status"]] {
        let out = repo.run(args);
        assert_eq!(code(&out), 3, "bets {args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("line 1: ledger entry has format version 999, which this build does not read (it reads versions 1 and 2)"),
            "bets {args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_signed_bundle_of_an_unknown_version_fails_verify_and_report_naming_it() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let manifest = bundle.join(bets::results::MANIFEST);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let newer = text.replacen("\"format\": 2,", "\"format\": 999,", 1);
    assert_ne!(newer, text);
    std::fs::write(&manifest, &newer).unwrap();
    // Re-sign it as a newer harness would have: only the version stands out.
    let sums_path = bundle.join(bets::results::SUMS);
    let sums: String = std::fs::read_to_string(&sums_path)
        .unwrap()
        .lines()
        .map(|l| match l.split_once("  ") {
            Some((_, name)) if name == bets::results::MANIFEST => {
                format!("{}  {name}\n", bets::fsutil::sha256_hex(newer.as_bytes()))
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&sums_path, &sums).unwrap();
    let key = Paths::new(repo.dir.path(), None, None, Some(repo.path("home"))).secret_key().to_path_buf();
    let signer = bets::signing::Signer::load(&key).unwrap();
    let sig = signer.sign(sums.as_bytes(), "a newer harness").unwrap();
    std::fs::write(bundle.join(bets::results::SUMS_SIG), sig).unwrap();
    let expected = "manifest.json has format version 999, which this build does not read (it reads versions 1 and 2)";
    for args in [&["verify"][..], &["report"]] {
        let out = repo.run(args);
        assert_eq!(code(&out), 3, "bets {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "bets {args:?}: {}", stderr(&out));
    }
}
