//! Specialists as manifests (bets 01 and 65): a model folder holds its
//! weight files and a `manifest.json` naming the geometry, the quantisation,
//! the base it derives from, the adapter slot and the SHA-256 and size of
//! every file. A specialist's id is the SHA-256 of the canonical manifest,
//! so it covers every weight byte too: change any byte anywhere and the id
//! changes.
//!
//! [`load`] is the one generic path from a folder (and the id asked for) to
//! a running model: dense, mixture-of-experts of any width, f32 or packed
//! ternary, with or without an adapter. It refuses, by name, a manifest
//! whose id is not the one asked for, a file whose digest or size is not
//! the manifest's, and weights whose tensors do not fit the geometry.

use std::path::{Path, PathBuf};

use kernels::ternary::ScaleGranularity;
use serde::{Deserialize, Serialize};

use crate::engine::ternary::{TernaryBase, granularity_from_name, granularity_name};
use crate::engine::{Adapter, BaseModel, ModelConfig, default_device};
use crate::fsutil::{sha256_hex, write_atomic};

/// Bumped whenever a manifest's fields change meaning.
pub const SPECIALIST_FORMAT: u32 = 1;
/// The manifest's file name inside a specialist folder.
pub const MANIFEST: &str = "manifest.json";

/// How the base's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// Every tensor f32 (safetensors).
    F32,
    /// Linears packed ternary ([`crate::engine::ternary`]) with these scales.
    Ternary(ScaleGranularity),
}

impl Quant {
    /// The tag a manifest records: `f32` or `ternary-2bit/<granularity>`.
    pub fn tag(self) -> String {
        match self {
            Quant::F32 => "f32".into(),
            Quant::Ternary(g) => format!("ternary-2bit/{}", granularity_name(g)),
        }
    }

    fn parse(tag: &str) -> Option<Quant> {
        match tag.strip_prefix("ternary-2bit/") {
            None if tag == "f32" => Some(Quant::F32),
            None => None,
            Some(g) => granularity_from_name(g).ok().map(Quant::Ternary),
        }
    }
}

/// One file of a specialist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// `base` or `adapter`.
    pub role: String,
    /// File name inside the folder (no path separators).
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A specialist's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// d_model, layers, heads, experts, expert width, context (and vocab).
    pub geometry: ModelConfig,
    /// [`Quant::tag`].
    pub quant: String,
    /// The content hash of the float base this one derives from.
    pub derives_from: String,
    /// The adapter's trainable set (`norm-only`, ...), if an adapter fills the slot.
    pub adapter_slot: Option<String>,
    /// Every file, base first.
    pub files: Vec<FileEntry>,
}

/// What loading a specialist can fail with; each names what it refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecialistError {
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path}: not a specialist manifest: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("{path}: the manifest's id is {actual}, but {expected} was asked for")]
    WrongId { path: PathBuf, expected: String, actual: String },
    #[error("{path}: {what} is {actual}, the manifest says {expected}")]
    Integrity { path: PathBuf, what: &'static str, expected: String, actual: String },
}

type Result<T> = std::result::Result<T, SpecialistError>;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| SpecialistError::Io { path: path.into(), detail: e.to_string() })
}

impl Manifest {
    /// The content id: SHA-256 of the canonical JSON (fields in declaration
    /// order, no whitespace).
    pub fn id(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).expect("a manifest serialises"))
    }
}

/// A running specialist and its id.
pub struct Specialist {
    pub id: String,
    pub manifest: Manifest,
    pub base: BaseModel,
    pub adapter: Option<Adapter>,
}

impl Specialist {
    /// The model with its adapter, if any.
    pub fn view(&self) -> crate::engine::model::View<'_> {
        self.base.view_with(self.adapter.as_ref())
    }
}

