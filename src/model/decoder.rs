//! The decoder-only transformer both chat families share, built for continuous batching.
//!
//! One forward pass takes a ragged batch: a chunk of tokens from each of several sequences,
//! each at its own position with its own KV cache (a decode step is a chunk of one token, a
//! prefill chunk is many). The projections and the MLP run once over all the batch's tokens,
//! so each weight matrix is read once per step whatever the number of sequences; only the
//! attention, which reads a sequence's own cache, runs per sequence.

use half::f16;
use half::slice::HalfFloatSliceExt;
use multiversion::multiversion;
use rayon::prelude::*;

use super::attention::{attend_step, AttentionShape, SequenceCache};
use super::quant::{Linear, Projections};
use super::rope::{Angles, Rope};
use super::{numerics, numerics_avx2};

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// Which elements RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama.cpp's "normal" RoPE, GGUF llama weights).
    Interleaved,
    /// `(x[i], x[i + d/2])` (GPT-NeoX style).
    Halves,
}

/// Everything the forward pass needs to know about an architecture.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    /// RoPE base of the global-attention layers, and the position divisor (linear scaling).
    pub rope_base: f32,
    pub rope_scale: f32,
    /// RoPE base of the sliding-window layers.
    pub local_rope_base: f32,
    /// Per layer: `Some(window)` when the layer attends only to the last `window` positions.
    pub windows: Vec<Option<usize>>,
    /// Multiplies the token embeddings (Gemma: sqrt(hidden)).
    pub embed_scale: f32,
    pub attn_scale: f32,
    /// Where `attn_scale` applies: to the queries in f32, before they are rounded to f16
    /// (Gemma 3, as the reference does it), or to the scores (Llama). The two round apart
    /// where a scaled query falls among f16's subnormals.
    pub scale_queries: bool,
    pub activation: Activation,
    /// RMS-normalise each query and key head before RoPE (Gemma 3).
    pub qk_norm: bool,
    /// Normalise the attention and MLP outputs before the residual add (Gemma's sandwich).
    pub sandwich_norms: bool,
}

impl DecoderConfig {
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Bytes of KV cache one token takes over all layers (f16 keys and values).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.layers * 2 * self.kv_dim() * std::mem::size_of::<f16>()
    }
}

/// One block's weights.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    /// The query, key and value projections.
    pub qkv: Projections,
    pub o: Linear,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub post_ffn_norm: Option<Vec<f32>>,
    /// The gate and up projections.
    pub gate_up: Projections,
    pub down: Linear,
}

pub struct Decoder {
    pub config: DecoderConfig,
    embeddings: Linear,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    /// `None` when the output projection is the embedding matrix (tied embeddings).
    output: Option<Linear>,
    global_rope: Rope,
    local_rope: Rope,
}

/// One sequence's keys and values for every layer, grown as it gets longer. Stored in f16, as
/// llama.cpp stores them: half the memory, and the reference's rounding.
pub struct KvCache {
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    len: usize,
    kv_dim: usize,
}

/// Positions the cache grows by at a time, so a long generation does not reallocate per token
/// and a short one wastes little.
const KV_GROWTH: usize = 64;

impl KvCache {
    pub fn new(config: &DecoderConfig) -> Self {
        Self {
            keys: vec![Vec::new(); config.layers],
            values: vec![Vec::new(); config.layers],
            len: 0,
            kv_dim: config.kv_dim(),
        }
    }

    /// Positions computed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything and returns the memory.
    pub fn clear(&mut self) {
        for layer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            *layer = Vec::new();
        }
        self.len = 0;
    }

    /// Keeps the first `len` positions (a shared prefix) and forgets the rest.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for layer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            layer.truncate(len * self.kv_dim);
        }
        self.len = len;
    }

    /// A copy of the first `len` positions (a prefix other sequences share).
    pub fn prefix(&self, len: usize) -> Self {
        let len = len.min(self.len);
        let copy = |layers: &[Vec<f16>]| -> Vec<Vec<f16>> {
            layers
                .iter()
                .map(|layer| layer[..len * self.kv_dim].to_vec())
                .collect()
        };
        Self {
            keys: copy(&self.keys),
            values: copy(&self.values),
            len,
            kv_dim: self.kv_dim,
        }
    }

    /// A cache of `len` zero positions.
    #[cfg(test)]
    pub(crate) fn zeros(layers: usize, kv_dim: usize, len: usize) -> Self {
        Self {
            keys: vec![vec![f16::ZERO; len * kv_dim]; layers],
            values: vec![vec![f16::ZERO; len * kv_dim]; layers],
            len,
            kv_dim,
        }
    }

    fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        let growth = KV_GROWTH * self.kv_dim;
        for (buffer, rows) in [
            (&mut self.keys[layer], keys),
            (&mut self.values[layer], values),
        ] {
            let start = buffer.len();
            let needed = start + rows.len();
            if buffer.capacity() < needed {
                buffer.reserve_exact(needed.div_ceil(growth) * growth - start);
            }
            // The slice conversion runs on F16C where the CPU has it (one value at a time it
            // took 1.65 us per sequence and layer, this 0.7); both round to nearest even.
            buffer.resize(needed, f16::ZERO);
            buffer[start..].convert_from_f32_slice(rows);
        }
    }
}

