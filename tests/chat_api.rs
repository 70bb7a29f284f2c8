//! The chat model over HTTP: OpenAI's stream format, stream and non-stream agreement, finish
//! reasons, batching that does not change greedy answers, cancellation freeing the KV cache,
//! and OpenAI-shaped errors.

mod common;

use std::time::{Duration, Instant};

use common::{metric_value, quick_config, real_model, TestServer};
use futures::StreamExt;
use serde_json::{json, Value};

const CHAT_MODEL: &str = "smollm2-135m-instruct";

async fn chat_server() -> TestServer {
    TestServer::start(quick_config(real_model(CHAT_MODEL))).await
}

/// The `data:` payloads of an SSE body, in order (comments and blank lines left out).
async fn stream_events(server: &TestServer, path: &str, body: Value) -> Vec<String> {
    let response = server
        .client
        .post(format!("{}{path}", server.url))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn chat_body(content: &str, max_tokens: u64) -> Value {
    json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}],
           "temperature": 0, "max_tokens": max_tokens})
}

#[tokio::test]
async fn stream_and_non_stream_give_the_same_text() {
    let server = chat_server().await;
    let body = chat_body("What is the capital of France?", 24);
    let (status, whole) = server.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() <= 24);

    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = stream_events(&server, "/v1/chat/completions", streamed).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    let first = &chunks[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks {
        assert_eq!(chunk["id"], first["id"]);
        assert_eq!(chunk["created"], first["created"]);
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stop_strings_and_max_tokens_end_with_their_finish_reason() {
    let server = chat_server().await;
    let prompt = "Once upon a time, in a small village,";
    let (status, long) = server
        .post(
            "/v1/completions",
            json!({"prompt": prompt, "temperature": 0, "max_tokens": 20}),
        )
        .await;
    assert_eq!(status, 200, "{long}");
    assert_eq!(long["choices"][0]["finish_reason"], "length");
    assert_eq!(long["usage"]["completion_tokens"], 20);
    let text = long["choices"][0]["text"].as_str().unwrap().to_string();
    // A stop string from the middle of the greedy text: the answer ends right before it.
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() >= 4, "{text:?}");
    let stop = words[words.len() / 2];
    let (_, stopped) = server
        .post(
            "/v1/completions",
            json!({"prompt": prompt, "temperature": 0, "max_tokens": 20, "stop": [stop]}),
        )
        .await;
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let cut = stopped["choices"][0]["text"].as_str().unwrap();
    assert!(!cut.contains(stop), "{cut:?} contains the stop {stop:?}");
    assert_eq!(cut, &text[..text.find(stop).unwrap()]);
    server.stop().await.unwrap();
}

/// The same greedy request gives the same tokens alone and decoded beside 7 other streams.
#[tokio::test]
async fn greedy_answer_is_the_same_alone_and_in_a_batch() {
    let server = chat_server().await;
    let target = chat_body("Write a haiku about the sea.", 32);
    let (_, alone) = server.post("/v1/chat/completions", target.clone()).await;
    let others = [
        "Explain recursion in one sentence.",
        "List three colors.",
        "What is 2 + 2?",
        "Name a famous painter.",
        "Say hello in Spanish.",
        "What is the boiling point of water?",
        "Describe a cat.",
    ];
    let mut requests = vec![target];
    requests.extend(others.iter().map(|q| chat_body(q, 48)));
    let answers = futures::future::join_all(
        requests
            .into_iter()
            .map(|body| server.post("/v1/chat/completions", body)),
    )
    .await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    assert_eq!(
        answers[0].1["choices"][0]["message"]["content"],
        alone["choices"][0]["message"]["content"]
    );
    let batched = metric_value(&server.metrics().await, "wick_batch_size_sum").unwrap_or(0.0);
    let steps = metric_value(&server.metrics().await, "wick_batch_size_count").unwrap_or(1.0);
    assert!(
        batched / steps > 1.5,
        "sequences were not batched: {batched} / {steps}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_sequence_and_kv_cache() {
    let server = chat_server().await;
    let mut body = chat_body("Tell me a very long story about dragons.", 4000);
    body["stream"] = json!(true);
    let response = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut bytes = response.bytes_stream();
    let mut seen = 0;
    while seen < 3 {
        let chunk = bytes.next().await.expect("stream").expect("bytes");
        seen += String::from_utf8_lossy(&chunk).matches("data: ").count();
    }
    let running = metric_value(&server.metrics().await, "wick_sequences_running");
    assert_eq!(running, Some(1.0));
    drop(bytes);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server.metrics().await;
        let running = metric_value(&metrics, "wick_sequences_running");
        let kv = metric_value(&metrics, "wick_kv_cache_usage_ratio");
        let cancelled = metric_value(
            &metrics,
            "wick_request_failures_total{reason=\"cancelled\"}",
        );
        if running == Some(0.0) && kv == Some(0.0) && cancelled == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not freed: running {running:?}, kv {kv:?}, cancelled {cancelled:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn errors_on_v1_routes_use_openai_shape() {
    let mut config = quick_config(real_model(CHAT_MODEL));
    config.max_kv_tokens = Some(64);
    let server = TestServer::start(config).await;
    let check = |status: u16, body: &Value, expected: u16, param: Option<&str>| {
        assert_eq!(status, expected, "{body}");
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(error["type"].is_string(), "{body}");
        assert!(error.get("code").is_some(), "{body}");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{body}");
        }
    };
    let mut n2 = chat_body("hi", 4);
    n2["n"] = json!(2);
    let (status, body) = server.post("/v1/chat/completions", n2).await;
    check(status, &body, 422, Some("n"));
    let mut tools = chat_body("hi", 4);
    tools["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let (status, body) = server.post("/v1/chat/completions", tools).await;
    check(status, &body, 422, Some("tools"));
    let long = "word ".repeat(200);
    let (status, body) = server
        .post("/v1/completions", json!({"prompt": long}))
        .await;
    check(status, &body, 422, Some("prompt"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("prompt has 20") && message.contains("context is 64"),
        "{message}"
    );
    let (status, body) = server.post("/v1/embeddings", json!({"input": "x"})).await;
    check(status, &body, 422, None);
    let response = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    check(status, &response.json().await.unwrap(), 400, None);
    let response = server.get("/v1/nothing-here").await;
    let status = response.status().as_u16();
    check(status, &response.json().await.unwrap(), 404, None);
    let (status, body) = server
        .post("/v1/completions", json!({"prompt": "hi", "temperature": 5}))
        .await;
    check(status, &body, 422, Some("temperature"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn models_predict_and_token_metrics() {
    let server = chat_server().await;
    let response = server.get("/v1/models").await;
    let models: Value = response.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], CHAT_MODEL);
    assert_eq!(models["data"][0]["object"], "model");
    let (status, body) = server
        .predict(
            json!({"task": "generate", "inputs": "The capital of France is",
                        "parameters": {"max_new_tokens": 6, "temperature": 0}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["completion_tokens"], 6);
    assert!(body["outputs"][0]["generated_text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let metrics = server.metrics().await;
    assert!(metric_value(&metrics, "wick_generated_tokens_total").unwrap() >= 6.0);
    assert!(metric_value(&metrics, "wick_prompt_tokens_total").unwrap() >= 5.0);
    assert!(metric_value(&metrics, "wick_time_to_first_token_seconds_count").unwrap() >= 1.0);
    assert!(metric_value(&metrics, "wick_inter_token_latency_seconds_count").unwrap() >= 5.0);
    assert_eq!(
        metric_value(
            &metrics,
            "wick_requests_finished_total{finish_reason=\"length\"}"
        ),
        Some(1.0)
    );
    server.stop().await.unwrap();
}

/// A seeded sample is reproducible; a different seed gives (almost surely) another text.
#[tokio::test]
async fn same_seed_same_text() {
    let server = chat_server().await;
    let body = |seed: u64| {
        json!({"prompt": "My favourite animal is", "max_tokens": 16, "temperature": 1.0,
               "top_p": 0.95, "seed": seed})
    };
    let (_, a) = server.post("/v1/completions", body(7)).await;
    let (_, b) = server.post("/v1/completions", body(7)).await;
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let texts: Vec<Value> =
        futures::future::join_all((8..12).map(|s| server.post("/v1/completions", body(s))))
            .await
            .into_iter()
            .map(|(_, v)| v["choices"][0]["text"].clone())
            .collect();
    assert!(
        texts.iter().any(|t| *t != a["choices"][0]["text"]),
        "every seed gave the same text"
    );
    server.stop().await.unwrap();
}

/// A conversation's second turn starts from the first turn's cache: the hit shows in the
/// metrics and covers the whole first prompt. A prompt that extends an earlier prompt gets
/// the answer a fresh server gives: reused positions were prefilled as a fresh prefill would.
/// (Reused *generated* tokens were computed one at a time, whose attention sums in another
/// order, so a later answer may differ from a fresh server's at a near-tie, as in llama.cpp.)
#[tokio::test]
async fn second_turn_reuses_the_first_turns_cache() {
    let server = chat_server().await;
    let question = "Describe, in a few sentences, how bread is made from flour, water, salt \
                    and yeast, and why the dough has to rest before it is baked.";
    let first = json!({"model": CHAT_MODEL, "temperature": 0, "max_tokens": 24,
                       "messages": [{"role": "user", "content": question}]});
    let (status, answer) = server.post("/v1/chat/completions", first).await;
    assert_eq!(status, 200, "{answer}");
    let first_prompt = answer["usage"]["prompt_tokens"].as_f64().unwrap();
    let reply = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let second = json!({"model": CHAT_MODEL, "temperature": 0, "max_tokens": 12,
                        "messages": [{"role": "user", "content": question},
                                     {"role": "assistant", "content": reply},
                                     {"role": "user", "content": "And how long should it rest?"}]});
    let before = server.metrics().await;
    let (status, cached) = server.post("/v1/chat/completions", second).await;
    assert_eq!(status, 200, "{cached}");
    let after = server.metrics().await;
    let delta =
        |name: &str| metric_value(&after, name).unwrap() - metric_value(&before, name).unwrap();
    assert_eq!(delta("wick_prefix_cache_hits_total"), 1.0);
    let reused = delta("wick_prefix_cache_hit_tokens_total");
    assert!(
        reused >= first_prompt,
        "reused {reused} tokens, the first prompt had {first_prompt}"
    );

    let story = "Once upon a time, in a small village by the sea, there lived an old fisherman";
    let longer = format!("{story} who had never once caught a fish. Every morning he");
    let complete = |prompt: &str| json!({"prompt": prompt, "max_tokens": 16, "temperature": 0});
    let (status, _) = server.post("/v1/completions", complete(story)).await;
    assert_eq!(status, 200);
    let hits =
        || async { metric_value(&server.metrics().await, "wick_prefix_cache_hits_total").unwrap() };
    let hits_before = hits().await;
    let (status, extended) = server.post("/v1/completions", complete(&longer)).await;
    assert_eq!(status, 200, "{extended}");
    assert_eq!(hits().await, hits_before + 1.0);
    server.stop().await.unwrap();

    let fresh = chat_server().await;
    let (status, recomputed) = fresh.post("/v1/completions", complete(&longer)).await;
    assert_eq!(status, 200, "{recomputed}");
    assert_eq!(
        extended["choices"][0]["text"],
        recomputed["choices"][0]["text"]
    );
    fresh.stop().await.unwrap();
}
