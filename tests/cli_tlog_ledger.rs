//! The ledger as an RFC 6962 log: every append publishes a signed
//! checkpoint, and whoever kept an older checkpoint can check that today's
//! ledger extends it, with proofs the plain verifiers accept. A truncated
//! or forked ledger is caught.

mod common;

use common::{SPEC, TestRepo, code, stderr, stdout};

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("no `{name}` in {out}"))
}

/// Two counted runs (ledger of 3 entries), and a copy of the checkpoint
/// as a witness would keep it.
fn two_runs_and_a_held_checkpoint(repo: &TestRepo) -> std::path::PathBuf {
    repo.registered_run();
    repo.run_tiny(&[]);
    let held = repo.path("held.checkpoint");
    std::fs::copy(repo.path("bets/ledger.checkpoint"), &held).unwrap();
    held
}

#[test]
fn every_append_publishes_a_signed_checkpoint_of_the_whole_ledger() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let cp = std::fs::read_to_string(repo.path("bets/ledger.checkpoint")).unwrap();
    let lines: Vec<&str> = cp.lines().collect();
    assert!(lines[0].starts_with("bets-ledger/"), "{cp}");
    assert_eq!(lines[1], "1");
    assert_eq!((lines[3], lines[4].starts_with("— bets-")), ("", true), "{cp}");
    repo.run_tiny(&[]);
    let printed = repo.ok(&["tlog", "checkpoint"]);
    assert_eq!(printed.lines().nth(1), Some("2"), "{printed}");
    assert!(repo.ok(&["verify"]).contains("ok  bets/ledger.checkpoint (signed, covers all 2 entries)"));
}

#[test]
fn an_old_checkpoint_is_extended_with_a_proof_the_plain_verifier_accepts() {
    let repo = TestRepo::new();
    repo.registered_run();
    let old = repo.path("old.checkpoint");
    std::fs::copy(repo.path("bets/ledger.checkpoint"), &old).unwrap();
    repo.run_tiny(&[]);
    repo.run_tiny(&[]);
    let out = repo.ok(&["tlog", "consistency", "--old", old.to_str().unwrap()]);
    assert!(out.contains("the ledger (4 entries) extends the checkpoint of 2 entries"), "{out}");
    let args = ["size1", "size2", "root1", "root2", "proof"].map(|f| field(&out, f).to_string());
    let verified = repo.ok(&[
        "tlog",
        "verify-consistency",
        "--size1",
        &args[0],
        "--size2",
        &args[1],
        "--root1",
        &args[2],
        "--root2",
        &args[3],
        "--proof",
        &args[4],
    ]);
    assert!(verified.starts_with("consistency proof holds"), "{verified}");
    // And every entry's inclusion proof checks out against the current root.
    for index in 0..4 {
        let p = repo.ok(&["tlog", "prove-inclusion", "--index", &index.to_string()]);
        let a = ["leaf-hash", "index", "size", "root", "proof"].map(|f| field(&p, f).to_string());
        let out = repo.run(&[
            "tlog",
            "verify-inclusion",
            "--leaf-hash",
            &a[0],
            "--index",
            &a[1],
            "--size",
            &a[2],
            "--root",
            &a[3],
            "--proof",
            &a[4],
        ]);
        assert_eq!(code(&out), 0, "entry {index}: {}", stderr(&out));
    }
}

#[test]
fn a_truncated_ledger_is_caught_by_the_checkpoint_and_by_an_old_copy_of_it() {
    let repo = TestRepo::new();
    let held = two_runs_and_a_held_checkpoint(&repo);
    repo.drop_last_ledger_lines(1);
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("counts 3 entries but the ledger holds 2: the ledger was truncated"),
        "{}",
        stderr(&out)
    );
    let out = repo.run(&["tlog", "consistency", "--old", held.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
}

#[test]
fn a_rewritten_history_is_caught_by_whoever_kept_an_older_checkpoint() {
    let repo = TestRepo::new();
    let held = two_runs_and_a_held_checkpoint(&repo);
    // The key holder cuts the last run and appends another in its place:
    // the chain and the new checkpoint verify, but the history forked.
    repo.drop_last_ledger_lines(1);
    repo.run_tiny(&[]);
    let printed = repo.ok(&["tlog", "checkpoint"]);
    assert_eq!(printed.lines().nth(1), Some("3"), "same size as the held checkpoint: {printed}");
    let out = repo.run(&["tlog", "consistency", "--old", held.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("the history was rewritten (a fork)"), "{}", stderr(&out));
}

#[test]
fn a_checkpoint_file_that_is_missing_or_tampered_fails_verification() {
    let repo = TestRepo::new();
    repo.registered_run();
    let path = repo.path("bets/ledger.checkpoint");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replacen("\n2\n", "\n1\n", 1)).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    std::fs::remove_file(&path).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("cannot read the ledger's signed checkpoint"), "{}", stderr(&out));
    repo.ok(&["tlog", "checkpoint", "--write"]);
    repo.ok(&["verify"]);
}
