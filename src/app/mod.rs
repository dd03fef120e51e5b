//! Command handlers: the IO shell around the pure core. Only this module
//! decides where files go (see [`Repo`]).

mod attest;
mod cluster;
pub mod engine_cmds;
mod inspect;
mod register;
mod regress;
mod report;
pub mod reporter;
mod run;
mod tlog_cmds;
mod worker;

use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command};
use crate::error::usage;
use crate::services::Paths;
use crate::signing::{Signer, TrustedKeys};
use crate::spec::{self, Bet, SpecErrors};

/// Where everything lives, resolved once from `--repo` (the fields are
/// [`Paths`]' answers, kept as fields for the handlers' brevity).
#[derive(Debug, Clone)]
pub struct Repo {
    pub paths: Paths,
    pub root: PathBuf,
    pub bets_dir: PathBuf,
    pub results_dir: PathBuf,
    pub reports_dir: PathBuf,
    pub ledger: PathBuf,
    pub keys_dir: PathBuf,
    /// Local, never committed: cell cache, data, base models.
    pub cache_dir: PathBuf,
}

impl Repo {
    /// The repo at `root`, placed as the environment says ([`Paths::from_env`]).
    pub fn at(root: &Path) -> Repo {
        Repo::with_paths(Paths::from_env(root))
    }

    /// The repo whose files are where `paths` says.
    pub fn with_paths(paths: Paths) -> Repo {
        Repo {
            root: paths.root().to_path_buf(),
            bets_dir: paths.bets_dir(),
            results_dir: paths.results_dir(),
            reports_dir: paths.reports_dir(),
            ledger: paths.ledger(),
            keys_dir: paths.keys_dir(),
            cache_dir: paths.cache_dir().to_path_buf(),
            paths,
        }
    }

    /// Every spec file `bets/NN_*.toml`, sorted.
    pub fn spec_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.bets_dir)
            .map_err(|e| usage(format!("cannot list {}: {e}", self.bets_dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                p.extension().is_some_and(|e| e == "toml") && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
            })
            .collect();
        // By number, so study bets (101 and up) follow the catalogue's.
        out.sort_by_key(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse::<u64>().unwrap_or(u64::MAX), name)
        });
        Ok(out)
    }

    /// Load and validate every spec in bets/ (all problems of all files).
    pub fn all_bets(&self) -> anyhow::Result<Vec<Bet>> {
        let mut bets = Vec::new();
        let mut problems = Vec::new();
        for p in self.spec_files()? {
            match spec::load(&p) {
                Ok(b) => bets.push(b),
                Err(SpecErrors(mut ps)) => problems.append(&mut ps),
            }
        }
        if problems.is_empty() { Ok(bets) } else { Err(SpecErrors(problems).into()) }
    }

    /// The path of a file relative to the repo root, with `/` separators.
    pub fn relative(&self, p: &Path) -> String {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        abs.strip_prefix(&root).unwrap_or(p).to_string_lossy().replace('\\', "/")
    }

    /// The trusted keys of this repo.
    pub fn trusted_keys(&self) -> anyhow::Result<TrustedKeys> {
        Ok(TrustedKeys::load(&self.keys_dir)?)
    }

    /// The signer: `$BETS_KEY` if set (it must exist), else the default key,
    /// created on first use (its public half goes to bets/keys/). A default
    /// key made in another clone has its public half written here too, so
    /// what it signs next is not refused as untrusted.
    pub fn signer(&self) -> anyhow::Result<Signer> {
        let path = self.paths.secret_key();
        if !self.paths.secret_key_explicit() && !path.exists() {
            let (id, pub_path) = crate::signing::keygen(path, &self.keys_dir, false)?;
            eprintln!(
                "created signing key {id}: secret {} (keep it out of the repo), public {} (commit it to be trusted)",
                path.display(),
                self.relative(&pub_path)
            );
        }
        let signer = Signer::load(path)?;
        if !self.paths.secret_key_explicit() && signer.ensure_public_in(&self.keys_dir)? {
            let pub_path = crate::services::Paths::public_key_in(&self.keys_dir, &signer.key_id);
            eprintln!(
                "signing key {}: wrote its public half to {} (commit it to be trusted)",
                signer.key_id,
                self.relative(&pub_path)
            );
        }
        Ok(signer)
    }
}

/// Logs through tracing on stderr; `RUST_LOG` refines the level.
pub fn init_logging(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().try_init();
}

/// Run one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    std::env::set_current_dir(&cli.repo)
        .map_err(|e| usage(format!("--repo {}: cannot enter it: {e}", cli.repo.display())))?;
    let repo = Repo::at(Path::new("."));
    match cli.command {
        Command::Check { specs } => inspect::check(&repo, &specs),
        Command::Schema => inspect::schema(),
        Command::Keygen { force } => {
            let path = repo.paths.secret_key();
            let (id, pub_path) = crate::signing::keygen(path, &repo.keys_dir, force)?;
            println!("key {id}\nsecret: {}\npublic: {}", path.display(), repo.relative(&pub_path));
            Ok(())
        }
        Command::Register { spec } => register::register(&repo, &spec),
        Command::Amend { spec, reason } => register::amend(&repo, &spec, &reason),
        Command::Run(args) => run::run(&repo, &args, !cli.quiet),
        Command::Merge { paths, profile, threads } => run::merge(&repo, &paths, &profile, threads, !cli.quiet),
        Command::Slurm(args) => cluster::slurm(&repo, &args),
        Command::Kube(args) => cluster::kube(&repo, &args),
        Command::Status { json } => inspect::status(&repo, json),
        Command::Verify { paths } => inspect::verify(&repo, &paths),
        Command::RecordRuns { reason } => inspect::record_runs(&repo, &reason),
        Command::Attest { paths, reason } => attest::attest(&repo, &paths, &reason),
        Command::List { json, experiments } => inspect::list(&repo, json, experiments),
        Command::Report { resamples } => report::report(&repo, resamples),
        Command::Regress { accept, tolerance, jobs } => {
            regress::regress(&repo, &regress::RegressOptions { accept, tolerance, jobs, progress: !cli.quiet })
        }
        Command::Data { cmd } => engine_cmds::data(&cmd, &repo.paths),
        Command::Engine { cmd } => engine_cmds::engine(&cmd, &repo.paths),
        Command::Tlog { cmd } => tlog_cmds::tlog(&repo, &cmd),
        Command::Worker(args) => worker::worker(&args),
        Command::FederatedWorker(args) => worker::federated_worker(&args),
        Command::Specialist { cmd } => worker::specialist(&cmd),
        Command::Bench { cmd: crate::cli::BenchCmd::Engine(args) } => engine_cmds::bench(&args, &repo.paths),
        Command::Bench { cmd: crate::cli::BenchCmd::Ternary(args) } => engine_cmds::bench_ternary(&args),
        Command::Bench { cmd: crate::cli::BenchCmd::Generate(args) } => engine_cmds::bench_generate(&args),
    }
}
