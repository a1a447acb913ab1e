//! What an image file's header claims, read without decoding, and whether
//! its data can possibly hold that many pixels.
//!
//! Every decode starts here ([`super::decode`]), so a header that lies — a
//! 632-byte JPEG claiming 30000×30000 pixels — fails before any pixel buffer
//! is allocated, and the engine reads the same [`Header`] to estimate a
//! job's memory before it starts ([`Header::decode_bytes`]).
//!
//! The bounds are the most any valid file of the format can compress, so
//! they never reject a real image:
//! - **JPEG** (Huffman coding): every 8×8 block of a component that a scan
//!   codes costs at least one bit (a Huffman code is at least one bit long,
//!   and a block needs at least its DC code, even in a progressive DC scan),
//!   and at least one scan codes the component with the fewest blocks. So the
//!   entropy-coded bytes are at least `blocks(smallest component) / 8`.
//!   Arithmetic-coded JPEGs have no such bound (a uniform image can code a
//!   block in far less than a bit): only [`MAX_PIXELS`] and the memory budget
//!   apply to them.
//! - **PNG**: deflate expands at most 1032:1 (a 258-byte match costs at least
//!   two bits), so the IDAT bytes are at least the filtered scanlines / 1032.
//! - **TIFF**: per strip or tile, its bytes times the compression's largest
//!   ratio (none 1, PackBits 64, deflate 1032, LZW and JPEG 4096) must cover
//!   its pixels, and every strip or tile must lie inside the file.
//!   Compressions without a useful bound (CCITT fax, zstd, …) are not checked.
//! - **BMP**: uncompressed rows are stored whole; RLE-compressed BMPs may end
//!   early by design, so they are not checked.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader};

use super::OpError;

/// Largest accepted image, in pixels (2^30, e.g. 32768×32768): a guard
/// against decompression bombs, checked from the header before any pixel
/// buffer is allocated. An RGB8 image this large already takes 3 GiB.
pub const MAX_PIXELS: u64 = 1 << 30;

/// Bytes decoders need besides their image buffers (row buffers, Huffman
/// and inflate state), added to every [`Header::decode_bytes`].
const DECODER_SLACK: u64 = 4 << 20;

/// The formats `decode` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Tiff,
    Bmp,
}

impl Format {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Tiff => "TIFF",
            Format::Bmp => "BMP",
        }
    }
}

/// What a file's header claims, checked against its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// Peak bytes of decoding it: the decoder's buffers (a progressive
    /// JPEG's coefficients, a 16-bit PNG's samples) and the RGB8 result.
    pub decode_bytes: u64,
}

/// Reads the header of a JPEG, PNG, TIFF or BMP file and checks that its data
/// can hold the pixels it claims; errors say in plain words what is wrong.
pub fn probe(bytes: &[u8]) -> Result<Header, OpError> {
    read(bytes, true)
}

/// The header alone, from the first bytes of a file (its data is not
/// checked): what a job's memory estimate needs before the whole file is
/// read. Fails if the header is not within `prefix`.
pub fn header(prefix: &[u8]) -> Result<Header, OpError> {
    read(prefix, false)
}

