//! The base-model store: pre-trained bases kept by content hash in the
//! folder it is handed (`Paths::models_dir`), as `<hash>/model.safetensors`
//! and `<hash>/manifest.json`. A base is loaded when complete and checked
//! against the manifest's digest; otherwise it is pre-trained
//! ([`crate::engine::pretrain`]) and saved atomically, the manifest last
//! (its presence marks a complete entry).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Progress;
use crate::engine::pretrain::{BASE_FORMAT, BaseManifest, Checkpoint, Resumable, base_hash, pretrain};
use crate::engine::ternary::{TernaryBase, granularity_name, ternarize};
use crate::engine::{BaseModel, EngineError, Profile, default_device};
use kernels::ternary::ScaleGranularity;

/// File of a base's manifest inside its folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File of a base's weights inside its folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stored file cannot be read or written.
    #[error("{context}: {detail}")]
    Io { context: String, detail: String },
    /// A stored file is not what the store wrote.
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    /// Stored weights whose digest differs from the manifest's.
    #[error("integrity mismatch for {what}: expected {expected}, got {actual}; the download was discarded")]
    Integrity { what: String, expected: String, actual: String },
    /// A stored manifest of a format version this build does not read.
    #[error(transparent)]
    Format(crate::error::FormatError),
    /// Training, or decoding stored bytes, failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| StoreError::Io { context: format!("reading {}", path.display()), detail: e.to_string() })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes)
        .map_err(|e| StoreError::Io { context: format!("{e:#}"), detail: "atomic write failed".into() })
}

/// Folder of a base's pre-training checkpoint while it is being trained.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Steps between two pre-training checkpoints: a killed pre-training loses
/// at most this many.
pub const CHECKPOINT_EVERY: usize = 100;

/// Version of a checkpoint's `progress.json`.
const CHECKPOINT_FORMAT: u32 = 1;

/// `progress.json`: what a checkpoint holds besides its two files, which it
/// names by digest (it is written last, so it only ever names complete files).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointProgress {
    format: u32,
    step: usize,
    losses: Vec<f32>,
    seconds: f64,
    weights_sha256: String,
    optim_sha256: String,
}

fn write_checkpoint(dir: &Path, c: &Checkpoint) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io { context: format!("creating {}", dir.display()), detail: e.to_string() })?;
    write(&dir.join("weights.safetensors"), &c.weights)?;
    write(&dir.join("optim.bin"), &c.optim)?;
    let progress = CheckpointProgress {
        format: CHECKPOINT_FORMAT,
        step: c.step,
        losses: c.losses.clone(),
        seconds: c.seconds,
        weights_sha256: hex::encode(Sha256::digest(&c.weights)),
        optim_sha256: hex::encode(Sha256::digest(&c.optim)),
    };
    write(&dir.join("progress.json"), &serde_json::to_vec(&progress).expect("progress serialises"))
}

/// The checkpoint in `dir` (`None` when there is none); one whose files do
/// not match its progress record is an error, and the caller starts over.
fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join("progress.json");
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = read(&path)?;
    crate::error::check_json_format("pre-training checkpoint", path.display(), &bytes, &[CHECKPOINT_FORMAT])
        .map_err(StoreError::Format)?;
    let p: CheckpointProgress = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Malformed { what: path.display().to_string(), detail: e.to_string() })?;
    if p.losses.len() != p.step {
        return Err(StoreError::Malformed {
            what: path.display().to_string(),
            detail: format!("step {} but {} losses recorded", p.step, p.losses.len()),
        });
    }
    let mut files = Vec::new();
    for (name, expected) in [("weights.safetensors", &p.weights_sha256), ("optim.bin", &p.optim_sha256)] {
        let f = dir.join(name);
        let bytes = read(&f)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if &actual != expected {
            return Err(StoreError::Malformed {
                what: f.display().to_string(),
                detail: format!("its SHA-256 is {actual}, but progress.json names {expected}"),
            });
        }
        files.push(bytes);
    }
    let optim = files.pop().unwrap_or_default();
    let weights = files.pop().unwrap_or_default();
    Ok(Some(Checkpoint { step: p.step, weights, optim, losses: p.losses, seconds: p.seconds }))
}

/// Pre-trained base models by content hash.
#[derive(Debug, Clone)]
pub struct BaseModels {
    dir: PathBuf,
    checkpoint_every: usize,
}

impl BaseModels {
    /// The store kept in `dir` (`Paths::models_dir`).
    pub fn new(dir: impl Into<PathBuf>) -> BaseModels {
        BaseModels { dir: dir.into(), checkpoint_every: CHECKPOINT_EVERY }
    }

    /// The same store, checkpointing pre-training every `steps` steps.
    pub fn with_checkpoint_every(self, steps: usize) -> BaseModels {
        BaseModels { checkpoint_every: steps.max(1), ..self }
    }

