//! Middleware: per-request metrics and the JSON access log, and the optional API key check.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::predict::ServedTask;
use super::state::AppState;
use crate::error::ApiError;
use crate::lifecycle::Phase;
use crate::metrics::{FailureReason, Metrics};

/// Routes that run the model; they count towards in-flight requests and the latency window.
fn is_inference(route: &str) -> bool {
    route == "/predict" || route.starts_with("/v1/")
}

/// Decrements the in-flight gauge however the request ends, a dropped connection included.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.requests_in_flight.dec();
    }
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
    let metrics = state.metrics();
    let inference = is_inference(&route);
    let _in_flight = inference.then(|| {
        metrics.requests_in_flight.inc();
        InFlight(metrics)
    });
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
    let elapsed = started.elapsed().as_secs_f64();

    let status = response.status();
    let served = response.extensions().get::<ServedTask>().copied();
    let task = served.map_or("none", |s| s.task.as_str());
    let batch_size = served.map_or(0, |s| s.batch_size);
    let class = format!("{}xx", status.as_u16() / 100);
    metrics
        .requests_total
        .with_label_values(&[&route, task, status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[&route, task, &class])
        .observe(elapsed);
    if let Some(reason) = response.extensions().get::<FailureReason>() {
        metrics.fail(*reason);
    }
    let latency_ms = elapsed * 1000.0;
    let _entered = span.enter();
    if inference {
        metrics.observe_latency(elapsed);
        tracing::info!(
            status = status.as_u16(),
            latency_ms,
            task,
            batch_size,
            "request"
        );
    } else {
        tracing::debug!(status = status.as_u16(), latency_ms, "request");
    }
    response
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
    } else {
        ApiError::Unauthorized.into_response()
    }
}
