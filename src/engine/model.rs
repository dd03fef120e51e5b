//! The FractalMoE byte-level decoder: embeddings, pre-norm blocks of causal
//! multi-head attention and a top-1 mixture-of-experts feed-forward, a final
//! RMSNorm and the LM head.
//!
//! Weights live in a name-sorted map whose names mirror the module tree
//! (`blocks.0.attn.q.weight`, `blocks.0.moe.experts.1.up.weight`, ...), as a
//! candle `VarBuilder::pp` path would give them. Linear weights are stored
//! `[in, out]` so a projection is one `x.matmul(w)`. A [`View`] overlays
//! trainable or adapter tensors on the frozen base without copying it.
//!
//! The forward pass is three stages a pipeline can split across workers:
//! [`View::embed`] (tokens -> [`Hidden`]), [`View::forward_blocks`] over any
//! range of blocks, and [`View::head`] (hidden -> logits); [`View::forward`]
//! is exactly `embed -> blocks 0..layers -> head`. With a [`KvCache`] the
//! blocks keep each token's keys and values, so [`View::step`] and
//! [`View::generate`] decode one token at a time without recomputing the prefix.

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{D, DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::error::{EngineError, Result};
use super::{attention, experts, ops};

/// The packed linears of a ternary base ([`super::ternary`]), by prefix
/// (`blocks.0.attn.q`).
pub type TernaryLinears = BTreeMap<String, std::sync::Arc<kernels::ternary::Ternary>>;

/// Every named tensor of a model, sorted by name (hashing, saving and
/// flattening must not depend on hash-map order).
pub type Weights = BTreeMap<String, Tensor>;

/// RMSNorm epsilon.
pub const NORM_EPS: f32 = 1e-5;

/// A projection LoRA can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LoraTarget {
    /// Attention query projection.
    Q,
    /// Attention key projection.
    K,
    /// Attention value projection.
    V,
    /// Attention output projection.
    O,
    /// Both projections of every expert (up and down).
    Ffn,
}

impl LoraTarget {
    /// Every target, in order.
    pub const ALL: [LoraTarget; 5] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O, LoraTarget::Ffn];

    /// Lower-case name (`q`, `k`, `v`, `o`, `ffn`).
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Ffn => "ffn",
        }
    }

    /// Parse a name given by [`LoraTarget::name`].
    pub fn from_name(s: &str) -> Option<LoraTarget> {
        LoraTarget::ALL.into_iter().find(|t| t.name() == s.to_ascii_lowercase())
    }

    /// Prefixes (without `.weight`) of the linear layers this target names.
    pub fn prefixes(self, cfg: &ModelConfig) -> Vec<String> {
        let mut out = Vec::new();
        for l in 0..cfg.layers {
            match self {
                LoraTarget::Ffn => {
                    for e in 0..cfg.experts {
                        out.push(format!("blocks.{l}.moe.experts.{e}.up"));
                        out.push(format!("blocks.{l}.moe.experts.{e}.down"));
                    }
                }
                t => out.push(format!("blocks.{l}.attn.{}", t.name())),
            }
        }
        out
    }
}

/// How a tensor is initialised.
#[derive(Debug, Clone, Copy)]
enum Init {
    Ones,
    Normal(f32),
}

