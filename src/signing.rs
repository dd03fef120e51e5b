//! Ed25519 signatures in the minisign format, so anyone can check a result
//! with the standard `minisign -V` tool.
//!
//! Trusted public keys live in the repository (`bets/keys/<KEYID>.pub`); the
//! secret key lives outside it (`$BETS_KEY`, else `~/.config/bets/bets.key`;
//! see [`crate::services::Paths`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::error::{ExitKind, HasExitKind};
use crate::fsutil::FsError;
use crate::tlog::checkpoint::{CheckpointError, NoteSigner, NoteVerifier};

/// What making, loading or using keys and signatures can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// `keygen` without `--force` over an existing secret key.
    #[error("a secret key already exists at {} (use --force to replace it)", path.display())]
    KeyExists { path: PathBuf },
    /// No readable secret key where one is expected.
    #[error("no signing key at {} ({error}); run `bets keygen` or set BETS_KEY", path.display())]
    NoKey { path: PathBuf, error: std::io::Error },
    /// The secret key file is not a minisign secret key.
    #[error("{} is not a minisign secret key: {detail}", path.display())]
    NotASecretKey { path: PathBuf, detail: String },
    /// A minisign secret key that cannot be used (encrypted, damaged).
    #[error("cannot use the secret key {}: {detail}", path.display())]
    UnusableKey { path: PathBuf, detail: String },
    /// A trusted key file that is not a minisign public key.
    #[error("{} is not a minisign public key: {detail}", path.display())]
    NotAPublicKey { path: PathBuf, detail: String },
    /// A trusted key file that cannot be read.
    #[error("reading {}: {error}", path.display())]
    ReadKey { path: PathBuf, error: std::io::Error },
    /// A minisign operation failed (`what`: generating, encoding, signing).
    #[error("{what}: {detail}")]
    Minisign { what: &'static str, detail: String },
    /// The secret key's bytes are too short to hold an Ed25519 seed.
    #[error("secret key too short")]
    SecretTooShort,
    /// The note (checkpoint) form of a key could not be built.
    #[error(transparent)]
    Note(#[from] CheckpointError),
    /// The Ed25519 key derived from a secret key (for notes, DSSE) is not its public key.
    #[error("the Ed25519 key derived from the secret key {key_id} does not match its public key")]
    NoteKeyMismatch { key_id: String },
    /// A signature (`what` names the file) that is not minisign's format.
    #[error("{what}: malformed signature: {detail}")]
    MalformedSignature { what: String, detail: String },
    /// A signature by a key that is not in `bets/keys/`.
    #[error("{what}: signed by key {key_id}, which is not trusted (no bets/keys/{key_id}.pub)")]
    UntrustedKey { what: String, key_id: String },
    /// A signature that does not verify under its (trusted) key.
    #[error("{what}: bad signature by key {key_id}: {detail}")]
    BadSignature { what: String, key_id: String, detail: String },
    /// Setting a secret key's permissions failed.
    #[error("setting the permissions of {}: {error}", path.display())]
    Permissions { path: PathBuf, error: std::io::Error },
    /// Writing a key file failed.
    #[error(transparent)]
    Write(#[from] FsError),
}

impl HasExitKind for SigningError {
    fn exit_kind(&self) -> ExitKind {
        use SigningError::*;
        match self {
            KeyExists { .. } | NoKey { .. } | NotASecretKey { .. } | UnusableKey { .. } => ExitKind::Usage,
            NotAPublicKey { .. } | MalformedSignature { .. } | UntrustedKey { .. } | BadSignature { .. } => {
                ExitKind::Integrity
            }
            ReadKey { .. }
            | Minisign { .. }
            | SecretTooShort
            | Note(_)
            | NoteKeyMismatch { .. }
            | Permissions { .. }
            | Write(_) => ExitKind::Other,
        }
    }
}

/// The signing module's result type.
pub type Result<T> = std::result::Result<T, SigningError>;

fn minisign_err(what: &'static str) -> impl FnOnce(minisign::PError) -> SigningError {
    move |e| SigningError::Minisign { what, detail: e.to_string() }
}

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
pub fn keygen(secret_path: &Path, keys_dir: &Path, force: bool) -> Result<(String, PathBuf)> {
    if secret_path.exists() && !force {
        return Err(SigningError::KeyExists { path: secret_path.to_path_buf() });
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(minisign_err("generating a key pair"))?;
    let id = key_id(kp.pk.keynum());
    let sk_box = kp.sk.to_box(Some("bets secret key")).map_err(minisign_err("encoding the secret key"))?;
    let pk_box = kp.pk.to_box().map_err(minisign_err("encoding the public key"))?;
    crate::fsutil::write_atomic(secret_path, sk_box.to_string().as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(secret_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| SigningError::Permissions { path: secret_path.to_path_buf(), error })?;
    }
    let pub_path = crate::services::Paths::public_key_in(keys_dir, &id);
    crate::fsutil::write_atomic(&pub_path, pk_box.to_string().as_bytes())?;
    Ok((id, pub_path))
}

impl Signer {
    /// Load the secret key at `path`; a missing or unreadable key is a
    /// named error that says how to make one.
    pub fn load(path: &Path) -> Result<Signer> {
        let text =
            std::fs::read_to_string(path).map_err(|error| SigningError::NoKey { path: path.to_path_buf(), error })?;
        let sk_box = SecretKeyBox::from_string(&text)
            .map_err(|e| SigningError::NotASecretKey { path: path.to_path_buf(), detail: e.to_string() })?;
        let secret = sk_box
            .into_unencrypted_secret_key()
            .map_err(|e| SigningError::UnusableKey { path: path.to_path_buf(), detail: e.to_string() })?;
        let public = PublicKey::from_secret_key(&secret).map_err(minisign_err("deriving the public key"))?;
        Ok(Signer { key_id: key_id(public.keynum()), secret, public })
    }

    /// Write this key's public half into `keys_dir/<KEYID>.pub` unless it is
    /// there; true when it was written (a key made in another clone).
    pub fn ensure_public_in(&self, keys_dir: &Path) -> Result<bool> {
        let pub_path = crate::services::Paths::public_key_in(keys_dir, &self.key_id);
        if pub_path.exists() {
            return Ok(false);
        }
        let pk_box = self.public.to_box().map_err(minisign_err("encoding the public key"))?;
        crate::fsutil::write_atomic(&pub_path, pk_box.to_string().as_bytes())?;
        Ok(true)
    }

    /// A minisign signature (the `.minisig` text) of `data`.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String> {
        let sig = minisign::sign(Some(&self.public), &self.secret, Cursor::new(data), Some(trusted_comment), None)
            .map_err(minisign_err("signing"))?;
        Ok(sig.to_string())
    }
}

/// The key name under which a bets key signs ledger checkpoints (C2SP
/// signed notes): `bets-<KEYID>`.
pub fn note_key_name(key_id: &str) -> String {
    format!("bets-{key_id}")
}

impl Signer {
    /// The raw Ed25519 seed: the first half of minisign's 64-byte secret
    /// key, which sits after the 62-byte header of the serialised key
    /// (algorithm ids, KDF salt and limits, key number).
    fn seed(&self) -> Result<[u8; 32]> {
        let bytes = self.secret.to_bytes();
        bytes.get(62..94).and_then(|s| s.try_into().ok()).ok_or(SigningError::SecretTooShort)
    }

    /// The same Ed25519 key as a C2SP note signer, for ledger checkpoints.
    pub fn note_signer(&self) -> Result<NoteSigner> {
        let signer = NoteSigner::from_seed(&note_key_name(&self.key_id), &self.seed()?)?;
        if signer.public_key()[..] != raw_public(&self.public)[..] {
            return Err(SigningError::NoteKeyMismatch { key_id: self.key_id.clone() });
        }
        Ok(signer)
    }

    /// The same Ed25519 key as a DSSE signer, for in-toto attestations; the
    /// envelope's `keyid` is the minisign key id.
    pub fn dsse_signer(&self) -> Result<DsseSigner> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&self.seed()?).map_err(|_| SigningError::SecretTooShort)?;
        if pair.public_key().as_ref() != raw_public(&self.public) {
            return Err(SigningError::NoteKeyMismatch { key_id: self.key_id.clone() });
        }
        Ok(DsseSigner { key_id: self.key_id.clone(), pair })
    }
}

