//! Adapters: what a fine-tune changes, stored apart from its base model as
//! safetensors with a small JSON header naming the kind and the base hash.
//!
//! A norm-only adapter is the RMSNorm gains alone; a LoRA adapter is the `A`
//! and `B` factors; a full adapter is every weight. Loading refuses an
//! adapter whose base hash or tensor names do not match the base it is
//! applied to.
//!
//! Trainable sets have a text form (`full`, `norm-only`, `lora:4:q,v`, ...)
//! and named arms ([`TRAINABLE_SETS`]: `none`, `norm-only`, `lora-r4`,
//! `full`), one table line each, that experiments offer as grid values.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::base::BaseModel;
use super::error::{EngineError, Result};
use super::model::{LoraTarget, View, gain_names};

/// On-disk format version of adapters (in the header).
pub const ADAPTER_FORMAT: u32 = 2;

/// The single tensor of a norm-only adapter file: every RMSNorm gain, one
/// row per norm in sorted name order.
pub const NORM_GAINS: &str = "gains";

/// Which tensors a fine-tune may change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trainable {
    /// Every weight.
    Full,
    /// Every RMSNorm gain, nothing else.
    NormOnly,
    /// Low-rank `x A B` updates of rank `rank` on the named projections (`B = 0` at start).
    Lora { rank: usize, targets: Vec<LoraTarget> },
    /// Nothing (the base model itself; a control arm).
    None,
}

impl fmt::Display for Trainable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trainable::Full => write!(f, "full"),
            Trainable::NormOnly => write!(f, "norm-only"),
            Trainable::None => write!(f, "none"),
            Trainable::Lora { rank, targets } => {
                let t: Vec<&str> = targets.iter().map(|t| t.name()).collect();
                write!(f, "lora:{rank}:{}", t.join(","))
            }
        }
    }
}

impl FromStr for Trainable {
    type Err = EngineError;

    /// `full`, `norm-only`, `none`, or `lora:RANK:q,k,v,o,ffn` (`lora:8` means q,v).
    fn from_str(s: &str) -> Result<Trainable> {
        let bad = || {
            EngineError::Config(format!(
                "unknown trainable set `{s}`; expected full, norm-only, none or lora:RANK:q,k,v,o,ffn"
            ))
        };
        match s {
            "full" => return Ok(Trainable::Full),
            "norm-only" | "norm" => return Ok(Trainable::NormOnly),
            "none" => return Ok(Trainable::None),
            _ => {}
        }
        let rest = s.strip_prefix("lora:").ok_or_else(bad)?;
        let (rank, targets) = rest.split_once(':').unwrap_or((rest, "q,v"));
        let rank: usize = rank.parse().map_err(|_| bad())?;
        let mut t =
            targets.split(',').map(|x| LoraTarget::from_name(x.trim()).ok_or_else(bad)).collect::<Result<Vec<_>>>()?;
        t.sort();
        t.dedup();
        if rank == 0 || t.is_empty() {
            return Err(bad());
        }
        Ok(Trainable::Lora { rank, targets: t })
    }
}

/// A named trainable set (an experiment arm): built from the LoRA rank of
/// the run's budget, so one name may stand for a family of sets.
#[derive(Debug, Clone, Copy)]
pub struct NamedSet {
    /// The arm's name in specs and result tables.
    pub name: &'static str,
    /// What the arm trains, for documentation.
    pub doc: &'static str,
    /// The set, given the budget's LoRA rank.
    pub build: fn(lora_rank: usize) -> Trainable,
}

/// Every named arm, one line each: adding an arm is adding a line here.
pub const TRAINABLE_SETS: &[NamedSet] = &[
    NamedSet { name: "none", doc: "nothing: the bare base (control)", build: |_| Trainable::None },
    NamedSet { name: "norm-only", doc: "every RMSNorm gain", build: |_| Trainable::NormOnly },
    NamedSet {
        name: "lora-r4",
        doc: "LoRA on q, k, v, o and the experts, rank from the budget (4 by default)",
        build: |rank| Trainable::Lora { rank, targets: LoraTarget::ALL.to_vec() },
    },
    NamedSet { name: "full", doc: "every weight", build: |_| Trainable::Full },
];

/// The names of [`TRAINABLE_SETS`], in table order (a grid factor's allowed values).
pub const TRAINABLE_SET_NAMES: [&str; TRAINABLE_SETS.len()] = {
    let mut out = [""; TRAINABLE_SETS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = TRAINABLE_SETS[i].name;
        i += 1;
    }
    out
};

