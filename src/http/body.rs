//! Reading a JSON request body with the API's own error table: 413 for an over-size body
//! (at once when its declared length is over the limit), 400 for bytes that are not JSON, 422
//! for JSON of the wrong shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, OpenAiError};

/// Answers 413 before reading a byte of a body whose `Content-Length` is over `limit`. hyper
/// sends `100 Continue` only once a handler starts reading, so a client that sent
/// `Expect: 100-continue` gets the 413 instead and never sends the body. The connection is
/// closed after the answer: the unread body must not be taken for the next request.
pub(super) async fn refuse_declared_oversize(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit as u64) else {
        return next.run(request).await;
    };
    let error = ApiError::TooLarge(format!(
        "the request body is {declared} bytes; the server accepts at most {limit}"
    ));
    let mut response = if request.uri().path().starts_with("/v1/") {
        OpenAiError(error).into_response()
    } else {
        error.into_response()
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub(super) fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("request body is larger than the server accepts".into())
        } else {
            ApiError::MalformedJson(format!("cannot read request body: {rejection}"))
        }
    })?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("malformed JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::Invalid(format!("invalid request: {e}")))
}
