//! RFC 6962 section 2.1 hashing: domain-separated leaves and nodes, so that a
//! leaf can never be passed off as an interior node (second preimages).

use sha2::{Digest, Sha256};

/// A SHA-256 value: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of one log entry: SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (n >= 2): where RFC
/// 6962 splits a tree of `n` leaves into its left and right subtrees.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The Merkle Tree Hash (MTH) of a list of leaf hashes.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes.len() {
        0 => EMPTY_ROOT,
        1 => leaf_hashes[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&root(&leaf_hashes[..k]), &root(&leaf_hashes[k..]))
        }
    }
}

/// Standard base64 (with padding), the encoding checkpoints and the CLI use.
pub fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode standard base64 strictly (padding and canonical trailing bits).
pub fn from_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn the_empty_tree_root_is_sha256_of_the_empty_string() {
        assert_eq!(root(&[]), EMPTY_ROOT);
        let direct: Hash = Sha256::digest(b"").into();
        assert_eq!(EMPTY_ROOT, direct);
        assert_eq!(hex::encode(EMPTY_ROOT), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn split_point_is_the_largest_power_of_two_below_n() {
        let cases = [(2, 1), (3, 2), (4, 2), (5, 4), (7, 4), (8, 4), (9, 8), (64, 32), (65, 64)];
        for (n, k) in cases {
            assert_eq!(split_point(n), k, "n = {n}");
        }
    }

    // Expected values computed independently with Python's hashlib:
    // sha256(b"\x00" + leaf) for leaves, sha256(b"\x01" + l + r) for nodes.
    #[test]
    fn roots_of_small_trees_match_hand_computed_shapes_and_values() {
        let l: Vec<Hash> = b"abcdefg".iter().map(|c| leaf_hash(&[*c])).collect();
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..1]), hex32("022a6979e6dab7aa5ae4c3e5e45f7e977112a7e63593820dbec1ec738a24f93c"));

        let r2 = node_hash(&l[0], &l[1]);
        assert_eq!(root(&l[..2]), r2);
        assert_eq!(r2, hex32("b137985ff484fb600db93107c77b0365c80d78f5b429ded0fd97361d077999eb"));

        let r3 = node_hash(&node_hash(&l[0], &l[1]), &l[2]);
        assert_eq!(root(&l[..3]), r3);
        assert_eq!(r3, hex32("36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"));

        // 7 = 4 + (2 + 1): ((ab)(cd)) ((ef) g)
        let left = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        let right = node_hash(&node_hash(&l[4], &l[5]), &l[6]);
        let r7 = node_hash(&left, &right);
        assert_eq!(root(&l[..7]), r7);
        assert_eq!(r7, hex32("4ae191939f548d9934740b88dea2c5cb89bb8870fc4505cd79dec6bbfaaee9cb"));
    }

    #[test]
    fn base64_decoding_refuses_missing_padding_and_stray_bits() {
        assert_eq!(from_base64(&to_base64(&EMPTY_ROOT)).unwrap(), EMPTY_ROOT.to_vec());
        assert!(from_base64("AAE").is_err(), "unpadded");
        assert!(from_base64("AAF=").is_err(), "non-canonical trailing bits");
        assert!(from_base64("AA-_").is_err(), "URL-safe alphabet");
    }
}
