//! Verifying inclusion and consistency proofs without the tree: what a
//! witness holding only a checkpoint runs. The algorithms are the iterative
//! ones of RFC 9162 sections 2.1.3.2 and 2.1.4.2, which verify the proofs
//! RFC 6962 section 2.1.1 and 2.1.2 define (see [`crate::tlog::tree`]).
//!
//! A malformed claim (an index outside the tree, sizes out of order, a proof
//! of the wrong length) is a [`ProofError`]; a well-formed proof that leads
//! to another root is [`VerifyError::DoesNotHold`]. Callers tell them apart
//! because one is a mistake in the question and the other a failed check.

use thiserror::Error;

use super::hash::{Hash, node_hash, to_base64};

/// A question that has no valid proof: what is wrong with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    /// Leaves are numbered from 0, so an index must be below the size.
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A tree can only prove things about sizes it has held.
    #[error("tree size {size} is beyond the {len} leaves the tree holds")]
    SizeBeyondTree { size: u64, len: u64 },
    /// A log only grows: the older size comes first.
    #[error("size1 {size1} is greater than size2 {size2}")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    /// Every tree extends the empty one, so there is nothing to prove (and
    /// transparency-dev's verifier refuses it too).
    #[error("a consistency proof from the empty tree proves nothing: size1 must be at least 1")]
    EmptyOldTree,
    /// The proof's length is fixed by the sizes (and index).
    #[error("the proof has {got} hashes where {want} are needed")]
    WrongProofLength { got: usize, want: usize },
}

/// Why a proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The question itself is malformed.
    #[error(transparent)]
    Malformed(#[from] ProofError),
    /// The proof is well-formed but does not lead to the claimed root.
    #[error("the proof does not hold: it gives {which} {}, not the claimed {}", to_base64(.computed), to_base64(.claimed))]
    DoesNotHold {
        /// Which claimed root failed: "root", "root1" or "root2".
        which: &'static str,
        computed: Hash,
        claimed: Hash,
    },
}

/// How many hashes an inclusion proof for `index` in a tree of `size` has:
/// the levels below the point where the paths of `index` and the last leaf
/// part (inner), plus one per left sibling above it (border).
pub fn inclusion_proof_len(index: u64, size: u64) -> Result<usize, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    Ok((inner + border) as usize)
}

/// How many hashes a consistency proof from `size1` to `size2` has.
pub fn consistency_proof_len(size1: u64, size2: u64) -> Result<usize, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if size1 == size2 {
        return Ok(0);
    }
    // The old root is the complete subtree of 2^level leaves ending at
    // size1 - 1, or is built from the proof's first hash (the seed).
    let level = size1.trailing_zeros();
    let len = inclusion_proof_len((size1 - 1) >> level, ((size2 - 1) >> level) + 1)?;
    let seed = usize::from(!size1.is_power_of_two());
    Ok(seed + len)
}

fn check_len(proof: &[Hash], want: usize) -> Result<(), ProofError> {
    if proof.len() == want { Ok(()) } else { Err(ProofError::WrongProofLength { got: proof.len(), want }) }
}

/// Check that `leaf_hash` is entry `index` of the tree of `size` leaves
/// whose root is `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    check_len(proof, inclusion_proof_len(index, size)?)?;
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            // Unreachable with the length checked above; kept as the RFC's guard.
            return Err(ProofError::WrongProofLength { got: proof.len(), want: proof.len() }.into());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongProofLength { got: proof.len(), want: proof.len() + 1 }.into());
    }
    if r == *root { Ok(()) } else { Err(VerifyError::DoesNotHold { which: "root", computed: r, claimed: *root }) }
}

/// Check that the tree of `size2` leaves with root `root2` extends the tree
/// of `size1` leaves with root `root1` (RFC 9162 section 2.1.4.2). Equal
/// sizes need equal roots and an empty proof; size1 = 0 is refused.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    check_len(proof, consistency_proof_len(size1, size2)?)?;
    let mismatch = |which, computed: Hash, claimed: &Hash| {
        if computed == *claimed { Ok(()) } else { Err(VerifyError::DoesNotHold { which, computed, claimed: *claimed }) }
    };
    if size1 == size2 {
        return mismatch("root2", *root1, root2);
    }
    // When size1 is a power of two its root is a node of the new tree and
    // the RFC's proof omits it: start from root1 itself.
    let with_seed;
    let path: &[Hash] = if size1.is_power_of_two() {
        with_seed = std::iter::once(*root1).chain(proof.iter().copied()).collect::<Vec<_>>();
        &with_seed
    } else {
        proof
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongProofLength { got: proof.len(), want: proof.len() - 1 }.into());
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongProofLength { got: proof.len(), want: proof.len() + 1 }.into());
    }
    mismatch("root1", fr, root1)?;
    mismatch("root2", sr, root2)
}
