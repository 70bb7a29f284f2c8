//! The encoder's self-attention over packed sequences: the tokens of every sequence in a batch
//! lie end to end with no padding, and each token attends only to the tokens of its own sequence.
//!
//! Why not candle's batched matmuls: a padded batch spends its projections and feed-forward
//! layers on padding (a batch of sentences of 10-41 tokens is about half padding), and candle
//! runs one small gemm per (sequence, head) through a generic kernel, plus a split, a transpose
//! and a copy per layer. Here each (sequence, head) is one task: it gathers its queries, keys
//! and values from the fused QKV projection, packs keys and values for wick's own matmul
//! ([`super::sgemm`]), and takes `softmax(q kᵀ) v` on its thread.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::buffer;
use super::kernels::exp_rows;
use super::sgemm::{self, PackedMatrix, SharedOut};

/// Shape of a multi-head attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub count: usize,
    pub dim: usize,
}

impl Heads {
    fn hidden(self) -> usize {
        self.count * self.dim
    }
}

/// Attention of packed sequences. `qkv` is the fused projection `(tokens, 3 * hidden)` without
/// its `bias` (queries, keys, values side by side, heads `dim` wide within each); sequence `s`
/// holds tokens `offsets[s]..offsets[s + 1]`. Queries are scaled by `q_scale`. Returns the
/// context `(tokens, hidden)`, each (sequence, head) task writing its head's columns of its
/// sequence's rows in place.
#[allow(unsafe_code)]
pub fn attention(
    qkv: &[f32],
    bias: &[f32],
    offsets: &[usize],
    heads: Heads,
    q_scale: f32,
) -> Vec<f32> {
    let hidden = heads.hidden();
    let tokens = offsets.last().copied().unwrap_or(0);
    assert_eq!(qkv.len(), tokens * 3 * hidden, "qkv size");
    assert_eq!(bias.len(), 3 * hidden, "qkv bias size");
    let sequences = offsets.len().saturating_sub(1);
    let attend_all = |context: &mut [MaybeUninit<f32>]| {
        let context = SharedOut::new(context);
        (0..sequences * heads.count)
            .into_par_iter()
            .for_each(|task| {
                let (s, head) = (task / heads.count, task % heads.count);
                let head = HeadView {
                    qkv,
                    bias,
                    first: offsets[s],
                    len: offsets[s + 1] - offsets[s],
                    head,
                    heads,
                };
                SCRATCH.with_borrow_mut(|scratch| head.attend(q_scale, scratch, &context));
            });
    };
    // SAFETY: the sequences' tokens run from 0 to `tokens` (`offsets` ascends from 0), and
    // each task writes `dim` columns of every row of its sequence, its head's: together the
    // tasks write every element once.
    unsafe { buffer::filled(tokens * hidden, attend_all) }
}

/// What one head's attention works in, kept per thread from head to head: allocated anew
/// for each head, the keys' and values' panels were zeroed first, a memset as long as their
/// packing.
struct Scratch {
    queries: Vec<f32>,
    keys: PackedMatrix,
    scores: Vec<f32>,
    values: PackedMatrix,
    out: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        queries: Vec::new(),
        keys: PackedMatrix::empty(),
        scores: Vec::new(),
        values: PackedMatrix::empty(),
        out: Vec::new(),
    });
}

/// `buffer` holding exactly `len` floats, reusing its storage; what it held is left for the
/// caller to overwrite.
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    buffer
}

/// Tokens ahead of the one whose query it reads that a head asks the cache for that token's
/// query, key and value. A token's row of the projection is 4.5 KiB (MiniLM) past the last
/// one's, which the hardware prefetcher does not follow across pages, and a batch's
/// projection has left L2 by the time its attention reads it.
const PREFETCH_TOKENS: usize = 8;

/// Asks the cache for the lines of `values`.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = values.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(values);
        for offset in (0..bytes).step_by(64).chain([bytes.saturating_sub(1)]) {
            // SAFETY: a prefetch reads nothing and cannot fault; SSE is in every x86_64 CPU.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset))
            };
        }
    }
}

/// One head of one sequence, read in place from the fused projection.
struct HeadView<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    first: usize,
    len: usize,
    head: usize,
    heads: Heads,
}