/// Write a specialist folder: the base's file (`base_file`: safetensors
/// bytes, f32 or packed ternary as `quant` says), the adapter's if any, and
/// the manifest last. Returns the manifest.
pub fn save(
    dir: &Path,
    base: &BaseModel,
    base_file: &[u8],
    quant: Quant,
    derives_from: &str,
    adapter: Option<&Adapter>,
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut put = |role: &str, name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        write_atomic(&dir.join(name), bytes)?;
        files.push(FileEntry {
            role: role.into(),
            name: name.into(),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
        });
        Ok(())
    };
    put("base", "base.safetensors", base_file)?;
    if let Some(a) = adapter {
        put("adapter", "adapter.safetensors", &a.to_bytes()?)?;
    }
    let manifest = Manifest {
        format: SPECIALIST_FORMAT,
        geometry: base.config.clone(),
        quant: quant.tag(),
        derives_from: derives_from.into(),
        adapter_slot: adapter.map(|a| a.kind.to_string()),
        files,
    };
    write_atomic(&dir.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

/// Read and check a folder's manifest (and, with `expected`, its id).
pub fn read_manifest(dir: &Path, expected: Option<&str>) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = read(&path)?;
    let malformed = |detail: String| SpecialistError::Malformed { path: path.clone(), detail };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    if manifest.format != SPECIALIST_FORMAT {
        return Err(malformed(format!("format {}, this build reads {SPECIALIST_FORMAT}", manifest.format)));
    }
    if let Some(want) = expected {
        let actual = manifest.id();
        if actual != want {
            return Err(SpecialistError::WrongId { path, expected: want.into(), actual });
        }
    }
    Ok(manifest)
}

/// Check every file of `dir` against its manifest; the files' bytes by role.
pub fn verify_files(dir: &Path, manifest: &Manifest) -> Result<Vec<(String, Vec<u8>)>> {
    let mpath = dir.join(MANIFEST);
    let mut out = Vec::new();
    for f in &manifest.files {
        if f.name.contains(['/', '\\']) || f.name.starts_with('.') {
            return Err(SpecialistError::Malformed {
                path: mpath.clone(),
                detail: format!("file name `{}` leaves the folder", f.name),
            });
        }
        let path = dir.join(&f.name);
        let bytes = read(&path)?;
        if bytes.len() as u64 != f.bytes {
            return Err(SpecialistError::Integrity {
                path,
                what: "the size",
                expected: f.bytes.to_string(),
                actual: bytes.len().to_string(),
            });
        }
        let actual = sha256_hex(&bytes);
        if actual != f.sha256 {
            return Err(SpecialistError::Integrity { path, what: "the SHA-256", expected: f.sha256.clone(), actual });
        }
        out.push((f.role.clone(), bytes));
    }
    Ok(out)
}

