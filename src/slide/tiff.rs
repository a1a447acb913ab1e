//! A small, defensive TIFF / BigTIFF directory parser for the direct slide reader.
//!
//! Only what a tiled JPEG pyramid needs is kept (sizes, tiling, compression,
//! photometric, tile offsets and byte counts, JPEGTables, the tags that decide
//! which OpenSlide driver would claim the file). Everything read from the file
//! is bounded before it is allocated: an array must fit inside the file, the
//! number of directories and entries is capped and IFD loops are detected, so
//! a hostile file costs at most its own size in memory. The parser works over
//! any [`ReadAt`] source, so the fuzz target
//! ([`super::direct::fuzz_directories`]) can drive it from a byte slice.

use std::collections::HashSet;

/// Random-access reads; implemented for files (positional reads, so one handle
/// serves every thread without a seek lock) and for byte slices (tests, fuzzing).
pub trait ReadAt: Sync {
    /// Fills `buf` from byte `offset`; fails if the range is not entirely in the source.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// The source's length in bytes: every offset the parser accepts lies below it.
    fn len(&self) -> u64;
    /// Whether the source has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_read(
                    self,
                    &mut buf[done..],
                    offset + done as u64,
                )?;
                if n == 0 {
                    return Err(eof());
                }
                done += n;
            }
            Ok(())
        }
    }
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end")
}

/// Most directories followed: real slides have fewer than 20; a chain longer
/// than this is a loop or garbage.
pub const MAX_DIRS: usize = 1024;
/// Most entries in one directory (BigTIFF counts are 64-bit).
pub const MAX_ENTRIES: u64 = 4096;
/// Longest ASCII value kept (ImageDescription, Software); longer ones are cut.
pub const MAX_TEXT: u64 = 1 << 20;
/// Longest array read (tile offsets of a 2-gigapixel level with 240-px tiles
/// are ~40,000 entries; this allows far more while bounding memory).
pub const MAX_ARRAY: u64 = 1 << 26;

/// TIFF tag numbers the reader looks at.
pub mod tag {
    #![allow(missing_docs)]
    pub const NEW_SUBFILE_TYPE: u16 = 254;
    pub const IMAGE_WIDTH: u16 = 256;
    pub const IMAGE_LENGTH: u16 = 257;
    pub const BITS_PER_SAMPLE: u16 = 258;
    pub const COMPRESSION: u16 = 259;
    pub const PHOTOMETRIC: u16 = 262;
    pub const IMAGE_DESCRIPTION: u16 = 270;
    pub const STRIP_OFFSETS: u16 = 273;
    pub const SAMPLES_PER_PIXEL: u16 = 277;
    pub const PLANAR_CONFIG: u16 = 284;
    pub const SOFTWARE: u16 = 305;
    pub const TILE_WIDTH: u16 = 322;
    pub const TILE_LENGTH: u16 = 323;
    pub const TILE_OFFSETS: u16 = 324;
    pub const TILE_BYTE_COUNTS: u16 = 325;
    pub const JPEG_TABLES: u16 = 347;
    pub const YCBCR_SUBSAMPLING: u16 = 530;
    pub const XMP: u16 = 700;
    pub const IMAGE_DEPTH: u16 = 32997;
    pub const NDPI_FORMAT_FLAG: u16 = 65420;
}

/// One image file directory, reduced to what the reader needs. Absent tags
/// are `None` (or empty) so the caller decides the defaults, as libtiff would.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dir {
    /// File offset of the directory (for error messages).
    pub offset: u64,
    /// ImageWidth.
    pub width: Option<u64>,
    /// ImageLength.
    pub height: Option<u64>,
    /// BitsPerSample, one per sample.
    pub bits_per_sample: Vec<u64>,
    /// Compression (1 = none when absent).
    pub compression: Option<u64>,
    /// PhotometricInterpretation.
    pub photometric: Option<u64>,
    /// SamplesPerPixel.
    pub samples_per_pixel: Option<u64>,
    /// PlanarConfiguration.
    pub planar_config: Option<u64>,
    /// NewSubfileType.
    pub subfile_type: Option<u64>,
    /// TileWidth.
    pub tile_width: Option<u64>,
    /// TileLength.
    pub tile_length: Option<u64>,
    /// TileOffsets.
    pub tile_offsets: Vec<u64>,
    /// TileByteCounts.
    pub tile_byte_counts: Vec<u64>,
    /// JPEGTables (an abbreviated JPEG stream: SOI, tables, EOI).
    pub jpeg_tables: Option<Vec<u8>>,
    /// YCbCrSubSampling (horizontal, vertical).
    pub ycbcr_subsampling: Option<(u64, u64)>,
    /// ImageDepth (SGI extension Aperio writes; OpenSlide refuses != 1).
    pub image_depth: Option<u64>,
    /// ImageDescription, lossily decoded, up to [`MAX_TEXT`] bytes.
    pub description: Option<String>,
    /// Software, lossily decoded.
    pub software: Option<String>,
    /// Whether StripOffsets is present (a stripped image).
    pub has_strips: bool,
    /// Whether an XMP packet is present (Ventana puts its marker there).
    pub has_xmp: bool,
    /// Whether the NDPI format flag is present (Hamamatsu NDPI).
    pub has_ndpi_flag: bool,
}