/// The trainable set an arm name stands for: a [`TRAINABLE_SETS`] name, or
/// otherwise any [`Trainable`] text form (`lora:8:q,v`, `norm`, ...).
pub fn trainable_set(name: &str, lora_rank: usize) -> Result<Trainable> {
    match TRAINABLE_SETS.iter().find(|s| s.name == name) {
        Some(s) => match (s.build)(lora_rank) {
            Trainable::Lora { rank: 0, .. } => {
                Err(EngineError::Config(format!("arm `{name}` needs a LoRA rank above 0")))
            }
            t => Ok(t),
        },
        None => name.parse(),
    }
}

/// The header stored in the safetensors `__metadata__` under key `bets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterHeader {
    pub format: u32,
    /// [`Trainable`] in its text form.
    pub kind: String,
    /// Hash of the base model the adapter was trained on.
    pub base_hash: String,
    /// LoRA multiplier (alpha / rank); 1 otherwise.
    pub lora_scale: f64,
}

/// A fine-tune's result, kept apart from the base.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub kind: Trainable,
    pub base_hash: String,
    /// LoRA multiplier applied to `x A B`.
    pub lora_scale: f64,
    /// Tensor name -> value, sorted by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl Adapter {
    /// The base model with this adapter applied.
    pub fn view<'a>(&'a self, base: &'a BaseModel) -> View<'a> {
        let mut v = base.view();
        match self.kind {
            Trainable::Lora { .. } => {
                v.lora = self.tensors.clone();
                v.lora_scale = self.lora_scale;
            }
            _ => v.over = self.tensors.clone(),
        }
        v
    }

    /// Number of scalars stored.
    pub fn param_count(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }

    /// The adapter as safetensors bytes (deterministic: tensors sorted by
    /// name, one metadata key), the form adapters are stored and sent in.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = AdapterHeader {
            format: ADAPTER_FORMAT,
            kind: self.kind.to_string(),
            base_hash: self.base_hash.clone(),
            lora_scale: self.lora_scale,
        };
        let json = serde_json::to_string(&header).expect("header serialises");
        let meta = HashMap::from([("bets".to_string(), json)]);
        let malformed = |e: String| EngineError::Malformed { what: "adapter tensors".into(), detail: e };
        if self.kind == Trainable::NormOnly && !self.tensors.is_empty() {
            // One stacked tensor, rows in sorted gain-name order: the file is
            // the gains plus a header of a few hundred bytes.
            let rows: Vec<Tensor> =
                self.tensors.values().map(|t| t.flatten_all()).collect::<candle_core::Result<_>>()?;
            let stacked = Tensor::stack(&rows, 0)?;
            return safetensors::serialize([(NORM_GAINS, &stacked)], Some(meta)).map_err(|e| malformed(e.to_string()));
        }
        let data: Vec<(&String, &Tensor)> = self.tensors.iter().collect();
        safetensors::serialize(data, Some(meta)).map_err(|e| malformed(e.to_string()))
    }

    /// Read an adapter from the bytes [`Adapter::to_bytes`] gives and check
    /// it belongs to `base` (hash, kind and tensor names and shapes).
    pub fn from_bytes(bytes: &[u8], base: &BaseModel) -> Result<Adapter> {
        let malformed = |d: String| EngineError::Malformed { what: "adapter file".into(), detail: d };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| malformed(e.to_string()))?;
        let json =
            meta.metadata().as_ref().and_then(|m| m.get("bets")).ok_or_else(|| malformed("no bets header".into()))?;
        let header: AdapterHeader = serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
        if header.format != ADAPTER_FORMAT {
            return Err(malformed(format!("format {} (this build reads {ADAPTER_FORMAT})", header.format)));
        }
        if header.base_hash != base.hash {
            return Err(EngineError::AdapterMismatch(format!(
                "trained on base {}, applied to base {}",
                short(&header.base_hash),
                short(&base.hash)
            )));
        }
        let kind: Trainable = header.kind.parse()?;
        let mut tensors: BTreeMap<String, Tensor> =
            candle_core::safetensors::load_buffer(bytes, &base.device)?.into_iter().collect();
        if kind == Trainable::NormOnly
            && let Some(stacked) = tensors.remove(NORM_GAINS)
        {
            let names: Vec<(String, Vec<usize>)> = expected_shapes(&kind, base).into_iter().collect();
            if stacked.dim(0)? != names.len() {
                return Err(malformed(format!("{} gain rows, the base has {} norms", stacked.dim(0)?, names.len())));
            }
            for (i, (name, shape)) in names.into_iter().enumerate() {
                tensors.insert(name, stacked.get(i)?.reshape(shape)?);
            }
        }
        let adapter = Adapter { kind, base_hash: header.base_hash, lora_scale: header.lora_scale, tensors };
        adapter.check_against(base)?;
        Ok(adapter)
    }

    /// The tensor names and shapes this kind must have on `base`.
    pub fn check_against(&self, base: &BaseModel) -> Result<()> {
        let expected = expected_shapes(&self.kind, base);
        let got: BTreeMap<String, Vec<usize>> =
            self.tensors.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
        if expected != got {
            let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).take(3).collect();
            let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).take(3).collect();
            return Err(EngineError::AdapterMismatch(format!(
                "{} adapter tensors differ from what the base expects (missing {missing:?}, unexpected {extra:?}, or shapes differ)",
                self.kind
            )));
        }
        Ok(())
    }

    /// Element-wise mean of adapters of the same kind on the same base
    /// (federated averaging, merging two users).
    pub fn average(adapters: &[&Adapter]) -> Result<Adapter> {
        let first = adapters.first().ok_or_else(|| EngineError::AdapterMismatch("nothing to average".into()))?;
        for a in adapters {
            if a.kind != first.kind || a.base_hash != first.base_hash || a.tensors.len() != first.tensors.len() {
                return Err(EngineError::AdapterMismatch("averaging needs adapters of one kind on one base".into()));
            }
        }
        let n = adapters.len() as f64;
        let mut tensors = BTreeMap::new();
        for name in first.tensors.keys() {
            let mut sum = first.tensors[name].clone();
            for a in &adapters[1..] {
                let t = a.tensors.get(name).ok_or_else(|| EngineError::AdapterMismatch(format!("missing {name}")))?;
                sum = (sum + t)?;
            }
            tensors.insert(name.clone(), (sum / n)?);
        }
        Ok(Adapter {
            kind: first.kind.clone(),
            base_hash: first.base_hash.clone(),
            lora_scale: first.lora_scale,
            tensors,
        })
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// Names and shapes an adapter of `kind` has on `base`.
pub fn expected_shapes(kind: &Trainable, base: &BaseModel) -> BTreeMap<String, Vec<usize>> {
    let shape = |n: &str| base.weights.get(n).map(|t| t.dims().to_vec()).unwrap_or_default();
    match kind {
        Trainable::Full => base.weights.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect(),
        Trainable::NormOnly => gain_names(&base.config).into_iter().map(|n| (n.clone(), shape(&n))).collect(),
        Trainable::None => BTreeMap::new(),
        Trainable::Lora { rank, targets } => {
            let mut out = BTreeMap::new();
            for t in targets {
                for p in t.prefixes(&base.config) {
                    let s = shape(&format!("{p}.weight"));
                    out.insert(format!("{p}.lora_a"), vec![s[0], *rank]);
                    out.insert(format!("{p}.lora_b"), vec![*rank, s[1]]);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainable_sets_round_trip_through_text() {
        for s in ["full", "norm-only", "none", "lora:4:q,v", "lora:8:ffn,k,o,q,v"] {
            let t: Trainable = s.parse().unwrap();
            let back: Trainable = t.to_string().parse().unwrap();
            assert_eq!(t, back);
        }
        assert_eq!("lora:8".parse::<Trainable>().unwrap().to_string(), "lora:8:q,v");
        assert!("lora:0:q".parse::<Trainable>().is_err());
        assert!("lora:2:x".parse::<Trainable>().is_err());
        assert!("everything".parse::<Trainable>().is_err());
    }

    #[test]
    fn named_arms_mean_what_their_strings_always_meant() {
        assert_eq!(TRAINABLE_SET_NAMES, ["none", "norm-only", "lora-r4", "full"]);
        assert_eq!(trainable_set("none", 4).unwrap(), Trainable::None);
        assert_eq!(trainable_set("norm-only", 4).unwrap(), Trainable::NormOnly);
        assert_eq!(trainable_set("full", 4).unwrap(), Trainable::Full);
        // `lora-r4` is LoRA on every projection at the budget's rank.
        assert_eq!(trainable_set("lora-r4", 4).unwrap().to_string(), "lora:4:q,k,v,o,ffn");
        assert_eq!(trainable_set("lora-r4", 8).unwrap(), "lora:8:q,k,v,o,ffn".parse().unwrap());
        // Any other name is a trainable set's text form.
        assert_eq!(trainable_set("norm", 4).unwrap(), Trainable::NormOnly);
        assert_eq!(trainable_set("lora:2:v", 4).unwrap().to_string(), "lora:2:v");
        assert!(trainable_set("lora-r5", 4).is_err());
    }
}
