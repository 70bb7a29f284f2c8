//! The encoder's f32 matrix multiply: `x (rows, in) · W (in, out)` with `W` packed once at load.
//!
//! Why not candle's matmul (the `gemm` crate): it packs the weight matrix again on every call,
//! and its microkernels ran at ~50 GFLOP/s per core on these shapes, where a BLIS-style kernel
//! reaches 75-80. Here the weight is stored as column panels of [`PANEL`] outputs, each panel
//! `in` rows of [`PANEL`] contiguous floats — exactly the order the microkernel streams it — and
//! the activations are read in place, a few rows at a time, broadcast one value at a time.
//!
//! The microkernel is chosen once at run time ([`crate::model::simd::level`]): AVX-512 (14 rows
//! a call), AVX2 + FMA (6 rows), or portable code.
//!
//! Large products are split over the rayon pool by rows, each task writing its own rows of the
//! output in place, in row blocks sized to keep their activations in L2 while every panel
//! passes over them. Small ones (a few rows, bound by reading the weights) are split by panels
//! so that each core reads only its share of the weights; where a panel takes more than one
//! pass of the microkernel, the later passes ask for the next panel, so reading the weights
//! from memory overlaps the arithmetic.
//!
//! Through a weight given Winograd sums ([`PackedMatrix::with_winograd`]), the tasks of a
//! product split by rows run as Strassen–Winograd products instead (`winograd.rs`).

mod avx2;
mod avx512;
mod transpose;
mod winograd;

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::buffer;

/// Outputs per weight panel of the AVX2 and portable kernels: two AVX registers of eight
/// floats. The AVX-512 kernel's panels are twice as wide ([`Kernel::width`]).
pub const PANEL: usize = 16;
/// Bytes of activations a row block may hold, so it stays in L2 across every panel.
const ROW_BLOCK_BYTES: usize = 192 * 1024;
/// Bytes of a panel's slice that one pass of the microkernel covers before its results go
/// back to memory: all 384 inputs of MiniLM's projections at the AVX-512 kernel's width.
/// The slice streams from L2 under the kernel's prefetch; what a smaller, L1-sized slice
/// saved there, reloading the results once a slice from L3 cost more: 16 KiB slices made the
/// forward pass at seq 128 x 8 11% slower.
const PANEL_SLICE_BYTES: usize = 48 * 1024;

