//! One level of Strassen's product in Winograd's form, for products of many rows: each block
//! of rows is cut into quarters with the weight, and seven half-size products of the
//! microkernel do the work of eight.
//!
//! The kernel already runs at the FMA ports' peak on these shapes, so the only way left to a
//! faster product is fewer multiplications. The weight-side sums (T1..T4 below) are formed
//! once, at load, in the packed layout; the activation-side sums and the combination of the
//! results cost a few passes over one row block, which stays in L2.
//!
//! With `A = [A11 A12; A21 A22]` (rows split in halves, inputs in halves) and the weight
//! `B = [B11 B12; B21 B22]` (inputs in halves, outputs in halves):
//!
//! ```text
//! S1 = A21 + A22   S2 = S1 - A11   S3 = A11 - A21   S4 = A12 - S2
//! T1 = B12 - B11   T2 = B22 - T1   T3 = B22 - B12   T4 = T2 - B21
//! M1 = A11 B11  M2 = A12 B21  M3 = S4 B22  M4 = A22 T4  M5 = S1 T1  M6 = S2 T2  M7 = S3 T3
//! U2 = M1 + M6
//! C11 = M1 + M2   C12 = U2 + M5 + M3   C21 = U2 + M7 - M4   C22 = U2 + M7 + M5
//! ```
//!
//! Rounding: each result is a sum of products of sums, not of the inputs themselves, so it
//! carries a few more roundings than the plain product; `matches_the_plain_product` bounds it.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::super::simd::simd_versions;
use super::{buffer, row_groups, Kernel, OutWindow, PackedMatrix, Tile, PANEL_SLICE_BYTES};

/// A weight's Winograd sums T1..T4, each `inputs/2 x outputs/2` in the packed panel layout.
pub(super) struct WeightSums {
    t: [Vec<f32>; 4],
}

/// Row blocks hold at most this many rows: two halves of 64, whose activation-side sums and
/// results stay in L2 while the weight's quarters stream past.
const BLOCK_ROWS: usize = 128;

/// Fewer rows than this and the plain product runs: each half-size product would stream its
/// quarter of the weight for too few rows to pay for the sums.
pub(super) const MIN_ROWS: usize = 32;

impl WeightSums {
    /// The sums of `weight`, where its halves fall on panel boundaries.
    pub(super) fn of(weight: &PackedMatrix) -> Option<Self> {
        let (inputs, outputs, width) = (weight.inputs, weight.outputs, weight.width);
        if !inputs.is_multiple_of(2) || !outputs.is_multiple_of(2 * width) || inputs == 0 {
            return None;
        }
        let (half_in, half_panels) = (inputs / 2, outputs / width / 2);
        let quarter = half_in * width;
        let mut t = std::array::from_fn(|_| Vec::with_capacity(half_panels * quarter));
        for q in 0..half_panels {
            let (left, right) = (weight.panel(q), weight.panel(q + half_panels));
            let (b11, b21) = left.split_at(quarter);
            let (b12, b22) = right.split_at(quarter);
            for k in 0..quarter {
                let t1 = b12[k] - b11[k];
                let t2 = b22[k] - t1;
                t[0].push(t1);
                t[1].push(t2);
                t[2].push(b22[k] - b12[k]);
                t[3].push(t2 - b21[k]);
            }
        }
        Some(Self { t })
    }
}

/// A quarter of a weight (or one of its sums) as the kernel reads it: `panels` panels of
/// `depth` inputs, panel `p` starting `first + p * panel_stride` floats into `data`.
#[derive(Clone, Copy)]
struct Quarter<'a> {
    data: &'a [f32],
    first: usize,
    panel_stride: usize,
    panels: usize,
    depth: usize,
    width: usize,
}

impl<'a> Quarter<'a> {
    /// `B11`, `B21` or `B22` of `weight`.
    fn of(weight: &'a PackedMatrix, bottom: bool, right: bool) -> Self {
        let (half_in, half_panels) = (weight.inputs / 2, weight.panel_count() / 2);
        let panel_stride = weight.inputs * weight.width;
        Quarter {
            data: &weight.panels,
            first: usize::from(right) * half_panels * panel_stride
                + usize::from(bottom) * half_in * weight.width,
            panel_stride,
            panels: half_panels,
            depth: half_in,
            width: weight.width,
        }
    }

