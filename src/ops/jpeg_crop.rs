//! Lossless crops of a baseline JPEG on MCU boundaries, by splicing its
//! entropy-coded data: the crop's bytes are exactly what encoding the
//! cropped pixels with the same encoder settings gives.
//!
//! Why not libjpeg-turbo's lossless transform (`tj3Transform` with
//! `TJXOPT_CROP`), which gives the same bytes: each call decodes every
//! coefficient of the source into pre-zeroed arrays and writes each crop
//! through the compressor's back end. On a 3840² q75 4:2:0 cell of real
//! tissue (3.6 MB, the generated 20× fixture), in thread CPU time: the 16 L
//! crops took 117 ms, the 100 M crops 111 ms and 100 S crops 57 ms through
//! `tj3Transform`, against 69, 66 and 9 ms to encode their pixels — slower
//! than the pixels. Here the entropy-coded segment is scanned once per source
//! (28–37 ms) to index where each MCU starts and what its DC values are; a
//! crop then copies each MCU row's bits as they are, re-encoding only the DC
//! differences of the first MCU of each row (the one whose predecessor
//! changed), and stuffs the bytes: 7, 8 and 1.4 ms for those L, M and S
//! crops. `cargo bench --bench engine -- crop` measures it again.
//!
//! What is accepted: baseline sequential Huffman (SOF0), 8-bit, one scan of
//! all components interleaved, no restart interval — what `ops::encode`
//! writes. Anything else is [`NotCroppable`], and the caller encodes pixels.

use std::fmt;

/// Why a JPEG cannot be cropped here (the caller encodes pixels instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCroppable(pub String);

impl fmt::Display for NotCroppable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn no(why: impl Into<String>) -> NotCroppable {
    NotCroppable(why.into())
}

/// One component of the frame: its sampling factors and Huffman tables.
#[derive(Clone, Copy, Debug)]
struct Component {
    h: u8,
    v: u8,
    dc_table: usize,
    ac_table: usize,
}

/// A Huffman table: for decoding, a lookup on the next [`LOOKUP_BITS`]
/// bits and the canonical limits beyond; for encoding, code and length per
/// symbol.
#[derive(Clone)]
struct Huffman {
    /// (symbol, length) for each [`LOOKUP_BITS`]-bit prefix; length 0: longer.
    lookup: Vec<(u8, u8)>,
    /// Per code length 1..=16: the largest code + 1 of that length (left
    /// aligned to 16 bits), the first code and the index of its symbol.
    max_code: [u32; 17],
    first_code: [u32; 17],
    first_index: [usize; 17],
    symbols: Vec<u8>,
    /// Code and length of each symbol (length 0: absent).
    encode: [(u16, u8); 256],
    /// For AC tables, per [`LOOKUP_BITS`]-bit prefix: bits to skip (code and
    /// extra bits; 0 when the code is longer) and coefficients stepped over
    /// (0: end of block).
    skip: Vec<(u8, u8)>,
}

const LOOKUP_BITS: u32 = 10;

