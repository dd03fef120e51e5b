//! The life of a bet through the CLI: register, run, verify, resume, shard,
//! merge, amend; and every way of tampering with what was written.

mod common;

use common::{SPEC, TestRepo, code, stderr, stdout};

#[test]
fn a_registered_bet_runs_to_a_signed_bundle_that_verifies() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    for f in ["manifest.json", "cells.csv", "cells.parquet", "verdict.json", "SHA256SUMS", "SHA256SUMS.minisig"] {
        assert!(bundle.join(f).is_file(), "{f} missing");
    }
    assert!(std::fs::read_dir(bundle.join("plots")).unwrap().count() >= 1, "at least one plot");
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(verdict["counted"], true);
    assert!(["STRICT", "LENIENT", "FAIL", "CATASTROPHIC"].contains(&verdict["verdict"].as_str().unwrap()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["ledger"]["seq"], 0);
    assert_eq!(manifest["profile"], "tiny");
    let out = repo.ok(&["verify"]);
    assert!(out.contains("ok  bets/ledger.jsonl (2 entries"), "{out}");
    assert!(out.contains("ok  the record (1 recorded run(s)"), "{out}");
    let ledger = std::fs::read_to_string(repo.path("bets/ledger.jsonl")).unwrap();
    let run: serde_json::Value = serde_json::from_str(ledger.lines().nth(1).unwrap()).unwrap();
    assert_eq!(run["kind"], "runs");
    assert_eq!(run["runs"][0]["run_id"], manifest["run_id"]);
    let sums = std::fs::read(bundle.join("SHA256SUMS")).unwrap();
    assert_eq!(run["runs"][0]["sums_sha256"], bets::fsutil::sha256_hex(&sums));
    assert_eq!(manifest["ledger_head"]["seq"], 0, "the head the run saw: its registration");
    assert!(out.contains("ok  results/14-royalty-math/"), "{out}");
}

#[test]
fn the_same_spec_profile_and_threads_give_byte_identical_cells() {
    let repo = TestRepo::new();
    let first = repo.registered_run();
    std::fs::remove_dir_all(repo.path("cache")).unwrap();
    let second = repo.run_tiny(&[]);
    assert_ne!(first, second, "a rerun is a new run id");
    assert_eq!(std::fs::read(first.join("cells.csv")).unwrap(), std::fs::read(second.join("cells.csv")).unwrap());
}

#[test]
fn a_rerun_reuses_cached_cells_and_a_corrupted_entry_is_recomputed() {
    let repo = TestRepo::new();
    let first = repo.registered_run();
    let second = repo.run_tiny(&[]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(second.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["cached_cells"], m["cells"]["ok"], "every cell came from the cache");
    // Corrupt one cache entry: flip a digit inside its row.
    let entry = walk(&repo.path("cache/cells")).into_iter().next().unwrap();
    let text = std::fs::read_to_string(&entry).unwrap();
    let pos = text.find("\"row\"").unwrap()
        + text[text.find("\"row\"").unwrap()..].find(|c: char| c.is_ascii_digit()).unwrap();
    let mut bytes = text.into_bytes();
    bytes[pos] = if bytes[pos] == b'9' { b'1' } else { bytes[pos] + 1 };
    std::fs::write(&entry, bytes).unwrap();
    let out = repo.cmd(&["run", SPEC, "--profile", "tiny"]).env("RUST_LOG", "warn").output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("corrupted cache entry"), "{}", stderr(&out));
    let third =
        repo.path(stdout(&out).lines().find(|l| l.starts_with("bundle: ")).unwrap().trim_start_matches("bundle: "));
    assert_eq!(std::fs::read(first.join("cells.csv")).unwrap(), std::fs::read(third.join("cells.csv")).unwrap());
}

