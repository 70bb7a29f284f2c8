//! Weights repacked at load eight rows at a time, and their product with every token of a step
//! in one pass.
//!
//! In a repacked block, four consecutive elements of each of eight rows sit side by side: one
//! 32-byte load holds them, and against four activation bytes broadcast to every lane one
//! `maddubs` takes 32 products for eight rows at once. llama.cpp's single-row kernels for these
//! types keep eight float lanes per row (lane `k` sums elements `4k..4k + 4` of each block);
//! here lane `k` of eight rows is one vector. The arithmetic of each row is the reference's,
//! operation for operation, so the logits stay bit-identical; what is saved is everything
//! around it: each block's quants are unpacked and its scales widened once for eight rows and
//! up to four tokens, an activation's scales once for eight rows, and the final horizontal sums
//! are seven vector adds for eight rows.
//!
//! Q4_1 (each byte holds element `j` in its low nibble and `j + 16` in its high one): chunk
//! `c` of the repacked nibbles holds bytes `4c..4c + 4` of each row, so its low nibbles are lane
//! `c` and its high nibbles lane `c + 4`. Q5_0 packs its nibbles the same way and keeps each
//! row's 32 fifth bits as one word. Q8_0: chunk `k` holds bytes `4k..4k + 4` of each row.

use half::f16;

use super::activation::ActivationBlock;
use super::blocks::{
    q5_0_quant, BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_0Lanes, BlockQ8_1, Dequantize, QK,
};

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

/// One block index of eight Q8_0 rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ8_0x8 {
    pub(super) d: [f16; ROWS],
    pub(super) qs: [i8; ROWS * QK],
}

/// One block index of eight Q5_0 rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ5_0x8 {
    pub(super) d: [f16; ROWS],
    /// Each row's fifth bits, bit `e` for element `e`.
    pub(super) qh: [u32; ROWS],
    pub(super) qs: [u8; ROWS * QK / 2],
}

/// The kernel over one group of eight rows: `weights` are the group's blocks, `acts` holds
/// `tokens` rows of as many blocks, `out` gets `tokens x 8` values (token-major).
pub(super) type GroupFn<G, A> = fn(&[G], &[A], usize, &mut [f32]);

/// A block type repacked eight rows at a time.
pub(super) trait Interleaved: Copy + Send + Sync + 'static {
    /// The block type of one row.
    type Row: Dequantize + Copy;
    type Activation: ActivationBlock;
    /// Row `lane`'s block, as in the file.
    fn unpack(&self, lane: usize) -> Self::Row;
    /// The block of eight rows' blocks.
    fn pack(rows: [&Self::Row; ROWS]) -> Self;
    fn portable(weights: &[Self], acts: &[Self::Activation], tokens: usize, out: &mut [f32]);
    /// The AVX2 kernel, where this CPU has one.
    fn simd() -> Option<GroupFn<Self, Self::Activation>>;
    /// The AVX-512 VNNI kernel, where this CPU has one and `WICK_SIMD` allows it.
    fn avx512() -> Option<GroupFn<Self, Self::Activation>>;
    /// The kernel this CPU runs: the widest SIMD one that `WICK_SIMD` allows, else portable.
    /// All give the same bits.
    fn kernel() -> GroupFn<Self, Self::Activation> {
        let simd = match super::dot::kernel_choice() {
            super::dot::KernelChoice::Avx2 => Self::avx512().or_else(Self::simd),
            super::dot::KernelChoice::Portable => None,
        };
        simd.unwrap_or(Self::portable)
    }
    /// The kernel for a product whose outputs are not quantised again (the logits), where the
    /// type has one faster than `kernel`: it sums each block's products as integers and
    /// scales the sum once, so it does not round as llama.cpp's lane order does. Elsewhere
    /// that difference would reach the next layer's 8-bit activations, where a value that
    /// moves across a rounding boundary changes by a whole step; in the logits it stays in
    /// the last bits.
    fn summed_kernel() -> Option<GroupFn<Self, Self::Activation>> {
        None
    }
}

/// Bytes ahead of the block in use that the group kernels ask the cache for: a step streams
/// the weights from memory once, and with the hardware prefetcher alone the cores wait on
/// them at well under the bandwidth they can read (Gemma 3's output projection at 4 tokens:
/// 10.4 ms without, 6.5 ms with).
const PREFETCH_BYTES: usize = 2048;

/// Asks for the cache lines `PREFETCH_BYTES` after the start of `block`, as many as it spans.
/// Groups lie one after another, so this reaches into the next group's blocks.
#[inline(always)]
pub(super) fn prefetch_ahead<G>(block: &G) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let ahead = (block as *const G)
            .cast::<i8>()
            .wrapping_add(PREFETCH_BYTES);
        for line in 0..std::mem::size_of::<G>().div_ceil(64) {
            // A prefetch is a hint: it never faults, whatever the address.
            #[allow(unsafe_code)]
            // SAFETY: `prefetch` reads nothing and cannot fault; SSE is in every x86_64 CPU.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line))
            };
        }
    }
}

