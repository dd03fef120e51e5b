//! in-toto attestations of a bundle, for consumers who check provenance
//! with supply-chain tools rather than minisign.
//!
//! `attestation.intoto.jsonl` holds two DSSE envelopes (one per line, the
//! in-toto bundle layout), each signed with the bundle's ed25519 key over an
//! in-toto Statement v1 whose subjects are every file of the bundle with its
//! SHA-256 (the files `SHA256SUMS` lists, `SHA256SUMS` itself and its
//! signature):
//!
//! 1. the test-result predicate (`https://in-toto.io/attestation/test-result/v0.1`):
//!    STRICT -> PASSED, LENIENT -> WARNED, anything else -> FAILED, with the
//!    registered criteria as the tests;
//! 2. our own predicate ([`VERDICT_PREDICATE`]): the verdict, the spec hash
//!    and the ledger entry the run was checked against.
//!
//! The file is written last, after the sums are signed, so it is not one of
//! the files `SHA256SUMS` lists; it names them instead. Bundles written before
//! attestations existed get theirs from `bets attest` (a dated migration that
//! says so in the predicate) and are never otherwise touched.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bundle::{Manifest, SUMS, SUMS_SIG, VerdictFile};
use super::error::{BundleError, Result};
use crate::criteria::{CriterionOutcome, Verdict};
use crate::signing::{Signer, TrustedKeys};

/// The attestation file of a bundle.
pub const ATTESTATION: &str = "attestation.intoto.jsonl";
/// DSSE payload type of an in-toto Statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The in-toto test-result predicate.
pub const TEST_RESULT_PREDICATE: &str = "https://in-toto.io/attestation/test-result/v0.1";
/// Our predicate: a pre-registered bet's mechanical verdict.
pub const VERDICT_PREDICATE: &str = "urn:bets:predicate:verdict:v1";

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

/// A subject (an in-toto ResourceDescriptor with a name and a digest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// `name` with its SHA-256 (hex), the one digest bets records.
    pub fn sha256(name: impl Into<String>, hex: impl Into<String>) -> Subject {
        Subject { name: name.into(), digest: BTreeMap::from([("sha256".to_string(), hex.into())]) }
    }
}

/// The test-result predicate, v0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// PASSED, WARNED or FAILED.
    pub result: String,
    /// What was tested against: the registered spec (canonical form) and
    /// the ledger entry that registered it.
    pub configuration: Vec<Subject>,
    pub passed_tests: Vec<String>,
    pub warned_tests: Vec<String>,
    pub failed_tests: Vec<String>,
}

/// Our predicate: the verdict and where it is on the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerdictPredicate {
    pub bet: u32,
    pub slug: String,
    pub run_id: String,
    pub profile: String,
    pub verdict: String,
    pub reason: String,
    pub counted: bool,
    pub exploratory: bool,
    pub spec_file: String,
    /// SHA-256 of the spec's canonical JSON (what the ledger registers).
    pub spec_hash: String,
    /// The registration the run was checked against (none when exploratory).
    pub ledger: Option<LedgerEntryRef>,
    /// Key id of the minisign signature over `SHA256SUMS`.
    pub bundle_signer: String,
    /// When the attestation was made: the run's end, or the migration's date.
    pub attested: String,
    /// Set when the attestation was added to an existing bundle: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
}

/// A ledger entry by sequence number and the SHA-256 of its line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerEntryRef {
    pub seq: u64,
    pub kind: String,
    pub entry_hash: String,
}

/// The test-result outcome of a verdict.
pub fn test_result_of(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Strict => "PASSED",
        Verdict::Lenient => "WARNED",
        Verdict::Fail | Verdict::Catastrophic | Verdict::Inconclusive => "FAILED",
    }
}

