//! Causal attention of each sequence's chunk of queries against its own KV cache, with grouped
//! key/value heads and an optional sliding window; every sequence, token and head of a step
//! runs in one parallel loop.

use half::f16;
use multiversion::multiversion;
use rayon::prelude::*;

use half::slice::HalfFloatSliceExt;

use super::attention_avx2;
use super::numerics::{dot_lanes32, dot_lanes8, expf, hsum_8, reduce_lanes, DOT_LANES};

#[derive(Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Attend only to positions `p - window < j <= p`.
    pub window: Option<usize>,
    /// The chunk has two tokens or more: the reference then sums its f16 products in its tiled
    /// matrix multiply's order rather than its single-row dot product's.
    pub tiled: bool,
}

/// One sequence's share of a step: its tokens' rows of the step's queries and outputs, and its
/// cache (`kv_heads x head_dim` per position), already including the chunk's own positions.
pub struct SequenceCache<'a> {
    /// The step's token rows this sequence's chunk holds.
    pub tokens: std::ops::Range<usize>,
    pub keys: &'a [f16],
    pub values: &'a [f16],
}

/// `q` holds `positions.len()` rows of `heads x head_dim`; `keys`/`values` hold the sequence's
/// cache (`kv_heads x head_dim` per position), already including the chunk's own positions.
/// Each query at position `p` attends to cached positions up to `p`.
pub fn attend(
    shape: &AttentionShape,
    q: &[f32],
    positions: &[usize],
    keys: &[f16],
    values: &[f16],
    out: &mut [f32],
) {
    let sequence = SequenceCache {
        tokens: 0..positions.len(),
        keys,
        values,
    };
    attend_step(shape, q, positions, &[sequence], out);
}