/// The 32 raw Ed25519 bytes of a minisign public key (after the 2-byte
/// algorithm id and the 8-byte key number).
fn raw_public(pk: &PublicKey) -> [u8; 32] {
    let bytes = pk.to_bytes();
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&bytes[10..42]);
    raw
}

/// A bets key signing DSSE envelopes (ring's Ed25519, deterministic).
pub struct DsseSigner {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl dsse::Signer for DsseSigner {
    fn sign(&self, message: &[u8]) -> dsse::Result<Vec<u8>> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }

    fn key_id(&self) -> Option<String> {
        Some(self.key_id.clone())
    }
}

/// A trusted key checking DSSE envelopes.
pub struct DsseVerifier {
    key_id: String,
    public: [u8; 32],
}

impl DsseVerifier {
    /// The raw public key, lower-case hex (what other DSSE tools take).
    pub fn public_hex(&self) -> String {
        hex::encode(self.public)
    }
}

impl dsse::Verifier for DsseVerifier {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public).verify(message, signature).is_ok()
    }

    fn key_id(&self) -> Option<String> {
        Some(self.key_id.clone())
    }

    fn key_identity(&self) -> Option<Vec<u8>> {
        Some(self.public.to_vec())
    }
}

impl TrustedKeys {
    /// A checkpoint verifier per trusted key.
    pub fn note_verifiers(&self) -> Vec<NoteVerifier> {
        self.keys.iter().filter_map(|(id, pk)| NoteVerifier::new(&note_key_name(id), raw_public(pk)).ok()).collect()
    }

