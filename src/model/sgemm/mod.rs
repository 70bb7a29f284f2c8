//! The encoder's f32 matrix multiply: `x (rows, in) · W (in, out)` with `W` packed once at load.
//!
//! Why not candle's matmul (the `gemm` crate): it packs the weight matrix again on every call,
//! and its microkernels ran at ~50 GFLOP/s per core on these shapes, where a BLIS-style kernel
//! reaches 75-80. Here the weight is stored as column panels of [`PANEL`] outputs, each panel
//! `in` rows of [`PANEL`] contiguous floats — exactly the order the microkernel streams it — and
//! the activations are read in place, row blocks of [`ROWS`], broadcast one value at a time.
//!
//! Large products are split over the rayon pool by rows, each task writing its own rows of the
//! output in place, in row blocks sized to keep their activations in L2 while every panel
//! passes over them. Small ones (a few rows, bound by reading the weights) are split by panels
//! so that each core reads only its share of the weights.

mod avx2;

use std::cell::RefCell;

use rayon::prelude::*;

/// Outputs per weight panel: two AVX registers of eight floats.
pub const PANEL: usize = 16;
/// Activation rows one microkernel call computes: 6 x 2 accumulators, plus two weight
/// registers and one broadcast, fill 15 of the 16 AVX registers.
pub const ROWS: usize = 6;
/// Bytes of activations a row block may hold, so it stays in L2 across every panel.
const ROW_BLOCK_BYTES: usize = 192 * 1024;
/// Inputs one pass of the microkernel covers before its results go back to memory: a panel's
/// slice of them (16 KiB) and six rows' (6 KiB) stay in L1 together.
const DEPTH_BLOCK: usize = 256;

/// A weight matrix `(in, out)` packed for [`matmul`].
pub struct PackedMatrix {
    inputs: usize,
    outputs: usize,
    /// `ceil(out / PANEL)` panels of `inputs x PANEL`, zero beyond `outputs`.
    panels: Vec<f32>,
}

impl PackedMatrix {
    /// Packs a PyTorch-layout weight: `out_in[o * inputs + i]` is `W[i][o]`.
    pub fn from_out_in(out_in: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(out_in.len(), outputs * inputs, "weight size");
        Self::from_output_rows(
            outputs,
            inputs,
            |o| &out_in[o * inputs..(o + 1) * inputs],
            None,
        )
    }

    /// Packs `W[i][o] = row(o)[i] + bias[i]`: one slice of `inputs` values per output.
    pub fn from_output_rows<'a>(
        outputs: usize,
        inputs: usize,
        row: impl Fn(usize) -> &'a [f32],
        bias: Option<&[f32]>,
    ) -> Self {
        let mut packed = Self::zeroed(inputs, outputs);
        for (p, panel) in packed.panels.chunks_exact_mut(inputs * PANEL).enumerate() {
            for (j, o) in (p * PANEL..outputs.min((p + 1) * PANEL)).enumerate() {
                for (i, &w) in row(o)[..inputs].iter().enumerate() {
                    panel[i * PANEL + j] = w + bias.map_or(0.0, |b| b[i]);
                }
            }
        }
        packed
    }

    /// All panels zero: what no output fills stays zero.
    fn zeroed(inputs: usize, outputs: usize) -> Self {
        Self {
            inputs,
            outputs,
            panels: vec![0f32; outputs.div_ceil(PANEL) * inputs * PANEL],
        }
    }

    /// Packs a row-major `(in, out)` matrix: `in_out[i * outputs + o]` is `W[i][o]`.
    pub fn from_in_out(in_out: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(in_out.len(), outputs * inputs, "weight size");
        Self::from_input_rows(
            inputs,
            outputs,
            |i| &in_out[i * outputs..(i + 1) * outputs],
            None,
        )
    }

    /// Packs `W[i][o] = row(i)[o] + bias[o]`: one slice of `outputs` values per input.
    pub fn from_input_rows<'a>(
        inputs: usize,
        outputs: usize,
        row: impl Fn(usize) -> &'a [f32],
        bias: Option<&[f32]>,
    ) -> Self {
        let mut packed = Self::zeroed(inputs, outputs);
        for (p, panel) in packed.panels.chunks_exact_mut(inputs * PANEL).enumerate() {
            let columns = p * PANEL..outputs.min((p + 1) * PANEL);
            for (i, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                let values = &row(i)[columns.clone()];
                for ((d, &w), o) in dst.iter_mut().zip(values).zip(columns.clone()) {
                    *d = w + bias.map_or(0.0, |b| b[o]);
                }
            }
        }
        packed
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    fn panel_count(&self) -> usize {
        self.outputs.div_ceil(PANEL)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.inputs * PANEL..(p + 1) * self.inputs * PANEL]
    }
}

