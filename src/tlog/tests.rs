//! Tests of the tree and the verifiers together: interoperability vectors
//! from another implementation, then every proof of every small tree with
//! every single-bit corruption.

use super::hash::{from_base64, to_base64};
use super::proof::{consistency_proof_len, inclusion_proof_len};
use super::*;

fn b64(s: &str) -> Hash {
    from_base64(s).unwrap().try_into().unwrap()
}

fn hex32(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn b64s(v: &[&str]) -> Vec<Hash> {
    v.iter().map(|s| b64(s)).collect()
}

// Interoperability vectors: the RFC 6962 reference data of Google's
// transparency-dev/merkle (Go), files testonly/constants.go (LeafInputs,
// NodeHashes, RootHashes) and testdata/{inclusion,consistency}/N/happy-path.json
// at commit 417fb0c314750d94e53942e9f92e79b6d35915db. The same leaves and
// roots are in certificate-transparency's merkle_tree_test. The roots were
// re-derived with Python's hashlib before being trusted.
const LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference_tree() -> Tree {
    let mut t = Tree::new();
    for l in LEAVES {
        t.push(&hex::decode(l).unwrap());
    }
    t
}

#[test]
fn reference_leaves_hash_to_the_transparency_dev_leaf_hashes() {
    let t = reference_tree();
    let want: Vec<Hash> = LEAF_HASHES.iter().map(|h| hex32(h)).collect();
    assert_eq!(t.leaf_hashes(), &want[..]);
}

#[test]
fn reference_tree_roots_for_sizes_0_to_8_match_transparency_dev() {
    let t = reference_tree();
    for (size, want) in ROOTS.iter().enumerate() {
        assert_eq!(hex::encode(t.root_at(size as u64).unwrap()), *want, "size {size}");
    }
    assert_eq!(t.root_at(0).unwrap(), EMPTY_ROOT);
}

/// (leafIdx, treeSize, root, leafHash, proof) of testdata/inclusion/{0..4}/happy-path.json.
const INCLUSION: [(u64, u64, &str, &str, &[&str]); 5] = [
    (0, 1, "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=", "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=", &[]),
    (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        &[
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        5,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
        &[
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
            "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
    (
        2,
        3,
        "rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
        "ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
        &["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="],
    ),
    (
        1,
        5,
        "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
        "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
        &[
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
        ],
    ),
];

/// (size1, size2, root1, root2, proof) of testdata/consistency/{0..4}/happy-path.json.
const CONSISTENCY: [(u64, u64, &str, &str, &[&str]); 5] = [
    (1, 1, "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=", "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=", &[]),
    (
        1,
        8,
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        &[
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        6,
        8,
        "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        &[
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
    (
        2,
        5,
        "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
        "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
        &["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=", "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="],
    ),
    (
        6,
        7,
        "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
        "3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
        &[
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
];

#[test]
fn transparency_dev_inclusion_proofs_are_the_ones_we_generate_and_they_verify() {
    let t = reference_tree();
    for (index, size, root, leaf, proof) in INCLUSION {
        let (root, leaf, proof) = (b64(root), b64(leaf), b64s(proof));
        assert_eq!(t.root_at(size).unwrap(), root, "root of size {size}");
        assert_eq!(t.leaf_hashes()[index as usize], leaf);
        assert_eq!(t.inclusion_proof(index, size).unwrap(), proof, "proof of {index} in {size}");
        assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
    }
}

#[test]
fn transparency_dev_consistency_proofs_are_the_ones_we_generate_and_they_verify() {
    let t = reference_tree();
    for (size1, size2, root1, root2, proof) in CONSISTENCY {
        let (root1, root2, proof) = (b64(root1), b64(root2), b64s(proof));
        assert_eq!(t.root_at(size1).unwrap(), root1);
        assert_eq!(t.root_at(size2).unwrap(), root2);
        assert_eq!(t.consistency_proof(size1, size2).unwrap(), proof, "proof {size1} -> {size2}");
        assert_eq!(verify_consistency(size1, size2, &root1, &root2, &proof), Ok(()));
    }
}

#[test]
fn malformed_questions_are_named_errors_not_failed_checks() {
    let t = reference_tree();
    let r = t.root();
    let leaf = t.leaf_hashes()[0];
    let p = t.inclusion_proof(0, 8).unwrap();
    let malformed = |e| Err(VerifyError::Malformed(e));
    assert_eq!(verify_inclusion(&leaf, 8, 8, &p, &r), malformed(ProofError::IndexOutOfRange { index: 8, size: 8 }));
    assert_eq!(verify_inclusion(&leaf, 0, 0, &[], &r), malformed(ProofError::IndexOutOfRange { index: 0, size: 0 }));
    assert_eq!(verify_inclusion(&leaf, 0, 8, &p[..2], &r), malformed(ProofError::WrongProofLength { got: 2, want: 3 }));
    let long: Vec<Hash> = p.iter().chain(p.iter()).copied().collect();
    assert_eq!(verify_inclusion(&leaf, 0, 8, &long, &r), malformed(ProofError::WrongProofLength { got: 6, want: 3 }));

    assert_eq!(verify_consistency(5, 4, &r, &r, &[]), malformed(ProofError::SizesOutOfOrder { size1: 5, size2: 4 }));
    assert_eq!(verify_consistency(0, 4, &EMPTY_ROOT, &r, &[]), malformed(ProofError::EmptyOldTree));
    assert_eq!(verify_consistency(4, 4, &r, &r, &[r]), malformed(ProofError::WrongProofLength { got: 1, want: 0 }));
    assert_eq!(verify_consistency(3, 8, &r, &r, &[]), malformed(ProofError::WrongProofLength { got: 0, want: 4 }));

    assert_eq!(t.inclusion_proof(0, 9), Err(ProofError::SizeBeyondTree { size: 9, len: 8 }));
    assert_eq!(t.inclusion_proof(3, 3), Err(ProofError::IndexOutOfRange { index: 3, size: 3 }));
    assert_eq!(t.consistency_proof(2, 9), Err(ProofError::SizeBeyondTree { size: 9, len: 8 }));
    assert_eq!(t.consistency_proof(3, 2), Err(ProofError::SizesOutOfOrder { size1: 3, size2: 2 }));
    assert_eq!(t.consistency_proof(0, 2), Err(ProofError::EmptyOldTree));
    assert_eq!(t.root_at(9), Err(ProofError::SizeBeyondTree { size: 9, len: 8 }));
}

#[test]
fn equal_sizes_with_different_roots_do_not_hold() {
    let t = reference_tree();
    let (r4, r5) = (t.root_at(4).unwrap(), t.root_at(5).unwrap());
    assert_eq!(verify_consistency(4, 4, &r4, &r4, &[]), Ok(()));
    assert_eq!(
        verify_consistency(4, 4, &r4, &r5, &[]),
        Err(VerifyError::DoesNotHold { which: "root2", computed: r4, claimed: r5 })
    );
}

#[test]
fn a_failed_check_says_which_root_it_reached() {
    let t = reference_tree();
    let mut wrong = t.root();
    wrong[0] ^= 1;
    let err = verify_inclusion(&t.leaf_hashes()[2], 2, 8, &t.inclusion_proof(2, 8).unwrap(), &wrong).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the proof does not hold: it gives root {}, not the claimed {}",
            to_base64(&t.root()),
            to_base64(&wrong)
        )
    );
}

// ---- exhaustive checks over every small tree ----

const MAX: u64 = 64;

fn big_tree() -> Tree {
    let mut t = Tree::new();
    for i in 0..MAX {
        t.push(format!("entry {i}").as_bytes());
    }
    t
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

/// The sides of the siblings in RFC 6962's PATH(m, D[n]), computed from the
/// recursive definition (independently of the iterative verifier).
fn path_shape(m: u64, n: u64) -> Vec<char> {
    if n <= 1 {
        return Vec::new();
    }
    let k = n.next_power_of_two() / 2;
    let (mut v, side) = if m < k { (path_shape(m, k), 'R') } else { (path_shape(m - k, n - k), 'L') };
    v.push(side);
    v
}

/// The steps of RFC 6962's SUBPROOF(m, D[n], b), from its recursive definition.
fn subproof_shape(m: u64, n: u64, b: bool) -> Vec<char> {
    if m == n {
        return vec![if b { 'E' } else { 'S' }];
    }
    let k = n.next_power_of_two() / 2;
    let (mut v, side) =
        if m <= k { (subproof_shape(m, k, b), 'R') } else { (subproof_shape(m - k, n - k, false), 'L') };
    v.push(side);
    v
}

#[test]
fn every_inclusion_proof_up_to_64_leaves_verifies_and_any_single_change_breaks_it() {
    let t = big_tree();
    let mut size_aliases = 0;
    for size in 1..=MAX {
        let root = t.root_at(size).unwrap();
        for index in 0..size {
            let leaf = t.leaf_hashes()[index as usize];
            let proof = t.inclusion_proof(index, size).unwrap();
            assert_eq!(proof.len(), inclusion_proof_len(index, size).unwrap());
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()), "{index} in {size}");
            for i in 0..proof.len() {
                for bit in [0, 77, 255] {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err(), "element {i} bit {bit}");
                }
            }
            for bit in [0, 128, 255] {
                assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
                assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
            }
            for other in (0..size).filter(|&o| o != index) {
                assert!(
                    verify_inclusion(&leaf, other, size, &proof, &root).is_err(),
                    "index {other} for {index}/{size}"
                );
            }
            // The root does not bind the size (the signed checkpoint does):
            // another size is accepted only when its audit path has exactly
            // the same shape, so the very same hashes are computed.
            for other in (index + 1..=MAX + 1).filter(|&o| o != size) {
                if verify_inclusion(&leaf, index, other, &proof, &root).is_ok() {
                    assert_eq!(path_shape(index, other), path_shape(index, size), "size {other} for {index}/{size}");
                    size_aliases += 1;
                }
            }
        }
    }
    assert!(size_aliases > 0, "the shape caveat above is real: e.g. leaf 0 of 3 has the path shape of leaf 0 of 4");
}

#[test]
fn every_consistency_proof_up_to_64_leaves_verifies_and_any_single_change_breaks_it() {
    let t = big_tree();
    let roots: Vec<Hash> = (0..=MAX).map(|s| t.root_at(s).unwrap()).collect();
    for size2 in 1..=MAX {
        for size1 in 1..=size2 {
            let (r1, r2) = (roots[size1 as usize], roots[size2 as usize]);
            let proof = t.consistency_proof(size1, size2).unwrap();
            assert_eq!(proof.len(), consistency_proof_len(size1, size2).unwrap());
            assert_eq!(verify_consistency(size1, size2, &r1, &r2, &proof), Ok(()), "{size1} -> {size2}");
            for i in 0..proof.len() {
                for bit in [0, 77, 255] {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_consistency(size1, size2, &r1, &r2, &bad).is_err(), "element {i} bit {bit}");
                }
            }
            for bit in [0, 128, 255] {
                assert!(verify_consistency(size1, size2, &flip(&r1, bit), &r2, &proof).is_err());
                assert!(verify_consistency(size1, size2, &r1, &flip(&r2, bit), &proof).is_err());
            }
            // As for inclusion, changed sizes pass only where the SUBPROOF
            // shape is identical (the same hashes are computed).
            let shape = subproof_shape(size1, size2, true);
            for other1 in (1..=size2).filter(|&o| o != size1) {
                if verify_consistency(other1, size2, &r1, &r2, &proof).is_ok() {
                    assert_eq!(subproof_shape(other1, size2, true), shape, "size1 {other1} for {size1} -> {size2}");
                }
            }
            for other2 in (size1..=MAX + 1).filter(|&o| o != size2) {
                if verify_consistency(size1, other2, &r1, &r2, &proof).is_ok() {
                    assert_eq!(subproof_shape(size1, other2, true), shape, "size2 {other2} for {size1} -> {size2}");
                }
            }
        }
    }
}

#[test]
fn roots_of_a_growing_tree_stay_the_roots_of_its_prefixes() {
    let t = big_tree();
    let mut growing = Tree::new();
    for (i, h) in t.leaf_hashes().iter().enumerate() {
        assert_eq!(growing.push_leaf_hash(*h), i as u64);
        assert_eq!(growing.root(), t.root_at(i as u64 + 1).unwrap());
        assert_eq!(growing.root(), root(&t.leaf_hashes()[..=i]));
    }
}
