//! Rendering, documents and baselines on hand-built catalogues.

use std::collections::BTreeMap;

use super::baseline::{self, Baseline};
use super::doc::{Block, Doc, Table, code, link, relative, text};
use super::history::{DocKind, Document, headline_document, rerun_documents};
use super::model::{BetReport, Catalogue, LedgerEvent, RunInfo};
use super::pages::{fmt_f64, fmt_p};
use super::{analysis, html, markdown, pages, render};
use crate::criteria::{self, CellCounts, CriteriaSet, Verdict, VerdictRecord};
use crate::registry::EntryKind;
use crate::results::{ExperimentRef, GitInfo, Manifest, Threads, VerdictFile};
use crate::spec::Criteria;
use crate::stats::Bootstrap;
use crate::table::{self, Column, ColumnType, Row, Value};

const WINS: &str = "SELECT COUNT(*) FROM cells n JOIN cells f ON n.seed = f.seed \
                    WHERE n.arm = 'norm-only' AND f.arm = 'full' AND n.ppl < f.ppl";
const TRIALS: &str = "SELECT COUNT(*) FROM cells n JOIN cells f ON n.seed = f.seed \
                      WHERE n.arm = 'norm-only' AND f.arm = 'full'";

/// norm-only beats full on the first `wins` of 5 seeds.
fn cells(wins: i64) -> (table::Table, Vec<Row>) {
    let cols = vec![
        Column { name: "cell".into(), kind: ColumnType::Int },
        Column { name: "arm".into(), kind: ColumnType::Str },
        Column { name: "seed".into(), kind: ColumnType::Int },
        Column { name: "status".into(), kind: ColumnType::Str },
        Column { name: "ppl".into(), kind: ColumnType::Float },
    ];
    let mut rows = Vec::new();
    for seed in 0..5i64 {
        for (j, arm) in ["full", "norm-only"].into_iter().enumerate() {
            let ppl = match arm {
                "full" => 3.0,
                _ if seed < wins => 2.5,
                _ => 3.5,
            };
            rows.push(Row::from([
                ("cell".to_string(), Value::Int(seed * 2 + j as i64)),
                ("arm".to_string(), Value::from(arm)),
                ("seed".to_string(), Value::Int(seed)),
                ("status".to_string(), Value::from("ok")),
                ("ppl".to_string(), Value::Float(ppl)),
            ]));
        }
    }
    (table::Table::from_rows(&cols, &rows).unwrap(), rows)
}

fn quantities() -> BTreeMap<String, String> {
    BTreeMap::from([("wins".to_string(), WINS.to_string()), ("trials".to_string(), TRIALS.to_string())])
}

fn spec_criteria() -> Criteria {
    Criteria { strict: "wins >= 4".into(), lenient: Some("wins >= 3".into()), catastrophic: Some("wins < 1".into()) }
}

fn record(df: &table::Table) -> VerdictRecord {
    let q = quantities();
    let c = spec_criteria();
    let set = CriteriaSet {
        quantities: &q,
        strict: &c.strict,
        lenient: c.lenient.as_deref(),
        catastrophic: c.catastrophic.as_deref(),
    };
    criteria::decide(&set, df, CellCounts { planned: 10, ok: 10, failed: 0 })
}

fn manifest(bet: u32, slug: &str, run_id: &str, profile: &str, harness: &str) -> Manifest {
    Manifest {
        format: 1,
        harness: harness.into(),
        bet,
        slug: slug.into(),
        title: "t".into(),
        run_id: run_id.into(),
        profile: profile.into(),
        exploratory: false,
        spec_file: format!("bets/{bet}_{slug}.toml"),
        spec_hash: "ab".repeat(32),
        ledger: None,
        ledger_head: None,
        git: GitInfo { commit: Some("c0ffee".into()), dirty: Some(false) },
        cargo_lock_sha256: None,
        experiment: ExperimentRef { kind: "adapter-train-eval".into(), version: 1 },
        params: serde_json::json!({"steps": 100}),
        grid: BTreeMap::from([("seed".to_string(), (0..5).map(Value::Int).collect())]),
        threads: Threads { jobs: 1, engine: 1 },
        inputs: BTreeMap::from([("corpus".to_string(), "c1".to_string())]),
        shard: None,
        merged_from: vec![],
        cells: CellCounts { planned: 10, ok: 10, failed: 0 },
        cached_cells: 0,
        started: "2025-01-01T00:00:00Z".into(),
        finished: format!("{}-{}-{}T00:10:00Z", &run_id[..4], &run_id[4..6], &run_id[6..8]),
        signer: "KEY0000000000001".into(),
    }
}

