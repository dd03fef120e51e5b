//! In-toto attestations of result bundles: DSSE's published test vector, a
//! foreign verifier (securesystemslib and in-toto-attestation from PyPI),
//! tampering, and the migration of bundles made before attestations.

mod common;

use std::process::Command;

use common::{TestRepo, code, stderr};

/// DSSE's own example (protocol.md, "Test Vectors"): the PAE of
/// `hello world` under `http://example.com/HelloWorld`, and its envelope
/// signed by the published ECDSA P-256 key, checked with ring through the
/// crate's verifier interface.
#[test]
fn the_published_dsse_test_vector_verifies() {
    let pae = dsse::pae("http://example.com/HelloWorld", b"hello world");
    assert_eq!(pae, b"DSSEv1 29 http://example.com/HelloWorld 11 hello world");

    struct P256(Vec<u8>);
    impl dsse::Verifier for P256 {
        fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
            let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.0);
            key.verify(message, signature).is_ok()
        }
    }
    // The published X and Y, as an uncompressed SEC1 point.
    let public = hex::decode(
        "0467cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d238\
         0c782bd54e269125a44f4433aff1432ce94e12bca73aa67ac80cea12608ddf74",
    )
    .unwrap();
    let envelope = dsse::Envelope::from_json(
        br#"{"payload": "aGVsbG8gd29ybGQ=",
             "payloadType": "http://example.com/HelloWorld",
             "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}"#,
    )
    .unwrap();
    let verifier = P256(public);
    let verified = dsse::verify(&envelope, &[&verifier], 1).unwrap();
    assert_eq!(verified.payload, b"hello world");
    assert_eq!(verified.payload_type, "http://example.com/HelloWorld");

    let mut retyped = envelope.clone();
    retyped.payload_type = "http://example.com/Other".into();
    assert!(dsse::verify(&retyped, &[&verifier], 1).is_err(), "the signature covers the payload type");
}

/// The bundle's key as a foreign tool takes it: key id and raw public hex.
fn bundle_key(repo: &TestRepo, bundle: &std::path::Path) -> (String, String) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let id = manifest["signer"].as_str().unwrap().to_string();
    let keys = bets::signing::TrustedKeys::load(&repo.path("bets/keys")).unwrap();
    let public = keys.dsse_verifier(&id).expect("the run's key is trusted").public_hex();
    (id, public)
}

#[test]
fn a_run_writes_an_attestation_that_bets_verify_checks_and_tampering_breaks() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let att = bundle.join("attestation.intoto.jsonl");
    let text = std::fs::read_to_string(&att).unwrap();
    assert_eq!(text.lines().count(), 2, "a test-result and a verdict statement");
    let verify = repo.ok(&["verify"]);
    assert!(verify.contains("attested by"), "{verify}");

    // Each envelope is DSSE over an in-toto Statement naming every file.
    let (id, _) = bundle_key(&repo, &bundle);
    let env: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(env["signatures"][0]["keyid"], id.as_str());
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://in-toto.io/attestation/test-result/v0.1");
    let names: Vec<&str> =
        statement["subject"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for f in ["SHA256SUMS", "SHA256SUMS.minisig", "cells.csv", "cells.parquet", "manifest.json", "verdict.json"] {
        assert!(names.contains(&f), "{f} is a subject: {names:?}");
    }
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("verdict.json")).unwrap()).unwrap();
    let expected = match verdict["verdict"].as_str().unwrap() {
        "STRICT" => "PASSED",
        "LENIENT" => "WARNED",
        _ => "FAILED",
    };
    assert_eq!(statement["predicate"]["result"], expected);

    // A payload changed after signing: the DSSE signature fails.
    let mut tampered: serde_json::Value = env.clone();
    let forged =
        String::from_utf8(payload).unwrap().replace(expected, if expected == "PASSED" { "FAILED" } else { "PASSED" });
    tampered["payload"] = base64::engine::general_purpose::STANDARD.encode(forged).into();
    let second = text.lines().nth(1).unwrap();
    std::fs::write(&att, format!("{tampered}\n{second}\n")).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3, "an integrity failure: {}", stderr(&out));
    assert!(stderr(&out).contains("attestation.intoto.jsonl: attestation: envelope 1"), "{}", stderr(&out));

    // The attestation missing: named, with the command that adds one.
    std::fs::remove_file(&att).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("no in-toto attestation (add one with `bets attest"), "{}", stderr(&out));
}

