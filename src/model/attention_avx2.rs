//! AVX2 + FMA forms of attention's inner loops: the f16 dot products of a query with every
//! cached key (`numerics::dot_lanes32`, `dot_lanes8`) and the probability-weighted sum of the
//! values, with the same lanes and the same order of additions, so they return the same bits.
//! The compiler does not keep the reference's 32 lanes in four vector registers by itself, nor
//! run several keys' dependency chains side by side.
#![allow(unsafe_code)]

/// Whether these kernels run: the CPU has AVX2 and FMA, and `WICK_SIMD` allows them.
pub(super) fn available() -> bool {
    use super::simd::{level, Level};
    level() >= Level::Avx2
}

/// Scores of `scores.len()` cached keys against `query`, each `scale` times the dot product
/// (`dot_lanes8` when `lanes8`, else `dot_lanes32`); key `k` is `keys[k * stride..][..d]`,
/// `d` the query's length. Returns the largest score. Where `available()`.
pub(super) fn scores(
    keys: &[f32],
    stride: usize,
    query: &[f32],
    lanes8: bool,
    scale: f32,
    scores: &mut [f32],
) -> f32 {
    let d = query.len();
    assert!(available() && d.is_multiple_of(8), "AVX2 attention scores");
    if let Some(last) = scores.len().checked_sub(1) {
        assert!(
            keys.len() >= last * stride + d,
            "keys hold every scored row"
        );
    }
    // SAFETY: AVX2 and FMA are present; every row read lies in `keys` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if lanes8 {
            x86::scores_lanes8(keys.as_ptr(), stride, query, scale, scores)
        } else {
            x86::scores_lanes32(keys.as_ptr(), stride, query, scale, scores)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// The tiled pass's weighted sum of values: `lanes[l * d + i]` becomes the sum, in order of
/// position, of `weights[k] * values[k * stride + i]` over the rows `k` whose position
/// `first + k` is `l` modulo 8 (`d` = `lanes.len() / 8`), as the reference's 8-lane tiles add
/// them. Where `available()`.
pub(super) fn weighted_values_lanes8(
    values: &[f32],
    stride: usize,
    first: usize,
    weights: &[f32],
    lanes: &mut [f32],
) {
    let d = lanes.len() / 8;
    assert!(
        available() && d.is_multiple_of(8) && lanes.len() == 8 * d,
        "AVX2 value sums"
    );
    if let Some(last) = weights.len().checked_sub(1) {
        assert!(
            values.len() >= last * stride + d,
            "values hold every weighted row"
        );
    }
    // SAFETY: AVX2 and FMA are present, and AVX-512 F where the level allows it; every row
    // read lies in `values` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let (values, weights, lanes) = (values.as_ptr(), &[weights], &mut [lanes]);
        if d.is_multiple_of(128) && pairs_available() {
            x86::value_sums_avx512::<1, 8>(values, stride, first, weights, lanes, d)
        } else if d.is_multiple_of(64) {
            x86::value_sums_avx2::<1, 8>(values, stride, first, weights, lanes, d)
        } else if d.is_multiple_of(32) {
            x86::value_sums_avx2::<1, 4>(values, stride, first, weights, lanes, d)
        } else {
            x86::value_sums_avx2::<1, 1>(values, stride, first, weights, lanes, d)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// Whether keys are scored two to a 512-bit register: AVX-512 F is allowed and present.
pub(super) fn pairs_available() -> bool {
    use super::simd::{level, Level};
    level() >= Level::Avx512
}

/// Rows of `row` f16 values widened into pairs of rows: row `2m + h`'s values `8c..8c + 8`
/// go to `dst[2 * row * m + 16 * c + 8 * h..][..8]`, so one 512-bit load holds the same eight
/// elements of two neighbouring positions. `row` is a multiple of 8 and `dst` holds whole
/// pairs. Where `pairs_available()`.
pub(super) fn widen_pairs(src: &[half::f16], row: usize, dst: &mut [f32]) {
    assert!(
        available() && row.is_multiple_of(8) && dst.len() >= src.len().div_ceil(2 * row) * 2 * row,
        "paired widening"
    );
    // SAFETY: AVX2 and F16C are present; every write lies in `dst` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::widen_pairs(src, row, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// `scores` with `dot_lanes8` over keys in pairs (`widen_pairs`' layout, rows of `kv_dim`):
/// the keys of positions `start..start + scores.len()` (relative to the first widened one),
/// each the head's `query.len()` values from `kv_offset`. Two keys share each 512-bit
/// multiply-add, their lanes in its two halves, each lane's sum in the same order. Returns
/// the largest score. Where `pairs_available()`.
pub(super) fn scores_paired(
    keys: &[f32],
    kv_dim: usize,
    kv_offset: usize,
    start: usize,
    query: &[f32],
    scale: f32,
    scores: &mut [f32],
) -> f32 {
    let d = query.len();
    assert!(
        pairs_available()
            && d.is_multiple_of(8)
            && kv_offset.is_multiple_of(8)
            && kv_offset + d <= kv_dim
            && keys.len() >= (start + scores.len()).div_ceil(2) * 2 * kv_dim,
        "paired keys hold every scored position"
    );
    // SAFETY: AVX-512 F is present; every pair read lies in `keys` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::scores_paired(
            keys.as_ptr(),
            kv_dim,
            kv_offset,
            start,
            query,
            scale,
            scores,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// Query heads that share a KV head, scored or summed together by the `_heads` kernels.
pub(super) const HEADS_TOGETHER: usize = 4;

/// The query width and the positions scored of a `_heads` call, checked: one to
/// `HEADS_TOGETHER` heads, a query and a row of scores each, all alike, the width a multiple
/// of 8.
fn heads_shape(queries: &[&[f32]], scores: &[&mut [f32]]) -> (usize, usize) {
    let d = queries.first().map_or(0, |q| q.len());
    let count = scores.first().map_or(0, |s| s.len());
    assert!(
        (1..=HEADS_TOGETHER).contains(&queries.len())
            && queries.len() == scores.len()
            && queries.iter().all(|q| q.len() == d)
            && scores.iter().all(|s| s.len() == count)
            && d.is_multiple_of(8),
        "one query and one row of scores a head, all alike"
    );
    (d, count)
}

/// `scores_paired` for up to `HEADS_TOGETHER` query heads that share one KV head, over the
/// same positions: each pair of keys is loaded once for all of them instead of once per head
/// (a head's scan had been bound on reading the keys from L2). Each score takes the same
/// multiply-adds in the same order. Returns each head's largest score (-inf past the last
/// head). Where `pairs_available()`.
pub(super) fn scores_paired_heads(
    keys: &[f32],
    kv_dim: usize,
    kv_offset: usize,
    start: usize,
    queries: &[&[f32]],
    scale: f32,
    scores: &mut [&mut [f32]],
) -> [f32; HEADS_TOGETHER] {
    let (d, count) = heads_shape(queries, scores);
    assert!(
        pairs_available()
            && kv_offset.is_multiple_of(8)
            && kv_offset + d <= kv_dim
            && keys.len() >= (start + count).div_ceil(2) * 2 * kv_dim,
        "paired keys hold every scored position, for every head"
    );
    // SAFETY: AVX-512 F is present; every pair read lies in `keys` and every score written
    // lies in its head's slice (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let keys = x86::PairedKeys {
            keys: keys.as_ptr(),
            kv_dim,
            kv_offset,
            start,
            d,
            count,
            scale,
        };
        let mut maxima = [f32::NEG_INFINITY; HEADS_TOGETHER];
        match queries.len() {
            1 => {
                maxima[..1].copy_from_slice(&x86::scores_paired_heads::<1>(&keys, queries, scores))
            }
            2 => {
                maxima[..2].copy_from_slice(&x86::scores_paired_heads::<2>(&keys, queries, scores))
            }
            3 => {
                maxima[..3].copy_from_slice(&x86::scores_paired_heads::<3>(&keys, queries, scores))
            }
            _ => maxima = x86::scores_paired_heads::<4>(&keys, queries, scores),
        }
        maxima
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// `scores` with `dot_lanes8` (a chunk of two tokens or more) for up to `HEADS_TOGETHER`
/// query heads that share one KV head, over plain rows (`keys[k * stride..][..d]`): each
/// key is loaded once for all of them. Each score takes the same multiply-adds in the same
/// order. Returns each head's largest score (-inf past the last head). Where `available()`.
pub(super) fn scores_lanes8_heads(
    keys: &[f32],
    stride: usize,
    queries: &[&[f32]],
    scale: f32,
    scores: &mut [&mut [f32]],
) -> [f32; HEADS_TOGETHER] {
    let (d, count) = heads_shape(queries, scores);
    assert!(
        available() && (count == 0 || keys.len() >= (count - 1) * stride + d),
        "keys hold every scored row, for every head"
    );
    // SAFETY: AVX2 and FMA are present; every row read lies in `keys` and every score
    // written lies in its head's slice (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let keys = keys.as_ptr();
        let mut maxima = [f32::NEG_INFINITY; HEADS_TOGETHER];
        match queries.len() {
            1 => maxima[..1].copy_from_slice(&x86::scores_lanes8_heads::<1>(
                keys, stride, queries, scale, scores,
            )),
            2 => maxima[..2].copy_from_slice(&x86::scores_lanes8_heads::<2>(
                keys, stride, queries, scale, scores,
            )),
            3 => maxima[..3].copy_from_slice(&x86::scores_lanes8_heads::<3>(
                keys, stride, queries, scale, scores,
            )),
            _ => maxima = x86::scores_lanes8_heads::<4>(keys, stride, queries, scale, scores),
        }
        maxima
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// `weighted_values_lanes8` for up to `HEADS_TOGETHER` query heads that share one KV head,
/// over the same positions: each value row is loaded once for all of them. `lanes[h]` gets
/// head `h`'s eight lanes (`8 * d` values), each sum in the same order. `d` is a multiple of
/// 64. Where `available()`; sixteen outputs a register where AVX-512 runs.
pub(super) fn weighted_values_heads(
    values: &[f32],
    stride: usize,
    first: usize,
    weights: &[&[f32]],
    lanes: &mut [&mut [f32]],
) {
    let d = lanes.first().map_or(0, |l| l.len() / 8);
    let count = weights.first().map_or(0, |w| w.len());
    assert!(
        available()
            && (1..=HEADS_TOGETHER).contains(&weights.len())
            && weights.len() == lanes.len()
            && weights.iter().all(|w| w.len() == count)
            && lanes.iter().all(|l| l.len() == 8 * d)
            && d.is_multiple_of(64)
            && (count == 0 || values.len() >= (count - 1) * stride + d),
        "values hold every weighted row, for every head"
    );
    // SAFETY: AVX2 and FMA are present, and AVX-512 F where `pairs_available()`; every row
    // read lies in `values` and every lane written in its head's slice (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let values = values.as_ptr();
        let wide = pairs_available();
        // Four registers of outputs for each of up to four heads (sixteen accumulators),
        // two where AVX2's sixteen registers hold them.
        match (weights.len(), wide) {
            (1, true) => x86::value_sums_avx512::<1, 4>(values, stride, first, weights, lanes, d),
            (2, true) => x86::value_sums_avx512::<2, 4>(values, stride, first, weights, lanes, d),
            (3, true) => x86::value_sums_avx512::<3, 4>(values, stride, first, weights, lanes, d),
            (_, true) => x86::value_sums_avx512::<4, 4>(values, stride, first, weights, lanes, d),
            (1, false) => x86::value_sums_avx2::<1, 2>(values, stride, first, weights, lanes, d),
            (2, false) => x86::value_sums_avx2::<2, 2>(values, stride, first, weights, lanes, d),
            (3, false) => x86::value_sums_avx2::<3, 2>(values, stride, first, weights, lanes, d),
            (_, false) => x86::value_sums_avx2::<4, 2>(values, stride, first, weights, lanes, d),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// Each value times `scale`, rounded to f16 and back (to nearest, ties to even, as
/// `half::f16::from_f32`). Where `available()`.
pub(super) fn round_to_f16(values: &mut [f32], scale: f32) {
    assert!(available(), "F16C rounding");
    // SAFETY: AVX2, FMA and F16C are present (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::round_to_f16(values, scale)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// The softmax's exponentials in place, `numerics::expf(s - max)` for every score, and their
/// total: each 8 summed with `hsum_8`, the sums added in f64, as the reference does.
/// Where `available()`.
pub(super) fn exponentials(scores: &mut [f32], max: f32) -> f64 {
    assert!(available(), "AVX2 exponentials");
    // SAFETY: AVX2 and FMA are present (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::exponentials(scores, max)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// One decoding token's scores against the cached f16 keys of positions `first..scores_len`
/// for the heads that share a KV head, each key widened once (into L1) for all of them:
/// `keys` starts at position `first`'s row at the KV head's offset, rows `stride` apart;
/// `queries` holds the heads' rounded queries one after another; head `h`'s scores go to
/// `scores[h * n + j]` (`n` = `scores.len() / heads`, position `j`), scored as `dot_lanes32`
/// scores them. Returns each head's largest score in `maxes`. `rows` holds eight rows of
/// scratch. `values` holds the value rows at the keys' offsets: the loop pulls each into
/// cache beside its key, for `values_f16_group` next, whose lane order would otherwise wait
/// on memory at every row (a step's caches do not fit in cache beside the weights), and asks
/// for the keys 16 rows ahead of those it widens. Where `available()`.
#[allow(clippy::too_many_arguments)]
pub(super) fn scores_f16_group(
    keys: &[half::f16],
    values: &[half::f16],
    stride: usize,
    first: usize,
    queries: &[f32],
    scale: f32,
    scores: &mut [f32],
    maxes: &mut [f32],
    rows: &mut [f32],
) {
    let heads = maxes.len();
    let d = queries.len() / heads.max(1);
    let n = scores.len() / heads.max(1);
    assert!(
        available()
            && d.is_multiple_of(32)
            && rows.len() == 8 * d
            && queries.len() == heads * d
            && scores.len() == heads * n
            && (n <= first || keys.len() >= (n - 1 - first) * stride + d)
            && values.len() == keys.len(),
        "grouped f16 scores"
    );
    // SAFETY: AVX2, FMA and F16C are present; every key row read lies in `keys` and every
    // write in `scores`, `maxes` or `rows` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::scores_f16_group(
            keys.as_ptr(),
            values.as_ptr(),
            stride,
            first,
            queries,
            scale,
            scores,
            maxes,
            rows,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// One decoding token's weighted sums of the cached f16 values of positions `first..n` for
/// the heads that share a KV head, each value row widened once into `row`: head `h`'s lane
/// `l` (`lanes[(h * DOT_LANES + l) * d..][..d]`) sums, in order of position, `weights[h * n +
/// j] * value_j` over the positions `j` that are `l` modulo 32, each a fused multiply-add, as
/// the reference's single-row f16 dot product over positions adds them. `values` starts at
/// position `first`'s row. Where `available()`.
pub(super) fn values_f16_group(
    values: &[half::f16],
    stride: usize,
    first: usize,
    weights: &[f32],
    lanes: &mut [f32],
    row: &mut [f32],
) {
    use super::numerics::DOT_LANES;
    let d = row.len();
    let heads = lanes.len() / (DOT_LANES * d).max(1);
    let n = weights.len() / heads.max(1);
    assert!(
        available()
            && d.is_multiple_of(8)
            && lanes.len() == heads * DOT_LANES * d
            && weights.len() == heads * n
            && (n <= first || values.len() >= (n - 1 - first) * stride + d),
        "grouped f16 value sums"
    );
    // SAFETY: AVX2, FMA and F16C are present; every value row read lies in `values` and every
    // write in `lanes` or `row` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::values_f16_group(values.as_ptr(), stride, first, weights, lanes, row)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// `dst[i] = src[i]` widened to f32, over the shorter of the two. Where `available()`.
pub(super) fn widen(src: &[half::f16], dst: &mut [f32]) {
    assert!(available(), "F16C widening");
    // SAFETY: AVX2 and F16C are present (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::widen(src, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::model::numerics_avx2::x86::expf;

    /// Lane `l` of accumulator `c` is the reference's lane `8c + l`; `reduce_lanes` is
    /// ((A0 + A2) + (A1 + A3)), then its halves added, then (t0 + t1) + (t2 + t3).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes32(x: &[f32], y: &[f32]) -> f32 {
        let whole = x.len() - x.len() % 32;
        let lanes = lanes32(x.as_ptr(), y.as_ptr(), whole);
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
        hsum_8(acc)
    }

    /// Keys scored four at a time: four dependency chains side by side, each key's sum in
    /// `dot_lanes8`'s order.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_lanes8(
        keys: *const f32,
        stride: usize,
        query: &[f32],
        scale: f32,
        scores: &mut [f32],
    ) -> f32 {
        let (d, pq) = (query.len(), query.as_ptr());
        let mut max = f32::NEG_INFINITY;
        let mut k = 0;
        while k + 4 <= scores.len() {
            let rows: [*const f32; 4] = std::array::from_fn(|r| keys.add((k + r) * stride));
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..d).step_by(8) {
                let q = _mm256_loadu_ps(pq.add(i));
                for (a, row) in acc.iter_mut().zip(rows) {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(i)), q, *a);
                }
            }
            for (r, a) in acc.into_iter().enumerate() {
                let score = hsum_8(a) * scale;
                scores[k + r] = score;
                max = max.max(score);
            }
            k += 4;
        }
        for (k, score) in scores.iter_mut().enumerate().skip(k) {
            let row = std::slice::from_raw_parts(keys.add(k * stride), d);
            *score = dot_lanes8(row, query) * scale;
            max = max.max(*score);
        }
        max
    }

    /// Paired keys scored eight at a time (four registers, two keys each), the rest one
    /// pair or one key at a time.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn scores_paired(
        keys: *const f32,
        kv_dim: usize,
        kv_offset: usize,
        start: usize,
        query: &[f32],
        scale: f32,
        scores: &mut [f32],
    ) -> f32 {
        let (d, pq) = (query.len(), query.as_ptr());
        // Where chunk `c` of position `p`'s head sits: its pair, the chunk, the half.
        let at = |p: usize, c: usize| {
            keys.add((p / 2) * 2 * kv_dim + 2 * (kv_offset + 8 * c) + 8 * (p % 2))
        };
        let mut max = f32::NEG_INFINITY;
        let mut record = |k: usize, dot: f32, scores: &mut [f32]| {
            let score = dot * scale;
            scores[k] = score;
            max = max.max(score);
        };
        let single = |p: usize| {
            let mut acc = _mm256_setzero_ps();
            for c in 0..d / 8 {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(at(p, c)),
                    _mm256_loadu_ps(pq.add(8 * c)),
                    acc,
                );
            }
            hsum_8(acc)
        };
        let mut k = 0;
        if start % 2 == 1 && !scores.is_empty() {
            record(0, single(start), scores);
            k = 1;
        }
        while k + 8 <= scores.len() {
            let first = start + k;
            let mut acc = [_mm512_setzero_ps(); 4];
            for c in 0..d / 8 {
                let q = _mm512_broadcast_f32x8(_mm256_loadu_ps(pq.add(8 * c)));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(at(first + 2 * r, c)), q, *a);
                }
            }
            for (r, a) in acc.into_iter().enumerate() {
                record(k + 2 * r, hsum_8(_mm512_castps512_ps256(a)), scores);
                record(k + 2 * r + 1, hsum_8(_mm512_extractf32x8_ps(a, 1)), scores);
            }
            k += 8;
        }
        while k < scores.len() {
            record(k, single(start + k), scores);
            k += 1;
        }
        max
    }

    /// Where `scores_paired_heads` reads: keys in pairs of positions (rows of `kv_dim`), the
    /// head's `d` values from `kv_offset`, `count` positions from `start`.
    pub(super) struct PairedKeys {
        pub(super) keys: *const f32,
        pub(super) kv_dim: usize,
        pub(super) kv_offset: usize,
        pub(super) start: usize,
        pub(super) d: usize,
        pub(super) count: usize,
        pub(super) scale: f32,
    }

    /// `scores_paired` for `G` heads: eight positions at a time, four pair registers loaded
    /// once per chunk of eight elements and met by every head's query.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn scores_paired_heads<const G: usize>(
        shape: &PairedKeys,
        queries: &[&[f32]],
        scores: &mut [&mut [f32]],
    ) -> [f32; G] {
        let PairedKeys {
            keys,
            kv_dim,
            kv_offset,
            start,
            d,
            count,
            scale,
        } = *shape;
        let pq: [*const f32; G] = std::array::from_fn(|h| queries[h].as_ptr());
        let out: [*mut f32; G] = std::array::from_fn(|h| scores[h].as_mut_ptr());
        let at = |p: usize, c: usize| {
            keys.add((p / 2) * 2 * kv_dim + 2 * (kv_offset + 8 * c) + 8 * (p % 2))
        };
        let mut max = [f32::NEG_INFINITY; G];
        let mut record = |h: usize, k: usize, dot: f32| {
            let score = dot * scale;
            *out[h].add(k) = score;
            max[h] = max[h].max(score);
        };
        let single = |h: usize, p: usize| {
            let mut acc = _mm256_setzero_ps();
            for c in 0..d / 8 {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(at(p, c)),
                    _mm256_loadu_ps(pq[h].add(8 * c)),
                    acc,
                );
            }
            hsum_8(acc)
        };
        let mut k = 0;
        if start % 2 == 1 && count > 0 {
            for h in 0..G {
                record(h, 0, single(h, start));
            }
            k = 1;
        }
        while k + 8 <= count {
            let first = start + k;
            let mut acc = [[_mm512_setzero_ps(); 4]; G];
            for c in 0..d / 8 {
                let pairs: [__m512; 4] =
                    std::array::from_fn(|r| _mm512_loadu_ps(at(first + 2 * r, c)));
                for (h, acc) in acc.iter_mut().enumerate() {
                    let q = _mm512_broadcast_f32x8(_mm256_loadu_ps(pq[h].add(8 * c)));
                    for (a, pair) in acc.iter_mut().zip(pairs) {
                        *a = _mm512_fmadd_ps(pair, q, *a);
                    }
                }
            }
            for (h, acc) in acc.into_iter().enumerate() {
                for (r, a) in acc.into_iter().enumerate() {
                    record(h, k + 2 * r, hsum_8(_mm512_castps512_ps256(a)));
                    record(h, k + 2 * r + 1, hsum_8(_mm512_extractf32x8_ps(a, 1)));
                }
            }
            k += 8;
        }
        while k < count {
            for h in 0..G {
                record(h, k, single(h, start + k));
            }
            k += 1;
        }
        max
    }

    /// `scores_lanes8` for `G` heads: two keys at a time, each chunk of eight elements loaded
    /// once and met by every head's query (eight chains, where AVX2's sixteen registers hold
    /// no more beside the loads).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_lanes8_heads<const G: usize>(
        keys: *const f32,
        stride: usize,
        queries: &[&[f32]],
        scale: f32,
        scores: &mut [&mut [f32]],
    ) -> [f32; G] {
        let d = queries[0].len();
        let count = scores[0].len();
        let pq: [*const f32; G] = std::array::from_fn(|h| queries[h].as_ptr());
        let out: [*mut f32; G] = std::array::from_fn(|h| scores[h].as_mut_ptr());
        let mut max = [f32::NEG_INFINITY; G];
        let mut record = |h: usize, k: usize, dot: f32| {
            let score = dot * scale;
            *out[h].add(k) = score;
            max[h] = max[h].max(score);
        };
        let mut k = 0;
        while k + 2 <= count {
            let rows = [keys.add(k * stride), keys.add((k + 1) * stride)];
            let mut acc = [[_mm256_setzero_ps(); 2]; G];
            for i in (0..d).step_by(8) {
                let key = rows.map(|row| _mm256_loadu_ps(row.add(i)));
                for (h, acc) in acc.iter_mut().enumerate() {
                    let q = _mm256_loadu_ps(pq[h].add(i));
                    for (a, key) in acc.iter_mut().zip(key) {
                        *a = _mm256_fmadd_ps(key, q, *a);
                    }
                }
            }
            for (h, acc) in acc.into_iter().enumerate() {
                for (r, a) in acc.into_iter().enumerate() {
                    record(h, k + r, hsum_8(a));
                }
            }
            k += 2;
        }
        if k < count {
            let row = std::slice::from_raw_parts(keys.add(k * stride), d);
            for (h, query) in queries.iter().enumerate().take(G) {
                record(h, k, dot_lanes8(row, query));
            }
        }
        max
    }

    /// `hsum_8` of one register.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum_8(acc: __m256) -> f32 {
        let v = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
        let w = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(w, _mm_movehdup_ps(w)))
    }

    /// One key at a time: `dot_lanes32` already runs four chains.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_lanes32(
        keys: *const f32,
        stride: usize,
        query: &[f32],
        scale: f32,
        scores: &mut [f32],
    ) -> f32 {
        let d = query.len();
        let mut max = f32::NEG_INFINITY;
        for (k, score) in scores.iter_mut().enumerate() {
            let row = std::slice::from_raw_parts(keys.add(k * stride), d);
            *score = dot_lanes32(row, query) * scale;
            max = max.max(*score);
        }
        max
    }

    /// `$name::<G, W>`: the tiled pass's weighted sums of values for `G` heads over the same
    /// rows, `W` registers of outputs at a time (`$width * W`), each lane's sums kept in
    /// registers over its rows instead of a load and a store of its partial sums per row.
    /// Each row's `W` registers are loaded once and met by every head's weight, so heads
    /// that share a KV head read the cached values once. Every output's sum takes its
    /// multiply-adds in the same order whatever `G`, `W` and the vector width.
    macro_rules! value_sums {
        ($name:ident, $features:literal, $vector:ty, $width:literal, $zero:ident, $load:ident,
         $set1:ident, $fma:ident, $store:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const G: usize, const W: usize>(
                values: *const f32,
                stride: usize,
                first: usize,
                weights: &[&[f32]],
                lanes: &mut [&mut [f32]],
                d: usize,
            ) {
                let pw: [*const f32; G] = std::array::from_fn(|h| weights[h].as_ptr());
                let out: [*mut f32; G] = std::array::from_fn(|h| lanes[h].as_mut_ptr());
                let count = weights[0].len();
                for lane in 0..8 {
                    // The first row whose position is `lane` modulo 8.
                    let start = (lane + 8 - first % 8) % 8;
                    for block in (0..d).step_by($width * W) {
                        let mut acc = [[$zero(); W]; G];
                        for k in (start..count).step_by(8) {
                            let row = values.add(k * stride + block);
                            let rows: [$vector; W] =
                                std::array::from_fn(|r| $load(row.add($width * r)));
                            for (h, acc) in acc.iter_mut().enumerate() {
                                let w = $set1(*pw[h].add(k));
                                for (a, v) in acc.iter_mut().zip(rows) {
                                    *a = $fma(w, v, *a);
                                }
                            }
                        }
                        for (h, acc) in acc.into_iter().enumerate() {
                            for (r, a) in acc.into_iter().enumerate() {
                                $store(out[h].add(lane * d + block + $width * r), a);
                            }
                        }
                    }
                }
            }
        };
    }

    value_sums!(
        value_sums_avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
    value_sums!(
        value_sums_avx512,
        "avx512f,avx512dq,avx2,fma",
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn round_to_f16(values: &mut [f32], scale: f32) {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT;
        let factor = _mm256_set1_ps(scale);
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            let scaled = _mm256_mul_ps(_mm256_loadu_ps(p), factor);
            _mm256_storeu_ps(p, _mm256_cvtph_ps(_mm256_cvtps_ph::<NEAREST>(scaled)));
        }
        for v in chunks.into_remainder() {
            *v = half::f16::from_f32(*v * scale).to_f32();
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exponentials(scores: &mut [f32], max: f32) -> f64 {
        let top = _mm256_set1_ps(max);
        let mut total = 0f64;
        let mut chunks = scores.chunks_exact_mut(8);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            let e = expf(_mm256_sub_ps(_mm256_loadu_ps(p), top));
            _mm256_storeu_ps(p, e);
            total += f64::from(hsum_8(e));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut exps = [0f32; 8];
            for (e, s) in exps.iter_mut().zip(rest.iter_mut()) {
                *e = crate::model::numerics::expf(*s - max);
                *s = *e;
            }
            total += f64::from(crate::model::numerics::hsum_8(&exps));
        }
        total
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen_pairs(src: &[half::f16], row: usize, dst: &mut [f32]) {
        let (ps, pd) = (src.as_ptr().cast::<__m128i>(), dst.as_mut_ptr());
        for position in 0..src.len() / row {
            let pair = pd.add((position / 2) * 2 * row + 8 * (position % 2));
            for c in 0..row / 8 {
                let halves = _mm_loadu_si128(ps.add((position * row) / 8 + c));
                _mm256_storeu_ps(pair.add(16 * c), _mm256_cvtph_ps(halves));
            }
        }
    }

    /// Asks for the cache lines of an f16 row of `d` values.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prefetch_row(row: *const half::f16, d: usize) {
        const PER_LINE: usize = 64 / std::mem::size_of::<half::f16>();
        for offset in (0..d).step_by(PER_LINE) {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(offset).cast());
        }
    }

    /// One row of `d` f16 values (a multiple of 8) widened into `row`.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn widen_row(src: *const half::f16, row: &mut [f32]) {
        let (ps, pd) = (src.cast::<__m128i>(), row.as_mut_ptr());
        for c in 0..row.len() / 8 {
            _mm256_storeu_ps(pd.add(8 * c), _mm256_cvtph_ps(_mm_loadu_si128(ps.add(c))));
        }
    }

    /// See `super::scores_f16_group`, which checks the bounds. Eight keys at a time: their rows
    /// widened into `rows` once for every head, and each head's eight sums reduced together,
    /// with the same additions `dot_lanes32` makes for each, where reducing them one by one
    /// took as many instructions as the products.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scores_f16_group(
        keys: *const half::f16,
        values: *const half::f16,
        stride: usize,
        first: usize,
        queries: &[f32],
        scale: f32,
        scores: &mut [f32],
        maxes: &mut [f32],
        rows: &mut [f32],
    ) {
        let heads = maxes.len();
        let d = queries.len() / heads;
        let n = scores.len() / heads;
        maxes.fill(f32::NEG_INFINITY);
        let mut j = first;
        while j + 8 <= n {
            for k in 0..8 {
                prefetch_row(values.add((j + k - first) * stride), d);
                prefetch_row(keys.wrapping_add((j + 16 + k - first) * stride), d);
                widen_row(
                    keys.add((j + k - first) * stride),
                    &mut rows[k * d..(k + 1) * d],
                );
            }
            for (h, max) in maxes.iter_mut().enumerate() {
                let query = queries.as_ptr().add(h * d);
                let sums: [__m256; 8] =
                    std::array::from_fn(|k| lanes32(rows.as_ptr().add(k * d), query, d));
                let eight = _mm256_mul_ps(reduce_eight(&sums), _mm256_set1_ps(scale));
                _mm256_storeu_ps(scores.as_mut_ptr().add(h * n + j), eight);
                *max = max.max(hmax(eight));
            }
            j += 8;
        }
        for j in j..n {
            prefetch_row(values.add((j - first) * stride), d);
            widen_row(keys.add((j - first) * stride), &mut rows[..d]);
            for (h, max) in maxes.iter_mut().enumerate() {
                let score = dot_lanes32(&rows[..d], &queries[h * d..(h + 1) * d]) * scale;
                scores[h * n + j] = score;
                *max = max.max(score);
            }
        }
    }

    /// The four accumulators of `x . y` over `d` values (a multiple of 32), element `i` in
    /// accumulator `(i % 32) / 8`, added as `dot_lanes32` adds them: (A0 + A2) + (A1 + A3).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes32(x: *const f32, y: *const f32, d: usize) -> __m256 {
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..d).step_by(32) {
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(
                    _mm256_loadu_ps(x.add(i + 8 * c)),
                    _mm256_loadu_ps(y.add(i + 8 * c)),
                    *a,
                );
            }
        }
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]))
    }

    /// Eight `lanes32` vectors each reduced as `dot_lanes32` reduces one (its halves added,
    /// t_i = l_i + l_(i + 4), then (t0 + t1) + (t2 + t3)), the eight sums in order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn reduce_eight(x: &[__m256; 8]) -> __m256 {
        // [t of x_a | t of x_b] for the pairs (0, 1), (2, 3), (4, 5), (6, 7).
        let halves = |a: __m256, b: __m256| {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        };
        let (t01, t23) = (halves(x[0], x[1]), halves(x[2], x[3]));
        let (t45, t67) = (halves(x[4], x[5]), halves(x[6], x[7]));
        // Sums 0, 2, 4, 6 in the low half and 1, 3, 5, 7 in the high one.
        let sums = _mm256_hadd_ps(_mm256_hadd_ps(t01, t23), _mm256_hadd_ps(t45, t67));
        _mm256_permutevar8x32_ps(sums, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// The largest of eight values.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hmax(x: __m256) -> f32 {
        let four = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let two = _mm_max_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_max_ss(two, _mm_movehdup_ps(two)))
    }

    /// See `super::values_f16_group`, which checks the bounds. Lane by lane, so each lane's
    /// sums of a slice of the row stay in registers over its positions and are stored once,
    /// rather than loaded and stored for every position; a row's slice is widened once for
    /// every head.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn values_f16_group(
        values: *const half::f16,
        stride: usize,
        first: usize,
        weights: &[f32],
        lanes: &mut [f32],
        row: &mut [f32],
    ) {
        use super::super::numerics::DOT_LANES;
        let d = row.len();
        let heads = lanes.len() / (DOT_LANES * d);
        match heads {
            1 if d.is_multiple_of(64) => {
                lane_sums::<1, 8>(values, stride, first, weights, lanes, d)
            }
            2 if d.is_multiple_of(32) => {
                lane_sums::<2, 4>(values, stride, first, weights, lanes, d)
            }
            3 if d.is_multiple_of(32) => {
                lane_sums::<3, 4>(values, stride, first, weights, lanes, d)
            }
            4 if d.is_multiple_of(16) => {
                lane_sums::<4, 2>(values, stride, first, weights, lanes, d)
            }
            _ => position_sums(values, stride, first, weights, lanes, row),
        }
    }

    /// `values_f16_group` for `G` heads, `C` registers of a row at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lane_sums<const G: usize, const C: usize>(
        values: *const half::f16,
        stride: usize,
        first: usize,
        weights: &[f32],
        lanes: &mut [f32],
        d: usize,
    ) {
        use super::super::numerics::DOT_LANES;
        let n = weights.len() / G;
        let pl = lanes.as_mut_ptr();
        for slice in (0..d).step_by(8 * C) {
            for lane in 0..DOT_LANES {
                let mut acc = [[_mm256_setzero_ps(); C]; G];
                // The first position at or after `first` in this lane.
                let mut j = first + (lane + DOT_LANES - first % DOT_LANES) % DOT_LANES;
                while j < n {
                    let at = values.add((j - first) * stride + slice).cast::<__m128i>();
                    let v: [__m256; C] =
                        std::array::from_fn(|c| _mm256_cvtph_ps(_mm_loadu_si128(at.add(c))));
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let weight = _mm256_set1_ps(*weights.get_unchecked(h * n + j));
                        for c in 0..C {
                            acc[c] = _mm256_fmadd_ps(weight, v[c], acc[c]);
                        }
                    }
                    j += DOT_LANES;
                }
                for (h, acc) in acc.iter().enumerate() {
                    let out = pl.add((h * DOT_LANES + lane) * d + slice);
                    for (c, &a) in acc.iter().enumerate() {
                        _mm256_storeu_ps(out.add(8 * c), a);
                    }
                }
            }
        }
    }

    /// `values_f16_group` position by position, for any number of heads.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn position_sums(
        values: *const half::f16,
        stride: usize,
        first: usize,
        weights: &[f32],
        lanes: &mut [f32],
        row: &mut [f32],
    ) {
        use super::super::numerics::DOT_LANES;
        let d = row.len();
        let heads = lanes.len() / (DOT_LANES * d);
        let n = weights.len() / heads;
        lanes.fill(0.0);
        let pl = lanes.as_mut_ptr();
        for j in first..n {
            widen_row(values.add((j - first) * stride), row);
            for h in 0..heads {
                let weight = _mm256_set1_ps(weights[h * n + j]);
                let acc = pl.add((h * DOT_LANES + j % DOT_LANES) * d);
                for c in 0..d / 8 {
                    let v = _mm256_loadu_ps(row.as_ptr().add(8 * c));
                    let a = _mm256_loadu_ps(acc.add(8 * c));
                    _mm256_storeu_ps(acc.add(8 * c), _mm256_fmadd_ps(weight, v, a));
                }
            }
        }
    }

    /// Four registers a round, with no call per eight values (`half`'s slice conversion
    /// makes one).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen(src: &[half::f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (ps, pd) = (src.as_ptr().cast::<__m128i>(), dst.as_mut_ptr());
        let whole = n - n % 32;
        for i in (0..whole).step_by(32) {
            let halves: [__m128i; 4] = std::array::from_fn(|r| _mm_loadu_si128(ps.add(i / 8 + r)));
            for (r, h) in halves.into_iter().enumerate() {
                _mm256_storeu_ps(pd.add(i + 8 * r), _mm256_cvtph_ps(h));
            }
        }
        for (d, s) in dst[whole..n].iter_mut().zip(&src[whole..n]) {
            *d = s.to_f32();
        }
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
            let dot = |lanes8: bool| {
                let mut score = [0.0];
                scores(&x, len, &y, lanes8, 1.0, &mut score);
                score[0]
            };
            assert_eq!(dot(false), numerics::dot_lanes32(&x, &y), "{len}");
            assert_eq!(dot(true), numerics::dot_lanes8(&x, &y), "{len}");
        }
    }

    /// Scores and value sums over many rows, from a first position off the 8-lane grid: the
    /// same bits as the portable loops.
    #[test]
    fn batched_loops_equal_the_portable_ones() {
        if !available() {
            return;
        }
        let (d, stride, first) = (64, 3 * 64 + 5, 13);
        let rows = 37;
        let table: Vec<f32> = (0..rows * stride)
            .map(|i| ((i * 29) % 113) as f32 / 13.0 - 4.0)
            .collect();
        let query: Vec<f32> = (0..d).map(|i| ((i * 7) % 31) as f32 / 5.0 - 3.0).collect();
        for lanes8 in [true, false] {
            let mut ours = vec![0.0; rows];
            let max = scores(&table, stride, &query, lanes8, 0.125, &mut ours);
            for (k, &score) in ours.iter().enumerate() {
                let row = &table[k * stride..k * stride + d];
                let dot = if lanes8 {
                    numerics::dot_lanes8(row, &query)
                } else {
                    numerics::dot_lanes32(row, &query)
                };
                assert_eq!(score, dot * 0.125, "row {k}");
            }
            assert_eq!(max, ours.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        }
        // Head widths of the AVX2 loops only (64) and of the AVX-512 one too (256).
        for d in [64, 256] {
            let stride = 2 * d + 5;
            let table: Vec<f32> = (0..rows * stride)
                .map(|i| ((i * 29) % 113) as f32 / 13.0 - 4.0)
                .collect();
            let weights: Vec<f32> = (0..rows).map(|k| 1.0 / (k + 3) as f32).collect();
            let mut ours = vec![f32::NAN; 8 * d];
            weighted_values_lanes8(&table, stride, first, &weights, &mut ours);
            let mut expected = vec![0.0f32; 8 * d];
            for (k, &w) in weights.iter().enumerate() {
                let lane = (first + k) % 8;
                for i in 0..d {
                    let sum = &mut expected[lane * d + i];
                    *sum = w.mul_add(table[k * stride + i], *sum);
                }
            }
            assert_eq!(ours, expected, "head width {d}");
        }
    }

    /// `positions` cached f16 rows of `kv_dim` values widened, plain and in pairs (`widen_pairs`;
    /// zeros where AVX-512 does not run).
    fn cached_rows(positions: usize, kv_dim: usize) -> (Vec<f32>, Vec<f32>) {
        let halves: Vec<half::f16> = (0..positions * kv_dim)
            .map(|i| half::f16::from_f32(((i * 29) % 113) as f32 / 13.0 - 4.0))
            .collect();
        let mut paired = vec![0.0; positions.div_ceil(2) * 2 * kv_dim];
        if pairs_available() {
            widen_pairs(&halves, kv_dim, &mut paired);
        }
        (halves.iter().map(|h| h.to_f32()).collect(), paired)
    }

    /// Keys widened in pairs and scored two to a register: the same scores as `dot_lanes8`
    /// over the plain rows, from even and odd first positions, for every head of the row.
    #[test]
    fn paired_keys_score_as_single_rows() {
        if !pairs_available() {
            return;
        }
        let (d, heads, positions): (usize, usize, usize) = (64, 2, 37);
        let kv_dim = d * heads;
        let (plain, paired) = cached_rows(positions, kv_dim);
        let query: Vec<f32> = (0..d).map(|i| ((i * 7) % 31) as f32 / 5.0 - 3.0).collect();
        for head in 0..heads {
            for start in [0, 1, 2, 5, 20, 36] {
                let mut ours = vec![0.0; positions - start];
                let max = scores_paired(&paired, kv_dim, head * d, start, &query, 0.125, &mut ours);
                for (k, &score) in ours.iter().enumerate() {
                    let at = (start + k) * kv_dim + head * d;
                    let dot = numerics::dot_lanes8(&plain[at..at + d], &query);
                    assert_eq!(score, dot * 0.125, "head {head} start {start} key {k}");
                }
                assert_eq!(max, ours.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }
        }
    }

    /// Heads that share a KV head, scored and summed together: every head's scores and lanes
    /// the bits of the one-head kernels, for each number of heads taken at once.
    #[test]
    fn heads_together_equal_one_head_at_a_time() {
        if !available() {
            return;
        }
        let (d, kv_heads, positions): (usize, usize, usize) = (64, 2, 37);
        let kv_dim = d * kv_heads;
        let (plain, paired) = cached_rows(positions, kv_dim);
        let values: Vec<f32> = plain.iter().map(|v| v * 0.5).collect();
        for n in 1..=HEADS_TOGETHER {
            let queries: Vec<Vec<f32>> = (0..n)
                .map(|h| {
                    (0..d)
                        .map(|i| ((i * 7 + h * 11) % 31) as f32 / 5.0 - 3.0)
                        .collect()
                })
                .collect();
            let query_rows: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
            for start in [0, 1, 2, 5, 20, 36] {
                let count = positions - start;
                // Plain rows (AVX2), then keys in pairs (AVX-512).
                let keys = &plain[start * kv_dim + d..];
                let mut scores = vec![vec![0.0; count]; n];
                let mut rows: Vec<&mut [f32]> = scores.iter_mut().map(Vec::as_mut_slice).collect();
                let maxima = scores_lanes8_heads(keys, kv_dim, &query_rows, 0.125, &mut rows);
                for h in 0..n {
                    let mut alone = vec![0.0; count];
                    let max = super::scores(keys, kv_dim, &queries[h], true, 0.125, &mut alone);
                    assert_eq!(scores[h], alone, "{n} heads, head {h}, start {start}");
                    assert_eq!(maxima[h], max);
                }
                assert!(maxima[n..].iter().all(|&m| m == f32::NEG_INFINITY));
                if pairs_available() {
                    let mut rows: Vec<&mut [f32]> =
                        scores.iter_mut().map(Vec::as_mut_slice).collect();
                    let maxima = scores_paired_heads(
                        &paired,
                        kv_dim,
                        d,
                        start,
                        &query_rows,
                        0.125,
                        &mut rows,
                    );
                    for h in 0..n {
                        let mut alone = vec![0.0; count];
                        let max = scores_paired(
                            &paired,
                            kv_dim,
                            d,
                            start,
                            &queries[h],
                            0.125,
                            &mut alone,
                        );
                        assert_eq!(
                            scores[h], alone,
                            "paired: {n} heads, head {h}, start {start}"
                        );
                        assert_eq!(maxima[h], max);
                    }
                }
                let weights: Vec<Vec<f32>> = (0..n)
                    .map(|h| (0..count).map(|k| 1.0 / (k + 3 + h) as f32).collect())
                    .collect();
                let weight_rows: Vec<&[f32]> = weights.iter().map(Vec::as_slice).collect();
                let mut lanes = vec![vec![f32::NAN; 8 * d]; n];
                let mut lane_rows: Vec<&mut [f32]> =
                    lanes.iter_mut().map(Vec::as_mut_slice).collect();
                let from = &values[start * kv_dim + d..];
                weighted_values_heads(from, kv_dim, start, &weight_rows, &mut lane_rows);
                let mut narrow = vec![vec![f32::NAN; 8 * d]; n];
                let mut narrow_rows: Vec<&mut [f32]> =
                    narrow.iter_mut().map(Vec::as_mut_slice).collect();
                // The AVX2 form, which the dispatch above passes over where AVX-512 runs.
                // SAFETY: AVX2 and FMA are present; the rows and lanes are those the safe
                // form checked.
                unsafe {
                    let (v, w, l) = (from.as_ptr(), &weight_rows[..], &mut narrow_rows[..]);
                    match n {
                        1 => x86::value_sums_avx2::<1, 2>(v, kv_dim, start, w, l, d),
                        2 => x86::value_sums_avx2::<2, 2>(v, kv_dim, start, w, l, d),
                        3 => x86::value_sums_avx2::<3, 2>(v, kv_dim, start, w, l, d),
                        _ => x86::value_sums_avx2::<4, 2>(v, kv_dim, start, w, l, d),
                    }
                }
                for h in 0..n {
                    let mut alone = vec![f32::NAN; 8 * d];
                    weighted_values_lanes8(from, kv_dim, start, &weights[h], &mut alone);
                    assert_eq!(lanes[h], alone, "{n} heads, head {h}, first {start}");
                    assert_eq!(narrow[h], alone, "AVX2: {n} heads, head {h}, first {start}");
                }
            }
        }
    }

    /// Exponentials (over the range the softmax sees, -inf and NaN included) and f16
    /// rounding: the same bits as the portable forms.
    #[test]
    fn exponentials_and_rounding_equal_the_portable_forms() {
        if !available() {
            return;
        }
        let mut scores: Vec<f32> = (0..2003).map(|i| (i as f32 - 1900.0) * 0.0931).collect();
        scores.extend([f32::NEG_INFINITY, -1e30, 200.0, f32::NAN, 0.0, -0.0, 1e-8]);
        for max in [0.0, 3.5, -2.0] {
            let mut ours = scores.clone();
            let total = exponentials(&mut ours, max);
            let mut expected = 0f64;
            for (group, ours) in scores.chunks(8).zip(ours.chunks(8)) {
                let exps: Vec<f32> = group.iter().map(|s| numerics::expf(s - max)).collect();
                for (e, o) in exps.iter().zip(ours) {
                    assert_eq!(e.to_bits(), o.to_bits(), "expf({} - {max})", group[0]);
                }
                let mut lanes = [0f32; 8];
                lanes[..exps.len()].copy_from_slice(&exps);
                expected += f64::from(numerics::hsum_8(&lanes));
            }
            assert_eq!(total.to_bits(), expected.to_bits());
        }
        let values: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 0.37e-3).collect();
        for scale in [1.0, 0.013, 70000.0] {
            let mut ours = values.clone();
            round_to_f16(&mut ours, scale);
            for (v, o) in values.iter().zip(&ours) {
                let expected = half::f16::from_f32(v * scale).to_f32();
                assert_eq!(expected.to_bits(), o.to_bits(), "{v} * {scale}");
            }
        }
    }

    #[test]
    fn widening_equals_the_portable_form() {
        if !available() {
            return;
        }
        let src: Vec<half::f16> = (0..1000u16)
            .map(|i| half::f16::from_bits(i.wrapping_mul(65)))
            .collect();
        let mut ours = vec![0.0f32; src.len()];
        widen(&src, &mut ours);
        for (s, o) in src.iter().zip(&ours) {
            assert!(
                s.to_f32().to_bits() == o.to_bits() || s.is_nan() && o.is_nan(),
                "{s}"
            );
        }
    }
}
