//! sbatch scripts of a cluster run: a prepare job, a job array of shards
//! and a merge job, chained with `--dependency=afterok` when submitted.

use std::path::PathBuf;

use super::{ClusterRun, SHARD_COUNT_VAR, Step, shell_quote};

/// Scheduler options of the jobs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// Wall-clock limit of each task (`--time`, e.g. `2:00:00`).
    pub time: Option<String>,
    /// Array tasks running at once (`--array=1-n%limit`).
    pub array_limit: Option<usize>,
    /// Folder of the tasks' output files.
    pub logs: PathBuf,
}

/// The file name of a step's script.
pub fn script_name(step: Step) -> &'static str {
    match step {
        Step::Prepare => "prepare.sbatch",
        Step::Shard => "shards.sbatch",
        Step::Merge => "merge.sbatch",
    }
}

/// A `#SBATCH` value cannot be quoted: refuse what would break the line.
fn directive_value(what: &str, v: &str) -> Result<String, String> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '#' || c.is_control()) {
        return Err(format!("{what} `{v}` cannot go in an #SBATCH line (no spaces, `#` or control characters)"));
    }
    Ok(v.to_string())
}

/// The sbatch script of one step.
pub fn script(run: &ClusterRun, opts: &SlurmOptions, step: Step) -> Result<String, String> {
    let (suffix, output) = match step {
        Step::Prepare => ("prepare", "prepare-%j.out"),
        Step::Shard => ("shards", "shard-%A_%a.out"),
        Step::Merge => ("merge", "merge-%j.out"),
    };
    let logs = directive_value("the log folder", &opts.logs.display().to_string())?;
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# {} of bet spec {} at profile {}, written by `bets slurm`.\n",
        match step {
            Step::Prepare => "Step 1 of 3 (prepare: data and base model into the store)",
            Step::Shard => "Step 2 of 3 (one array task per shard; no bundle, no key)",
            Step::Merge => "Step 3 of 3 (merge: every cell from the store into one signed bundle)",
        },
        run.spec,
        run.profile
    ));
    let mut directive = |k: &str, v: String| s.push_str(&format!("#SBATCH --{k}={v}\n"));
    directive("job-name", directive_value("the job name", &format!("{}-{suffix}", run.name))?);
    directive("output", format!("{logs}/{output}"));
    directive("cpus-per-task", run.threads.to_string());
    directive("ntasks", "1".into());
    if step == Step::Shard {
        let limit = opts.array_limit.map(|l| format!("%{l}")).unwrap_or_default();
        directive("array", format!("1-{}{limit}", run.shards));
    }
    if let Some(p) = &opts.partition {
        directive("partition", directive_value("the partition", p)?);
    }
    if let Some(t) = &opts.time {
        directive("time", directive_value("the time limit", t)?);
    }
    s.push_str("set -euo pipefail\n");
    s.push_str(&format!("export BETS_HOME={}\n", shell_quote(&run.store.display().to_string())));
    if step == Step::Shard {
        s.push_str(&format!("export {SHARD_COUNT_VAR}={}\n", run.shards));
    }
    let mut line = vec![shell_quote(&run.program.display().to_string())];
    line.extend(run.args(step).iter().map(|a| shell_quote(a)));
    s.push_str(&format!("exec {}\n", line.join(" ")));
    Ok(s)
}

/// The job id `sbatch --parsable` printed (`id` or `id;cluster`).
pub fn parse_job_id(stdout: &str) -> Result<String, String> {
    let id = stdout.trim().split(';').next().unwrap_or_default().trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("sbatch printed `{}`, not a job id", stdout.trim()));
    }
    Ok(id.to_string())
}

/// `--array` for a resubmission of some tasks (`2,4`), checked against the count.
pub fn array_of(tasks: &[usize], shards: usize) -> Result<String, String> {
    if let Some(t) = tasks.iter().find(|&&t| t == 0 || t > shards) {
        return Err(format!("task {t} is not one of the array's tasks 1..={shards}"));
    }
    Ok(tasks.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> ClusterRun {
        ClusterRun {
            name: "bets-14-tiny".into(),
            program: "/shared/bets/target/debug/bets".into(),
            repo: "/shared/bets".into(),
            store: "/shared/store".into(),
            spec: "bets/14_royalty_math.toml".into(),
            profile: "tiny".into(),
            shards: 4,
            threads: 2,
        }
    }

    #[test]
    fn the_shard_script_is_an_array_with_the_count_pinned_and_no_key() {
        let opts = SlurmOptions {
            array_limit: Some(2),
            partition: Some("debug".into()),
            logs: "/shared/logs".into(),
            ..Default::default()
        };
        let s = script(&run(), &opts, Step::Shard).unwrap();
        assert_eq!(
            s.lines().skip(2).collect::<Vec<_>>(),
            [
                "#SBATCH --job-name=bets-14-tiny-shards",
                "#SBATCH --output=/shared/logs/shard-%A_%a.out",
                "#SBATCH --cpus-per-task=2",
                "#SBATCH --ntasks=1",
                "#SBATCH --array=1-4%2",
                "#SBATCH --partition=debug",
                "set -euo pipefail",
                "export BETS_HOME=/shared/store",
                "export BETS_SHARD_COUNT=4",
                "exec /shared/bets/target/debug/bets --repo /shared/bets run bets/14_royalty_math.toml --profile tiny \
                 --threads 2 --cells-only",
            ]
        );
        let merge = script(&run(), &opts, Step::Merge).unwrap();
        assert!(merge.ends_with(
            "exec /shared/bets/target/debug/bets --repo /shared/bets merge bets/14_royalty_math.toml --profile tiny\n"
        ));
        assert!(!merge.contains("--array") && !merge.contains(SHARD_COUNT_VAR));
        let prepare = script(&run(), &opts, Step::Prepare).unwrap();
        assert!(prepare.contains("--prepare-only\n") && prepare.contains("prepare-%j.out"));
    }

    #[test]
    fn values_that_break_a_directive_and_bad_job_ids_are_refused() {
        let opts = SlurmOptions { logs: "/a folder".into(), ..Default::default() };
        assert!(script(&run(), &opts, Step::Shard).unwrap_err().contains("the log folder `/a folder`"));
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("77;cluster\n").unwrap(), "77");
        assert!(parse_job_id("sbatch: error: x").is_err());
        assert_eq!(array_of(&[2, 4], 4).unwrap(), "2,4");
        assert!(array_of(&[5], 4).unwrap_err().contains("task 5"));
    }
}