impl HeadView<'_> {
    /// Token `t`'s values of part `part` (0 queries, 1 keys, 2 values) for this head, and the
    /// part's bias.
    fn part<'s>(&'s self, part: usize) -> (impl Fn(usize) -> &'s [f32] + 's, &'s [f32]) {
        let hidden = self.heads.hidden();
        let column = part * hidden + self.head * self.heads.dim;
        let dim = self.heads.dim;
        let row = move |t: usize| &self.qkv[(self.first + t) * 3 * hidden + column..][..dim];
        (row, &self.bias[column..column + dim])
    }

    /// Writes `softmax(q kᵀ) v` into its head's columns of the context. Keys and values go
    /// straight from the projection into matmul panels; the softmax's division is left to
    /// the `dim` outputs of each row instead of its `len` probabilities, and done as they are
    /// written to the context.
    #[allow(unsafe_code)]
    fn attend(&self, q_scale: f32, scratch: &mut Scratch, context: &SharedOut) {
        let (len, dim) = (self.len, self.heads.dim);
        let (query, query_bias) = self.part(0);
        let (key, key_bias) = self.part(1);
        let (value, value_bias) = self.part(2);
        let queries = sized(&mut scratch.queries, len * dim);
        for (t, row) in queries.chunks_exact_mut(dim).enumerate() {
            if t + PREFETCH_TOKENS < len {
                for part in [&query, &key, &value] {
                    prefetch(part(t + PREFETCH_TOKENS));
                }
            }
            for ((q, &x), &b) in row.iter_mut().zip(query(t)).zip(query_bias) {
                *q = (x + b) * q_scale;
            }
        }
        scratch
            .keys
            .repack_output_rows(len, dim, key, Some(key_bias));
        let scores = sized(&mut scratch.scores, len * len);
        sgemm::matmul_serial(queries, len, &scratch.keys, scores);
        let sums = exp_rows(scores, len);
        scratch
            .values
            .repack_input_rows(len, dim, value, Some(value_bias));
        let out = sized(&mut scratch.out, len * dim);
        sgemm::matmul_serial(scores, len, &scratch.values, out);
        let hidden = self.heads.hidden();
        let column = self.head * dim;
        for (t, (row, sum)) in out.chunks_exact(dim).zip(sums).enumerate() {
            let start = (self.first + t) * hidden + column;
            // SAFETY: this task alone writes its head's columns of its sequence's rows.
            unsafe { context.write_scaled(start, row, 1.0 / sum) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one sequence as the textbook writes it, in f64.
    fn reference(
        qkv: &[f32],
        bias: &[f32],
        span: (usize, usize),
        heads: Heads,
        scale: f32,
    ) -> Vec<f32> {
        let hidden = heads.hidden();
        let at = |t: usize, c: usize| f64::from(qkv[t * 3 * hidden + c] + bias[c]);
        let mut out = vec![0f32; (span.1 - span.0) * hidden];
        for h in 0..heads.count {
            for i in span.0..span.1 {
                let scores: Vec<f64> = (span.0..span.1)
                    .map(|j| {
                        (0..heads.dim)
                            .map(|d| {
                                let c = h * heads.dim + d;
                                at(i, c) * f64::from(scale) * at(j, hidden + c)
                            })
                            .sum()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for d in 0..heads.dim {
                    let c = h * heads.dim + d;
                    let v: f64 = (span.0..span.1)
                        .zip(&scores)
                        .map(|(j, s)| (s - max).exp() / z * at(j, 2 * hidden + c))
                        .sum();
                    out[(i - span.0) * hidden + c] = v as f32;
                }
            }
        }
        out
    }

    #[test]
    fn each_sequence_attends_only_to_itself() {
        let heads = Heads { count: 3, dim: 5 };
        let hidden = heads.hidden();
        for lengths in [vec![1], vec![7], vec![3, 1, 9], vec![13, 2, 2, 30, 1]] {
            let mut offsets = vec![0];
            for len in &lengths {
                offsets.push(offsets.last().unwrap() + len);
            }
            let tokens = *offsets.last().unwrap();
            let qkv: Vec<f32> = (0..tokens * 3 * hidden)
                .map(|i| ((i * 7919 % 211) as f32 / 211.0 - 0.5) * 3.0)
                .collect();
            let bias: Vec<f32> = (0..3 * hidden)
                .map(|i| (i % 5) as f32 * 0.1 - 0.2)
                .collect();
            let got = attention(&qkv, &bias, &offsets, heads, 0.4);
            for w in offsets.windows(2) {
                let want = reference(&qkv, &bias, (w[0], w[1]), heads, 0.4);
                let got = &got[w[0] * hidden..w[1] * hidden];
                for (g, r) in got.iter().zip(&want) {
                    assert!((g - r).abs() < 1e-5, "lengths {lengths:?}: {g} vs {r}");
                }
            }
        }
    }
}
