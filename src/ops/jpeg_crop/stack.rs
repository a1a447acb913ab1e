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

use super::index::{Indexed, McuEntry};
use super::splice::BitWriter;
use super::{no, NotCroppable};

impl Indexed {
    /// The JPEG of the image whose horizontal strips, top to bottom, the
    /// `strips` index (same width, encoder settings and header; every strip
    /// but the last a whole number of MCU rows), and its index.
    pub fn stack(strips: &[Indexed]) -> Result<(Vec<u8>, Indexed), NotCroppable> {
        let Some(top) = strips.first() else {
            return Err(no("no strip to stack"));
        };
        check_stackable(top, strips)?;
        let height: u32 = strips.iter().map(|s| s.height).sum();
        let height16 = u16::try_from(height).map_err(|_| no("the stack is too tall"))?;
        let coded: usize = strips.iter().map(|s| s.data.len()).sum();
        let mut wr = BitWriter::unstuffed(Vec::with_capacity(coded + 64));
        let mut mcus = Vec::with_capacity(strips.iter().map(|s| s.mcus.len()).sum());
        let mut pred = [0i32; 3];
        for s in strips {
            append_strip(&mut wr, &mut mcus, s, &pred)?;
            pred = s.mcus.last().map_or(pred, |e| e.dc_last);
        }
        let bits = wr.bits();
        let mut data = wr.finish();
        let mut header = top.header.clone();
        header[top.sof_dims..top.sof_dims + 2].copy_from_slice(&height16.to_be_bytes());
        let mut jpeg = Vec::with_capacity(header.len() + data.len() + data.len() / 64 + 2);
        jpeg.extend_from_slice(&header);
        stuff_into(&mut jpeg, &data);
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        // Room for the index reader's 8-byte loads past the end.
        data.extend_from_slice(&[0; 8]);
        let index = Indexed {
            header,
            sof_dims: top.sof_dims,
            width: top.width,
            height,
            components: top.components.clone(),
            dc: top.dc.clone(),
            mcu_w: top.mcu_w,
            mcu_h: top.mcu_h,
            mcus_x: top.mcus_x,
            mcus_y: strips.iter().map(|s| s.mcus_y).sum(),
            data,
            bits,
            mcus,
        };
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
        if s.mcus.is_empty() {
            return Err(no("an empty strip"));
        }
    }
    Ok(())
}

/// Appends strip `s`'s coded data to `wr`, its first MCU's DC differences
/// coded again from `pred`, and its MCUs' entries moved to where they are now.
fn append_strip(
    wr: &mut BitWriter,
    mcus: &mut Vec<McuEntry>,
    s: &Indexed,
    pred: &[i32; 3],
) -> Result<(), NotCroppable> {
    let e = s.mcus[0];
    let at = |bits: u64| u32::try_from(bits).map_err(|_| no("the stack is too long"));
    let mut first = McuEntry {
        start: at(wr.bits())?,
        ..e
    };
    let ncomp = s.components.len();
    for (c, comp) in s.components.iter().enumerate() {
        let dc = s.dc[comp.dc_table]
            .as_ref()
            .ok_or_else(|| no("a DC table is missing"))?;
        first.first[c] = at(wr.bits())?;
        wr.dc(dc, e.dc_first[c] - pred[c])?;
        first.after_dc[c] = at(wr.bits())?;
        let end = if c + 1 < ncomp {
            e.first[c + 1]
        } else {
            s.mcu_start(1)
        };
        wr.copy(&s.data, u64::from(e.after_dc[c]), u64::from(end))?;
    }
    mcus.push(first);
    // The rest of the strip is copied as it is: its entries move by `shift`.
    let rest = u64::from(s.mcu_start(1));
    let shift = i64::try_from(wr.bits()).unwrap_or(i64::MAX) - rest as i64;
    let moved = |p: u32| at((i64::from(p) + shift) as u64);
    for e in &s.mcus[1..] {
        let mut m = *e;
        m.start = moved(e.start)?;
        for c in 0..ncomp {
            m.first[c] = moved(e.first[c])?;
            m.after_dc[c] = moved(e.after_dc[c])?;
        }
        mcus.push(m);
    }
    wr.copy(&s.data, rest, s.bits)
}

/// Appends `data` to `out` with a zero stuffed after every 0xFF byte.
fn stuff_into(out: &mut Vec<u8>, data: &[u8]) {
    let mut i = 0;
    while let Some(f) = memchr::memchr(0xFF, &data[i..]) {
        out.extend_from_slice(&data[i..=i + f]);
        out.push(0);
        i += f + 1;
    }
    out.extend_from_slice(&data[i..]);
}
