//! The transformer encoder and its task heads: BERT, RoBERTa/XLM-RoBERTa and DistilBERT
//! bodies with the sequence- and token-classification heads each family defines.
//!
//! One forward pass takes a padded batch of token ids and returns, per sequence, what its head
//! produces: a pooled embedding, sequence logits, or per-token logits.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use super::bert::FastBert;
use super::family::Family;

use super::files::{LoadError, ModelFiles, WeightsFile};
use super::pooling::Pooling;

/// What sits on top of the encoder, read from config.json's `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Embedding,
    SequenceClassification,
    TokenClassification,
}

enum Head {
    Embedding(Pooling),
    /// First token -> dense -> activation -> classifier (BERT's pooler, RoBERTa's
    /// classification head, DistilBERT's pre-classifier).
    Sequence {
        pre: Linear,
        activation: PreActivation,
        classifier: Linear,
    },
    Token {
        classifier: Linear,
    },
}

#[derive(Debug, Clone, Copy)]
enum PreActivation {
    Tanh,
    Relu,
}

/// The result for one sequence of a batch.
#[derive(Debug, Clone)]
pub enum HeadOutput {
    Embedding(Vec<f32>),
    Logits(Vec<f32>),
    TokenLogits(Vec<Vec<f32>>),
}

/// The transformer body: wick's fused CPU BERT, or candle-transformers' BERT on other devices
/// and activations the fused kernels do not cover.
enum Backbone {
    Fast(FastBert),
    Candle(BertModel),
}

pub struct Encoder {
    backbone: Backbone,
    head: Head,
    device: Device,
    pub hidden_size: usize,
    /// Longest input the position embeddings cover.
    pub max_len: usize,
    /// Rows of the word embeddings: every token id must be below it.
    pub vocab_size: usize,
}