impl Huffman {
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Result<Huffman, NotCroppable> {
        let mut lookup = vec![(0u8, 0u8); 1 << LOOKUP_BITS];
        let mut max_code = [0u32; 17];
        let mut first_code = [0u32; 17];
        let mut first_index = [0usize; 17];
        let mut encode = [(0u16, 0u8); 256];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            first_code[len] = code;
            first_index[len] = k;
            for _ in 0..n {
                let sym = *symbols.get(k).ok_or_else(|| no("a DHT segment is short"))?;
                if code >= 1 << len {
                    return Err(no("a Huffman table is over-subscribed"));
                }
                encode[usize::from(sym)] = (code as u16, len as u8);
                if len as u32 <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len as u32;
                    let base = (code << shift) as usize;
                    for e in &mut lookup[base..base + (1 << shift)] {
                        *e = (sym, len as u8);
                    }
                }
                code += 1;
                k += 1;
            }
            // Codes of this length are below `code`, left-aligned to 16 bits.
            max_code[len] = code << (16 - len);
            code <<= 1;
        }
        let skip = lookup
            .iter()
            .map(|&(rs, len)| {
                let (r, s) = (rs >> 4, rs & 15);
                let step = match (r, s) {
                    (15, 0) => 16,
                    (_, 0) => 0,
                    _ => r + 1,
                };
                if len == 0 {
                    (0, 0)
                } else {
                    (len + s, step)
                }
            })
            .collect();
        Ok(Huffman {
            skip,
            lookup,
            max_code,
            first_code,
            first_index,
            symbols: symbols[..k].to_vec(),
            encode,
        })
    }

    /// Decodes one symbol from the next 16 bits `peek` (left aligned):
    /// (symbol, code length).
    #[inline]
    fn decode(&self, peek: u32) -> Option<(u8, u32)> {
        let (sym, len) = self.lookup[(peek >> (16 - LOOKUP_BITS)) as usize];
        if len != 0 {
            return Some((sym, u32::from(len)));
        }
        for len in LOOKUP_BITS as usize + 1..=16 {
            if peek < self.max_code[len] {
                let code = peek >> (16 - len);
                let i = self.first_index[len] + (code - self.first_code[len]) as usize;
                return self.symbols.get(i).map(|&s| (s, len as u32));
            }
        }
        None
    }
}

/// Where each MCU's data is, for re-encoding the first MCU of a crop row.
#[derive(Clone, Copy, Debug, Default)]
struct McuEntry {
    /// Bit offset of the MCU in the unstuffed entropy-coded data.
    start: u32,
    /// Per component: bit offset of its first block, bit offset just after
    /// that block's DC code, absolute DC of that block, and absolute DC of
    /// the component's last block in the MCU.
    first: [u32; 3],
    after_dc: [u32; 3],
    dc_first: [i32; 3],
    dc_last: [i32; 3],
}

/// A JPEG indexed for crops: its header, its unstuffed entropy-coded data
/// and where every MCU is in it.
pub struct Indexed {
    /// The bytes from SOI to the end of the SOS segment, with the offset of
    /// the SOF0 dimensions in it.
    header: Vec<u8>,
    sof_dims: usize,
    width: u32,
    height: u32,
    components: Vec<Component>,
    dc: Vec<Option<Huffman>>,
    /// MCU size in pixels and the MCU grid.
    mcu_w: u32,
    mcu_h: u32,
    mcus_x: u32,
    mcus_y: u32,
    data: Vec<u8>,
    /// Bit length of `data`'s coded content.
    bits: u64,
    mcus: Vec<McuEntry>,
}

