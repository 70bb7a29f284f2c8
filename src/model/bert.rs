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

use super::family::{Dims, Family, LayerNames};
use super::ops::{
    apply1, apply2, apply_inplace, AddLayerNorm, BiasGelu, PackedAttention, PackedMatMul,
};
use super::packed_attention::Heads;
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
    word: Tensor,
    position: Tensor,
    token_type: Option<Tensor>,
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
                    intermediate: Projection::load(
                        layer.pp(names.intermediate),
                        hidden,
                        intermediate,
                        int8,
                    )?,
                    output: Projection::load(layer.pp(names.output), intermediate, hidden, int8)?,
                    output_norm: Norm::load(layer.pp(names.output_norm), hidden)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_type = if dims.type_vocab > 0 {
            Some(embeddings.get((dims.type_vocab, hidden), "token_type_embeddings.weight")?)
        } else {
            None
        };
        Ok(Self {
            word: embeddings.get((dims.vocab, hidden), "word_embeddings.weight")?,
            position: embeddings.get((dims.max_positions, hidden), "position_embeddings.weight")?,
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

    /// Runs a batch of `(token ids, token type ids)` sequences packed end to end. Returns the
    /// last hidden states padded to `(batch, longest, hidden)`, zero beyond each sequence.
    pub fn forward(&self, sequences: &[(&[u32], &[u32])], device: &Device) -> Result<Tensor> {
        let packed = Packed::new(sequences, self.position_offset);
        let tokens = packed.tokens();
        let index = |values: Vec<u32>| Tensor::from_vec(values, tokens, device);
        let mut words = self.word.index_select(&index(packed.ids)?, 0)?;
        if let Some(token_type) = &self.token_type {
            words = (words + token_type.index_select(&index(packed.types)?, 0)?)?;
        }
        let positions = self.position.index_select(&index(packed.positions)?, 0)?;
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
        unpack(&x, &packed.offsets, self.hidden, device)
    }
}

/// A batch's inputs laid end to end: sequence `s` holds tokens `offsets[s]..offsets[s + 1]`.
struct Packed {
    ids: Vec<u32>,
    types: Vec<u32>,
    positions: Vec<u32>,
    offsets: Vec<usize>,
}

impl Packed {
    fn new(sequences: &[(&[u32], &[u32])], position_offset: usize) -> Self {
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

/// Packed hidden states `(tokens, hidden)` -> `(batch, longest, hidden)`, zero-padded.
fn unpack(x: &Tensor, offsets: &[usize], hidden: usize, device: &Device) -> Result<Tensor> {
    let packed = x.flatten_all()?.to_vec1::<f32>()?;
    let batch = offsets.len() - 1;
    let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let mut padded = vec![0f32; batch * longest * hidden];
    for (s, w) in offsets.windows(2).enumerate() {
        let rows = &packed[w[0] * hidden..w[1] * hidden];
        padded[s * longest * hidden..][..rows.len()].copy_from_slice(rows);
    }
    Tensor::from_vec(padded, (batch, longest, hidden), device)
}