/// Attention for every sequence of a step: `q` and `out` hold the step's token rows of
/// `heads x head_dim`, `positions` each token's position. Every (token, head) of every
/// sequence is one task of a single parallel loop, so a step of many short sequences keeps
/// both cores busy; a sequence's chunk of two tokens or more takes the reference's tiled sums
/// (`shape.tiled` is set per sequence).
///
/// The arithmetic is the reference's (llama.cpp without flash attention): the query rounded
/// to f16, f16 dot products in its lane order, its vectorised exp, per-8 sums added in f64,
/// the probabilities rounded to f16 before they weight the values. The cached rows a step
/// reads are widened to f32 once per step (exactly), in parallel, not once per query and head.
pub fn attend_step(
    shape: &AttentionShape,
    q: &[f32],
    positions: &[usize],
    sequences: &[SequenceCache<'_>],
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let kv_dim = shape.kv_heads * d;
    let mut owner = vec![0usize; positions.len()];
    for (index, sequence) in sequences.iter().enumerate() {
        owner[sequence.tokens.clone()].fill(index);
    }
    let chunked = sequences.iter().any(|s| s.tokens.len() > 1);
    if !chunked && attention_avx2::available() && d.is_multiple_of(DOT_LANES) {
        decode_groups(shape, q, positions, sequences, &owner, out);
        return;
    }
    WIDENED.with_borrow_mut(|widened| {
        if widened.len() < sequences.len() {
            widened.resize_with(sequences.len(), WidenedBuffers::default);
        }
        let firsts: Vec<usize> = sequences
            .iter()
            .map(|sequence| {
                let chunk = &positions[sequence.tokens.clone()];
                chunk.iter().min().map_or(0, |&p| window_start(shape, p))
            })
            .collect();
        widened.par_iter_mut().zip(sequences).zip(&firsts).for_each(
            |((buffers, sequence), &first)| {
                let last = positions[sequence.tokens.clone()].iter().max().copied();
                let range = last.map_or(0..0, |last| first * kv_dim..(last + 1) * kv_dim);
                // A chunk of two tokens or more scores keys two at a time where AVX-512 runs.
                let paired = sequence.tokens.len() > 1
                    && attention_avx2::pairs_available()
                    && d.is_multiple_of(8);
                buffers.fill(
                    sequence.keys,
                    sequence.values,
                    range,
                    paired.then_some(kv_dim),
                );
            },
        );
        let widened = &widened[..];
        let cache = |sequence: usize| Widened {
            first: firsts[sequence],
            keys: &widened[sequence].keys,
            paired: widened[sequence].paired,
            values: &widened[sequence].values,
        };
        let tiled = |sequence: usize| AttentionShape {
            tiled: sequences[sequence].tokens.len() > 1,
            ..*shape
        };
        // Heads that share a KV head go to one task together where a step holds a chunk of
        // two tokens or more, so the task reads the chunk's cached rows once for all of them.
        let together = heads_together(shape);
        if chunked && together > 1 && attention_avx2::available() {
            let tasks_per_token = shape.heads / together;
            out.par_chunks_mut(together * d).enumerate().for_each_init(
                // Made on first use: a task of a chunk needs only the one, a decoding token's
                // only the other.
                || (None, None),
                |(scratch, heads_scratch), (index, out)| {
                    let token = index / tasks_per_token;
                    let first_head = (index % tasks_per_token) * together;
                    let heads = first_head..first_head + together;
                    let sequence = owner[token];
                    let (cache, shape) = (cache(sequence), tiled(sequence));
                    let queries = &q[token * shape.heads * d..][heads.start * d..heads.end * d];
                    if shape.tiled {
                        let position = positions[token];
                        let heads_scratch =
                            heads_scratch.get_or_insert_with(|| HeadsScratch::new(d));
                        attend_heads(&shape, heads, position, queries, &cache, heads_scratch, out);
                        return;
                    }
                    let scratch = scratch.get_or_insert_with(|| Scratch::new(d));
                    for ((head, query), out) in heads.zip(queries.chunks(d)).zip(out.chunks_mut(d))
                    {
                        attend_one(&shape, head, positions[token], query, &cache, scratch, out);
                    }
                },
            );
            return;
        }
        out.par_chunks_mut(d).enumerate().for_each_init(
            || Scratch::new(d),
            |scratch, (index, out)| {
                let (token, head) = (index / shape.heads, index % shape.heads);
                let sequence = owner[token];
                let query = &q[index * d..(index + 1) * d];
                let (cache, shape) = (cache(sequence), tiled(sequence));
                attend_one(&shape, head, positions[token], query, &cache, scratch, out);
            },
        );
    });
}

/// A step of decoding tokens only: one task per token and KV head, which reads that head's
/// cached f16 rows once for all the query heads sharing it, widening each row into L1 as it
/// goes. Widening every sequence's cache into f32 buffers first (as chunked steps do, whose
/// tiles reuse the rows) writes several MiB a layer out of the caches and back for a single
/// pass over them. The arithmetic is `attend_one`'s, bit for bit.
fn decode_groups(
    shape: &AttentionShape,
    q: &[f32],
    positions: &[usize],
    sequences: &[SequenceCache<'_>],
    owner: &[usize],
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let group = shape.heads / shape.kv_heads;
    out.par_chunks_mut(group * d).enumerate().for_each_init(
        || GroupScratch::new(group, d),
        |scratch, (index, out)| {
            let (token, kv_head) = (index / shape.kv_heads, index % shape.kv_heads);
            let sequence = &sequences[owner[token]];
            let queries = &q[token * shape.heads * d..][kv_head * group * d..][..group * d];
            attend_group(
                shape,
                kv_head,
                positions[token],
                queries,
                sequence,
                scratch,
                out,
            );
        },
    );
}

/// Per-thread buffers of `attend_group`, reused across tasks.
struct GroupScratch {
    queries: Vec<f32>,
    /// Each head's scores, then its weights, `positions` apart.
    scores: Vec<f32>,
    maxes: Vec<f32>,
    lanes: Vec<f32>,
    /// Eight rows of widened keys, the first of them a row of widened values.
    rows: Vec<f32>,
}

impl GroupScratch {
    fn new(heads: usize, head_dim: usize) -> Self {
        Self {
            queries: vec![0.0; heads * head_dim],
            scores: Vec::new(),
            maxes: vec![0.0; heads],
            lanes: vec![0.0; heads * DOT_LANES * head_dim],
            rows: vec![0.0; 8 * head_dim],
        }
    }
}

/// `attend_one` (untiled) for the query heads that share KV head `kv_head`, at once, over the
/// cached f16 rows. Where `attention_avx2::available()` and `head_dim` is a multiple of 32.
fn attend_group(
    shape: &AttentionShape,
    kv_head: usize,
    position: usize,
    queries: &[f32],
    cache: &SequenceCache<'_>,
    scratch: &mut GroupScratch,
    out: &mut [f32],
) {
    let (d, heads) = (shape.head_dim, scratch.maxes.len());
    let kv_dim = shape.kv_heads * d;
    let first = window_start(shape, position);
    let n = position + 1;
    let rows = first * kv_dim + kv_head * d..n * kv_dim;
    scratch.queries.copy_from_slice(queries);
    attention_avx2::round_to_f16(&mut scratch.queries, 1.0);
    // Scores of every position from 0, the masked ones -inf, so the per-8 groups of the
    // softmax sum fall where the reference's do.
    let scores = &mut scratch.scores;
    scores.clear();
    scores.resize(heads * n, f32::NEG_INFINITY);
    attention_avx2::scores_f16_group(
        &cache.keys[rows.clone()],
        &cache.values[rows.clone()],
        kv_dim,
        first,
        &scratch.queries,
        shape.scale,
        scores,
        &mut scratch.maxes,
        &mut scratch.rows,
    );
    for (head_scores, &max) in scores.chunks_mut(n).zip(&scratch.maxes) {
        let inverse = (1.0 / attention_avx2::exponentials(head_scores, max)) as f32;
        attention_avx2::round_to_f16(&mut head_scores[first..], inverse);
    }
    attention_avx2::values_f16_group(
        &cache.values[rows],
        kv_dim,
        first,
        scores,
        &mut scratch.lanes,
        &mut scratch.rows[..d],
    );
    for (lanes, out) in scratch.lanes.chunks(DOT_LANES * d).zip(out.chunks_mut(d)) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = reduce_lanes(&std::array::from_fn(|l| lanes[l * d + i]));
        }
    }
}

