//! `bets report` end to end on a real bet (14, royalty math): the summary,
//! the pages and their HTML twins, signed confirmations and retractions,
//! determinism, tampered bundles, and a headless browser reading the HTML.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SPEC, TestRepo, code, stderr, stdout};

const PAGE: &str = "reports/bets/14-royalty-math.md";

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn read(repo: &TestRepo, rel: &str) -> String {
    std::fs::read_to_string(repo.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run_id(bundle: &Path) -> String {
    bundle.file_name().unwrap().to_string_lossy().into_owned()
}

/// Check a document's detached minisign signature against the repo's keys.
fn assert_signed(repo: &TestRepo, rel: &str) {
    let keys = bets::signing::TrustedKeys::load(&repo.path("bets/keys")).unwrap();
    let data = std::fs::read(repo.path(rel)).unwrap();
    let sig = read(repo, &format!("{rel}.minisig"));
    keys.verify(&data, &sig, rel).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
}

#[test]
fn report_regenerates_the_summary_pages_html_and_plots_from_verified_bundles() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let verdict = json(&bundle.join("verdict.json"))["verdict"].as_str().unwrap().to_string();
    let out = repo.ok(&["report"]);
    assert!(out.contains("wrote reports: SUMMARY.md, SUMMARY.json, 1 bet page(s)"), "{out}");
    let summary = read(&repo, "reports/SUMMARY.md");
    let row = summary.lines().find(|l| l.starts_with("| [14](bets/14-royalty-math.md) |")).expect("bet 14's row");
    assert!(row.contains(&format!("| **{verdict}**")), "{row}");
    assert!(row.contains(&format!("`{}` (tiny)", run_id(&bundle))), "{row}");
    assert!(row.contains("| verified ("), "{row}");
    let s = json(&repo.path("reports/SUMMARY.json"));
    assert_eq!(s["bets"][0]["verdict"], verdict.as_str());
    assert_eq!(s["bets"][0]["signature"]["status"], "verified");
    let decisive = s["bets"][0]["decisive"].as_object().expect("decisive numbers");
    assert!(!decisive.is_empty(), "{s}");
    for (name, d) in decisive {
        assert!(row.contains(&format!("{name} = ")), "{name} missing from {row}");
        assert!(d["ci95"]["low"].is_number() && d["ci95"]["high"].is_number(), "{s}");
    }
    let page = read(&repo, PAGE);
    for needle in
        ["## Hypothesis", "## Registered criteria", "## Quantities", "## Criteria outcomes", "## Cells", "## Plots"]
    {
        assert!(page.contains(needle), "{needle} missing from\n{page}");
    }
    let plots: Vec<String> = std::fs::read_dir(bundle.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for p in &plots {
        let copied = format!("reports/plots/14-royalty-math/{}/{p}", run_id(&bundle));
        assert_eq!(std::fs::read(repo.path(&copied)).unwrap(), std::fs::read(bundle.join("plots").join(p)).unwrap());
        assert!(page.contains(&format!("](../plots/14-royalty-math/{}/{p})", run_id(&bundle))), "{page}");
        assert!(repo.path(&format!("reports/html/plots/14-royalty-math/{}/{p}", run_id(&bundle))).is_file());
    }
    let html = read(&repo, "reports/html/SUMMARY.html");
    assert!(
        html.contains("<table id=\"verdict-table\">") && html.contains("href=\"bets/14-royalty-math.html\""),
        "{html}"
    );
    assert!(read(&repo, "reports/html/bets/14-royalty-math.html").contains("<table id=\"verdict-table\">"));
}

#[test]
fn a_rerun_that_holds_its_verdict_gets_a_signed_confirmation_and_reports_are_byte_stable() {
    let repo = TestRepo::new();
    repo.registered_run();
    let second = repo.run_tiny(&[]);
    repo.ok(&["report"]);
    let doc = format!("reports/confirmations/14-royalty-math--{}", run_id(&second));
    for ext in ["md", "json"] {
        assert_signed(&repo, &format!("{doc}.{ext}"));
    }
    let j = json(&repo.path(&format!("{doc}.json")));
    assert_eq!(j["kind"], "confirmation");
    assert_eq!(j["latest"]["run_id"], run_id(&second).as_str());
    assert_eq!(j["history"].as_array().unwrap().len(), 2);
    assert!(read(&repo, "reports/SUMMARY.md").contains("[Confirmation](confirmations/14-royalty-math--"));
    let before = files(&repo.path("reports"));
    repo.ok(&["report"]);
    assert_eq!(files(&repo.path("reports")), before, "the same bundles give the same bytes, signatures included");
}

#[test]
fn an_amendment_that_changes_the_verdict_gets_a_signed_retraction_with_its_reason() {
    let repo = TestRepo::new();
    let first = repo.registered_run();
    let was = json(&first.join("verdict.json"))["verdict"].as_str().unwrap().to_string();
    // Re-decide the same cells under a strict criterion that flips the verdict.
    let mut spec: toml::Table = toml::from_str(&read(&repo, SPEC)).unwrap();
    let strict = if was == "STRICT" { "violations > 0" } else { "violations >= 0" };
    spec["criteria"].as_table_mut().unwrap().insert("strict".into(), strict.into());
    std::fs::write(repo.path(SPEC), toml::to_string(&spec).unwrap()).unwrap();
    // The repo's own copy of the spec (a relative path would name the catalogue's).
    let spec_path = repo.path(SPEC).to_string_lossy().into_owned();
    repo.ok(&["amend", &spec_path, "--reason", "flip the strict criterion for the test"]);
    let out = repo.ok(&["run", &spec_path, "--profile", "tiny"]);
    let second = repo.path(out.lines().find_map(|l| l.strip_prefix("bundle: ")).expect("run prints its bundle"));
    let now = json(&second.join("verdict.json"))["verdict"].as_str().unwrap().to_string();
    assert_ne!(was, now, "the amendment changes the verdict");
    repo.ok(&["report"]);
    let doc = format!("reports/retractions/14-royalty-math--{}", run_id(&second));
    assert_signed(&repo, &format!("{doc}.md"));
    assert_signed(&repo, &format!("{doc}.json"));
    let md = read(&repo, &format!("{doc}.md"));
    assert!(md.contains(&format!("The rerun changes the verdict from {was} to {now}")), "{md}");
    assert!(md.contains("| spec hash |"), "what differs: {md}");
    let page = read(&repo, PAGE);
    assert!(page.contains("flip the strict criterion for the test"), "{page}");
    assert!(page.contains("[Retraction](../retractions/14-royalty-math--"), "{page}");
    assert!(read(&repo, "reports/SUMMARY.md").contains(": flip the strict criterion for the test |"));
}

#[test]
fn a_tampered_bundle_is_left_out_listed_and_fails_the_report_with_exit_3() {
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let v = bundle.join("verdict.json");
    let text = std::fs::read_to_string(&v).unwrap().replace("\"counted\": true", "\"counted\": true ");
    std::fs::write(&v, text).unwrap();
    let out = repo.run(&["report"]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let summary = read(&repo, "reports/SUMMARY.md");
    assert!(summary.contains("## Bundles left out"), "{summary}");
    assert!(summary.contains("SHA-256 does not match"), "{summary}");
    assert!(summary.lines().any(|l| l.starts_with("| [14]") && l.contains("| no counted run |")), "{summary}");
}

fn chromium() -> PathBuf {
    let candidates = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
    let found = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).flat_map(|d| candidates.iter().map(move |c| d.join(c))).find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no headless browser found (looked for $CHROMIUM, then {} on PATH): the HTML report must be checked \
             in a real browser; install it with `apt-get update && apt-get install -y chromium`",
            candidates.join(", ")
        )
    })
}

