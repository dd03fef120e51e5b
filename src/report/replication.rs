//! The replication of the original catalogue (pure): what the original
//! published for each bet we have run (`bets/published.toml`), whether our
//! verdict agrees, and what each replication-study bet (section
//! `replication`) measured about a disagreement. A study's finding is the
//! studied bet's own registered criteria decided on the study's signed
//! cells, one level of the varied cause at a time, with bootstrap
//! intervals: nothing on the replication page is written by hand.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::analysis::resampling_of;
use super::doc::{Block, Doc, Inline, Table as DocTable, code, link, one_line, rich, text};
use super::model::{BetReport, Catalogue};
use super::pages::{SUMMARY, decisive_text, fmt_value, intervals_text};
use crate::criteria::{CellCounts, CriteriaSet, Verdict, VerdictRecord, decide};
use crate::stats::{self, Bootstrap, Interval, IntervalError};
use crate::table::{self, Table, Value};

/// Version of `bets/published.toml`.
pub const PUBLISHED_FORMAT: u32 = 1;

/// Logical path of the replication page.
pub const PAGE: &str = "REPLICATION";

/// The section a study bet is in.
pub const STUDY_SECTION: &str = "replication";

/// `bets/published.toml`: the original catalogue's outcomes, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedFile {
    /// [`PUBLISHED_FORMAT`].
    pub format: u32,
    /// The original's setup, as it published it.
    pub setup: String,
    /// One entry per bet.
    #[serde(rename = "bet")]
    pub bets: Vec<Published>,
}

/// What the original published for one bet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// The bet's number (ours and the original's are the same).
    pub number: u32,
    /// The outcome in the original's words.
    pub outcome: String,
    /// Whether the original found the hypothesis held; absent where it
    /// published no pass or fail.
    #[serde(default)]
    pub held: Option<bool>,
    /// The original's verdict, where it named one.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Where the original published it.
    pub source: String,
}

/// Parse `bets/published.toml`; every problem names `file` and the entry.
pub fn parse_published(file: &str, text: &str) -> anyhow::Result<PublishedFile> {
    let p: PublishedFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    if p.format != PUBLISHED_FORMAT {
        anyhow::bail!("{file}: format = {}: this build reads format {PUBLISHED_FORMAT}", p.format);
    }
    let mut seen = BTreeSet::new();
    for b in &p.bets {
        let at = format!("{file}: bet {}", b.number);
        if !seen.insert(b.number) {
            anyhow::bail!("{at} is listed twice");
        }
        if !crate::spec::CATALOGUE_NUMBERS.contains(&b.number) {
            anyhow::bail!("{at}: expected a catalogue number 1..=99 (the original has no study bets)");
        }
        for (key, v) in [("outcome", &b.outcome), ("source", &b.source)] {
            if v.trim().is_empty() {
                anyhow::bail!("{at}: `{key}` must not be empty");
            }
        }
        if let Some(v) = b.verdict {
            let held = held_by(v).ok_or_else(|| anyhow::anyhow!("{at}: verdict = {v}: expected a decided verdict"))?;
            if b.held != Some(held) {
                anyhow::bail!("{at}: verdict = {v} needs held = {held}");
            }
        }
    }
    Ok(p)
}

/// Whether a verdict says the hypothesis held (`None` when undecided).
fn held_by(v: Verdict) -> Option<bool> {
    match v {
        Verdict::Strict | Verdict::Lenient => Some(true),
        Verdict::Fail | Verdict::Catastrophic => Some(false),
        Verdict::Inconclusive => None,
    }
}

/// Our verdict next to the original's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    /// Both found the hypothesis held, or both found it did not.
    Agree,
    /// One found it held and the other did not.
    Differ,
    /// No comparison, and why.
    Open(&'static str),
}

impl Agreement {
    /// For tables and JSON.
    pub fn word(&self) -> &'static str {
        match self {
            Agreement::Agree => "agree",
            Agreement::Differ => "differ",
            Agreement::Open(why) => why,
        }
    }
}

/// Compare our latest counted verdict with what the original published.
pub fn agreement(ours: Option<Verdict>, theirs: &Published) -> Agreement {
    let Some(ours) = ours else { return Agreement::Open("not comparable: no counted run here") };
    let Some(ours) = held_by(ours) else { return Agreement::Open("not comparable: our run is inconclusive") };
    match theirs.held {
        None => Agreement::Open("not comparable: the original published no pass or fail"),
        Some(h) if h == ours => Agreement::Agree,
        Some(_) => Agreement::Differ,
    }
}