fn run(bet: u32, slug: &str, run_id: &str, wins: i64, harness: &str) -> (RunInfo, table::Table) {
    let (df, _) = cells(wins);
    let rec = record(&df);
    let info = RunInfo {
        dir: format!("results/{bet:02}-{slug}/{run_id}"),
        manifest: manifest(bet, slug, run_id, "small", harness),
        verdict: VerdictFile {
            format: 1,
            bet,
            run_id: run_id.into(),
            profile: "small".into(),
            exploratory: false,
            counted: true,
            record: rec,
        },
        signer: "KEY0000000000001".into(),
        plots: vec!["ppl_by_arm.svg".into()],
    };
    (info, df)
}

fn bet(number: u32, slug: &str, runs: Vec<(RunInfo, table::Table)>) -> BetReport {
    let cfg = Bootstrap { resamples: 200, ..Bootstrap::default() };
    let analysis =
        runs.iter().rev().find(|(r, _)| r.verdict.counted).map(|(r, df)| analysis::analyse(&r.verdict, df, &cfg));
    BetReport {
        number,
        slug: slug.into(),
        title: format!("Title of {number}"),
        section: "per-user-adapters".into(),
        claim: "personalisation".into(),
        hypothesis: "Norm-only\nbeats full.".into(),
        notes: None,
        depends_on: vec![],
        tests_headline_of: vec![],
        controls: BTreeMap::new(),
        procedure: BTreeMap::from([("steps".to_string(), serde_json::json!(100))]),
        quantities: quantities(),
        criteria: spec_criteria(),
        registration: vec![],
        runs: runs.into_iter().map(|(r, _)| r).collect(),
        analysis,
    }
}

fn catalogue() -> Catalogue {
    let mut b46 = bet(46, "norm-replication", vec![run(46, "norm-replication", "20250102T000000Z-small", 4, "0.1.0")]);
    b46.controls = BTreeMap::from([("noise-floor".to_string(), 60)]);
    b46.registration = vec![
        LedgerEvent {
            seq: 0,
            kind: EntryKind::Register,
            time: "2025-01-01T09:00:00Z".into(),
            reason: None,
            spec_hash: "11".repeat(32),
            changes: vec![],
            criteria: Some(Criteria { strict: "wins >= 5".into(), lenient: None, catastrophic: None }),
        },
        LedgerEvent {
            seq: 3,
            kind: EntryKind::Amend,
            time: "2025-01-01T12:00:00Z".into(),
            reason: Some("the published threshold is 4 of 5".into()),
            spec_hash: "22".repeat(32),
            changes: vec!["changed criteria.strict: \"wins >= 5\" -> \"wins >= 4\"".into()],
            criteria: Some(spec_criteria()),
        },
    ];
    let b60 = bet(60, "noise-floor", vec![]);
    Catalogue {
        bets: vec![b46, b60],
        rejected: vec![],
        bootstrap: Bootstrap { resamples: 200, ..Bootstrap::default() },
        ledger_head: Some(crate::registry::LedgerHead {
            seq: 7,
            entry_hash: "ab".repeat(32),
            root: Some("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".into()),
        }),
        published: None,
        replication: vec![],
    }
}

#[test]
fn markdown_renders_headings_tables_links_images_and_code_exactly() {
    let doc = Doc {
        path: "bets/14-x".into(),
        title: "Bet 14: a*b".into(),
        blocks: vec![
            Block::Heading(2, "Verdict".into()),
            Block::Para(vec![text("see "), link("summary", "SUMMARY"), text(" and "), code("a | b")]),
            Block::Table(Table {
                id: Some("verdict-table".into()),
                header: vec!["A".into(), "B".into()],
                rows: vec![vec![vec![text("x|y")], vec![code("SELECT\n  1")]]],
            }),
            Block::Image { src: "plots/14-x/r/p.svg".into(), alt: "plot".into() },
            Block::Code("x < 1".into()),
        ],
    };
    let expected = "# Bet 14: a\\*b\n\n## Verdict\n\nsee [summary](../SUMMARY.md) and `a | b`\n\n| A | B |\n|---|---|\n\
                    | x\\|y | `SELECT 1` |\n\n![plot](../plots/14-x/r/p.svg)\n\n```\nx < 1\n```\n";
    assert_eq!(markdown::render(&doc), expected);
}

#[test]
fn html_escapes_text_keeps_table_ids_and_links_pages_as_html() {
    let doc = Doc {
        path: "SUMMARY".into(),
        title: "<Bets>".into(),
        blocks: vec![Block::Table(Table {
            id: Some("verdict-table".into()),
            header: vec!["Bet".into()],
            rows: vec![vec![vec![link("14 & co", "bets/14-x")]]],
        })],
    };
    let out = html::render(&doc);
    assert!(out.starts_with("<!DOCTYPE html>\n"), "{out}");
    assert!(out.contains("<title>&lt;Bets&gt;</title>"), "{out}");
    assert!(out.contains("<table id=\"verdict-table\">\n<thead><tr><th>Bet</th></tr></thead>\n<tbody>\n<tr><td><a href=\"bets/14-x.html\">14 &amp; co</a></td></tr>\n</tbody>\n</table>\n"), "{out}");
    assert!(!out.contains("<script"), "no script");
}

