//! `GET /openapi.json`: the OpenAPI document of every route, generated from the handlers.

use axum::Json;
use utoipa::OpenApi;

use super::{chat, chat_wire, openai, ops, predict, wire};
use crate::error::{ErrorBody, OpenAiErrorBody, OpenAiErrorDetail};
use crate::model::{ModelInfo, Pooling, Task};
use crate::task::ner::Aggregation;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wick",
        description = "Inference server for transformer encoders and GGUF chat models"
    ),
    paths(
        predict::predict,
        openai::embeddings,
        chat::chat_completions,
        chat::completions,
        chat::models,
        ops::health,
        ops::ready,
        ops::metrics,
        ops::info
    ),
    components(schemas(
        wire::PredictRequest,
        wire::Parameters,
        wire::PredictResponse,
        wire::OutputItem,
        wire::LabelScore,
        wire::Entity,
        Aggregation,
        Task,
        ModelInfo,
        Pooling,
        ErrorBody,
        ops::StatusBody,
        ops::InfoBody,
        openai::EmbeddingsRequest,
        openai::EmbeddingsResponse,
        OpenAiErrorBody,
        OpenAiErrorDetail,
        chat_wire::ChatCompletionRequest,
        chat_wire::CompletionRequest,
        chat_wire::ChatCompletion,
        chat_wire::Completion,
        chat_wire::ModelList
    ))
)]
pub(super) struct ApiDoc;

pub(super) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
