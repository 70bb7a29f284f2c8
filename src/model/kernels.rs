//! CPU kernels for the encoder's elementwise work, on plain f32 slices: fused bias + GELU and
//! fused bias + residual + LayerNorm, and softmax's exponentials, with vectorizable exp and erf.
//!
//! Why not candle's elementwise ops: they call libm's scalar `erff`/`expf` one element at a time
//! and take one pass over memory per op; profiling MiniLM put ~40% of a forward pass there.
//! These fuse each step into one pass, use vectorizable approximations of exp and erf (max
//! error ~1e-7, tested against libm), are compiled for AVX-512, for AVX2 + FMA and plainly,
//! dispatched at run time on [`super::simd::level`], and split rows over the rayon pool that
//! candle's matmul already uses (no second pool).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::buffer;
use super::simd::simd_versions;

/// Below this many elements a kernel runs on the calling thread: a fork costs more than it saves.
const PARALLEL_MIN: usize = 16 * 1024;

/// Rows per parallel task so each task has at least `PARALLEL_MIN` elements.
fn rows_per_task(row_len: usize) -> usize {
    (PARALLEL_MIN / row_len.max(1)).max(1)
}

/// Sum of a slice in 8 independent lanes: a plain `iter().sum()` is one serial chain of float
/// additions, which the compiler may not reorder and so cannot vectorize.
#[inline(always)]
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Maximum of a slice in 8 independent lanes (see [`sum_lanes`]).
#[inline(always)]
fn max_lanes(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = if *v > *lane { *v } else { *lane };
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

/// Sum of squared distances from `mean`, in 8 lanes.
#[inline(always)]
fn squared_deviation_lanes(values: &[f32], mean: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - mean) * (v - mean);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// e^x for x <= 0, as softmax takes it of scores less their maximum, in half the
/// instructions of a general exp (Cephes'): x = n ln2 + r with |r| <= ln2 / 2, where n comes
/// out of one fused multiply-add (x log2(e) + 1.5 x 2^23 + 127 rounds to an integer whose low
/// bits are n's biased exponent), and e^r by a degree-5 minimax polynomial (relative error
/// 2e-7). Below -87, where e^x leaves the normal floats, it returns e^-87.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFT: f32 = 12_583_039.0;
    let x = x.max(-87.0);
    let shifted = x.mul_add(LOG2E, SHIFT);
    let n = shifted - SHIFT;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 8.290_306e-3_f32;
    p = p.mul_add(r, 4.189_792_3e-2);
    p = p.mul_add(r, 1.666_763_6e-1);
    p = p.mul_add(r, 4.999_915e-1);
    p = p.mul_add(r, 9.999_997e-1);
    p = p.mul_add(r, 1.0);
    // The low 9 bits of `shifted` are n + 127, at most 127: shifted into the sign and
    // exponent fields they make 2^n.
    p * f32::from_bits(shifted.to_bits() << 23)
}

/// erf(x), vectorizable: Eigen's rational approximation on [-4, 4] (|erf| is 1 in f32 beyond).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_600_1e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_2e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

/// GELU as BERT defines it: x/2 (1 + erf(x/sqrt 2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

simd_versions! {
    fn bias_gelu_rows(rows: &mut [f32], bias: &[f32]) {
        for row in rows.chunks_exact_mut(bias.len()) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x = gelu(*x + *b);
            }
        }
    }
}

/// `x[i, j] = gelu(x[i, j] + bias[j])` in place, `x` being rows of `bias.len()`.
pub fn bias_gelu(x: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    x.par_chunks_mut(n * rows_per_task(n))
        .with_min_len(1)
        .for_each(|rows| bias_gelu_rows(rows, bias));
}

/// Parameters of a LayerNorm.
pub struct LayerNormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

simd_versions! {
    #[allow(clippy::too_many_arguments)]
    fn add_layer_norm_rows(
        out: &mut [MaybeUninit<f32>],
        x: &[f32],
        residual: &[f32],
        bias: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let n = gamma.len();
        for ((o, xr), rr) in out
            .chunks_exact_mut(n)
            .zip(x.chunks_exact(n))
            .zip(residual.chunks_exact(n))
        {
            match bias {
                Some(b) => {
                    for j in 0..n {
                        o[j].write(xr[j] + b[j] + rr[j]);
                    }
                }
                None => {
                    for j in 0..n {
                        o[j].write(xr[j] + rr[j]);
                    }
                }
            }
            // SAFETY: every element of the row was written just above.
            let o = unsafe { o.assume_init_mut() };
            let mean = sum_lanes(o) / n as f32;
            let var = squared_deviation_lanes(o, mean) / n as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for j in 0..n {
                o[j] = (o[j] - mean) * inv * gamma[j] + beta[j];
            }
        }
    }
}

/// `out = LayerNorm(x + bias + residual)` row by row (rows of `ln.gamma.len()`).
pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    bias: Option<&[f32]>,
    ln: &LayerNormParams<'_>,
) -> Vec<f32> {
    let n = ln.gamma.len();
    assert!(
        x.len() == residual.len() && x.len().is_multiple_of(n),
        "rows of the norm's width"
    );
    let chunk = n * rows_per_task(n);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(residual.par_chunks(chunk))
            .for_each(|((o, xs), rs)| {
                add_layer_norm_rows(o, xs, rs, bias, ln.gamma, ln.beta, ln.eps)
            })
    };
    // SAFETY: the output has whole rows (asserted), each of which the kernel writes.
    unsafe { buffer::filled(x.len(), fill) }
}