#[test]
fn backticks_in_prose_become_code_spans() {
    assert_eq!(super::doc::rich("run `bets report` now"), vec![text("run "), code("bets report"), text(" now")]);
    assert_eq!(super::doc::rich("`a`"), vec![code("a")]);
}

#[test]
fn links_are_relative_to_the_page_that_holds_them() {
    assert_eq!(relative("SUMMARY", "bets/46-x", "md"), "bets/46-x.md");
    assert_eq!(relative("bets/46-x", "SUMMARY", "html"), "../SUMMARY.html");
    assert_eq!(relative("bets/46-x", "bets/60-y", "md"), "60-y.md");
    assert_eq!(relative("retractions/46-x--r", "plots/46-x/r/a.svg", "md"), "../plots/46-x/r/a.svg");
}

#[test]
fn numbers_and_p_values_are_printed_for_people() {
    assert_eq!(fmt_f64(12.0), "12");
    assert_eq!(fmt_f64(0.123456), "0.1235");
    assert_eq!(fmt_f64(3.5), "3.5");
    assert_eq!(fmt_f64(1234.5678), "1235");
    assert_eq!(fmt_f64(1.5e-7), "1.500e-7");
    assert_eq!(fmt_p(0.03515625), "0.0352");
    assert_eq!(fmt_p(6.103515625e-5), "6.10e-5");
}

#[test]
fn win_counts_are_sign_tested_when_their_trials_are_declared() {
    let c = catalogue();
    let a = c.bets[0].analysis.as_ref().unwrap();
    assert_eq!(a.sign_tests.len(), 1);
    let t = &a.sign_tests[0];
    assert_eq!((t.quantity.as_str(), t.wins, t.trials), ("wins", 4, 5));
    assert!((t.p - 0.375).abs() < 1e-12, "2 * (5 + 1) / 32 = {}", t.p);
    assert!(
        a.criteria.iter().find(|s| s.level == "strict").unwrap().fragile(),
        "4 of 5 seeds: the interval reaches below 4"
    );
    assert!(!a.criteria.iter().find(|s| s.level == "catastrophic").unwrap().fragile());
    assert_eq!(a.resampling, "clusters of `seed` (5 drawn with replacement)");
}

fn verdict_with(quantities: &[(&str, i64)]) -> VerdictFile {
    let (df, _) = cells(4);
    let mut record = record(&df);
    record.quantities = quantities
        .iter()
        .map(|(n, v)| {
            (n.to_string(), criteria::QuantityValue { sql: String::new(), value: Some(Value::Int(*v)), error: None })
        })
        .collect();
    VerdictFile {
        format: 1,
        bet: 1,
        run_id: "r".into(),
        profile: "small".into(),
        exploratory: false,
        counted: true,
        record,
    }
}

#[test]
fn win_counts_find_their_trials_by_the_catalogues_names() {
    let tests = |q: &[(&str, i64)]| {
        analysis::sign_tests(&verdict_with(q)).into_iter().map(|t| (t.quantity, t.wins, t.trials)).collect::<Vec<_>>()
    };
    assert_eq!(tests(&[("wins", 12), ("pairs", 15)]), vec![("wins".into(), 12, 15)]);
    assert_eq!(tests(&[("norm_wins", 3), ("norm_losses", 2)]), vec![("norm_wins".into(), 3, 5)]);
    assert_eq!(tests(&[("real_wins", 12), ("random_wins", 3)]), vec![("random_wins vs real_wins".into(), 3, 15)]);
    assert_eq!(tests(&[("wins", 12)]), vec![], "out of how many is unknown");
    assert_eq!(tests(&[("columns_won", 3), ("users", 3)]), vec![]);
    let p = analysis::sign_tests(&verdict_with(&[("real_wins", 12), ("random_wins", 3)]))[0].p;
    assert_eq!(p, 0.03515625);
}

