//! An in-memory append-only Merkle tree that can answer for every size it
//! has held: the log's side of the protocol (the proofs a witness checks).
//! Proofs follow RFC 6962 section 2.1.1 (PATH) and 2.1.2 (SUBPROOF) to the
//! letter, recursively, so they serve as the reference the iterative
//! verifiers in [`super::proof`] are tested against.

use super::hash::{Hash, leaf_hash, root, split_point};
use super::proof::{ProofError, consistency_proof_len};

/// The leaf hashes of a log, in order; roots and proofs are derived on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    leaves: Vec<Hash>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A tree over already-hashed leaves.
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Tree {
        Tree { leaves }
    }

    /// Append an entry (hashed as a leaf); returns its index.
    pub fn push(&mut self, entry: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(entry))
    }

    /// Append an already-hashed leaf; returns its index.
    pub fn push_leaf_hash(&mut self, hash: Hash) -> u64 {
        self.leaves.push(hash);
        self.size() - 1
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        &self.leaves
    }

    /// The root of the tree as it is now.
    pub fn root(&self) -> Hash {
        root(&self.leaves)
    }

    /// The root the tree had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        Ok(root(self.prefix(size)?))
    }

    /// The audit path of leaf `index` in the tree of `size` leaves
    /// (RFC 6962 section 2.1.1), leaf end first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        let leaves = self.prefix(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        path(index as usize, leaves, &mut out);
        Ok(out)
    }

    /// The proof that the tree of `size2` leaves extends the tree of `size1`
    /// leaves (RFC 6962 section 2.1.2); empty when the sizes are equal.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        let leaves = self.prefix(size2)?;
        consistency_proof_len(size1, size2)?;
        let mut out = Vec::new();
        if size1 < size2 {
            subproof(size1 as usize, leaves, true, &mut out);
        }
        Ok(out)
    }

    fn prefix(&self, size: u64) -> Result<&[Hash], ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeBeyondTree { size, len: self.size() });
        }
        Ok(&self.leaves[..size as usize])
    }
}

/// PATH(m, D[n]): the siblings on the way from leaf m to the root.
fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n as u64) as usize;
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// SUBPROOF(m, D[n], b): the nodes that rebuild both MTH(D[0:m]) and MTH(D[n]);
/// `b` says whether D[0:m] is the old tree itself (whose root the verifier has).
fn subproof(m: usize, d: &[Hash], b: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !b {
            out.push(root(d));
        }
        return;
    }
    let k = split_point(n as u64) as usize;
    if m <= k {
        subproof(m, &d[..k], b, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}