/// What one study bet measured about one bet it depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The study bet.
    pub study: u32,
    /// The study's latest counted run.
    pub study_run: String,
    /// The bet whose verdict the study examines.
    pub target: u32,
    /// The target's verdict in its latest counted run.
    pub target_verdict: Option<Verdict>,
    /// Factors the study varies that the target's grid does not have.
    pub cause: Vec<String>,
    /// The target's criteria decided at each level of the cause.
    pub levels: Vec<Level>,
    /// Why there are no levels, when there are none.
    pub problem: Option<String>,
}

impl Finding {
    /// The levels whose verdict is not the target's.
    pub fn moved(&self) -> Vec<&Level> {
        self.levels.iter().filter(|l| Some(l.record.verdict) != self.target_verdict).collect()
    }
}

/// The target's criteria on the study's cells at one level of the cause.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// The cause's factor values at this level.
    pub values: Vec<(String, Value)>,
    /// The verdict and quantities, as `bets run` decides them.
    pub record: VerdictRecord,
    /// Bootstrap intervals of the quantities the criteria name.
    pub intervals: BTreeMap<String, Result<Option<Interval>, IntervalError>>,
}

impl Level {
    /// `factor = value, ...`.
    pub fn label(&self) -> String {
        self.values.iter().map(|(f, v)| format!("{f} = {}", fmt_value(Some(v)))).collect::<Vec<_>>().join(", ")
    }
}

/// The findings of a study bet whose latest counted run has table `cells`,
/// one per bet it depends on (`bets` is the whole catalogue).
pub fn findings(study: &BetReport, cells: &Table, bets: &[BetReport], cfg: &Bootstrap) -> Vec<Finding> {
    let Some(run) = study.latest() else { return vec![] };
    study
        .depends_on
        .iter()
        .map(|&target| {
            let mut f = Finding {
                study: study.number,
                study_run: run.id().to_string(),
                target,
                target_verdict: None,
                cause: vec![],
                levels: vec![],
                problem: None,
            };
            let Some(t) = bets.iter().find(|b| b.number == target) else {
                f.problem = Some(format!("bet {target:02} is not in the catalogue"));
                return f;
            };
            let Some(t_run) = t.latest() else {
                f.problem = Some(format!("bet {target:02} has no counted run"));
                return f;
            };
            f.target_verdict = Some(t_run.verdict.record.verdict);
            let factors: Vec<String> =
                run.manifest.grid.keys().filter(|k| !t_run.manifest.grid.contains_key(*k)).cloned().collect();
            let params = changed_params(&study.procedure, &t.procedure);
            f.cause = params.iter().map(|(k, _)| k.clone()).chain(factors.iter().cloned()).collect();
            if f.cause.is_empty() {
                f.problem = Some(format!(
                    "the study changes no parameter of bet {target:02} and varies no factor its grid lacks"
                ));
                return f;
            }
            let record = &t_run.verdict.record;
            let quantities: BTreeMap<String, String> =
                record.quantities.iter().map(|(n, q)| (n.clone(), q.sql.clone())).collect();
            let expr = |level: &str| record.criteria.iter().find(|c| c.level == level).map(|c| c.expression.as_str());
            let Some(strict) = expr("strict") else {
                f.problem = Some(format!("bet {target:02}'s run records no strict criterion"));
                return f;
            };
            let set = CriteriaSet {
                quantities: &quantities,
                strict,
                lenient: expr("lenient"),
                catastrophic: expr("catastrophic"),
            };
            let decisive: BTreeSet<&str> =
                record.criteria.iter().flat_map(|c| c.uses.keys()).map(String::as_str).collect();
            let sql: Vec<(&str, &str)> =
                decisive.iter().filter_map(|n| quantities.get(*n).map(|q| (*n, q.as_str()))).collect();
            match split(cells, &factors) {
                Err(e) => f.problem = Some(e),
                Ok(parts) => {
                    for (factor_values, part) in parts {
                        let values = params.iter().cloned().chain(factor_values).collect();
                        let ok = table::query(&[("all_cells", &part)], "SELECT * FROM all_cells WHERE status = 'ok'")
                            .unwrap_or_else(|_| part.clone());
                        let counts =
                            CellCounts { planned: part.height(), ok: ok.height(), failed: part.height() - ok.height() };
                        let mut level =
                            Level { values, record: decide(&set, &part, counts), intervals: BTreeMap::new() };
                        let stream = format!("{}/{target}/{}", f.study_run, level.label());
                        level.intervals = stats::bootstrap(&ok, &resampling_of(&ok).0, &sql, cfg, &stream);
                        f.levels.push(level);
                    }
                }
            }
            f
        })
        .collect()
}