/// One microkernel call: up to [`ROWS`] rows of activations against a slice of one panel.
pub(crate) struct Tile<'a> {
    /// The rows' first inputs of this slice; row `r` starts at `x[r * x_stride]`.
    x: &'a [f32],
    x_stride: usize,
    rows: usize,
    /// `depth` consecutive inputs of one panel: `depth x PANEL` weights.
    panel: &'a [f32],
    /// Row `r`'s [`PANEL`] results go to `out[r * out_stride..]`.
    out: &'a mut [f32],
    out_stride: usize,
    /// Add to the results already in `out` (a later slice of the inputs) instead of
    /// overwriting them.
    accumulate: bool,
}

type Kernel = fn(Tile);

fn kernel() -> Kernel {
    static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let portable = std::env::var("WICK_SGEMM_KERNEL").is_ok_and(|v| v == "portable");
        match avx2::kernel() {
            Some(kernel) if !portable => kernel,
            _ => portable_kernel,
        }
    })
}

/// The reference microkernel, for CPUs without AVX2 + FMA and for tests.
fn portable_kernel(tile: Tile) {
    let depth = tile.panel.len() / PANEL;
    for r in 0..tile.rows {
        let out = &mut tile.out[r * tile.out_stride..r * tile.out_stride + PANEL];
        let mut acc = [0f32; PANEL];
        if tile.accumulate {
            acc.copy_from_slice(out);
        }
        let row = &tile.x[r * tile.x_stride..r * tile.x_stride + depth];
        for (&a, weights) in row.iter().zip(tile.panel.chunks_exact(PANEL)) {
            for (acc, &w) in acc.iter_mut().zip(weights) {
                // Not `mul_add`: without FMA hardware it is a slow library call.
                *acc += a * w;
            }
        }
        out.copy_from_slice(&acc);
    }
}

