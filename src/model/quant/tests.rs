//! The kernels against each other and against f64 products of the dequantised blocks.

use half::f16;

use super::activation::ActivationBlock;
use super::avx2;
use super::blocks::{BlockQ4K, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1};
use super::dot::WeightBlock;
use super::*;

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
    let mut w = vec![0f32; row_elems];
    for (block, dst) in weights.iter().zip(w.chunks_mut(W::ELEMS)) {
        block.dequantize(dst);
    }
    let a: Vec<f32> = acts.iter().flat_map(DequantizeActivation::values).collect();
    let exact: f64 = w
        .iter()
        .zip(&a)
        .map(|(&p, &q)| f64::from(p) * f64::from(q))
        .sum();
    let scale: f64 = w
        .iter()
        .zip(&a)
        .map(|(&p, &q)| f64::from(p * q).abs())
        .sum();
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

/// A token's outputs do not depend on which other tokens share the product.
#[test]
fn batched_product_equals_single_rows() {
    let mut rng = Lcg(6);
    let (features, cols, tokens) = (70, 256, 37);
    let blocks = random_blocks(&mut rng, features * cols / 256, |b: &mut BlockQ4K, s| {
        b.d = f16::from_f32(s);
        b.dmin = f16::from_f32(s * 0.5);
    });
    let matrix = QMatrix {
        out_features: features,
        in_features: cols,
        blocks: Blocks::Q4K(blocks),
    };
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
    if avx2::available() && std::env::var("WICK_QUANT_KERNEL").is_err() {
        assert_eq!(kernel_choice(), KernelChoice::Avx2);
    }
}