/// A weight matrix `(in, out)` packed for [`matmul`], in the panel width of the kernel in use.
pub struct PackedMatrix {
    inputs: usize,
    outputs: usize,
    /// Outputs per panel: the [`Kernel::width`] it was packed for.
    width: usize,
    /// `ceil(out / width)` panels of `inputs x width`, zero beyond `outputs`.
    panels: Vec<f32>,
    /// The weight-side sums of Strassen–Winograd products, where [`Self::with_winograd`]
    /// formed them.
    sums: Option<Box<winograd::WeightSums>>,
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
        let mut packed = Self::empty();
        packed.repack_output_rows(outputs, inputs, row, bias);
        packed
    }

    /// A matrix of no inputs and no outputs, whose storage the `repack_*` methods grow: for
    /// callers that pack many small matrices one after another (attention's keys and values).
    pub fn empty() -> Self {
        Self::empty_for(kernel().width)
    }

    fn empty_for(width: usize) -> Self {
        Self {
            inputs: 0,
            outputs: 0,
            width,
            panels: Vec::new(),
            sums: None,
        }
    }

    /// This matrix, with what products of many rows need to run as seven half-size products
    /// instead of eight (`winograd.rs`): as much memory again as the weight. Shapes whose
    /// halves do not fall on panel boundaries stay as they are.
    pub fn with_winograd(mut self) -> Self {
        self.sums = winograd::WeightSums::of(&self).map(Box::new);
        self
    }

    /// [`Self::from_output_rows`] into this matrix's storage.
    pub fn repack_output_rows<'a>(
        &mut self,
        outputs: usize,
        inputs: usize,
        row: impl Fn(usize) -> &'a [f32],
        bias: Option<&[f32]>,
    ) {
        self.reshape(inputs, outputs);
        let width = self.width;
        for (p, panel) in self.panels.chunks_exact_mut(inputs * width).enumerate() {
            let first = p * width;
            let count = outputs.min(first + width) - first;
            // Whole groups of eight outputs through the transpose, then what it left, one by one.
            let (mut transposed, mut covered) = (0, 0);
            while transposed + 8 <= count {
                let rows = std::array::from_fn(|k| row(first + transposed + k));
                covered = transpose::pack_eight(rows, bias, inputs, panel, transposed, width);
                if covered == 0 {
                    break;
                }
                transposed += 8;
            }
            for j in 0..count {
                let from = if j < transposed { covered } else { 0 };
                for (i, &w) in row(first + j).iter().enumerate().take(inputs).skip(from) {
                    panel[i * width + j] = w + bias.map_or(0.0, |b| b[i]);
                }
            }
        }
    }

    /// Sizes the storage for `inputs x outputs`, keeping what it held (every element the
    /// packing then writes), and zeroes the last panel's columns past `outputs`: they meet
    /// the activations like any other column, and must add nothing.
    fn reshape(&mut self, inputs: usize, outputs: usize) {
        let width = self.width;
        self.inputs = inputs;
        self.outputs = outputs;
        self.sums = None;
        self.panels
            .resize(outputs.div_ceil(width) * inputs * width, 0.0);
        let used = outputs % width;
        if used > 0 {
            let last = (outputs / width) * inputs * width;
            for input in self.panels[last..].chunks_exact_mut(width) {
                input[used..].fill(0.0);
            }
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
        let mut packed = Self::empty();
        packed.repack_input_rows(inputs, outputs, row, bias);
        packed
    }

    /// [`Self::from_input_rows`] into this matrix's storage.
    pub fn repack_input_rows<'a>(
        &mut self,
        inputs: usize,
        outputs: usize,
        row: impl Fn(usize) -> &'a [f32],
        bias: Option<&[f32]>,
    ) {
        self.reshape(inputs, outputs);
        let width = self.width;
        for (p, panel) in self.panels.chunks_exact_mut(inputs * width).enumerate() {
            let columns = p * width..outputs.min((p + 1) * width);
            for (i, dst) in panel.chunks_exact_mut(width).enumerate() {
                let values = &row(i)[columns.clone()];
                for ((d, &w), o) in dst.iter_mut().zip(values).zip(columns.clone()) {
                    *d = w + bias.map_or(0.0, |b| b[o]);
                }
            }
        }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    fn panel_count(&self) -> usize {
        self.outputs.div_ceil(self.width)
    }

    fn panel(&self, p: usize) -> &[f32] {
        let size = self.inputs * self.width;
        &self.panels[p * size..(p + 1) * size]
    }

    /// Inputs per microkernel pass: `inputs` in equal parts, each part's panel slice at most
    /// [`PANEL_SLICE_BYTES`].
    fn depth_block(&self) -> usize {
        let most = PANEL_SLICE_BYTES / (self.width * 4);
        self.inputs
            .div_ceil(self.inputs.div_ceil(most).max(1))
            .max(1)
    }
}

/// One microkernel call: up to [`Kernel::rows`] rows of activations against a slice of one
/// panel.
pub(crate) struct Tile<'a> {
    /// The rows' first inputs of this slice; row `r` starts at `x[r * x_stride]`.
    x: &'a [f32],
    x_stride: usize,
    rows: usize,
    /// `depth` consecutive inputs of one panel: `depth x width` weights.
    panel: &'a [f32],
    /// Row `r`'s `width` results go to `out[r * out_stride..]`; they may be uninitialised
    /// unless `accumulate`.
    out: OutWindow<'a>,
    out_stride: usize,
    /// Add to the results already in `out` (a later slice of the inputs) instead of
    /// overwriting them.
    accumulate: bool,
    /// How many floats past each weight it loads the kernel asks the cache for; `None` for
    /// the kernel's own distance, a little ahead in the same panel.
    prefetch: Option<usize>,
}

