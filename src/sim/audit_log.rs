//! A Merkle-committed inference log (bet 64): can the operator of an audit
//! log forge, delete or rewrite an entry without a verifier who holds only
//! an earlier signed checkpoint noticing?
//!
//! The model:
//!
//! - A server logs every inference it serves as one entry (sequence number,
//!   client, specialist manifest hash, request and response hashes) in an
//!   RFC 6962 log ([`crate::tlog::Tree`]) and publishes a signed C2SP
//!   checkpoint ([`crate::tlog::checkpoint`]) every `checkpoint_every`
//!   entries and at the end.
//! - A verifier (a client, an auditor) holds one earlier checkpoint, checked
//!   when it got it. Later the operator hands it a *presentation*: a newer
//!   signed checkpoint, a consistency proof from the held one, and an entry
//!   with its inclusion proof in the newer tree. The verifier is either a
//!   `checkpoint-holder` (checks the signature, that the log did not shrink,
//!   the consistency proof and the inclusion proof) or, as the negative
//!   control, `latest-only` (checks the signature and the inclusion proof
//!   against the presented checkpoint, and ignores what it held).
//! - The adversary is the operator itself, so it holds the signing key and
//!   signs whatever it likes; its only limit is SHA-256. Each attempt picks
//!   the victim's held checkpoint at random and does its best:
//!   - `forge`: an entry the held checkpoint covers gets other contents (a
//!     different specialist and response). Either the operator rebuilds the
//!     tree around the forged entry and signs it ("rewrite"), or it keeps the
//!     honest tree and presents the forged entry with the genuine entry's
//!     audit path ("splice"); attempts alternate between the two.
//!   - `delete`: an entry the held checkpoint covers disappears. Either it
//!     is cut out and the rest shifted down ("excise"), or the log is cut
//!     back to before it and regrown with fresh entries to its old length
//!     ("truncate"); attempts alternate.
//!   - `fork`: a second history that agrees with the first up to an earlier
//!     checkpoint and then diverges; the victim holds a checkpoint of the
//!     first branch after the fork and is shown the second branch, at its
//!     own size or later.
//! - Honest traffic is audited through the same verifier: a sample of
//!   entries, each presented with the final checkpoint, the consistency
//!   proof from the checkpoint that first committed it, and its inclusion
//!   proof. A rejection there is a false alarm.
//!
//! What the log does not claim: an entry appended *after* every checkpoint
//! a verifier holds is not covered by any commitment, so a made-up entry
//! appended at the end is indistinguishable from an honest one here; that
//! needs client-signed entries (bet 68's receipts), not a Merkle log.
//!
//! Randomness: one ChaCha8 stream for the honest traffic and the operator's
//! key, one for the honest sample, one for the adversary, so changing the
//! attack or the verifier keeps the same log (paired comparison).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InvalidParam;
use crate::tlog::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use crate::tlog::{Hash, Tree, leaf_hash, verify_consistency, verify_inclusion};

/// What the dishonest operator tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Change the contents of a committed entry.
    Forge,
    /// Remove a committed entry.
    Delete,
    /// Show the victim a second history that diverges after an earlier checkpoint.
    Fork,
}

/// How much a verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verifier {
    /// Signature, no shrinking, consistency with the held checkpoint, inclusion.
    CheckpointHolder,
    /// Signature and inclusion against the presented checkpoint only (the control).
    LatestOnly,
}

/// Parameters of one audit-log simulation. The catalogue fixes no scale
/// for bet 64; these defaults are the ones bet 64 registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuditLogParams {
    /// Entries in the log at the end (one per served inference).
    pub entries: usize,
    /// A checkpoint is signed every this many entries (and at the end).
    pub checkpoint_every: usize,
    /// Clients issuing requests.
    pub clients: usize,
    /// Specialists serving them.
    pub specialists: usize,
    /// Honest entries sampled and verified, to measure false alarms.
    pub honest_checks: usize,
    /// Attack attempts per simulation.
    pub attempts: usize,
    /// The attack tried.
    pub attack: Attack,
    /// The verifier attacked.
    pub verifier: Verifier,
}

impl Default for AuditLogParams {
    fn default() -> Self {
        AuditLogParams {
            entries: 10_000,
            checkpoint_every: 100,
            clients: 1_000,
            specialists: 100,
            honest_checks: 1_000,
            attempts: 200,
            attack: Attack::Forge,
            verifier: Verifier::CheckpointHolder,
        }
    }
}