/// Names, shapes and initialisers of every base weight, sorted by name.
fn layout(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Init)> {
    let (d, f, v) = (cfg.d_model, cfg.expert_width, cfg.vocab);
    let fan = |n: usize| 1.0 / (n as f32).sqrt();
    let resid = 1.0 / (2.0 * cfg.layers as f32).sqrt();
    let mut out = vec![
        ("wte".to_string(), vec![v, d], Init::Normal(0.3)),
        ("wpe".to_string(), vec![cfg.context, d], Init::Normal(0.1)),
        ("norm_f.gain".to_string(), vec![d], Init::Ones),
        ("lm_head.weight".to_string(), vec![d, v], Init::Normal(fan(d))),
    ];
    for l in 0..cfg.layers {
        let p = format!("blocks.{l}");
        out.push((format!("{p}.norm1.gain"), vec![d], Init::Ones));
        out.push((format!("{p}.norm2.gain"), vec![d], Init::Ones));
        for n in ["q", "k", "v"] {
            out.push((format!("{p}.attn.{n}.weight"), vec![d, d], Init::Normal(fan(d))));
        }
        out.push((format!("{p}.attn.o.weight"), vec![d, d], Init::Normal(fan(d) * resid)));
        if cfg.experts > 1 {
            out.push((format!("{p}.moe.router.weight"), vec![d, cfg.experts], Init::Normal(0.02)));
        }
        for e in 0..cfg.experts {
            out.push((format!("{p}.moe.experts.{e}.up.weight"), vec![d, f], Init::Normal(fan(d))));
            out.push((format!("{p}.moe.experts.{e}.down.weight"), vec![f, d], Init::Normal(fan(f) * resid)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Names and shapes of every base weight of `cfg` (what a stored base must hold).
pub fn init_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    layout(cfg).into_iter().map(|(n, s, _)| (n, s)).collect()
}

/// A seed for one named tensor, so each tensor's values depend only on
/// (seed, name) and never on the order tensors are created in.
pub fn tensor_seed(seed: u64, name: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::new().chain_update(seed.to_le_bytes()).chain_update(name.as_bytes()).finalize();
    u64::from_le_bytes(d[..8].try_into().expect("32-byte digest"))
}

/// `n` normal draws with standard deviation `std` (Box-Muller on ChaCha8).
pub fn normal_vec(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        out.push((r * th.cos()) as f32 * std);
        out.push((r * th.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

/// Every tensor's name and shape for `cfg`, in name order (what
/// [`init_weights`] builds, without building it).
pub fn shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = layout(cfg).into_iter().map(|(n, s, _)| (n, s)).collect();
    v.sort();
    v
}

/// Fresh, seeded weights for `cfg` on `device`.
pub fn init_weights(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Weights> {
    cfg.validate()?;
    let mut w = Weights::new();
    for (name, shape, init) in layout(cfg) {
        let n: usize = shape.iter().product();
        let data = match init {
            Init::Ones => vec![1f32; n],
            Init::Normal(std) => normal_vec(n, std, tensor_seed(seed, &name)),
        };
        w.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(w)
}

/// Names of every RMSNorm gain (the norm-only trainable set).
pub fn gain_names(cfg: &ModelConfig) -> Vec<String> {
    layout(cfg).into_iter().map(|(n, ..)| n).filter(|n| n.ends_with(".gain")).collect()
}

/// The base weights with trainable or adapter tensors overlaid.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub cfg: &'a ModelConfig,
    base: &'a Weights,
    /// Replacements for base tensors (full or norm-only training/adapters).
    pub over: BTreeMap<String, Tensor>,
    /// LoRA factors keyed `<prefix>.lora_a` (`[in, r]`) and `<prefix>.lora_b` (`[r, out]`).
    pub lora: BTreeMap<String, Tensor>,
    /// Multiplier of the LoRA update (alpha / rank).
    pub lora_scale: f64,
    /// Packed ternary linears of a ternary base, by prefix: used for every
    /// linear whose weight is not overlaid.
    pub ternary: Option<&'a TernaryLinears>,
}

/// What one forward pass produces.
#[derive(Debug)]
pub struct Forward {
    /// `[B*T, vocab]` next-byte logits.
    pub logits: Tensor,
    /// Switch-style load-balancing loss summed over MoE layers (scalar), if any.
    pub aux: Option<Tensor>,
    /// Per layer, the expert each of the `B*T` tokens was routed to.
    pub routes: Vec<Vec<u32>>,
}

/// The residual stream between stages, as one pipeline stage hands it to
/// the next: `x` is `[batch*len, d_model]`, `batch` sequences of `len`
/// tokens whose first is at position `pos`; `aux` and `routes` gather the
/// MoE load-balancing loss and the routes of the blocks run so far, and
/// `gates` their router probabilities (`[batch*len, experts]`, `None` for a
/// one-expert block), which an audit record keeps.
#[derive(Debug, Clone)]
pub struct Hidden {
    pub x: Tensor,
    pub batch: usize,
    pub len: usize,
    pub pos: usize,
    pub aux: Option<Tensor>,
    pub routes: Vec<Vec<u32>>,
    pub gates: Vec<Option<Tensor>>,
}

impl Hidden {
    /// A residual stream with nothing gathered yet.
    pub fn new(x: Tensor, batch: usize, len: usize, pos: usize) -> Hidden {
        Hidden { x, batch, len, pos, aux: None, routes: Vec::new(), gates: Vec::new() }
    }
}

/// What one mixture-of-experts layer gives back.
#[derive(Debug)]
pub struct MoeOut {
    /// `[N, d_model]`: each token's expert output, scaled by its gate.
    pub y: Tensor,
    /// Switch-style load-balancing loss (scalar); `None` with one expert.
    pub aux: Option<Tensor>,
    /// Per token, the expert it was routed to.
    pub routes: Vec<u32>,
    /// `[N, experts]` router probabilities; `None` with one expert.
    pub probs: Option<Tensor>,
}

/// [`MoeOut`] before the gates: `y` is each token's expert output, still
/// to be scaled by `gate` (`[N, 1]`) when there is one.
struct MoeParts {
    y: Tensor,
    gate: Option<Tensor>,
    aux: Option<Tensor>,
    routes: Vec<u32>,
    probs: Option<Tensor>,
}

/// Keys and values of the tokens seen so far, per block, each
/// `[batch, heads, seen, head_dim]`: what incremental decoding reuses. A
/// pipeline stage keeps the cache of its own blocks.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    blocks: BTreeMap<usize, (Tensor, Tensor)>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Tokens whose keys and values are held (0 when empty).
    pub fn seen(&self) -> usize {
        self.blocks.values().next().map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Keys and values of block `l`, if held.
    pub fn block(&self, l: usize) -> Option<&(Tensor, Tensor)> {
        self.blocks.get(&l)
    }

    /// Every held block, in order: what an envelope carries.
    pub fn blocks(&self) -> impl Iterator<Item = (usize, &(Tensor, Tensor))> {
        self.blocks.iter().map(|(l, kv)| (*l, kv))
    }

    /// A cache holding `blocks` (as [`KvCache::blocks`] gave them); every
    /// block must hold the same number of tokens.
    pub fn from_blocks(blocks: BTreeMap<usize, (Tensor, Tensor)>) -> Result<KvCache> {
        let mut seen = None;
        for (l, (k, v)) in &blocks {
            if k.dims() != v.dims() || k.rank() != 4 {
                return Err(EngineError::Config(format!(
                    "block {l}: keys {:?} and values {:?} are not one [batch, heads, seen, head_dim] shape",
                    k.dims(),
                    v.dims()
                )));
            }
            match seen {
                None => seen = Some(k.dims()[2]),
                Some(s) if s != k.dims()[2] => {
                    return Err(EngineError::Config(format!(
                        "block {l} holds {} tokens, an earlier block {s}",
                        k.dims()[2]
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(KvCache { blocks })
    }
}

/// The state a greedy generation stands in after its prompt: the final
/// hidden row (`[1, d_model]`, after every block, before the head) and the
/// KV cache of the prompt. [`View::prefill`] makes one and
/// [`View::continue_from`] carries on from it, in this process or, inside
/// an [`super::envelope::Envelope`], in another.
#[derive(Debug, Clone)]
pub struct Prefilled {
    pub last: Tensor,
    pub cache: KvCache,
}

/// A greedy continuation and the logits each byte was chosen from.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    pub tokens: Vec<u8>,
    /// `tokens.len()` rows of `vocab` logits.
    pub logits: Vec<Vec<f32>>,
}

impl<'a> View<'a> {
    /// The base model as it is.
    pub fn new(cfg: &'a ModelConfig, base: &'a Weights) -> View<'a> {
        View { cfg, base, over: BTreeMap::new(), lora: BTreeMap::new(), lora_scale: 1.0, ternary: None }
    }

    /// The tensor in effect for `name`.
    pub fn w(&self, name: &str) -> Result<&Tensor> {
        match self.over.get(name).or_else(|| self.base.get(name)) {
            Some(t) => Ok(t),
            None => Err(candle_core::Error::Msg(format!("missing weight `{name}`")).into()),
        }
    }

    /// `x [N, in] -> [N, out]` through `<prefix>.weight`, plus its LoRA if any.
    /// A weight that is not a training variable takes the frozen path (no weight gradient).
    pub fn linear(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        let name = format!("{prefix}.weight");
        let mut y = match self.packed(prefix) {
            Some(t) => ops::ternary_linear(x, t)?,
            None => {
                let w = self.w(&name)?;
                if w.is_variable() { ops::linear(x, w)? } else { ops::frozen_matmul(x, w)? }
            }
        };
        if let Some((a, b)) = self.lora_factors(prefix) {
            y = (y + (x.matmul(a)?.matmul(b)? * self.lora_scale)?)?;
        }
        Ok(y)
    }

    /// The packed ternary matrix `prefix` runs through, if any: a ternary
    /// base's, unless an overlay replaces the weight.
    fn packed(&self, prefix: &str) -> Option<&std::sync::Arc<kernels::ternary::Ternary>> {
        if self.over.contains_key(&format!("{prefix}.weight")) { None } else { self.ternary?.get(prefix) }
    }

    /// The LoRA factors `(a, b)` on `prefix`, if both are there.
    fn lora_factors(&self, prefix: &str) -> Option<(&Tensor, &Tensor)> {
        Some((self.lora.get(&format!("{prefix}.lora_a"))?, self.lora.get(&format!("{prefix}.lora_b"))?))
    }

    /// `x + ` [`View::linear`]`(prefix, y)`: a residual connection and the
    /// projection into it, one op ([`ops::residual_linear`]) for a plain
    /// trained weight, which spares the graph the projection's own output.
    fn residual_linear(&self, prefix: &str, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let plain = self.packed(prefix).is_none() && self.lora_factors(prefix).is_none();
        match self.w(&format!("{prefix}.weight")) {
            Ok(w) if plain && w.is_variable() => Ok(ops::residual_linear(x, y, w)?),
            _ => Ok((x + self.linear(prefix, y)?)?),
        }
    }

    fn norm(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        Ok(ops::rms_norm(x, self.w(name)?, NORM_EPS)?)
    }

    /// Run the model on `tokens` (`[B, T]` u32, `T <= context`):
    /// [`View::embed`], every block, [`View::head`].
    pub fn forward(&self, tokens: &Tensor) -> Result<Forward> {
        let h = self.embed(tokens)?;
        let h = self.forward_blocks(0..self.cfg.layers, h, None)?;
        let logits = self.head(&h)?;
        Ok(Forward { logits, aux: h.aux, routes: h.routes })
    }

    /// Token and position embeddings of `tokens` (`[B, T]` u32) at positions `0..T`.
    pub fn embed(&self, tokens: &Tensor) -> Result<Hidden> {
        self.embed_at(tokens, 0)
    }

    /// Embeddings of `tokens` (`[B, T]` u32) at positions `pos..pos + T`
    /// (`pos + T <= context`).
    pub fn embed_at(&self, tokens: &Tensor, pos: usize) -> Result<Hidden> {
        let (b, t) = tokens.dims2()?;
        let d = self.cfg.d_model;
        if pos + t > self.cfg.context {
            return Err(EngineError::Config(format!(
                "positions {pos}..{} exceed the context of {} bytes",
                pos + t,
                self.cfg.context
            )));
        }
        let emb = self.w("wte")?.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, d))?;
        let wpe = self.w("wpe")?.narrow(0, pos, t)?;
        let x = emb.broadcast_add(&wpe)?.reshape((b * t, d))?;
        Ok(Hidden::new(x, b, t, pos))
    }

    /// Run blocks `blocks` (a sub-range of `0..layers`) on `h`. With a
    /// cache, each block's attention also sees the keys and values of the
    /// `h.pos` tokens before (which the cache must hold) and keeps the new ones.
    pub fn forward_blocks(&self, blocks: Range<usize>, h: Hidden, mut cache: Option<&mut KvCache>) -> Result<Hidden> {
        if blocks.start > blocks.end || blocks.end > self.cfg.layers {
            return Err(EngineError::Config(format!(
                "blocks {}..{} are not within the model's 0..{}",
                blocks.start, blocks.end, self.cfg.layers
            )));
        }
        let Hidden { mut x, batch: b, len: t, pos, mut aux, mut routes, mut gates } = h;
        for l in blocks {
            let p = format!("blocks.{l}");
            let h = self.norm(&format!("{p}.norm1.gain"), &x)?;
            x = self.attention(&p, l, &x, &h, (b, t, pos), cache.as_deref_mut())?;
            let h = self.norm(&format!("{p}.norm2.gain"), &x)?;
            let moe = self.moe_parts(&p, &h, self.fused_experts(&p, &h))?;
            x = match &moe.gate {
                Some(gate) => ops::gated_residual(&x, &moe.y, gate)?,
                None => (x + moe.y)?,
            };
            if let Some(a) = moe.aux {
                aux = Some(match aux {
                    Some(s) => (s + a)?,
                    None => a,
                });
            }
            routes.push(moe.routes);
            gates.push(moe.probs);
        }
        Ok(Hidden { x, batch: b, len: t, pos, aux, routes, gates })
    }

    /// Final norm and LM head: `[batch*len, vocab]` next-byte logits.
    pub fn head(&self, h: &Hidden) -> Result<Tensor> {
        let n = self.norm("norm_f.gain", &h.x)?;
        self.linear("lm_head", &n)
    }

    /// Logits (`[B*T, vocab]`) of `tokens` (`[B, T]`) that follow the
    /// tokens already in `cache`, which then holds these too.
    pub fn step(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let h = self.embed_at(tokens, cache.seen())?;
        let h = self.forward_blocks(0..self.cfg.layers, h, Some(cache))?;
        self.head(&h)
    }

    /// Greedy continuation of `prompt`: up to `max_new` bytes, fewer when
    /// the context fills up, decoded one byte at a time with a [`KvCache`]:
    /// [`View::prefill`] then [`View::continue_from`].
    pub fn generate(&self, prompt: &[u8], max_new: usize) -> Result<Vec<u8>> {
        Ok(self.continue_from(self.prefill(prompt)?, max_new)?.tokens)
    }

    /// Run `prompt` through every block, keeping its KV cache and its last
    /// hidden row (the head is left to [`View::continue_from`], so a
    /// continuation here and one from an envelope elsewhere are one path).
    pub fn prefill(&self, prompt: &[u8]) -> Result<Prefilled> {
        if prompt.is_empty() {
            return Err(EngineError::Config("generation needs a prompt of at least one byte".into()));
        }
        let device = self.w("wte")?.device().clone();
        let mut cache = KvCache::new();
        let h = self.embed_at(&tokens(prompt, &device)?, 0)?;
        let h = self.forward_blocks(0..self.cfg.layers, h, Some(&mut cache))?;
        let last = h.x.narrow(0, h.x.dim(0)? - 1, 1)?;
        Ok(Prefilled { last, cache })
    }

    /// Greedy continuation from a prefilled state: up to `max_new` bytes,
    /// fewer when the context fills up, with the logits of each.
    pub fn continue_from(&self, state: Prefilled, max_new: usize) -> Result<Continuation> {
        let Prefilled { last, mut cache } = state;
        if cache.seen() == 0 {
            return Err(EngineError::Config("a continuation needs a prefilled prompt".into()));
        }
        let device = self.w("wte")?.device().clone();
        let mut row = self.head(&Hidden::new(last, 1, 1, 0))?;
        let mut out = Continuation { tokens: Vec::with_capacity(max_new), logits: Vec::with_capacity(max_new) };
        while out.tokens.len() < max_new {
            let next = argmax_rows(&row)?[0] as u8;
            out.tokens.push(next);
            out.logits.push(row.flatten_all()?.to_vec1()?);
            if out.tokens.len() == max_new || cache.seen() >= self.cfg.context {
                break;
            }
            let h = self.embed_at(&tokens(&[next], &device)?, cache.seen())?;
            let h = self.forward_blocks(0..self.cfg.layers, h, Some(&mut cache))?;
            row = self.head(&h)?;
        }
        Ok(out)
    }

    /// The residual stream `x` plus block `l`'s (prefix `p`) causal
    /// self-attention on `h [b*t, d]` (its normed `x`), the tokens at
    /// positions `pos..pos + t`; `(b, t, pos)` is `shape`. Without
    /// a cache (training, evaluation) it is the fused
    /// [`attention::causal_attention`]; with one, the new tokens' queries
    /// attend over the cached keys and values plus their own.
    fn attention(
        &self,
        p: &str,
        l: usize,
        x: &Tensor,
        h: &Tensor,
        shape: (usize, usize, usize),
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t, pos) = shape;
        let (nh, hd) = (self.cfg.heads, self.cfg.head_dim());
        let scale = 1.0 / (hd as f32).sqrt();
        let Some(cache) = cache else {
            let [q, k, v] = ["q", "k", "v"].map(|n| self.linear(&format!("{p}.attn.{n}"), h));
            let geometry = attention::Geometry { batch: b, len: t, heads: nh, head_dim: hd };
            let y = attention::causal_attention(&q?, &k?, &v?, geometry, scale)?;
            return self.residual_linear(&format!("{p}.attn.o"), x, &y);
        };
        let split = |name: &str| -> Result<Tensor> {
            let y = self.linear(&format!("{p}.attn.{name}"), h)?;
            Ok(y.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let (q, mut k, mut v) = (split("q")?, split("k")?, split("v")?);
        let held = cache.blocks.get(&l).map(|(k, _)| k.dims()[2]).unwrap_or(0);
        if held != pos {
            return Err(EngineError::Config(format!(
                "block {l}'s cache holds {held} tokens, but these start at position {pos}"
            )));
        }
        if let Some((pk, pv)) = cache.blocks.get(&l) {
            k = Tensor::cat(&[pk, &k], 2)?;
            v = Tensor::cat(&[pv, &v], 2)?;
        }
        cache.blocks.insert(l, (k.detach(), v.detach()));
        let scores = q.matmul(&k.t()?)?;
        let att = if k.dim(2)? == t {
            ops::causal_softmax(&scores, scale)?
        } else {
            ops::causal_softmax_offset(&scores, scale)?
        };
        let y = att.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * t, nh * hd))?;
        self.residual_linear(&format!("{p}.attn.o"), x, &y)
    }

    /// Expert `e` of block prefix `p` (`blocks.L`): `down(gelu(up(x)))`.
    pub fn expert(&self, p: &str, e: usize, x: &Tensor) -> Result<Tensor> {
        let up = self.linear(&format!("{p}.moe.experts.{e}.up"), x)?;
        self.linear(&format!("{p}.moe.experts.{e}.down"), &ops::gelu(&up)?)
    }

    /// Top-1 mixture of experts of block prefix `p` on `h [N, d]`: each token goes to the argmax of the router
    /// logits and its output is scaled by that expert's softmax probability
    /// (so the router learns). On the CPU the experts run as one fused op
    /// ([`experts::experts`]) unless LoRA or packed ternary weights sit on
    /// them; elsewhere they are composed from candle ops, with the same bits.
    pub fn moe(&self, p: &str, h: &Tensor) -> Result<MoeOut> {
        self.moe_with(p, h, self.fused_experts(p, h))
    }

    /// [`View::moe`], the experts fused or composed as `fused` says (the
    /// tests compare the two).
    pub fn moe_with(&self, p: &str, h: &Tensor, fused: bool) -> Result<MoeOut> {
        let MoeParts { y, gate, aux, routes, probs } = self.moe_parts(p, h, fused)?;
        let y = match gate {
            Some(gate) => y.broadcast_mul(&gate)?,
            None => y,
        };
        Ok(MoeOut { y, aux, routes, probs })
    }

    /// [`View::moe_with`], except that the fused experts' outputs come back
    /// unscaled with their gates beside them: a block adds them to its
    /// residual stream in one op ([`ops::gated_residual`]).
    fn moe_parts(&self, p: &str, h: &Tensor, fused: bool) -> Result<MoeParts> {
        let e_count = self.cfg.experts;
        let n = h.dim(0)?;
        if e_count == 1 {
            let y = self.expert(p, 0, h)?;
            return Ok(MoeParts { y, gate: None, aux: None, routes: vec![0; n], probs: None });
        }
        let logits = self.linear(&format!("{p}.moe.router"), h)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let route = argmax_rows(&logits)?;
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); e_count];
        for (i, &r) in route.iter().enumerate() {
            rows[r as usize].push(i);
        }
        let counts: Vec<f32> = rows.iter().map(|r| r.len() as f32 / n as f32).collect();
        let (y, gate) = if fused {
            let stack = |which: &str| -> Result<Tensor> {
                let ws = (0..e_count)
                    .map(|e| self.w(&format!("{p}.moe.experts.{e}.{which}.weight")))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&ws, 0)?)
            };
            let y = experts::experts(h, &stack("up")?, &stack("down")?, rows)?;
            let route_t = Tensor::from_vec(route.clone(), (n, 1), h.device())?;
            (y, Some(probs.gather(&route_t, 1)?))
        } else {
            let mut out = Tensor::zeros((n, self.cfg.d_model), h.dtype(), h.device())?;
            for (e, rows) in rows.iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                let idx = Tensor::from_vec(idx, rows.len(), h.device())?;
                let xe = h.index_select(&idx, 0)?;
                let gate = probs.index_select(&idx, 0)?.narrow(1, e, 1)?;
                let ye = self.expert(p, e, &xe)?.broadcast_mul(&gate)?;
                out = out.index_add(&idx, &ye, 0)?;
            }
            (out, None)
        };
        let f = Tensor::from_vec(counts, e_count, h.device())?;
        let aux = ((probs.mean(0)? * f)?.sum_all()? * e_count as f64)?;
        Ok(MoeParts { y, gate, aux: Some(aux), routes: route, probs: Some(probs) })
    }

    /// Whether block `p`'s experts can run as the fused op: f32 on the CPU,
    /// and plain weights (no LoRA factors, no packed ternary matrices).
    fn fused_experts(&self, p: &str, h: &Tensor) -> bool {
        let prefix = format!("{p}.moe.experts.");
        h.device().is_cpu()
            && h.dtype() == DType::F32
            && !self.lora.keys().any(|k| k.starts_with(&prefix))
            && !self.ternary.is_some_and(|m| m.keys().any(|k| k.starts_with(&prefix)))
    }
}

/// Index of the largest value of each row of a `[N, E]` tensor (lowest index on ties).
pub fn argmax_rows(t: &Tensor) -> Result<Vec<u32>> {
    let (rows, width) = t.dims2()?;
    if width == 0 {
        return Ok(vec![0; rows]);
    }
    // One flat copy: `to_vec2` allocated a vector per row (2,048 a layer at `small`).
    let flat = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat
        .chunks(width)
        .map(|r| {
            let mut best = 0;
            for (i, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

/// Bytes as a `[1, len]` u32 token tensor.
pub fn tokens(bytes: &[u8], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
    Ok(Tensor::from_vec(v, (1, bytes.len()), device)?)
}