/// The procedure parameters the study's spec writes otherwise than the
/// target's, with the study's values (`default` where it leaves one out).
fn changed_params(
    s: &BTreeMap<String, serde_json::Value>,
    t: &BTreeMap<String, serde_json::Value>,
) -> Vec<(String, Value)> {
    let keys: BTreeSet<&String> = s.keys().chain(t.keys()).collect();
    keys.into_iter()
        .filter(|k| s.get(*k) != t.get(*k))
        .map(|k| {
            let shown = s.get(k).map(|v| v.to_string()).unwrap_or_else(|| "default".into());
            (k.clone(), Value::Str(shown))
        })
        .collect()
}

type Part = (Vec<(String, Value)>, Table);

/// The table split by every combination of the `factors`' values, in
/// ascending order of each.
fn split(cells: &Table, factors: &[String]) -> Result<Vec<Part>, String> {
    let mut parts: Vec<Part> = vec![(vec![], cells.clone())];
    for factor in factors {
        let mut next = Vec::new();
        for (values, part) in parts {
            let units = part.units_by(factor).ok_or_else(|| format!("the study's cells have no column `{factor}`"))?;
            let rows = part.rows();
            for unit in units {
                let v = rows[unit[0]].get(factor).cloned().ok_or_else(|| format!("a study cell has no `{factor}`"))?;
                let sub = part.take(&unit).map_err(|e| e.to_string())?;
                let mut values = values.clone();
                values.push((factor.clone(), v));
                next.push((values, sub));
            }
        }
        parts = next;
    }
    Ok(parts)
}

fn bet_link(catalogue: &Catalogue, n: u32) -> Inline {
    match catalogue.bet(n) {
        Some(b) => link(format!("bet {n:02}"), b.page()),
        None => text(format!("bet {n:02}")),
    }
}

fn verdict_word(v: Option<Verdict>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "no counted run".into())
}

/// `name = value` for the quantities of `record` not in `skip` (the
/// decisive ones, shown with intervals); for a reference run, those no
/// criterion names.
fn others(record: &VerdictRecord, skip: &BTreeSet<&String>) -> String {
    let named: BTreeSet<&String> = record.criteria.iter().flat_map(|c| c.uses.keys()).collect();
    let parts: Vec<String> = record
        .quantities
        .iter()
        .filter(|(n, _)| !skip.contains(n) && !named.contains(n))
        .map(|(n, q)| format!("{n} = {}", fmt_value(q.value.as_ref())))
        .collect();
    if parts.is_empty() { "-".into() } else { parts.join("; ") }
}

/// The studies bearing on bet `n`.
fn bearing_on(catalogue: &Catalogue, n: u32) -> Vec<&Finding> {
    catalogue.replication.iter().filter(|f| f.target == n).collect()
}

/// One sentence: which levels moved the target's verdict, or that none did.
fn moved_sentence(f: &Finding) -> String {
    if let Some(p) = &f.problem {
        return format!("no finding: {p}");
    }
    let cause = f.cause.join(", ");
    let moved = f.moved();
    if moved.is_empty() {
        let tried: Vec<String> = f.levels.iter().map(Level::label).collect();
        return format!(
            "{cause} did not move bet {:02}'s verdict ({}) at any level tried ({})",
            f.target,
            verdict_word(f.target_verdict),
            tried.join("; ")
        );
    }
    let at: Vec<String> = moved.iter().map(|l| format!("{} at {}", l.record.verdict, l.label())).collect();
    format!(
        "{cause} moved bet {:02}'s verdict from {} to {} ({} of {} levels)",
        f.target,
        verdict_word(f.target_verdict),
        at.join("; "),
        moved.len(),
        f.levels.len()
    )
}

