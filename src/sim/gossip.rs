//! A specialist directory kept by gossip alone (bet 15): how fast does every
//! live node learn every live entry, and do the entries of departed nodes
//! expire?
//!
//! The model, in synchronous rounds:
//!
//! - Each node publishes one directory entry (its specialist; entry `i` is
//!   owned by node `i`) and keeps a view of the directory: for every entry
//!   the highest heartbeat it has seen and the round it last saw it rise.
//!   An entry is *held* while it has been refreshed within `ttl` rounds;
//!   after that it expires (its heartbeat is kept as a tombstone, so an
//!   older copy arriving later cannot bring it back).
//! - Round 0 is a cold start: every node knows its own entry and those of
//!   `bootstrap` random other nodes, nothing else.
//! - In rounds `1..=churn_rounds`, `round(churn * nodes)` random live nodes
//!   leave silently (they stop gossiping; their entries must expire) and as
//!   many fresh nodes join, each knowing `bootstrap` random live nodes (a
//!   join is a two-way exchange of the two nodes' own entries). The number
//!   of live nodes stays `nodes`.
//! - Every round, each live node bumps its own heartbeat, then sends the
//!   entries it holds to `fanout` distinct random peers; in push-pull mode
//!   the peer answers with its own entries. Every message is lost
//!   independently with probability `loss`. Peers are drawn either from the
//!   live nodes (an idealised peer-sampling service) or from the entries the
//!   sender holds (the directory is the membership view; messages to
//!   departed nodes are wasted). All messages of a round carry the state at
//!   the start of the round, so information moves at most one hop a round.
//!
//! Randomness comes from three ChaCha8 streams of one seed (membership,
//! peer choice, loss), so a sweep over `loss` keeps the same membership and,
//! for uniform peers, the same peer choices: the comparison is paired.

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::InvalidParam;

/// How a node picks the peers it gossips with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PeerSelection {
    /// Uniformly among the live nodes: an oracle membership service, the
    /// textbook setting of gossip dissemination bounds.
    Uniform,
    /// Uniformly among the entries the sender currently holds: the directory
    /// doubles as the membership view, stale entries included.
    Directory,
}

/// What a gossip exchange carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The sender pushes its entries to the peer.
    Push,
    /// The sender pushes and the peer replies with its own entries.
    PushPull,
}

/// Parameters of one gossip simulation; as a spec's `[procedure]`, every
/// one is optional and defaults to bet 15's setting (1000 nodes, fanout 3,
/// 5% loss) with light churn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GossipParams {
    /// Live nodes (constant: every leave is matched by a join).
    pub nodes: usize,
    /// Peers each live node contacts per round.
    pub fanout: usize,
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Fraction of live nodes replaced in each churn round.
    pub churn: f64,
    /// Rounds `1..=churn_rounds` see churn; later rounds do not.
    pub churn_rounds: usize,
    /// Rounds an entry stays held without a fresher heartbeat.
    pub ttl: u32,
    /// Rounds after the last membership change within which the directory
    /// must become full; `rounds_to_full` is `max_rounds + 1` when it does
    /// not.
    pub max_rounds: usize,
    /// Other nodes a node knows when it starts or joins.
    pub bootstrap: usize,
    /// Push or push-pull.
    pub mode: Mode,
    /// Where peers are drawn from.
    pub peers: PeerSelection,
}

impl Default for GossipParams {
    fn default() -> Self {
        GossipParams {
            nodes: 1000,
            fanout: 3,
            loss: 0.05,
            churn: 0.01,
            churn_rounds: 5,
            ttl: 20,
            max_rounds: 100,
            bootstrap: 3,
            mode: Mode::Push,
            peers: PeerSelection::Directory,
        }
    }
}

/// Most node slots (initial nodes plus joins) a simulation may use: the
/// state is three `u32` matrices of slots x slots (about 200 MB at the cap).
pub const MAX_SLOTS: usize = 4096;

impl GossipParams {
    /// Nodes that leave (and join) in each churn round.
    pub fn replaced_per_round(&self) -> usize {
        (self.churn * self.nodes as f64).round() as usize
    }

