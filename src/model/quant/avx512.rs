//! AVX-512 VNNI forms of the interleaved kernels (see `interleaved`), for CPUs that have it and
//! where `WICK_SIMD` allows AVX-512.
//!
//! They take the same exact integer sums and the same float operations, lane for lane, as the
//! AVX2 kernels, so every output is bit-identical to theirs and to llama.cpp's single-row
//! products. What changes is the instruction count: `vpdpbusd` takes four byte products into
//! a 32-bit sum in one instruction where AVX2 needs `maddubs` and `madd`, and one 512-bit
//! vector holds two of a group's eight lanes for all eight rows, dword `2r` lane `2p` of row
//! `r` and dword `2r + 1` lane `2p + 1`. Against that order a token's eight activation bytes
//! `8p..8p + 8` are one 64-bit broadcast.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and loads through
//! pointers into blocks whose sizes the types fix.
#![allow(unsafe_code)]

use super::blocks::{BlockQ8_0Lanes, BlockQ8_1};
use super::interleaved::{BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, GroupFn};

/// Whether these kernels run: `WICK_SIMD` allows AVX-512 (so the CPU has F, BW, DQ and VL)
/// and the CPU has VNNI.
pub(super) fn available() -> bool {
    use crate::model::simd::{level, Level};
    level() >= Level::Avx512 && has_vnni()
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_vnni() -> bool {
    false
}

dispatch_group!(available, q4_1_x8, BlockQ4_1x8, BlockQ8_1, |w, a, t, o| {
    x86::q4_1_x8(w, a, t, o)
});
dispatch_group!(
    available,
    q8_0_x8,
    BlockQ8_0x8,
    BlockQ8_0Lanes,
    |w, a, t, o| x86::signed_x8(w, a, t, o, |x| x86::q8_0_pairs(x))
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
    q5_0_x8_spread,
    BlockQ5_0x8,
    BlockQ8_0Lanes,
    |w, a, t, o| x86::signed_x8(w, a, t, o, |x| x86::q5_0_pairs(x))
);
dispatch_group!(
    available_with_bitalg,
    q5_0_x8_bitalg,
    BlockQ5_0x8,
    BlockQ8_0Lanes,
    |w, a, t, o| x86::signed_x8_bitalg(w, a, t, o, |x| x86::q5_0_pairs_bitalg(x))
);

/// The Q5_0 kernel: its fifth bits picked out with BITALG's bit shuffle where the CPU has it
/// (Ice Lake on), else spread as the AVX2 kernel spreads them.
pub(super) fn q5_0_x8() -> Option<GroupFn<BlockQ5_0x8, BlockQ8_0Lanes>> {
    q5_0_x8_bitalg().or_else(q5_0_x8_spread)
}

fn available_with_bitalg() -> bool {
    available() && has_bitalg()
}

#[cfg(target_arch = "x86_64")]
fn has_bitalg() -> bool {
    std::arch::is_x86_feature_detected!("avx512bitalg")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_bitalg() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::activation::FLOAT_INTEGER_BIAS;
    use super::super::interleaved::{BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, ROWS};
    use super::{BlockQ8_0Lanes, BlockQ8_1};

    /// Runs `$kernel::<T>` over a group's tokens, four per pass while four remain, then the
    /// rest in one pass: four tokens' accumulators (16 vectors) leave room for the weights.
    macro_rules! token_passes {
        ($tokens:expr, $first:ident, $kernel:ident [$($generic:tt)*] ($($arg:expr),*)) => {{
            let mut $first = 0;
            while $first < $tokens {
                let count = ($tokens - $first).min(4);
                match count {
                    4 => $kernel::<4 $($generic)*>($($arg),*),
                    3 => $kernel::<3 $($generic)*>($($arg),*),
                    2 => $kernel::<2 $($generic)*>($($arg),*),
                    _ => $kernel::<1 $($generic)*>($($arg),*),
                }
                $first += count;
            }
        }};
    }

    /// Two lanes of eight rows as one vector in the kernels' order: `low` holds lane `2p` of
    /// rows 0..8 and `high` lane `2p + 1`, one dword a row each.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    fn pair_rows(halves: __m512i) -> __m512i {
        let order = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
        _mm512_permutexvar_epi32(order, halves)
    }

    /// Eight rows' scales, each twice, in the kernels' order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    fn row_scales(eight: __m256) -> __m512 {
        let order = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        _mm512_permutexvar_ps(order, _mm512_castps256_ps512(eight))
    }

    /// An f16 activation scale in every lane. Widened from a fresh register, as the AVX2
    /// kernels do (see `avx2::widen_two`): the same value, without a false dependency.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    fn broadcast_scale(h: half::f16) -> __m512 {
        let widened = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits())));
        _mm512_broadcastss_ps(widened)
    }

    /// Token bytes `8p..8p + 8`, lanes `2p` and `2p + 1`, against every row.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn activation_pair(q8: *const i8, p: usize) -> __m512i {
        _mm512_set1_epi64(q8.add(8 * p).cast::<i64>().read_unaligned())
    }

    /// Each row's eight lanes added in `hsum_float_8`'s order,
    /// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), from the four pair vectors.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    fn row_sums(pairs: &[__m512; 4]) -> __m256 {
        // (l0 + l4, l1 + l5) + (l2 + l6, l3 + l7): each row's even and odd halves.
        let halves = _mm512_add_ps(
            _mm512_add_ps(pairs[0], pairs[2]),
            _mm512_add_ps(pairs[1], pairs[3]),
        );
        // Dword 2r: even + odd.
        even_dwords(_mm512_add_ps(halves, _mm512_movehdup_ps(halves)))
    }

    /// Dwords 0, 2, .., 14: row `r`'s value where dword `2r` holds it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    fn even_dwords(x: __m512) -> __m256 {
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castps512_ps256(_mm512_permutexvar_ps(evens, x))
    }

    /// `interleaved::portable` over a group of eight rows of Q4_1.
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_x8(
        w: &[BlockQ4_1x8],
        acts: &[BlockQ8_1],
        tokens: usize,
        out: &mut [f32],
    ) {
        token_passes!(tokens, first, q4_1_tokens[](w, acts, first, out));
    }

    /// Tokens `first..first + T` against one group of eight Q4_1 rows. Chunk `c` of a block
    /// holds lane `c` of each row in its low nibbles and lane `c + 4` in its high ones, so the
    /// 64 bytes of chunks 0 and 1 give lanes (0, 1) and (4, 5), those of 2 and 3 (2, 3) and
    /// (6, 7).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4_1_tokens<const T: usize>(
        w: &[BlockQ4_1x8],
        acts: &[BlockQ8_1],
        first: usize,
        out: &mut [f32],
    ) {
        let row_blocks = w.len();
        let low = _mm512_set1_epi8(0xF);
        let mut pairs = [[_mm512_setzero_ps(); 4]; T];
        let mut offsets = [_mm256_setzero_ps(); T];
        for (b, x) in w.iter().enumerate() {
            super::super::interleaved::prefetch_ahead(x);
            let packed = x.qs.as_ptr();
            let first_half = pair_rows(_mm512_loadu_si512(packed.cast()));
            let second_half = pair_rows(_mm512_loadu_si512(packed.add(64).cast()));
            let quants = [
                _mm512_and_si512(first_half, low),
                _mm512_and_si512(second_half, low),
                _mm512_and_si512(_mm512_srli_epi16(first_half, 4), low),
                _mm512_and_si512(_mm512_srli_epi16(second_half, 4), low),
            ];
            let d = row_scales(_mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast())));
            let m = _mm256_cvtph_ps(_mm_loadu_si128(x.m.as_ptr().cast()));
            for t in 0..T {
                // SAFETY: the caller checked that `acts` holds every token's row of blocks.
                let y = &*acts.as_ptr().add((first + t) * row_blocks + b);
                let d0d1 = _mm512_mul_ps(d, broadcast_scale(y.d));
                let sum = _mm512_castps512_ps256(broadcast_scale(y.s));
                offsets[t] = _mm256_add_ps(offsets[t], _mm256_mul_ps(m, sum));
                let q8 = y.qs.as_ptr();
                for (p, &quant) in quants.iter().enumerate() {
                    let products =
                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), quant, activation_pair(q8, p));
                    pairs[t][p] = _mm512_fmadd_ps(d0d1, _mm512_cvtepi32_ps(products), pairs[t][p]);
                }
            }
        }
        for t in 0..T {
            let total = _mm256_add_ps(row_sums(&pairs[t]), offsets[t]);
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), total);
        }
    }

    /// A block's signed quants plus 128 (see `signed_tokens`) as the kernels' four lane
    /// pairs, and its rows' scales doubled.
    type SignedPairs = ([__m512i; 4], __m512);

    /// A Q8_0 group block in pairs: chunk `k` holds lane `k` of the eight rows, so the 64
    /// bytes of chunks `2p` and `2p + 1` are pair `p`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_pairs(x: &BlockQ8_0x8) -> SignedPairs {
        let packed = x.qs.as_ptr();
        let sign = _mm512_set1_epi8(i8::MIN);
        let pairs = std::array::from_fn(|p| {
            let quants = pair_rows(_mm512_loadu_si512(packed.add(64 * p).cast()));
            _mm512_xor_si512(quants, sign)
        });
        let scales = _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast()));
        (pairs, row_scales(scales))
    }

    /// A Q5_0 group block in pairs, from the AVX2 kernels' unpacking of its fifth bits.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q5_0_pairs(x: &BlockQ5_0x8) -> SignedPairs {
        let (lanes, scales) = crate::model::quant::avx2::x86::q5_0_x8_quants(x);
        let sign = _mm512_set1_epi8(i8::MIN);
        let pairs = std::array::from_fn(|p| {
            let halves =
                _mm512_inserti64x4(_mm512_castsi256_si512(lanes[2 * p]), lanes[2 * p + 1], 1);
            _mm512_xor_si512(pair_rows(halves), sign)
        });
        (pairs, row_scales(scales))
    }

    /// A Q5_0 group block in pairs, plus 128: each nibble plus 112, plus 16 where its fifth
    /// bit is set. `vpshufbitqmb` takes, for each byte of a row's 64-bit lane, the bit of
    /// the row's word its element number names: eight instructions fewer per pair than
    /// spreading the bits with byte shuffles and compares.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx512bitalg,avx2,fma,f16c")]
    pub(super) unsafe fn q5_0_pairs_bitalg(x: &BlockQ5_0x8) -> SignedPairs {
        let packed = x.qs.as_ptr();
        // Chunks 0-1 hold lanes 0, 1 (low nibbles) and 4, 5 (high); chunks 2-3 lanes 2, 3
        // and 6, 7.
        let (front, back) = (
            pair_rows(_mm512_loadu_si512(packed.cast())),
            pair_rows(_mm512_loadu_si512(packed.add(64).cast())),
        );
        let nibbles_plus_112 = |v: __m512i| {
            // (v & 0x0F) | 0x70: the bits do not overlap, so the `or` adds 112.
            _mm512_ternarylogic_epi32::<0xEA>(v, _mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x70))
        };
        let by_pair = [
            nibbles_plus_112(front),
            nibbles_plus_112(back),
            nibbles_plus_112(_mm512_srli_epi16(front, 4)),
            nibbles_plus_112(_mm512_srli_epi16(back, 4)),
        ];
        // Row `r`'s word of fifth bits in 64-bit lane `r`.
        let words = _mm512_cvtepu32_epi64(_mm256_loadu_si256(x.qh.as_ptr().cast()));
        let pairs = std::array::from_fn(|p| {
            // Pair p covers elements 8p..8p + 8 of each row.
            let elements = _mm512_set1_epi64(i64::from_le_bytes(std::array::from_fn(|j| {
                (8 * p + j) as u8
            })));
            let fifth = _mm512_bitshuffle_epi64_mask(words, elements);
            _mm512_mask_add_epi8(by_pair[p], fifth, by_pair[p], _mm512_set1_epi8(16))
        });
        let scales = _mm256_cvtph_ps(_mm_loadu_si128(x.d.as_ptr().cast()));
        (pairs, row_scales(scales))
    }

    /// Blocks a prefill tile unpacks before its passes: five registers each, 20 KiB on the stack.
    const UNPACKED_BLOCKS: usize = 64;

    /// Tokens past which a group call unpacks its blocks up front (see `signed_group`).
    const UNPACK_PAST_TOKENS: usize = 8;

    /// `$kernel`'s passes over a group's tokens, four at a time. Past `UNPACK_PAST_TOKENS`
    /// (a prefill tile) every block is unpacked once into a buffer the passes then read,
    /// instead of once per pass: the unpacking had been a quarter of the instructions of a
    /// tile. A decode step of eight sequences unpacks per pass: it streams the weights from
    /// memory, and unpacking them all before the first pass computes anything made 8-stream
    /// decode 10% slower. Rows longer than the buffer unpack per pass. Expands inside a
    /// function generic over the block type `G`.
    macro_rules! signed_group {
        ($kernel:ident, $w:ident, $acts:ident, $tokens:ident, $out:ident, $pairs:ident) => {{
            if $tokens > UNPACK_PAST_TOKENS && $w.len() <= UNPACKED_BLOCKS {
                let mut buffer = [const { std::mem::MaybeUninit::<SignedPairs>::uninit() };
                    UNPACKED_BLOCKS];
                for (slot, x) in buffer.iter_mut().zip($w) {
                    super::super::interleaved::prefetch_ahead(x);
                    slot.write($pairs(x));
                }
                // SAFETY: the loop above wrote the first `$w.len()` slots.
                let unpacked =
                    std::slice::from_raw_parts(buffer.as_ptr().cast::<SignedPairs>(), $w.len());
                let same = |p: &SignedPairs| *p;
                token_passes!($tokens, first, $kernel[, _, _](unpacked, $acts, first, $out, same));
            } else {
                let fetched = |x: &G| {
                    super::super::interleaved::prefetch_ahead(x);
                    $pairs(x)
                };
                token_passes!($tokens, first, $kernel[, _, _]($w, $acts, first, $out, fetched));
            }
        }};
    }

    /// One group of eight rows of signed 8-bit quants (`pairs` unpacks a block) against
    /// `tokens` activation rows.
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn signed_x8<G>(
        w: &[G],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
        pairs: impl Fn(&G) -> SignedPairs + Copy,
    ) {
        signed_group!(signed_tokens, w, acts, tokens, out, pairs);
    }

    /// `signed_x8` compiled with BITALG too, so `q5_0_pairs_bitalg` inlines into it.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx512bitalg,avx2,fma,f16c")]
    pub(super) unsafe fn signed_x8_bitalg<G>(
        w: &[G],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
        pairs: impl Fn(&G) -> SignedPairs + Copy,
    ) {
        signed_group!(signed_tokens_bitalg, w, acts, tokens, out, pairs);
    }

    /// `$name`: tokens `first..first + T` against one group of eight rows of signed quants.
    /// `vpdpbusd` multiplies unsigned by signed bytes, so each weight is taken plus 128 (its
    /// sign bit flipped) and the sum starts from -128 times the sum of the activation bytes
    /// it meets: the same exact integer, without negating activations token by token. The
    /// start also holds `FLOAT_INTEGER_BIAS`, so the sum's bits are the float `1.5 * 2^23 +
    /// sum` (a lane's sum stays far below 2^22) and one subtraction on either vector port
    /// gives the exact float, where a conversion would queue on the one port that also runs
    /// `vpdpbusd`. Both starts are made once per activation block (`BlockQ8_0Lanes`).
    /// Defined twice, with and without BITALG, so the unpacking inlines into either.
    macro_rules! signed_tokens {
        ($name:ident, $features:literal) => {
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $name<const T: usize, G, P: Fn(&G) -> SignedPairs>(
                w: &[G],
                acts: &[BlockQ8_0Lanes],
                first: usize,
                out: &mut [f32],
                unpack: P,
            ) {
                let row_blocks = w.len();
                let bias = _mm512_castsi512_ps(_mm512_set1_epi32(FLOAT_INTEGER_BIAS));
                let mut pairs = [[_mm512_setzero_ps(); 4]; T];
                for (b, x) in w.iter().enumerate() {
                    let (biased, d) = unpack(x);
                    for (t, pairs) in pairs.iter_mut().enumerate() {
                        // SAFETY: the caller checked that `acts` holds every token's row of blocks.
                        let y = &*acts.as_ptr().add((first + t) * row_blocks + b);
                        let d0d1 = _mm512_mul_ps(d, broadcast_scale(y.d));
                        let q8 = y.qs.as_ptr();
                        // Lanes 2p and 2p + 1's starts, one 64-bit broadcast per pair.
                        let starts = y.starts.as_ptr().cast::<i64>();
                        for (p, pair) in pairs.iter_mut().enumerate() {
                            let from = _mm512_set1_epi64(starts.add(p).read_unaligned());
                            let products =
                                _mm512_dpbusd_epi32(from, biased[p], activation_pair(q8, p));
                            let exact = _mm512_sub_ps(_mm512_castsi512_ps(products), bias);
                            *pair = _mm512_fmadd_ps(d0d1, exact, *pair);
                        }
                    }
                }
                for (t, pairs) in pairs.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), row_sums(pairs));
                }
            }
        };
    }

    signed_tokens!(
        signed_tokens,
        "avx512f,avx512bw,avx512vnni,avx512vl,avx2,fma,f16c"
    );
    signed_tokens!(
        signed_tokens_bitalg,
        "avx512f,avx512bw,avx512vnni,avx512vl,avx512bitalg,avx2,fma,f16c"
    );

    /// `interleaved::q8_0_summed_portable` over a group of eight rows of Q8_0.
    /// `acts` must hold `tokens` rows of `w.len()` blocks and `out` `tokens` rows of eight
    /// (`dispatch_group!` checks).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_x8_summed(
        w: &[BlockQ8_0x8],
        acts: &[BlockQ8_0Lanes],
        tokens: usize,
        out: &mut [f32],
    ) {
        let fetched = |x: &BlockQ8_0x8| {
            super::super::interleaved::prefetch_ahead(x);
            q8_0_pairs(x)
        };
        token_passes!(tokens, first, q8_0_summed_tokens[, _](w, acts, first, out, fetched));
    }

    /// Tokens `first..first + T` against one group of eight Q8_0 rows, each block's products
    /// summed as integers: `vpdpbusd` of the weights plus 128 (see `signed_tokens`) in two
    /// chains of two lane pairs, row `r`'s dwords `2r` and `2r + 1` added, the block's start
    /// added to the even dword, then one subtraction and one multiply-add per block. The odd
    /// dwords carry nothing used.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl,avx2,fma,f16c")]
    unsafe fn q8_0_summed_tokens<const T: usize, P: Fn(&BlockQ8_0x8) -> SignedPairs>(
        w: &[BlockQ8_0x8],
        acts: &[BlockQ8_0Lanes],
        first: usize,
        out: &mut [f32],
        unpack: P,
    ) {
        let row_blocks = w.len();
        let bias = _mm512_castsi512_ps(_mm512_set1_epi32(FLOAT_INTEGER_BIAS));
        let mut sums = [_mm512_setzero_ps(); T];
        for (b, x) in w.iter().enumerate() {
            let (biased, d) = unpack(x);
            for (t, sum) in sums.iter_mut().enumerate() {
                // SAFETY: the caller checked that `acts` holds every token's row of blocks.
                let y = &*acts.as_ptr().add((first + t) * row_blocks + b);
                let q8 = y.qs.as_ptr();
                let start = y.block_start.as_ptr().cast::<i64>().read_unaligned();
                let even = _mm512_dpbusd_epi32(
                    _mm512_dpbusd_epi32(
                        _mm512_set1_epi64(start),
                        biased[0],
                        activation_pair(q8, 0),
                    ),
                    biased[2],
                    activation_pair(q8, 2),
                );
                let odd = _mm512_dpbusd_epi32(
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), biased[1], activation_pair(q8, 1)),
                    biased[3],
                    activation_pair(q8, 3),
                );
                let lanes = _mm512_add_epi32(even, odd);
                let block = _mm512_add_epi32(lanes, _mm512_srli_epi64(lanes, 32));
                let exact = _mm512_sub_ps(_mm512_castsi512_ps(block), bias);
                let d0d1 = _mm512_mul_ps(d, broadcast_scale(y.d));
                *sum = _mm512_fmadd_ps(d0d1, exact, *sum);
            }
        }
        for (t, sum) in sums.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((first + t) * ROWS), even_dwords(*sum));
        }
    }
}
