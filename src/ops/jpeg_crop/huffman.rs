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
}

pub(super) const LOOKUP_BITS: u32 = 10;

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
                let (r, s) = (rs >> 4, rs & 15);
                let step = match (r, s) {
                    (15, 0) => 16,
                    (_, 0) => 0,
                    _ => r + 1,
                };
                if len == 0 {
                    (0, 0)
                } else {
                    (len + s, step)
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
        })
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
