//! The kernels against each other and against f64 products of the dequantised blocks.

use half::f16;

use super::activation::ActivationBlock;
use super::avx2;
use super::blocks::{
    BlockQ4K, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_0Lanes, BlockQ8_1,
};
use super::dot::WeightBlock;
use super::interleaved::{BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, Interleaved};
use super::kquants_x8::{BlockQ4Kx8, BlockQ6Kx8};
use super::*;
use super::{repacked, tiled};

/// A small deterministic generator (no dependency, same numbers on every machine).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Random blocks with their f16 scales replaced by sane values by `fix`.
fn random_blocks<W: Copy>(rng: &mut Lcg, count: usize, fix: impl Fn(&mut W, f32)) -> Vec<W> {
    let bytes = rng.bytes(count * std::mem::size_of::<W>());
    let mut blocks: Vec<W> = copy_blocks(&bytes);
    for block in &mut blocks {
        fix(block, 0.001 + rng.unit().abs() * 0.05);
    }
    blocks
}

fn activations(rng: &mut Lcg, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| rng.unit() * if i % 7 == 0 { 4.0 } else { 1.0 })
        .collect()
}

trait DequantizeActivation {
    fn values(&self) -> Vec<f32>;
}

impl DequantizeActivation for BlockQ8_0 {
    fn values(&self) -> Vec<f32> {
        self.qs
            .iter()
            .map(|&q| f32::from(q) * self.d.to_f32())
            .collect()
    }
}

impl DequantizeActivation for BlockQ8_1 {
    fn values(&self) -> Vec<f32> {
        self.qs
            .iter()
            .map(|&q| f32::from(q) * self.d.to_f32())
            .collect()
    }
}

impl DequantizeActivation for BlockQ8K {
    fn values(&self) -> Vec<f32> {
        self.qs.iter().map(|&q| f32::from(q) * self.d).collect()
    }
}

/// The f64 product of the dequantised blocks, and the sum of its terms' magnitudes.
fn exact_product<W>(weights: &[W], acts: &[W::Activation]) -> (f64, f64)
where
    W: WeightBlock,
    W::Activation: DequantizeActivation,
{
    let mut w = vec![0f32; weights.len() * W::ELEMS];
    for (block, dst) in weights.iter().zip(w.chunks_mut(W::ELEMS)) {
        block.dequantize(dst);
    }
    let a: Vec<f32> = acts.iter().flat_map(DequantizeActivation::values).collect();
    let exact = w
        .iter()
        .zip(&a)
        .map(|(&p, &q)| f64::from(p) * f64::from(q))
        .sum();
    let scale = w
        .iter()
        .zip(&a)
        .map(|(&p, &q)| f64::from(p * q).abs())
        .sum();
    (exact, scale)
}

/// Portable and SIMD kernels agree with an f64 product of the same dequantised values.
fn check_kernels<W>(weights: &[W], row_elems: usize, rng: &mut Lcg)
where
    W: WeightBlock,
    W::Activation: DequantizeActivation,
{
    let x = activations(rng, row_elems);
    let acts: Vec<W::Activation> = x
        .chunks(<W::Activation as ActivationBlock>::ELEMS)
        .map(W::Activation::quantize)
        .collect();
    let (exact, scale) = exact_product(weights, &acts);
    let portable = W::dot_portable(weights, &acts);
    // Q4_1's offset term goes through an f16 `s`, as in ggml: allow its rounding.
    assert!(
        (f64::from(portable) - exact).abs() <= 1e-3 * scale + 1e-6,
        "portable {portable} vs exact {exact} (scale {scale})"
    );
    if let Some(simd) = W::dot_simd() {
        let fast = simd(weights, &acts);
        assert!(
            (f64::from(fast) - f64::from(portable)).abs() <= 1e-5 * scale + 1e-6,
            "simd {fast} vs portable {portable}"
        );
    }
}

