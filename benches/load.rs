//! Load generator: drives a wick server over HTTP on loopback and prints, per point,
//! throughput, P50/P90/P99 latency, errors and the server's RSS.
//!
//!   cargo bench --bench load                       # starts target/release/wick itself
//!   cargo bench --bench load -- --url http://127.0.0.1:8080 --seconds 10
//!
//! Workloads (deterministic corpora, the shapes of the performance table in README):
//!   E1  one ~13-token sentence per request, concurrency 1, 8, 32
//!   E2  32 sentences of 10-41 tokens per request, concurrency 4
//!   E3  one ~195-token paragraph per request, concurrency 8
//!   --sweep: E1 at concurrency 1, 2, 4, 8, 16, 32, 64, printing wick_saturation beside P99,
//!            to place the latency knee (see README, "Autoscaling").
//!   --ramp:  E1 open loop (fixed arrival rate, like many independent clients) at 20% ... 120%
//!            of the measured capacity, printing wick_saturation beside P99.
//! Every run is bounded: a fixed number of seconds per point, then it stops by itself.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Args {
    url: Option<String>,
    seconds: f64,
    model: String,
    only: Option<String>,
    sweep: bool,
    ramp: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: None,
        seconds: 10.0,
        model: "models/all-minilm-l6-v2".into(),
        only: None,
        sweep: false,
        ramp: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => args.url = it.next(),
            "--seconds" => args.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(10.0),
            "--model" => args.model = it.next().unwrap_or(args.model),
            "--only" => args.only = it.next(),
            "--sweep" => args.sweep = true,
            "--ramp" => args.ramp = true,
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    args
}