/// Upper bound on `entries`: proofs here are built in O(entries) each.
pub const MAX_ENTRIES: usize = 1_000_000;

impl AuditLogParams {
    /// Reject parameters outside the model's range, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if self.entries < 2 || self.entries > MAX_ENTRIES {
            return Err(InvalidParam::new("entries", format!("must be in 2..={MAX_ENTRIES}")));
        }
        if self.checkpoint_every == 0 || self.checkpoint_every * 2 > self.entries {
            return Err(InvalidParam::new(
                "checkpoint_every",
                "must be at least 1 and at most entries / 2 (a fork needs two checkpoints before the end)",
            ));
        }
        if self.clients == 0 || self.clients > u32::MAX as usize {
            return Err(InvalidParam::new("clients", "must be at least 1"));
        }
        if self.specialists < 2 {
            return Err(InvalidParam::new("specialists", "must be at least 2 (a forgery swaps the specialist)"));
        }
        if self.honest_checks > 1_000_000 {
            return Err(InvalidParam::new("honest_checks", "must be at most 1000000"));
        }
        if self.attempts > 1_000_000 {
            return Err(InvalidParam::new("attempts", "must be at most 1000000"));
        }
        Ok(())
    }

    /// The sizes at which checkpoints are signed, ascending.
    pub fn checkpoint_sizes(&self) -> Vec<u64> {
        let every = self.checkpoint_every as u64;
        let n = self.entries as u64;
        let mut sizes: Vec<u64> = (1..=n / every).map(|k| k * every).collect();
        if sizes.last() != Some(&n) {
            sizes.push(n);
        }
        sizes
    }
}

/// Why a verifier refused a presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Detection {
    /// The presented checkpoint is not signed by the log's key.
    #[error("the checkpoint's signature does not verify")]
    Signature,
    /// The presented log is smaller than the one the verifier holds.
    #[error("the log shrank below the held checkpoint")]
    Rollback,
    /// No valid proof that the presented log extends the held one.
    #[error("the presented checkpoint is not consistent with the held one")]
    Consistency,
    /// The entry is not at that index of the presented log.
    #[error("the entry's inclusion proof does not hold")]
    Inclusion,
}

/// What the operator hands a verifier.
#[derive(Debug, Clone)]
pub struct Presentation {
    /// A signed checkpoint note (C2SP signed-note text).
    pub note: String,
    /// Proof that the presented log extends the held checkpoint's.
    pub consistency: Vec<Hash>,
    /// The entry claimed to be in the presented log.
    pub entry: Vec<u8>,
    /// Its claimed index.
    pub index: u64,
    /// Its audit path in the presented log.
    pub inclusion: Vec<Hash>,
}

/// Run a verifier of the given kind on a presentation, holding `held`.
pub fn check(kind: Verifier, key: &NoteVerifier, held: &Checkpoint, p: &Presentation) -> Result<(), Detection> {
    let new = key.open_checkpoint(&p.note).map_err(|_| Detection::Signature)?;
    if kind == Verifier::CheckpointHolder {
        if new.size < held.size {
            return Err(Detection::Rollback);
        }
        verify_consistency(held.size, new.size, &held.root, &new.root, &p.consistency)
            .map_err(|_| Detection::Consistency)?;
    }
    verify_inclusion(&leaf_hash(&p.entry), p.index, new.size, &p.inclusion, &new.root)
        .map_err(|_| Detection::Inclusion)?;
    Ok(())
}

/// What one audit-log simulation observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditLogOutcome {
    /// Entries in the honest log.
    pub entries: u64,
    /// Checkpoints the honest operator signed.
    pub checkpoints: u64,
    /// Of those, verified by the log's public key.
    pub checkpoints_verified: u64,
    /// Honest presentations checked.
    pub honest_checks: u64,
    /// Of those, refused (false alarms).
    pub honest_rejected: u64,
    /// Attack presentations made.
    pub attempts: u64,
    /// Of those, refused by the verifier.
    pub detected: u64,
    /// Refused because the signature failed.
    pub detected_by_signature: u64,
    /// Refused because the log shrank.
    pub detected_by_rollback: u64,
    /// Refused because the consistency proof failed.
    pub detected_by_consistency: u64,
    /// Refused because the inclusion proof failed.
    pub detected_by_inclusion: u64,
}