#[test]
fn q4_1_kernels() {
    let mut rng = Lcg(1);
    for _ in 0..20 {
        let w = random_blocks(&mut rng, 18, |b: &mut BlockQ4_1, s| {
            b.d = f16::from_f32(s);
            b.m = f16::from_f32(-8.0 * s);
        });
        check_kernels(&w, 18 * 32, &mut rng);
    }
}

#[test]
fn q5_0_kernels() {
    let mut rng = Lcg(2);
    for _ in 0..20 {
        let w = random_blocks(&mut rng, 20, |b: &mut BlockQ5_0, s| b.d = f16::from_f32(s));
        check_kernels(&w, 20 * 32, &mut rng);
    }
}

#[test]
fn q8_0_kernels() {
    let mut rng = Lcg(3);
    for _ in 0..20 {
        let w = random_blocks(&mut rng, 20, |b: &mut BlockQ8_0, s| {
            b.d = f16::from_f32(s);
            // ggml's Q8_0 never stores -128.
            b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
        });
        check_kernels(&w, 20 * 32, &mut rng);
    }
}

#[test]
fn q4_k_kernels() {
    let mut rng = Lcg(4);
    for _ in 0..20 {
        let w = random_blocks(&mut rng, 3, |b: &mut BlockQ4K, s| {
            b.d = f16::from_f32(s);
            b.dmin = f16::from_f32(s * 0.5);
        });
        check_kernels(&w, 3 * 256, &mut rng);
    }
}

#[test]
fn q6_k_kernels() {
    let mut rng = Lcg(5);
    for _ in 0..20 {
        let w = random_blocks(&mut rng, 3, |b: &mut BlockQ6K, s| {
            b.d = f16::from_f32(s);
            b.scales.iter_mut().for_each(|q| *q = (*q).max(-127));
        });
        check_kernels(&w, 3 * 256, &mut rng);
    }
}

fn q4k_blocks(rng: &mut Lcg, count: usize) -> Vec<BlockQ4K> {
    random_blocks(rng, count, |b: &mut BlockQ4K, s| {
        b.d = f16::from_f32(s);
        b.dmin = f16::from_f32(s * 0.5);
    })
}

fn q6k_blocks(rng: &mut Lcg, count: usize) -> Vec<BlockQ6K> {
    random_blocks(rng, count, |b: &mut BlockQ6K, s| {
        b.d = f16::from_f32(s);
        b.scales.iter_mut().for_each(|q| *q = (*q).max(-127));
    })
}

fn q8k_acts(rng: &mut Lcg, n: usize) -> Vec<BlockQ8K> {
    activations(rng, n)
        .chunks(256)
        .map(BlockQ8K::quantize)
        .collect()
}

/// The kernels llama.cpp picks by step shape (repacked Q4_K, tiled K-quants): SIMD equals
/// portable bit for bit, since their integer sums are exact and their float steps the same,
/// and both are close to the f64 product.
#[test]
fn shape_kernels_match_portable_and_exact() {
    let mut rng = Lcg(8);
    for _ in 0..20 {
        let w = q4k_blocks(&mut rng, 3);
        let a = q8k_acts(&mut rng, 3 * 256);
        let (exact, scale) = exact_product(&w, &a);
        let q4k = [
            (avx2::q4_k_lone(), repacked::portable_lone as DotFn4K),
            (avx2::q4_k_grouped(), repacked::portable_grouped),
            (avx2::q4_k_tiled(), tiled::q4k_portable),
        ];
        for (simd, portable) in q4k {
            let value = portable(&w, &a);
            assert!((f64::from(value) - exact).abs() <= 1e-5 * scale + 1e-6);
            if let Some(simd) = simd {
                assert_eq!(simd(&w, &a), value);
            }
        }
        let w = q6k_blocks(&mut rng, 3);
        let (exact, scale) = exact_product(&w, &a);
        let value = tiled::q6k_portable(&w, &a);
        assert!((f64::from(value) - exact).abs() <= 1e-5 * scale + 1e-6);
        if let Some(simd) = avx2::q6_k_tiled() {
            assert_eq!(simd(&w, &a), value);
        }
    }
}

