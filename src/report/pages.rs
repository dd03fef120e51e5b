//! The pages of a report, built as [`Doc`]s from the [`Catalogue`] (pure):
//! the summary, one page per bet, one page per confirmation or retraction,
//! and the summary's JSON twin.

use std::collections::BTreeMap;

use serde_json::json;

use super::doc::{Block, Doc, Inline, Table, code, link, one_line, rich, text};
use super::history::{Document, RunSide};
use super::model::{Analysis, BetReport, Catalogue, HolmRow, RunInfo};
use crate::stats::{Interval, IntervalError};
use crate::table::Value;

/// Version of SUMMARY.json.
pub const SUMMARY_FORMAT: u32 = 2;

/// The SUMMARY.json formats this build reads (for the ledger head `bets
/// verify` checks; 2 added it).
pub const SUMMARY_FORMATS: &[u32] = &[1, 2];

/// A cells table longer than this is summarised on the page (the full
/// table is in the bundle's cells.csv).
pub const MAX_CELL_ROWS: usize = 40;

/// Logical path of the summary page.
pub const SUMMARY: &str = "SUMMARY";

/// A number for people: integers as integers, others to four significant
/// digits, very large or small ones in scientific notation. The exact
/// values are in SUMMARY.json and the bundles.
pub fn fmt_f64(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{}", x as i64);
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 9) as usize;
        let s = format!("{x:.digits$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        return s;
    }
    format!("{x:.3e}")
}

/// A value for people (see [`fmt_f64`]); `NULL` for none.
pub fn fmt_value(v: Option<&Value>) -> String {
    match v {
        None => "NULL".into(),
        Some(Value::Float(x)) => fmt_f64(*x),
        Some(v) => v.to_string(),
    }
}

/// A p-value: four decimals, or two significant digits below 1e-4.
pub fn fmt_p(p: f64) -> String {
    if p >= 1e-4 { format!("{p:.4}") } else { format!("{p:.2e}") }
}

/// The date part of an RFC 3339 time.
fn date(time: &str) -> &str {
    time.get(..10).unwrap_or(time)
}

pub(super) fn interval_text(r: Option<&Result<Option<Interval>, IntervalError>>) -> String {
    match r {
        Some(Ok(Some(i))) if i.units < 2 => format!("[{}, {}] (one replicate)", fmt_f64(i.low), fmt_f64(i.high)),
        Some(Ok(Some(i))) => format!("[{}, {}]", fmt_f64(i.low), fmt_f64(i.high)),
        Some(Ok(None)) => "NULL in every resample".into(),
        Some(Err(e)) => format!("n/a: {}", one_line(&e.to_string())),
        None => "-".into(),
    }
}

fn holds_text(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "holds",
        Some(false) => "does not hold",
        None => "undecided",
    }
}

/// The criteria that flip inside the intervals, by level.
fn fragile_levels(a: &Analysis) -> Vec<&str> {
    a.criteria.iter().filter(|c| c.fragile()).map(|c| c.level.as_str()).collect()
}

fn verdict_inlines(bet: &BetReport) -> Vec<Inline> {
    match bet.latest() {
        None => vec![text("no counted run")],
        Some(run) => {
            let mut v = vec![Inline::Strong(run.verdict.record.verdict.to_string())];
            if let Some(a) = &bet.analysis {
                let f = fragile_levels(a);
                if !f.is_empty() {
                    v.push(text(format!(" (fragile: {})", f.join(", "))));
                }
            }
            v
        }
    }
}

/// `name = value [lo, hi]` for each decisive quantity of the latest run.
pub(super) fn decisive_text(bet: &BetReport) -> String {
    let (Some(run), Some(a)) = (bet.latest(), &bet.analysis) else { return "-".into() };
    intervals_text(&run.verdict.record, &a.intervals)
}

/// `name = value [lo, hi]` for each quantity of `intervals`, its value
/// from `record`; `-` for none.
pub(super) fn intervals_text(
    record: &crate::criteria::VerdictRecord,
    intervals: &BTreeMap<String, Result<Option<Interval>, IntervalError>>,
) -> String {
    let parts: Vec<String> = intervals
        .iter()
        .map(|(n, i)| {
            let v = record.quantities.get(n).and_then(|q| q.value.as_ref());
            format!("{n} = {} {}", fmt_value(v), interval_text(Some(i)))
        })
        .collect();
    if parts.is_empty() { "-".into() } else { parts.join("; ") }
}