impl Tile<'_> {
    /// The tile as a kernel's raw loop takes it, after asserting that it fits a kernel of
    /// `width`-wide panels and at most `most` rows: every read of `x` and `panel` and every
    /// read and write of `out` that [`RawTile`] describes then lies in bounds. `prefetch` is
    /// the kernel's own distance, for tiles that leave it to the kernel.
    ///
    /// Inlined so the raw tile stays in registers: returned through memory, it was written
    /// as 8-byte fields and read back 16 bytes at a time, and the failed store forwarding cost
    /// a 32-deep tile (attention's products) about a tenth of its time.
    #[inline(always)]
    fn into_raw(self, width: usize, most: usize, prefetch: usize) -> RawTile {
        let depth = self.panel.len() / width;
        let rows = self.rows;
        assert!((1..=most).contains(&rows), "1 to {most} rows");
        assert_eq!(self.panel.len(), depth * width);
        assert!(self.x.len() >= (rows - 1) * self.x_stride + depth);
        assert!(self.out_stride >= width && self.out.len >= (rows - 1) * self.out_stride + width);
        RawTile {
            x: self.x.as_ptr(),
            panel: self.panel.as_ptr(),
            out: self.out.ptr.cast::<f32>(),
            rows,
            strides: Strides {
                x: self.x_stride,
                depth,
                out: self.out_stride,
                accumulate: self.accumulate,
                prefetch: self.prefetch.unwrap_or(prefetch),
            },
        }
    }
}

/// The floats a tile may read and write its results in: `len` of them from `ptr`. A window
/// onto a slice borrows it; [`SharedOut::window`] opens one onto an output that several
/// threads write at once, each its own columns.
pub(crate) struct OutWindow<'a> {
    ptr: *mut MaybeUninit<f32>,
    len: usize,
    _borrow: PhantomData<&'a mut [MaybeUninit<f32>]>,
}

impl<'a> OutWindow<'a> {
    fn of(out: &'a mut [MaybeUninit<f32>]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _borrow: PhantomData,
        }
    }
}

/// A row-major output that parallel tasks write in place, each task its own columns (the
/// panels of a product split by panels, the heads of attention): disjoint column ranges of a
/// row-major matrix cannot be handed out as slices, so tasks reach them through raw windows
/// instead.
pub(crate) struct SharedOut<'a>(OutWindow<'a>);

// SAFETY: tasks write through a `SharedOut` only under `window`'s contract: no element is
// written by two tasks.
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(crate) fn new(out: &'a mut [MaybeUninit<f32>]) -> Self {
        Self(OutWindow::of(out))
    }

    /// Writes `values[k] * scale` to element `start + k`.
    ///
    /// # Safety
    /// As for [`Self::window`]: no other thread writes these elements while the output is
    /// shared.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn write_scaled(&self, start: usize, values: &[f32], scale: f32) {
        // SAFETY: the caller's promise, passed on.
        let window = unsafe { self.window(start) };
        assert!(values.len() <= window.len, "values past the output");
        // SAFETY: the window's first `values.len()` elements lie in the output (asserted) and
        // only this thread touches them.
        let slots = unsafe { std::slice::from_raw_parts_mut(window.ptr, values.len()) };
        for (slot, &v) in slots.iter_mut().zip(values) {
            slot.write(v * scale);
        }
    }

    /// The output from element `start` on.
    ///
    /// # Safety
    /// The elements a tile writes through this window must be written by no other thread
    /// while the output is shared.
    #[allow(unsafe_code)]
    unsafe fn window(&self, start: usize) -> OutWindow<'_> {
        let whole = &self.0;
        assert!(start <= whole.len, "window past the output");
        OutWindow {
            // SAFETY: `start` lies within the output, asserted above.
            ptr: unsafe { whole.ptr.add(start) },
            len: whole.len - start,
            _borrow: PhantomData,
        }
    }
}

