//! Spec SQL is untrusted: quantities and criteria reach only the tables the
//! harness registers. Each refused construct has a fixture that `bets check`
//! rejects with exit 2, naming the file, the key and the construct; and no
//! refusal echoes the contents of a file.

mod common;

use common::{SPEC, TestRepo, code, stderr, stdout};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sandbox").join(name)
}

fn assert_refused(name: &str, needles: &[&str]) {
    let repo = TestRepo::new();
    let out = repo.run(&["check", fixture(name).to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{name}: {err}");
    assert!(err.contains(name), "{name}: the error names the file: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: expected `{n}` in:\n{err}");
    }
}

#[test]
fn read_csv_is_refused_at_check() {
    assert_refused("81_read_csv.toml", &["quantities.leak", "table function `read_csv("]);
}

#[test]
fn read_parquet_is_refused_at_check() {
    assert_refused("82_read_parquet.toml", &["quantities.leak", "table function `read_parquet("]);
}

#[test]
fn read_json_is_refused_at_check() {
    assert_refused("83_read_json.toml", &["quantities.leak", "table function `read_json("]);
}

#[test]
fn read_ipc_is_refused_at_check() {
    assert_refused("84_read_ipc.toml", &["quantities.leak", "table function `read_ipc("]);
}

#[test]
fn a_table_the_harness_did_not_register_is_refused() {
    assert_refused("85_unregistered_table.toml", &["quantities.leak", "unknown table `ledger`", "`cells`"]);
}

#[test]
fn a_file_path_used_as_a_table_is_refused() {
    assert_refused("86_path_as_table.toml", &["quantities.leak", "file path", "/etc/hostname"]);
}

#[test]
fn a_file_path_string_used_as_a_table_is_refused() {
    assert_refused("80_path_string_as_table.toml", &["quantities.leak", "file path", "'/etc/hostname'"]);
}

#[test]
fn a_criterion_that_cannot_fail_is_refused() {
    assert_refused("87_constant_criterion.toml", &["criteria.strict", "`1 = 1`", "names no quantity"]);
}

#[test]
fn a_join_that_can_blow_up_is_refused() {
    assert_refused("88_cross_join.toml", &["quantities.pairs", "6250000 rows", "over the limit"]);
}

#[test]
fn a_criterion_cannot_read_a_file_through_a_subquery() {
    assert_refused("89_leaky_criterion.toml", &["criteria.strict", "table function `read_csv("]);
}

/// A throw-away repo whose bet 14 has one quantity, `leak`, with this SQL.
fn hostile_repo(sql: &str) -> (TestRepo, String) {
    let repo = TestRepo::new();
    let spec = format!(
        "number = 14\nslug = \"royalty-math\"\ntitle = \"Hostile\"\nsection = \"operating-layer\"\n\
         hypothesis = \"Receipts conserve fees.\"\nclaim = \"infrastructure\"\n\n[procedure]\n\
         experiment = \"royalty-math\"\n\n[grid]\nseed = [0]\n\n[quantities]\nleak = {}\n\n\
         [criteria]\nstrict = \"leak = 0\"\n",
        toml::Value::String(sql.to_string())
    );
    std::fs::write(repo.path(SPEC), spec).unwrap();
    (repo, SPEC.to_string())
}

#[test]
fn the_signing_key_cannot_be_read_by_a_spec_and_no_message_echoes_it() {
    let repo = TestRepo::new();
    repo.ok(&["keygen"]);
    let key_file = repo.path("home/.config/bets/bets.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let secret_line = key.lines().nth(1).unwrap().to_string();
    let sql = format!("SELECT MAX(\"untrusted comment: bets secret key\") FROM read_csv('{}')", key_file.display());
    let (hostile, spec) = hostile_repo(&sql);
    std::fs::create_dir_all(hostile.path("home/.config/bets")).unwrap();
    std::fs::copy(&key_file, hostile.path("home/.config/bets/bets.key")).unwrap();
    for args in [
        vec!["check", spec.as_str()],
        vec!["register", spec.as_str()],
        vec!["run", spec.as_str(), "--exploratory", "--profile", "tiny"],
    ] {
        let out = hostile.run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.contains("read_csv"), "{args:?} names the construct: {all}");
        assert!(!all.contains(&secret_line), "{args:?} leaked the key: {all}");
    }
    assert!(!hostile.path("results").exists(), "nothing was written");
}

#[test]
fn no_refusal_echoes_the_contents_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let canary = "CANARY-7f3a9c-first-line";
    let file = dir.path().join("secret.csv");
    std::fs::write(&file, format!("{canary}\n1\n")).unwrap();
    for sql in [
        format!("SELECT * FROM read_csv('{}')", file.display()),
        format!("SELECT COUNT(*) FROM \"{}\"", file.display()),
        format!("SELECT COUNT(*) FROM cells WHERE seed IN (SELECT * FROM read_csv('{}'))", file.display()),
    ] {
        let (repo, spec) = hostile_repo(&sql);
        let out = repo.run(&["check", &spec]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{sql}: {err}");
        assert!(err.contains("quantities.leak"), "{err}");
        assert!(!err.contains(canary), "the file's first line leaked: {err}");
    }
}
