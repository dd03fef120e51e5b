//! A ternary base: every linear weight quantised post-training to
//! {-1, 0, +1} x one absmean scale per output row (BitNet b1.58's
//! quantiser), packed 2 bits a weight by `kernels::ternary`; embeddings and
//! norm gains stay in float. Inference runs on the packed weights
//! ([`crate::engine::ops::ternary_linear`]), and the base stays frozen: the
//! backward pass gives gradients for the activations only, so norm-only
//! adapters train on it.
//!
//! Why one scale per output row rather than per tensor: this is
//! post-training quantisation of a model trained in float, whose output
//! rows differ in magnitude; a per-tensor absmean zeroes whole rows of the
//! small ones. A row's scale costs 4 bytes next to its `in / 4` packed
//! bytes. Per tensor is kept as an option (and a reported arm of bet 13).
//!
//! The file format ([`TernaryBase::to_bytes`]) is safetensors: for each
//! linear `<prefix>`, a U32 tensor `<prefix>.ternary` `[out, words]` (the
//! packed words, little-endian) and an F32 `<prefix>.scale` `[out]` or
//! `[1]`; every float tensor under its own name; a `bets-ternary` header
//! (format version, granularity, the float base it came from, and the
//! SHA-256 of every tensor's name, dtype, shape and bytes). Loading checks
//! the digest and every packed word, so a corrupted file is refused; the
//! file's own SHA-256 is the ternary base's content hash (its quant tag).

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use kernels::ternary::{ScaleGranularity, Ternary};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::base::BaseModel;
use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::file_header;
use super::model::Weights;

/// Version of the packed file format; bumped when its layout changes.
pub const TERNARY_FORMAT: u32 = 1;

/// Key of the header in the safetensors metadata.
const HEADER_KEY: &str = "bets-ternary";

pub use super::model::TernaryLinears;

/// The name the spec and the file use for a granularity.
pub fn granularity_name(g: ScaleGranularity) -> &'static str {
    match g {
        ScaleGranularity::PerRow => "per-row",
        ScaleGranularity::PerTensor => "per-tensor",
    }
}

/// Parse a name [`granularity_name`] gives.
pub fn granularity_from_name(s: &str) -> Result<ScaleGranularity> {
    match s {
        "per-row" => Ok(ScaleGranularity::PerRow),
        "per-tensor" => Ok(ScaleGranularity::PerTensor),
        _ => {
            Err(EngineError::Config(format!("unknown ternary scale granularity `{s}`: expected per-row or per-tensor")))
        }
    }
}

/// Prefixes of every linear layer of `cfg` (what the quantiser packs):
/// attention q, k, v, o, the router, every expert's up and down, the LM head.
pub fn linear_prefixes(cfg: &ModelConfig) -> Vec<String> {
    let mut out = vec!["lm_head".to_string()];
    for l in 0..cfg.layers {
        let p = format!("blocks.{l}");
        for n in ["q", "k", "v", "o"] {
            out.push(format!("{p}.attn.{n}"));
        }
        if cfg.experts > 1 {
            out.push(format!("{p}.moe.router"));
        }
        for e in 0..cfg.experts {
            out.push(format!("{p}.moe.experts.{e}.up"));
            out.push(format!("{p}.moe.experts.{e}.down"));
        }
    }
    out.sort();
    out
}

/// The header a packed file carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TernaryHeader {
    pub format: u32,
    /// `per-row` or `per-tensor`.
    pub granularity: String,
    /// Content hash of the float base this was quantised from.
    pub source_base: String,
    /// The model geometry.
    pub config: ModelConfig,
    /// SHA-256 over the other fields and every tensor's name, dtype, shape and bytes, in name order.
    pub content_sha256: String,
}

/// A quantised base as it is stored: float tensors and packed linears.
#[derive(Debug, Clone)]
pub struct TernaryBase {
    pub config: ModelConfig,
    pub granularity: ScaleGranularity,
    pub source_base: String,
    /// Embeddings and norm gains.
    pub floats: Weights,
    pub linears: TernaryLinears,
}

