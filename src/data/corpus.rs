//! Documents, users and the seeded split: each user's documents go once,
//! by a seeded hash of the document id, into a training slice and three
//! held-out slices A, B, C; the general corpus (the base model's text) keeps
//! a small held-out part. Everything here is a pure function of the documents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{DataError, Result};

/// Seed of the document split; recorded with every result through the split hashes.
pub const SPLIT_SEED: u64 = 0;

/// Percent of a user's documents that go to training; the rest is shared
/// equally by slices A, B and C.
const TRAIN_PERCENT: u64 = 70;
/// Percent of the general corpus held out for evaluating the base model.
const GENERAL_EVAL_PERCENT: u64 = 5;

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
                return Err(DataError::EmptyUser {
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

pub(super) fn join(docs: &[Document]) -> Vec<u8> {
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
                return Err(DataError::EmptyUser {
                    user: "general".into(),
                    what: what.into(),
                    hint: "the base corpus needs more documents".into(),
                });
            }
        }
        let users = users.into_iter().map(|u| (u.name.clone(), u)).collect();
        Ok(Corpus { general_train: train, general_eval: eval, users, split_seed })
    }

    /// User names, sorted.
    pub fn users(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    fn user(&self, user: &str) -> Result<&UserCorpus> {
        self.users.get(user).ok_or_else(|| DataError::UnknownUser(user.into()))
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

    /// One third of the base model's held-out text: its documents in id
    /// order, dealt round-robin to slices A, B, C (so each slice mixes the
    /// genres, and none is empty while there are three documents).
    /// `Train` gives the base's training text.
    pub fn general_eval_slice(&self, slice: Split) -> Vec<u8> {
        let k = match slice {
            Split::Train => return self.general_train(),
            Split::A => 0,
            Split::B => 1,
            Split::C => 2,
        };
        let docs: Vec<Document> = self.general_eval.iter().skip(k).step_by(3).cloned().collect();
        join(&docs)
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
