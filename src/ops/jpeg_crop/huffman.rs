//! A JPEG Huffman table, both ways: decoding symbols while the index scans,
//! encoding DC differences while a crop is spliced.

use super::{no, NotCroppable};

/// A Huffman table: for decoding, a lookup on the next [`LOOKUP_BITS`]
/// bits and the canonical limits beyond; for encoding, code and length per
/// symbol.
#[derive(Clone)]
pub(super) struct Huffman {
    /// (symbol, length) for each [`LOOKUP_BITS`]-bit prefix; length 0: longer.
    lookup: Vec<(u8, u8)>,
    /// Per code length 1..=16: the largest code + 1 of that length (left
    /// aligned to 16 bits), the first code and the index of its symbol.
    max_code: [u32; 17],
    first_code: [u32; 17],
    first_index: [usize; 17],
    symbols: Vec<u8>,
    /// Code and length of each symbol (length 0: absent).
    pub(super) encode: [(u16, u8); 256],
    /// For AC tables, per [`LOOKUP_BITS`]-bit prefix: bits to skip (code and
    /// extra bits; 0 when the code is longer) and coefficients stepped over
    /// (0: end of block).
    pub(super) skip: Vec<(u8, u8)>,
    /// For AC tables, per [`MULTI_BITS`]-bit prefix: every whole symbol (code
    /// and extra bits) the prefix holds, up to and including an end of block,
    /// as a [`Run`] packed by [`Run::pack`] (0: not even one symbol).
    pub(super) runs: Runs,
}

pub(super) const LOOKUP_BITS: u32 = 10;

/// Bits of the lookup that skips several AC symbols at once. Scanning the
/// 20× fixture's five XL tiles (3.3 MB each, q75 4:2:0, real tissue), best
/// of 15: one symbol at a time 26.6 ms a tile; 11 or 12 bits 22.4 ms; 14
/// bits 18.0 ms; 15 bits 18.5 ms; 16 bits 19.4 ms (larger tables, more
/// cache misses). Two AC tables of 14 bits are 64 KB.
pub(super) const MULTI_BITS: u32 = 14;
// A prefix is read from 16 bits (`Huffman::run`), and a run's bits are
// packed in 5 (`Run::pack`).
const _: () = assert!(MULTI_BITS <= 16);

/// The [`Huffman::runs`] of one table.
type Runs = std::sync::Arc<[u16]>;

/// Runs of the AC tables seen last, by their DHT counts and symbols.
static RUNS: std::sync::Mutex<Vec<(Vec<u8>, Runs)>> = std::sync::Mutex::new(Vec::new());

/// Most tables whose runs [`RUNS`] keeps.
pub(super) const MAX_KEPT_RUNS: usize = 4;

/// How many tables' runs [`RUNS`] holds (at most [`MAX_KEPT_RUNS`]).
#[cfg(test)]
pub(super) fn kept_runs() -> usize {
    RUNS.lock().map_or(0, |kept| kept.len())
}

/// Whole AC symbols at the start of a [`MULTI_BITS`]-bit prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    /// Bits they take (codes and extra bits), 1..=[`MULTI_BITS`].
    pub(super) bits: u32,
    /// Coefficients they step over (an end of block steps over none).
    pub(super) steps: u32,
    /// Whether the last is an end of block.
    pub(super) eob: bool,
}

impl Run {
    fn pack(self) -> u16 {
        debug_assert!(self.bits < 32 && self.steps < 128);
        (self.bits | self.steps << 5 | u32::from(self.eob) << 12) as u16
    }

    /// The run packed in `v`; `None` for 0 (no whole symbol).
    #[inline]
    pub(super) fn unpack(v: u16) -> Option<Run> {
        let v = u32::from(v);
        (v != 0).then_some(Run {
            bits: v & 31,
            steps: (v >> 5) & 127,
            eob: v & (1 << 12) != 0,
        })
    }
}

/// Coefficients an AC symbol `rs` steps over: its zero run and itself, 16
/// for a run of sixteen zeros, 0 for an end of block.
fn ac_step(rs: u8) -> u8 {
    match (rs >> 4, rs & 15) {
        (15, 0) => 16,
        (_, 0) => 0,
        (r, _) => r + 1,
    }
}

