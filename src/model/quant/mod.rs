//! Quantised weight matrices and wick's own products over them.
//!
//! Each product quantises the activations to 8-bit blocks as llama.cpp does (Q8_1 for Q4_1,
//! Q8_0 for Q5_0 and Q8_0, Q8_K for the k-quants) and takes integer dot products per block, so
//! wick's logits round as the reference's do. A step's tokens share one pass over the weights:
//! each task owns a band of output features and, while that band's rows sit in cache, takes
//! their products with every token of the step. Types wick has no kernel for go through candle.

/// `$name()`: an interleaved kernel (see `interleaved`), the call given, as a safe function,
/// where `$available()` says the CPU runs the instructions the kernel is compiled for. The
/// operands' sizes are checked here, once for every SIMD kernel.
macro_rules! dispatch_group {
    ($available:ident, $name:ident, $group:ty, $act:ty,
     |$w:ident, $a:ident, $t:ident, $o:ident| $call:expr) => {
        pub(super) fn $name() -> Option<GroupFn<$group, $act>> {
            #[cfg(target_arch = "x86_64")]
            {
                if $available() {
                    return Some(|$w, $a, $t, $o| {
                        assert!(
                            $a.len() >= $t * $w.len()
                                && $o.len() >= $t * $crate::model::quant::interleaved::ROWS,
                            "activations or outputs too short"
                        );
                        // SAFETY: only handed out after `$available()` confirmed the CPU
                        // features the kernel is compiled for; the kernels read `$t` rows of
                        // `$w.len()` activation blocks and write `$t` rows of eight outputs,
                        // which the assertion bounds.
                        unsafe { $call }
                    });
                }
            }
            None
        }
    };
}

mod activation;
mod avx2;
mod avx512;
mod blocks;
mod dot;
mod interleaved;
mod kquants_avx2;
mod kquants_x8;
mod repacked;
mod tiled;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

pub use dot::{kernel_choice, KernelChoice};

use activation::quantize_rows;
use blocks::{BlockQ4K, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8_0, Dequantize};
use dot::WeightBlock;
use interleaved::{BlockQ4_1x8, BlockQ5_0x8, BlockQ8_0x8, Interleaved};
use kquants_x8::{BlockQ4Kx8, BlockQ6Kx8};

/// Output features one parallel task computes: enough work to pay for the task, small enough
/// that the band's weights stay in L1 while every token of the step passes them.
const FEATURES_PER_TASK: usize = 16;
/// Tokens that pass one band of weights before the next tokens do, so their activation blocks
/// stay cached too.
const TOKEN_TILE: usize = 32;

/// A weight matrix `out_features x in_features`, multiplied as `x . w^T`.
pub enum Linear {
    Blocks(QMatrix),
    /// A type wick has no kernel for.
    Candle(QMatMul),
}

pub struct QMatrix {
    out_features: usize,
    in_features: usize,
    blocks: Blocks,
}

/// Which group kernels a product may take.
#[derive(Clone, Copy)]
enum Rounding {
    /// Those that round as llama.cpp does, for outputs that are quantised again.
    Reference,
    /// The summed kernels where a type has them (the logits).
    Summed,
}

enum Blocks {
    Q4_1(Vec<BlockQ4_1>),
    /// Q4_1 repacked eight rows at a time (see `interleaved`).
    Q4_1x8(Vec<BlockQ4_1x8>),
    /// Q8_0 repacked eight rows at a time.
    Q8_0x8(Vec<BlockQ8_0x8>),
    /// Q5_0 repacked eight rows at a time.
    Q5_0x8(Vec<BlockQ5_0x8>),
    Q5_0(Vec<BlockQ5_0>),
    Q8_0(Vec<BlockQ8_0>),
    Q4K(Vec<BlockQ4K>),
    Q6K(Vec<BlockQ6K>),
    /// Q4_K repacked eight rows at a time (see `kquants_x8`).
    Q4Kx8(Vec<BlockQ4Kx8>),
    /// Q6_K repacked eight rows at a time.
    Q6Kx8(Vec<BlockQ6Kx8>),
}

