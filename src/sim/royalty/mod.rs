//! Royalty receipts and the ledger that settles them (bet 14), simulated with
//! adversarial resubmissions so that "conservation is exact" and "no receipt
//! is double-counted" are measured rather than assumed.
//!
//! The model: `specialists` specialists, each owned by its own trainer and
//! identified by a manifest hash, are served by `servers` servers. Every
//! served request yields a [`Receipt`] (request number, manifest hash, server,
//! fee in integer units) whose id is the SHA-256 of its contents. A
//! [`Ledger`] settles receipts: it pays the trainer `trainer_share_percent` of
//! the fee and the server the rest.
//!
//! Rounding rule (the only place integer division happens): the trainer gets
//! `floor(fee * percent / 100)` and the server gets `fee - trainer`. The
//! server therefore absorbs every fractional remainder (less than one unit per
//! receipt), and `trainer + server == fee` holds for every receipt by
//! construction, with no unit created or lost.
//!
//! The adversary resubmits genuine receipts verbatim (replays, which must be
//! rejected as already settled) and submits tampered copies that keep a
//! genuine id but change the fee or the server (which must be rejected because
//! the id no longer matches the contents). The simulation audits the ledger
//! against its own ground truth: which receipts were genuine, and what every
//! account should hold.
//!
//! Bet 68 ([`scale`]) extends the same receipt and ledger rather than
//! copying them: a receipt may name the client who was served and is charged
//! the fee, and may carry that client's Ed25519 signature over its id
//! ([`signed`]); a ledger may keep client accounts, require the signature,
//! and accept new registrations. A receipt that names no client hashes
//! exactly as bet 14's did, and a ledger built with [`Ledger::new`] alone
//! behaves exactly as bet 14's did.

pub mod scale;
pub mod signed;

use std::collections::{BTreeMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InvalidParam;

/// A SHA-256 digest: manifest hashes and receipt ids.
pub type Hash = [u8; 32];

/// An Ed25519 signature over a receipt id (see [`signed::signing_message`]).
pub type Signature = [u8; 64];

/// Parameters of one royalty simulation.
///
/// The defaults are bet 14's published scale (3 specialists x 3 servers, a
/// 30 / 70 split) with enough requests that every (specialist, server) pair
/// is exercised many times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RoyaltyParams {
    /// Specialists (each with its own trainer account).
    pub specialists: usize,
    /// Servers (each with its own account).
    pub servers: usize,
    /// Served requests, i.e. genuine receipts.
    pub requests: usize,
    /// Smallest fee of a request, in integer units.
    pub fee_min: u64,
    /// Largest fee of a request, in integer units (fees are uniform in
    /// `fee_min..=fee_max`).
    pub fee_max: u64,
    /// Percentage of each fee paid to the specialist's trainer (0..=100).
    pub trainer_share_percent: u64,
    /// Verbatim resubmissions of genuine receipts, as a fraction of
    /// `requests` (rounded to the nearest count).
    pub replay_fraction: f64,
    /// Tampered copies (genuine id, changed fee or server), as a fraction of
    /// `requests` (rounded to the nearest count).
    pub tamper_fraction: f64,
}

impl Default for RoyaltyParams {
    fn default() -> Self {
        RoyaltyParams {
            specialists: 3,
            servers: 3,
            requests: 10_000,
            fee_min: 1,
            fee_max: 1_000,
            trainer_share_percent: 30,
            replay_fraction: 0.1,
            tamper_fraction: 0.0,
        }
    }
}

/// Upper bound on `requests`, so that a simulation stays in memory and in
/// seconds.
pub const MAX_REQUESTS: usize = 10_000_000;
/// Upper bound on `fee_max`, so that every total fits an `i64` table column
/// (`MAX_REQUESTS * MAX_FEE < 2^63`).
pub const MAX_FEE: u64 = 1_000_000_000;

