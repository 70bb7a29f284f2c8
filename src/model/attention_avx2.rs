//! AVX2 + FMA forms of attention's f16 dot products (`numerics::dot_lanes32`, `dot_lanes8`),
//! with the same lanes and the same order of additions, so they return the same bits. The
//! compiler does not keep the reference's 32 lanes in four vector registers by itself.
#![allow(unsafe_code)]

/// Whether these kernels run: the CPU has AVX2 and FMA, and `WICK_SIMD` allows them.
pub(super) fn available() -> bool {
    use super::simd::{level, Level};
    level() >= Level::Avx2
}

/// `dot_lanes32(x, y)`, where `available()`.
#[inline]
pub(super) fn dot_lanes32(x: &[f32], y: &[f32]) -> f32 {
    assert!(available() && y.len() >= x.len(), "AVX2 dot product");
    // SAFETY: AVX2 and FMA are present (checked above); `y` is at least as long as `x`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::dot_lanes32(x, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// `dot_lanes8(x, y)`, where `available()`.
#[inline]
pub(super) fn dot_lanes8(x: &[f32], y: &[f32]) -> f32 {
    assert!(available() && y.len() >= x.len(), "AVX2 dot product");
    // SAFETY: as in `dot_lanes32`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::dot_lanes8(x, y)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Lane `l` of accumulator `c` is the reference's lane `8c + l`; `reduce_lanes` is
    /// ((A0 + A2) + (A1 + A3)), then its halves added, then (t0 + t1) + (t2 + t3).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes32(x: &[f32], y: &[f32]) -> f32 {
        let (px, py) = (x.as_ptr(), y.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let whole = x.len() - x.len() % 32;
        for i in (0..whole).step_by(32) {
            for (c, a) in acc.iter_mut().enumerate() {
                let p = _mm256_loadu_ps(px.add(i + 8 * c));
                let q = _mm256_loadu_ps(py.add(i + 8 * c));
                *a = _mm256_fmadd_ps(p, q, *a);
            }
        }
        let lanes = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
        let halves = _mm_add_ps(
            _mm256_castps256_ps128(lanes),
            _mm256_extractf128_ps(lanes, 1),
        );
        let pairs = _mm_hadd_ps(halves, halves);
        let reduced = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
        let mut sum = f64::from(reduced);
        for (p, q) in x[whole..].iter().zip(&y[whole..]) {
            sum += f64::from(p * q);
        }
        sum as f32
    }

    /// `hsum_8` is (v[i + 4] + v[i]) for i < 4, then (w0 + w2) and (w1 + w3), then their sum.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes8(x: &[f32], y: &[f32]) -> f32 {
        let (px, py) = (x.as_ptr(), y.as_ptr());
        let mut acc = _mm256_setzero_ps();
        for i in (0..x.len() - x.len() % 8).step_by(8) {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)), acc);
        }
        let v = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
        let w = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(w, _mm_movehdup_ps(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::numerics;

    /// The same bits as the portable forms, over lengths with and without a tail.
    #[test]
    fn equal_to_the_portable_forms() {
        if !available() {
            return;
        }
        for len in [8, 32, 64, 72, 256] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 101) as f32 / 7.0 - 6.0)
                .collect();
            let y: Vec<f32> = (0..len)
                .map(|i| ((i * 53) % 97) as f32 / 11.0 - 4.0)
                .collect();
            assert_eq!(dot_lanes32(&x, &y), numerics::dot_lanes32(&x, &y), "{len}");
            assert_eq!(dot_lanes8(&x, &y), numerics::dot_lanes8(&x, &y), "{len}");
        }
    }
}
