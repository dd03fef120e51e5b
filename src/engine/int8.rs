//! int8 adapters: a norm-only adapter quantised symmetrically to int8 with
//! one scale per tensor (`scale = max |v| / 127`, `q = round(v / scale)`),
//! the wire form of an adapter next to a ternary base.
//!
//! What is quantised ([`Int8Encoding`]): by default the adapter's change to
//! the base's gains (`v = g - g_base`), which is what the adapter adds. The
//! gains themselves are the other option: their per-tensor step (`max |g| /
//! 127`, about 1e-2 for gains near 1) is larger than what a fine-tune of
//! 100 AdamW steps at lr 5e-5 can move a gain (at most about `steps * lr` =
//! 5e-3), so quantising them erases such an adapter by construction. An
//! adapter is bound to its base anyway (its header names the base's hash),
//! so the delta costs nothing in self-containment.
//!
//! The file is safetensors: the gain vectors stacked as one I8 tensor, their
//! scales as one F32 tensor, and a `bets-int8-adapter` header (format
//! version, kind, encoding, the base's hash, the gain names, the SHA-256 of
//! the encoding, base, names and values). It is
//! applied at load: decoding gives an ordinary [`Adapter`] of float gains.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::adapter::{Adapter, Trainable};
use super::base::BaseModel;
use super::error::{EngineError, Result};
use super::file_header;

/// Version of the int8 adapter file format.
pub const INT8_FORMAT: u32 = 1;

const HEADER_KEY: &str = "bets-int8-adapter";
/// The stacked int8 gains and their scales, as the file names them.
const GAINS: &str = "int8_gains";
const SCALES: &str = "int8_scales";

/// One quantised tensor: `values[i] * scale` is the gain.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<i8>,
    pub scale: f32,
}

impl Int8Tensor {
    /// Symmetric per-tensor quantisation of `v` (an all-zero tensor gets scale 0).
    pub fn quantize(v: &[f32], shape: Vec<usize>) -> Result<Int8Tensor> {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(EngineError::Config(format!("cannot quantise a non-finite value {x} to int8")));
        }
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = max / 127.0;
        let values =
            v.iter().map(|&x| if scale == 0.0 { 0 } else { (x / scale).round().clamp(-127.0, 127.0) as i8 }).collect();
        Ok(Int8Tensor { shape, values, scale })
    }

    /// The float values `q * scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        self.values.iter().map(|&q| q as f32 * self.scale).collect()
    }
}

/// What an int8 adapter's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Int8Encoding {
    /// The adapter's gains minus the base's (decoded by adding them back).
    Delta,
    /// The adapter's gains as they are.
    Absolute,
}

/// The header an int8 adapter file carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Int8Header {
    format: u32,
    kind: String,
    encoding: Int8Encoding,
    base_hash: String,
    /// Gain names in the order of the stacked rows.
    names: Vec<String>,
    content_sha256: String,
}

/// A norm-only adapter in int8.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Adapter {
    pub encoding: Int8Encoding,
    pub base_hash: String,
    /// Tensor name -> quantised values, sorted by name.
    pub tensors: BTreeMap<String, Int8Tensor>,
}

fn malformed(detail: impl Into<String>) -> EngineError {
    EngineError::Malformed { what: "int8 adapter file".into(), detail: detail.into() }
}

/// SHA-256 over the encoding, the base hash and every tensor's name, shape, scale and values.
fn digest(encoding: Int8Encoding, base_hash: &str, tensors: &BTreeMap<String, Int8Tensor>) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&encoding).expect("serialisable"));
    h.update(base_hash.as_bytes());
    for (name, t) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in &t.shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(t.scale.to_le_bytes());
        h.update(t.values.iter().map(|&q| q as u8).collect::<Vec<u8>>());
    }
    hex::encode(h.finalize())
}

impl Int8Adapter {
    /// Quantise a norm-only adapter of `base` (other kinds are refused:
    /// their tensors are not gains and this format is not meant for them).
    pub fn quantize(adapter: &Adapter, base: &BaseModel, encoding: Int8Encoding) -> Result<Int8Adapter> {
        if adapter.kind != Trainable::NormOnly {
            return Err(EngineError::AdapterMismatch(format!(
                "int8 adapters are norm-only; this adapter is {}",
                adapter.kind
            )));
        }
        adapter.check_against(base)?;
        if adapter.base_hash != base.hash {
            return Err(EngineError::AdapterMismatch("the adapter was trained on another base".into()));
        }
        let mut tensors = BTreeMap::new();
        for (name, t) in &adapter.tensors {
            let v = match encoding {
                Int8Encoding::Delta => (t - &base.weights[name])?,
                Int8Encoding::Absolute => t.clone(),
            };
            let v: Vec<f32> = v.flatten_all()?.to_vec1()?;
            tensors.insert(name.clone(), Int8Tensor::quantize(&v, t.dims().to_vec())?);
        }
        Ok(Int8Adapter { encoding, base_hash: adapter.base_hash.clone(), tensors })
    }

