//! AVX2 + FMA dot products, translated from llama.cpp's x86 kernels lane for lane: the same
//! integer products, the same eight float accumulators and the same final horizontal sum, so
//! a product here rounds as the reference's does. Chosen at run time, never at compile time.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and loads through
//! pointers into blocks whose sizes the types fix.
#![allow(unsafe_code)]

use super::blocks::{
    BlockQ4K, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_0Lanes, BlockQ8_1,
};
use super::dot::DotFn;
use super::interleaved::{BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, GroupFn};

/// Whether these kernels run: the CPU has AVX2, FMA and F16C, and `WICK_SIMD` allows them.
pub(super) fn available() -> bool {
    use crate::model::simd::{level, Level};
    level() >= Level::Avx2
}

/// Four token rows against one weight row.
pub(super) type Dot4Fn<W, A> = fn(&[W], [&[A]; 4]) -> [f32; 4];

/// `$name()`: the AVX2 kernel `x86::$name` as a safe function of type `$kind`, where the CPU
/// runs it.
macro_rules! dispatch {
    ($name:ident, $weight:ty, $act:ty) => {
        dispatch!($name, DotFn<$weight, $act>);
    };
    ($name:ident, $kind:ty) => {
        pub(super) fn $name() -> Option<$kind> {
            #[cfg(target_arch = "x86_64")]
            {
                if available() {
                    return Some(|w, a| {
                        // SAFETY: only handed out after `available()` confirmed AVX2, FMA and F16C.
                        unsafe { x86::$name(w, a) }
                    });
                }
            }
            None
        }
    };
}

dispatch!(q4_1, BlockQ4_1, BlockQ8_1);
dispatch!(q5_0, BlockQ5_0, BlockQ8_0);
dispatch!(q8_0, BlockQ8_0, BlockQ8_0);
dispatch!(q4_k, BlockQ4K, BlockQ8K);
dispatch!(q6_k, BlockQ6K, BlockQ8K);
dispatch!(q4_k_lone, BlockQ4K, BlockQ8K);
dispatch!(q4_k_grouped, BlockQ4K, BlockQ8K);
dispatch!(q4_k_tiled, BlockQ4K, BlockQ8K);
dispatch!(q6_k_tiled, BlockQ6K, BlockQ8K);
dispatch!(q4_1_x4, Dot4Fn<BlockQ4_1, BlockQ8_1>);
dispatch!(q5_0_x4, Dot4Fn<BlockQ5_0, BlockQ8_0>);
dispatch!(q8_0_x4, Dot4Fn<BlockQ8_0, BlockQ8_0>);