impl RoyaltyParams {
    /// Reject parameters outside the model's range, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if self.specialists == 0 || self.specialists > u32::MAX as usize {
            return Err(InvalidParam::new("specialists", "must be at least 1"));
        }
        if self.servers == 0 || self.servers > u32::MAX as usize {
            return Err(InvalidParam::new("servers", "must be at least 1"));
        }
        if self.requests == 0 || self.requests > MAX_REQUESTS {
            return Err(InvalidParam::new("requests", format!("must be in 1..={MAX_REQUESTS}")));
        }
        if self.fee_min == 0 {
            return Err(InvalidParam::new("fee_min", "must be at least 1 unit"));
        }
        if self.fee_max < self.fee_min || self.fee_max > MAX_FEE {
            return Err(InvalidParam::new("fee_max", format!("must be in fee_min..={MAX_FEE}")));
        }
        if self.trainer_share_percent > 100 {
            return Err(InvalidParam::new("trainer_share_percent", "must be in 0..=100"));
        }
        for (name, f) in [("replay_fraction", self.replay_fraction), ("tamper_fraction", self.tamper_fraction)] {
            if !(0.0..=1.0).contains(&f) {
                return Err(InvalidParam::new(name, "must be in [0, 1]"));
            }
        }
        Ok(())
    }
}

/// Proof that a request was served: what a server submits to be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// SHA-256 of the other fields (see [`Receipt::content_hash`]); the
    /// ledger's deduplication key.
    pub id: Hash,
    /// The request's sequence number; makes two otherwise identical requests
    /// distinct receipts.
    pub request: u64,
    /// Manifest hash of the specialist that served it.
    pub manifest: Hash,
    /// Index of the server that served it.
    pub server: u32,
    /// Fee paid by the client, in integer units.
    pub fee: u64,
    /// The client who was served and is charged the fee (bet 68); `None` for
    /// bet 14's receipts, which name no client.
    pub client: Option<u32>,
    /// The client's signature over the id (client-signed receipts, bet 68);
    /// not part of the id, which it signs.
    pub signature: Option<Signature>,
}

impl Receipt {
    /// A receipt whose id matches its contents.
    pub fn new(request: u64, manifest: Hash, server: u32, fee: u64) -> Self {
        let mut r = Receipt { id: [0; 32], request, manifest, server, fee, client: None, signature: None };
        r.id = r.content_hash();
        r
    }

    /// An unsigned receipt naming the client served and charged, whose id
    /// matches its contents.
    pub fn for_client(request: u64, manifest: Hash, server: u32, fee: u64, client: u32) -> Self {
        let mut r = Receipt { client: Some(client), ..Receipt::new(request, manifest, server, fee) };
        r.id = r.content_hash();
        r
    }

    /// SHA-256 over a domain tag and the fixed-width little-endian fields, so
    /// that no two different receipts share an encoding. A receipt that names
    /// no client is encoded as in bet 14 (`v1`); one that names a client is
    /// tagged `v2` and appends the client, so neither can pass for the other.
    pub fn content_hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(match self.client {
            None => b"bets/royalty-receipt/v1\0",
            Some(_) => b"bets/royalty-receipt/v2\0",
        });
        h.update(self.request.to_le_bytes());
        h.update(self.manifest);
        h.update(self.server.to_le_bytes());
        h.update(self.fee.to_le_bytes());
        if let Some(client) = self.client {
            h.update(client.to_le_bytes());
        }
        h.finalize().into()
    }
}

/// Why the ledger refused a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A receipt with this id was already settled.
    #[error("receipt already settled")]
    Replay,
    /// The id does not hash the contents: the receipt was altered.
    #[error("receipt id does not match its contents")]
    IdMismatch,
    /// No registered specialist has this manifest hash.
    #[error("unknown manifest hash")]
    UnknownManifest,
    /// No registered server has this index.
    #[error("unknown server")]
    UnknownServer,
    /// The ledger charges clients and the receipt names no registered one.
    #[error("receipt names no registered client")]
    UnknownClient,
    /// The ledger requires the client's signature and the receipt has none.
    #[error("receipt is not signed by its client")]
    MissingSignature,
    /// The signature does not verify, under the named client's registered
    /// key, over the receipt's id.
    #[error("client signature does not verify over the receipt")]
    BadSignature,
}

/// A registration refused because the manifest hash already has a trainer:
/// a content-addressed id belongs to whoever registered it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("manifest already registered")]
pub struct AlreadyRegistered;

/// Where the units of one accepted receipt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Trainer account credited (the specialist's index).
    pub trainer: usize,
    /// Units credited to the trainer.
    pub trainer_units: u64,
    /// Server account credited.
    pub server: usize,
    /// Units credited to the server.
    pub server_units: u64,
}

