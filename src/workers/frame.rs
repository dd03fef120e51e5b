//! The wire frame every worker message travels in: a fixed 28-byte header
//! and a payload, both little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  magic  b"BETW"
//!      4     2  version (PROTOCOL_VERSION)
//!      6     1  tag    (which message; see `message`)
//!      7     1  reserved, 0
//!      8     8  seq    (request number; a reply carries its request's)
//!     16     4  len    (payload bytes, at most MAX_PAYLOAD)
//!     20     8  check  (first 8 bytes of SHA-256 of the payload)
//!     28   len  payload
//! ```
//!
//! The header is self-delimiting, so the link emulator ([`super::link`]) can
//! drop or delay whole frames without understanding them, and a reader
//! refuses a bad magic, an unknown version, an oversized length or a
//! checksum mismatch before it trusts one byte of the payload.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"BETW";
/// Bumped whenever a frame or a message payload changes meaning.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 28;
/// The largest payload a reader accepts (64 MiB: a `paper` model's KV cache
/// fits many times over; a corrupt length cannot make a reader allocate more).
pub const MAX_PAYLOAD: u32 = 64 << 20;

/// What reading a frame can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The socket failed, or closed in the middle of a frame.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// Bytes that are not a frame of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// A frame's header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    pub seq: u64,
    pub len: u32,
    pub check: [u8; 8],
}

impl Header {
    /// The header bytes of a frame carrying `payload`.
    pub fn for_payload(tag: u8, seq: u64, payload: &[u8]) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        h[6] = tag;
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[20..28].copy_from_slice(&checksum(payload));
        h
    }

    /// Decode and check header bytes (magic, version, length bound).
    pub fn parse(h: &[u8; HEADER_BYTES]) -> Result<Header, FrameError> {
        if h[0..4] != MAGIC {
            return Err(FrameError::Malformed(format!("bad magic {:02x?}, expected {:02x?}", &h[0..4], MAGIC)));
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        if version != PROTOCOL_VERSION {
            return Err(FrameError::Malformed(format!(
                "protocol version {version}, this build speaks {PROTOCOL_VERSION}"
            )));
        }
        let len = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        if len > MAX_PAYLOAD {
            return Err(FrameError::Malformed(format!("payload of {len} bytes exceeds the limit of {MAX_PAYLOAD}")));
        }
        Ok(Header {
            tag: h[6],
            seq: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
            len,
            check: h[20..28].try_into().expect("8 bytes"),
        })
    }
}

/// First 8 bytes of SHA-256 of `payload`.
pub fn checksum(payload: &[u8]) -> [u8; 8] {
    Sha256::digest(payload)[..8].try_into().expect("32-byte digest")
}

/// A whole frame: header then payload, in one buffer (one write, so a frame
/// is never interleaved with another written to the same socket).
pub fn encode(tag: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&Header::for_payload(tag, seq, payload));
    out.extend_from_slice(payload);
    out
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, tag: u8, seq: u64, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(tag, seq, payload))?;
    w.flush()
}

/// Read a header: [`FrameError::Closed`] on a clean end of stream before
/// its first byte; an I/O error on an end in the middle.
pub fn read_header(r: &mut impl Read) -> Result<Header, FrameError> {
    let mut h = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Malformed(format!("truncated header: {got} of {HEADER_BYTES} bytes")));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Header::parse(&h)
}

/// Read one frame and check its payload against the header's checksum.
pub fn read_frame(r: &mut impl Read) -> Result<(Header, Vec<u8>), FrameError> {
    let header = read_header(r)?;
    let mut payload = vec![0u8; header.len as usize];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            FrameError::Malformed(format!("truncated payload: the header announced {} bytes", header.len))
        }
        _ => FrameError::Io(e),
    })?;
    if checksum(&payload) != header.check {
        return Err(FrameError::Malformed(format!(
            "checksum mismatch on a {}-byte payload (tag {}, seq {})",
            header.len, header.tag, header.seq
        )));
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips() {
        let bytes = encode(7, 42, b"hello");
        assert_eq!(bytes.len(), HEADER_BYTES + 5);
        let (h, p) = read_frame(&mut bytes.as_slice()).unwrap();
        assert_eq!((h.tag, h.seq, h.len), (7, 42, 5));
        assert_eq!(p, b"hello");
    }

    #[test]
    fn bad_magic_version_length_and_checksum_are_refused() {
        let good = encode(1, 1, b"abc");
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(read_frame(&mut bad.as_slice()), Err(FrameError::Malformed(m)) if m.contains("magic")));
        let mut bad = good.clone();
        bad[4] = 9;
        assert!(matches!(read_frame(&mut bad.as_slice()), Err(FrameError::Malformed(m)) if m.contains("version 9")));
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert!(matches!(read_frame(&mut bad.as_slice()), Err(FrameError::Malformed(m)) if m.contains("limit")));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(read_frame(&mut bad.as_slice()), Err(FrameError::Malformed(m)) if m.contains("checksum")));
    }

    #[test]
    fn truncation_is_told_apart_from_a_clean_close() {
        assert!(matches!(read_frame(&mut [].as_slice()), Err(FrameError::Closed)));
        let good = encode(1, 1, b"abcdef");
        let short = &good[..10];
        assert!(matches!(read_frame(&mut &short[..]), Err(FrameError::Malformed(m)) if m.contains("truncated header")));
        let short = &good[..HEADER_BYTES + 2];
        assert!(
            matches!(read_frame(&mut &short[..]), Err(FrameError::Malformed(m)) if m.contains("truncated payload"))
        );
    }
}
