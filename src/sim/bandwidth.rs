//! A bandwidth ledger under load (bet 67): nodes serve each other transfers,
//! claim them with client-signed receipts over a lossy network, a committee
//! of ledger keepers settles the epoch, and byzantine nodes try to be
//! credited twice. Measures how far each node's settled credit drifts from
//! the bandwidth it really served, and audits every duplicate claim.
//!
//! The model, in synchronous rounds of one epoch:
//!
//! - **Traffic.** In each traffic round `1..=rounds`, every node opens
//!   `sessions_per_round` sessions as a client, each with a uniformly random
//!   other node as the server. A session's size is bounded-Pareto
//!   (`size_alpha` on `size_min..=size_max` bytes: heavy-tailed, as transfer
//!   sizes are). The server really serves it; that is the ground truth.
//! - **Receipts.** The client acknowledges every `chunk_bytes` with a
//!   cumulative receipt (epoch, server, client, session nonce, round, chunk
//!   number `seq`, bytes so far), signed by the client; the last one (the
//!   *final* receipt, `seq` = number of chunks) covers the whole session.
//!   Receipts ride the session's own reliable stream, so the server always
//!   holds them. A receipt's id is the SHA-256 of its fields, so the id binds
//!   the contents and the client's signature over the id binds both. A keyed
//!   SHA-256 stands in for the signature ([`KeyRing`]): only the signer's key
//!   makes a tag that verifies, which is all the model needs of Ed25519.
//! - **Claims.** Each server is ingested by one keeper, its *home* keeper
//!   (`server % keepers`), which spreads the ingestion load over the
//!   committee. Every round, a server sends its home keeper one batch with
//!   the final receipts of its new sessions plus everything not yet
//!   acknowledged; the keeper decides on every receipt and acknowledges the
//!   batch. A lost batch or a lost acknowledgement means the whole batch is
//!   resent next round (the keeper deduplicates what it already has).
//! - **Replication.** At the start of every round, each keeper pulls from
//!   every other keeper what that peer had accepted by the end of the
//!   previous round and it still lacks (one request and one reply; either may
//!   be lost; a lost exchange is retried next round from the same point), and
//!   checks each receipt with the same rules as a direct claim. Information
//!   thus moves one hop a round: a claim accepted in round `t` reaches the
//!   other keepers in round `t + 1`.
//! - **Close.** The epoch closes at the end of round `rounds + grace`; what a
//!   keeper has not accepted by then is late and not counted (a real ledger
//!   would carry it to the next epoch, which is not simulated). With
//!   `grace >= 1` and no loss, every claim reaches every keeper in time, so
//!   the lossless ledger is exact; each lost message near the close can make
//!   a claim late.
//! - **Settlement** (the ledger view drift is measured on): a node's settled
//!   credit is the median over the keepers of each keeper's credit for it
//!   (the lower median for an even committee), as Tor's directory
//!   authorities take the median of their bandwidth votes. It is the number
//!   the ledger publishes and pays; a minority of keepers that missed a claim
//!   is outvoted. The worst single keeper is reported beside it
//!   (`replica_drift_*`: the every-replica view).
//!
//! Per-node drift is `|settled credit - bytes served| / bytes served`, over
//! the nodes that served anything; quantiles are nearest-rank.
//!
//! **Threat model.** A `byzantine` fraction of the nodes (drawn at random)
//! serve and claim like everyone else, and try to be credited more than they
//! served with *duplicate claims* of transfers they really served. They know
//! their own signing key and every receipt they were handed, may send any
//! message to their home keeper at any time and may pass receipts to each
//! other; they cannot forge an honest node's signature, see into or corrupt a
//! keeper, or drop other nodes' messages. Keepers are honest. Once a genuine
//! claim is acknowledged (so the ledger holds it: submitting a copy earlier
//! can only be superseded by the genuine one), a byzantine server submits,
//! for every session it served, one duplicate of each form ([`DuplicateForm`]):
//! the final receipt verbatim; a re-nonced copy (new session nonce, id
//! recomputed, the client's signature kept); a split into two halves under
//! new nonces, signed with its own key; the client's genuine intermediate
//! receipt of the session (largest `seq` below the final: validly signed, a
//! different id); a genuine final receipt of the same client from the
//! previous epoch; and the final receipt relayed to an accomplice (another
//! byzantine node with a different home keeper) to submit there. Each is
//! retransmitted until acknowledged or the epoch closes (duplicates of a
//! claim acknowledged only in the closing round are never sent, and not
//! counted as submitted). Out of scope:
//! colluding byzantine nodes signing receipts for transfers that never
//! happened (no receipt scheme can tell them from real ones), and clients
//! that withhold receipts.
//!
//! **The ledger's rules** ([`Ledger`]): a direct claim must come to the
//! server's home keeper; the id must hash the contents; the epoch must be the
//! current one; server and client must be known and distinct; the client's
//! signature must verify; a receipt id already accepted is a duplicate; and
//! each session `(server, client, nonce)` is credited once, at its highest
//! `seq` (a lower or equal `seq` is superseded).
//!
//! **Audit** (against ground truth, not the ledger's own account): which
//! receipts were genuine, what each node served, and which submissions were
//! duplicates. A duplicate claim is accepted if any keeper credited it; an
//! honest claim is wrongly rejected if a keeper refused it on its first
//! arrival. [`simulate_with`] runs the same traffic and adversary against
//! another ledger, so the audit can be shown to catch a broken one.
//!
//! Randomness comes from four ChaCha8 streams of one seed (traffic, loss,
//! adversary, membership), so a sweep over `loss` keeps the same transfers,
//! byzantine nodes and duplicate material: the comparison is paired.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InvalidParam;

/// A SHA-256 digest: receipt ids and signing keys.
pub type Hash = [u8; 32];
/// A modelled signature over a receipt id.
pub type Tag = [u8; 16];

/// The epoch simulated; receipts of epoch `EPOCH - 1` are stale.
pub const EPOCH: u32 = 1;
/// Wire size of one receipt: its 36 bytes of fields and a 64-byte signature
/// (the id is recomputed by the receiver).
pub const RECEIPT_BYTES: u64 = 100;
/// Wire size of a message's header and its sender's signature.
pub const HEADER_BYTES: u64 = 96;
/// Wire size of a replication request: where the puller stands in the
/// peer's log.
pub const CURSOR_BYTES: u64 = 8;

/// Upper bound on `nodes * sessions_per_round * rounds`, so that a run stays
/// in memory (every receipt is kept) and in seconds.
pub const MAX_SESSIONS: usize = 1_000_000;
/// Upper bound on `size_max`, so that byte totals fit an `i64` column.
pub const MAX_SIZE: u64 = 1 << 40;

