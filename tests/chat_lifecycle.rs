//! The chat model's lifecycle against a real wick on loopback: a shutdown drain with live
//! streams (the ones that can finish do, the rest end with an OpenAI error event), `: ping`
//! comments while a long prompt is prefilled, and readiness through loading and warmup.

mod common;

use std::time::{Duration, Instant};

use common::{metric_value, quick_config, real_model, TestServer};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const CHAT_MODEL: &str = "smollm2-135m-instruct";

/// One line of an event stream and when it arrived.
struct Line {
    at: Instant,
    text: String,
}

/// Reads an event stream to its end, line by line with arrival times. `first_token` gets one
/// message when the first content delta arrives. An error means the transport broke (a reset
/// connection, a truncated chunk) or the body stopped in the middle of an event.
async fn read_lines(
    response: reqwest::Response,
    first_token: Option<mpsc::UnboundedSender<Instant>>,
) -> Result<Vec<Line>, String> {
    let mut first_token = first_token;
    let mut body = response.bytes_stream();
    let mut pending = Vec::new();
    let mut lines = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the stream broke: {e:?}"))?;
        let at = Instant::now();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8(raw[..end].to_vec())
                .map_err(|e| format!("a line is not UTF-8: {e}"))?;
            if first_token.is_some() && delta_content(&text).is_some_and(|c| !c.is_empty()) {
                let _ = first_token.take().expect("checked").send(at);
            }
            lines.push(Line { at, text });
        }
    }
    if !pending.is_empty() {
        return Err(format!(
            "the body ended mid-line: {:?}",
            String::from_utf8_lossy(&pending)
        ));
    }
    if lines.last().is_some_and(|l| !l.text.is_empty()) {
        return Err("the body ended without the blank line that closes an event".into());
    }
    Ok(lines)
}

/// The `data:` payloads, in order.
fn payloads(lines: &[Line]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.text.strip_prefix("data: "))
        .collect()
}

/// The content delta of a chat chunk line, if it is one.
fn delta_content(line: &str) -> Option<String> {
    let chunk: Value = serde_json::from_str(line.strip_prefix("data: ")?).ok()?;
    chunk["choices"][0]["delta"]["content"]
        .as_str()
        .map(str::to_string)
}

fn stream_body(content: &str, max_tokens: u64) -> Value {
    json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}],
           "temperature": 0, "max_tokens": max_tokens, "stream": true})
}

async fn post_stream(server: &TestServer, body: &Value) -> reqwest::Response {
    let response = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    response
}

/// How a stream ended: its finish chunk and `[DONE]`, or an error event.
#[derive(Debug)]
enum Ending {
    Finished { reason: String },
    Error(Value),
}

/// Checks the stream's shape and says how it ended: every payload is JSON but a last
/// `[DONE]`; a normal ending is a chunk with `finish_reason` then `[DONE]`; an error ending is
/// one last event with OpenAI's error object, and nothing after it.
fn ending(lines: &[Line]) -> Result<Ending, String> {
    let payloads = payloads(lines);
    let (last, rest) = payloads.split_last().ok_or("no data events")?;
    let json = |p: &str| serde_json::from_str::<Value>(p).map_err(|e| format!("{p:?}: {e}"));
    let chunks: Vec<Value> = rest.iter().map(|p| json(p)).collect::<Result<_, _>>()?;
    if let Some(bad) = chunks.iter().find(|c| c.get("error").is_some()) {
        return Err(format!("an error event before the end: {bad}"));
    }
    let reasons: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    if *last == "[DONE]" {
        return match (reasons.as_slice(), chunks.last()) {
            ([reason], Some(c)) if c["choices"][0]["finish_reason"] == *reason => {
                Ok(Ending::Finished {
                    reason: reason.to_string(),
                })
            }
            _ => Err(format!(
                "[DONE] not right after one finish chunk: {reasons:?}"
            )),
        };
    }
    let error = json(last)?;
    if !reasons.is_empty() {
        return Err(format!("an error event after finish {reasons:?}: {error}"));
    }
    match error.get("error") {
        Some(e)
            if e["message"].as_str().is_some_and(|m| !m.is_empty()) && e.get("type").is_some() =>
        {
            Ok(Ending::Error(error))
        }
        _ => Err(format!(
            "the last event is neither [DONE] nor an OpenAI error: {last}"
        )),
    }
}

const PRE_STOP_SECONDS: f64 = 0.5;
const DRAIN_SECONDS: f64 = 8.0;