#[test]
fn shards_merge_into_the_same_table_and_verdict_as_one_run() {
    let repo = TestRepo::new();
    let whole = repo.registered_run();
    std::fs::remove_dir_all(repo.path("cache")).unwrap();
    let s1 = repo.run_tiny(&["--shard", "1/2"]);
    let s2 = repo.run_tiny(&["--shard", "2/2"]);
    let v1: serde_json::Value = serde_json::from_slice(&std::fs::read(s1.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(v1["verdict"], "INCONCLUSIVE", "a lone shard has missing cells");
    assert_eq!(v1["counted"], false);
    let out = repo.ok(&["merge", "results/14-royalty-math"]);
    let merged = repo.path(out.lines().find(|l| l.starts_with("bundle: ")).unwrap().trim_start_matches("bundle: "));
    assert_ne!(merged, s2);
    assert_eq!(std::fs::read(whole.join("cells.csv")).unwrap(), std::fs::read(merged.join("cells.csv")).unwrap());
    let vw: serde_json::Value = serde_json::from_slice(&std::fs::read(whole.join("verdict.json")).unwrap()).unwrap();
    let vm: serde_json::Value = serde_json::from_slice(&std::fs::read(merged.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(vw["verdict"], vm["verdict"]);
    assert_eq!(vw["quantities"], vm["quantities"]);
    repo.ok(&["verify"]);
}

#[test]
fn a_spec_changed_after_registration_is_refused_with_a_diff_until_amended() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let path = repo.path(SPEC);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("hypothesis = \"\"\"", "hypothesis = \"\"\"Amended. ")).unwrap();
    let out = repo.run(&["run", SPEC, "--profile", "tiny"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("differs from its registration"), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed hypothesis:"), "{}", stderr(&out));
    // Exploratory runs go ahead, marked and not counted.
    let bundle = repo.run_tiny(&["--exploratory"]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("verdict.json")).unwrap()).unwrap();
    assert_eq!((v["exploratory"].as_bool(), v["counted"].as_bool()), (Some(true), Some(false)));
    let out = repo.run(&["amend", SPEC, "--reason", "clarify the hypothesis"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let b = repo.run_tiny(&[]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["ledger"]["seq"], 1);
    assert_eq!(m["ledger"]["kind"], "amend");
    let status = repo.ok(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(s[0]["amendments"], 1);
    assert_eq!(s[0]["registration"], "registered");
}

#[test]
fn an_unregistered_spec_is_refused() {
    let repo = TestRepo::new();
    let out = repo.run(&["run", SPEC, "--profile", "tiny"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("is not registered"), "{}", stderr(&out));
}

#[test]
fn registering_twice_is_a_no_op_and_amending_an_unchanged_spec_is_refused() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    assert!(repo.ok(&["register", SPEC]).contains("already registered"));
    let out = repo.run(&["amend", SPEC, "--reason", "nothing"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("nothing to amend"));
    assert_eq!(std::fs::read_to_string(repo.path("bets/ledger.jsonl")).unwrap().lines().count(), 1);
}

#[test]
fn an_edited_ledger_entry_fails_verification_naming_the_line() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let ledger = repo.path("bets/ledger.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    std::fs::write(&ledger, text.replacen("\"bet\":14", "\"bet\":15", 1)).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("ledger.jsonl line 1"), "{}", stderr(&out));
    // and nothing can be appended to a broken chain
    let out = repo.run(&["run", SPEC, "--profile", "tiny"]);
    assert_eq!(code(&out), 3);
}

#[test]
fn a_flipped_result_byte_fails_verification_naming_the_file() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let csv = bundle.join("cells.csv");
    let mut bytes = std::fs::read(&csv).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&csv, bytes).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("cells.csv: SHA-256 does not match"), "{}", stderr(&out));
}

#[test]
fn a_file_added_to_a_bundle_fails_verification() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    std::fs::write(bundle.join("plots/extra.svg"), "<svg/>").unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("extra.svg: not listed"), "{}", stderr(&out));
}

#[test]
fn a_signature_from_an_untrusted_key_fails_verification() {
    let repo = TestRepo::new();
    repo.registered_run();
    for k in std::fs::read_dir(repo.path("bets/keys")).unwrap() {
        std::fs::remove_file(k.unwrap().path()).unwrap();
    }
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("which is not trusted"), "{}", stderr(&out));
}

#[test]
fn a_missing_key_file_is_a_named_error_and_nothing_is_written() {
    let repo = TestRepo::new();
    let out = repo.cmd(&["register", SPEC]).env("BETS_KEY", repo.path("nowhere.key")).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no signing key at"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere.key"));
    assert!(!repo.path("bets/ledger.jsonl").exists());
}

