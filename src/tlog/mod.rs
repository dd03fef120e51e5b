//! An RFC 6962 Merkle log: the structure that lets anyone holding an older
//! signed checkpoint of the ledger catch a truncated or forked history.
//!
//! - [`hash`]: leaf and node hashing with SHA-256 (RFC 6962 section 2.1).
//! - [`tree`]: an in-memory append-only tree that answers roots and proofs
//!   for any size it has held (RFC 6962 sections 2.1.1 and 2.1.2).
//! - [`proof`]: pure verifiers of inclusion and consistency proofs (the
//!   iterative algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2).
//! - [`checkpoint`]: signed tree heads in the C2SP tlog-checkpoint and
//!   signed-note formats (Ed25519).
//!
//! Everything here is pure (no IO, no clock) and knows nothing of bets.

pub mod checkpoint;
pub mod hash;
pub mod proof;
pub mod tree;

pub use hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash, root};
pub use proof::{ProofError, VerifyError, verify_consistency, verify_inclusion};
pub use tree::Tree;

#[cfg(test)]
mod tests;
