//! Royalties at scale (bet 68): bet 14's receipts and ledger settling a
//! network's traffic while byzantine servers try to divert royalties, with
//! unsigned and client-signed receipts as the two arms.
//!
//! # The network
//!
//! `specialists` specialists are registered with the ledger, each under its
//! own trainer account and content-addressed by its manifest hash (a trainer
//! with several specialists holds several accounts). `servers` servers and
//! `clients` clients have accounts too. Each of `operations` operations is a
//! client (uniform) asking for a specialist (uniform over those
//! `specialists`; ghosts are never asked for) and routed to a server
//! (uniform; a hosting registry would not help, since a server could declare
//! hosting anything) that serves it, for a fee
//! (uniform in `fee_min..=fee_max`). The server writes a receipt naming the
//! request, the manifest hash served, itself, the fee and the client; the
//! ledger charges the client the fee and splits it between the specialist's
//! trainer and the server exactly as in bet 14 (the trainer gets the floor of
//! `trainer_share_percent`, the server the rest).
//!
//! # The two arms
//!
//! - `unsigned`: the server alone writes the receipt. The ledger can check
//!   what bet 14's does (the id matches the contents, no replay, a registered
//!   manifest, server and client) and nothing more: it has no way to know
//!   what was served, or to whom.
//! - `client-signed`: the client checks the manifest hash of what it was
//!   served (content-addressed identity, bet 65) and the fee, recomputes the
//!   receipt's id from those contents and signs it with its Ed25519 key; the
//!   ledger verifies the signature under the key registered for the named
//!   client (see [`super::signed`]).
//!
//! # The threat model
//!
//! `byzantine_fraction` of the servers (chosen at random) are byzantine and
//! act together. Each colludes with the trainer of one registered specialist
//! (chosen at random, one per byzantine server) and registers
//! `ghosts_per_byzantine` fresh manifests under new trainer accounts it
//! controls: ghosts, in the directory but never asked for by any client.
//! Clients are honest and their keys secret; the coalition cannot register
//! clients; Ed25519 and SHA-256 hold. Within that, on every operation it
//! serves, a byzantine server does what best diverts fees to the coalition:
//!
//! 1. Ghost receipts: it fabricates receipts naming one of its ghosts, the
//!    client it is serving (a real, registered client) and a plausible fee,
//!    for requests that never happened (`ghost_receipts_per_op` per
//!    operation served, on average). If accepted, the client pays for nothing
//!    and royalties go to a specialist nobody was served.
//! 2. Manifest-hash swap: with probability `swap_fraction` it names its
//!    colluding specialist instead of the one it served (unless that is the
//!    same one), diverting the trainer's share to its accomplice. If the
//!    swap is refused, it falls back to the genuine receipt, so trying costs
//!    it nothing.
//! 3. Replay: with probability `replay_fraction` it later resubmits, byte
//!    for byte, the receipt it was paid for (bet 14's replay).
//!
//! It submits the fabrications before the genuine receipt, so that a ledger
//! that deduplicated on the genuine id or signature could not refuse them for
//! that reason alone. With unsigned receipts it writes every forgery with a
//! consistent id. With client-signed receipts it holds only the client's
//! signature on the genuine receipt (an honest client signs nothing else),
//! and since it cannot know which check a ledger gets wrong it probes three
//! ways at random: the genuine id and signature kept on the altered contents
//! (bet 14's tamper), a consistent id under the genuine signature, or no
//! signature.
//!
//! What the arms cannot see, and the model therefore leaves out: a server
//! that runs other weights while reporting the requested manifest (receipts
//! record what the client was told; only verifiable inference could tell),
//! a client colluding with the coalition (a signature proves consent, not
//! service: wash trades paid with the coalition's own money would pass), and
//! a server withholding receipts (it forfeits its own share; nobody in the
//! coalition gains). Statistical detection (volume anomalies) is out of
//! scope too: the ledger judges each receipt on its own.
//!
//! # The audit
//!
//! Against ground truth (which operations happened, where each fee should
//! have gone): fraud submitted and refused by kind and by reason, units paid
//! on fraud, royalty diverted by swaps, royalties credited to specialists
//! that were never served (the catastrophe), conservation (each accepted
//! receipt splits exactly into trainer + server, credits and client charges
//! each sum to the accepted fees), every account against its recomputed
//! balance, units honest parties lost, and genuine receipts refused.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::signed::{ClientKey, PublicKey};
use super::{Hash, Ledger, MAX_FEE, MAX_REQUESTS, Receipt, Rejection, Settle, manifest_hash, split_fee};
use crate::sim::InvalidParam;

/// Who vouches for a receipt: bet 68's two arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptPolicy {
    /// The server alone writes the receipt; nothing proves the client
    /// agreed.
    Unsigned,
    /// The client signs the receipt's id; the ledger verifies it under the
    /// client's registered key.
    ClientSigned,
}

