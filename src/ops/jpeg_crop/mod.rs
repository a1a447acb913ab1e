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
//! (28–37 ms; about a third less since it skips whole runs of AC symbols per
//! lookup, `huffman::MULTI_BITS`) to index where each MCU starts and what its
//! DC values are; a
//! crop then copies each MCU row's bits as they are, re-encoding only the DC
//! differences of the first MCU of each row (the one whose predecessor
//! changed), and stuffs the bytes: 7, 8 and 1.4 ms for those L, M and S
//! crops. `cargo bench --bench engine -- crop` measures it again.
//!
//! What is accepted: baseline sequential Huffman (SOF0), 8-bit, one scan of
//! all components interleaved, no restart interval — what `ops::encode`
//! writes. Anything else is [`NotCroppable`], and the caller encodes pixels.
//!
//! A file per part: `parse.rs` reads the markers up to the scan (and refuses
//! what is not accepted), `huffman.rs` holds a table both ways (decoding and
//! encoding), `index.rs` scans the entropy-coded data once into [`Indexed`]
//! (where every MCU starts, and its DC values), `splice.rs` writes a crop
//! from that index ([`Indexed::crop`]), `stack.rs` joins the JPEGs of an
//! image's strips, encoded apart, into the image's ([`Indexed::stack`]).
//! Tests in `tests.rs`.

use std::fmt;

/// Why a JPEG cannot be cropped here (the caller encodes pixels instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCroppable(pub String);

impl fmt::Display for NotCroppable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A [`NotCroppable`] saying `why`.
fn no(why: impl Into<String>) -> NotCroppable {
    NotCroppable(why.into())
}

mod huffman;
mod index;
mod parse;
mod splice;
mod stack;

pub use index::Indexed;

#[cfg(test)]
mod tests;