    /// Folder of the base named `hash`.
    pub fn entry(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// The weights file of the stored base named `hash` (what a worker's
    /// model card points at).
    pub fn weights_path(&self, hash: &str) -> PathBuf {
        self.entry(hash).join(WEIGHTS_FILE)
    }

    /// The base of `profile` pre-trained on `text`: loaded when stored,
    /// otherwise pre-trained (evaluated on `eval_text`, progress to
    /// `progress`) and stored.
    pub fn get_or_pretrain(
        &self,
        profile: &Profile,
        text: &[u8],
        eval_text: &[u8],
        seed: u64,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<(BaseModel, BaseManifest)> {
        let hash = base_hash(profile, text, seed, threads);
        let dir = self.entry(&hash);
        if dir.join(MANIFEST_FILE).is_file() {
            match self.load(&hash) {
                // A cached base of another format is a miss: trained again, never trusted.
                Err(StoreError::Format(e)) => tracing::info!("{e}: pre-training the base again"),
                loaded => return loaded,
            }
        }
        let checkpoints = dir.join(CHECKPOINT_DIR);
        let from = match read_checkpoint(&checkpoints) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{e}: pre-training the base from the start");
                None
            }
        };
        let mut save = |c: &Checkpoint| {
            write_checkpoint(&checkpoints, c)
                .map_err(|e| EngineError::Malformed { what: "pre-training checkpoint".into(), detail: e.to_string() })
        };
        let resumable = Resumable { from, every: self.checkpoint_every, save: &mut save };
        let made = pretrain(profile, text, eval_text, seed, threads, &default_device(), progress, resumable)?;
        write(&dir.join(WEIGHTS_FILE), &made.weights)?;
        // The manifest is written last: its presence means the base is complete.
        let json = serde_json::to_vec_pretty(&made.manifest).expect("manifest serialises");
        write(&dir.join(MANIFEST_FILE), &json)?;
        // The finished base makes its checkpoints useless. Removing them is
        // tidying only: on a shared store another task may be removing (or
        // still writing) them too, which must not fail this one.
        if checkpoints.exists()
            && let Err(e) = std::fs::remove_dir_all(&checkpoints)
        {
            tracing::warn!("could not remove {}: {e}", checkpoints.display());
        }
        Ok((made.base, made.manifest))
    }

    /// The ternary form of `base` ([`crate::engine::ternary`], absmean with
    /// `granularity`), kept beside it as `<hash>/ternary-<granularity>.safetensors`:
    /// loaded when stored and sound, otherwise quantised and stored. Returns
    /// the ternary base and its file's bytes (its size is the one reported).
    pub fn ternary(&self, base: &BaseModel, granularity: ScaleGranularity) -> Result<(BaseModel, Vec<u8>)> {
        let path = self.entry(&base.hash).join(format!("ternary-{}.safetensors", granularity_name(granularity)));
        if path.is_file() {
            let bytes = read(&path)?;
            match TernaryBase::from_bytes(&bytes, &base.device) {
                Ok(tb) if tb.source_base == base.hash && tb.granularity == granularity => {
                    return Ok((tb.into_base(&bytes, &base.device), bytes));
                }
                Ok(_) => tracing::warn!("{} was quantised from another base: quantising again", path.display()),
                Err(e) => tracing::warn!("{} refused ({e}): quantising again", path.display()),
            }
        }
        let (ternary, bytes) = ternarize(base, granularity)?;
        write(&path, &bytes)?;
        Ok((ternary, bytes))
    }

