//! The MCU index: the entropy-coded data scanned once, recording where
//! each MCU starts and the DC values a crop row must re-encode. The data is
//! unstuffed first, so the bit reader (here, as only the scan reads) and
//! the splice's copies count bits without stepping over stuffed zeros.

use std::fmt;

use super::huffman::{Huffman, Run, LOOKUP_BITS, MULTI_BITS};
use super::parse::{parse, Component};
use super::{no, NotCroppable};

/// Where each MCU's data is, for re-encoding the first MCU of a crop row.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct McuEntry {
    /// Bit offset of the MCU in the unstuffed entropy-coded data.
    pub(super) start: u32,
    /// Per component: bit offset of its first block, bit offset just after
    /// that block's DC code, absolute DC of that block, and absolute DC of
    /// the component's last block in the MCU.
    pub(super) first: [u32; 3],
    pub(super) after_dc: [u32; 3],
    pub(super) dc_first: [i32; 3],
    pub(super) dc_last: [i32; 3],
}

/// A JPEG indexed for crops: its header, its unstuffed entropy-coded data
/// and where every MCU is in it.
///
/// The data may be in parts of whole MCU rows, each coded as a scan of its
/// own (the strips of [`Indexed::stack`]): a crop re-encodes the DC
/// differences of the first MCU of each of its rows anyway, and every other
/// MCU of a row is coded the same in a strip as in the whole image, so a
/// crop reads each row from its part and the whole image's data need never
/// be joined.
pub struct Indexed {
    /// The bytes from SOI to the end of the SOS segment, with the offset of
    /// the SOF0 dimensions in it.
    pub(super) header: Vec<u8>,
    pub(super) sof_dims: usize,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) components: Vec<Component>,
    pub(super) dc: Vec<Option<Huffman>>,
    /// MCU size in pixels and the MCU grid.
    pub(super) mcu_w: u32,
    pub(super) mcu_h: u32,
    pub(super) mcus_x: u32,
    pub(super) mcus_y: u32,
    /// The entropy-coded data, top to bottom: one part for a JPEG indexed
    /// whole, one per strip for a stacked one.
    pub(super) parts: Vec<Part>,
}

/// Whole MCU rows of an image, coded as one scan.
pub(super) struct Part {
    /// The image's MCU row this part starts at.
    pub(super) row0: u32,
    /// Unstuffed entropy-coded data, then 8 zero bytes (the bit reader's
    /// loads past the end).
    pub(super) data: Vec<u8>,
    /// Bit length of `data`'s coded content.
    pub(super) bits: u64,
    /// Every MCU of the part, row by row.
    pub(super) mcus: Vec<McuEntry>,
}

/// MCU lists of dropped parts, for the next index to fill without fresh
/// memory (a few MB per strip: one strip per worker, per cell).
static SPARE_MCUS: std::sync::Mutex<Vec<Vec<McuEntry>>> = std::sync::Mutex::new(Vec::new());

/// Most lists [`SPARE_MCUS`] keeps.
const MAX_SPARE_MCUS: usize = 8;

/// An empty MCU list with room for `n`, reused when one is spare.
fn spare_mcus(n: usize) -> Vec<McuEntry> {
    let reused = SPARE_MCUS.lock().ok().and_then(|mut s| s.pop());
    let mut v = reused.unwrap_or_default();
    v.clear();
    v.reserve(n);
    v
}

impl Drop for Part {
    /// The part's buffers go back for the next index: its data to the
    /// pixel buffer pool, its MCU list to [`SPARE_MCUS`].
    fn drop(&mut self) {
        crate::ops::pool::give(std::mem::take(&mut self.data));
        let mcus = std::mem::take(&mut self.mcus);
        if let Ok(mut s) = SPARE_MCUS.lock() {
            if s.len() < MAX_SPARE_MCUS {
                s.push(mcus);
            }
        }
    }
}

impl Part {
    /// Bit offset where the part's MCU `i` starts (the end of its data for
    /// one past the last).
    pub(super) fn mcu_start(&self, i: usize) -> u32 {
        self.mcus.get(i).map_or(self.bits as u32, |e| e.start)
    }
}

