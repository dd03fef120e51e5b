//! `bets register` and `bets amend`: append signed entries to the ledger.

use std::path::Path;

use super::Repo;
use crate::error::usage;
use crate::registry::{EntryKind, Ledger, Registration, new_entry};

/// Register a spec that the ledger does not know yet.
pub fn register(repo: &Repo, spec_path: &Path) -> anyhow::Result<()> {
    let bet = crate::spec::load(spec_path)?;
    let mut ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&repo.trusted_keys()?)?;
    match ledger.registration(bet.spec.number, &bet.hash(), &bet.canonical()) {
        Registration::Current(e) => {
            println!("bet {} is already registered (ledger seq {}, spec {})", e.bet, e.seq, short(&e.spec_hash));
            Ok(())
        }
        Registration::Deviates { entry, diff } => Err(usage(format!(
            "bet {} is registered (seq {}) with a different spec; register a new version with \
             `bets amend {} --reason \"...\"`. Changes:\n  {}",
            entry.bet,
            entry.seq,
            spec_path.display(),
            diff.join("\n  ")
        ))),
        Registration::Unregistered => {
            let signer = repo.signer()?;
            let e = ledger
                .append(new_entry(EntryKind::Register, bet.spec.number, &bet.spec.slug, bet.canonical()), &signer)?;
            println!(
                "registered bet {} `{}`: spec {} (ledger seq {}, key {})",
                e.bet,
                e.slug,
                short(&e.spec_hash),
                e.seq,
                e.signer
            );
            Ok(())
        }
    }
}

/// Register a changed spec as an amendment of its latest registration.
pub fn amend(repo: &Repo, spec_path: &Path, reason: &str) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        return Err(usage("an amendment needs a reason (--reason \"...\")"));
    }
    let bet = crate::spec::load(spec_path)?;
    let mut ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&repo.trusted_keys()?)?;
    match ledger.registration(bet.spec.number, &bet.hash(), &bet.canonical()) {
        Registration::Unregistered => Err(usage(format!(
            "bet {} is not registered: use `bets register {}`",
            bet.spec.number,
            spec_path.display()
        ))),
        Registration::Current(e) => {
            Err(usage(format!("bet {} is unchanged since ledger seq {}: nothing to amend", e.bet, e.seq)))
        }
        Registration::Deviates { entry, diff } => {
            let signer = repo.signer()?;
            let mut new = new_entry(EntryKind::Amend, bet.spec.number, &bet.spec.slug, bet.canonical());
            new.amends = Some(entry.spec_hash.clone());
            new.reason = Some(reason.trim().to_string());
            let e = ledger.append(new, &signer)?;
            println!(
                "amended bet {}: spec {} -> {} (ledger seq {})\n  {}",
                e.bet,
                short(&entry.spec_hash),
                short(&e.spec_hash),
                e.seq,
                diff.join("\n  ")
            );
            Ok(())
        }
    }
}

/// The first 12 hex digits of a hash, for people.
pub fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}
