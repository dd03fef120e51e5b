//! `bets slurm` and `bets kube`: write a bet's cluster jobs (and submit the
//! Slurm ones); what the jobs contain is [`crate::cluster`]'s.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::Repo;
use crate::cli::{ClusterArgs, KubeArgs, SlurmArgs};
use crate::cluster::{ClusterRun, Step, kube, slurm};
use crate::error::usage;

const STEPS: [Step; 3] = [Step::Prepare, Step::Shard, Step::Merge];

/// The cluster run `args` describe, and the folder its job files go in.
fn cluster_run(repo: &Repo, args: &ClusterArgs) -> anyhow::Result<(ClusterRun, PathBuf)> {
    let bet = crate::spec::load(&args.spec)?;
    let plan = bet.plan(&args.profile)?;
    let cells = plan.points.len();
    let shards = args.shards.unwrap_or(cells);
    if shards == 0 || shards > cells.max(1) {
        return Err(usage(format!(
            "--shards {shards}: expected 1 to {} (the plan's cells at {})",
            cells.max(1),
            plan.profile
        )));
    }
    if args.threads == 0 {
        return Err(usage("--threads must be at least 1"));
    }
    let absolute = |p: &Path, what: &str| -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(p).with_context(|| format!("creating {what} {}", p.display()))?;
        p.canonicalize().with_context(|| format!("resolving {what} {}", p.display()))
    };
    let store = absolute(args.store.as_deref().unwrap_or(repo.paths.cache_dir()), "the store")?;
    let repo_dir = repo.root.canonicalize().with_context(|| format!("resolving {}", repo.root.display()))?;
    let program = match &args.program {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this program's path (pass --program)")?,
    };
    let name = format!("bets-{}-{}", bet.spec.number, plan.profile);
    let out = args.out.clone().unwrap_or_else(|| store.join("jobs").join(format!("{}-{}", bet.id(), plan.profile)));
    let out = absolute(&out, "the job folder")?;
    let run = ClusterRun {
        name,
        program,
        repo: repo_dir,
        store,
        spec: repo.relative(&args.spec),
        profile: plan.profile.clone(),
        shards,
        threads: args.threads,
    };
    Ok((run, out))
}

/// `bets slurm`: write prepare, shards and merge scripts; `--submit` chains them.
pub fn slurm(repo: &Repo, args: &SlurmArgs) -> anyhow::Result<()> {
    let (run, out) = cluster_run(repo, &args.run)?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let opts = slurm::SlurmOptions {
        partition: args.partition.clone(),
        time: args.time.clone(),
        array_limit: args.array_limit,
        logs: logs.clone(),
    };
    let mut scripts = Vec::new();
    for step in STEPS {
        let path = out.join(slurm::script_name(step));
        crate::fsutil::write_atomic(&path, slurm::script(&run, &opts, step).map_err(usage)?.as_bytes())?;
        println!("wrote {}", path.display());
        scripts.push(path);
    }
    println!(
        "{} shards of bet spec {} at {}; store {}; logs {}",
        run.shards,
        run.spec,
        run.profile,
        run.store.display(),
        logs.display()
    );
    if !args.submit {
        println!("submit them with --submit (sbatch, chained by --dependency=afterok)");
        return Ok(());
    }
    let prepare = sbatch(&[], &scripts[0])?;
    let mut shard_args = vec![format!("--dependency=afterok:{prepare}")];
    if !args.tasks.is_empty() {
        shard_args.push(format!("--array={}", slurm::array_of(&args.tasks, run.shards).map_err(usage)?));
    }
    let shards = sbatch(&shard_args, &scripts[1])?;
    let merge = sbatch(&[format!("--dependency=afterok:{shards}"), "--kill-on-invalid-dep=yes".into()], &scripts[2])?;
    println!("submitted: prepare job {prepare}, shards job {shards}, merge job {merge}");
    Ok(())
}

/// Submit `script` with `sbatch --parsable` and return the job id.
fn sbatch(extra: &[String], script: &Path) -> anyhow::Result<String> {
    let out = Command::new("sbatch").arg("--parsable").args(extra).arg(script).output().map_err(|e| {
        usage(format!("cannot run sbatch ({e}): install Slurm's client tools, or submit {} by hand", script.display()))
    })?;
    if !out.status.success() {
        anyhow::bail!("sbatch {} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    slurm::parse_job_id(&String::from_utf8_lossy(&out.stdout)).map_err(|e| anyhow::anyhow!(e))
}

/// `bets kube`: write the three Job manifests and say how to apply them.
pub fn kube(repo: &Repo, args: &KubeArgs) -> anyhow::Result<()> {
    let (run, out) = cluster_run(repo, &args.run)?;
    for (path, what) in [(&run.repo, "the repo"), (&run.store, "the store")] {
        if !path.starts_with(&args.mount) {
            return Err(usage(format!(
                "{what} {} is not under --mount {}: the pods see only the claim",
                path.display(),
                args.mount
            )));
        }
    }
    let opts = kube::KubeOptions {
        image: args.image.clone(),
        claim: args.claim.clone(),
        mount: args.mount.clone(),
        key_secret: args.key_secret.clone(),
        parallelism: args.parallelism,
    };
    let mut apply = Vec::new();
    for step in STEPS {
        let path = out.join(kube::manifest_name(step));
        let manifest = kube::manifest(&run, &opts, step);
        let mut json = serde_json::to_vec_pretty(&manifest)?;
        json.push(b'\n');
        crate::fsutil::write_atomic(&path, &json)?;
        println!("wrote {}", path.display());
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        apply.push(format!(
            "  kubectl apply -f {} && kubectl wait --for=condition=complete --timeout=24h job/{name}",
            path.display()
        ));
    }
    println!("apply them in order, each after the last completes:");
    for line in apply {
        println!("{line}");
    }
    Ok(())
}