impl fmt::Debug for Indexed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Indexed")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl Indexed {
    /// Parses `jpeg` and scans its entropy-coded data once.
    pub fn new(jpeg: &[u8]) -> Result<Indexed, NotCroppable> {
        let parsed = parse(jpeg)?;
        let data = unstuff(&jpeg[parsed.scan_start..parsed.scan_end]);
        let mut ix = Indexed {
            header: jpeg[..parsed.scan_start].to_vec(),
            sof_dims: parsed.sof_dims,
            width: parsed.width,
            height: parsed.height,
            mcu_w: 8 * u32::from(parsed.hmax),
            mcu_h: 8 * u32::from(parsed.vmax),
            mcus_x: parsed.width.div_ceil(8 * u32::from(parsed.hmax)),
            mcus_y: parsed.height.div_ceil(8 * u32::from(parsed.vmax)),
            components: parsed.components,
            dc: parsed.dc,
            parts: Vec::new(),
        };
        let part = ix.scan(data, &parsed.ac)?;
        ix.parts.push(part);
        Ok(ix)
    }

    /// The part holding the image's MCU row `row`, and the row's place in it.
    pub(super) fn row(&self, row: u32) -> (&Part, u32) {
        let k = self
            .parts
            .partition_point(|p| p.row0 <= row)
            .saturating_sub(1);
        let part = &self.parts[k];
        (part, row - part.row0)
    }

    /// The MCU size in pixels (crops must lie on this grid).
    pub fn mcu(&self) -> (u32, u32) {
        (self.mcu_w, self.mcu_h)
    }

    /// Image width and height.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Decodes every block of `data` (the unstuffed scan) once, recording
    /// each MCU's entry: the image as one part.
    fn scan(&self, data: Vec<u8>, ac: &[Option<Huffman>]) -> Result<Part, NotCroppable> {
        let n = self.mcus_x as usize * self.mcus_y as usize;
        let mut mcus = spare_mcus(n);
        let mut r = BitReader::new(&data);
        let mut pred = [0i32; 3];
        let comps = self.components.clone();
        let dc: Vec<&Huffman> = comps
            .iter()
            .map(|c| {
                self.dc[c.dc_table]
                    .as_ref()
                    .ok_or_else(|| no("a DC table is missing"))
            })
            .collect::<Result<_, _>>()?;
        let act: Vec<&Huffman> = comps
            .iter()
            .map(|c| {
                ac[c.ac_table]
                    .as_ref()
                    .ok_or_else(|| no("an AC table is missing"))
            })
            .collect::<Result<_, _>>()?;
        for _ in 0..n {
            let mut e = McuEntry {
                start: r.pos32()?,
                ..McuEntry::default()
            };
            for (c, comp) in comps.iter().enumerate() {
                let blocks = u32::from(comp.h) * u32::from(comp.v);
                for b in 0..blocks {
                    if b == 0 {
                        e.first[c] = r.pos32()?;
                    }
                    let s = r.symbol(dc[c])?;
                    if s > 11 {
                        return Err(no("a DC difference is out of range"));
                    }
                    let diff = extend(r.bits(u32::from(s)), u32::from(s));
                    pred[c] += diff;
                    if b == 0 {
                        e.after_dc[c] = r.pos32()?;
                        e.dc_first[c] = pred[c];
                    }
                    r.skip_ac(act[c])?;
                }
                e.dc_last[c] = pred[c];
            }
            mcus.push(e);
        }
        r.check()?;
        let bits = r.pos();
        Ok(Part {
            row0: 0,
            data,
            bits,
            mcus,
        })
    }
}

/// The value of `s` extra bits `v` of a DC difference (JPEG's EXTEND).
#[inline]
fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < 1 << (s - 1) {
        v as i32 - (1 << s) + 1
    } else {
        v as i32
    }
}

/// The entropy-coded bytes without their stuffed zeros.
fn unstuff(data: &[u8]) -> Vec<u8> {
    let mut out = crate::ops::pool::take(data.len() + 8);
    out.clear();
    let mut i = 0;
    while let Some(f) = memchr::memchr(0xFF, &data[i..]) {
        out.extend_from_slice(&data[i..=i + f]);
        i += f + 2;
        if i > data.len() {
            break;
        }
    }
    if i < data.len() {
        out.extend_from_slice(&data[i..]);
    }
    // Room for the reader's 8-byte loads past the end.
    out.extend_from_slice(&[0; 8]);
    out
}