/// Deterministic words so every run sends the same text.
fn words(seed: usize, n: usize) -> String {
    const VOCAB: &[&str] = &[
        "the",
        "model",
        "server",
        "answers",
        "requests",
        "quickly",
        "under",
        "load",
        "while",
        "kubernetes",
        "scales",
        "pods",
        "on",
        "latency",
        "and",
        "queue",
        "depth",
        "metrics",
        "from",
        "prometheus",
        "every",
        "second",
        "with",
        "care",
        "for",
        "memory",
        "limits",
    ];
    (0..n)
        .map(|i| VOCAB[(seed * 7 + i * 13 + i / 3) % VOCAB.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn e1_body(i: usize) -> serde_json::Value {
    json!({"inputs": format!("{}.", words(i, 11))})
}

fn e2_body(i: usize) -> serde_json::Value {
    let inputs: Vec<String> = (0..32)
        .map(|k| words(i * 32 + k, 8 + (k * 31 + i) % 32))
        .collect();
    json!({"inputs": inputs})
}

fn e3_body(i: usize) -> serde_json::Value {
    json!({"inputs": format!("{}.", words(i, 185))})
}

struct Point {
    name: &'static str,
    concurrency: usize,
    items_per_request: usize,
    body: fn(usize) -> serde_json::Value,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Reads one series' value from Prometheus text output.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// Open loop: requests leave at a fixed rate whatever the answers, for `seconds`.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: f64,
    seconds: f64,
) -> (Vec<f64>, usize) {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        next += interval;
        tokio::time::sleep_until(next.into()).await;
        let (client, url) = (client.clone(), format!("{url}/predict"));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match client.post(url).json(&e1_body(i)).send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    Some(t.elapsed().as_secs_f64())
                }
                _ => None,
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await.expect("request task") {
            Some(l) => latencies.push(l),
            None => errors += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    (latencies, errors)
}

async fn ramp(client: &reqwest::Client, url: &str, seconds: f64) {
    // Capacity: closed loop at concurrency 8.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut workers = Vec::new();
    for w in 0..8 {
        let (client, url) = (client.clone(), format!("{url}/predict"));
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .json(&e1_body(w * 100_000 + n))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut done = 0;
    for w in workers {
        done += w.await.expect("worker");
    }
    let capacity = done as f64 / 5.0;
    println!("capacity {capacity:.0} req/s (E1, closed loop, c=8)");
    for fraction in [0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.2] {
        let (latencies, errors) = open_loop(client, url, fraction * capacity, seconds).await;
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        println!(
            "load {:>4.0}% ({:>5.0} req/s offered)  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {:<4} saturation {:.2}  busy {:.2}",
            fraction * 100.0,
            fraction * capacity,
            percentile(&latencies, 0.5) * 1e3,
            percentile(&latencies, 0.99) * 1e3,
            errors,
            series(&text, "wick_saturation"),
            series(&text, "wick_worker_busy_ratio"),
        );
    }
}

async fn run_point(
    client: &reqwest::Client,
    url: &str,
    point: &Point,
    seconds: f64,
    pid: Option<u32>,
) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = pid.map(|pid| {
        let peak = peak_rss.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..point.concurrency {
        let client = client.clone();
        let url = format!("{url}/predict");
        let counter = counter.clone();
        let make = point.body;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let body = make(i);
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed().as_secs_f64());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(s) = sampler {
        let _ = s.await;
    }
    latencies.sort_by(f64::total_cmp);
    let requests = latencies.len();
    let rss = peak_rss.load(std::sync::atomic::Ordering::Relaxed);
    let scraped = match client.get(format!("{url}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let gauge = |name: &str| series(&scraped, name);
    println!(
        "{:<3} c={:<3} {:>8.1} req/s {:>9.1} items/s  p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  errors {:<4} peak RSS {:<8} saturation {:.2} busy {:.2}",
        point.name,
        point.concurrency,
        requests as f64 / elapsed,
        (requests * point.items_per_request) as f64 / elapsed,
        percentile(&latencies, 0.5) * 1e3,
        percentile(&latencies, 0.9) * 1e3,
        percentile(&latencies, 0.99) * 1e3,
        errors,
        if rss > 0 { format!("{:.0} MiB", rss as f64 / 1024.0) } else { "n/a".into() },
        gauge("wick_saturation"),
        gauge("wick_worker_busy_ratio"),
    );
}

fn start_server(model: &str) -> (Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/wick");
    let child = Command::new(bin)
        .args([
            "serve",
            "--model",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .env("WICK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("build wick first: cargo build --release");
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let (mut child, url) = match &args.url {
        Some(url) => (None, url.clone()),
        None => {
            let (child, url) = start_server(&args.model);
            (Some(child), url)
        }
    };
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{url}/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "server not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.as_ref().map(Child::id);
    if let Some(pid) = pid {
        println!(
            "ready in {:.2} s (process start to /ready 200); idle RSS {} MiB",
            started.elapsed().as_secs_f64(),
            rss_kib(pid).unwrap_or(0) / 1024
        );
    }
    let points = [
        Point {
            name: "E1",
            concurrency: 1,
            items_per_request: 1,
            body: e1_body,
        },
        Point {
            name: "E1",
            concurrency: 8,
            items_per_request: 1,
            body: e1_body,
        },
        Point {
            name: "E1",
            concurrency: 32,
            items_per_request: 1,
            body: e1_body,
        },
        Point {
            name: "E2",
            concurrency: 4,
            items_per_request: 32,
            body: e2_body,
        },
        Point {
            name: "E3",
            concurrency: 8,
            items_per_request: 1,
            body: e3_body,
        },
    ];
    let sweep: Vec<Point> = [1, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .map(|concurrency| Point {
            name: "E1",
            concurrency,
            items_per_request: 1,
            body: e1_body,
        })
        .collect();
    let points: &[Point] = if args.sweep { &sweep } else { &points };
    if args.ramp {
        ramp(&client, &url, args.seconds).await;
    }
    for point in points.iter().filter(|_| !args.ramp) {
        if args.only.as_deref().is_some_and(|o| o != point.name) {
            continue;
        }
        run_point(&client, &url, point, args.seconds, pid).await;
    }
    if let Some(child) = child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
