//! The `programmer` user's corpus: the Rust sources of pinned crate
//! releases, obtained in a way that works on a fresh machine.
//!
//! Each release is pinned in `data.lock.toml` by name, version and the
//! SHA-256 of its `.crate` archive (the checksum Cargo.lock records). The
//! archive is taken from cargo's download cache when the build already put
//! it there; otherwise `cargo fetch` downloads it from the package registry
//! (through a throw-away manifest that depends on exactly those releases).
//! The archive is checked against the pinned digest and unpacked into our
//! own cache, renamed into place only when complete. A release that cannot
//! be had, or whose bytes differ, is a named error, never a different corpus.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::corpus::Document;
use super::error::{DataError, Result, io_err};
use crate::services::Paths;

/// One pinned crate release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedCrate {
    pub name: String,
    pub version: String,
    /// Lower-case hex SHA-256 of the `.crate` archive.
    pub sha256: String,
}

impl PinnedCrate {
    /// `name-version`, the archive's stem and its root folder.
    pub fn stem(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// Where to look for and put crate archives.
#[derive(Debug, Clone)]
pub struct CrateSource {
    /// Cargo's home (its `registry/cache/*/` holds downloaded archives).
    pub cargo_home: PathBuf,
    /// The cargo program used to download a missing archive.
    pub cargo: String,
}

impl CrateSource {
    /// Cargo's own settings: `$CARGO_HOME` (else `~/.cargo`) and `$CARGO` (else `cargo`).
    pub fn from_env() -> CrateSource {
        let cargo_home = Paths::cargo_home_from_env();
        CrateSource { cargo_home, cargo: std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()) }
    }
}

/// `.rs` files under `src/` of every pinned crate, one document each,
/// with ids `name-version/src/<path>` (sorted within each crate).
/// Unpacked releases live in `Paths::crates_in(data_dir)`.
pub fn rust_sources(data_dir: &Path, crates: &[PinnedCrate], source: &CrateSource) -> Result<Vec<Document>> {
    let root = Paths::crates_in(data_dir);
    let missing: Vec<&PinnedCrate> = crates.iter().filter(|c| !root.join(c.stem()).is_dir()).collect();
    if !missing.is_empty() {
        unpack_missing(&root, &missing, source)?;
    }
    let mut docs = Vec::new();
    for c in crates {
        let src = root.join(c.stem()).join("src");
        let mut files = Vec::new();
        super::users::walk(&src, &mut files)?;
        for f in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            let text = std::fs::read(&f).map_err(|source| DataError::UnreadableFile { path: f.clone(), source })?;
            let rel = f.strip_prefix(&src).unwrap_or(&f).to_string_lossy().replace('\\', "/");
            docs.push(Document { id: format!("{}/src/{rel}", c.stem()), text });
        }
    }
    Ok(docs)
}

fn unpack_missing(root: &Path, missing: &[&PinnedCrate], source: &CrateSource) -> Result<()> {
    let not_cached: Vec<&PinnedCrate> =
        missing.iter().copied().filter(|c| find_archive(&source.cargo_home, c).is_none()).collect();
    if !not_cached.is_empty() {
        download(&not_cached, source)?;
    }
    std::fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
    for c in missing {
        let archive = find_archive(&source.cargo_home, c).ok_or_else(|| DataError::Command {
            command: format!("cargo fetch ({})", c.stem()),
            detail: format!(
                "{}.crate is not in {} after the download; the programmer corpus needs it",
                c.stem(),
                Paths::cargo_archive_cache(&source.cargo_home).display()
            ),
        })?;
        let bytes =
            std::fs::read(&archive).map_err(|source| DataError::UnreadableFile { path: archive.clone(), source })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != c.sha256 {
            return Err(DataError::Integrity {
                what: format!("{} ({}, pinned in data.lock.toml)", archive.display(), c.stem()),
                expected: c.sha256.clone(),
                actual,
            });
        }
        unpack(root, c, &archive)?;
    }
    Ok(())
}