type DotFn4K = fn(&[BlockQ4K], &[BlockQ8K]) -> f32;

fn matrix(blocks: Blocks, features: usize, cols: usize) -> QMatrix {
    QMatrix {
        out_features: features,
        in_features: cols,
        blocks,
    }
}

/// Where no kernel depends on the step's shape, a token's outputs do not depend on which
/// other tokens share the product.
#[test]
fn batched_product_equals_single_rows() {
    let mut rng = Lcg(6);
    let (features, cols, tokens) = (70, 256, 37);
    let blocks = random_blocks(&mut rng, features * cols / 32, |b: &mut BlockQ8_0, s| {
        b.d = f16::from_f32(s);
        b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
    });
    let matrix = matrix(Blocks::Q8_0(blocks), features, cols);
    let x = activations(&mut rng, tokens * cols);
    let batched = matrix.forward(&x, tokens);
    for (token, row) in x.chunks(cols).enumerate() {
        let single = matrix.forward(row, 1);
        assert_eq!(
            &batched[token * features..(token + 1) * features],
            &single[..]
        );
    }
}

/// Each token row of a step goes through the kernel llama.cpp would use for it: for a
/// repacked Q4_K matrix, groups of four rows then single rows; for Q6_K from 8 rows on, tiled.
#[test]
fn each_row_takes_the_reference_kernel_for_the_step() {
    let mut rng = Lcg(9);
    let (features, cols) = (24, 512);
    let q4k = q4k_blocks(&mut rng, features * cols / 256);
    let q6k = q6k_blocks(&mut rng, features * cols / 256);
    for tokens in [1, 3, 6, 8, 11] {
        let x = activations(&mut rng, tokens * cols);
        let acts: Vec<BlockQ8K> = x.chunks(256).map(BlockQ8K::quantize).collect();
        let row_acts = |t: usize| &acts[t * 2..(t + 1) * 2];
        let first_lone = tokens - tokens % 4;
        let out = matrix(Blocks::Q4K(q4k.clone()), features, cols).forward(&x, tokens);
        for t in 0..tokens {
            let kernel = if t < first_lone {
                repacked::grouped()
            } else {
                repacked::lone()
            };
            for f in 0..features {
                assert_eq!(
                    out[t * features + f],
                    kernel(&q4k[f * 2..f * 2 + 2], row_acts(t))
                );
            }
        }
        let out = matrix(Blocks::Q6K(q6k.clone()), features, cols).forward(&x, tokens);
        let kernel = if tokens >= tiled::MIN_TOKENS {
            tiled::q6k()
        } else {
            BlockQ6K::dot()
        };
        for t in 0..tokens {
            for f in 0..features {
                assert_eq!(
                    out[t * features + f],
                    kernel(&q6k[f * 2..f * 2 + 2], row_acts(t))
                );
            }
        }
    }
}

#[test]
fn embedding_rows_are_dequantised_rows() {
    let mut rng = Lcg(7);
    let blocks = random_blocks(&mut rng, 4 * 2, |b: &mut BlockQ8_0, s| {
        b.d = f16::from_f32(s)
    });
    let expected: Vec<f32> = blocks[2..4]
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&q| f32::from(q) * b.d.to_f32()))
        .collect();
    let matrix = QMatrix {
        out_features: 4,
        in_features: 64,
        blocks: Blocks::Q8_0(blocks),
    };
    assert_eq!(matrix.rows(&[1]), expected);
}

#[test]
fn simd_is_chosen_where_the_cpu_has_it() {
    if avx2::available() {
        assert_eq!(kernel_choice(), KernelChoice::Avx2);
    }
}

fn q4_1_blocks(rng: &mut Lcg, count: usize) -> Vec<BlockQ4_1> {
    random_blocks(rng, count, |b: &mut BlockQ4_1, s| {
        b.d = f16::from_f32(s);
        b.m = f16::from_f32(-8.0 * s);
    })
}

