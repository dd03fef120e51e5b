//! Signed tree heads: checkpoints in the C2SP tlog-checkpoint format, signed
//! as C2SP signed notes with Ed25519. A checkpoint binds a log's origin, size
//! and root under a key, so anyone holding one can later demand a
//! consistency proof and catch a log that rewrote its past.
//!
//! ```text
//! <origin>\n<size>\n<base64 root>\n[<extension line>\n]*
//! \n
//! — <key name> <base64(key id || signature)>\n   (one or more)
//! ```
//!
//! Parsing is strict, so `format(parse(x)) == x` for every accepted `x`.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::hash::{Hash, from_base64, to_base64};

/// The signature type byte of Ed25519 in C2SP signed notes.
const ED25519_TYPE: u8 = 0x01;
/// What starts every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// What is wrong with a checkpoint or a signed note.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("the note has no blank line before its signatures")]
    NoSignatureBlock,
    #[error("the note has no signature lines")]
    NoSignatures,
    #[error("the note does not end with a newline")]
    NoFinalNewline,
    #[error("the note text is empty")]
    EmptyText,
    #[error("the note text holds a control character other than newline (line {line})")]
    ControlCharacter { line: usize },
    #[error("signature line {line} does not start with an em dash and a space")]
    SignatureLinePrefix { line: usize },
    #[error("signature line {line} is not `— <key name> <base64>`")]
    SignatureLineShape { line: usize },
    #[error("signature line {line}: the signature is not standard base64")]
    SignatureBase64 { line: usize },
    #[error("signature line {line}: the signature is {len} bytes, shorter than a 4-byte key id plus a signature")]
    SignatureTooShort { line: usize, len: usize },
    #[error("key name {name:?} is empty or holds whitespace or '+'")]
    BadKeyName { name: String },
    #[error("the checkpoint body has {lines} lines; origin, size and root hash are needed")]
    TooFewLines { lines: usize },
    #[error("the checkpoint origin line is empty")]
    EmptyOrigin,
    #[error("the checkpoint size {text:?} is not a decimal number without leading zeros")]
    BadSize { text: String },
    #[error("the checkpoint root hash is not standard base64")]
    RootBase64,
    #[error("the checkpoint root hash is {len} bytes, a SHA-256 hash is 32")]
    RootLength { len: usize },
    #[error("checkpoint body line {line} is empty")]
    BlankBodyLine { line: usize },
    #[error("no signature by key {name} ({key_id}) on the note")]
    NoSignatureByKey { name: String, key_id: String },
    #[error("the signature by key {name} does not verify")]
    BadSignature { name: String },
    #[error("a checkpoint field holds a line break")]
    LineBreakInField,
    #[error("the Ed25519 seed was rejected")]
    BadSeed,
}

/// A log's signed statement of its size and root (the body of the note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log, e.g. `example.org/bets-ledger`.
    pub origin: String,
    /// How many entries the log holds.
    pub size: u64,
    /// The RFC 6962 root of those entries.
    pub root: Hash,
    /// Optional further lines, kept verbatim (each non-empty).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: the lines of the checkpoint, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, to_base64(&self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parse a note text (as [`SignedNote::text`] gives it).
    pub fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::NoFinalNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(CheckpointError::TooFewLines { lines: lines.len() });
        }
        if lines[0].is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        if let Some(i) = lines.iter().position(|l| l.is_empty()) {
            return Err(CheckpointError::BlankBodyLine { line: i + 1 });
        }
        let size = parse_size(lines[1])?;
        let root = from_base64(lines[2]).map_err(|_| CheckpointError::RootBase64)?;
        let root: Hash = root.try_into().map_err(|r: Vec<u8>| CheckpointError::RootLength { len: r.len() })?;
        Ok(Checkpoint {
            origin: lines[0].to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|l| l.to_string()).collect(),
        })
    }
}

fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    let bad = || CheckpointError::BadSize { text: text.to_string() };
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    /// The signature proper (64 bytes for Ed25519; other types may differ).
    pub signature: Vec<u8>,
}

