//! The HTTP surface: the router and its middleware stack, handlers, and wire types.

mod body;
mod chat;
mod chat_wire;
mod generate;
mod middleware;
mod openai;
mod openapi;
mod ops;
mod predict;
mod sse;
pub mod state;
pub mod wire;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use predict::TIMEOUT_HEADER;
pub use state::{AppState, RequestLimits, ServedModel};

/// The whole API. Tests drive it with `oneshot` or over a real socket.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let inference = Router::new()
        .route("/predict", post(predict::predict))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_api_key,
        ));
    Router::new()
        .merge(inference)
        .route("/v1/models", get(chat::models))
        .route("/info", get(ops::info))
        .route("/openapi.json", get(openapi::openapi))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::observe,
                ))
                .layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .with_state(state)
}

/// Just `/metrics`, for a separate metrics port.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}
