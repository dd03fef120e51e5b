//! `bets regress` end to end: reruns of published bets at profile tiny
//! against committed baselines, `--accept`, drifts and tolerance.

mod common;

use common::{TestRepo, code, stderr, stdout};

/// Bet 14's baseline for this machine's gemm kernels (the file `--accept` writes).
fn baseline_file() -> String {
    let name = bets::report::baseline::file_name("tiny", bets::engine::gemm_kernels());
    format!("results/14-royalty-math/{name}")
}

/// The name and value of the largest integer quantity of a baseline (a
/// count of receipts, whatever the spec calls it).
fn largest_count(b: &serde_json::Value) -> (String, i64) {
    b["quantities"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| v.as_i64().map(|v| (k.clone(), v)))
        .max_by_key(|(_, v)| *v)
        .expect("an integer quantity")
}

fn entries(repo: &TestRepo) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.path("results/14-royalty-math"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn nothing_is_published_so_nothing_regresses() {
    let repo = TestRepo::new();
    let out = repo.ok(&["regress"]);
    assert!(out.contains("nothing to regress"), "{out}");
}

#[test]
fn a_missing_baseline_is_an_error_that_says_to_accept() {
    let repo = TestRepo::new();
    repo.registered_run();
    let out = repo.run(&["regress"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("run `bets regress --accept`"), "{}", stderr(&out));
    assert!(stdout(&out).contains("MISSING 14 royalty-math"), "{}", stdout(&out));
}

#[test]
fn an_accepted_baseline_passes_and_a_doctored_one_exits_4_with_a_drift_table() {
    let repo = TestRepo::new();
    repo.registered_run();
    let out = repo.ok(&["regress", "--accept"]);
    assert!(out.contains("accepted 14 royalty-math"), "{out}");
    let before = entries(&repo);
    let out = repo.ok(&["regress"]);
    assert!(out.contains("ok  14 royalty-math") && out.contains("bit-exact"), "{out}");
    assert_eq!(entries(&repo), before, "regress writes no bundle into results/");

    let mut b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path(&baseline_file())).unwrap()).unwrap();
    let (name, count) = largest_count(&b);
    b["quantities"][&name] = (count + 1).into();
    b["verdict"] = if b["verdict"] == "FAIL" { "STRICT".into() } else { "FAIL".into() };
    std::fs::write(repo.path(&baseline_file()), serde_json::to_vec_pretty(&b).unwrap()).unwrap();
    let out = repo.run(&["regress"]);
    assert_eq!(code(&out), 4, "{}\n{}", stdout(&out), stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("bet  what"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("14   verdict ") && l.ends_with("yes")), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with(&format!("14   {name} ")) && l.contains(&(count + 1).to_string())),
        "{table}"
    );
    assert!(stderr(&out).contains("drift(s) from the CI baselines"), "{}", stderr(&out));

    // Accepting records the rerun again, deliberately.
    repo.ok(&["regress", "--accept"]);
    repo.ok(&["regress"]);
}

#[test]
fn a_documented_tolerance_absorbs_a_small_numeric_drift_but_not_a_verdict() {
    let repo = TestRepo::new();
    repo.registered_run();
    repo.ok(&["regress", "--accept"]);
    let mut b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path(&baseline_file())).unwrap()).unwrap();
    let (name, count) = largest_count(&b);
    assert!(count > 100, "tiny royalty runs settle hundreds of receipts: {name} = {count}");
    b["quantities"][&name] = (count + 1).into();
    std::fs::write(repo.path(&baseline_file()), serde_json::to_vec_pretty(&b).unwrap()).unwrap();
    assert_eq!(code(&repo.run(&["regress"])), 4, "bit-exact by default");
    let out = repo.ok(&["regress", "--tolerance", "0.01"]);
    assert!(out.contains("within 0.01"), "{out}");
    let bad = repo.run(&["regress", "--tolerance", "-1"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
}
