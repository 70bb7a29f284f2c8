//! OpenAI-compatible `POST /v1/embeddings`, served by the same pipeline as `/predict`. `input`
//! takes OpenAI's four forms: a string, a list of strings, a list of token ids (one
//! pre-tokenized input), or a list of such lists.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::body::parse_json;
use super::predict::{request_deadline, run, Served, ServedTask};
use super::state::AppState;
use super::wire::{check_supported, OutputItem, Parameters, PredictRequest, Prediction};
use base64::Engine as _;

use crate::error::{ApiError, OpenAiError, OpenAiErrorBody};
use crate::model::{EncoderInput, Task};

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct EmbeddingsRequest {
    /// A string, a list of strings, a list of token ids, or a list of lists of token ids.
    /// Token ids are taken as they are: no special tokens are added.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Accepted for compatibility and ignored: the loaded model answers.
    #[allow(dead_code)]
    pub model: Option<String>,
    /// "float" (default) or "base64" (little-endian f32 bytes; the official clients' default).
    pub encoding_format: Option<String>,
    /// Must equal the model's dimension when given: wick does not truncate embeddings.
    pub dimensions: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EmbeddingData {
    pub object: &'static str,
    /// A list of floats, or a base64 string of little-endian f32 bytes.
    #[schema(value_type = Object)]
    pub embedding: EmbeddingValue,
    pub index: usize,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingValue {
    fn encode(embedding: Vec<f32>, base64: bool) -> Self {
        if !base64 {
            return Self::Float(embedding);
        }
        let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingsRequest, responses(
    (status = 200, body = EmbeddingsResponse), (status = 422, body = OpenAiErrorBody),
    (status = 429, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody)))]
pub(super) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let request: EmbeddingsRequest = parse_json(body)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(format) => {
            return Err(invalid(
                "encoding_format",
                format!("encoding_format {format:?} is not supported; use \"float\" or \"base64\""),
            ))
        }
    };
    let engine = state.engine()?;
    if let (Some(asked), Some(native)) = (request.dimensions, engine.info().embedding_dimension) {
        if asked != native as u64 {
            return Err(invalid(
                "dimensions",
                format!("this model's embeddings have {native} dimensions and cannot be shortened; got dimensions {asked}"),
            ));
        }
    }
    let prediction = match token_ids(&request.input, engine.tokenizer().vocab_size())? {
        Some(ids) => {
            check_supported(Task::Embed, &engine.info().tasks)?;
            Prediction {
                task: Task::Embed,
                inputs: ids.into_iter().map(EncoderInput::TokenIds).collect(),
                parameters: Parameters::default(),
                schema: None,
            }
        }
        None => PredictRequest {
            task: Some(Task::Embed.as_str().into()),
            inputs: Some(request.input),
            text: None,
            schema: None,
            parameters: Some(Parameters::default()),
        }
        .validate(&engine.info().tasks)?,
    };
    let deadline = request_deadline(&headers, state.limits().request_timeout)?;
    let Served {
        outputs,
        tokens,
        largest_batch,
    } = run(&state, engine, &prediction, deadline).await?;
    let data = outputs
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| match item {
            OutputItem::Embedding(embedding) => Some(EmbeddingData {
                object: "embedding",
                embedding: EmbeddingValue::encode(embedding, base64),
                index,
            }),
            _ => None,
        })
        .collect();
    let mut response = Json(EmbeddingsResponse {
        object: "list",
        data,
        model: engine.info().model_id.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response();
    response.extensions_mut().insert(ServedTask {
        task: Task::Embed,
        batch_size: largest_batch,
    });
    Ok(response)
}

fn invalid(param: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::InvalidParam {
        param: param.into(),
        message: message.into(),
    })
}

/// `input` as token ids — one list of integers, or a list of such lists — each checked to be a
/// token of the model; `None` when `input` is text.
fn token_ids(input: &Value, vocab_size: usize) -> Result<Option<Vec<Vec<u32>>>, OpenAiError> {
    let Value::Array(items) = input else {
        return Ok(None);
    };
    match items.first() {
        None => Err(invalid("input", "`input` is an empty list")),
        Some(Value::Number(_)) => Ok(Some(vec![ids(input, "input", vocab_size)?])),
        Some(Value::Array(_)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| ids(item, &format!("input[{i}]"), vocab_size))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Ok(None),
    }
}

/// One pre-tokenized input at `at`: a non-empty list of ids below `vocab_size`.
fn ids(value: &Value, at: &str, vocab_size: usize) -> Result<Vec<u32>, OpenAiError> {
    let Value::Array(items) = value else {
        return Err(invalid(
            "input",
            format!("`{at}` must be a list of token ids like the other inputs"),
        ));
    };
    if items.is_empty() {
        return Err(invalid(
            "input",
            format!("`{at}` is an empty list of token ids"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            item.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .filter(|&id| (id as usize) < vocab_size)
                .ok_or_else(|| {
                    invalid(
                        "input",
                        format!(
                            "`{at}[{j}]` must be a token id from 0 to {} (this model's \
                             vocabulary), got {item}",
                            vocab_size.saturating_sub(1)
                        ),
                    )
                })
        })
        .collect()
}