/// A checked [`Tile`]'s operands as pointers, for the SIMD kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct RawTile {
    x: *const f32,
    panel: *const f32,
    out: *mut f32,
    rows: usize,
    strides: Strides,
}

/// Where a tile's operands lie (see [`Tile`]).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Strides {
    x: usize,
    depth: usize,
    out: usize,
    accumulate: bool,
    /// Floats past each weight row to prefetch (a hint: any address is harmless).
    prefetch: usize,
}

/// A microkernel, the most activation rows it takes in one call, and its panel width.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    run: fn(Tile),
    rows: usize,
    width: usize,
}

/// The microkernel [`crate::model::simd::level`] allows.
fn kernel() -> Kernel {
    use crate::model::simd::{level, Level};
    static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let simd = match level() {
            Level::Avx512 => avx512::kernel().or_else(avx2::kernel),
            Level::Avx2 => avx2::kernel(),
            Level::Portable => None,
        };
        simd.unwrap_or(PORTABLE)
    })
}

/// The reference microkernel, for CPUs without AVX2 + FMA and for tests.
const PORTABLE: Kernel = Kernel {
    run: portable_kernel,
    rows: 6,
    width: PANEL,
};

#[allow(unsafe_code)]
fn portable_kernel(tile: Tile) {
    let RawTile {
        x,
        panel,
        out,
        rows,
        strides,
    } = tile.into_raw(PANEL, PORTABLE.rows, 0);
    // SAFETY: `into_raw` asserted that every read of `x` and `panel` and every read and write
    // of `out` below lies in bounds; an accumulating tile adds to results an earlier slice of
    // the inputs wrote.
    unsafe {
        let panel = std::slice::from_raw_parts(panel, strides.depth * PANEL);
        for r in 0..rows {
            let out = out.add(r * strides.out);
            let mut acc = [0f32; PANEL];
            if strides.accumulate {
                acc.copy_from_slice(std::slice::from_raw_parts(out, PANEL));
            }
            let row = std::slice::from_raw_parts(x.add(r * strides.x), strides.depth);
            for (&a, weights) in row.iter().zip(panel.chunks_exact(PANEL)) {
                for (acc, &w) in acc.iter_mut().zip(weights) {
                    // Not `mul_add`: without FMA hardware it is a slow library call.
                    *acc += a * w;
                }
            }
            std::ptr::copy_nonoverlapping(acc.as_ptr(), out, PANEL);
        }
    }
}

/// From this many rows per thread a product is split by rows: every thread then streams all
/// the weights, but reuses each panel over enough rows that reading it costs little. Below,
/// each thread takes a share of the panels, so the batch reads each weight once. (At 24, one
/// 195-token paragraph was split by rows and took 3% longer, 104 rows of short sentences 7%;
/// at 416 rows splitting by panels is 1% slower.)
const ROW_SPLIT_ROWS_PER_THREAD: usize = 192;

/// `out (rows, out) = x (rows, in) · W`, over the rayon pool.
pub fn matmul(x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    matmul_with(kernel(), x, rows, weight, as_uninit(out));
}

/// `x (rows, in) · W` into a new `(rows, out)` buffer, over the rayon pool, without zeroing
/// it first ([`buffer`]).
#[allow(unsafe_code)]
pub fn matmul_to_vec(x: &[f32], rows: usize, weight: &PackedMatrix) -> Vec<f32> {
    // SAFETY: a product writes every output element (`matches_a_naive_product_for_every_edge`
    // checks it on NaN-filled buffers).
    unsafe {
        buffer::filled(rows * weight.outputs, |out| {
            matmul_with(kernel(), x, rows, weight, out)
        })
    }
}

/// [`matmul`] on the calling thread alone: for callers that are themselves one of many
/// parallel tasks.
pub fn matmul_serial(x: &[f32], rows: usize, weight: &PackedMatrix, out: &mut [f32]) {
    let kernel = kernel();
    let out = as_uninit(out);
    check_sizes(kernel, x, rows, weight, out);
    multiply_rows(kernel, x, rows, weight, out);
}