/// Quantise every linear weight of `base` (absmean, `granularity`).
pub fn quantize(base: &BaseModel, granularity: ScaleGranularity) -> Result<TernaryBase> {
    if base.ternary.is_some() {
        return Err(EngineError::Config("this base is already ternary".into()));
    }
    let prefixes = linear_prefixes(&base.config);
    let mut linears = TernaryLinears::new();
    for p in &prefixes {
        let name = format!("{p}.weight");
        let w = base.weights.get(&name).ok_or_else(|| EngineError::Config(format!("missing weight `{name}`")))?;
        // Stored [in, out]; the kernel packs output rows: transpose to [out, in].
        let (rows, cols) = (w.dim(1)?, w.dim(0)?);
        let rows_major: Vec<f32> = w.t()?.contiguous()?.flatten_all()?.to_vec1()?;
        let t = Ternary::quantize_absmean(&rows_major, rows, cols, granularity)
            .map_err(|e| EngineError::Malformed { what: format!("weight `{name}`"), detail: e.to_string() })?;
        linears.insert(p.clone(), Arc::new(t));
    }
    let packed: std::collections::BTreeSet<String> = prefixes.iter().map(|p| format!("{p}.weight")).collect();
    let floats =
        base.weights.iter().filter(|(k, _)| !packed.contains(*k)).map(|(k, t)| (k.clone(), t.clone())).collect();
    Ok(TernaryBase { config: base.config.clone(), granularity, source_base: base.hash.clone(), floats, linears })
}

/// One stored tensor: dtype, shape and little-endian bytes.
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// SHA-256 over the header's other fields and every tensor's name, dtype,
/// shape and bytes: a flipped bit anywhere in the file changes it (or breaks
/// the parse).
fn digest(header: &TernaryHeader, tensors: &BTreeMap<String, Raw>) -> String {
    let mut h = Sha256::new();
    let fields = (header.format, &header.granularity, &header.source_base, &header.config);
    h.update(serde_json::to_vec(&fields).expect("serialisable"));
    for (name, t) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.dtype).as_bytes());
        for d in &t.shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((t.data.len() as u64).to_le_bytes());
        h.update(&t.data);
    }
    hex::encode(h.finalize())
}

fn malformed(detail: impl Into<String>) -> EngineError {
    EngineError::Malformed { what: "ternary base file".into(), detail: detail.into() }
}

impl TernaryBase {
    fn raw_tensors(&self) -> Result<BTreeMap<String, Raw>> {
        let mut out = BTreeMap::new();
        for (name, t) in &self.floats {
            let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
            out.insert(
                name.clone(),
                Raw { dtype: safetensors::Dtype::F32, shape: t.dims().to_vec(), data: le_f32(&v) },
            );
        }
        for (p, t) in &self.linears {
            let words: Vec<u8> = t.words().iter().flat_map(|w| w.to_le_bytes()).collect();
            out.insert(
                format!("{p}.ternary"),
                Raw { dtype: safetensors::Dtype::U32, shape: vec![t.rows(), t.words_per_row()], data: words },
            );
            out.insert(
                format!("{p}.scale"),
                Raw { dtype: safetensors::Dtype::F32, shape: vec![t.scales().len()], data: le_f32(t.scales()) },
            );
        }
        Ok(out)
    }

