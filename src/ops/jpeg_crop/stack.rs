//! Stacking: the JPEGs of an image's horizontal strips, encoded apart (on
//! several threads), joined into the JPEG of the whole image, with its index.
//!
//! A baseline scan codes each block alone except for its DC coefficient,
//! which is the difference from the previous block of its component; a new
//! scan starts from zero. So the strips' entropy-coded data, one after the
//! other, is the whole image's — once the first DC difference of each
//! component in each strip is coded again from the last DC of the strip
//! above, as a crop re-codes the first MCU of each row ([`super::splice`]).
//! With strips on the MCU grid (4:2:0 averages 2×2 pixels inside an MCU),
//! the bytes are the one-shot encoding's (tests.rs).
//!
//! Why: a 3840² XL tile is one libjpeg-turbo call (~70 ms) and one index
//! scan (~30 ms) on one thread, while the cell's other work is spread over
//! every worker — the other core waited for them on every 40× cell and on
//! the last cell of a 20× slide.
//!
//! The strips are joined in parallel too: each strip's length in the whole
//! scan is known before any is written (its data, less its first DC codes,
//! plus those codes again), so each is written on its own thread, starting
//! with the bits of the strip above that share its first byte. A joined
//! scan of 3.6 MB took 5–12 ms on one thread while the other waited, once
//! per cell. The index keeps the strips as its parts ([`Indexed::row`]): the
//! whole image's unstuffed data and MCU entries are never copied together.

use rayon::prelude::*;

use super::index::{Indexed, Part};
use super::splice::{dc_bits, BitWriter};
use super::{no, NotCroppable};

impl Indexed {
    /// The JPEG of the image whose horizontal strips, top to bottom, the
    /// `strips` index (same width, encoder settings and header; every strip
    /// but the last a whole number of MCU rows), and its index.
    pub fn stack(strips: Vec<Indexed>) -> Result<(Vec<u8>, Indexed), NotCroppable> {
        let Some(top) = strips.first() else {
            return Err(no("no strip to stack"));
        };
        check_stackable(top, &strips)?;
        let height: u32 = strips.iter().map(|s| s.height).sum();
        let height16 = u16::try_from(height).map_err(|_| no("the stack is too tall"))?;
        let mut header = top.header.clone();
        header[top.sof_dims..top.sof_dims + 2].copy_from_slice(&height16.to_be_bytes());
        let scans = joined_scans(&strips)?;
        let coded: usize = scans.iter().map(Vec::len).sum();
        let mut jpeg = Vec::with_capacity(header.len() + coded + 2);
        jpeg.extend_from_slice(&header);
        for s in &scans {
            jpeg.extend_from_slice(s);
        }
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        let top = &strips[0];
        let mut index = Indexed {
            header,
            sof_dims: top.sof_dims,
            width: top.width,
            height,
            components: top.components.clone(),
            dc: top.dc.clone(),
            mcu_w: top.mcu_w,
            mcu_h: top.mcu_h,
            mcus_x: top.mcus_x,
            mcus_y: 0,
            parts: Vec::with_capacity(strips.len()),
        };
        for s in strips {
            let row0 = index.mcus_y;
            (index.parts).extend(s.parts.into_iter().map(|mut p| {
                p.row0 += row0;
                p
            }));
            index.mcus_y += s.mcus_y;
        }
        Ok((jpeg, index))
    }
}

/// Refuses strips that do not make one image on one MCU grid.
fn check_stackable(top: &Indexed, strips: &[Indexed]) -> Result<(), NotCroppable> {
    let same_header = |s: &Indexed| {
        s.header.len() == top.header.len()
            && s.sof_dims == top.sof_dims
            && s.header[..s.sof_dims] == top.header[..top.sof_dims]
            && s.header[s.sof_dims + 2..] == top.header[top.sof_dims + 2..]
    };
    for (k, s) in strips.iter().enumerate() {
        if !same_header(s) || s.width != top.width || s.mcu_h != top.mcu_h {
            return Err(no("the strips were not encoded alike"));
        }
        if k + 1 < strips.len() && !s.height.is_multiple_of(s.mcu_h) {
            return Err(no("a strip above another ends inside an MCU row"));
        }
        if s.parts.len() != 1 || s.parts[0].mcus.is_empty() {
            return Err(no("a strip is not one scan of MCUs"));
        }
    }
    Ok(())
}