fn q8_0_blocks(rng: &mut Lcg, count: usize) -> Vec<BlockQ8_0> {
    random_blocks(rng, count, |b: &mut BlockQ8_0, s| {
        b.d = f16::from_f32(s);
        b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
    })
}

/// An interleaved kernel: the SIMD form equals the portable one bit for bit, at every token
/// count its four-token groups split into; both equal the single-row SIMD kernel (the
/// reference's arithmetic) bit for bit, and stay within rounding of the exact product.
fn check_interleaved<G>(blocks: &[G::Row], row_blocks: usize, rng: &mut Lcg)
where
    G: Interleaved,
    G::Row: WeightBlock,
    G::Activation: ForRows<<G::Row as WeightBlock>::Activation>,
    <G::Row as WeightBlock>::Activation: DequantizeActivation,
{
    let rows = interleaved::ROWS;
    let packed: Vec<G> = interleaved::repack(blocks, row_blocks);
    let elems = <G::Activation as ActivationBlock>::ELEMS;
    for tokens in [1, 2, 3, 4, 5, 7, 9, 16, 21, 37] {
        let x = activations(rng, tokens * row_blocks * elems);
        let acts: Vec<G::Activation> = x.chunks(elems).map(G::Activation::quantize).collect();
        let mut portable = vec![0f32; tokens * rows];
        G::portable(&packed, &acts, tokens, &mut portable);
        for simd in [G::simd(), G::avx512()].into_iter().flatten() {
            let mut fast = vec![0f32; tokens * rows];
            simd(&packed, &acts, tokens, &mut fast);
            assert_eq!(fast, portable, "{tokens} tokens");
        }
        for token in 0..tokens {
            let act_row: Vec<_> = acts[token * row_blocks..(token + 1) * row_blocks]
                .iter()
                .map(ForRows::for_rows)
                .collect();
            let act_row = &act_row[..];
            for row in 0..rows {
                let weights = &blocks[row * row_blocks..(row + 1) * row_blocks];
                let value = portable[token * rows + row];
                if let Some(single) = G::Row::dot_simd() {
                    assert_eq!(value, single(weights, act_row), "row {row} token {token}");
                }
                let (exact, scale) = exact_product(weights, act_row);
                assert!(
                    (f64::from(value) - exact).abs() <= 1e-3 * scale + 1e-6,
                    "row {row} token {token}: {value} vs exact {exact}"
                );
            }
        }
    }
}

/// The activation block the single-row kernels take, from the interleaved kernels' one.
trait ForRows<A> {
    fn for_rows(&self) -> A;
}

impl ForRows<BlockQ8_1> for BlockQ8_1 {
    fn for_rows(&self) -> BlockQ8_1 {
        *self
    }
}

impl ForRows<BlockQ8_0> for BlockQ8_0Lanes {
    fn for_rows(&self) -> BlockQ8_0 {
        BlockQ8_0 {
            d: self.d,
            qs: self.qs,
        }
    }
}

