//! Reading a JSON request body with the API's own error table: 413 for an over-size body,
//! 400 for bytes that are not JSON, 422 for JSON of the wrong shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