/// Parameters of one bandwidth-ledger simulation; as a spec's `[procedure]`,
/// every one is optional. The defaults are bet 67's setting (1000 nodes, 1%
/// loss, 2% byzantine) with the committee, epoch and traffic set in its spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BandwidthParams {
    /// Nodes that serve and use bandwidth.
    pub nodes: usize,
    /// Ledger keepers in the committee (separate, honest processes).
    pub keepers: usize,
    /// Traffic rounds in the epoch.
    pub rounds: usize,
    /// Rounds after the last traffic round before the epoch closes.
    pub grace: usize,
    /// Sessions each node opens as a client in each traffic round.
    pub sessions_per_round: usize,
    /// Smallest session, in bytes.
    pub size_min: u64,
    /// Largest session, in bytes.
    pub size_max: u64,
    /// Tail index of the bounded-Pareto session size (smaller: heavier tail).
    pub size_alpha: f64,
    /// Bytes between two cumulative receipts of a session.
    pub chunk_bytes: u64,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Fraction of the nodes that are byzantine (rounded to a count).
    pub byzantine: f64,
}

impl Default for BandwidthParams {
    fn default() -> Self {
        BandwidthParams {
            nodes: 1000,
            keepers: 5,
            rounds: 24,
            grace: 1,
            sessions_per_round: 2,
            size_min: 16 << 10,
            size_max: 64 << 20,
            size_alpha: 1.2,
            chunk_bytes: 256 << 10,
            loss: 0.01,
            byzantine: 0.02,
        }
    }
}

impl BandwidthParams {
    /// Reject parameters outside the model's range, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if !(2..=100_000).contains(&self.nodes) {
            return Err(InvalidParam::new("nodes", "must be in 2..=100000"));
        }
        if !(1..=31).contains(&self.keepers) {
            return Err(InvalidParam::new("keepers", "must be in 1..=31"));
        }
        if !(1..=10_000).contains(&self.rounds) {
            return Err(InvalidParam::new("rounds", "must be in 1..=10000"));
        }
        if self.grace > 1_000 {
            return Err(InvalidParam::new("grace", "must be in 0..=1000"));
        }
        if !(1..=1_000).contains(&self.sessions_per_round) {
            return Err(InvalidParam::new("sessions_per_round", "must be in 1..=1000"));
        }
        let sessions = self.nodes.saturating_mul(self.sessions_per_round).saturating_mul(self.rounds);
        if sessions > MAX_SESSIONS {
            return Err(InvalidParam::new(
                "sessions_per_round",
                format!("nodes * sessions_per_round * rounds = {sessions} exceeds {MAX_SESSIONS}"),
            ));
        }
        if self.size_min == 0 {
            return Err(InvalidParam::new("size_min", "must be at least 1 byte"));
        }
        if self.size_max < self.size_min || self.size_max > MAX_SIZE {
            return Err(InvalidParam::new("size_max", format!("must be in size_min..={MAX_SIZE}")));
        }
        if !(self.size_alpha > 0.0 && self.size_alpha <= 10.0) {
            return Err(InvalidParam::new("size_alpha", "must be in (0, 10]"));
        }
        if self.chunk_bytes == 0 || self.size_max.div_ceil(self.chunk_bytes) > u32::MAX as u64 {
            return Err(InvalidParam::new("chunk_bytes", "must be at least 1 and at least size_max / 2^32"));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(InvalidParam::new("loss", "must be in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&self.byzantine) {
            return Err(InvalidParam::new("byzantine", "must be in [0, 1]"));
        }
        Ok(())
    }

    /// Byzantine nodes: `round(byzantine * nodes)`.
    pub fn byzantine_nodes(&self) -> usize {
        (self.byzantine * self.nodes as f64).round() as usize
    }
}

/// The nodes' signing keys, standing in for Ed25519 key pairs and the public
/// key directory: a tag made with node `i`'s key verifies only as node `i`'s.
/// The simulation signs on each node's behalf; the adversary only ever signs
/// with its own nodes' keys.
#[derive(Debug, Clone)]
pub struct KeyRing {
    secrets: Vec<Hash>,
}

impl KeyRing {
    /// Keys for `nodes` nodes of a network built from `seed`.
    pub fn new(seed: u64, nodes: usize) -> Self {
        let secrets = (0..nodes as u64)
            .map(|i| {
                let mut h = Sha256::new();
                h.update(b"bets/bandwidth-key/v1\0");
                h.update(seed.to_le_bytes());
                h.update(i.to_le_bytes());
                h.finalize().into()
            })
            .collect();
        KeyRing { secrets }
    }

    /// Nodes with a key.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether the ring has no keys.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Node `signer`'s signature over `id`.
    pub fn sign(&self, signer: u32, id: &Hash) -> Tag {
        let mut h = Sha256::new();
        h.update(b"bets/bandwidth-sig/v1\0");
        h.update(self.secrets[signer as usize]);
        h.update(id);
        let full: Hash = h.finalize().into();
        full[..16].try_into().expect("16 of 32 bytes")
    }

    /// Whether `tag` is node `signer`'s signature over `id`.
    pub fn verify(&self, signer: u32, id: &Hash, tag: &Tag) -> bool {
        (signer as usize) < self.secrets.len() && self.sign(signer, id) == *tag
    }
}

/// A client's signed acknowledgement of bytes a server served it: what a
/// server claims to be credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// SHA-256 of the other fields except the tag ([`Receipt::content_hash`]).
    pub id: Hash,
    /// Settlement epoch the session belongs to.
    pub epoch: u32,
    /// The node that served.
    pub server: u32,
    /// The node that was served and signed.
    pub client: u32,
    /// The client's nonce for the session.
    pub session: u64,
    /// Round the session took place in.
    pub round: u32,
    /// Chunk number, from 1; the final receipt has the number of chunks.
    pub seq: u32,
    /// Bytes served in the session up to this receipt (cumulative).
    pub bytes: u64,
    /// The client's signature over `id`.
    pub tag: Tag,
}

impl Receipt {
    /// A receipt whose id matches its contents, signed by its client.
    #[allow(clippy::too_many_arguments)]
    pub fn signed(
        keys: &KeyRing,
        epoch: u32,
        server: u32,
        client: u32,
        session: u64,
        round: u32,
        seq: u32,
        bytes: u64,
    ) -> Self {
        let mut r = Receipt { id: [0; 32], epoch, server, client, session, round, seq, bytes, tag: [0; 16] };
        r.id = r.content_hash();
        r.tag = keys.sign(client, &r.id);
        r
    }

    /// SHA-256 over a domain tag and the fixed-width little-endian fields, so
    /// that no two different receipts share an encoding.
    pub fn content_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"bets/bandwidth-receipt/v1\0");
        h.update(self.epoch.to_le_bytes());
        h.update(self.server.to_le_bytes());
        h.update(self.client.to_le_bytes());
        h.update(self.session.to_le_bytes());
        h.update(self.round.to_le_bytes());
        h.update(self.seq.to_le_bytes());
        h.update(self.bytes.to_le_bytes());
        h.finalize().into()
    }

    /// The session this receipt acknowledges part of.
    pub fn session_key(&self) -> (u32, u32, u64) {
        (self.server, self.client, self.session)
    }
}

/// The keeper that ingests `server`'s direct claims.
pub fn home_keeper(server: u32, keepers: usize) -> usize {
    server as usize % keepers
}