/// Split a fee between trainer and server: the trainer gets
/// `floor(fee * percent / 100)`, the server the rest, so the two always sum
/// to the fee. Computed in `u128`, so it cannot overflow.
pub fn split_fee(fee: u64, trainer_percent: u64) -> (u64, u64) {
    let trainer = (fee as u128 * trainer_percent.min(100) as u128 / 100) as u64;
    (trainer, fee - trainer)
}

/// What the simulation needs of a ledger, so that the audit can be pointed
/// at a deliberately broken one and shown to catch it.
pub trait Settle {
    /// Verify and credit one receipt, or refuse it.
    fn settle(&mut self, r: &Receipt) -> Result<Settlement, Rejection>;
    /// Units held by each trainer account, by specialist index.
    fn trainer_balances(&self) -> &[u64];
    /// Units held by each server account, by server index.
    fn server_balances(&self) -> &[u64];
    /// Units charged to each client account, by client index (bet 68);
    /// empty for a ledger that charges no client, as bet 14's.
    fn client_charges(&self) -> &[u64] {
        &[]
    }
}

/// The settlement ledger: registered specialists and servers, settled receipt
/// ids, and account balances in integer units.
#[derive(Debug, Clone)]
pub struct Ledger {
    trainer_percent: u64,
    trainer_of: BTreeMap<Hash, usize>,
    servers: usize,
    settled: HashSet<Hash>,
    trainer_balance: Vec<u64>,
    server_balance: Vec<u64>,
    clients: Option<ClientAccounts>,
}

/// The client side of a ledger that charges clients (bet 68).
#[derive(Debug, Clone)]
struct ClientAccounts {
    /// Units charged so far, by client index.
    charged: Vec<u64>,
    /// Registered public keys, by client index, when every receipt must
    /// carry its client's signature; `None` for unsigned receipts.
    keys: Option<Vec<signed::PublicKey>>,
}

impl Ledger {
    /// A ledger that knows these specialists (manifest hash of each; index =
    /// trainer account) and `servers` server accounts.
    pub fn new(manifests: &[Hash], servers: usize, trainer_percent: u64) -> Self {
        Ledger {
            trainer_percent,
            trainer_of: manifests.iter().enumerate().map(|(i, m)| (*m, i)).collect(),
            servers,
            settled: HashSet::new(),
            trainer_balance: vec![0; manifests.len()],
            server_balance: vec![0; servers],
            clients: None,
        }
    }

    /// This ledger, also keeping `clients` client accounts: every receipt
    /// must name one of them, who is charged its fee. Nothing proves the
    /// client agreed: the server alone wrote the receipt (bet 68's unsigned
    /// arm).
    pub fn charging_clients(mut self, clients: usize) -> Self {
        self.clients = Some(ClientAccounts { charged: vec![0; clients], keys: None });
        self
    }

    /// This ledger, also keeping one client account per registered key:
    /// every receipt must name a client and carry that client's signature
    /// over its id (bet 68's client-signed arm).
    pub fn requiring_client_signatures(mut self, keys: Vec<signed::PublicKey>) -> Self {
        self.clients = Some(ClientAccounts { charged: vec![0; keys.len()], keys: Some(keys) });
        self
    }

    /// Register a new specialist with a fresh trainer account; returns the
    /// account's index. Anyone may register (a specialist is published by
    /// its trainer), so registration proves nothing about being served.
    pub fn register(&mut self, manifest: Hash) -> Result<usize, AlreadyRegistered> {
        if self.trainer_of.contains_key(&manifest) {
            return Err(AlreadyRegistered);
        }
        let account = self.trainer_balance.len();
        self.trainer_of.insert(manifest, account);
        self.trainer_balance.push(0);
        Ok(account)
    }

    /// Receipts settled so far.
    pub fn settled_count(&self) -> usize {
        self.settled.len()
    }
}

