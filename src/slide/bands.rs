//! A cell's region read band by band along the slide's tile rows and
//! resized as it is read ([`Slide::read_resized`]): the bytes of the region
//! read whole and resized, without the region ever existing whole.

use super::{count_read, Reader, ReaderChoice, Region, RgbImage, Slide, MAX_REGION_PIXELS};

impl Slide {
    /// `region` read and resized to `standard` (the cell's region
    /// standardized) band by band, when the direct reader reads it and the
    /// resize is made in two passes: each band of tile rows, decoded on a
    /// worker, is resized across at once, then the whole down — the bytes of
    /// reading the region whole and resizing it (`ops::resize`), but the
    /// region (a 40× cell's 7530², 170 MB of fresh memory for the kernel to
    /// clear) never exists whole. `None`: read it whole.
    pub fn read_resized(
        &self,
        choice: ReaderChoice,
        region: Region,
        standard: &crate::ops::ResizeParams,
    ) -> Option<Result<RgbImage, String>> {
        let resized = (region.w, region.h) != (standard.width, standard.height);
        // A region too large to read whole is refused as a whole read is.
        let readable = region.pixels() <= MAX_REGION_PIXELS;
        if !resized || !readable || !crate::ops::resize::in_two_passes(standard) {
            return None;
        }
        let bands = self.tile_bands(choice, region)?;
        Some(self.read_in_bands(region, &bands, standard))
    }

    /// [`Slide::read_resized`] along `bands`.
    fn read_in_bands(
        &self,
        region: Region,
        bands: &[(u32, u32)],
        standard: &crate::ops::ResizeParams,
    ) -> Result<RgbImage, String> {
        use crate::ops::{pool, resize};
        use rayon::prelude::*;
        let (n, width) = (region.w as usize, standard.width as usize);
        let mut across = pool::take(width * region.h as usize * 3);
        let mut parts = Vec::with_capacity(bands.len());
        let mut rest = &mut across[..];
        for &(first, rows) in bands {
            let (part, tail) = rest.split_at_mut((rows as usize * width * 3).min(rest.len()));
            parts.push(((first, rows), part));
            rest = tail;
        }
        parts
            .into_par_iter()
            .try_for_each(|(band, part)| -> Result<(), String> {
                let buffer = pool::take(n * band.1 as usize * 3);
                let pixels = self.read_band(region, band, buffer)?;
                let done = resize::across_into(pixels.as_raw(), (region.w, band.1), part, standard);
                pool::give(pixels.into_raw());
                done.map_err(|e| e.to_string())
            })?;
        resize::down(across, region.h, standard).map_err(|e| e.to_string())
    }

    /// The region's rows in bands along the direct reader's tile rows —
    /// `(first row, rows)` in region coordinates, in order — when `choice`
    /// reads it with the direct reader (level 0): read band by band
    /// ([`Slide::read_band`]), every tile is decoded once and the region
    /// never exists whole. `None` for a region OpenSlide reads.
    fn tile_bands(&self, choice: ReaderChoice, region: Region) -> Option<Vec<(u32, u32)>> {
        let d = self.direct.as_ref()?;
        if self.effective_reader(choice, region.level) != Reader::Direct {
            return None;
        }
        let th = d.tile_height(region.level).filter(|&t| t > 0)?;
        let mut bands = Vec::new();
        let mut row = 0u32;
        while row < region.h {
            let y = region.y + u64::from(row);
            let to_edge = th - y % th;
            let rows = u32::try_from(to_edge)
                .unwrap_or(u32::MAX)
                .min(region.h - row);
            bands.push((row, rows));
            row += rows;
        }
        Some(bands)
    }

    /// Rows `first..first + rows` of `region` (a band of
    /// [`Slide::tile_bands`]) with the direct reader, reusing `buffer`'s
    /// allocation. The band at row 0 counts the whole region as one read
    /// (`CPIA_DEBUG_COUNTERS`), so a region read in bands counts once.
    fn read_band(
        &self,
        region: Region,
        (first, rows): (u32, u32),
        buffer: Vec<u8>,
    ) -> Result<RgbImage, String> {
        let d = self
            .direct
            .as_ref()
            .ok_or_else(|| "bands are read by the direct reader only".to_string())?;
        if first == 0 {
            count_read(&region);
        }
        let band = Region {
            y: region.y + u64::from(first),
            h: rows.min(region.h.saturating_sub(first)),
            ..region
        };
        d.read_rgb_into(band, buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40× cell read band by band and resized as it is read gives the
    /// bytes of the region read whole and resized: a cell whose top is not
    /// on a tile row (bands of 150, 240, …, rows), level 0, the direct
    /// reader, Lanczos-3 as the CPIA template has it.
    #[test]
    fn a_cell_read_in_bands_is_the_cell_read_whole_and_resized() {
        use crate::fixture::{cached_fixture, fixture_cache_dir, SlideSpec};
        if crate::need::testdata().is_none() {
            return;
        }
        let path = cached_fixture(&SlideSpec::aperio_40x(5, 3, 12), &fixture_cache_dir()).unwrap();
        let slide = Slide::open(&path).unwrap();
        let region = Region {
            x: 7530,
            y: 7530,
            level: 0,
            w: 7530,
            h: 7530,
        };
        let bands = slide
            .tile_bands(ReaderChoice::Auto, region)
            .expect("the fixture is read by the direct reader");
        assert!(
            bands.len() > 2 && bands[0].1 < bands[1].1,
            "{:?}",
            &bands[..2]
        );
        let standard = crate::ops::ResizeParams {
            width: 3840,
            height: 3840,
            filter: crate::ops::Filter::Lanczos3,
        };
        let banded = slide.read_in_bands(region, &bands, &standard).unwrap();
        let resized = slide
            .read_resized(ReaderChoice::Auto, region, &standard)
            .unwrap()
            .unwrap();
        assert!(resized.as_raw() == banded.as_raw());
        let whole = slide
            .read_with(ReaderChoice::Auto, region, Vec::new())
            .unwrap();
        let once = crate::ops::resize::resize(&whole, &standard).unwrap();
        // OpenSlide's reads are not banded: read whole.
        assert!(slide
            .read_resized(ReaderChoice::OpenSlide, region, &standard)
            .is_none());
        assert!(banded.as_raw() == once.as_raw());
        // A cell over the slide's right and bottom edges (a recipe without the
        // outer ring skipped): bands partly outside are black there, as the
        // whole read is.
        let (w0, h0) = (slide.meta.width, slide.meta.height);
        let edge = Region {
            x: w0 - 3000,
            y: h0 - 2000,
            ..region
        };
        let banded = slide
            .read_resized(ReaderChoice::Auto, edge, &standard)
            .unwrap()
            .unwrap();
        let whole = slide
            .read_with(ReaderChoice::Auto, edge, Vec::new())
            .unwrap();
        let once = crate::ops::resize::resize(&whole, &standard).unwrap();
        assert!(banded.as_raw() == once.as_raw(), "the edge cell");
    }
}