impl Encoder {
    pub fn load(
        files: &ModelFiles,
        head: HeadKind,
        num_labels: usize,
        pooling: Pooling,
        int8: bool,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let config_error = |problem: String| LoadError::new(&files.config_path, problem);
        let model_type = files.config.model_type.as_deref().unwrap_or("bert");
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            config_error(format!(
                "model_type {model_type:?} is not supported (supported: bert, roberta, xlm-roberta, distilbert)"
            ))
        })?;
        let json: serde_json::Value = serde_json::from_str(&files.config_json)
            .map_err(|e| config_error(format!("invalid JSON: {e}")))?;
        let dims = family.dims(&json).map_err(config_error)?;

        let weights_path = match &files.weights {
            WeightsFile::Safetensors(p) | WeightsFile::PytorchBin(p) => p.clone(),
        };
        let weight_error = |e: candle_core::Error| LoadError::new(&weights_path, e.to_string());
        let vb = match &files.weights {
            // SAFETY: the weights file is mapped read-only and is not modified while wick runs;
            // a model directory changed under a running server is outside what wick supports.
            #[allow(unsafe_code)]
            WeightsFile::Safetensors(path) => unsafe {
                VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device)
            },
            WeightsFile::PytorchBin(path) => VarBuilder::from_pth(path, DType::F32, device),
        }
        .map_err(weight_error)?;
        let prefix = family.prefix();
        let root = if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
            vb.pp(prefix)
        } else {
            vb.clone()
        };

        // wick's fused encoder runs every family on CPU with exact GELU; elsewhere (a CUDA
        // device, another activation) candle-transformers' BERT takes over, for BERT only.
        let fast = device.is_cpu() && dims.activation == "gelu";
        let backbone = if fast {
            Backbone::Fast(FastBert::load(root.clone(), family, &dims, int8).map_err(weight_error)?)
        } else if family == Family::Bert && !int8 {
            let config: BertConfig = serde_json::from_value(json)
                .map_err(|e| config_error(format!("not a BERT config: {e}")))?;
            Backbone::Candle(BertModel::load(vb.clone(), &config).map_err(weight_error)?)
        } else {
            return Err(config_error(format!(
                "{model_type} with activation {:?}{} runs only on CPU with GELU",
                dims.activation,
                if int8 { " and --quantize int8" } else { "" }
            )));
        };

        let hidden = dims.hidden;
        let dense =
            |vb: VarBuilder, outputs: usize| linear(hidden, outputs, vb).map_err(weight_error);
        let head = match head {
            HeadKind::Embedding => Head::Embedding(pooling),
            HeadKind::SequenceClassification => match family {
                Family::Bert => Head::Sequence {
                    pre: dense(root.pp("pooler").pp("dense"), hidden)?,
                    activation: PreActivation::Tanh,
                    classifier: dense(vb.pp("classifier"), num_labels)?,
                },
                Family::Roberta => Head::Sequence {
                    pre: dense(vb.pp("classifier").pp("dense"), hidden)?,
                    activation: PreActivation::Tanh,
                    classifier: dense(vb.pp("classifier").pp("out_proj"), num_labels)?,
                },
                Family::DistilBert => Head::Sequence {
                    pre: dense(vb.pp("pre_classifier"), hidden)?,
                    activation: PreActivation::Relu,
                    classifier: dense(vb.pp("classifier"), num_labels)?,
                },
            },
            HeadKind::TokenClassification => Head::Token {
                classifier: dense(vb.pp("classifier"), num_labels)?,
            },
        };
        let max_len = dims.max_positions.saturating_sub(dims.position_offset);
        Ok(Self {
            backbone,
            head,
            device: device.clone(),
            hidden_size: hidden,
            max_len,
            vocab_size: dims.vocab,
        })
    }

    /// Runs one batch. `sequences` holds (token ids, token type ids) per sequence. The pass
    /// runs on the math pool with its workers kept awake ([`super::hot`]).
    pub fn forward(&self, sequences: &[(&[u32], &[u32])]) -> candle_core::Result<Vec<HeadOutput>> {
        super::hot::run(|| self.forward_here(sequences))
    }

    fn forward_here(&self, sequences: &[(&[u32], &[u32])]) -> candle_core::Result<Vec<HeadOutput>> {
        let batch = sequences.len();
        let max_len = sequences
            .iter()
            .map(|(ids, _)| ids.len())
            .max()
            .unwrap_or(0);
        if batch == 0 || max_len == 0 {
            return Ok(Vec::new());
        }
        // Embeddings pool the fast encoder's packed states as they are; the other heads read
        // them padded.
        if let (Backbone::Fast(bert), Head::Embedding(pooling)) = (&self.backbone, &self.head) {
            let pooled = bert.pooled(sequences, *pooling, &self.device)?;
            return Ok(pooled.into_iter().map(HeadOutput::Embedding).collect());
        }
        let mut ids = vec![0u32; batch * max_len];
        let mut types = vec![0u32; batch * max_len];
        let mut mask = vec![0u32; batch * max_len];
        for (row, (seq_ids, seq_types)) in sequences.iter().enumerate() {
            let offset = row * max_len;
            ids[offset..offset + seq_ids.len()].copy_from_slice(seq_ids);
            types[offset..offset + seq_types.len()].copy_from_slice(seq_types);
            mask[offset..offset + seq_ids.len()].fill(1);
        }
        let shape = (batch, max_len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let types = Tensor::from_vec(types, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let hidden = match &self.backbone {
            Backbone::Fast(bert) => bert.forward(sequences, &self.device)?,
            Backbone::Candle(bert) => bert.forward(&ids, &types, Some(&mask))?,
        };

        match &self.head {
            Head::Embedding(pooling) => {
                let pooled = pooling.pool(&hidden, &mask)?;
                Ok(pooled
                    .to_vec2::<f32>()?
                    .into_iter()
                    .map(HeadOutput::Embedding)
                    .collect())
            }
            Head::Sequence {
                pre,
                activation,
                classifier,
            } => {
                let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                let pre = pre.forward(&first)?;
                let pooled = match activation {
                    PreActivation::Tanh => pre.tanh()?,
                    PreActivation::Relu => pre.relu()?,
                };
                let logits = classifier.forward(&pooled)?;
                Ok(logits
                    .to_vec2::<f32>()?
                    .into_iter()
                    .map(HeadOutput::Logits)
                    .collect())
            }
            Head::Token { classifier } => {
                let logits = classifier.forward(&hidden)?.to_vec3::<f32>()?;
                Ok(logits
                    .into_iter()
                    .zip(sequences)
                    .map(|(mut rows, (seq_ids, _))| {
                        rows.truncate(seq_ids.len());
                        HeadOutput::TokenLogits(rows)
                    })
                    .collect())
            }
        }
    }
}