/// A C2SP signed note: a text and the signatures over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// Non-empty, every line ending in a newline: exactly the signed bytes.
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// The note as it is written and sent: text, blank line, signature lines.
    pub fn format(&self) -> String {
        let mut s = self.text.clone();
        s.push('\n');
        for sig in &self.signatures {
            let mut blob = sig.key_id.to_vec();
            blob.extend_from_slice(&sig.signature);
            s.push_str(&format!("{SIG_PREFIX}{} {}\n", sig.name, to_base64(&blob)));
        }
        s
    }

    /// Parse a note; the signatures start after the last blank line.
    pub fn parse(note: &str) -> Result<SignedNote, CheckpointError> {
        if !note.ends_with('\n') {
            return Err(CheckpointError::NoFinalNewline);
        }
        let split = note.rfind("\n\n").ok_or(CheckpointError::NoSignatureBlock)?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if text.trim_end_matches('\n').is_empty() {
            return Err(CheckpointError::EmptyText);
        }
        if let Some(pos) = text.find(|c: char| c.is_control() && c != '\n') {
            return Err(CheckpointError::ControlCharacter { line: text[..pos].matches('\n').count() + 1 });
        }
        let first_sig_line = text.matches('\n').count() + 2;
        // `note` ends with a newline, so `sigs` is empty or ends with one.
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(CheckpointError::NoSignatures);
        };
        let mut signatures = Vec::new();
        for (i, line) in sigs.split('\n').enumerate() {
            let n = first_sig_line + i;
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(CheckpointError::SignatureLinePrefix { line: n })?;
            let (name, b64) = rest.split_once(' ').ok_or(CheckpointError::SignatureLineShape { line: n })?;
            check_key_name(name)?;
            if b64.is_empty() || b64.contains(' ') {
                return Err(CheckpointError::SignatureLineShape { line: n });
            }
            let blob = from_base64(b64).map_err(|_| CheckpointError::SignatureBase64 { line: n })?;
            if blob.len() < 5 {
                return Err(CheckpointError::SignatureTooShort { line: n, len: blob.len() });
            }
            let key_id = [blob[0], blob[1], blob[2], blob[3]];
            signatures.push(NoteSignature { name: name.to_string(), key_id, signature: blob[4..].to_vec() });
        }
        Ok(SignedNote { text: text.to_string(), signatures })
    }
}

fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(CheckpointError::BadKeyName { name: name.to_string() });
    }
    Ok(())
}

/// The 4-byte id of an Ed25519 note key: the first bytes of
/// SHA-256(name || 0x0A || 0x01 || public key).
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Checks notes signed by one named Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub public_key: [u8; 32],
}

impl NoteVerifier {
    /// A verifier for `name`'s key (the name is checked as a key name).
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<NoteVerifier, CheckpointError> {
        check_key_name(name)?;
        Ok(NoteVerifier { name: name.to_string(), public_key })
    }

    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.public_key)
    }

    /// Accept the note when it carries a valid signature by this key (other
    /// signatures, such as a witness's, are left alone).
    pub fn verify(&self, note: &SignedNote) -> Result<(), CheckpointError> {
        let id = self.key_id();
        let sig =
            note.signatures.iter().find(|s| s.name == self.name && s.key_id == id).ok_or_else(|| {
                CheckpointError::NoSignatureByKey { name: self.name.clone(), key_id: hex::encode(id) }
            })?;
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(note.text.as_bytes(), &sig.signature)
            .map_err(|_| CheckpointError::BadSignature { name: self.name.clone() })
    }

    /// Parse a signed checkpoint, check this key's signature, and return it.
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let note = SignedNote::parse(note)?;
        self.verify(&note)?;
        Checkpoint::parse_text(&note.text)
    }
}

