//! Q4_K and Q6_K repacked at load eight rows at a time, so one pass over a group's blocks
//! serves eight rows and every token of a step.
//!
//! In a repacked block four elements of each of eight rows sit side by side: one 32-byte vector
//! holds a four-element chunk of eight rows, and a broadcast of the token's four bytes meets
//! all of them in one `maddubs`. The single-row kernels spend most of their instructions on
//! unpacking a super-block and summing across lanes for one row and one token; here that is
//! done once per eight rows, and the scales, decoded once at load, apply to eight rows at a
//! time. The integer sums are exact in any order, so the outputs are the single-row kernels'
//! bit for bit as long as the float steps are theirs: Q4_K takes llama.cpp's repacked steps
//! (see `repacked`), Q6_K its tiled step from 8 token rows and its eight-lane product below.
//!
//! Q4_K: 32 units of 32 bytes; unit `4s + c` holds chunk `c` of sub-block `s` (its elements
//! `4c..4c + 4`) in its low nibbles and chunk `c + 4` in its high ones, row `r` at bytes
//! `4r..4r + 4`. Q6_K: each 6-bit quant as a byte (still offset by 32), chunk `k` (elements
//! `4k..4k + 4` of the super-block) of row `r` at bytes `32k + 4r..32k + 4r + 4`; that costs
//! a quarter more memory than the file's packing and saves the unpacking per token.

use half::f16;

use super::blocks::{q4k_scale_min, q6k_quant, BlockQ4K, BlockQ6K, BlockQ8K, QK_K};
use super::dot::WeightBlock;
use super::interleaved::{GroupFn, Interleaved, ROWS};
use super::{repacked, tiled};

/// Sub-blocks of 32 elements in a Q4_K super-block.
const SUB_BLOCKS: usize = QK_K / 32;
/// Groups of 16 elements, each with its own scale, in a Q6_K super-block.
const GROUPS: usize = QK_K / 16;

/// One super-block index of eight Q4_K rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ4Kx8 {
    pub(super) d: [f16; ROWS],
    pub(super) dmin: [f16; ROWS],
    /// `scales[s][r]`: row `r`'s scale of sub-block `s`.
    pub(super) scales: [[u8; ROWS]; SUB_BLOCKS],
    /// `mins[s][r]`: row `r`'s minimum of sub-block `s`.
    pub(super) mins: [[u8; ROWS]; SUB_BLOCKS],
    pub(super) qs: [u8; ROWS * QK_K / 2],
}

/// One super-block index of eight Q6_K rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ6Kx8 {
    pub(super) d: [f16; ROWS],
    /// `scales[g][r]`: row `r`'s scale of elements `16g..16g + 16`.
    pub(super) scales: [[i8; ROWS]; GROUPS],
    pub(super) qs: [u8; ROWS * QK_K],
}

/// Where element `e` of sub-block `s` sits in a repacked Q4_K block: its byte, and whether it
/// is the high nibble.
fn q4k_position(s: usize, e: usize, row: usize) -> (usize, bool) {
    let (chunk, high) = ((e % 16) / 4, e >= 16);
    ((4 * s + chunk) * 32 + 4 * row + e % 4, high)
}

/// Element `e` of sub-block `s` of a file-order Q4_K block: sub-block `2j` sits in the low
/// nibbles of bytes `32j..32j + 32`, sub-block `2j + 1` in their high nibbles.
fn q4k_nibble(block: &BlockQ4K, s: usize, e: usize) -> u8 {
    let byte = block.qs[(s / 2) * 32 + e];
    if s.is_multiple_of(2) {
        byte & 0xF
    } else {
        byte >> 4
    }
}

/// The inverse of `q4k_scale_min`: eight 6-bit scales and minimums in ggml's 12 bytes.
fn pack_scale_mins(scales: [u8; 8], mins: [u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = scales[j] | ((scales[j + 4] >> 4) << 6);
        q[j + 4] = mins[j] | ((mins[j + 4] >> 4) << 6);
        q[j + 8] = (scales[j + 4] & 0xF) | ((mins[j + 4] & 0xF) << 4);
    }
    q
}

impl Interleaved for BlockQ4Kx8 {
    type Row = BlockQ4K;
    type Activation = BlockQ8K;

    fn unpack(&self, lane: usize) -> BlockQ4K {
        let mut qs = [0u8; QK_K / 2];
        for s in 0..SUB_BLOCKS {
            for e in 0..32 {
                let (at, high) = q4k_position(s, e, lane);
                let nibble = if high {
                    self.qs[at] >> 4
                } else {
                    self.qs[at] & 0xF
                };
                qs[(s / 2) * 32 + e] |= if s.is_multiple_of(2) {
                    nibble
                } else {
                    nibble << 4
                };
            }
        }
        BlockQ4K {
            d: self.d[lane],
            dmin: self.dmin[lane],
            scales: pack_scale_mins(
                std::array::from_fn(|s| self.scales[s][lane]),
                std::array::from_fn(|s| self.mins[s][lane]),
            ),
            qs,
        }
    }

