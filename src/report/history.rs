//! Confirmations and retractions: what a rerun, or a bet about other bets,
//! says about a published verdict (pure; `app::report` signs and writes).
//!
//! Two kinds of document:
//! - a **rerun** document for each counted run that follows another counted
//!   run of the same bet: a *retraction* when the verdict changed, a
//!   *confirmation* when it held, with both runs side by side and everything
//!   that differs between them;
//! - a **headline** document for a bet that declares `tests_headline_of`:
//!   its own latest counted verdict (STRICT or LENIENT confirms, FAIL or
//!   CATASTROPHIC retracts, INCONCLUSIVE issues nothing) next to the signed
//!   results of the bets it reads, saying plainly which have none.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{BetReport, Catalogue, RunInfo};
use crate::criteria::Verdict;
use crate::results::Manifest;
use crate::table::Value;

/// Version of the documents' JSON form.
pub const DOCUMENT_FORMAT: u32 = 1;

/// The confirmation and retraction formats this build reads.
pub const DOCUMENT_FORMATS: &[u32] = &[DOCUMENT_FORMAT];

/// Which way a document goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    /// The rerun or meta bet upholds the finding.
    Confirmation,
    /// The rerun or meta bet overturns the finding.
    Retraction,
}

impl DocKind {
    /// The folder under reports/ the document goes to.
    pub fn folder(self) -> &'static str {
        match self {
            DocKind::Confirmation => "confirmations",
            DocKind::Retraction => "retractions",
        }
    }

    /// "Confirmation" or "Retraction", for titles.
    pub fn word(self) -> &'static str {
        match self {
            DocKind::Confirmation => "Confirmation",
            DocKind::Retraction => "Retraction",
        }
    }
}

/// One run as a document shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSide {
    /// The bet the run belongs to.
    pub bet: u32,
    /// The run id.
    pub run_id: String,
    /// Repo-relative bundle path.
    pub bundle: String,
    /// The profile it ran at.
    pub profile: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Why, as the verdict file says.
    pub reason: String,
    /// Every quantity's value (NULL as `None`).
    pub quantities: BTreeMap<String, Option<Value>>,
    /// The key that signed the bundle.
    pub signer: String,
    /// The spec hash the run was made under.
    pub spec_hash: String,
    /// When the run finished (from its manifest).
    pub finished: String,
}

impl RunSide {
    /// The side of a verified run.
    pub fn of(run: &RunInfo) -> RunSide {
        RunSide {
            bet: run.manifest.bet,
            run_id: run.manifest.run_id.clone(),
            bundle: run.dir.clone(),
            profile: run.manifest.profile.clone(),
            verdict: run.verdict.record.verdict,
            reason: run.verdict.record.reason.clone(),
            quantities: run.verdict.record.quantities.iter().map(|(k, q)| (k.clone(), q.value.clone())).collect(),
            signer: run.signer.clone(),
            spec_hash: run.manifest.spec_hash.clone(),
            finished: run.manifest.finished.clone(),
        }
    }
}

/// One thing that differs between two runs' manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What, e.g. `harness version`, `inputs.corpus`, `grid`.
    pub what: String,
    /// The value in the earlier run.
    pub previous: String,
    /// The value in the later run.
    pub latest: String,
}

/// A verdict in a bet's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// The run id.
    pub run_id: String,
    /// The profile it ran at.
    pub profile: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Whether it counts as a verdict.
    pub counted: bool,
}

/// A confirmation or retraction by rerun.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerunDoc {
    /// Document format version.
    pub format: u32,
    /// Confirmation or retraction.
    pub kind: DocKind,
    /// The bet.
    pub bet: u32,
    /// The bet's slug.
    pub slug: String,
    /// The bet's title.
    pub title: String,
    /// The counted run before `latest`.
    pub previous: RunSide,
    /// The counted run that issues the document.
    pub latest: RunSide,
    /// Everything the manifests record differently.
    pub differences: Vec<Difference>,
    /// Every verified run of the bet up to the latest one, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// What one bet whose headline is tested stands on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestedBet {
    /// The bet whose headline is tested.
    pub bet: u32,
    /// Its title (`None` when it is not in the catalogue).
    pub title: Option<String>,
    /// Its latest counted, signed run; `None` when it has none.
    pub latest: Option<RunSide>,
}

/// A confirmation or retraction of other bets' headlines by a meta bet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadlineDoc {
    /// Document format version.
    pub format: u32,
    /// Confirmation or retraction.
    pub kind: DocKind,
    /// The meta bet.
    pub bet: u32,
    /// The meta bet's slug.
    pub slug: String,
    /// The meta bet's title.
    pub title: String,
    /// The meta bet's own latest counted run, which decides the kind.
    pub run: RunSide,
    /// What that run recorded as its inputs (for a bet about bets: every
    /// signed run it read, with the digest of its SHA256SUMS).
    pub inputs: BTreeMap<String, String>,
    /// The bets whose headlines it tests, in the spec's order.
    pub tested: Vec<TestedBet>,
}

