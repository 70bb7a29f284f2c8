//! Maps a GGUF file's tensors (llama.cpp names, `blk.N.*`) onto the shared decoder, checking
//! every shape against the config so a mismatched file is a load error, not a wrong answer.

use candle_core::quantized::QTensor;

use super::decoder::{Decoder, DecoderConfig, Layer};
use super::files::LoadError;
use super::gguf::Gguf;
use super::quant::{Linear, Projections};

/// Which optional per-layer tensors an architecture has.
pub(super) struct LayerNames {
    pub(super) qk_norm: bool,
    pub(super) sandwich: bool,
}

impl LayerNames {
    pub(super) const LLAMA: Self = Self {
        qk_norm: false,
        sandwich: false,
    };
    pub(super) const GEMMA3: Self = Self {
        qk_norm: true,
        sandwich: true,
    };
}

pub(super) fn load_decoder(
    gguf: &mut Gguf,
    config: DecoderConfig,
    names: &LayerNames,
) -> Result<Decoder, LoadError> {
    if config.heads == 0 || config.kv_heads == 0 || !config.heads.is_multiple_of(config.kv_heads) {
        return Err(gguf.error(format!(
            "{} attention heads cannot share {} key/value heads",
            config.heads, config.kv_heads
        )));
    }
    if !config.head_dim.is_multiple_of(2) {
        return Err(gguf.error(format!("head dimension {} is odd", config.head_dim)));
    }
    let embeddings = gguf.tensor("token_embd.weight", &[config.vocab, config.hidden])?;
    let embeddings = linear(gguf, embeddings, "token_embd.weight")?;
    let layers = (0..config.layers)
        .map(|i| load_layer(gguf, &config, names, i))
        .collect::<Result<Vec<_>, _>>()?;
    let final_norm = gguf.vector("output_norm.weight", config.hidden)?;
    // Without an output matrix the embeddings are tied: the projection reuses them.
    let output = if gguf.has_tensor("output.weight") {
        let tensor = gguf.tensor("output.weight", &[config.vocab, config.hidden])?;
        Some(linear(gguf, tensor, "output.weight")?)
    } else {
        None
    };
    Ok(Decoder::new(config, embeddings, layers, final_norm, output))
}

fn load_layer(
    gguf: &mut Gguf,
    c: &DecoderConfig,
    names: &LayerNames,
    i: usize,
) -> Result<Layer, LoadError> {
    let p = format!("blk.{i}");
    let q_dim = c.heads * c.head_dim;
    let kv_dim = c.kv_dim();
    let matrix = |gguf: &mut Gguf, name: &str, rows: usize, cols: usize| {
        let full = format!("{p}.{name}.weight");
        let tensor = gguf.tensor(&full, &[rows, cols])?;
        linear(gguf, tensor, &full)
    };
    let q = matrix(gguf, "attn_q", q_dim, c.hidden)?;
    let k = matrix(gguf, "attn_k", kv_dim, c.hidden)?;
    let v = matrix(gguf, "attn_v", kv_dim, c.hidden)?;
    let o = matrix(gguf, "attn_output", c.hidden, q_dim)?;
    let gate = matrix(gguf, "ffn_gate", c.ffn, c.hidden)?;
    let up = matrix(gguf, "ffn_up", c.ffn, c.hidden)?;
    let down = matrix(gguf, "ffn_down", c.hidden, c.ffn)?;
    let mut vector = |name: &str, len: usize| gguf.vector(&format!("{p}.{name}.weight"), len);
    let attn_norm = vector("attn_norm", c.hidden)?;
    let ffn_norm = vector("ffn_norm", c.hidden)?;
    let (q_norm, k_norm) = if names.qk_norm {
        (
            Some(vector("attn_q_norm", c.head_dim)?),
            Some(vector("attn_k_norm", c.head_dim)?),
        )
    } else {
        (None, None)
    };
    let (post_attn_norm, post_ffn_norm) = if names.sandwich {
        (
            Some(vector("post_attention_norm", c.hidden)?),
            Some(vector("post_ffw_norm", c.hidden)?),
        )
    } else {
        (None, None)
    };
    Ok(Layer {
        attn_norm,
        qkv: Projections::new(vec![q, k, v]),
        o,
        q_norm,
        k_norm,
        post_attn_norm,
        ffn_norm,
        post_ffn_norm,
        gate_up: Projections::new(vec![gate, up]),
        down,
    })
}

fn linear(gguf: &Gguf, tensor: QTensor, name: &str) -> Result<Linear, LoadError> {
    Linear::new(tensor).map_err(|e| gguf.error(format!("tensor {name}: {e}")))
}
