//! `GET /openapi.json`: the OpenAPI document of every route, generated from the handlers.

use axum::Json;
use utoipa::OpenApi;

use super::{openai, ops, predict, wire};
use crate::error::ErrorBody;
use crate::model::ner::{Aggregation, Entity};
use crate::model::{ModelInfo, Pooling, Task};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wick",
        description = "Inference server for transformer encoders"
    ),
    paths(
        predict::predict,
        openai::embeddings,
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
        Entity,
        Aggregation,
        Task,
        ModelInfo,
        Pooling,
        ErrorBody,
        ops::StatusBody,
        ops::InfoBody,
        openai::EmbeddingsRequest,
        openai::EmbeddingsResponse
    ))
)]
pub(super) struct ApiDoc;

pub(super) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