impl Settle for Ledger {
    /// Verify a receipt and credit its fee, or refuse it without touching any
    /// balance. Checks, in order: id matches contents, not yet settled, known
    /// manifest, known server; then, for a ledger that charges clients, a
    /// registered client and, where signatures are required, the client's
    /// signature over the id (last, as the only costly check).
    fn settle(&mut self, r: &Receipt) -> Result<Settlement, Rejection> {
        if r.content_hash() != r.id {
            return Err(Rejection::IdMismatch);
        }
        if self.settled.contains(&r.id) {
            return Err(Rejection::Replay);
        }
        let trainer = *self.trainer_of.get(&r.manifest).ok_or(Rejection::UnknownManifest)?;
        let server = r.server as usize;
        if server >= self.servers {
            return Err(Rejection::UnknownServer);
        }
        let client = match &self.clients {
            None => None,
            Some(accounts) => {
                let client = r.client.map(|c| c as usize).filter(|c| *c < accounts.charged.len());
                let client = client.ok_or(Rejection::UnknownClient)?;
                if let Some(keys) = &accounts.keys {
                    let signature = r.signature.as_ref().ok_or(Rejection::MissingSignature)?;
                    if !signed::verify(&keys[client], &r.id, signature) {
                        return Err(Rejection::BadSignature);
                    }
                }
                Some(client)
            }
        };
        let (trainer_units, server_units) = split_fee(r.fee, self.trainer_percent);
        self.settled.insert(r.id);
        self.trainer_balance[trainer] += trainer_units;
        self.server_balance[server] += server_units;
        if let (Some(client), Some(accounts)) = (client, self.clients.as_mut()) {
            accounts.charged[client] += r.fee;
        }
        Ok(Settlement { trainer, trainer_units, server, server_units })
    }

    fn trainer_balances(&self) -> &[u64] {
        &self.trainer_balance
    }

    fn server_balances(&self) -> &[u64] {
        &self.server_balance
    }

    fn client_charges(&self) -> &[u64] {
        self.clients.as_ref().map_or(&[], |c| &c.charged)
    }
}

/// What one royalty simulation observed; every count is over the whole run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoyaltyOutcome {
    /// Genuine receipts issued (one per served request).
    pub receipts: u64,
    /// Submissions to the ledger: genuine, replayed and tampered.
    pub submissions: u64,
    /// Submissions the ledger accepted.
    pub accepted: u64,
    /// Genuine receipts the ledger refused (should be 0).
    pub genuine_rejected: u64,
    /// Verbatim resubmissions made by the adversary.
    pub replays_submitted: u64,
    /// Of those, refused by the ledger.
    pub replays_rejected: u64,
    /// Tampered copies submitted by the adversary.
    pub tampered_submitted: u64,
    /// Of those, refused by the ledger.
    pub tampered_rejected: u64,
    /// Accepted settlements beyond the first for the same receipt id.
    pub double_counted: u64,
    /// Sum of the fees of all genuine receipts.
    pub fees_total: u64,
    /// Sum of all account balances at the end.
    pub paid_total: u64,
    /// Sum of the trainer balances at the end.
    pub trainer_paid_total: u64,
    /// Sum of the server balances at the end.
    pub server_paid_total: u64,
    /// Accepted receipts whose trainer and server units do not sum to the
    /// fee, plus one if the balances do not sum to the accepted fees.
    pub conservation_violations: u64,
    /// Largest difference, over all accounts, between the ledger's balance
    /// and the balance recomputed from the genuine receipts alone.
    pub max_abs_imbalance: u64,
}

/// One thing the adversary or an honest server hands the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Genuine,
    Replay,
    Tampered,
}

/// The manifest hash of specialist `i` in a network built from `seed`.
fn manifest_hash(seed: u64, i: usize) -> Hash {
    let mut h = Sha256::new();
    h.update(b"bets/royalty-manifest/v1\0");
    h.update(seed.to_le_bytes());
    h.update((i as u64).to_le_bytes());
    h.finalize().into()
}

/// Run one simulation: issue the receipts, interleave the adversary's
/// submissions after the receipts they copy, settle everything in order
/// through a [`Ledger`], and audit it against the genuine receipts.
pub fn simulate(params: &RoyaltyParams, seed: u64) -> Result<RoyaltyOutcome, InvalidParam> {
    let (servers, percent) = (params.servers, params.trainer_share_percent);
    simulate_with(params, seed, |manifests| Ledger::new(manifests, servers, percent))
}