/// The log's origin line and key name.
const ORIGIN: &str = "bets/sim/audit-log";

/// One log entry: fixed-width little-endian fields after a domain tag, so
/// that no two different records share an encoding.
fn record(seq: u64, client: u32, specialist: &Hash, request: &Hash, response: &Hash) -> Vec<u8> {
    let mut e = b"bets/audit-entry/v1\0".to_vec();
    e.extend_from_slice(&seq.to_le_bytes());
    e.extend_from_slice(&client.to_le_bytes());
    e.extend_from_slice(specialist);
    e.extend_from_slice(request);
    e.extend_from_slice(response);
    e
}

fn digest(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Fresh traffic: entry `seq` drawn from `rng`.
fn draw_entry(rng: &mut ChaCha8Rng, seq: u64, manifests: &[Hash], clients: usize) -> Vec<u8> {
    let client = rng.random_range(0..clients) as u32;
    let specialist = manifests[rng.random_range(0..manifests.len())];
    let request: Hash = rng.random();
    let response: Hash = rng.random();
    record(seq, client, &specialist, &request, &response)
}

/// The honest log and what the operator needs to lie about it.
struct Log {
    entries: Vec<Vec<u8>>,
    tree: Tree,
    sizes: Vec<u64>,
    signer: NoteSigner,
    manifests: Vec<Hash>,
    clients: usize,
}

impl Log {
    fn checkpoint(tree: &Tree, size: u64) -> Checkpoint {
        Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: tree.root_at(size).expect("size within tree"),
            extensions: vec![],
        }
    }

    fn sign(&self, tree: &Tree, size: u64) -> String {
        self.signer.sign_checkpoint(&Self::checkpoint(tree, size)).expect("a valid checkpoint")
    }

    /// The presentation an operator with log `tree` (and its entries) makes
    /// to a verifier holding a checkpoint of `held` entries: checkpoint at
    /// `size`, consistency from `held` (empty if `held > size`), entry `index`.
    fn present(&self, tree: &Tree, entries: &[Vec<u8>], held: u64, size: u64, index: u64) -> Presentation {
        Presentation {
            note: self.sign(tree, size),
            consistency: if held <= size {
                tree.consistency_proof(held, size).expect("sizes in order")
            } else {
                vec![]
            },
            entry: entries[index as usize].clone(),
            index,
            inclusion: tree.inclusion_proof(index, size).expect("index within size"),
        }
    }

    /// The entry `seq` with the same client and request but another
    /// specialist and response: what a forger would want on the record.
    fn forged(&self, seq: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut e = self.entries[seq].clone();
        let tag = b"bets/audit-entry/v1\0".len();
        let spec_at = tag + 8 + 4;
        let current: Hash = e[spec_at..spec_at + 32].try_into().expect("32 bytes");
        let others: Vec<&Hash> = self.manifests.iter().filter(|m| **m != current).collect();
        let other = *others[rng.random_range(0..others.len())];
        e[spec_at..spec_at + 32].copy_from_slice(&other);
        let response: Hash = rng.random();
        e[spec_at + 64..spec_at + 96].copy_from_slice(&response);
        e
    }

    fn tree_of(entries: &[Vec<u8>]) -> Tree {
        Tree::from_leaf_hashes(entries.iter().map(|e| leaf_hash(e)).collect())
    }
}