/// Why a keeper refused a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A direct claim sent to a keeper that does not ingest its server.
    #[error("claim sent to a keeper that is not its server's home")]
    WrongShard,
    /// The id does not hash the contents.
    #[error("receipt id does not match its contents")]
    BadId,
    /// The receipt belongs to another epoch.
    #[error("receipt of another epoch")]
    WrongEpoch,
    /// Server or client is not a known node.
    #[error("unknown node")]
    UnknownNode,
    /// A node claiming to have served itself.
    #[error("server and client are the same node")]
    SelfDealing,
    /// The client's signature does not verify.
    #[error("client signature does not verify")]
    BadSignature,
    /// A receipt with this id was already accepted.
    #[error("receipt already accepted")]
    Duplicate,
    /// The session is already credited at this or a later receipt.
    #[error("session already credited at this or a later receipt")]
    Superseded,
}

/// A keeper's decision on one receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted; the server's credit rose by this many bytes.
    Credited(u64),
    /// Refused; no credit changed.
    Rejected(Rejection),
}

/// How a keeper is built: its place in the committee and what it verifies
/// with.
#[derive(Debug, Clone)]
pub struct KeeperSetup {
    /// This keeper's index (its shard).
    pub index: usize,
    /// Keepers in the committee.
    pub keepers: usize,
    /// The epoch being settled.
    pub epoch: u32,
    /// The nodes' keys (the public key directory).
    pub keys: Arc<KeyRing>,
}

/// What the simulation needs of a keeper's ledger, so that the audit can be
/// pointed at a deliberately broken one and shown to catch it.
pub trait Keep {
    /// Decide on a claim a server (or a node posing as one) sent directly.
    fn submit(&mut self, r: &Receipt) -> Decision;
    /// Decide on a receipt another keeper had accepted.
    fn replicate(&mut self, r: &Receipt) -> Decision;
    /// Bytes credited to each node as a server, by node index.
    fn credits(&self) -> &[u64];
}

/// One keeper's ledger, with the rules in the module docs.
#[derive(Debug, Clone)]
pub struct Ledger {
    setup: KeeperSetup,
    ids: HashSet<Hash>,
    /// Highest `seq` and its bytes, per credited session.
    sessions: HashMap<(u32, u32, u64), (u32, u64)>,
    credit: Vec<u64>,
}

impl Ledger {
    /// An empty ledger for this keeper.
    pub fn new(setup: KeeperSetup) -> Self {
        let nodes = setup.keys.len();
        Ledger { setup, ids: HashSet::new(), sessions: HashMap::new(), credit: vec![0; nodes] }
    }

    /// Receipts accepted so far.
    pub fn accepted(&self) -> usize {
        self.ids.len()
    }

    fn take(&mut self, r: &Receipt) -> Decision {
        match self.check(r) {
            Ok(delta) => {
                self.ids.insert(r.id);
                self.sessions.insert(r.session_key(), (r.seq, r.bytes));
                self.credit[r.server as usize] += delta;
                Decision::Credited(delta)
            }
            Err(why) => Decision::Rejected(why),
        }
    }

    /// The credit `r` would add, or why it is refused. Cheap checks first;
    /// the signature last but one.
    fn check(&self, r: &Receipt) -> Result<u64, Rejection> {
        if r.content_hash() != r.id {
            return Err(Rejection::BadId);
        }
        if r.epoch != self.setup.epoch {
            return Err(Rejection::WrongEpoch);
        }
        let nodes = self.credit.len();
        if r.server as usize >= nodes || r.client as usize >= nodes {
            return Err(Rejection::UnknownNode);
        }
        if r.server == r.client {
            return Err(Rejection::SelfDealing);
        }
        if self.ids.contains(&r.id) {
            return Err(Rejection::Duplicate);
        }
        if !self.setup.keys.verify(r.client, &r.id, &r.tag) {
            return Err(Rejection::BadSignature);
        }
        match self.sessions.get(&r.session_key()) {
            Some(&(seq, _)) if seq >= r.seq => Err(Rejection::Superseded),
            Some(&(_, bytes)) => Ok(r.bytes.saturating_sub(bytes)),
            None => Ok(r.bytes),
        }
    }
}

impl Keep for Ledger {
    fn submit(&mut self, r: &Receipt) -> Decision {
        if home_keeper(r.server, self.setup.keepers) != self.setup.index {
            return Decision::Rejected(Rejection::WrongShard);
        }
        self.take(r)
    }

    fn replicate(&mut self, r: &Receipt) -> Decision {
        self.take(r)
    }

    fn credits(&self) -> &[u64] {
        &self.credit
    }
}

/// The ways a byzantine node tries to be credited twice for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DuplicateForm {
    /// The final receipt again, verbatim.
    Replay,
    /// The final receipt under a new session nonce (id recomputed), with the
    /// client's signature kept.
    Renonce,
    /// Two halves of the session under new nonces, signed with the byzantine
    /// node's own key (two claims).
    Split,
    /// The client's genuine intermediate receipt of the session: valid
    /// signature, different id.
    Intermediate,
    /// A genuine final receipt of the same client from the previous epoch.
    Stale,
    /// The final receipt submitted by an accomplice at its own home keeper.
    Relay,
}

impl DuplicateForm {
    /// Every form, in the order of [`BandwidthOutcome::by_form`].
    pub const ALL: [DuplicateForm; 6] = [
        DuplicateForm::Replay,
        DuplicateForm::Renonce,
        DuplicateForm::Split,
        DuplicateForm::Intermediate,
        DuplicateForm::Stale,
        DuplicateForm::Relay,
    ];
}

/// Duplicate claims of one form: sent, and accepted by some keeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormTally {
    /// Sent at least once.
    pub submitted: u64,
    /// Credited by some keeper.
    pub accepted: u64,
}

/// What one simulation observed. Drifts are fractions (0.01 = 1%), over the
/// nodes that served anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BandwidthOutcome {
    /// Median per-node drift of the settled (median-keeper) view.
    pub drift_p50: f64,
    /// 95th percentile per-node drift of the settled view.
    pub drift_p95: f64,
    /// 99th percentile per-node drift of the settled view.
    pub drift_p99: f64,
    /// Largest per-node drift of the settled view.
    pub drift_max: f64,
    /// 95th percentile over nodes of the worst keeper's drift.
    pub replica_drift_p95: f64,
    /// Largest drift of any node at any keeper.
    pub replica_drift_max: f64,
    /// Nodes whose settled credit differs from what they served.
    pub drifted_nodes: usize,
    /// Nodes that served anything (the quantiles' population).
    pub nodes_served: usize,
    /// Byzantine nodes.
    pub byzantine_nodes: usize,
    /// Genuine claims: one final receipt per session.
    pub claims: u64,
    /// Genuine claims a majority of keepers had not accepted at the close.
    pub claims_unsettled: u64,
    /// Bytes of those claims.
    pub bytes_unsettled: u64,
    /// Bytes served (ground truth).
    pub bytes_served: u64,
    /// Sum of the nodes' settled credits.
    pub bytes_settled: u64,
    /// Duplicate claims sent at least once.
    pub duplicates_submitted: u64,
    /// Of those, delivered and credited by no keeper.
    pub duplicates_rejected: u64,
    /// Of those, credited by some keeper.
    pub duplicates_accepted: u64,
    /// Of those, never delivered before the close.
    pub duplicates_undelivered: u64,
    /// Duplicate claims per form, in [`DuplicateForm::ALL`] order.
    pub by_form: [FormTally; 6],
    /// Genuine claims some keeper refused on their first arrival.
    pub honest_rejected: u64,
    /// Genuine receipts resent because their batch was not acknowledged.
    pub retransmitted: u64,
    /// Messages sent: batches, acknowledgements, replication requests and
    /// replies.
    pub messages: u64,
    /// Messages lost.
    pub messages_lost: u64,
    /// Bytes of every message sent.
    pub ledger_bytes: u64,
    /// Bytes each node served (ground truth), by node.
    pub served: Vec<u64>,
    /// Each node's settled credit, by node.
    pub settled: Vec<u64>,
}