impl fmt::Debug for Indexed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Indexed")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("mcus", &self.mcus.len())
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
            data,
            bits: 0,
            mcus: Vec::new(),
        };
        ix.scan(&parsed.ac)?;
        Ok(ix)
    }

    /// The MCU size in pixels (crops must lie on this grid).
    pub fn mcu(&self) -> (u32, u32) {
        (self.mcu_w, self.mcu_h)
    }

    /// Image width and height.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Decodes every block once, recording each MCU's entry.
    fn scan(&mut self, ac: &[Option<Huffman>]) -> Result<(), NotCroppable> {
        let n = self.mcus_x as usize * self.mcus_y as usize;
        let mut mcus = Vec::with_capacity(n);
        let mut r = BitReader::new(&self.data);
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
        self.bits = r.pos();
        self.mcus = mcus;
        Ok(())
    }

    /// The `w`×`h` square of pixels at `(x, y)`, as the JPEG the encoder
    /// would have made of those pixels. All four must be multiples of the
    /// MCU size, and the square inside the image.
    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> Result<Vec<u8>, NotCroppable> {
        let (mw, mh) = (self.mcu_w, self.mcu_h);
        let on_grid = x.is_multiple_of(mw)
            && y.is_multiple_of(mh)
            && w.is_multiple_of(mw)
            && h.is_multiple_of(mh);
        if w == 0 || h == 0 || !on_grid {
            return Err(no(format!(
                "{w}×{h} at ({x}, {y}) is not on the {mw}×{mh} MCU grid"
            )));
        }
        if u64::from(x) + u64::from(w) > u64::from(self.width)
            || u64::from(y) + u64::from(h) > u64::from(self.height)
        {
            return Err(no("the crop leaves the image"));
        }
        let (c0, r0, cw, ch) = (x / mw, y / mh, w / mw, h / mh);
        // The crop's coded bits, plus room for stuffed zeros and the
        // re-encoded DC differences (a few bytes per row): sized so that a
        // tile's buffer is not a large allocation left mostly untouched.
        let bits: u64 = (r0..r0 + ch)
            .map(|row| {
                let first = (row * self.mcus_x + c0) as usize;
                u64::from(self.mcu_start(first + cw as usize)) - u64::from(self.mcu_start(first))
            })
            .sum();
        let coded = (bits / 8) as usize;
        let mut out =
            Vec::with_capacity(self.header.len() + coded + coded / 64 + 16 * ch as usize + 64);
        out.extend_from_slice(&self.header);
        out[self.sof_dims..self.sof_dims + 2].copy_from_slice(&(h as u16).to_be_bytes());
        out[self.sof_dims + 2..self.sof_dims + 4].copy_from_slice(&(w as u16).to_be_bytes());
        let mut wr = BitWriter::new(out);
        let mut pred = [0i32; 3];
        let ncomp = self.components.len();
        for row in r0..r0 + ch {
            let first = (row * self.mcus_x + c0) as usize;
            let e = &self.mcus[first];
            for (c, comp) in self.components.iter().enumerate() {
                let dc = self.dc[comp.dc_table]
                    .as_ref()
                    .ok_or_else(|| no("a DC table is missing"))?;
                wr.dc(dc, e.dc_first[c] - pred[c])?;
                let end = if c + 1 < ncomp {
                    e.first[c + 1]
                } else {
                    self.mcu_start(first + 1)
                };
                wr.copy(&self.data, u64::from(e.after_dc[c]), u64::from(end))?;
            }
            let last = first + cw as usize - 1;
            if cw > 1 {
                wr.copy(
                    &self.data,
                    u64::from(self.mcu_start(first + 1)),
                    u64::from(self.mcu_start(last + 1)),
                )?;
            }
            pred = self.mcus[last].dc_last;
        }
        let mut out = wr.finish();
        out.extend_from_slice(&[0xFF, 0xD9]);
        Ok(out)
    }

    /// Bit offset where MCU `i` starts (the end of the data for one past the last).
    fn mcu_start(&self, i: usize) -> u32 {
        self.mcus.get(i).map_or(self.bits as u32, |e| e.start)
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

/// What the markers say.
struct Parsed {
    width: u32,
    height: u32,
    sof_dims: usize,
    hmax: u8,
    vmax: u8,
    components: Vec<Component>,
    dc: Vec<Option<Huffman>>,
    ac: Vec<Option<Huffman>>,
    scan_start: usize,
    scan_end: usize,
}

fn be16(b: &[u8], i: usize) -> Result<usize, NotCroppable> {
    match b.get(i..i + 2) {
        Some(s) => Ok(usize::from(u16::from_be_bytes([s[0], s[1]]))),
        None => Err(no("the data ends inside a marker")),
    }
}

/// A frame header: width, height, the offset of its dimensions, and per
/// component (id, h, v).
type Frame = (u32, u32, usize, Vec<(u8, u8, u8)>);

/// Reads the markers up to the scan; refuses what [`Indexed`] does not handle.
fn parse(jpeg: &[u8]) -> Result<Parsed, NotCroppable> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(no("not a JPEG"));
    }
    let mut i = 2;
    let mut tables = Tables {
        dc: vec![None, None, None, None],
        ac: vec![None, None, None, None],
    };
    let mut frame: Option<Frame> = None;
    loop {
        if jpeg.get(i) != Some(&0xFF) {
            return Err(no("a marker was expected"));
        }
        let marker = *jpeg.get(i + 1).ok_or_else(|| no("the data ends"))?;
        let len = be16(jpeg, i + 2)?;
        let seg = jpeg
            .get(i + 4..i + 2 + len)
            .ok_or_else(|| no("a segment runs past the end"))?;
        match marker {
            0xC0 => frame = Some(frame_header(seg, i + 5)?),
            0xC1..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                return Err(no("not baseline sequential Huffman"));
            }
            0xC4 => huffman_tables(seg, &mut tables)?,
            0xDD if be16(seg, 0)? != 0 => return Err(no("restart markers")),
            0xDA => {
                let frame = frame.ok_or_else(|| no("a scan before the frame header"))?;
                return scan(jpeg, seg, i + 2 + len, frame, tables);
            }
            0xD8 | 0xD9 | 0xD0..=0xD7 | 0x01 => {
                return Err(no("an unexpected marker before the scan"))
            }
            _ => {}
        }
        i += 2 + len;
    }
}