/// Whether a matrix of this many rows repacks (every group of eight is whole).
pub(super) fn repacks(out_features: usize) -> bool {
    out_features.is_multiple_of(ROWS)
}

/// Groups of eight rows, each row `row_blocks` blocks long, in group-major then block order.
pub(super) fn repack<G: Interleaved>(blocks: &[G::Row], row_blocks: usize) -> Vec<G> {
    let groups = blocks.len() / row_blocks / ROWS;
    let mut out = Vec::with_capacity(groups * row_blocks);
    for group in 0..groups {
        for b in 0..row_blocks {
            out.push(G::pack(std::array::from_fn(|r| {
                &blocks[(group * ROWS + r) * row_blocks + b]
            })));
        }
    }
    out
}

/// Eight rows' 16 nibble bytes, interleaved four bytes at a time.
fn pack_nibbles(rows: [&[u8; QK / 2]; ROWS]) -> [u8; ROWS * QK / 2] {
    let mut packed = [0; ROWS * QK / 2];
    for (lane, row) in rows.iter().enumerate() {
        for chunk in 0..QK / 8 {
            packed[chunk_range(chunk, lane)].copy_from_slice(&row[chunk * 4..chunk * 4 + 4]);
        }
    }
    packed
}

/// Row `lane`'s 16 nibble bytes out of `pack_nibbles`' layout.
fn unpack_nibbles(packed: &[u8; ROWS * QK / 2], lane: usize) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for chunk in 0..QK / 8 {
        qs[chunk * 4..chunk * 4 + 4].copy_from_slice(&packed[chunk_range(chunk, lane)]);
    }
    qs
}

/// Where bytes `4c..4c + 4` of row `lane` sit in a repacked block's bytes.
fn chunk_range(chunk: usize, lane: usize) -> std::ops::Range<usize> {
    let at = chunk * ROWS * 4 + lane * 4;
    at..at + 4
}

impl Interleaved for BlockQ4_1x8 {
    type Row = BlockQ4_1;
    type Activation = BlockQ8_1;

    fn unpack(&self, lane: usize) -> BlockQ4_1 {
        BlockQ4_1 {
            d: self.d[lane],
            m: self.m[lane],
            qs: unpack_nibbles(&self.qs, lane),
        }
    }

    fn pack(rows: [&BlockQ4_1; ROWS]) -> Self {
        Self {
            d: rows.map(|r| r.d),
            m: rows.map(|r| r.m),
            qs: pack_nibbles(rows.map(|r| &r.qs)),
        }
    }

    fn portable(weights: &[Self], acts: &[BlockQ8_1], tokens: usize, out: &mut [f32]) {
        q4_1_portable(weights, acts, tokens, out);
    }

    fn simd() -> Option<GroupFn<Self, BlockQ8_1>> {
        super::avx2::q4_1_x8()
    }

    fn avx512() -> Option<GroupFn<Self, BlockQ8_1>> {
        super::avx512::q4_1_x8()
    }
}

impl Interleaved for BlockQ8_0x8 {
    type Row = BlockQ8_0;
    type Activation = BlockQ8_0Lanes;

    fn unpack(&self, lane: usize) -> BlockQ8_0 {
        let mut qs = [0i8; QK];
        for chunk in 0..QK / 4 {
            qs[chunk * 4..chunk * 4 + 4].copy_from_slice(&self.qs[chunk_range(chunk, lane)]);
        }
        BlockQ8_0 {
            d: self.d[lane],
            qs,
        }
    }

    fn pack(rows: [&BlockQ8_0; ROWS]) -> Self {
        let mut packed = Self {
            d: rows.map(|r| r.d),
            qs: [0; ROWS * QK],
        };
        for (lane, row) in rows.iter().enumerate() {
            for chunk in 0..QK / 4 {
                packed.qs[chunk_range(chunk, lane)]
                    .copy_from_slice(&row.qs[chunk * 4..chunk * 4 + 4]);
            }
        }
        packed
    }

    fn portable(weights: &[Self], acts: &[BlockQ8_0Lanes], tokens: usize, out: &mut [f32]) {
        lanes_portable(weights, acts, tokens, out, |w: &BlockQ8_0, e| {
            i32::from(w.qs[e])
        });
    }

    fn simd() -> Option<GroupFn<Self, BlockQ8_0Lanes>> {
        super::avx2::q8_0_x8()
    }

    fn avx512() -> Option<GroupFn<Self, BlockQ8_0Lanes>> {
        super::avx512::q8_0_x8()
    }

    fn summed_kernel() -> Option<GroupFn<Self, BlockQ8_0Lanes>> {
        let simd = match super::dot::kernel_choice() {
            super::dot::KernelChoice::Avx2 => {
                super::avx512::q8_0_x8_summed().or_else(super::avx2::q8_0_x8_summed)
            }
            super::dot::KernelChoice::Portable => None,
        };
        Some(simd.unwrap_or(q8_0_summed_portable))
    }
}