/// Parameters of one royalties-at-scale simulation; the defaults are bet
/// 68's published scale with the client-signed arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleParams {
    /// Operations served (genuine receipts), each by one server to one client.
    pub operations: usize,
    /// Registered specialists that clients ask for (ghosts come on top).
    pub specialists: usize,
    /// Servers, honest and byzantine.
    pub servers: usize,
    /// Clients, each with an account (and a key when receipts are signed).
    pub clients: usize,
    /// Fraction of the servers that are byzantine (rounded to a count).
    pub byzantine_fraction: f64,
    /// Unsigned or client-signed receipts.
    pub receipts: ReceiptPolicy,
    /// Smallest fee of an operation, in integer units.
    pub fee_min: u64,
    /// Largest fee of an operation, in integer units.
    pub fee_max: u64,
    /// Percentage of each fee paid to the specialist's trainer (0..=100).
    pub trainer_share_percent: u64,
    /// Probability that a byzantine server swaps the manifest hash on an
    /// operation it serves.
    pub swap_fraction: f64,
    /// Ghost specialists each byzantine server registers.
    pub ghosts_per_byzantine: usize,
    /// Fabricated ghost receipts per operation a byzantine server serves,
    /// on average (the integer part always, the fraction by chance).
    pub ghost_receipts_per_op: f64,
    /// Probability that a byzantine server later replays the receipt it was
    /// paid for on an operation.
    pub replay_fraction: f64,
}

impl Default for ScaleParams {
    fn default() -> Self {
        ScaleParams {
            operations: 200_000,
            specialists: 10_000,
            servers: 5_000,
            clients: 20_000,
            byzantine_fraction: 0.05,
            receipts: ReceiptPolicy::ClientSigned,
            fee_min: 1,
            fee_max: 1_000,
            trainer_share_percent: 30,
            swap_fraction: 1.0,
            ghosts_per_byzantine: 1,
            ghost_receipts_per_op: 1.0,
            replay_fraction: 0.1,
        }
    }
}

/// Upper bound on `ghosts_per_byzantine`.
pub const MAX_GHOSTS_PER_BYZANTINE: usize = 1_000;
/// Upper bound on `ghost_receipts_per_op`, so that every total stays in an
/// `i64` table column.
pub const MAX_GHOST_RECEIPTS_PER_OP: f64 = 10.0;

impl ScaleParams {
    /// Reject parameters outside the model's range, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if self.operations == 0 || self.operations > MAX_REQUESTS {
            return Err(InvalidParam::new("operations", format!("must be in 1..={MAX_REQUESTS}")));
        }
        for (name, n) in [("specialists", self.specialists), ("servers", self.servers), ("clients", self.clients)] {
            if n == 0 || n > u32::MAX as usize {
                return Err(InvalidParam::new(name, "must be at least 1"));
            }
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
        for (name, f) in [
            ("byzantine_fraction", self.byzantine_fraction),
            ("swap_fraction", self.swap_fraction),
            ("replay_fraction", self.replay_fraction),
        ] {
            if !(0.0..=1.0).contains(&f) {
                return Err(InvalidParam::new(name, "must be in [0, 1]"));
            }
        }
        if self.ghosts_per_byzantine > MAX_GHOSTS_PER_BYZANTINE {
            return Err(InvalidParam::new(
                "ghosts_per_byzantine",
                format!("must be in 0..={MAX_GHOSTS_PER_BYZANTINE}"),
            ));
        }
        if !(0.0..=MAX_GHOST_RECEIPTS_PER_OP).contains(&self.ghost_receipts_per_op) {
            return Err(InvalidParam::new(
                "ghost_receipts_per_op",
                format!("must be in [0, {MAX_GHOST_RECEIPTS_PER_OP}]"),
            ));
        }
        if self.ghost_receipts_per_op > 0.0 && self.ghosts_per_byzantine == 0 {
            return Err(InvalidParam::new("ghost_receipts_per_op", "must be 0 when ghosts_per_byzantine is 0"));
        }
        Ok(())
    }

    /// Byzantine servers: `byzantine_fraction * servers`, rounded.
    pub fn byzantine_servers(&self) -> usize {
        (self.byzantine_fraction * self.servers as f64).round() as usize
    }
}

/// What the ledger is built from: every registered specialist, server and
/// client, as the coalition leaves them after registering its ghosts.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The catalogue's manifest hashes; index = trainer account.
    pub manifests: Vec<Hash>,
    /// The ghosts' manifest hashes, registered after the catalogue (their
    /// trainer accounts follow the catalogue's).
    pub ghosts: Vec<Hash>,
    /// Server accounts.
    pub servers: usize,
    /// Client accounts.
    pub clients: usize,
    /// The clients' public keys (client-signed receipts only; empty for
    /// unsigned ones).
    pub client_keys: Vec<PublicKey>,
    /// The trainer's percentage of each fee.
    pub trainer_share_percent: u64,
    /// The arm.
    pub receipts: ReceiptPolicy,
}

impl Registry {
    /// The ledger under test: bet 14's, charging clients, requiring their
    /// signatures in the client-signed arm, with the ghosts registered the
    /// way anyone registers a specialist.
    pub fn ledger(&self) -> Ledger {
        let base = Ledger::new(&self.manifests, self.servers, self.trainer_share_percent);
        let mut ledger = match self.receipts {
            ReceiptPolicy::Unsigned => base.charging_clients(self.clients),
            ReceiptPolicy::ClientSigned => base.requiring_client_signatures(self.client_keys.clone()),
        };
        for g in &self.ghosts {
            ledger.register(*g).expect("a ghost's manifest is fresh");
        }
        ledger
    }
}

