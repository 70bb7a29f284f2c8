//! Llama-architecture chat models from GGUF (SmolLM2 and the Llama family): the typed config
//! read from the file's `llama.*` metadata and the weights mapped onto the shared decoder.

use super::decoder::{Activation, Decoder, DecoderConfig, RopeStyle};
use super::files::LoadError;
use super::gguf::Gguf;
use super::gguf_weights::{load_decoder, LayerNames};

/// The `llama.*` metadata wick uses.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub context_length: usize,
    pub embedding_length: usize,
    pub block_count: usize,
    pub feed_forward_length: usize,
    pub head_count: usize,
    pub head_count_kv: usize,
    pub rms_epsilon: f32,
    pub rope_freq_base: f32,
    pub rope_scale: f32,
}

impl LlamaConfig {
    pub fn read(gguf: &Gguf) -> Result<Self, LoadError> {
        let head_count = gguf.usize("llama.attention.head_count")?;
        Ok(Self {
            context_length: gguf.usize("llama.context_length")?,
            embedding_length: gguf.usize("llama.embedding_length")?,
            block_count: gguf.usize("llama.block_count")?,
            feed_forward_length: gguf.usize("llama.feed_forward_length")?,
            head_count,
            head_count_kv: gguf
                .opt_usize("llama.attention.head_count_kv")?
                .unwrap_or(head_count),
            rms_epsilon: gguf
                .opt_f32("llama.attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5),
            rope_freq_base: gguf.opt_f32("llama.rope.freq_base")?.unwrap_or(10_000.0),
            rope_scale: linear_rope_scale(gguf, "llama")?,
        })
    }

    fn decoder_config(&self, vocab: usize) -> DecoderConfig {
        let head_dim = self.embedding_length / self.head_count;
        DecoderConfig {
            hidden: self.embedding_length,
            layers: self.block_count,
            heads: self.head_count,
            kv_heads: self.head_count_kv,
            head_dim,
            ffn: self.feed_forward_length,
            vocab,
            context: self.context_length,
            rms_eps: self.rms_epsilon,
            // llama.cpp's converter permutes Q and K so that llama GGUFs rotate adjacent pairs.
            rope_style: RopeStyle::Interleaved,
            rope_base: self.rope_freq_base,
            rope_scale: self.rope_scale,
            local_rope_base: self.rope_freq_base,
            windows: vec![None; self.block_count],
            embed_scale: 1.0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            scale_queries: false,
            activation: Activation::Silu,
            qk_norm: false,
            sandwich_norms: false,
        }
    }
}

/// The position divisor of `{arch}.rope.scaling.*` when the type is linear; 1.0 otherwise.
pub(super) fn linear_rope_scale(gguf: &Gguf, arch: &str) -> Result<f32, LoadError> {
    let kind = gguf.opt_string(&format!("{arch}.rope.scaling.type"));
    let factor = gguf.opt_f32(&format!("{arch}.rope.scaling.factor"))?;
    match (kind, factor) {
        (Some("linear"), Some(f)) if f > 0.0 => Ok(f),
        (Some("none") | None, _) => Ok(1.0),
        (Some(other), _) if other != "linear" => Err(gguf.error(format!(
            "RoPE scaling {other:?} is not supported (supported: linear)"
        ))),
        _ => Ok(1.0),
    }
}

pub fn load(gguf: &mut Gguf, vocab: usize) -> Result<Decoder, LoadError> {
    let config = LlamaConfig::read(gguf)?.decoder_config(vocab);
    load_decoder(gguf, config, &LayerNames::LLAMA)
}
