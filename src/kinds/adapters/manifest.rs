//! Kind `specialist-manifest` (bets 01 and 65): a specialist of one
//! geometry (a base and a norm-only adapter in its slot) is saved as a
//! folder with a manifest ([`crate::services::specialist`]), loaded back
//! through the one generic loader by its id, and compared with the model
//! that was saved, logit for logit; then single bits of every file are
//! flipped, and each tampered folder must be refused, and must name another
//! id once its manifest is rebuilt over the changed bytes.
//!
//! Geometries: `moe-4` is the run's pre-trained base (4 experts); `dense`
//! (1 expert) and `moe-16` (16 experts) are seeded random inits of the same
//! width, as loading does not depend on training; `ternary` is the packed
//! per-row ternary form of `moe-4`. Each slot holds the programmer's
//! norm-only adapter trained on that very base.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use kernels::ternary::ScaleGranularity;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Budget, GENERAL, Workbench};
use crate::engine::model::tokens;
use crate::engine::ops::with_threads;
use crate::engine::{BaseModel, ModelConfig};
use crate::fsutil::sha256_hex;
use crate::kinds::memo::{Memo, memo};
use crate::kinds::{Cell, Env, Kind, ParamProblem, derive_seed};
use crate::services::BaseModels;
use crate::services::specialist::{self, MANIFEST, Manifest, Quant};

/// The `specialist-manifest` kind.
pub struct SpecialistManifest;

/// `[procedure]`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)] // the schema refuses unknown keys as the flattened Budget does
pub struct Params {
    /// Prompts whose logits are compared.
    prompts: usize,
    /// Bytes of each prompt (windows of the general held-out slice A).
    prompt_bytes: usize,
    /// Single-bit flips per file (base, adapter, manifest).
    flips_per_file: usize,
    /// Whose norm-only adapter fills the slot.
    user: String,
    #[serde(flatten)]
    budget: Budget,
}

/// A specialist's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Geometry {
    /// One expert per block (random init).
    Dense,
    /// Four experts: the pre-trained base.
    #[serde(rename = "moe-4")]
    Moe4,
    /// Sixteen experts (random init).
    #[serde(rename = "moe-16")]
    Moe16,
    /// The pre-trained base, linears packed ternary (per-row scales).
    Ternary,
}

/// The grid factors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    /// Which geometry.
    geometry: Geometry,
    /// Seeds the adapter's training (and the random inits).
    seed: u64,
}

crate::metrics! {
    /// One specialist saved, loaded and tampered with.
    pub struct ManifestMetrics {
        /// Prompts compared.
        pub prompts: u64,
        /// Prompts whose every logit of the loaded model has the saved model's bits.
        pub identical: u64,
        /// Single-bit flips tried (over every file).
        pub flips: u64,
        /// Flipped folders the loader accepted under the original id.
        pub tampered_loaded: u64,
        /// Flips after which the rebuilt manifest still has the original id.
        pub id_unchanged: u64,
        /// Untouched folders the loader refused (checked after every restore).
        pub honest_refused: u64,
        /// Experts per block of the loaded model.
        pub experts: u64,
        /// Bytes of the folder (weights, adapter, manifest).
        pub folder_bytes: u64,
    }
}

/// The run's base and store, and each geometry's base, built once.
pub struct Ready {
    params: Params,
    bench: Workbench,
    models: BaseModels,
    bases: Memo<(BaseModel, Vec<u8>, Quant)>,
    threads: usize,
}

impl Kind for SpecialistManifest {
    const NAME: &'static str = "specialist-manifest";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Save a specialist as a content-addressed manifest folder, load it back by id and compare logits; flip bits and expect refusals and new ids.";
    type Params = Params;
    type Factors = Factors;
    type Metrics = ManifestMetrics;
    type Ready = Ready;

    fn check(p: &Params) -> Result<(), ParamProblem> {
        p.budget.check()?;
        ParamProblem::all_positive(&[
            ("prompts", p.prompts),
            ("prompt_bytes", p.prompt_bytes),
            ("flips_per_file", p.flips_per_file),
        ])
    }

    fn prepare(p: &Params, env: &Env) -> anyhow::Result<Ready> {
        Ok(Ready {
            params: p.clone(),
            bench: Workbench::new(p.budget.clone(), env)?,
            models: BaseModels::new(env.paths.models_dir()),
            bases: Mutex::default(),
            threads: env.threads,
        })
    }

    fn inputs(r: &Ready) -> BTreeMap<String, String> {
        r.bench.inputs()
    }

