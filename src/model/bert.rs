//! The encoder for CPU inference — BERT, RoBERTa/XLM-RoBERTa and DistilBERT weights (see
//! [`super::family`]) — with the math of their Hugging Face implementations, restructured for
//! speed on small batches.
//!
//! - Q, K and V are one fused matmul (one `(hidden, 3 hidden)` weight instead of three).
//! - Weights are packed once at load into the panels wick's own matmul streams
//!   ([`super::sgemm`]).
//! - Bias + GELU, bias + residual + LayerNorm, head splitting and the padded-key softmax are
//!   fused CPU kernels ([`super::ops`]); candle runs only the matmuls and a few gathers.
//! - Padding is never attended to: each batch row carries its real length.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::family::{Dims, Family, LayerNames};
use super::kernels::HeadShape;
use super::ops::{
    apply1, apply2, apply_inplace, AddLayerNorm, BiasGelu, MaskedSoftmax, PackedMatMul, SplitQkv,
};
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

    /// `ids` and `types` are `(batch, len)`; `lengths[b]` is row b's real length (the rest is
    /// padding). Returns the last hidden states `(batch, len, hidden)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let tokens = batch * len;
        let mut words = self.word.index_select(&ids.flatten_all()?, 0)?;
        if let Some(token_type) = &self.token_type {
            words = (words + token_type.index_select(&types.flatten_all()?, 0)?)?;
        }
        let positions = self
            .position
            .narrow(0, self.position_offset, len)?
            .unsqueeze(0)?
            .broadcast_as((batch, len, self.hidden))?
            .reshape((tokens, self.hidden))?;
        let mut x = apply2(&words, &positions, &self.embedding_norm.op(None, self.eps))?;

        let shape = HeadShape {
            batch,
            len,
            heads: self.heads,
            head_dim: self.head_dim,
        };
        let q_scale = 1.0 / (self.head_dim as f32).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.weight.apply(&x)?;
            let parts = apply1(
                &qkv,
                &SplitQkv {
                    bias: &layer.qkv.bias,
                    shape,
                    q_scale,
                },
            )?;
            let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
            let probs = apply_inplace(q.matmul(&k.t()?)?, &MaskedSoftmax { lengths })?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((tokens, self.hidden))?;
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
        x.reshape((batch, len, self.hidden))
    }
}