#[test]
fn a_second_run_of_the_same_bet_is_refused_by_the_lock() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let dir = repo.path("results/14-royalty-math");
    std::fs::create_dir_all(&dir).unwrap();
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".run.lock")).unwrap();
    lock.lock().unwrap();
    let out = repo.run(&["run", SPEC, "--profile", "tiny"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    drop(lock);
    repo.run_tiny(&[]);
}

#[test]
fn expect_turns_a_missed_verdict_into_exit_4() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    // Bet 14 at tiny is STRICT: it meets `strict`, and misses `catastrophic`.
    let out = repo.run(&["run", SPEC, "--profile", "tiny", "--expect", "strict"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("verdict: STRICT"));
    let out = repo.run(&["run", SPEC, "--profile", "tiny", "--expect", "catastrophic"]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("verdict STRICT does not meet --expect CATASTROPHIC"), "{}", stderr(&out));
    let out = repo.run(&["run", SPEC, "--profile", "tiny", "--expect", "sure"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn a_deleted_counted_bundle_fails_verification_naming_it() {
    let repo = TestRepo::new();
    repo.registered_run();
    let newest = repo.run_tiny(&[]);
    repo.ok(&["verify"]);
    std::fs::remove_dir_all(&newest).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let name = newest.file_name().unwrap().to_str().unwrap();
    assert!(stderr(&out).contains(name) && stderr(&out).contains("the bundle is missing"), "{}", stderr(&out));
    // `status` reads the last verdict from the record, not from what is left on disk.
    let s: serde_json::Value = serde_json::from_str(&repo.ok(&["status", "--json"])).unwrap();
    assert_eq!(s[0]["last_run"], name);
    assert_eq!(s[0]["missing_bundles"], 1);
    assert_eq!((s[0]["runs"].as_u64(), s[0]["recorded_runs"].as_u64()), (Some(1), Some(2)));
    assert!(repo.ok(&["status"]).contains("1 recorded bundle(s) missing"));
}

#[test]
fn a_bundle_swapped_under_another_run_id_fails_verification() {
    let repo = TestRepo::new();
    let first = repo.registered_run();
    let second = repo.run_tiny(&[]);
    std::fs::remove_dir_all(&first).unwrap();
    std::fs::rename(&second, &first).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not its run id"), "{}", stderr(&out));
}

#[test]
fn a_truncated_ledger_fails_verification_and_a_removed_registration_too() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    // The run entry cut away: the counted bundle is no longer on the record.
    repo.drop_last_ledger_lines(1);
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("no ledger run entry records"), "{}", stderr(&out));
    // The registration cut away as well: the bundle names an entry that is gone.
    repo.drop_last_ledger_lines(1);
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    assert!(stderr(&out).contains(bundle.file_name().unwrap().to_str().unwrap()), "{}", stderr(&out));
}

#[test]
fn a_ledger_cut_back_past_what_a_bundle_or_report_saw_is_caught_by_its_head() {
    let repo = TestRepo::new();
    repo.registered_run(); // seq 0 register, seq 1 its run
    let second = repo.run_tiny(&[]); // saw head seq 1; seq 2 its run
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(second.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["ledger_head"]["seq"], 1);
    repo.ok(&["report"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path("reports/SUMMARY.json")).unwrap()).unwrap();
    assert_eq!(summary["ledger_head"]["seq"], 2);
    repo.drop_last_ledger_lines(2);
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    let name = second.file_name().unwrap().to_str().unwrap();
    assert!(err.lines().any(|l| l.contains(name) && l.contains("no longer in the chain")), "{err}");
    assert!(err.lines().any(|l| l.contains("reports/SUMMARY.json") && l.contains("no longer in the chain")), "{err}");
}

#[test]
fn record_runs_puts_an_unrecorded_counted_bundle_on_the_record_with_a_reason() {
    let repo = TestRepo::new();
    repo.registered_run();
    repo.drop_last_ledger_lines(1);
    assert_eq!(code(&repo.run(&["verify"])), 3);
    let out = repo.run(&["record-runs", "--reason", ""]);
    assert_eq!(code(&out), 2, "a reason is required");
    let out = repo.ok(&["record-runs", "--reason", "written before run entries existed"]);
    assert!(out.contains("put 1 run(s) on the record"), "{out}");
    repo.ok(&["verify"]);
    let ledger = std::fs::read_to_string(repo.path("bets/ledger.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(ledger.lines().last().unwrap()).unwrap();
    assert_eq!(last["reason"], "written before run entries existed");
    assert!(repo.ok(&["record-runs", "--reason", "again"]).contains("already on the record"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