    /// Sum `i` (T1 = 0 .. T4 = 3) of `weight`.
    fn sum(weight: &PackedMatrix, sums: &'a WeightSums, i: usize) -> Self {
        let half_in = weight.inputs / 2;
        Quarter {
            data: &sums.t[i],
            first: 0,
            panel_stride: half_in * weight.width,
            panels: weight.panel_count() / 2,
            depth: half_in,
            width: weight.width,
        }
    }

    /// Inputs `start..start + depth` of panel `p`.
    fn slice(&self, p: usize, start: usize, depth: usize) -> &'a [f32] {
        let from = self.first + p * self.panel_stride + start * self.width;
        &self.data[from..from + depth * self.width]
    }
}

/// One row block's activation-side operands (its `top` rows of `inputs/2` each) and U2 (`top`
/// rows of `outputs/2`), kept by each thread from block to block.
#[derive(Default)]
struct BlockScratch {
    s1: Vec<f32>,
    s2: Vec<f32>,
    s3: Vec<f32>,
    s4: Vec<f32>,
    minus_a22: Vec<f32>,
    u2: Vec<f32>,
    /// A row of zeros standing in for the bottom half's missing last row.
    zeros: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<BlockScratch> = RefCell::new(BlockScratch::default());
}

/// `out (rows, out) = x (rows, in) · weight` on this thread, block by block of rows.
pub(super) fn multiply_rows(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    sums: &WeightSums,
    out: &mut [MaybeUninit<f32>],
) {
    let (inputs, outputs) = (weight.inputs, weight.outputs);
    let blocks = rows.div_ceil(BLOCK_ROWS);
    SCRATCH.with_borrow_mut(|scratch| {
        for b in 0..blocks {
            let (start, end) = (rows * b / blocks, rows * (b + 1) / blocks);
            block(
                kernel,
                &x[start * inputs..end * inputs],
                end - start,
                weight,
                sums,
                &mut out[start * outputs..end * outputs],
                scratch,
            );
        }
    });
}

/// One row block: `top` rows over `bottom <= top` rows, a missing bottom row counted as
/// zeros.
fn block(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    weight: &PackedMatrix,
    sums: &WeightSums,
    out: &mut [MaybeUninit<f32>],
    s: &mut BlockScratch,
) {
    let (inputs, outputs) = (weight.inputs, weight.outputs);
    let (half_in, half_out) = (inputs / 2, outputs / 2);
    let top = rows.div_ceil(2);
    let bottom = rows - top;
    activation_sums(x, top, bottom, half_in, s);
    s.u2.resize(top * half_out, 0.0);

    let mul = Multiplier {
        kernel,
        depth_block: depth_block(half_in, weight.width),
    };
    let b11 = Quarter::of(weight, false, false);
    let b21 = Quarter::of(weight, true, false);
    let b22 = Quarter::of(weight, true, true);
    let t = |i| Quarter::sum(weight, sums, i);
    let (c11, c12, c21) = (0, half_out, top * outputs);
    let (a11, a12) = (x, &x[half_in..]);

    // C11 = M1 + M2, with U2 = M1 + M6 copied off between the two.
    mul.product((a11, inputs), top, b11, (&mut out[c11..], outputs), false);
    // SAFETY: the product above wrote the top rows' left half.
    unsafe { copy_from_quadrant(&out[c11..], outputs, &mut s.u2, top, half_out) };
    mul.product((a12, inputs), top, b21, (&mut out[c11..], outputs), true);
    // SAFETY: `u2` holds initialised floats, and only they are stored into it.
    let u2 = unsafe { buffer::as_uninit(&mut s.u2) };
    mul.product((&s.s2, half_in), top, t(1), (u2, half_out), true);
    // C21 = U2 + M7 and C12 = U2 + M5; then C22 = C21 + C12 - U2 = U2 + M7 + M5.
    copy_into_quadrant(&s.u2, &mut out[c21..], outputs, bottom, half_out);
    copy_into_quadrant(&s.u2, &mut out[c12..], outputs, top, half_out);
    mul.product(
        (&s.s3, half_in),
        bottom,
        t(2),
        (&mut out[c21..], outputs),
        true,
    );
    mul.product(
        (&s.s1, half_in),
        top,
        t(0),
        (&mut out[c12..], outputs),
        true,
    );
    // SAFETY: the top rows' right half and the bottom rows' left half were written above.
    unsafe { combine_c22(out, top, outputs, &s.u2, bottom, half_out) };
    // C21 -= M4 and C12 += M3.
    mul.product(
        (&s.minus_a22, half_in),
        bottom,
        t(3),
        (&mut out[c21..], outputs),
        true,
    );
    mul.product((&s.s4, half_in), top, b22, (&mut out[c12..], outputs), true);
}

