//! `bets tlog verify-inclusion` / `verify-consistency` run as the real binary:
//! exit 0 when the proof holds, 3 when it does not, 2 for malformed input
//! with the offending flag named.

mod common;

use std::process::{Command, Output};

use common::{code, stderr, stdout};

fn bets(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bets")).arg("--quiet").args(args).env_remove("RUST_LOG").output().unwrap()
}

// transparency-dev/merkle testdata/inclusion/2/happy-path.json: leaf 5 of the
// 8-leaf RFC 6962 reference tree.
const ROOT8: &str = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=";
const LEAF5: &str = "QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=";
const PROOF5: &str = "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=,yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=,037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=";
// testdata/consistency/2/happy-path.json: size 6 -> 8.
const ROOT6: &str = "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=";
const PROOF6_8: &str = "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=,yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=,037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=";
// A one-bit change of ROOT8 (first byte 0x5d -> 0x5c).
const ROOT8_FLIPPED: &str = "XMnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=";

fn inclusion(leaf: &str, index: &str, size: &str, root: &str, proof: &str) -> Output {
    bets(&[
        "tlog",
        "verify-inclusion",
        "--leaf-hash",
        leaf,
        "--index",
        index,
        "--size",
        size,
        "--root",
        root,
        "--proof",
        proof,
    ])
}

fn consistency(size1: &str, size2: &str, root1: &str, root2: &str, proof: &str) -> Output {
    bets(&[
        "tlog",
        "verify-consistency",
        "--size1",
        size1,
        "--size2",
        size2,
        "--root1",
        root1,
        "--root2",
        root2,
        "--proof",
        proof,
    ])
}