/// Which logits a chunk wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: a prefill chunk that is not the prompt's last.
    None,
    /// The last token's: the next token is sampled from it.
    Last,
    /// Every token's (teacher forcing in tests).
    All,
}

/// A sequence's share of one forward pass: new tokens, appended to its cache.
pub struct Chunk<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub logits: Logits,
}

impl Decoder {
    pub fn new(
        config: DecoderConfig,
        embeddings: Linear,
        layers: Vec<Layer>,
        final_norm: Vec<f32>,
        output: Option<Linear>,
    ) -> Self {
        let global_rope = Rope::new(
            config.head_dim,
            config.rope_base,
            config.rope_scale,
            config.rope_style,
        );
        let local_rope = Rope::new(
            config.head_dim,
            config.local_rope_base,
            1.0,
            config.rope_style,
        );
        Self {
            config,
            embeddings,
            layers,
            final_norm,
            output,
            global_rope,
            local_rope,
        }
    }

    /// Runs the chunks through the model, appends their keys and values to their caches, and
    /// returns for each chunk the logits it asked for (`rows x vocab`, row-major).
    pub fn forward(&self, chunks: &mut [Chunk<'_>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = self.hidden(chunks)?;
        self.logits(&hidden)
    }

    /// The layers' part of `forward`: appends the chunks' keys and values to their caches and
    /// returns the last hidden state of the rows whose logits the chunks want.
    pub fn hidden(&self, chunks: &mut [Chunk<'_>]) -> candle_core::Result<Hidden> {
        let c = &self.config;
        let ids: Vec<u32> = chunks
            .iter()
            .flat_map(|ch| ch.tokens.iter().copied())
            .collect();
        let wanted = WantedRows::of(chunks);
        if ids.is_empty() {
            return Ok(Hidden {
                rows: Vec::new(),
                counts: wanted.counts,
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {}", c.vocab);
        }
        let positions: Vec<usize> = chunks
            .iter()
            .flat_map(|ch| (0..ch.tokens.len()).map(|i| ch.cache.len + i))
            .collect();
        let mut x = self.embeddings.rows(&ids)?;
        if c.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= c.embed_scale);
        }
        let global = self.global_rope.angles(&positions);
        let local = c
            .windows
            .iter()
            .any(Option::is_some)
            .then(|| self.local_rope.angles(&positions));
        let last = self.layers.len().saturating_sub(1);
        for (index, layer) in self.layers.iter().enumerate() {
            let angles = match (c.windows[index], &local) {
                (Some(_), Some(local)) => local,
                _ => &global,
            };
            let keep = (index == last).then_some(&wanted.rows[..]);
            x = self.layer_forward(index, layer, x, &positions, angles, chunks, keep)?;
        }
        if self.layers.is_empty() {
            x = select_rows(&x, &wanted.rows, c.hidden);
        }
        for chunk in chunks.iter_mut() {
            chunk.cache.len += chunk.tokens.len();
        }
        Ok(Hidden {
            rows: x,
            counts: wanted.counts,
        })
    }

    /// One layer over the step's tokens; returns the new residual stream. Every token's keys
    /// and values reach its cache; where `keep` names rows (the last layer), only those rows
    /// go on past the attention, in that order: what follows it in the layer is row by row,
    /// and nothing reads the other rows' outputs (llama.cpp skips them too). Each kept row's
    /// values are those the whole step would give it, bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        index: usize,
        layer: &Layer,
        mut x: Vec<f32>,
        positions: &[usize],
        angles: &Angles,
        chunks: &mut [Chunk<'_>],
        keep: Option<&[usize]>,
    ) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let mut tokens = positions.len();
        let h = rms_norm_rows(&x, &layer.attn_norm, c.rms_eps);
        let [mut q, mut k, v]: [Vec<f32>; 3] = layer
            .qkv
            .forward(&h, tokens)?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("three projections expected".into()))?;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            rms_norm_in_place(&mut q, qn, c.rms_eps);
            rms_norm_in_place(&mut k, kn, c.rms_eps);
        }
        let window = c.windows[index];
        let rope = if window.is_some() {
            &self.local_rope
        } else {
            &self.global_rope
        };
        rope.apply(&mut q, angles, c.heads);
        rope.apply(&mut k, angles, c.kv_heads);
        if c.scale_queries {
            q.iter_mut().for_each(|v| *v *= c.attn_scale);
        }
        let score_scale = if c.scale_queries { 1.0 } else { c.attn_scale };