    /// The packed file (deterministic: tensors in name order).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let raw = self.raw_tensors()?;
        let mut header = TernaryHeader {
            format: TERNARY_FORMAT,
            granularity: granularity_name(self.granularity).into(),
            source_base: self.source_base.clone(),
            config: self.config.clone(),
            content_sha256: String::new(),
        };
        header.content_sha256 = digest(&header, &raw);
        let meta = file_header::metadata(HEADER_KEY, &header);
        safetensors::serialize(raw.iter().map(|(k, v)| (k.clone(), v)), Some(meta))
            .map_err(|e| malformed(e.to_string()))
    }

    /// Read a packed file, refusing one whose digest, words, names or shapes
    /// are not what [`TernaryBase::to_bytes`] writes for its geometry.
    pub fn from_bytes(bytes: &[u8], device: &candle_core::Device) -> Result<TernaryBase> {
        let (st, header): (_, TernaryHeader) = file_header::read(bytes, HEADER_KEY, "ternary base file")?;
        if header.format != TERNARY_FORMAT {
            return Err(malformed(format!("format {} (this build reads {TERNARY_FORMAT})", header.format)));
        }
        header.config.validate()?;
        let granularity = granularity_from_name(&header.granularity)?;
        let mut raw = BTreeMap::new();
        for (name, view) in st.tensors() {
            raw.insert(name, Raw { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() });
        }
        let actual = digest(&header, &raw);
        if actual != header.content_sha256 {
            return Err(malformed(format!(
                "content digest {} differs from the header's {}: the file is corrupted",
                &actual[..12],
                &header.content_sha256[..header.content_sha256.len().min(12)]
            )));
        }
        let prefixes = linear_prefixes(&header.config);
        let mut linears = TernaryLinears::new();
        for p in &prefixes {
            let words = take(&mut raw, &format!("{p}.ternary"), safetensors::Dtype::U32)?;
            let scales = take(&mut raw, &format!("{p}.scale"), safetensors::Dtype::F32)?;
            let [rows, _] = words.shape[..] else { return Err(malformed(format!("`{p}.ternary` is not 2-d"))) };
            let cols = expected_cols(&header.config, p);
            let w: Vec<u32> =
                words.data.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect();
            let s: Vec<f32> =
                scales.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
            let t = Ternary::from_parts(rows, cols, w, s).map_err(|e| malformed(format!("`{p}`: {e}")))?;
            linears.insert(p.clone(), Arc::new(t));
        }
        let mut floats = Weights::new();
        for (name, t) in std::mem::take(&mut raw) {
            if t.dtype != safetensors::Dtype::F32 {
                return Err(malformed(format!("unexpected tensor `{name}` of type {:?}", t.dtype)));
            }
            let v: Vec<f32> = t.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
            floats.insert(name, Tensor::from_vec(v, t.shape, device)?);
        }
        let tb = TernaryBase { config: header.config, granularity, source_base: header.source_base, floats, linears };
        tb.check_shapes()?;
        Ok(tb)
    }

    /// Every linear has the geometry's shape and every float tensor is there.
    fn check_shapes(&self) -> Result<()> {
        let expected = super::model::init_shapes(&self.config);
        for (name, shape) in &expected {
            match name.strip_suffix(".weight").and_then(|p| self.linears.get(p)) {
                Some(t) => {
                    if [t.cols(), t.rows()] != shape[..] {
                        return Err(malformed(format!("`{name}` is {}x{}, expected {shape:?}", t.cols(), t.rows())));
                    }
                }
                None => match self.floats.get(name) {
                    Some(t) if t.dims() == &shape[..] => {}
                    Some(t) => return Err(malformed(format!("`{name}` has shape {:?}, expected {shape:?}", t.dims()))),
                    None => return Err(malformed(format!("missing tensor `{name}`"))),
                },
            }
        }
        if let Some(extra) = self.floats.keys().find(|k| !expected.contains_key(*k)) {
            return Err(malformed(format!("unexpected tensor `{extra}`")));
        }
        Ok(())
    }

    /// Bytes of the packed weights and scales alone (no header, no floats).
    pub fn packed_linear_bytes(&self) -> usize {
        self.linears.values().map(|t| t.packed_bytes()).sum()
    }

    /// The frozen base the engine runs: float tensors plus packed linears,
    /// named by the SHA-256 of `file` (the bytes [`TernaryBase::to_bytes`] gave).
    pub fn into_base(self, file: &[u8], device: &candle_core::Device) -> BaseModel {
        let hash = hex::encode(Sha256::digest(file));
        let mut b = BaseModel::from_weights(self.config, self.floats, hash, device.clone());
        b.ternary = Some(Arc::new(self.linears));
        b
    }
}

fn expected_cols(cfg: &ModelConfig, prefix: &str) -> usize {
    if prefix.ends_with(".down") { cfg.expert_width } else { cfg.d_model }
}

fn take(raw: &mut BTreeMap<String, Raw>, name: &str, dtype: safetensors::Dtype) -> Result<Raw> {
    let t = raw.remove(name).ok_or_else(|| malformed(format!("missing tensor `{name}`")))?;
    if t.dtype != dtype {
        return Err(malformed(format!("`{name}` has type {:?}, expected {dtype:?}", t.dtype)));
    }
    Ok(t)
}

/// The quant tag a manifest records for a ternary base: format, granularity
/// and the file's SHA-256.
pub fn quant_tag(granularity: ScaleGranularity, file_sha256: &str) -> String {
    format!("ternary-2bit-v{TERNARY_FORMAT}/{}/{file_sha256}", granularity_name(granularity))
}

/// Quantise `base`, write the packed file and load it back: the ternary
/// base the engine runs, with the file's bytes (what a store keeps and what
/// sizes are reported from).
pub fn ternarize(base: &BaseModel, granularity: ScaleGranularity) -> Result<(BaseModel, Vec<u8>)> {
    let file = quantize(base, granularity)?.to_bytes()?;
    let tb = TernaryBase::from_bytes(&file, &base.device)?;
    Ok((tb.into_base(&file, &base.device), file))
}

