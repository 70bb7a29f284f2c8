//! Who may call what, over real sockets: the API key guards every inference route, encoder
//! and chat alike (OpenAI's 401 on `/v1/*`) while probes and metrics stay open; CORS is off
//! unless origins are allowed, and then answers only them.

mod common;

use common::*;
use reqwest::header::{HeaderMap, ORIGIN};
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "s3cret";

/// Calls `path` with `token` as the bearer token, if any: the status and the JSON body.
async fn call(
    server: &TestServer,
    method: &Method,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method.clone(), format!("{}{path}", server.url));
    if *method == Method::POST {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Each route refuses a missing or wrong key with a 401 in the route's error shape, and
/// serves the right one.
async fn assert_guarded(server: &TestServer, routes: &[(Method, &str, Value)]) {
    for (method, path, body) in routes {
        for token in [None, Some("wrong")] {
            let (status, answer) = call(server, method, path, body, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
            if path.starts_with("/v1/") {
                assert_eq!(answer["error"]["code"], "invalid_api_key", "{answer}");
                assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
                assert!(answer["error"]["message"].is_string(), "{answer}");
            } else {
                assert_eq!(answer["type"], "unauthorized", "{answer}");
            }
        }
        let (status, answer) = call(server, method, path, body, Some(KEY)).await;
        assert_eq!(status, 200, "{method} {path} with the key: {answer}");
    }
}

async fn assert_open(server: &TestServer) {
    for path in ["/health", "/ready", "/metrics", "/info", "/openapi.json"] {
        assert_eq!(server.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_every_encoder_inference_route() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.api_key = Some(KEY.into());
    let server = TestServer::start(config).await;
    assert_guarded(
        &server,
        &[
            (Method::POST, "/predict", json!({"inputs": "a"})),
            (Method::POST, "/v1/embeddings", json!({"input": "a"})),
            (Method::GET, "/v1/models", Value::Null),
        ],
    )
    .await;
    assert_open(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_every_generation_route() {
    let mut config = quick_config(real_model("smollm2-135m-instruct"));
    config.api_key = Some(KEY.into());
    let server = TestServer::start(config).await;
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    assert_guarded(
        &server,
        &[
            (Method::POST, "/v1/chat/completions", chat.clone()),
            (
                Method::POST,
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
                       "stream": true}),
            ),
            (
                Method::POST,
                "/v1/completions",
                json!({"prompt": "Once", "max_tokens": 2}),
            ),
            (Method::GET, "/v1/models", Value::Null),
            (
                Method::POST,
                "/predict",
                json!({"task": "generate", "inputs": "Once",
                       "parameters": {"max_new_tokens": 2}}),
            ),
        ],
    )
    .await;
    assert_open(&server).await;
    server.stop().await.unwrap();
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    server
        .client
        .request(Method::OPTIONS, format!("{}{path}", server.url))
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight")
}

async fn simple(server: &TestServer, origin: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = server
        .client
        .post(format!("{}/predict", server.url))
        .header(ORIGIN, origin)
        .json(&json!({"inputs": "a"}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let origin = "https://app.example";
    let r = preflight(&server, "/predict", origin).await;
    assert_ne!(r.status(), 200);
    assert!(cors_headers(r.headers()).is_empty(), "{:?}", r.headers());
    let r = simple(&server, origin, None).await;
    assert_eq!(r.status(), 200);
    assert!(cors_headers(r.headers()).is_empty(), "{:?}", r.headers());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only() {
    let allowed = "https://app.example";
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.cors_allow_origin = vec![allowed.into(), "http://localhost:3000".into()];
    config.api_key = Some(KEY.into());
    let server = TestServer::start(config).await;

    // A preflight needs no key, and names what the browser may send.
    for path in ["/predict", "/v1/embeddings", "/v1/chat/completions"] {
        let r = preflight(&server, path, allowed).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], allowed);
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let headers = h["access-control-allow-headers"].to_str().unwrap();
        assert!(headers.contains("authorization"), "{headers}");
        assert!(headers.contains("content-type"), "{headers}");
        assert_eq!(h["access-control-max-age"], "3600");
    }
    let r = simple(&server, allowed, Some(KEY)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], allowed);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert!(r.headers()["vary"].to_str().unwrap().contains("origin"));
    // A browser can read why it was refused.
    let r = simple(&server, allowed, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], allowed);

    // Another origin gets no CORS answer, so its browser withholds the response.
    let other = "https://elsewhere.example";
    let r = preflight(&server, "/predict", other).await;
    assert!(
        !r.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        r.headers()
    );
    let r = simple(&server, other, Some(KEY)).await;
    assert!(
        !r.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        r.headers()
    );
    server.stop().await.unwrap();
}