#[test]
fn interleaved_kernels_match_the_single_row_kernels() {
    let mut rng = Lcg(11);
    let row_blocks = 18;
    let q4_1 = q4_1_blocks(&mut rng, interleaved::ROWS * row_blocks);
    check_interleaved::<BlockQ4_1x8>(&q4_1, row_blocks, &mut rng);
    let q8_0 = q8_0_blocks(&mut rng, interleaved::ROWS * row_blocks);
    check_interleaved::<BlockQ8_0x8>(&q8_0, row_blocks, &mut rng);
    let q5_0 = q5_0_blocks(&mut rng, interleaved::ROWS * row_blocks);
    check_interleaved::<BlockQ5_0x8>(&q5_0, row_blocks, &mut rng);
    // Both AVX-512 ways of unpacking Q5_0's fifth bits and the AVX2 kernel, where this CPU
    // runs them, on a row that a prefill tile unpacks up front and on one longer than its
    // buffer (72 blocks).
    let long = q5_0_blocks(&mut rng, interleaved::ROWS * 72);
    let kernels = [
        super::avx512::q5_0_x8_spread(),
        super::avx512::q5_0_x8(),
        super::avx2::q5_0_x8(),
    ];
    for (blocks, row_blocks, token_counts) in [
        (&q5_0, row_blocks, &[1, 3, 4, 6, 16][..]),
        (&long, 72, &[3, 16][..]),
    ] {
        let packed: Vec<BlockQ5_0x8> = interleaved::repack(blocks, row_blocks);
        for &tokens in token_counts {
            let x = activations(&mut rng, tokens * row_blocks * 32);
            let acts: Vec<BlockQ8_0Lanes> = x.chunks(32).map(BlockQ8_0Lanes::quantize).collect();
            let mut portable = vec![0f32; tokens * 8];
            BlockQ5_0x8::portable(&packed, &acts, tokens, &mut portable);
            for kernel in kernels.into_iter().flatten() {
                let mut out = vec![0f32; tokens * 8];
                kernel(&packed, &acts, tokens, &mut out);
                assert_eq!(
                    out, portable,
                    "{tokens} tokens, rows of {row_blocks} blocks"
                );
            }
        }
    }
}

