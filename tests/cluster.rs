//! Past one machine without a scheduler: shard tasks that fill a shared
//! cell store without the key, concurrent writers, a merge that signs and
//! refuses missing or damaged cells, and the job files of `bets slurm` and
//! `bets kube`. (tests/slurm.rs runs the same under a real Slurm.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SPEC, TestRepo, code, stderr, stdout};

/// `bets` against the repo with the cell store at `store` and a secret key
/// that does not exist: a task that touched the key would fail.
fn task(repo: &TestRepo, store: &Path, args: &[&str]) -> Command {
    let mut c = repo.cmd(args);
    c.env("BETS_HOME", store).env("BETS_KEY", repo.path("no-such.key"));
    c
}

fn cell_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let cells = store.join("cells").join(bets::engine::gemm_kernels());
    for shard in std::fs::read_dir(&cells).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// The bundle a run or merge printed.
fn bundle_of(repo: &TestRepo, out: &str) -> PathBuf {
    let line = out.lines().find(|l| l.starts_with("bundle: ")).expect("prints its bundle");
    repo.path(line.trim_start_matches("bundle: "))
}

#[test]
fn shard_tasks_fill_the_store_without_the_key_and_the_merge_signs_what_a_local_run_gives() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let local = bundle_of(&repo, &repo.ok(&["run", SPEC, "--profile", "tiny"]));
    let store = repo.path("shared-store");

    // Shard 1 from the flag, shard 2 from a Slurm array task's environment.
    let out =
        task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only", "--shard", "1/2"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("shard 1/2: 2 cells, 0 already in the store, 2 computed, 0 failed"),
        "{}",
        stdout(&out)
    );
    let out = task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only"])
        .env("SLURM_ARRAY_TASK_ID", "2")
        .env("SLURM_ARRAY_TASK_COUNT", "1")
        .env("SLURM_ARRAY_TASK_MIN", "2")
        .env("BETS_SHARD_COUNT", "2")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("shard 2/2 (from SLURM_ARRAY_TASK_ID): 2 cells"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("cell ") && l.contains(" computed (")).count(), 2, "{text}");
    assert_eq!(cell_files(&store).len(), 4);
    let bundles = |repo: &TestRepo| bets::results::find_bundles(&repo.path("results")).len();
    assert_eq!(bundles(&repo), 1, "shard tasks write no bundle");

    // A resubmitted task recomputes nothing.
    let again =
        task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only", "--shard", "1/2"]).output().unwrap();
    assert!(stdout(&again).contains("2 cells, 2 already in the store, 0 computed"), "{}", stdout(&again));

    // Cells a CPU of another gemm kernel family computed are kept apart:
    // never read as this family's, however the store was shared or copied.
    let ours = store.join("cells").join(bets::engine::gemm_kernels());
    let theirs = store.join("cells").join("other-kernel-family");
    std::fs::rename(&ours, &theirs).unwrap();
    let apart =
        task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only", "--shard", "1/2"]).output().unwrap();
    assert!(stdout(&apart).contains("2 cells, 0 already in the store, 2 computed"), "{}", stdout(&apart));
    std::fs::remove_dir_all(&ours).unwrap();
    std::fs::rename(&theirs, &ours).unwrap();

    // The merge reads every cell from the store and signs one counted bundle.
    let mut merge = repo.cmd(&["merge", SPEC, "--profile", "tiny"]);
    merge.env("BETS_HOME", &store);
    let out = merge.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let merged = bundle_of(&repo, &stdout(&out));
    assert!(stdout(&out).contains("on the record"), "{}", stdout(&out));
    assert_eq!(std::fs::read(merged.join("cells.csv")).unwrap(), std::fs::read(local.join("cells.csv")).unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cached_cells"], 4, "nothing computed by the merge");
    repo.ok(&["verify"]);
}

