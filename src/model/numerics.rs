//! The reference's (llama.cpp's CPU) elementwise numerics, lane for lane: its vectorised exp,
//! SiLU, f16-table GELU and f16 dot products. A last-bit difference in an activation flips the
//! rounding of the next 8-bit quantisation now and then, and over 30 layers such flips decide a
//! near-tie; matching them keeps wick's logits on the reference's.

use std::sync::OnceLock;

use half::f16;

/// ggml's `ggml_v_expf` for one lane (max error ~1.5 ulp; not libm's `expf`).
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b); // 0x1.ffffecp-1
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `x / (1 + exp(-x))` as ggml's `ggml_v_silu`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf(0.0 - x))
}

/// GELU (tanh form) as ggml computes it with `GGML_GELU_FP16`: the input rounded to f16, the
/// result looked up in a table of f16 values.
pub fn gelu_tanh(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        gelu_table()[usize::from(f16::from_f32(x).to_bits())].to_f32()
    }
}

/// GELU of every f16 value, indexed by its bits, and one entry more (zero) so a vector gather
/// of 32-bit words at the last index stays inside the table.
pub(super) fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                f16::from_f32(gelu_tanh_f32(x))
            })
            .chain([f16::ZERO])
            .collect()
    })
}

/// ggml's `ggml_gelu_f32`, in its order of operations.
fn gelu_tanh_f32(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    // The reference's compiler fuses `1 + a*x*x` into one multiply-add.
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// Lanes of the reference's f16 dot product: 4 accumulators of 8, element `i` of each 32 going
/// to accumulator `(i % 32) / 8`, lane `i % 8`.
pub const DOT_LANES: usize = 32;

/// The reference's reduction of 32 lanes (`GGML_F32x8_REDUCE`).
#[inline(always)]
pub fn reduce_lanes(acc: &[f32; DOT_LANES]) -> f32 {
    let mut x = [0f32; 8];
    for (l, v) in x.iter_mut().enumerate() {
        *v = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
    }
    let t0 = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (t0[0] + t0[1]) + (t0[2] + t0[3])
}

/// The f16 dot product of the reference's tiled matrix multiply (`tinyBLAS`, used when a pass
/// has two tokens or more), over f16 values already widened to f32: one 8-lane accumulator,
/// element `i` in lane `i % 8`.
///
/// Inlined into its callers, which are compiled for the CPU's features (`multiversion`), so it
/// takes their vector instructions with no dispatch per call.
#[inline(always)]
pub fn dot_lanes8(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (xs, ys) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        for ((a, p), q) in acc.iter_mut().zip(xs).zip(ys) {
            *a = p.mul_add(*q, *a);
        }
    }
    hsum_8(&acc)
}

/// `ggml_vec_dot_f16` (one token in the pass), over f16 values already widened to f32.
/// Inlined into its callers, as `dot_lanes8` is.
#[inline(always)]
pub fn dot_lanes32(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; DOT_LANES];
    for (xs, ys) in x.chunks_exact(DOT_LANES).zip(y.chunks_exact(DOT_LANES)) {
        for ((a, p), q) in acc.iter_mut().zip(xs).zip(ys) {
            *a = p.mul_add(*q, *a);
        }
    }
    let mut sum = f64::from(reduce_lanes(&acc));
    let tail = x.len() - x.len() % DOT_LANES;
    for (p, q) in x[tail..].iter().zip(&y[tail..]) {
        sum += f64::from(p * q);
    }
    sum as f32
}

/// The reference's horizontal sum of 8 lanes (`hsum_float_8`): also how its softmax sums each
/// 8 exponentials before adding them in f64.
#[inline(always)]
pub fn hsum_8(values: &[f32; 8]) -> f32 {
    let v: [f32; 4] = std::array::from_fn(|i| values[i + 4] + values[i]);
    let w = [v[0] + v[2], v[1] + v[3]];
    w[0] + w[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm() {
        // Down to where results turn subnormal.
        for i in -1700..1700 {
            let x = i as f32 * 0.05;
            let (ours, libm) = (expf(x), x.exp());
            assert!(((ours - libm) / libm).abs() < 1e-6, "{x}: {ours} vs {libm}");
        }
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn activations_are_close_to_their_formulas() {
        for i in -400..400 {
            let x = i as f32 * 0.03;
            assert!((silu(x) - x / (1.0 + (-x).exp())).abs() < 1e-5);
            let exact = gelu_tanh_f32(x);
            assert!(
                (gelu_tanh(x) - exact).abs() <= exact.abs() * 2e-3 + 1e-3,
                "{x}"
            );
        }
    }

    #[test]
    fn f16_dot_matches_f64() {
        let x: Vec<f16> = (0..96)
            .map(|i| f16::from_f32((i as f32 * 0.37).sin()))
            .collect();
        let y: Vec<f16> = (0..96)
            .map(|i| f16::from_f32((i as f32 * 0.11).cos()))
            .collect();
        let exact: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a.to_f32()) * f64::from(b.to_f32()))
            .sum();
        let widen = |v: &[f16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
        let (x, y) = (widen(&x), widen(&y));
        assert!((f64::from(dot_lanes32(&x, &y)) - exact).abs() < 1e-5);
        assert!((f64::from(dot_lanes8(&x, &y)) - exact).abs() < 1e-5);
    }
}