/// Run one simulation: build and sign the honest log, audit a sample of
/// honest presentations, then make `attempts` attack presentations and
/// count what the verifier catches.
pub fn simulate(params: &AuditLogParams, seed: u64) -> Result<AuditLogOutcome, InvalidParam> {
    params.validate()?;
    let mut traffic = ChaCha8Rng::seed_from_u64(seed);
    traffic.set_stream(0);
    let mut sample = ChaCha8Rng::seed_from_u64(seed);
    sample.set_stream(1);
    let mut adversary = ChaCha8Rng::seed_from_u64(seed);
    adversary.set_stream(2);

    let key_seed: [u8; 32] = traffic.random();
    let signer = NoteSigner::from_seed(ORIGIN, &key_seed).expect("a valid key name and seed");
    let key = signer.verifier();
    let manifests: Vec<Hash> = (0..params.specialists as u64)
        .map(|i| digest(&[b"bets/audit-manifest/v1\0", &seed.to_le_bytes(), &i.to_le_bytes()]))
        .collect();
    let entries: Vec<Vec<u8>> =
        (0..params.entries as u64).map(|k| draw_entry(&mut traffic, k, &manifests, params.clients)).collect();
    let tree = Log::tree_of(&entries);
    let log = Log { entries, tree, sizes: params.checkpoint_sizes(), signer, manifests, clients: params.clients };
    let n = params.entries as u64;

    let mut out = AuditLogOutcome { entries: n, checkpoints: log.sizes.len() as u64, ..Default::default() };
    // Every published checkpoint, as verifiers receive it.
    let mut published = Vec::with_capacity(log.sizes.len());
    for &size in &log.sizes {
        let note = log.sign(&log.tree, size);
        if let Ok(c) = key.open_checkpoint(&note) {
            out.checkpoints_verified += 1;
            published.push(c);
        }
    }
    if published.len() != log.sizes.len() {
        // The honest operator's own checkpoints do not verify: nothing else can be judged.
        return Ok(out);
    }

    // Honest traffic through the same verifier.
    for _ in 0..params.honest_checks {
        let i = sample.random_range(0..n);
        let first = log.sizes.partition_point(|&s| s <= i);
        let p = log.present(&log.tree, &log.entries, published[first].size, n, i);
        out.honest_checks += 1;
        if check(params.verifier, &key, &published[first], &p).is_err() {
            out.honest_rejected += 1;
        }
    }

    for j in 0..params.attempts {
        let p_and_held = match params.attack {
            Attack::Forge => forge(&log, &published, &mut adversary, j),
            Attack::Delete => delete(&log, &published, &mut adversary, j),
            Attack::Fork => fork(&log, &published, &mut adversary, j),
        };
        let (held, p) = p_and_held;
        out.attempts += 1;
        match check(params.verifier, &key, held, &p) {
            Ok(()) => {}
            Err(d) => {
                out.detected += 1;
                match d {
                    Detection::Signature => out.detected_by_signature += 1,
                    Detection::Rollback => out.detected_by_rollback += 1,
                    Detection::Consistency => out.detected_by_consistency += 1,
                    Detection::Inclusion => out.detected_by_inclusion += 1,
                }
            }
        }
    }
    Ok(out)
}

/// A random published checkpoint at index `min_index` or later.
fn pick_held<'c>(published: &'c [Checkpoint], rng: &mut ChaCha8Rng, min_index: usize) -> (usize, &'c Checkpoint) {
    let h = rng.random_range(min_index..published.len());
    (h, &published[h])
}

/// A random published size at least `at_least` (the final size always is).
fn pick_size(log: &Log, rng: &mut ChaCha8Rng, at_least: u64) -> u64 {
    let from = log.sizes.partition_point(|&s| s < at_least);
    log.sizes[rng.random_range(from..log.sizes.len())]
}

fn forge<'c>(
    log: &Log,
    published: &'c [Checkpoint],
    rng: &mut ChaCha8Rng,
    attempt: usize,
) -> (&'c Checkpoint, Presentation) {
    let (_, held) = pick_held(published, rng, 0);
    let i = rng.random_range(0..held.size) as usize;
    let forged = log.forged(i, rng);
    let size = pick_size(log, rng, held.size);
    if attempt.is_multiple_of(2) {
        // Rewrite: rebuild the tree around the forged entry and sign it.
        let mut entries = log.entries.clone();
        entries[i] = forged;
        let tree = Log::tree_of(&entries);
        (held, log.present(&tree, &entries, held.size, size, i as u64))
    } else {
        // Splice: the honest tree and checkpoint, the forged entry on the genuine path.
        let mut p = log.present(&log.tree, &log.entries, held.size, size, i as u64);
        p.entry = forged;
        (held, p)
    }
}