#[test]
fn the_merge_refuses_a_store_with_a_missing_or_damaged_cell_and_writes_nothing() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let store = repo.path("store");
    let merge = |repo: &TestRepo| {
        let mut c = repo.cmd(&["merge", SPEC, "--profile", "tiny"]);
        c.env("BETS_HOME", &store);
        c.output().unwrap()
    };
    let out =
        task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only", "--shard", "1/2"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = merge(&repo);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("2 of 4 cells are not in the store"), "{}", stderr(&out));
    assert!(stderr(&out).contains("cells 1, 3"), "shard 2 holds cells 1 and 3: {}", stderr(&out));

    let out =
        task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only", "--shard", "2/2"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let victim = &cell_files(&store)[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.iter().rposition(|b| b.is_ascii_digit()).unwrap();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(victim, bytes).unwrap();
    let out = merge(&repo);
    assert_eq!(code(&out), 2, "a damaged cell is refused, never trusted: {}", stderr(&out));
    assert!(stderr(&out).contains("1 of 4 cells are not in the store"), "{}", stderr(&out));
    assert!(bets::results::find_bundles(&repo.path("results")).is_empty(), "nothing written");
}

#[test]
fn concurrent_writers_of_the_same_cells_leave_one_intact_entry_each() {
    let repo = TestRepo::new();
    repo.ok(&["register", SPEC]);
    let store = repo.path("store");
    let children: Vec<_> = (0..3)
        .map(|_| {
            task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let files = cell_files(&store);
    assert_eq!(files.len(), 4, "one entry per cell, no temporary file left: {files:?}");
    let out = task(&repo, &store, &["run", SPEC, "--profile", "tiny", "--cells-only"]).output().unwrap();
    assert!(
        stdout(&out).contains("4 cells, 4 already in the store, 0 computed"),
        "every entry intact: {}",
        stdout(&out)
    );
}

#[test]
fn bets_slurm_and_bets_kube_write_the_three_jobs() {
    let repo = TestRepo::new();
    let store = repo.path("store");
    let out = repo.ok(&[
        "slurm",
        SPEC,
        "--profile",
        "tiny",
        "--shards",
        "2",
        "--array-limit",
        "1",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.contains("2 shards of bet spec bets/14_royalty_math.toml at tiny"), "{out}");
    let jobs = store.canonicalize().unwrap().join("jobs/14-royalty-math-tiny");
    let shards = std::fs::read_to_string(jobs.join("shards.sbatch")).unwrap();
    assert!(shards.contains("#SBATCH --array=1-2%1\n"), "{shards}");
    assert!(shards.contains("export BETS_SHARD_COUNT=2\n"), "{shards}");
    assert!(shards.contains("--cells-only\n"), "{shards}");
    let merge = std::fs::read_to_string(jobs.join("merge.sbatch")).unwrap();
    assert!(merge.contains(" merge bets/14_royalty_math.toml --profile tiny"), "{merge}");
    assert!(jobs.join("prepare.sbatch").is_file() && jobs.join("logs").is_dir());
    let out = repo.run(&["slurm", SPEC, "--profile", "tiny", "--shards", "9"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--shards 9: expected 1 to 4"), "{}", stderr(&out));

    let mount = repo.dir.path().canonicalize().unwrap();
    let out = repo.ok(&[
        "kube",
        SPEC,
        "--profile",
        "tiny",
        "--shards",
        "2",
        "--image",
        "bets:test",
        "--claim",
        "shared",
        "--mount",
        mount.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.contains("kubectl wait --for=condition=complete"), "{out}");
    let job: serde_json::Value = serde_json::from_slice(&std::fs::read(jobs.join("shards.job.json")).unwrap()).unwrap();
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 2);
    let out = repo.run(&["kube", SPEC, "--profile", "tiny", "--image", "x", "--claim", "c", "--mount", "/elsewhere"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("is not under --mount /elsewhere"), "{}", stderr(&out));
}
