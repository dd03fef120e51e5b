//! Revocation of a misbehaving specialist by gossip vote (bet 66): how many
//! rounds until 95% of the live honest nodes consider it revoked, when a
//! quarter of the nodes are byzantine and a tenth of the nodes are replaced
//! every round, and is an honest specialist ever revoked?
//!
//! # The protocol
//!
//! - **Votes.** A node that has its own evidence against a specialist signs
//!   one revoke vote on it. Signatures are modelled as unforgeable,
//!   node-bound vote ids: a vote names its voter and nobody else can make
//!   one in that voter's name. An honest node votes at most once per
//!   specialist and never takes a vote back. Evidence is not transferable
//!   (a bad answer one node saw proves nothing to another; otherwise one
//!   proof would do and no vote would be needed), so every voter must have
//!   seen misbehaviour itself.
//! - **Equivocation.** Two different signed votes by one voter on one
//!   specialist are proof that the voter equivocated. A node holding both
//!   counts that voter for nothing on that specialist (neither twice nor
//!   once), and keeps forwarding both so the proof spreads.
//! - **Quorum** ("2/3 honest quorum"). The protocol is designed for at most
//!   `b = round(byzantine * nodes)` byzantine members, so it presumes
//!   `h = nodes - b` honest ones. A node revokes a specialist once it holds
//!   valid votes from more than `quorum` (2/3) of `h` voters, i.e. from at
//!   least `threshold = floor(2h/3) + 1` voters (501 of 1000 nodes). The base
//!   is the presumed-honest membership, as the catalogue's "honest quorum"
//!   says: two thirds of the honest nodes must have seen the misbehaviour.
//!   (More than 2/3 of *all* members would ask for 8/9 of the honest nodes.)
//!   Revocation is final at that node.
//! - **Membership and churn: departed voters' votes stay valid, but only
//!   toward a quorum of one round.** A vote carries, under its signature,
//!   the round it was signed in. Every node knows the membership of every
//!   round (an idealised membership service, as bet 15's uniform peer
//!   sampling; bet 15 measures how a directory gets there). The counted
//!   voters must all have been members at one same round `t` (any `t` up to
//!   now) and have signed by then: a snapshot of round `t` in which they all
//!   stood accused together. The node counts, for each round, the voters it
//!   holds such a valid vote from and takes the largest count. A departed
//!   node's vote therefore still proves what it said while it was a member,
//!   so a fresh node can verify a past quorum from the votes alone. Counting
//!   every vote ever cast against today's membership instead would let the
//!   adversary rotate identities through churn (each departing byzantine
//!   node comes back as a fresh one and votes again) until byzantine votes
//!   alone pass any threshold; the tests show the audit catching that rule.
//!   With the one-round rule at most `b < threshold` byzantine voters count,
//!   whatever they do (a byzantine voter may stamp its vote with any round at
//!   which it is a member; the model stamps it at its first round, the most
//!   it can get), so an honest specialist is revoked only if at least
//!   `threshold - b` honest members of one round had accused it by then.
//! - **Gossip.** Every round each live honest node picks `fanout` distinct
//!   peers uniformly among the other members and pushes every vote it holds
//!   (anti-entropy); an honest peer replies with every vote it holds (pull),
//!   which is how a fresh node catches up in one exchange. Each message is
//!   lost independently with probability `loss`. Messages carry the state at
//!   the start of the round, so a vote moves at most one hop a round.
//!
//! # The world
//!
//! - `nodes` seats, `b` of them byzantine; specialists `0..misbehaving`
//!   misbehave (ground truth: they must be revoked), the next
//!   `honest_specialists` are honest (ground truth: revoking any is the
//!   catastrophe).
//! - Round 0 is the state before anything happens (no votes). Rounds
//!   `1..=max_rounds` each run, in order: churn, evidence, the byzantine
//!   flood, gossip, then every honest node tallies and the audit looks.
//! - **Churn**: `round(churn * nodes)` seats chosen uniformly at random
//!   change hands; the leaving node's identity never returns and a fresh
//!   identity (no votes, no evidence) takes the seat. Churn is random, not
//!   steered by the adversary, and a byzantine seat stays byzantine, so the
//!   adversary keeps exactly its 25% of the live membership.
//! - **Evidence**: every round, each live honest node that has not voted on
//!   a specialist and not revoked it (a node stops using what it revoked,
//!   so it gathers no new evidence) detects a misbehaving specialist with
//!   probability `detection`, and wrongly accuses an honest one with
//!   probability `false_accusation`; either way it casts its vote.
//!
//! # The adversary (all byzantine nodes collude and share what they learn)
//!
//! - **Votes to revoke honest specialists**: every byzantine identity, from
//!   its first round, signs revoke votes on every honest specialist.
//! - **Equivocates** (`equivocate`): each of those is signed twice (two
//!   different votes); one half of the nodes gets the first version, the
//!   other half the second, so that a counter that counts votes rather than
//!   voters sees double, and each node counts the voter until it holds both.
//! - **Floods what helps it**: every round the byzantine nodes send every
//!   live node all their votes (departed byzantine identities' included) and
//!   every honest vote against an honest specialist they have received;
//!   honest nodes accept all valid votes, so the adversary's votes and the
//!   honest false accusations reach everyone at once (the worst case).
//! - **Withholds** (`withhold`): byzantine nodes never forward honest votes
//!   against a misbehaving specialist, never reply to a pull and never start
//!   an exchange; a push an honest node sends them is wasted. Without
//!   `withhold` they relay gossip like honest nodes (they still vote and
//!   flood).
//! - They never vote against a misbehaving specialist (they want it kept).
//!
//! # The audit (ground truth)
//!
//! After each round: the fraction of live honest nodes that consider the
//! misbehaving specialist revoked (the least-revoked one when there are
//! several), the round at which that first reaches `target` (95%), and every
//! honest specialist any honest node has revoked.
//!
//! Randomness comes from four ChaCha8 streams of one seed (membership,
//! evidence, peer choice, loss), and the evidence stream draws once per
//! (live honest node, specialist, round) whatever the state, so runs that
//! differ only in a rate see the same churn and the same draws.

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::InvalidParam;