/// S1..S4 and -A22 of a block of `top` rows over `bottom`; a missing bottom row is zeros.
fn activation_sums(x: &[f32], top: usize, bottom: usize, half_in: usize, s: &mut BlockScratch) {
    let inputs = 2 * half_in;
    for v in [&mut s.s1, &mut s.s2, &mut s.s3, &mut s.s4, &mut s.minus_a22] {
        v.resize(top * half_in, 0.0);
    }
    s.zeros.resize(inputs, 0.0);
    for r in 0..top {
        let (a11, a12) = x[r * inputs..(r + 1) * inputs].split_at(half_in);
        let lower = if r < bottom {
            &x[(top + r) * inputs..(top + r + 1) * inputs]
        } else {
            &s.zeros
        };
        let (a21, a22) = lower.split_at(half_in);
        let row = r * half_in..(r + 1) * half_in;
        sums_row(
            [a11, a12, a21, a22],
            &mut s.s1[row.clone()],
            &mut s.s2[row.clone()],
            &mut s.s3[row.clone()],
            &mut s.s4[row.clone()],
            &mut s.minus_a22[row],
        );
    }
}

simd_versions! {
    fn sums_row(
        a: [&[f32]; 4],
        s1: &mut [f32],
        s2: &mut [f32],
        s3: &mut [f32],
        s4: &mut [f32],
        minus_a22: &mut [f32],
    ) {
        let [a11, a12, a21, a22] = a;
        let n = s1.len();
        let (a11, a12, a21, a22) = (&a11[..n], &a12[..n], &a21[..n], &a22[..n]);
        let (s2, s3, s4, minus_a22) = (&mut s2[..n], &mut s3[..n], &mut s4[..n], &mut minus_a22[..n]);
        for j in 0..n {
            let sum1 = a21[j] + a22[j];
            let sum2 = sum1 - a11[j];
            s1[j] = sum1;
            s2[j] = sum2;
            s3[j] = a11[j] - a21[j];
            s4[j] = a12[j] - sum2;
            minus_a22[j] = -a22[j];
        }
    }
}

/// Inputs per microkernel pass over a quarter: as for a whole weight ([`PackedMatrix`]).
fn depth_block(inputs: usize, width: usize) -> usize {
    let most = PANEL_SLICE_BYTES / (width * 4);
    inputs.div_ceil(inputs.div_ceil(most).max(1)).max(1)
}

struct Multiplier {
    kernel: Kernel,
    depth_block: usize,
}

impl Multiplier {
    /// `out (rows, quarter outputs) (+)= a (rows, quarter inputs) · b`, with `a`'s rows and
    /// `out`'s rows `stride` floats apart.
    fn product(
        &self,
        (a, a_stride): (&[f32], usize),
        rows: usize,
        b: Quarter,
        (out, out_stride): (&mut [MaybeUninit<f32>], usize),
        accumulate: bool,
    ) {
        if rows == 0 {
            return;
        }
        let width = b.width;
        for start in (0..b.depth).step_by(self.depth_block) {
            let depth = self.depth_block.min(b.depth - start);
            for p in 0..b.panels {
                let panel = b.slice(p, start, depth);
                for (r, n) in row_groups(0..rows, self.kernel.rows) {
                    (self.kernel.run)(Tile {
                        x: &a[r * a_stride + start..(r + n - 1) * a_stride + start + depth],
                        x_stride: a_stride,
                        rows: n,
                        panel,
                        out: OutWindow::of(&mut out[r * out_stride + p * width..]),
                        out_stride,
                        accumulate: accumulate || start > 0,
                        prefetch: None,
                    });
                }
            }
        }
    }
}

