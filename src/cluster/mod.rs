//! Past one machine: the shard a scheduler's task is, and the job files that
//! run a bet's shards on a cluster (Slurm job arrays, Kubernetes Indexed
//! Jobs) over a shared cell store.
//!
//! A cluster run has three steps, each a `bets` command:
//!
//! 1. **prepare** (one task): `bets run SPEC --prepare-only` fetches the data
//!    and pre-trains the base into the store once, so the shards do not all
//!    do it at the same time;
//! 2. **shards** (an array of n tasks): `bets run SPEC --cells-only`, with the
//!    shard read from the scheduler's environment ([`shard_from_env`]),
//!    computes the cells of that shard that the store does not hold yet and
//!    writes them there; it writes no bundle and never reads the secret key;
//! 3. **merge** (one task, after every shard succeeded): `bets merge SPEC`
//!    reads every cell back from the store (a missing or corrupted one is an
//!    error, never recomputed there), decides, and writes the one signed,
//!    counted bundle. Only this step signs.
//!
//! The store is `$BETS_HOME` (or `--store`) on a filesystem every node
//! mounts. It takes no lock: each entry is content-addressed, written to a
//! temporary file and renamed into place (two tasks writing the same cell
//! write the same bytes), and read back only when its digest matches, so a
//! node that dies mid-write leaves a stray temporary file and nothing else.
//!
//! Everything here is pure: the app writes the files and calls `sbatch`.

pub mod kube;
pub mod slurm;

use std::path::PathBuf;

use crate::runner::Shard;

/// Pins the shard count for scheduler tasks whose own count would be
/// wrong (one resubmitted Slurm task, a Kubernetes Indexed Job).
pub const SHARD_COUNT_VAR: &str = "BETS_SHARD_COUNT";

/// Where a shard came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSource {
    /// `SLURM_ARRAY_TASK_ID` (of `SLURM_ARRAY_TASK_COUNT` or `BETS_SHARD_COUNT`).
    Slurm,
    /// `JOB_COMPLETION_INDEX` of `BETS_SHARD_COUNT`.
    Kubernetes,
}

impl std::fmt::Display for ShardSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShardSource::Slurm => "SLURM_ARRAY_TASK_ID",
            ShardSource::Kubernetes => "JOB_COMPLETION_INDEX",
        })
    }
}

/// The shard a scheduler task is, from its environment (`get` reads a
/// variable), or `None` outside an array task.
///
/// - Slurm: task `SLURM_ARRAY_TASK_ID` of `SLURM_ARRAY_TASK_COUNT`. Ids are
///   counted from `SLURM_ARRAY_TASK_MIN` (`--array=1-4` and `--array=0-3`
///   both give shards 1..4). When `BETS_SHARD_COUNT` is set (the scripts of
///   `bets slurm` set it), the id *is* the 1-based shard and the count is
///   that variable, so resubmitting one task (`sbatch --array=2`) is still
///   shard 2 of n.
/// - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` (0-based) of
///   `BETS_SHARD_COUNT` (the manifest of `bets kube` sets it).
pub fn shard_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<(Shard, ShardSource)>, String> {
    let number = |name: &str| -> Result<Option<usize>, String> {
        match get(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| format!("{name}=`{v}` is not a whole number")),
        }
    };
    let pinned = number(SHARD_COUNT_VAR)?;
    let checked = |index: usize, count: usize, source: ShardSource| {
        if count == 0 || index == 0 || index > count {
            return Err(format!("{source} gives shard {index} of {count}: expected 1 <= shard <= count"));
        }
        Ok(Some((Shard { index, count }, source)))
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        return match pinned {
            Some(count) => checked(id, count, ShardSource::Slurm),
            None => {
                let count = number("SLURM_ARRAY_TASK_COUNT")?
                    .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (set BETS_SHARD_COUNT)")?;
                let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(1);
                let index = (id + 1)
                    .checked_sub(min)
                    .ok_or(format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"))?;
                checked(index, count, ShardSource::Slurm)
            }
        };
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count =
            pinned.ok_or("JOB_COMPLETION_INDEX is set but BETS_SHARD_COUNT is not: set it to the Job's completions")?;
        return checked(index + 1, count, ShardSource::Kubernetes);
    }
    Ok(None)
}