    /// The DSSE verifier of trusted key `key_id`, if it is trusted.
    pub fn dsse_verifier(&self, key_id: &str) -> Option<DsseVerifier> {
        self.keys.get(key_id).map(|pk| DsseVerifier { key_id: key_id.to_string(), public: raw_public(pk) })
    }

    /// Every `*.pub` in `dir` (a missing folder trusts nobody).
    pub fn load(dir: &Path) -> Result<TrustedKeys> {
        let mut keys = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(TrustedKeys { keys }) };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "pub")) {
            let text = std::fs::read_to_string(&p).map_err(|error| SigningError::ReadKey { path: p.clone(), error })?;
            let pk = PublicKeyBox::from_string(&text)
                .and_then(|b| b.into_public_key())
                .map_err(|e| SigningError::NotAPublicKey { path: p.clone(), detail: e.to_string() })?;
            keys.insert(key_id(pk.keynum()), pk);
        }
        Ok(TrustedKeys { keys })
    }

    /// Check a minisign signature of `data` against the trusted keys;
    /// returns the signer's key id. `what` names the file in errors.
    pub fn verify(&self, data: &[u8], signature: &str, what: &str) -> Result<String> {
        let sig = SignatureBox::from_string(signature)
            .map_err(|e| SigningError::MalformedSignature { what: what.to_string(), detail: e.to_string() })?;
        let id = key_id(sig.keynum());
        let Some(pk) = self.keys.get(&id) else {
            return Err(SigningError::UntrustedKey { what: what.to_string(), key_id: id });
        };
        minisign::verify(pk, &sig, Cursor::new(data), true, false, false).map_err(|e| SigningError::BadSignature {
            what: what.to_string(),
            key_id: id.clone(),
            detail: e.to_string(),
        })?;
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

    #[test]
    fn a_key_made_in_another_clone_writes_its_public_half_once() {
        let home = tempfile::tempdir().unwrap();
        let other_clone = tempfile::tempdir().unwrap();
        let this_clone = tempfile::tempdir().unwrap();
        let (id, made) = keygen(&home.path().join("k.key"), other_clone.path(), false).unwrap();
        let signer = Signer::load(&home.path().join("k.key")).unwrap();
        assert!(signer.ensure_public_in(this_clone.path()).unwrap());
        let written = this_clone.path().join(format!("{id}.pub"));
        assert_eq!(std::fs::read(&written).unwrap(), std::fs::read(made).unwrap());
        assert!(!signer.ensure_public_in(this_clone.path()).unwrap(), "already there: left alone");
        let sig = signer.sign(b"entry", "t").unwrap();
        assert_eq!(TrustedKeys::load(this_clone.path()).unwrap().verify(b"entry", &sig, "entry").unwrap(), id);
    }
}