    /// Decode into a float adapter on `base` (checked against it).
    pub fn to_adapter(&self, base: &BaseModel) -> Result<Adapter> {
        if self.base_hash != base.hash {
            return Err(EngineError::AdapterMismatch("int8 adapter trained on another base".into()));
        }
        let mut tensors = BTreeMap::new();
        for (name, t) in &self.tensors {
            let v = Tensor::from_vec(t.dequantize(), t.shape.clone(), &base.device)?;
            let g = match (self.encoding, base.weights.get(name)) {
                (Int8Encoding::Absolute, _) => v,
                (Int8Encoding::Delta, Some(b)) if b.dims() == v.dims() => (b + v)?,
                (Int8Encoding::Delta, _) => {
                    return Err(EngineError::AdapterMismatch(format!("the base has no gain `{name}` of this shape")));
                }
            };
            tensors.insert(name.clone(), g);
        }
        let a = Adapter { kind: Trainable::NormOnly, base_hash: self.base_hash.clone(), lora_scale: 1.0, tensors };
        a.check_against(base)?;
        Ok(a)
    }

    /// The file: safetensors with the gain vectors stacked in name order as
    /// one I8 tensor `[n, d]` and their scales as one F32 `[n]` (the names
    /// are in the header), so the file is one byte a gain plus a header.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let d = self.tensors.values().next().map(|t| t.values.len()).unwrap_or(0);
        if let Some((name, _)) = self.tensors.iter().find(|(_, t)| t.values.len() != d || t.shape != [d]) {
            return Err(malformed(format!("`{name}` is not a gain vector of {d} values like the others")));
        }
        let header = Int8Header {
            format: INT8_FORMAT,
            kind: Trainable::NormOnly.to_string(),
            encoding: self.encoding,
            base_hash: self.base_hash.clone(),
            names: self.tensors.keys().cloned().collect(),
            content_sha256: digest(self.encoding, &self.base_hash, &self.tensors),
        };
        let meta = file_header::metadata(HEADER_KEY, &header);
        let gains: Vec<u8> = self.tensors.values().flat_map(|t| t.values.iter().map(|&q| q as u8)).collect();
        let scales: Vec<u8> = self.tensors.values().flat_map(|t| t.scale.to_le_bytes()).collect();
        let n = self.tensors.len();
        let bad = |e: safetensors::SafeTensorError| malformed(e.to_string());
        let tensors = [
            (GAINS, safetensors::tensor::TensorView::new(safetensors::Dtype::I8, vec![n, d], &gains).map_err(bad)?),
            (SCALES, safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n], &scales).map_err(bad)?),
        ];
        safetensors::serialize(tensors, Some(meta)).map_err(|e| malformed(e.to_string()))
    }

    /// Read a file [`Int8Adapter::to_bytes`] wrote; a corrupted one (digest,
    /// types, shapes, names) is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Int8Adapter> {
        let (st, header): (_, Int8Header) = file_header::read(bytes, HEADER_KEY, "int8 adapter file")?;
        if header.format != INT8_FORMAT {
            return Err(malformed(format!("format {} (this build reads {INT8_FORMAT})", header.format)));
        }
        if header.kind != Trainable::NormOnly.to_string() {
            return Err(malformed(format!("kind `{}`, expected norm-only", header.kind)));
        }
        let gains = st.tensor(GAINS).map_err(|_| malformed(format!("no `{GAINS}` tensor")))?;
        let scales = st.tensor(SCALES).map_err(|_| malformed(format!("no `{SCALES}` tensor")))?;
        let n = header.names.len();
        let [rows, d] = gains.shape()[..] else { return Err(malformed(format!("`{GAINS}` is not 2-d"))) };
        if st.len() != 2 || gains.dtype() != safetensors::Dtype::I8 || scales.dtype() != safetensors::Dtype::F32 {
            return Err(malformed(format!("expected exactly an I8 `{GAINS}` and an F32 `{SCALES}`")));
        }
        if rows != n || scales.shape() != [n] {
            return Err(malformed(format!("{n} names, {rows} gain rows and {:?} scales", scales.shape())));
        }
        let scale_of = |i: usize| f32::from_le_bytes(scales.data()[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let mut tensors = BTreeMap::new();
        for (i, name) in header.names.iter().enumerate() {
            let values = gains.data()[i * d..(i + 1) * d].iter().map(|&b| b as i8).collect();
            if tensors.insert(name.clone(), Int8Tensor { shape: vec![d], values, scale: scale_of(i) }).is_some() {
                return Err(malformed(format!("`{name}` named twice")));
            }
        }
        let actual = digest(header.encoding, &header.base_hash, &tensors);
        if actual != header.content_sha256 {
            return Err(malformed("content digest differs from the header's: the file is corrupted"));
        }
        Ok(Int8Adapter { encoding: header.encoding, base_hash: header.base_hash, tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_is_symmetric_per_tensor_on_a_hand_computed_case() {
        let t = Int8Tensor::quantize(&[1.27, -0.5, 0.0, 0.004], vec![4]).unwrap();
        assert_eq!(t.scale, 1.27f32 / 127.0);
        assert_eq!(t.values, vec![127, -50, 0, 0]);
        let zero = Int8Tensor::quantize(&[0.0, 0.0], vec![2]).unwrap();
        assert_eq!((zero.scale, zero.values), (0.0, vec![0, 0]));
        assert!(Int8Tensor::quantize(&[f32::NAN], vec![1]).is_err());
    }

    #[test]
    fn an_int8_adapter_round_trips_through_its_file_and_a_corrupted_one_is_refused() {
        use crate::engine::config::Profile;
        let base = BaseModel::random(&Profile::from_name("tiny").unwrap().model, 1, &candle_core::Device::Cpu).unwrap();
        let names = crate::engine::model::gain_names(&base.config);
        let tensors: BTreeMap<String, Tensor> = names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let v: Vec<f32> =
                    (0..base.config.d_model).map(|i| 1.0 + ((i * 7 + k) % 13) as f32 / 50.0 - 0.12).collect();
                (n.clone(), Tensor::from_vec(v, base.config.d_model, &base.device).unwrap())
            })
            .collect();
        let float = Adapter { kind: Trainable::NormOnly, base_hash: base.hash.clone(), lora_scale: 1.0, tensors };
        let abs = Int8Adapter::quantize(&float, &base, Int8Encoding::Absolute).unwrap();
        let q = Int8Adapter::quantize(&float, &base, Int8Encoding::Delta).unwrap();
        assert_ne!(abs, q);
        assert_eq!(Int8Adapter::from_bytes(&abs.to_bytes().unwrap()).unwrap(), abs);
        let bytes = q.to_bytes().unwrap();
        assert_eq!(Int8Adapter::from_bytes(&bytes).unwrap(), q);
        // One byte per gain plus a scale each; the float file holds four per gain.
        let gains = names.len() * base.config.d_model;
        assert!(bytes.len() < float.to_bytes().unwrap().len(), "{} bytes", bytes.len());
        assert_eq!(q.tensors.values().map(|t| t.values.len()).sum::<usize>(), gains);
        // Decoded gains are within half a step (plus rounding) of the float
        // ones, and the delta's step is the finer one.
        for int8 in [&q, &abs] {
            let back = int8.to_adapter(&base).unwrap();
            for (n, t) in &back.tensors {
                let step = int8.tensors[n].scale;
                let d: f32 = (t - &float.tensors[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                assert!(d <= step / 2.0 + 1e-6, "`{n}`: {d} > {step} / 2");
                assert!(q.tensors[n].scale < abs.tensors[n].scale);
            }
        }
        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for i in (0..bytes.len()).step_by(7).chain([header_len, bytes.len() - 1]) {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << (i % 8);
            assert!(Int8Adapter::from_bytes(&bad).is_err(), "a flip at byte {i} loaded");
        }
        // Another base, or another kind, is refused.
        let other = BaseModel::random(&base.config, 2, &base.device).unwrap();
        assert!(q.to_adapter(&other).is_err());
        assert!(Int8Adapter::quantize(&float, &other, Int8Encoding::Delta).is_err());
        let none = Adapter { kind: Trainable::None, tensors: BTreeMap::new(), ..float };
        assert!(Int8Adapter::quantize(&none, &base, Int8Encoding::Delta).is_err());
    }
}
