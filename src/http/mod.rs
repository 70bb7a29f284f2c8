//! The HTTP surface: the router and its middleware stack, handlers, and wire types.

mod activity;
mod body;
mod chat;
mod chat_wire;
pub(crate) mod cors;
mod generate;
mod middleware;
mod openai;
mod openapi;
mod ops;
mod predict;
pub mod serve;
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

/// The whole API. Tests drive it with `oneshot` or over a real socket. `cors_allow_origin`
/// empty leaves CORS off.
pub fn router(state: AppState, max_body_bytes: usize, cors_allow_origin: &[String]) -> Router {
    // Every route that runs the model or describes it to an API client needs the key;
    // probes, metrics, /info and the OpenAPI document stay open.
    let guarded = Router::new()
        .route("/predict", post(predict::predict))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/models", get(chat::models))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::require_api_key,
        ));
    let mut app = Router::new()
        .merge(guarded)
        .route("/info", get(ops::info))
        .route("/openapi.json", get(openapi::openapi))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    max_body_bytes,
                    body::refuse_declared_oversize,
                ))
                .layer(DefaultBodyLimit::max(max_body_bytes)),
        );
    // Outside the key check, so preflights pass and a browser can read a 401.
    if let Some(cors) = cors::layer(cors_allow_origin) {
        app = app.layer(cors);
    }
    app.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::observe,
            )),
    )
    .with_state(state)
}

/// Just `/metrics`, for a separate metrics port.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}
