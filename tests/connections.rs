//! Slow and idle clients against a real wick process on loopback: thousands of half-open
//! connections neither slow `/health` nor stop ordinary clients and are closed at the header
//! timeout; idle keep-alive connections close at their own timeout while a request or a live
//! event stream is never cut; past the connection cap a client gets a 503 at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HALF_OPEN: usize = 3_000;
/// Half a request header: what a slow client sends before it stalls.
const HALF_HEADER: &[u8] = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty";

/// This process holds one end of every test connection and, for in-process servers, the
/// other: raise its open-file limit as far as the hard limit allows.
fn raise_open_file_limit(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("open-file limit");
    assert!(
        limit >= needed,
        "the open-file limit is {limit}; this test needs {needed}"
    );
}

/// A client that keeps no connection open between requests, as probes do.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Reads one HTTP/1.1 response with a `content-length` body: status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("status");
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]);
                return (status, body.to_string());
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "the connection closed mid-response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Waits until the server closes `stream` (end of file or a reset); when it did.
async fn closed_at(mut stream: TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

/// Opens `n` connections (a few hundred at a time, within the listen backlog) that each send
/// half a header; each comes back with when it was opened.
async fn open_half_open(address: &str, n: usize) -> Vec<(TcpStream, Instant)> {
    futures::stream::iter(0..n)
        .map(|_| async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            let opened = Instant::now();
            stream.write_all(HALF_HEADER).await.expect("half a header");
            (stream, opened)
        })
        .buffer_unordered(200)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_leave_health_fast_and_are_closed_by_the_header_timeout() {
    // Long enough that opening the connections (about 1 s, over 6 s on a loaded machine)
    // leaves a window in which all of them are held.
    let timeout = Duration::from_secs(20);
    raise_open_file_limit(2 * HALF_OPEN as u64 + 1_000);
    let process = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &["--header-read-timeout", "20", "--max-connections", "4000"],
    );
    let client = fresh_client();
    process.wait_ready(&client).await;

    let started = Instant::now();
    let slow = open_half_open(addr(&process.url), HALF_OPEN).await;
    let last_opened = slow.iter().map(|(_, at)| *at).max().expect("opened");
    let first_opened = slow.iter().map(|(_, at)| *at).min().expect("opened");
    assert!(
        last_opened - first_opened < timeout / 2,
        "opening {HALF_OPEN} connections took {:?}",
        last_opened - first_opened
    );
    let closes: Vec<_> = slow
        .into_iter()
        .map(|(stream, opened)| tokio::spawn(async move { (opened, closed_at(stream).await) }))
        .collect();
    eprintln!(
        "{HALF_OPEN} half-open connections in {:?}",
        started.elapsed()
    );

    // While every slow connection is held: probes on fresh connections, and ordinary clients.
    let metrics = process.metrics(&client).await;
    let open = metric_value(&metrics, "wick_connections_open").expect("open connections");
    assert!(
        open >= HALF_OPEN as f64,
        "the server holds {open} connections"
    );
    let window_end = first_opened + timeout - Duration::from_millis(500);
    let mut latencies = Vec::new();
    let mut served = 0;
    while Instant::now() < window_end {
        let t = Instant::now();
        let r = client
            .get(format!("{}/health", process.url))
            .send()
            .await
            .expect("health");
        assert_eq!(r.status(), 200);
        latencies.push(t.elapsed());
        if latencies.len() % 5 == 0 {
            let r = client
                .post(format!("{}/predict", process.url))
                .json(&json!({"inputs": ["an ordinary client", "served as usual"]}))
                .send()
                .await
                .expect("predict");
            assert_eq!(r.status(), 200);
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let probes = latencies.len();
    let p95 = latencies[probes * 95 / 100];
    eprintln!(
        "{probes} health probes: median {:?}, p95 {p95:?}, worst {:?}; {served} predictions",
        latencies[probes / 2],
        latencies[probes - 1]
    );
    assert!(probes >= 20, "only {probes} probes fit in the window");
    assert!(served >= 4, "only {served} predictions were served");
    // The 95th percentile: on a shared machine a single probe can wait for a CPU longer.
    assert!(
        p95 < Duration::from_millis(50),
        "/health took {p95:?} (p95) with {HALF_OPEN} half-open connections"
    );

    // Every slow connection is closed at the header timeout: not before, and not long after.
    let mut latest = Duration::ZERO;
    for close in closes {
        let (opened, closed) = tokio::time::timeout(timeout + Duration::from_secs(10), close)
            .await
            .expect("a half-open connection was never closed")
            .expect("reader");
        let held = closed - opened;
        assert!(
            held + Duration::from_millis(50) >= timeout,
            "closed after {held:?}"
        );
        latest = latest.max(held);
    }
    eprintln!("the slowest half-open connection was closed after {latest:?}");
    assert!(
        latest < timeout + Duration::from_millis(1_000),
        "a half-open connection stayed {latest:?}"
    );
    let metrics = process.metrics(&client).await;
    let timed_out = metric_value(
        &metrics,
        "wick_connections_timed_out_total{phase=\"header\"}",
    )
    .expect("timed out");
    assert!(timed_out >= HALF_OPEN as f64, "{timed_out} timed out");
    assert!(metric_value(&metrics, "wick_connections_open").expect("open") < 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_a_503_at_once() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
        .to_string();
    let process = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &[
            "--max-connections",
            "4",
            "--header-read-timeout",
            "30",
            "--metrics-port",
            &metrics_port,
        ],
    );
    let client = fresh_client();
    process.wait_ready(&client).await;
    let address = addr(&process.url).to_string();
    // The readiness client keeps nothing open, but its last connection may still be closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&address).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let t = Instant::now();
    let mut extra = TcpStream::connect(&address).await.expect("connect");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), extra.read_to_end(&mut answer))
        .await
        .expect("refused at once, not held")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\"type\":\"overloaded\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    eprintln!("refused in {:?}", t.elapsed());

    // The metrics port has places of its own: scrapes go on while the main port is full.
    let text = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("a scrape while the main port is full")
        .text()
        .await
        .expect("text");
    assert!(metric_value(&text, "wick_connections_refused_total") >= Some(1.0));

    // A connection that closes frees its place.
    drop(held.pop());
    let started = Instant::now();
    loop {
        match client.get(format!("{}/metrics", process.url)).send().await {
            Ok(r) if r.status() == 200 => {
                let text = r.text().await.expect("text");
                let refused = metric_value(&text, "wick_connections_refused_total");
                assert!(refused >= Some(1.0), "{refused:?}");
                break;
            }
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(2), "no place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_closes_at_its_timeout_and_a_slow_header_at_the_header_timeout() {
    let process = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &["--keep-alive-timeout", "0.5", "--header-read-timeout", "2"],
    );
    process.wait_ready(&fresh_client()).await;
    let address = addr(&process.url).to_string();
    let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    // Idle after a response: closed at the keep-alive timeout.
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    assert_eq!(read_response(&mut stream).await.0, 200);
    let answered = Instant::now();
    let idle = closed_at(stream).await - answered;
    assert!(
        idle >= Duration::from_millis(450) && idle < Duration::from_millis(1_500),
        "idle keep-alive connection closed after {idle:?}"
    );

    // Half of the next header after a pause: the header timeout runs from its first byte.
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    assert_eq!(read_response(&mut stream).await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(HALF_HEADER).await.expect("write");
    let began = Instant::now();
    let held = closed_at(stream).await - began;
    assert!(
        held >= Duration::from_millis(1_950) && held < Duration::from_millis(3_000),
        "a header begun on an idle connection was cut after {held:?}"
    );

    // A request that runs longer than the keep-alive timeout is answered on its connection.
    let client = reqwest::Client::new();
    let long = "a long input that keeps the model busy for a while ".repeat(30);
    // 64 inputs of 256 tokens: well over a second on two cores, even with AVX-512.
    let inputs: Vec<String> = (0..64).map(|i| format!("{i} {long}")).collect();
    let t = Instant::now();
    let r = client
        .post(format!("{}/predict", process.url))
        .json(&json!({ "inputs": inputs }))
        .send()
        .await
        .expect("long request");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["outputs"].as_array().map(Vec::len), Some(64));
    eprintln!("a long request took {:?}", t.elapsed());
    assert!(
        t.elapsed() > Duration::from_millis(500),
        "the long request was too quick to outlast the keep-alive timeout"
    );
}

/// An event stream silent for longer than the keep-alive timeout (a long prompt's prefill,
/// with pings far apart) is in flight all along: it is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_live_event_stream_outlasts_the_keep_alive_timeout() {
    let keep_alive = Duration::from_millis(100);
    let mut config = quick_config(real_model("smollm2-135m-instruct"));
    config.keep_alive_timeout = keep_alive.as_secs_f64();
    config.sse_ping_interval = 30.0;
    let server = TestServer::start(config).await;
    // About 900 prompt tokens: a prefill of a second or more with nothing to send, on
    // however fast a machine.
    let prompt = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(64);
    let response = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"messages": [{"role": "user", "content": prompt}],
                      "temperature": 0, "max_tokens": 8, "stream": true}))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = Vec::new();
    let mut longest_silence = Duration::ZERO;
    let mut last = Instant::now();
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.expect("the stream broke"));
        longest_silence = longest_silence.max(last.elapsed());
        last = Instant::now();
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
    eprintln!("longest silence in the stream: {longest_silence:?}");
    assert!(
        longest_silence > 3 * keep_alive,
        "the stream was never silent for long ({longest_silence:?}); lengthen the prompt"
    );
    server.stop().await.expect("stop");
}