/// The summed Q8_0 kernels (the logits'): every SIMD form equals the portable one bit for bit
/// at every token count, each value is within rounding of the exact product, and a matrix's
/// logits product equals its product within that rounding.
#[test]
fn summed_kernels_match_portable_and_exact() {
    let mut rng = Lcg(13);
    let row_blocks = 18;
    let blocks = q8_0_blocks(&mut rng, interleaved::ROWS * row_blocks);
    let packed: Vec<BlockQ8_0x8> = interleaved::repack(&blocks, row_blocks);
    for tokens in [1, 2, 3, 4, 5, 7, 9, 16] {
        let x = activations(&mut rng, tokens * row_blocks * 32);
        let acts: Vec<BlockQ8_0Lanes> = x.chunks(32).map(BlockQ8_0Lanes::quantize).collect();
        let mut portable = vec![0f32; tokens * 8];
        interleaved::q8_0_summed_portable(&packed, &acts, tokens, &mut portable);
        let kernels = [
            super::avx2::q8_0_x8_summed(),
            super::avx512::q8_0_x8_summed(),
        ];
        for kernel in kernels.into_iter().flatten() {
            let mut out = vec![0f32; tokens * 8];
            kernel(&packed, &acts, tokens, &mut out);
            assert_eq!(out, portable, "{tokens} tokens");
        }
        for token in 0..tokens {
            let act_row: Vec<BlockQ8_0> = acts[token * row_blocks..(token + 1) * row_blocks]
                .iter()
                .map(ForRows::for_rows)
                .collect();
            for row in 0..interleaved::ROWS {
                let weights = &blocks[row * row_blocks..(row + 1) * row_blocks];
                let (exact, scale) = exact_product(weights, &act_row);
                let value = f64::from(portable[token * 8 + row]);
                assert!(
                    (value - exact).abs() <= 1e-5 * scale + 1e-6,
                    "row {row} token {token}: {value} vs exact {exact}"
                );
            }
        }
    }
    let (features, cols) = (48, 192);
    let q8_0 = q8_0_blocks(&mut rng, features * cols / 32);
    let linear = Linear::Blocks(matrix(
        Blocks::Q8_0x8(interleaved::repack(&q8_0, cols / 32)),
        features,
        cols,
    ));
    let x = activations(&mut rng, 5 * cols);
    let reference = linear.forward(&x, 5).unwrap();
    let logits = linear.forward_logits(&x, 5).unwrap();
    assert_ne!(logits, reference, "the logits take the summed kernel");
    for (a, b) in logits.iter().zip(&reference) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

fn q5_0_blocks(rng: &mut Lcg, count: usize) -> Vec<BlockQ5_0> {
    random_blocks(rng, count, |b: &mut BlockQ5_0, s| b.d = f16::from_f32(s))
}

/// A repacked matrix multiplies as its rows do one by one, batched or not, and its embedding
/// rows are the original rows dequantised.
#[test]
fn interleaved_matrix_products_and_rows() {
    let mut rng = Lcg(12);
    let (features, cols) = (48, 192);
    let q4_1 = q4_1_blocks(&mut rng, features * cols / 32);
    let q8_0 = q8_0_blocks(&mut rng, features * cols / 32);
    let q5_0 = q5_0_blocks(&mut rng, features * cols / 32);
    let cases = [
        (
            Blocks::Q5_0x8(interleaved::repack(&q5_0, cols / 32)),
            Blocks::Q5_0(q5_0),
        ),
        (
            Blocks::Q4_1x8(interleaved::repack(&q4_1, cols / 32)),
            Blocks::Q4_1(q4_1),
        ),
        (
            Blocks::Q8_0x8(interleaved::repack(&q8_0, cols / 32)),
            Blocks::Q8_0(q8_0),
        ),
    ];
    for (packed, plain) in cases {
        let packed = matrix(packed, features, cols);
        let plain = matrix(plain, features, cols);
        for tokens in [11, 37] {
            let x = activations(&mut rng, tokens * cols);
            let batched = packed.forward(&x, tokens);
            assert_eq!(batched, plain.forward(&x, tokens));
            for (token, row) in x.chunks(cols).enumerate() {
                assert_eq!(
                    &batched[token * features..(token + 1) * features],
                    &packed.forward(row, 1)[..]
                );
            }
        }
        for id in [0u32, 7, 8, 29, 47] {
            assert_eq!(packed.rows(&[id]), plain.rows(&[id]), "row {id}");
        }
    }
}

/// Q4_K and Q6_K repacked eight rows at a time: each row unpacks to the file's block, and a
/// product equals the single-row kernels' bit for bit at every step shape, whether the group
/// kernel is the SIMD or the portable one.
#[test]
fn repacked_k_quants_match_the_single_row_kernels() {
    let mut rng = Lcg(13);
    let (features, cols) = (24, 512);
    let q4k = q4k_blocks(&mut rng, features * cols / 256);
    let q6k = q6k_blocks(&mut rng, features * cols / 256);
    let q4k_x8: Vec<BlockQ4Kx8> = interleaved::repack(&q4k, cols / 256);
    let q6k_x8: Vec<BlockQ6Kx8> = interleaved::repack(&q6k, cols / 256);
    for group in 0..features / 8 {
        for lane in 0..8 {
            for b in 0..cols / 256 {
                let original = &q4k[(group * 8 + lane) * 2 + b];
                let unpacked = q4k_x8[group * 2 + b].unpack(lane);
                assert_eq!(bytes_of(&unpacked), bytes_of(original));
                let original = &q6k[(group * 8 + lane) * 2 + b];
                let unpacked = q6k_x8[group * 2 + b].unpack(lane);
                assert_eq!(bytes_of(&unpacked), bytes_of(original));
            }
        }
    }
    // Up to 15 rows are one tile of the product; from 16 on, tiles of 16 and a last longer one.
    for tokens in [1, 2, 3, 4, 5, 7, 8, 9, 11, 16, 21, 24, 37] {
        let x = activations(&mut rng, tokens * cols);
        let acts: Vec<BlockQ8K> = x.chunks(256).map(BlockQ8K::quantize).collect();
        let group_blocks = cols / 256;
        let check = |portable: &[f32], simd: Option<Vec<f32>>| {
            if let Some(simd) = simd {
                assert_eq!(simd, portable, "{tokens} tokens");
            }
        };
        let mut portable = vec![0f32; tokens * 8];
        BlockQ4Kx8::portable(&q4k_x8[..group_blocks], &acts, tokens, &mut portable);
        check(
            &portable,
            BlockQ4Kx8::simd().map(|kernel| {
                let mut out = vec![0f32; tokens * 8];
                kernel(&q4k_x8[..group_blocks], &acts, tokens, &mut out);
                out
            }),
        );
        // Below 8 tokens the portable Q6_K product rounds as one sum, the SIMD one in
        // llama.cpp's eight lanes; the matrices below compare those with their rows' kernels.
        BlockQ6Kx8::portable(&q6k_x8[..group_blocks], &acts, tokens, &mut portable);
        check(
            &portable,
            BlockQ6Kx8::simd()
                .filter(|_| tokens >= tiled::MIN_TOKENS)
                .map(|kernel| {
                    let mut out = vec![0f32; tokens * 8];
                    kernel(&q6k_x8[..group_blocks], &acts, tokens, &mut out);
                    out
                }),
        );
        let cases = [
            (Blocks::Q4Kx8(q4k_x8.clone()), Blocks::Q4K(q4k.clone())),
            (Blocks::Q6Kx8(q6k_x8.clone()), Blocks::Q6K(q6k.clone())),
        ];
        for (packed, plain) in cases {
            let packed = matrix(packed, features, cols);
            let plain = matrix(plain, features, cols);
            assert_eq!(
                packed.forward(&x, tokens),
                plain.forward(&x, tokens),
                "{tokens} tokens"
            );
            for id in [0u32, 7, 8, 23] {
                assert_eq!(packed.rows(&[id]), plain.rows(&[id]), "row {id}");
            }
        }
    }
}

/// A block's bytes, to compare blocks whose types have no `PartialEq`.
fn bytes_of<W: Copy>(block: &W) -> Vec<u8> {
    #[allow(unsafe_code)]
    // SAFETY: the block types are `repr(C)` over integers and f16, without padding.
    unsafe {
        std::slice::from_raw_parts((block as *const W).cast::<u8>(), std::mem::size_of::<W>())
            .to_vec()
    }
}

/// The AVX2 Q5_0 prefill kernel's 16-bit sums at their extremes: every weight -16 or 15 and
/// every activation -127 or 127, in the four combinations of signs, equal the portable
/// kernel's.
#[test]
fn q5_0_prefill_sums_hold_at_the_extremes() {
    let Some(kernel) = super::avx2::q5_0_x8() else {
        return;
    };
    let row_blocks = 4;
    let tokens = 16;
    for (weight_nibbles, weight_bits, act) in [
        (0x00, 0x00, 127.0),
        (0x00, 0x00, -127.0),
        (0xFF, 0xFF, 127.0),
        (0xFF, 0xFF, -127.0),
    ] {
        let blocks: Vec<BlockQ5_0> = (0..interleaved::ROWS * row_blocks)
            .map(|_| BlockQ5_0 {
                d: f16::from_f32(0.01),
                qh: [weight_bits; 4],
                qs: [weight_nibbles; 16],
            })
            .collect();
        let packed: Vec<BlockQ5_0x8> = interleaved::repack(&blocks, row_blocks);
        let x = vec![act; tokens * row_blocks * 32];
        let acts: Vec<BlockQ8_0Lanes> = x.chunks(32).map(BlockQ8_0Lanes::quantize).collect();
        let mut portable = vec![0f32; tokens * 8];
        BlockQ5_0x8::portable(&packed, &acts, tokens, &mut portable);
        let mut fast = vec![0f32; tokens * 8];
        kernel(&packed, &acts, tokens, &mut fast);
        assert_eq!(
            fast, portable,
            "weights {weight_nibbles:#x}/{weight_bits:#x}, activations {act}"
        );
        let expected =
            if weight_bits == 0 { -16.0 } else { 15.0 } * 0.01 * act * 32.0 * row_blocks as f32;
        assert!(
            (portable[0] - expected).abs() <= 1e-3 * expected.abs(),
            "{} vs {expected}",
            portable[0]
        );
    }
}
