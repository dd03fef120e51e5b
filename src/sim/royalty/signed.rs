//! Client keys and receipt signatures (bet 68): a client signs the id of the
//! receipt for a request it was served, so that a server cannot claim a fee,
//! or name a specialist, that the client did not agree to.
//!
//! The client signs SHA-256 of the receipt's contents (its id, recomputed by
//! the client from the contents it checked, never copied from the server),
//! behind a domain tag. Because the id commits to every field (request,
//! manifest hash, server, fee, client), a valid signature binds all of them,
//! provided the ledger also checks that the id matches the contents (bet
//! 14's first check): a ledger that verified the signature over the id
//! without that check would let the manifest change under a valid signature.
//!
//! Keys are Ed25519 (ring), derived deterministically from the simulation
//! seed and the client index, so a run is reproducible.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::{Hash, Receipt, Signature};

/// An Ed25519 public key, as the ledger registers it for a client.
pub type PublicKey = [u8; 32];

/// Domain tag of a receipt signature, so that it can never be taken for a
/// signature over anything else the same key might sign.
const SIGNING_TAG: &[u8] = b"bets/royalty-receipt-signature/v1\0";

/// The bytes a client signs for a receipt with this id.
pub fn signing_message(id: &Hash) -> Vec<u8> {
    [SIGNING_TAG, id.as_slice()].concat()
}

/// Whether `signature` is `key`'s signature over the receipt id `id`.
pub fn verify(key: &PublicKey, id: &Hash, signature: &Signature) -> bool {
    UnparsedPublicKey::new(&ED25519, key).verify(&signing_message(id), signature).is_ok()
}

/// A client's signing key.
pub struct ClientKey(Ed25519KeyPair);

impl ClientKey {
    /// The key of client `client` in a network built from `seed`: the
    /// Ed25519 seed is SHA-256 of a domain tag, the seed and the index.
    pub fn derive(seed: u64, client: u32) -> Self {
        let mut h = Sha256::new();
        h.update(b"bets/royalty-client-key/v1\0");
        h.update(seed.to_le_bytes());
        h.update(client.to_le_bytes());
        let secret: [u8; 32] = h.finalize().into();
        ClientKey(Ed25519KeyPair::from_seed_unchecked(&secret).expect("any 32 bytes are an Ed25519 seed"))
    }

    /// The public key the ledger registers for this client.
    pub fn public(&self) -> PublicKey {
        self.0.public_key().as_ref().try_into().expect("an Ed25519 public key is 32 bytes")
    }

    /// Sign `receipt` as its client: over the id recomputed from the
    /// receipt's contents (the ones the client checked), whatever id the
    /// server wrote into it.
    pub fn sign(&self, receipt: &Receipt) -> Signature {
        let sig = self.0.sign(&signing_message(&receipt.content_hash()));
        sig.as_ref().try_into().expect("an Ed25519 signature is 64 bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt::for_client(5, [7; 32], 2, 300, 9)
    }

    #[test]
    fn a_clients_signature_verifies_under_its_key_only() {
        let (key, other) = (ClientKey::derive(1, 9), ClientKey::derive(1, 10));
        let r = receipt();
        let sig = key.sign(&r);
        assert!(verify(&key.public(), &r.id, &sig));
        assert!(!verify(&other.public(), &r.id, &sig));
        assert_ne!(ClientKey::derive(2, 9).public(), key.public(), "another seed gives another key");
        assert_eq!(ClientKey::derive(1, 9).public(), key.public(), "the same seed gives the same key");
    }

    #[test]
    fn a_one_bit_change_to_the_signature_or_any_signed_field_fails_verification() {
        let key = ClientKey::derive(3, 9);
        let r = receipt();
        let sig = key.sign(&r);
        for byte in 0..64 {
            for bit in 0..8 {
                let mut bad = sig;
                bad[byte] ^= 1 << bit;
                assert!(!verify(&key.public(), &r.id, &bad), "signature byte {byte} bit {bit}");
            }
        }
        let flips: [fn(&mut Receipt); 5] = [
            |r| r.request ^= 1,
            |r| r.manifest[31] ^= 1,
            |r| r.server ^= 1,
            |r| r.fee ^= 1,
            |r| r.client = r.client.map(|c| c ^ 1),
        ];
        for (i, flip) in flips.iter().enumerate() {
            let mut changed = r.clone();
            flip(&mut changed);
            assert!(!verify(&key.public(), &changed.content_hash(), &sig), "field {i}");
        }
    }

    #[test]
    fn the_client_signs_the_contents_not_the_id_the_server_wrote() {
        let key = ClientKey::derive(4, 9);
        let honest = receipt();
        let mut lying = honest.clone();
        lying.id = [0; 32];
        assert_eq!(key.sign(&lying), key.sign(&honest));
    }
}
