//! Scrapes never hold up inference: with the latency window full, the model thread's
//! bookkeeping after each batch does not wait while `/metrics` is rendered in a tight loop, and
//! on a live server scraping in a tight loop leaves the forward-pass time and the clients'
//! latency where they were without scrapes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wick::metrics::Metrics;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The model thread records every batch (`observe_busy`) and handlers every answer
/// (`observe_latency`) while another thread renders the metrics back to back, each render
/// sorting a window of 100,000 latencies. A writer must never wait for a render: its calls stay
/// far shorter than one render, which is what they took when both shared one lock.
#[test]
fn the_model_thread_never_waits_for_a_scrape() {
    let metrics = Arc::new(Metrics::new(Duration::from_secs(600), 32.0));
    for i in 0..100_000u32 {
        metrics.observe_latency(f64::from(i % 997) / 1000.0);
        let now = Instant::now();
        metrics.observe_busy(now, now);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let renders = Arc::new(AtomicUsize::new(0));
    let scraper = {
        let (metrics, stop, renders) = (metrics.clone(), stop.clone(), renders.clone());
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let text = metrics.render();
                took.push(started.elapsed());
                assert!(text.contains("wick_latency_seconds_count"));
                renders.fetch_add(1, Ordering::Relaxed);
            }
            took
        })
    };
    while renders.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut waits = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let started = Instant::now();
        metrics.observe_busy(started, started);
        metrics.observe_latency(0.001);
        waits.push(started.elapsed());
        // About the pace of small batches.
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    let mut renders = scraper.join().expect("scraper");
    renders.sort();
    waits.sort();
    let render = percentile(&renders, 0.5);
    let (p50, p90, p99) = (
        percentile(&waits, 0.5),
        percentile(&waits, 0.9),
        percentile(&waits, 0.99),
    );
    eprintln!(
        "{} renders, median {render:?}; {} writer calls: p50 {p50:?} p90 {p90:?} p99 {p99:?}",
        renders.len(),
        waits.len()
    );
    assert!(renders.len() >= 10, "only {} renders", renders.len());
    assert!(
        render > Duration::from_micros(500),
        "a render of a full window should take a while: {render:?}"
    );
    // Sharing a lock, a writer arriving at a random moment waits about half a render, and a
    // tenth of them nearly a whole one.
    assert!(
        p90 < render / 10 && p90 < Duration::from_micros(500),
        "writers wait on scrapes: p90 {p90:?} against a render of {render:?}"
    );
}

/// Sum and count of a histogram in Prometheus text.
fn histogram(text: &str, name: &str) -> (f64, f64) {
    let sum = metric_value(text, &format!("{name}_sum")).expect("sum");
    let count = metric_value(text, &format!("{name}_count")).expect("count");
    (sum, count)
}

/// A wick process serving the embedding model with one math thread.
struct Live {
    process: Process,
    client: reqwest::Client,
    url: String,
}

impl Live {
    async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await;
        r.expect("metrics").text().await.expect("text")
    }
}

/// Closed-loop clients for `seconds`; returns each request's latency. Every answer must be 200.
async fn load(server: &Live, clients: usize, seconds: f64) -> Vec<Duration> {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url) = (server.client.clone(), format!("{}/predict", server.url));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < until {
                let text = format!("client {c} asks question {i} about the quarterly report");
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .json(&json!({ "inputs": [text, "a second sentence in the same request"] }))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.expect("body");
                latencies.push(started.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    all.sort();
    all
}

/// One measured phase: forward-pass mean from the server's histogram, and client latencies.
struct Phase {
    forward_mean: f64,
    batches: f64,
    p50: Duration,
    p90: Duration,
}

async fn measure(server: &Live, scrape: bool) -> Phase {
    let before = histogram(&server.metrics().await, "wick_inference_duration_seconds");
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = scrape.then(|| {
        let (client, url, stop) = (
            server.client.clone(),
            format!("{}/metrics", server.url),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut scrapes = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let r = client.get(&url).send().await.expect("scrape");
                assert_eq!(r.status(), 200);
                let _ = r.text().await.expect("text");
                scrapes += 1;
                // Hundreds of scrapes a second (Prometheus makes one every 15 s), without the
                // scraper itself taking a whole core from the model on a 2-core machine.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            scrapes
        })
    });
    let latencies = load(server, 4, 4.0).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        let scrapes = scraper.await.expect("scraper");
        assert!(scrapes > 200, "only {scrapes} scrapes");
        eprintln!("{scrapes} scrapes");
    }
    let after = histogram(&server.metrics().await, "wick_inference_duration_seconds");
    let batches = after.1 - before.1;
    Phase {
        forward_mean: (after.0 - before.0) / batches,
        batches,
        p50: percentile(&latencies, 0.5),
        p90: percentile(&latencies, 0.9),
    }
}

/// The phases' forward-pass mean weighted by batches, and the means of their quantiles.
fn combine(phases: &[Phase]) -> Phase {
    let batches: f64 = phases.iter().map(|p| p.batches).sum();
    let n = phases.len() as u32;
    Phase {
        forward_mean: phases
            .iter()
            .map(|p| p.forward_mean * p.batches)
            .sum::<f64>()
            / batches,
        batches,
        p50: phases.iter().map(|p| p.p50).sum::<Duration>() / n,
        p90: phases.iter().map(|p| p.p90).sum::<Duration>() / n,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_in_a_tight_loop_leaves_inference_time_where_it_was() {
    // One thread for the model's math leaves the other core to the clients and the scraper,
    // so what is compared is waiting, not two loads sharing one core.
    let process = Process::spawn(&real_model("all-minilm-l6-v2"), &["--threads", "1"]);
    let client = reqwest::Client::new();
    process.wait_ready(&client).await;
    let server = Live {
        url: process.url.clone(),
        process,
        client,
    };
    // A first pass settles the allocator and caches; then quiet and scraped phases alternate,
    // so a drift in the machine's other load falls on both alike.
    let _ = load(&server, 4, 2.0).await;
    let mut quiet = Vec::new();
    let mut scraped = Vec::new();
    for _ in 0..2 {
        quiet.push(measure(&server, false).await);
        scraped.push(measure(&server, true).await);
    }
    let (quiet, scraped) = (combine(&quiet), combine(&scraped));
    eprintln!(
        "forward mean {:.2} ms over {} batches -> {:.2} ms over {}; client p50 {:?} -> {:?}, \
         p90 {:?} -> {:?}",
        quiet.forward_mean * 1e3,
        quiet.batches,
        scraped.forward_mean * 1e3,
        scraped.batches,
        quiet.p50,
        scraped.p50,
        quiet.p90,
        scraped.p90
    );
    assert!(
        scraped.forward_mean < quiet.forward_mean * 1.4,
        "forward passes slowed under scrapes: {:.3} ms -> {:.3} ms",
        quiet.forward_mean * 1e3,
        scraped.forward_mean * 1e3
    );
    assert!(
        scraped.p50 < quiet.p50.mul_f64(1.4) + Duration::from_millis(1),
        "client latency moved under scrapes: p50 {:?} -> {:?}",
        quiet.p50,
        scraped.p50
    );
    assert!(server.process.rss_kib() > 0);
}