impl Huffman {
    pub(super) fn new(counts: &[u8; 16], symbols: &[u8]) -> Result<Huffman, NotCroppable> {
        let mut lookup = vec![(0u8, 0u8); 1 << LOOKUP_BITS];
        let mut max_code = [0u32; 17];
        let mut first_code = [0u32; 17];
        let mut first_index = [0usize; 17];
        let mut encode = [(0u16, 0u8); 256];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            first_code[len] = code;
            first_index[len] = k;
            for _ in 0..n {
                let sym = *symbols.get(k).ok_or_else(|| no("a DHT segment is short"))?;
                if code >= 1 << len {
                    return Err(no("a Huffman table is over-subscribed"));
                }
                encode[usize::from(sym)] = (code as u16, len as u8);
                if len as u32 <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len as u32;
                    let base = (code << shift) as usize;
                    for e in &mut lookup[base..base + (1 << shift)] {
                        *e = (sym, len as u8);
                    }
                }
                code += 1;
                k += 1;
            }
            // Codes of this length are below `code`, left-aligned to 16 bits.
            max_code[len] = code << (16 - len);
            code <<= 1;
        }
        let skip = lookup
            .iter()
            .map(|&(rs, len)| {
                if len == 0 {
                    (0, 0)
                } else {
                    (len + (rs & 15), ac_step(rs))
                }
            })
            .collect();
        Ok(Huffman {
            skip,
            lookup,
            max_code,
            first_code,
            first_index,
            symbols: symbols[..k].to_vec(),
            encode,
            runs: std::sync::Arc::from(Vec::new()),
        })
    }

    /// This table with its [`Huffman::runs`], for scanning AC coefficients.
    /// Building them is a decode of every prefix (16 K of them), so they
    /// are kept for the tables seen last: every JPEG `ops::encode` writes
    /// has the same two AC tables.
    pub(super) fn with_runs(mut self, counts: &[u8; 16]) -> Huffman {
        let mut key = counts.to_vec();
        key.extend_from_slice(&self.symbols);
        let cached = RUNS.lock().ok().and_then(|kept| {
            kept.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, runs)| runs.clone())
        });
        self.runs = cached.unwrap_or_else(|| {
            let runs: Runs = (0..1u32 << MULTI_BITS)
                .map(|prefix| self.run(prefix).map_or(0, Run::pack))
                .collect();
            // (Two threads may both have built them: kept once.)
            if let Ok(mut kept) = RUNS.lock() {
                if !kept.iter().any(|(k, _)| *k == key) {
                    if kept.len() == MAX_KEPT_RUNS {
                        kept.remove(0);
                    }
                    kept.push((key, runs.clone()));
                }
            }
            runs
        });
        self
    }

    /// The whole AC symbols at the start of `prefix` ([`MULTI_BITS`] bits),
    /// decoded one by one as the scan would, stopping after an end of block.
    fn run(&self, prefix: u32) -> Option<Run> {
        let mut run = Run {
            bits: 0,
            steps: 0,
            eob: false,
        };
        while !run.eob {
            // The bits not yet taken, left aligned to 16 (zeros after).
            let left = MULTI_BITS - run.bits;
            let peek = (prefix << (16 - MULTI_BITS + run.bits)) & 0xFFFF;
            let Some((rs, len)) = self.decode(peek) else {
                break;
            };
            let bits = len + u32::from(rs & 15);
            if bits > left {
                break;
            }
            let step = u32::from(ac_step(rs));
            // The scan takes a run only inside one block (64 coefficients),
            // and [`Run::pack`] keeps 7 bits of steps: codes holding more (a
            // hostile table's, such as a 1-bit run of sixteen zeros) end the
            // run here rather than wrap into a small count.
            if run.steps + step > 64 {
                break;
            }
            run.bits += bits;
            run.steps += step;
            run.eob = step == 0;
        }
        (run.bits > 0).then_some(run)
    }

    /// Decodes one symbol from the next 16 bits `peek` (left aligned):
    /// (symbol, code length).
    #[inline]
    pub(super) fn decode(&self, peek: u32) -> Option<(u8, u32)> {
        let (sym, len) = self.lookup[(peek >> (16 - LOOKUP_BITS)) as usize];
        if len != 0 {
            return Some((sym, u32::from(len)));
        }
        for len in LOOKUP_BITS as usize + 1..=16 {
            if peek < self.max_code[len] {
                let code = peek >> (16 - len);
                let i = self.first_index[len] + (code - self.first_code[len]) as usize;
                return self.symbols.get(i).map(|&s| (s, len as u32));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_packs_whole_even_when_a_hostile_table_holds_many_zero_runs() {
        // '0': a run of sixteen zeros, '10': end of block. Fourteen zero
        // bits would be 224 coefficients: more than a block, and more than
        // 7 bits of steps.
        let mut counts = [0u8; 16];
        counts[0] = 1;
        counts[1] = 1;
        let t = Huffman::new(&counts, &[0xF0, 0x00])
            .unwrap()
            .with_runs(&counts);
        for prefix in 0..1u32 << MULTI_BITS {
            let run = t.run(prefix);
            assert_eq!(
                Run::unpack(t.runs[prefix as usize]),
                run,
                "prefix {prefix:014b}"
            );
            assert!(
                run.is_none_or(|r| r.steps <= 64),
                "prefix {prefix:014b}: {run:?}"
            );
        }
        let zeros = Some(Run {
            bits: 4,
            steps: 64,
            eob: false,
        });
        assert_eq!(Run::unpack(t.runs[0]), zeros);
    }
}