fn delete<'c>(
    log: &Log,
    published: &'c [Checkpoint],
    rng: &mut ChaCha8Rng,
    attempt: usize,
) -> (&'c Checkpoint, Presentation) {
    let (_, held) = pick_held(published, rng, 0);
    let i = rng.random_range(0..held.size) as usize;
    let mut entries = log.entries.clone();
    if attempt.is_multiple_of(2) {
        // Excise: cut the entry out; everything after it moves down one.
        entries.remove(i);
    } else {
        // Truncate to before the entry, then regrow to the old length.
        entries.truncate(i);
        for k in i..log.entries.len() {
            entries.push(draw_entry(rng, k as u64, &log.manifests, log.clients));
        }
    }
    let tree = Log::tree_of(&entries);
    let len = entries.len() as u64;
    // The largest published size the shortened log can still sign, if it
    // reaches the held one; otherwise it can only show a smaller log.
    let size = if len >= held.size { pick_size(log, rng, held.size).min(len) } else { len };
    // Present the entry now at the deleted one's index (or the last one).
    let index = (i as u64).min(size - 1);
    (held, log.present(&tree, &entries, held.size, size, index))
}

fn fork<'c>(
    log: &Log,
    published: &'c [Checkpoint],
    rng: &mut ChaCha8Rng,
    attempt: usize,
) -> (&'c Checkpoint, Presentation) {
    // The victim holds a checkpoint of the honest branch after the fork point.
    let (h, held) = pick_held(published, rng, 1);
    let fork_at = published[rng.random_range(0..h)].size as usize;
    let mut entries = log.entries[..fork_at].to_vec();
    for k in fork_at..log.entries.len() {
        entries.push(draw_entry(rng, k as u64, &log.manifests, log.clients));
    }
    let tree = Log::tree_of(&entries);
    // The other branch at the victim's own size, or later.
    let size = if attempt.is_multiple_of(2) { held.size } else { pick_size(log, rng, held.size) };
    let index = rng.random_range(fork_at as u64..size);
    (held, log.present(&tree, &entries, held.size, size, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(attack: Attack, verifier: Verifier) -> AuditLogParams {
        AuditLogParams {
            entries: 300,
            checkpoint_every: 25,
            clients: 20,
            specialists: 5,
            honest_checks: 60,
            attempts: 40,
            attack,
            verifier,
        }
    }

    #[test]
    fn checkpoints_fall_every_k_entries_and_at_the_end() {
        let p = AuditLogParams { entries: 10, checkpoint_every: 4, ..Default::default() };
        assert_eq!(p.checkpoint_sizes(), [4, 8, 10]);
        let p = AuditLogParams { entries: 8, checkpoint_every: 4, ..Default::default() };
        assert_eq!(p.checkpoint_sizes(), [4, 8]);
    }

    #[test]
    fn a_checkpoint_holder_catches_every_attack_and_no_honest_entry() {
        for attack in [Attack::Forge, Attack::Delete, Attack::Fork] {
            let o = simulate(&small(attack, Verifier::CheckpointHolder), 1).unwrap();
            assert_eq!((o.entries, o.checkpoints, o.checkpoints_verified), (300, 12, 12));
            assert_eq!((o.honest_checks, o.honest_rejected), (60, 0), "{attack:?}");
            assert_eq!((o.attempts, o.detected), (40, 40), "{attack:?}");
            assert_eq!(o.detected_by_signature, 0, "the operator holds the key");
            let by = o.detected_by_rollback + o.detected_by_consistency + o.detected_by_inclusion;
            assert_eq!(by, o.detected);
        }
    }

    #[test]
    fn each_attack_is_caught_by_the_check_it_targets() {
        let forge = simulate(&small(Attack::Forge, Verifier::CheckpointHolder), 2).unwrap();
        // Rewrites (even attempts) break consistency; splices break inclusion.
        assert_eq!((forge.detected_by_consistency, forge.detected_by_inclusion), (20, 20));
        let fork = simulate(&small(Attack::Fork, Verifier::CheckpointHolder), 2).unwrap();
        assert_eq!(fork.detected_by_consistency, 40);
        let delete = simulate(&small(Attack::Delete, Verifier::CheckpointHolder), 2).unwrap();
        assert_eq!(delete.detected_by_inclusion, 0);
        assert_eq!(delete.detected_by_consistency + delete.detected_by_rollback, 40);
    }

    #[test]
    fn a_verifier_that_forgets_its_checkpoint_is_fooled_by_rewrites() {
        let forge = simulate(&small(Attack::Forge, Verifier::LatestOnly), 1).unwrap();
        // It still catches splices (the path does not lead to the root) but
        // accepts every rewritten, re-signed tree.
        assert_eq!(forge.honest_rejected, 0);
        assert_eq!((forge.detected, forge.detected_by_inclusion), (20, 20));
        for attack in [Attack::Delete, Attack::Fork] {
            let o = simulate(&small(attack, Verifier::LatestOnly), 1).unwrap();
            assert_eq!(o.detected, 0, "{attack:?}");
        }
    }

    #[test]
    fn a_verifier_detects_a_checkpoint_not_signed_by_the_log() {
        let params = small(Attack::Forge, Verifier::CheckpointHolder);
        let signer = NoteSigner::from_seed(ORIGIN, &[7; 32]).unwrap();
        let stranger = NoteSigner::from_seed(ORIGIN, &[8; 32]).unwrap();
        let manifests = vec![[1; 32], [2; 32]];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let entries: Vec<Vec<u8>> = (0..8).map(|k| draw_entry(&mut rng, k, &manifests, 3)).collect();
        let tree = Log::tree_of(&entries);
        let log = Log { entries, tree, sizes: vec![4, 8], signer, manifests, clients: 3 };
        let held = Log::checkpoint(&log.tree, 4);
        let mut p = log.present(&log.tree, &log.entries, 4, 8, 5);
        assert_eq!(check(params.verifier, &log.signer.verifier(), &held, &p), Ok(()));
        p.note = stranger.sign_checkpoint(&Log::checkpoint(&log.tree, 8)).unwrap();
        assert_eq!(check(params.verifier, &log.signer.verifier(), &held, &p), Err(Detection::Signature));
        // And a shrunken log is a rollback, before any proof is looked at.
        let p = log.present(&log.tree, &log.entries, 8, 4, 1);
        let held8 = Log::checkpoint(&log.tree, 8);
        assert_eq!(check(Verifier::CheckpointHolder, &log.signer.verifier(), &held8, &p), Err(Detection::Rollback));
        assert_eq!(check(Verifier::LatestOnly, &log.signer.verifier(), &held8, &p), Ok(()));
    }

    #[test]
    fn a_forged_entry_differs_from_the_genuine_one_in_specialist_and_response() {
        let p = small(Attack::Forge, Verifier::CheckpointHolder);
        let manifests: Vec<Hash> = (0..3u8).map(|i| [i; 32]).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let entries: Vec<Vec<u8>> = (0..4).map(|k| draw_entry(&mut rng, k, &manifests, 2)).collect();
        let tree = Log::tree_of(&entries);
        let signer = NoteSigner::from_seed(ORIGIN, &[1; 32]).unwrap();
        let log = Log { entries, tree, sizes: vec![2, 4], signer, manifests, clients: p.clients };
        let f = log.forged(2, &mut rng);
        let g = &log.entries[2];
        assert_eq!(f.len(), g.len());
        assert_eq!(f[..20 + 12], g[..20 + 12], "same tag, sequence and client");
        assert_ne!(f[32..64], g[32..64], "another specialist");
        assert_eq!(f[64..96], g[64..96], "same request");
        assert_ne!(f[96..], g[96..], "another response");
    }

    #[test]
    fn same_seed_same_outcome_and_the_attack_does_not_change_the_log() {
        let p = small(Attack::Delete, Verifier::LatestOnly);
        assert_eq!(simulate(&p, 5).unwrap(), simulate(&p, 5).unwrap());
        let a = simulate(&small(Attack::Forge, Verifier::CheckpointHolder), 5).unwrap();
        let b = simulate(&small(Attack::Fork, Verifier::LatestOnly), 5).unwrap();
        assert_eq!((a.entries, a.checkpoints_verified, a.honest_rejected), (b.entries, b.checkpoints_verified, 0));
    }

    #[test]
    fn invalid_params_are_rejected_by_name() {
        let bad = [
            (AuditLogParams { entries: 1, ..Default::default() }, "entries"),
            (AuditLogParams { checkpoint_every: 0, ..Default::default() }, "checkpoint_every"),
            (AuditLogParams { entries: 10, checkpoint_every: 6, ..Default::default() }, "checkpoint_every"),
            (AuditLogParams { clients: 0, ..Default::default() }, "clients"),
            (AuditLogParams { specialists: 1, ..Default::default() }, "specialists"),
            (AuditLogParams { attempts: 2_000_000, ..Default::default() }, "attempts"),
        ];
        for (p, name) in bad {
            assert_eq!(simulate(&p, 0).unwrap_err().param, name);
        }
    }
}