/// The value at nearest rank `ceil(percent / 100 * n)` of ascending
/// `sorted` (0 when empty).
pub fn nearest_rank(sorted: &[f64], percent: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A bounded-Pareto size from a uniform `u` in [0, 1), by inverting the CDF.
pub fn bounded_pareto(u: f64, min: u64, max: u64, alpha: f64) -> u64 {
    if min == max {
        return min;
    }
    let (l, h) = (min as f64, max as f64);
    let tail = (l / h).powf(alpha);
    let x = l / (1.0 - u * (1.0 - tail)).powf(1.0 / alpha);
    (x.floor() as u64).clamp(min, max)
}

/// What a pool entry is, in ground truth.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The final receipt of genuine claim `i`.
    Genuine(u32),
    /// A receipt made only for duplicate claim `i`.
    Duplicate(u32),
}

/// One genuine session and its claim.
#[derive(Debug, Clone)]
struct Claim {
    pool: u32,
    server: u32,
    bytes: u64,
    /// The duplicate claims its server's adversary makes of it.
    dups: Range<u32>,
    sent: bool,
    acked: bool,
    rejected: bool,
}

/// One duplicate claim.
#[derive(Debug, Clone)]
struct Dup {
    pool: u32,
    form: DuplicateForm,
    submitter: u32,
    sent: bool,
    delivered: bool,
    accepted: bool,
}

/// What a server's batch carries.
#[derive(Debug, Clone, Copy)]
enum Item {
    Claim(u32),
    Dup(u32),
}

/// The keepers' ledgers and what each has accepted, as pool indices.
struct Committee<L> {
    ledgers: Vec<L>,
    seen: Vec<Vec<bool>>,
    holds: Vec<Vec<bool>>,
    /// Pool indices each keeper accepted, in order: the log peers pull.
    held: Vec<Vec<u32>>,
    /// `cursor[k][j]`: how far into `held[j]` keeper `k` has pulled.
    cursor: Vec<Vec<usize>>,
}

impl<L: Keep> Committee<L> {
    /// Hand pool entry `x` to keeper `k`: its decision, and whether `k` had
    /// never been handed `x` before.
    fn deliver(&mut self, k: usize, x: u32, r: &Receipt, direct: bool) -> (Decision, bool) {
        let xi = x as usize;
        let first = !self.seen[k][xi];
        self.seen[k][xi] = true;
        let d = if direct { self.ledgers[k].submit(r) } else { self.ledgers[k].replicate(r) };
        if matches!(d, Decision::Credited(_)) && !self.holds[k][xi] {
            self.holds[k][xi] = true;
            self.held[k].push(x);
        }
        (d, first)
    }
}

/// Run one simulation against the honest [`Ledger`].
pub fn simulate(params: &BandwidthParams, seed: u64) -> Result<BandwidthOutcome, InvalidParam> {
    simulate_with(params, seed, Ledger::new)
}

