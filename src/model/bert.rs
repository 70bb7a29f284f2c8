//! The encoder for CPU inference — BERT, RoBERTa/XLM-RoBERTa and DistilBERT weights (see
//! [`super::family`]) — with the math of their Hugging Face implementations, restructured for
//! speed on small batches.
//!
//! - Q, K and V are one fused matmul (one `(hidden, 3 hidden)` weight instead of three).
//! - Weights are packed once at load into the panels wick's own matmul streams
//!   ([`super::sgemm`]).
//! - Bias + GELU and bias + residual + LayerNorm are fused CPU kernels ([`super::ops`]); candle
//!   runs only a few gathers.
//! - No padding: a batch's sequences are packed end to end and attention keeps each to its
//!   own tokens ([`super::packed_attention`]); the result is padded once, at the end.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::family::{Dims, Family, LayerNames};
use super::ops::{
    apply1, apply2, apply_inplace, AddLayerNorm, BiasGelu, PackedAttention, PackedMatMul,
};
use super::packed_attention::Heads;
use super::pooling::Pooling;
use super::sgemm::PackedMatrix;

/// A LayerNorm's parameters as plain vectors (the kernels read them directly).
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize) -> Result<Self> {
        Ok(Self {
            gamma: vb.get(size, "weight")?.to_vec1()?,
            beta: vb.get(size, "bias")?.to_vec1()?,
        })
    }

    fn op<'a>(&'a self, bias: Option<&'a [f32]>, eps: f32) -> AddLayerNorm<'a> {
        AddLayerNorm {
            bias,
            gamma: &self.gamma,
            beta: &self.beta,
            eps,
        }
    }
}

/// A projection's weight: f32 packed for wick's matmul ([`super::sgemm`]), or int8 (GGML
/// Q8_0: blocks of 32 weights sharing one scale, activations quantized the same way on the
/// fly).
enum Weight {
    Dense(PackedMatrix),
    Int8(QMatMul),
}

/// Q8_0 quantizes along the input dimension in blocks of this many weights.
const Q8_BLOCK: usize = 32;

impl Weight {
    /// From a PyTorch-layout `(out, in)` weight.
    fn new(out_in: &Tensor, int8: bool) -> Result<Self> {
        let inputs = out_in.dim(1)?;
        if int8 && inputs.is_multiple_of(Q8_BLOCK) {
            let quantized = QTensor::quantize(&out_in.contiguous()?, GgmlDType::Q8_0)?;
            Ok(Weight::Int8(QMatMul::from_qtensor(quantized)?))
        } else {
            let outputs = out_in.dim(0)?;
            let values = out_in.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            Ok(Weight::Dense(PackedMatrix::from_out_in(
                &values, outputs, inputs,
            )))
        }
    }

    /// The weight, ready for Strassen–Winograd products of many rows where it is dense.
    fn with_winograd(self) -> Self {
        match self {
            Weight::Dense(weight) => Weight::Dense(weight.with_winograd()),
            int8 => int8,
        }
    }

    /// `x (rows, in) -> (rows, out)`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Dense(weight) => apply1(x, &PackedMatMul { weight }),
            Weight::Int8(weight) => weight.forward(x),
        }
    }
}

/// A linear layer's weight and bias.
struct Projection {
    weight: Weight,
    bias: Vec<f32>,
}

impl Projection {
    fn load(vb: VarBuilder, inputs: usize, outputs: usize, int8: bool) -> Result<Self> {
        Ok(Self {
            weight: Weight::new(&vb.get((outputs, inputs), "weight")?, int8)?,
            bias: vb.get(outputs, "bias")?.to_vec1()?,
        })
    }

    /// The projection, its products of many rows run as seven half-size products
    /// ([`Weight::with_winograd`]).
    fn with_winograd(self) -> Self {
        Self {
            weight: self.weight.with_winograd(),
            ..self
        }
    }

    /// Q, K and V stacked into one projection.
    fn load_qkv(vb: VarBuilder, names: &LayerNames, hidden: usize, int8: bool) -> Result<Self> {
        let mut weights = Vec::with_capacity(3);
        let mut bias = Vec::with_capacity(3 * hidden);
        for name in [names.query, names.key, names.value] {
            let vb = vb.pp(name);
            weights.push(vb.get((hidden, hidden), "weight")?);
            bias.extend(vb.get(hidden, "bias")?.to_vec1::<f32>()?);
        }
        Ok(Self {
            weight: Weight::new(&Tensor::cat(&weights, 0)?, int8)?,
            bias,
        })
    }
}