impl Linear {
    /// Takes a `[out_features, in_features]` tensor read from a GGUF file.
    pub fn new(tensor: QTensor) -> candle_core::Result<Self> {
        let (out_features, in_features) = tensor.shape().dims2()?;
        let dtype = tensor.dtype();
        let data = tensor.data()?;
        let blocks = match dtype {
            GgmlDType::Q4_1 if interleaved::repacks(out_features) => Some(Blocks::Q4_1x8(
                interleaved::repack(&copy_blocks(&data), in_features / blocks::QK),
            )),
            GgmlDType::Q8_0 if interleaved::repacks(out_features) => Some(Blocks::Q8_0x8(
                interleaved::repack(&copy_blocks(&data), in_features / blocks::QK),
            )),
            GgmlDType::Q5_0 if interleaved::repacks(out_features) => Some(Blocks::Q5_0x8(
                interleaved::repack(&copy_blocks(&data), in_features / blocks::QK),
            )),
            GgmlDType::Q4K if interleaved::repacks(out_features) => Some(Blocks::Q4Kx8(
                interleaved::repack(&copy_blocks(&data), in_features / blocks::QK_K),
            )),
            GgmlDType::Q6K if interleaved::repacks(out_features) => Some(Blocks::Q6Kx8(
                interleaved::repack(&copy_blocks(&data), in_features / blocks::QK_K),
            )),
            GgmlDType::Q4_1 => Some(Blocks::Q4_1(copy_blocks(&data))),
            GgmlDType::Q5_0 => Some(Blocks::Q5_0(copy_blocks(&data))),
            GgmlDType::Q8_0 => Some(Blocks::Q8_0(copy_blocks(&data))),
            GgmlDType::Q4K => Some(Blocks::Q4K(copy_blocks(&data))),
            GgmlDType::Q6K => Some(Blocks::Q6K(copy_blocks(&data))),
            _ => None,
        };
        drop(data);
        Ok(match blocks {
            Some(blocks) => Self::Blocks(QMatrix {
                out_features,
                in_features,
                blocks,
            }),
            None => Self::Candle(QMatMul::from_qtensor(tensor)?),
        })
    }

    /// `x (tokens x in_features) . w^T`, row-major `tokens x out_features`.
    pub fn forward(&self, x: &[f32], tokens: usize) -> candle_core::Result<Vec<f32>> {
        self.product(x, tokens, Rounding::Reference)
    }

    /// `forward` for the output projection: its products are the logits, which nothing
    /// quantises again, so they may take the faster kernels that round otherwise than
    /// llama.cpp (see `Interleaved::summed_kernel`).
    pub fn forward_logits(&self, x: &[f32], tokens: usize) -> candle_core::Result<Vec<f32>> {
        self.product(x, tokens, Rounding::Summed)
    }

    fn product(
        &self,
        x: &[f32],
        tokens: usize,
        rounding: Rounding,
    ) -> candle_core::Result<Vec<f32>> {
        match self {
            Self::Blocks(m) => Ok(m.product(x, tokens, rounding)),
            Self::Candle(m) => {
                let cols = x.len() / tokens.max(1);
                let input = Tensor::from_slice(x, (tokens, cols), &Device::Cpu)?;
                m.forward(&input)?.flatten_all()?.to_vec1::<f32>()
            }
        }
    }

    pub fn out_features(&self) -> usize {
        match self {
            Self::Blocks(m) => m.out_features,
            Self::Candle(m) => match m {
                QMatMul::QTensor(t) => t.shape().dims()[0],
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims()[0],
            },
        }
    }

    /// Rows `ids` of the matrix, dequantised (an embedding lookup), row-major.
    pub fn rows(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        match self {
            Self::Blocks(m) => Ok(m.rows(ids)),
            Self::Candle(m) => {
                let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
                m.embedding(&ids)?
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()
            }
        }
    }
}

