//! OpenSlide's chunk grid and, where a level's translation is not a whole
//! pixel, cairo/pixman's resampling of each tile and its SATURATE
//! compositing, emulated (see the top of `direct.rs` for how close).

use std::fs::File;

use rayon::prelude::*;

use super::{decode_tile, Level};

/// The tiles OpenSlide's simple grid paints for a chunk, and their offset.
pub(super) struct Grid {
    pub(super) start_x: u64,
    pub(super) end_x: u64,
    pub(super) start_y: u64,
    pub(super) end_y: u64,
    pub(super) off_x: f64,
    pub(super) off_y: f64,
    pub(super) w: u64,
    pub(super) h: u64,
    pub(super) tile_w: u64,
    pub(super) tile_h: u64,
}

impl Grid {
    pub(super) fn new(l: &Level, fx: f64, fy: f64, w: u64, h: u64) -> Option<Grid> {
        let (tw, th) = (l.tile_w as f64, l.tile_h as f64);
        let start_x = (fx / tw) as i64;
        let start_y = (fy / th) as i64;
        let end_x = ((fx + w as f64) / tw).ceil() as i64;
        let end_y = ((fy + h as f64) / th).ceil() as i64;
        if end_x <= 0 || end_y <= 0 || start_x > l.across as i64 - 1 || start_y > l.down as i64 - 1
        {
            return None;
        }
        Some(Grid {
            start_x: start_x as u64,
            start_y: start_y as u64,
            end_x: (end_x as u64).min(l.across),
            end_y: (end_y as u64).min(l.down),
            off_x: fx - start_x as f64 * tw,
            off_y: fy - start_y as f64 * th,
            w,
            h,
            tile_w: l.tile_w,
            tile_h: l.tile_h,
        })
    }

    /// The pattern translation of tile column `tx` (cairo's `x0`).
    fn x0(&self, tx: u64) -> f64 {
        -(((tx - self.start_x) as f64 * self.tile_w as f64) - self.off_x)
    }
    fn y0(&self, ty: u64) -> f64 {
        -(((ty - self.start_y) as f64 * self.tile_h as f64) - self.off_y)
    }

    /// cairo's `_cairo_matrix_is_pixel_exact`: both translations whole in 24.8 fixed point.
    pub(super) fn pixel_exact(&self) -> bool {
        let whole = |v: f64| (v * 256.0).round_ties_even().rem_euclid(256.0) == 0.0;
        whole(self.x0(self.start_x)) && whole(self.y0(self.start_y))
    }
}

/// pixman 16.16 fixed point of a translation (cairo rounds to nearest, ties to even).
fn fixed16(v: f64) -> i64 {
    (v * 65536.0).round_ties_even() as i64
}