/// What every job file of a cluster run needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRun {
    /// Short name of the jobs, e.g. `bets-14-tiny`.
    pub name: String,
    /// The `bets` program, as the nodes see it.
    pub program: PathBuf,
    /// The repository (on the shared filesystem).
    pub repo: PathBuf,
    /// The shared cell store (`BETS_HOME` of every task).
    pub store: PathBuf,
    /// The spec, as the repository names it.
    pub spec: String,
    pub profile: String,
    /// Shards (array tasks).
    pub shards: usize,
    /// Engine threads per task (and CPUs asked of the scheduler).
    pub threads: usize,
}

impl ClusterRun {
    /// The arguments of step `step` (after the program), every path absolute.
    pub fn args(&self, step: Step) -> Vec<String> {
        let mut a = vec!["--repo".to_string(), self.repo.display().to_string()];
        match step {
            Step::Prepare | Step::Shard => {
                let flag = if step == Step::Prepare { "--prepare-only" } else { "--cells-only" };
                a.extend(["run".into(), self.spec.clone(), "--profile".into(), self.profile.clone()]);
                a.extend(["--threads".into(), self.threads.to_string(), flag.into()]);
            }
            Step::Merge => a.extend(["merge".into(), self.spec.clone(), "--profile".into(), self.profile.clone()]),
        }
        a
    }
}

/// The three steps of a cluster run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Prepare,
    Shard,
    Merge,
}

/// Quote `s` for a POSIX shell (single quotes; a quote inside becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn slurm_and_kubernetes_task_variables_name_the_shard() {
        let s = |vars: &[(&str, &str)]| shard_from_env(env(vars)).unwrap().map(|(s, src)| (s.to_string(), src));
        assert_eq!(s(&[]), None);
        let slurm = [("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "1")];
        assert_eq!(s(&slurm), Some(("3/4".into(), ShardSource::Slurm)));
        let zero_based = [("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "0")];
        assert_eq!(s(&zero_based), Some(("1/4".into(), ShardSource::Slurm)));
        // One task resubmitted (`--array=2`): Slurm's count is 1, the pinned count wins.
        let resubmitted = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
            ("SLURM_ARRAY_TASK_MIN", "2"),
            ("BETS_SHARD_COUNT", "4"),
        ];
        assert_eq!(s(&resubmitted), Some(("2/4".into(), ShardSource::Slurm)));
        let kube = [("JOB_COMPLETION_INDEX", "0"), ("BETS_SHARD_COUNT", "4")];
        assert_eq!(s(&kube), Some(("1/4".into(), ShardSource::Kubernetes)));
    }

    #[test]
    fn inconsistent_task_variables_are_named_errors() {
        let e = |vars: &[(&str, &str)]| shard_from_env(env(vars)).unwrap_err();
        assert!(e(&[("SLURM_ARRAY_TASK_ID", "2")]).contains("SLURM_ARRAY_TASK_COUNT is not"));
        assert!(
            e(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")]).contains("SLURM_ARRAY_TASK_ID=`x`")
        );
        assert!(e(&[("SLURM_ARRAY_TASK_ID", "5"), ("BETS_SHARD_COUNT", "4")]).contains("shard 5 of 4"));
        assert!(e(&[("JOB_COMPLETION_INDEX", "1")]).contains("BETS_SHARD_COUNT is not"));
        assert!(e(&[("JOB_COMPLETION_INDEX", "4"), ("BETS_SHARD_COUNT", "4")]).contains("shard 5 of 4"));
    }

    #[test]
    fn shell_quoting_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("/srv/bets/target/bets"), "/srv/bets/target/bets");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
