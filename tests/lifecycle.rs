//! Lifecycle against a real wick: readiness through loading and warming, warmup effect,
//! liveness under a long batch, SIGTERM drain with zero failed requests, the drain deadline,
//! a second signal, deadlines and disconnects that never reach the model.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_loading_and_warming_and_the_first_request_is_fast() {
    let config = wick::config::Config::for_model(real_model("all-minilm-l6-v2"));
    let server = TestServer::start_unready(config).await;
    let mut phases = Vec::new();
    let started = Instant::now();
    loop {
        let r = server
            .client
            .get(format!("{}/ready", server.url))
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
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
        assert!(started.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(phases.contains(&"warming".to_string()), "saw {phases:?}");
    let metrics = server.metrics().await;
    assert!(metric_value(&metrics, "wick_warmup_seconds").unwrap() > 0.0);
    assert_eq!(metric_value(&metrics, "wick_ready"), Some(1.0));

    // The first request after ready is as fast as the ones after it. The client's connection
    // is already open (from the readiness polls), so this measures the server alone.
    let body = json!({"inputs": ["The first real request of the day.", "And a second sentence."]});
    let mut latencies = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let (status, _) = server.predict(body.clone()).await;
        assert_eq!(status, 200);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_fast_while_a_long_batch_runs() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let big = server.spawn_long_request();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while !big.is_finished() {
        let t = Instant::now();
        let r = server.get("/health").await;
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, took) = big.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        took > Duration::from_millis(800),
        "the batch was not long: {took:?}"
    );
    assert!(probes >= 5, "only {probes} probes during the batch");
    assert!(
        worst < Duration::from_millis(50),
        "slowest /health {worst:?}"
    );
    server.stop().await.unwrap();
}

/// A batch running past the watchdog makes liveness fail (a wedged worker gets the pod
/// restarted), and liveness recovers when the batch ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_one_batch_runs_past_the_watchdog() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.watchdog = 0.2;
    config.max_batch_size = 64;
    config.max_batch_tokens = 64 * 256;
    let server = TestServer::start(config).await;
    let big = server.spawn_long_request();
    let mut saw_unhealthy = false;
    while !big.is_finished() {
        let r = server.get("/health").await;
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["status"], "unhealthy");
            assert!(body["reason"].as_str().unwrap().contains("stuck"), "{body}");
            saw_unhealthy = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(big.await.unwrap().0, 200);
    assert!(
        saw_unhealthy,
        "the 64 x 256-token batch outlasted the 0.2 s watchdog"
    );
    let r = server.get("/health").await;
    assert_eq!(r.status(), 200, "healthy again once the batch is done");
    server.stop().await.unwrap();
}

/// SIGTERM under a steady load of 16 clients that stop sending once readiness fails (as a
/// Service does when it removes the endpoint): every request gets a 2xx, the process exits 0
/// within pre-stop + drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_under_load_with_zero_failures() {
    let mut wick = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &["--pre-stop-delay", "1", "--drain-timeout", "10"],
    );
    let client = reqwest::Client::new();
    wick.wait_ready(&client).await;

    let removed = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, url, removed, ok) = (
            client.clone(),
            wick.url.clone(),
            removed.clone(),
            ok.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0;
            while !removed.load(Ordering::SeqCst) {
                let body =
                    json!({"inputs": [format!("client {c} request {i} keeps the server busy")]});
                match client
                    .post(format!("{url}/predict"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("error {e}")),
                }
                i += 1;
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = ok.load(Ordering::SeqCst);
    assert!(before > 16, "load is running: {before}");

    // The "endpoint controller": polls readiness and removes the endpoint when it fails.
    let signalled = Instant::now();
    wick.signal(libc::SIGTERM);
    let mut saw_unready = false;
    while signalled.elapsed() < Duration::from_secs(5) {
        if let Ok(r) = client.get(format!("{}/ready", wick.url)).send().await {
            if r.status() == 503 {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["status"], "draining");
                saw_unready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_unready, "readiness never failed");
    assert!(
        signalled.elapsed() < Duration::from_millis(900),
        "readiness failed late"
    );
    removed.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        ok.load(Ordering::SeqCst) > before,
        "requests were served while draining"
    );
    let (code, took) = wick.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(11),
        "exit took {took:?}"
    );
}

/// Work still unfinished at the drain deadline is answered 503, never reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_work_at_the_drain_deadline_gets_a_503() {
    let mut wick = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &[
            "--no-warmup",
            "--drain-timeout",
            "0.5",
            "--max-inputs",
            "64",
        ],
    );
    let client = reqwest::Client::new();
    wick.wait_ready(&client).await;
    let long = "a long input that takes real time to encode in a large batch ".repeat(25);
    let mut requests = Vec::new();
    for r in 0..8 {
        let inputs: Vec<String> = (0..64).map(|i| format!("{r} {i} {long}")).collect();
        let (client, url) = (client.clone(), wick.url.clone());
        requests.push(tokio::spawn(async move {
            client
                .post(format!("{url}/predict"))
                .json(&json!({"inputs": inputs}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    wick.signal(libc::SIGTERM);
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200) | Ok(503))),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&Ok(503)),
        "the deadline cut some work: {statuses:?}"
    );
    let (code, _) = wick.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut wick = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &["--no-warmup", "--pre-stop-delay", "30"],
    );
    let client = reqwest::Client::new();
    wick.wait_ready(&client).await;
    wick.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        wick.child.try_wait().unwrap().is_none(),
        "still in its pre-stop delay"
    );
    wick.signal(libc::SIGINT);
    let (code, took) = wick.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(2));
}

/// A request whose deadline passes while it waits behind a long batch, and one whose client
/// hangs up, are counted and never computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_abandoned_work_is_counted_and_never_computed() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.max_batch_size = 64;
    let server = TestServer::start(config).await;
    let busy = server.spawn_long_request();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let expired = server
        .client
        .post(format!("{}/predict", server.url))
        .header(wick::http::TIMEOUT_HEADER, "100")
        .json(&json!({"inputs": ["expires while queued", "and its sibling"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 503);

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let abandoned = impatient
        .post(format!("{}/predict", server.url))
        .json(&json!({"inputs": "the client hangs up before this runs"}))
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gave up");

    assert_eq!(busy.await.unwrap().0, 200);
    // Let the batcher see (and skip) the queued jobs of both.
    let (status, _) = server.predict(json!({"inputs": "after"})).await;
    assert_eq!(status, 200);
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, "wick_request_failures_total{reason=\"deadline\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "wick_request_failures_total{reason=\"cancelled\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "wick_inputs_total"),
        Some(65.0),
        "only the busy batch and `after` ran"
    );
    assert_eq!(metric_value(&metrics, "wick_queue_depth"), Some(0.0));
    server.stop().await.unwrap();
}

/// A `WICK_*` variable set to the empty string counts as unset, as a chart that renders an
/// empty value means: the server starts on its defaults and answers, where clap alone
/// refused the empty values and the process exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_environment_variables_count_as_unset() {
    let process = Process::spawn_with_env(
        &real_model("all-minilm-l6-v2"),
        &[],
        &[
            ("WICK_QUANTIZE", ""),
            ("WICK_MAX_BATCH_SIZE", ""),
            ("WICK_LOG_FORMAT", ""),
        ],
    );
    let client = reqwest::Client::new();
    process.wait_ready(&client).await;
    let response = client
        .post(format!("{}/predict", process.url))
        .json(&json!({"inputs": ["An empty variable is no value."]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
