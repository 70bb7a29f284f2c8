//! AVX2 + FMA forms of `numerics`' exponential and of the SiLU gate built on it, lane by lane
//! the same bits as the scalar forms (which the compiler cannot vectorise: `expf` branches).
#![allow(unsafe_code)]

/// Whether these kernels run: the CPU has AVX2 and FMA, and `WICK_SIMD` allows them.
pub(super) fn available() -> bool {
    use super::simd::{level, Level};
    level() >= Level::Avx2
}

/// `up[i] *= numerics::silu(gate[i])` over the shorter of the two. Where `available()`.
pub(super) fn silu_gate(gate: &[f32], up: &mut [f32]) {
    assert!(available(), "AVX2 SiLU");
    // SAFETY: AVX2 and FMA are present (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::silu_gate(gate, up)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// `up[i] *= numerics::gelu_tanh(gate[i])` over the shorter of the two: eight inputs rounded
/// to f16 at once and their table entries gathered. Where `available()`.
pub(super) fn gelu_gate(gate: &[f32], up: &mut [f32]) {
    assert!(available(), "AVX2 GELU");
    let table = super::numerics::gelu_table();
    assert!(table.len() > usize::from(u16::MAX) + 1, "GELU table padded");
    // SAFETY: AVX2, FMA and F16C are present (checked above); gathered words start at most
    // at entry 65535 and end within the padded table.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::gelu_gate(gate, up, table)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use crate::model::numerics;

    #[target_feature(enable = "avx2,fma")]
    pub(in crate::model) unsafe fn silu_gate(gate: &[f32], up: &mut [f32]) {
        let n = gate.len().min(up.len());
        let (whole, pg, pu) = (n - n % 8, gate.as_ptr(), up.as_mut_ptr());
        let one = _mm256_set1_ps(1.0);
        for i in (0..whole).step_by(8) {
            let g = _mm256_loadu_ps(pg.add(i));
            // `0.0 - x`, as the scalar form has it (not a negation: +0 for x = 0).
            let e = expf(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(pu.add(i), _mm256_mul_ps(_mm256_loadu_ps(pu.add(i)), silu));
        }
        for (u, &g) in up[whole..n].iter_mut().zip(&gate[whole..n]) {
            *u *= numerics::silu(g);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::model) unsafe fn gelu_gate(gate: &[f32], up: &mut [f32], table: &[half::f16]) {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT;
        let n = gate.len().min(up.len());
        let (whole, pg, pu) = (n - n % 8, gate.as_ptr(), up.as_mut_ptr());
        let base = table.as_ptr().cast::<i32>();
        let (low, high) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
        for i in (0..whole).step_by(8) {
            let x = _mm256_loadu_ps(pg.add(i));
            let bits = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<NEAREST>(x));
            // Each entry in the low half of a 32-bit word read at byte 2 * bits.
            let words = _mm256_i32gather_epi32::<2>(base, bits);
            let entries = _mm256_packus_epi32(
                _mm256_and_si256(words, _mm256_set1_epi32(0xFFFF)),
                _mm256_setzero_si256(),
            );
            let entries = _mm256_permute4x64_epi64::<0b1000>(entries);
            let looked_up = _mm256_cvtph_ps(_mm256_castsi256_si128(entries));
            // x <= -10: 0; x >= 10: x; between (and NaN): the table.
            let gelu = _mm256_blendv_ps(looked_up, x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, high));
            let gelu = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, low), gelu);
            _mm256_storeu_ps(pu.add(i), _mm256_mul_ps(_mm256_loadu_ps(pu.add(i)), gelu));
        }
        for (u, &g) in up[whole..n].iter_mut().zip(&gate[whole..n]) {
            *u *= numerics::gelu_tanh(g);
        }
    }

    /// `numerics::expf` on eight lanes (ggml's `ggml_v_expf`), lane by lane the same bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::model) unsafe fn expf(x: __m256) -> __m256 {
        let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
        let r = c(0x4b40_0000);
        let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(c(0x3f80_0000))));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm256_mul_ps(c(0x3f7f_fff6), b),
        );
        let magnitude = _mm256_andnot_ps(c(0x8000_0000), n);
        let usual = _mm256_fmadd_ps(j, k, k);
        // Not `<= 126`, so a NaN lane takes the scalar form's second branch too.
        let wide = _mm256_cmp_ps::<_CMP_NLE_UQ>(magnitude, _mm256_set1_ps(126.0));
        if _mm256_movemask_ps(wide) == 0 {
            return usual;
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000_u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(magnitude, _mm256_set1_ps(192.0));
        let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
        let outside = _mm256_blendv_ps(scaled, _mm256_mul_ps(s1, s1), huge);
        _mm256_blendv_ps(usual, outside, wide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::numerics;

    /// Every f16 value's neighbourhood, the cut-offs at +-10 and the extremes.
    #[test]
    fn gelu_gate_equals_the_portable_form() {
        if !available() {
            return;
        }
        let mut gate: Vec<f32> = (0..=u16::MAX)
            .map(|bits| half::f16::from_bits(bits).to_f32())
            .filter(|x| !x.is_nan())
            .collect();
        gate.extend((0..4001).map(|i| (i as f32 - 2000.0) * 0.00731));
        gate.extend([
            -10.0, 10.0, -9.999, 9.999, -10.001, 10.001, 0.0, -0.0, 1e30, -1e30,
        ]);
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 1.0 + (i % 7) as f32 * 0.3)
            .collect();
        let mut ours = up.clone();
        gelu_gate(&gate, &mut ours);
        for ((g, u), o) in gate.iter().zip(&up).zip(&ours) {
            let expected = u * numerics::gelu_tanh(*g);
            assert_eq!(
                expected.to_bits(),
                o.to_bits(),
                "gelu({g}): {expected} vs {o}"
            );
        }
    }

    /// Over the whole range the gate sees, zeros, infinities and a NaN included.
    #[test]
    fn silu_gate_equals_the_portable_form() {
        if !available() {
            return;
        }
        let mut gate: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.0517).collect();
        gate.extend([
            0.0,
            -0.0,
            1e-30,
            -100.0,
            100.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        gate.extend([f32::NAN, -1e30, 1e30, 88.7, -88.7, 150.0]);
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 1.0 + (i % 7) as f32 * 0.3)
            .collect();
        let mut ours = up.clone();
        silu_gate(&gate, &mut ours);
        for ((g, u), o) in gate.iter().zip(&up).zip(&ours) {
            let expected = u * numerics::silu(*g);
            assert!(
                expected.to_bits() == o.to_bits() || (expected.is_nan() && o.is_nan()),
                "silu({g}): {expected} vs {o}"
            );
        }
    }
}