/// How many query heads `attend_heads` takes at once: the most, up to
/// `attention_avx2::HEADS_TOGETHER`, that evenly divide the heads sharing a KV head; 1 where
/// its kernels do not apply (`head_dim` not a multiple of 64).
fn heads_together(shape: &AttentionShape) -> usize {
    let group = shape.heads / shape.kv_heads;
    if !shape.head_dim.is_multiple_of(64) {
        return 1;
    }
    (1..=attention_avx2::HEADS_TOGETHER.min(group))
        .rev()
        .find(|n| group.is_multiple_of(*n))
        .unwrap_or(1)
}

/// The first position a query at `position` sees.
fn window_start(shape: &AttentionShape, position: usize) -> usize {
    shape.window.map_or(0, |w| (position + 1).saturating_sub(w))
}

/// f32 copies of cached rows, kept across calls so the decode loop does not allocate.
#[derive(Default)]
struct WidenedBuffers {
    keys: Vec<f32>,
    /// `keys` holds positions in pairs (see `attention_avx2::widen_pairs`).
    paired: bool,
    values: Vec<f32>,
}

impl WidenedBuffers {
    /// Keys and values at once, one on each core where one is free; the keys in pairs of
    /// positions where `paired_row` gives the row length to pair them by.
    fn fill(
        &mut self,
        keys: &[f16],
        values: &[f16],
        range: std::ops::Range<usize>,
        paired_row: Option<usize>,
    ) {
        let widen = |dst: &mut Vec<f32>, src: &[f16]| {
            dst.resize(range.len(), 0.0);
            if attention_avx2::available() {
                attention_avx2::widen(&src[range.clone()], dst);
            } else {
                src[range.clone()].convert_to_f32_slice(dst);
            }
        };
        self.paired = paired_row.is_some();
        let widen_keys = |dst: &mut Vec<f32>| match paired_row {
            Some(row) => {
                // Whole pairs: an odd last position's partner is zeros, never scored.
                dst.resize(range.len().div_ceil(2 * row) * 2 * row, 0.0);
                attention_avx2::widen_pairs(&keys[range.clone()], row, dst);
            }
            None => widen(dst, keys),
        };
        rayon::join(
            || widen_keys(&mut self.keys),
            || widen(&mut self.values, values),
        );
    }
}

