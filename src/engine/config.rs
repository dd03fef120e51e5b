//! Model geometry and training budgets, with the named presets `tiny`,
//! `small` and `paper` in one table, [`PROFILES`] (a "manifest" is just a
//! serialised [`ModelConfig`]).

use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};

/// Geometry of a FractalMoE byte-level decoder. Serialised (JSON, fixed field
/// order) into every base model's cache key, so any change builds a new base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size: 256 (bytes).
    pub vocab: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads (`d_model` must be divisible by it).
    pub heads: usize,
    /// Experts in each MoE feed-forward; 1 makes it a dense MLP.
    pub experts: usize,
    /// Hidden width of each expert.
    pub expert_width: usize,
    /// Context length in bytes (learned positions).
    pub context: usize,
}

impl ModelConfig {
    /// Check the geometry makes sense before building anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(EngineError::Config(m.into()));
        if self.vocab != 256 {
            return bad("vocab must be 256 (the model reads bytes)");
        }
        if self.d_model == 0 || self.layers == 0 || self.heads == 0 || self.experts == 0 || self.context < 2 {
            return bad("d_model, layers, heads, experts must be positive and context at least 2");
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return bad("d_model must be divisible by heads");
        }
        if self.expert_width == 0 {
            return bad("expert_width must be positive");
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// Total parameter count (all experts).
    pub fn param_count(&self) -> usize {
        let d = self.d_model;
        let router = if self.experts > 1 { d * self.experts } else { 0 };
        let block = 2 * d + 4 * d * d + router + self.experts * 2 * d * self.expert_width;
        self.vocab * d + self.context * d + self.layers * block + d + d * self.vocab
    }
}

/// Budgets for pre-training a base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
}

/// A named preset: model geometry plus the pre-training budget that goes with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub model: ModelConfig,
    pub pretrain: PretrainConfig,
}

/// One line of the profile table.
#[derive(Debug, Clone)]
pub struct ProfileDef {
    pub name: &'static str,
    /// What the profile is for.
    pub doc: &'static str,
    pub model: ModelConfig,
    pub pretrain: PretrainConfig,
}

/// Every profile, one line each: the one table specs and the engine read
/// (adding a profile is adding a line here).
pub const PROFILES: &[ProfileDef] = &[
    ProfileDef {
        name: "tiny",
        doc: "tests: trains in seconds",
        model: ModelConfig { vocab: 256, d_model: 32, layers: 2, heads: 2, experts: 2, expert_width: 64, context: 32 },
        pretrain: PretrainConfig { steps: 60, batch: 8, lr: 3e-3, warmup: 10 },
    },
    ProfileDef {
        name: "small",
        doc: "the default: a useful base on 2 cores in minutes",
        model: ModelConfig {
            vocab: 256,
            d_model: 128,
            layers: 4,
            heads: 4,
            experts: 4,
            expert_width: 256,
            context: 128,
        },
        pretrain: PretrainConfig { steps: 2000, batch: 16, lr: 2e-3, warmup: 100 },
    },
    ProfileDef {
        name: "paper",
        doc: "4 x 256, 16 experts: the original geometry, for a workstation or GPU",
        model: ModelConfig {
            vocab: 256,
            d_model: 256,
            layers: 4,
            heads: 8,
            experts: 16,
            expert_width: 512,
            context: 256,
        },
        pretrain: PretrainConfig { steps: 6000, batch: 32, lr: 1e-3, warmup: 300 },
    },
];

/// The names of [`PROFILES`], in table order.
pub const PROFILE_NAMES: [&str; PROFILES.len()] = {
    let mut out = [""; PROFILES.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = PROFILES[i].name;
        i += 1;
    }
    out
};

impl Profile {
    /// Names accepted by [`Profile::from_name`].
    pub const NAMES: [&'static str; PROFILES.len()] = PROFILE_NAMES;

    /// The profile called `name` in [`PROFILES`].
    pub fn from_name(name: &str) -> Result<Profile> {
        match PROFILES.iter().find(|p| p.name == name) {
            Some(p) => Ok(Profile { name: name.into(), model: p.model.clone(), pretrain: p.pretrain.clone() }),
            None => Err(EngineError::Config(format!(
                "unknown profile `{name}`; expected one of {}",
                Profile::NAMES.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_profile_is_valid_and_unknown_names_are_refused() {
        for n in Profile::NAMES {
            Profile::from_name(n).unwrap().model.validate().unwrap();
        }
        assert!(Profile::from_name("huge").is_err());
        let p = Profile::from_name("paper").unwrap().model;
        assert_eq!((p.layers, p.d_model, p.experts), (4, 256, 16));
        assert_eq!(Profile::NAMES, ["tiny", "small", "paper"]);
    }
}