    /// The round of the last membership change: the cold start (0) or the
    /// last churn round.
    pub fn last_change(&self) -> usize {
        if self.replaced_per_round() > 0 { self.churn_rounds } else { 0 }
    }

    /// Reject parameters outside the model's range, naming the first bad one.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if self.nodes < 2 {
            return Err(InvalidParam::new("nodes", "must be at least 2"));
        }
        if self.fanout == 0 || self.fanout >= self.nodes {
            return Err(InvalidParam::new("fanout", "must be in 1..nodes"));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(InvalidParam::new("loss", "must be in [0, 1)"));
        }
        if !(0.0..=0.5).contains(&self.churn) {
            return Err(InvalidParam::new("churn", "must be in [0, 0.5]"));
        }
        if self.ttl == 0 {
            return Err(InvalidParam::new("ttl", "must be at least 1 round"));
        }
        if self.max_rounds == 0 || self.max_rounds > 100_000 {
            return Err(InvalidParam::new("max_rounds", "must be in 1..=100000"));
        }
        if self.bootstrap >= self.nodes || (self.bootstrap == 0 && self.peers == PeerSelection::Directory) {
            return Err(InvalidParam::new(
                "bootstrap",
                "must be below nodes, and at least 1 when peers are drawn from the directory",
            ));
        }
        let slots = self.churn_rounds.saturating_mul(self.replaced_per_round()).saturating_add(self.nodes);
        if slots > MAX_SLOTS {
            return Err(InvalidParam::new(
                "nodes",
                format!("nodes + churn_rounds * round(churn * nodes) = {slots} exceeds {MAX_SLOTS} node slots"),
            ));
        }
        Ok(())
    }

    /// The bet's convergence bound, `3 * log2(nodes)` rounds.
    pub fn bound(&self) -> f64 {
        3.0 * (self.nodes as f64).log2()
    }
}

/// What one gossip simulation observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipOutcome {
    /// Rounds after the last membership change until every live node held
    /// every live entry; `max_rounds + 1` if that did not happen in time.
    pub rounds_to_full: usize,
    /// The round, counted from the cold start (round 0), at which the
    /// directory first became full after the last membership change;
    /// `last_change + max_rounds + 1` if it did not in time.
    pub full_at_round: usize,
    /// Whether the directory became full, within `3 * log2(nodes)` rounds.
    pub converged_within_bound: bool,
    /// `floor(3 * log2(nodes))`: the largest `rounds_to_full` within bound.
    pub bound_rounds: usize,
    /// Nodes that left during the run.
    pub departed: usize,
    /// Whether every departed entry was gone from every live node within
    /// `ttl + bound_rounds` rounds of its owner leaving, and stayed gone.
    pub departed_expired: bool,
    /// Largest number of rounds, over departed entries, between the owner
    /// leaving and the entry being gone for good from every live node (up to
    /// the end of the run if it never went).
    pub expiry_rounds_max: usize,
    /// (live node, departed entry) pairs still held at the end of the run.
    pub stale_entries_end: usize,
    /// Times a live node let the entry of a live owner expire.
    pub false_expiries: usize,
    /// Messages sent, replies included.
    pub messages_sent: u64,
    /// Messages lost in transit.
    pub messages_lost: u64,
    /// Messages addressed to nodes that had left.
    pub messages_to_departed: u64,
    /// Rounds simulated (the run stops early once the directory is full and
    /// every departed entry has expired).
    pub rounds_run: usize,
}

/// The directory views of all node slots, as flat slots x slots matrices.
struct Views {
    slots: usize,
    /// Highest heartbeat seen, per (node, entry); 0 = never seen.
    hb: Vec<u32>,
    /// Round that heartbeat was first seen, per (node, entry).
    last: Vec<u32>,
}

impl Views {
    fn held(&self, node: usize, entry: usize, now: u32, ttl: u32) -> bool {
        let k = node * self.slots + entry;
        self.hb[k] > 0 && now - self.last[k] <= ttl
    }

