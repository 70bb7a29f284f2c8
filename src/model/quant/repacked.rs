//! Q4_K products rounded as llama.cpp's repacked kernels round them.
//!
//! On x86 with AVX2, llama.cpp interleaves the rows of every Q4_K matrix whose row count is a
//! multiple of 8 (`q4_K_8x8`) and multiplies them with kernels of their own. Their integer sums
//! are exact, so only where the float accumulation happens matters: once per 256-value
//! super-block for a token row multiplied alone (its gemv), once per 64 values for rows
//! multiplied in groups of four (its gemm, which takes `tokens - tokens % 4` rows of a step).

use super::blocks::{q4k_scale_min, BlockQ4K, BlockQ8K};
use super::dot::{kernel_choice, DotFn, KernelChoice};

/// Integer sums of one super-block per 64 values (two sub-blocks): the scaled products, and
/// the sub-block minimums times the activations' sums.
pub(super) type PairSums = ([i32; 4], [i32; 4]);

pub(super) fn pair_sums_portable(x: &BlockQ4K, y: &BlockQ8K) -> PairSums {
    let (mut scaled, mut mins) = ([0i32; 4], [0i32; 4]);
    for sub in 0..8 {
        let (scale, min) = q4k_scale_min(sub, &x.scales);
        let q4 = &x.qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
        let q8 = &y.qs[sub * 32..sub * 32 + 32];
        let dot: i32 = q4
            .iter()
            .zip(q8)
            .map(|(&b, &q)| {
                let nibble = if sub % 2 == 0 { b & 0xF } else { b >> 4 };
                i32::from(nibble) * i32::from(q)
            })
            .sum();
        scaled[sub / 2] += i32::from(scale) * dot;
        mins[sub / 2] +=
            i32::from(min) * (i32::from(y.bsums[2 * sub]) + i32::from(y.bsums[2 * sub + 1]));
    }
    (scaled, mins)
}

/// Float accumulators of one output: the scaled products and the minimums' correction.
#[derive(Default)]
pub(super) struct Accumulator {
    scaled: f32,
    mins: f32,
}

impl Accumulator {
    /// Adds one super-block's sums: one fused multiply-add for the whole block (`per_pair`
    /// false, the gemv) or one per 64 values (`per_pair` true, the gemm).
    #[inline(always)]
    pub(super) fn add(&mut self, per_pair: bool, x: &BlockQ4K, y: &BlockQ8K, sums: PairSums) {
        let d = x.d.to_f32() * y.d;
        let dmin = x.dmin.to_f32() * y.d;
        let (scaled, mins) = sums;
        if per_pair {
            for (s, m) in scaled.into_iter().zip(mins) {
                self.scaled = (s as f32).mul_add(d, self.scaled);
                self.mins = (m as f32).mul_add(dmin, self.mins);
            }
        } else {
            let s: i32 = scaled.iter().sum();
            let m: i32 = mins.iter().sum();
            self.scaled = (s as f32).mul_add(d, self.scaled);
            self.mins = (m as f32).mul_add(dmin, self.mins);
        }
    }

    #[inline(always)]
    pub(super) fn value(&self) -> f32 {
        self.scaled - self.mins
    }
}

pub(super) fn portable_lone(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    portable(false, w, a)
}

pub(super) fn portable_grouped(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    portable(true, w, a)
}

fn portable(per_pair: bool, w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = Accumulator::default();
    for (x, y) in w.iter().zip(a) {
        acc.add(per_pair, x, y, pair_sums_portable(x, y));
    }
    acc.value()
}

/// Whether llama.cpp repacks a Q4_K matrix with this many rows (output features).
pub(super) fn repacks(out_features: usize) -> bool {
    out_features.is_multiple_of(8)
}

/// The kernel for a token row multiplied alone.
pub(super) fn lone() -> DotFn<BlockQ4K, BlockQ8K> {
    match (kernel_choice(), super::avx2::q4_k_lone()) {
        (KernelChoice::Avx2, Some(kernel)) => kernel,
        _ => portable_lone,
    }
}

/// The kernel for token rows multiplied in groups of four.
pub(super) fn grouped() -> DotFn<BlockQ4K, BlockQ8K> {
    match (kernel_choice(), super::avx2::q4_k_grouped()) {
        (KernelChoice::Avx2, Some(kernel)) => kernel,
        _ => portable_grouped,
    }
}