#[test]
fn the_summary_row_shows_verdict_numbers_controls_amendments_run_and_signature() {
    let c = catalogue();
    let rendered = render(&c);
    let md = &rendered.files["SUMMARY.md"];
    let row46 = md.lines().find(|l| l.starts_with("| [46]")).expect("a row for bet 46");
    let wins_ci = pages::fmt_f64(match &c.bets[0].analysis.as_ref().unwrap().intervals["wins"] {
        Ok(Some(i)) => i.low,
        other => panic!("{other:?}"),
    });
    assert_eq!(
        row46,
        format!(
            "| [46](bets/46-norm-replication.md) | Title of 46 | per-user-adapters | **STRICT** (fragile: strict, lenient) | \
             wins = 4 [{wins_ci}, 5] | noise-floor: [bet 60](bets/60-noise-floor.md) no counted run | \
             2025-01-01: the published threshold is 4 of 5 | `20250102T000000Z-small` (small) | verified (KEY0000000000001) |"
        )
    );
    let row60 = md.lines().find(|l| l.starts_with("| [60]")).unwrap();
    assert!(row60.contains("| no counted run | - | - | - | - | - |"), "{row60}");
    assert!(md.contains("| [46](bets/46-norm-replication.md) | `wins` | 4 / 5 | 0.3750 | 0.3750 |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&rendered.files["SUMMARY.json"]).unwrap();
    assert_eq!(json["bets"][0]["verdict"], "STRICT");
    assert_eq!(json["bets"][0]["decisive"]["wins"]["value"], 4);
    assert_eq!(json["bets"][0]["controls"][0]["verdict"], serde_json::Value::Null);
    assert_eq!(json["bets"][0]["amendments"][0]["reason"], "the published threshold is 4 of 5");
    assert_eq!(json["sign_tests_holm"][0]["p_holm"], 0.375);
    assert!(rendered.files["html/SUMMARY.html"].contains("<table id=\"verdict-table\">"));
}

#[test]
fn a_bet_page_shows_hypothesis_criteria_ledger_quantities_cells_plots_and_controls() {
    let rendered = render(&catalogue());
    let page = &rendered.files["bets/46-norm-replication.md"];
    for needle in [
        "# Bet 46: Title of 46\n",
        "## Hypothesis\n\nNorm-only beats full.\n",
        "| strict | `wins >= 4` |",
        "| 3 | amended | 2025-01-01 | `222222222222` | the published threshold is 4 of 5 | changed criteria.strict: \"wins >= 5\" -> \"wins >= 4\" |",
        "| `trials` | 5 | - | no |",
        "| strict | `wins >= 4` | holds | wins = 4 | FRAGILE: does not hold at wins = ",
        "| cell | arm | seed | status | ppl |",
        "| 9 | norm-only | 4 | ok | 3.5 |",
        "![bet 46: ppl_by_arm.svg](../plots/46-norm-replication/20250102T000000Z-small/ppl_by_arm.svg)",
        "- noise-floor: [bet 60](60-noise-floor.md) no counted run",
        "| `20250102T000000Z-small` | small | yes | STRICT | KEY0000000000001 | - |",
    ] {
        assert!(page.contains(needle), "missing {needle:?} in\n{page}");
    }
    assert_eq!(
        rendered.assets["html/plots/46-norm-replication/20250102T000000Z-small/ppl_by_arm.svg"],
        "results/46-norm-replication/20250102T000000Z-small/plots/ppl_by_arm.svg"
    );
    let empty = &rendered.files["bets/60-noise-floor.md"];
    assert!(empty.contains("No counted run: no verified, counted bundle in results/60-noise-floor/ yet."), "{empty}");
}

#[test]
fn a_held_verdict_is_confirmed_and_a_changed_one_retracted_with_what_differs() {
    let runs = vec![
        run(46, "n", "20250101T000000Z-small", 4, "0.1.0"),
        run(46, "n", "20250102T000000Z-small", 4, "0.1.0"),
        run(46, "n", "20250103T000000Z-small", 2, "0.2.0"),
    ];
    let b = bet(46, "n", runs);
    let docs = rerun_documents(&b);
    assert_eq!(docs.iter().map(|d| d.kind).collect::<Vec<_>>(), vec![DocKind::Confirmation, DocKind::Retraction]);
    assert_eq!((docs[1].previous.verdict, docs[1].latest.verdict), (Verdict::Strict, Verdict::Fail));
    assert_eq!(docs[0].differences, vec![], "same code, same inputs");
    let what: Vec<&str> = docs[1].differences.iter().map(|d| d.what.as_str()).collect();
    assert_eq!(what, vec!["harness version"]);
    assert_eq!(docs[1].history.len(), 3);
    let d = Document::Rerun(Box::new(docs[1].clone()));
    assert_eq!(d.path(), "retractions/46-n--20250103T000000Z-small");
    let json: serde_json::Value = serde_json::from_str(&d.json(None)).unwrap();
    assert_eq!(json["kind"], "retraction");
    assert_eq!(json["previous"]["verdict"], "STRICT");
    let c = Catalogue {
        bets: vec![b],
        rejected: vec![],
        bootstrap: Bootstrap::default(),
        ledger_head: None,
        published: None,
        replication: vec![],
    };
    let page = markdown::render(&pages::document_page(&d, &c));
    assert!(
        page.contains("The rerun changes the verdict from STRICT to FAIL: the earlier finding is retracted."),
        "{page}"
    );
    assert!(page.contains("| harness version | `0.1.0` | `0.2.0` |"), "{page}");
    assert!(page.contains("| `wins` | 4 | 2 |"), "{page}");
}

#[test]
fn a_single_counted_run_issues_no_document() {
    let b = bet(46, "n", vec![run(46, "n", "20250101T000000Z-small", 4, "0.1.0")]);
    assert!(rerun_documents(&b).is_empty());
}

#[test]
fn a_headline_test_reads_signed_results_and_says_which_are_missing() {
    let mut c = catalogue();
    let mut b62 = bet(62, "retraction", vec![run(62, "retraction", "20250105T000000Z-small", 2, "0.1.0")]);
    b62.tests_headline_of = vec![37, 46, 60];
    b62.runs[0].manifest.inputs.insert("bet-46".into(), "20250102T000000Z-small 5ums".into());
    c.bets.push(b62);
    let h = headline_document(&c.bets[2], &c).expect("a FAIL issues a document");
    assert_eq!(h.kind, DocKind::Retraction);
    assert_eq!(h.inputs["bet-46"], "20250102T000000Z-small 5ums", "the runs it read are on the document");
    assert_eq!(
        h.tested.iter().map(|t| (t.bet, t.latest.is_some())).collect::<Vec<_>>(),
        vec![(37, false), (46, true), (60, false)]
    );
    let rendered = render(&c);
    let page = &rendered.files["bets/62-retraction.md"];
    assert!(page.contains("| 37 | (not in the catalogue) | **no signed result** | - | - |"), "{page}");
    assert!(
        page.contains("| [46](46-norm-replication.md) | Title of 46 | **STRICT** | `20250102T000000Z-small` |"),
        "{page}"
    );
    assert!(page.contains("No signed result exists yet for bet(s) 37, 60"), "{page}");
    let doc = &rendered.files["retractions/62-retraction--headlines--20250105T000000Z-small.md"];
    assert!(
        doc.contains("Inputs the deciding run recorded")
            && doc.contains("| `bet-46` | `20250102T000000Z-small 5ums` |"),
        "{doc}"
    );
    assert!(rendered.files["SUMMARY.md"].contains("[Retraction](retractions/62-retraction--headlines--20250105T000000Z-small.md) of the headlines of bets 37, 46, 60 by bet 62"));
    // STRICT confirms; INCONCLUSIVE issues nothing.
    c.bets[2].runs[0].verdict.record.verdict = Verdict::Strict;
    assert_eq!(headline_document(&c.bets[2], &c).unwrap().kind, DocKind::Confirmation);
    c.bets[2].runs[0].verdict.record.verdict = Verdict::Inconclusive;
    assert!(headline_document(&c.bets[2], &c).is_none());
}

#[test]
fn the_same_catalogue_renders_the_same_bytes() {
    assert_eq!(render(&catalogue()), render(&catalogue()));
}

#[test]
fn holm_runs_across_every_bet_of_the_catalogue() {
    let mut c = catalogue();
    c.bets[1] = bet(60, "noise-floor", vec![run(60, "noise-floor", "20250103T000000Z-small", 5, "0.1.0")]);
    let family = analysis::holm_family(&c);
    assert_eq!(family.iter().map(|h| (h.bet, h.p)).collect::<Vec<_>>(), vec![(46, 0.375), (60, 0.0625)]);
    assert_eq!(family.iter().map(|h| h.p_holm).collect::<Vec<_>>(), vec![0.375, 0.125]);
}

fn base() -> Baseline {
    let (df, _) = cells(4);
    Baseline::of(46, "n", "tiny", "h", "adapter-train-eval v1", &record(&df), &[])
}

#[test]
fn baselines_compare_bit_exact_unless_a_tolerance_is_given() {
    let b = base();
    assert!(baseline::compare(&b, &b.clone(), &[], 0.0).is_empty());
    let mut now = b.clone();
    now.quantities.insert("ratio".into(), Some(Value::Float(0.1 + 0.2)));
    let mut then = b.clone();
    then.quantities.insert("ratio".into(), Some(Value::Float(0.3)));
    let drifts = baseline::compare(&then, &now, &["wins".into()], 0.0);
    assert_eq!(drifts.len(), 1);
    assert_eq!(
        (drifts[0].baseline.as_str(), drifts[0].now.as_str(), drifts[0].decisive),
        ("0.3", "0.30000000000000004", false)
    );
    assert!(baseline::compare(&then, &now, &[], 1e-12).is_empty(), "one ulp is within 1e-12");
}

#[test]
fn measured_quantities_and_the_verdicts_that_read_them_are_not_compared() {
    let q = quantities();
    let decide = |wins: i64, catastrophic: &str| {
        let set = CriteriaSet { quantities: &q, strict: "wins >= 4", lenient: None, catastrophic: Some(catastrophic) };
        criteria::decide(&set, &cells(wins).0, CellCounts { planned: 10, ok: 10, failed: 0 })
    };
    let of = |wins: i64, catastrophic: &str| {
        Baseline::of(46, "n", "tiny", "h", "k v1", &decide(wins, catastrophic), &["wins".to_string()])
    };
    let (then, now) = (of(4, "trials < 1"), of(2, "trials < 1"));
    assert_eq!((then.verdict, then.measured.clone()), (None, vec!["wins".to_string()]));
    assert_eq!(then.quantities.keys().collect::<Vec<_>>(), ["trials"], "the measured value is not kept");
    assert_eq!(then.criteria, BTreeMap::from([("catastrophic".to_string(), Some(false))]));
    assert!(baseline::compare(&then, &now, &[], 0.0).is_empty(), "STRICT then FAIL, on a measured quantity");
    // The outcome of a criterion that reads no measured quantity still is.
    let drifts = baseline::compare(&then, &of(4, "trials > 1"), &[], 0.0);
    let what: Vec<_> = drifts.iter().map(|d| (d.what.as_str(), d.baseline.as_str(), d.now.as_str())).collect();
    assert_eq!(what, [("criteria.catastrophic", "does not hold", "holds")]);
    // Without measured quantities a baseline is written as before.
    let plain = serde_json::to_string(&base()).unwrap();
    assert!(!plain.contains("measured") && !plain.contains("criteria") && plain.contains(r#""verdict":"STRICT""#));
    let text = serde_json::to_string(&then).unwrap();
    assert!(text.contains(r#""verdict":null"#) && text.contains(r#""measured":["wins"]"#), "{text}");
    assert_eq!(serde_json::from_str::<Baseline>(&text).unwrap(), then);
}

#[test]
fn a_changed_verdict_or_decisive_number_is_a_drift_in_the_table() {
    let b = base();
    let (df, _) = cells(2);
    let now = Baseline::of(46, "n", "tiny", "h", "adapter-train-eval v1", &record(&df), &[]);
    let drifts = baseline::compare(&b, &now, &["wins".into()], 0.0);
    let what: Vec<(&str, &str, &str, bool)> =
        drifts.iter().map(|d| (d.what.as_str(), d.baseline.as_str(), d.now.as_str(), d.decisive)).collect();
    assert_eq!(what, vec![("verdict", "STRICT", "FAIL", true), ("wins", "4", "2", true)]);
    let table = baseline::drift_table(&drifts);
    assert_eq!(
        table,
        "bet  what     baseline now  decisive\n46   verdict  STRICT   FAIL yes\n46   wins     4        2    yes\n"
    );
}

#[test]
fn a_baseline_reads_back_and_one_of_an_unknown_version_is_a_named_error() {
    use crate::error::{ExitKind, FormatError, HasExitKind, Versions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(baseline::file_name("tiny", baseline::REFERENCE_KERNELS));
    assert!(baseline::read(&path).unwrap().is_none(), "no file: no baseline");
    let b = base();
    let text = serde_json::to_string_pretty(&b).unwrap();
    std::fs::write(&path, &text).unwrap();
    assert_eq!(baseline::read(&path).unwrap(), Some(b));
    let newer = text.replacen("\"format\": 1", "\"format\": 999", 1);
    assert_ne!(newer, text);
    std::fs::write(&path, newer).unwrap();
    let err = baseline::read(&path).unwrap_err();
    match &err {
        baseline::BaselineError::Format(FormatError::UnknownVersion { what, found, supported, .. }) => {
            assert_eq!((*what, *found, *supported), ("baseline", 999, Versions(baseline::BASELINE_FORMATS)));
        }
        other => panic!("expected an unknown version, got {other:?}"),
    }
    assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    std::fs::write(&path, "{\"format\": 1}").unwrap();
    let err = baseline::read(&path).unwrap_err();
    assert!(err.to_string().contains("is not a baseline (format 1): missing field"), "{err}");
    assert_eq!(err.exit_kind(), ExitKind::Other);
}

#[test]
fn recorded_heads_name_a_report_file_of_an_unknown_version() {
    use crate::error::FormatError;
    let dir = tempfile::tempdir().unwrap();
    let head = r#""ledger_head": {"seq": 3, "entry_hash": "ab"}"#;
    std::fs::write(dir.path().join("SUMMARY.json"), format!("{{\"format\": 2, {head}}}")).unwrap();
    std::fs::create_dir_all(dir.path().join("confirmations")).unwrap();
    std::fs::create_dir_all(dir.path().join("retractions")).unwrap();
    let confirmation = dir.path().join("confirmations/46-x--r1.json");
    std::fs::write(&confirmation, format!("{{\"format\": 1, {head}}}")).unwrap();
    std::fs::write(dir.path().join("retractions/46-x--r2.json"), format!("{{\"format\": 999, {head}}}")).unwrap();
    let heads = super::recorded_heads(dir.path());
    assert_eq!(heads.len(), 3);
    assert_eq!(heads[0].as_ref().unwrap().1.seq, 3);
    assert_eq!(heads[1].as_ref().unwrap().0, confirmation);
    match &heads[2] {
        Err(FormatError::UnknownVersion { what: "report document", found: 999, .. }) => {}
        other => panic!("expected an unknown version, got {other:?}"),
    }
}

const PUBLISHED: &str = r#"
format = 1
setup = "30M parameters"

[[bet]]
number = 46
outcome = "STRICT, 15/15 wins"
held = true
verdict = "STRICT"
source = "the original's page"

[[bet]]
number = 60
outcome = "partly"
source = "the original's page"
"#;

#[test]
fn published_outcomes_parse_and_bad_entries_are_named() {
    use super::replication::parse_published;
    let p = parse_published("bets/published.toml", PUBLISHED).unwrap();
    assert_eq!((p.bets.len(), p.bets[0].verdict, p.bets[1].held), (2, Some(Verdict::Strict), None));
    let bad = |from: &str, to: &str| {
        parse_published("bets/published.toml", &PUBLISHED.replacen(from, to, 1)).unwrap_err().to_string()
    };
    assert_eq!(bad("number = 60", "number = 46"), "bets/published.toml: bet 46 is listed twice");
    assert_eq!(bad("held = true\n", ""), "bets/published.toml: bet 46: verdict = STRICT needs held = true");
    assert_eq!(bad("held = true", "held = false"), "bets/published.toml: bet 46: verdict = STRICT needs held = true");
    assert_eq!(
        bad("number = 60", "number = 101"),
        "bets/published.toml: bet 101: expected a catalogue number 1..=99 (the original has no study bets)"
    );
    assert_eq!(bad("format = 1", "format = 2"), "bets/published.toml: format = 2: this build reads format 1");
    assert_eq!(
        bad("outcome = \"partly\"", "outcome = \" \""),
        "bets/published.toml: bet 60: `outcome` must not be empty"
    );
    let e = bad("source = \"the original's page\"\n\n[[bet]]", "sauce = 1\n\n[[bet]]");
    assert!(e.starts_with("bets/published.toml: ") && e.contains("unknown field `sauce`"), "{e}");
    let e = bad("verdict = \"STRICT\"", "verdict = \"GREAT\"");
    assert!(e.contains("unknown variant `GREAT`"), "{e}");
}

#[test]
fn agreement_compares_whether_the_hypothesis_held() {
    use super::replication::{Agreement, Published, agreement};
    let theirs = |held| Published { number: 46, outcome: "o".into(), held, verdict: None, source: "s".into() };
    assert_eq!(agreement(Some(Verdict::Lenient), &theirs(Some(true))), Agreement::Agree);
    assert_eq!(agreement(Some(Verdict::Fail), &theirs(Some(false))), Agreement::Agree);
    assert_eq!(agreement(Some(Verdict::Catastrophic), &theirs(Some(true))), Agreement::Differ);
    assert_eq!(agreement(Some(Verdict::Strict), &theirs(Some(false))), Agreement::Differ);
    assert!(matches!(agreement(Some(Verdict::Inconclusive), &theirs(Some(true))), Agreement::Open(_)));
    assert!(matches!(agreement(None, &theirs(Some(true))), Agreement::Open(_)));
    assert_eq!(
        agreement(Some(Verdict::Fail), &theirs(None)).word(),
        "not comparable: the original published no pass or fail"
    );
}

/// A study of bet 46 varying `train_bytes`: norm-only wins `wins` of 5 seeds at each level.
fn study_run(levels: &[(i64, i64)]) -> (RunInfo, table::Table) {
    let mut cols = vec![Column { name: "train_bytes".into(), kind: ColumnType::Int }];
    let mut rows = Vec::new();
    for (i, &(bytes, wins)) in levels.iter().enumerate() {
        let (df, level_rows) = cells(wins);
        if i == 0 {
            cols.extend(df.columns().into_iter().map(|c| Column { name: c.name, kind: c.kind }));
        }
        for mut r in level_rows {
            r.insert("train_bytes".into(), Value::Int(bytes));
            let cell = r["cell"].as_i64().unwrap() + 10 * i as i64;
            r.insert("cell".into(), Value::Int(cell));
            rows.push(r);
        }
    }
    let df = table::Table::from_rows(&cols, &rows).unwrap();
    let (mut info, _) = run(101, "corpus-size", "20250105T000000Z-small", 0, "0.1.0");
    info.manifest.grid.insert("train_bytes".into(), levels.iter().map(|l| Value::Int(l.0)).collect());
    info.verdict.record = record(&df);
    (info, df)
}

#[test]
fn a_study_decides_the_studied_bets_criteria_per_level_of_its_cause() {
    use super::replication::{PAGE, findings, parse_published};
    let mut c = catalogue();
    c.bets[0] = bet(46, "norm-replication", vec![run(46, "norm-replication", "20250102T000000Z-small", 0, "0.1.0")]);
    let (info, df) = study_run(&[(4096, 5), (65536, 0)]);
    let mut study = bet(101, "corpus-size", vec![(info, df.clone())]);
    study.section = "replication".into();
    study.depends_on = vec![46, 99];
    let found = findings(&study, &df, &c.bets, &c.bootstrap);
    assert_eq!(found.len(), 2);
    let f = &found[0];
    assert_eq!(
        (f.target, f.target_verdict, f.cause.clone()),
        (46, Some(Verdict::Catastrophic), vec!["train_bytes".to_string()])
    );
    let verdicts: Vec<_> = f.levels.iter().map(|l| (l.label(), l.record.verdict)).collect();
    assert_eq!(
        verdicts,
        vec![("train_bytes = 4096".into(), Verdict::Strict), ("train_bytes = 65536".into(), Verdict::Catastrophic)]
    );
    assert_eq!(f.levels[0].record.quantities["wins"].value, Some(Value::Int(5)));
    assert_eq!(f.levels[0].record.cells, CellCounts { planned: 10, ok: 10, failed: 0 });
    assert_eq!(f.levels[0].intervals.keys().collect::<Vec<_>>(), vec!["wins"]);
    assert_eq!(f.moved().len(), 1);
    assert_eq!(found[1].problem.as_deref(), Some("bet 99 is not in the catalogue"));
    // The same cells give the same finding (bootstrap streams are seeded).
    assert_eq!(findings(&study, &df, &c.bets, &c.bootstrap), found);
    // A procedure parameter set otherwise is a cause too, named in every level.
    let mut other_base = study.clone();
    other_base.procedure.insert("base_mix".into(), serde_json::json!(["programmer"]));
    let f = &findings(&other_base, &df, &c.bets, &c.bootstrap)[0];
    assert_eq!(f.cause, ["base_mix", "train_bytes"]);
    assert_eq!(f.levels[0].label(), "base_mix = [\"programmer\"], train_bytes = 4096");
    other_base.runs[0].manifest.grid.remove("train_bytes");
    let mut whole = findings(&other_base, &df, &c.bets, &c.bootstrap);
    assert_eq!(whole[0].levels.iter().map(|l| l.record.cells.planned).collect::<Vec<_>>(), [20]);
    other_base.procedure = c.bets[0].procedure.clone();
    whole = findings(&other_base, &df, &c.bets, &c.bootstrap);
    assert_eq!(
        whole[0].problem.as_deref(),
        Some("the study changes no parameter of bet 46 and varies no factor its grid lacks")
    );

    c.bets.push(study);
    c.replication = found;
    c.published = Some(parse_published("bets/published.toml", PUBLISHED).unwrap());
    let rendered = render(&c);
    let page = &rendered.files[&format!("{PAGE}.md")];
    assert!(page.contains("| [bet 46](bets/46-norm-replication.md) | STRICT, 15/15 wins | CATASTROPHIC | **differ** | [bet 101](bets/101-corpus-size.md) |"), "{page}");
    assert!(page.contains("| [bet 60](bets/60-noise-floor.md) | partly | no counted run | **not comparable: no counted run here** | - |"), "{page}");
    assert!(
        page.contains(
            "train_bytes moved bet 46's verdict from CATASTROPHIC to STRICT at train_bytes = 4096 (1 of 2 levels)."
        ),
        "{page}"
    );
    assert!(page.contains("| `train_bytes = 65536` | **CATASTROPHIC** | no | wins = 0 "), "{page}");
    let summary = &rendered.files["SUMMARY.md"];
    assert!(summary.contains("## Against the original catalogue"), "{summary}");
    let bet_page = &rendered.files["bets/46-norm-replication.md"];
    assert!(
        bet_page.contains("STRICT, 15/15 wins (the original's page). Ours: CATASTROPHIC; we differ."),
        "{bet_page}"
    );
    let json: serde_json::Value = serde_json::from_str(&rendered.files["SUMMARY.json"]).unwrap();
    assert_eq!(json["replication"]["findings"][0]["levels"][0]["verdict"], "STRICT");
    assert_eq!(json["replication"]["outcomes"][0]["agreement"], "differ");
    assert_eq!(render(&c), rendered, "rendering is a pure function of the catalogue");
}

#[test]
fn each_gemm_kernel_family_has_its_own_baseline_file() {
    assert_eq!(baseline::file_name("tiny", baseline::REFERENCE_KERNELS), "baseline-tiny.json");
    assert_eq!(baseline::file_name("tiny", "x86_64-fma"), "baseline-tiny.x86_64-fma.json");
    assert_ne!(baseline::file_name("tiny", "aarch64-neon"), baseline::file_name("tiny", "x86_64-fma"));
}