/// What one royalties-at-scale simulation observed; every count is over the
/// whole run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScaleOutcome {
    /// Operations served (one genuine receipt each).
    pub operations: u64,
    /// Operations served by byzantine servers.
    pub byzantine_operations: u64,
    /// Byzantine servers.
    pub byzantine_servers: u64,
    /// Specialists registered: the catalogue plus the ghosts.
    pub registered_specialists: u64,
    /// Ghost specialists registered by the coalition.
    pub ghosts_registered: u64,
    /// Registered specialists no client was ever served (ghosts included).
    pub never_served_specialists: u64,
    /// Receipts handed to the ledger, genuine and fraudulent.
    pub submissions: u64,
    /// Submissions the ledger accepted.
    pub accepted: u64,
    /// Genuine receipts submitted (a byzantine server's only when its swap
    /// was refused).
    pub genuine_submitted: u64,
    /// Genuine receipts the ledger refused (should be 0).
    pub genuine_rejected: u64,
    /// Manifest-swapped receipts submitted.
    pub swap_submitted: u64,
    /// Of those, refused.
    pub swap_rejected: u64,
    /// Fabricated receipts for ghost specialists submitted.
    pub ghost_submitted: u64,
    /// Of those, refused.
    pub ghost_rejected: u64,
    /// Verbatim replays of paid receipts submitted.
    pub replay_submitted: u64,
    /// Of those, refused.
    pub replay_rejected: u64,
    /// Refusals because the id did not match the contents.
    pub rejected_id_mismatch: u64,
    /// Refusals because the receipt was already settled.
    pub rejected_replay: u64,
    /// Refusals for an unknown manifest, server or client.
    pub rejected_unknown: u64,
    /// Refusals because the client's signature was missing.
    pub rejected_missing_signature: u64,
    /// Refusals because the client's signature did not verify.
    pub rejected_bad_signature: u64,
    /// Accepted settlements beyond the first for the same receipt id.
    pub double_counted: u64,
    /// Sum of the fees of all operations served (what should move).
    pub fees_served: u64,
    /// Sum of the fees of all accepted receipts (what did move).
    pub fees_accepted: u64,
    /// Sum of the trainer balances at the end.
    pub trainer_paid_total: u64,
    /// Sum of the server balances at the end.
    pub server_paid_total: u64,
    /// Sum of the client charges at the end.
    pub clients_charged_total: u64,
    /// Sum of the fees of accepted fraudulent receipts.
    pub fraud_units_paid: u64,
    /// Trainer units credited on accepted swaps: royalty moved from the
    /// trainer of the specialist served to an accomplice.
    pub royalty_diverted_units: u64,
    /// Units credited to the trainers of specialists that were never served.
    pub unserved_royalty_units: u64,
    /// Never-served specialists credited any units.
    pub unserved_specialists_paid: u64,
    /// Units honest parties lost: shortfalls of honest trainers and servers
    /// plus overcharges of clients, against ground truth.
    pub honest_units_lost: u64,
    /// Accepted receipts whose shares do not sum to the fee, plus one if the
    /// credits, and one if the client charges, do not sum to the accepted
    /// fees.
    pub conservation_violations: u64,
    /// Largest |balance - balance recomputed from the operations served|
    /// over every trainer, server and client account.
    pub max_abs_imbalance: u64,
}

impl ScaleOutcome {
    /// Fraudulent submissions: swaps, ghost receipts and replays.
    pub fn fraud_submitted(&self) -> u64 {
        self.swap_submitted + self.ghost_submitted + self.replay_submitted
    }

    /// Fraudulent submissions refused.
    pub fn fraud_rejected(&self) -> u64 {
        self.swap_rejected + self.ghost_rejected + self.replay_rejected
    }
}

/// Where a submission came from, by ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Genuine,
    Swap,
    Ghost,
    Replay,
}

/// The manifest hash of ghost `g` of byzantine server `b`.
fn ghost_manifest(seed: u64, b: usize, g: usize) -> Hash {
    let mut h = Sha256::new();
    h.update(b"bets/royalty-ghost-manifest/v1\0");
    h.update(seed.to_le_bytes());
    h.update((b as u64).to_le_bytes());
    h.update((g as u64).to_le_bytes());
    h.finalize().into()
}

/// A forgery of `genuine` with `fake`'s contents, as the adversary submits
/// it: with unsigned receipts a consistent id; with client-signed ones
/// `probe` picks the genuine id and signature kept (0), a consistent id
/// under the genuine signature (1), or no signature (2).
fn forge(genuine: &Receipt, mut fake: Receipt, receipts: ReceiptPolicy, probe: u8) -> Receipt {
    fake.id = fake.content_hash();
    fake.signature = None;
    if receipts == ReceiptPolicy::ClientSigned {
        match probe {
            0 => (fake.id, fake.signature) = (genuine.id, genuine.signature),
            1 => fake.signature = genuine.signature,
            _ => {}
        }
    }
    fake
}

/// The ledger's submissions and what they did, counted as they happen.
struct Tally<L> {
    ledger: L,
    out: ScaleOutcome,
    settled_ids: HashSet<Hash>,
}

impl<L: Settle> Tally<L> {
    /// Submit `r`; whether the ledger accepted it.
    fn submit(&mut self, r: &Receipt, origin: Origin) -> bool {
        let o = &mut self.out;
        o.submissions += 1;
        match origin {
            Origin::Genuine => o.genuine_submitted += 1,
            Origin::Swap => o.swap_submitted += 1,
            Origin::Ghost => o.ghost_submitted += 1,
            Origin::Replay => o.replay_submitted += 1,
        }
        match self.ledger.settle(r) {
            Ok(s) => {
                o.accepted += 1;
                o.fees_accepted += r.fee;
                if s.trainer_units + s.server_units != r.fee {
                    o.conservation_violations += 1;
                }
                if !self.settled_ids.insert(r.id) {
                    o.double_counted += 1;
                }
                if origin != Origin::Genuine {
                    o.fraud_units_paid += r.fee;
                }
                if origin == Origin::Swap {
                    o.royalty_diverted_units += s.trainer_units;
                }
                true
            }
            Err(why) => {
                match why {
                    Rejection::IdMismatch => o.rejected_id_mismatch += 1,
                    Rejection::Replay => o.rejected_replay += 1,
                    Rejection::UnknownManifest | Rejection::UnknownServer | Rejection::UnknownClient => {
                        o.rejected_unknown += 1
                    }
                    Rejection::MissingSignature => o.rejected_missing_signature += 1,
                    Rejection::BadSignature => o.rejected_bad_signature += 1,
                }
                match origin {
                    Origin::Genuine => o.genuine_rejected += 1,
                    Origin::Swap => o.swap_rejected += 1,
                    Origin::Ghost => o.ghost_rejected += 1,
                    Origin::Replay => o.replay_rejected += 1,
                }
                false
            }
        }
    }
}