thread_local! {
    /// Panel-major results of the call in progress, reused between calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// From this many rows per thread a product is split by rows: every thread then streams all
/// the weights, but reuses each panel over enough rows that reading it costs little. Below,
/// each thread takes a share of the panels, so a small batch reads each weight once.
const ROW_SPLIT_ROWS_PER_THREAD: usize = 4 * ROWS;

/// `out (rows, out) = x (rows, in) · W`, over the rayon pool.
pub fn matmul(x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    matmul_with(kernel(), x, rows, weight, out);
}

/// `out (rows, out) = x (rows, in) · W` on the calling thread alone: for callers that are
/// themselves one of many parallel tasks.
pub fn matmul_serial(x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    check_sizes(x, rows, weight, out);
    multiply_rows(kernel(), x, rows, weight, out);
}

/// Inputs per microkernel pass: `inputs` in equal parts of at most [`DEPTH_BLOCK`].
fn depth_block(inputs: usize) -> usize {
    inputs.div_ceil(inputs.div_ceil(DEPTH_BLOCK).max(1)).max(1)
}

fn check_sizes(x: &[f32], rows: usize, weight: &PackedMatrix, out: &[f32]) {
    assert_eq!(x.len(), rows * weight.inputs, "activation size");
    assert_eq!(out.len(), rows * weight.outputs, "output size");
}

fn matmul_with(kernel: Kernel, x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    check_sizes(x, rows, weight, out);
    if rows == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if rows < ROW_SPLIT_ROWS_PER_THREAD * threads {
        return split_by_panels(kernel, x, rows, weight, out);
    }
    let (inputs, outputs) = (weight.inputs, weight.outputs);
    // Four tasks a thread, of whole microkernel row groups shared out evenly, so the threads'
    // shares differ by at most a group or two and a thread slowed by a neighbour holds up no one.
    let groups = rows.div_ceil(ROWS);
    let tasks = (4 * threads).min(groups);
    let mut parts = Vec::with_capacity(tasks);
    let (mut x_rest, mut out_rest) = (x, out);
    for task in 0..tasks {
        let end = (groups * (task + 1) / tasks * ROWS).min(rows);
        let start = groups * task / tasks * ROWS;
        let (x_part, x_tail) = x_rest.split_at((end - start) * inputs);
        let (out_part, out_tail) =
            std::mem::take(&mut out_rest).split_at_mut((end - start) * outputs);
        parts.push((x_part, out_part, end - start));
        (x_rest, out_rest) = (x_tail, out_tail);
    }
    parts
        .into_par_iter()
        .for_each(|(x, out, rows)| multiply_rows(kernel, x, rows, weight, out));
}

/// Every panel against every row, on this thread, into row-major `out`.
fn multiply_rows(kernel: Kernel, x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    let (inputs, outputs) = (weight.inputs, weight.outputs);
    let depth_block = depth_block(inputs);
    let block_rows = (ROW_BLOCK_BYTES / (depth_block * 4)).max(1).div_ceil(ROWS) * ROWS;
    // Results of the last, partial panel: rows of it may end before 16 outputs.
    let partial = !outputs.is_multiple_of(PANEL);
    let mut edge = vec![0f32; if partial { block_rows * PANEL } else { 0 }];
    for block in (0..rows).step_by(block_rows) {
        let block_end = rows.min(block + block_rows);
        for start in (0..inputs).step_by(depth_block) {
            let depth = depth_block.min(inputs - start);
            for p in 0..weight.panel_count() {
                let panel = &weight.panel(p)[start * PANEL..(start + depth) * PANEL];
                let first = p * PANEL;
                for r in (block..block_end).step_by(ROWS) {
                    let n = ROWS.min(block_end - r);
                    let (out, out_stride) = if first + PANEL <= outputs {
                        (&mut out[r * outputs + first..], outputs)
                    } else {
                        (&mut edge[(r - block) * PANEL..], PANEL)
                    };
                    kernel(Tile {
                        x: &x[r * inputs + start..(r + n - 1) * inputs + start + depth],
                        x_stride: inputs,
                        rows: n,
                        panel,
                        out,
                        out_stride,
                        accumulate: start > 0,
                    });
                }
            }
        }
        if partial {
            let (first, width) = (outputs / PANEL * PANEL, outputs % PANEL);
            for (r, results) in (block..block_end).zip(edge.chunks_exact(PANEL)) {
                out[r * outputs + first..][..width].copy_from_slice(&results[..width]);
            }
        }
    }
}

/// Each task takes a share of the panels against every row, panel-major into a scratch
/// buffer, then the results are copied to row-major `out`: disjoint column ranges of a
/// row-major matrix cannot be handed to threads as slices.
fn split_by_panels(kernel: Kernel, x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    let (inputs, outputs) = (weight.inputs, weight.outputs);
    let panels = weight.panel_count();
    let tasks = rayon::current_num_threads().clamp(1, panels);
    let panels_per_task = panels.div_ceil(tasks);
    let depth_block = depth_block(inputs);
    // Taken out, not borrowed: a rayon worker waiting in this call may run another one.
    let mut scratch = SCRATCH.take();
    {
        // Every element up to `len` is written by a kernel before it is read: grow, never clear.
        let len = panels * rows * PANEL;
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        let scratch = &mut scratch[..len];
        scratch
            .par_chunks_mut(panels_per_task * rows * PANEL)
            .enumerate()
            .for_each(|(task, results)| {
                let first = task * panels_per_task;
                for (p, result) in results.chunks_exact_mut(rows * PANEL).enumerate() {
                    let panel = weight.panel(first + p);
                    for start in (0..inputs).step_by(depth_block) {
                        let depth = depth_block.min(inputs - start);
                        for r in (0..rows).step_by(ROWS) {
                            let n = ROWS.min(rows - r);
                            kernel(Tile {
                                x: &x[r * inputs + start..(r + n - 1) * inputs + start + depth],
                                x_stride: inputs,
                                rows: n,
                                panel: &panel[start * PANEL..(start + depth) * PANEL],
                                out: &mut result[r * PANEL..],
                                out_stride: PANEL,
                                accumulate: start > 0,
                            });
                        }
                    }
                }
            });
        for (r, row) in out.chunks_exact_mut(outputs).enumerate() {
            for (p, cols) in row.chunks_mut(PANEL).enumerate() {
                let at = (p * rows + r) * PANEL;
                cols.copy_from_slice(&scratch[at..at + cols.len()]);
            }
        }
    }
    SCRATCH.set(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], rows: usize, out_in: &[f32], outputs: usize, inputs: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * outputs];
        for r in 0..rows {
            for o in 0..outputs {
                let mut sum = 0f64;
                for i in 0..inputs {
                    sum += f64::from(x[r * inputs + i]) * f64::from(out_in[o * inputs + i]);
                }
                out[r * outputs + o] = sum as f32;
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_a_naive_product_for_every_edge() {
        let kernels: Vec<Kernel> = [Some(portable_kernel as Kernel), avx2::kernel()]
            .into_iter()
            .flatten()
            .collect();
        for (rows, inputs, outputs) in [
            (1, 8, 16),
            (5, 3, 7),
            (6, 384, 384),
            (13, 384, 1152),
            (7, 33, 17),
            (200, 1536, 40),
            (61, 64, 1),
            (97, 40, 33),
        ] {
            let x = values(rows * inputs, 1);
            let w = values(outputs * inputs, 2);
            let want = naive(&x, rows, &w, outputs, inputs);
            let packed = PackedMatrix::from_out_in(&w, outputs, inputs);
            let in_out: Vec<f32> = (0..inputs * outputs)
                .map(|at| w[(at % outputs) * inputs + at / outputs])
                .collect();
            assert_eq!(
                PackedMatrix::from_in_out(&in_out, inputs, outputs).panels,
                packed.panels
            );
            for &kernel in &kernels {
                let parallel: fn(Kernel, &[f32], usize, &PackedMatrix, &mut [f32]) = matmul_with;
                for multiply in [parallel, multiply_rows] {
                    let mut got = vec![f32::NAN; rows * outputs];
                    multiply(kernel, &x, rows, &packed, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{rows}x{inputs}x{outputs}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
