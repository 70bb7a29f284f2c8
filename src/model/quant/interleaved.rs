//! Q4_1 weights repacked at load eight rows at a time, and their product with every token of a
//! step in one pass.
//!
//! In a Q4_1 block each byte holds element `j` (low nibble) and element `j + 16` (high nibble).
//! The repacked block puts bytes `4c..4c + 4` of eight rows side by side, so one 32-byte load
//! holds four consecutive elements of each of eight rows: against four activation bytes
//! broadcast to every lane, one `maddubs` takes 32 products for eight rows at once, and the
//! eight lanes of llama.cpp's single-row kernel (lane `k` sums elements `4k..4k + 4`) become
//! eight vectors over the rows. The arithmetic of each row is the reference's, operation for
//! operation, so the logits stay bit-identical; what is saved is everything around it: each
//! block's nibbles are unpacked and its scales widened once for eight rows and up to four
//! tokens, an activation's scales once for eight rows, and the final horizontal sums are seven
//! vector adds for eight rows.

use half::f16;

use super::blocks::{BlockQ4_1, BlockQ8_1, QK};

/// Rows one repacked block interleaves.
pub(super) const ROWS: usize = 8;

/// One block index of eight rows: their scales and minimums, and their nibbles in four chunks
/// of `ROWS x 4` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ4_1x8 {
    pub(super) d: [f16; ROWS],
    pub(super) m: [f16; ROWS],
    pub(super) qs: [u8; ROWS * QK / 2],
}

/// The kernel over one group of eight rows: `weights` are the group's blocks, `acts` holds
/// `tokens` rows of as many blocks, `out` gets `tokens x 8` values (token-major).
pub(super) type GroupFn = fn(&[BlockQ4_1x8], &[BlockQ8_1], usize, &mut [f32]);

/// Whether a matrix of this many rows repacks (every group of eight is whole).
pub(super) fn repacks(out_features: usize) -> bool {
    out_features.is_multiple_of(ROWS)
}

/// Groups of eight rows, each row `row_blocks` blocks long, in group-major then block order.
pub(super) fn repack(blocks: &[BlockQ4_1], row_blocks: usize) -> Vec<BlockQ4_1x8> {
    let groups = blocks.len() / row_blocks / ROWS;
    let mut out = Vec::with_capacity(groups * row_blocks);
    for group in 0..groups {
        for b in 0..row_blocks {
            let source = |r: usize| &blocks[(group * ROWS + r) * row_blocks + b];
            let mut packed = BlockQ4_1x8 {
                d: std::array::from_fn(|r| source(r).d),
                m: std::array::from_fn(|r| source(r).m),
                qs: [0; ROWS * QK / 2],
            };
            for chunk in 0..4 {
                for r in 0..ROWS {
                    let at = chunk * ROWS * 4 + r * 4;
                    packed.qs[at..at + 4].copy_from_slice(&source(r).qs[chunk * 4..chunk * 4 + 4]);
                }
            }
            out.push(packed);
        }
    }
    out
}

/// Row `lane` of a repacked block, as the original block.
pub(super) fn unpack(block: &BlockQ4_1x8, lane: usize) -> BlockQ4_1 {
    let mut qs = [0u8; QK / 2];
    for chunk in 0..4 {
        let at = chunk * ROWS * 4 + lane * 4;
        qs[chunk * 4..chunk * 4 + 4].copy_from_slice(&block.qs[at..at + 4]);
    }
    BlockQ4_1 {
        d: block.d[lane],
        m: block.m[lane],
        qs,
    }
}

/// The kernel this CPU runs: AVX2 unless it lacks it or `WICK_QUANT_KERNEL=portable`.
pub(super) fn kernel() -> GroupFn {
    match (super::dot::kernel_choice(), super::avx2::q4_1_x8()) {
        (super::dot::KernelChoice::Avx2, Some(kernel)) => kernel,
        _ => portable,
    }
}

/// The arithmetic of the AVX2 kernel, and of llama.cpp's single-row Q4_1 product, row by row:
/// per block, lane `k` takes `(d_w * d_a) * p_k` with a fused multiply-add, where `p_k` is the
/// exact sum of elements `4k..4k + 4`; the offsets `m_w * s_a` are summed apart; at the end
/// the lanes are added in `hsum_float_8`'s order and the offsets after them.
pub(super) fn portable(
    weights: &[BlockQ4_1x8],
    acts: &[BlockQ8_1],
    tokens: usize,
    out: &mut [f32],
) {
    let row_blocks = weights.len();
    for token in 0..tokens {
        let row = &acts[token * row_blocks..(token + 1) * row_blocks];
        for lane in 0..ROWS {
            let mut lanes = [0f32; 8];
            let mut offsets = 0f32;
            for (x, y) in weights.iter().zip(row) {
                let w = unpack(x, lane);
                let d0d1 = w.d.to_f32() * y.d.to_f32();
                offsets += w.m.to_f32() * y.s.to_f32();
                for (k, acc) in lanes.iter_mut().enumerate() {
                    let partial: i32 = (0..4)
                        .map(|i| {
                            let element = 4 * k + i;
                            let byte = w.qs[element % 16];
                            let nibble = if element < 16 { byte & 0xF } else { byte >> 4 };
                            i32::from(nibble) * i32::from(y.qs[element])
                        })
                        .sum();
                    *acc = d0d1.mul_add(partial as f32, *acc);
                }
            }
            let l = lanes;
            let total = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
            out[token * ROWS + lane] = total + offsets;
        }
    }
}
