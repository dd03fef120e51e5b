//! The record is complete: every counted bundle is named by a ledger run
//! entry, every run entry's bundle exists with the recorded digest, and
//! every ledger position a bundle saw is still in the chain (pure checks
//! over facts gathered by the caller).
//!
//! What this catches: a deleted or swapped counted bundle, a counted
//! bundle that was never recorded, and a ledger cut back to before a
//! bundle (or report) was written. What it cannot catch alone: someone who
//! rewrites the ledger, the results and the trusted keys together; signed
//! checkpoints held by others (an RFC 6962 log) are the answer to that.

use super::{EntryKind, Ledger, LedgerHead};

/// What a bundle says about itself, as far as the record is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFacts {
    /// How to name it in messages (repo-relative folder).
    pub shown: String,
    /// The bundle's folder name, which must be its run id.
    pub folder: String,
    pub bet: u32,
    pub run_id: String,
    /// Not exploratory and not a lone shard.
    pub counted: bool,
    /// SHA-256 of its `SHA256SUMS`.
    pub sums_sha256: String,
    /// The spec entry the run was checked against (seq, kind, line hash).
    pub ledger: Option<(u64, EntryKind, String)>,
    /// The ledger head the run saw (absent in bundles older than run entries).
    pub head: Option<LedgerHead>,
}

