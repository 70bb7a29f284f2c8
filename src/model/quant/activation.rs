//! Activations quantised to 8-bit blocks before they meet quantised weights, rounded exactly as
//! llama.cpp's x86 code rounds them, so wick's products agree with the reference's.

use half::f16;
use rayon::prelude::*;

use super::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_0Lanes, BlockQ8_1, QK, QK_K};

/// An activation block type: one row of `cols` floats becomes `cols / ELEMS` blocks.
pub(super) trait ActivationBlock: Copy + Send + Sync {
    const ELEMS: usize;
    const ZERO: Self;
    fn quantize(x: &[f32]) -> Self;
}

/// The largest magnitude in `x`, kept in eight running maxima so the loop vectorises (a
/// single running maximum is a chain of dependent steps). NaNs are never greater, as with
/// `f32::max`.
#[inline(always)]
fn max_magnitude(x: &[f32]) -> f32 {
    let larger = |m: f32, v: f32| if v.abs() > m { v.abs() } else { m };
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, v);
        }
    }
    lanes
        .into_iter()
        .chain(chunks.remainder().iter().copied())
        .fold(0f32, larger)
}

/// The bits of 1.5 * 2^23: an f32 whose last mantissa bit is worth 1, so adding an integer
/// below 2^22 in magnitude to these bits gives the float `1.5 * 2^23 + i` exactly.
pub(super) const FLOAT_INTEGER_BIAS: i32 = 0x4B40_0000;

/// `x` rounded half to even, as `_mm256_round_ps` and ggml's `nearest_int` do, for |x| < 2^22:
/// the bits of `x + 1.5 * 2^23` less `FLOAT_INTEGER_BIAS`. Integer arithmetic that vectorises,
/// where `round_ties_even` is a call into libm here and a float to integer `as` cast saturates
/// with checks per element.
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    let magic = f32::from_bits(FLOAT_INTEGER_BIAS as u32);
    (x + magic).to_bits() as i32 - FLOAT_INTEGER_BIAS
}

/// Scale and multiplier of a 32-wide block as llama.cpp's AVX code computes them
/// (`127 / max`, not `1 / d`), and the block rounded half to even as `_mm256_round_ps` does.
#[inline(always)]
fn quantize_32(x: &[f32]) -> (f32, [i8; QK]) {
    let max = max_magnitude(x);
    let d = max / 127.0;
    let id = if max != 0.0 { 127.0 / max } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(x) {
        // |v * id| <= 127: the integer fits, and `as i8` keeps it.
        *q = nearest_int(v * id) as i8;
    }
    (d, qs)
}