/// A criterion as a test name: `strict: wins >= 12`.
fn test_name(c: &CriterionOutcome) -> String {
    format!("{}: {}", c.level, c.expression.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Sort the criteria into passed / warned / failed tests: a strict or
/// lenient criterion passes when it holds (a lenient one that holds while
/// the strict one does not is a warning), a catastrophic one passes when it
/// does not hold; an undecided criterion fails.
fn sort_tests(criteria: &[CriterionOutcome]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let strict_holds = criteria.iter().any(|c| c.level == "strict" && c.holds == Some(true));
    let (mut passed, mut warned, mut failed) = (vec![], vec![], vec![]);
    for c in criteria {
        let good = match c.level.as_str() {
            "catastrophic" => c.holds.map(|h| !h),
            _ => c.holds,
        };
        match good {
            Some(true) if c.level == "lenient" && !strict_holds => warned.push(test_name(c)),
            Some(true) => passed.push(test_name(c)),
            _ => failed.push(test_name(c)),
        }
    }
    (passed, warned, failed)
}

/// The subjects of the bundle at `dir`: every file `SHA256SUMS` lists (read
/// and hashed now), `SHA256SUMS` and its signature, sorted by name.
pub fn subjects(dir: &Path, listed: &[String]) -> Result<Vec<Subject>> {
    let mut out = Vec::new();
    for name in listed.iter().map(String::as_str).chain([SUMS, SUMS_SIG]) {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|error| BundleError::Io { action: "reading", path, error })?;
        out.push(Subject::sha256(name, crate::fsutil::sha256_hex(&bytes)));
    }
    out.sort();
    Ok(out)
}

/// The two statements of a bundle, in file order.
pub fn statements(
    subjects: &[Subject],
    manifest: &Manifest,
    verdict: &VerdictFile,
    attested: &str,
    migration: Option<&str>,
) -> [Statement; 2] {
    let record = &verdict.record;
    let mut configuration =
        vec![Subject::sha256(format!("{} (canonical JSON)", manifest.spec_file), &manifest.spec_hash)];
    if let Some(l) = &manifest.ledger {
        configuration.push(Subject::sha256(format!("bets/ledger.jsonl#{}", l.seq), &l.entry_hash));
    }
    let (passed_tests, warned_tests, failed_tests) = sort_tests(&record.criteria);
    let test_result = TestResult {
        result: test_result_of(record.verdict).to_string(),
        configuration,
        passed_tests,
        warned_tests,
        failed_tests,
    };
    let ours = VerdictPredicate {
        bet: manifest.bet,
        slug: manifest.slug.clone(),
        run_id: manifest.run_id.clone(),
        profile: manifest.profile.clone(),
        verdict: record.verdict.to_string(),
        reason: record.reason.clone(),
        counted: verdict.counted,
        exploratory: manifest.exploratory,
        spec_file: manifest.spec_file.clone(),
        spec_hash: manifest.spec_hash.clone(),
        ledger: manifest.ledger.as_ref().map(|l| LedgerEntryRef {
            seq: l.seq,
            kind: serde_json::to_value(l.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            entry_hash: l.entry_hash.clone(),
        }),
        bundle_signer: manifest.signer.clone(),
        attested: attested.to_string(),
        migration: migration.map(str::to_string),
    };
    let statement = |predicate_type: &str, predicate: serde_json::Value| Statement {
        statement_type: STATEMENT_TYPE.to_string(),
        subject: subjects.to_vec(),
        predicate_type: predicate_type.to_string(),
        predicate,
    };
    [
        statement(TEST_RESULT_PREDICATE, serde_json::to_value(test_result).expect("plain data serialises")),
        statement(VERDICT_PREDICATE, serde_json::to_value(ours).expect("plain data serialises")),
    ]
}

/// The attestation file's bytes: each statement signed into a DSSE
/// envelope, one compact JSON envelope per line.
pub fn sign_statements(statements: &[Statement], signer: &Signer) -> Result<Vec<u8>> {
    let key = signer.dsse_signer()?;
    let mut out = Vec::new();
    for s in statements {
        let payload = serde_json::to_vec(s).expect("plain data serialises");
        let envelope = dsse::sign(PAYLOAD_TYPE, &payload, &key).map_err(|e| attestation_error(ATTESTATION, e))?;
        out.extend(envelope.to_json().map_err(|e| attestation_error(ATTESTATION, e))?);
        out.push(b'\n');
    }
    Ok(out)
}

fn attestation_error(path: impl std::fmt::Display, detail: impl std::fmt::Display) -> BundleError {
    BundleError::Attestation { path: path.to_string(), detail: detail.to_string() }
}

/// Check the attestation of the bundle at `dir` (whose sums list `listed`
/// and whose signature is already verified): both envelopes signed by a
/// trusted key, subjects equal to the bundle's files as they are now,
/// predicates that say what the manifest and verdict say. Returns the key id
/// that signed it.
pub fn verify(
    dir: &Path,
    listed: &[String],
    keys: &TrustedKeys,
    manifest: &Manifest,
    verdict: &VerdictFile,
) -> Result<String> {
    let path = dir.join(ATTESTATION);
    let shown = path.display().to_string();
    let err = |detail: String| attestation_error(&shown, detail);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                "missing: this bundle has no in-toto attestation (add one with `bets attest --reason ...`)".into(),
            ));
        }
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != 2 {
        return Err(err(format!("expected 2 envelopes (test-result, verdict), found {}", lines.len())));
    }
    let expected_subjects = subjects(dir, listed)?;
    let mut signer_id = String::new();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let at = |d: String| err(format!("envelope {}: {d}", i + 1));
        let envelope = dsse::Envelope::from_json(line.as_bytes()).map_err(|e| at(e.to_string()))?;
        let key_id = envelope.signatures.first().and_then(|s| s.keyid.clone()).unwrap_or_default();
        let verifier = keys
            .dsse_verifier(&key_id)
            .ok_or_else(|| at(format!("signed by key `{key_id}`, which bets/keys/ does not trust")))?;
        let verified = dsse::verify(&envelope, &[&verifier], 1).map_err(|e| at(e.to_string()))?;
        if verified.payload_type != PAYLOAD_TYPE {
            return Err(at(format!("payloadType `{}`, expected `{PAYLOAD_TYPE}`", verified.payload_type)));
        }
        let statement: Statement =
            serde_json::from_slice(&verified.payload).map_err(|e| at(format!("not an in-toto Statement: {e}")))?;
        if statement.statement_type != STATEMENT_TYPE {
            return Err(at(format!("_type `{}`, expected `{STATEMENT_TYPE}`", statement.statement_type)));
        }
        if statement.subject != expected_subjects {
            return Err(at("its subjects are not the bundle's files and digests as they are now".into()));
        }
        signer_id = key_id;
        found.push(statement);
    }
    let [test_result, ours] = [&found[0], &found[1]];
    let predicate = |s: &Statement, ty: &str| -> Result<serde_json::Value> {
        if s.predicate_type != ty {
            return Err(err(format!("predicateType `{}`, expected `{ty}`", s.predicate_type)));
        }
        Ok(s.predicate.clone())
    };
    let tr: TestResult = serde_json::from_value(predicate(test_result, TEST_RESULT_PREDICATE)?)
        .map_err(|e| err(format!("test-result predicate: {e}")))?;
    let vp: VerdictPredicate = serde_json::from_value(predicate(ours, VERDICT_PREDICATE)?)
        .map_err(|e| err(format!("verdict predicate: {e}")))?;
    let [want_tr, want_vp] = statements(&expected_subjects, manifest, verdict, &vp.attested, vp.migration.as_deref());
    if serde_json::to_value(&tr).ok() != Some(want_tr.predicate) {
        return Err(err(format!(
            "the test-result predicate (result {}) does not say what verdict.json says ({})",
            tr.result, verdict.record.verdict
        )));
    }
    if serde_json::to_value(&vp).ok() != Some(want_vp.predicate) {
        return Err(err("the verdict predicate does not say what manifest.json and verdict.json say".into()));
    }
    Ok(signer_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(level: &str, holds: Option<bool>) -> CriterionOutcome {
        CriterionOutcome {
            level: level.into(),
            expression: "wins >=\n 12".into(),
            holds,
            uses: BTreeMap::new(),
            error: None,
        }
    }

    #[test]
    fn verdicts_map_to_test_results_as_the_test_result_predicate_defines() {
        assert_eq!(test_result_of(Verdict::Strict), "PASSED");
        assert_eq!(test_result_of(Verdict::Lenient), "WARNED");
        for v in [Verdict::Fail, Verdict::Catastrophic, Verdict::Inconclusive] {
            assert_eq!(test_result_of(v), "FAILED");
        }
    }

    #[test]
    fn criteria_become_passed_warned_and_failed_tests() {
        // LENIENT: strict fails, lenient holds (a warning), catastrophic does not hold (passed).
        let lenient = [
            criterion("catastrophic", Some(false)),
            criterion("strict", Some(false)),
            criterion("lenient", Some(true)),
        ];
        let (p, w, f) = sort_tests(&lenient);
        assert_eq!(p, ["catastrophic: wins >= 12"]);
        assert_eq!(w, ["lenient: wins >= 12"]);
        assert_eq!(f, ["strict: wins >= 12"]);
        // STRICT: a lenient criterion that holds too is passed, not a warning.
        let strict = [criterion("strict", Some(true)), criterion("lenient", Some(true))];
        assert_eq!(sort_tests(&strict).0.len(), 2);
        // CATASTROPHIC, and an undecided criterion: both failed.
        let bad = [criterion("catastrophic", Some(true)), criterion("strict", None)];
        let (p, w, f) = sort_tests(&bad);
        assert!(p.is_empty() && w.is_empty());
        assert_eq!(f.len(), 2);
    }
}