/// Copies `rows x cols` floats of `out` (rows `stride` apart) into `to`.
///
/// # Safety
/// Those floats of `out` must have been written.
unsafe fn copy_from_quadrant(
    out: &[MaybeUninit<f32>],
    stride: usize,
    to: &mut [f32],
    rows: usize,
    cols: usize,
) {
    for (r, dst) in to.chunks_exact_mut(cols).take(rows).enumerate() {
        // SAFETY: the caller's promise.
        dst.copy_from_slice(unsafe { assume_init(&out[r * stride..r * stride + cols]) });
    }
}

/// Writes the first `rows` rows of `from` (`cols` wide) into `out`, rows `stride` apart.
fn copy_into_quadrant(
    from: &[f32],
    out: &mut [MaybeUninit<f32>],
    stride: usize,
    rows: usize,
    cols: usize,
) {
    for (r, src) in from.chunks_exact(cols).take(rows).enumerate() {
        out[r * stride..r * stride + cols].write_copy_of_slice(src);
    }
}

/// `C22 = C21 + C12 - U2` over the first `rows` rows of a block whose bottom half starts
/// at row `top`.
///
/// # Safety
/// C21's and C12's first `rows` rows must have been written.
unsafe fn combine_c22(
    out: &mut [MaybeUninit<f32>],
    top: usize,
    stride: usize,
    u2: &[f32],
    rows: usize,
    cols: usize,
) {
    let (upper, lower) = out.split_at_mut(top * stride);
    for (r, u) in u2.chunks_exact(cols).take(rows).enumerate() {
        let (c21, c22) = lower[r * stride..(r + 1) * stride].split_at_mut(cols);
        let c12 = &upper[r * stride + cols..r * stride + 2 * cols];
        // SAFETY: the caller's promise; `MaybeUninit<f32>` has the layout of `f32`.
        let (c21, c12) = unsafe { (assume_init(c21), assume_init(c12)) };
        combine_row(c21, c12, u, &mut c22[..cols]);
    }
}

/// # Safety
/// Every float of `slots` must have been written.
unsafe fn assume_init(slots: &[MaybeUninit<f32>]) -> &[f32] {
    // SAFETY: the caller's promise; `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { &*(slots as *const [MaybeUninit<f32>] as *const [f32]) }
}

simd_versions! {
    fn combine_row(c21: &[f32], c12: &[f32], u2: &[f32], c22: &mut [MaybeUninit<f32>]) {
        for (((c22, &a), &b), &u) in c22.iter_mut().zip(c21).zip(c12).zip(u2) {
            c22.write(a + b - u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{as_uninit, avx2, avx512, tests, PORTABLE};
    use super::*;

    /// Every block shape: one row short at the bottom, several blocks, the fewest rows, and
    /// depths that take one and two kernel passes; NaN-filled outputs show any slot missed.
    #[test]
    fn matches_the_plain_product() {
        let kernels: Vec<Kernel> = [Some(PORTABLE), avx2::kernel(), avx512::kernel()]
            .into_iter()
            .flatten()
            .collect();
        for &kernel in &kernels {
            let w = kernel.width;
            for (rows, inputs, outputs) in [
                (MIN_ROWS, 64, 2 * w),
                (33, 384, 4 * w),
                (195, 384, 6 * w),
                (257, 1536, 2 * w),
                (2, 8, 2 * w),
            ] {
                let x = tests::values(rows * inputs, 3);
                let out_in = tests::values(outputs * inputs, 4);
                let want = tests::naive(&x, rows, &out_in, outputs, inputs);
                let row = |o: usize| &out_in[o * inputs..(o + 1) * inputs];
                let mut packed = PackedMatrix::empty_for(w);
                packed.repack_output_rows(outputs, inputs, row, None);
                let packed = packed.with_winograd();
                let sums = packed.sums.as_deref().expect("halves on panel boundaries");
                let mut got = vec![f32::NAN; rows * outputs];
                multiply_rows(kernel, &x, rows, &packed, sums, as_uninit(&mut got));
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                    .fold(0f32, f32::max);
                // The plain product's worst here is 2e-5, at 1536 inputs; Winograd's sums of
                // sums round up to about ten times as much.
                assert!(worst <= 3e-4, "{rows}x{inputs}x{outputs}: {worst}");
            }
        }
    }

    #[test]
    fn halves_off_panel_boundaries_keep_the_plain_product() {
        let out_in = tests::values(40 * 24, 5);
        let packed = PackedMatrix::from_out_in(&out_in, 40, 24).with_winograd();
        assert!(packed.sums.is_none());
    }
}
