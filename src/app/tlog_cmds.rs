//! `bets tlog`: the Merkle log verifiers on the command line, so a witness
//! (or a script) can check a proof it was handed without the log.
//! Malformed input exits 2 naming the flag; a proof that does not hold, 3.

use anyhow::Context;

use crate::cli::TlogCmd;
use crate::error::{integrity, usage};
use crate::registry::{Ledger, checkpoint};
use crate::tlog::hash::{from_base64, to_base64};
use crate::tlog::{Hash, ProofError, VerifyError, verify_consistency, verify_inclusion};

/// Run one `bets tlog` command.
pub fn tlog(repo: &super::Repo, cmd: &TlogCmd) -> anyhow::Result<()> {
    match cmd {
        TlogCmd::Checkpoint { write } => checkpoint(repo, *write)?,
        TlogCmd::Consistency { old } => consistency(repo, old)?,
        TlogCmd::ProveInclusion { index } => {
            let (ledger, _) = open_ledger(repo)?;
            let size = ledger.leaves.len() as u64;
            if *index >= size {
                return Err(usage(format!("--index: the ledger has {size} entries (0..{size})")));
            }
            let tree = ledger.tree();
            let proof = tree.inclusion_proof(*index, size).map_err(|e| usage(format!("--index: {e}")))?;
            println!("leaf-hash {}", to_base64(&ledger.leaves[*index as usize]));
            println!("index {index}\nsize {size}\nroot {}", to_base64(&tree.root()));
            println!("proof {}", proof.iter().map(|h| to_base64(h)).collect::<Vec<_>>().join(","));
        }
        TlogCmd::VerifyInclusion { leaf_hash, index, size, root, proof } => {
            let leaf = hash_arg("--leaf-hash", leaf_hash)?;
            let root = hash_arg("--root", root)?;
            let proof = proof_arg(proof)?;
            verify_inclusion(&leaf, *index, *size, &proof, &root).map_err(|e| refusal("inclusion", e))?;
            println!(
                "inclusion proof holds: leaf {} is entry {index} of the tree of size {size} with root {}",
                to_base64(&leaf),
                to_base64(&root)
            );
        }
        TlogCmd::VerifyConsistency { size1, size2, root1, root2, proof } => {
            let root1 = hash_arg("--root1", root1)?;
            let root2 = hash_arg("--root2", root2)?;
            let proof = proof_arg(proof)?;
            verify_consistency(*size1, *size2, &root1, &root2, &proof).map_err(|e| refusal("consistency", e))?;
            println!(
                "consistency proof holds: the tree of size {size2} with root {} extends the tree of size {size1} with root {}",
                to_base64(&root2),
                to_base64(&root1)
            );
        }
    }
    Ok(())
}

/// A malformed question is bad usage (exit 2, naming the flag); a proof
/// that does not hold is an integrity failure (exit 3).
fn refusal(kind: &str, err: VerifyError) -> anyhow::Error {
    match err {
        VerifyError::Malformed(e) => {
            let flag = match e {
                ProofError::IndexOutOfRange { .. } => "--index",
                ProofError::SizeBeyondTree { .. } => "--size",
                ProofError::SizesOutOfOrder { .. } | ProofError::EmptyOldTree => "--size1",
                ProofError::WrongProofLength { .. } => "--proof",
            };
            usage(format!("{flag}: {e}"))
        }
        e @ VerifyError::DoesNotHold { .. } => integrity(format!("{kind} proof does not hold: {e}")),
    }
}

fn hash_arg(flag: &str, text: &str) -> anyhow::Result<Hash> {
    let bytes = from_base64(text).map_err(|e| usage(format!("{flag}: {text:?} is not standard base64 ({e})")))?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| usage(format!("{flag}: {text:?} decodes to {len} bytes; a SHA-256 hash is 32")))
}

/// A comma-separated list of hashes; the empty string is the empty proof.
fn proof_arg(text: &str) -> anyhow::Result<Vec<Hash>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').enumerate().map(|(i, h)| hash_arg(&format!("--proof element {}", i + 1), h)).collect()
}

fn open_ledger(repo: &super::Repo) -> anyhow::Result<(Ledger, crate::signing::TrustedKeys)> {
    let keys = repo.trusted_keys()?;
    let ledger = Ledger::open(&repo.ledger)?;
    ledger.verify(&keys)?;
    if ledger.entries.is_empty() {
        return Err(usage(format!("{} is empty: there is no log yet", repo.relative(&repo.ledger))));
    }
    Ok((ledger, keys))
}

/// `bets tlog checkpoint [--write]`.
fn checkpoint(repo: &super::Repo, write: bool) -> anyhow::Result<()> {
    let (ledger, keys) = open_ledger(repo)?;
    let path = repo.paths.ledger_checkpoint();
    if write {
        checkpoint::write_checkpoint(&ledger, &repo.signer()?)?;
    }
    let problems = checkpoint::check_checkpoint_file(&ledger, &keys);
    if let Some(p) = problems.first() {
        return Err(integrity(p.clone()));
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    print!("{text}");
    Ok(())
}

/// `bets tlog consistency --old FILE`: what a holder of an old checkpoint runs.
fn consistency(repo: &super::Repo, old: &std::path::Path) -> anyhow::Result<()> {
    let (ledger, keys) = open_ledger(repo)?;
    let text =
        std::fs::read_to_string(old).map_err(|e| usage(format!("--old {}: cannot read it: {e}", old.display())))?;
    let (cp, signer) =
        checkpoint::open_checkpoint(&text, &keys).map_err(|e| usage(format!("--old {}: {e}", old.display())))?;
    if let Some(p) = ledger.consistency(&cp).problem() {
        return Err(integrity(format!("{} against {}: {p}", repo.relative(&repo.ledger), old.display())));
    }
    let tree = ledger.tree();
    let (size1, size2) = (cp.size, tree.size());
    let proof = if size1 == size2 { Vec::new() } else { tree.consistency_proof(size1, size2)? };
    if size1 < size2 {
        // Check our own proof with the same verifier a witness uses.
        verify_consistency(size1, size2, &cp.root, &tree.root(), &proof)
            .map_err(|e| integrity(format!("internal: the consistency proof does not verify: {e}")))?;
    }
    println!("the ledger ({size2} entries) extends the checkpoint of {size1} entries signed by {signer}");
    println!("size1 {size1}\nsize2 {size2}\nroot1 {}\nroot2 {}", to_base64(&cp.root), to_base64(&tree.root()));
    println!("proof {}", proof.iter().map(|h| to_base64(h)).collect::<Vec<_>>().join(","));
    Ok(())
}