fn assert_exit(out: &Output, want: i32, stderr_has: &str) {
    assert_eq!(code(out), want, "stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out));
    assert!(stderr(out).contains(stderr_has), "stderr lacks {stderr_has:?}:\n{}", stderr(out));
}

#[test]
fn a_valid_inclusion_proof_exits_0_and_says_so() {
    let out = inclusion(LEAF5, "5", "8", ROOT8, PROOF5);
    assert_exit(&out, 0, "");
    assert_eq!(
        stdout(&out),
        format!("inclusion proof holds: leaf {LEAF5} is entry 5 of the tree of size 8 with root {ROOT8}\n")
    );
}

#[test]
fn a_valid_consistency_proof_exits_0_and_says_so() {
    let out = consistency("6", "8", ROOT6, ROOT8, PROOF6_8);
    assert_exit(&out, 0, "");
    assert_eq!(
        stdout(&out),
        format!(
            "consistency proof holds: the tree of size 8 with root {ROOT8} extends the tree of size 6 with root {ROOT6}\n"
        )
    );
}

#[test]
fn an_empty_proof_is_written_as_an_empty_string() {
    let leaf0 = "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=";
    assert_exit(&inclusion(leaf0, "0", "1", leaf0, ""), 0, "");
    assert_exit(&consistency("8", "8", ROOT8, ROOT8, ""), 0, "");
}

#[test]
fn a_proof_that_does_not_hold_exits_3() {
    assert_exit(&inclusion(LEAF5, "5", "8", ROOT8_FLIPPED, PROOF5), 3, "inclusion proof does not hold");
    assert_exit(&inclusion(LEAF5, "4", "8", ROOT8, PROOF5), 3, "does not hold");
    assert_exit(&consistency("6", "8", ROOT6, ROOT8_FLIPPED, PROOF6_8), 3, "consistency proof does not hold");
    assert_exit(&consistency("6", "8", ROOT8, ROOT8, PROOF6_8), 3, "root1");
    assert_exit(&consistency("8", "8", ROOT8, ROOT8_FLIPPED, ""), 3, "does not hold");
}

#[test]
fn malformed_input_exits_2_naming_the_flag() {
    let short = "AAAA";
    let cases: Vec<(Output, &str)> = vec![
        (inclusion("not base64!", "5", "8", ROOT8, PROOF5), "--leaf-hash"),
        (inclusion(short, "5", "8", ROOT8, PROOF5), "--leaf-hash: \"AAAA\" decodes to 3 bytes"),
        (inclusion(LEAF5, "5", "8", "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg", PROOF5), "--root"),
        (inclusion(LEAF5, "8", "8", ROOT8, PROOF5), "--index: leaf index 8 is not below the tree size 8"),
        (inclusion(LEAF5, "five", "8", ROOT8, PROOF5), "--index"),
        (inclusion(LEAF5, "5", "8", ROOT8, &format!("{PROOF5},")), "--proof element 4"),
        (inclusion(LEAF5, "5", "8", ROOT8, "AAAA,"), "--proof element 1"),
        (inclusion(LEAF5, "5", "8", ROOT8, ""), "--proof: the proof has 0 hashes where 3 are needed"),
        (consistency("9", "8", ROOT6, ROOT8, PROOF6_8), "--size1: size1 9 is greater than size2 8"),
        (consistency("0", "8", ROOT6, ROOT8, ""), "--size1"),
        (consistency("6", "8", ROOT6, short, PROOF6_8), "--root2"),
        (consistency("6", "8", "", ROOT8, PROOF6_8), "--root1"),
        (consistency("6", "-1", ROOT6, ROOT8, PROOF6_8), "--size2"),
    ];
    for (out, named) in cases {
        assert_exit(&out, 2, named);
    }
}

/// An independent implementation: pymerkle (PyPI), whose trees use the RFC
/// 6962 hashing. Its inclusion paths are [leaf, siblings...], so the RFC
/// proof is the path without its head. For consistency the script builds the
/// RFC 6962 SUBPROOF from pymerkle's own subtree roots (`_get_root(start, end)`
/// of pymerkle 7), so the hashes come from pymerkle and only the selection
/// from the RFC's definition.
const PYMERKLE_SCRIPT: &str = r#"
import base64, json
from pymerkle import InmemoryTree
N = 12
t = InmemoryTree(algorithm="sha256")
for i in range(N):
    t.append_entry(("entry %d" % i).encode())
b = lambda h: base64.b64encode(h).decode()
def mth(a, z):
    return t._get_root(a, z)
def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k
def subproof(m, a, z, top):
    n = z - a
    if m == n:
        return [] if top else [mth(a, z)]
    k = split(n)
    if m <= k:
        return subproof(m, a, a + k, top) + [mth(a + k, z)]
    return subproof(m - k, a + k, z, False) + [mth(a, a + k)]
cases = []
for size in range(1, N + 1):
    root = t.get_root(size)
    for index in range(size):
        path = t.prove_inclusion(index + 1, size).path
        cases.append(["inclusion", b(path[0]), str(index), str(size), b(root), ",".join(b(h) for h in path[1:])])
    for size1 in range(1, size + 1):
        proof = subproof(size1, 0, size, True)
        cases.append(["consistency", str(size1), str(size), b(t.get_root(size1)), b(root), ",".join(b(h) for h in proof)])
print(json.dumps(cases))
"#;

#[test]
fn proofs_from_pymerkle_verify_with_our_cli() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import pymerkle"]).output();
    // CI installs pymerkle (.ci/run), so there the foreign verifier always runs.
    let in_ci = std::env::var_os("CI").is_some();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(_) => {
            assert!(!in_ci, "pymerkle is not installed for {python}; .ci/run installs pymerkle==7.0.0");
            eprintln!("skipped: pymerkle is not installed for {python} (pip install pymerkle==7.0.0)");
            return;
        }
        Err(_) => {
            assert!(!in_ci, "no {python} on PATH");
            eprintln!("skipped: no {python} on PATH (set PYTHON to a Python with pymerkle)");
            return;
        }
    }
    let out = Command::new(&python).args(["-W", "ignore", "-c", PYMERKLE_SCRIPT]).output().unwrap();
    assert!(out.status.success(), "pymerkle script failed:\n{}", stderr(&out));
    let cases: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cases.len(), 2 * (12 * 13 / 2), "78 inclusion and 78 consistency cases");
    for c in &cases {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        let out = match args[0] {
            "inclusion" => inclusion(args[1], args[2], args[3], args[4], args[5]),
            _ => consistency(args[1], args[2], args[3], args[4], args[5]),
        };
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    }
}
