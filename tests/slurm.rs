//! A real single-node Slurm cluster (Debian's slurm-wlm and munge:
//! munged, slurmctld and slurmd on localhost with a generated config, all
//! children of this test and stopped by it, also when it fails) runs a bet
//! as `bets slurm --submit` writes it: a prepare job, a 4-task job array of
//! shards over a shared cell store, and a dependent merge that signs. One
//! array task is killed mid-run and resubmitted; it must recompute nothing
//! that was finished, and the merged bundle must equal a local run's
//! `cells.csv` byte for byte and verify.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestRepo, stderr, stdout};

/// The bet: corpus size at tiny, 8 adapter cells of about a second each
/// (shard 2 of 4 holds two), so that a shard task can be killed between two
/// cells; none of its columns reads a clock, so its `cells.csv` is exact.
const SPEC: &str = "bets/101_corpus_size_replication.toml";
const TOOLS: &[&str] = &["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel"];

fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// A single-node cluster in a temporary folder; dropping it cancels every
/// job and stops every daemon and task it started.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let mut cluster = Cluster { conf: d.join("slurm.conf"), dir, daemons: vec![] };
        let d = cluster.dir.path().to_path_buf();
        let key = d.join("munge/munge.key");
        let out = Command::new(find("mungekey").unwrap()).arg("-c").arg("-k").arg(&key).output().unwrap();
        assert!(out.status.success(), "mungekey: {}", stderr(&out));
        let socket = d.join("munge/munge.socket");
        let munged = Command::new(find("munged").unwrap())
            .args(["--foreground", "--force"])
            .process_group(0)
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--pid-file={}", d.join("munge/munged.pid").display()))
            .arg(format!("--log-file={}", d.join("munge/munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munge/seed").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        cluster.daemons.push(munged);
        wait_for("munged's socket", Duration::from_secs(10), || socket.exists());

        let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_string();
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
        let (ctld_port, d_port) = (free_port(), free_port());
        let p = |s: &str| d.join(s).display().to_string();
        let conf = format!(
            "ClusterName=bets-test\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={ctld_port}\nSlurmdPort={d_port}\n\
             AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={socket}\nSlurmUser={user}\nSlurmdUser={user}\n\
             StateSaveLocation={state}\nSlurmdSpoolDir={spool}\nSlurmctldPidFile={ctld_pid}\nSlurmdPidFile={d_pid}\n\
             SlurmctldLogFile={ctld_log}\nSlurmdLogFile={d_log}\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nSchedulerType=sched/backfill\nMpiDefault=none\n\
             JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\nReturnToService=2\n\
             MinJobAge=600\nKillWait=5\nNodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            socket = socket.display(),
            state = p("state"),
            spool = p("spool"),
            ctld_pid = p("slurmctld.pid"),
            d_pid = p("slurmd.pid"),
            ctld_log = p("log/slurmctld.log"),
            d_log = p("log/slurmd.log"),
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        for daemon in ["slurmctld", "slurmd"] {
            let child = Command::new(find(daemon).unwrap())
                .arg("-D")
                .process_group(0)
                .arg("-f")
                .arg(&cluster.conf)
                .env("SLURM_CONF", &cluster.conf)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join(format!("log/{daemon}.err"))).unwrap())
                .spawn()
                .unwrap();
            cluster.daemons.push(child);
        }
        wait_for("the node to be idle", Duration::from_secs(60), || {
            cluster.client("sinfo", &["--noheader", "--format=%t"]).is_ok_and(|s| s.trim() == "idle")
        });
        cluster
    }

    /// Run a Slurm client command against this cluster; its stdout.
    fn client(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(tool).args(args).env("SLURM_CONF", &self.conf).output().map_err(|e| e.to_string())?;
        if out.status.success() { Ok(stdout(&out)) } else { Err(stderr(&out)) }
    }

    /// `JobState` of a job (or array task, `ID_N`), from the controller.
    fn state(&self, job: &str) -> String {
        let text = self.client("scontrol", &["show", "job", job]).unwrap_or_default();
        text.split_whitespace().find_map(|w| w.strip_prefix("JobState=")).unwrap_or("UNKNOWN").to_string()
    }

    /// Wait until no job is pending or running.
    fn drain(&self, timeout: Duration) {
        wait_for("the queue to drain", timeout, || {
            self.client("squeue", &["--noheader"]).is_ok_and(|s| s.trim().is_empty())
        });
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["log/slurmctld.log", "log/slurmd.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {f}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.client("scancel", &["--full", "--signal=KILL", "--user", &whoami()]);
        let _ = self.client("scancel", &["--user", &whoami()]);
        // Each daemon leads its own process group, which the helpers it
        // forks (slurmscriptd, slurmstepd) stay in: kill the whole group.
        for child in self.daemons.iter_mut().rev() {
            // SAFETY: kill(2) on a process group this test created; no memory is involved.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        // slurmstepd and the tasks it ran must not outlive the test either.
        let _ = Command::new("pkill").arg("-KILL").arg("-f").arg(self.dir.path()).status();
    }
}

fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The job ids `bets slurm --submit` printed: prepare, shards, merge.
fn submitted(out: &str) -> [String; 3] {
    let line = out.lines().find(|l| l.starts_with("submitted: ")).unwrap_or_else(|| panic!("no job ids in:\n{out}"));
    let ids: Vec<String> = line
        .split_whitespace()
        .filter(|w| w.trim_end_matches(',').chars().all(|c| c.is_ascii_digit()))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect();
    ids.try_into().unwrap_or_else(|ids| panic!("three job ids expected in `{line}`: {ids:?}"))
}

/// The cells a shard task's log says it computed / found in the store.
fn cells_logged(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with("cell ") && l.contains(&format!(" {what} (")))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn a_bet_runs_as_a_slurm_job_array_and_a_killed_task_resumes_from_the_store() {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| find(t).is_none()).collect();
    if !missing.is_empty() {
        // CI installs them (.ci/run), so there this test always runs.
        assert!(std::env::var_os("CI").is_none(), "missing {missing:?}; .ci/run installs slurm-wlm and munge");
        eprintln!("skipped: missing {missing:?} (on Debian: apt-get install -y slurm-wlm munge)");
        return;
    }
    let started = Instant::now();
    let repo = TestRepo::new();
    repo.add_spec(SPEC);
    repo.ok(&["register", SPEC]);
    let local = repo.ok(&["run", SPEC, "--profile", "tiny"]);
    let local = repo.path(local.lines().find_map(|l| l.strip_prefix("bundle: ")).unwrap());

    let cluster = Cluster::start();
    let store = repo.path("shared-store");
    let slurm = |extra: &[&str]| {
        let mut args = vec!["slurm", SPEC, "--profile", "tiny", "--shards", "4", "--array-limit", "1", "--submit"];
        args.extend_from_slice(&["--store", store.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let out = repo.cmd(&args).env("SLURM_CONF", &cluster.conf).output().unwrap();
        assert!(out.status.success(), "bets slurm failed:\n{}\n{}", stdout(&out), stderr(&out));
        submitted(&stdout(&out))
    };
    let [_, shards, merge] = slurm(&[]);
    let logs = store.canonicalize().unwrap().join("jobs/101-corpus-size-replication-tiny/logs");
    let task_log = |job: &str, task: usize| logs.join(format!("shard-{job}_{task}.out"));

    // Kill task 2 as soon as it has finished one cell (tasks run one at a time).
    wait_for("task 2's first finished cell", Duration::from_secs(300), || {
        !cells_logged(&read(&task_log(&shards, 2)), "computed").is_empty()
    });
    cluster.client("scancel", &["--full", "--signal=KILL", &format!("{shards}_2")]).unwrap();
    cluster.drain(Duration::from_secs(300));
    let first = read(&task_log(&shards, 2));
    let finished = cells_logged(&first, "computed");
    assert!(!first.contains("computed, 0 failed"), "task 2 was killed before its summary:\n{first}");
    assert_ne!(cluster.state(&format!("{shards}_2")), "COMPLETED", "{}", cluster.logs());
    for task in [1, 3, 4] {
        assert_eq!(
            cluster.state(&format!("{shards}_{task}")),
            "COMPLETED",
            "task {task}: {}",
            read(&task_log(&shards, task))
        );
    }
    assert_ne!(cluster.state(&merge), "COMPLETED", "no merge after a failed task");

    // Resubmit task 2 alone: it finds what it finished, computes the rest.
    let [_, shards2, merge2] = slurm(&["--tasks", "2"]);
    cluster.drain(Duration::from_secs(300));
    assert_eq!(
        cluster.state(&merge2),
        "COMPLETED",
        "{}\n{}",
        read(&logs.join(format!("merge-{merge2}.out"))),
        cluster.logs()
    );
    let second = read(&task_log(&shards2, 2));
    let (reused, recomputed) = (cells_logged(&second, "already in the store"), cells_logged(&second, "computed"));
    for c in &finished {
        assert!(reused.contains(c) && !recomputed.contains(c), "cell {c} was finished before the kill:\n{second}");
    }
    assert!(second.contains(&format!("{} already in the store", reused.len())), "{second}");

    let merged = read(&logs.join(format!("merge-{merge2}.out")));
    let bundle =
        repo.path(merged.lines().find_map(|l| l.strip_prefix("bundle: ")).unwrap_or_else(|| panic!("{merged}")));
    assert_ne!(bundle, local);
    assert_eq!(std::fs::read(bundle.join("cells.csv")).unwrap(), std::fs::read(local.join("cells.csv")).unwrap());
    let verify = repo.ok(&["verify", bundle.to_str().unwrap()]);
    assert!(verify.contains("attested by"), "{verify}");
    eprintln!(
        "slurm test: {:.1} s, task 2 killed after {} finished cell(s)",
        started.elapsed().as_secs_f64(),
        finished.len()
    );
}
