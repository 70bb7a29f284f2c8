//! Dot products of a quantised weight row with a quantised activation row: the portable
//! integer form of ggml's reference kernels, and the choice of the fastest one this CPU runs.

use super::activation::ActivationBlock;
use super::blocks::{
    q5_0_quant, q6k_quant, BlockQ4K, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, Dequantize, QK,
};
use super::{repacked, tiled};

/// `weights . activations` over one row, both in blocks.
pub(super) type DotFn<W, A> = fn(&[W], &[A]) -> f32;
pub(super) use super::avx2::Dot4Fn;

/// A weight block type wick multiplies itself, with the activation type it meets.
pub(super) trait WeightBlock: Dequantize + Copy + Send + Sync + 'static {
    type Activation: ActivationBlock;
    fn dot_portable(w: &[Self], a: &[Self::Activation]) -> f32;
    /// The SIMD kernel, where this CPU has one.
    fn dot_simd() -> Option<DotFn<Self, Self::Activation>>;
    /// The kernel matrix products use: SIMD unless the CPU lacks it or
    /// `WICK_SIMD=portable` asks for the portable one.
    fn dot() -> DotFn<Self, Self::Activation> {
        if kernel_choice() == KernelChoice::Portable {
            return Self::dot_portable;
        }
        Self::dot_simd().unwrap_or(Self::dot_portable)
    }
    /// The kernels for a step of `tokens` rows through a matrix of `out_features` rows: the
    /// plain dot product, unless llama.cpp takes another kernel for that shape (see
    /// `repacked` and `tiled`), whose sums round differently.
    fn kernels(_out_features: usize, _tokens: usize) -> RowKernels<Self> {
        RowKernels::plain()
    }
    /// A kernel taking four token rows at once with the same per-token arithmetic as `dot`,
    /// where this CPU and type have one.
    fn dot4_simd() -> Option<Dot4Fn<Self, Self::Activation>> {
        None
    }
}

/// The kernels of one product: `grouped` for token rows before `first_lone`, which llama.cpp
/// multiplies four at a time, `lone` for the rest; `four`, where every row takes `dot`, does
/// four rows in one pass over the weights.
pub(super) struct RowKernels<W: WeightBlock> {
    grouped: DotFn<W, W::Activation>,
    lone: DotFn<W, W::Activation>,
    first_lone: usize,
    pub(super) four: Option<Dot4Fn<W, W::Activation>>,
}

impl<W: WeightBlock> RowKernels<W> {
    fn same(dot: DotFn<W, W::Activation>) -> Self {
        Self {
            grouped: dot,
            lone: dot,
            first_lone: 0,
            four: None,
        }
    }

    /// `dot` for every row, four at a time where the CPU can.
    fn plain() -> Self {
        let four = match kernel_choice() {
            KernelChoice::Avx2 => W::dot4_simd(),
            KernelChoice::Portable => None,
        };
        Self {
            four,
            ..Self::same(W::dot())
        }
    }

    pub(super) fn for_token(&self, token: usize) -> DotFn<W, W::Activation> {
        if token < self.first_lone {
            self.grouped
        } else {
            self.lone
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoice {
    Avx2,
    Portable,
}

/// The quantised-kernel level in use: AVX2 + FMA where the CPU has them (checked once at run
/// time), else portable code; `WICK_SIMD=portable` forces the portable kernels.
pub fn kernel_choice() -> KernelChoice {
    if super::avx2::available() {
        KernelChoice::Avx2
    } else {
        KernelChoice::Portable
    }
}

impl WeightBlock for BlockQ4_1 {
    type Activation = BlockQ8_1;
    fn dot_portable(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        let mut sum = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi = 0i32;
            for (j, &q) in x.qs.iter().enumerate() {
                sumi += i32::from(q & 0xF) * i32::from(y.qs[j]);
                sumi += i32::from(q >> 4) * i32::from(y.qs[j + QK / 2]);
            }
            sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
        }
        sum
    }
    fn dot_simd() -> Option<DotFn<Self, BlockQ8_1>> {
        super::avx2::q4_1()
    }
    fn dot4_simd() -> Option<Dot4Fn<Self, BlockQ8_1>> {
        super::avx2::q4_1_x4()
    }
}

impl WeightBlock for BlockQ5_0 {
    type Activation = BlockQ8_0;
    fn dot_portable(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        let mut sum = 0f32;
        for (x, y) in w.iter().zip(a) {
            let sumi: i32 = (0..QK).map(|j| q5_0_quant(x, j) * i32::from(y.qs[j])).sum();
            sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32;
        }
        sum
    }
    fn dot_simd() -> Option<DotFn<Self, BlockQ8_0>> {
        super::avx2::q5_0()
    }
    fn dot4_simd() -> Option<Dot4Fn<Self, BlockQ8_0>> {
        super::avx2::q5_0_x4()
    }
}

impl WeightBlock for BlockQ8_0 {
    type Activation = BlockQ8_0;
    fn dot_portable(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        let mut sum = 0f32;
        for (x, y) in w.iter().zip(a) {
            let sumi: i32 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(&p, &q)| i32::from(p) * i32::from(q))
                    .sum();
            sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
        }
        sum
    }
    fn dot_simd() -> Option<DotFn<Self, BlockQ8_0>> {
        super::avx2::q8_0()
    }
    fn dot4_simd() -> Option<Dot4Fn<Self, BlockQ8_0>> {
        super::avx2::q8_0_x4()
    }
}

impl WeightBlock for BlockQ4K {
    type Activation = BlockQ8K;
    fn dot_portable(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sum = 0f32;
        for (x, y) in w.iter().zip(a) {
            let (pairs, min_pairs) = repacked::pair_sums_portable(x, y);
            let (scaled, mins): (i32, i32) = (pairs.iter().sum(), min_pairs.iter().sum());
            sum += y.d * x.d.to_f32() * scaled as f32 - y.d * x.dmin.to_f32() * mins as f32;
        }
        sum
    }
    fn dot_simd() -> Option<DotFn<Self, BlockQ8K>> {
        super::avx2::q4_k()
    }
    fn kernels(out_features: usize, tokens: usize) -> RowKernels<Self> {
        if repacked::repacks(out_features) {
            return RowKernels {
                grouped: repacked::grouped(),
                lone: repacked::lone(),
                first_lone: tokens - tokens % 4,
                four: None,
            };
        }
        if tokens >= tiled::MIN_TOKENS {
            return RowKernels::same(tiled::q4k());
        }
        RowKernels::same(Self::dot())
    }
}

impl WeightBlock for BlockQ6K {
    type Activation = BlockQ8K;
    fn dot_portable(w: &[Self], a: &[BlockQ8K]) -> f32 {
        let mut sum = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut sumi = 0i32;
            for (group, &scale) in x.scales.iter().enumerate() {
                let dot: i32 = (group * 16..group * 16 + 16)
                    .map(|j| q6k_quant(x, j) * i32::from(y.qs[j]))
                    .sum();
                sumi += i32::from(scale) * dot;
            }
            sum += y.d * x.d.to_f32() * sumi as f32;
        }
        sum
    }
    fn dot_simd() -> Option<DotFn<Self, BlockQ8K>> {
        super::avx2::q6_k()
    }
    fn kernels(_out_features: usize, tokens: usize) -> RowKernels<Self> {
        if tokens >= tiled::MIN_TOKENS {
            return RowKernels::same(tiled::q6k());
        }
        RowKernels::same(Self::dot())
    }
}