impl Interleaved for BlockQ5_0x8 {
    type Row = BlockQ5_0;
    type Activation = BlockQ8_0Lanes;

    fn unpack(&self, lane: usize) -> BlockQ5_0 {
        BlockQ5_0 {
            d: self.d[lane],
            qh: self.qh[lane].to_le_bytes(),
            qs: unpack_nibbles(&self.qs, lane),
        }
    }

    fn pack(rows: [&BlockQ5_0; ROWS]) -> Self {
        Self {
            d: rows.map(|r| r.d),
            qh: rows.map(|r| u32::from_le_bytes(r.qh)),
            qs: pack_nibbles(rows.map(|r| &r.qs)),
        }
    }

    fn portable(weights: &[Self], acts: &[BlockQ8_0Lanes], tokens: usize, out: &mut [f32]) {
        lanes_portable(weights, acts, tokens, out, |w: &BlockQ5_0, e| {
            q5_0_quant(w, e)
        });
    }

    fn simd() -> Option<GroupFn<Self, BlockQ8_0Lanes>> {
        super::avx2::q5_0_x8()
    }

    fn avx512() -> Option<GroupFn<Self, BlockQ8_0Lanes>> {
        super::avx512::q5_0_x8()
    }
}

/// `hsum_float_8`'s order of adding a row's eight lanes.
fn lane_sum(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The arithmetic of the AVX2 kernel, and of llama.cpp's single-row Q4_1 product, row by row:
/// per block, lane `k` takes `(d_w * d_a) * p_k` with a fused multiply-add, where `p_k` is the
/// exact sum of elements `4k..4k + 4`; the offsets `m_w * s_a` are summed apart; at the end
/// the lanes are added in `hsum_float_8`'s order and the offsets after them.
fn q4_1_portable(weights: &[BlockQ4_1x8], acts: &[BlockQ8_1], tokens: usize, out: &mut [f32]) {
    let row_blocks = weights.len();
    for token in 0..tokens {
        let row = &acts[token * row_blocks..(token + 1) * row_blocks];
        for lane in 0..ROWS {
            let mut lanes = [0f32; 8];
            let mut offsets = 0f32;
            for (x, y) in weights.iter().zip(row) {
                let w = x.unpack(lane);
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
            out[token * ROWS + lane] = lane_sum(lanes) + offsets;
        }
    }
}

/// llama.cpp's single-row Q8_0 and Q5_0 products, row by row: per block, lane `k` takes
/// `(d_w * d_a) * p_k` with a fused multiply-add, `p_k` the exact sum of elements `4k..4k + 4`
/// (`quant(block, e)` is element `e`'s signed quant).
fn lanes_portable<G, R>(
    weights: &[G],
    acts: &[BlockQ8_0Lanes],
    tokens: usize,
    out: &mut [f32],
    quant: impl Fn(&R, usize) -> i32,
) where
    G: Interleaved<Row = R>,
    R: Scaled,
{
    let row_blocks = weights.len();
    for token in 0..tokens {
        let row = &acts[token * row_blocks..(token + 1) * row_blocks];
        for lane in 0..ROWS {
            let mut lanes = [0f32; 8];
            for (x, y) in weights.iter().zip(row) {
                let w = x.unpack(lane);
                let d0d1 = w.scale().to_f32() * y.d.to_f32();
                for (k, acc) in lanes.iter_mut().enumerate() {
                    let partial: i32 = (4 * k..4 * k + 4)
                        .map(|e| quant(&w, e) * i32::from(y.qs[e]))
                        .sum();
                    *acc = d0d1.mul_add(partial as f32, *acc);
                }
            }
            out[token * ROWS + lane] = lane_sum(lanes);
        }
    }
}

/// The arithmetic of the summed Q8_0 group kernels, row by row: per block, the exact integer
/// sum of its 32 products takes `(d_w * d_a) * sum` with one fused multiply-add.
pub(super) fn q8_0_summed_portable(
    weights: &[BlockQ8_0x8],
    acts: &[BlockQ8_0Lanes],
    tokens: usize,
    out: &mut [f32],
) {
    let row_blocks = weights.len();
    for token in 0..tokens {
        let row = &acts[token * row_blocks..(token + 1) * row_blocks];
        for lane in 0..ROWS {
            let mut sum = 0f32;
            for (x, y) in weights.iter().zip(row) {
                let w = x.unpack(lane);
                let products: i32 =
                    w.qs.iter()
                        .zip(&y.qs)
                        .map(|(&q, &a)| i32::from(q) * i32::from(a))
                        .sum();
                sum = (w.d.to_f32() * y.d.to_f32()).mul_add(products as f32, sum);
            }
            out[token * ROWS + lane] = sum;
        }
    }
}

/// A row block with one scale.
trait Scaled {
    fn scale(&self) -> f16;
}

impl Scaled for BlockQ8_0 {
    fn scale(&self) -> f16 {
        self.d
    }
}

impl Scaled for BlockQ5_0 {
    fn scale(&self) -> f16 {
        self.d
    }
}
