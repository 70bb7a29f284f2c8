//! Gemma 3 chat models from GGUF: the typed config read from `gemma3.*` metadata, and the
//! architecture's differences from Llama: scaled embeddings, per-head query/key norms, sandwich
//! norms around attention and MLP, GELU, and sliding-window layers with their own RoPE base.

use super::decoder::{Activation, Decoder, DecoderConfig, RopeStyle};
use super::files::LoadError;
use super::gguf::Gguf;
use super::gguf_weights::{load_decoder, LayerNames};
use super::llama::linear_rope_scale;

/// Every `SLIDING_PATTERN`-th layer attends globally; the others use the sliding window
/// (llama.cpp and transformers hard-code this for Gemma 3).
const SLIDING_PATTERN: usize = 6;
/// RoPE base of the sliding-window layers (not stored in the file).
const LOCAL_ROPE_BASE: f32 = 10_000.0;

#[derive(Debug, Clone)]
pub struct Gemma3Config {
    pub context_length: usize,
    pub embedding_length: usize,
    pub block_count: usize,
    pub feed_forward_length: usize,
    pub head_count: usize,
    pub head_count_kv: usize,
    pub key_length: usize,
    pub rms_epsilon: f32,
    pub rope_freq_base: f32,
    pub rope_scale: f32,
    pub sliding_window: usize,
}

impl Gemma3Config {
    pub fn read(gguf: &Gguf) -> Result<Self, LoadError> {
        let embedding_length = gguf.usize("gemma3.embedding_length")?;
        let head_count = gguf.usize("gemma3.attention.head_count")?;
        Ok(Self {
            context_length: gguf.usize("gemma3.context_length")?,
            embedding_length,
            block_count: gguf.usize("gemma3.block_count")?,
            feed_forward_length: gguf.usize("gemma3.feed_forward_length")?,
            head_count,
            head_count_kv: gguf
                .opt_usize("gemma3.attention.head_count_kv")?
                .unwrap_or(head_count),
            key_length: gguf
                .opt_usize("gemma3.attention.key_length")?
                .unwrap_or(embedding_length / head_count),
            rms_epsilon: gguf
                .opt_f32("gemma3.attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-6),
            rope_freq_base: gguf
                .opt_f32("gemma3.rope.freq_base")?
                .unwrap_or(1_000_000.0),
            rope_scale: linear_rope_scale(gguf, "gemma3")?,
            sliding_window: gguf
                .opt_usize("gemma3.attention.sliding_window")?
                .unwrap_or(512),
        })
    }

    fn decoder_config(&self, vocab: usize) -> DecoderConfig {
        let windows = (0..self.block_count)
            .map(|i| (i % SLIDING_PATTERN < SLIDING_PATTERN - 1).then_some(self.sliding_window))
            .collect();
        DecoderConfig {
            hidden: self.embedding_length,
            layers: self.block_count,
            heads: self.head_count,
            kv_heads: self.head_count_kv,
            head_dim: self.key_length,
            ffn: self.feed_forward_length,
            vocab,
            context: self.context_length,
            rms_eps: self.rms_epsilon,
            rope_style: RopeStyle::Halves,
            rope_base: self.rope_freq_base,
            rope_scale: self.rope_scale,
            local_rope_base: LOCAL_ROPE_BASE,
            windows,
            embed_scale: (self.embedding_length as f32).sqrt(),
            attn_scale: 1.0 / (self.key_length as f32).sqrt(),
            scale_queries: true,
            activation: Activation::GeluTanh,
            qk_norm: true,
            sandwich_norms: true,
        }
    }
}

pub fn load(gguf: &mut Gguf, vocab: usize) -> Result<Decoder, LoadError> {
    let config = Gemma3Config::read(gguf)?.decoder_config(vocab);
    load_decoder(gguf, config, &LayerNames::GEMMA3)
}