/// [`simulate`] with another ledger at every keeper: the same traffic,
/// losses, adversary and audit.
pub fn simulate_with<L: Keep>(
    params: &BandwidthParams,
    seed: u64,
    make: impl FnMut(KeeperSetup) -> L,
) -> Result<BandwidthOutcome, InvalidParam> {
    params.validate()?;
    let p = params;
    let (n, kn) = (p.nodes, p.keepers);
    let stream = |s: u64| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(s);
        r
    };
    let (mut traffic, mut loss_rng, mut adversary, mut membership) = (stream(0), stream(1), stream(2), stream(3));
    let keys = Arc::new(KeyRing::new(seed, n));

    let mut byz: Vec<usize> = index::sample(&mut membership, n, p.byzantine_nodes()).into_vec();
    byz.sort_unstable();
    let mut is_byz = vec![false; n];
    for &b in &byz {
        is_byz[b] = true;
    }
    // Each byzantine node's accomplice: the next byzantine node (cyclically)
    // with another home keeper, if any.
    let mut accomplice: Vec<Option<u32>> = vec![None; n];
    for (i, &b) in byz.iter().enumerate() {
        accomplice[b] = (1..byz.len())
            .map(|j| byz[(i + j) % byz.len()])
            .find(|&a| home_keeper(a as u32, kn) != home_keeper(b as u32, kn))
            .map(|a| a as u32);
    }

    // Traffic and the adversary's material, drawn up front from their own
    // streams (so they do not depend on which messages are lost).
    let mut pool: Vec<Receipt> = Vec::new();
    let mut origin: Vec<Origin> = Vec::new();
    let mut claims: Vec<Claim> = Vec::new();
    let mut dups: Vec<Dup> = Vec::new();
    // The claims of traffic round `r` are `claims[by_round[r - 1]]`.
    let mut by_round: Vec<Range<u32>> = Vec::with_capacity(p.rounds);
    let chunks = |bytes: u64| bytes.div_ceil(p.chunk_bytes) as u32;
    let size = |rng: &mut ChaCha8Rng| bounded_pareto(rng.random(), p.size_min, p.size_max, p.size_alpha);
    for round in 1..=p.rounds {
        let first_claim = claims.len() as u32;
        for c in 0..n {
            for _ in 0..p.sessions_per_round {
                let other = traffic.random_range(0..n - 1);
                let s = if other >= c { other + 1 } else { other };
                let bytes = size(&mut traffic);
                let nonce: u64 = traffic.random();
                let (s32, c32, r32) = (s as u32, c as u32, round as u32);
                let m = chunks(bytes);
                let g = Receipt::signed(&keys, EPOCH, s32, c32, nonce, r32, m, bytes);
                let ci = claims.len() as u32;
                let gi = pool.len() as u32;
                let first_dup = dups.len() as u32;
                if is_byz[s] {
                    let mut forged: Vec<(Receipt, DuplicateForm)> = Vec::new();
                    let mut renonced = g.clone();
                    renonced.session = adversary.random();
                    renonced.id = renonced.content_hash();
                    forged.push((renonced, DuplicateForm::Renonce));
                    for part in [bytes - bytes / 2, bytes / 2] {
                        if part == 0 {
                            continue;
                        }
                        let mut half = g.clone();
                        half.session = adversary.random();
                        half.bytes = part;
                        half.seq = chunks(part);
                        half.id = half.content_hash();
                        half.tag = keys.sign(s32, &half.id);
                        forged.push((half, DuplicateForm::Split));
                    }
                    if m >= 2 {
                        let below = (m - 1) as u64 * p.chunk_bytes;
                        let r = Receipt::signed(&keys, EPOCH, s32, c32, nonce, r32, m - 1, below);
                        forged.push((r, DuplicateForm::Intermediate));
                    }
                    let old = size(&mut adversary);
                    let old_round = adversary.random_range(1..=p.rounds) as u32;
                    let stale =
                        Receipt::signed(&keys, EPOCH - 1, s32, c32, adversary.random(), old_round, chunks(old), old);
                    forged.push((stale, DuplicateForm::Stale));

                    let dup = |pool, form, submitter| Dup {
                        pool,
                        form,
                        submitter,
                        sent: false,
                        delivered: false,
                        accepted: false,
                    };
                    dups.push(dup(gi, DuplicateForm::Replay, s32));
                    for (k, (_, form)) in forged.iter().enumerate() {
                        dups.push(dup(gi + 1 + k as u32, *form, s32));
                    }
                    if let Some(a) = accomplice[s] {
                        dups.push(dup(gi, DuplicateForm::Relay, a));
                    }
                    pool.push(g);
                    origin.push(Origin::Genuine(ci));
                    for (k, (r, _)) in forged.into_iter().enumerate() {
                        pool.push(r);
                        origin.push(Origin::Duplicate(first_dup + 1 + k as u32));
                    }
                } else {
                    pool.push(g);
                    origin.push(Origin::Genuine(ci));
                }
                claims.push(Claim {
                    pool: gi,
                    server: s32,
                    bytes,
                    dups: first_dup..dups.len() as u32,
                    sent: false,
                    acked: false,
                    rejected: false,
                });
            }
        }
        by_round.push(first_claim..claims.len() as u32);
    }

    let mut out = BandwidthOutcome { byzantine_nodes: byz.len(), ..Default::default() };
    let mut committee = Committee {
        ledgers: (0..kn)
            .map(|index| KeeperSetup { index, keepers: kn, epoch: EPOCH, keys: keys.clone() })
            .map(make)
            .collect(),
        seen: vec![vec![false; pool.len()]; kn],
        holds: vec![vec![false; pool.len()]; kn],
        held: vec![Vec::new(); kn],
        cursor: vec![vec![0; kn]; kn],
    };
    let mut lost = |out: &mut BandwidthOutcome, bytes: u64| {
        out.messages += 1;
        out.ledger_bytes += bytes;
        let gone = loss_rng.random::<f64>() < p.loss;
        out.messages_lost += gone as u64;
        gone
    };
    let mut pending: Vec<Vec<Item>> = vec![Vec::new(); n];

    for round in 1..=p.rounds + p.grace {
        // Replication: every keeper pulls from every other what that peer
        // had accepted by the end of the last round.
        let snap: Vec<usize> = committee.held.iter().map(Vec::len).collect();
        for k in 0..kn {
            for j in (0..kn).filter(|&j| j != k) {
                if lost(&mut out, HEADER_BYTES + CURSOR_BYTES) {
                    continue;
                }
                let from = committee.cursor[k][j];
                let missing: Vec<u32> = committee.held[j][from..snap[j]]
                    .iter()
                    .copied()
                    .filter(|&x| !committee.holds[k][x as usize])
                    .collect();
                if lost(&mut out, HEADER_BYTES + RECEIPT_BYTES * missing.len() as u64) {
                    continue;
                }
                committee.cursor[k][j] = snap[j];
                for x in missing {
                    let (d, _) = committee.deliver(k, x, &pool[x as usize], false);
                    match (origin[x as usize], d) {
                        (Origin::Genuine(c), Decision::Rejected(_)) => claims[c as usize].rejected = true,
                        (Origin::Duplicate(i), Decision::Credited(_)) => dups[i as usize].accepted = true,
                        _ => {}
                    }
                }
            }
        }

        // This round's sessions.
        for c in by_round.get(round - 1).cloned().unwrap_or_default() {
            pending[claims[c as usize].server as usize].push(Item::Claim(c));
        }

        // Claims: one batch per server to its home keeper, acknowledged.
        let mut acked_now: Vec<u32> = Vec::new();
        for (s, batch) in pending.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            for item in batch.iter() {
                match *item {
                    Item::Claim(c) => {
                        let claim = &mut claims[c as usize];
                        out.retransmitted += claim.sent as u64;
                        claim.sent = true;
                    }
                    Item::Dup(d) => dups[d as usize].sent = true,
                }
            }
            if lost(&mut out, HEADER_BYTES + RECEIPT_BYTES * batch.len() as u64) {
                continue;
            }
            let h = home_keeper(s as u32, kn);
            for item in batch.iter() {
                match *item {
                    Item::Claim(c) => {
                        let x = claims[c as usize].pool;
                        let (d, first) = committee.deliver(h, x, &pool[x as usize], true);
                        if first && matches!(d, Decision::Rejected(_)) {
                            claims[c as usize].rejected = true;
                        }
                    }
                    Item::Dup(i) => {
                        let x = dups[i as usize].pool;
                        let (d, _) = committee.deliver(h, x, &pool[x as usize], true);
                        let dup = &mut dups[i as usize];
                        dup.delivered = true;
                        dup.accepted |= matches!(d, Decision::Credited(_));
                    }
                }
            }
            if lost(&mut out, HEADER_BYTES) {
                continue;
            }
            for item in batch.drain(..) {
                if let Item::Claim(c) = item {
                    let claim = &mut claims[c as usize];
                    if !claim.acked {
                        claim.acked = true;
                        acked_now.push(c);
                    }
                }
            }
        }
        // Byzantine servers learn their claims are held and send the
        // duplicates with their next batch.
        for c in acked_now {
            for i in claims[c as usize].dups.clone() {
                pending[dups[i as usize].submitter as usize].push(Item::Dup(i));
            }
        }
    }

    // Audit against ground truth.
    let majority = kn / 2 + 1;
    out.served = vec![0; n];
    for claim in &claims {
        out.served[claim.server as usize] += claim.bytes;
        let holders = (0..kn).filter(|&k| committee.holds[k][claim.pool as usize]).count();
        if holders < majority {
            out.claims_unsettled += 1;
            out.bytes_unsettled += claim.bytes;
        }
        out.honest_rejected += claim.rejected as u64;
    }
    out.claims = claims.len() as u64;
    out.bytes_served = out.served.iter().sum();
    for dup in dups.iter().filter(|d| d.sent) {
        out.duplicates_submitted += 1;
        let tally = &mut out.by_form[dup.form as usize];
        tally.submitted += 1;
        if dup.accepted {
            out.duplicates_accepted += 1;
            tally.accepted += 1;
        } else if dup.delivered {
            out.duplicates_rejected += 1;
        } else {
            out.duplicates_undelivered += 1;
        }
    }

    let credits: Vec<&[u64]> = committee.ledgers.iter().map(|l| l.credits()).collect();
    let mut votes = vec![0u64; kn];
    let (mut drift, mut replica) = (Vec::with_capacity(n), Vec::with_capacity(n));
    out.settled = vec![0; n];
    for i in 0..n {
        for (v, c) in votes.iter_mut().zip(&credits) {
            *v = c.get(i).copied().unwrap_or(0);
        }
        votes.sort_unstable();
        let settled = votes[(kn - 1) / 2];
        out.settled[i] = settled;
        let served = out.served[i];
        if served == 0 {
            continue;
        }
        let off = |credit: u64| credit.abs_diff(served) as f64 / served as f64;
        drift.push(off(settled));
        replica.push(votes.iter().map(|&v| off(v)).fold(0.0, f64::max));
    }
    out.bytes_settled = out.settled.iter().sum();
    out.nodes_served = drift.len();
    out.drifted_nodes = drift.iter().filter(|&&d| d > 0.0).count();
    drift.sort_by(f64::total_cmp);
    replica.sort_by(f64::total_cmp);
    out.drift_p50 = nearest_rank(&drift, 50);
    out.drift_p95 = nearest_rank(&drift, 95);
    out.drift_p99 = nearest_rank(&drift, 99);
    out.drift_max = nearest_rank(&drift, 100);
    out.replica_drift_p95 = nearest_rank(&replica, 95);
    out.replica_drift_max = nearest_rank(&replica, 100);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small network whose every session is `size` bytes in one chunk
    /// (or `chunks` chunks), without loss or adversaries.
    fn fixed(nodes: usize, keepers: usize, rounds: usize, size: u64) -> BandwidthParams {
        BandwidthParams {
            nodes,
            keepers,
            rounds,
            sessions_per_round: 1,
            size_min: size,
            size_max: size,
            chunk_bytes: size,
            loss: 0.0,
            byzantine: 0.0,
            ..BandwidthParams::default()
        }
    }

    fn small() -> BandwidthParams {
        BandwidthParams { nodes: 100, rounds: 8, ..BandwidthParams::default() }
    }

    fn setup(index: usize, keepers: usize, nodes: usize) -> KeeperSetup {
        KeeperSetup { index, keepers, epoch: EPOCH, keys: Arc::new(KeyRing::new(7, nodes)) }
    }

    #[test]
    fn nearest_rank_quantiles_take_the_ceiling_rank() {
        let xs: Vec<f64> = (1..=1000).map(|i| i as f64).collect();
        assert_eq!(nearest_rank(&xs, 95), 950.0);
        assert_eq!(nearest_rank(&xs, 99), 990.0);
        assert_eq!(nearest_rank(&xs, 100), 1000.0);
        assert_eq!(nearest_rank(&xs[..3], 50), 2.0);
        assert_eq!(nearest_rank(&xs[..1], 95), 1.0);
        assert_eq!(nearest_rank(&[], 95), 0.0);
        // 49 of 1000 drifted nodes do not reach the 95th percentile; 51 do.
        let mut d = vec![0.0; 1000];
        d[951..].fill(0.1);
        assert_eq!(nearest_rank(&d, 95), 0.0);
        d[949] = 0.1;
        d[950] = 0.1;
        assert_eq!(nearest_rank(&d, 95), 0.1);
    }

    #[test]
    fn bounded_pareto_spans_its_bounds_and_is_heavy_tailed() {
        assert_eq!(bounded_pareto(0.0, 16, 1 << 20, 1.2), 16);
        let top = bounded_pareto(1.0 - 1e-12, 16, 1 << 20, 1.2);
        assert!(top <= 1 << 20 && top > (1 << 20) - 1000, "{top}");
        assert_eq!(bounded_pareto(0.5, 10, 10, 1.2), 10);
        // Median of a Pareto(1.2) from 16 KiB: 16384 * 2^(1/1.2) = 29193.
        let median = bounded_pareto(0.5, 16 << 10, 64 << 20, 1.2);
        assert!((29_180..=29_200).contains(&median), "{median}");
    }

    #[test]
    fn a_tag_verifies_only_as_its_signer_and_only_for_its_id() {
        let keys = KeyRing::new(1, 3);
        let r = Receipt::signed(&keys, EPOCH, 0, 1, 42, 1, 1, 100);
        assert_eq!(r.id, r.content_hash());
        assert!(keys.verify(1, &r.id, &r.tag));
        assert!(!keys.verify(0, &r.id, &r.tag));
        assert!(!keys.verify(2, &r.id, &keys.sign(1, &r.id).map(|b| b ^ 1)));
        assert!(!keys.verify(3, &r.id, &r.tag), "unknown signer");
        let other = Receipt::signed(&keys, EPOCH, 0, 1, 43, 1, 1, 100);
        assert_ne!(other.id, r.id);
        assert!(!keys.verify(1, &other.id, &r.tag));
    }

    #[test]
    fn the_ledger_rejects_every_duplicate_form_and_credits_each_session_once() {
        let s = setup(0, 1, 4);
        let keys = s.keys.clone();
        let mut ledger = Ledger::new(s);
        // Client 1 acknowledges 3 chunks of 100 bytes served by node 0.
        let part = Receipt::signed(&keys, EPOCH, 0, 1, 9, 1, 2, 200);
        let fin = Receipt::signed(&keys, EPOCH, 0, 1, 9, 1, 3, 250);
        assert_eq!(ledger.submit(&fin), Decision::Credited(250));
        // Replay.
        assert_eq!(ledger.submit(&fin), Decision::Rejected(Rejection::Duplicate));
        // Re-nonced, id recomputed, client's tag kept.
        let mut renonced = fin.clone();
        renonced.session = 10;
        renonced.id = renonced.content_hash();
        assert_eq!(ledger.submit(&renonced), Decision::Rejected(Rejection::BadSignature));
        // Re-nonced without recomputing the id.
        let mut lazy = fin.clone();
        lazy.session = 11;
        assert_eq!(ledger.submit(&lazy), Decision::Rejected(Rejection::BadId));
        // Split, signed with the server's own key.
        let mut half = fin.clone();
        half.session = 12;
        half.bytes = 125;
        half.id = half.content_hash();
        half.tag = keys.sign(0, &half.id);
        assert_eq!(ledger.submit(&half), Decision::Rejected(Rejection::BadSignature));
        // The genuine intermediate receipt.
        assert_eq!(ledger.submit(&part), Decision::Rejected(Rejection::Superseded));
        // Last epoch's genuine receipt.
        let stale = Receipt::signed(&keys, EPOCH - 1, 0, 1, 13, 1, 3, 250);
        assert_eq!(ledger.submit(&stale), Decision::Rejected(Rejection::WrongEpoch));
        // Self-dealing and unknown nodes.
        let own = Receipt::signed(&keys, EPOCH, 0, 0, 14, 1, 1, 50);
        assert_eq!(ledger.submit(&own), Decision::Rejected(Rejection::SelfDealing));
        let mut ghost = fin.clone();
        ghost.client = 9;
        ghost.id = ghost.content_hash();
        assert_eq!(ledger.submit(&ghost), Decision::Rejected(Rejection::UnknownNode));
        assert_eq!(ledger.credits(), &[250, 0, 0, 0]);
        assert_eq!(ledger.accepted(), 1);
        // Replicated copies follow the same rules.
        assert_eq!(ledger.replicate(&fin), Decision::Rejected(Rejection::Duplicate));
        assert_eq!(ledger.replicate(&part), Decision::Rejected(Rejection::Superseded));
    }

    #[test]
    fn a_later_receipt_of_a_session_tops_its_credit_up_to_the_final_bytes() {
        let s = setup(0, 1, 2);
        let keys = s.keys.clone();
        let mut ledger = Ledger::new(s);
        let part = Receipt::signed(&keys, EPOCH, 1, 0, 5, 1, 1, 100);
        let fin = Receipt::signed(&keys, EPOCH, 1, 0, 5, 1, 2, 180);
        assert_eq!(ledger.submit(&part), Decision::Credited(100));
        assert_eq!(ledger.submit(&fin), Decision::Credited(80));
        assert_eq!(ledger.submit(&part), Decision::Rejected(Rejection::Duplicate));
        assert_eq!(ledger.credits(), &[0, 180]);
    }

    #[test]
    fn a_keeper_ingests_only_its_shard_but_replicates_any() {
        let s = setup(1, 3, 6);
        let keys = s.keys.clone();
        let mut ledger = Ledger::new(s);
        let theirs = Receipt::signed(&keys, EPOCH, 3, 1, 1, 1, 1, 70); // home 0
        let mine = Receipt::signed(&keys, EPOCH, 4, 1, 2, 1, 1, 30); // home 1
        assert_eq!(ledger.submit(&theirs), Decision::Rejected(Rejection::WrongShard));
        assert_eq!(ledger.submit(&mine), Decision::Credited(30));
        assert_eq!(ledger.replicate(&theirs), Decision::Credited(70));
        assert_eq!(ledger.credits(), &[0, 0, 0, 70, 30, 0]);
    }

    #[test]
    fn two_nodes_one_keeper_settle_exactly_with_counted_messages() {
        let o = simulate(&fixed(2, 1, 1, 1000), 0).unwrap();
        assert_eq!(o.claims, 2);
        assert_eq!(o.served, vec![1000, 1000]);
        assert_eq!(o.settled, vec![1000, 1000]);
        // One batch and one acknowledgement per server; a lone keeper pulls
        // from nobody.
        assert_eq!(o.messages, 4);
        assert_eq!(o.ledger_bytes, 2 * (HEADER_BYTES + RECEIPT_BYTES) + 2 * HEADER_BYTES);
        assert_eq!((o.drift_max, o.drifted_nodes, o.nodes_served), (0.0, 0, 2));
    }

    #[test]
    fn a_three_keeper_committee_replicates_the_last_round_within_the_grace_round() {
        let o = simulate(&fixed(2, 3, 2, 1000), 3).unwrap();
        assert_eq!(o.claims, 4);
        assert_eq!(o.settled, vec![2000, 2000]);
        assert_eq!((o.claims_unsettled, o.drift_max, o.replica_drift_max), (0, 0.0, 0.0));
        // Rounds 1..=3: 3 x 2 pulls of 2 messages each; batches and acks in
        // the two traffic rounds.
        assert_eq!(o.messages, 3 * 12 + 2 * 4);
        assert_eq!(o.messages_lost, 0);
        // Without a grace round the last round's claims reach only their
        // home keeper, so the median misses them even without loss.
        let o = simulate(&BandwidthParams { grace: 0, ..fixed(2, 3, 2, 1000) }, 3).unwrap();
        assert_eq!(o.settled, vec![1000, 1000]);
        assert_eq!((o.claims_unsettled, o.drift_max), (2, 0.5));
    }

    #[test]
    fn without_loss_the_settled_ledger_is_exact_and_every_duplicate_is_refused() {
        let p = BandwidthParams { loss: 0.0, byzantine: 0.05, chunk_bytes: 32 << 10, ..small() };
        let o = simulate(&p, 1).unwrap();
        assert_eq!(o.byzantine_nodes, 5);
        assert_eq!(o.settled, o.served);
        assert_eq!((o.drift_max, o.replica_drift_max, o.drifted_nodes), (0.0, 0.0, 0));
        assert_eq!((o.claims_unsettled, o.bytes_unsettled, o.retransmitted, o.messages_lost), (0, 0, 0, 0));
        assert_eq!(o.bytes_settled, o.bytes_served);
        assert_eq!(o.claims, 100 * 2 * 8);
        assert!(o.duplicates_submitted > 0);
        assert_eq!(o.duplicates_rejected, o.duplicates_submitted);
        assert_eq!((o.duplicates_accepted, o.duplicates_undelivered, o.honest_rejected), (0, 0, 0));
        for form in DuplicateForm::ALL {
            assert!(o.by_form[form as usize].submitted > 0, "{form:?} never tried");
            assert_eq!(o.by_form[form as usize].accepted, 0, "{form:?}");
        }
        // Split makes two claims per session where the others make one.
        let f = |form: DuplicateForm| o.by_form[form as usize].submitted;
        assert_eq!(f(DuplicateForm::Split), 2 * f(DuplicateForm::Replay));
        assert_eq!(f(DuplicateForm::Renonce), f(DuplicateForm::Replay));
        assert!(f(DuplicateForm::Intermediate) < f(DuplicateForm::Replay));
    }

    #[test]
    fn loss_makes_claims_late_at_the_close_and_only_there() {
        let p = BandwidthParams { loss: 0.2, ..small() };
        let o = simulate(&p, 2).unwrap();
        assert!(o.messages_lost > 0 && o.retransmitted > 0, "{o:?}");
        assert!(o.claims_unsettled > 0 && o.drift_max > 0.0, "{o:?}");
        // Late claims only lower credit: nothing is credited twice.
        assert!(o.settled.iter().zip(&o.served).all(|(s, v)| s <= v));
        assert_eq!(o.duplicates_accepted, 0);
        assert_eq!(o.honest_rejected, 0);
        // A longer grace period lets retransmission and replication finish.
        let o = simulate(&BandwidthParams { grace: 30, ..p }, 2).unwrap();
        assert_eq!((o.claims_unsettled, o.drift_max), (0, 0.0));
        assert!(o.messages_lost > 0);
    }

    #[test]
    fn with_one_keeper_settled_plus_late_bytes_are_the_served_bytes() {
        let p = BandwidthParams { keepers: 1, grace: 0, loss: 0.1, ..small() };
        let o = simulate(&p, 4).unwrap();
        assert!(o.bytes_unsettled > 0);
        assert_eq!(o.bytes_settled + o.bytes_unsettled, o.bytes_served);
        assert_eq!(o.replica_drift_max, o.drift_max);
    }

    #[test]
    fn same_seed_gives_the_same_outcome_and_the_loss_sweep_is_paired() {
        let p = small();
        assert_eq!(simulate(&p, 11).unwrap(), simulate(&p, 11).unwrap());
        assert_ne!(simulate(&p, 11).unwrap().bytes_served, simulate(&p, 12).unwrap().bytes_served);
        let lossless = simulate(&BandwidthParams { loss: 0.0, ..p.clone() }, 11).unwrap();
        let lossy = simulate(&BandwidthParams { loss: 0.05, ..p }, 11).unwrap();
        assert_eq!(lossless.served, lossy.served);
        assert_eq!(lossless.claims, lossy.claims);
    }

    #[test]
    fn at_published_scale_every_duplicate_is_refused() {
        // A seed outside the registered grid: this checks the rules, not the bet.
        let o = simulate(&BandwidthParams::default(), 1_000_003).unwrap();
        assert_eq!(o.byzantine_nodes, 20);
        assert_eq!(o.claims, 1000 * 2 * 24);
        assert!(o.duplicates_submitted > 1000, "{o:?}");
        assert_eq!(o.duplicates_accepted, 0);
        assert_eq!(o.honest_rejected, 0);
        assert!(o.settled.iter().zip(&o.served).all(|(s, v)| s <= v));
    }

    /// Ways to get a ledger wrong, each of which the audit must catch.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Flaw {
        /// None: the same rules as [`Ledger`], for reference.
        None,
        /// Deduplicates by receipt id only: every distinct receipt of a
        /// session is credited in full.
        ById,
        /// Never checks the client's signature.
        Unsigned,
        /// Never checks the epoch.
        AnyEpoch,
        /// Deduplicates by (server, client, round): too coarse.
        Coarse,
    }

    struct Flawed {
        flaw: Flaw,
        setup: KeeperSetup,
        ids: HashSet<Hash>,
        keys: HashMap<(u32, u32, u64), (u32, u64)>,
        credit: Vec<u64>,
    }

    impl Flawed {
        fn new(flaw: Flaw, setup: KeeperSetup) -> Self {
            let credit = vec![0; setup.keys.len()];
            Flawed { flaw, setup, ids: HashSet::new(), keys: HashMap::new(), credit }
        }

        fn take(&mut self, r: &Receipt) -> Decision {
            use Decision::{Credited, Rejected};
            if r.content_hash() != r.id {
                return Rejected(Rejection::BadId);
            }
            if self.flaw != Flaw::AnyEpoch && r.epoch != self.setup.epoch {
                return Rejected(Rejection::WrongEpoch);
            }
            if self.flaw != Flaw::Unsigned && !self.setup.keys.verify(r.client, &r.id, &r.tag) {
                return Rejected(Rejection::BadSignature);
            }
            if self.ids.contains(&r.id) {
                return Rejected(Rejection::Duplicate);
            }
            let key = match self.flaw {
                Flaw::ById => None,
                Flaw::Coarse => Some((r.server, r.client, r.round as u64)),
                _ => Some(r.session_key()),
            };
            let delta = match key.and_then(|k| self.keys.get(&k)) {
                Some(&(seq, _)) if seq >= r.seq || self.flaw == Flaw::Coarse => return Rejected(Rejection::Superseded),
                Some(&(_, bytes)) => r.bytes.saturating_sub(bytes),
                None => r.bytes,
            };
            if let Some(k) = key {
                self.keys.insert(k, (r.seq, r.bytes));
            }
            self.ids.insert(r.id);
            self.credit[r.server as usize] += delta;
            Credited(delta)
        }
    }

    impl Keep for Flawed {
        fn submit(&mut self, r: &Receipt) -> Decision {
            if home_keeper(r.server, self.setup.keepers) != self.setup.index {
                return Decision::Rejected(Rejection::WrongShard);
            }
            self.take(r)
        }
        fn replicate(&mut self, r: &Receipt) -> Decision {
            self.take(r)
        }
        fn credits(&self) -> &[u64] {
            &self.credit
        }
    }

    fn flawed(flaw: Flaw, loss: f64) -> BandwidthOutcome {
        let p = BandwidthParams { nodes: 200, byzantine: 0.05, chunk_bytes: 32 << 10, loss, ..small() };
        simulate_with(&p, 5, |s| Flawed::new(flaw, s)).unwrap()
    }

    /// The forms of which a flawed ledger accepted some.
    fn accepted_forms(o: &BandwidthOutcome) -> Vec<DuplicateForm> {
        DuplicateForm::ALL.into_iter().filter(|&f| o.by_form[f as usize].accepted > 0).collect()
    }

    #[test]
    fn the_reference_ledger_without_a_flaw_gives_the_real_ledgers_outcome() {
        let p = BandwidthParams { nodes: 200, byzantine: 0.05, chunk_bytes: 32 << 10, loss: 0.05, ..small() };
        let real = simulate(&p, 5).unwrap();
        assert_eq!(flawed(Flaw::None, 0.05), real);
        assert_eq!(real.duplicates_accepted, 0);
    }

    #[test]
    fn the_audit_catches_a_ledger_that_deduplicates_by_receipt_id() {
        let o = flawed(Flaw::ById, 0.0);
        assert_eq!(accepted_forms(&o), vec![DuplicateForm::Intermediate]);
        let t = o.by_form[DuplicateForm::Intermediate as usize];
        assert_eq!(t.accepted, t.submitted);
        assert_eq!(o.duplicates_accepted, t.accepted);
        // The byzantine servers are over-credited, which drift shows too.
        assert!(o.settled.iter().zip(&o.served).any(|(s, v)| s > v));
        assert!(o.replica_drift_max > 0.0);
        assert_eq!(o.honest_rejected, 0);
    }

    #[test]
    fn the_audit_catches_a_ledger_that_skips_signatures() {
        let o = flawed(Flaw::Unsigned, 0.0);
        assert_eq!(accepted_forms(&o), vec![DuplicateForm::Renonce, DuplicateForm::Split]);
        assert!(o.drift_max > 0.0);
    }

    #[test]
    fn the_audit_catches_a_ledger_that_ignores_the_epoch() {
        let o = flawed(Flaw::AnyEpoch, 0.0);
        assert_eq!(accepted_forms(&o), vec![DuplicateForm::Stale]);
    }

    #[test]
    fn the_audit_catches_a_ledger_whose_deduplication_refuses_honest_claims() {
        let o = flawed(Flaw::Coarse, 0.01);
        assert!(o.honest_rejected > 0, "{o:?}");
        assert_eq!(o.duplicates_accepted, 0);
        assert!(o.drifted_nodes > 0);
    }

    #[test]
    fn invalid_params_are_rejected_by_name() {
        let d = BandwidthParams::default;
        let bad = [
            (BandwidthParams { nodes: 1, ..d() }, "nodes"),
            (BandwidthParams { keepers: 0, ..d() }, "keepers"),
            (BandwidthParams { keepers: 32, ..d() }, "keepers"),
            (BandwidthParams { rounds: 0, ..d() }, "rounds"),
            (BandwidthParams { grace: 1001, ..d() }, "grace"),
            (BandwidthParams { sessions_per_round: 0, ..d() }, "sessions_per_round"),
            (BandwidthParams { sessions_per_round: 100, ..d() }, "sessions_per_round"),
            (BandwidthParams { size_min: 0, ..d() }, "size_min"),
            (BandwidthParams { size_min: 10, size_max: 9, ..d() }, "size_max"),
            (BandwidthParams { size_alpha: 0.0, ..d() }, "size_alpha"),
            (BandwidthParams { size_alpha: f64::NAN, ..d() }, "size_alpha"),
            (BandwidthParams { chunk_bytes: 0, ..d() }, "chunk_bytes"),
            (BandwidthParams { size_max: MAX_SIZE, chunk_bytes: 1, ..d() }, "chunk_bytes"),
            (BandwidthParams { loss: 1.0, ..d() }, "loss"),
            (BandwidthParams { loss: -0.1, ..d() }, "loss"),
            (BandwidthParams { byzantine: 1.5, ..d() }, "byzantine"),
        ];
        for (p, name) in bad {
            let e = simulate(&p, 0).unwrap_err();
            assert_eq!(e.param, name, "{p:?}");
            assert!(e.to_string().starts_with(&format!("`{name}`")), "{e}");
        }
    }
}