/// An exact fraction, written `"num/den"` in a spec (e.g. `"2/3"`), so that
/// a quorum threshold is integer arithmetic rather than a rounded float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub num: u32,
    pub den: u32,
}

impl Fraction {
    /// The catalogue's quorum.
    pub const TWO_THIRDS: Fraction = Fraction { num: 2, den: 3 };

    /// The smallest count strictly greater than this fraction of `n`.
    pub fn more_than(self, n: usize) -> usize {
        (self.num as u64 * n as u64 / self.den.max(1) as u64) as usize + 1
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl std::str::FromStr for Fraction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a fraction like \"2/3\"");
        let (num, den) = s.split_once('/').ok_or_else(bad)?;
        let parse = |x: &str| x.trim().parse::<u32>().map_err(|_| bad());
        Ok(Fraction { num: parse(num)?, den: parse(den)? })
    }
}

impl Serialize for Fraction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Fraction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fraction".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[0-9]+/[0-9]+$" })
    }
}

/// Parameters of one revocation simulation; as a spec's `[procedure]`, every
/// one is optional and defaults to bet 66's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationParams {
    /// Live nodes (constant: every leave is matched by a join).
    pub nodes: usize,
    /// Fraction of the nodes that are byzantine; also the bound the quorum
    /// is designed for.
    pub byzantine: f64,
    /// Fraction of the live nodes replaced in every round.
    pub churn: f64,
    /// A node revokes once it holds valid votes from more than this fraction
    /// of the presumed-honest membership (`nodes - round(byzantine * nodes)`),
    /// all members at one same round that had signed by then; written
    /// `"num/den"`.
    pub quorum: Fraction,
    /// Misbehaving specialists (to be revoked).
    pub misbehaving: usize,
    /// Honest specialists (revoking any is the catastrophe).
    pub honest_specialists: usize,
    /// Per-round probability that a live honest node without a vote detects
    /// a misbehaving specialist and votes.
    pub detection: f64,
    /// Per-round probability that a live honest node without a vote wrongly
    /// accuses an honest specialist and votes.
    pub false_accusation: f64,
    /// Peers each live honest node starts an exchange with per round.
    pub fanout: usize,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Byzantine nodes sign two different votes on each honest specialist.
    pub equivocate: bool,
    /// Byzantine nodes forward no honest vote against a misbehaving
    /// specialist and take no part in gossip.
    pub withhold: bool,
    /// Fraction of the live honest nodes that must consider the misbehaving
    /// specialist revoked.
    pub target: f64,
    /// Rounds simulated after round 0; `rounds_to_target` is
    /// `max_rounds + 1` when the target is not reached by then.
    pub max_rounds: usize,
}

impl Default for RevocationParams {
    fn default() -> Self {
        RevocationParams {
            nodes: 1000,
            byzantine: 0.25,
            churn: 0.10,
            quorum: Fraction::TWO_THIRDS,
            misbehaving: 1,
            honest_specialists: 20,
            detection: 0.5,
            false_accusation: 0.01,
            fanout: 3,
            loss: 0.05,
            equivocate: true,
            withhold: true,
            target: 0.95,
            max_rounds: 30,
        }
    }
}

/// Most `nodes * specialists * voter-id words` a simulation may hold: the
/// vote state is four arrays of that many `u64` (32 MiB each at the cap).
pub const MAX_STATE_WORDS: usize = 1 << 22;

impl RevocationParams {
    /// Byzantine nodes: `round(byzantine * nodes)`.
    pub fn byzantine_nodes(&self) -> usize {
        (self.byzantine * self.nodes as f64).round() as usize
    }

    /// The membership the quorum presumes honest: `nodes - byzantine_nodes`.
    pub fn presumed_honest(&self) -> usize {
        self.nodes - self.byzantine_nodes()
    }

    /// Votes a node must hold to revoke: more than `quorum` of the
    /// presumed-honest membership.
    pub fn threshold(&self) -> usize {
        self.quorum.more_than(self.presumed_honest())
    }

    /// Seats that change hands every round: `round(churn * nodes)`.
    pub fn replaced_per_round(&self) -> usize {
        (self.churn * self.nodes as f64).round() as usize
    }

    /// Every identity a run can see: the first members and every joiner.
    pub fn voter_ids(&self) -> usize {
        self.nodes + self.max_rounds * self.replaced_per_round()
    }

    fn specialists(&self) -> usize {
        self.misbehaving + self.honest_specialists
    }