        let kv_dim = c.kv_dim();
        let mut offset = 0;
        for chunk in chunks.iter_mut() {
            let n = chunk.tokens.len();
            let rows = offset * kv_dim..(offset + n) * kv_dim;
            chunk.cache.append(index, &k[rows.clone()], &v[rows]);
            offset += n;
        }
        if keep.is_some_and(<[usize]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut attn = vec![0f32; tokens * c.heads * c.head_dim];
        let mut offset = 0;
        let sequences: Vec<SequenceCache<'_>> = chunks
            .iter()
            .map(|chunk| {
                let n = chunk.tokens.len();
                offset += n;
                SequenceCache {
                    tokens: offset - n..offset,
                    keys: &chunk.cache.keys[index],
                    values: &chunk.cache.values[index],
                }
            })
            .collect();
        // The sum order follows each chunk, not the whole step (`tiled` is set per sequence),
        // so a sequence's tokens do not depend on which other sequences share its steps.
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            scale: score_scale,
            window,
            tiled: false,
        };
        attend_step(&shape, &q, positions, &sequences, &mut attn);
        if let Some(rows) = keep.filter(|rows| rows.len() < tokens) {
            let width = c.heads * c.head_dim;
            (x, attn, tokens) = (
                select_rows(&x, rows, c.hidden),
                select_rows(&attn, rows, width),
                rows.len(),
            );
        }
        let mut projected = layer.o.forward(&attn, tokens)?;
        if let Some(norm) = &layer.post_attn_norm {
            rms_norm_in_place(&mut projected, norm, c.rms_eps);
        }
        add_in_place(&mut x, &projected);

        let h = rms_norm_rows(&x, &layer.ffn_norm, c.rms_eps);
        let [gate, mut up]: [Vec<f32>; 2] = layer
            .gate_up
            .forward(&h, tokens)?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("two projections expected".into()))?;
        gated_activation(&gate, &mut up, c.activation);
        let mut down = layer.down.forward(&up, tokens)?;
        if let Some(norm) = &layer.post_ffn_norm {
            rms_norm_in_place(&mut down, norm, c.rms_eps);
        }
        add_in_place(&mut x, &down);
        Ok(x)
    }

    /// Final norm and the output projection of the hidden rows, returned per chunk: with a
    /// large vocabulary the projection costs more than a layer.
    pub fn logits(&self, hidden: &Hidden) -> candle_core::Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let rows: usize = hidden.counts.iter().sum();
        if rows == 0 {
            return Ok(vec![Vec::new(); hidden.counts.len()]);
        }
        let normed = rms_norm_rows(&hidden.rows, &self.final_norm, c.rms_eps);
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let logits = output.forward_logits(&normed, rows)?;
        let mut out = Vec::with_capacity(hidden.counts.len());
        let mut start = 0;
        for &count in &hidden.counts {
            out.push(logits[start * c.vocab..(start + count) * c.vocab].to_vec());
            start += count;
        }
        Ok(out)
    }
}

/// The last hidden state of the rows whose logits a step's chunks want, before the final
/// norm: `rows` row-major, chunk by chunk, `counts[i]` of them chunk `i`'s.
pub struct Hidden {
    rows: Vec<f32>,
    counts: Vec<usize>,
}

impl Hidden {
    /// The parts' rows one after another, as one step over all their chunks would hold them.
    pub fn concat(parts: Vec<Hidden>) -> Self {
        let mut all = Self {
            rows: Vec::new(),
            counts: Vec::new(),
        };
        for part in parts {
            all.rows.extend_from_slice(&part.rows);
            all.counts.extend(part.counts);
        }
        all
    }
}

