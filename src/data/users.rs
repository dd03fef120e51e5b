//! The users: the built-in personas (Brown genres, the `programmer`'s Rust
//! sources) and folders of texts given with `--corpus DIR`, and loading the
//! whole corpus from the data folder.

use std::path::{Path, PathBuf};

use super::brown::{fetch, read_brown};
use super::corpus::{Corpus, Document, SPLIT_SEED, UserCorpus};
use super::crates::{CrateSource, rust_sources};
use super::error::{DataError, Result};
use super::lock::DataLock;

/// The built-in users and the Brown categories (file prefixes) they own.
pub const BROWN_USERS: [(&str, &[&str]); 3] =
    [("novelist", &["ck", "cl", "cn", "cp"]), ("scientist", &["cj"]), ("journalist", &["ca"])];

/// Options for [`Corpus::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where the `programmer` crate archives come from; `None` uses cargo's
    /// own settings ([`CrateSource::from_env`]).
    pub crates: Option<CrateSource>,
    /// Skip the `programmer` user (no `cargo` needed).
    pub skip_programmer: bool,
    /// Extra users from folders of texts (`--corpus DIR`): name = folder name.
    pub user_dirs: Vec<PathBuf>,
}

impl Corpus {
    /// Fetch (if needed) and load the real corpus kept in `data_dir`
    /// (`Paths::data_dir`).
    pub fn load(data_dir: &Path, opts: &LoadOptions) -> Result<Corpus> {
        let lock = DataLock::embedded()?;
        let pkg = fetch(data_dir, &lock)?;
        let (general, mut brown_users) = read_brown(&pkg)?;
        let mut users = Vec::new();
        for (name, prefixes) in BROWN_USERS {
            let docs = brown_users.remove(name).unwrap_or_default();
            let source = format!("Brown corpus files {}*", prefixes.join("*, "));
            users.push(UserCorpus::new(name, &source, docs, SPLIT_SEED)?);
        }
        if !opts.skip_programmer {
            let from = opts.crates.clone().unwrap_or_else(CrateSource::from_env);
            let docs = rust_sources(data_dir, &lock.programmer.crates, &from)?;
            let names: Vec<String> = lock.programmer.crates.iter().map(|c| c.stem()).collect();
            let source = format!("Rust sources of crates {}", names.join(", "));
            users.push(UserCorpus::new("programmer", &source, docs, SPLIT_SEED)?);
        }
        for dir in &opts.user_dirs {
            users.push(user_from_dir(dir)?);
        }
        Corpus::from_parts(general, users, SPLIT_SEED)
    }
}

/// A user made of every regular file under `dir` (recursively), named after the folder.
pub fn user_from_dir(dir: &Path) -> Result<UserCorpus> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "custom".into());
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read(&f).map_err(|source| DataError::UnreadableFile { path: f.clone(), source })?;
        let id = f.strip_prefix(dir).unwrap_or(&f).to_string_lossy().replace('\\', "/");
        docs.push(Document { id, text });
    }
    if docs.is_empty() {
        return Err(DataError::EmptyUser {
            user: name,
            what: dir.display().to_string(),
            hint: "the folder has no files; put one text file per document in it".into(),
        });
    }
    UserCorpus::new(&name, &format!("folder {}", dir.display()), docs, SPLIT_SEED)
}

/// Every regular file under `dir`, sorted, skipping hidden entries.
pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|source| DataError::UnreadableFile { path: dir.into(), source })?;
    let mut entries = Vec::new();
    for e in rd {
        let e = e.map_err(|source| DataError::UnreadableFile { path: dir.into(), source })?;
        entries.push(e.path());
    }
    entries.sort();
    for p in entries {
        let name = p.file_name().map(|n| n.to_string_lossy().starts_with('.')).unwrap_or(false);
        if name {
            continue; // hidden files (.git, editor swap files)
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
