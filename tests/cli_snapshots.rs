//! Snapshots of what a person reads from the CLI: the diagnostics of
//! `bets check` for every invalid and sandbox fixture, `bets register`,
//! `run`, `status`, `verify`, `list` and `report` on a throw-away repo, and
//! the summary and bet pages `bets report` writes.
//!
//! Noise is redacted by filters (times, run-id times, temp paths, key ids);
//! every deterministic value (numbers, verdicts, spec hashes) stays, so a
//! changed message or number fails here. Review changes with `cargo insta
//! review` (or `INSTA_UPDATE=always cargo test --test cli_snapshots` and
//! `git diff`). With `CI` set, a missing or different snapshot fails and
//! nothing is written.

mod common;

use std::path::Path;
use std::process::Output;

use common::{SPEC, TestRepo, code, stderr, stdout};

/// The other cheap simulation bet, copied in and left unregistered.
const SPEC_15: &str = "bets/15_gossip_directory.toml";

/// The fixture folders whose every file `bets check` must refuse.
const FIXTURE_DIRS: [&str; 2] = ["invalid", "sandbox"];

/// `s` as a regex matching itself.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Filters for everything that differs between two runs of the same test:
/// the repo's temp folder, the crate's folder, times, run-id times, durations
/// and the test's own signing key id.
fn settings(repo: &TestRepo) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    // The canonical form first: a temp folder behind a symlink may be shown either way.
    if let Ok(real) = repo.dir.path().canonicalize() {
        s.add_filter(&escape(&real.display().to_string()), "[REPO]");
    }
    s.add_filter(&escape(&repo.dir.path().display().to_string()), "[REPO]");
    s.add_filter(&escape(env!("CARGO_MANIFEST_DIR")), "[CRATE]");
    s.add_filter(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?", "[TIME]");
    s.add_filter(r"\b\d{4}-\d{2}-\d{2}\b", "[DATE]");
    s.add_filter(r"\b\d{8}T\d{6}Z", "[RUN-TIME]");
    s.add_filter(r"\b\d+(\.\d+)?\s?(ns|µs|us|ms|s)\b", "[DURATION]");
    s.add_filter(r"\b[0-9A-F]{16}\b", "[KEY-ID]");
    s
}

/// What a person sees of one command: its exit code, stdout and stderr.
fn shown(out: &Output) -> String {
    format!("exit code: {}\n--- stdout\n{}--- stderr\n{}", code(out), stdout(out), stderr(out))
}

/// Run `bets ARGS` in `repo` and snapshot what it shows under `name`.
fn snap_cmd(base: &insta::Settings, repo: &TestRepo, name: &str, args: &[&str]) {
    let out = repo.run(args);
    let mut s = base.clone();
    s.set_description(format!("bets {}", args.join(" ")));
    s.bind(|| insta::assert_snapshot!(name, shown(&out)));
}

/// Snapshot the file `rel` of `repo` under `name`.
fn snap_file(base: &insta::Settings, repo: &TestRepo, name: &str, rel: &str) {
    let text = std::fs::read_to_string(repo.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let mut s = base.clone();
    s.set_description(rel);
    s.bind(|| insta::assert_snapshot!(name, text));
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The snapshot name of a fixture: `check_<folder>_<file stem>`.
fn check_name(dir: &str, file: &Path) -> String {
    format!("check_{dir}_{}", file.file_stem().unwrap().to_string_lossy())
}

fn fixtures(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(crate_dir().join("tests/fixtures").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn check_diagnostics_of_every_invalid_and_sandbox_fixture_match_their_snapshots() {
    let repo = TestRepo::new();
    let base = settings(&repo);
    let mut names = std::collections::BTreeSet::new();
    for dir in FIXTURE_DIRS {
        let files = fixtures(dir);
        assert!(!files.is_empty(), "no fixtures in tests/fixtures/{dir}");
        for file in files {
            // Copied to the same place in the repo and named relative to it,
            // as a person would, so each message names the same path everywhere.
            let rel = file.strip_prefix(crate_dir()).unwrap().to_string_lossy().into_owned();
            std::fs::create_dir_all(repo.path(&rel).parent().unwrap()).unwrap();
            std::fs::copy(&file, repo.path(&rel)).unwrap();
            let out = repo.run(&["check", &rel]);
            assert_eq!(code(&out), 2, "{rel} must be refused:\n{}", shown(&out));
            let name = check_name(dir, &file);
            let mut s = base.clone();
            s.set_description(format!("bets check {rel}"));
            s.bind(|| insta::assert_snapshot!(name.as_str(), shown(&out)));
            names.insert(name);
        }
    }
    // A snapshot whose fixture is gone is stale: insta alone would keep it.
    let prefix = format!("{}__check_", module_path!());
    for e in std::fs::read_dir(crate_dir().join("tests/snapshots")).unwrap() {
        let f = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(name) = f.strip_suffix(".snap").and_then(|n| n.strip_prefix(&prefix)) {
            assert!(names.contains(&format!("check_{name}")), "tests/snapshots/{f} has no fixture");
        }
    }
}

#[test]
fn register_run_status_verify_and_report_of_a_real_bet_match_their_snapshots() {
    let repo = TestRepo::new();
    repo.add_spec(SPEC_15);
    let base = settings(&repo);
    snap_cmd(&base, &repo, "lifecycle_1_register", &["register", SPEC]);
    snap_cmd(&base, &repo, "lifecycle_2_run_tiny", &["run", SPEC, "--profile", "tiny"]);
    snap_cmd(&base, &repo, "lifecycle_3_status", &["status"]);
    snap_cmd(&base, &repo, "lifecycle_3_status_json", &["status", "--json"]);
    snap_cmd(&base, &repo, "lifecycle_4_verify", &["verify"]);
    snap_cmd(&base, &repo, "lifecycle_5_report", &["report"]);
    snap_file(&base, &repo, "report_summary_md", "reports/SUMMARY.md");
    snap_file(&base, &repo, "report_bet_14_md", "reports/bets/14-royalty-math.md");
    snap_file(&base, &repo, "report_bet_15_unregistered_md", "reports/bets/15-gossip-directory.md");
}

#[test]
fn list_of_bets_and_of_experiment_kinds_match_their_snapshots() {
    let repo = TestRepo::new();
    repo.add_spec(SPEC_15);
    let base = settings(&repo);
    snap_cmd(&base, &repo, "list", &["list"]);
    snap_cmd(&base, &repo, "list_json", &["list", "--json"]);
    snap_cmd(&base, &repo, "list_experiments", &["list", "--experiments"]);
    snap_cmd(&base, &repo, "list_experiments_json", &["list", "--experiments", "--json"]);
}
