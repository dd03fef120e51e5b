//! Ed25519 signatures in the minisign format, so anyone can check a result
//! with the standard `minisign -V` tool.
//!
//! Trusted public keys live in the repository (`bets/keys/<KEYID>.pub`); the
//! secret key lives outside it (`$BETS_KEY`, else `~/.config/bets/bets.key`;
//! see [`crate::services::Paths`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::Context;
use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use crate::error::{ExitKind, classified, integrity};
use crate::tlog::checkpoint::{NoteSigner, NoteVerifier};

/// A secret key ready to sign, with its public half.
pub struct Signer {
    pub key_id: String,
    secret: SecretKey,
    public: PublicKey,
}

/// Public keys trusted to sign ledger entries and results, by key id.
#[derive(Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

/// The key id as minisign prints it: 16 upper-case hex digits.
fn key_id(keynum: &[u8]) -> String {
    let mut n = [0u8; 8];
    n.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(n))
}

/// Generate a key pair: the secret key goes to `secret_path` (mode 0600),
/// the public key into `keys_dir/<KEYID>.pub` so the repo trusts it.
pub fn keygen(secret_path: &Path, keys_dir: &Path, force: bool) -> anyhow::Result<(String, PathBuf)> {
    if secret_path.exists() && !force {
        return Err(classified(
            ExitKind::Usage,
            format!("a secret key already exists at {} (use --force to replace it)", secret_path.display()),
        ));
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair().context("generating a key pair")?;
    let id = key_id(kp.pk.keynum());
    let sk_box = kp.sk.to_box(Some("bets secret key")).context("encoding the secret key")?;
    let pk_box = kp.pk.to_box().context("encoding the public key")?;
    crate::fsutil::write_atomic(secret_path, sk_box.to_string().as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(secret_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let pub_path = crate::services::Paths::public_key_in(keys_dir, &id);
    crate::fsutil::write_atomic(&pub_path, pk_box.to_string().as_bytes())?;
    Ok((id, pub_path))
}

impl Signer {
    /// Load the secret key at `path`; a missing or unreadable key is a
    /// named error that says how to make one.
    pub fn load(path: &Path) -> anyhow::Result<Signer> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            classified(
                ExitKind::Usage,
                format!("no signing key at {} ({e}); run `bets keygen` or set BETS_KEY", path.display()),
            )
        })?;
        let sk_box = SecretKeyBox::from_string(&text).map_err(|e| {
            classified(ExitKind::Usage, format!("{} is not a minisign secret key: {e}", path.display()))
        })?;
        let secret = sk_box
            .into_unencrypted_secret_key()
            .map_err(|e| classified(ExitKind::Usage, format!("cannot use the secret key {}: {e}", path.display())))?;
        let public = PublicKey::from_secret_key(&secret).context("deriving the public key")?;
        Ok(Signer { key_id: key_id(public.keynum()), secret, public })
    }

    /// A minisign signature (the `.minisig` text) of `data`.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> anyhow::Result<String> {
        let sig = minisign::sign(Some(&self.public), &self.secret, Cursor::new(data), Some(trusted_comment), None)
            .context("signing")?;
        Ok(sig.to_string())
    }
}

/// The key name under which a bets key signs ledger checkpoints (C2SP
/// signed notes): `bets-<KEYID>`.
pub fn note_key_name(key_id: &str) -> String {
    format!("bets-{key_id}")
}

impl Signer {
    /// The same Ed25519 key as a C2SP note signer, for ledger checkpoints.
    /// The seed is the first half of minisign's 64-byte secret key, which
    /// sits after the 62-byte header of the serialised key (algorithm ids,
    /// KDF salt and limits, key number).
    pub fn note_signer(&self) -> anyhow::Result<NoteSigner> {
        let bytes = self.secret.to_bytes();
        let seed: [u8; 32] = bytes.get(62..94).and_then(|s| s.try_into().ok()).context("secret key too short")?;
        let signer = NoteSigner::from_seed(&note_key_name(&self.key_id), &seed)?;
        if signer.public_key()[..] != self.public.to_bytes()[10..42] {
            anyhow::bail!("the note key derived from {} does not match its public key", self.key_id);
        }
        Ok(signer)
    }
}

impl TrustedKeys {
    /// A checkpoint verifier per trusted key.
    pub fn note_verifiers(&self) -> Vec<NoteVerifier> {
        self.keys
            .iter()
            .filter_map(|(id, pk)| {
                let raw: [u8; 32] = pk.to_bytes().get(10..42)?.try_into().ok()?;
                NoteVerifier::new(&note_key_name(id), raw).ok()
            })
            .collect()
    }

    /// Every `*.pub` in `dir` (a missing folder trusts nobody).
    pub fn load(dir: &Path) -> anyhow::Result<TrustedKeys> {
        let mut keys = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(TrustedKeys { keys }) };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "pub")) {
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let pk = PublicKeyBox::from_string(&text)
                .and_then(|b| b.into_public_key())
                .map_err(|e| integrity(format!("{} is not a minisign public key: {e}", p.display())))?;
            keys.insert(key_id(pk.keynum()), pk);
        }
        Ok(TrustedKeys { keys })
    }

    /// Check a minisign signature of `data` against the trusted keys;
    /// returns the signer's key id. `what` names the file in errors.
    pub fn verify(&self, data: &[u8], signature: &str, what: &str) -> anyhow::Result<String> {
        let sig =
            SignatureBox::from_string(signature).map_err(|e| integrity(format!("{what}: malformed signature: {e}")))?;
        let id = key_id(sig.keynum());
        let pk = self.keys.get(&id).ok_or_else(|| {
            integrity(format!("{what}: signed by key {id}, which is not trusted (no bets/keys/{id}.pub)"))
        })?;
        minisign::verify(pk, &sig, Cursor::new(data), true, false, false)
            .map_err(|e| integrity(format!("{what}: bad signature by key {id}: {e}")))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::checkpoint::Checkpoint;

    #[test]
    fn the_note_key_is_the_minisign_key_and_signs_checkpoints_the_trusted_keys_accept() {
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = keygen(&dir.path().join("k.key"), dir.path(), false).unwrap();
        let signer = Signer::load(&dir.path().join("k.key")).unwrap();
        let note = signer.note_signer().unwrap();
        let cp = Checkpoint { origin: "bets-ledger/test".into(), size: 3, root: [7; 32], extensions: vec![] };
        let text = note.sign_checkpoint(&cp).unwrap();
        let keys = TrustedKeys::load(dir.path()).unwrap();
        let verifiers = keys.note_verifiers();
        assert_eq!(verifiers.len(), 1);
        assert_eq!(verifiers[0].name, format!("bets-{id}"));
        assert_eq!(verifiers[0].public_key, note.public_key());
        assert_eq!(verifiers[0].open_checkpoint(&text).unwrap(), cp);
    }
}