thread_local! {
    /// One sequence's widened rows per entry, kept across steps so the decode loop does not
    /// allocate.
    static WIDENED: std::cell::RefCell<Vec<WidenedBuffers>> = Default::default();
}

/// Cached rows from position `first` on, widened to f32.
struct Widened<'a> {
    first: usize,
    keys: &'a [f32],
    /// `keys` in pairs of positions (see `attention_avx2::widen_pairs`).
    paired: bool,
    values: &'a [f32],
}

/// Per-thread buffers, reused across heads.
struct Scratch {
    query: Vec<f32>,
    scores: Vec<f32>,
    /// `lanes[l * head_dim + i]`: the partial sum of output element `i` over the positions
    /// in lane `l`, so adding one position's values is one contiguous multiply-add.
    lanes: Vec<f32>,
}

impl Scratch {
    fn new(head_dim: usize) -> Self {
        Self {
            query: vec![0.0; head_dim],
            scores: Vec::new(),
            lanes: vec![0.0; DOT_LANES * head_dim],
        }
    }
}

/// Per-thread buffers of `attend_heads`, reused across tokens: each head's query, scores
/// and lanes one after another.
struct HeadsScratch {
    queries: Vec<f32>,
    scores: Vec<f32>,
    lanes: Vec<f32>,
}

impl HeadsScratch {
    fn new(head_dim: usize) -> Self {
        let heads = attention_avx2::HEADS_TOGETHER;
        Self {
            queries: vec![0.0; heads * head_dim],
            scores: Vec::new(),
            lanes: vec![0.0; heads * 8 * head_dim],
        }
    }
}

/// `attend_one` for query heads `heads` of one token of a chunk of two tokens or more, which
/// share a KV head, where AVX2 runs: the same arithmetic head by head, with each cached row
/// read once for all of them (`attention_avx2::scores_paired_heads` over keys in pairs where
/// AVX-512 runs, else `scores_lanes8_heads`, and `weighted_values_heads`).
fn attend_heads(
    shape: &AttentionShape,
    heads: std::ops::Range<usize>,
    position: usize,
    queries: &[f32],
    cache: &Widened<'_>,
    scratch: &mut HeadsScratch,
    out: &mut [f32],
) {
    const HEADS: usize = attention_avx2::HEADS_TOGETHER;
    let (d, n) = (shape.head_dim, heads.len());
    let kv_dim = shape.kv_heads * d;
    let kv_offset = (heads.start / (shape.heads / shape.kv_heads)) * d;
    let first = window_start(shape, position);
    let len = position + 1;
    scratch.queries[..n * d].copy_from_slice(queries);
    attention_avx2::round_to_f16(&mut scratch.queries[..n * d], 1.0);
    // Every head's scores from position 0 (see `attend_one`).
    scratch.scores.clear();
    scratch.scores.resize(n * len, f32::NEG_INFINITY);
    let queries: [&[f32]; HEADS] = std::array::from_fn(|h| &scratch.queries[h * d..][..d]);
    // A row per head taken; empty past them.
    let mut rows = scratch.scores.chunks_mut(len);
    let mut scores: [&mut [f32]; HEADS] = std::array::from_fn(|_| rows.next().unwrap_or_default());
    let scored = &mut scores
        .each_mut()
        .map(|row| row.get_mut(first..).unwrap_or_default())[..n];
    let maxima = if cache.paired {
        attention_avx2::scores_paired_heads(
            cache.keys,
            kv_dim,
            kv_offset,
            first - cache.first,
            &queries[..n],
            shape.scale,
            scored,
        )
    } else {
        let keys = &cache.keys[(first - cache.first) * kv_dim + kv_offset..];
        attention_avx2::scores_lanes8_heads(keys, kv_dim, &queries[..n], shape.scale, scored)
    };
    for (row, &max) in scores.iter_mut().zip(&maxima).take(n) {
        // Groups of eight wholly before the window add nothing to the total.
        let total = attention_avx2::exponentials(&mut row[first - first % 8..], max);
        attention_avx2::round_to_f16(&mut row[first..], (1.0 / total) as f32);
    }
    let weights = scores
        .each_ref()
        .map(|row| row.get(first..).unwrap_or_default());
    let mut lane_rows = scratch.lanes.chunks_mut(8 * d);
    let mut lanes: [&mut [f32]; HEADS] =
        std::array::from_fn(|_| lane_rows.next().expect("lanes per head"));
    let values = &cache.values[(first - cache.first) * kv_dim + kv_offset..];
    attention_avx2::weighted_values_heads(values, kv_dim, first, &weights[..n], &mut lanes[..n]);
    for (lanes, out) in lanes.iter().zip(out.chunks_mut(d)) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = hsum_8(&std::array::from_fn(|l| lanes[l * d + i]));
        }
    }
}