/// Signs notes with one named Ed25519 key.
pub struct NoteSigner {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner").field("name", &self.name).finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// The key derived from a 32-byte Ed25519 seed (the RFC 8032 secret key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, CheckpointError> {
        check_key_name(name)?;
        let key = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| CheckpointError::BadSeed)?;
        Ok(NoteSigner { name: name.to_string(), key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.key.public_key().as_ref());
        pk
    }

    /// The verifier that accepts this signer's notes.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), public_key: self.public_key() }
    }

    /// A signature line over `text` (which must be a valid note text).
    pub fn sign(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: key_id(&self.name, &self.public_key()),
            signature: self.key.sign(text.as_bytes()).as_ref().to_vec(),
        }
    }

    /// The checkpoint as a signed note, ready to publish; refused when its
    /// fields would not read back as the same checkpoint.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        let mut fields = std::iter::once(&checkpoint.origin).chain(&checkpoint.extensions);
        if fields.any(|f| f.contains('\n')) {
            return Err(CheckpointError::LineBreakInField);
        }
        let text = checkpoint.to_text();
        Checkpoint::parse_text(&text)?;
        if let Some(pos) = text.find(|c: char| c.is_control() && c != '\n') {
            return Err(CheckpointError::ControlCharacter { line: text[..pos].matches('\n').count() + 1 });
        }
        let sig = self.sign(&text);
        Ok(SignedNote { text, signatures: vec![sig] }.format())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, TEST 1: the secret key (seed) and its public key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const NAME: &str = "bets-ledger-test";

    // Made independently with Python (hashlib + the `cryptography` package's
    // Ed25519): the checkpoint of the 7-leaf transparency-dev reference tree,
    // signed with the RFC 8032 TEST 1 key under NAME (key id 1919ddaf).
    const NOTE: &str = "bets.test/ledger\n7\n3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=\n\n\u{2014} bets-ledger-test GRndr8m25v+kSrElv3yJv/FjI6mwi/oyzO+AgmHfWUjHJ5Ue58TthhpqLbnM+ZZxPlDP6cmL9b52W1vpC5imvUX5bAQ=\n";

    fn signer() -> NoteSigner {
        NoteSigner::from_seed(NAME, &hex::decode(SEED).unwrap().try_into().unwrap()).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        let root = hex::decode("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c").unwrap();
        Checkpoint { origin: "bets.test/ledger".into(), size: 7, root: root.try_into().unwrap(), extensions: vec![] }
    }

    #[test]
    fn the_signer_derives_the_rfc_8032_public_key_and_signature() {
        let s = signer();
        assert_eq!(hex::encode(s.public_key()), PUBLIC);
        // RFC 8032 TEST 1: the signature of the empty message.
        assert_eq!(
            hex::encode(s.sign("").signature),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn the_key_id_is_the_head_of_sha256_of_name_newline_type_and_key() {
        assert_eq!(hex::encode(key_id(NAME, &signer().public_key())), "1919ddaf");
        assert_eq!(signer().verifier().key_id(), key_id(NAME, &signer().public_key()));
    }

    #[test]
    fn a_signed_checkpoint_is_byte_for_byte_the_independently_made_note() {
        assert_eq!(signer().sign_checkpoint(&checkpoint()).unwrap(), NOTE);
        assert_eq!(signer().verifier().open_checkpoint(NOTE).unwrap(), checkpoint());
    }

    #[test]
    fn notes_and_checkpoints_round_trip_exactly() {
        let mut cp = checkpoint();
        cp.extensions = vec!["ext one".into(), "— odd but allowed".into()];
        let note = signer().sign_checkpoint(&cp).unwrap();
        let parsed = SignedNote::parse(&note).unwrap();
        assert_eq!(parsed.format(), note);
        assert_eq!(Checkpoint::parse_text(&parsed.text).unwrap(), cp);
        assert_eq!(parsed.text, cp.to_text());

        // A note with a second (foreign) signature keeps both, in order.
        let other = NoteSigner::from_seed("witness", &[7; 32]).unwrap();
        let mut two = parsed.clone();
        two.signatures.push(other.sign(&two.text));
        let text = two.format();
        assert_eq!(SignedNote::parse(&text).unwrap(), two);
        assert_eq!(signer().verifier().open_checkpoint(&text).unwrap(), cp);
        assert_eq!(other.verifier().open_checkpoint(&text).unwrap(), cp);
    }

    #[test]
    fn a_flipped_byte_in_the_body_or_the_signature_fails_verification() {
        let v = signer().verifier();
        let bad_size = NOTE.replacen("\n7\n", "\n8\n", 1);
        assert_eq!(v.open_checkpoint(&bad_size), Err(CheckpointError::BadSignature { name: NAME.into() }));
        for i in 0..checkpoint().to_text().len() - 1 {
            let mut bytes = NOTE.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            let Ok(s) = String::from_utf8(bytes) else { continue };
            assert!(v.open_checkpoint(&s).is_err(), "flipped byte {i}");
        }
        let mut note = SignedNote::parse(NOTE).unwrap();
        note.signatures[0].signature[10] ^= 0x80;
        assert_eq!(v.verify(&note), Err(CheckpointError::BadSignature { name: NAME.into() }));
    }

    #[test]
    fn a_note_without_this_keys_signature_is_refused_by_name() {
        let other = NoteSigner::from_seed(NAME, &[9; 32]).unwrap().verifier();
        let err = other.open_checkpoint(NOTE).unwrap_err();
        assert_eq!(err, CheckpointError::NoSignatureByKey { name: NAME.into(), key_id: hex::encode(other.key_id()) });
    }

    #[test]
    fn malformed_notes_get_named_errors() {
        use CheckpointError as E;
        let sig = NOTE.split("\n\n").nth(1).unwrap();
        let cases: Vec<(String, E)> = vec![
            (NOTE.trim_end().to_string(), E::NoFinalNewline),
            ("a\n1\nAAAA\n".into(), E::NoSignatureBlock),
            ("a\n1\nAAAA\n\n".into(), E::NoSignatures),
            (format!("\n\n{sig}"), E::EmptyText),
            (format!("a\r\n1\n\n{sig}"), E::ControlCharacter { line: 1 }),
            ("a\n\n- k AAAAAAA=\n".into(), E::SignatureLinePrefix { line: 3 }),
            ("a\n\n\u{2014} kAAAA\n".into(), E::SignatureLineShape { line: 3 }),
            ("a\n\n\u{2014} k+1 AAAAAAA=\n".into(), E::BadKeyName { name: "k+1".into() }),
            ("a\n\n\u{2014} k AAAAAAA\n".into(), E::SignatureBase64 { line: 3 }),
            ("a\n\n\u{2014} k AAAA\n".into(), E::SignatureTooShort { line: 3, len: 3 }),
        ];
        for (text, want) in cases {
            assert_eq!(SignedNote::parse(&text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn malformed_checkpoint_bodies_get_named_errors() {
        use CheckpointError as E;
        let root = "3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=";
        let cases: Vec<(String, E)> = vec![
            ("o\n7\n".into(), E::TooFewLines { lines: 2 }),
            (format!("\n7\n{root}\n"), E::EmptyOrigin),
            (format!("o\n07\n{root}\n"), E::BadSize { text: "07".into() }),
            (format!("o\n+7\n{root}\n"), E::BadSize { text: "+7".into() }),
            (format!("o\n18446744073709551616\n{root}\n"), E::BadSize { text: "18446744073709551616".into() }),
            ("o\n7\nnot base64\n".into(), E::RootBase64),
            ("o\n7\nAAAA\n".into(), E::RootLength { len: 3 }),
            (format!("o\n7\n{root}\n\nx\n"), E::BlankBodyLine { line: 4 }),
            (format!("o\n7\n{root}"), E::NoFinalNewline),
        ];
        for (text, want) in cases {
            assert_eq!(Checkpoint::parse_text(&text), Err(want), "{text:?}");
        }
        assert_eq!(Checkpoint::parse_text(&format!("o\n0\n{root}\n")).unwrap().size, 0);
        let mut cp = checkpoint();
        cp.origin = "two\nlines".into();
        assert_eq!(signer().sign_checkpoint(&cp), Err(E::LineBreakInField));
    }
}