    fn learn(&mut self, node: usize, entry: usize, hb: u32, now: u32) {
        let k = node * self.slots + entry;
        if hb > self.hb[k] {
            self.hb[k] = hb;
            self.last[k] = now;
        }
    }
}

/// Merge a message (heartbeats of held entries, 0 elsewhere) into a view.
/// Written branch-free so that it vectorises: this is the inner loop.
fn merge(msg: &[u32], hb: &mut [u32], last: &mut [u32], now: u32) {
    for ((&m, h), l) in msg.iter().zip(hb.iter_mut()).zip(last.iter_mut()) {
        let fresher = ((m > *h) as u32).wrapping_neg(); // all ones or zero
        *h = (*h).max(m);
        *l = (*l & !fresher) | (now & fresher);
    }
}

/// `amount` distinct indices of `0..len`, or all of them if there are fewer.
fn pick(rng: &mut ChaCha8Rng, len: usize, amount: usize) -> index::IndexVec {
    index::sample(rng, len, amount.min(len))
}

/// Look at the views at the end of round `now`: is the directory full (every
/// live node holds every live entry)? Is some departed entry still held?
/// Counts the live entries that expired this very round, and records the
/// rounds at which departed entries are still held.
fn observe(
    views: &Views,
    live_list: &[usize],
    departed: &[usize],
    now: u32,
    ttl: u32,
    out: &mut GossipOutcome,
    held_until: &mut [usize],
) -> (bool, bool) {
    let mut full = true;
    let mut lingering = false;
    for &n in live_list {
        let row = n * views.slots;
        let (hb, last) = (&views.hb[row..row + views.slots], &views.last[row..row + views.slots]);
        for &c in live_list {
            let age = now.wrapping_sub(last[c]);
            if hb[c] == 0 || age > ttl {
                full = false;
                if hb[c] > 0 && age == ttl + 1 {
                    out.false_expiries += 1;
                }
            }
        }
        // Row by row rather than entry by entry: the views are large, and
        // walking down a column would miss the cache at every node.
        for &d in departed {
            if hb[d] > 0 && now - last[d] <= ttl {
                held_until[d] = now as usize;
                lingering = true;
            }
        }
    }
    (full, lingering)
}