fn control_inlines(bet: &BetReport, catalogue: &Catalogue) -> Vec<Inline> {
    if bet.controls.is_empty() {
        return vec![text("-")];
    }
    let mut out = Vec::new();
    for (i, (name, n)) in bet.controls.iter().enumerate() {
        if i > 0 {
            out.push(text("; "));
        }
        out.push(text(format!("{name}: ")));
        out.extend(bet_ref(catalogue, *n));
    }
    out
}

/// "bet NN VERDICT" with a link to the bet's page, or a plain statement
/// that there is no such bet or no counted run.
fn bet_ref(catalogue: &Catalogue, n: u32) -> Vec<Inline> {
    match catalogue.bet(n) {
        None => vec![text(format!("bet {n:02} (not in the catalogue)"))],
        Some(b) => {
            let v = b.verdict().map(|v| v.to_string()).unwrap_or_else(|| "no counted run".into());
            vec![link(format!("bet {:02}", b.number), b.page()), text(format!(" {v}"))]
        }
    }
}

fn signature_text(run: &RunInfo) -> String {
    format!("verified ({})", run.signer)
}

/// The summary page: the verdict table, the catalogue-wide sign tests with
/// Holm's adjustment, the documents issued and the bundles left out.
pub fn summary(catalogue: &Catalogue, holm: &[HolmRow], documents: &[Document]) -> Doc {
    let mut blocks = vec![Block::Para(rich(
        "Generated by `bets report` from the verified bundles in `results/` and the ledger; nothing here is \
         written by hand. Each verdict is that of the bet's latest counted run; intervals are seeded bootstrap \
         intervals over cells (see Method).",
    ))];
    blocks.push(Block::Heading(2, "Verdicts".into()));
    let rows = catalogue
        .bets
        .iter()
        .map(|b| {
            let latest = b.latest();
            let amendments: Vec<String> = b
                .amendments()
                .iter()
                .map(|e| format!("{}: {}", date(&e.time), e.reason.clone().unwrap_or_default()))
                .collect();
            vec![
                vec![link(format!("{:02}", b.number), b.page())],
                vec![text(&b.title)],
                vec![text(&b.section)],
                verdict_inlines(b),
                vec![text(decisive_text(b))],
                control_inlines(b, catalogue),
                vec![text(if amendments.is_empty() { "-".to_string() } else { amendments.join("; ") })],
                latest
                    .map(|r| vec![code(r.id()), text(format!(" ({})", r.manifest.profile))])
                    .unwrap_or_else(|| vec![text("-")]),
                vec![text(latest.map(signature_text).unwrap_or_else(|| "-".into()))],
            ]
        })
        .collect();
    blocks.push(Block::Table(Table {
        id: Some("verdict-table".into()),
        header: [
            "Bet",
            "Title",
            "Section",
            "Verdict",
            "Decisive numbers [95% CI]",
            "Controls",
            "Amendments",
            "Run",
            "Signature",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }));
    blocks.extend(super::replication::summary_blocks(catalogue));
    blocks.push(Block::Heading(2, "Sign tests across the catalogue".into()));
    if holm.is_empty() {
        blocks.push(Block::Para(rich(
            "No latest counted run reports a win count with its number of trials (`wins` with `pairs` or \
             `trials`, `<x>_wins` with `<x>_losses`, or two opposing `<x>_wins`), so there is nothing to test.",
        )));
    } else {
        blocks.push(Block::Para(vec![text(format!(
            "Exact two-sided sign tests of each win count; Holm's adjustment over all {} tests of the catalogue \
             controls the family-wise error rate.",
            holm.len()
        ))]));
        blocks.push(Block::Table(Table {
            id: Some("sign-tests".into()),
            header: ["Bet", "Quantity", "Wins / trials", "p (raw)", "p (Holm)"].map(String::from).to_vec(),
            rows: holm
                .iter()
                .map(|h| {
                    let page = catalogue.bet(h.bet).map(|b| b.page()).unwrap_or_default();
                    vec![
                        vec![link(format!("{:02}", h.bet), page)],
                        vec![code(&h.quantity)],
                        vec![text(format!("{} / {}", h.wins, h.trials))],
                        vec![text(fmt_p(h.p))],
                        vec![text(fmt_p(h.p_holm))],
                    ]
                })
                .collect(),
        }));
    }
    blocks.push(Block::Heading(2, "Confirmations and retractions".into()));
    if documents.is_empty() {
        blocks.push(Block::Para(vec![text(
            "None: no bet has two counted runs or a counted test of another bet's headline.",
        )]));
    } else {
        blocks.push(Block::List(documents.iter().map(document_item).collect()));
    }
    if !catalogue.rejected.is_empty() {
        blocks.push(Block::Heading(2, "Bundles left out".into()));
        blocks.push(Block::Para(vec![text(
            "These bundles failed verification and are not used anywhere in this report:",
        )]));
        blocks.push(Block::List(
            catalogue.rejected.iter().map(|r| vec![code(&r.path), text(format!(": {}", one_line(&r.error)))]).collect(),
        ));
    }
    blocks.push(Block::Heading(2, "Method".into()));
    blocks.push(Block::Para(rich(&method_text(catalogue))));
    Doc { path: SUMMARY.into(), title: "Bets: summary".into(), blocks }
}

fn method_text(catalogue: &Catalogue) -> String {
    let b = &catalogue.bootstrap;
    format!(
        "Intervals: percentile bootstrap at {}% over the ok cells of the run, {} resamples, seed {} (each run \
         draws its own stream from it), resampling whole seeds when the table has a `seed` column so arms \
         compared within a seed stay paired. A criterion is fragile when moving one quantity it names to an \
         end of its interval changes its outcome. One replicate gives a degenerate interval: it says nothing \
         about spread.",
        fmt_f64(b.level * 100.0),
        b.resamples,
        b.seed
    )
}

fn document_item(d: &Document) -> Vec<Inline> {
    let what = match d {
        Document::Rerun(r) => {
            format!(" of bet {:02}: {} -> {} (run {})", r.bet, r.previous.verdict, r.latest.verdict, r.latest.run_id)
        }
        Document::Headline(h) => format!(
            " of the headlines of bets {} by bet {:02} ({}, run {})",
            h.tested.iter().map(|t| format!("{:02}", t.bet)).collect::<Vec<_>>().join(", "),
            h.bet,
            h.run.verdict,
            h.run.run_id
        ),
    };
    vec![link(d.kind().word(), d.path()), text(what)]
}

/// The page of one bet.
pub fn bet_page(catalogue: &Catalogue, bet: &BetReport, documents: &[Document]) -> Doc {
    let mut blocks = vec![Block::Para(vec![
        text(format!("Section {} · claim {} · ", bet.section, bet.claim)),
        link("summary", SUMMARY),
    ])];
    blocks.push(Block::Heading(2, "Verdict".into()));
    match bet.latest() {
        None => blocks.push(Block::Para(vec![text(format!(
            "No counted run: no verified, counted bundle in results/{}/ yet.",
            bet.id()
        ))])),
        Some(run) => {
            let r = &run.verdict.record;
            let cells = format!(
                "{} ok, {} failed, {} missing of {}",
                r.cells.ok,
                r.cells.failed,
                r.cells.missing(),
                r.cells.planned
            );
            blocks.push(Block::Table(Table {
                id: Some("verdict-table".into()),
                header: ["Verdict", "Reason", "Run", "Profile", "Cells", "Signature"].map(String::from).to_vec(),
                rows: vec![vec![
                    verdict_inlines(bet),
                    vec![text(&r.reason)],
                    vec![code(run.id())],
                    vec![text(&run.manifest.profile)],
                    vec![text(cells)],
                    vec![text(signature_text(run))],
                ]],
            }));
            blocks.push(Block::Para(vec![
                text("Bundle "),
                code(&run.dir),
                text(", spec hash "),
                code(&run.manifest.spec_hash),
                text("."),
            ]));
        }
    }
    blocks.push(Block::Heading(2, "Hypothesis".into()));
    blocks.push(Block::Para(vec![text(one_line(&bet.hypothesis))]));
    registration_blocks(bet, &mut blocks);
    if let (Some(run), Some(a)) = (bet.latest(), &bet.analysis) {
        result_blocks(run, a, &mut blocks);
        if !run.plots.is_empty() {
            blocks.push(Block::Heading(2, "Plots".into()));
            for p in &run.plots {
                blocks.push(Block::Image { src: plot_path(bet, run, p), alt: format!("bet {}: {p}", bet.number) });
            }
        }
    }
    blocks.extend(super::replication::bet_blocks(catalogue, bet));
    related_blocks(catalogue, bet, &mut blocks);
    history_blocks(bet, documents, &mut blocks);
    if let Some(n) = &bet.notes {
        blocks.push(Block::Heading(2, "Notes".into()));
        blocks.push(Block::Para(vec![text(one_line(n))]));
    }
    Doc { path: bet.page(), title: format!("Bet {:02}: {}", bet.number, bet.title), blocks }
}

/// Logical path of a plot copied out of a bundle.
pub fn plot_path(bet: &BetReport, run: &RunInfo, file: &str) -> String {
    format!("plots/{}/{}/{file}", bet.id(), run.id())
}

fn criteria_rows(c: &crate::spec::Criteria) -> Vec<Vec<Vec<Inline>>> {
    [
        ("catastrophic", c.catastrophic.as_deref()),
        ("strict", Some(c.strict.as_str())),
        ("lenient", c.lenient.as_deref()),
    ]
    .into_iter()
    .filter_map(|(level, e)| e.map(|e| vec![vec![text(level)], vec![code(one_line(e))]]))
    .collect()
}

fn registration_blocks(bet: &BetReport, blocks: &mut Vec<Block>) {
    blocks.push(Block::Heading(2, "Registered criteria".into()));
    if bet.registration.is_empty() {
        blocks.push(Block::Para(vec![text(
            "Not registered: the criteria below are the spec file's, not yet fixed in the ledger.",
        )]));
    }
    blocks.push(Block::Table(Table {
        id: None,
        header: vec!["Level".into(), "Criterion".into()],
        rows: criteria_rows(&bet.criteria),
    }));
    if !bet.registration.is_empty() {
        blocks.push(Block::Heading(3, "Ledger".into()));
        blocks.push(Block::Table(Table {
            id: Some("ledger".into()),
            header: ["Seq", "Kind", "Date", "Spec hash", "Reason", "Changes"].map(String::from).to_vec(),
            rows: bet
                .registration
                .iter()
                .map(|e| {
                    let kind = match e.kind {
                        crate::registry::EntryKind::Register => "registered",
                        crate::registry::EntryKind::Amend => "amended",
                        crate::registry::EntryKind::Runs => "runs recorded",
                    };
                    vec![
                        vec![text(e.seq.to_string())],
                        vec![text(kind)],
                        vec![text(date(&e.time))],
                        vec![code(short(&e.spec_hash))],
                        vec![text(e.reason.clone().unwrap_or_else(|| "-".into()))],
                        vec![text(if e.changes.is_empty() { "-".into() } else { e.changes.join("; ") })],
                    ]
                })
                .collect(),
        }));
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn result_blocks(run: &RunInfo, a: &Analysis, blocks: &mut Vec<Block>) {
    let r = &run.verdict.record;
    blocks.push(Block::Heading(2, "Quantities".into()));
    blocks.push(Block::Table(Table {
        id: Some("quantities".into()),
        header: ["Quantity", "Value", "95% CI", "Decisive", "SQL"].map(String::from).to_vec(),
        rows: r
            .quantities
            .iter()
            .map(|(n, q)| {
                let decisive = a.intervals.contains_key(n);
                let value = match &q.error {
                    Some(e) => format!("error: {}", one_line(e)),
                    None => fmt_value(q.value.as_ref()),
                };
                vec![
                    vec![code(n)],
                    vec![text(value)],
                    vec![text(if decisive { interval_text(a.intervals.get(n)) } else { "-".into() })],
                    vec![text(if decisive { "yes" } else { "no" })],
                    vec![code(one_line(&q.sql))],
                ]
            })
            .collect(),
    }));
    blocks.push(Block::Heading(2, "Criteria outcomes".into()));
    let stats: BTreeMap<&str, &super::model::CriterionStats> =
        a.criteria.iter().map(|c| (c.level.as_str(), c)).collect();
    blocks.push(Block::Table(Table {
        id: Some("criteria".into()),
        header: ["Level", "Criterion", "Outcome", "Values", "Fragile"].map(String::from).to_vec(),
        rows: r
            .criteria
            .iter()
            .map(|c| {
                let uses: Vec<String> =
                    c.uses.iter().map(|(k, v)| format!("{k} = {}", fmt_value(v.as_ref()))).collect();
                let fragile = match stats.get(c.level.as_str()) {
                    Some(s) => match (&s.flip, &s.note) {
                        (Some((q, at, holds)), _) => {
                            format!("FRAGILE: {} at {q} = {}", holds_text(*holds), fmt_f64(*at))
                        }
                        (None, Some(n)) => format!("n/a: {}", one_line(n)),
                        (None, None) => "no".into(),
                    },
                    None => "-".into(),
                };
                vec![
                    vec![text(&c.level)],
                    vec![code(one_line(&c.expression))],
                    vec![text(holds_text(c.holds))],
                    vec![text(uses.join(", "))],
                    vec![text(fragile)],
                ]
            })
            .collect(),
    }));
    blocks.push(Block::Para(rich(&format!(
        "Intervals: {} resamples of {}; seeded, so they regenerate exactly.",
        a.intervals.values().find_map(|i| i.as_ref().ok().and_then(|i| i.as_ref()).map(|i| i.resamples)).unwrap_or(0),
        a.resampling
    ))));
    if !a.sign_tests.is_empty() {
        blocks.push(Block::Heading(2, "Sign tests".into()));
        blocks.push(Block::Table(Table {
            id: None,
            header: ["Quantity", "Wins / trials", "p (two-sided, exact)"].map(String::from).to_vec(),
            rows: a
                .sign_tests
                .iter()
                .map(|t| {
                    vec![
                        vec![code(&t.quantity)],
                        vec![text(format!("{} / {}", t.wins, t.trials))],
                        vec![text(fmt_p(t.p))],
                    ]
                })
                .collect(),
        }));
    }
    blocks.push(Block::Heading(2, "Cells".into()));
    cells_blocks(a, blocks);
}

fn cells_blocks(a: &Analysis, blocks: &mut Vec<Block>) {
    let v = &a.cells;
    if v.rows.len() <= MAX_CELL_ROWS {
        blocks.push(Block::Table(Table {
            id: Some("cells".into()),
            header: v.columns.clone(),
            rows: v
                .rows
                .iter()
                .map(|r| v.columns.iter().map(|c| vec![text(fmt_value(r.get(c)).replace("NULL", ""))]).collect())
                .collect(),
        }));
        return;
    }
    let ok = v.rows.iter().filter(|r| r.get("status").and_then(Value::as_str) == Some("ok")).count();
    blocks.push(Block::Para(vec![text(format!(
        "{} cells ({} ok, {} not): too many to list; per numeric column over the ok cells (the full table is \
         the bundle's cells.csv):",
        v.rows.len(),
        ok,
        v.rows.len() - ok
    ))]));
    let mut rows = Vec::new();
    for c in v.columns.iter().filter(|c| c.as_str() != "cell") {
        let mut xs: Vec<f64> = v
            .rows
            .iter()
            .filter(|r| r.get("status").and_then(Value::as_str) == Some("ok"))
            .filter_map(|r| r.get(c).and_then(Value::as_f64))
            .collect();
        if xs.is_empty() {
            continue;
        }
        xs.sort_by(f64::total_cmp);
        rows.push(vec![
            vec![code(c)],
            vec![text(xs.len().to_string())],
            vec![text(fmt_f64(xs[0]))],
            vec![text(fmt_f64(crate::stats::percentile(&xs, 0.5)))],
            vec![text(fmt_f64(xs[xs.len() - 1]))],
        ]);
    }
    blocks.push(Block::Table(Table {
        id: Some("cells".into()),
        header: ["Column", "Cells", "Min", "Median", "Max"].map(String::from).to_vec(),
        rows,
    }));
}

fn related_blocks(catalogue: &Catalogue, bet: &BetReport, blocks: &mut Vec<Block>) {
    if !bet.controls.is_empty() {
        blocks.push(Block::Heading(2, "Controls".into()));
        blocks.push(Block::List(
            bet.controls
                .iter()
                .map(|(name, n)| {
                    let mut item = vec![text(format!("{name}: "))];
                    item.extend(bet_ref(catalogue, *n));
                    item
                })
                .collect(),
        ));
    }
    if !bet.depends_on.is_empty() {
        blocks.push(Block::Heading(2, "Depends on".into()));
        blocks.push(Block::List(bet.depends_on.iter().map(|n| bet_ref(catalogue, *n)).collect()));
    }
    if !bet.tests_headline_of.is_empty() {
        blocks.push(Block::Heading(2, "Headlines tested".into()));
        blocks.push(Block::Para(vec![text(
            "This bet tests the headline of the bets below, from their signed results (not new runs of them).",
        )]));
        let tested = super::history::tested_bets(bet, catalogue);
        blocks.push(Block::Table(Table {
            id: Some("headlines".into()),
            header: ["Bet", "Title", "Latest signed verdict", "Run", "Signer"].map(String::from).to_vec(),
            rows: tested
                .iter()
                .map(|t| {
                    let page =
                        format!("bets/{:02}-{}", t.bet, catalogue.bet(t.bet).map(|b| b.slug.as_str()).unwrap_or(""));
                    let first = if catalogue.bet(t.bet).is_some() {
                        link(format!("{:02}", t.bet), page)
                    } else {
                        text(format!("{:02}", t.bet))
                    };
                    match &t.latest {
                        None => vec![
                            vec![first],
                            vec![text(t.title.clone().unwrap_or_else(|| "(not in the catalogue)".into()))],
                            vec![Inline::Strong("no signed result".into())],
                            vec![text("-")],
                            vec![text("-")],
                        ],
                        Some(s) => vec![
                            vec![first],
                            vec![text(t.title.clone().unwrap_or_default())],
                            vec![Inline::Strong(s.verdict.to_string())],
                            vec![code(&s.run_id)],
                            vec![text(&s.signer)],
                        ],
                    }
                })
                .collect(),
        }));
        let missing: Vec<String> =
            tested.iter().filter(|t| t.latest.is_none()).map(|t| format!("{:02}", t.bet)).collect();
        if !missing.is_empty() {
            blocks.push(Block::Para(vec![text(format!(
                "No signed result exists yet for bet(s) {}: their headline cannot be confirmed or retracted from \
                 evidence, and this page does not pretend otherwise.",
                missing.join(", ")
            ))]));
        }
    }
}

fn history_blocks(bet: &BetReport, documents: &[Document], blocks: &mut Vec<Block>) {
    if bet.runs.is_empty() {
        return;
    }
    blocks.push(Block::Heading(2, "Run history".into()));
    let docs: BTreeMap<&str, &Document> =
        documents.iter().filter(|d| d.bet() == bet.number).map(|d| (d.run_id(), d)).collect();
    blocks.push(Block::Table(Table {
        id: Some("history".into()),
        header: ["Run", "Profile", "Counted", "Verdict", "Signer", "Document"].map(String::from).to_vec(),
        rows: bet
            .runs
            .iter()
            .map(|r| {
                let counted = if r.verdict.counted {
                    "yes"
                } else if r.verdict.exploratory {
                    "no (exploratory)"
                } else {
                    "no (shard)"
                };
                vec![
                    vec![code(r.id())],
                    vec![text(&r.manifest.profile)],
                    vec![text(counted)],
                    vec![text(r.verdict.record.verdict.to_string())],
                    vec![text(&r.signer)],
                    docs.get(r.id()).map(|d| vec![link(d.kind().word(), d.path())]).unwrap_or_else(|| vec![text("-")]),
                ]
            })
            .collect(),
    }));
}

fn side_rows(label: &str, s: &RunSide) -> Vec<Vec<Inline>> {
    vec![
        vec![text(label)],
        vec![code(&s.run_id)],
        vec![text(&s.profile)],
        vec![Inline::Strong(s.verdict.to_string())],
        vec![text(&s.reason)],
        vec![text(&s.signer)],
        vec![text(&s.finished)],
    ]
}

const SIDE_HEADER: [&str; 7] = ["", "Run", "Profile", "Verdict", "Reason", "Signer", "Finished"];

/// The page of a confirmation or retraction (its Markdown is what is
/// signed, next to the JSON).
pub fn document_page(d: &Document, catalogue: &Catalogue) -> Doc {
    let page_of = |n: u32| catalogue.bet(n).map(|b| b.page()).unwrap_or_else(|| SUMMARY.into());
    let mut blocks = Vec::new();
    match d {
        Document::Rerun(r) => {
            let says = if r.previous.verdict == r.latest.verdict {
                format!("The rerun confirms the verdict {}.", r.latest.verdict)
            } else {
                format!(
                    "The rerun changes the verdict from {} to {}: the earlier finding is retracted.",
                    r.previous.verdict, r.latest.verdict
                )
            };
            blocks.push(Block::Para(vec![
                text(says + " "),
                link(format!("Bet {:02}", r.bet), page_of(r.bet)),
                text("."),
            ]));
            blocks.push(Block::Heading(2, "Both runs".into()));
            blocks.push(Block::Table(Table {
                id: Some("verdict-table".into()),
                header: SIDE_HEADER.map(String::from).to_vec(),
                rows: vec![side_rows("previous", &r.previous), side_rows("latest", &r.latest)],
            }));
            blocks.push(Block::Heading(2, "Quantities".into()));
            let names: std::collections::BTreeSet<&String> =
                r.previous.quantities.keys().chain(r.latest.quantities.keys()).collect();
            blocks.push(Block::Table(Table {
                id: None,
                header: ["Quantity", "Previous", "Latest"].map(String::from).to_vec(),
                rows: names
                    .into_iter()
                    .map(|n| {
                        let p = r.previous.quantities.get(n).and_then(|v| v.as_ref());
                        let l = r.latest.quantities.get(n).and_then(|v| v.as_ref());
                        vec![vec![code(n)], vec![text(fmt_value(p))], vec![text(fmt_value(l))]]
                    })
                    .collect(),
            }));
            blocks.push(Block::Heading(2, "What differs".into()));
            if r.differences.is_empty() {
                blocks.push(Block::Para(vec![text("Nothing recorded in the manifests differs.")]));
            } else {
                blocks.push(Block::Table(Table {
                    id: Some("differences".into()),
                    header: ["What", "Previous", "Latest"].map(String::from).to_vec(),
                    rows: r
                        .differences
                        .iter()
                        .map(|x| vec![vec![text(&x.what)], vec![code(&x.previous)], vec![code(&x.latest)]])
                        .collect(),
                }));
            }
            blocks.push(Block::Heading(2, "Verdict history".into()));
            blocks.push(Block::Table(Table {
                id: Some("history".into()),
                header: ["Run", "Profile", "Counted", "Verdict"].map(String::from).to_vec(),
                rows: r
                    .history
                    .iter()
                    .map(|h| {
                        vec![
                            vec![code(&h.run_id)],
                            vec![text(&h.profile)],
                            vec![text(if h.counted { "yes" } else { "no" })],
                            vec![text(h.verdict.to_string())],
                        ]
                    })
                    .collect(),
            }));
        }
        Document::Headline(h) => {
            let tested = h.tested.iter().map(|t| format!("{:02}", t.bet)).collect::<Vec<_>>().join(", ");
            let says = match d.kind() {
                super::history::DocKind::Confirmation => {
                    format!("Bet {:02} ({}) confirms the headlines of bets {tested}.", h.bet, h.run.verdict)
                }
                super::history::DocKind::Retraction => {
                    format!("Bet {:02} ({}) retracts the headlines of bets {tested}.", h.bet, h.run.verdict)
                }
            };
            blocks.push(Block::Para(vec![
                text(says + " "),
                link(format!("Bet {:02}", h.bet), page_of(h.bet)),
                text("."),
            ]));
            blocks.push(Block::Heading(2, "The deciding run".into()));
            blocks.push(Block::Table(Table {
                id: Some("verdict-table".into()),
                header: SIDE_HEADER.map(String::from).to_vec(),
                rows: vec![side_rows(&format!("bet {:02}", h.bet), &h.run)],
            }));
            if !h.inputs.is_empty() {
                blocks.push(Block::Heading(2, "Inputs the deciding run recorded".into()));
                blocks.push(Block::Table(Table {
                    id: Some("inputs".into()),
                    header: ["Input", "Value"].map(String::from).to_vec(),
                    rows: h.inputs.iter().map(|(k, v)| vec![vec![code(k)], vec![code(v)]]).collect(),
                }));
            }
            blocks.push(Block::Heading(2, "Headlines it tests: their latest signed results".into()));
            blocks.push(Block::Table(Table {
                id: Some("headlines".into()),
                header: SIDE_HEADER.map(String::from).to_vec(),
                rows: h
                    .tested
                    .iter()
                    .map(|t| match &t.latest {
                        Some(s) => side_rows(&format!("bet {:02}", t.bet), s),
                        None => {
                            let mut row = vec![
                                vec![text(format!("bet {:02}", t.bet))],
                                vec![Inline::Strong("no signed result".into())],
                            ];
                            row.extend((0..5).map(|_| vec![text("-")]));
                            row
                        }
                    })
                    .collect(),
            }));
        }
    }
    let title = match d {
        Document::Rerun(r) => format!("{} of bet {:02}: {}", d.kind().word(), r.bet, r.title),
        Document::Headline(h) => format!("{} of headlines by bet {:02}: {}", d.kind().word(), h.bet, h.title),
    };
    Doc { path: d.path(), title, blocks }
}

/// SUMMARY.json: the summary's facts with exact numbers, for scripts.
pub fn summary_json(catalogue: &Catalogue, holm: &[HolmRow], documents: &[Document]) -> serde_json::Value {
    let bets: Vec<serde_json::Value> = catalogue
        .bets
        .iter()
        .map(|b| {
            let latest = b.latest();
            let decisive: BTreeMap<&String, serde_json::Value> = b
                .analysis
                .as_ref()
                .map(|a| {
                    a.intervals
                        .iter()
                        .map(|(n, i)| {
                            let value = latest.and_then(|r| super::model::value_of(r, n));
                            let interval = match i {
                                Ok(Some(i)) => {
                                    json!({"low": i.low, "high": i.high, "units": i.units, "defined": i.defined})
                                }
                                Ok(None) => json!(null),
                                Err(e) => json!({"error": e.to_string()}),
                            };
                            (n, json!({"value": value, "ci95": interval}))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let fragile: Vec<&str> = b.analysis.as_ref().map(fragile_levels).unwrap_or_default();
            json!({
                "number": b.number,
                "slug": b.slug,
                "title": b.title,
                "section": b.section,
                "claim": b.claim,
                "page": format!("{}.md", b.page()),
                "verdict": latest.map(|r| r.verdict.record.verdict),
                "reason": latest.map(|r| r.verdict.record.reason.clone()),
                "run_id": latest.map(|r| r.id()),
                "profile": latest.map(|r| r.manifest.profile.clone()),
                "bundle": latest.map(|r| r.dir.clone()),
                "signature": latest.map(|r| json!({"status": "verified", "signer": r.signer})),
                "decisive": decisive,
                "fragile_criteria": fragile,
                "sign_tests": b.analysis.as_ref().map(|a| a.sign_tests.clone()).unwrap_or_default(),
                "controls": b.controls.iter().map(|(name, n)| json!({
                    "name": name,
                    "bet": n,
                    "verdict": catalogue.bet(*n).and_then(|c| c.verdict()),
                    "run_id": catalogue.bet(*n).and_then(|c| c.latest()).map(|r| r.id()),
                })).collect::<Vec<_>>(),
                "amendments": b.amendments().iter().map(|e| json!({
                    "seq": e.seq, "time": e.time, "reason": e.reason, "spec_hash": e.spec_hash, "changes": e.changes,
                })).collect::<Vec<_>>(),
                "depends_on": b.depends_on,
                "tests_headline_of": b.tests_headline_of,
                "runs": b.runs.iter().map(|r| json!({
                    "run_id": r.id(), "profile": r.manifest.profile, "counted": r.verdict.counted,
                    "verdict": r.verdict.record.verdict, "signer": r.signer,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "format": SUMMARY_FORMAT,
        "ledger_head": catalogue.ledger_head,
        "bootstrap": catalogue.bootstrap,
        "bets": bets,
        "sign_tests_holm": holm,
        "documents": documents.iter().map(|d| json!({
            "kind": d.kind(), "bet": d.bet(), "run_id": d.run_id(), "path": format!("{}.md", d.path()),
        })).collect::<Vec<_>>(),
        "rejected_bundles": catalogue.rejected,
        "replication": super::replication::summary_json(catalogue),
    })
}
