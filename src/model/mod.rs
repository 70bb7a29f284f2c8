//! Model loading and the pure parts of inference: tokenizer, encoder and heads, pooling.
//! Nothing here knows about HTTP or queues, nor what a task makes of the heads' outputs
//! (that is [`crate::task`]).

pub mod attention;
mod attention_avx2;
pub mod bert;
mod buffer;
pub mod chat;
pub mod decoder;
pub mod encoder;
pub mod family;
pub mod files;
pub mod gemma3;
pub mod gguf;
pub mod gguf_tokenizer;
mod gguf_weights;
pub mod hot;
pub mod kernels;
pub mod llama;
pub mod numerics;
mod numerics_avx2;
pub mod ops;
pub mod packed_attention;
pub mod pooling;
pub mod quant;
pub mod rope;
pub mod sgemm;
pub mod simd;
pub mod task;
pub mod tokenizer;

use std::path::Path;

use candle_core::Device;
use serde::Serialize;

pub use encoder::{Encoder, HeadKind, HeadOutput};
pub use files::{LoadError, ModelFiles};
pub use pooling::Pooling;
pub use task::Task;
pub use tokenizer::{EncoderInput, TextTokenizer, TokenizeError};

/// What clients can learn about the loaded model (`GET /info`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub model_id: String,
    pub tasks: Vec<Task>,
    pub max_input_tokens: usize,
    pub embedding_dimension: Option<usize>,
    pub labels: Vec<String>,
    pub pooling: Option<Pooling>,
    pub normalize_default: bool,
    pub quantize: Quantize,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

/// A loaded model: tokenizer, encoder with its head, and its description.
pub struct Model {
    pub info: ModelInfo,
    pub tokenizer: TextTokenizer,
    pub encoder: Encoder,
    pub head: HeadKind,
}

/// Options that override what the model directory says.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub model_id: Option<String>,
    pub pooling: Option<Pooling>,
    pub max_input_tokens: Option<usize>,
    pub quantize: Quantize,
}

/// Weight precision of the encoder's projections.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// Full f32 weights (matches the reference outputs).
    #[default]
    None,
    /// 8-bit weights in blocks of 32 with one scale each (GGML Q8_0), activations quantized
    /// the same way on the fly: faster on long inputs, at a small accuracy cost.
    Int8,
}

impl Model {
    pub fn load(dir: &Path, options: &LoadOptions, device: &Device) -> Result<Self, LoadError> {
        let files = ModelFiles::read(dir)?;
        let head = head_kind(&files);
        let labels = match head {
            HeadKind::Embedding => Vec::new(),
            _ => files.labels()?,
        };
        if head != HeadKind::Embedding && labels.is_empty() {
            return Err(LoadError::new(
                &files.config_path,
                "a classification model needs id2label",
            ));
        }
        let pooling = options.pooling.or(files.pooling).unwrap_or(Pooling::Mean);
        let int8 = options.quantize == Quantize::Int8;
        let encoder = Encoder::load(&files, head, labels.len(), pooling, int8, device)?;
        let model_limit = files
            .max_seq_length
            .unwrap_or(encoder.max_len)
            .min(encoder.max_len);
        let max_tokens = options
            .max_input_tokens
            .map_or(model_limit, |n| n.min(model_limit));
        let tokenizer = TextTokenizer::load(&files, max_tokens, encoder.vocab_size)?;
        let is_embedding = head == HeadKind::Embedding;
        let model_id = options.model_id.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        let info = ModelInfo {
            model_id,
            tasks: task::tasks_for(head),
            max_input_tokens: max_tokens,
            embedding_dimension: is_embedding.then_some(encoder.hidden_size),
            labels,
            pooling: is_embedding.then_some(pooling),
            normalize_default: true,
            quantize: options.quantize,
            device: crate::device::name(device),
        };
        Ok(Self {
            info,
            tokenizer,
            encoder,
            head,
        })
    }

    pub fn primary_task(&self) -> Task {
        self.info.tasks[0]
    }
}

fn head_kind(files: &ModelFiles) -> HeadKind {
    let arch = |suffix: &str| {
        files
            .config
            .architectures
            .iter()
            .any(|a| a.ends_with(suffix))
    };
    if arch("ForSequenceClassification") {
        HeadKind::SequenceClassification
    } else if arch("ForTokenClassification") {
        HeadKind::TokenClassification
    } else {
        HeadKind::Embedding
    }
}
