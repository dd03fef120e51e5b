//! The envelope one process hands another to continue a generation (bet
//! 05): the prefix bytes, the prefix's last hidden row and KV cache
//! ([`Prefilled`]), and the identity of the model that computed them.
//!
//! A receiver may reuse the state only if the identity is its own model's:
//! hidden states and caches of another model (another specialist, another
//! base) mean nothing to it, so it then recomputes from the prefix bytes,
//! which every envelope carries. The file is safetensors (`hidden`,
//! `kv.<block>.k`, `kv.<block>.v`) with a JSON header under
//! `bets-envelope`, checked on decode: format, the bytes matching the
//! cache's length, one shape for every block.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};
use super::file_header;
use super::model::{KvCache, Prefilled};

/// Bumped whenever an envelope's contents change meaning.
pub const ENVELOPE_FORMAT: u32 = 1;
const HEADER_KEY: &str = "bets-envelope";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    model_id: String,
    prefix_hex: String,
}

/// A prefilled generation state and whose model made it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Content identity of the model (base and adapter) that computed `state`.
    pub model_id: String,
    /// The prefix bytes, so a receiver with another model can recompute.
    pub prefix: Vec<u8>,
    pub state: Prefilled,
}

impl Envelope {
    /// The envelope as bytes (deterministic for the same contents).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = vec![("hidden".into(), self.state.last.clone())];
        for (l, (k, v)) in self.state.cache.blocks() {
            tensors.push((format!("kv.{l}.k"), k.clone()));
            tensors.push((format!("kv.{l}.v"), v.clone()));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let header =
            Header { format: ENVELOPE_FORMAT, model_id: self.model_id.clone(), prefix_hex: hex::encode(&self.prefix) };
        let meta = file_header::metadata(HEADER_KEY, &header);
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
            .map_err(|e| EngineError::Malformed { what: "envelope".into(), detail: e.to_string() })
    }

    /// Decode and check an envelope.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Envelope> {
        let malformed = |detail: String| EngineError::Malformed { what: "envelope".into(), detail };
        let (st, header): (_, Header) = file_header::read(bytes, HEADER_KEY, "envelope")?;
        if header.format != ENVELOPE_FORMAT {
            return Err(malformed(format!("format {}, this build reads {ENVELOPE_FORMAT}", header.format)));
        }
        let prefix = hex::decode(&header.prefix_hex).map_err(|e| malformed(format!("prefix: {e}")))?;
        let load = |name: &str| -> Result<Tensor> {
            let view = st.tensor(name).map_err(|e| malformed(format!("`{name}`: {e}")))?;
            Ok(candle_core::safetensors::Load::load(&view, device)?)
        };
        let last = load("hidden")?;
        let mut blocks = BTreeMap::new();
        for name in st.names() {
            let Some(rest) = name.strip_prefix("kv.") else { continue };
            let Some(l) = rest.strip_suffix(".k") else { continue };
            let l: usize = l.parse().map_err(|_| malformed(format!("tensor `{name}`: block is not a number")))?;
            blocks.insert(l, (load(name)?, load(&format!("kv.{l}.v"))?));
        }
        let cache = KvCache::from_blocks(blocks)?;
        if cache.seen() != prefix.len() || prefix.is_empty() {
            return Err(malformed(format!(
                "the cache holds {} tokens but the prefix has {} bytes",
                cache.seen(),
                prefix.len()
            )));
        }
        if last.dims().len() != 2 || last.dims()[0] != 1 {
            return Err(malformed(format!("hidden row of shape {:?}, expected [1, d_model]", last.dims())));
        }
        Ok(Envelope { model_id: header.model_id, prefix, state: Prefilled { last, cache } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BaseModel, Profile};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn an_envelope_round_trips_and_continues_exactly() {
        let cfg = Profile::from_name("tiny").unwrap().model;
        let base = BaseModel::random(&cfg, 3, &Device::Cpu).unwrap();
        let view = base.view();
        let state = view.prefill(b"hello there").unwrap();
        let env = Envelope { model_id: "m1".into(), prefix: b"hello there".to_vec(), state: state.clone() };
        let bytes = env.to_bytes().unwrap();
        assert_eq!(bytes, env.to_bytes().unwrap());
        let back = Envelope::from_bytes(&bytes, &Device::Cpu).unwrap();
        assert_eq!((back.model_id.as_str(), back.prefix.as_slice()), ("m1", &b"hello there"[..]));
        assert_eq!(bits(&back.state.last), bits(&state.last));
        for l in 0..cfg.layers {
            assert_eq!(bits(&back.state.cache.block(l).unwrap().0), bits(&state.cache.block(l).unwrap().0));
        }
        let here = view.continue_from(state, 5).unwrap();
        let there = view.continue_from(back.state, 5).unwrap();
        assert_eq!(here, there);
        assert_eq!(here.tokens, view.generate(b"hello there", 5).unwrap());
    }

    #[test]
    fn a_corrupt_or_inconsistent_envelope_is_refused() {
        let cfg = Profile::from_name("tiny").unwrap().model;
        let base = BaseModel::random(&cfg, 3, &Device::Cpu).unwrap();
        let state = base.view().prefill(b"abc").unwrap();
        let lying = Envelope { model_id: "m".into(), prefix: b"abcd".to_vec(), state };
        let e = Envelope::from_bytes(&lying.to_bytes().unwrap(), &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("holds 3 tokens but the prefix has 4 bytes"), "{e}");
        let e = Envelope::from_bytes(b"not an envelope", &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("envelope"), "{e}");
    }
}