/// The archive in cargo's download cache, if any index folder holds it.
fn find_archive(cargo_home: &Path, c: &PinnedCrate) -> Option<PathBuf> {
    let cache = Paths::cargo_archive_cache(cargo_home);
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|index| index.path().join(format!("{}.crate", c.stem())))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Download archives with `cargo fetch` from a throw-away manifest that
/// depends on exactly these releases (for this host's platform only).
fn download(crates: &[&PinnedCrate], source: &CrateSource) -> Result<()> {
    let tmp =
        tempfile::Builder::new().prefix("bets-crates-").tempdir().map_err(io_err("creating a temporary folder"))?;
    let mut manifest = String::from(
        "# Written by bets to download the programmer corpus; never built.\n[package]\nname = \"bets-corpus-fetch\"\n\
         version = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[lib]\npath = \"lib.rs\"\n\n[dependencies]\n",
    );
    for (i, c) in crates.iter().enumerate() {
        // Aliases let two releases of one crate sit side by side.
        manifest.push_str(&format!("dep{i} = {{ package = \"{}\", version = \"={}\" }}\n", c.name, c.version));
    }
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).map_err(io_err(format!("writing {}", p.display())))
    };
    write("Cargo.toml", &manifest)?;
    write("lib.rs", "")?;
    let mut cmd = Command::new(&source.cargo);
    cmd.arg("fetch").arg("--manifest-path").arg(tmp.path().join("Cargo.toml")).env("CARGO_HOME", &source.cargo_home);
    if let Some(host) = host_triple() {
        cmd.args(["--target", &host]);
    }
    let names: Vec<String> = crates.iter().map(|c| c.stem()).collect();
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Command {
                command: format!("{} fetch", source.cargo),
                detail: "cargo was not found; it is needed once to download the programmer corpus".into(),
            }
        } else {
            io_err("running cargo fetch")(e)
        }
    })?;
    if !out.status.success() {
        return Err(DataError::Command {
            command: format!("cargo fetch (for the programmer corpus: {})", names.join(", ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// This machine's target triple, as rustc reports it.
fn host_triple() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("host: ").map(|h| h.trim().to_string()))
}

/// Unpack a verified archive into `root/<stem>/`: into a temporary folder
/// first, renamed into place only when complete.
fn unpack(root: &Path, c: &PinnedCrate, archive: &Path) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(root)
        .map_err(io_err(format!("creating a temporary folder in {}", root.display())))?;
    let out = Command::new("tar")
        .arg("xzf")
        .arg(archive)
        .arg("-C")
        .arg(tmp.path())
        .output()
        .map_err(io_err("running tar (needed to unpack the programmer corpus)"))?;
    let unpacked = tmp.path().join(c.stem());
    if !out.status.success() || !unpacked.join("src").is_dir() {
        return Err(DataError::Command {
            command: format!("tar xzf {}", archive.display()),
            detail: format!(
                "{} (expected a folder {}/src in the archive)",
                String::from_utf8_lossy(&out.stderr).trim(),
                c.stem()
            ),
        });
    }
    let dest = root.join(c.stem());
    crate::fsutil::publish_dir(&unpacked, &dest).map_err(io_err(format!("moving {} into place", dest.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(name: &str, bytes: &[u8]) -> PinnedCrate {
        PinnedCrate { name: name.into(), version: "1.2.3".into(), sha256: hex::encode(Sha256::digest(bytes)) }
    }

    /// A `.crate` archive (tar.gz) holding `name-1.2.3/src/lib.rs` and a non-Rust file.
    fn fake_archive(dir: &Path, name: &str) -> Vec<u8> {
        let stage = dir.join("stage");
        let root = stage.join(format!("{name}-1.2.3/src/inner"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(stage.join(format!("{name}-1.2.3/src/lib.rs")), "pub fn f() {}\n").unwrap();
        std::fs::write(root.join("mod.rs"), "// inner\n").unwrap();
        std::fs::write(root.join("notes.txt"), "not rust\n").unwrap();
        let tgz = dir.join("a.crate");
        let st = Command::new("tar")
            .args(["czf"])
            .arg(&tgz)
            .arg("-C")
            .arg(&stage)
            .arg(format!("{name}-1.2.3"))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(&tgz).unwrap()
    }

    fn home_with(dir: &Path, name: &str, bytes: &[u8]) -> CrateSource {
        let cache = dir.join("cargo-home/registry/cache/some-index-0123");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join(format!("{name}-1.2.3.crate")), bytes).unwrap();
        // A cargo that must not be run: the archive is already cached.
        CrateSource { cargo_home: dir.join("cargo-home"), cargo: "/nonexistent/cargo".into() }
    }

    #[test]
    fn a_cached_archive_is_verified_unpacked_and_read_as_rust_documents() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = fake_archive(dir.path(), "demo");
        let source = home_with(dir.path(), "demo", &bytes);
        let cache = dir.path().join("bets-cache/data");
        let docs = rust_sources(&cache, &[pinned("demo", &bytes)], &source).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, vec!["demo-1.2.3/src/inner/mod.rs", "demo-1.2.3/src/lib.rs"]);
        assert_eq!(docs[1].text, b"pub fn f() {}\n");
        // Once unpacked, cargo's cache is no longer needed.
        std::fs::remove_dir_all(dir.path().join("cargo-home")).unwrap();
        assert_eq!(rust_sources(&cache, &[pinned("demo", &bytes)], &source).unwrap(), docs);
    }

    #[test]
    fn an_archive_with_other_bytes_is_an_integrity_error_and_nothing_is_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = fake_archive(dir.path(), "demo");
        let source = home_with(dir.path(), "demo", &bytes);
        let cache = dir.path().join("bets-cache/data");
        let wrong = PinnedCrate { sha256: "00".repeat(32), ..pinned("demo", &bytes) };
        let err = rust_sources(&cache, &[wrong], &source).unwrap_err();
        assert!(matches!(err, DataError::Integrity { .. }), "{err}");
        assert!(err.to_string().contains("demo-1.2.3"), "{err}");
        assert!(!cache.join("crates/demo-1.2.3").exists());
    }

    #[test]
    fn a_release_that_cannot_be_downloaded_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = CrateSource { cargo_home: dir.path().join("empty-home"), cargo: "/nonexistent/cargo".into() };
        let c = PinnedCrate { name: "demo".into(), version: "1.2.3".into(), sha256: "00".repeat(32) };
        let err = rust_sources(&dir.path().join("cache/data"), &[c], &source).unwrap_err().to_string();
        assert!(err.contains("cargo") && err.contains("programmer corpus"), "{err}");
    }
}