/// Shutdown while four chat streams are decoding: the two that need few more tokens finish
/// within the drain timeout (`finish_reason`, then `[DONE]`); the two that would need minutes
/// are ended at the deadline by one `data:` event with OpenAI's error object, and every body
/// ends cleanly (no reset, no truncated chunk). Readiness fails from the signal on, and `run`
/// returns soon after the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drain_finishes_short_streams_and_ends_long_ones_with_an_error_event() {
    let mut config = quick_config(real_model(CHAT_MODEL));
    config.pre_stop_delay = PRE_STOP_SECONDS;
    config.drain_timeout = DRAIN_SECONDS;
    let mut server = TestServer::start(config).await;
    // Greedy answers to these prompts run past 600 tokens without an end of turn: `max_tokens`
    // alone decides when they would end.
    let streams = [
        ("Explain in detail how a computer works.", 16),
        ("Write a long poem about the sea.", 16),
        ("Tell me a very long story about dragons.", 4000),
        ("Write a long essay about the history of Rome.", 4000),
    ];
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (prompt, max_tokens) in streams {
        let response = post_stream(&server, &stream_body(prompt, max_tokens)).await;
        tasks.push(tokio::spawn(read_lines(response, Some(first_tx.clone()))));
    }
    for started in 0..streams.len() {
        tokio::time::timeout(Duration::from_secs(60), first_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {started} of 4 streams began within 60 s"))
            .expect("a stream task ended early");
    }

    server.begin_stop();
    let signalled = Instant::now();
    let deadline = signalled + Duration::from_secs_f64(PRE_STOP_SECONDS + DRAIN_SECONDS);
    // A probe on a fresh connection each time, as the kubelet makes them: 503 `draining` while
    // the listener is open, refused once it has closed; never 200.
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut draining_answers = 0;
    while signalled.elapsed() < Duration::from_secs_f64(PRE_STOP_SECONDS + 1.0) {
        match probe.get(format!("{}/ready", server.url)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or_default();
                assert_eq!(status, 503, "readiness during the drain: {body}");
                assert_eq!(body["status"], "draining", "{body}");
                draining_answers += 1;
            }
            Err(e) if e.is_connect() => break,
            Err(e) => panic!("readiness probe failed oddly: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(draining_answers > 0, "readiness never answered `draining`");

    let bound = Duration::from_secs_f64(PRE_STOP_SECONDS + DRAIN_SECONDS + 20.0);
    for (i, task) in tasks.into_iter().enumerate() {
        let (prompt, max_tokens) = streams[i];
        let lines = tokio::time::timeout(bound, task)
            .await
            .unwrap_or_else(|_| panic!("stream {i} still open {bound:?} after the signal"))
            .expect("stream task")
            .unwrap_or_else(|e| panic!("stream {i} ({prompt:?}): {e}"));
        let after_signal = lines
            .iter()
            .filter(|l| l.at > signalled && delta_content(&l.text).is_some())
            .count();
        assert!(
            after_signal > 0,
            "stream {i} got no token after the signal: it was not live in the drain"
        );
        let ended = lines.last().expect("lines").at;
        let ending = ending(&lines).unwrap_or_else(|e| panic!("stream {i} ({prompt:?}): {e}"));
        if max_tokens < 100 {
            assert!(
                matches!(&ending, Ending::Finished { reason } if reason == "length"),
                "stream {i} should have finished within the drain timeout: {ending:?}"
            );
            assert!(ended < deadline, "stream {i} finished after the deadline");
        } else {
            let Ending::Error(error) = &ending else {
                panic!("stream {i} finished ({ending:?}) before the drain deadline");
            };
            assert_eq!(error["error"]["type"], "server_error", "{error}");
            assert_eq!(error["error"]["code"], "service_unavailable", "{error}");
            assert!(
                ended + Duration::from_millis(100) >= deadline,
                "stream {i} was cut {:?} before the drain deadline",
                deadline - ended
            );
        }
    }
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("run returns after the drain")
        .expect("run ends without error");
}

/// While a long prompt is prefilled the stream is not silent: `: ping` comments arrive at the
/// configured interval before the first token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_pings_arrive_while_a_long_prompt_is_prefilled() {
    let interval = Duration::from_millis(20);
    let mut config = quick_config(real_model(CHAT_MODEL));
    config.sse_ping_interval = interval.as_secs_f64();
    let server = TestServer::start(config).await;
    // About 470 prompt tokens: seconds of prefill on a small CPU, far more than the 5 ping
    // intervals the test needs on a fast one.
    let prompt = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(32);
    let response = post_stream(&server, &stream_body(&prompt, 2)).await;
    let sent = Instant::now();
    let lines = tokio::time::timeout(Duration::from_secs(120), read_lines(response, None))
        .await
        .expect("the stream ends within 120 s")
        .expect("a clean stream");

    // The role chunk comes at once; the next event comes with the first token.
    let first_token = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.text.starts_with("data: "))
        .nth(1)
        .expect("an event after the role chunk")
        .0;
    let before = &lines[..first_token];
    let pings = before.iter().filter(|l| l.text == ": ping").count();
    let prefill = lines[first_token].at - sent;
    assert!(
        prefill >= 5 * interval,
        "the prefill took only {prefill:?}: too short to test pings; lengthen the prompt"
    );
    assert!(
        pings >= 3,
        "{pings} pings in the {prefill:?} before the first token"
    );
    // No long silence: a line (ping or data) at least every second during the prefill.
    let mut last = sent;
    for line in before.iter().filter(|l| !l.text.is_empty()) {
        assert!(
            line.at - last < Duration::from_secs(1),
            "{:?} without a line during the prefill",
            line.at - last
        );
        last = line.at;
    }
    let end = ending(&lines);
    assert!(matches!(end, Ok(Ending::Finished { .. })), "{end:?}");
    server.stop().await.unwrap();
}