    fn pack(rows: [&BlockQ4K; ROWS]) -> Self {
        let mut packed = Self {
            d: rows.map(|r| r.d),
            dmin: rows.map(|r| r.dmin),
            scales: [[0; ROWS]; SUB_BLOCKS],
            mins: [[0; ROWS]; SUB_BLOCKS],
            qs: [0; ROWS * QK_K / 2],
        };
        for (lane, row) in rows.iter().enumerate() {
            for s in 0..SUB_BLOCKS {
                let (scale, min) = q4k_scale_min(s, &row.scales);
                packed.scales[s][lane] = scale;
                packed.mins[s][lane] = min;
                for e in 0..32 {
                    let (at, high) = q4k_position(s, e, lane);
                    let nibble = q4k_nibble(row, s, e);
                    packed.qs[at] |= if high { nibble << 4 } else { nibble };
                }
            }
        }
        packed
    }

    /// Row by row through the single-row portable kernels, as `QMatrix` multiplies a Q4_K
    /// matrix llama.cpp repacks: rows before `tokens - tokens % 4` grouped, the rest lone.
    fn portable(weights: &[Self], acts: &[BlockQ8K], tokens: usize, out: &mut [f32]) {
        let first_lone = tokens - tokens % 4;
        rows_portable(weights, acts, tokens, out, |token| {
            if token < first_lone {
                repacked::portable_grouped
            } else {
                repacked::portable_lone
            }
        });
    }

    fn simd() -> Option<GroupFn<Self, BlockQ8K>> {
        super::kquants_avx2::q4_k_x8()
    }

    fn avx512() -> Option<GroupFn<Self, BlockQ8K>> {
        None
    }
}

impl Interleaved for BlockQ6Kx8 {
    type Row = BlockQ6K;
    type Activation = BlockQ8K;

    fn unpack(&self, lane: usize) -> BlockQ6K {
        let mut block = BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: std::array::from_fn(|g| self.scales[g][lane]),
            d: self.d[lane],
        };
        for j in 0..QK_K {
            let quant = self.qs[(j / 4) * 32 + 4 * lane + j % 4];
            let (half, l) = (j / 128, j % 128);
            let (quarter, l) = (l / 32, l % 32);
            let low = quant & 0xF;
            block.ql[half * 64 + l + 32 * (quarter % 2)] |=
                if quarter < 2 { low } else { low << 4 };
            block.qh[half * 32 + l] |= (quant >> 4) << (2 * quarter);
        }
        block
    }

    fn pack(rows: [&BlockQ6K; ROWS]) -> Self {
        let mut packed = Self {
            d: rows.map(|r| r.d),
            scales: std::array::from_fn(|g| rows.map(|r| r.scales[g])),
            qs: [0; ROWS * QK_K],
        };
        for (lane, row) in rows.iter().enumerate() {
            for j in 0..QK_K {
                packed.qs[(j / 4) * 32 + 4 * lane + j % 4] = (q6k_quant(row, j) + 32) as u8;
            }
        }
        packed
    }

    /// Row by row through the single-row portable kernels, as `QMatrix` multiplies a Q6_K
    /// matrix: tiled from `tiled::MIN_TOKENS` token rows on, the plain product below.
    fn portable(weights: &[Self], acts: &[BlockQ8K], tokens: usize, out: &mut [f32]) {
        let kernel = if tokens >= tiled::MIN_TOKENS {
            tiled::q6k_portable
        } else {
            BlockQ6K::dot_portable
        };
        rows_portable(weights, acts, tokens, out, |_| kernel);
    }

    fn simd() -> Option<GroupFn<Self, BlockQ8K>> {
        super::kquants_avx2::q6_k_x8()
    }

    fn avx512() -> Option<GroupFn<Self, BlockQ8K>> {
        None
    }
}

/// Each of the group's eight rows, unpacked, against each token row with the kernel
/// `kernel(token)` picks.
fn rows_portable<G: Interleaved<Activation = BlockQ8K>>(
    weights: &[G],
    acts: &[BlockQ8K],
    tokens: usize,
    out: &mut [f32],
    kernel: impl Fn(usize) -> fn(&[G::Row], &[BlockQ8K]) -> f32,
) {
    let row_blocks = weights.len();
    let rows: Vec<Vec<G::Row>> = (0..ROWS)
        .map(|lane| weights.iter().map(|x| x.unpack(lane)).collect())
        .collect();
    for token in 0..tokens {
        let act_row = &acts[token * row_blocks..(token + 1) * row_blocks];
        for (lane, row) in rows.iter().enumerate() {
            out[token * ROWS + lane] = kernel(token)(row, act_row);
        }
    }
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ4Kx8>() == 1184);
    assert!(std::mem::size_of::<BlockQ6Kx8>() == 2192);
};
