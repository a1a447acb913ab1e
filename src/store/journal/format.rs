//! The bytes of a journal file: a header, then framed records.
//!
//! ```text
//! header  (32 bytes): magic "CPIAJRN\0" | version u32 LE | 0u32 | journal id (16 bytes)
//! record  (24 + n)  : n u32 LE | !n u32 LE | checksum (16 bytes) | payload (n bytes)
//! ```
//! The checksum is the first 16 bytes of blake3(n LE ‖ payload). The length is
//! stored twice (the second time inverted) so that a damaged length is seen
//! as damage before it is used: a record whose two lengths agree but whose
//! bytes run past the end of the file was cut short by a crash (a torn tail),
//! while lengths that disagree are corruption. A zero-filled tail — what a
//! crash can leave when the file size reached the disk before its data —
//! fails that check too, and is reported as torn.

/// First bytes of every journal file.
pub const MAGIC: [u8; 8] = *b"CPIAJRN\0";
/// Bump when the layout changes; a reader refuses other versions.
/// 2: a unit records how its tiles were encoded. 3: a maker carries the
/// versions of the libraries that made the pixels.
pub const VERSION: u32 = 3;
/// Size of the file header.
pub const HEADER_LEN: usize = 32;
/// Size of a record's frame before its payload.
pub const FRAME_LEN: usize = 24;
/// Largest payload a record may hold (a length above it is damage, and never
/// makes a reader allocate gigabytes).
pub const MAX_RECORD: usize = 16 << 20;

/// Identity of one journal file, chosen at random when it is created and
/// written in its header: merge cursors are keyed by it, not by the file
/// name, so a new file that reuses a deleted one's name starts from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JournalId(pub [u8; 16]);

impl std::fmt::Display for JournalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for JournalId {
    type Err = String;
    fn from_str(s: &str) -> Result<JournalId, String> {
        let bad = || format!("`{s}` is not a journal id (32 hex digits)");
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(JournalId(id))
    }
}

/// The header of a journal with identity `id`.
pub fn header(id: JournalId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..].copy_from_slice(&id.0);
    h
}

/// Why a header is not a journal header.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a journal at all.
    Magic,
    /// A journal of another format version.
    Version(u32),
}

/// The identity in a header.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<JournalId, HeaderError> {
    if h[..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[16..]);
    Ok(JournalId(id))
}

/// The checksum of a record of `payload`.
pub fn checksum(payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The frame that precedes `payload` (whose length the caller has checked
/// against [`MAX_RECORD`]).
pub fn frame(payload: &[u8]) -> [u8; FRAME_LEN] {
    let n = payload.len() as u32;
    let mut f = [0u8; FRAME_LEN];
    f[..4].copy_from_slice(&n.to_le_bytes());
    f[4..8].copy_from_slice(&(!n).to_le_bytes());
    f[8..].copy_from_slice(&checksum(payload));
    f
}

/// A frame read back: the payload length it announces, if its two copies
/// agree and it is within bounds.
pub fn frame_len(f: &[u8; FRAME_LEN]) -> Option<usize> {
    let n = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
    let inv = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    (n == !inv && n as usize <= MAX_RECORD).then_some(n as usize)
}

/// The checksum a frame carries.
pub fn frame_checksum(f: &[u8; FRAME_LEN]) -> &[u8] {
    &f[8..]
}