#[test]
fn the_migration_attests_old_bundles_once_and_touches_no_existing_file() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let att = bundle.join("attestation.intoto.jsonl");
    std::fs::remove_file(&att).unwrap();
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let out = repo.run(&["attest"]);
    assert_eq!(code(&out), 2, "--reason is required");
    let out = repo.ok(&["attest", "--reason", "bundles made before attestations existed"]);
    assert!(out.contains("1 bundle(s) attested"), "{out}");
    for (path, bytes) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{path} unchanged");
    }
    repo.ok(&["verify"]);
    let text = std::fs::read_to_string(&att).unwrap();
    use base64::Engine as _;
    let env: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(statement["predicateType"], "urn:bets:predicate:verdict:v1");
    assert_eq!(statement["predicate"]["migration"], "bundles made before attestations existed");
    assert!(statement["predicate"]["attested"].as_str().unwrap().ends_with('Z'));
    let again = repo.ok(&["attest", "--reason", "again"]);
    assert!(again.contains("0 bundle(s) attested") && again.contains("1 already had"), "{again}");
    assert_eq!(std::fs::read_to_string(&att).unwrap(), text, "an attestation is never rewritten");
}

/// The foreign verifier: securesystemslib checks each DSSE envelope's
/// Ed25519 signature under the bundle's public key, in-toto-attestation
/// validates the Statement and parses the test-result predicate with its
/// own protobuf schema, and the script hashes every subject itself.
const FOREIGN_VERIFIER: &str = r#"
import base64, hashlib, json, os, sys
from google.protobuf import json_format
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from securesystemslib.exceptions import VerificationError
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2

bundle, keyid, public = sys.argv[1:4]
key = SSlibKey(keyid, "ed25519", "ed25519", {"public": public})
seen = []
for line in open(os.path.join(bundle, "attestation.intoto.jsonl")):
    envelope = Envelope.from_dict(json.loads(line))
    assert keyid in envelope.verify([key], 1)
    assert envelope.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(envelope.payload)
    Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
    for s in statement["subject"]:
        with open(os.path.join(bundle, s["name"]), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == s["digest"]["sha256"], s["name"]
    result = None
    if statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1":
        result = json_format.ParseDict(statement["predicate"], test_result_pb2.TestResult()).result
    # A flipped payload byte must not verify.
    forged = Envelope.from_dict(json.loads(line))
    forged.payload = forged.payload.replace(b"sha256", b"sha257")
    try:
        forged.verify([key], 1)
        raise SystemExit("a forged payload verified")
    except VerificationError:
        pass
    seen.append({"predicateType": statement["predicateType"], "subjects": len(statement["subject"]), "result": result})
print(json.dumps(seen))
"#;

#[test]
fn a_foreign_in_toto_verifier_accepts_our_attestations() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import securesystemslib.dsse, in_toto_attestation"]).output();
    // CI installs both (.ci/run), so there the foreign verifier always runs.
    let in_ci = std::env::var_os("CI").is_some();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let what = "securesystemslib[crypto]==1.6.0 and in-toto-attestation==0.9.3";
        assert!(!in_ci, "{python} lacks {what}; .ci/run installs them");
        eprintln!("skipped: {python} lacks {what} (pip install them, or set PYTHON)");
        return;
    }
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let (id, public) = bundle_key(&repo, &bundle);
    let out = Command::new(&python)
        .args(["-W", "ignore", "-c", FOREIGN_VERIFIER])
        .arg(&bundle)
        .args([&id, &public])
        .output()
        .unwrap();
    assert!(out.status.success(), "the foreign verifier refused:\n{}", stderr(&out));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("verdict.json")).unwrap()).unwrap();
    let listed = std::fs::read_to_string(bundle.join("SHA256SUMS")).unwrap().lines().count();
    assert_eq!(seen[0]["predicateType"], "https://in-toto.io/attestation/test-result/v0.1");
    assert_eq!(seen[1]["predicateType"], "urn:bets:predicate:verdict:v1");
    assert_eq!(seen[0]["subjects"], listed + 2, "every listed file, the sums and their signature");
    let expected = if verdict["verdict"] == "STRICT" {
        "PASSED"
    } else if verdict["verdict"] == "LENIENT" {
        "WARNED"
    } else {
        "FAILED"
    };
    assert_eq!(seen[0]["result"], expected);
}