/// Run one simulation through the ledger under test ([`Registry::ledger`]).
pub fn simulate(params: &ScaleParams, seed: u64) -> Result<ScaleOutcome, InvalidParam> {
    simulate_with(params, seed, Registry::ledger)
}

/// [`simulate`] with another ledger, built from the registry: the same
/// network, traffic, adversary and audit.
pub fn simulate_with<L: Settle>(
    params: &ScaleParams,
    seed: u64,
    ledger: impl FnOnce(&Registry) -> L,
) -> Result<ScaleOutcome, InvalidParam> {
    params.validate()?;
    let p = params;
    let signed = p.receipts == ReceiptPolicy::ClientSigned;

    // Separate streams, so that the arm and the adversary's choices leave
    // the network and the honest traffic untouched (common random numbers
    // across the arms: both see the same operations and the same attempts).
    let stream = |s| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(s);
        r
    };
    let (mut traffic, mut adversary, mut setup) = (stream(0), stream(1), stream(2));

    // The coalition: byzantine servers, each with one accomplice among the
    // catalogue's trainers (distinct while there are enough) and its ghosts.
    let byzantine = p.byzantine_servers();
    let byzantine_ids = sample(&mut setup, p.servers, byzantine).into_vec();
    let accomplices = sample(&mut setup, p.specialists, byzantine.min(p.specialists)).into_vec();
    let mut coalition_of = vec![None; p.servers];
    for (b, &s) in byzantine_ids.iter().enumerate() {
        coalition_of[s] = Some(b);
    }
    let accomplice_of = |b: usize| accomplices[b % accomplices.len()];
    let manifests: Vec<Hash> = (0..p.specialists).map(|i| manifest_hash(seed, i)).collect();
    let ghosts: Vec<Hash> =
        (0..byzantine).flat_map(|b| (0..p.ghosts_per_byzantine).map(move |g| ghost_manifest(seed, b, g))).collect();

    let keys: Vec<ClientKey> =
        if signed { (0..p.clients).map(|c| ClientKey::derive(seed, c as u32)).collect() } else { Vec::new() };
    let registry = Registry {
        manifests: manifests.clone(),
        ghosts: ghosts.clone(),
        servers: p.servers,
        clients: p.clients,
        client_keys: keys.iter().map(ClientKey::public).collect(),
        trainer_share_percent: p.trainer_share_percent,
        receipts: p.receipts,
    };
    let registered = manifests.len() + ghosts.len();
    let mut tally = Tally { ledger: ledger(&registry), out: ScaleOutcome::default(), settled_ids: HashSet::new() };

    // Ground truth, accumulated as operations happen.
    let mut served = vec![0u64; registered];
    let mut want_trainer = vec![0u64; registered];
    let mut want_server = vec![0u64; p.servers];
    let mut want_client = vec![0u64; p.clients];

    let n = p.operations;
    let mut replays: BinaryHeap<Reverse<(usize, u64)>> = BinaryHeap::new();
    let mut replay_receipts: Vec<Receipt> = Vec::new();
    let mut fabricated: u64 = 0;
    let ghost_whole = p.ghost_receipts_per_op.floor() as usize;
    let ghost_extra = p.ghost_receipts_per_op - ghost_whole as f64;

    for k in 0..n {
        let client = traffic.random_range(0..p.clients) as u32;
        let spec = traffic.random_range(0..p.specialists);
        let server = traffic.random_range(0..p.servers);
        let fee = traffic.random_range(p.fee_min..=p.fee_max);

        served[spec] += 1;
        let (t, s) = split_fee(fee, p.trainer_share_percent);
        want_trainer[spec] += t;
        want_server[server] += s;
        want_client[client as usize] += fee;
        tally.out.fees_served += fee;

        let mut genuine = Receipt::for_client(k as u64, manifests[spec], server as u32, fee, client);
        if signed {
            genuine.signature = Some(keys[client as usize].sign(&genuine));
        }
        let Some(b) = coalition_of[server] else {
            tally.submit(&genuine, Origin::Genuine);
            continue;
        };
        tally.out.byzantine_operations += 1;

        // Every draw is made whatever the arm, so both arms see the same
        // attempts.
        let count = ghost_whole + usize::from(adversary.random_bool(ghost_extra));
        for _ in 0..count {
            let g = adversary.random_range(0..p.ghosts_per_byzantine);
            let ghost_fee = adversary.random_range(p.fee_min..=p.fee_max);
            let probe = adversary.random_range(0..3u8);
            // A request number nobody used: the ledger cannot tell it from a
            // real one.
            let request = n as u64 + fabricated;
            fabricated += 1;
            let fake =
                Receipt::for_client(request, ghosts[b * p.ghosts_per_byzantine + g], server as u32, ghost_fee, client);
            tally.submit(&forge(&genuine, fake, p.receipts, probe), Origin::Ghost);
        }
        let swap = adversary.random_bool(p.swap_fraction);
        let probe = adversary.random_range(0..3u8);
        let replay_at = adversary.random_bool(p.replay_fraction).then(|| adversary.random_range(k + 1..=n));

        let accomplice = accomplice_of(b);
        let mut swapped = None;
        if swap && accomplice != spec {
            let fake = Receipt { manifest: manifests[accomplice], ..genuine.clone() };
            let forged = forge(&genuine, fake, p.receipts, probe);
            if tally.submit(&forged, Origin::Swap) {
                swapped = Some(forged);
            }
        }
        // Refused (or not tried): the genuine receipt, so as to be paid.
        let paid = swapped.unwrap_or_else(|| {
            tally.submit(&genuine, Origin::Genuine);
            genuine
        });
        if let Some(at) = replay_at {
            replays.push(Reverse((at, replay_receipts.len() as u64)));
            replay_receipts.push(paid);
        }

        // Replays due now go in after this operation's receipts.
        while let Some(&Reverse((at, j))) = replays.peek() {
            if at > k {
                break;
            }
            replays.pop();
            tally.submit(&replay_receipts[j as usize], Origin::Replay);
        }
    }
    while let Some(Reverse((_, j))) = replays.pop() {
        tally.submit(&replay_receipts[j as usize], Origin::Replay);
    }

    let Tally { ledger, mut out, .. } = tally;
    out.operations = n as u64;
    out.byzantine_servers = byzantine as u64;
    out.registered_specialists = registered as u64;
    out.ghosts_registered = ghosts.len() as u64;
    out.never_served_specialists = served.iter().filter(|&&c| c == 0).count() as u64;

    let (trainers, servers, charges) = (ledger.trainer_balances(), ledger.server_balances(), ledger.client_charges());
    out.trainer_paid_total = trainers.iter().sum();
    out.server_paid_total = servers.iter().sum();
    out.clients_charged_total = charges.iter().sum();
    if out.trainer_paid_total + out.server_paid_total != out.fees_accepted {
        out.conservation_violations += 1;
    }
    if out.clients_charged_total != out.fees_accepted {
        out.conservation_violations += 1;
    }

    // Every account against ground truth; an account the ledger does not
    // keep holds nothing.
    let have = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    let mut colluding = vec![false; registered];
    for b in 0..byzantine {
        colluding[accomplice_of(b)] = true;
    }
    colluding[manifests.len()..].fill(true);
    let mut imbalance = 0u64;
    for (i, &want) in want_trainer.iter().enumerate() {
        let got = have(trainers, i);
        imbalance = imbalance.max(got.abs_diff(want));
        if !colluding[i] {
            out.honest_units_lost += want.saturating_sub(got);
        }
        if served[i] == 0 && got > 0 {
            out.unserved_royalty_units += got;
            out.unserved_specialists_paid += 1;
        }
    }
    for (i, &want) in want_server.iter().enumerate() {
        let got = have(servers, i);
        imbalance = imbalance.max(got.abs_diff(want));
        if coalition_of[i].is_none() {
            out.honest_units_lost += want.saturating_sub(got);
        }
    }
    for (i, &want) in want_client.iter().enumerate() {
        let got = have(charges, i);
        imbalance = imbalance.max(got.abs_diff(want));
        out.honest_units_lost += got.saturating_sub(want);
    }
    // A ledger with more accounts than the network has credited someone
    // who does not exist.
    for extra in trainers.iter().skip(registered).chain(servers.iter().skip(p.servers)) {
        imbalance = imbalance.max(*extra);
    }
    out.max_abs_imbalance = imbalance;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Settlement;
    use super::super::signed::{self, ClientKey};
    use super::*;

    fn tiny(receipts: ReceiptPolicy) -> ScaleParams {
        ScaleParams {
            operations: 2_000,
            specialists: 100,
            servers: 40,
            clients: 200,
            receipts,
            ..ScaleParams::default()
        }
    }

    /// A one-specialist-swap and one-ghost network: catalogue [a, b], ghost
    /// g registered later, one server, one client with key `key`.
    struct Hand {
        a: Hash,
        b: Hash,
        g: Hash,
        key: ClientKey,
    }

    impl Hand {
        fn new() -> Self {
            Hand {
                a: manifest_hash(1, 0),
                b: manifest_hash(1, 1),
                g: ghost_manifest(1, 0, 0),
                key: ClientKey::derive(1, 0),
            }
        }

        fn ledger(&self, receipts: ReceiptPolicy) -> Ledger {
            let registry = Registry {
                manifests: vec![self.a, self.b],
                ghosts: vec![self.g],
                servers: 1,
                clients: 1,
                client_keys: vec![self.key.public()],
                trainer_share_percent: 30,
                receipts,
            };
            registry.ledger()
        }

        /// The genuine receipt for serving `a` to the client for 100 units,
        /// signed by the client when `signed`.
        fn genuine(&self, signed: bool) -> Receipt {
            let mut r = Receipt::for_client(0, self.a, 0, 100, 0);
            if signed {
                r.signature = Some(self.key.sign(&r));
            }
            r
        }
    }

    #[test]
    fn a_swapped_and_a_ghost_receipt_are_paid_unsigned_and_refused_signed_with_the_reason() {
        let h = Hand::new();
        // Unsigned: the server writes consistent receipts naming b (swap)
        // and g (ghost, a request that never happened); both are paid.
        let mut ledger = h.ledger(ReceiptPolicy::Unsigned);
        let genuine = h.genuine(false);
        let swap = forge(&genuine, Receipt { manifest: h.b, ..genuine.clone() }, ReceiptPolicy::Unsigned, 0);
        let ghost = forge(&genuine, Receipt::for_client(7, h.g, 0, 50, 0), ReceiptPolicy::Unsigned, 0);
        assert_eq!(ledger.settle(&swap), Ok(Settlement { trainer: 1, trainer_units: 30, server: 0, server_units: 70 }));
        assert_eq!(
            ledger.settle(&ghost),
            Ok(Settlement { trainer: 2, trainer_units: 15, server: 0, server_units: 35 })
        );
        // a's trainer got nothing, b's and the ghost's were paid, the client
        // was charged 50 units for nothing.
        assert_eq!(ledger.trainer_balances(), &[0, 30, 15]);
        assert_eq!(ledger.server_balances(), &[105]);
        assert_eq!(ledger.client_charges(), &[150]);

        // Client-signed: each probe is refused for its own reason, balances
        // untouched, and the genuine receipt is still paid afterwards.
        let mut ledger = h.ledger(ReceiptPolicy::ClientSigned);
        let genuine = h.genuine(true);
        let cases = [(0, Rejection::IdMismatch), (1, Rejection::BadSignature), (2, Rejection::MissingSignature)];
        for (probe, why) in cases {
            let swap =
                forge(&genuine, Receipt { manifest: h.b, ..genuine.clone() }, ReceiptPolicy::ClientSigned, probe);
            assert_eq!(ledger.settle(&swap), Err(why), "swap, probe {probe}");
            let fake = Receipt::for_client(7, h.g, 0, 50, 0);
            let ghost = forge(&genuine, fake, ReceiptPolicy::ClientSigned, probe);
            assert_eq!(ledger.settle(&ghost), Err(why), "ghost, probe {probe}");
        }
        assert_eq!(ledger.trainer_balances(), &[0, 0, 0]);
        assert_eq!(ledger.client_charges(), &[0]);
        assert_eq!(
            ledger.settle(&genuine),
            Ok(Settlement { trainer: 0, trainer_units: 30, server: 0, server_units: 70 })
        );
        assert_eq!(ledger.settle(&genuine), Err(Rejection::Replay));
        assert_eq!((ledger.trainer_balances(), ledger.client_charges()), (&[30, 0, 0][..], &[100][..]));
    }

    #[test]
    fn a_signed_ledger_refuses_receipts_naming_no_client_or_an_unknown_one() {
        let h = Hand::new();
        let mut ledger = h.ledger(ReceiptPolicy::ClientSigned);
        let mut anonymous = Receipt::new(0, h.a, 0, 100);
        anonymous.signature = Some(h.key.sign(&anonymous));
        assert_eq!(ledger.settle(&anonymous), Err(Rejection::UnknownClient));
        let mut stranger = Receipt::for_client(0, h.a, 0, 100, 1);
        stranger.signature = Some(h.key.sign(&stranger));
        assert_eq!(ledger.settle(&stranger), Err(Rejection::UnknownClient));
        // Re-signing a one-bit change is what only the client can do; the
        // server's copy of the old signature does not verify.
        let genuine = h.genuine(true);
        let mut flipped = Receipt { fee: genuine.fee ^ 1, ..genuine.clone() };
        flipped.id = flipped.content_hash();
        assert_eq!(ledger.settle(&flipped), Err(Rejection::BadSignature));
        assert_eq!(ledger.settled_count(), 0);
    }

    #[test]
    fn a_manifest_cannot_be_registered_twice() {
        let h = Hand::new();
        let mut ledger = h.ledger(ReceiptPolicy::Unsigned);
        assert_eq!(ledger.register(h.a), Err(super::super::AlreadyRegistered));
        assert_eq!(ledger.register(h.g), Err(super::super::AlreadyRegistered));
        assert_eq!(ledger.register(ghost_manifest(1, 0, 1)), Ok(3));
    }

    #[test]
    fn bet_14_receipts_keep_their_ids() {
        // v1 encoding, computed independently: a receipt that names no
        // client hashes exactly as before the extension.
        let r = Receipt::new(3, [9; 32], 2, 77);
        let mut h = Sha256::new();
        h.update(b"bets/royalty-receipt/v1\0");
        h.update(3u64.to_le_bytes());
        h.update([9u8; 32]);
        h.update(2u32.to_le_bytes());
        h.update(77u64.to_le_bytes());
        assert_eq!(r.id, <[u8; 32]>::from(h.finalize()));
        assert_ne!(Receipt::for_client(3, [9; 32], 2, 77, 0).id, r.id);
    }

    /// One byzantine server is the only server; fixed fees of 100.
    fn all_byzantine(receipts: ReceiptPolicy) -> ScaleParams {
        ScaleParams {
            operations: 10,
            specialists: 2,
            servers: 1,
            clients: 1,
            byzantine_fraction: 1.0,
            fee_min: 100,
            fee_max: 100,
            replay_fraction: 0.0,
            receipts,
            ..ScaleParams::default()
        }
    }

    #[test]
    fn unsigned_receipts_pay_every_fraud_of_a_lone_byzantine_server() {
        let o = simulate(&all_byzantine(ReceiptPolicy::Unsigned), 0).unwrap();
        assert_eq!(o.byzantine_operations, 10);
        assert_eq!(o.ghost_submitted, 10);
        assert_eq!(o.ghost_rejected + o.swap_rejected, 0);
        // Swaps happen on the operations not already for the accomplice;
        // the others are submitted genuine.
        assert_eq!(o.swap_submitted + o.genuine_submitted, 10);
        assert_eq!(o.accepted, 20);
        assert_eq!(o.fraud_units_paid, 100 * (10 + o.swap_submitted));
        assert_eq!(o.royalty_diverted_units, 30 * o.swap_submitted);
        // The ghost's trainer got 30 per fabricated receipt; the client paid
        // for 20 operations and was served 10.
        assert_eq!(o.unserved_royalty_units, 300);
        assert_eq!(o.unserved_specialists_paid, 1);
        assert_eq!(o.clients_charged_total, 2_000);
        assert_eq!(o.fees_served, 1_000);
        assert_eq!(o.trainer_paid_total, 600);
        assert_eq!(o.server_paid_total, 1_400);
        assert_eq!(o.conservation_violations, 0, "the arithmetic holds while fraud is paid");
        assert_eq!(o.max_abs_imbalance, 1_000);
        // The honest trainer lost its share of every swapped operation.
        assert_eq!(o.honest_units_lost, 1_000 + 30 * o.swap_submitted);
    }

    #[test]
    fn client_signed_receipts_refuse_every_fraud_of_a_lone_byzantine_server() {
        let o = simulate(&all_byzantine(ReceiptPolicy::ClientSigned), 0).unwrap();
        let unsigned = simulate(&all_byzantine(ReceiptPolicy::Unsigned), 0).unwrap();
        assert_eq!(o.swap_submitted, unsigned.swap_submitted, "the same attempts in both arms");
        assert_eq!(o.ghost_submitted, 10);
        assert_eq!(o.fraud_rejected(), o.fraud_submitted());
        assert_eq!(o.fraud_units_paid, 0);
        assert_eq!(o.genuine_submitted, 10, "every refused swap falls back to the genuine receipt");
        assert_eq!((o.accepted, o.genuine_rejected), (10, 0));
        assert_eq!(
            o.rejected_id_mismatch + o.rejected_bad_signature + o.rejected_missing_signature,
            o.fraud_submitted()
        );
        assert_eq!((o.unserved_royalty_units, o.max_abs_imbalance, o.honest_units_lost), (0, 0, 0));
        assert_eq!((o.trainer_paid_total, o.server_paid_total, o.clients_charged_total), (300, 700, 1_000));
    }

    #[test]
    fn at_tiny_scale_the_signed_arm_refuses_all_fraud_and_the_unsigned_arm_pays_all_but_replays() {
        let (u, s) = (
            simulate(&tiny(ReceiptPolicy::Unsigned), 3).unwrap(),
            simulate(&tiny(ReceiptPolicy::ClientSigned), 3).unwrap(),
        );
        assert_eq!(u.byzantine_servers, 2);
        assert_eq!(u.ghosts_registered, 2);
        assert_eq!(u.registered_specialists, 102);
        assert!(u.byzantine_operations > 0);
        for o in [&u, &s] {
            assert_eq!(o.operations, 2_000);
            assert_eq!(o.ghost_submitted, o.byzantine_operations);
            assert_eq!(o.double_counted, 0);
            assert_eq!(o.conservation_violations, 0);
            assert_eq!(o.replay_rejected, o.replay_submitted);
            assert_eq!(o.rejected_unknown, 0);
        }
        // Same network, traffic and attempts in both arms.
        assert_eq!((u.fees_served, u.byzantine_operations), (s.fees_served, s.byzantine_operations));
        assert_eq!((u.swap_submitted, u.replay_submitted), (s.swap_submitted, s.replay_submitted));
        assert!(u.replay_submitted > 0);

        assert_eq!(u.swap_rejected + u.ghost_rejected, 0);
        assert_eq!(u.fraud_rejected(), u.replay_submitted);
        assert!(u.fraud_units_paid > 0 && u.unserved_royalty_units > 0 && u.max_abs_imbalance > 0);
        assert_eq!(u.accepted, 2_000 + u.ghost_submitted);

        assert_eq!(s.fraud_rejected(), s.fraud_submitted());
        assert_eq!(s.accepted, 2_000);
        assert_eq!(s.genuine_submitted, 2_000);
        assert_eq!((s.genuine_rejected, s.fraud_units_paid, s.unserved_royalty_units), (0, 0, 0));
        assert_eq!((s.max_abs_imbalance, s.honest_units_lost), (0, 0));
        assert_eq!(s.fees_accepted, s.fees_served);
        assert_eq!(s.trainer_paid_total + s.server_paid_total, s.fees_served);
        assert!(s.rejected_id_mismatch > 0 && s.rejected_bad_signature > 0 && s.rejected_missing_signature > 0);
    }

    #[test]
    fn same_seed_gives_the_same_outcome_and_another_seed_does_not() {
        for arm in [ReceiptPolicy::Unsigned, ReceiptPolicy::ClientSigned] {
            let p = ScaleParams { operations: 500, ..tiny(arm) };
            assert_eq!(simulate(&p, 5).unwrap(), simulate(&p, 5).unwrap());
            assert_ne!(simulate(&p, 5).unwrap().fees_served, simulate(&p, 6).unwrap().fees_served);
        }
    }

    #[test]
    fn invalid_params_are_rejected_by_name() {
        let d = ScaleParams::default;
        let bad = [
            (ScaleParams { operations: 0, ..d() }, "operations"),
            (ScaleParams { specialists: 0, ..d() }, "specialists"),
            (ScaleParams { servers: 0, ..d() }, "servers"),
            (ScaleParams { clients: 0, ..d() }, "clients"),
            (ScaleParams { fee_min: 0, ..d() }, "fee_min"),
            (ScaleParams { fee_min: 10, fee_max: 5, ..d() }, "fee_max"),
            (ScaleParams { trainer_share_percent: 101, ..d() }, "trainer_share_percent"),
            (ScaleParams { byzantine_fraction: 1.5, ..d() }, "byzantine_fraction"),
            (ScaleParams { swap_fraction: f64::NAN, ..d() }, "swap_fraction"),
            (ScaleParams { replay_fraction: -0.1, ..d() }, "replay_fraction"),
            (ScaleParams { ghosts_per_byzantine: 5_000, ..d() }, "ghosts_per_byzantine"),
            (ScaleParams { ghost_receipts_per_op: 11.0, ..d() }, "ghost_receipts_per_op"),
            (ScaleParams { ghosts_per_byzantine: 0, ..d() }, "ghost_receipts_per_op"),
        ];
        for (p, name) in bad {
            let e = simulate(&p, 0).unwrap_err();
            assert_eq!(e.param, name);
            assert!(e.to_string().starts_with(&format!("`{name}`")), "{e}");
        }
    }

    /// Verifies the client's signature over the id the receipt carries, but
    /// never checks that id against the contents: the signature then binds
    /// the id and not the manifest (or anything else) beside it.
    struct TrustsTheId {
        percent: u64,
        trainer_of: std::collections::BTreeMap<Hash, usize>,
        keys: Vec<PublicKey>,
        settled: HashSet<Hash>,
        trainer: Vec<u64>,
        server: Vec<u64>,
        client: Vec<u64>,
    }

    impl TrustsTheId {
        fn new(r: &Registry) -> Self {
            let all: Vec<Hash> = r.manifests.iter().chain(&r.ghosts).copied().collect();
            TrustsTheId {
                percent: r.trainer_share_percent,
                trainer_of: all.iter().enumerate().map(|(i, m)| (*m, i)).collect(),
                keys: r.client_keys.clone(),
                settled: HashSet::new(),
                trainer: vec![0; all.len()],
                server: vec![0; r.servers],
                client: vec![0; r.clients],
            }
        }
    }

    impl Settle for TrustsTheId {
        fn settle(&mut self, r: &Receipt) -> Result<Settlement, Rejection> {
            if self.settled.contains(&r.id) {
                return Err(Rejection::Replay);
            }
            let trainer = *self.trainer_of.get(&r.manifest).ok_or(Rejection::UnknownManifest)?;
            let client = r.client.ok_or(Rejection::UnknownClient)? as usize;
            let sig = r.signature.as_ref().ok_or(Rejection::MissingSignature)?;
            if !signed::verify(&self.keys[client], &r.id, sig) {
                return Err(Rejection::BadSignature);
            }
            let (t, s) = split_fee(r.fee, self.percent);
            self.settled.insert(r.id);
            self.trainer[trainer] += t;
            self.server[r.server as usize] += s;
            self.client[client] += r.fee;
            Ok(Settlement { trainer, trainer_units: t, server: r.server as usize, server_units: s })
        }
        fn trainer_balances(&self) -> &[u64] {
            &self.trainer
        }
        fn server_balances(&self) -> &[u64] {
            &self.server
        }
        fn client_charges(&self) -> &[u64] {
            &self.client
        }
    }

    #[test]
    fn the_audit_catches_a_ledger_whose_signature_check_does_not_cover_the_manifest() {
        let p = tiny(ReceiptPolicy::ClientSigned);
        let o = simulate_with(&p, 3, TrustsTheId::new).unwrap();
        // The probes that keep the genuine id and signature get through.
        assert!(o.ghost_rejected < o.ghost_submitted);
        assert!(o.fraud_units_paid > 0);
        assert!(o.unserved_royalty_units > 0 && o.unserved_specialists_paid > 0, "the catastrophe shows");
        assert!(o.max_abs_imbalance > 0 && o.honest_units_lost > 0);
        // A ghost settled under the genuine id makes the genuine receipt
        // look like a replay.
        assert!(o.genuine_rejected > 0);
        // Each settlement still splits exactly and no id is paid twice:
        // conservation alone would not have caught it.
        assert_eq!((o.conservation_violations, o.double_counted), (0, 0));
        // The correct ledger on the same traffic refuses all of it.
        let good = simulate(&p, 3).unwrap();
        assert_eq!((good.fraud_units_paid, good.unserved_royalty_units, good.max_abs_imbalance), (0, 0, 0));
    }

    /// Charges no client: every fee is credited, nobody pays it.
    struct ChargesNobody(Ledger);

    impl Settle for ChargesNobody {
        fn settle(&mut self, r: &Receipt) -> Result<Settlement, Rejection> {
            self.0.settle(r)
        }
        fn trainer_balances(&self) -> &[u64] {
            self.0.trainer_balances()
        }
        fn server_balances(&self) -> &[u64] {
            self.0.server_balances()
        }
    }

    #[test]
    fn the_audit_catches_fees_credited_but_charged_to_nobody() {
        let p = ScaleParams { operations: 300, ..tiny(ReceiptPolicy::Unsigned) };
        let o = simulate_with(&p, 0, |r| ChargesNobody(r.ledger())).unwrap();
        assert_eq!(o.clients_charged_total, 0);
        assert_eq!(o.conservation_violations, 1);
        assert!(o.max_abs_imbalance > 0);
    }
}