/// Matrices that take the same input (a layer's query, key and value projections; its gate
/// and up projections), multiplied in one pass where their blocks allow: the input is
/// quantised once and the step's parallel loop runs once. Rows are independent, so the fused
/// product's outputs are the separate products' bit for bit.
pub enum Projections {
    Fused { linear: Linear, widths: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Projections {
    pub fn new(parts: Vec<Linear>) -> Self {
        let widths: Vec<usize> = parts.iter().map(Linear::out_features).collect();
        match QMatrix::concat(&parts) {
            Some(matrix) => Self::Fused {
                linear: Linear::Blocks(matrix),
                widths,
            },
            None => Self::Separate(parts),
        }
    }

    /// Each matrix's `tokens x out_features` product with `x`, in the order given to `new`.
    pub fn forward(&self, x: &[f32], tokens: usize) -> candle_core::Result<Vec<Vec<f32>>> {
        match self {
            Self::Separate(parts) => parts.iter().map(|m| m.forward(x, tokens)).collect(),
            Self::Fused { linear, widths } => {
                let all = linear.forward(x, tokens)?;
                let total: usize = widths.iter().sum();
                let mut outputs: Vec<Vec<f32>> = widths
                    .iter()
                    .map(|w| Vec::with_capacity(w * tokens))
                    .collect();
                for row in all.chunks(total) {
                    let mut start = 0;
                    for (output, &width) in outputs.iter_mut().zip(widths) {
                        output.extend_from_slice(&row[start..start + width]);
                        start += width;
                    }
                }
                Ok(outputs)
            }
        }
    }
}

impl QMatrix {
    /// One matrix of the parts' rows stacked, where all are interleaved blocks of one type
    /// with the same input width.
    fn concat(parts: &[Linear]) -> Option<Self> {
        let matrices: Vec<&QMatrix> = parts
            .iter()
            .map(|p| match p {
                Linear::Blocks(m) => Some(m),
                Linear::Candle(_) => None,
            })
            .collect::<Option<_>>()?;
        let first = matrices.first()?;
        if matrices.iter().any(|m| m.in_features != first.in_features) {
            return None;
        }
        let out_features = matrices.iter().map(|m| m.out_features).sum();
        let blocks = match &first.blocks {
            Blocks::Q4_1x8(_) => Blocks::Q4_1x8(stack(&matrices, |b| match b {
                Blocks::Q4_1x8(v) => Some(v),
                _ => None,
            })?),
            Blocks::Q8_0x8(_) => Blocks::Q8_0x8(stack(&matrices, |b| match b {
                Blocks::Q8_0x8(v) => Some(v),
                _ => None,
            })?),
            Blocks::Q5_0x8(_) => Blocks::Q5_0x8(stack(&matrices, |b| match b {
                Blocks::Q5_0x8(v) => Some(v),
                _ => None,
            })?),
            _ => return None,
        };
        Some(Self {
            out_features,
            in_features: first.in_features,
            blocks,
        })
    }

    #[cfg(test)]
    fn forward(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        self.product(x, tokens, Rounding::Reference)
    }

    fn product(&self, x: &[f32], tokens: usize, rounding: Rounding) -> Vec<f32> {
        let (n, k) = (self.out_features, self.in_features);
        match &self.blocks {
            Blocks::Q4_1(b) => multiply(b, n, k, x, tokens),
            Blocks::Q4_1x8(b) => multiply_interleaved(b, n, k, x, tokens, rounding),
            Blocks::Q8_0x8(b) => multiply_interleaved(b, n, k, x, tokens, rounding),
            Blocks::Q5_0x8(b) => multiply_interleaved(b, n, k, x, tokens, rounding),
            Blocks::Q5_0(b) => multiply(b, n, k, x, tokens),
            Blocks::Q8_0(b) => multiply(b, n, k, x, tokens),
            Blocks::Q4K(b) => multiply(b, n, k, x, tokens),
            Blocks::Q6K(b) => multiply(b, n, k, x, tokens),
            Blocks::Q4Kx8(b) => multiply_interleaved(b, n, k, x, tokens, rounding),
            Blocks::Q6Kx8(b) => multiply_interleaved(b, n, k, x, tokens, rounding),
        }
    }

    fn rows(&self, ids: &[u32]) -> Vec<f32> {
        let k = self.in_features;
        match &self.blocks {
            Blocks::Q4_1(b) => dequantize_rows(b, k, ids),
            Blocks::Q4_1x8(b) => dequantize_interleaved_rows(b, k, ids),
            Blocks::Q8_0x8(b) => dequantize_interleaved_rows(b, k, ids),
            Blocks::Q5_0x8(b) => dequantize_interleaved_rows(b, k, ids),
            Blocks::Q5_0(b) => dequantize_rows(b, k, ids),
            Blocks::Q8_0(b) => dequantize_rows(b, k, ids),
            Blocks::Q4K(b) => dequantize_rows(b, k, ids),
            Blocks::Q6K(b) => dequantize_rows(b, k, ids),
            Blocks::Q4Kx8(b) => dequantize_interleaved_rows(b, k, ids),
            Blocks::Q6Kx8(b) => dequantize_interleaved_rows(b, k, ids),
        }
    }
}

/// The matrices' blocks one after another, where every matrix has blocks of the kind `pick`
/// selects.
fn stack<W: Copy>(
    matrices: &[&QMatrix],
    pick: impl Fn(&Blocks) -> Option<&Vec<W>>,
) -> Option<Vec<W>> {
    let mut out = Vec::new();
    for matrix in matrices {
        out.extend_from_slice(pick(&matrix.blocks)?);
    }
    Some(out)
}

/// The file's bytes as blocks, in memory aligned for the block type.
#[allow(unsafe_code)]
fn copy_blocks<W: Copy>(bytes: &[u8]) -> Vec<W> {
    let size = std::mem::size_of::<W>();
    let count = bytes.len() / size;
    let mut blocks = Vec::<W>::with_capacity(count);
    // SAFETY: every block type is `repr(C)` over integers and f16, so any bytes are a valid
    // value; exactly `count * size` bytes are written into the reserved capacity.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            blocks.as_mut_ptr().cast::<u8>(),
            count * size,
        );
        blocks.set_len(count);
    }
    blocks
}