#[multiversion(targets("x86_64+avx2+fma+f16c"))]
fn attend_one<'a>(
    shape: &AttentionShape,
    head: usize,
    position: usize,
    query: &[f32],
    cache: &Widened<'a>,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let kv_dim = shape.kv_heads * d;
    let kv_offset = (head / (shape.heads / shape.kv_heads)) * d;
    let first = window_start(shape, position);
    let row = |j: usize| {
        let start = (j - cache.first) * kv_dim + kv_offset;
        start..start + d
    };
    let simd = attention_avx2::available() && d.is_multiple_of(8);
    scratch.query.copy_from_slice(query);
    if simd {
        attention_avx2::round_to_f16(&mut scratch.query, 1.0);
    } else {
        for r in scratch.query.iter_mut() {
            *r = f16::from_f32(*r).to_f32();
        }
    }
    // Scores of every position from 0, the masked ones -inf, so the per-8 groups of the
    // softmax sum fall where the reference's do.
    let scores = &mut scratch.scores;
    scores.clear();
    scores.resize(position + 1, f32::NEG_INFINITY);
    let max = if simd && cache.paired {
        attention_avx2::scores_paired(
            cache.keys,
            kv_dim,
            kv_offset,
            first - cache.first,
            &scratch.query,
            shape.scale,
            &mut scores[first..],
        )
    } else if simd {
        let keys = &cache.keys[row(first).start..];
        let scored = &mut scores[first..];
        attention_avx2::scores(
            keys,
            kv_dim,
            &scratch.query,
            shape.tiled,
            shape.scale,
            scored,
        )
    } else {
        let mut max = f32::NEG_INFINITY;
        for (j, score) in scores.iter_mut().enumerate().skip(first) {
            let key = &cache.keys[row(j)];
            let dot = if shape.tiled {
                dot_lanes8(key, &scratch.query)
            } else {
                dot_lanes32(key, &scratch.query)
            };
            *score = dot * shape.scale;
            max = max.max(*score);
        }
        max
    };
    let total = if simd {
        attention_avx2::exponentials(scores, max)
    } else {
        let mut total = 0f64;
        for group in scores.chunks_mut(8) {
            let mut exps = [0f32; 8];
            for (e, s) in exps.iter_mut().zip(group.iter_mut()) {
                *e = expf(*s - max);
                *s = *e;
            }
            total += f64::from(hsum_8(&exps));
        }
        total
    };
    let inverse = (1.0 / total) as f32;
    let lanes = &mut scratch.lanes;
    if simd && shape.tiled {
        let weights = &mut scores[first..];
        attention_avx2::round_to_f16(weights, inverse);
        let values = &cache.values[row(first).start..];
        attention_avx2::weighted_values_lanes8(values, kv_dim, first, weights, &mut lanes[..8 * d]);
    } else {
        let lane_count = if shape.tiled { 8 } else { DOT_LANES };
        lanes.fill(0.0);
        for (j, &score) in scores.iter().enumerate().skip(first) {
            let weight = f16::from_f32(score * inverse).to_f32();
            let lane = j % lane_count;
            let acc = &mut lanes[lane * d..(lane + 1) * d];
            for (a, &v) in acc.iter_mut().zip(&cache.values[row(j)]) {
                *a = weight.mul_add(v, *a);
            }
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        let lane_sum = |l: usize| lanes[l * d + i];
        *o = if shape.tiled {
            hsum_8(&std::array::from_fn(lane_sum))
        } else {
            reduce_lanes(&std::array::from_fn(lane_sum))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(values: &[f32]) -> Vec<f16> {
        values.iter().map(|&v| f16::from_f32(v)).collect()
    }

    /// A chunk's heads taken together over paired keys: every head's output the bits of
    /// `attend_one` over plain rows, with and without a window.
    #[test]
    fn heads_together_equal_heads_alone() {
        if !attention_avx2::available() {
            return;
        }
        let (tokens, d, kv_heads) = (13, 64, 2);
        let kv_dim = kv_heads * d;
        let numbers = |n: usize, step: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * step) % 113) as f32 / 13.0 - 4.0)
                .collect()
        };
        let keys = halves(&numbers(tokens * kv_dim, 29));
        let values = halves(&numbers(tokens * kv_dim, 17));
        let widen = |h: &[f16]| h.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
        let (plain_keys, plain_values) = (widen(&keys), widen(&values));
        let positions: Vec<usize> = (0..tokens).collect();
        // Four heads per KV head (taken four at a time), and three.
        for (heads, window) in [(8, None), (8, Some(5)), (6, None), (6, Some(5))] {
            let q = numbers(tokens * heads * d, 7);
            let shape = AttentionShape {
                heads,
                kv_heads,
                head_dim: d,
                scale: 0.125,
                window,
                tiled: true,
            };
            let mut out = vec![0.0; q.len()];
            attend(&shape, &q, &positions, &keys, &values, &mut out);
            let cache = Widened {
                first: 0,
                keys: &plain_keys,
                paired: false,
                values: &plain_values,
            };
            let mut scratch = Scratch::new(d);
            for (index, (query, out)) in q.chunks(d).zip(out.chunks(d)).enumerate() {
                let (token, head) = (index / heads, index % heads);
                let mut alone = vec![0.0; d];
                attend_one(&shape, head, token, query, &cache, &mut scratch, &mut alone);
                let case = format!("token {token} head {head} of {heads}, window {window:?}");
                assert_eq!(out, &alone[..], "{case}");
            }
            // Heads together over plain rows too, what AVX2 runs.
            let together = heads_together(&shape);
            assert_eq!(together, heads / kv_heads);
            let mut heads_scratch = HeadsScratch::new(d);
            let row = together * d;
            for (index, (queries, out)) in q.chunks(row).zip(out.chunks(row)).enumerate() {
                let token = index / (heads / together);
                let first_head = (index % (heads / together)) * together;
                let mut group = vec![0.0; row];
                let taken = first_head..first_head + together;
                attend_heads(
                    &shape,
                    taken,
                    token,
                    queries,
                    &cache,
                    &mut heads_scratch,
                    &mut group,
                );
                assert_eq!(
                    out,
                    &group[..],
                    "token {token} heads from {first_head} of {heads}"
                );
            }
        }
    }

    /// A step of decoding tokens, one per sequence, over the f16 cache by KV head group: every
    /// head's output the bits of `attend_one` over widened rows, for one to five heads a group
    /// (the register-held lane sums and the position-by-position fallback), head sizes of 64
    /// and 256, with and without a window, at lengths around the 32 lanes.
    #[test]
    fn decode_groups_equal_heads_alone() {
        if !attention_avx2::available() {
            return;
        }
        let numbers = |n: usize, step: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * step) % 113) as f32 / 13.0 - 4.0)
                .collect()
        };
        let widen = |h: &[f16]| h.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
        for (group, kv_heads, d, window) in [
            (3, 3, 64, None),
            (3, 2, 64, Some(37)),
            (1, 2, 64, None),
            (2, 1, 64, Some(5)),
            (4, 1, 256, Some(40)),
            (5, 1, 32, None),
        ] {
            let heads = group * kv_heads;
            let kv_dim = kv_heads * d;
            let shape = AttentionShape {
                heads,
                kv_heads,
                head_dim: d,
                scale: 0.125,
                window,
                tiled: false,
            };
            // One decoding token per sequence, at the last of its cached positions.
            let lengths = [1usize, 31, 32, 33, 70];
            let caches: Vec<(Vec<f16>, Vec<f16>)> = lengths
                .iter()
                .map(|&n| {
                    let keys = halves(&numbers(n * kv_dim, 29 + n));
                    (keys, halves(&numbers(n * kv_dim, 17 + n)))
                })
                .collect();
            let sequences: Vec<SequenceCache<'_>> = caches
                .iter()
                .enumerate()
                .map(|(token, (keys, values))| SequenceCache {
                    tokens: token..token + 1,
                    keys,
                    values,
                })
                .collect();
            let positions: Vec<usize> = lengths.iter().map(|n| n - 1).collect();
            let q = numbers(lengths.len() * heads * d, 7);
            let mut out = vec![0.0; q.len()];
            attend_step(&shape, &q, &positions, &sequences, &mut out);
            let mut scratch = Scratch::new(d);
            for (token, (keys, values)) in caches.iter().enumerate() {
                let (plain_keys, plain_values) = (widen(keys), widen(values));
                let cache = Widened {
                    first: 0,
                    keys: &plain_keys,
                    paired: false,
                    values: &plain_values,
                };
                for head in 0..heads {
                    let at = (token * heads + head) * d;
                    let mut alone = vec![0.0; d];
                    let query = &q[at..at + d];
                    attend_one(
                        &shape,
                        head,
                        positions[token],
                        query,
                        &cache,
                        &mut scratch,
                        &mut alone,
                    );
                    let case = format!(
                        "{group} a group, d {d}, window {window:?}, token {token} head {head}"
                    );
                    assert_eq!(&out[at..at + d], &alone[..], "{case}");
                }
            }
        }
    }

    /// One head, one key: the output is that value whatever the scores.
    #[test]
    fn single_position_returns_its_value() {
        let shape = AttentionShape {
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            scale: 0.5,
            window: None,
            tiled: false,
        };
        let q = vec![1.0; 8];
        let keys = halves(&[0.3; 4]);
        let values = halves(&[1.0, 2.0, 3.0, 4.0]);
        let mut out = vec![0.0; 8];
        attend(&shape, &q, &[0], &keys, &values, &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
    }

    /// Equal scores average the values in the window, and only those.
    #[test]
    fn window_limits_the_positions_attended() {
        let shape = AttentionShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            window: Some(2),
            tiled: true,
        };
        let keys = halves(&[0.0; 4]);
        let values = halves(&[10.0, 20.0, 30.0, 40.0]);
        let mut out = vec![0.0; 1];
        attend(&shape, &[1.0], &[3], &keys, &values, &mut out);
        assert!((out[0] - 35.0).abs() < 1e-5);
        let full = AttentionShape {
            window: None,
            ..shape
        };
        attend(&full, &[1.0], &[3], &keys, &values, &mut out);
        assert!((out[0] - 25.0).abs() < 1e-5);
    }
}
