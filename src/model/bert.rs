//! BERT encoder for CPU inference: the same weights and math as candle-transformers' BERT,
//! restructured for speed on small batches.
//!
//! - Q, K and V are one fused matmul (one `(hidden, 3 hidden)` weight instead of three).
//! - Weights are stored pre-transposed as `(in, out)`, so every projection is a plain matmul.
//! - Bias + GELU, bias + residual + LayerNorm, head splitting and the padded-key softmax are
//!   fused CPU kernels ([`super::ops`]); candle runs only the matmuls and a few gathers.
//! - Padding is never attended to: each batch row carries its real length.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;

use super::kernels::HeadShape;
use super::ops::{apply1, apply2, apply_inplace, AddLayerNorm, BiasGelu, MaskedSoftmax, SplitQkv};

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

/// A projection's weight: f32 stored as `(in, out)`, or int8 (GGML Q8_0: blocks of 32
/// weights sharing one scale, activations quantized the same way on the fly).
enum Weight {
    Dense(Tensor),
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
            Ok(Weight::Dense(out_in.t()?.contiguous()?))
        }
    }

    /// `x (rows, in) -> (rows, out)`.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Dense(weight) => x.matmul(weight),
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
    fn load_qkv(vb: VarBuilder, hidden: usize, int8: bool) -> Result<Self> {
        let mut weights = Vec::with_capacity(3);
        let mut bias = Vec::with_capacity(3 * hidden);
        for name in ["query", "key", "value"] {
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
    token_type: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    eps: f32,
}

impl FastBert {
    /// Loads from the BERT module root (the VarBuilder already points at `bert.` if the
    /// checkpoint has that prefix).
    pub fn load(vb: VarBuilder, config: &BertConfig, int8: bool) -> Result<Self> {
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            candle_core::bail!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            );
        }
        let embeddings = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let layer = vb.pp("encoder").pp("layer").pp(i);
                let attention = layer.pp("attention");
                Ok(Layer {
                    qkv: Projection::load_qkv(attention.pp("self"), hidden, int8)?,
                    attention_out: Projection::load(
                        attention.pp("output").pp("dense"),
                        hidden,
                        hidden,
                        int8,
                    )?,
                    attention_norm: Norm::load(attention.pp("output").pp("LayerNorm"), hidden)?,
                    intermediate: Projection::load(
                        layer.pp("intermediate").pp("dense"),
                        hidden,
                        config.intermediate_size,
                        int8,
                    )?,
                    output: Projection::load(
                        layer.pp("output").pp("dense"),
                        config.intermediate_size,
                        hidden,
                        int8,
                    )?,
                    output_norm: Norm::load(layer.pp("output").pp("LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: embeddings.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            position: embeddings.get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?,
            token_type: embeddings.get(
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?,
            embedding_norm: Norm::load(embeddings.pp("LayerNorm"), hidden)?,
            layers,
            heads,
            head_dim: hidden / heads,
            hidden,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// `ids` and `types` are `(batch, len)`; `lengths[b]` is row b's real length (the rest is
    /// padding). Returns the last hidden states `(batch, len, hidden)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let tokens = batch * len;
        let words = self.word.index_select(&ids.flatten_all()?, 0)?;
        let token_types = self.token_type.index_select(&types.flatten_all()?, 0)?;
        let positions = self
            .position
            .narrow(0, 0, len)?
            .unsqueeze(0)?
            .broadcast_as((batch, len, self.hidden))?
            .reshape((tokens, self.hidden))?;
        let mut x = apply2(
            &(words + token_types)?,
            &positions,
            &self.embedding_norm.op(None, self.eps),
        )?;

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
