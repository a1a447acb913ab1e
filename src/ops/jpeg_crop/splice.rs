//! Writing a crop from the index: the header with the crop's dimensions,
//! then each MCU row's bits copied as they are, only the first MCU's DC
//! differences re-encoded, the bytes stuffed.

use super::huffman::Huffman;
use super::index::Indexed;
use super::{no, NotCroppable};

impl Indexed {
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
                let (part, row) = self.row(row);
                let first = (row * self.mcus_x + c0) as usize;
                u64::from(part.mcu_start(first + cw as usize)) - u64::from(part.mcu_start(first))
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
            let (part, row) = self.row(row);
            let first = (row * self.mcus_x + c0) as usize;
            let e = &part.mcus[first];
            for (c, comp) in self.components.iter().enumerate() {
                let dc = self.dc[comp.dc_table]
                    .as_ref()
                    .ok_or_else(|| no("a DC table is missing"))?;
                wr.dc(dc, e.dc_first[c] - pred[c])?;
                let end = if c + 1 < ncomp {
                    e.first[c + 1]
                } else {
                    part.mcu_start(first + 1)
                };
                wr.copy(&part.data, u64::from(e.after_dc[c]), u64::from(end))?;
            }
            let last = first + cw as usize - 1;
            if cw > 1 {
                wr.copy(
                    &part.data,
                    u64::from(part.mcu_start(first + 1)),
                    u64::from(part.mcu_start(last + 1)),
                )?;
            }
            pred = part.mcus[last].dc_last;
        }
        let mut out = wr.finish();
        out.extend_from_slice(&[0xFF, 0xD9]);
        Ok(out)
    }
}

/// Writes bits MSB first, stuffing a zero after every 0xFF byte.
pub(super) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn new(out: Vec<u8>) -> BitWriter {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// A writer whose first byte starts with the `n` (< 8) low bits of
    /// `head`: the end of what another writer wrote before it.
    pub(super) fn after(out: Vec<u8>, head: u32, n: u32) -> BitWriter {
        BitWriter {
            acc: u64::from(head) & ((1u64 << n) - 1),
            n,
            ..BitWriter::new(out)
        }
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

    /// [`BitWriter::put`] of 32 bits: the 4 whole bytes they complete are
    /// appended at once unless one is 0xFF (to be stuffed). Copies are most
    /// of a crop's and a stack's work, byte by byte before (`perf`: 6 % of
    /// a 20× build's CPU samples); user time of that build 1.09 / 1.11 s →
    /// 1.06 / 1.09 s (two interleaved sets of 6 builds, transparent huge
    /// pages off in both).
    #[inline]
    fn put_word(&mut self, v: u32) {
        // `acc` holds the `n` (< 8) bits not yet in a byte.
        let word = (((self.acc << 32) | u64::from(v)) >> self.n) as u32;
        self.acc = u64::from(v) & ((1u64 << self.n) - 1);
        // Whether a byte of `word` is 0xFF: a zero byte of its complement.
        let plain = (!word).wrapping_sub(0x0101_0101) & word & 0x8080_8080 == 0;
        self.append(&word.to_be_bytes(), plain);
    }

    /// [`BitWriter::put_word`] of 64 bits: 8 whole bytes appended at once
    /// unless one is 0xFF. The L and M crops of a 20× tissue cell took 3.4–3.7
    /// and 2.9–4.2 ms of thread CPU 32 bits at a time, 2.1–2.7 and 2.1–2.8 ms
    /// so (`cargo bench --bench engine -- crop`, one run each).
    #[inline]
    fn put_dword(&mut self, v: u64) {
        // `acc` holds the `n` (< 8) bits not yet in a byte.
        let word = if self.n == 0 {
            v
        } else {
            (self.acc << (64 - self.n)) | (v >> self.n)
        };
        self.acc = v & ((1u64 << self.n) - 1);
        // Whether a byte of `word` is 0xFF: a zero byte of its complement.
        let plain = (!word).wrapping_sub(0x0101_0101_0101_0101) & word & 0x8080_8080_8080_8080 == 0;
        self.append(&word.to_be_bytes(), plain);
    }

    /// Appends whole bytes, each 0xFF followed by a stuffed 0; `plain`:
    /// none is 0xFF, so they are appended at once.
    #[inline]
    fn append(&mut self, bytes: &[u8], plain: bool) {
        if plain {
            self.out.extend_from_slice(bytes);
            return;
        }
        for &byte in bytes {
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
    }

    /// A DC difference: its category's code, then its extra bits.
    pub(super) fn dc(&mut self, t: &Huffman, diff: i32) -> Result<(), NotCroppable> {
        let s = 32 - diff.unsigned_abs().leading_zeros();
        let (code, len) = dc_code(t, diff)?;
        self.put(u32::from(code), u32::from(len));
        let extra = if diff < 0 { diff - 1 } else { diff } as u32;
        self.put(extra, s);
        Ok(())
    }

    /// Copies bits `from..to` of `data`.
    pub(super) fn copy(&mut self, data: &[u8], from: u64, to: u64) -> Result<(), NotCroppable> {
        if to < from || to > (data.len() as u64).saturating_sub(8) * 8 {
            return Err(no("a copy past the scan"));
        }
        let mut p = from;
        // Up to a byte boundary of the source, then 64 and 32 bits at a time.
        while p < to && !p.is_multiple_of(8) {
            let take = (8 - p % 8).min(to - p) as u32;
            let byte = u32::from(data[(p / 8) as usize]);
            let v = byte >> (8 - p % 8 - u64::from(take));
            self.put(v, take);
            p += u64::from(take);
        }
        self.out.reserve(((to - p) / 8) as usize + 16);
        while to - p >= 64 {
            let b = (p / 8) as usize;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&data[b..b + 8]);
            self.put_dword(u64::from_be_bytes(bytes));
            p += 64;
        }
        while to - p >= 32 {
            let b = (p / 8) as usize;
            let v = u32::from_be_bytes([data[b], data[b + 1], data[b + 2], data[b + 3]]);
            self.put_word(v);
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

    /// The whole bytes written, leaving the bits of an unfinished last byte
    /// to the writer made [`BitWriter::after`] this one.
    pub(super) fn whole_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Pads the last byte with 1 bits (as libjpeg does) and returns the bytes.
    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad);
        }
        self.out
    }
}

/// The Huffman code of a DC difference's category, with its length.
fn dc_code(t: &Huffman, diff: i32) -> Result<(u16, u8), NotCroppable> {
    let s = 32 - diff.unsigned_abs().leading_zeros();
    match t.encode[s as usize] {
        (_, 0) => Err(no("a DC category has no code")),
        code => Ok(code),
    }
}

/// Bits a DC difference takes: its category's code, then its extra bits.
pub(super) fn dc_bits(t: &Huffman, diff: i32) -> Result<u64, NotCroppable> {
    let (_, len) = dc_code(t, diff)?;
    Ok(u64::from(len) + u64::from(32 - diff.unsigned_abs().leading_zeros()))
}