/// Float copies of every packed linear (`code * scale`, stored `[in, out]`):
/// the dequantised model the tests compare the packed forward with.
pub fn dequantized(base: &BaseModel) -> Result<BaseModel> {
    let Some(linears) = &base.ternary else { return Err(EngineError::Config("not a ternary base".into())) };
    let mut weights = base.weights.clone();
    for (p, t) in linears.iter() {
        let w = Tensor::from_vec(t.dequantize(), (t.rows(), t.cols()), &base.device)?.t()?.contiguous()?;
        weights.insert(format!("{p}.weight"), w);
    }
    Ok(BaseModel::from_weights(base.config.clone(), weights, format!("{}-dequantized", base.hash), base.device.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::Profile;
    use crate::engine::ops;
    use crate::engine::train::Batcher;
    use candle_core::{Device, Var};

    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ";

    fn tiny() -> BaseModel {
        BaseModel::random(&Profile::from_name("tiny").unwrap().model, 3, &Device::Cpu).unwrap()
    }

    fn text() -> Vec<u8> {
        TEXT.repeat(8)
    }

    #[test]
    fn the_packed_forward_equals_the_dequantised_float_forward_within_1e_4() {
        let base = tiny();
        let (tern, _) = ternarize(&base, ScaleGranularity::PerRow).unwrap();
        assert!(tern.is_ternary() && tern.weights.keys().all(|k| k.ends_with(".gain") || k == "wte" || k == "wpe"));
        let deq = dequantized(&tern).unwrap();
        let xs = Batcher::new(&text(), 32, 1).unwrap().next(3, &Device::Cpu).unwrap().0;
        let a: Vec<f32> = tern.view().forward(&xs).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = deq.view().forward(&xs).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let scale = b.iter().fold(0f32, |m, y| m.max(y.abs()));
        // Only the order of the float additions differs.
        assert!(diff <= 1e-4 * scale.max(1.0), "max |diff| {diff} at logit scale {scale}");
        // And the ternary model is not the float one.
        let f: Vec<f32> = base.view().forward(&xs).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(f.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3));
    }

    #[test]
    fn decoding_with_a_cache_on_the_packed_base_matches_the_full_forward() {
        let (tern, _) = ternarize(&tiny(), ScaleGranularity::PerTensor).unwrap();
        let view = tern.view();
        let prompt = b"the quick";
        let out = view.generate(prompt, 6).unwrap();
        let mut all = prompt.to_vec();
        for _ in 0..6 {
            let logits = view.forward(&crate::engine::model::tokens(&all, &Device::Cpu).unwrap()).unwrap().logits;
            let last = logits.narrow(0, all.len() - 1, 1).unwrap();
            all.push(crate::engine::model::argmax_rows(&last).unwrap()[0] as u8);
        }
        assert_eq!(out, all[prompt.len()..]);
    }

    #[test]
    fn the_file_round_trips_and_every_flipped_bit_tried_is_refused() {
        let base = tiny();
        let q = quantize(&base, ScaleGranularity::PerRow).unwrap();
        let bytes = q.to_bytes().unwrap();
        let back = TernaryBase::from_bytes(&bytes, &Device::Cpu).unwrap();
        assert_eq!(back.to_bytes().unwrap(), bytes, "deterministic round trip");
        assert_eq!(back.linears, q.linears);
        assert_eq!(back.source_base, base.hash);
        // Every bit of the header region and a spread of data bytes.
        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let positions: Vec<usize> = (0..header_len).chain((header_len..bytes.len()).step_by(97)).collect();
        for i in positions {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << (i % 8);
            assert!(
                TernaryBase::from_bytes(&bad, &Device::Cpu).is_err(),
                "a flip at byte {i} of {} loaded",
                bytes.len()
            );
        }
        // Truncated or foreign bytes.
        assert!(TernaryBase::from_bytes(&bytes[..bytes.len() - 1], &Device::Cpu).is_err());
        let float = base.weights_bytes().unwrap();
        let err = TernaryBase::from_bytes(&float, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("no `bets-ternary` header"), "{err}");
    }

    #[test]
    fn sizes_are_what_the_format_says_and_the_file_names_the_base() {
        let base = tiny();
        let (tern, file) = ternarize(&base, ScaleGranularity::PerRow).unwrap();
        let cfg = &base.config;
        let linears = linear_prefixes(cfg);
        // tiny: lm_head + 2 blocks x (q k v o, router, 2 experts x up down).
        assert_eq!(linears.len(), 1 + 2 * (4 + 1 + 4));
        let packed: usize = tern.ternary.as_ref().unwrap().values().map(|t| t.packed_bytes()).sum();
        let rows: usize = tern.ternary.as_ref().unwrap().values().map(|t| t.rows()).sum();
        let words: usize = tern.ternary.as_ref().unwrap().values().map(|t| t.rows() * t.cols().div_ceil(16)).sum();
        assert_eq!(packed, 4 * words + 4 * rows);
        assert_eq!(tern.param_count(), base.param_count());
        assert_eq!(tern.hash, hex::encode(Sha256::digest(&file)));
        assert!(quant_tag(ScaleGranularity::PerRow, &tern.hash).starts_with("ternary-2bit-v1/per-row/"));
        // The file is the packed linears, the float tensors and a header.
        let floats: usize = tern.weights.values().map(|t| 4 * t.elem_count()).sum();
        assert!(file.len() > packed + floats && file.len() < packed + floats + 8192, "{} bytes", file.len());
        assert!(file.len() < base.weights_bytes().unwrap().len());
    }

    #[test]
    fn norm_gains_get_gradients_through_the_frozen_ternary_base_that_match_finite_differences() {
        let (tern, _) = ternarize(&tiny(), ScaleGranularity::PerRow).unwrap();
        let (xs, ys) = Batcher::new(&text(), 32, 2).unwrap().next(2, &Device::Cpu).unwrap();
        let names = crate::engine::model::gain_names(&tern.config);
        let loss_with = |gains: &BTreeMap<String, Tensor>| -> Tensor {
            let mut view = tern.view();
            view.over = gains.clone();
            let logits = view.forward(&xs).unwrap().logits;
            ops::cross_entropy(&logits, &ys.flatten_all().unwrap()).unwrap().mean_all().unwrap()
        };
        let vars: BTreeMap<String, Var> =
            names.iter().map(|n| (n.clone(), Var::from_tensor(&tern.weights[n]).unwrap())).collect();
        let gains: BTreeMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let grads = loss_with(&gains).backward().unwrap();
        let mut checked = 0;
        for (name, var) in &vars {
            let g: Vec<f32> = grads.get(var.as_tensor()).expect("a gradient").to_vec1().unwrap();
            assert!(g.iter().any(|v| *v != 0.0), "`{name}` got no gradient");
            // Central differences on the largest coordinate of each gain vector.
            let (i, gi) = g.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
            let h = 1e-2f32;
            let at = |delta: f32| -> f64 {
                let mut v: Vec<f32> = tern.weights[name].to_vec1().unwrap();
                v[i] += delta;
                let mut gs = gains.iter().map(|(n, t)| (n.clone(), t.detach())).collect::<BTreeMap<_, _>>();
                gs.insert(name.clone(), Tensor::from_vec(v, tern.config.d_model, &Device::Cpu).unwrap());
                loss_with(&gs).to_scalar::<f32>().unwrap() as f64
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            let err = (fd - *gi as f64).abs();
            assert!(err <= 0.05 * gi.abs() as f64 + 2e-4, "`{name}`[{i}]: backward {gi}, finite difference {fd}");
            checked += 1;
        }
        assert_eq!(checked, names.len());
    }

    #[test]
    fn a_ternary_base_trains_norm_only_adapters_and_refuses_other_sets() {
        use crate::engine::adapter::Trainable;
        use crate::engine::train::{TrainConfig, finetune};
        let (tern, _) = ternarize(&tiny(), ScaleGranularity::PerRow).unwrap();
        let cfg =
            TrainConfig { steps: 3, batch: 2, seq: 32, lr: 1e-2, warmup: 0, threads: 1, ..TrainConfig::default() };
        let (a, stats) = finetune(&tern, Trainable::NormOnly, &text(), &cfg).unwrap();
        assert_eq!(stats.steps, 3);
        assert_eq!(a.base_hash, tern.hash);
        let moved = a.tensors.iter().any(|(n, t)| {
            let d: f32 = (t - &tern.weights[n]).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            d > 0.0
        });
        assert!(moved, "the gains moved");
        let err = finetune(&tern, Trainable::Full, &text(), &cfg).unwrap_err().to_string();
        assert!(err.contains("only norm-only adapters"), "{err}");
    }
}