/// The DOM of a page after a headless browser has loaded it from disk.
fn dump_dom(page: &Path, profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running the headless browser");
    assert!(out.status.success(), "chromium failed on {}:\n{}", page.display(), stderr(&out));
    stdout(&out)
}

#[test]
fn a_headless_browser_finds_the_verdict_table_in_the_summary_and_a_bet_page() {
    let browser = chromium();
    let repo = TestRepo::new();
    let bundle = repo.registered_run();
    let verdict = json(&bundle.join("verdict.json"))["verdict"].as_str().unwrap().to_string();
    repo.ok(&["report"]);
    let profile = tempfile::tempdir().unwrap();
    let summary = std::path::absolute(repo.path("reports/html/SUMMARY.html")).unwrap();
    let dom = dump_dom(&summary, profile.path());
    let table = &dom[dom
        .find("<table id=\"verdict-table\">")
        .unwrap_or_else(|| panic!("{browser:?}: no verdict table in\n{dom}"))..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains("<tbody>") && table.contains("href=\"bets/14-royalty-math.html\""), "{table}");
    assert!(table.contains(&format!("<strong>{verdict}</strong>")), "{table}");
    let page = std::path::absolute(repo.path("reports/html/bets/14-royalty-math.html")).unwrap();
    let dom = dump_dom(&page, profile.path());
    assert!(dom.contains("<table id=\"verdict-table\">"), "{dom}");
    assert!(dom.contains(&format!("<strong>{verdict}</strong>")), "{dom}");
    assert!(dom.contains("<img src=\"../plots/14-royalty-math/"), "{dom}");
}
