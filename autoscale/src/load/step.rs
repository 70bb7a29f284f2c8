//! One measurement step: `concurrency` clients in a closed loop for a fixed time, wick's
//! `/metrics` scraped twice a second, the process's CPU read at both ends of the window.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cpu;
use super::prom;
use super::workload::{Outcome, Workload};
use crate::curve::{Point, Quantiles};

/// The share of a step given to ramping up; requests finishing in it are not counted.
const WARM_FRACTION: f64 = 0.15;
const SCRAPE_EVERY: Duration = Duration::from_millis(500);

/// One scrape of the series the step records.
#[derive(Debug, Clone, Copy)]
struct Scrape {
    saturation: f64,
    queue_depth: f64,
    requests_per_second: f64,
    latency_p99_s: f64,
    sequences_waiting: f64,
    sequences_running: f64,
    kv_cache_usage: f64,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let v = |name: &str| prom::value(text, name, &[]);
        Self {
            saturation: v("wick_saturation"),
            queue_depth: v("wick_queue_depth"),
            requests_per_second: v("wick_requests_per_second"),
            latency_p99_s: prom::value(text, "wick_latency_seconds", &[("quantile", "0.99")]),
            sequences_waiting: v("wick_sequences_waiting"),
            sequences_running: v("wick_sequences_running"),
            kv_cache_usage: v("wick_kv_cache_usage_ratio"),
        }
    }
}

/// Everything a step needs to reach the server.
pub struct Target<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a str,
    pub pid: Option<u32>,
}

/// Runs one step and summarises it as a curve point.
pub async fn run(
    target: &Target<'_>,
    workload: &Workload,
    concurrency: usize,
    seconds: f64,
) -> Point {
    let started = Instant::now();
    let warm = started + Duration::from_secs_f64(seconds * WARM_FRACTION);
    let deadline = started + Duration::from_secs_f64(seconds);
    let counter = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (target.client.clone(), target.url.to_string());
            let (workload, counter) = (workload.clone(), counter.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    outcomes.push(workload.run(&client, &url, i).await);
                }
                outcomes
            })
        })
        .collect();
    let (scrapes, cpu_cores) = observe(target, warm, deadline).await;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap_or_default());
    }
    summarise(
        &outcomes,
        &scrapes,
        cpu_cores,
        concurrency,
        workload.is_chat(),
        (warm, deadline),
    )
}

/// Scrapes `/metrics` until the deadline and reads the CPU time from `warm` to the deadline.
async fn observe(target: &Target<'_>, warm: Instant, deadline: Instant) -> (Vec<Scrape>, f64) {
    let mut scrapes = Vec::new();
    let mut cpu_from = None;
    while Instant::now() + SCRAPE_EVERY < deadline {
        tokio::time::sleep(SCRAPE_EVERY).await;
        if Instant::now() >= warm {
            if cpu_from.is_none() {
                cpu_from = target.pid.and_then(cpu::sample);
            }
            if let Some(scrape) = scrape(target).await {
                scrapes.push(scrape);
            }
        }
    }
    tokio::time::sleep_until(deadline.into()).await;
    let cores = match (cpu_from, target.pid.and_then(cpu::sample)) {
        (Some(from), Some(to)) => cpu::cores_between(from, to),
        _ => f64::NAN,
    };
    (scrapes, cores)
}

async fn scrape(target: &Target<'_>) -> Option<Scrape> {
    let response = target
        .client
        .get(format!("{}/metrics", target.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(Scrape::parse(&response.text().await.ok()?))
}

fn summarise(
    outcomes: &[Outcome],
    scrapes: &[Scrape],
    cpu_cores: f64,
    concurrency: usize,
    chat: bool,
    (warm, deadline): (Instant, Instant),
) -> Point {
    let counted: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.finished.is_some_and(|f| f >= warm))
        .collect();
    let ok: Vec<&Outcome> = counted.iter().copied().filter(|o| o.ok).collect();
    let window = deadline.duration_since(warm).as_secs_f64();
    let in_window = ok
        .iter()
        .filter(|o| o.finished.is_some_and(|f| f <= deadline))
        .count();
    let ms = |values: Vec<f64>| quantiles(values.into_iter().map(|v| v * 1e3).collect());
    let latency = ms(ok.iter().map(|o| o.latency_s).collect());
    let ttft = ms(ok.iter().filter_map(|o| o.ttft_s).collect());
    let itl = ms(ok.iter().flat_map(|o| o.itl_s.iter().copied()).collect());
    let tokens: u64 = ok.iter().map(|o| o.tokens).sum();
    // Window gauges (saturation, rate, latency quantiles) from the last scrape of the step;
    // instantaneous ones (queue, sequences, KV) averaged over the step.
    let last = scrapes.last();
    let gauge = |f: fn(&Scrape) -> f64| last.map(f).unwrap_or(f64::NAN);
    let mean = |f: fn(&Scrape) -> f64| mean(scrapes.iter().map(f));
    Point {
        concurrency: concurrency as f64,
        seconds: window,
        requests: counted.len() as f64,
        errors: (counted.len() - ok.len()) as f64,
        throughput_rps: throughput(&ok, in_window, window, concurrency, chat),
        latency,
        cpu_cores,
        saturation: gauge(|s| s.saturation),
        queue_depth: mean(|s| s.queue_depth),
        requests_per_second: gauge(|s| s.requests_per_second),
        latency_p99_gauge_ms: gauge(|s| s.latency_p99_s * 1e3),
        ttft,
        itl,
        tokens_per_s: if tokens > 0 {
            tokens as f64 / window
        } else {
            f64::NAN
        },
        sequences_waiting: mean(|s| s.sequences_waiting),
        sequences_running: mean(|s| s.sequences_running),
        kv_cache_usage: mean(|s| s.kv_cache_usage),
    }
}

/// Requests per second: completions in the window; for chat, whose streams last long enough
/// that a step holds few whole ones, Little's law on the closed loop (clients / mean latency).
fn throughput(
    ok: &[&Outcome],
    in_window: usize,
    window: f64,
    concurrency: usize,
    chat: bool,
) -> f64 {
    if !chat {
        return in_window as f64 / window;
    }
    let latency = mean(ok.iter().map(|o| o.latency_s));
    if latency.is_nan() || latency <= 0.0 {
        return 0.0;
    }
    concurrency as f64 / latency
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Nearest-rank P50/P90/P99; NaN when there are no samples.
pub fn quantiles(mut values: Vec<f64>) -> Quantiles {
    values.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if values.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    Quantiles {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let q = quantiles((1..=100).map(f64::from).rev().collect());
        assert_eq!((q.p50, q.p90, q.p99), (50.0, 90.0, 99.0));
        assert!(quantiles(vec![]).p99.is_nan());
    }

    #[test]
    fn scrape_reads_every_signal() {
        let text = "wick_saturation 1.5\nwick_queue_depth 3\nwick_requests_per_second 200\n\
            wick_latency_seconds{quantile=\"0.99\"} 0.02\nwick_sequences_waiting 2\n\
            wick_sequences_running 16\nwick_kv_cache_usage_ratio 0.25\n";
        let s = Scrape::parse(text);
        assert_eq!(s.saturation, 1.5);
        assert_eq!(s.latency_p99_s, 0.02);
        assert_eq!(s.kv_cache_usage, 0.25);
    }
}