/// The step's rows whose logits some chunk asked for, in order, and how many each chunk
/// asked for.
struct WantedRows {
    rows: Vec<usize>,
    counts: Vec<usize>,
}

impl WantedRows {
    fn of(chunks: &[Chunk<'_>]) -> Self {
        let (mut rows, mut counts) = (Vec::new(), Vec::with_capacity(chunks.len()));
        let mut offset = 0;
        for chunk in chunks {
            let n = chunk.tokens.len();
            let wanted = match chunk.logits {
                Logits::None => 0..0,
                Logits::Last => offset + n - 1..offset + n,
                Logits::All => offset..offset + n,
            };
            counts.push(wanted.len());
            rows.extend(wanted);
            offset += n;
        }
        Self { rows, counts }
    }
}

/// Rows `rows` of the row-major `x` (rows of `width`), in that order.
fn select_rows(x: &[f32], rows: &[usize], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &row in rows {
        out.extend_from_slice(&x[row * width..(row + 1) * width]);
    }
    out
}

/// RMS norm of each row of `x` (row length = `weight.len()`), into a new buffer.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = x.to_vec();
    rms_norm_in_place(&mut out, weight, eps);
    out
}

/// RMS norm of each `weight.len()`-long slice of `x`, in place (rows, or heads within rows).
fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len().max(1);
    x.par_chunks_mut(n * NORM_ROWS)
        .with_min_len(4)
        .for_each(|rows| {
            let mut sums = [0f64; NORM_ROWS];
            if rows.len() == n * NORM_ROWS {
                // Each row's sum in ggml's order (element by element, in f64), the rows'
                // chains side by side: one alone waits on each addition.
                for i in 0..n {
                    for (r, sum) in sums.iter_mut().enumerate() {
                        let v = rows[r * n + i];
                        *sum += f64::from(v * v);
                    }
                }
            } else {
                for (row, sum) in rows.chunks(n).zip(&mut sums) {
                    *sum = row.iter().map(|&v| f64::from(v * v)).sum::<f64>();
                }
            }
            for (row, sum) in rows.chunks_mut(n).zip(sums) {
                let mean_square = (sum / n as f64) as f32;
                let inv = 1.0 / (mean_square + eps).sqrt();
                // `(x * inv) * w`, in ggml's order: a last-bit difference here flips the
                // rounding of the next 8-bit activation quantisation now and then.
                for (v, w) in row.iter_mut().zip(weight) {
                    *v = *v * inv * w;
                }
            }
        });
}

/// Rows one RMS norm task sums together.
const NORM_ROWS: usize = 4;

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `up = act(gate) * up`, element-wise.
fn gated_activation(gate: &[f32], up: &mut [f32], activation: Activation) {
    up.par_chunks_mut(4096)
        .zip(gate.par_chunks(4096))
        .for_each(|(up, gate)| match activation {
            Activation::Silu if numerics_avx2::available() => numerics_avx2::silu_gate(gate, up),
            Activation::GeluTanh if numerics_avx2::available() => {
                numerics_avx2::gelu_gate(gate, up)
            }
            _ => gate_chunk(gate, up, activation),
        });
}

/// Compiled for FMA where the CPU has it: the reference's exp is a chain of fused multiply-adds.
#[multiversion(targets("x86_64+avx2+fma+f16c"))]
fn gate_chunk(gate: &[f32], up: &mut [f32], activation: Activation) {
    for (u, &g) in up.iter_mut().zip(gate) {
        let a = match activation {
            Activation::Silu => numerics::silu(g),
            Activation::GeluTanh => numerics::gelu_tanh(g),
        };
        *u *= a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_copy_holds_the_first_positions() {
        let mut cache = KvCache::zeros(2, 2, 0);
        for layer in 0..2 {
            let keys: Vec<f32> = (0..6).map(|i| (10 * layer + i) as f32).collect();
            let values: Vec<f32> = keys.iter().map(|k| -k).collect();
            cache.append(layer, &keys, &values);
        }
        cache.len = 3;
        let copy = cache.prefix(2);
        assert_eq!(copy.len(), 2);
        for layer in 0..2 {
            assert_eq!(copy.keys[layer], cache.keys[layer][..4]);
            assert_eq!(copy.values[layer], cache.values[layer][..4]);
        }
        assert_eq!(cache.prefix(5).len(), 3, "no more than the cache holds");
    }
}