/// The replication page: for every bet the original published, its outcome
/// next to ours; for every one that does not plainly agree (a difference,
/// or no comparison), what the study bets measured.
pub fn page(catalogue: &Catalogue) -> Doc {
    let mut blocks = vec![Block::Para(vec![
        text(
            "Generated by `bets report` from `bets/published.toml` (what the original catalogue published) and \
             the signed runs of the replication-study bets (section `replication`); nothing here is written by \
             hand. A study's finding is the studied bet's own registered criteria, decided on the study's cells \
             one level of the varied cause at a time, with the same bootstrap intervals as everywhere in the \
             report. ",
        ),
        link("summary", SUMMARY),
    ])];
    let Some(published) = &catalogue.published else {
        blocks.push(Block::Para(vec![text("No bets/published.toml: nothing to compare with.")]));
        return Doc { path: PAGE.into(), title: "Bets: replication of the original".into(), blocks };
    };
    blocks.push(Block::Heading(2, "The original's setup".into()));
    blocks.push(Block::Para(vec![text(one_line(&published.setup))]));
    blocks.push(Block::Heading(2, "Outcomes".into()));
    blocks.push(Block::Table(outcomes_table(catalogue, published)));
    blocks.push(Block::Heading(2, "What the studies measured".into()));
    let mut any = false;
    for p in &published.bets {
        let ours = catalogue.bet(p.number).and_then(BetReport::verdict);
        if agreement(ours, p) == Agreement::Agree {
            continue;
        }
        any = true;
        blocks.push(Block::Heading(3, format!("Bet {:02}", p.number)));
        blocks.push(Block::Para(vec![
            text(format!("Original: {}. Ours: {}. ", one_line(&p.outcome), verdict_word(ours))),
            bet_link(catalogue, p.number),
            text("."),
        ]));
        let found = bearing_on(catalogue, p.number);
        if found.is_empty() {
            blocks.push(Block::Para(vec![text("No study bet with a counted run bears on this bet yet.")]));
        }
        for f in found {
            finding_blocks(catalogue, f, &mut blocks);
        }
    }
    if !any {
        blocks.push(Block::Para(vec![text("Every verdict of ours agrees with the original's.")]));
    }
    Doc { path: PAGE.into(), title: "Bets: replication of the original".into(), blocks }
}

fn finding_blocks(catalogue: &Catalogue, f: &Finding, blocks: &mut Vec<Block>) {
    let study = catalogue.bet(f.study);
    let own = study.map(decisive_text).unwrap_or_else(|| "-".into());
    blocks.push(Block::Para(vec![
        bet_link(catalogue, f.study),
        text(format!(" ({}, run ", verdict_word(study.and_then(BetReport::verdict)))),
        code(&f.study_run),
        text(format!(", by its own criteria: {own}): {}.", moved_sentence(f))),
    ]));
    if f.levels.is_empty() {
        return;
    }
    let reference = vec![
        vec![text(format!("bet {:02}'s own run", f.target))],
        vec![text(verdict_word(f.target_verdict))],
        vec![text("-")],
        vec![text(catalogue.bet(f.target).map(decisive_text).unwrap_or_else(|| "-".into()))],
        vec![text(
            catalogue
                .bet(f.target)
                .and_then(|t| t.latest())
                .map(|r| others(&r.verdict.record, &BTreeSet::new()))
                .unwrap_or_else(|| "-".into()),
        )],
    ];
    let mut rows = vec![reference];
    rows.extend(f.levels.iter().map(|l| {
        let moved = Some(l.record.verdict) != f.target_verdict;
        vec![
            vec![code(l.label())],
            vec![Inline::Strong(l.record.verdict.to_string())],
            vec![text(if moved { "yes" } else { "no" })],
            vec![text(intervals_text(&l.record, &l.intervals))],
            vec![text(others(&l.record, &l.intervals.keys().collect()))],
        ]
    }));
    blocks.push(Block::Table(DocTable {
        id: Some(format!("finding-{}-{}", f.study, f.target)),
        header: [
            "Level".to_string(),
            format!("Bet {:02}'s criteria give", f.target),
            "Moved".into(),
            "Decisive numbers [95% CI]".into(),
            "Other quantities".into(),
        ]
        .to_vec(),
        rows,
    }));
}