struct Layer {
    qkv: Projection,
    attention_out: Projection,
    attention_norm: Norm,
    intermediate: Projection,
    output: Projection,
    output_norm: Norm,
}

pub struct FastBert {
    word: Table,
    position: Table,
    token_type: Option<Table>,
    position_offset: usize,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    eps: f32,
}

impl FastBert {
    /// Loads from the encoder root (the VarBuilder already points past a `bert.`, `roberta.`
    /// or `distilbert.` prefix). With `int8`, the projections run quantized.
    pub fn load(vb: VarBuilder, family: Family, dims: &Dims, int8: bool) -> Result<Self> {
        let Dims {
            hidden,
            heads,
            intermediate,
            ..
        } = *dims;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            candle_core::bail!("hidden size {hidden} is not a multiple of the {heads} heads");
        }
        let names = family.layer_names();
        let embeddings = vb.pp("embeddings");
        let layers = (0..dims.layers)
            .map(|i| {
                let layer = vb.pp(names.layers).pp(i);
                Ok(Layer {
                    qkv: Projection::load_qkv(layer.clone(), &names, hidden, int8)?,
                    attention_out: Projection::load(
                        layer.pp(names.attention_out),
                        hidden,
                        hidden,
                        int8,
                    )?,
                    attention_norm: Norm::load(layer.pp(names.attention_norm), hidden)?,
                    // The feed-forward projections hold two thirds of a layer's products; the
                    // Winograd sums of all four would take idle memory near twice the model's.
                    intermediate: Projection::load(
                        layer.pp(names.intermediate),
                        hidden,
                        intermediate,
                        int8,
                    )?
                    .with_winograd(),
                    output: Projection::load(layer.pp(names.output), intermediate, hidden, int8)?
                        .with_winograd(),
                    output_norm: Norm::load(layer.pp(names.output_norm), hidden)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_type = if dims.type_vocab > 0 {
            Some(Table(embeddings.get(
                (dims.type_vocab, hidden),
                "token_type_embeddings.weight",
            )?))
        } else {
            None
        };
        Ok(Self {
            word: Table(embeddings.get((dims.vocab, hidden), "word_embeddings.weight")?),
            position: Table(
                embeddings.get((dims.max_positions, hidden), "position_embeddings.weight")?,
            ),
            token_type,
            position_offset: dims.position_offset,
            embedding_norm: Norm::load(embeddings.pp("LayerNorm"), hidden)?,
            layers,
            heads,
            head_dim: hidden / heads,
            hidden,
            eps: dims.eps as f32,
        })
    }

    /// Runs a batch of `(token ids, token type ids)` sequences. Returns the last hidden states
    /// padded to `(batch, longest, hidden)`, zero beyond each sequence.
    ///
    /// Several sequences are cut into one group a thread, of about equal token counts, and
    /// each group goes through every layer on its own thread, its sequences packed end to end:
    /// the pass then forks and joins once, where each of its dozens of parallel loops had held
    /// both threads at its end whenever a neighbour interrupted either. A thread that finishes
    /// first takes over tasks of the other's loops.
    pub fn forward(&self, sequences: &[Sequence], device: &Device) -> Result<Tensor> {
        let encoded = self.in_groups(sequences, |x, offsets| Ok((x, offsets.to_vec())), device)?;
        unpack(&encoded, self.hidden, device)
    }

    /// Each sequence's embedding, pooled from its group's packed states on the thread that
    /// ran the group: no padded copy of the states, and no pooling pass after.
    pub fn pooled(
        &self,
        sequences: &[Sequence],
        pooling: Pooling,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let pool = |x: Tensor, offsets: &[usize]| {
            with_values(&x, |states| {
                Ok(pooling.pool_packed(states, offsets, self.hidden))
            })
        };
        let pooled = self.in_groups(sequences, pool, device)?;
        Ok(pooled.into_iter().flatten().collect())
    }

    /// `finish(states, offsets)` of each group's last hidden states `(tokens, hidden)`, in
    /// batch order.
    fn in_groups<R: Send>(
        &self,
        sequences: &[Sequence],
        finish: impl Fn(Tensor, &[usize]) -> Result<R> + Sync,
        device: &Device,
    ) -> Result<Vec<R>> {
        balanced_groups(sequences, rayon::current_num_threads())
            .into_par_iter()
            .map(|group| {
                let packed = Packed::new(group, self.position_offset);
                finish(self.encode(&packed, device)?, &packed.offsets)
            })
            .collect()
    }

    /// The last hidden states of packed sequences, `(tokens, hidden)`.
    fn encode(&self, packed: &Packed, device: &Device) -> Result<Tensor> {
        let shape = (packed.tokens(), self.hidden);
        let words = Tensor::from_vec(self.words(packed)?, shape, device)?;
        let positions = Tensor::from_vec(self.position.gather(&packed.positions)?, shape, device)?;
        let mut x = apply2(&words, &positions, &self.embedding_norm.op(None, self.eps))?;

        let heads = Heads {
            count: self.heads,
            dim: self.head_dim,
        };
        let q_scale = 1.0 / (self.head_dim as f32).sqrt();
        for layer in &self.layers {
            let context = apply1(
                &layer.qkv.weight.apply(&x)?,
                &PackedAttention {
                    bias: &layer.qkv.bias,
                    offsets: &packed.offsets,
                    heads,
                    q_scale,
                },
            )?;
            let attended = apply2(
                &layer.attention_out.weight.apply(&context)?,
                &x,
                &layer
                    .attention_norm
                    .op(Some(&layer.attention_out.bias), self.eps),
            )?;
            let intermediate = apply_inplace(
                layer.intermediate.weight.apply(&attended)?,
                &BiasGelu {
                    bias: &layer.intermediate.bias,
                },
            )?;
            x = apply2(
                &layer.output.weight.apply(&intermediate)?,
                &attended,
                &layer.output_norm.op(Some(&layer.output.bias), self.eps),
            )?;
        }
        Ok(x)
    }

    /// Each token's word embedding, plus its token type's where the model has them.
    fn words(&self, packed: &Packed) -> Result<Vec<f32>> {
        let mut words = Vec::with_capacity(packed.tokens() * self.hidden);
        self.word.gather_into(&packed.ids, &mut words)?;
        if let Some(token_type) = &self.token_type {
            token_type.add_to(&packed.types, &mut words)?;
        }
        Ok(words)
    }
}

/// An embedding table, read row by row on the thread that runs the pass, in place in the
/// tensor it was loaded as. (Through candle, the lookups and the sum of word and token type
/// embeddings ran on candle's own pool thread, which then spun for a while, and with a group
/// a thread both groups' passes queued for it.)
struct Table(Tensor);

impl Table {
    /// Appends the rows at `indices` to `out`.
    fn gather_into(&self, indices: &[u32], out: &mut Vec<f32>) -> Result<()> {
        self.with_rows(|rows| {
            for &index in indices {
                out.extend_from_slice(rows.get(index)?);
            }
            Ok(())
        })
    }

    /// The rows at `indices`, one after another.
    fn gather(&self, indices: &[u32]) -> Result<Vec<f32>> {
        let mut rows = Vec::with_capacity(indices.len() * self.0.dim(1)?);
        self.gather_into(indices, &mut rows)?;
        Ok(rows)
    }

    /// Adds the row at `indices[i]` to the `i`-th row of `out`.
    fn add_to(&self, indices: &[u32], out: &mut [f32]) -> Result<()> {
        self.with_rows(|rows| {
            for (&index, target) in indices.iter().zip(out.chunks_exact_mut(rows.width)) {
                for (t, v) in target.iter_mut().zip(rows.get(index)?) {
                    *t += v;
                }
            }
            Ok(())
        })
    }

    /// Runs `read` on the table's rows where the tensor holds them.
    fn with_rows<R>(&self, read: impl FnOnce(Rows<'_>) -> Result<R>) -> Result<R> {
        let width = self.0.dim(1)?;
        with_values(&self.0, |values| read(Rows { values, width }))
    }
}

/// Runs `read` on a contiguous f32 CPU tensor's values where the tensor holds them.
fn with_values<R>(tensor: &Tensor, read: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = tensor.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the encoder reads its tensors on the CPU");
    };
    if !layout.is_contiguous() {
        candle_core::bail!("tensor is not contiguous");
    }
    read(&cpu.as_slice::<f32>()?[layout.start_offset()..][..tensor.elem_count()])
}

/// An embedding table's values, `width` floats a row.
struct Rows<'v> {
    values: &'v [f32],
    width: usize,
}

impl<'v> Rows<'v> {
    fn get(&self, index: u32) -> Result<&'v [f32]> {
        let start = index as usize * self.width;
        self.values
            .get(start..start + self.width)
            .ok_or_else(|| candle_core::Error::Msg(format!("no embedding row {index}")))
    }
}

/// One input: its token ids and token type ids.
pub type Sequence<'a> = (&'a [u32], &'a [u32]);

/// Fewer tokens than this a thread and a batch runs as one group: each thread's share of its
/// products would be too small to keep the microkernel busy.
const MIN_GROUP_TOKENS: usize = 64;

/// `sequences` cut, in order, into at most `threads` runs of about equal token counts.
fn balanced_groups<'s, 'a>(
    sequences: &'s [Sequence<'a>],
    threads: usize,
) -> Vec<&'s [Sequence<'a>]> {
    let total: usize = sequences.iter().map(|(ids, _)| ids.len()).sum();
    let count = threads
        .min(sequences.len())
        .min(total / MIN_GROUP_TOKENS)
        .max(1);
    let mut groups = Vec::with_capacity(count);
    let (mut rest, mut done) = (sequences, 0);
    for group in 1..count {
        // The group ends before the first sequence whose middle lies past its share of the
        // tokens, leaving one sequence at least for each group after it.
        let share = total * group / count;
        let most = rest.len() - (count - group);
        let (mut take, mut end) = (1, done + rest[0].0.len());
        while take < most && end + rest[take].0.len() / 2 < share {
            end += rest[take].0.len();
            take += 1;
        }
        let (head, tail) = rest.split_at(take);
        groups.push(head);
        (rest, done) = (tail, end);
    }
    groups.push(rest);
    groups
}

