//! The markers of a JPEG up to its scan: the frame, the Huffman tables and
//! the scan header, and where the entropy-coded data starts and ends. What
//! the crop does not handle (progressive, restart markers, 12-bit…) is
//! refused here.

use super::huffman::Huffman;
use super::{no, NotCroppable};

/// One component of the frame: its sampling factors and Huffman tables.
#[derive(Clone, Copy, Debug)]
pub(super) struct Component {
    pub(super) h: u8,
    pub(super) v: u8,
    pub(super) dc_table: usize,
    pub(super) ac_table: usize,
}

/// What the markers say.
pub(super) struct Parsed {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) sof_dims: usize,
    pub(super) hmax: u8,
    pub(super) vmax: u8,
    pub(super) components: Vec<Component>,
    pub(super) dc: Vec<Option<Huffman>>,
    pub(super) ac: Vec<Option<Huffman>>,
    pub(super) scan_start: usize,
    pub(super) scan_end: usize,
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
pub(super) fn parse(jpeg: &[u8]) -> Result<Parsed, NotCroppable> {
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
            (1, 0..=3) => tables.ac[th] = Some(table.with_runs(&counts)),
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
