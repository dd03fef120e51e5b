//! What a report is made of: the catalogue as read from the specs, the
//! ledger and the verified bundles, plus the statistics of each bet's latest
//! counted run. `app::report` fills it (IO); [`super::pages`] renders it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::criteria::Verdict;
use crate::registry::EntryKind;
use crate::results::{Manifest, VerdictFile};
use crate::spec::Criteria;
use crate::stats::{Bootstrap, Interval, IntervalError};
use crate::table::{Row, Value};

/// Every bet of the catalogue, with what the report could verify.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// In catalogue order (by number).
    pub bets: Vec<BetReport>,
    /// Bundles that failed verification: never used, always listed.
    pub rejected: Vec<Rejected>,
    /// The bootstrap settings every interval was computed with.
    pub bootstrap: Bootstrap,
    /// The ledger's newest entry when the report was made (written into
    /// SUMMARY.json and every document, checked by `bets verify`).
    pub ledger_head: Option<crate::registry::LedgerHead>,
    /// What the original catalogue published (`bets/published.toml`), when
    /// the repo has that file.
    pub published: Option<super::replication::PublishedFile>,
    /// What each replication-study bet's latest counted run measured about
    /// the bets it depends on, in study order.
    pub replication: Vec<super::replication::Finding>,
}

impl Catalogue {
    /// A bet by number.
    pub fn bet(&self, number: u32) -> Option<&BetReport> {
        self.bets.iter().find(|b| b.number == number)
    }
}

/// A bundle left out of the report, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    /// Repo-relative path of the bundle.
    pub path: String,
    /// What failed, in the verifier's words.
    pub error: String,
}

/// One bet: its spec, its ledger history, its verified runs and statistics.
#[derive(Debug, Clone)]
pub struct BetReport {
    /// Catalogue number.
    pub number: u32,
    /// Kebab-case identifier.
    pub slug: String,
    /// One-line title from the spec.
    pub title: String,
    /// The catalogue section, kebab-case as in the spec.
    pub section: String,
    /// The kind of claim, kebab-case as in the spec.
    pub claim: String,
    /// The hypothesis as registered in prose.
    pub hypothesis: String,
    /// Free text for readers, from the spec.
    pub notes: Option<String>,
    /// Bets this one builds on.
    pub depends_on: Vec<u32>,
    /// Bets whose headline this one confirms or retracts.
    pub tests_headline_of: Vec<u32>,
    /// Declared negative controls: name -> bet number.
    pub controls: BTreeMap<String, u32>,
    /// The procedure's parameters as the spec writes them for its latest
    /// counted run's profile (defaults left out, `experiment` apart), so a
    /// study can name what it sets otherwise than the bet it studies.
    pub procedure: BTreeMap<String, serde_json::Value>,
    /// The spec's quantities (name -> SQL) as the file has them now.
    pub quantities: BTreeMap<String, String>,
    /// The criteria in force: the latest ledger entry's, else the spec's.
    pub criteria: Criteria,
    /// Ledger entries of this bet, oldest first (registration, amendments).
    pub registration: Vec<LedgerEvent>,
    /// Verified bundles, oldest first (run ids sort by time).
    pub runs: Vec<RunInfo>,
    /// Statistics of the latest counted run, when there is one.
    pub analysis: Option<Analysis>,
}

impl BetReport {
    /// `NN-slug`: the results folder name, also the page name.
    pub fn id(&self) -> String {
        format!("{:02}-{}", self.number, self.slug)
    }

    /// Logical path of the bet's page.
    pub fn page(&self) -> String {
        format!("bets/{}", self.id())
    }

    /// Counted runs, oldest first.
    pub fn counted(&self) -> Vec<&RunInfo> {
        self.runs.iter().filter(|r| r.verdict.counted).collect()
    }

    /// The run whose verdict the catalogue reports: the latest counted one.
    pub fn latest(&self) -> Option<&RunInfo> {
        self.runs.iter().rev().find(|r| r.verdict.counted)
    }

    /// The verdict of the latest counted run.
    pub fn verdict(&self) -> Option<Verdict> {
        self.latest().map(|r| r.verdict.record.verdict)
    }

    /// Amendments only (the registration itself left out).
    pub fn amendments(&self) -> Vec<&LedgerEvent> {
        self.registration.iter().filter(|e| e.kind == EntryKind::Amend).collect()
    }
}

/// One ledger entry of a bet, as a reader needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEvent {
    /// Position in the ledger.
    pub seq: u64,
    /// Registration or amendment.
    pub kind: EntryKind,
    /// RFC 3339 time of the entry (from the ledger, never the clock).
    pub time: String,
    /// An amendment's reason, in the amender's words.
    pub reason: Option<String>,
    /// The spec hash this entry registered.
    pub spec_hash: String,
    /// What changed from the previous entry (`diff_canonical` lines).
    pub changes: Vec<String>,
    /// The criteria this entry registered.
    pub criteria: Option<Criteria>,
}

/// A bundle that verified, with what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Repo-relative path of the bundle.
    pub dir: String,
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// The bundle's verdict file.
    pub verdict: VerdictFile,
    /// The trusted key that signed it.
    pub signer: String,
    /// File names in the bundle's `plots/`, sorted.
    pub plots: Vec<String>,
}

impl RunInfo {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.manifest.run_id
    }
}

/// Statistics of one run (see [`crate::stats`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// The run the statistics are of.
    pub run_id: String,
    /// How cells were resampled, in words (e.g. "clusters of `seed` (5)").
    pub resampling: String,
    /// Decisive quantities (named by a criterion) -> interval or why none.
    pub intervals: BTreeMap<String, Result<Option<Interval>, IntervalError>>,
    /// One per registered criterion, in decision order.
    pub criteria: Vec<CriterionStats>,
    /// Sign tests of the run's win counts.
    pub sign_tests: Vec<SignTest>,
    /// The run's cells, for its page.
    pub cells: CellsView,
}

/// Whether a criterion would come out otherwise inside the intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionStats {
    /// `catastrophic`, `strict` or `lenient`.
    pub level: String,
    /// Set when the outcome flips at an interval end: the quantity, the end
    /// and what the criterion gives there.
    pub flip: Option<(String, f64, Option<bool>)>,
    /// Why fragility could not be judged (an undecided criterion, an error).
    pub note: Option<String>,
}

impl CriterionStats {
    /// The explicit flag readers look for.
    pub fn fragile(&self) -> bool {
        self.flip.is_some()
    }
}

/// A count of wins and its exact sign test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignTest {
    /// The win-count quantity (`wins` or `*_wins`).
    pub quantity: String,
    /// Comparisons won.
    pub wins: u64,
    /// Comparisons made (ties left out).
    pub trials: u64,
    /// Exact two-sided p under "either arm wins with chance 1/2".
    pub p: f64,
}

/// The cells table of a run, for its page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellsView {
    /// Column names in table order.
    pub columns: Vec<String>,
    /// Every row, failed cells included.
    pub rows: Vec<Row>,
}

/// A win-count sign test placed in the catalogue-wide Holm family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HolmRow {
    /// The bet.
    pub bet: u32,
    /// The win-count quantity.
    pub quantity: String,
    /// Comparisons won.
    pub wins: u64,
    /// Comparisons made.
    pub trials: u64,
    /// The raw p-value.
    pub p: f64,
    /// The p-value after Holm's adjustment over the catalogue.
    pub p_holm: f64,
}

/// A quantity's value, for tables.
pub fn value_of(run: &RunInfo, quantity: &str) -> Option<Value> {
    run.verdict.record.quantities.get(quantity).and_then(|q| q.value.clone())
}