/// Load the specialist in `dir`, refusing it unless its id is `expected`
/// (when given) and every file matches the manifest.
pub fn load(dir: &Path, expected: Option<&str>) -> Result<Specialist> {
    let manifest = read_manifest(dir, expected)?;
    let mpath = dir.join(MANIFEST);
    let malformed = |detail: String| SpecialistError::Malformed { path: mpath.clone(), detail };
    manifest.geometry.validate().map_err(|e| malformed(format!("geometry: {e}")))?;
    let quant =
        Quant::parse(&manifest.quant).ok_or_else(|| malformed(format!("unknown quant tag `{}`", manifest.quant)))?;
    let files = verify_files(dir, &manifest)?;
    let bytes_of = |role: &str| files.iter().find(|(r, _)| r == role).map(|(_, b)| b.as_slice());
    let base_bytes = bytes_of("base").ok_or_else(|| malformed("no file with role `base`".into()))?;
    let engine = |what: &str, e: crate::engine::EngineError| malformed(format!("{what}: {e}"));
    let device = default_device();
    let base = match quant {
        Quant::F32 => {
            let b =
                BaseModel::from_bytes(manifest.geometry.clone(), manifest.derives_from.clone(), base_bytes, &device)
                    .map_err(|e| engine("base", e))?;
            let want = crate::engine::model::init_shapes(&manifest.geometry);
            let have: std::collections::BTreeMap<String, Vec<usize>> =
                b.weights.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
            if want != have {
                return Err(malformed("the base's tensors do not fit the geometry".into()));
            }
            b
        }
        Quant::Ternary(g) => {
            let tb = TernaryBase::from_bytes(base_bytes, &device).map_err(|e| engine("ternary base", e))?;
            if tb.config != manifest.geometry || tb.granularity != g || tb.source_base != manifest.derives_from {
                return Err(malformed("the ternary file's header disagrees with the manifest".into()));
            }
            tb.into_base(base_bytes, &device)
        }
    };
    let adapter = match (&manifest.adapter_slot, bytes_of("adapter")) {
        (None, None) => None,
        (Some(kind), Some(bytes)) => {
            let a = Adapter::from_bytes(bytes, &base).map_err(|e| engine("adapter", e))?;
            if a.kind.to_string() != *kind {
                return Err(malformed(format!("the adapter is {}, the slot says {kind}", a.kind)));
            }
            Some(a)
        }
        _ => return Err(malformed("the adapter slot and the files disagree".into())),
    };
    Ok(Specialist { id: manifest.id(), manifest, base, adapter })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Profile;
    use crate::engine::adapter::Trainable;

    fn saved(dir: &Path) -> (BaseModel, Adapter, Manifest) {
        let cfg = Profile::from_name("tiny").unwrap().model;
        let base = BaseModel::random(&cfg, 4, &default_device()).unwrap();
        let names = crate::engine::model::gain_names(&cfg);
        let tensors = names.iter().map(|n| (n.clone(), (base.weights[n].clone() * 0.9).unwrap())).collect();
        let adapter = Adapter { kind: Trainable::NormOnly, base_hash: base.hash.clone(), lora_scale: 1.0, tensors };
        let m = save(dir, &base, &base.weights_bytes().unwrap(), Quant::F32, &base.hash, Some(&adapter)).unwrap();
        (base, adapter, m)
    }

    #[test]
    fn a_manifest_round_trips_and_loads_the_saved_model() {
        let dir = tempfile::tempdir().unwrap();
        let (base, adapter, m) = saved(dir.path());
        assert_eq!(read_manifest(dir.path(), Some(&m.id())).unwrap(), m);
        assert_eq!(m.id(), m.clone().id(), "the id is a function of the manifest");
        let s = load(dir.path(), Some(&m.id())).unwrap();
        assert_eq!((s.id.as_str(), s.manifest.adapter_slot.as_deref()), (m.id().as_str(), Some("norm-only")));
        let xs = crate::engine::model::tokens(b"manifest", &default_device()).unwrap();
        let want = adapter.view(&base).forward(&xs).unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = s.view().forward(&xs).unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(
            Quant::parse(&Quant::Ternary(ScaleGranularity::PerTensor).tag()),
            Some(Quant::Ternary(ScaleGranularity::PerTensor))
        );
        assert_eq!(Quant::parse("int4"), None);
    }

    #[test]
    fn a_flipped_bit_in_any_file_or_the_manifest_and_a_wrong_id_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, m) = saved(dir.path());
        let id = m.id();
        for name in ["base.safetensors", "adapter.safetensors"] {
            let path = dir.path().join(name);
            let original = std::fs::read(&path).unwrap();
            let mut bytes = original.clone();
            bytes[original.len() / 2] ^= 0x04;
            std::fs::write(&path, &bytes).unwrap();
            match load(dir.path(), Some(&id)) {
                Err(SpecialistError::Integrity { path: p, what: "the SHA-256", .. }) => assert!(p.ends_with(name)),
                Err(e) => panic!("{name}: unexpected {e}"),
                Ok(_) => panic!("{name}: a tampered file loaded"),
            }
            std::fs::write(&path, &original).unwrap();
        }
        let mpath = dir.path().join(MANIFEST);
        let text = std::fs::read_to_string(&mpath).unwrap();
        std::fs::write(&mpath, text.replacen("\"norm-only\"", "\"norm-onlz\"", 1)).unwrap();
        assert!(matches!(load(dir.path(), Some(&id)), Err(SpecialistError::WrongId { .. })));
        std::fs::write(&mpath, text.replacen("base.safetensors", "../base.safetensors", 1)).unwrap();
        let e = load(dir.path(), None).err().unwrap().to_string();
        assert!(e.contains("leaves the folder"), "{e}");
        std::fs::write(&mpath, "{").unwrap();
        assert!(matches!(load(dir.path(), Some(&id)), Err(SpecialistError::Malformed { .. })));
        std::fs::write(&mpath, &text).unwrap();
        assert!(load(dir.path(), Some(&id)).is_ok(), "restored, it loads again");
        assert!(matches!(load(dir.path(), Some("00")), Err(SpecialistError::WrongId { .. })));
    }
}