    /// Reject parameters outside the model's range, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if !(2..=100_000).contains(&self.nodes) {
            return Err(InvalidParam::new("nodes", "must be in 2..=100000"));
        }
        if !(0.0..1.0).contains(&self.byzantine) || self.byzantine_nodes() >= self.nodes {
            return Err(InvalidParam::new("byzantine", "must be in [0, 1) and leave at least one honest node"));
        }
        if !(0.0..=0.5).contains(&self.churn) {
            return Err(InvalidParam::new("churn", "must be in [0, 0.5]"));
        }
        if self.quorum.den == 0 || self.quorum.num == 0 || self.quorum.num >= self.quorum.den {
            return Err(InvalidParam::new("quorum", "must be a fraction strictly between 0 and 1, like \"2/3\""));
        }
        if self.misbehaving == 0 || self.misbehaving > 100 {
            return Err(InvalidParam::new("misbehaving", "must be in 1..=100"));
        }
        if self.honest_specialists > 1000 {
            return Err(InvalidParam::new("honest_specialists", "must be at most 1000"));
        }
        for (name, x) in [("detection", self.detection), ("false_accusation", self.false_accusation)] {
            if !(0.0..=1.0).contains(&x) {
                return Err(InvalidParam::new(name, "must be a probability in [0, 1]"));
            }
        }
        if self.fanout == 0 || self.fanout >= self.nodes {
            return Err(InvalidParam::new("fanout", "must be in 1..nodes"));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(InvalidParam::new("loss", "must be in [0, 1)"));
        }
        if !(self.target > 0.0 && self.target <= 1.0) {
            return Err(InvalidParam::new("target", "must be in (0, 1]"));
        }
        if self.max_rounds == 0 || self.max_rounds > 1000 {
            return Err(InvalidParam::new("max_rounds", "must be in 1..=1000"));
        }
        let words = self.nodes.saturating_mul(self.specialists()).saturating_mul(self.voter_ids().div_ceil(64));
        if words > MAX_STATE_WORDS {
            return Err(InvalidParam::new(
                "nodes",
                format!(
                    "nodes x specialists x voter-id words = {words} exceeds {MAX_STATE_WORDS}; \
                     fewer nodes, specialists, rounds or less churn"
                ),
            ));
        }
        Ok(())
    }
}

/// For one specialist, who can count toward a quorum of each round so far:
/// one bitset over voter ids per round, the members of that round (after its
/// churn) whose vote on the specialist was signed by then. Round 0 has no
/// votes, so the first bitset is round 1.
#[derive(Debug, Clone, Default)]
pub struct Eligible {
    rounds: Vec<Vec<u64>>,
}

impl Eligible {
    /// A history of per-round bitsets, round 1 first.
    pub fn new(rounds: Vec<Vec<u64>>) -> Self {
        Eligible { rounds }
    }

    /// Voters that can count toward a quorum of round `t` (1-based).
    pub fn at(&self, t: usize) -> &[u64] {
        &self.rounds[t - 1]
    }

    /// Rounds recorded (the current round is `len()`).
    pub fn len(&self) -> usize {
        self.rounds.len()
    }

    /// Whether no round is recorded yet.
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }
}

/// How a node turns the votes it holds on one specialist into a count of
/// voters toward the threshold. One rule is the protocol
/// ([`OneRoundQuorum`]); the tests point the simulation at broken ones and
/// check that the audit catches them.
pub trait Tally {
    /// `first` and `second` are bitsets over voter ids: the node holds a
    /// first vote from voter `v`, and a second, different one. Honest voters
    /// only ever have a first vote.
    fn count(&self, first: &[u64], second: &[u64], eligible: &Eligible) -> usize;
}

/// The protocol's rule: voters the node holds exactly one vote from (an
/// equivocator counts for nothing), all members at one same round that had
/// signed by then; the largest such set over the rounds so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneRoundQuorum;

impl Tally for OneRoundQuorum {
    fn count(&self, first: &[u64], second: &[u64], eligible: &Eligible) -> usize {
        eligible
            .rounds
            .iter()
            .map(|m| first.iter().zip(second).zip(m).map(|((a, b), m)| ((a ^ b) & m).count_ones() as usize).sum())
            .max()
            .unwrap_or(0)
    }
}

/// The state of one round as the audit saw it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoundState {
    /// Fraction of the live honest nodes that consider the misbehaving
    /// specialist revoked (the least-revoked one when there are several).
    pub revoked_fraction: f64,
    /// Mean over the live honest nodes (and misbehaving specialists) of the
    /// votes counted toward revoking the misbehaving specialist, divided by
    /// the presumed-honest membership: the quorum sits just above `quorum`.
    pub votes_held_fraction: f64,
    /// The largest count toward revoking an honest specialist at any live
    /// honest node, divided by the presumed-honest membership: the safety
    /// margin against the same quorum line (0 without honest specialists).
    pub honest_votes_max_fraction: f64,
}

/// What one revocation simulation observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RevocationOutcome {
    /// Byzantine nodes (constant through churn).
    pub byzantine_nodes: usize,
    /// Votes a node must count to revoke.
    pub threshold: usize,
    /// The audit after each round, round 0 (nothing yet) first.
    pub curve: Vec<RoundState>,
    /// Whether the revoked fraction reached `target` within `max_rounds`.
    pub reached: bool,
    /// First round at which the revoked fraction reached `target`;
    /// `max_rounds + 1` when it did not.
    pub rounds_to_target: usize,
    /// Lowest revoked fraction from that round to the end (churn brings in
    /// fresh nodes that must catch up); 0 when the target was not reached.
    pub revoked_fraction_min_after: f64,
    /// Honest specialists that some honest node revoked at some round.
    pub honest_revoked: usize,
    /// (honest node, honest specialist) revocations, over the run.
    pub honest_revocations: u64,
    /// Largest count toward revoking an honest specialist at any live honest
    /// node, over the run.
    pub peak_honest_votes: usize,
    /// Honest votes cast against misbehaving specialists.
    pub honest_votes_cast: u64,
    /// Honest votes cast against honest specialists.
    pub false_accusations: u64,
    /// Distinct signed votes the byzantine identities cast (two per
    /// identity and honest specialist when equivocating).
    pub byzantine_votes_cast: u64,
    /// (byzantine identity, specialist) pairs with two conflicting votes.
    pub equivocations_made: u64,
    /// Of those, held in both versions by some honest node by the end.
    pub equivocations_detected: u64,
    /// Gossip messages sent, replies included (the byzantine flood is not
    /// counted: it models an adversary that can reach everyone).
    pub messages_sent: u64,
    /// Gossip messages lost in transit.
    pub messages_lost: u64,
    /// Pushes honest nodes sent to byzantine peers.
    pub messages_to_byzantine: u64,
    /// Nodes that left during the run.
    pub departed: usize,
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