/// Either document, with its file name.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A rerun of the same bet.
    Rerun(Box<RerunDoc>),
    /// A meta bet about other bets' headlines.
    Headline(Box<HeadlineDoc>),
}

impl Document {
    /// Confirmation or retraction.
    pub fn kind(&self) -> DocKind {
        match self {
            Document::Rerun(d) => d.kind,
            Document::Headline(d) => d.kind,
        }
    }

    /// The bet the document is filed under.
    pub fn bet(&self) -> u32 {
        match self {
            Document::Rerun(d) => d.bet,
            Document::Headline(d) => d.bet,
        }
    }

    /// The run that issued it.
    pub fn run_id(&self) -> &str {
        match self {
            Document::Rerun(d) => &d.latest.run_id,
            Document::Headline(d) => &d.run.run_id,
        }
    }

    /// Logical path without extension, e.g.
    /// `retractions/14-royalty-math--20250101T000000Z-tiny`; headline
    /// documents add `--headlines`.
    pub fn path(&self) -> String {
        match self {
            Document::Rerun(d) => format!("{}/{:02}-{}--{}", d.kind.folder(), d.bet, d.slug, d.latest.run_id),
            Document::Headline(d) => {
                format!("{}/{:02}-{}--headlines--{}", d.kind.folder(), d.bet, d.slug, d.run.run_id)
            }
        }
    }

