//! Operational routes: `/health` (liveness), `/ready` (readiness), `/metrics`, `/info`.
//!
//! None of them touch the model or wait on a lock the model holds: they read the lifecycle's
//! watch channel and the worker's heartbeat atomics, so they answer while a long batch runs.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::state::AppState;
use crate::engine::generation::ChatInfo;
use crate::error::{ApiError, ErrorBody};
use crate::lifecycle::Phase;
use crate::model::{simd, ModelInfo, Task};

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatusBody {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InfoBody {
    #[serde(flatten)]
    pub model: ModelInfo,
    pub version: &'static str,
    pub max_inputs_per_request: usize,
    pub max_input_chars: usize,
    /// The vector instructions wick's CPU kernels use: `avx512`, `avx2` or `portable`.
    pub simd: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChatInfoBody {
    #[serde(flatten)]
    pub model: ChatInfo,
    pub tasks: Vec<Task>,
    pub version: &'static str,
    /// The vector instructions wick's CPU kernels use: `avx512`, `avx2` or `portable`.
    pub simd: &'static str,
}

fn status(code: StatusCode, status: &str, reason: Option<String>) -> Response {
    (
        code,
        Json(StatusBody {
            status: status.into(),
            reason,
        }),
    )
        .into_response()
}

/// Liveness: the process and runtime answer, and the model worker is alive and not stuck.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, body = StatusBody), (status = 503, body = StatusBody)))]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    // Before the worker exists, the process is alive and loading: that is healthy.
    if !state.worker_started() {
        return status(StatusCode::OK, "ok", None);
    }
    match state.lifecycle().worker().problem(state.watchdog()) {
        None => status(StatusCode::OK, "ok", None),
        Some(problem) => status(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", Some(problem)),
    }
}

/// Readiness: 200 only in the ready phase.
#[utoipa::path(get, path = "/ready", responses(
    (status = 200, body = StatusBody), (status = 503, body = StatusBody)))]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let phase = state.lifecycle().phase();
    if phase == Phase::Ready {
        status(StatusCode::OK, "ready", None)
    } else {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            phase.as_str(),
            Some(phase.reason().into()),
        )
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // Rendering sorts the latency window: on the blocking pool, off the runtime's threads.
    let metrics = state.metrics().clone();
    let body = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// What the loaded model is and what it accepts.
#[utoipa::path(get, path = "/info", responses(
    (status = 200, body = InfoBody), (status = 503, body = ErrorBody)))]
pub(super) async fn info(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.serves_chat() {
        let generator = state.generator()?;
        return Ok(Json(ChatInfoBody {
            model: generator.info().clone(),
            tasks: vec![Task::Generate],
            version: env!("CARGO_PKG_VERSION"),
            simd: simd::level().name(),
        })
        .into_response());
    }
    let engine = state.engine()?;
    let limits = state.limits();
    Ok(Json(InfoBody {
        model: engine.info().clone(),
        version: env!("CARGO_PKG_VERSION"),
        max_inputs_per_request: limits.max_inputs,
        max_input_chars: limits.max_input_chars,
        simd: simd::level().name(),
    })
    .into_response())
}

pub(super) async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/v1/") {
        crate::error::OpenAiError(ApiError::NotFound).into_response()
    } else {
        ApiError::NotFound.into_response()
    }
}
