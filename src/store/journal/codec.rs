//! A compact binary encoding of [`Event`]s, for worker journals.
//!
//! Why not JSON (or serde): a Slurm build's merge decodes one record per
//! output file — 150 M at corpus scale — and JSON spent most of a merge's
//! CPU parsing field names and hex. Here integers are LEB128 varints
//! (signed ones zigzag-encoded), strings are length-prefixed bytes, and a
//! blake3 hash (64 hex digits) travels as its 32 bytes. A tile is ~45 bytes.
//!
//! The layout is versioned by the journal format (`journal::format::VERSION`
//! and the record kind of its payload): a change here is a new version, never
//! a silent reinterpretation. Decoding checks every length against the bytes
//! left, so a damaged payload is an error, never a huge allocation.

use crate::store::state::blob_hex;
use crate::store::{
    Event, FailureRecord, Maker, OutputRecord, ReadFacts, TileRecord, UnitRecord, WrittenFile,
};

/// Appends encoded values to a byte buffer.
#[derive(Debug, Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    /// An empty buffer.
    pub fn new() -> Enc {
        Enc::default()
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// An unsigned integer as a LEB128 varint.
    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn u32(&mut self, v: u32) {
        self.u64(u64::from(v));
    }

    /// A signed integer, zigzag-encoded (small magnitudes stay short).
    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    /// A hash: 32 bytes when it is 64 lower-case hex digits, else the text.
    pub fn hash(&mut self, h: &str) {
        if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            self.u8(1);
            for pair in h.as_bytes().chunks_exact(2) {
                self.buf.push((nibble(pair[0]) << 4) | nibble(pair[1]));
            }
        } else {
            self.u8(0);
            self.str(h);
        }
    }

    /// One event.
    pub fn event(&mut self, ev: &Event) {
        match ev {
            Event::Output(o) => {
                self.u8(1);
                self.output(o);
            }
            Event::OutputRemoved { id } => {
                self.u8(2);
                self.i64(*id);
            }
            Event::OutputRestat { id, ino, mtime_ns } => {
                self.u8(3);
                self.i64(*id);
                self.u64(*ino);
                self.i64(*mtime_ns);
            }
            Event::OutputMeta { id, class, maker } => {
                self.u8(4);
                self.i64(*id);
                self.opt_str(class.as_deref());
                self.maker(maker);
            }
            Event::UnitMeta { id, maker, read } => {
                self.u8(5);
                self.i64(*id);
                self.maker(maker);
                self.read(read);
            }
            Event::Unit(u) => {
                self.u8(6);
                self.unit(u);
            }
            Event::UnitRemoved { id } => {
                self.u8(7);
                self.i64(*id);
            }
            Event::TileRemoved { unit, x, y } => {
                self.u8(8);
                self.i64(*unit);
                self.u32(*x);
                self.u32(*y);
            }
            Event::TileRestat {
                unit,
                x,
                y,
                ino,
                mtime_ns,
            } => {
                self.u8(9);
                self.i64(*unit);
                self.u32(*x);
                self.u32(*y);
                self.u64(*ino);
                self.i64(*mtime_ns);
            }
            Event::InputRemoved { id } => {
                self.u8(10);
                self.i64(*id);
            }
            Event::Failed(f) => {
                self.u8(11);
                self.i64(f.input);
                self.str(&f.unit);
                match &f.source_hash {
                    None => self.u8(0),
                    Some(h) => {
                        self.u8(1);
                        self.hash(h);
                    }
                }
                self.str(&f.error);
                self.i64(f.at);
            }
            Event::Succeeded { input, unit } => {
                self.u8(12);
                self.i64(*input);
                self.str(unit);
            }
            Event::InputPending { id } => {
                self.u8(13);
                self.i64(*id);
            }
            Event::InputComplete { id, fp } => {
                self.u8(14);
                self.i64(*id);
                self.i64(*fp);
            }
            Event::FolderComplete {
                collection,
                src_dir,
                digest,
                fp,
            } => {
                self.u8(15);
                self.i64(*collection);
                self.i64(*src_dir);
                self.hash(digest);
                self.i64(*fp);
            }
        }
    }

    fn output(&mut self, o: &OutputRecord) {
        self.i64(o.input);
        self.str(&o.dir);
        self.str(&o.name);
        self.str(&o.sink);
        self.hash(&o.pipeline_hash);
        self.hash(&o.source_hash);
        self.opt_str(o.class.as_deref());
        self.maker(&o.maker);
        match &o.read {
            None => self.u8(0),
            Some(r) => {
                self.u8(1);
                self.read(r);
            }
        }
        self.file(&o.file);
        self.i64(o.built_at);
        self.i64(o.build);
    }

    fn unit(&mut self, u: &UnitRecord) {
        self.i64(u.input);
        self.str(&u.sink);
        self.u32(u.cell.0);
        self.u32(u.cell.1);
        self.str(&u.dir);
        self.u32(u.size);
        self.hash(&u.pipeline_hash);
        self.read(&u.read);
        self.str(&u.encoding);
        self.maker(&u.maker);
        self.u8(match u.kept {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        self.bool(u.complete);
        self.u64(u.tiles.len() as u64);
        for t in &u.tiles {
            self.u32(t.x);
            self.u32(t.y);
            self.file(&t.file);
        }
        self.u64(u.removed_tiles.len() as u64);
        for (x, y) in &u.removed_tiles {
            self.u32(*x);
            self.u32(*y);
        }
        self.i64(u.built_at);
        self.i64(u.build);
    }

    fn maker(&mut self, m: &Maker) {
        self.hash(&m.recipe_hash);
        self.str(&m.tool_version);
        self.str(&m.libraries);
    }

    fn read(&mut self, r: &ReadFacts) {
        self.hash(&r.source_hash);
        self.u32(r.read_size);
        self.f64(r.mpp);
        self.str(&r.mpp_origin);
        self.str(&r.reader);
    }

    fn file(&mut self, f: &WrittenFile) {
        self.u64(f.ino);
        self.u64(f.size);
        self.i64(f.mtime_ns);
        self.hash(&f.content_hash);
    }
}

fn nibble(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        _ => b - b'a' + 10,
    }
}

