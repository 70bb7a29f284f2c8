//! OpenAI-compatible `POST /v1/embeddings`, served by the same pipeline as `/predict`.

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
use super::wire::{OutputItem, Parameters, PredictRequest};
use crate::error::{ApiError, ErrorBody};
use crate::model::Task;

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct EmbeddingsRequest {
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Accepted for compatibility and ignored: the loaded model answers.
    #[allow(dead_code)]
    pub model: Option<String>,
    /// Only "float" is supported.
    pub encoding_format: Option<String>,
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
    pub embedding: Vec<f32>,
    pub index: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingsRequest, responses(
    (status = 200, body = EmbeddingsResponse), (status = 422, body = ErrorBody),
    (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: EmbeddingsRequest = parse_json(body)?;
    if let Some(format) = request.encoding_format.as_deref() {
        if format != "float" {
            return Err(ApiError::Invalid(format!(
                "encoding_format {format:?} is not supported; use \"float\""
            )));
        }
    }
    let engine = state.engine()?;
    let prediction = PredictRequest {
        task: Some(Task::Embed.as_str().into()),
        inputs: Some(request.input),
        text: None,
        schema: None,
        parameters: Some(Parameters::default()),
    }
    .validate(&engine.info().tasks)?;
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
                embedding,
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
