//! Lanczos-3 for the band-by-band resize, its values replayed.
//!
//! fast_image_resize computes a filter's coefficients on every call (it keeps
//! none), and a 40× cell's horizontal pass is one call per band of tile rows
//! (`slide::bands`): some 32 bands a cell, each evaluating the filter —
//! two `sin` — at the same ~50,000 points. That was 4.5 % of a 40× build's
//! CPU samples (`perf record --call-graph dwarf`: `__sin_fma` and
//! `lanczos_filter` under `ops::resize::across_into`).
//!
//! [`lanczos3`] is fast_image_resize's own Lanczos-3 (the same operations in
//! the same order, so the same bits), given to it as a custom filter. Each
//! thread records the points it was asked for and their values since
//! [`restart`]; when the next call asks for the recorded point at the same
//! place, the recorded value is returned, else it is computed and recorded.
//! A value is only ever returned for the very bits it was computed from, so
//! the coefficients — and the pixels — are the library's; the order only
//! decides how often a call is a replay.

use std::cell::RefCell;

/// Most points a thread records (16 B each): far above one band's ~50,000.
const MAX_POINTS: usize = 1 << 20;

/// The points asked for since the last [`restart`], and where the next call is.
#[derive(Default)]
struct Recording {
    points: Vec<(u64, f64)>,
    next: usize,
}

thread_local! {
    static RECORDING: RefCell<Recording> = RefCell::new(Recording::default());
}

/// Starts replaying this thread's recording from its first point: call it
/// before each resize that uses [`filter`].
pub fn restart() {
    RECORDING.with_borrow_mut(|r| r.next = 0);
}

/// [`lanczos3`] as a fast_image_resize filter, replayed.
pub fn filter() -> fast_image_resize::FilterType {
    match fast_image_resize::Filter::new("Lanczos3 (replayed)", replayed, 3.0) {
        Ok(f) => fast_image_resize::FilterType::Custom(f),
        // A support of 3.0 is valid; the library's own filter is the same.
        Err(_) => fast_image_resize::FilterType::Lanczos3,
    }
}

/// [`lanczos3`] at `x`: the recorded value when `x` is the point recorded
/// next, else computed (and recorded from here on).
fn replayed(x: f64) -> f64 {
    RECORDING.with_borrow_mut(|r| {
        let bits = x.to_bits();
        if let Some(&(seen, y)) = r.points.get(r.next) {
            if seen == bits {
                r.next += 1;
                return y;
            }
        }
        let y = lanczos3(x);
        let next = r.next;
        r.points.truncate(next);
        if next < MAX_POINTS {
            r.points.push((bits, y));
            r.next += 1;
        }
        y
    })
}

/// fast_image_resize's `sinc_filter`.
fn sinc(mut x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        x *= std::f64::consts::PI;
        x.sin() / x
    }
}

/// fast_image_resize's `lanczos_filter`: sinc windowed by sinc, support 3 —
/// also Pillow's (`libImaging/Resample.c`), which `ops::wsi::stat` uses.
pub fn lanczos3(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_value_is_the_computed_value_of_the_same_point() {
        let points: Vec<f64> = (0..5000).map(|i| f64::from(i) * 0.0013 - 3.1).collect();
        restart();
        let first: Vec<u64> = points.iter().map(|&x| replayed(x).to_bits()).collect();
        // The same points again: all replayed, the same bits.
        restart();
        let again: Vec<u64> = points.iter().map(|&x| replayed(x).to_bits()).collect();
        assert!(first == again);
        let direct: Vec<u64> = points.iter().map(|&x| lanczos3(x).to_bits()).collect();
        assert!(first == direct);
        // Other points from the middle on (another geometry): computed, never
        // a neighbour's recorded value.
        restart();
        for (i, &x) in points.iter().enumerate() {
            let x = if i < 2500 { x } else { x + 1e-9 };
            assert_eq!(replayed(x).to_bits(), lanczos3(x).to_bits(), "{x}");
        }
        assert!(RECORDING.with_borrow(|r| r.points.len()) == 5000);
    }
}