/// `whole`: `bytes` is the whole file, and its data is checked too.
fn read(bytes: &[u8], whole: bool) -> Result<Header, OpError> {
    if bytes.is_empty() {
        return Err(OpError("empty file (0 bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| OpError(format!("cannot read the image: {e}")))?;
    let header = match reader.format() {
        Some(ImageFormat::Jpeg) => jpeg(bytes, whole)?,
        Some(ImageFormat::Png) => png(bytes, whole)?,
        Some(ImageFormat::Tiff) => tiff(bytes, whole)?,
        Some(ImageFormat::Bmp) => bmp(bytes, whole)?,
        Some(other) => {
            return Err(OpError(format!(
                "unsupported image format (not JPEG, PNG, TIFF or BMP): the content looks like {}",
                format!("{other:?}").to_uppercase()
            )))
        }
        None => {
            return Err(OpError(
                "unsupported image format (not JPEG, PNG, TIFF or BMP)".into(),
            ))
        }
    };
    Ok(header)
}

/// Checks the pixel count against [`MAX_PIXELS`].
pub fn check_size(w: u64, h: u64, what: &str) -> Result<(), OpError> {
    if w == 0 || h == 0 {
        return Err(OpError(format!("{what} has no pixels ({w}×{h})")));
    }
    if w.saturating_mul(h) > MAX_PIXELS {
        return Err(OpError(format!(
            "image too large: {what} is {w}×{h} = {} pixels, over the limit of {MAX_PIXELS} \
             (a guard against decompression bombs)",
            w.saturating_mul(h)
        )));
    }
    Ok(())
}

/// The error of a header that claims more pixels than its data can hold.
fn lying(format: Format, w: u32, h: u32, have: u64, need: u64, why: &str) -> OpError {
    OpError(format!(
        "truncated or corrupt {name}: the header claims {w}×{h} pixels, but the file holds only \
         {have} bytes of image data, and a {name} that large needs at least {need} bytes ({why})",
        name = format.name()
    ))
}

fn corrupt(format: Format, msg: &str) -> OpError {
    OpError(format!("truncated or corrupt {}: {msg}", format.name()))
}

/// RGB8 bytes of a `w`×`h` image.
fn rgb_bytes(w: u32, h: u32) -> u64 {
    u64::from(w) * u64::from(h) * 3
}

/// The frame of a JPEG as far as its markers tell.
struct Frame {
    width: u32,
    height: u32,
    /// (horizontal, vertical) sampling factor of each component.
    sampling: Vec<(u32, u32)>,
    arithmetic: bool,
    progressive: bool,
}

impl Frame {
    /// 8×8 blocks of each component (without MCU padding).
    fn blocks(&self) -> Vec<u64> {
        let hmax = self.sampling.iter().map(|s| s.0).max().unwrap_or(1).max(1);
        let vmax = self.sampling.iter().map(|s| s.1).max().unwrap_or(1).max(1);
        self.sampling
            .iter()
            .map(|&(hs, vs)| {
                let cw = (u64::from(self.width) * u64::from(hs)).div_ceil(u64::from(hmax));
                let ch = (u64::from(self.height) * u64::from(vs)).div_ceil(u64::from(vmax));
                cw.div_ceil(8) * ch.div_ceil(8)
            })
            .collect()
    }
}

/// Walks a JPEG's markers: the frame header, the first scan's components,
/// and (`whole`) the number of scans and the bytes of entropy-coded data.
fn jpeg(bytes: &[u8], whole: bool) -> Result<Header, OpError> {
    let f = Format::Jpeg;
    if bytes.len() < 4 || bytes[0] != 0xff || bytes[1] != 0xd8 {
        return Err(corrupt(f, "no start-of-image marker"));
    }
    let walked = walk_jpeg(bytes, whole)?;
    let Some(frame) = walked.frame else {
        return Err(corrupt(
            f,
            "no frame header (image size) before the data ends",
        ));
    };
    let (w, h) = (frame.width, frame.height);
    check_size(u64::from(w), u64::from(h), "the JPEG")?;
    if frame.sampling.is_empty() || frame.sampling.iter().any(|s| s.0 == 0 || s.1 == 0) {
        return Err(corrupt(f, "the frame header has no valid components"));
    }
    let blocks = frame.blocks();
    let fewest = blocks.iter().copied().min().unwrap_or(0);
    if whole && !frame.arithmetic && walked.entropy * 8 < fewest {
        return Err(lying(
            f,
            w,
            h,
            walked.entropy,
            fewest.div_ceil(8),
            "one bit per 8×8 block of its smallest component",
        ));
    }
    // A file of several scans (progressive, or sequential per component) is
    // decoded through a buffer of every block's coefficients: 128 bytes each.
    let several = frame.progressive
        || walked.first_scan.is_some_and(|n| n < frame.sampling.len())
        || walked.scans > 1;
    let coefficients = if several {
        blocks.iter().sum::<u64>() * 128
    } else {
        0
    };
    // Four-component (CMYK/YCCK) files go through the `image` crate, which
    // keeps the four planes as well.
    let planes = if frame.sampling.len() == 4 {
        u64::from(w) * u64::from(h) * 4
    } else {
        0
    };
    Ok(Header {
        format: f,
        width: w,
        height: h,
        decode_bytes: rgb_bytes(w, h) + coefficients + planes + DECODER_SLACK,
    })
}

/// What walking a JPEG's markers found.
struct JpegWalk {
    /// The first frame header.
    frame: Option<Frame>,
    /// Scans, and bytes of entropy-coded data in them (counted only when
    /// the whole file is walked).
    scans: u64,
    entropy: u64,
    /// Components in the first scan: fewer than the frame's means several
    /// scans.
    first_scan: Option<usize>,
}

/// The markers of a JPEG after its SOI, up to its EOI or its end (`whole`),
/// else up to its first scan header.
fn walk_jpeg(bytes: &[u8], whole: bool) -> Result<JpegWalk, OpError> {
    let mut walked = JpegWalk {
        frame: None,
        scans: 0,
        entropy: 0,
        first_scan: None,
    };
    let mut i = 2;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xff {
            // Not at a marker: stray bytes (libjpeg skips them with a warning).
            i += 1;
            continue;
        }
        let m = bytes[i + 1];
        i += 2;
        match m {
            0xff => i -= 1, // fill byte
            0xd9 => break,  // end of image
            0xd8 | 0xd0..=0xd7 | 0x01 | 0x00 => {}
            _ => {
                if i + 2 > bytes.len() {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
                if len < 2 {
                    return Err(corrupt(
                        Format::Jpeg,
                        "a marker segment has an impossible length",
                    ));
                }
                let seg = &bytes[i + 2..(i + len).min(bytes.len())];
                let sof = matches!(m, 0xc0..=0xcf) && !matches!(m, 0xc4 | 0xc8 | 0xcc);
                if sof && walked.frame.is_none() && seg.len() >= 6 {
                    walked.frame = Some(frame_header(m, seg));
                }
                if m == 0xda && walked.first_scan.is_none() {
                    walked.first_scan = seg.first().map(|&n| usize::from(n));
                    if !whole {
                        break;
                    }
                }
                i += len;
                if m == 0xda {
                    walked.scans += 1;
                    let start = i.min(bytes.len());
                    let end = entropy_end(bytes, start);
                    walked.entropy += (end - start) as u64;
                    i = end;
                }
            }
        }
    }
    Ok(walked)
}

/// A frame header (SOF marker `m`, segment `seg` of at least 6 bytes).
fn frame_header(m: u8, seg: &[u8]) -> Frame {
    let n = usize::from(seg[5]);
    let sampling = seg[6..]
        .chunks_exact(3)
        .take(n)
        .map(|c| (u32::from(c[1] >> 4), u32::from(c[1] & 15)))
        .collect::<Vec<_>>();
    Frame {
        height: u32::from(u16::from_be_bytes([seg[1], seg[2]])),
        width: u32::from(u16::from_be_bytes([seg[3], seg[4]])),
        sampling,
        arithmetic: m >= 0xc9,
        progressive: matches!(m, 0xc2 | 0xc6 | 0xca | 0xce),
    }
}

/// Where a scan's entropy-coded data starting at `start` ends: at the next
/// marker that is neither a stuffed 0xff00 nor a restart marker (or the end
/// of the data).
fn entropy_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    loop {
        let Some(k) = memchr::memchr(0xff, &bytes[end..]) else {
            return bytes.len();
        };
        end += k;
        match bytes.get(end + 1) {
            Some(0x00 | 0xd0..=0xd7 | 0xff) => end += 1,
            Some(_) => return end,
            None => return bytes.len(),
        }
    }
}

/// Bytes of an `image` decoder's native buffer plus the RGB8 conversion.
fn native_plus_rgb(d: &impl ImageDecoder) -> u64 {
    let (w, h) = d.dimensions();
    let convert = if d.color_type() == image::ColorType::Rgb8 {
        0
    } else {
        rgb_bytes(w, h)
    };
    d.total_bytes() + convert + DECODER_SLACK
}

fn png(bytes: &[u8], whole: bool) -> Result<Header, OpError> {
    let f = Format::Png;
    let d = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
        .map_err(|e| corrupt(f, &e.to_string()))?;
    let (w, h) = d.dimensions();
    check_size(u64::from(w), u64::from(h), "the PNG")?;
    // Filtered scanlines: a filter byte and the packed samples of each row.
    let bits = u64::from(d.original_color_type().bits_per_pixel());
    let raw = u64::from(h) * (1 + (u64::from(w) * bits).div_ceil(8));
    let idat = png_idat_bytes(bytes);
    if whole && idat * 1032 < raw {
        return Err(lying(
            f,
            w,
            h,
            idat,
            raw.div_ceil(1032),
            "deflate expands at most 1032:1",
        ));
    }
    Ok(Header {
        format: f,
        width: w,
        height: h,
        decode_bytes: native_plus_rgb(&d),
    })
}

/// Bytes of IDAT chunk data actually present in the file.
fn png_idat_bytes(bytes: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut i = 8;
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
        let data = i + 8;
        if &bytes[i + 4..i + 8] == b"IDAT" {
            total += (bytes.len().saturating_sub(data)).min(len) as u64;
        }
        i = data.saturating_add(len).saturating_add(4);
    }
    total
}

/// The largest expansion of a TIFF compression, if it has a useful one.
fn tiff_ratio(compression: u16) -> Option<u64> {
    match compression {
        1 => Some(1),
        32773 => Some(64),
        8 | 32946 => Some(1032),
        5..=7 => Some(4096),
        _ => None,
    }
}

fn tiff(bytes: &[u8], whole: bool) -> Result<Header, OpError> {
    use tiff::decoder::{ChunkType, Decoder};
    use tiff::tags::Tag;
    let f = Format::Tiff;
    let err = |e: tiff::TiffError| corrupt(f, &e.to_string());
    let mut d = Decoder::new(Cursor::new(bytes)).map_err(err)?;
    let (w, h) = d.dimensions().map_err(err)?;
    check_size(u64::from(w), u64::from(h), "the TIFF")?;
    let tag = |d: &mut Decoder<_>, t: Tag, default: u64| -> Result<u64, OpError> {
        Ok(d.find_tag_unsigned::<u64>(t)
            .map_err(err)?
            .unwrap_or(default))
    };
    let compression = u16::try_from(tag(&mut d, Tag::Compression, 1)?).unwrap_or(0);
    let samples = tag(&mut d, Tag::SamplesPerPixel, 1)?.max(1);
    let planar = tag(&mut d, Tag::PlanarConfiguration, 1)? == 2;
    let bps = d
        .find_tag_unsigned_vec::<u64>(Tag::BitsPerSample)
        .map_err(err)?
        .unwrap_or_else(|| vec![1]);
    let bits = if planar {
        bps.first().copied().unwrap_or(1)
    } else {
        bps.iter()
            .sum::<u64>()
            .max(bps.first().copied().unwrap_or(1) * samples)
    };
    let (offsets, counts, cw, ch) = match d.get_chunk_type() {
        ChunkType::Strip => (
            Tag::StripOffsets,
            Tag::StripByteCounts,
            u64::from(w),
            tag(&mut d, Tag::RowsPerStrip, u64::from(h))?.clamp(1, u64::from(h)),
        ),
        ChunkType::Tile => (
            Tag::TileOffsets,
            Tag::TileByteCounts,
            tag(&mut d, Tag::TileWidth, u64::from(w))?.max(1),
            tag(&mut d, Tag::TileLength, u64::from(h))?.max(1),
        ),
    };
    let offsets = d.find_tag_unsigned_vec::<u64>(offsets).map_err(err)?;
    let counts = d.find_tag_unsigned_vec::<u64>(counts).map_err(err)?;
    let (Some(offsets), Some(counts)) = (offsets, counts) else {
        return Err(corrupt(f, "no strip or tile offsets"));
    };
    let len = bytes.len() as u64;
    let rows_per_plane = u64::from(h).div_ceil(ch);
    for (i, (&off, &n)) in offsets.iter().zip(&counts).enumerate().filter(|_| whole) {
        if off.saturating_add(n) > len {
            return Err(corrupt(
                f,
                &format!(
                    "strip or tile {i} lies at bytes {off}..{} but the file has {len} bytes",
                    off.saturating_add(n)
                ),
            ));
        }
        let Some(ratio) = tiff_ratio(compression) else {
            continue;
        };
        // A strip's rows (the last strip of a plane may be shorter); tiles
        // are always whole.
        let rows = if d.get_chunk_type() == ChunkType::Strip {
            let k = i as u64 % rows_per_plane;
            ch.min(u64::from(h) - k * ch)
        } else {
            ch
        };
        let raw = (cw * bits).div_ceil(8) * rows;
        if n.saturating_mul(ratio) < raw {
            return Err(lying(
                f,
                w,
                h,
                n,
                raw.div_ceil(ratio),
                &format!("for strip or tile {i} with compression {compression}"),
            ));
        }
    }
    // The `image` crate decodes into a native buffer, then converts; the
    // tiff crate decodes one strip or tile at a time beside it.
    let native = u64::from(w) * u64::from(h) * bits.div_ceil(8).max(1);
    let chunk = (cw * bits).div_ceil(8) * ch;
    Ok(Header {
        format: f,
        width: w,
        height: h,
        decode_bytes: native + rgb_bytes(w, h) + chunk + DECODER_SLACK,
    })
}

fn bmp(bytes: &[u8], whole: bool) -> Result<Header, OpError> {
    let f = Format::Bmp;
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(offset), Some(dib)) = (u32_at(10), u32_at(14)) else {
        return Err(corrupt(f, "the header ends early"));
    };
    let fields = if dib == 12 {
        // BITMAPCOREHEADER: 16-bit sizes, no compression.
        (|| {
            Some((
                u32::from(u16_at(18)?),
                u32::from(u16_at(20)?),
                u16_at(24)?,
                0,
            ))
        })()
    } else {
        (|| {
            Some((
                (u32_at(18)? as i32).unsigned_abs(),
                (u32_at(22)? as i32).unsigned_abs(),
                u16_at(28)?,
                u32_at(30)?,
            ))
        })()
    };
    let Some((w, h, bpp, compression)) = fields else {
        return Err(corrupt(f, "the header ends early"));
    };
    check_size(u64::from(w), u64::from(h), "the BMP")?;
    // Uncompressed rows (BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS) are padded
    // to 4 bytes; allow the last row's padding to be missing.
    if whole && matches!(compression, 0 | 3 | 6) {
        let row = (u64::from(w) * u64::from(bpp)).div_ceil(32) * 4;
        let need = row * u64::from(h);
        let have = (bytes.len() as u64).saturating_sub(u64::from(offset));
        if have + row < need {
            return Err(lying(f, w, h, have, need, "uncompressed rows"));
        }
    }
    let d = image::codecs::bmp::BmpDecoder::new(Cursor::new(bytes))
        .map_err(|e| corrupt(f, &e.to_string()))?;
    Ok(Header {
        format: f,
        width: w,
        height: h,
        decode_bytes: native_plus_rgb(&d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::raw_png;

    fn encoded(f: ImageFormat, img: &image::RgbImage) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut c, f)
            .unwrap();
        c.into_inner()
    }

    #[test]
    fn honest_headers_pass_with_their_sizes() {
        let img = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 9]));
        for (f, format) in [
            (ImageFormat::Png, Format::Png),
            (ImageFormat::Tiff, Format::Tiff),
            (ImageFormat::Bmp, Format::Bmp),
            (ImageFormat::Jpeg, Format::Jpeg),
        ] {
            let h = probe(&encoded(f, &img)).unwrap();
            assert_eq!((h.format, h.width, h.height), (format, 300, 200));
            assert!(h.decode_bytes >= 300 * 200 * 3, "{format:?}");
        }
        // A uniform image compresses as far as deflate can and still passes.
        let white = image::RgbImage::from_pixel(2000, 2000, image::Rgb([255; 3]));
        assert!(probe(&encoded(ImageFormat::Png, &white)).is_ok());
        let jpeg = crate::ops::encode::encode_jpeg(&white, &Default::default()).unwrap();
        assert!(probe(&jpeg).is_ok());
    }

    #[test]
    fn a_png_header_claiming_more_than_its_data_is_refused() {
        // The IHDR says 30000×30000, the data is that of a 64×64 image.
        let data: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let png = raw_png(30000, 30000, 8, 2, &data, &[]);
        let e = probe(&png).unwrap_err().0;
        assert!(e.contains("claims 30000×30000"), "{e}");
    }

    #[test]
    fn the_header_alone_comes_from_the_first_bytes() {
        let img = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 9]));
        for f in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Jpeg] {
            let bytes = encoded(f, &img);
            let full = probe(&bytes).unwrap();
            let head = header(&bytes[..bytes.len().min(1024)]).unwrap();
            assert_eq!(head, full, "{f:?}");
        }
        // A header beyond the first bytes is an error to fall back on.
        assert!(header(&encoded(ImageFormat::Png, &img)[..20]).is_err());
    }

    #[test]
    fn progressive_jpegs_count_their_coefficients() {
        let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_progressive(true).unwrap();
        let prog = c
            .compress_to_vec(turbojpeg::Image {
                pixels: img.as_raw().as_slice(),
                width: 64,
                pitch: 64 * 3,
                height: 64,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap();
        let base = crate::ops::encode::encode_jpeg(&img, &Default::default()).unwrap();
        let (p, b) = (probe(&prog).unwrap(), probe(&base).unwrap());
        assert!(p.decode_bytes > b.decode_bytes, "{p:?} {b:?}");
    }
}