simd_versions! {
    fn exp_rows_of(rows: &mut [f32], row_len: usize, sums: &mut [f32]) {
        for (row, sum) in rows.chunks_exact_mut(row_len).zip(sums) {
            let max = max_lanes(row);
            let mut lanes = [0f32; 8];
            let mut eights = row.chunks_exact_mut(8);
            for eight in &mut eights {
                for (v, lane) in eight.iter_mut().zip(&mut lanes) {
                    *v = exp_nonpositive(*v - max);
                    *lane += *v;
                }
            }
            // The last few values as one more vector: one at a time, they cost as much as a
            // vector each.
            let tail = eights.into_remainder();
            if !tail.is_empty() {
                let mut padded = [max; 8];
                padded[..tail.len()].copy_from_slice(tail);
                for v in &mut padded {
                    *v = exp_nonpositive(*v - max);
                }
                tail.copy_from_slice(&padded[..tail.len()]);
            }
            *sum = lanes.iter().sum::<f32>() + tail.iter().sum::<f32>();
        }
    }
}

/// Softmax of each row of `row_len` values but for the division: each row becomes
/// `exp(x - max)`, and its sum is returned.
pub fn exp_rows(rows: &mut [f32], row_len: usize) -> Vec<f32> {
    let mut sums = vec![0f32; rows.len() / row_len.max(1)];
    if row_len > 0 {
        exp_rows_of(rows, row_len, &mut sums);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_of_nonpositive_values_matches_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive(x), libm::expf(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.00131;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1000.0), exp_nonpositive(-87.0));
    }

    #[test]
    fn erf_and_gelu_match_libm() {
        let mut worst = 0f32;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf(x) - libm::erff(x)).abs());
            let want = 0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2));
            assert!((gelu(x) - want).abs() < 1e-6, "gelu({x})");
            x += 0.001;
        }
        assert!(worst < 5e-7, "max absolute error {worst}");
    }

    #[test]
    fn lane_reductions_match_serial_ones() {
        for n in [0usize, 1, 7, 8, 9, 31, 197, 384] {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let serial: f32 = v.iter().sum();
            assert!((sum_lanes(&v) - serial).abs() < 1e-3, "sum of {n}");
            assert_eq!(
                max_lanes(&v),
                v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            );
            let mean = if n == 0 { 0.0 } else { serial / n as f32 };
            let dev: f32 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
            assert!((squared_deviation_lanes(&v, mean) - dev).abs() < 1e-2 * (1.0 + dev));
        }
    }

    #[test]
    fn exp_rows_divided_by_their_sums_are_a_softmax() {
        let mut rows = vec![1.0, 2.0, 3.0, -50.0, 0.0, 50.0];
        let sums = exp_rows(&mut rows, 3);
        let z: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((rows[0] / sums[0] - 1f32.exp() / z).abs() < 1e-6);
        assert!((rows[5] / sums[1] - 1.0).abs() < 1e-6 && rows[3] / sums[1] < 1e-30);
    }

    #[test]
    fn rows_of_whole_vectors_and_with_a_tail_match_libm() {
        for row_len in [8usize, 11, 16, 195] {
            let original: Vec<f32> = (0..2 * row_len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
                .collect();
            let mut rows = original.clone();
            let sums = exp_rows(&mut rows, row_len);
            for (r, row) in original.chunks_exact(row_len).enumerate() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let want: Vec<f32> = row.iter().map(|v| libm::expf(v - max)).collect();
                let got = &rows[r * row_len..(r + 1) * row_len];
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 3e-7 * w.max(1e-30),
                        "{row_len}: {g} vs {w}"
                    );
                }
                let sum: f32 = want.iter().sum();
                assert!((sums[r] - sum).abs() < 1e-5 * sum, "{row_len}: sum");
            }
        }
    }

    #[test]
    fn add_layer_norm_matches_the_definition() {
        let x = [1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
        let r = [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0];
        let bias = [0.1, 0.2, 0.3, 0.4];
        let gamma = [1.0, 2.0, 1.0, 0.5];
        let beta = [0.0, 0.1, 0.0, -0.1];
        let ln = LayerNormParams {
            gamma: &gamma,
            beta: &beta,
            eps: 1e-12,
        };
        let out = add_layer_norm(&x, &r, Some(&bias), &ln);
        for row in 0..2 {
            let v: Vec<f32> = (0..4)
                .map(|j| x[row * 4 + j] + bias[j] + r[row * 4 + j])
                .collect();
            let mean = v.iter().sum::<f32>() / 4.0;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / 4.0;
            for j in 0..4 {
                let want = (v[j] - mean) / (var + 1e-12).sqrt() * gamma[j] + beta[j];
                assert!((out[row * 4 + j] - want).abs() < 1e-5);
            }
        }
    }
}