/// A batch's inputs laid end to end: sequence `s` holds tokens `offsets[s]..offsets[s + 1]`.
struct Packed {
    ids: Vec<u32>,
    types: Vec<u32>,
    positions: Vec<u32>,
    offsets: Vec<usize>,
}

impl Packed {
    fn new(sequences: &[Sequence], position_offset: usize) -> Self {
        let mut packed = Packed {
            ids: Vec::new(),
            types: Vec::new(),
            positions: Vec::new(),
            offsets: vec![0],
        };
        for (ids, types) in sequences {
            packed.ids.extend_from_slice(ids);
            packed.types.extend_from_slice(types);
            packed
                .positions
                .extend((0..ids.len()).map(|i| (position_offset + i) as u32));
            packed.offsets.push(packed.ids.len());
        }
        packed
    }

    fn tokens(&self) -> usize {
        self.ids.len()
    }
}

/// Each group's packed hidden states `(tokens, hidden)` with its offsets, in batch order ->
/// `(batch, longest, hidden)`, zero-padded.
fn unpack(groups: &[(Tensor, Vec<usize>)], hidden: usize, device: &Device) -> Result<Tensor> {
    let lengths = || {
        groups
            .iter()
            .flat_map(|(_, offsets)| offsets.windows(2).map(|w| w[1] - w[0]))
    };
    let (batch, longest) = (lengths().count(), lengths().max().unwrap_or(0));
    let mut padded = vec![0f32; batch * longest * hidden];
    let mut s = 0;
    for (x, offsets) in groups {
        let packed = x.flatten_all()?.to_vec1::<f32>()?;
        for w in offsets.windows(2) {
            let rows = &packed[w[0] * hidden..w[1] * hidden];
            padded[s * longest * hidden..][..rows.len()].copy_from_slice(rows);
            s += 1;
        }
    }
    Tensor::from_vec(padded, (batch, longest, hidden), device)
}

