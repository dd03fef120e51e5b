//! `bets tlog`: the Merkle log verifiers on the command line, so a witness
//! (or a script) can check a proof it was handed without the log.
//! Malformed input exits 2 naming the flag; a proof that does not hold, 3.

use crate::cli::TlogCmd;
use crate::error::{integrity, usage};
use crate::tlog::hash::{from_base64, to_base64};
use crate::tlog::{Hash, ProofError, VerifyError, verify_consistency, verify_inclusion};

/// Run one `bets tlog` command.
pub fn tlog(cmd: &TlogCmd) -> anyhow::Result<()> {
    match cmd {
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
