//! Middleware: per-request metrics and the JSON access log, and the optional API key check.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::predict::ServedTask;
use super::state::AppState;
use futures::StreamExt;

use crate::error::{ApiError, OpenAiError};
use crate::lifecycle::Phase;
use crate::metrics::{FailureReason, Metrics};

/// Routes that run the model; they count towards in-flight requests and the latency window.
fn is_inference(route: &str) -> bool {
    route == "/predict" || route.starts_with("/v1/")
}

pub(super) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let metrics = state.metrics().clone();
    let inference = is_inference(&route);
    if inference {
        metrics.requests_in_flight.inc();
    }
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if state.lifecycle().phase() == Phase::Draining {
        // Tell keep-alive clients to reconnect elsewhere instead of reusing this connection.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let served = response.extensions().get::<ServedTask>().copied();
    let completion = Completion {
        metrics,
        span,
        route,
        inference,
        started,
        status: response.status(),
        task: served.map_or("none", |s| s.task.as_str()),
        batch_size: served.map_or(0, |s| s.batch_size),
        failure: response.extensions().get::<FailureReason>().copied(),
    };
    if is_event_stream(&response) {
        // A stream is in flight, and its latency runs, until its last byte (or its client
        // leaving): the record is made when the body is dropped.
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _ = &completion;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    drop(completion);
    response
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// One request's metrics and access log line, recorded when dropped: at once for an ordinary
/// response, at the end of the body for a stream.
struct Completion {
    metrics: Arc<Metrics>,
    span: tracing::Span,
    route: String,
    inference: bool,
    started: Instant,
    status: StatusCode,
    task: &'static str,
    batch_size: usize,
    failure: Option<FailureReason>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let metrics = &self.metrics;
        if self.inference {
            metrics.requests_in_flight.dec();
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let class = format!("{}xx", self.status.as_u16() / 100);
        metrics
            .requests_total
            .with_label_values(&[&self.route, self.task, self.status.as_str()])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[&self.route, self.task, &class])
            .observe(elapsed);
        if let Some(reason) = self.failure {
            metrics.fail(reason);
        }
        let latency_ms = elapsed * 1000.0;
        let _entered = self.span.enter();
        if self.inference {
            metrics.observe_latency(elapsed);
            tracing::info!(
                status = self.status.as_u16(),
                latency_ms,
                task = self.task,
                batch_size = self.batch_size,
                "request"
            );
        } else {
            tracing::debug!(status = self.status.as_u16(), latency_ms, "request");
        }
    }
}

/// Requires `Authorization: Bearer <key>` when a key is configured; compared in constant time.
pub(super) async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.api_key() else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        next.run(request).await
    } else if request.uri().path().starts_with("/v1/") {
        OpenAiError(ApiError::Unauthorized).into_response()
    } else {
        ApiError::Unauthorized.into_response()
    }
}