#[cfg(test)]
mod tests {
    use super::{balanced_groups, Sequence};

    /// The group sizes `balanced_groups` makes of sequences of these lengths.
    fn sizes(lengths: &[usize], threads: usize) -> Vec<usize> {
        let ids: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![0; n]).collect();
        let sequences: Vec<Sequence> = ids.iter().map(|v| (v.as_slice(), v.as_slice())).collect();
        balanced_groups(&sequences, threads)
            .iter()
            .map(|g| g.len())
            .collect()
    }

    #[test]
    fn groups_share_the_tokens_in_order() {
        assert_eq!(sizes(&[195; 4], 2), vec![2, 2]);
        assert_eq!(sizes(&[195; 7], 2), vec![3, 4]);
        assert_eq!(sizes(&[13; 32], 2), vec![16, 16]);
        assert_eq!(sizes(&[400, 20, 30, 40], 2), vec![1, 3]);
        assert_eq!(sizes(&[10, 10, 10, 400], 2), vec![3, 1]);
        assert_eq!(sizes(&[100; 5], 3), vec![2, 1, 2]);
    }

    #[test]
    fn small_batches_stay_whole() {
        assert_eq!(sizes(&[195], 2), vec![1]);
        assert_eq!(sizes(&[13; 9], 2), vec![9]);
        assert_eq!(sizes(&[90, 90], 8), vec![1, 1]);
        assert_eq!(sizes(&[], 2), vec![0]);
    }
}
