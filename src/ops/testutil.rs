//! Test helpers shared by the operator tests (compiled only under `cfg(test)`).

use std::path::PathBuf;

/// The shared real test images (`roi/` of the test data), or `None` after
/// [`crate::need::missing`] (a skip, or in CI a failure).
pub(crate) fn roi_dir() -> Option<PathBuf> {
    crate::need::testdata().map(|d| d.join("roi"))
}

/// Reads one real test image, or `None` after [`crate::need::missing`]; a
/// file missing from present test data fails the test.
pub(crate) fn roi_file(name: &str) -> Option<Vec<u8>> {
    crate::need::testdata_file(&format!("roi/{name}"))
}

/// Mean and max absolute difference of two equally long sample buffers.
pub(crate) fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / a.len().max(1) as f64, max)
}

pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = ty.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG built byte by byte (stored deflate blocks), so tests control exactly
/// what the file says: bit depth, colour type, palette, tRNS, big-endian samples.
/// `rows` is the unfiltered sample data, `h` rows of equal length.
pub(crate) fn raw_png(
    w: u32,
    h: u32,
    depth: u8,
    color_type: u8,
    rows: &[u8],
    extra: &[(&[u8; 4], Vec<u8>)],
) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    for (ty, data) in extra {
        chunk(&mut out, ty, data);
    }
    let stride = rows.len() / h.max(1) as usize;
    let mut raw = Vec::new();
    for r in rows.chunks(stride.max(1)) {
        raw.push(0); // filter: none
        raw.extend_from_slice(r);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}