/// Initialised floats as the slots the kernels take.
#[allow(unsafe_code)]
fn as_uninit(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: this module stores only computed floats into slots (the kernels' stores and
    // `write_copy_of_slice`), never an uninitialised value.
    unsafe { buffer::as_uninit(out) }
}

fn check_sizes(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    out: &[MaybeUninit<f32>],
) {
    assert_eq!(kernel.width, weight.width, "packed for another kernel");
    assert_eq!(x.len(), rows * weight.inputs, "activation size");
    assert_eq!(out.len(), rows * weight.outputs, "output size");
}

fn matmul_with(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    out: &mut [MaybeUninit<f32>],
) {
    check_sizes(kernel, x, rows, weight, out);
    if rows == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // Below, Winograd's products split by rows too were 1-2% faster on the AVX-512 path but
    // up to 9% slower on the AVX2 one (eight sentences, one paragraph): each thread then
    // streams all of the weights and their sums for a few rows.
    if rows < ROW_SPLIT_ROWS_PER_THREAD * threads {
        return split_by_panels(kernel, x, rows, weight, out);
    }
    let (inputs, outputs) = (weight.inputs, weight.outputs);
    // Four tasks a thread, of whole microkernel row groups shared out evenly, so the threads'
    // shares differ by at most a group or two and a thread slowed by a neighbour holds up no one.
    let group = kernel.rows;
    let groups = rows.div_ceil(group);
    let tasks = (4 * threads).min(groups);
    let mut parts = Vec::with_capacity(tasks);
    let (mut x_rest, mut out_rest) = (x, out);
    for task in 0..tasks {
        let end = (groups * (task + 1) / tasks * group).min(rows);
        let start = groups * task / tasks * group;
        let (x_part, x_tail) = x_rest.split_at((end - start) * inputs);
        let (out_part, out_tail) =
            std::mem::take(&mut out_rest).split_at_mut((end - start) * outputs);
        parts.push((x_part, out_part, end - start));
        (x_rest, out_rest) = (x_tail, out_tail);
    }
    parts
        .into_par_iter()
        .for_each(|(x, out, rows)| match &weight.sums {
            Some(sums) if rows >= winograd::MIN_ROWS => {
                winograd::multiply_rows(kernel, x, rows, weight, sums, out)
            }
            _ => multiply_rows(kernel, x, rows, weight, out),
        });
}

/// Every panel against every row, on this thread, into row-major `out`.
fn multiply_rows(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    out: &mut [MaybeUninit<f32>],
) {
    let (inputs, outputs, width) = (weight.inputs, weight.outputs, weight.width);
    let depth_block = weight.depth_block();
    let group = kernel.rows;
    let block_rows = (ROW_BLOCK_BYTES / (depth_block * 4)).max(1).div_ceil(group) * group;
    // Results of the last, partial panel: rows of it may end before `width` outputs.
    let partial = !outputs.is_multiple_of(width);
    let mut edge = vec![
        0f32;
        if partial {
            block_rows.min(rows) * width
        } else {
            0
        }
    ];
    for block in (0..rows).step_by(block_rows) {
        let block_end = rows.min(block + block_rows);
        for start in (0..inputs).step_by(depth_block) {
            let depth = depth_block.min(inputs - start);
            for p in 0..weight.panel_count() {
                let panel = &weight.panel(p)[start * width..(start + depth) * width];
                let first = p * width;
                for (r, n) in row_groups(block..block_end, group) {
                    let (out, out_stride) = if first + width <= outputs {
                        (OutWindow::of(&mut out[r * outputs + first..]), outputs)
                    } else {
                        (
                            OutWindow::of(as_uninit(&mut edge[(r - block) * width..])),
                            width,
                        )
                    };
                    (kernel.run)(Tile {
                        x: &x[r * inputs + start..(r + n - 1) * inputs + start + depth],
                        x_stride: inputs,
                        rows: n,
                        panel,
                        out,
                        out_stride,
                        accumulate: start > 0,
                        prefetch: None,
                    });
                }
            }
        }
        if partial {
            let (first, columns) = (outputs / width * width, outputs % width);
            for (r, results) in (block..block_end).zip(edge.chunks_exact(width)) {
                out[r * outputs + first..][..columns].write_copy_of_slice(&results[..columns]);
            }
        }
    }
}

/// `rows` in the fewest groups of at most `most`, as equal as they come: `(first row, count)`.
/// Thirteen rows go to a six-row kernel as 5 + 4 + 4, not 6 + 6 + 1: a lone row leaves the
/// kernel waiting on one accumulator's FMA latency for the whole depth.
fn row_groups(rows: Range<usize>, most: usize) -> impl Iterator<Item = (usize, usize)> {
    let len = rows.len();
    let groups = len.div_ceil(most);
    (0..groups).map(move |g| {
        let (start, end) = (len * g / groups, len * (g + 1) / groups);
        (rows.start + start, end - start)
    })
}

/// Each task takes a share of the panels against every row and writes their columns of `out`
/// in place. (Through a scratch buffer and a copy afterwards, the copy ran on one core while
/// the other waited: 3-4% of a one-sentence pass.)
#[allow(unsafe_code)]
fn split_by_panels(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    out: &mut [MaybeUninit<f32>],
) {
    let (inputs, outputs, width) = (weight.inputs, weight.outputs, weight.width);
    let panels = weight.panel_count();
    let tasks = rayon::current_num_threads().clamp(1, panels);
    let panels_per_task = panels.div_ceil(tasks);
    let depth_block = weight.depth_block();
    // The first row group streams its panel slice from memory; while later groups reuse it
    // from cache, they ask for the next panel's slice, so reading the weights overlaps the
    // arithmetic instead of alternating with it.
    let next_panel = inputs * width;
    let shared = SharedOut::new(out);
    (0..panels.div_ceil(panels_per_task))
        .into_par_iter()
        .for_each(|task| {
            let first_panel = task * panels_per_task;
            let mut edge = Vec::new();
            for p in first_panel..panels.min(first_panel + panels_per_task) {
                let panel = weight.panel(p);
                let first = p * width;
                let full = first + width <= outputs;
                if !full {
                    edge = vec![0f32; rows * width];
                }
                for start in (0..inputs).step_by(depth_block) {
                    let depth = depth_block.min(inputs - start);
                    for (g, (r, n)) in row_groups(0..rows, kernel.rows).enumerate() {
                        let (out, out_stride) = if full {
                            // SAFETY: this task alone writes the columns of panel `p`.
                            (unsafe { shared.window(r * outputs + first) }, outputs)
                        } else {
                            (OutWindow::of(as_uninit(&mut edge[r * width..])), width)
                        };
                        (kernel.run)(Tile {
                            x: &x[r * inputs + start..(r + n - 1) * inputs + start + depth],
                            x_stride: inputs,
                            rows: n,
                            panel: &panel[start * width..(start + depth) * width],
                            out,
                            out_stride,
                            accumulate: start > 0,
                            prefetch: (g > 0).then_some(next_panel),
                        });
                    }
                }
                if !full {
                    let columns = outputs - first;
                    for (r, results) in edge.chunks_exact(width).enumerate() {
                        // SAFETY: as above; the window holds the row's last `columns` outputs.
                        let row = unsafe { shared.window(r * outputs + first) };
                        // SAFETY: `columns` floats from the window's start lie in the output.
                        unsafe {
                            std::ptr::copy_nonoverlapping(results.as_ptr(), row.ptr.cast(), columns)
                        };
                    }
                }
            }
        });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn naive(
        x: &[f32],
        rows: usize,
        out_in: &[f32],
        outputs: usize,
        inputs: usize,
    ) -> Vec<f32> {
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

    pub(super) fn values(n: usize, seed: u32) -> Vec<f32> {
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
    fn row_groups_cover_every_row_once_in_near_equal_parts() {
        for (rows, most) in [(0..13, 6), (0..13, 12), (5..29, 12), (3..4, 6), (0..0, 6)] {
            let groups: Vec<_> = row_groups(rows.clone(), most).collect();
            assert_eq!(groups.len(), rows.len().div_ceil(most));
            let mut next = rows.start;
            for &(first, count) in &groups {
                assert_eq!(first, next);
                assert!(count <= most && count + 1 >= rows.len() / groups.len());
                next += count;
            }
            assert_eq!(next, rows.end);
        }
        let thirteen: Vec<_> = row_groups(0..13, 6).map(|(_, n)| n).collect();
        assert_eq!(thirteen, [4, 4, 5]);
    }

    #[test]
    fn a_repacked_matrix_equals_a_fresh_pack_whatever_its_storage_held() {
        let mut reused = PackedMatrix::empty();
        // Larger, then smaller with a partial last panel, then larger again.
        for (outputs, inputs) in [(70, 40), (37, 9), (5, 33), (195, 32), (33, 1)] {
            let w = values(outputs * inputs, outputs as u32);
            let row = |o: usize| &w[o * inputs..(o + 1) * inputs];
            let bias = values(inputs, 3);
            reused.repack_output_rows(outputs, inputs, row, Some(&bias));
            let fresh = PackedMatrix::from_output_rows(outputs, inputs, row, Some(&bias));
            assert_eq!(
                reused.panels, fresh.panels,
                "{outputs} x {inputs} by outputs"
            );
            let column = |i: usize| &w[i * outputs..(i + 1) * outputs];
            let bias = values(outputs, 4);
            reused.repack_input_rows(inputs, outputs, column, Some(&bias));
            let fresh = PackedMatrix::from_input_rows(inputs, outputs, column, Some(&bias));
            assert_eq!(
                reused.panels, fresh.panels,
                "{inputs} x {outputs} by inputs"
            );
        }
    }

    #[test]
    fn matches_a_naive_product_for_every_edge() {
        let kernels: Vec<Kernel> = [Some(PORTABLE), avx2::kernel(), avx512::kernel()]
            .into_iter()
            .flatten()
            .collect();
        // The last shape is the smallest this pool splits by rows.
        let row_split = ROW_SPLIT_ROWS_PER_THREAD * rayon::current_num_threads() + 5;
        for (rows, inputs, outputs) in [
            (1, 8, 16),
            (5, 3, 7),
            (6, 384, 384),
            (13, 384, 1152),
            (7, 33, 17),
            (200, 1536, 40),
            (61, 64, 1),
            (97, 40, 33),
            (row_split, 40, 33),
        ] {
            let x = values(rows * inputs, 1);
            let w = values(outputs * inputs, 2);
            let want = naive(&x, rows, &w, outputs, inputs);
            let in_out: Vec<f32> = (0..inputs * outputs)
                .map(|at| w[(at % outputs) * inputs + at / outputs])
                .collect();
            for &kernel in &kernels {
                let row = |o: usize| &w[o * inputs..(o + 1) * inputs];
                let mut packed = PackedMatrix::empty_for(kernel.width);
                packed.repack_output_rows(outputs, inputs, row, None);
                let column = |i: usize| &in_out[i * outputs..(i + 1) * outputs];
                let mut by_inputs = PackedMatrix::empty_for(kernel.width);
                by_inputs.repack_input_rows(inputs, outputs, column, None);
                assert_eq!(by_inputs.panels, packed.panels);
                type Multiply = fn(Kernel, &[f32], usize, &PackedMatrix, &mut [MaybeUninit<f32>]);
                let parallel: Multiply = matmul_with;
                for multiply in [parallel, multiply_rows] {
                    let mut got = vec![f32::NAN; rows * outputs];
                    multiply(kernel, &x, rows, &packed, as_uninit(&mut got));
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