    /// Load the stored base `hash`, checking the weights' digest.
    pub fn load(&self, hash: &str) -> Result<(BaseModel, BaseManifest)> {
        let dir = self.entry(hash);
        let mpath = dir.join(MANIFEST_FILE);
        let mbytes = read(&mpath)?;
        crate::error::check_json_format("base-model manifest", mpath.display(), &mbytes, &[BASE_FORMAT])
            .map_err(StoreError::Format)?;
        let manifest: BaseManifest = serde_json::from_slice(&mbytes)
            .map_err(|e| StoreError::Malformed { what: mpath.display().to_string(), detail: e.to_string() })?;
        let wpath = dir.join(WEIGHTS_FILE);
        let bytes = read(&wpath)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != manifest.weights_sha256 {
            return Err(StoreError::Integrity {
                what: wpath.display().to_string(),
                expected: manifest.weights_sha256.clone(),
                actual,
            });
        }
        let base = BaseModel::from_bytes(manifest.config.clone(), manifest.hash.clone(), &bytes, &default_device())?;
        Ok((base, manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::Silent;

    #[test]
    fn a_base_is_pretrained_once_then_loaded_with_the_same_bits_and_a_tampered_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BaseModels::new(dir.path());
        let mut profile = Profile::from_name("tiny").unwrap();
        profile.pretrain.steps = 3;
        let text: Vec<u8> = (0..4000u32).map(|i| b"abcdefgh "[(i * 7 % 9) as usize]).collect();
        let (made, manifest) = store.get_or_pretrain(&profile, &text, &text, 0, 1, &Silent).unwrap();
        let entry = store.entry(&made.hash);
        let mut files: Vec<String> =
            std::fs::read_dir(&entry).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        assert_eq!(files, [MANIFEST_FILE, WEIGHTS_FILE]);
        let (again, m2) = store.get_or_pretrain(&profile, &text, &text, 0, 1, &Silent).unwrap();
        assert_eq!(m2, manifest, "the second call loads what the first stored");
        assert_eq!(again.weights_bytes().unwrap(), made.weights_bytes().unwrap());
        // A manifest of an unknown version: a named error, and a miss for get_or_pretrain.
        let mpath = entry.join(MANIFEST_FILE);
        let mtext = std::fs::read_to_string(&mpath).unwrap();
        let newer = mtext.replacen(&format!("\"format\": {BASE_FORMAT}"), "\"format\": 999", 1);
        assert_ne!(newer, mtext);
        std::fs::write(&mpath, newer).unwrap();
        match store.load(&made.hash) {
            Err(StoreError::Format(crate::error::FormatError::UnknownVersion { found: 999, .. })) => {}
            other => panic!("expected an unknown version, got {:?}", other.map(|(_, m)| m)),
        }
        let (retrained, m3) = store.get_or_pretrain(&profile, &text, &text, 0, 1, &Silent).unwrap();
        assert_eq!(m3.format, BASE_FORMAT, "pre-trained again and stored in this build's format");
        assert_eq!(retrained.weights_bytes().unwrap(), made.weights_bytes().unwrap());
        assert!(store.load(&made.hash).is_ok());
        std::fs::write(entry.join(WEIGHTS_FILE), b"other bytes").unwrap();
        assert!(matches!(store.load(&made.hash), Err(StoreError::Integrity { .. })));
    }

    #[test]
    fn a_killed_pretraining_goes_on_from_its_checkpoint_with_the_bits_of_an_uninterrupted_run() {
        let mut profile = Profile::from_name("tiny").unwrap();
        profile.pretrain.steps = 12;
        let text: Vec<u8> = (0..4000u32).map(|i| b"abcdefgh "[(i * 7 % 9) as usize]).collect();
        let whole = tempfile::tempdir().unwrap();
        let (_, expected) =
            BaseModels::new(whole.path()).get_or_pretrain(&profile, &text, &text, 0, 1, &Silent).unwrap();

        // A run killed right after its first checkpoint (step 5).
        let dir = tempfile::tempdir().unwrap();
        let store = BaseModels::new(dir.path()).with_checkpoint_every(5);
        let checkpoints = store.entry(&expected.hash).join(CHECKPOINT_DIR);
        let mut kill = |c: &Checkpoint| {
            write_checkpoint(&checkpoints, c).unwrap();
            Err(EngineError::Malformed { what: "run".into(), detail: "killed".into() })
        };
        let resumable = Resumable { from: None, every: 5, save: &mut kill };
        let device = default_device();
        assert!(pretrain(&profile, &text, &text, 0, 1, &device, &Silent, resumable).is_err());
        let saved = read_checkpoint(&checkpoints).unwrap().unwrap();
        assert_eq!((saved.step, &saved.losses[..]), (5, &expected.stats.losses[..5]));
        // Mark the checkpoint's first loss: a resumed run keeps it, a restarted one would not.
        let path = checkpoints.join("progress.json");
        let mut progress: CheckpointProgress = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        progress.losses[0] = 99.0;
        std::fs::write(&path, serde_json::to_vec(&progress).unwrap()).unwrap();

        let (_, resumed) = store.get_or_pretrain(&profile, &text, &text, 0, 1, &Silent).unwrap();
        assert_eq!(resumed.weights_sha256, expected.weights_sha256, "the same bits as one uninterrupted run");
        assert_eq!(resumed.stats.losses[0], 99.0, "steps 1-5 came from the checkpoint");
        assert_eq!(resumed.stats.losses[5..], expected.stats.losses[5..]);
        assert!(!checkpoints.exists(), "a finished base leaves no checkpoint");

        // A checkpoint whose files do not match its record is not used: the run starts over.
        let again = tempfile::tempdir().unwrap();
        let store = BaseModels::new(again.path()).with_checkpoint_every(5);
        let checkpoints = store.entry(&expected.hash).join(CHECKPOINT_DIR);
        write_checkpoint(&checkpoints, &saved).unwrap();
        std::fs::write(checkpoints.join("optim.bin"), b"damaged").unwrap();
        let e = read_checkpoint(&checkpoints).unwrap_err().to_string();
        assert!(e.contains("optim.bin") && e.contains("but progress.json names"), "{e}");
        let (_, restarted) = store.get_or_pretrain(&profile, &text, &text, 0, 1, &Silent).unwrap();
        assert_eq!(
            (restarted.weights_sha256, restarted.stats.losses),
            (expected.weights_sha256, expected.stats.losses)
        );
    }
}
