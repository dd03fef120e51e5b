//! Kubernetes Job manifests of a cluster run (JSON, which `kubectl apply -f`
//! takes): a prepare Job, an Indexed Job of shards (`JOB_COMPLETION_INDEX`
//! with `BETS_SHARD_COUNT` pinned) and a merge Job that alone mounts the
//! signing key. Kubernetes has no job dependencies: apply them in order,
//! waiting for each to complete (`kubectl wait --for=condition=complete`).

use serde_json::{Value, json};

use super::{ClusterRun, SHARD_COUNT_VAR, Step};

/// Where the pods find the repository, the store and the key.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeOptions {
    /// The container image holding the `bets` program.
    pub image: String,
    /// The PersistentVolumeClaim (ReadWriteMany) holding repo and store.
    pub claim: String,
    /// Where the claim is mounted in every pod.
    pub mount: String,
    /// The Secret holding the signing key as `bets.key` (merge Job only).
    pub key_secret: String,
    /// Shard pods running at once.
    pub parallelism: Option<usize>,
}

/// The manifest file name of a step.
pub fn manifest_name(step: Step) -> &'static str {
    match step {
        Step::Prepare => "prepare.job.json",
        Step::Shard => "shards.job.json",
        Step::Merge => "merge.job.json",
    }
}

/// The Job manifest of one step.
pub fn manifest(run: &ClusterRun, opts: &KubeOptions, step: Step) -> Value {
    let suffix = match step {
        Step::Prepare => "prepare",
        Step::Shard => "shards",
        Step::Merge => "merge",
    };
    let mut env = vec![json!({"name": "BETS_HOME", "value": run.store.display().to_string()})];
    let mut mounts = vec![json!({"name": "shared", "mountPath": opts.mount})];
    let mut volumes = vec![json!({"name": "shared", "persistentVolumeClaim": {"claimName": opts.claim}})];
    if step == Step::Shard {
        env.push(json!({"name": SHARD_COUNT_VAR, "value": run.shards.to_string()}));
    }
    if step == Step::Merge {
        env.push(json!({"name": "BETS_KEY", "value": "/etc/bets/key/bets.key"}));
        mounts.push(json!({"name": "key", "mountPath": "/etc/bets/key", "readOnly": true}));
        volumes.push(json!({"name": "key", "secret": {"secretName": opts.key_secret, "defaultMode": 0o400}}));
    }
    let mut command = vec![run.program.display().to_string()];
    command.extend(run.args(step));
    let pod = json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": "bets",
            "image": opts.image,
            "command": command,
            "env": env,
            "resources": {"requests": {"cpu": run.threads.to_string()}},
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    let mut spec = json!({"backoffLimit": 2, "template": {"spec": pod}});
    if step == Step::Shard {
        spec["completionMode"] = json!("Indexed");
        spec["completions"] = json!(run.shards);
        spec["parallelism"] = json!(opts.parallelism.unwrap_or(run.shards));
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": format!("{}-{suffix}", run.name), "labels": {"app.kubernetes.io/name": "bets"}},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_are_an_indexed_job_and_only_the_merge_sees_the_key() {
        let run = ClusterRun {
            name: "bets-14-tiny".into(),
            program: "/usr/local/bin/bets".into(),
            repo: "/shared/bets".into(),
            store: "/shared/store".into(),
            spec: "bets/14_royalty_math.toml".into(),
            profile: "tiny".into(),
            shards: 4,
            threads: 1,
        };
        let opts = KubeOptions {
            image: "registry.example/bets:1".into(),
            claim: "bets-shared".into(),
            mount: "/shared".into(),
            key_secret: "bets-key".into(),
            parallelism: Some(2),
        };
        let shards = manifest(&run, &opts, Step::Shard);
        assert_eq!(shards["spec"]["completionMode"], "Indexed");
        assert_eq!(shards["spec"]["completions"], 4);
        assert_eq!(shards["spec"]["parallelism"], 2);
        let c = &shards["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"].as_array().unwrap().last().unwrap(), "--cells-only");
        assert_eq!(c["env"][1], json!({"name": "BETS_SHARD_COUNT", "value": "4"}));
        assert!(!shards.to_string().contains("bets-key"), "shards never mount the key");
        let merge = manifest(&run, &opts, Step::Merge);
        assert!(merge["spec"].get("completionMode").is_none());
        assert_eq!(merge["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"], "bets-key");
        assert_eq!(merge["metadata"]["name"], "bets-14-tiny-merge");
    }
}
