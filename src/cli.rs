//! Command-line interface (clap derive only; handlers live in `app`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::runner::Shard;

/// Pre-registered, falsifiable ML research bets, run for real.
#[derive(Debug, Parser)]
#[command(name = "bets", version, about, long_about = None)]
pub struct Cli {
    /// Run as if started in this repository root (like `git -C`): relative
    /// paths on the command line are taken from there.
    #[arg(long, global = true, default_value = ".")]
    pub repo: PathBuf,
    /// Less output: no progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate specs and list every problem (all of bets/ by default).
    Check { specs: Vec<PathBuf> },
    /// Print the JSON Schema of the spec format.
    Schema,
    /// Create an ed25519 signing key (minisign format); the public key is
    /// written to bets/keys/ so this repo trusts it.
    Keygen {
        /// Replace an existing secret key.
        #[arg(long)]
        force: bool,
    },
    /// Pre-register a spec in the ledger.
    Register { spec: PathBuf },
    /// Register a new version of a registered spec, with a reason.
    Amend {
        spec: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// Run a registered bet over its replication grid and write a signed bundle.
    Run(RunArgs),
    /// Join the shard bundles of a run into one bundle with a verdict; or,
    /// given a spec, join the cells that `--cells-only` shard tasks put in
    /// the store (every cell must be there; none is computed).
    Merge {
        /// A bet's results folder, shard bundle folders, or one spec.
        paths: Vec<PathBuf>,
        /// With a spec: the profile the shard tasks ran.
        #[arg(long, default_value = crate::spec::DEFAULT_PROFILE)]
        profile: String,
        /// With a spec: the engine threads the shard tasks ran with (part of a base model's identity).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Write (and with --submit, submit) the Slurm jobs that run a bet on a
    /// cluster: prepare, a job array of shards, and a merge that signs.
    Slurm(SlurmArgs),
    /// Write the Kubernetes Jobs that run a bet on a cluster: prepare, an
    /// Indexed Job of shards, and a merge that alone mounts the key.
    Kube(KubeArgs),
    /// Every bet: registered? runs? last verdict.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check bundle digests and signatures and the ledger chain.
    Verify {
        /// Bundles, bet result folders or the ledger (default: all of them).
        paths: Vec<PathBuf>,
    },
    /// Put counted bundles that no ledger run entry records (written before
    /// run entries existed, or by a run killed before it could record
    /// itself) on the record, as one signed, dated entry with a reason.
    RecordRuns {
        #[arg(long)]
        reason: String,
    },
    /// Give bundles written before attestations existed their in-toto
    /// attestation (DSSE-signed, dated, with a reason); no existing file of a
    /// bundle is touched.
    Attest {
        /// Bundles or bet result folders (default: every bundle in results/).
        paths: Vec<PathBuf>,
        #[arg(long)]
        reason: String,
    },
    /// Regenerate reports/ (summary, bet pages, HTML, signed confirmations
    /// and retractions) from the verified bundles in results/.
    Report {
        /// Bootstrap resamples per run (seeded: the same bundles give the same report).
        #[arg(long, default_value_t = 1000)]
        resamples: usize,
    },
    /// Rerun every published bet at profile tiny and compare verdict and
    /// quantities with its committed baseline; exit 4 on any drift.
    Regress {
        /// Record the reruns as the new baselines (review the drift table first).
        #[arg(long)]
        accept: bool,
        /// Relative tolerance for numbers (default: the baseline's own, 0 = bit-exact).
        #[arg(long)]
        tolerance: Option<f64>,
        /// Cells run in parallel.
        #[arg(short = 'j', long, default_value_t = 1)]
        jobs: usize,
    },
    /// The pinned text corpus: fetch it, show its splits.
    Data {
        #[command(subcommand)]
        cmd: crate::cli_engine::DataCmd,
    },
    /// Build and exercise engine models (pre-train a base, fine-tune an adapter).
    Engine {
        #[command(subcommand)]
        cmd: crate::cli_engine::EngineCmd,
    },
    /// Benchmarks (`bets bench engine`: candle vs PyTorch; `bets bench ternary`: the wire format vs float).
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Check RFC 6962 Merkle log proofs (the log behind signed checkpoints).
    Tlog {
        #[command(subcommand)]
        cmd: TlogCmd,
    },
    /// Specialist folders (manifest + weights): print a manifest and its
    /// id, or check a folder against its manifest (exit 3 if it fails).
    Specialist {
        #[command(subcommand)]
        cmd: SpecialistCmd,
    },
    /// Serve a range of a model's blocks over loopback TCP (the pipeline
    /// bets start and stop these themselves). Prints `listening on ADDR`,
    /// then serves until its standard input closes.
    Worker(WorkerArgs),
    /// Serve one federated-training replica over loopback TCP (bets 41 and
    /// 44 start and stop these themselves): a job file names the model, the
    /// inner training run and the data shard. Prints `listening on ADDR`,
    /// then serves until its standard input closes.
    FederatedWorker(FederatedWorkerArgs),
    /// List the bets (or, with --experiments, the experiment kinds).
    List {
        #[arg(long)]
        json: bool,
        /// List experiment kinds with their factors and metrics instead.
        #[arg(long)]
        experiments: bool,
    },
}

/// `bets tlog`: the ledger as an RFC 6962 log, and proof verifiers. Hashes
/// are standard base64 (32 bytes); a proof is a comma-separated list of
/// them, `''` for the empty proof. Exit 0: the proof holds; 3: it does not;
/// 2: malformed input (the offending flag is named).
#[derive(Debug, Subcommand)]
pub enum TlogCmd {
    /// Print the ledger's signed checkpoint (bets/ledger.checkpoint), after
    /// checking it; with --write, sign the current one and write it.
    Checkpoint {
        #[arg(long)]
        write: bool,
    },
    /// Check that today's ledger extends an older signed checkpoint you
    /// kept, and print the consistency proof (exit 3 if it does not).
    Consistency {
        /// A checkpoint file written by `bets tlog checkpoint` earlier.
        #[arg(long)]
        old: std::path::PathBuf,
    },
    /// Print the inclusion proof of ledger entry INDEX in the current tree.
    ProveInclusion {
        #[arg(long)]
        index: u64,
    },
    /// Check that a leaf hash is entry INDEX of the tree of SIZE leaves with ROOT.
    VerifyInclusion {
        /// The leaf's hash, SHA-256(0x00 || entry).
        #[arg(long)]
        leaf_hash: String,
        /// The leaf's position, from 0.
        #[arg(long)]
        index: u64,
        /// The tree size the root is for.
        #[arg(long)]
        size: u64,
        #[arg(long)]
        root: String,
        /// The audit path, leaf end first.
        #[arg(long)]
        proof: String,
    },
    /// Check that the tree of SIZE2 leaves (ROOT2) extends the one of SIZE1 (ROOT1).
    VerifyConsistency {
        #[arg(long)]
        size1: u64,
        #[arg(long)]
        size2: u64,
        #[arg(long)]
        root1: String,
        #[arg(long)]
        root2: String,
        #[arg(long)]
        proof: String,
    },
}

/// What `bets bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Training and evaluation tokens/s and peak RSS, candle vs PyTorch CPU.
    Engine(crate::cli_engine::BenchArgs),
    /// The packed ternary kernel vs f32 matmul and the read bandwidth; ternary vs float generation.
    Ternary(crate::cli_engine::TernaryBenchArgs),
    /// One generation run of one model file (a child of `bench ternary`), as JSON.
    Generate(crate::cli_engine::GenerateArgs),
}

/// Options of `bets run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    pub spec: PathBuf,
    /// tiny (CI), small (default) or paper.
    #[arg(long, default_value = crate::spec::DEFAULT_PROFILE)]
    pub profile: String,
    /// Cells run in parallel.
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
    /// Engine threads per cell (results are bit-identical for the same value).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run only part i of n of the grid (1-based), e.g. 2/3; join with `bets merge`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Run an unregistered or changed spec; the result is marked and never
    /// counted as a verdict.
    #[arg(long)]
    pub exploratory: bool,
    /// Exit 4 unless the verdict meets this level (strict, lenient, fail).
    #[arg(long)]
    pub expect: Option<String>,
    /// Compute this shard's missing cells into the store and stop: no
    /// bundle, no ledger entry, no key (a cluster task; `bets merge SPEC` joins them).
    #[arg(long, conflicts_with_all = ["prepare_only", "expect"])]
    pub cells_only: bool,
    /// Fetch the data and build the base model into the store, run no cell
    /// (a cluster's first job, so the shards do not all pre-train at once).
    #[arg(long, conflicts_with = "expect")]
    pub prepare_only: bool,
}

