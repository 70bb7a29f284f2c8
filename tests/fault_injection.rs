//! A panic inside a forward pass fails only that batch's requests, with a 500 and a JSON body;
//! it is counted and wick goes on serving. A model thread that ends makes `/health` fail.
//! Both for the encoder worker and the generation scheduler, through the test-only
//! `--fault-inject` hook, which fires once at the first forward pass after readiness.

mod common;

use common::*;
use std::time::Duration;

use serde_json::{json, Value};
use wick::config::Config;
use wick::engine::Fault;

fn with_fault(model: &str, fault: Fault) -> Config {
    let mut config = quick_config(real_model(model));
    config.fault_inject = Some(fault);
    config
}

async fn panics_counted(server: &TestServer) -> Option<f64> {
    metric_value(&server.metrics().await, "wick_model_panics_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_panic_fails_its_batch_with_500_and_wick_goes_on() {
    let server = TestServer::start(with_fault("all-minilm-l6-v2", Fault::PanicOnce)).await;
    assert_eq!(panics_counted(&server).await, Some(0.0));

    let (status, body) = server.predict(json!({"inputs": "the first request"})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body, json!({"error": "internal error", "type": "internal"}));
    assert_eq!(panics_counted(&server).await, Some(1.0));
    assert_eq!(server.get("/health").await.status(), 200);

    // The same model thread serves what comes next, correctly.
    let (status, body) = server.predict(json!({"inputs": "the first request"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0].as_array().map(Vec::len), Some(384));
    let (status, _) = server
        .post("/v1/embeddings", json!({"input": ["a", "b"]}))
        .await;
    assert_eq!(status, 200);
    let metrics = server.metrics().await;
    assert_eq!(metric_value(&metrics, "wick_model_panics_total"), Some(1.0));
    assert_eq!(
        metric_value(&metrics, "wick_request_failures_total{reason=\"internal\"}"),
        Some(1.0)
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_worker_that_ends_fails_health() {
    let server = TestServer::start(with_fault("all-minilm-l6-v2", Fault::WorkerExit)).await;
    assert_eq!(server.get("/health").await.status(), 200);
    let (status, body) = server.predict(json!({"inputs": "the last request"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let health = unhealthy_within(&server, Duration::from_secs(2)).await;
    let health: Value = health.json().await.expect("JSON");
    assert_eq!(health["status"], "unhealthy", "{health}");
    // Later requests get a clear 503 too, not a hang.
    let (status, _) = server.predict(json!({"inputs": "after"})).await;
    assert_eq!(status, 503);
    server.stop().await.expect("clean stop");
}

fn chat(content: &str, stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_panic_fails_its_sequences_with_500_and_wick_goes_on() {
    let server = TestServer::start(with_fault("smollm2-135m-instruct", Fault::PanicOnce)).await;
    let (status, body) = server
        .post("/v1/chat/completions", chat("Say hello.", false))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(body["error"]["message"], "internal error", "{body}");
    assert_eq!(panics_counted(&server).await, Some(1.0));
    assert_eq!(server.get("/health").await.status(), 200);

    let (status, body) = server
        .post("/v1/chat/completions", chat("Say hello.", false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");
    let stream = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&chat("Count to three.", true))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let text = stream.text().await.expect("events");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(panics_counted(&server).await, Some(1.0));
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_panic_mid_stream_ends_the_stream_with_an_error_event() {
    let server = TestServer::start(with_fault("smollm2-135m-instruct", Fault::PanicOnce)).await;
    let stream = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&chat("Say hello.", true))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let text = stream.text().await.expect("events");
    assert!(text.contains("\"server_error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let (status, _) = server
        .post(
            "/v1/completions",
            json!({"prompt": "Once upon", "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_thread_that_ends_fails_health() {
    let server = TestServer::start(with_fault("smollm2-135m-instruct", Fault::WorkerExit)).await;
    assert_eq!(server.get("/health").await.status(), 200);
    let (status, body) = server
        .post("/v1/chat/completions", chat("Say hello.", false))
        .await;
    assert_eq!(status, 503, "{body}");
    unhealthy_within(&server, Duration::from_secs(2)).await;
    let (status, _) = server
        .post("/v1/chat/completions", chat("Again.", false))
        .await;
    assert_eq!(status, 503);
    server.stop().await.expect("clean stop");
}

/// `/health`'s answer once it is 503. The request that met the dead thread can get its 503
/// while that thread is still unwinding, a moment before it marks itself dead.
async fn unhealthy_within(server: &TestServer, limit: Duration) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let health = server.get("/health").await;
        if health.status() == 503 || tokio::time::Instant::now() >= deadline {
            assert_eq!(
                health.status(),
                503,
                "/health still answers 200 after {limit:?}"
            );
            return health;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
