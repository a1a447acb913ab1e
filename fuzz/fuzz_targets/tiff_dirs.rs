//! Fuzzes the TIFF/BigTIFF directory parser and the direct reader's level
//! planning (the code that turns untrusted directory bytes into offsets,
//! sizes and allocations). Seed corpus: `fuzz/corpus/tiff_dirs`
//! (regenerate with `fuzz/make_corpus.py`). The same corpus is replayed with
//! 20,000 deterministic mutations per file by the unit test
//! `slide::direct::tests::fuzz_corpus_with_mutations_never_panics`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cpia::slide::direct::fuzz_directories(data);
});