/// Reads bits MSB first from unstuffed data, through a 64-bit buffer
/// (refilled 8 bytes at a time) so a symbol costs a shift and a lookup.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load, and the buffer: its `n` top bits are unread.
    byte: usize,
    buf: u64,
    n: u32,
    /// Bits that can be read (the data without the 8 padding bytes).
    limit: u64,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader {
            data,
            byte: 0,
            buf: 0,
            n: 0,
            limit: (data.len().saturating_sub(8) as u64) * 8,
        }
    }

    /// Bits read so far.
    #[inline]
    fn pos(&self) -> u64 {
        self.byte as u64 * 8 - u64::from(self.n)
    }

    fn pos32(&self) -> Result<u32, NotCroppable> {
        u32::try_from(self.pos()).map_err(|_| no("the scan is too long"))
    }

    /// Makes at least 56 bits available (zeros past the end of the data).
    #[inline]
    fn fill(&mut self) {
        if self.n >= 32 {
            return;
        }
        let word = match self.data.get(self.byte..self.byte + 8) {
            Some(s) => u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
            None => 0,
        };
        self.buf |= word >> self.n;
        let bytes = (63 - self.n) >> 3;
        self.byte += bytes as usize;
        self.n += bytes * 8;
    }

    /// The next 32 bits, left aligned (after [`BitReader::fill`]).
    #[inline]
    fn peek32(&self) -> u32 {
        (self.buf >> 32) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.n -= n;
    }

    fn check(&self) -> Result<(), NotCroppable> {
        if self.pos() > self.limit {
            return Err(no("the scan ends early"));
        }
        Ok(())
    }

    #[inline]
    fn symbol(&mut self, t: &Huffman) -> Result<u8, NotCroppable> {
        self.fill();
        let (s, len) = t
            .decode(self.peek32() >> 16)
            .ok_or_else(|| no("a bad Huffman code"))?;
        self.consume(len);
        Ok(s)
    }

    /// The next `n` (≤ 16) bits as a number.
    #[inline]
    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.fill();
        let v = self.peek32() >> (32 - n);
        self.consume(n);
        v
    }

    /// Skips the 63 AC coefficients of a block.
    #[inline]
    fn skip_ac(&mut self, t: &Huffman) -> Result<(), NotCroppable> {
        let mut k = 1u32;
        while k < 64 {
            // A code and its extra bits are at most 26 bits.
            self.fill();
            let peek = self.peek32();
            // Whole symbols of the next MULTI_BITS bits at once, when they
            // stay inside the block: up to its last coefficient, or an end
            // of block before it (one at k = 64 would be the next block's).
            let prefix = (peek >> (32 - MULTI_BITS)) as usize;
            if let Some(run) = t.runs.get(prefix).copied().and_then(Run::unpack) {
                let next = k + run.steps;
                if next < 64 || (next == 64 && !run.eob) {
                    self.consume(run.bits);
                    if run.eob {
                        break;
                    }
                    k = next;
                    continue;
                }
            }
            let (adv, step) = t.skip[(peek >> (32 - LOOKUP_BITS)) as usize];
            let (adv, step) = if adv != 0 {
                (u32::from(adv), u32::from(step))
            } else {
                let (rs, len) = t
                    .decode(peek >> 16)
                    .ok_or_else(|| no("a bad Huffman code"))?;
                let (r, s) = (u32::from(rs >> 4), u32::from(rs & 15));
                let step = match (r, s) {
                    (15, 0) => 16,
                    (_, 0) => 0,
                    _ => r + 1,
                };
                (len + s, step)
            };
            self.consume(adv);
            if step == 0 {
                break;
            }
            k += step;
        }
        if k > 64 {
            return Err(no("a block has more than 64 coefficients"));
        }
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::encode::encode_jpeg;
    use crate::ops::{JpegParams, RgbImage, Subsampling};

    /// An MCU entry's fields.
    type Entry = (u32, [u32; 3], [u32; 3], [i32; 3], [i32; 3]);

    /// The index of `jpeg` with or without the AC tables' runs (without:
    /// every symbol is skipped one at a time).
    fn entries(jpeg: &[u8], runs: bool) -> Vec<Entry> {
        let parsed = parse(jpeg).unwrap();
        let ac: Vec<Option<Huffman>> = (parsed.ac.iter().cloned())
            .map(|t| {
                t.map(|mut t| {
                    if !runs {
                        t.runs = vec![0; 1 << MULTI_BITS].into();
                    }
                    t
                })
            })
            .collect();
        let ix = Indexed::new(jpeg).unwrap();
        let data = unstuff(&jpeg[parsed.scan_start..parsed.scan_end]);
        let part = ix.scan(data, &ac).unwrap();
        (part.mcus.iter())
            .map(|e| (e.start, e.first, e.after_dc, e.dc_first, e.dc_last))
            .collect()
    }

    #[test]
    fn skipping_runs_of_symbols_finds_every_mcu_one_symbol_at_a_time_does() {
        // Noise (long AC runs, runs of zeros over sixteen), flat areas (an
        // end of block after the DC), edges; every quality from all
        // coefficients kept to almost none; blocks ending on their 63rd
        // coefficient (q100 noise) and on an end of block.
        let img = RgbImage::from_fn(320, 240, |x, y| {
            let n = ((x * 7919 + y * 104_729) ^ (x * y)).wrapping_mul(2_654_435_761) >> 24;
            match (x / 48 + y / 32) % 3 {
                0 => image::Rgb([n as u8, (n * 3) as u8, (n ^ 0x5A) as u8]),
                1 => image::Rgb([230, 228, 231]),
                _ => image::Rgb([
                    (x * 2) as u8,
                    (y * 3) as u8,
                    if x % 9 < 4 { 0 } else { 255 },
                ]),
            }
        });
        for subsampling in [Subsampling::S420, Subsampling::S422, Subsampling::S444] {
            for quality in [1, 30, 75, 95, 100] {
                let p = JpegParams {
                    quality,
                    subsampling,
                };
                let jpeg = encode_jpeg(&img, &p).unwrap();
                let (fast, slow) = (entries(&jpeg, true), entries(&jpeg, false));
                assert_eq!(fast.len(), slow.len());
                assert!(fast == slow, "q{quality} {subsampling:?}");
            }
        }
    }

    #[test]
    fn the_runs_of_a_table_seen_before_are_shared_and_few_are_kept() {
        let jpeg = |q| {
            let img = RgbImage::from_fn(64, 48, |x, y| {
                image::Rgb([(x * 3) as u8, (y * 5) as u8, 90])
            });
            encode_jpeg(
                &img,
                &JpegParams {
                    quality: q,
                    subsampling: Subsampling::S420,
                },
            )
            .unwrap()
        };
        // The encoder's AC tables do not change with the quality: the second
        // JPEG's tables take the runs the first one's built.
        let (a, b) = (parse(&jpeg(75)).unwrap(), parse(&jpeg(30)).unwrap());
        let (ra, rb) = (
            &a.ac[0].as_ref().unwrap().runs,
            &b.ac[0].as_ref().unwrap().runs,
        );
        assert!(std::sync::Arc::ptr_eq(ra, rb));
        assert_eq!(ra.len(), 1 << MULTI_BITS);
        // The luma and chroma tables differ, and are both kept.
        assert!(!std::sync::Arc::ptr_eq(ra, &a.ac[1].as_ref().unwrap().runs));
        assert!(super::super::huffman::kept_runs() <= super::super::huffman::MAX_KEPT_RUNS);
    }

    #[test]
    fn dropped_parts_lend_their_buffers_boundedly_and_crops_stay_exact() {
        let img = RgbImage::from_fn(256, 128, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (y * 3) as u8])
        });
        let p = JpegParams {
            quality: 75,
            subsampling: Subsampling::S420,
        };
        let jpeg = encode_jpeg(&img, &p).unwrap();
        let first = Indexed::new(&jpeg).unwrap().crop(32, 16, 64, 48).unwrap();
        for _ in 0..3 * MAX_SPARE_MCUS {
            // Each index may take a list a dropped one left, stale entries
            // and all: its crops are the same bytes.
            let ix = Indexed::new(&jpeg).unwrap();
            assert!(ix.crop(32, 16, 64, 48).unwrap() == first);
        }
        // Bounded, however many were dropped (other tests may take some).
        let held = SPARE_MCUS.lock().unwrap().len();
        assert!(held <= MAX_SPARE_MCUS, "{held}");
    }
}
