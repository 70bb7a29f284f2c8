//! AVX2 kernels over Q4_K and Q6_K repacked eight rows at a time (see `kquants_x8`).
//!
//! A 32-byte vector holds one four-element chunk of the group's eight rows; `maddubs` against
//! the token's four bytes, broadcast, gives each row's two pair sums in 16 bits, and `madd`
//! against the row's scale (twice in a 32-bit lane) scales and adds them, so each 32-bit lane
//! is one row. The integer sums are the single-row kernels' exactly, and the float steps
//! after them are theirs lane for lane, eight rows a vector.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and loads through
//! pointers into blocks whose sizes the types fix.
#![allow(unsafe_code)]

use super::avx2::available;
use super::blocks::BlockQ8K;
use super::interleaved::GroupFn;
use super::kquants_x8::{BlockQ4Kx8, BlockQ6Kx8};

dispatch_group!(available, q4_k_x8, BlockQ4Kx8, BlockQ8K, |w, a, t, o| {
    x86::q4_k_x8(w, a, t, o)
});
dispatch_group!(available, q6_k_x8, BlockQ6Kx8, BlockQ8K, |w, a, t, o| {
    x86::q6_k_x8(w, a, t, o)
});

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::avx2::x86::lane_sums;
    use super::super::interleaved::ROWS;
    use super::super::tiled;
    use super::{BlockQ4Kx8, BlockQ6Kx8, BlockQ8K};

    /// Tokens a pass over a group's blocks takes: a block's unpacked quants and scales serve
    /// them all, and their accumulators still fit beside them.
    const TOKENS_PER_PASS: usize = 4;

    /// Runs `pass::<T>(first)` over `tokens` token rows, `TOKENS_PER_PASS` at a time.
    macro_rules! passes {
        ($tokens:expr, |$first:ident, $t:ident| $pass:expr) => {{
            let mut $first = 0;
            while $first < $tokens {
                let count = ($tokens - $first).min(TOKENS_PER_PASS);
                match count {
                    4 => {
                        const $t: usize = 4;
                        $pass
                    }
                    3 => {
                        const $t: usize = 3;
                        $pass
                    }
                    2 => {
                        const $t: usize = 2;
                        $pass
                    }
                    _ => {
                        const $t: usize = 1;
                        $pass
                    }
                }
                $first += count;
            }
        }};
    }

    /// Eight rows' unsigned byte scales, each twice as 16-bit halves of its row's lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn doubled_u8(scales: &[u8; ROWS]) -> __m256i {
        let wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(scales.as_ptr().cast()));
        _mm256_or_si256(wide, _mm256_slli_epi32(wide, 16))
    }

    /// Eight rows' signed byte scales, each twice as 16-bit halves of its row's lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn doubled_i8(scales: &[i8; ROWS]) -> __m256i {
        let wide = _mm256_cvtepi8_epi32(_mm_loadl_epi64(scales.as_ptr().cast()));
        let low = _mm256_and_si256(wide, _mm256_set1_epi32(0xFFFF));
        _mm256_or_si256(low, _mm256_slli_epi32(wide, 16))
    }

    /// Four activation bytes `at..at + 4` in every lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn broadcast4(q8: *const i8) -> __m256i {
        _mm256_set1_epi32(q8.cast::<i32>().read_unaligned())
    }

    /// Eight f16 values widened.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen8(h: &[half::f16; ROWS]) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast()))
    }

    /// A token row's block `b` of `row_blocks`.
    #[inline(always)]
    unsafe fn act(acts: &[BlockQ8K], token: usize, row_blocks: usize, b: usize) -> &BlockQ8K {
        // SAFETY: the caller checked that `acts` holds every token's row of blocks.
        &*acts.as_ptr().add(token * row_blocks + b)
    }

    /// One group of eight Q4_K rows against `tokens` activation rows, in llama.cpp's repacked
    /// steps: rows before `tokens - tokens % 4` take a fused multiply-add per 64 values, the
    /// rest one per super-block (see `repacked::Accumulator`).
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_k_x8(
        w: &[BlockQ4Kx8],
        acts: &[BlockQ8K],
        tokens: usize,
        out: &mut [f32],
    ) {
        let first_lone = tokens - tokens % 4;
        passes!(tokens, |first, T| q4k_tokens::<T>(
            w, acts, first, first_lone, out
        ));
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4k_tokens<const T: usize>(
        w: &[BlockQ4Kx8],
        acts: &[BlockQ8K],
        first: usize,
        first_lone: usize,
        out: &mut [f32],
    ) {
        let row_blocks = w.len();
        let m4 = _mm256_set1_epi8(0xF);
        let mut scaled = [_mm256_setzero_ps(); T];
        let mut offsets = [_mm256_setzero_ps(); T];
        for (b, x) in w.iter().enumerate() {
            super::super::interleaved::prefetch_ahead(x);
            // Per token and pair of sub-blocks, each row's scaled products.
            let mut pairs = [[_mm256_setzero_si256(); 4]; T];
            for s in 0..8 {
                let scale = doubled_u8(&x.scales[s]);
                let units: [__m256i; 4] = std::array::from_fn(|c| {
                    _mm256_loadu_si256(x.qs.as_ptr().add((4 * s + c) * 32).cast())
                });
                let low = units.map(|u| _mm256_and_si256(u, m4));
                let high = units.map(|u| _mm256_and_si256(_mm256_srli_epi16(u, 4), m4));
                for (t, pairs) in pairs.iter_mut().enumerate() {
                    let q8 = act(acts, first + t, row_blocks, b).qs.as_ptr().add(32 * s);
                    // At most 8 * 2 * 15 * 127 in a 16-bit lane: no overflow.
                    let mut dot = _mm256_setzero_si256();
                    for c in 0..4 {
                        let l = _mm256_maddubs_epi16(low[c], broadcast4(q8.add(4 * c)));
                        let h = _mm256_maddubs_epi16(high[c], broadcast4(q8.add(16 + 4 * c)));
                        dot = _mm256_add_epi16(dot, _mm256_add_epi16(l, h));
                    }
                    pairs[s / 2] = _mm256_add_epi32(pairs[s / 2], _mm256_madd_epi16(dot, scale));
                }
            }
            let d = widen8(&x.d);
            let dmin = widen8(&x.dmin);
            // Row `r`'s minimums of sub-blocks 2p and 2p + 1 as the 16-bit halves of lane r.
            let min_pairs: [__m256i; 4] = std::array::from_fn(|p| {
                let even = _mm_loadl_epi64(x.mins[2 * p].as_ptr().cast());
                let odd = _mm_loadl_epi64(x.mins[2 * p + 1].as_ptr().cast());
                _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(even, odd))
            });
            for t in 0..T {
                let y = act(acts, first + t, row_blocks, b);
                // The activation sums of each 32 elements, two to a 32-bit lane.
                let sums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                let sums = _mm_hadd_epi16(
                    _mm256_castsi256_si128(sums),
                    _mm256_extracti128_si256(sums, 1),
                );
                let mut sum_pairs = [0i32; 4];
                _mm_storeu_si128(sum_pairs.as_mut_ptr().cast(), sums);
                let mins: [__m256i; 4] = std::array::from_fn(|p| {
                    _mm256_madd_epi16(min_pairs[p], _mm256_set1_epi32(sum_pairs[p]))
                });
                let yd = _mm256_set1_ps(y.d);
                let (d, dmin) = (_mm256_mul_ps(d, yd), _mm256_mul_ps(dmin, yd));
                if first + t < first_lone {
                    for p in 0..4 {
                        scaled[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pairs[t][p]), d, scaled[t]);
                        offsets[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins[p]), dmin, offsets[t]);
                    }
                } else {
                    let all = |v: &[__m256i; 4]| {
                        _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]))
                    };
                    scaled[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(all(&pairs[t])), d, scaled[t]);
                    offsets[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(all(&mins)), dmin, offsets[t]);
                }
            }
        }
        for t in 0..T {
            let value = _mm256_sub_ps(scaled[t], offsets[t]);
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), value);
        }
    }

    /// One group of eight Q6_K rows against `tokens` activation rows: llama.cpp's tiled step
    /// (one per super-block) from `tiled::MIN_TOKENS` rows on, its eight-lane product below
    /// (lane `i` sums elements `4i..4i + 4` of every 32; see `avx2::q6_k`).
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6_k_x8(
        w: &[BlockQ6Kx8],
        acts: &[BlockQ8K],
        tokens: usize,
        out: &mut [f32],
    ) {
        let tiled = tokens >= tiled::MIN_TOKENS;
        passes!(tokens, |first, T| q6k_tokens::<T>(
            w, acts, first, tiled, out
        ));
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k_tokens<const T: usize>(
        w: &[BlockQ6Kx8],
        acts: &[BlockQ8K],
        first: usize,
        tiled: bool,
        out: &mut [f32],
    ) {
        let row_blocks = w.len();
        let mut lanes_acc = [[_mm256_setzero_ps(); 8]; T];
        let mut tiled_acc = [_mm256_setzero_ps(); T];
        for (b, x) in w.iter().enumerate() {
            super::super::interleaved::prefetch_ahead(x);
            let scales: [__m256i; 16] = std::array::from_fn(|g| doubled_i8(&x.scales[g]));
            // Row `r`'s scales of groups 2i and 2i + 1 as the 16-bit halves of lane r.
            let scale_pairs: [__m256i; 8] = std::array::from_fn(|i| {
                let even = _mm_loadl_epi64(x.scales[2 * i].as_ptr().cast());
                let odd = _mm_loadl_epi64(x.scales[2 * i + 1].as_ptr().cast());
                _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(even, odd))
            });
            let d = widen8(&x.d);
            for t in 0..T {
                let y = act(acts, first + t, row_blocks, b);
                let q8 = y.qs.as_ptr();
                let mut lanes = [_mm256_setzero_si256(); 8];
                for chunk in 0..8 {
                    for (i, lane) in lanes.iter_mut().enumerate() {
                        let k = 8 * chunk + i;
                        let quants = _mm256_loadu_si256(x.qs.as_ptr().add(32 * k).cast());
                        let pairs = _mm256_maddubs_epi16(quants, broadcast4(q8.add(4 * k)));
                        let scale = scales[2 * chunk + i / 4];
                        *lane = _mm256_add_epi32(*lane, _mm256_madd_epi16(pairs, scale));
                    }
                }
                // The offset of 32: lane i takes groups 2i and 2i + 1, as llama.cpp's does.
                let sum_pairs = y.bsums.as_ptr().cast::<i32>();
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let sums = _mm256_set1_epi32(sum_pairs.add(i).read_unaligned());
                    let offset = _mm256_madd_epi16(scale_pairs[i], sums);
                    *lane = _mm256_sub_epi32(*lane, _mm256_slli_epi32(offset, 5));
                }
                if tiled {
                    let total = lanes
                        .iter()
                        .fold(_mm256_setzero_si256(), |a, &l| _mm256_add_epi32(a, l));
                    let block = _mm256_mul_ps(d, _mm256_cvtepi32_ps(total));
                    tiled_acc[t] = _mm256_fmadd_ps(block, _mm256_set1_ps(y.d), tiled_acc[t]);
                } else {
                    let dy = _mm256_mul_ps(_mm256_set1_ps(y.d), d);
                    for (acc, lane) in lanes_acc[t].iter_mut().zip(lanes) {
                        *acc = _mm256_fmadd_ps(dy, _mm256_cvtepi32_ps(lane), *acc);
                    }
                }
            }
        }
        for t in 0..T {
            let value = if tiled {
                tiled_acc[t]
            } else {
                lane_sums(&lanes_acc[t])
            };
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), value);
        }
    }
}