impl ActivationBlock for BlockQ8_0 {
    const ELEMS: usize = QK;
    const ZERO: Self = Self {
        d: f16::ZERO,
        qs: [0; QK],
    };
    #[inline(always)]
    fn quantize(x: &[f32]) -> Self {
        let (d, qs) = quantize_32(x);
        Self {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl ActivationBlock for BlockQ8_0Lanes {
    const ELEMS: usize = QK;
    const ZERO: Self = Self {
        d: f16::ZERO,
        qs: [0; QK],
        starts: [FLOAT_INTEGER_BIAS; 8],
        block_start: [FLOAT_INTEGER_BIAS, 0],
        paired: [[128; 4]; 8],
        scale: 0.0,
    };
    /// `quantize_32`, and each lane's start: `FLOAT_INTEGER_BIAS` minus 128 times the sum of
    /// its four quants, which the AVX-512 kernels' unsigned products (weights plus 128) need;
    /// the same for the whole block; and the quants in pairs of lanes, which the AVX2 Q5_0
    /// prefill kernel needs.
    #[inline(always)]
    fn quantize(x: &[f32]) -> Self {
        let (d, qs) = quantize_32(x);
        let sums: [i32; 8] =
            std::array::from_fn(|k| qs[4 * k..4 * k + 4].iter().map(|&q| i32::from(q)).sum());
        let start = |sum: i32| FLOAT_INTEGER_BIAS - 128 * sum;
        let paired = std::array::from_fn(|word| {
            let at = 8 * (word / 2) + 2 * (word % 2);
            [at, at + 1, at + 4, at + 5].map(|e| (qs[e] as u8) ^ 0x80)
        });
        let d = f16::from_f32(d);
        Self {
            d,
            qs,
            starts: sums.map(start),
            block_start: [start(sums.iter().sum()), 0],
            paired,
            scale: d.to_f32(),
        }
    }
}

impl ActivationBlock for BlockQ8_1 {
    const ELEMS: usize = QK;
    const ZERO: Self = Self {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; QK],
    };
    #[inline(always)]
    fn quantize(x: &[f32]) -> Self {
        let (d, qs) = quantize_32(x);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        Self {
            d: f16::from_f32(d),
            // The f32 scale times the exact sum, rounded once (llama.cpp), not f16(sum) * d.
            s: f16::from_f32(d * sum as f32),
            qs,
        }
    }
}

impl ActivationBlock for BlockQ8K {
    const ELEMS: usize = QK_K;
    const ZERO: Self = Self {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    /// ggml's `quantize_row_q8_K_ref`: the scale takes the sign of the largest magnitude, so
    /// that element maps to -127 exactly.
    #[inline(always)]
    fn quantize(x: &[f32]) -> Self {
        // The first value of the largest magnitude, found in two passes that vectorise.
        let amax = max_magnitude(x);
        let mut block = Self::ZERO;
        if amax == 0.0 {
            return block;
        }
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks(16)) {
            *sum = group.iter().map(|&q| i16::from(q)).sum();
        }
        block.d = 1.0 / iscale;
        block
    }
}

/// Values one parallel task quantises: a decode step of four rows or more is split across the
/// cores too. Quantised on one core, a step of eight sequences' 576-wide rows (SmolLM2) had kept
/// the other waiting before every projection: splitting them took 8-stream decode from 364 to
/// 372 tok/s (AVX2 path) and 487 to 497 (AVX-512), interleaved runs.
const VALUES_PER_TASK: usize = 2048;

/// Quantises `rows` rows of `cols` floats into consecutive blocks (`cols / A::ELEMS` per row).
/// Each block depends on its own values only, so the blocks split across the cores freely.
pub(super) fn quantize_rows<A: ActivationBlock>(x: &[f32], out: &mut Vec<A>) {
    out.clear();
    out.resize(x.len() / A::ELEMS, A::ZERO);
    let blocks_per_task = (VALUES_PER_TASK / A::ELEMS).max(1);
    if out.len() <= blocks_per_task {
        quantize_into(x, out);
        return;
    }
    out.par_chunks_mut(blocks_per_task)
        .zip(x.par_chunks(blocks_per_task * A::ELEMS))
        .for_each(|(out, x)| quantize_into(x, out));
}

/// Compiled for AVX2 where the CPU has it, so the blocks' loops vectorise.
#[multiversion::multiversion(targets("x86_64+avx2+fma+f16c"))]
fn quantize_into<A: ActivationBlock>(x: &[f32], out: &mut [A]) {
    for (block, values) in out.iter_mut().zip(x.chunks_exact(A::ELEMS)) {
        *block = A::quantize(values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_round_ties_even() {
        for i in -40_000..40_000 {
            let x = i as f32 * 0.0125; // every .5 tie in [-500, 500] and the values between
            assert_eq!(nearest_int(x) as f32, x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn q8_0_keeps_the_largest_magnitude_exactly() {
        let x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.5) * 0.25).collect();
        let block = BlockQ8_0::quantize(&x);
        assert_eq!(block.qs[31], 127);
        let d = block.d.to_f32();
        for (q, v) in block.qs.iter().zip(&x) {
            assert!((f32::from(*q) * d - v).abs() <= d * 0.5 + 1e-3);
        }
    }

    #[test]
    fn q8_1_sum_is_scaled_once() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.01).collect();
        let block = BlockQ8_1::quantize(&x);
        let sum: i32 = block.qs.iter().map(|&q| i32::from(q)).sum();
        let d = (x[31] / 127.0) * sum as f32;
        assert_eq!(block.s, f16::from_f32(d));
    }

    #[test]
    fn q8_k_block_sums_and_sign() {
        let x: Vec<f32> = (0..256).map(|i| ((i * 37) % 101) as f32 - 60.0).collect();
        let block = BlockQ8K::quantize(&x);
        assert_eq!(block.qs[x.iter().position(|&v| v == -60.0).unwrap()], -127);
        for (j, sum) in block.bsums.iter().enumerate() {
            let expected: i16 = block.qs[j * 16..(j + 1) * 16]
                .iter()
                .map(|&q| i16::from(q))
                .sum();
            assert_eq!(*sum, expected);
        }
        for (q, v) in block.qs.iter().zip(&x) {
            assert!((f32::from(*q) * block.d - v).abs() <= block.d.abs() * 0.5 + 1e-4);
        }
    }
}