/// [`simulate`] with another ledger, built from the specialists' manifest
/// hashes (index = trainer account): the same traffic, adversary and audit.
pub fn simulate_with<L: Settle>(
    params: &RoyaltyParams,
    seed: u64,
    ledger: impl FnOnce(&[Hash]) -> L,
) -> Result<RoyaltyOutcome, InvalidParam> {
    params.validate()?;
    let manifests: Vec<Hash> = (0..params.specialists).map(|i| manifest_hash(seed, i)).collect();

    // Separate streams, so that changing the adversary's volume leaves the
    // honest traffic untouched (common random numbers across a sweep).
    let mut traffic = ChaCha8Rng::seed_from_u64(seed);
    traffic.set_stream(0);
    let mut adversary = ChaCha8Rng::seed_from_u64(seed);
    adversary.set_stream(1);

    let genuine: Vec<(Receipt, usize)> = (0..params.requests)
        .map(|k| {
            let spec = traffic.random_range(0..params.specialists);
            let server = traffic.random_range(0..params.servers) as u32;
            let fee = traffic.random_range(params.fee_min..=params.fee_max);
            (Receipt::new(k as u64, manifests[spec], server, fee), spec)
        })
        .collect();

    // Submission order key: (time, class, sequence). Genuine receipt k is
    // submitted at time k; a copy of receipt k at a time in k+1..=requests.
    let n = params.requests;
    let mut queue: Vec<((usize, u8, usize), Receipt, Origin)> =
        genuine.iter().enumerate().map(|(k, (r, _))| ((k, 0, k), r.clone(), Origin::Genuine)).collect();
    let replays = (params.replay_fraction * n as f64).round() as usize;
    for j in 0..replays {
        let k = adversary.random_range(0..n);
        let t = adversary.random_range(k + 1..=n);
        queue.push(((t, 1, j), genuine[k].0.clone(), Origin::Replay));
    }
    let tampers = (params.tamper_fraction * n as f64).round() as usize;
    for j in 0..tampers {
        let k = adversary.random_range(0..n);
        let t = adversary.random_range(k + 1..=n);
        let mut r = genuine[k].0.clone();
        if params.servers > 1 && adversary.random_bool(0.5) {
            // Redirect the server share to another server.
            let shift = adversary.random_range(1..params.servers) as u32;
            r.server = (r.server + shift) % params.servers as u32;
        } else {
            // Inflate the fee.
            r.fee += adversary.random_range(1..=params.fee_max);
        }
        queue.push(((t, 2, j), r, Origin::Tampered));
    }
    queue.sort_by_key(|(key, _, _)| *key);

    let mut ledger = ledger(&manifests);
    let mut out = RoyaltyOutcome {
        receipts: n as u64,
        submissions: queue.len() as u64,
        replays_submitted: replays as u64,
        tampered_submitted: tampers as u64,
        ..Default::default()
    };
    let mut accepted_per_id: BTreeMap<Hash, u64> = BTreeMap::new();
    let mut accepted_fees: u64 = 0;
    for (_, r, origin) in &queue {
        match ledger.settle(r) {
            Ok(s) => {
                out.accepted += 1;
                accepted_fees += r.fee;
                if s.trainer_units + s.server_units != r.fee {
                    out.conservation_violations += 1;
                }
                let seen = accepted_per_id.entry(r.id).or_insert(0);
                *seen += 1;
                if *seen > 1 {
                    out.double_counted += 1;
                }
            }
            Err(_) => match origin {
                Origin::Genuine => out.genuine_rejected += 1,
                Origin::Replay => out.replays_rejected += 1,
                Origin::Tampered => out.tampered_rejected += 1,
            },
        }
    }

    out.trainer_paid_total = ledger.trainer_balances().iter().sum();
    out.server_paid_total = ledger.server_balances().iter().sum();
    out.paid_total = out.trainer_paid_total + out.server_paid_total;
    if out.paid_total != accepted_fees {
        out.conservation_violations += 1;
    }

    // Ground truth: what each account should hold had exactly the genuine
    // receipts been settled once each.
    let mut want_trainer = vec![0u64; params.specialists];
    let mut want_server = vec![0u64; params.servers];
    for (r, spec) in &genuine {
        out.fees_total += r.fee;
        let (t, s) = split_fee(r.fee, params.trainer_share_percent);
        want_trainer[*spec] += t;
        want_server[r.server as usize] += s;
    }
    out.max_abs_imbalance = ledger
        .trainer_balances()
        .iter()
        .zip(&want_trainer)
        .chain(ledger.server_balances().iter().zip(&want_server))
        .map(|(have, want)| have.abs_diff(*want))
        .max()
        .unwrap_or(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(n: usize) -> Vec<Hash> {
        (0..n).map(|i| manifest_hash(7, i)).collect()
    }

    #[test]
    fn split_gives_the_trainer_the_floor_and_the_server_the_rest() {
        assert_eq!(split_fee(100, 30), (30, 70));
        assert_eq!(split_fee(1, 30), (0, 1));
        assert_eq!(split_fee(7, 30), (2, 5)); // 2.1 -> 2
        assert_eq!(split_fee(10, 35), (3, 7)); // 3.5 -> 3
        assert_eq!(split_fee(999, 30), (299, 700)); // 299.7 -> 299
        assert_eq!(split_fee(u64::MAX, 30).0 + split_fee(u64::MAX, 30).1, u64::MAX);
        assert_eq!(split_fee(5, 0), (0, 5));
        assert_eq!(split_fee(5, 100), (5, 0));
    }

    #[test]
    fn ledger_settles_hand_computed_fees_exactly() {
        let m = manifests(2);
        let mut ledger = Ledger::new(&m, 2, 30);
        // fees 7, 100, 999, 1 -> trainer 2 + 30 + 299 + 0, server 5 + 70 + 700 + 1
        let receipts = [
            Receipt::new(0, m[0], 0, 7),
            Receipt::new(1, m[1], 1, 100),
            Receipt::new(2, m[0], 1, 999),
            Receipt::new(3, m[1], 0, 1),
        ];
        for r in &receipts {
            let s = ledger.settle(r).unwrap();
            assert_eq!(s.trainer_units + s.server_units, r.fee);
        }
        assert_eq!(ledger.trainer_balances(), &[2 + 299, 30]);
        assert_eq!(ledger.server_balances(), &[5 + 1, 70 + 700]);
        let total: u64 = ledger.trainer_balances().iter().chain(ledger.server_balances()).sum();
        assert_eq!(total, 7 + 100 + 999 + 1);
    }

    #[test]
    fn ledger_rejects_a_replayed_receipt_and_leaves_balances_alone() {
        let m = manifests(1);
        let mut ledger = Ledger::new(&m, 1, 30);
        let r = Receipt::new(0, m[0], 0, 100);
        assert!(ledger.settle(&r).is_ok());
        assert_eq!(ledger.settle(&r), Err(Rejection::Replay));
        assert_eq!(ledger.trainer_balances(), &[30]);
        assert_eq!(ledger.server_balances(), &[70]);
        assert_eq!(ledger.settled_count(), 1);
    }

    #[test]
    fn ledger_rejects_tampered_and_unknown_receipts() {
        let m = manifests(1);
        let mut ledger = Ledger::new(&m, 1, 30);
        let mut inflated = Receipt::new(0, m[0], 0, 100);
        inflated.fee = 1_000;
        assert_eq!(ledger.settle(&inflated), Err(Rejection::IdMismatch));
        let ghost = Receipt::new(1, manifest_hash(8, 0), 0, 100);
        assert_eq!(ledger.settle(&ghost), Err(Rejection::UnknownManifest));
        let elsewhere = Receipt::new(2, m[0], 5, 100);
        assert_eq!(ledger.settle(&elsewhere), Err(Rejection::UnknownServer));
        assert_eq!(ledger.settled_count(), 0);
        assert_eq!(ledger.trainer_balances(), &[0]);
    }

    #[test]
    fn receipts_differing_only_in_request_number_have_different_ids() {
        let m = manifests(1);
        assert_ne!(Receipt::new(0, m[0], 0, 5).id, Receipt::new(1, m[0], 0, 5).id);
    }

    #[test]
    fn simulation_at_published_scale_conserves_and_rejects_every_replay() {
        let p = RoyaltyParams { tamper_fraction: 0.05, ..RoyaltyParams::default() };
        let o = simulate(&p, 0).unwrap();
        assert_eq!(o.receipts, 10_000);
        assert_eq!(o.replays_submitted, 1_000);
        assert_eq!(o.tampered_submitted, 500);
        assert_eq!(o.submissions, 11_500);
        assert_eq!(o.accepted, 10_000);
        assert_eq!(o.genuine_rejected, 0);
        assert_eq!(o.replays_rejected, 1_000);
        assert_eq!(o.tampered_rejected, 500);
        assert_eq!(o.double_counted, 0);
        assert_eq!(o.conservation_violations, 0);
        assert_eq!(o.max_abs_imbalance, 0);
        assert_eq!(o.paid_total, o.fees_total);
        assert_eq!(o.trainer_paid_total + o.server_paid_total, o.fees_total);
        // Flooring costs the trainer under one unit per receipt.
        let exact = o.fees_total as f64 * 0.3;
        assert!(o.trainer_paid_total as f64 <= exact && exact - (o.trainer_paid_total as f64) < 10_000.0);
    }

    #[test]
    fn same_seed_gives_the_same_outcome_and_another_seed_does_not() {
        let p = RoyaltyParams { requests: 2_000, tamper_fraction: 0.1, ..RoyaltyParams::default() };
        assert_eq!(simulate(&p, 3).unwrap(), simulate(&p, 3).unwrap());
        assert_ne!(simulate(&p, 3).unwrap().fees_total, simulate(&p, 4).unwrap().fees_total);
    }

    #[test]
    fn adversary_volume_does_not_change_the_honest_traffic() {
        let quiet = RoyaltyParams { requests: 500, replay_fraction: 0.0, ..RoyaltyParams::default() };
        let loud = RoyaltyParams { replay_fraction: 1.0, tamper_fraction: 1.0, ..quiet.clone() };
        let (a, b) = (simulate(&quiet, 1).unwrap(), simulate(&loud, 1).unwrap());
        assert_eq!(a.fees_total, b.fees_total);
        assert_eq!(a.trainer_paid_total, b.trainer_paid_total);
        assert_eq!(b.double_counted, 0);
        assert_eq!(b.replays_rejected, 500);
    }

    /// Credits everything it is handed, replays included.
    struct Gullible {
        percent: u64,
        trainers: BTreeMap<Hash, usize>,
        trainer: Vec<u64>,
        server: Vec<u64>,
    }

    impl Settle for Gullible {
        fn settle(&mut self, r: &Receipt) -> Result<Settlement, Rejection> {
            if r.content_hash() != r.id {
                return Err(Rejection::IdMismatch);
            }
            let (t, s) = split_fee(r.fee, self.percent);
            let trainer = self.trainers[&r.manifest];
            self.trainer[trainer] += t;
            self.server[r.server as usize] += s;
            Ok(Settlement { trainer, trainer_units: t, server: r.server as usize, server_units: s })
        }
        fn trainer_balances(&self) -> &[u64] {
            &self.trainer
        }
        fn server_balances(&self) -> &[u64] {
            &self.server
        }
    }

    #[test]
    fn the_audit_catches_a_ledger_that_accepts_replays() {
        let p = RoyaltyParams { requests: 1_000, ..RoyaltyParams::default() };
        let o = simulate_with(&p, 0, |m| Gullible {
            percent: 30,
            trainers: m.iter().enumerate().map(|(i, h)| (*h, i)).collect(),
            trainer: vec![0; 3],
            server: vec![0; 3],
        })
        .unwrap();
        assert_eq!(o.replays_submitted, 100);
        assert_eq!(o.replays_rejected, 0);
        assert_eq!(o.double_counted, 100);
        assert!(o.max_abs_imbalance > 0);
        assert!(o.paid_total > o.fees_total);
        // Each settlement still splits exactly: conservation alone would
        // not have caught it.
        assert_eq!(o.conservation_violations, 0);
    }

    #[test]
    fn invalid_params_are_rejected_by_name() {
        let bad = [
            (RoyaltyParams { specialists: 0, ..Default::default() }, "specialists"),
            (RoyaltyParams { servers: 0, ..Default::default() }, "servers"),
            (RoyaltyParams { requests: 0, ..Default::default() }, "requests"),
            (RoyaltyParams { fee_min: 0, ..Default::default() }, "fee_min"),
            (RoyaltyParams { fee_min: 10, fee_max: 5, ..Default::default() }, "fee_max"),
            (RoyaltyParams { trainer_share_percent: 101, ..Default::default() }, "trainer_share_percent"),
            (RoyaltyParams { replay_fraction: -0.1, ..Default::default() }, "replay_fraction"),
            (RoyaltyParams { tamper_fraction: f64::NAN, ..Default::default() }, "tamper_fraction"),
        ];
        for (p, name) in bad {
            let e = simulate(&p, 0).unwrap_err();
            assert_eq!(e.param, name);
            assert!(e.to_string().starts_with(&format!("`{name}`")), "{e}");
        }
    }
}
