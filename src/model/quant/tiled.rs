//! K-quant products rounded as llama.cpp's tiled kernels round them.
//!
//! llama.cpp multiplies a K-quant matrix it has not repacked with its tiled kernel when a step
//! has at least 8 token rows, and with the per-row dot product below that. The tiled kernel's
//! integer sums are exact; per 256-value super-block it scales the sum by the weight's scale,
//! subtracts the minimums' part with a fused multiply-add, and adds the product with the
//! activation's scale to the output with another.

use super::blocks::{q6k_quant, BlockQ4K, BlockQ6K, BlockQ8K};
use super::dot::{kernel_choice, DotFn, KernelChoice};
use super::repacked::pair_sums_portable;

/// Token rows in a step from which llama.cpp takes the tiled kernel.
pub(super) const MIN_TOKENS: usize = 8;

/// One Q6_K super-block: `scaled` is its exact integer product, the offset of 32 taken out.
#[inline(always)]
pub(super) fn q6k_step(acc: f32, x: &BlockQ6K, y: &BlockQ8K, scaled: i32) -> f32 {
    let block = x.d.to_f32() * scaled as f32;
    block.mul_add(y.d, acc)
}

/// One Q4_K super-block: `scaled` is its exact integer product, `mins` the sub-block
/// minimums times the activations' sums.
#[inline(always)]
pub(super) fn q4k_step(acc: f32, x: &BlockQ4K, y: &BlockQ8K, scaled: i32, mins: i32) -> f32 {
    let block = x.d.to_f32() * scaled as f32;
    let block = (-x.dmin.to_f32()).mul_add(mins as f32, block);
    block.mul_add(y.d, acc)
}

pub(super) fn q6k_portable(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut scaled = 0i32;
        for (group, &scale) in x.scales.iter().enumerate() {
            let dot: i32 = (group * 16..group * 16 + 16)
                .map(|j| q6k_quant(x, j) * i32::from(y.qs[j]))
                .sum();
            scaled += i32::from(scale) * dot;
        }
        acc = q6k_step(acc, x, y, scaled);
    }
    acc
}

pub(super) fn q4k_portable(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (scaled, mins) = pair_sums_portable(x, y);
        acc = q4k_step(acc, x, y, scaled.iter().sum(), mins.iter().sum());
    }
    acc
}

pub(super) fn q6k() -> DotFn<BlockQ6K, BlockQ8K> {
    match (kernel_choice(), super::avx2::q6_k_tiled()) {
        (KernelChoice::Avx2, Some(kernel)) => kernel,
        _ => q6k_portable,
    }
}

pub(super) fn q4k() -> DotFn<BlockQ4K, BlockQ8K> {
    match (kernel_choice(), super::avx2::q4_k_tiled()) {
        (KernelChoice::Avx2, Some(kernel)) => kernel,
        _ => q4k_portable,
    }
}