impl Dir {
    /// Tiled the way libtiff decides it: both tile dimensions present.
    pub fn is_tiled(&self) -> bool {
        self.tile_width.is_some() && self.tile_length.is_some()
    }
}

/// A parsed file: its byte order, flavour and directory chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Tiff {
    /// `MM` (Motorola) byte order.
    pub big_endian: bool,
    /// BigTIFF (version 43, 64-bit offsets).
    pub bigtiff: bool,
    /// The directories in chain order.
    pub dirs: Vec<Dir>,
}

/// Why a file could not be parsed: `NotTiff` means "not for us" (the caller
/// falls back), `Malformed` a TIFF whose structure is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TiffError {
    /// The file does not start with a TIFF header.
    NotTiff,
    /// A TIFF with a broken directory structure; the message says where.
    Malformed(String),
}

impl std::fmt::Display for TiffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TiffError::NotTiff => f.write_str("not a TIFF file"),
            TiffError::Malformed(m) => write!(f, "malformed TIFF: {m}"),
        }
    }
}

fn bad<T>(m: String) -> Result<T, TiffError> {
    Err(TiffError::Malformed(m))
}

struct Cursor<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    be: bool,
    big: bool,
    len: u64,
}

impl<R: ReadAt + ?Sized> Cursor<'_, R> {
    fn bytes(&self, off: u64, n: u64, what: &str) -> Result<Vec<u8>, TiffError> {
        let end = off.checked_add(n);
        if end.is_none_or(|e| e > self.len) {
            return bad(format!(
                "{what}: {n} bytes at offset {off} run past the end of the file ({} bytes)",
                self.len
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.src
            .read_at(off, &mut buf)
            .map_err(|e| TiffError::Malformed(format!("{what}: reading offset {off}: {e}")))?;
        Ok(buf)
    }

    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.be {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    fn u64(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.be {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
    fn offset(&self, b: &[u8]) -> u64 {
        if self.big {
            self.u64(b)
        } else {
            u64::from(self.u32(b))
        }
    }
}

/// Size in bytes of one value of TIFF field type `typ`; `None` for unknown types.
fn type_size(typ: u16) -> Option<u64> {
    Some(match typ {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => return None,
    })
}

/// One raw entry: its type, count and the bytes of its value (read from the
/// file when they do not fit inline).
struct Entry {
    tag: u16,
    typ: u16,
    count: u64,
    data: Vec<u8>,
}

/// Parses the header and every directory of `src`.
pub fn parse<R: ReadAt + ?Sized>(src: &R) -> Result<Tiff, TiffError> {
    let len = src.len();
    let mut head = [0u8; 16];
    let n = len.min(16) as usize;
    if n < 8 || src.read_at(0, &mut head[..n]).is_err() {
        return Err(TiffError::NotTiff);
    }
    let be = match &head[..2] {
        b"II" => false,
        b"MM" => true,
        _ => return Err(TiffError::NotTiff),
    };
    let mut c = Cursor {
        src,
        be,
        big: false,
        len,
    };
    let version = c.u16(&head[2..4]);
    let first = match version {
        42 => u64::from(c.u32(&head[4..8])),
        43 => {
            if n < 16 {
                return bad("BigTIFF header is truncated".into());
            }
            let (size, zero) = (c.u16(&head[4..6]), c.u16(&head[6..8]));
            if size != 8 || zero != 0 {
                return bad(format!(
                    "BigTIFF header has offset size {size} (expected 8)"
                ));
            }
            c.big = true;
            c.u64(&head[8..16])
        }
        _ => return Err(TiffError::NotTiff),
    };
    let mut dirs = Vec::new();
    let mut seen = HashSet::new();
    let mut next = first;
    while next != 0 {
        if !seen.insert(next) {
            return bad(format!("the directory chain loops back to offset {next}"));
        }
        if dirs.len() >= MAX_DIRS {
            return bad(format!("more than {MAX_DIRS} directories"));
        }
        let (dir, after) = read_dir(&c, next, dirs.len())?;
        dirs.push(dir);
        next = after;
    }
    if dirs.is_empty() {
        return bad("no image directory".into());
    }
    Ok(Tiff {
        big_endian: be,
        bigtiff: c.big,
        dirs,
    })
}

fn read_dir<R: ReadAt + ?Sized>(
    c: &Cursor<'_, R>,
    off: u64,
    index: usize,
) -> Result<(Dir, u64), TiffError> {
    let what = format!("directory {index}");
    let (count, entry_size, head) = if c.big {
        (c.u64(&c.bytes(off, 8, &what)?), 20u64, 8u64)
    } else {
        (u64::from(c.u16(&c.bytes(off, 2, &what)?)), 12, 2)
    };
    if count > MAX_ENTRIES {
        return bad(format!("{what} at offset {off} claims {count} entries"));
    }
    let ptr = if c.big { 8 } else { 4 };
    let raw = c.bytes(off + head, count * entry_size + ptr, &what)?;
    let mut dir = Dir {
        offset: off,
        ..Dir::default()
    };
    for i in 0..count as usize {
        let e = &raw[i * entry_size as usize..(i + 1) * entry_size as usize];
        let tag = c.u16(&e[0..2]);
        let typ = c.u16(&e[2..4]);
        let (cnt, inline) = if c.big {
            (c.u64(&e[4..12]), &e[12..20])
        } else {
            (u64::from(c.u32(&e[4..8])), &e[8..12])
        };
        let Some(size) = type_size(typ) else {
            continue; // unknown types are skipped, like libtiff does
        };
        if !is_kept(tag) {
            continue;
        }
        if cnt > MAX_ARRAY {
            return bad(format!("{what}: tag {tag} claims {cnt} values"));
        }
        let total = cnt * size;
        let data = if total <= inline.len() as u64 {
            inline[..total as usize].to_vec()
        } else {
            let at = c.offset(inline);
            let take = if typ == 2 { total.min(MAX_TEXT) } else { total };
            c.bytes(at, take, &format!("{what}, tag {tag}"))?
        };
        let entry = Entry {
            tag,
            typ,
            count: cnt,
            data,
        };
        apply(c, &mut dir, &entry, &what)?;
    }
    let next = c.offset(&raw[(count * entry_size) as usize..]);
    Ok((dir, next))
}

fn is_kept(tag: u16) -> bool {
    use tag::*;
    matches!(
        tag,
        NEW_SUBFILE_TYPE
            | IMAGE_WIDTH
            | IMAGE_LENGTH
            | BITS_PER_SAMPLE
            | COMPRESSION
            | PHOTOMETRIC
            | IMAGE_DESCRIPTION
            | STRIP_OFFSETS
            | SAMPLES_PER_PIXEL
            | PLANAR_CONFIG
            | SOFTWARE
            | TILE_WIDTH
            | TILE_LENGTH
            | TILE_OFFSETS
            | TILE_BYTE_COUNTS
            | JPEG_TABLES
            | YCBCR_SUBSAMPLING
            | XMP
            | IMAGE_DEPTH
            | NDPI_FORMAT_FLAG
    )
}

/// The unsigned integers of an entry (BYTE, SHORT, LONG, LONG8, IFD, IFD8).
fn ints<R: ReadAt + ?Sized>(
    c: &Cursor<'_, R>,
    e: &Entry,
    what: &str,
) -> Result<Vec<u64>, TiffError> {
    let n = e.count as usize;
    let v = match e.typ {
        1 | 7 => e.data.iter().map(|&b| u64::from(b)).collect(),
        3 => e
            .data
            .chunks_exact(2)
            .map(|b| u64::from(c.u16(b)))
            .collect(),
        4 | 13 => e
            .data
            .chunks_exact(4)
            .map(|b| u64::from(c.u32(b)))
            .collect(),
        16 | 18 => e.data.chunks_exact(8).map(|b| c.u64(b)).collect(),
        t => {
            return bad(format!(
                "{what}: tag {} has type {t}, not an unsigned integer",
                e.tag
            ))
        }
    };
    debug_assert_eq!(Vec::<u64>::len(&v), n);
    Ok(v)
}

fn one<R: ReadAt + ?Sized>(c: &Cursor<'_, R>, e: &Entry, what: &str) -> Result<u64, TiffError> {
    ints(c, e, what)?
        .first()
        .copied()
        .ok_or_else(|| TiffError::Malformed(format!("{what}: tag {} has no value", e.tag)))
}

fn text(e: &Entry) -> String {
    let end = e.data.iter().position(|&b| b == 0).unwrap_or(e.data.len());
    String::from_utf8_lossy(&e.data[..end]).into_owned()
}

fn apply<R: ReadAt + ?Sized>(
    c: &Cursor<'_, R>,
    d: &mut Dir,
    e: &Entry,
    what: &str,
) -> Result<(), TiffError> {
    use tag::*;
    match e.tag {
        NEW_SUBFILE_TYPE => d.subfile_type = Some(one(c, e, what)?),
        IMAGE_WIDTH => d.width = Some(one(c, e, what)?),
        IMAGE_LENGTH => d.height = Some(one(c, e, what)?),
        BITS_PER_SAMPLE => d.bits_per_sample = ints(c, e, what)?,
        COMPRESSION => d.compression = Some(one(c, e, what)?),
        PHOTOMETRIC => d.photometric = Some(one(c, e, what)?),
        SAMPLES_PER_PIXEL => d.samples_per_pixel = Some(one(c, e, what)?),
        PLANAR_CONFIG => d.planar_config = Some(one(c, e, what)?),
        TILE_WIDTH => d.tile_width = Some(one(c, e, what)?),
        TILE_LENGTH => d.tile_length = Some(one(c, e, what)?),
        TILE_OFFSETS => d.tile_offsets = ints(c, e, what)?,
        TILE_BYTE_COUNTS => d.tile_byte_counts = ints(c, e, what)?,
        IMAGE_DEPTH => d.image_depth = Some(one(c, e, what)?),
        YCBCR_SUBSAMPLING => {
            let v = ints(c, e, what)?;
            if let [h, v, ..] = v[..] {
                d.ycbcr_subsampling = Some((h, v));
            }
        }
        JPEG_TABLES => d.jpeg_tables = Some(e.data.clone()),
        IMAGE_DESCRIPTION => d.description = Some(text(e)),
        SOFTWARE => d.software = Some(text(e)),
        STRIP_OFFSETS => d.has_strips = true,
        XMP => d.has_xmp = true,
        NDPI_FORMAT_FLAG => d.has_ndpi_flag = true,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little- or big-endian classic TIFF with one tiled directory.
    pub(crate) fn tiny(be: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        out.extend_from_slice(if be { b"MM" } else { b"II" });
        out.extend_from_slice(&w16(42));
        out.extend_from_slice(&w32(8));
        let entries: [(u16, u16, u32, u32); 6] = [
            (256, 4, 1, 100),
            (257, 4, 1, 50),
            (259, 3, 1, 7),
            (322, 3, 1, 64),
            (323, 3, 1, 64),
            (324, 4, 1, 200),
        ];
        out.extend_from_slice(&w16(entries.len() as u16 + 1));
        for (t, ty, n, v) in entries {
            out.extend_from_slice(&w16(t));
            out.extend_from_slice(&w16(ty));
            out.extend_from_slice(&w32(n));
            if ty == 3 {
                out.extend_from_slice(&w16(v as u16));
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&w32(v));
            }
        }
        // TileByteCounts: 2 LONGs stored out of line at offset 120.
        out.extend_from_slice(&w16(325));
        out.extend_from_slice(&w16(4));
        out.extend_from_slice(&w32(2));
        out.extend_from_slice(&w32(120));
        out.extend_from_slice(&w32(0));
        out.resize(120, 0);
        out.extend_from_slice(&w32(10));
        out.extend_from_slice(&w32(20));
        out.resize(260, 0);
        out
    }

    #[test]
    fn both_byte_orders_parse_alike() {
        let le = parse(&tiny(false)[..]).unwrap();
        let be = parse(&tiny(true)[..]).unwrap();
        assert!(be.big_endian && !le.big_endian);
        assert_eq!(le.dirs, be.dirs);
        let d = &le.dirs[0];
        assert_eq!(
            (d.width, d.height, d.compression),
            (Some(100), Some(50), Some(7))
        );
        assert_eq!(d.tile_byte_counts, vec![10, 20]);
        assert!(d.is_tiled());
    }

    #[test]
    fn loops_truncations_and_junk_are_errors_not_panics() {
        assert_eq!(parse(&b"hello world"[..]), Err(TiffError::NotTiff));
        assert_eq!(parse(&b"II"[..]), Err(TiffError::NotTiff));
        let mut looped = tiny(false);
        // Next-IFD pointer (after 7 entries) back to the first directory.
        let p = 8 + 2 + 7 * 12;
        looped[p..p + 4].copy_from_slice(&8u32.to_le_bytes());
        let e = parse(&looped[..]).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
        let t = tiny(false);
        for cut in 0..t.len() {
            let _ = parse(&t[..cut]);
        }
        let mut huge = tiny(false);
        huge[8..10].copy_from_slice(&60000u16.to_le_bytes());
        assert!(parse(&huge[..]).is_err());
    }
}