/// `/ready` answers 503 (`loading`, then `warming`) until the chat model is loaded and warmed
/// through prefill and decode, `/health` answers fast throughout, and the first chat request
/// after `/ready` turns 200 is as fast as the ones after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_ready_only_after_warmup_and_the_first_request_is_fast() {
    let mut config = wick::config::Config::for_model(real_model(CHAT_MODEL));
    // The same request repeated would otherwise start from the previous one's cache.
    config.prefix_cache_entries = 0;
    let max_step_tokens = config.max_step_tokens;
    let server = TestServer::start_unready(config).await;
    let mut phases: Vec<String> = Vec::new();
    let mut slowest_health = Duration::ZERO;
    let mut health_probes = 0;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        if let Ok(r) = server
            .client
            .get(format!("{}/health", server.url))
            .send()
            .await
        {
            assert_eq!(r.status(), 200, "liveness while starting");
            slowest_health = slowest_health.max(t.elapsed());
            health_probes += 1;
        }
        if let Ok(r) = server
            .client
            .get(format!("{}/ready", server.url))
            .send()
            .await
        {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            if status == 200 {
                assert_eq!(body["status"], "ready");
                break;
            }
            assert_eq!(status, 503);
            let phase = body["status"].as_str().unwrap().to_string();
            assert!(phase == "loading" || phase == "warming", "{body}");
            assert!(
                body["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{body}"
            );
            if phases.last() != Some(&phase) {
                phases.push(phase);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not ready after 180 s (saw {phases:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(phases.contains(&"warming".to_string()), "saw {phases:?}");
    assert!(health_probes >= 5, "only {health_probes} health probes");
    assert!(
        slowest_health < Duration::from_millis(200),
        "slowest /health while loading and warming: {slowest_health:?}"
    );
    // Before any client request, warmup ran a prompt longer than one step (chunked prefill)
    // and decode steps.
    let metrics = server.metrics().await;
    assert!(metric_value(&metrics, "wick_warmup_seconds").unwrap() > 0.0);
    assert_eq!(metric_value(&metrics, "wick_ready"), Some(1.0));
    let prompt_tokens = metric_value(&metrics, "wick_prompt_tokens_total").unwrap_or(0.0);
    assert!(
        prompt_tokens > max_step_tokens as f64,
        "warmup prefilled {prompt_tokens} tokens"
    );
    let decode_steps =
        metric_value(&metrics, "wick_inter_token_latency_seconds_count").unwrap_or(0.0);
    assert!(decode_steps > 0.0, "warmup ran no decode step");

    // The first request after ready is as fast as the ones after it; the client's connection
    // is already open (from the probes), so this measures the server alone.
    let body = json!({"messages": [{"role": "user", "content": "Say hello to the new day."}],
                      "temperature": 0, "max_tokens": 8});
    let mut latencies = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let (status, answer) = server.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        latencies.push(t.elapsed().as_secs_f64());
    }
    let first = latencies[0];
    let mut rest = latencies[1..].to_vec();
    rest.sort_by(f64::total_cmp);
    let median = rest[rest.len() / 2];
    assert!(
        first <= 2.0 * median,
        "first {first:.4}s vs median {median:.4}s"
    );
    server.stop().await.unwrap();
}