/// The Huffman tables defined so far, by class and id.
struct Tables {
    dc: Vec<Option<Huffman>>,
    ac: Vec<Option<Huffman>>,
}

/// A baseline frame header (SOF0) whose dimensions are at `sof_dims` in the
/// file: 8-bit only.
fn frame_header(seg: &[u8], sof_dims: usize) -> Result<Frame, NotCroppable> {
    if seg.first() != Some(&8) {
        return Err(no("not 8-bit"));
    }
    let height = be16(seg, 1)? as u32;
    let width = be16(seg, 3)? as u32;
    let n = usize::from(*seg.get(5).ok_or_else(|| no("short SOF"))?);
    let mut comps = Vec::new();
    for k in 0..n {
        let c = seg
            .get(6 + 3 * k..9 + 3 * k)
            .ok_or_else(|| no("short SOF"))?;
        comps.push((c[0], c[1] >> 4, c[1] & 15));
    }
    Ok((width, height, sof_dims, comps))
}

/// The tables of a DHT segment, added to (or replacing) `tables`'.
fn huffman_tables(seg: &[u8], tables: &mut Tables) -> Result<(), NotCroppable> {
    let mut k = 0;
    while k < seg.len() {
        let tc = seg[k] >> 4;
        let th = usize::from(seg[k] & 15);
        let counts: [u8; 16] = seg
            .get(k + 1..k + 17)
            .and_then(|c| c.try_into().ok())
            .ok_or_else(|| no("short DHT"))?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let symbols = seg
            .get(k + 17..k + 17 + total)
            .ok_or_else(|| no("short DHT"))?;
        let table = Huffman::new(&counts, symbols)?;
        match (tc, th) {
            (0, 0..=3) => tables.dc[th] = Some(table),
            (1, 0..=3) => tables.ac[th] = Some(table),
            _ => return Err(no("a bad DHT class or id")),
        }
        k += 17 + total;
    }
    Ok(())
}

/// The scan header (SOS segment `seg`, its data from `scan_start`): one
/// interleaved sequential scan of every component of the frame, running to
/// the end of the image.
fn scan(
    jpeg: &[u8],
    seg: &[u8],
    scan_start: usize,
    frame: Frame,
    tables: Tables,
) -> Result<Parsed, NotCroppable> {
    let (width, height, sof_dims, comps) = frame;
    let ns = usize::from(*seg.first().ok_or_else(|| no("short SOS"))?);
    if ns != comps.len() || !(1..=3).contains(&ns) {
        return Err(no("not one interleaved scan of every component"));
    }
    let mut components = Vec::new();
    for (k, &(id, h, v)) in comps.iter().enumerate() {
        let s = seg
            .get(1 + 2 * k..3 + 2 * k)
            .ok_or_else(|| no("short SOS"))?;
        if s[0] != id || !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(no("the scan's components differ from the frame's"));
        }
        components.push(Component {
            h,
            v,
            dc_table: usize::from(s[1] >> 4).min(3),
            ac_table: usize::from(s[1] & 15).min(3),
        });
    }
    let tail = seg
        .get(1 + 2 * ns..4 + 2 * ns)
        .ok_or_else(|| no("short SOS"))?;
    if tail != [0, 63, 0] {
        return Err(no("not a sequential scan"));
    }
    let hmax = components.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = components.iter().map(|c| c.v).max().unwrap_or(1);
    if ns == 1 && (components[0].h, components[0].v) != (1, 1) {
        return Err(no("a subsampled single component"));
    }
    Ok(Parsed {
        width,
        height,
        sof_dims,
        hmax,
        vmax,
        components,
        dc: tables.dc,
        ac: tables.ac,
        scan_start,
        scan_end: scan_end(jpeg, scan_start)?,
    })
}