fn or_into(dst: &mut [u64], src: &[u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d |= s;
    }
}

/// Run one simulation with the protocol's rule.
pub fn simulate(params: &RevocationParams, seed: u64) -> Result<RevocationOutcome, InvalidParam> {
    simulate_with(params, seed, &OneRoundQuorum)
}

/// [`simulate`] with another counting rule: the same world, adversary and
/// audit.
pub fn simulate_with<T: Tally + ?Sized>(
    params: &RevocationParams,
    seed: u64,
    tally: &T,
) -> Result<RevocationOutcome, InvalidParam> {
    params.validate()?;
    let p = params;
    let n = p.nodes;
    let (b, h, tau) = (p.byzantine_nodes(), p.presumed_honest(), p.threshold());
    let per_round = p.replaced_per_round();
    let words = p.voter_ids().div_ceil(64);
    let (bad, specs) = (p.misbehaving, p.specialists());
    let good = p.honest_specialists;
    let block = specs * words; // one seat's votes: a bitset per specialist
    let row = |seat: usize, s: usize| (seat * specs + s) * words;

    let stream = |s: u64| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(s);
        r
    };
    let (mut membership, mut evidence, mut peer_rng, mut loss_rng) = (stream(0), stream(1), stream(2), stream(3));

    // Seats, their occupants and their halves for the equivocation split.
    let mut byz = vec![false; n];
    for seat in index::sample(&mut membership, n, b) {
        byz[seat] = true;
    }
    let mut group: Vec<bool> = (0..n).map(|_| membership.random_bool(0.5)).collect();
    let mut occupant: Vec<usize> = (0..n).collect();
    let mut next_id = n;
    let mut live = vec![0u64; words];
    let mut byz_ever = vec![0u64; words];
    let mut new_byz: Vec<usize> = Vec::new();
    for (seat, &bad_seat) in byz.iter().enumerate() {
        set_bit(&mut live, seat);
        if bad_seat {
            set_bit(&mut byz_ever, seat);
            new_byz.push(seat);
        }
    }
    // Per specialist: who has signed a vote on it so far, and who can count
    // toward a quorum of each round.
    let mut cast = vec![0u64; specs * words];
    let mut eligible = vec![Eligible::default(); specs];

    let mut first = vec![0u64; n * block];
    let mut second = vec![0u64; n * block];
    let (mut snap_first, mut snap_second) = (first.clone(), second.clone());
    let mut voted = vec![false; n * specs];
    let mut revoked = vec![false; n * specs];
    // What the colluding byzantine nodes have learned: honest votes against
    // each honest specialist.
    let mut known = vec![0u64; good * words];
    let mut detected = vec![0u64; good * words];
    let mut honest_hit = vec![false; good];
    let honest_seats = n - b;

    let mut out = RevocationOutcome { byzantine_nodes: b, threshold: tau, ..Default::default() };
    out.curve.push(RoundState::default());
    let mut revoked_count = vec![0usize; bad];

    for round in 1..=p.max_rounds {
        // Churn.
        if per_round > 0 {
            for seat in index::sample(&mut membership, n, per_round) {
                clear_bit(&mut live, occupant[seat]);
                let id = next_id;
                next_id += 1;
                occupant[seat] = id;
                set_bit(&mut live, id);
                if byz[seat] {
                    set_bit(&mut byz_ever, id);
                    new_byz.push(id);
                }
                group[seat] = membership.random_bool(0.5);
                first[seat * block..(seat + 1) * block].fill(0);
                second[seat * block..(seat + 1) * block].fill(0);
                voted[seat * specs..(seat + 1) * specs].fill(false);
                revoked[seat * specs..(seat + 1) * specs].fill(false);
                out.departed += 1;
            }
        }
        let active = next_id.div_ceil(64);

        // New byzantine identities sign their votes against every honest
        // specialist.
        let versions = if p.equivocate { 2 } else { 1 };
        out.byzantine_votes_cast += (new_byz.len() * good * versions) as u64;
        if p.equivocate {
            out.equivocations_made += (new_byz.len() * good) as u64;
        }
        for s in bad..specs {
            for &id in &new_byz {
                set_bit(&mut cast[s * words..(s + 1) * words], id);
            }
        }
        new_byz.clear();

        // Evidence: one draw per live honest node and specialist.
        for seat in 0..n {
            if byz[seat] {
                continue;
            }
            for s in 0..specs {
                let u: f64 = evidence.random();
                let k = seat * specs + s;
                if voted[k] || revoked[k] {
                    continue;
                }
                let misbehaving = s < bad;
                if u < if misbehaving { p.detection } else { p.false_accusation } {
                    voted[k] = true;
                    set_bit(&mut first[row(seat, s)..row(seat, s) + words], occupant[seat]);
                    set_bit(&mut cast[s * words..(s + 1) * words], occupant[seat]);
                    if misbehaving {
                        out.honest_votes_cast += 1;
                    } else {
                        out.false_accusations += 1;
                    }
                }
            }
        }

        for (s, e) in eligible.iter_mut().enumerate() {
            e.rounds.push(live.iter().zip(&cast[s * words..(s + 1) * words]).map(|(m, c)| m & c).collect());
        }

        // The byzantine flood: their own votes (each half of the nodes gets
        // one version when equivocating) and every honest accusation of an
        // honest specialist they have learned.
        for seat in 0..n {
            if byz[seat] && p.withhold {
                continue;
            }
            for s in bad..specs {
                let r = row(seat, s);
                or_into(&mut first[r..r + active], &known[(s - bad) * words..(s - bad) * words + active]);
                let version = if p.equivocate && group[seat] { &mut second } else { &mut first };
                or_into(&mut version[r..r + active], &byz_ever[..active]);
            }
        }

        // Gossip over the start-of-round state.
        snap_first.copy_from_slice(&first);
        snap_second.copy_from_slice(&second);
        let learn = |known: &mut [u64], snap: &[u64], seat: usize| {
            for s in bad..specs {
                let (r, k) = (row(seat, s), (s - bad) * words);
                let (known, snap) = (&mut known[k..k + active], &snap[r..r + active]);
                for ((k, v), byz) in known.iter_mut().zip(snap).zip(&byz_ever) {
                    *k |= v & !byz;
                }
            }
        };
        for i in 0..n {
            if byz[i] && p.withhold {
                continue;
            }
            for k in index::sample(&mut peer_rng, n - 1, p.fanout) {
                let peer = if k >= i { k + 1 } else { k };
                out.messages_sent += 1;
                if byz[peer] && !byz[i] {
                    out.messages_to_byzantine += 1;
                }
                if loss_rng.random::<f64>() < p.loss {
                    out.messages_lost += 1;
                    continue;
                }
                if byz[peer] && !byz[i] {
                    learn(&mut known, &snap_first, i);
                }
                if byz[peer] && p.withhold {
                    continue;
                }
                let (src, dst) = (i * block, peer * block);
                or_into(&mut first[dst..dst + block], &snap_first[src..src + block]);
                or_into(&mut second[dst..dst + block], &snap_second[src..src + block]);
                out.messages_sent += 1;
                if loss_rng.random::<f64>() < p.loss {
                    out.messages_lost += 1;
                    continue;
                }
                if byz[i] && !byz[peer] {
                    learn(&mut known, &snap_first, peer);
                }
                or_into(&mut first[src..src + block], &snap_first[dst..dst + block]);
                or_into(&mut second[src..src + block], &snap_second[dst..dst + block]);
            }
        }

        // Every live honest node tallies; the audit looks.
        revoked_count.fill(0);
        let (mut held_sum, mut honest_max) = (0usize, 0usize);
        for seat in (0..n).filter(|&seat| !byz[seat]) {
            for s in 0..specs {
                let r = row(seat, s);
                let (a, z) = (&first[r..r + active], &second[r..r + active]);
                let c = tally.count(a, z, &eligible[s]);
                let k = seat * specs + s;
                if s < bad {
                    held_sum += c;
                } else {
                    honest_max = honest_max.max(c);
                    let d = &mut detected[(s - bad) * words..(s - bad) * words + active];
                    for ((d, a), z) in d.iter_mut().zip(a).zip(z) {
                        *d |= a & z;
                    }
                }
                if !revoked[k] && c >= tau {
                    revoked[k] = true;
                    if s >= bad {
                        honest_hit[s - bad] = true;
                        out.honest_revocations += 1;
                    }
                }
                if revoked[k] && s < bad {
                    revoked_count[s] += 1;
                }
            }
        }
        let fraction = revoked_count.iter().min().copied().unwrap_or(0) as f64 / honest_seats as f64;
        out.peak_honest_votes = out.peak_honest_votes.max(honest_max);
        out.curve.push(RoundState {
            revoked_fraction: fraction,
            votes_held_fraction: held_sum as f64 / (bad * honest_seats * h) as f64,
            honest_votes_max_fraction: honest_max as f64 / h as f64,
        });
        if !out.reached && fraction >= p.target {
            out.reached = true;
            out.rounds_to_target = round;
        }
    }

    if out.reached {
        out.revoked_fraction_min_after =
            out.curve[out.rounds_to_target..].iter().map(|c| c.revoked_fraction).fold(f64::INFINITY, f64::min);
    } else {
        out.rounds_to_target = p.max_rounds + 1;
    }
    out.honest_revoked = honest_hit.iter().filter(|&&x| x).count();
    out.equivocations_detected = detected.iter().map(|w| w.count_ones() as u64).sum();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small, quiet world: no byzantine nodes, churn, loss or false
    /// accusations.
    fn quiet(nodes: usize) -> RevocationParams {
        RevocationParams {
            nodes,
            byzantine: 0.0,
            churn: 0.0,
            loss: 0.0,
            false_accusation: 0.0,
            max_rounds: 10,
            ..RevocationParams::default()
        }
    }

    fn bits(ids: &[usize], words: usize) -> Vec<u64> {
        let mut v = vec![0u64; words];
        for &i in ids {
            set_bit(&mut v, i);
        }
        v
    }

    #[test]
    fn fractions_parse_exactly_and_thresholds_are_strictly_more_than() {
        assert_eq!("2/3".parse::<Fraction>(), Ok(Fraction::TWO_THIRDS));
        assert_eq!(" 1 / 4 ".parse::<Fraction>(), Ok(Fraction { num: 1, den: 4 }));
        assert!("0.66".parse::<Fraction>().unwrap_err().contains("\"2/3\""));
        assert!("2/x".parse::<Fraction>().is_err());
        assert_eq!(Fraction::TWO_THIRDS.to_string(), "2/3");
        assert_eq!(Fraction::TWO_THIRDS.more_than(750), 501);
        assert_eq!(Fraction::TWO_THIRDS.more_than(75), 51);
        assert_eq!(Fraction::TWO_THIRDS.more_than(9), 7);
        assert_eq!(Fraction::TWO_THIRDS.more_than(10), 7);
        assert_eq!(Fraction { num: 1, den: 3 }.more_than(75), 26);
        let p = RevocationParams::default();
        assert_eq!((p.byzantine_nodes(), p.presumed_honest(), p.threshold()), (250, 750, 501));
        assert_eq!((p.replaced_per_round(), p.voter_ids()), (100, 4000));
    }

    #[test]
    fn the_tally_counts_one_voter_once_and_an_equivocator_not_at_all() {
        let eligible = Eligible::new(vec![bits(&[0, 1, 2, 3, 70], 2)]);
        let first = bits(&[0, 1, 2, 70], 2);
        assert_eq!(OneRoundQuorum.count(&first, &bits(&[], 2), &eligible), 4);
        // Voter 2 signed two different votes: it counts for neither.
        assert_eq!(OneRoundQuorum.count(&first, &bits(&[2], 2), &eligible), 3);
        // Holding only the second version still counts the voter once.
        assert_eq!(OneRoundQuorum.count(&bits(&[0], 2), &bits(&[3], 2), &eligible), 2);
        // A vote from a voter not eligible at any round counts for nothing.
        assert_eq!(OneRoundQuorum.count(&bits(&[5, 64], 2), &bits(&[], 2), &eligible), 0);
    }

    #[test]
    fn the_tally_needs_its_voters_to_be_eligible_at_one_same_round() {
        // Round 1: voters 0..3 members and signed; round 2: 0 and 1 left, 4
        // and 5 joined and signed.
        let eligible = Eligible::new(vec![bits(&[0, 1, 2, 3], 1), bits(&[2, 3, 4, 5], 1)]);
        assert_eq!((eligible.len(), eligible.at(2)), (2, &[0b111100][..]));
        let all = bits(&[0, 1, 2, 3, 4, 5], 1);
        let none = bits(&[], 1);
        assert_eq!(OneRoundQuorum.count(&all, &none, &eligible), 4);
        assert_eq!(OneRoundQuorum.count(&bits(&[0, 1, 4, 5], 1), &none, &eligible), 2);
        assert_eq!(OneRoundQuorum.count(&bits(&[0, 1, 2, 4], 1), &none, &eligible), 3);
    }

    #[test]
    fn byzantine_votes_alone_never_reach_the_quorum_whatever_they_sign() {
        // Any history in which at most `b` byzantine identities are members
        // at each round, any subsets of first and second votes: the count is
        // at most b, below the threshold.
        let p = RevocationParams::default();
        let (b, tau) = (p.byzantine_nodes(), p.threshold());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ids = 2000;
        let words = ids / 64 + 1;
        for _ in 0..50 {
            let rounds: Vec<Vec<u64>> = (0..8)
                .map(|_| {
                    let k = rng.random_range(0..=b);
                    bits(&index::sample(&mut rng, ids, k).into_vec(), words)
                })
                .collect();
            let eligible = Eligible::new(rounds);
            let (k1, k2) = (rng.random_range(0..ids), rng.random_range(0..ids));
            let first = bits(&index::sample(&mut rng, ids, k1).into_vec(), words);
            let second = bits(&index::sample(&mut rng, ids, k2).into_vec(), words);
            let c = OneRoundQuorum.count(&first, &second, &eligible);
            assert!(c <= b && c < tau, "{c}");
        }
    }

    #[test]
    fn everyone_detecting_and_gossiping_to_everyone_revokes_in_one_round() {
        let p = RevocationParams { detection: 1.0, fanout: 9, honest_specialists: 0, ..quiet(10) };
        let o = simulate(&p, 0).unwrap();
        assert_eq!(o.threshold, 7);
        assert_eq!((o.reached, o.rounds_to_target), (true, 1));
        assert_eq!(o.curve.len(), 11);
        assert_eq!(o.curve[0], RoundState::default());
        assert_eq!(o.curve[1].revoked_fraction, 1.0);
        assert_eq!(o.curve[1].votes_held_fraction, 1.0);
        assert_eq!(o.revoked_fraction_min_after, 1.0);
        assert_eq!(o.honest_votes_cast, 10);
        assert_eq!(o.messages_sent, 10 * 9 * 2 * 10);
        assert_eq!((o.messages_lost, o.messages_to_byzantine, o.departed, o.honest_revoked), (0, 0, 0, 0));
    }

    #[test]
    fn two_nodes_that_both_see_it_revoke_after_one_exchange() {
        let p = RevocationParams { detection: 1.0, fanout: 1, ..quiet(2) };
        let o = simulate(&p, 3).unwrap();
        assert_eq!((o.threshold, o.rounds_to_target), (2, 1));
        assert_eq!(o.curve[1].votes_held_fraction, 1.0);
    }

    #[test]
    fn without_evidence_nothing_is_revoked_and_the_rounds_say_never() {
        let p = RevocationParams { detection: 0.0, ..quiet(50) };
        let o = simulate(&p, 1).unwrap();
        assert!(!o.reached);
        assert_eq!(o.rounds_to_target, 11);
        assert_eq!(o.revoked_fraction_min_after, 0.0);
        assert!(o.curve.iter().all(|c| c.revoked_fraction == 0.0 && c.votes_held_fraction == 0.0));
        assert_eq!(o.honest_votes_cast, 0);
    }

    #[test]
    fn a_full_mesh_exposes_every_equivocation_in_the_first_round() {
        // 12 nodes, 3 byzantine, 9 presumed honest: threshold 7.
        let p = RevocationParams {
            nodes: 12,
            byzantine: 0.25,
            detection: 1.0,
            fanout: 11,
            honest_specialists: 2,
            ..quiet(12)
        };
        let o = simulate(&p, 0).unwrap();
        assert_eq!((o.byzantine_nodes, o.threshold), (3, 7));
        assert_eq!(o.byzantine_votes_cast, 3 * 2 * 2);
        assert_eq!(o.equivocations_made, 3 * 2);
        assert_eq!(o.equivocations_detected, 6);
        // Each honest node holds both versions after the first exchange.
        assert_eq!(o.peak_honest_votes, 0);
        assert_eq!(o.rounds_to_target, 1);
        assert_eq!(o.honest_votes_cast, 9);
        // 9 honest nodes push to 11 peers; the 8 honest ones reply, the 3
        // byzantine ones do not.
        assert_eq!(o.messages_sent, (9 * 11 + 9 * 8) * 10);
        assert_eq!(o.messages_to_byzantine, 9 * 3 * 10);
        let honest_voters = RevocationParams { equivocate: false, ..p.clone() };
        let o = simulate(&honest_voters, 0).unwrap();
        assert_eq!((o.byzantine_votes_cast, o.equivocations_made, o.equivocations_detected), (6, 0, 0));
        assert_eq!(o.peak_honest_votes, 3);
        let relays = RevocationParams { withhold: false, ..p };
        assert_eq!(simulate(&relays, 0).unwrap().messages_sent, 12 * 11 * 2 * 10);
    }

    #[test]
    fn byzantine_nodes_alone_never_revoke_an_honest_specialist() {
        // Without honest false accusations, every count toward revoking an
        // honest specialist is byzantine: at most b, below the threshold,
        // under churn, loss, equivocation or not, withholding or not.
        for (equivocate, withhold, seed) in [(true, true, 0), (false, true, 1), (true, false, 2), (false, false, 3)] {
            let p = RevocationParams {
                nodes: 100,
                false_accusation: 0.0,
                equivocate,
                withhold,
                ..RevocationParams::default()
            };
            let o = simulate(&p, seed).unwrap();
            assert_eq!((o.honest_revoked, o.honest_revocations), (0, 0), "{equivocate} {withhold}");
            assert!(o.peak_honest_votes <= 25 && 25 < o.threshold, "{o:?}");
            if !equivocate {
                // The flood hands every node every byzantine vote.
                assert_eq!(o.peak_honest_votes, 25);
            }
        }
    }

    #[test]
    fn a_quorum_of_one_third_of_the_honest_is_the_edge_of_safety() {
        // b / h = 25 / 75 = 1/3: more than 1/3 of 75 is 26 > 25; at least a
        // quarter (19) is within the adversary's reach.
        let base = RevocationParams { nodes: 100, false_accusation: 0.0, equivocate: false, ..Default::default() };
        let edge = RevocationParams { quorum: Fraction { num: 1, den: 3 }, ..base.clone() };
        assert_eq!(simulate(&edge, 0).unwrap().honest_revoked, 0);
        let broken = RevocationParams { quorum: Fraction { num: 1, den: 4 }, ..base };
        let o = simulate(&broken, 0).unwrap();
        assert_eq!(o.threshold, 19);
        assert_eq!(o.honest_revoked, 20, "the audit sees every honest specialist revoked");
        // Every honest node, fresh ones too, revokes every honest specialist.
        assert!(o.honest_revocations >= 75 * 20, "{o:?}");
    }

    /// Counts votes, not voters: an equivocator counts twice.
    struct CountsEveryVote;

    impl Tally for CountsEveryVote {
        fn count(&self, first: &[u64], second: &[u64], eligible: &Eligible) -> usize {
            eligible
                .rounds
                .iter()
                .map(|m| {
                    let count =
                        |votes: &[u64]| votes.iter().zip(m).map(|(v, m)| (v & m).count_ones() as usize).sum::<usize>();
                    count(first) + count(second)
                })
                .max()
                .unwrap_or(0)
        }
    }

    /// Counts every valid vote it holds, whether or not the voters were ever
    /// members together: identities rotated through churn add up.
    struct CountsDepartedVoters;

    impl Tally for CountsDepartedVoters {
        fn count(&self, first: &[u64], second: &[u64], _: &Eligible) -> usize {
            first.iter().zip(second).map(|(a, b)| (a ^ b).count_ones() as usize).sum()
        }
    }

    #[test]
    fn the_audit_catches_a_tally_that_counts_an_equivocator_twice() {
        let p = RevocationParams { nodes: 100, false_accusation: 0.02, ..RevocationParams::default() };
        let honest = simulate(&p, 4).unwrap();
        assert_eq!(honest.honest_revoked, 0, "{honest:?}");
        let broken = simulate_with(&p, 4, &CountsEveryVote).unwrap();
        assert!(broken.honest_revoked > 0, "{broken:?}");
        assert!(broken.peak_honest_votes >= broken.threshold);
        // The same world and adversary; only the count differs.
        assert_eq!(broken.byzantine_votes_cast, honest.byzantine_votes_cast);
        assert_eq!((broken.departed, broken.messages_sent), (honest.departed, honest.messages_sent));
    }

    #[test]
    fn the_audit_catches_a_tally_that_lets_churned_identities_add_up() {
        let p = RevocationParams { nodes: 100, false_accusation: 0.0, equivocate: false, ..Default::default() };
        assert_eq!(simulate(&p, 5).unwrap().honest_revoked, 0);
        let broken = simulate_with(&p, 5, &CountsDepartedVoters).unwrap();
        assert_eq!(broken.honest_revoked, 20, "{broken:?}");
        // Without churn the identities cannot pile up and the same rule holds.
        let still = RevocationParams { churn: 0.0, ..p };
        assert_eq!(simulate_with(&still, 5, &CountsDepartedVoters).unwrap().honest_revoked, 0);
    }

    #[test]
    fn a_quiet_world_revokes_and_stays_revoked() {
        let p = RevocationParams { nodes: 200, ..quiet(200) };
        let o = simulate(&p, 2).unwrap();
        assert!(o.reached && o.rounds_to_target <= 10, "{o:?}");
        assert_eq!(o.curve.last().unwrap().revoked_fraction, 1.0);
        assert!(o.revoked_fraction_min_after >= p.target);
        assert_eq!(o.messages_sent, 200 * 3 * 2 * 10);
        assert_eq!((o.messages_lost, o.messages_to_byzantine, o.departed), (0, 0, 0));
        assert_eq!((o.honest_revoked, o.false_accusations, o.byzantine_votes_cast), (0, 0, 0));
        // The curve never goes down without churn.
        assert!(o.curve.windows(2).all(|w| w[0].revoked_fraction <= w[1].revoked_fraction));
    }

    #[test]
    fn churn_replaces_the_same_number_of_seats_every_round() {
        let p = RevocationParams { nodes: 100, max_rounds: 12, ..RevocationParams::default() };
        let o = simulate(&p, 6).unwrap();
        assert_eq!(o.departed, 10 * 12);
        assert_eq!(o.byzantine_nodes, 25);
        // Every byzantine identity, first or fresh, signs two votes on each
        // of the 20 honest specialists.
        assert!(o.byzantine_votes_cast >= 25 * 20 * 2 && o.byzantine_votes_cast.is_multiple_of(40), "{o:?}");
        assert_eq!(o.equivocations_made * 2, o.byzantine_votes_cast);
        assert!(o.equivocations_detected > 0 && o.equivocations_detected <= o.equivocations_made);
        assert!(o.messages_to_byzantine > 0);
    }

    #[test]
    fn same_seed_gives_the_same_outcome_and_another_seed_does_not() {
        let p = RevocationParams { nodes: 150, ..RevocationParams::default() };
        let a = simulate(&p, 11).unwrap();
        assert_eq!(a, simulate(&p, 11).unwrap());
        assert_ne!(a.curve, simulate(&p, 12).unwrap().curve);
    }

    #[test]
    fn byzantine_votes_never_touch_the_misbehaving_specialists_revocation() {
        let p = RevocationParams { nodes: 100, ..RevocationParams::default() };
        let q = RevocationParams { equivocate: false, ..p.clone() };
        let (a, b) = (simulate(&p, 9).unwrap(), simulate(&q, 9).unwrap());
        let revocation = |o: &RevocationOutcome| {
            (
                o.rounds_to_target,
                o.curve.iter().map(|c| (c.revoked_fraction, c.votes_held_fraction)).collect::<Vec<_>>(),
            )
        };
        assert_eq!(revocation(&a), revocation(&b));
        assert_eq!(b.peak_honest_votes.min(25), 25);
    }

    #[test]
    fn a_rate_changes_nothing_but_its_own_votes() {
        // Paired streams: the same churn, peers and losses whatever the rates.
        let p = RevocationParams { nodes: 100, ..RevocationParams::default() };
        let q = RevocationParams { false_accusation: 0.0, ..p.clone() };
        let (a, b) = (simulate(&p, 8).unwrap(), simulate(&q, 8).unwrap());
        assert_eq!((a.departed, a.messages_sent, a.messages_lost), (b.departed, b.messages_sent, b.messages_lost));
        assert_eq!(a.honest_votes_cast, b.honest_votes_cast);
        assert_eq!(b.false_accusations, 0);
    }

    #[test]
    fn invalid_params_are_rejected_by_name() {
        let d = RevocationParams::default;
        let bad = [
            (RevocationParams { nodes: 1, ..d() }, "nodes"),
            (RevocationParams { byzantine: 1.0, ..d() }, "byzantine"),
            (RevocationParams { byzantine: f64::NAN, ..d() }, "byzantine"),
            (RevocationParams { nodes: 2, byzantine: 0.8, fanout: 1, ..d() }, "byzantine"),
            (RevocationParams { churn: 0.6, ..d() }, "churn"),
            (RevocationParams { quorum: Fraction { num: 3, den: 3 }, ..d() }, "quorum"),
            (RevocationParams { quorum: Fraction { num: 0, den: 3 }, ..d() }, "quorum"),
            (RevocationParams { quorum: Fraction { num: 1, den: 0 }, ..d() }, "quorum"),
            (RevocationParams { misbehaving: 0, ..d() }, "misbehaving"),
            (RevocationParams { honest_specialists: 1001, ..d() }, "honest_specialists"),
            (RevocationParams { detection: 1.5, ..d() }, "detection"),
            (RevocationParams { false_accusation: -0.1, ..d() }, "false_accusation"),
            (RevocationParams { fanout: 0, ..d() }, "fanout"),
            (RevocationParams { nodes: 4, fanout: 4, ..d() }, "fanout"),
            (RevocationParams { loss: 1.0, ..d() }, "loss"),
            (RevocationParams { target: 0.0, ..d() }, "target"),
            (RevocationParams { max_rounds: 0, ..d() }, "max_rounds"),
            (RevocationParams { nodes: 10_000, ..d() }, "nodes"),
        ];
        for (p, name) in bad {
            let e = simulate(&p, 0).unwrap_err();
            assert_eq!(e.param, name, "{p:?}");
            assert!(e.to_string().starts_with(&format!("`{name}`")), "{e}");
        }
    }
}