/// OpenSlide's non-whole-pixel case: every tile resampled by pixman with
/// [`box_filter`] (REPEAT_NONE: transparent outside the tile) and SATURATE-composited in
/// OpenSlide's order (last row first, last column first) into a premultiplied
/// ARGB buffer, then un-premultiplied like openslide-python.
pub(super) fn composite_bilinear(
    l: &Level,
    file: &File,
    g: &Grid,
    out: &mut [u8],
    stride: usize,
) -> Result<(), String> {
    let cols: Vec<u64> = (g.start_x..g.end_x).collect();
    let rows: Vec<u64> = (g.start_y..g.end_y).collect();
    let coords: Vec<(u64, u64)> = rows
        .iter()
        .flat_map(|&ty| cols.iter().map(move |&tx| (tx, ty)))
        .collect();
    let tiles: Vec<Vec<u8>> = coords
        .par_iter()
        .map(|&(tx, ty)| decode_tile(l, file, tx, ty))
        .collect::<Result<_, _>>()?;
    let ncols = cols.len();
    let (tw, th) = (g.tile_w as i64, g.tile_h as i64);
    let (w, h) = (g.w as usize, g.h as usize);
    let filt = box_filter();
    let filt = &filt;
    let mut argb = vec![0u8; w * h * 4];
    argb.par_chunks_mut(w * 4)
        .enumerate()
        .for_each(|(j, drow)| {
            for (ri, &ty) in rows.iter().enumerate().rev() {
                let (by, py) = phase(fixed16(g.y0(ty)));
                let y1 = j as i64 + by;
                if y1 < -1 || y1 >= th {
                    continue;
                }
                let vh = (l.height - ty * g.tile_h).min(g.tile_h) as i64;
                for (ci, &tx) in cols.iter().enumerate().rev() {
                    let tile = &tiles[ri * ncols + ci];
                    let vw = (l.width - tx * g.tile_w).min(g.tile_w) as i64;
                    let (bx, px) = phase(fixed16(g.x0(tx)));
                    let i0 = (-1 - bx).max(0);
                    let i1 = (tw - 1 - bx).min(w as i64 - 1);
                    let pix = |u: i64, v: i64| -> [i64; 4] {
                        if u < 0 || v < 0 || u >= vw || v >= vh {
                            [0; 4]
                        } else {
                            let s = ((v * tw + u) * 3) as usize;
                            [
                                i64::from(tile[s]),
                                i64::from(tile[s + 1]),
                                i64::from(tile[s + 2]),
                                255,
                            ]
                        }
                    };
                    let (fx, fy) = (filt[px], filt[py]);
                    let f = [
                        (fy[0] * fx[0] + 0x8000) >> 16,
                        (fy[0] * fx[1] + 0x8000) >> 16,
                        (fy[1] * fx[0] + 0x8000) >> 16,
                        (fy[1] * fx[1] + 0x8000) >> 16,
                    ];
                    for i in i0..=i1 {
                        let x1 = i + bx;
                        let (a, b, c, d) = (
                            pix(x1, y1),
                            pix(x1 + 1, y1),
                            pix(x1, y1 + 1),
                            pix(x1 + 1, y1 + 1),
                        );
                        let mut s = [0u32; 4];
                        for k in 0..4 {
                            let acc = a[k] * f[0] + b[k] * f[1] + c[k] * f[2] + d[k] * f[3];
                            s[k] = ((acc + 0x8000) >> 16).clamp(0, 255) as u32;
                        }
                        let dp = &mut drow[i as usize * 4..i as usize * 4 + 4];
                        saturate(dp, s);
                    }
                }
            }
        });
    for (j, row) in argb.chunks_exact(w * 4).enumerate() {
        let o = &mut out[j * stride * 3..j * stride * 3 + w * 3];
        for (p, q) in row.chunks_exact(4).zip(o.chunks_exact_mut(3)) {
            let a = u32::from(p[3]);
            match a {
                255 => q.copy_from_slice(&p[..3]),
                0 => q.copy_from_slice(&[0, 0, 0]),
                a => {
                    for k in 0..3 {
                        q[k] = ((u32::from(p[k]) * 255) / a).min(255) as u8;
                    }
                }
            }
        }
    }
    Ok(())
}

/// cairo 1.16 paints a fractionally translated surface with its GOOD filter:
/// a pixman separable convolution of a box kernel of radius 1 (a tent: linear
/// interpolation) with 256 phases, 16.16 weights built as cairo's `get_filter` does.
fn box_filter() -> Vec<[i64; 2]> {
    (0..256)
        .map(|p| {
            let frac = (f64::from(p) + 0.5) / 256.0;
            let x1 = (frac - 1.5).ceil() - frac + 0.5;
            let k = |x: f64| (1.0 - x).min(1.0 + x).clamp(0.0, 1.0);
            let v = [k(x1), k(x1 + 1.0)];
            let total = 1.0 / (v[0] + v[1]);
            let mut q = v.map(|v| ((v * 65536.0) as i32) as f64);
            q = q.map(|q| ((q * total) as i32) as f64);
            let mut q = q.map(|q| q as i64);
            q[1] += 65536 - (q[0] + q[1]);
            q
        })
        .collect()
}

/// pixman's separable-convolution sampling of destination pixel 0 under a
/// 16.16 translation `t`: (first source tap, filter phase). Pixel `i` uses
/// taps `first + i` and `first + i + 1` with the same phase.
fn phase(t: i64) -> (i64, usize) {
    let v = 0x8000 + t; // the destination pixel centre, translated
    let v = ((v >> 8) << 8) + 128; // middle of its phase
    let px = ((v & 0xffff) >> 8) as usize;
    (((v - 1 - 0x8000) >> 16), px)
}

/// pixman's SATURATE combiner on one premultiplied pixel (`[r, g, b, a]`).
fn saturate(d: &mut [u8], s: [u32; 4]) {
    let sa = s[3];
    let da = 255 - u32::from(d[3]);
    let s = if sa > da {
        let f = (da * 255 + sa / 2) / sa; // DIV_UN8
        s.map(|c| {
            let t = c * f + 0x80;
            (t + (t >> 8)) >> 8
        })
    } else {
        s
    };
    for k in 0..4 {
        d[k] = (u32::from(d[k]) + s[k]).min(255) as u8;
    }
}
