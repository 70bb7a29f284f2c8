//! wick scraped by a real Prometheus (Debian's `prometheus`, on loopback, 1 s interval):
//! the series move as the traffic says, and `promtool check metrics` accepts the output.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("wick-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = TempDir::new("prometheus");
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: wick\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/install-test-deps)");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Runs an instant PromQL query; None while it has no result.
async fn query(client: &reqwest::Client, prometheus: &str, promql: &str) -> Option<f64> {
    let r = client
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Polls a query until `check` holds, up to `limit`; returns the last value.
async fn eventually(
    client: &reqwest::Client,
    prometheus: &str,
    promql: &str,
    limit: Duration,
    check: impl Fn(f64) -> bool,
) -> Option<f64> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < limit {
        last = query(client, prometheus, promql).await;
        if last.is_some_and(&check) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_what_the_traffic_did() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let target = server.url.trim_start_matches("http://").to_string();
    let prometheus = start_prometheus(&target);
    let client = reqwest::Client::new();
    let up = eventually(
        &client,
        &prometheus.url,
        "up{job=\"wick\"}",
        Duration::from_secs(30),
        |v| v == 1.0,
    )
    .await;
    assert_eq!(up, Some(1.0), "Prometheus scrapes wick");

    // Traffic: 120 good requests from 8 concurrent clients over ~4 s, and 7 bad ones.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (client, url) = (client.clone(), server.url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let text = format!("client {c} sends sentence number {i} to be embedded by wick");
                let inputs: Vec<String> = (0..4).map(|k| format!("{text} {k}")).collect();
                let r = client
                    .post(format!("{url}/predict"))
                    .json(&json!({"inputs": inputs}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                // Spread over several 1 s scrapes, so rate() sees the counters move.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for _ in 0..7 {
        let (status, _) = server.predict(json!({"inputs": ""})).await;
        assert_eq!(status, 422);
    }

    let p = &prometheus.url;
    let limit = Duration::from_secs(30);
    let ok = eventually(
        &client,
        p,
        "sum(wick_requests_total{route=\"/predict\",code=\"200\"})",
        limit,
        |v| v == 120.0,
    )
    .await;
    assert_eq!(ok, Some(120.0));
    let bad = eventually(
        &client,
        p,
        "sum(wick_requests_total{route=\"/predict\",code=\"422\"})",
        limit,
        |v| v == 7.0,
    )
    .await;
    assert_eq!(bad, Some(7.0));
    let failures = eventually(
        &client,
        p,
        "wick_request_failures_total{reason=\"validation\"}",
        limit,
        |v| v == 7.0,
    )
    .await;
    assert_eq!(failures, Some(7.0));
    let inputs = eventually(&client, p, "wick_inputs_total", limit, |v| v == 480.0).await;
    assert_eq!(inputs, Some(480.0), "every input ran once");
    let histogram = eventually(
        &client,
        p,
        "sum(wick_request_duration_seconds_count{route=\"/predict\",status=\"2xx\"})",
        limit,
        |v| v == 120.0,
    )
    .await;
    assert_eq!(histogram, Some(120.0));
    let depth = eventually(&client, p, "wick_queue_depth", limit, |v| v == 0.0).await;
    assert_eq!(depth, Some(0.0), "queue drained after the load");
    let in_flight = eventually(&client, p, "wick_requests_in_flight", limit, |v| v == 0.0).await;
    assert_eq!(in_flight, Some(0.0));
    let rps = eventually(&client, p, "wick_requests_per_second", limit, |v| v > 0.0).await;
    assert!(rps.is_some_and(|v| v > 0.0), "window rate moved: {rps:?}");
    let p99 = eventually(
        &client,
        p,
        "wick_latency_seconds{quantile=\"0.99\"}",
        limit,
        |v| v > 0.0,
    )
    .await;
    assert!(
        p99.is_some_and(|v| v > 0.0 && v < 5.0),
        "window P99: {p99:?}"
    );
    let p99_hist = eventually(
        &client,
        p,
        "histogram_quantile(0.99, sum by (le) (rate(wick_request_duration_seconds_bucket{route=\"/predict\"}[1m])))",
        limit,
        |v| v > 0.0,
    )
    .await;
    assert!(
        p99_hist.is_some_and(|v| v.is_finite() && v > 0.0),
        "{p99_hist:?}"
    );
    let ready = query(&client, p, "wick_ready").await;
    assert_eq!(ready, Some(1.0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_output() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let (status, _) = server
        .predict(json!({"inputs": ["some traffic", "for every series"]}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.predict(json!({"inputs": 1})).await;
    assert_eq!(status, 422);
    let text = server.metrics().await;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install-test-deps)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "wick_queue_depth",
        "wick_requests_in_flight",
        "wick_batch_size_bucket",
        "wick_batch_tokens_bucket",
        "wick_batches_total",
        "wick_request_duration_seconds_bucket",
        "wick_queue_duration_seconds_bucket",
        "wick_inference_duration_seconds_bucket",
        "wick_tokenize_duration_seconds_bucket",
        "wick_requests_total",
        "wick_request_failures_total",
        "wick_latency_seconds",
        "wick_requests_per_second",
        "wick_saturation",
        "wick_model_load_seconds",
        "wick_warmup_seconds",
        "wick_ready",
        "wick_draining",
        "wick_build_info",
    ] {
        assert!(text.contains(&format!("\n{name}")), "{name} missing");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_also_served_on_the_metrics_port() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    let port = free_port();
    config.metrics_port = Some(port);
    let server = TestServer::start(config).await;
    let r = server
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("wick_ready 1"));
    let r = server
        .client
        .post(format!("http://127.0.0.1:{port}/predict"))
        .json(&json!({"inputs": "not here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "only /metrics on the metrics port");
    server.stop().await.unwrap();
}