fn dequantize_rows<W: Dequantize>(blocks: &[W], cols: usize, ids: &[u32]) -> Vec<f32> {
    let per_row = cols / W::ELEMS;
    let mut out = vec![0f32; ids.len() * cols];
    for (&id, row) in ids.iter().zip(out.chunks_mut(cols)) {
        let start = id as usize * per_row;
        for (block, dst) in blocks[start..start + per_row]
            .iter()
            .zip(row.chunks_mut(W::ELEMS))
        {
            block.dequantize(dst);
        }
    }
    out
}

fn dequantize_interleaved_rows<G: Interleaved>(blocks: &[G], cols: usize, ids: &[u32]) -> Vec<f32> {
    let per_row = cols / <G::Row as Dequantize>::ELEMS;
    let mut out = vec![0f32; ids.len() * cols];
    for (&id, row) in ids.iter().zip(out.chunks_mut(cols)) {
        let (group, lane) = (
            id as usize / interleaved::ROWS,
            id as usize % interleaved::ROWS,
        );
        let group = &blocks[group * per_row..(group + 1) * per_row];
        for (block, dst) in group
            .iter()
            .zip(row.chunks_mut(<G::Row as Dequantize>::ELEMS))
        {
            block.unpack(lane).dequantize(dst);
        }
    }
    out
}

/// Groups of eight output features one parallel task computes in a decode step (see
/// `FEATURES_PER_TASK`).
const GROUPS_PER_TASK: usize = FEATURES_PER_TASK / interleaved::ROWS;
/// Groups one task computes in a prefill step: each tile of tokens' activations stays in L1
/// while all of them pass it, instead of streaming from L2 once per group.
const PREFILL_GROUPS_PER_TASK: usize = 8;
/// Token rows one kernel call takes in a prefill step (see `token_tiles`).
const GROUP_TOKEN_TILE: usize = 16;

/// The step's token rows in tiles of `GROUP_TOKEN_TILE`, the last one taking a remainder of
/// fewer than 8. Every tile but the last is a multiple of 4 long and no tile of a step of 8
/// rows or more is shorter than 8, so each row meets the kernel llama.cpp picks for the
/// whole step (Q4_K's groups of four, Q6_K's tiled form from 8 rows).
fn token_tiles(tokens: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= tokens {
            return None;
        }
        let mut end = (start + GROUP_TOKEN_TILE).min(tokens);
        if tokens - end < 8 {
            end = tokens;
        }
        let tile = start..end;
        start = end;
        Some(tile)
    })
}

/// `x . w^T` for weights repacked eight rows at a time: each task takes its groups' products
/// with the step's tokens, a tile at a time, while their blocks sit in cache, then writes them
/// into their columns of the token-major output while they sit in cache too.
fn multiply_interleaved<G: Interleaved>(
    weights: &[G],
    out_features: usize,
    in_features: usize,
    x: &[f32],
    tokens: usize,
    rounding: Rounding,
) -> Vec<f32> {
    const ROWS: usize = interleaved::ROWS;
    let row_blocks = in_features / <G::Row as Dequantize>::ELEMS;
    let mut acts = Vec::with_capacity(tokens * row_blocks);
    quantize_rows::<G::Activation>(x, &mut acts);
    let kernel = match rounding {
        Rounding::Reference => G::kernel(),
        Rounding::Summed => G::summed_kernel().unwrap_or_else(G::kernel),
    };
    let groups = out_features / ROWS;
    let per_task = if tokens >= GROUP_TOKEN_TILE {
        PREFILL_GROUPS_PER_TASK
    } else {
        GROUPS_PER_TASK
    };
    let mut out = Vec::with_capacity(tokens * out_features);
    let columns = Columns::new(
        &mut out.spare_capacity_mut()[..tokens * out_features],
        out_features,
    );
    (0..groups.div_ceil(per_task))
        .into_par_iter()
        .for_each_init(Vec::new, |products: &mut Vec<f32>, task| {
            let first = task * per_task;
            for tile in token_tiles(tokens) {
                let acts = &acts[tile.start * row_blocks..tile.end * row_blocks];
                // `[token][8]` of one group and tile.
                products.resize(tile.len() * ROWS, 0.0);
                for group in first..(first + per_task).min(groups) {
                    kernel(
                        &weights[group * row_blocks..(group + 1) * row_blocks],
                        acts,
                        tile.len(),
                        products,
                    );
                    for (token, values) in tile.clone().zip(products.chunks_exact(ROWS)) {
                        let values = values.try_into().expect("eight outputs");
                        columns.write(token, group * ROWS, values);
                    }
                }
            }
        });
    columns.finish(&mut out);
    out
}