    fn run(r: &Ready, cell: &Cell, f: Factors) -> anyhow::Result<ManifestMetrics> {
        let p = &r.params;
        let (base, base_file, quant) =
            memo(&r.bases, format!("{:?}/{}", f.geometry, f.seed), || geometry_base(r, f.geometry, f.seed))?;
        let trained = r.bench.on_base(base.clone()).adapter("norm-only", &p.user, "real", f.seed)?;
        let folder = tempfile::tempdir()?;
        let dir = folder.path();
        // A ternary base derives from the float base it was quantised from;
        // a float base is its own origin.
        let derives_from = if matches!(quant, Quant::Ternary(_)) { &r.bench.base.hash } else { &base.hash };
        let manifest = specialist::save(dir, &base, &base_file, quant, derives_from, Some(&trained.adapter))?;
        let id = manifest.id();
        let loaded = specialist::load(dir, Some(&id))?;

        // The loaded model against the saved one, logit for logit.
        let text = r.bench.held_out(GENERAL, crate::data::Split::A)?;
        let saved_view = trained.adapter.view(&base);
        let loaded_view = loaded.view();
        let mut identical = 0u64;
        with_threads(r.threads, || -> anyhow::Result<()> {
            for i in 0..p.prompts {
                let at = i * 3 * p.prompt_bytes;
                let prompt = text.get(at..at + p.prompt_bytes).ok_or_else(|| {
                    anyhow::anyhow!("prompt {i} lies beyond the {} bytes of the general held-out slice A", text.len())
                })?;
                let xs = tokens(prompt, &base.device)?;
                let bits = |v: &crate::engine::model::View| -> anyhow::Result<Vec<u32>> {
                    let l = v.forward(&xs)?.logits.flatten_all()?.to_vec1::<f32>()?;
                    Ok(l.iter().map(|x| x.to_bits()).collect())
                };
                identical += u64::from(bits(&saved_view)? == bits(&loaded_view)?);
            }
            Ok(())
        })?;

        // Single-bit flips of every file, each restored before the next.
        let (mut flips, mut tampered_loaded, mut id_unchanged, mut honest_refused) = (0u64, 0u64, 0u64, 0u64);
        let mut names: Vec<String> = manifest.files.iter().map(|e| e.name.clone()).collect();
        names.push(MANIFEST.to_string());
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(&cell.key, "flips"));
        for name in &names {
            let path = dir.join(name);
            let original = std::fs::read(&path)?;
            for _ in 0..p.flips_per_file {
                let (at, bit) = (rng.random_range(0..original.len()), rng.random_range(0..8u32));
                let mut bytes = original.clone();
                bytes[at] ^= 1 << bit;
                std::fs::write(&path, &bytes)?;
                flips += 1;
                tampered_loaded += u64::from(specialist::load(dir, Some(&id)).is_ok());
                id_unchanged += u64::from(rebuilt_id(&manifest, name, &bytes).as_deref() == Some(id.as_str()));
                std::fs::write(&path, &original)?;
                honest_refused += u64::from(specialist::load(dir, Some(&id)).is_err());
            }
        }
        let folder_bytes = folder_size(dir)?;
        Ok(ManifestMetrics {
            prompts: p.prompts as u64,
            identical,
            flips,
            tampered_loaded,
            id_unchanged,
            honest_refused,
            experts: loaded.base.config.experts as u64,
            folder_bytes,
        })
    }
}

/// The base of a geometry, its file's bytes and its quantisation.
fn geometry_base(r: &Ready, geometry: Geometry, seed: u64) -> anyhow::Result<(BaseModel, Vec<u8>, Quant)> {
    let trained = &r.bench.base;
    let random = |experts: usize| -> anyhow::Result<(BaseModel, Vec<u8>, Quant)> {
        let cfg = ModelConfig { experts, ..trained.config.clone() };
        let b = BaseModel::random(&cfg, seed, &trained.device)?;
        let bytes = b.weights_bytes()?;
        Ok((b, bytes, Quant::F32))
    };
    Ok(match geometry {
        Geometry::Dense => random(1)?,
        Geometry::Moe16 => random(16)?,
        Geometry::Moe4 => (trained.clone(), trained.weights_bytes()?, Quant::F32),
        Geometry::Ternary => {
            let (t, bytes) = r.models.ternary(trained, ScaleGranularity::PerRow)?;
            (t, bytes, Quant::Ternary(ScaleGranularity::PerRow))
        }
    })
}

/// The id of the manifest rebuilt over a changed file (its new digest and
/// size), or of a changed manifest itself; `None` when the changed
/// manifest is not a manifest at all (it names no id).
fn rebuilt_id(manifest: &Manifest, name: &str, bytes: &[u8]) -> Option<String> {
    if name == MANIFEST {
        return serde_json::from_slice::<Manifest>(bytes).ok().map(|m| m.id());
    }
    let mut m = manifest.clone();
    for e in m.files.iter_mut().filter(|e| e.name == name) {
        e.sha256 = sha256_hex(bytes);
        e.bytes = bytes.len() as u64;
    }
    Some(m.id())
}

fn folder_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}