/// The whole image's stuffed entropy-coded data, in pieces to be
/// concatenated: one per strip, written in parallel — or one, written on
/// this thread, when a strip is too short to begin the byte of the one
/// below (then its first byte holds bits of more than one strip).
pub(super) fn joined_scans(strips: &[Indexed]) -> Result<Vec<Vec<u8>>, NotCroppable> {
    let pieces = Piece::plan(strips)?;
    let Some(last) = pieces.len().checked_sub(1) else {
        return Err(no("no strip to stack"));
    };
    if pieces.iter().any(|p| p.head.is_none()) {
        let room: usize = strips.iter().map(|s| s.parts[0].data.len()).sum();
        let mut wr = BitWriter::after(Vec::with_capacity(room + room / 64 + 64), 0, 0);
        for p in &pieces {
            p.write(strips, &mut wr)?;
        }
        return Ok(vec![wr.finish()]);
    }
    pieces
        .par_iter()
        .map(|p| {
            let (bits, n) = p.head.unwrap_or_default();
            let room = strips[p.strip].parts[0].data.len();
            let mut wr = BitWriter::after(Vec::with_capacity(room + room / 64 + 64), bits, n);
            p.write(strips, &mut wr)?;
            Ok(if p.strip == last {
                wr.finish()
            } else {
                wr.whole_bytes()
            })
        })
        .collect()
}

/// One strip's share of the whole scan: where it starts and how its first
/// MCU's DC differences are coded again.
struct Piece {
    /// Which strip.
    strip: usize,
    /// The DC values its first MCU's differences are taken from: the last
    /// of the strip above (zeros for the first).
    pred: [i32; 3],
    /// The bits of the strip above in this piece's first byte (the last
    /// `n` bits of that strip's data), as `(bits, n)`; None when they are
    /// not all that strip's data as it is.
    head: Option<(u32, u32)>,
}

impl Piece {
    /// Every strip's piece.
    fn plan(strips: &[Indexed]) -> Result<Vec<Piece>, NotCroppable> {
        let mut pieces = Vec::with_capacity(strips.len());
        let mut pred = [0i32; 3];
        let mut at = 0u64;
        for (k, s) in strips.iter().enumerate() {
            let part = &s.parts[0];
            let n = (at % 8) as u32;
            let head = match k.checked_sub(1) {
                Some(above) => tail_bits(&strips[above].parts[0], n).map(|b| (b, n)),
                None => Some((0, 0)),
            };
            at += scan_bits(s, part, &pred)?;
            pieces.push(Piece {
                strip: k,
                pred,
                head,
            });
            pred = part.mcus.last().map_or(pred, |e| e.dc_last);
        }
        Ok(pieces)
    }

    /// Writes this piece's bits to `wr`.
    fn write(&self, strips: &[Indexed], wr: &mut BitWriter) -> Result<(), NotCroppable> {
        let s = &strips[self.strip];
        let part = &s.parts[0];
        let e = part.mcus[0];
        let ncomp = s.components.len();
        for (c, comp) in s.components.iter().enumerate() {
            let dc = s.dc[comp.dc_table]
                .as_ref()
                .ok_or_else(|| no("a DC table is missing"))?;
            wr.dc(dc, e.dc_first[c] - self.pred[c])?;
            let end = if c + 1 < ncomp {
                e.first[c + 1]
            } else {
                part.mcu_start(1)
            };
            wr.copy(&part.data, u64::from(e.after_dc[c]), u64::from(end))?;
        }
        wr.copy(&part.data, u64::from(part.mcu_start(1)), part.bits)
    }
}

/// The bits strip `s` (its one `part`) takes in the whole scan, its first
/// MCU's DC differences taken from `pred`.
fn scan_bits(s: &Indexed, part: &Part, pred: &[i32; 3]) -> Result<u64, NotCroppable> {
    let e = part.mcus[0];
    let mut bits = part.bits;
    for (c, comp) in s.components.iter().enumerate() {
        let dc = s.dc[comp.dc_table]
            .as_ref()
            .ok_or_else(|| no("a DC table is missing"))?;
        // The old code out, the new one in.
        bits = bits - u64::from(e.after_dc[c] - e.first[c]) + dc_bits(dc, e.dc_first[c] - pred[c])?;
    }
    Ok(bits)
}

/// The last `n` (< 8) bits of `part`'s data, when they are copied to the
/// whole scan as they are (not its first MCU's re-coded DC differences).
fn tail_bits(part: &Part, n: u32) -> Option<u32> {
    let end = part.bits;
    let from = end.checked_sub(u64::from(n))?;
    if from < u64::from(part.mcu_start(1)) {
        return None;
    }
    let mut v = 0u32;
    for p in from..end {
        let bit = (part.data[(p / 8) as usize] >> (7 - p % 8)) & 1;
        v = (v << 1) | u32::from(bit);
    }
    Some(v)
}