/// Where the entropy-coded data ends: at the first marker that is not a
/// stuffed 0xFF00, which must be the EOI ending the file (what ops::encode
/// writes).
fn scan_end(jpeg: &[u8], scan_start: usize) -> Result<usize, NotCroppable> {
    let mut end = scan_start;
    loop {
        let f = memchr::memchr(0xFF, &jpeg[end..]).ok_or_else(|| no("the scan has no end"))?;
        end += f;
        match jpeg.get(end + 1) {
            Some(0x00) => end += 2,
            Some(0xD9) => break,
            _ => return Err(no("a marker inside the scan")),
        }
    }
    if end + 2 != jpeg.len() {
        return Err(no("data after the end of the image"));
    }
    Ok(end)
}

/// The entropy-coded bytes without their stuffed zeros.
fn unstuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
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

/// Writes bits MSB first, stuffing a zero after every 0xFF byte.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> BitWriter {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Appends the low `len` (≤ 32) bits of `v`.
    #[inline]
    fn put(&mut self, v: u32, len: u32) {
        if len == 0 {
            return;
        }
        self.acc = (self.acc << len) | u64::from(v & ((1u64 << len) - 1) as u32);
        self.n += len;
        while self.n >= 8 {
            self.n -= 8;
            let byte = (self.acc >> self.n) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    /// A DC difference: its category's code, then its extra bits.
    fn dc(&mut self, t: &Huffman, diff: i32) -> Result<(), NotCroppable> {
        let mag = diff.unsigned_abs();
        let s = 32 - mag.leading_zeros();
        let (code, len) = t.encode[s as usize];
        if len == 0 {
            return Err(no("a DC category has no code"));
        }
        self.put(u32::from(code), u32::from(len));
        let extra = if diff < 0 { diff - 1 } else { diff } as u32;
        self.put(extra, s);
        Ok(())
    }

    /// Copies bits `from..to` of `data`.
    fn copy(&mut self, data: &[u8], from: u64, to: u64) -> Result<(), NotCroppable> {
        if to < from || to > (data.len() as u64).saturating_sub(8) * 8 {
            return Err(no("a copy past the scan"));
        }
        let mut p = from;
        // Up to a byte boundary of the source, then 32 bits at a time.
        while p < to && !p.is_multiple_of(8) {
            let take = (8 - p % 8).min(to - p) as u32;
            let byte = u32::from(data[(p / 8) as usize]);
            let v = byte >> (8 - p % 8 - u64::from(take));
            self.put(v, take);
            p += u64::from(take);
        }
        while to - p >= 32 {
            let b = (p / 8) as usize;
            let v = u32::from_be_bytes([data[b], data[b + 1], data[b + 2], data[b + 3]]);
            self.put(v, 32);
            p += 32;
        }
        while p < to {
            let take = (to - p).min(8) as u32;
            let byte = u32::from(data[(p / 8) as usize]);
            self.put(byte >> (8 - take), take);
            p += u64::from(take);
        }
        Ok(())
    }

    /// Pads the last byte with 1 bits (as libjpeg does) and returns the bytes.
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::encode::{encode_jpeg, encode_jpeg_region};
    use crate::ops::{JpegParams, RgbImage, Subsampling};

    /// Texture with every kind of block: smooth gradients, noise (long AC
    /// runs, 0xFF bytes to stuff), hard black/white edges (large DC steps).
    fn busy(w: u32, h: u32) -> RgbImage {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        RgbImage::from_fn(w, h, |x, y| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state >> 56) as u8;
            match (x / 40 + y / 24) % 4 {
                0 => image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]),
                1 => image::Rgb([n, n.wrapping_mul(3), n ^ 0x5A]),
                2 => {
                    let v = if (x / 3 + y / 5) % 2 == 0 { 0 } else { 255 };
                    image::Rgb([v, 255 - v, v])
                }
                _ => image::Rgb([200, 120 + (n % 40), 170]),
            }
        })
    }

    fn params(quality: u8, subsampling: Subsampling) -> JpegParams {
        JpegParams {
            quality,
            subsampling,
        }
    }

    /// Every crop of `rects` from `img`'s JPEG equals encoding its pixels.
    fn assert_crops_equal_pixels(img: &RgbImage, p: &JpegParams, rects: &[(u32, u32, u32, u32)]) {
        let whole = encode_jpeg(img, p).unwrap();
        let ix = Indexed::new(&whole).unwrap();
        for &(x, y, w, h) in rects {
            let crop = ix.crop(x, y, w, h).unwrap();
            let pixels = encode_jpeg_region(img, x, y, w, h, p).unwrap();
            assert!(
                crop == pixels,
                "{w}×{h} at ({x}, {y}), q{} {:?}: {} bytes cropped, {} encoded",
                p.quality,
                p.subsampling,
                crop.len(),
                pixels.len()
            );
        }
    }

    #[test]
    fn crops_are_the_bytes_of_encoding_their_pixels() {
        let img = busy(480, 320);
        for (s, (mw, mh)) in [
            (Subsampling::S420, (16, 16)),
            (Subsampling::S422, (16, 8)),
            (Subsampling::S444, (8, 8)),
        ] {
            for q in [1, 50, 75, 90, 100] {
                let p = params(q, s);
                let rects = [
                    (0, 0, 480, 320),
                    (0, 0, 96, 96),
                    (mw, mh, mw, mh),
                    (480 - 160, 320 - 96, 160, 96),
                    (4 * mw, 2 * mh, 240, 5 * mh),
                    (0, 8 * mh, 480, 2 * mh),
                ];
                assert_crops_equal_pixels(&img, &p, &rects);
                let ix = Indexed::new(&encode_jpeg(&img, &p).unwrap()).unwrap();
                assert_eq!(ix.mcu(), (mw, mh));
            }
        }
    }

    #[test]
    fn crops_of_real_tissue_at_the_cpia_scales() {
        // The standard's geometry scaled to a real 1000² H&E image: a 960²
        // "XL" tile, its 240² "L", 96² "M" and 16² "S" children (all on the
        // 16-px grid, as 960, 384 and 96 are of 3840).
        let Some(bytes) = crate::ops::testutil::roi_file("tiatoolbox_target_image.png") else {
            return;
        };
        let img = crate::ops::decode::decode(&bytes).unwrap();
        let xl = image::imageops::crop_imm(&img, 16, 32, 960, 960).to_image();
        let mut rects = Vec::new();
        for size in [240u32, 96, 16] {
            let k = 960 / size;
            for n in 0..k * k {
                rects.push(((n % k) * size, (n / k) * size, size, size));
            }
        }
        assert_crops_equal_pixels(&xl, &params(75, Subsampling::S420), &rects);
    }

    #[test]
    fn what_is_not_exact_is_refused() {
        let img = busy(64, 64);
        let p = params(75, Subsampling::S420);
        let ix = Indexed::new(&encode_jpeg(&img, &p).unwrap()).unwrap();
        for (x, y, w, h) in [
            (8, 0, 16, 16),
            (0, 0, 24, 16),
            (0, 0, 0, 16),
            (48, 48, 32, 16),
        ] {
            assert!(ix.crop(x, y, w, h).is_err(), "{w}×{h} at ({x}, {y})");
        }
        // Not a JPEG, a truncated one, a progressive one.
        assert!(Indexed::new(b"not a jpeg").is_err());
        let whole = encode_jpeg(&img, &p).unwrap();
        assert!(Indexed::new(&whole[..whole.len() / 2]).is_err());
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_progressive(true).unwrap();
        let image = turbojpeg::Image {
            pixels: img.as_raw().as_slice(),
            width: 64,
            pitch: 64 * 3,
            height: 64,
            format: turbojpeg::PixelFormat::RGB,
        };
        let progressive = c.compress_to_vec(image).unwrap();
        let e = Indexed::new(&progressive).err().unwrap();
        assert!(e.0.contains("baseline"), "{e}");
    }
}
