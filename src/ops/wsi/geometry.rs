//! The standardized grid of a slide: how many level-0 pixels one tile covers,
//! and which cells are read (the outer ring is skipped).

use super::GridParams;

/// The grid of one slide under one set of grid parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    /// Level-0 pixels per tile side.
    pub read_size: u32,
    /// Whether the read region is resized to `size` (outside the tolerance).
    pub resized: bool,
    /// Columns and rows of the full grid (`floor(w / read_size)`).
    pub cols: u32,
    pub rows: u32,
    /// Cells skipped at each border.
    pub ring: u32,
}

impl Geometry {
    /// The grid of a `width`×`height` slide at `mpp` µm/px.
    pub fn new(width: u64, height: u64, mpp: f64, p: &GridParams) -> Geometry {
        let ratio = p.target_mpp / mpp;
        let (read_size, resized) = if (1.0 - p.tolerance) < ratio && ratio < (1.0 + p.tolerance) {
            (p.size, false)
        } else {
            ((f64::from(p.size) * ratio).floor().max(1.0) as u32, true)
        };
        Geometry {
            read_size,
            resized: resized && read_size != p.size,
            cols: (width / u64::from(read_size)).min(u64::from(u32::MAX)) as u32,
            rows: (height / u64::from(read_size)).min(u64::from(u32::MAX)) as u32,
            ring: p.skip_ring,
        }
    }

    /// The cells that are read, row by row: `(i, j)` with the outer ring
    /// skipped (`i` in `ring ..= cols - 1 - ring`).
    pub fn cells(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let (i0, j0) = (self.ring, self.ring);
        let i1 = self.cols.saturating_sub(self.ring);
        let j1 = self.rows.saturating_sub(self.ring);
        (j0..j1).flat_map(move |j| (i0..i1).map(move |i| (i, j)))
    }

    /// Whether `(i, j)` is in the skipped ring (for QC drawings).
    pub fn in_ring(&self, i: u32, j: u32) -> bool {
        i < self.ring || j < self.ring || i + self.ring >= self.cols || j + self.ring >= self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Filter;

    fn params() -> GridParams {
        GridParams {
            size: 3840,
            target_mpp: 0.4942,
            tolerance: 0.1,
            skip_ring: 1,
            filter: Filter::Lanczos3,
            level: super::super::LevelPolicy::Finest,
            reader: super::super::ReaderChoice::Auto,
        }
    }

    #[test]
    fn native_and_resized_read_sizes() {
        let g = Geometry::new(20_000, 16_000, 0.499, &params());
        assert_eq!((g.read_size, g.resized), (3840, false));
        assert_eq!((g.cols, g.rows), (5, 4));
        let g = Geometry::new(40_000, 30_000, 0.2520, &params());
        // floor(3840 * 0.4942 / 0.2520) = floor(7530.66...)
        assert_eq!((g.read_size, g.resized), (7530, true));
    }

    #[test]
    fn the_outer_ring_is_skipped() {
        let g = Geometry::new(5 * 3840 + 10, 4 * 3840, 0.5, &params());
        let cells: Vec<_> = g.cells().collect();
        // i in 1..=floor(w/size)-2 = 1..=3, j in 1..=2.
        assert_eq!(cells, [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)]);
        assert!(g.in_ring(0, 1) && g.in_ring(4, 1) && !g.in_ring(1, 1));
        let small = Geometry::new(100, 100, 0.5, &params());
        assert_eq!(small.cells().count(), 0);
    }
}