fn outcomes_table(catalogue: &Catalogue, published: &PublishedFile) -> DocTable {
    let rows = published
        .bets
        .iter()
        .map(|p| {
            let ours = catalogue.bet(p.number).and_then(BetReport::verdict);
            let studies: Vec<Inline> = bearing_on(catalogue, p.number)
                .iter()
                .enumerate()
                .flat_map(|(i, f)| {
                    let mut v = if i > 0 { vec![text(", ")] } else { vec![] };
                    v.push(bet_link(catalogue, f.study));
                    v
                })
                .collect();
            vec![
                vec![bet_link(catalogue, p.number)],
                rich(&one_line(&p.outcome)),
                vec![text(verdict_word(ours))],
                vec![Inline::Strong(agreement(ours, p).word().into())],
                if studies.is_empty() { vec![text("-")] } else { studies },
                vec![text(&p.source)],
            ]
        })
        .collect();
    DocTable {
        id: Some("published-outcomes".into()),
        header: ["Bet", "Original", "Ours", "Agree?", "Study bets", "Source"].map(String::from).to_vec(),
        rows,
    }
}

/// The summary's section: every published outcome next to ours.
pub fn summary_blocks(catalogue: &Catalogue) -> Vec<Block> {
    let Some(published) = &catalogue.published else { return vec![] };
    vec![
        Block::Heading(2, "Against the original catalogue".into()),
        Block::Para(vec![
            text("What the original published, next to our latest counted verdict; "),
            link("the replication page", PAGE),
            text(" says what the study bets measured about each difference."),
        ]),
        Block::Table(outcomes_table(catalogue, published)),
    ]
}

/// A bet page's section: the original's outcome and the studies on it.
pub fn bet_blocks(catalogue: &Catalogue, bet: &BetReport) -> Vec<Block> {
    let Some(p) = catalogue.published.as_ref().and_then(|f| f.bets.iter().find(|p| p.number == bet.number)) else {
        return vec![];
    };
    let mut blocks = vec![
        Block::Heading(2, "The original's outcome".into()),
        Block::Para(vec![
            text(format!(
                "{} ({}). Ours: {}; we {}. ",
                one_line(&p.outcome),
                p.source,
                verdict_word(bet.verdict()),
                match agreement(bet.verdict(), p) {
                    Agreement::Agree => "agree".to_string(),
                    Agreement::Differ => "differ".to_string(),
                    Agreement::Open(why) => format!("cannot say ({why})"),
                }
            )),
            link("Replication page", PAGE),
            text("."),
        ]),
    ];
    let found = bearing_on(catalogue, bet.number);
    if !found.is_empty() {
        blocks.push(Block::List(
            found
                .iter()
                .map(|f| vec![bet_link(catalogue, f.study), text(format!(": {}.", moved_sentence(f)))])
                .collect(),
        ));
    }
    blocks
}

/// The JSON twin of the replication page, for SUMMARY.json.
pub fn summary_json(catalogue: &Catalogue) -> serde_json::Value {
    let Some(published) = &catalogue.published else { return serde_json::Value::Null };
    let outcomes: Vec<_> = published
        .bets
        .iter()
        .map(|p| {
            let ours = catalogue.bet(p.number).and_then(BetReport::verdict);
            json!({
                "bet": p.number,
                "original": p.outcome,
                "original_held": p.held,
                "original_verdict": p.verdict,
                "ours": ours,
                "agreement": agreement(ours, p).word(),
                "source": p.source,
            })
        })
        .collect();
    let findings: Vec<_> = catalogue
        .replication
        .iter()
        .map(|f| {
            let levels: Vec<_> = f
                .levels
                .iter()
                .map(|l| {
                    let values: serde_json::Map<String, serde_json::Value> =
                        l.values.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default())).collect();
                    let intervals: serde_json::Map<String, serde_json::Value> = l
                        .intervals
                        .iter()
                        .map(|(n, r)| {
                            let v = match r {
                                Ok(Some(i)) => json!([i.low, i.high]),
                                Ok(None) => serde_json::Value::Null,
                                Err(e) => json!(e.to_string()),
                            };
                            (n.clone(), v)
                        })
                        .collect();
                    json!({
                        "level": values,
                        "verdict": l.record.verdict,
                        "moved": Some(l.record.verdict) != f.target_verdict,
                        "quantities": l.record.quantities.iter().map(|(n, q)| (n.clone(), q.value.clone())).collect::<BTreeMap<_, _>>(),
                        "intervals": intervals,
                    })
                })
                .collect();
            json!({
                "study": f.study,
                "study_run": f.study_run,
                "target": f.target,
                "target_verdict": f.target_verdict,
                "cause": f.cause,
                "levels": levels,
                "problem": f.problem,
            })
        })
        .collect();
    json!({ "outcomes": outcomes, "findings": findings })
}
