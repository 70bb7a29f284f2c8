//! The HTTP contract over real sockets: every error status, auth, OpenAI-compatible
//! embeddings, OpenAPI, and 200 concurrent mixed-task requests answered correctly.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn raw_post(server: &TestServer, path: &str, body: &'static str) -> (u16, serde_json::Value) {
    let response = server
        .client
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("every error is JSON"))
}

fn assert_error(status: u16, body: &serde_json::Value, want: u16, kind: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["type"], kind, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_get_clear_json_4xx() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.max_body_bytes = 4096;
    config.max_inputs_per_request = 4;
    config.max_input_chars = 2000;
    let server = TestServer::start(config).await;

    let (s, b) = raw_post(&server, "/predict", "{\"inputs\": [\"a\"").await;
    assert_error(s, &b, 400, "malformed_json");
    let (s, b) = raw_post(&server, "/predict", "not json at all").await;
    assert_error(s, &b, 400, "malformed_json");

    let big = "x".repeat(5000);
    let (s, b) = server.predict(json!({"inputs": big})).await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = server
        .predict(json!({"inputs": ["a", "b", "c", "d", "e"]}))
        .await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = server.predict(json!({"inputs": "y".repeat(2001)})).await;
    assert_error(s, &b, 413, "payload_too_large");

    for body in [
        json!({"inputs": ""}),
        json!({"inputs": "   "}),
        json!({"inputs": 42}),
        json!({"inputs": ["ok", null]}),
        json!({"inputs": "a", "task": "translate"}),
        json!({"inputs": "a", "task": "ner"}),
        json!({"inputs": "a", "task": "zero-shot"}),
        json!({"inputs": "a", "task": "zero-shot", "parameters": {"labels": []}}),
        json!({"inputs": "a", "parameters": {"unknown": 1}}),
        json!({"inputs": "a", "parameters": {"top_k": "three"}}),
        json!({"task": "embed"}),
        json!({"text": "a", "schema": 7}),
        json!([1, 2, 3]),
    ] {
        let (s, b) = server.predict(body.clone()).await;
        assert_error(s, &b, 422, "invalid_input");
    }
    let (s, b) = server
        .predict(json!({"inputs": "ner", "task": "ner"}))
        .await;
    assert!(
        b["error"].as_str().unwrap().contains("embed, zero-shot"),
        "{b}"
    );
    assert_eq!(s, 422);

    // Over-long with truncate=false is a 422; with the default it is cut and served.
    let long = "word ".repeat(300);
    let (s, b) = server
        .predict(json!({"inputs": long, "parameters": {"truncate": false}}))
        .await;
    assert_error(s, &b, 422, "invalid_input");
    assert!(b["error"].as_str().unwrap().contains("256 tokens"), "{b}");
    let (s, _) = server.predict(json!({"inputs": long})).await;
    assert_eq!(s, 200);

    let response = server
        .client
        .post(format!("{}/predict", server.url))
        .header(wick::http::TIMEOUT_HEADER, "soon")
        .json(&json!({"inputs": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    let response = server.get("/nope").await;
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "not_found");

    let metrics = server.metrics().await;
    let count = metric_value(
        &metrics,
        "wick_request_failures_total{reason=\"validation\"}",
    )
    .expect("validation failures counted");
    assert!(count >= 20.0, "{count}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_a_503_and_never_computed() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let response = server
        .client
        .post(format!("{}/predict", server.url))
        .header(wick::http::TIMEOUT_HEADER, "0")
        .json(&json!({"inputs": "too late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("wick_request_failures_total{reason=\"deadline\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wick_batches_total 0"),
        "nothing reached the model"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_a_fast_429_with_retry_after() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.max_pending_inputs = 8;
    config.max_inputs_per_request = 8;
    let server = TestServer::start(config).await;
    let text = "a long sentence that takes the model a while to encode ".repeat(20);
    let inputs: Vec<String> = (0..8).map(|i| format!("{i} {text}")).collect();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let client = server.client.clone();
        let url = format!("{}/predict", server.url);
        let body = json!({"inputs": inputs});
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry)
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (429, Some(retry)) => {
                assert!(retry.parse::<u64>().unwrap() >= 1);
                rejected += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(ok >= 1 && rejected >= 1, "ok {ok}, rejected {rejected}");
    let metrics = server.metrics().await;
    assert!(metrics.contains(&format!(
        "wick_request_failures_total{{reason=\"overloaded\"}} {rejected}"
    )));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_inference_but_not_probes() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.api_key = Some("s3cret".into());
    let server = TestServer::start(config).await;
    let predict_with = |token: Option<&'static str>| {
        let mut request = server
            .client
            .post(format!("{}/predict", server.url))
            .json(&json!({"inputs": "a"}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(predict_with(None).await, 401);
    assert_eq!(predict_with(Some("wrong")).await, 401);
    assert_eq!(predict_with(Some("s3cret")).await, 200);
    for open in ["/health", "/ready", "/metrics"] {
        let r = server.get(open).await;
        assert_eq!(r.status(), 200, "{open}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_openapi_and_openai_embeddings() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let info: serde_json::Value = server.get("/info").await.json().await.unwrap();
    assert_eq!(info["model_id"], "all-minilm-l6-v2");
    assert_eq!(info["embedding_dimension"], 384);
    assert_eq!(info["max_input_tokens"], 256);
    assert_eq!(info["tasks"], json!(["embed", "zero-shot"]));
    assert!(info["version"].is_string());

    let doc: serde_json::Value = server.get("/openapi.json").await.json().await.unwrap();
    for path in [
        "/predict",
        "/v1/embeddings",
        "/health",
        "/ready",
        "/metrics",
        "/info",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }

    let r: serde_json::Value = server
        .client
        .post(format!("{}/v1/embeddings", server.url))
        .json(&json!({"input": ["hello", "world"], "model": "anything"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["object"], "list");
    assert_eq!(r["data"][1]["index"], 1);
    assert_eq!(r["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(r["usage"]["prompt_tokens"], 6);
    server.stop().await.unwrap();
}

/// 200 concurrent requests across embed, zero-shot, classify and ner: each answer equals what
/// the same request gets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_mixed_requests_are_all_answered_correctly() {
    let minilm = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let classifier = TestServer::start(quick_config(real_model("categorium-en"))).await;
    let ner = TestServer::start(quick_config(fixture_model("tiny-bert-ner"))).await;
    let sentences = [
        "Johnson lives in Berlin and works for Acme.",
        "The central bank raised interest rates.",
        "A quick brown fox.",
        "Jonathan Hartley visited Newcastle with Maria.",
        "Cheap flights to Lisbon this summer.",
    ];
    let mut cases = Vec::new();
    for i in 0..200 {
        let text = sentences[i % sentences.len()];
        let (server, body) = match i % 4 {
            0 => (&minilm, json!({"inputs": [text, sentences[(i + 1) % 5]]})),
            1 => (
                &minilm,
                json!({"inputs": text, "task": "zero-shot", "parameters": {"labels": ["finance", "travel", "people"]}}),
            ),
            2 => (
                &classifier,
                json!({"inputs": text, "parameters": {"top_k": 5}}),
            ),
            _ => {
                let mode = ["simple", "first", "average", "max"][(i / 4) % 4];
                (
                    &ner,
                    json!({"inputs": text, "parameters": {"aggregation": mode}}),
                )
            }
        };
        cases.push((server, body));
    }
    // Expected answers, one request at a time.
    let mut expected = Vec::new();
    for (server, body) in &cases {
        let (status, answer) = server.predict(body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        expected.push(answer);
    }
    let futures = cases
        .iter()
        .map(|(server, body)| server.predict(body.clone()));
    let answers =
        tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(futures))
            .await
            .expect("all answered in time");
    for (i, ((status, got), want)) in answers.iter().zip(&expected).enumerate() {
        assert_eq!(*status, 200, "request {i}: {got}");
        assert_close(&got["outputs"], &want["outputs"], &format!("request {i}"));
    }
    for s in [minilm, classifier, ner] {
        s.stop().await.unwrap();
    }
}

/// Structural equality with floats compared to 1e-4 (batching changes padding, not results).
fn assert_close(got: &serde_json::Value, want: &serde_json::Value, at: &str) {
    match (got, want) {
        (serde_json::Value::Number(a), serde_json::Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() < 1e-4, "{at}: {a} vs {b}");
        }
        (serde_json::Value::Array(a), serde_json::Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: lengths");
            for (x, y) in a.iter().zip(b) {
                assert_close(x, y, at);
            }
        }
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: keys");
            for (k, v) in a {
                assert_close(v, &b[k], at);
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

/// Zero-shot inputs plus uncached labels may exceed the whole admission budget; such a
/// request takes the whole budget instead of being refused forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_the_budget_is_still_served() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.max_pending_inputs = 4;
    config.max_inputs_per_request = 4;
    let server = TestServer::start(config).await;
    let (status, body) = server
        .predict(json!({
            "task": "zero-shot",
            "inputs": ["one", "two", "three", "four"],
            "parameters": {"labels": ["a", "b", "c", "d"]}
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 4);
    server.stop().await.unwrap();
}

/// The ids wick's own tokenizer makes for `text` (special tokens included), as a client that
/// tokenizes for itself would send them.
fn minilm_ids(text: &str) -> Vec<u32> {
    let files = wick::model::ModelFiles::read(&real_model("all-minilm-l6-v2")).unwrap();
    let tokenizer = wick::model::TextTokenizer::load(&files, 256, usize::MAX).unwrap();
    tokenizer.encode(text, true).unwrap().get_ids().to_vec()
}

fn embedding(body: &serde_json::Value, index: usize) -> Vec<f64> {
    body["data"][index]["embedding"]
        .as_array()
        .unwrap_or_else(|| panic!("no embedding {index}: {body}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_same_embedding(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() < 1e-5, "dimension {i}: {a} vs {b}");
    }
}

/// OpenAI's error shape naming `input`.
fn assert_input_error(status: u16, body: &serde_json::Value) {
    assert!((400..500).contains(&status), "{status} {body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["type"], "invalid_request_error", "{body}");
    assert_eq!(error["param"], "input", "{body}");
    assert!(error.get("code").is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embeddings_take_token_ids_as_given() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let hello = minilm_ids("hello world");
    assert_eq!(hello, [101, 7592, 2088, 102], "[CLS] hello world [SEP]");
    let other = minilm_ids("a second, longer sentence");

    // Each form is compared with the same texts sent in the same shape, so batches pad alike.
    let (status, text) = server
        .post("/v1/embeddings", json!({"input": "hello world"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, texts) = server
        .post(
            "/v1/embeddings",
            json!({"input": ["hello world", "a second, longer sentence"]}),
        )
        .await;
    assert_eq!(status, 200, "{texts}");

    // One pre-tokenized input: a list of integers.
    let (status, one) = server.post("/v1/embeddings", json!({"input": hello})).await;
    assert_eq!(status, 200, "{one}");
    assert_same_embedding(&embedding(&one, 0), &embedding(&text, 0));
    assert_eq!(text["usage"]["prompt_tokens"], 4, "{text}");
    assert_eq!(one["usage"]["prompt_tokens"], 4, "{one}");
    assert_eq!(one["usage"]["total_tokens"], 4, "{one}");

    // Several: a list of lists of integers, answered in order.
    let (status, many) = server
        .post("/v1/embeddings", json!({"input": [hello, other]}))
        .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["data"].as_array().unwrap().len(), 2);
    assert_eq!(many["data"][1]["index"], 1);
    assert_same_embedding(&embedding(&many, 0), &embedding(&texts, 0));
    assert_same_embedding(&embedding(&many, 1), &embedding(&texts, 1));
    assert_eq!(
        many["usage"]["prompt_tokens"],
        texts["usage"]["prompt_tokens"]
    );

    // Over the model's 256 tokens: cut, as over-long text is on this route.
    let long: Vec<u32> = std::iter::repeat_n(7592, 300).collect();
    let (status, cut) = server.post("/v1/embeddings", json!({"input": long})).await;
    assert_eq!(status, 200, "{cut}");
    assert_eq!(cut["usage"]["prompt_tokens"], 256, "{cut}");

    for bad in [
        json!([]),
        json!([[]]),
        json!([hello, []]),
        json!([101, 30522]),
        json!([101, 4_294_967_296u64]),
        json!([101, -1]),
        json!([101, 1.5]),
        json!([101, "world"]),
        json!([[101], "world"]),
        json!([[101], [102, null]]),
    ] {
        let (status, body) = server
            .post("/v1/embeddings", json!({"input": bad.clone()}))
            .await;
        assert_input_error(status, &body);
        assert_eq!(status, 422, "{bad}: {body}");
    }
    server.stop().await.unwrap();
}