/// What a cluster run is: the bet, its profile, the shards and the store.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    pub spec: PathBuf,
    /// tiny (CI), small (default) or paper.
    #[arg(long, default_value = crate::spec::DEFAULT_PROFILE)]
    pub profile: String,
    /// Shards (array tasks); default: one per cell of the plan.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Engine threads per task (CPUs asked per task).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The shared cell store every node mounts (default: $BETS_HOME, else <repo>/.bets).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// The `bets` program as the nodes see it (default: this one).
    #[arg(long)]
    pub program: Option<PathBuf>,
    /// Where the job files go (default: <store>/jobs/<NN-slug>-<profile>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `bets slurm`.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub run: ClusterArgs,
    /// Array tasks running at once.
    #[arg(long)]
    pub array_limit: Option<usize>,
    #[arg(long)]
    pub partition: Option<String>,
    /// Wall-clock limit per task (sbatch --time, e.g. 2:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Submit the three jobs with sbatch, chained by --dependency=afterok.
    #[arg(long)]
    pub submit: bool,
    /// With --submit: only these array tasks (a resubmission), e.g. 2,4.
    #[arg(long, value_delimiter = ',', requires = "submit")]
    pub tasks: Vec<usize>,
}

/// Options of `bets kube`.
#[derive(Debug, Args)]
pub struct KubeArgs {
    #[command(flatten)]
    pub run: ClusterArgs,
    /// The container image holding the `bets` program.
    #[arg(long)]
    pub image: String,
    /// The ReadWriteMany PersistentVolumeClaim holding the repo and the store.
    #[arg(long)]
    pub claim: String,
    /// Where the claim is mounted in the pods (the repo and store paths lie under it).
    #[arg(long, default_value = "/shared")]
    pub mount: String,
    /// The Secret holding the signing key as `bets.key` (mounted by the merge Job only).
    #[arg(long, default_value = "bets-key")]
    pub key_secret: String,
    /// Shard pods running at once.
    #[arg(long)]
    pub parallelism: Option<usize>,
}

/// Options of `bets worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The model card (JSON) naming the weights, the adapter and their digests.
    #[arg(long)]
    pub card: PathBuf,
    /// The blocks to serve, `START..END` (END exclusive).
    #[arg(long)]
    pub blocks: String,
    /// Engine threads (results are bit-identical for the same value).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// `none`, `steady:F` or `ramp:FROM:TO:PERIOD`: answer F times slower.
    #[arg(long, default_value = "none")]
    pub throttle: String,
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
}

/// Options of `bets federated-worker`.
#[derive(Debug, Args)]
pub struct FederatedWorkerArgs {
    /// The job (JSON, written by the coordinator): model geometry, inner
    /// training run, shard file and its SHA-256.
    #[arg(long)]
    pub job: PathBuf,
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
}

/// `bets specialist`.
#[derive(Debug, Subcommand)]
pub enum SpecialistCmd {
    /// Print the manifest of a specialist folder and its content id.
    Inspect { dir: PathBuf },
    /// Check every file against the manifest and load the model (with
    /// --id, also that the manifest is the one asked for).
    Verify {
        dir: PathBuf,
        #[arg(long)]
        id: Option<String>,
    },
}