/// Run one simulation.
pub fn simulate(params: &GossipParams, seed: u64) -> Result<GossipOutcome, InvalidParam> {
    params.validate()?;
    let p = params;
    let per_round = p.replaced_per_round();
    let slots = p.nodes + p.churn_rounds * per_round;
    let last_change = p.last_change();
    let bound_rounds = p.bound().floor() as usize;
    let horizon = last_change + p.max_rounds.max(p.ttl as usize + bound_rounds + 1);

    let stream = |s: u64| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(s);
        r
    };
    let (mut membership, mut peer_rng, mut loss_rng) = (stream(0), stream(1), stream(2));

    let mut views = Views { slots, hb: vec![0; slots * slots], last: vec![0; slots * slots] };
    let mut msg = vec![0u32; slots * slots];
    let mut live = vec![false; slots];
    let mut departed_at: Vec<Option<usize>> = vec![None; slots];
    // Last round at which some live node held each departed entry.
    let mut held_until: Vec<usize> = vec![0; slots];
    let mut active = p.nodes; // slots allocated so far

    // Round 0: cold start.
    live[..p.nodes].fill(true);
    for i in 0..p.nodes {
        views.learn(i, i, 1, 0);
    }
    for i in 0..p.nodes {
        for k in pick(&mut membership, p.nodes - 1, p.bootstrap) {
            let other = if k >= i { k + 1 } else { k };
            views.learn(i, other, 1, 0);
        }
    }

    let mut out = GossipOutcome { bound_rounds, ..Default::default() };
    let mut live_list: Vec<usize> = (0..p.nodes).collect();
    let mut candidates: Vec<usize> = Vec::with_capacity(slots);
    let mut departed: Vec<usize> = Vec::new();
    let mut rounds_run = 0;
    // The cold start itself may already be full (bootstrap = nodes - 1).
    let (full, _) = observe(&views, &live_list, &departed, 0, p.ttl, &mut out, &mut held_until);
    let mut full_at: Option<usize> = (full && last_change == 0).then_some(0);

    for round in 1..=horizon {
        if full_at.is_some() && departed.is_empty() && round > last_change {
            break;
        }

        let now = round as u32;
        rounds_run = round;

        // Membership changes.
        if round <= p.churn_rounds && per_round > 0 {
            live_list.clear();
            live_list.extend((0..active).filter(|&i| live[i]));
            for k in pick(&mut membership, live_list.len(), per_round) {
                let gone = live_list[k];
                live[gone] = false;
                departed_at[gone] = Some(round);
                departed.push(gone);
                out.departed += 1;
            }
            live_list.retain(|&i| live[i]);
            for _ in 0..per_round {
                let j = active;
                active += 1;
                live[j] = true;
                views.learn(j, j, now, now);
                for k in pick(&mut membership, live_list.len(), p.bootstrap) {
                    let peer = live_list[k];
                    let peer_hb = views.hb[peer * slots + peer];
                    views.learn(j, peer, peer_hb, now);
                    views.learn(peer, j, now, now);
                }
            }
        }
        live_list.clear();
        live_list.extend((0..active).filter(|&i| live[i]));

        // Heartbeats, then the snapshot every message of this round carries.
        for &i in &live_list {
            views.learn(i, i, now + 1, now);
        }
        for &i in &live_list {
            let row = i * slots..i * slots + active;
            let (hb, last) = (&views.hb[row.clone()], &views.last[row.clone()]);
            for ((m, &h), &l) in msg[row].iter_mut().zip(hb).zip(last) {
                // `last <= now` always; wrapping keeps the loop free of
                // overflow checks so it vectorises in test builds too.
                *m = if h > 0 && now.wrapping_sub(l) <= p.ttl { h } else { 0 };
            }
        }

        // Gossip.
        for &i in &live_list {
            let peers: Vec<usize> = match p.peers {
                PeerSelection::Uniform => {
                    let me = live_list.binary_search(&i).expect("sender is live");
                    pick(&mut peer_rng, live_list.len() - 1, p.fanout)
                        .into_iter()
                        .map(|k| live_list[if k >= me { k + 1 } else { k }])
                        .collect()
                }
                PeerSelection::Directory => {
                    candidates.clear();
                    let row = &msg[i * slots..i * slots + active];
                    candidates.extend((0..active).filter(|&c| c != i && row[c] > 0));
                    pick(&mut peer_rng, candidates.len(), p.fanout).into_iter().map(|k| candidates[k]).collect()
                }
            };
            for peer in peers {
                out.messages_sent += 1;
                if !live[peer] {
                    out.messages_to_departed += 1;
                    continue;
                }
                if loss_rng.random::<f64>() < p.loss {
                    out.messages_lost += 1;
                    continue;
                }
                let (r, s) = (peer * slots, i * slots);
                merge(&msg[s..s + active], &mut views.hb[r..r + active], &mut views.last[r..r + active], now);
                if p.mode == Mode::PushPull {
                    out.messages_sent += 1;
                    if loss_rng.random::<f64>() < p.loss {
                        out.messages_lost += 1;
                        continue;
                    }
                    merge(&msg[r..r + active], &mut views.hb[s..s + active], &mut views.last[s..s + active], now);
                }
            }
        }

        let (full, lingering) = observe(&views, &live_list, &departed, now, p.ttl, &mut out, &mut held_until);
        if full && full_at.is_none() && round >= last_change {
            full_at = Some(round);
        }
        if full_at.is_some() && !lingering && round >= last_change {
            break;
        }
    }

    let end = rounds_run as u32;
    out.rounds_run = rounds_run;
    out.rounds_to_full = match full_at {
        Some(r) if r - last_change <= p.max_rounds => r - last_change,
        _ => p.max_rounds + 1,
    };
    out.full_at_round = last_change + out.rounds_to_full;
    out.converged_within_bound = out.rounds_to_full <= p.max_rounds && out.rounds_to_full as f64 <= p.bound();
    out.departed_expired = true;
    for &d in &departed {
        let left = departed_at[d].expect("departed nodes have a departure round");
        let stale = live_list.iter().filter(|&&n| views.held(n, d, end, p.ttl)).count();
        let gone_after = if stale > 0 { rounds_run + 1 - left } else { held_until[d].max(left - 1) + 1 - left };
        out.expiry_rounds_max = out.expiry_rounds_max.max(gone_after);
        if stale > 0 || gone_after > p.ttl as usize + bound_rounds {
            out.departed_expired = false;
        }
        out.stale_entries_end += stale;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GossipParams {
        GossipParams { nodes: 64, churn: 0.0, ..GossipParams::default() }
    }

    #[test]
    fn lossless_gossip_to_everyone_converges_in_one_round() {
        for mode in [Mode::Push, Mode::PushPull] {
            let p =
                GossipParams { fanout: 63, loss: 0.0, bootstrap: 1, mode, peers: PeerSelection::Uniform, ..small() };
            let o = simulate(&p, 0).unwrap();
            assert_eq!(o.rounds_to_full, 1, "{mode:?}");
            assert_eq!(o.rounds_run, 1);
            let per_exchange = if mode == Mode::Push { 1 } else { 2 };
            assert_eq!(o.messages_sent, per_exchange * 64 * 63);
            assert_eq!(o.messages_lost, 0);
            assert!(o.converged_within_bound);
        }
    }

    #[test]
    fn a_cold_start_where_everyone_knows_everyone_is_full_at_round_zero() {
        let p = GossipParams { fanout: 3, bootstrap: 63, ..small() };
        let o = simulate(&p, 0).unwrap();
        assert_eq!((o.rounds_to_full, o.rounds_run, o.messages_sent), (0, 0, 0));
    }

    #[test]
    fn two_nodes_that_know_each_other_stay_full_from_the_start() {
        let p = GossipParams { nodes: 2, fanout: 1, bootstrap: 1, ..small() };
        assert_eq!(simulate(&p, 5).unwrap().rounds_to_full, 0);
    }

    #[test]
    fn lossless_directory_push_from_three_bootstrap_peers_converges_within_the_bound() {
        let p = GossipParams { loss: 0.0, ..small() };
        let o = simulate(&p, 9).unwrap();
        assert!(o.rounds_to_full >= 2 && o.rounds_to_full <= o.bound_rounds, "{o:?}");
        assert!(o.converged_within_bound);
        assert_eq!(o.false_expiries, 0);
    }

    #[test]
    fn one_bootstrap_peer_each_can_split_the_directory_for_good() {
        // Who-knows-whom is then a random mapping, which is often not
        // connected: gossip along directory entries never crosses between
        // its components, whatever the TTL.
        let p = GossipParams { nodes: 16, loss: 0.0, bootstrap: 1, ttl: 1000, churn: 0.0, ..GossipParams::default() };
        let o = simulate(&p, 9).unwrap();
        assert_eq!(o.rounds_to_full, p.max_rounds + 1);
        assert!(!o.converged_within_bound);
        let uniform = simulate(&GossipParams { peers: PeerSelection::Uniform, ..p }, 9).unwrap();
        assert!(uniform.converged_within_bound, "{uniform:?}");
    }

    #[test]
    fn same_seed_gives_the_same_outcome() {
        let p = GossipParams { nodes: 200, churn: 0.02, ..GossipParams::default() };
        assert_eq!(simulate(&p, 11).unwrap(), simulate(&p, 11).unwrap());
        let q = GossipParams { peers: PeerSelection::Uniform, mode: Mode::PushPull, ..p };
        assert_eq!(simulate(&q, 11).unwrap(), simulate(&q, 11).unwrap());
    }

    #[test]
    fn a_message_is_never_delivered_when_loss_is_near_one() {
        let p = GossipParams { loss: 0.999_999, max_rounds: 10, ttl: 3, ..small() };
        let o = simulate(&p, 1).unwrap();
        assert_eq!(o.rounds_to_full, 11);
        assert!(!o.converged_within_bound);
        assert_eq!(o.messages_lost, o.messages_sent);
    }

    #[test]
    fn departed_entries_expire_everywhere_and_are_counted() {
        let p = GossipParams { nodes: 200, churn: 0.05, churn_rounds: 3, ttl: 10, ..GossipParams::default() };
        let o = simulate(&p, 2).unwrap();
        assert_eq!(o.departed, 30);
        assert!(o.departed_expired, "{o:?}");
        assert_eq!(o.stale_entries_end, 0);
        // Nothing can expire faster than the TTL after the owner left.
        assert!(o.expiry_rounds_max >= 10, "{o:?}");
        assert!(o.expiry_rounds_max <= 10 + o.bound_rounds, "{o:?}");
        assert!(o.rounds_to_full <= o.bound_rounds, "{o:?}");
    }

    #[test]
    fn a_ttl_shorter_than_dissemination_makes_live_entries_flap() {
        let p = GossipParams { nodes: 200, churn: 0.0, ttl: 1, fanout: 1, loss: 0.2, ..GossipParams::default() };
        let o = simulate(&p, 3).unwrap();
        assert!(o.false_expiries > 0, "{o:?}");
        assert_eq!(o.rounds_to_full, p.max_rounds + 1);
    }

    #[test]
    fn directory_peers_waste_messages_on_departed_nodes() {
        let p = GossipParams { nodes: 200, churn: 0.05, ..GossipParams::default() };
        assert!(simulate(&p, 4).unwrap().messages_to_departed > 0);
        let q = GossipParams { peers: PeerSelection::Uniform, ..p };
        assert_eq!(simulate(&q, 4).unwrap().messages_to_departed, 0);
    }

    #[test]
    fn bet_15_scale_runs_and_expires_every_departed_entry() {
        let o = simulate(&GossipParams::default(), 0).unwrap();
        assert_eq!(o.departed, 50);
        assert_eq!(o.bound_rounds, 29);
        assert!(o.departed_expired && o.stale_entries_end == 0, "{o:?}");
        assert!(o.rounds_to_full <= o.bound_rounds, "{o:?}");
        assert_eq!(o.full_at_round, 5 + o.rounds_to_full);
        assert_eq!(o.messages_sent, 3 * 1000 * o.rounds_run as u64);
    }

    #[test]
    fn bound_rounds_is_the_floor_of_three_log2_n() {
        let o = simulate(&GossipParams { nodes: 1024, churn: 0.0, ..GossipParams::default() }, 0).unwrap();
        assert_eq!(o.bound_rounds, 30);
        assert_eq!(GossipParams::default().bound().floor() as usize, 29); // 3 * log2(1000) = 29.9
    }

    #[test]
    fn invalid_params_are_rejected_by_name() {
        let d = GossipParams::default;
        let bad = [
            (GossipParams { nodes: 1, ..d() }, "nodes"),
            (GossipParams { fanout: 0, ..d() }, "fanout"),
            (GossipParams { nodes: 4, fanout: 4, bootstrap: 1, ..d() }, "fanout"),
            (GossipParams { loss: 1.0, ..d() }, "loss"),
            (GossipParams { loss: f64::NAN, ..d() }, "loss"),
            (GossipParams { churn: 0.6, ..d() }, "churn"),
            (GossipParams { ttl: 0, ..d() }, "ttl"),
            (GossipParams { max_rounds: 0, ..d() }, "max_rounds"),
            (GossipParams { bootstrap: 0, ..d() }, "bootstrap"),
            (GossipParams { nodes: 4000, churn: 0.1, ..d() }, "nodes"),
        ];
        for (p, name) in bad {
            assert_eq!(simulate(&p, 0).unwrap_err().param, name, "{p:?}");
        }
        assert!(GossipParams { bootstrap: 0, peers: PeerSelection::Uniform, ..d() }.validate().is_ok());
    }
}