/// Every way the bundles and the ledger disagree, one message each.
/// `complete` says the bundles are all of `results/`, so a run entry whose
/// bundle is absent among them is a missing bundle.
pub fn check_record(ledger: &Ledger, bundles: &[BundleFacts], complete: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let ledger_name = ledger.path.display().to_string();
    for b in bundles {
        if b.folder != b.run_id {
            problems.push(format!(
                "{}: the folder name is not its run id `{}` (a bundle moved or swapped)",
                b.shown, b.run_id
            ));
        }
        if let Some((seq, kind, hash)) = &b.ledger {
            match ledger.entries.get(*seq as usize) {
                None => problems.push(format!(
                    "{}: names {ledger_name} seq {seq}, but the ledger ends at seq {} (truncated?)",
                    b.shown,
                    ledger.entries.len() as i64 - 1
                )),
                Some(e) if ledger.hashes[*seq as usize] != *hash || e.kind != *kind || e.bet != b.bet => {
                    problems.push(format!(
                        "{}: its ledger reference (seq {seq}, {kind:?} of bet {}) does not match the entry at that \
                         seq in {ledger_name} (the ledger was rewritten)",
                        b.shown, b.bet
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(head) = &b.head
            && !ledger.contains(head)
        {
            problems.push(format!(
                "{}: was written when {ledger_name} ended at seq {} ({}), which is no longer in the chain \
                 (the ledger was truncated or rewritten)",
                b.shown,
                head.seq,
                &head.entry_hash[..12.min(head.entry_hash.len())]
            ));
        }
        if !b.counted {
            continue;
        }
        let recorded: Vec<_> = ledger.run_records().filter(|(_, r)| r.bet == b.bet && r.run_id == b.run_id).collect();
        match recorded.as_slice() {
            [] => problems.push(format!(
                "{}: a counted bundle that no ledger run entry records (hidden from the record, or never \
                 recorded; a genuine one is added with `bets record-runs --reason ...`)",
                b.shown
            )),
            [(seq, r), ..] if r.sums_sha256 != b.sums_sha256 => problems.push(format!(
                "{}: its SHA256SUMS differs from the one recorded at {ledger_name} seq {seq} (the bundle was \
                 swapped)",
                b.shown
            )),
            _ => {}
        }
    }
    if complete {
        for (seq, r) in ledger.run_records() {
            if !bundles.iter().any(|b| b.bet == r.bet && b.run_id == r.run_id) {
                problems.push(format!(
                    "results/{}: recorded at {ledger_name} seq {seq} ({}, {}), but the bundle is missing",
                    r.bundle_path(),
                    r.profile,
                    r.verdict
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Entry, RunRecord, new_entry, run_entry};

    fn ledger(entries: Vec<Entry>) -> Ledger {
        let hashes: Vec<String> = (0..entries.len()).map(|i| format!("{i:064x}")).collect();
        let leaves = hashes.iter().map(|h| crate::tlog::leaf_hash(h.as_bytes())).collect();
        let entries = entries.into_iter().enumerate().map(|(i, e)| Entry { seq: i as u64, ..e }).collect();
        Ledger { path: "bets/ledger.jsonl".into(), entries, hashes, leaves }
    }

    fn head(l: &Ledger, seq: u64) -> LedgerHead {
        let root = crate::tlog::hash::to_base64(&l.root_at(seq + 1).unwrap());
        LedgerHead { seq, entry_hash: format!("{seq:064x}"), root: Some(root) }
    }

    fn record(run_id: &str, sums: &str) -> RunRecord {
        RunRecord {
            bet: 46,
            slug: "norm-replication".into(),
            run_id: run_id.into(),
            profile: "small".into(),
            spec_hash: "s".into(),
            sums_sha256: sums.into(),
            verdict: "FAIL".into(),
        }
    }

    fn facts(run_id: &str, sums: &str) -> BundleFacts {
        BundleFacts {
            shown: format!("results/46-norm-replication/{run_id}"),
            folder: run_id.into(),
            bet: 46,
            run_id: run_id.into(),
            counted: true,
            sums_sha256: sums.into(),
            ledger: Some((0, EntryKind::Register, format!("{:064x}", 0))),
            head: Some(head(&two_runs(), 0)),
        }
    }

    fn two_runs() -> Ledger {
        ledger(vec![
            new_entry(EntryKind::Register, 46, "norm-replication", serde_json::json!({})),
            run_entry(vec![record("r1", "aa")], None),
            run_entry(vec![record("r2", "bb")], None),
        ])
    }

    #[test]
    fn a_complete_record_has_no_problem() {
        assert_eq!(check_record(&two_runs(), &[facts("r1", "aa"), facts("r2", "bb")], true), Vec::<String>::new());
    }

    #[test]
    fn a_deleted_bundle_is_missing_from_the_results() {
        let p = check_record(&two_runs(), &[facts("r1", "aa")], true);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("results/46-norm-replication/r2") && p[0].contains("missing"), "{p:?}");
        assert!(check_record(&two_runs(), &[facts("r1", "aa")], false).is_empty(), "a partial check cannot tell");
    }

    #[test]
    fn a_swapped_or_unrecorded_bundle_is_named() {
        let p = check_record(&two_runs(), &[facts("r1", "aa"), facts("r2", "cc")], true);
        assert!(p.len() == 1 && p[0].contains("swapped"), "{p:?}");
        let p = check_record(&two_runs(), &[facts("r1", "aa"), facts("r2", "bb"), facts("r3", "dd")], true);
        assert!(p.len() == 1 && p[0].contains("r3") && p[0].contains("no ledger run entry"), "{p:?}");
        let exploratory = BundleFacts { counted: false, ..facts("r4", "ee") };
        assert!(check_record(&two_runs(), &[facts("r1", "aa"), facts("r2", "bb"), exploratory], true).is_empty());
    }

    #[test]
    fn a_truncated_or_rewritten_ledger_is_caught_by_what_bundles_saw() {
        let mut l = two_runs();
        let late = BundleFacts { head: Some(head(&l, 2)), ..facts("r2", "bb") };
        assert!(check_record(&l, &[facts("r1", "aa"), late.clone()], true).is_empty());
        l.entries.pop();
        l.hashes.pop();
        l.leaves.pop();
        let p = check_record(&l, &[facts("r1", "aa"), late.clone()], true);
        assert!(p.iter().any(|m| m.contains("no longer in the chain")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("no ledger run entry")), "{p:?}");
        // A registration cut away: the bundle's reference points past the end.
        let gone = ledger(vec![]);
        let p = check_record(&gone, &[facts("r1", "aa")], true);
        assert!(p.iter().any(|m| m.contains("truncated")), "{p:?}");
        // Another entry at the referenced seq.
        let mut other = two_runs();
        other.hashes[0] = format!("{:064x}", 99);
        let p = check_record(&other, &[facts("r1", "aa")], false);
        assert!(p.iter().any(|m| m.contains("does not match")), "{p:?}");
    }
}