dispatch_group!(available, q4_1_x8, BlockQ4_1x8, BlockQ8_1, |w, a, t, o| {
    x86::q4_1_x8(w, a, t, o)
});
dispatch_group!(
    available,
    q8_0_x8,
    BlockQ8_0x8,
    BlockQ8_0Lanes,
    |w, a, t, o| x86::signed_x8(w, a, t, o, x86::q8_0_x8_quants)
);
dispatch_group!(
    available,
    q8_0_x8_summed,
    BlockQ8_0x8,
    BlockQ8_0Lanes,
    |w, a, t, o| x86::q8_0_x8_summed(w, a, t, o)
);
dispatch_group!(
    available,
    q5_0_x8,
    BlockQ5_0x8,
    BlockQ8_0Lanes,
    |w, a, t, o| x86::q5_0_x8(w, a, t, o)
);

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    /// Runs `$kernel::<T>` over a group's tokens, `T` tokens per pass: eight while eight
    /// remain, then one pass of the rest (at most four per pass); each kernel's accumulators
    /// are sized by `T` at compile time.
    macro_rules! token_passes {
        ($tokens:expr, $first:ident, $kernel:ident [$($generic:tt)*] ($($arg:expr),*)) => {{
            let mut $first = 0;
            while $first < $tokens {
                let count = if $tokens - $first >= 8 { 8 } else { ($tokens - $first).min(4) };
                match count {
                    8 => $kernel::<8 $($generic)*>($($arg),*),
                    4 => $kernel::<4 $($generic)*>($($arg),*),
                    3 => $kernel::<3 $($generic)*>($($arg),*),
                    2 => $kernel::<2 $($generic)*>($($arg),*),
                    _ => $kernel::<1 $($generic)*>($($arg),*),
                }
                $first += count;
            }
        }};
    }

    use super::super::blocks::{
        q4k_scale_min, BlockQ4K, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8K, BlockQ8_0,
        BlockQ8_0Lanes, BlockQ8_1,
    };
    use super::super::interleaved::{BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, ROWS};
    use super::super::repacked::{Accumulator, PairSums};
    use super::super::tiled;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum_float_8(x: __m256) -> f32 {
        let mut res = _mm256_extractf128_ps(x, 1);
        res = _mm_add_ps(res, _mm256_castps256_ps128(x));
        res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }

    /// An f16 scale as f32 with the F16C instruction: half's `to_f32` checks the CPU on
    /// every call, which costs more than the conversion in these loops.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn widen(h: half::f16) -> f32 {
        let pair = widen_two(h, h);
        // Both lanes are read, so the conversion starts from a fresh register (see
        // `widen_two`); they hold the same bits, so their `and` is the value.
        _mm_cvtss_f32(_mm_and_ps(pair, _mm_movehdup_ps(pair)))
    }

    /// Two f16 scales as f32 in the two low lanes, converted from one 32-bit word. A lone
    /// f16 lets the compiler insert it into whatever register is at hand (only its low 16
    /// bits matter), and when that register holds a loop's accumulator every iteration waits
    /// for the one before: both halves of the word matter here, so it takes a fresh register.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn widen_two(low: half::f16, high: half::f16) -> __m128 {
        let word = u32::from(low.to_bits()) | (u32::from(high.to_bits()) << 16);
        _mm_cvtph_ps(_mm_cvtsi32_si128(word as i32))
    }

    /// `a * b` in every lane of a vector, from the two scales of `widen_two(a, b)`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scale_product(a: half::f16, b: half::f16) -> __m256 {
        let pair = widen_two(a, b);
        _mm256_broadcastss_ps(_mm_mul_ss(pair, _mm_movehdup_ps(pair)))
    }

    /// 32 nibbles of 16 bytes as 32 bytes: low nibbles first, then high.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bytes_from_nibbles_32(bytes: *const u8) -> __m256i {
        let tmp = _mm_loadu_si128(bytes.cast());
        let both = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
        _mm256_and_si256(_mm256_set1_epi8(0xF), both)
    }

    /// 32 bits spread to 32 bytes of 0x00 or 0xFF.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn bytes_from_bits_32(bits: [u8; 4]) -> __m256i {
        let x32 = i32::from_le_bytes(bits);
        let shuffle = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuffle);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    /// Unsigned times signed bytes, summed in fours, as eight floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
        let dot = _mm256_maddubs_epi16(ax, sy);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot))
    }

    /// Signed times signed bytes, summed in fours, as eight floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        mul_sum_us8_pairs_float(ax, sy)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        // Lane 1 sums the offsets' products `m * s` in block order, as the reference does.
        let mut summs = _mm_setzero_ps();
        for (x, y) in w.iter().zip(a) {
            // Lane 0: `d_x * d_y`; lane 1: `m_x * s_y`.
            let scales = _mm_mul_ps(widen_two(x.d, x.m), widen_two(y.d, y.s));
            summs = _mm_add_ps(summs, scales);
            let d0d1 = _mm256_broadcastss_ps(scales);
            let qx = bytes_from_nibbles_32(x.qs.as_ptr());
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d0d1, mul_sum_us8_pairs_float(qx, qy), acc);
        }
        hsum_float_8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.iter().zip(a) {
            let d = scale_product(x.d, y.d);
            let qx = bytes_from_nibbles_32(x.qs.as_ptr());
            // A clear fifth bit subtracts 16: 0xF0 in those bytes makes them negative.
            let high =
                _mm256_andnot_si256(bytes_from_bits_32(x.qh), _mm256_set1_epi8(0xF0u8 as i8));
            let qx = _mm256_or_si256(qx, high);
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
        }
        hsum_float_8(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.iter().zip(a) {
            let d = scale_product(x.d, y.d);
            let qx = _mm256_loadu_si256(x.qs.as_ptr().cast());
            let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
            acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qx, qy), acc);
        }
        hsum_float_8(acc)
    }

    /// `q4_1` for four token rows at once: each weight block is unpacked once, and each
    /// token's accumulators take exactly the steps they take in `q4_1`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_x4(w: &[BlockQ4_1], a: [&[BlockQ8_1]; 4]) -> [f32; 4] {
        assert!(
            a.iter().all(|rows| rows.len() >= w.len()),
            "activation rows too short"
        );
        let rows = a.map(<[_]>::as_ptr);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut summs = [_mm_setzero_ps(); 4];
        for (i, x) in w.iter().enumerate() {
            let dm = widen_two(x.d, x.m);
            let qx = bytes_from_nibbles_32(x.qs.as_ptr());
            for t in 0..4 {
                // SAFETY: every activation row holds at least `w.len()` blocks (checked above).
                let y = &*rows[t].add(i);
                let scales = _mm_mul_ps(dm, widen_two(y.d, y.s));
                summs[t] = _mm_add_ps(summs[t], scales);
                let d0d1 = _mm256_broadcastss_ps(scales);
                let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                acc[t] = _mm256_fmadd_ps(d0d1, mul_sum_us8_pairs_float(qx, qy), acc[t]);
            }
        }
        std::array::from_fn(|t| hsum_float_8(acc[t]) + _mm_cvtss_f32(_mm_movehdup_ps(summs[t])))
    }

    /// `q5_0` for four token rows at once (see `q4_1_x4`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5_0_x4(w: &[BlockQ5_0], a: [&[BlockQ8_0]; 4]) -> [f32; 4] {
        assert!(
            a.iter().all(|rows| rows.len() >= w.len()),
            "activation rows too short"
        );
        let rows = a.map(<[_]>::as_ptr);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (i, x) in w.iter().enumerate() {
            let qx = bytes_from_nibbles_32(x.qs.as_ptr());
            let high =
                _mm256_andnot_si256(bytes_from_bits_32(x.qh), _mm256_set1_epi8(0xF0u8 as i8));
            let qx = _mm256_or_si256(qx, high);
            let ax = _mm256_sign_epi8(qx, qx);
            for t in 0..4 {
                // SAFETY: every activation row holds at least `w.len()` blocks (checked above).
                let y = &*rows[t].add(i);
                let d = scale_product(x.d, y.d);
                let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                let sy = _mm256_sign_epi8(qy, qx);
                acc[t] = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(ax, sy), acc[t]);
            }
        }
        std::array::from_fn(|t| hsum_float_8(acc[t]))
    }

    /// `q8_0` for four token rows at once (see `q4_1_x4`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_x4(w: &[BlockQ8_0], a: [&[BlockQ8_0]; 4]) -> [f32; 4] {
        assert!(
            a.iter().all(|rows| rows.len() >= w.len()),
            "activation rows too short"
        );
        let rows = a.map(<[_]>::as_ptr);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (i, x) in w.iter().enumerate() {
            let qx = _mm256_loadu_si256(x.qs.as_ptr().cast());
            let ax = _mm256_sign_epi8(qx, qx);
            for t in 0..4 {
                // SAFETY: every activation row holds at least `w.len()` blocks (checked above).
                let y = &*rows[t].add(i);
                let d = scale_product(x.d, y.d);
                let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                let sy = _mm256_sign_epi8(qy, qx);
                acc[t] = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(ax, sy), acc[t]);
            }
        }
        std::array::from_fn(|t| hsum_float_8(acc[t]))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (x, y) in w.iter().zip(a) {
            let scales = widen_two(x.d, x.dmin);
            let d = y.d * _mm_cvtss_f32(scales);
            let dmin = -y.d * _mm_cvtss_f32(_mm_movehdup_ps(scales));
            let mut scales = [0i16; 8];
            let mut mins = [0i16; 8];
            for j in 0..8 {
                let (scale, min) = q4k_scale_min(j, &x.scales);
                scales[j] = i16::from(scale);
                mins[j] = i16::from(min);
            }
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
            let q8s = _mm_hadd_epi16(
                _mm256_extracti128_si256(q8sums, 0),
                _mm256_extracti128_si256(q8sums, 1),
            );
            let prod = _mm_madd_epi16(_mm_loadu_si128(mins.as_ptr().cast()), q8s);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

            let mut sumi = _mm256_setzero_si256();
            let (mut q4, mut q8) = (x.qs.as_ptr(), y.qs.as_ptr());
            for j in 0..4 {
                let scale_l = _mm256_set1_epi16(scales[2 * j]);
                let scale_h = _mm256_set1_epi16(scales[2 * j + 1]);
                let q4bits = _mm256_loadu_si256(q4.cast());
                q4 = q4.add(32);
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                let q8l = _mm256_loadu_si256(q8.cast());
                q8 = q8.add(32);
                let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                let q8h = _mm256_loadu_si256(q8.cast());
                q8 = q8.add(32);
                let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
        hsum_float_8(acc) + _mm_cvtss_f32(acc_m)
    }

    /// One Q6_K super-block's integer products in llama.cpp's eight lanes, the offset of 32
    /// already taken out through the activations' sums.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k_block_lanes(x: &BlockQ6K, y: &BlockQ8K) -> __m256i {
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let (mut q4, mut qh, mut q8) = (x.ql.as_ptr(), x.qh.as_ptr(), y.qs.as_ptr());
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let scales_16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.scales.as_ptr().cast()));
        let q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let q4bits1 = _mm256_loadu_si256(q4.cast());
            let q4bits2 = _mm256_loadu_si256(q4.add(32).cast());
            q4 = q4.add(64);
            let q4bits_h = _mm256_loadu_si256(qh.cast());
            qh = qh.add(32);
            let q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, m3), 4);
            let q4h_1 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, _mm256_set1_epi8(12)), 2);
            let q4h_2 = _mm256_and_si256(q4bits_h, _mm256_set1_epi8(48));
            let q4h_3 = _mm256_srli_epi16(_mm256_and_si256(q4bits_h, _mm256_set1_epi8(-64)), 2);
            let quants = [
                _mm256_or_si256(_mm256_and_si256(q4bits1, m15), q4h_0),
                _mm256_or_si256(_mm256_and_si256(q4bits2, m15), q4h_1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m15), q4h_2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m15), q4h_3),
            ];
            let mut products = [_mm256_setzero_si256(); 4];
            for (k, (product, quant)) in products.iter_mut().zip(quants).enumerate() {
                let q8k = _mm256_loadu_si256(q8.cast());
                q8 = q8.add(32);
                // Sub-blocks of 16: the first 16 bytes take one scale, the next 16 the next.
                let group = half * 8 + 2 * k;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(x.scales[group + 1])),
                    _mm_set1_epi16(i16::from(x.scales[group])),
                );
                *product = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(quant, q8k));
            }
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(products[0], products[1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(products[2], products[3]));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        sumi
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.iter().zip(a) {
            let d = y.d * widen(x.d);
            let sumi = q6k_block_lanes(x, y);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_float_8(acc)
    }

    /// The exact sum of eight i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum_i32_8(v: __m256i) -> i32 {
        let sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        _mm_cvtsi128_si32(sum)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6_k_tiled(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (x, y) in w.iter().zip(a) {
            acc = tiled::q6k_step(acc, x, y, hsum_i32_8(q6k_block_lanes(x, y)));
        }
        acc
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k_tiled(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0f32;
        for (x, y) in w.iter().zip(a) {
            let (scaled, mins) = q4k_pair_sums(x, y);
            acc = tiled::q4k_step(acc, x, y, scaled.iter().sum(), mins.iter().sum());
        }
        acc
    }

    /// The integer sums of `repacked::pair_sums_portable`, with the products of `q4_k`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4k_pair_sums(x: &BlockQ4K, y: &BlockQ8K) -> PairSums {
        let m4 = _mm256_set1_epi8(0xF);
        let mut scales = [0i16; 8];
        let mut mins = [0i16; 8];
        for j in 0..8 {
            let (scale, min) = q4k_scale_min(j, &x.scales);
            scales[j] = i16::from(scale);
            mins[j] = i16::from(min);
        }
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
        let q8s = _mm_hadd_epi16(
            _mm256_extracti128_si256(q8sums, 0),
            _mm256_extracti128_si256(q8sums, 1),
        );
        let min_pairs = _mm_madd_epi16(_mm_loadu_si128(mins.as_ptr().cast()), q8s);

        let mut pairs = [_mm256_setzero_si256(); 4];
        let (mut q4, mut q8) = (x.qs.as_ptr(), y.qs.as_ptr());
        for (j, pair) in pairs.iter_mut().enumerate() {
            let q4bits = _mm256_loadu_si256(q4.cast());
            q4 = q4.add(32);
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            let q8l = _mm256_loadu_si256(q8.cast());
            let q8h = _mm256_loadu_si256(q8.add(32).cast());
            q8 = q8.add(64);
            let scale_l = _mm256_set1_epi16(scales[2 * j]);
            let scale_h = _mm256_set1_epi16(scales[2 * j + 1]);
            let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            *pair = _mm256_add_epi32(p16l, p16h);
        }
        // Lane j of the 128-bit result is the sum of the eight lanes of `pairs[j]`.
        let h01 = _mm256_hadd_epi32(pairs[0], pairs[1]);
        let h23 = _mm256_hadd_epi32(pairs[2], pairs[3]);
        let h = _mm256_hadd_epi32(h01, h23);
        let scaled_pairs = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));

        let (mut scaled, mut min_sums) = ([0i32; 4], [0i32; 4]);
        _mm_storeu_si128(scaled.as_mut_ptr().cast(), scaled_pairs);
        _mm_storeu_si128(min_sums.as_mut_ptr().cast(), min_pairs);
        (scaled, min_sums)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k_repacked(per_pair: bool, w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        let mut acc = Accumulator::default();
        for (x, y) in w.iter().zip(a) {
            acc.add(per_pair, x, y, q4k_pair_sums(x, y));
        }
        acc.value()
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k_lone(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        q4_k_repacked(false, w, a)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k_grouped(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        q4_k_repacked(true, w, a)
    }

    /// `interleaved::portable` over a group of eight rows: each block's nibbles are unpacked
    /// once for up to four tokens, and each row's eight lanes are a vector over the rows.
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_x8(
        w: &[BlockQ4_1x8],
        acts: &[BlockQ8_1],
        tokens: usize,
        out: &mut [f32],
    ) {
        token_passes!(tokens, first, q4_1_x8_tokens[](w, acts, first, out));
    }

    /// `hsum_float_8` of each of eight rows whose lanes are `l[0..8]`:
    /// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::model::quant) fn lane_sums(l: &[__m256; 8]) -> __m256 {
        let even = _mm256_add_ps(_mm256_add_ps(l[0], l[4]), _mm256_add_ps(l[2], l[6]));
        let odd = _mm256_add_ps(_mm256_add_ps(l[1], l[5]), _mm256_add_ps(l[3], l[7]));
        _mm256_add_ps(even, odd)
    }

    /// A Q8_0 group block's quants, lane `k` of each row in `quants[k]`, and its scales.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_x8_quants(x: &BlockQ8_0x8) -> ([__m256i; 8], __m256) {
        let packed = x.qs.as_ptr();
        let quants = std::array::from_fn(|k| _mm256_loadu_si256(packed.add(32 * k).cast()));
        (
            quants,
            _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())),
        )
    }

    /// One group of eight rows of signed 8-bit quants (`quants` unpacks a block) against
    /// `tokens` activation rows: sixteen tokens per pass over the group's blocks while sixteen
    /// remain (a prefill tile, so each block's unpacking, with Q5_0's fifth bits and the
    /// signs, the dearest of the group kernels', serves all of it), then up to eight.
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn signed_x8<G>(
        w: &[G],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
        quants: unsafe fn(&G) -> ([__m256i; 8], __m256),
    ) {
        let whole = tokens / 16 * 16;
        for first in (0..whole).step_by(16) {
            signed_x8_tokens::<16, _>(w, acts, first, out, quants);
        }
        let (acts, out) = (&acts[whole * w.len()..], &mut out[whole * ROWS..]);
        token_passes!(tokens - whole, first, signed_x8_tokens[, _](w, acts, first, out, quants));
    }

    /// A Q5_0 group block's signed quants, lane `k` of each row in `quants[k]` (see `q5_0`:
    /// a clear fifth bit makes the byte negative through 0xF0).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::model::quant) unsafe fn q5_0_x8_quants(
        x: &BlockQ5_0x8,
    ) -> ([__m256i; 8], __m256) {
        let low = _mm256_set1_epi8(0xF);
        let packed = x.qs.as_ptr();
        let mut quants = [_mm256_setzero_si256(); 8];
        for chunk in 0..4 {
            let bytes = _mm256_loadu_si256(packed.add(32 * chunk).cast());
            quants[chunk] = _mm256_and_si256(bytes, low);
            quants[4 + chunk] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
        }
        let qh = _mm256_loadu_si256(x.qh.as_ptr().cast());
        let bits_low = _mm256_set1_epi32(0x0804_0201);
        let bits_high = _mm256_set1_epi32(0x8040_2010_u32 as i32);
        // Byte 0 of each 32-bit word, four times: the shuffle that spreads a word's byte.
        let dwords = _mm256_setr_epi32(
            0,
            0x0404_0404,
            0x0808_0808,
            0x0C0C_0C0C,
            0,
            0x0404_0404,
            0x0808_0808,
            0x0C0C_0C0C,
        );
        for (k, quant) in quants.iter_mut().enumerate() {
            // Byte `k / 2` of each row's word holds the fifth bits of elements 8(k/2)..;
            // lane `k` takes its low four bits for even `k`, its high four for odd.
            let byte = _mm256_set1_epi8((k / 2) as i8);
            let spread = _mm256_shuffle_epi8(qh, _mm256_add_epi8(dwords, byte));
            let bits = if k % 2 == 0 { bits_low } else { bits_high };
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
            let high = _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8));
            *quant = _mm256_or_si256(*quant, high);
        }
        (
            quants,
            _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())),
        )
    }

    /// Rows of blocks longer than this take `signed_x8` whatever the step: the prefill
    /// kernel's buffer holds this many unpacked blocks (26 KiB on the stack).
    const PREFILL_BLOCKS: usize = 64;

    /// `interleaved::portable` for Q5_0 over a group of eight rows: a prefill tile (sixteen
    /// tokens or more) takes `q5_0_prefill`, a decode step `signed_x8`, which unpacks each
    /// block as it streams in (unpacking a whole row before computing anything had made
    /// decode slower, see `avx512::signed_group`).
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5_0_x8(
        w: &[BlockQ5_0x8],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
    ) {
        if tokens >= 16 && w.len() <= PREFILL_BLOCKS {
            q5_0_prefill(w, acts, tokens, out);
        } else {
            signed_x8(w, acts, tokens, out, q5_0_x8_quants);
        }
    }

    /// A Q5_0 group block unpacked for `q5_0_prefill`.
    #[derive(Clone, Copy)]
    struct PairedBlock {
        /// The signed quants with two lanes' halves side by side: in pair `m`, vector `2m`
        /// holds each row's elements `8m, 8m + 1` (lane `2m`) and `8m + 4, 8m + 5` (lane
        /// `2m + 1`), vector `2m + 1` the other two of each lane (`BlockQ8_0Lanes::paired`'s
        /// order).
        quants: [__m256i; 8],
        /// 128 times the sum of each row's four quants of lane `2m` (low 16 bits) and
        /// `2m + 1` (high 16 bits): what activations taken plus 128 add to those lanes.
        offsets: [__m256i; 4],
        /// The rows' scales divided by 2^16 (see `q5_0_prefill`).
        scales: __m256,
    }

    /// A Q5_0 group block as `PairedBlock`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0_x8_paired(x: &BlockQ5_0x8) -> PairedBlock {
        let (lanes, scales) = q5_0_x8_quants(x);
        let plus_128 = _mm256_set1_epi8(0x80u8 as i8);
        let mut quants = [_mm256_setzero_si256(); 8];
        let mut offsets = [_mm256_setzero_si256(); 4];
        for m in 0..4 {
            let (even, odd) = (lanes[2 * m], lanes[2 * m + 1]);
            // Per row: the first 16 bits of both lanes, then the last 16 of both.
            quants[2 * m] = _mm256_blend_epi16::<0xAA>(even, _mm256_slli_epi32(odd, 16));
            quants[2 * m + 1] = _mm256_blend_epi16::<0xAA>(_mm256_srli_epi32(even, 16), odd);
            offsets[m] = _mm256_add_epi16(
                _mm256_maddubs_epi16(plus_128, quants[2 * m]),
                _mm256_maddubs_epi16(plus_128, quants[2 * m + 1]),
            );
        }
        let scales = _mm256_mul_ps(scales, _mm256_set1_ps(1.0 / 65536.0));
        PairedBlock {
            quants,
            offsets,
            scales,
        }
    }

    /// Every token of a prefill tile against one group of eight Q5_0 rows, each row's lanes
    /// rounded as `q5_0`'s with a quarter fewer instructions than `signed_x8_tokens`, which
    /// had issued near the core's limit. The group's blocks are unpacked once
    /// (`PairedBlock`), then each token passes them with its eight lane accumulators in
    /// registers, where `signed_x8_tokens`' sixteen tokens had kept theirs in memory. With
    /// two lanes' halves side by side, two `maddubs` of the activations plus 128 and the
    /// weights, an add and the weights' offset taken back leave both lanes' exact sums of
    /// four products in 16 bits each (a pair of products reaches 2 * 255 * 16, both pairs
    /// 16,320). Each 16-bit sum then becomes the float `sum * 2^16` exactly (shifted into
    /// the high half, or the low half cleared) and meets the scales divided by 2^16: the same
    /// product as `q5_0`'s, rounded once by the same multiply-add, without `madd` widening
    /// each lane or the signs moved token by token.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0_prefill(
        w: &[BlockQ5_0x8],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
    ) {
        let mut buffer = [const { std::mem::MaybeUninit::<PairedBlock>::uninit() }; PREFILL_BLOCKS];
        for (slot, x) in buffer.iter_mut().zip(w) {
            super::super::interleaved::prefetch_ahead(x);
            slot.write(q5_0_x8_paired(x));
        }
        // SAFETY: the loop above wrote the first `w.len()` slots.
        let unpacked = std::slice::from_raw_parts(buffer.as_ptr().cast::<PairedBlock>(), w.len());
        let high_half = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
        for (t, row) in acts.chunks_exact(w.len()).take(tokens).enumerate() {
            let mut lanes = [_mm256_setzero_ps(); 8];
            for (block, y) in unpacked.iter().zip(row) {
                let d0d1 = _mm256_mul_ps(block.scales, _mm256_set1_ps(y.scale));
                let words = y.paired.as_ptr().cast::<i32>();
                for m in 0..4 {
                    let first_half = _mm256_set1_epi32(words.add(2 * m).read_unaligned());
                    let second_half = _mm256_set1_epi32(words.add(2 * m + 1).read_unaligned());
                    let sums = _mm256_sub_epi16(
                        _mm256_add_epi16(
                            _mm256_maddubs_epi16(first_half, block.quants[2 * m]),
                            _mm256_maddubs_epi16(second_half, block.quants[2 * m + 1]),
                        ),
                        block.offsets[m],
                    );
                    let even = _mm256_cvtepi32_ps(_mm256_slli_epi32(sums, 16));
                    let odd = _mm256_cvtepi32_ps(_mm256_and_si256(sums, high_half));
                    lanes[2 * m] = _mm256_fmadd_ps(d0d1, even, lanes[2 * m]);
                    lanes[2 * m + 1] = _mm256_fmadd_ps(d0d1, odd, lanes[2 * m + 1]);
                }
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(t * ROWS), lane_sums(&lanes));
        }
    }

    /// Tokens `first..first + T` against one group of eight rows of signed 8-bit quants, which
    /// `quants` produces per block with the block's eight scales.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn signed_x8_tokens<const T: usize, G>(
        w: &[G],
        acts: &[BlockQ8_0Lanes],
        first: usize,
        out: &mut [f32],
        quants: unsafe fn(&G) -> ([__m256i; 8], __m256),
    ) {
        let row_blocks = w.len();
        let mut lanes = [[_mm256_setzero_ps(); 8]; T];
        for (b, x) in w.iter().enumerate() {
            super::super::interleaved::prefetch_ahead(x);
            let (quants, d) = quants(x);
            let magnitudes = quants.map(|q| _mm256_sign_epi8(q, q));
            for (t, lanes) in lanes.iter_mut().enumerate() {
                // SAFETY: the caller checked that `acts` holds every token's row of blocks.
                let y = &*acts.as_ptr().add((first + t) * row_blocks + b);
                let d0d1 = _mm256_mul_ps(d, _mm256_set1_ps(y.scale));
                let q8 = y.qs.as_ptr();
                for k in 0..8 {
                    let four = _mm256_set1_epi32(q8.add(4 * k).cast::<i32>().read_unaligned());
                    let signed = _mm256_sign_epi8(four, quants[k]);
                    let partial = mul_sum_us8_pairs_float(magnitudes[k], signed);
                    lanes[k] = _mm256_fmadd_ps(d0d1, partial, lanes[k]);
                }
            }
        }
        for (t, lanes) in lanes.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), lane_sums(lanes));
        }
    }

    /// Tokens `first..first + T` against one group of eight rows. `lanes[t][k]` holds, for
    /// each of the eight rows, lane `k` of `q4_1`'s accumulator.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_x8_tokens<const T: usize>(
        w: &[BlockQ4_1x8],
        acts: &[BlockQ8_1],
        first: usize,
        out: &mut [f32],
    ) {
        let row_blocks = w.len();
        let low = _mm256_set1_epi8(0xF);
        let mut lanes = [[_mm256_setzero_ps(); 8]; T];
        let mut summs = [_mm256_setzero_ps(); T];
        for (b, x) in w.iter().enumerate() {
            super::super::interleaved::prefetch_ahead(x);
            // `quants[k]`: elements 4k..4k + 4 of each row (q4_1's lane k), which meet
            // activation bytes 4k..4k + 4.
            let packed = x.qs.as_ptr();
            let mut quants = [_mm256_setzero_si256(); 8];
            for chunk in 0..4 {
                let bytes = _mm256_loadu_si256(packed.add(32 * chunk).cast());
                quants[chunk] = _mm256_and_si256(bytes, low);
                quants[4 + chunk] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast()));
            let m = _mm256_cvtph_ps(_mm_loadu_si128(x.m.as_ptr().cast()));
            for t in 0..T {
                // SAFETY: the caller checked that `acts` holds every token's row of blocks.
                let y = &*acts.as_ptr().add((first + t) * row_blocks + b);
                let scales = widen_two(y.d, y.s);
                let d0d1 = _mm256_mul_ps(d, _mm256_broadcastss_ps(scales));
                let offsets = _mm256_mul_ps(m, _mm256_broadcastss_ps(_mm_movehdup_ps(scales)));
                summs[t] = _mm256_add_ps(summs[t], offsets);
                let q8 = y.qs.as_ptr();
                for (k, &quant) in quants.iter().enumerate() {
                    let four = _mm256_set1_epi32(q8.add(4 * k).cast::<i32>().read_unaligned());
                    let partial = mul_sum_us8_pairs_float(quant, four);
                    lanes[t][k] = _mm256_fmadd_ps(d0d1, partial, lanes[t][k]);
                }
            }
        }
        for t in 0..T {
            let total = _mm256_add_ps(lane_sums(&lanes[t]), summs[t]);
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), total);
        }
    }

    /// `interleaved::q8_0_summed_portable` over a group of eight rows of Q8_0.
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_x8_summed(
        w: &[BlockQ8_0x8],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
    ) {
        token_passes!(tokens, first, q8_0_summed_tokens[](w, acts, first, out));
    }

    /// Tokens `first..first + T` against one group of eight Q8_0 rows, each block's products
    /// summed as integers: per lane, `maddubs` of the weights' magnitudes and the activations
    /// with the weights' signs, widened with `madd` (a pair of products reaches 2 * 127 * 127,
    /// so the lanes add in 32 bits), then one conversion and one multiply-add per block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_summed_tokens<const T: usize>(
        w: &[BlockQ8_0x8],
        acts: &[BlockQ8_0Lanes],
        first: usize,
        out: &mut [f32],
    ) {
        let row_blocks = w.len();
        let ones = _mm256_set1_epi16(1);
        let mut sums = [_mm256_setzero_ps(); T];
        for (b, x) in w.iter().enumerate() {
            super::super::interleaved::prefetch_ahead(x);
            let (quants, d) = q8_0_x8_quants(x);
            let magnitudes = quants.map(|q| _mm256_sign_epi8(q, q));
            for (t, sum) in sums.iter_mut().enumerate() {
                // SAFETY: the caller checked that `acts` holds every token's row of blocks.
                let y = &*acts.as_ptr().add((first + t) * row_blocks + b);
                let q8 = y.qs.as_ptr();
                let lane: [__m256i; 8] = std::array::from_fn(|k| {
                    let four = _mm256_set1_epi32(q8.add(4 * k).cast::<i32>().read_unaligned());
                    let signed = _mm256_sign_epi8(four, quants[k]);
                    _mm256_madd_epi16(ones, _mm256_maddubs_epi16(magnitudes[k], signed))
                });
                let block = _mm256_add_epi32(
                    _mm256_add_epi32(
                        _mm256_add_epi32(lane[0], lane[1]),
                        _mm256_add_epi32(lane[2], lane[3]),
                    ),
                    _mm256_add_epi32(
                        _mm256_add_epi32(lane[4], lane[5]),
                        _mm256_add_epi32(lane[6], lane[7]),
                    ),
                );
                let d0d1 = _mm256_mul_ps(d, _mm256_set1_ps(y.scale));
                *sum = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(block), *sum);
            }
        }
        for (t, sum) in sums.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), *sum);
        }
    }
}