/// Reads values back in the order they were encoded.
#[derive(Debug)]
pub struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Why bytes do not decode: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {} of the record", self.what, self.at)
    }
}
impl std::error::Error for DecodeError {}

type R<T> = Result<T, DecodeError>;

impl<'a> Dec<'a> {
    /// A reader of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Dec<'a> {
        Dec { bytes, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn fail<T>(&self, what: &'static str) -> R<T> {
        Err(DecodeError { at: self.pos, what })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.bytes.len() - self.pos < n {
            return self.fail("unexpected end");
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u64(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint too long")
    }

    pub fn u32(&mut self) -> R<u32> {
        let v = self.u64()?;
        u32::try_from(v).or_else(|_| self.fail("integer out of range"))
    }

    pub fn i64(&mut self) -> R<i64> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn f64(&mut self) -> R<f64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }

    pub fn bool(&mut self) -> R<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => self.fail("bad boolean"),
        }
    }

    /// A count of items that each take at least `min_bytes`: checked
    /// against the bytes left before anything is allocated for them.
    pub fn len(&mut self, min_bytes: usize) -> R<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes.max(1) as u64) > left {
            return self.fail("length beyond the record");
        }
        Ok(n as usize)
    }

    pub fn str(&mut self) -> R<String> {
        let n = self.len(1)?;
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.fail("text is not UTF-8"),
        }
    }

    pub fn opt_str(&mut self) -> R<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => self.fail("bad option tag"),
        }
    }

    pub fn hash(&mut self) -> R<String> {
        match self.u8()? {
            0 => self.str(),
            1 => Ok(blob_hex(self.take(32)?)),
            _ => self.fail("bad hash tag"),
        }
    }

    /// One event.
    pub fn event(&mut self) -> R<Event> {
        Ok(match self.u8()? {
            1 => Event::Output(Box::new(self.output()?)),
            2 => Event::OutputRemoved { id: self.i64()? },
            3 => Event::OutputRestat {
                id: self.i64()?,
                ino: self.u64()?,
                mtime_ns: self.i64()?,
            },
            4 => Event::OutputMeta {
                id: self.i64()?,
                class: self.opt_str()?,
                maker: self.maker()?,
            },
            5 => Event::UnitMeta {
                id: self.i64()?,
                maker: self.maker()?,
                read: self.read()?,
            },
            6 => Event::Unit(Box::new(self.unit()?)),
            7 => Event::UnitRemoved { id: self.i64()? },
            8 => Event::TileRemoved {
                unit: self.i64()?,
                x: self.u32()?,
                y: self.u32()?,
            },
            9 => Event::TileRestat {
                unit: self.i64()?,
                x: self.u32()?,
                y: self.u32()?,
                ino: self.u64()?,
                mtime_ns: self.i64()?,
            },
            10 => Event::InputRemoved { id: self.i64()? },
            11 => Event::Failed(FailureRecord {
                input: self.i64()?,
                unit: self.str()?,
                source_hash: match self.u8()? {
                    0 => None,
                    1 => Some(self.hash()?),
                    _ => return self.fail("bad option tag"),
                },
                error: self.str()?,
                at: self.i64()?,
            }),
            12 => Event::Succeeded {
                input: self.i64()?,
                unit: self.str()?,
            },
            13 => Event::InputPending { id: self.i64()? },
            14 => Event::InputComplete {
                id: self.i64()?,
                fp: self.i64()?,
            },
            15 => Event::FolderComplete {
                collection: self.i64()?,
                src_dir: self.i64()?,
                digest: self.hash()?,
                fp: self.i64()?,
            },
            _ => return self.fail("unknown event kind"),
        })
    }

    fn output(&mut self) -> R<OutputRecord> {
        Ok(OutputRecord {
            input: self.i64()?,
            dir: self.str()?,
            name: self.str()?,
            sink: self.str()?,
            pipeline_hash: self.hash()?,
            source_hash: self.hash()?,
            class: self.opt_str()?,
            maker: self.maker()?,
            read: match self.u8()? {
                0 => None,
                1 => Some(self.read()?),
                _ => return self.fail("bad option tag"),
            },
            file: self.file()?,
            built_at: self.i64()?,
            build: self.i64()?,
        })
    }

    fn unit(&mut self) -> R<UnitRecord> {
        let input = self.i64()?;
        let sink = self.str()?;
        let cell = (self.u32()?, self.u32()?);
        let dir = self.str()?;
        let size = self.u32()?;
        let pipeline_hash = self.hash()?;
        let read = self.read()?;
        let encoding = self.str()?;
        let maker = self.maker()?;
        let kept = match self.u8()? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            _ => return self.fail("bad decision"),
        };
        let complete = self.bool()?;
        // A tile takes at least 7 bytes (x, y, ino, size, mtime, hash tag, …).
        let n = self.len(7)?;
        let mut tiles = Vec::with_capacity(n);
        for _ in 0..n {
            tiles.push(TileRecord {
                x: self.u32()?,
                y: self.u32()?,
                file: self.file()?,
            });
        }
        let n = self.len(2)?;
        let mut removed_tiles = Vec::with_capacity(n);
        for _ in 0..n {
            removed_tiles.push((self.u32()?, self.u32()?));
        }
        Ok(UnitRecord {
            input,
            sink,
            cell,
            dir,
            size,
            pipeline_hash,
            read,
            encoding,
            maker,
            kept,
            complete,
            tiles,
            removed_tiles,
            built_at: self.i64()?,
            build: self.i64()?,
        })
    }

    fn maker(&mut self) -> R<Maker> {
        Ok(Maker {
            recipe_hash: self.hash()?,
            tool_version: self.str()?,
            libraries: self.str()?,
        })
    }

    fn read(&mut self) -> R<ReadFacts> {
        Ok(ReadFacts {
            source_hash: self.hash()?,
            read_size: self.u32()?,
            mpp: self.f64()?,
            mpp_origin: self.str()?,
            reader: self.str()?,
        })
    }

    fn file(&mut self) -> R<WrittenFile> {
        Ok(WrittenFile {
            ino: self.u64()?,
            size: self.u64()?,
            mtime_ns: self.i64()?,
            content_hash: self.hash()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> String {
        blake3::hash(&[i]).to_hex().to_string()
    }

    fn maker() -> Maker {
        Maker {
            recipe_hash: h(1),
            tool_version: "cpia 0.1.0".into(),
            libraries: "openslide 3.4.1, libjpeg-turbo 3.1.0".into(),
        }
    }

    fn read() -> ReadFacts {
        ReadFacts {
            source_hash: h(2),
            read_size: 7530,
            mpp: 0.2520,
            mpp_origin: "override".into(),
            reader: "direct".into(),
        }
    }

    fn file(i: u8) -> WrittenFile {
        WrittenFile {
            ino: 1 << 40,
            size: 40_321,
            mtime_ns: 1_700_000_000_123_456_789,
            content_hash: h(i),
        }
    }

    /// Every kind of event, with every optional field both ways and values
    /// at the edges of their ranges.
    fn every_event() -> Vec<Event> {
        vec![
            Event::Output(Box::new(OutputRecord {
                input: 7,
                dir: "M/BreaKHis_100x".into(),
                name: "benign_é x.jpg".into(),
                sink: "encode".into(),
                pipeline_hash: h(3),
                source_hash: "not-hex".into(),
                class: Some("benign".into()),
                maker: maker(),
                read: None,
                file: file(4),
                built_at: 1_700_000_000,
                build: 12,
            })),
            Event::Output(Box::new(OutputRecord {
                input: i64::MAX,
                dir: "qc/WSI".into(),
                name: "s.png".into(),
                sink: "qc".into(),
                pipeline_hash: h(5).to_uppercase(),
                source_hash: h(6),
                class: None,
                maker: maker(),
                read: Some(read()),
                file: file(7),
                built_at: -1,
                build: 0,
            })),
            Event::OutputRemoved { id: -5 },
            Event::OutputRestat {
                id: 3,
                ino: u64::MAX,
                mtime_ns: i64::MIN,
            },
            Event::OutputMeta {
                id: 4,
                class: None,
                maker: maker(),
            },
            Event::UnitMeta {
                id: 5,
                maker: maker(),
                read: read(),
            },
            Event::Unit(Box::new(UnitRecord {
                input: 9,
                sink: "write_M".into(),
                cell: (3, u32::MAX),
                dir: "M/WSI-384".into(),
                size: 384,
                pipeline_hash: h(8),
                read: read(),
                encoding: "crop".into(),
                maker: maker(),
                kept: Some(false),
                complete: false,
                tiles: (0..20)
                    .map(|i| TileRecord {
                        x: i,
                        y: 2 * i,
                        file: file(i as u8),
                    })
                    .collect(),
                removed_tiles: vec![(1, 2), (3, 4)],
                built_at: 5,
                build: 6,
            })),
            Event::Unit(Box::new(UnitRecord {
                input: 9,
                sink: "write_S".into(),
                cell: (0, 0),
                dir: "S/WSI-96".into(),
                size: 96,
                pipeline_hash: h(9),
                read: read(),
                encoding: "pixels".into(),
                maker: maker(),
                kept: None,
                complete: true,
                tiles: vec![],
                removed_tiles: vec![],
                built_at: 5,
                build: 6,
            })),
            Event::UnitRemoved { id: 11 },
            Event::TileRemoved {
                unit: 12,
                x: 0,
                y: 9,
            },
            Event::TileRestat {
                unit: 13,
                x: 1,
                y: 1,
                ino: 77,
                mtime_ns: 88,
            },
            Event::InputRemoved { id: 14 },
            Event::Failed(FailureRecord {
                input: 15,
                unit: "2,3".into(),
                source_hash: Some(h(10)),
                error: "cannot read: boom\nsecond line".into(),
                at: 99,
            }),
            Event::Failed(FailureRecord {
                input: 16,
                unit: String::new(),
                source_hash: None,
                error: String::new(),
                at: 0,
            }),
            Event::Succeeded {
                input: 17,
                unit: "qc".into(),
            },
            Event::InputPending { id: 18 },
            Event::InputComplete { id: 19, fp: 20 },
            Event::FolderComplete {
                collection: 21,
                src_dir: 22,
                digest: h(11),
                fp: 23,
            },
        ]
    }

    #[test]
    fn every_event_round_trips() {
        let events = every_event();
        let mut e = Enc::new();
        for ev in &events {
            e.event(ev);
        }
        let mut d = Dec::new(&e.buf);
        for ev in &events {
            assert_eq!(&d.event().unwrap(), ev);
        }
        assert!(d.is_empty());
    }

    #[test]
    fn hashes_travel_as_bytes() {
        let mut e = Enc::new();
        e.hash(&h(1));
        assert_eq!(e.buf.len(), 33);
        // Upper-case hex is not what the store writes: kept verbatim.
        let mut e = Enc::new();
        e.hash(&h(1).to_uppercase());
        assert_eq!(e.buf.len(), 66);
        assert_eq!(Dec::new(&e.buf).hash().unwrap(), h(1).to_uppercase());
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics_or_huge_allocations() {
        let mut e = Enc::new();
        for ev in every_event() {
            e.event(&ev);
        }
        let decode_all = |b: &[u8]| -> Result<(), DecodeError> {
            let mut d = Dec::new(b);
            while !d.is_empty() {
                d.event()?;
            }
            Ok(())
        };
        // Every truncation fails cleanly.
        for n in 0..e.buf.len() {
            let _ = decode_all(&e.buf[..n]);
        }
        // Every single-byte change either decodes to something or fails.
        for i in 0..e.buf.len() {
            let mut b = e.buf.clone();
            b[i] ^= 0xff;
            let _ = decode_all(&b);
        }
        // A length of 2^62 tiles is refused before allocating.
        let mut e = Enc::new();
        e.u64(1 << 62);
        assert_eq!(
            Dec::new(&e.buf).len(7).unwrap_err().what,
            "length beyond the record"
        );
        assert_eq!(
            Dec::new(&[99]).event().unwrap_err().what,
            "unknown event kind"
        );
    }
}