    /// The JSON form that is signed (pretty, with a final newline).
    pub fn json(&self, ledger_head: Option<&crate::registry::LedgerHead>) -> String {
        let v = match self {
            Document::Rerun(d) => serde_json::to_value(d),
            Document::Headline(d) => serde_json::to_value(d),
        };
        let mut v = v.unwrap_or_default();
        if let (Some(obj), Some(head)) = (v.as_object_mut(), ledger_head) {
            obj.insert("ledger_head".into(), serde_json::to_value(head).unwrap_or_default());
        }
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Confirmation when the verdict held, retraction when it changed.
pub fn rerun_kind(previous: Verdict, latest: Verdict) -> DocKind {
    if previous == latest { DocKind::Confirmation } else { DocKind::Retraction }
}

/// What a meta bet's verdict issues about the headlines it tests.
pub fn headline_kind(verdict: Verdict) -> Option<DocKind> {
    match verdict {
        Verdict::Strict | Verdict::Lenient => Some(DocKind::Confirmation),
        Verdict::Fail | Verdict::Catastrophic => Some(DocKind::Retraction),
        Verdict::Inconclusive => None,
    }
}

/// One rerun document per counted run that follows another counted run.
pub fn rerun_documents(bet: &BetReport) -> Vec<RerunDoc> {
    let counted = bet.counted();
    counted
        .windows(2)
        .map(|pair| {
            let (prev, last) = (pair[0], pair[1]);
            let history = bet
                .runs
                .iter()
                .take_while(|r| r.manifest.run_id <= last.manifest.run_id)
                .map(|r| HistoryEntry {
                    run_id: r.manifest.run_id.clone(),
                    profile: r.manifest.profile.clone(),
                    verdict: r.verdict.record.verdict,
                    counted: r.verdict.counted,
                })
                .collect();
            RerunDoc {
                format: DOCUMENT_FORMAT,
                kind: rerun_kind(prev.verdict.record.verdict, last.verdict.record.verdict),
                bet: bet.number,
                slug: bet.slug.clone(),
                title: bet.title.clone(),
                previous: RunSide::of(prev),
                latest: RunSide::of(last),
                differences: differences(&prev.manifest, &last.manifest),
                history,
            }
        })
        .collect()
}

/// The headline document of a bet that declares `tests_headline_of`, from
/// its latest counted run; `None` without such a run or when it is
/// INCONCLUSIVE.
pub fn headline_document(bet: &BetReport, catalogue: &Catalogue) -> Option<HeadlineDoc> {
    if bet.tests_headline_of.is_empty() {
        return None;
    }
    let run = bet.latest()?;
    let kind = headline_kind(run.verdict.record.verdict)?;
    Some(HeadlineDoc {
        format: DOCUMENT_FORMAT,
        kind,
        bet: bet.number,
        slug: bet.slug.clone(),
        title: bet.title.clone(),
        run: RunSide::of(run),
        inputs: run.manifest.inputs.clone(),
        tested: tested_bets(bet, catalogue),
    })
}

/// The bets whose headline `bet` tests, each with its latest signed result.
pub fn tested_bets(bet: &BetReport, catalogue: &Catalogue) -> Vec<TestedBet> {
    bet.tests_headline_of
        .iter()
        .map(|n| {
            let other = catalogue.bet(*n);
            TestedBet {
                bet: *n,
                title: other.map(|o| o.title.clone()),
                latest: other.and_then(|o| o.latest()).map(RunSide::of),
            }
        })
        .collect()
}

/// Everything that differs between two runs' manifests, in a fixed order:
/// the code (harness, experiment, git commit, Cargo.lock), the spec, the
/// profile, grid and parameters, the inputs key by key, the threads.
pub fn differences(a: &Manifest, b: &Manifest) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |what: &str, x: String, y: String| {
        if x != y {
            out.push(Difference { what: what.into(), previous: x, latest: y });
        }
    };
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    push("harness version", a.harness.clone(), b.harness.clone());
    push(
        "experiment",
        format!("{} v{}", a.experiment.kind, a.experiment.version),
        format!("{} v{}", b.experiment.kind, b.experiment.version),
    );
    push("git commit", git(&a.git), git(&b.git));
    push("Cargo.lock sha256", opt(&a.cargo_lock_sha256), opt(&b.cargo_lock_sha256));
    push("spec hash", a.spec_hash.clone(), b.spec_hash.clone());
    push(
        "ledger entry",
        a.ledger.as_ref().map(|l| format!("seq {}", l.seq)).unwrap_or_else(|| "-".into()),
        b.ledger.as_ref().map(|l| format!("seq {}", l.seq)).unwrap_or_else(|| "-".into()),
    );
    push("profile", a.profile.clone(), b.profile.clone());
    push("grid (seeds and factors)", compact(&a.grid), compact(&b.grid));
    match defaults_recorded(&a.params, &b.params) {
        Some(added) => push(
            "procedure parameters",
            compact(&a.params),
            format!("the same values, now recorded with the defaults {added}"),
        ),
        None => push("procedure parameters", compact(&a.params), compact(&b.params)),
    }
    let keys: std::collections::BTreeSet<&String> = a.inputs.keys().chain(b.inputs.keys()).collect();
    for k in keys {
        push(&format!("input `{k}`"), opt(&a.inputs.get(k).cloned()), opt(&b.inputs.get(k).cloned()));
    }
    push(
        "threads (jobs x engine)",
        format!("{} x {}", a.threads.jobs, a.threads.engine),
        format!("{} x {}", b.threads.jobs, b.threads.engine),
    );
    push("cells (planned/ok/failed)", cells(a), cells(b));
    out
}

fn git(g: &crate::results::GitInfo) -> String {
    match (&g.commit, g.dirty) {
        (Some(c), Some(true)) => format!("{c} (dirty)"),
        (Some(c), _) => c.clone(),
        (None, _) => "-".into(),
    }
}

fn cells(m: &Manifest) -> String {
    format!("{}/{}/{}", m.cells.planned, m.cells.ok, m.cells.failed)
}

/// Compact JSON of a value, for difference rows.
/// Since parameters are typed (issue 9 of the redesign), a manifest records
/// every parameter with its default filled in; an older one records the
/// spec's table as written. When the newer record only adds keys and agrees
/// on every key both have, the run used the same parameters: say so, with
/// the added defaults, instead of showing two different objects.
fn defaults_recorded(old: &serde_json::Value, new: &serde_json::Value) -> Option<String> {
    let (old, new) = (old.as_object()?, new.as_object()?);
    let agree = old.iter().all(|(k, v)| new.get(k) == Some(v));
    let added: serde_json::Map<String, serde_json::Value> =
        new.iter().filter(|(k, _)| !old.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    (agree && !added.is_empty()).then(|| compact(&added))
}

fn compact<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod defaults_tests {
    use serde_json::json;

    use super::defaults_recorded;

    #[test]
    fn a_record_that_only_adds_defaults_is_the_same_parameters() {
        let old = json!({"requests": 10000, "fee_max": 1000});
        let new = json!({"requests": 10000, "fee_max": 1000, "tamper_fraction": 0.0});
        assert_eq!(defaults_recorded(&old, &new).as_deref(), Some(r#"{"tamper_fraction":0.0}"#));
        assert_eq!(defaults_recorded(&old, &old), None, "nothing added: compared as before");
        let changed = json!({"requests": 20000, "fee_max": 1000, "tamper_fraction": 0.0});
        assert_eq!(defaults_recorded(&old, &changed), None, "a changed value is a real difference");
    }
}