/// A token-major output that parallel tasks fill, each its own columns of every row.
struct Columns {
    start: *mut f32,
    len: usize,
    row_len: usize,
}

// SAFETY: tasks write through `start` only at columns they own (see `write`), so sharing the
// pointer between threads never lets two write the same element.
#[allow(unsafe_code)]
unsafe impl Sync for Columns {}

#[allow(unsafe_code)]
impl Columns {
    fn new(memory: &mut [std::mem::MaybeUninit<f32>], row_len: usize) -> Self {
        Self {
            start: memory.as_mut_ptr().cast(),
            len: memory.len(),
            row_len,
        }
    }

    /// Row `row`'s values at columns `column..column + 8`, a group's outputs (a fixed size, so
    /// the copy is two vector moves, not a call). Each task passes only its own groups' columns.
    #[inline(always)]
    fn write(&self, row: usize, column: usize, values: &[f32; interleaved::ROWS]) {
        let at = row * self.row_len + column;
        assert!(column + values.len() <= self.row_len && at + values.len() <= self.len);
        // SAFETY: in bounds (asserted), and no other task writes these columns.
        unsafe {
            self.start
                .add(at)
                .cast::<[f32; interleaved::ROWS]>()
                .write_unaligned(*values)
        };
    }

    /// Marks every value of `out` written, once each task has written all its columns.
    fn finish(self, out: &mut Vec<f32>) {
        assert_eq!(out.as_ptr(), self.start.cast_const());
        // SAFETY: the tasks wrote every column of every row: `len` values from the start of
        // `out`'s buffer.
        unsafe { out.set_len(self.len) };
    }
}

/// `x . w^T` for weights in blocks of `W`.
fn multiply<W: WeightBlock>(
    weights: &[W],
    out_features: usize,
    in_features: usize,
    x: &[f32],
    tokens: usize,
) -> Vec<f32> {
    let row_blocks = in_features / W::ELEMS;
    let act_blocks = in_features / <W::Activation as activation::ActivationBlock>::ELEMS;
    let mut acts = Vec::with_capacity(tokens * act_blocks);
    quantize_rows::<W::Activation>(x, &mut acts);
    let kernels = W::kernels(out_features, tokens);
    let act_row = |token: usize| &acts[token * act_blocks..(token + 1) * act_blocks];
    let weight_row = |feature: usize| &weights[feature * row_blocks..(feature + 1) * row_blocks];
    if tokens == 1 {
        let dot = kernels.for_token(0);
        let mut out = vec![0f32; out_features];
        out.par_chunks_mut(FEATURES_PER_TASK)
            .enumerate()
            .for_each(|(task, band)| {
                for (i, value) in band.iter_mut().enumerate() {
                    *value = dot(weight_row(task * FEATURES_PER_TASK + i), &acts);
                }
            });
        return out;
    }
    // Feature-major while computing, so each task writes one contiguous band.
    let mut by_feature = vec![0f32; out_features * tokens];
    by_feature
        .par_chunks_mut(FEATURES_PER_TASK * tokens)
        .enumerate()
        .for_each(|(task, band)| {
            let first = task * FEATURES_PER_TASK;
            for start in (0..tokens).step_by(TOKEN_TILE) {
                let end = (start + TOKEN_TILE).min(tokens);
                for (i, row) in band.chunks_mut(tokens).enumerate() {
                    let w = weight_row(first + i);
                    let mut token = start;
                    if let Some(four) = kernels.four {
                        while token + 4 <= end {
                            let rows = std::array::from_fn(|k| act_row(token + k));
                            row[token..token + 4].copy_from_slice(&four(w, rows));
                            token += 4;
                        }
                    }
                    for (token, value) in row.iter_mut().enumerate().take(end).skip(token) {
                        *value = kernels.for_token(token)(w, act_row(token));
                    }
                }
            }
        });
    let mut out = vec![0f32; tokens * out_features];
    for (feature, column) in by_feature.chunks(tokens).enumerate() {
        for (token, &value) in column.iter().enumerate() {
            out[token * out_features + feature] = value;
        }
    }
    out
}

#[cfg(test)]
mod tests;
