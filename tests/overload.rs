//! 20x its measured capacity for 10 s: every request is answered (2xx, or 429/503 with
//! Retry-After), memory stays bounded, and latency is back to normal right after.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn body(i: usize) -> serde_json::Value {
    let inputs: Vec<String> = (0..4)
        .map(|k| {
            format!("request {i} input {k}: a sentence of moderate length for the overload test")
        })
        .collect();
    json!({"inputs": inputs})
}

async fn median_latency(client: &reqwest::Client, url: &str, n: usize) -> f64 {
    let mut latencies = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let r = client
            .post(format!("{url}/predict"))
            .json(&body(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(t.elapsed().as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    latencies[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_times_capacity_is_answered_bounded_and_recovers() {
    let wick = Process::spawn(
        &real_model("all-minilm-l6-v2"),
        &["--max-pending-inputs", "256"],
    );
    let client = reqwest::Client::new();
    wick.wait_ready(&client).await;
    let baseline = median_latency(&client, &wick.url, 15).await;

    // Capacity: closed loop, 8 clients, 2 s.
    let deadline = Instant::now() + Duration::from_secs(2);
    let done = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for c in 0..8 {
        let (client, url, done) = (client.clone(), wick.url.clone(), done.clone());
        loops.push(tokio::spawn(async move {
            let mut i = c * 10_000;
            while Instant::now() < deadline {
                let r = client
                    .post(format!("{url}/predict"))
                    .json(&body(i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for l in loops {
        l.await.unwrap();
    }
    let capacity = done.load(Ordering::Relaxed) as f64 / 2.0;
    let idle_rss = wick.rss_kib();

    // Overload: open loop at 20x capacity for 10 s.
    let rate = 20.0 * capacity;
    let total = (rate * 10.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let peak_rss = Arc::new(AtomicU64::new(idle_rss));
    let mut requests = Vec::with_capacity(total);
    let mut next = Instant::now();
    for i in 0..total {
        if i % 64 == 0 {
            peak_rss.fetch_max(wick.rss_kib(), Ordering::Relaxed);
        }
        next += interval;
        tokio::time::sleep_until(next.into()).await;
        let (client, url) = (client.clone(), wick.url.clone());
        requests.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client
                .post(format!("{url}/predict"))
                .json(&body(i))
                .send()
                .await;
            match r {
                Ok(r) => {
                    let retry = r.headers().contains_key("retry-after");
                    (Some(r.status().as_u16()), retry, t.elapsed())
                }
                Err(_) => (None, false, t.elapsed()),
            }
        }));
    }
    let sent_for = started.elapsed();
    let (mut ok, mut shed, mut slowest_shed) = (0usize, 0usize, Duration::ZERO);
    for r in requests {
        match r.await.unwrap() {
            (Some(200), _, _) => ok += 1,
            (Some(429 | 503), true, took) => {
                shed += 1;
                slowest_shed = slowest_shed.max(took);
            }
            other => panic!("unanswered or wrong answer under overload: {other:?}"),
        }
    }
    peak_rss.fetch_max(wick.rss_kib(), Ordering::Relaxed);
    let peak = peak_rss.load(Ordering::Relaxed);
    println!(
        "capacity {capacity:.1} req/s; sent {total} at {:.0} req/s over {:.1} s: {ok} ok, {shed} shed \
         (slowest rejection {:.1} ms); RSS idle {} MiB, peak {} MiB",
        total as f64 / sent_for.as_secs_f64(),
        sent_for.as_secs_f64(),
        slowest_shed.as_secs_f64() * 1e3,
        idle_rss / 1024,
        peak / 1024
    );
    assert!(shed > ok, "most of a 20x load is shed");
    assert!(
        ok as f64 >= capacity * 5.0,
        "it kept serving at capacity meanwhile: {ok}"
    );
    // The bound: admission caps pending work at 256 inputs, so memory cannot follow the load.
    assert!(
        peak < idle_rss + 200 * 1024,
        "RSS grew from {idle_rss} KiB to {peak} KiB"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = median_latency(&client, &wick.url, 15).await;
    println!(
        "median latency before {:.1} ms, after {:.1} ms",
        baseline * 1e3,
        after * 1e3
    );
    assert!(
        after <= 2.0 * baseline + 0.005,
        "recovered: {after} vs {baseline}"
    );
}
