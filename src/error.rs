//! The API's errors and the one table that maps them to HTTP statuses and JSON bodies.
//!
//! Client mistakes are 4xx with a message that says what to fix; server faults are logged in
//! the request's span and answered with a generic message, never with internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::metrics::FailureReason;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Invalid(String),
    /// Invalid input in one named request field (OpenAI's `param`).
    #[error("{message}")]
    InvalidParam { param: String, message: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("server is at capacity, retry later")]
    Overloaded { retry_after: u64 },
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    #[error("internal error")]
    Internal(String),
}

/// The JSON body of every error: `{"error": "...", "type": "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) | ApiError::InvalidParam { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::Invalid(_) | ApiError::InvalidParam { .. } => "invalid_input",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The failure reason this error counts as, if it is counted by the HTTP layer.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::TooLarge(_)
            | ApiError::Invalid(_)
            | ApiError::InvalidParam { .. } => Some(FailureReason::Validation),
            ApiError::Unauthorized => Some(FailureReason::Unauthorized),
            ApiError::Internal(_) => Some(FailureReason::Internal),
            // Overload, deadline and cancellation are counted where they happen, once.
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_string(),
            kind: self.kind().to_string(),
        };
        self.respond_with(body)
    }
}

/// OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// This error in OpenAI's shape, for the `/v1/*` routes and for errors inside a stream.
    pub fn openai_body(&self) -> OpenAiErrorBody {
        let (kind, code) = match self {
            ApiError::MalformedJson(_) | ApiError::TooLarge(_) => ("invalid_request_error", None),
            ApiError::Invalid(_) | ApiError::InvalidParam { .. } => {
                ("invalid_request_error", Some("invalid_value"))
            }
            ApiError::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::NotFound => ("invalid_request_error", Some("not_found")),
            ApiError::Overloaded { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            ApiError::Unavailable { .. } => ("server_error", Some("service_unavailable")),
            ApiError::Internal(_) => ("server_error", None),
        };
        let param = match self {
            ApiError::InvalidParam { param, .. } => Some(param.clone()),
            _ => None,
        };
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }

    fn respond_with(self, body: impl Serialize) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let mut response = (status, Json(body)).into_response();
        let retry_after = match &self {
            ApiError::Overloaded { retry_after } | ApiError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(reason) = self.failure_reason() {
            response.extensions_mut().insert(reason);
        }
        response
    }
}

/// An [`ApiError`] answered in OpenAI's shape; the `/v1/*` handlers return it.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = self.0.openai_body();
        self.0.respond_with(body)
    }
}
