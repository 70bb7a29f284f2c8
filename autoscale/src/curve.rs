//! One pod's measured capacity curve: a row per concurrency step (the CSV the `capacity` tool
//! writes and the replay reads), the knee, and interpolation by offered load.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Every column of the capacity CSV, in order. Chat-only columns are empty for encoders.
pub const COLUMNS: &[&str] = &[
    "concurrency",
    "seconds",
    "requests",
    "errors",
    "throughput_rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "cpu_cores",
    "wick_saturation",
    "wick_queue_depth",
    "wick_requests_per_second",
    "wick_latency_p99_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "tokens_per_s",
    "wick_sequences_waiting",
    "wick_sequences_running",
    "wick_kv_cache_usage_ratio",
];

/// Latency quantiles of one kind of latency at one load, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Quantiles {
    fn lerp(a: Self, b: Self, t: f64) -> Self {
        Self {
            p50: lerp(a.p50, b.p50, t),
            p90: lerp(a.p90, b.p90, t),
            p99: lerp(a.p99, b.p99, t),
        }
    }

    /// Shifts every quantile by `ms` (time spent in a backlog ahead of the measured queue).
    pub fn delayed(self, ms: f64) -> Self {
        Self {
            p50: self.p50 + ms,
            p90: self.p90 + ms,
            p99: self.p99 + ms,
        }
    }
}

/// One step of the measurement: a closed loop of `concurrency` clients for `seconds`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub concurrency: f64,
    pub seconds: f64,
    pub requests: f64,
    pub errors: f64,
    pub throughput_rps: f64,
    /// Request latency (encoders) or whole-stream latency (chat).
    pub latency: Quantiles,
    pub cpu_cores: f64,
    pub saturation: f64,
    pub queue_depth: f64,
    pub requests_per_second: f64,
    pub latency_p99_gauge_ms: f64,
    pub ttft: Quantiles,
    pub itl: Quantiles,
    pub tokens_per_s: f64,
    pub sequences_waiting: f64,
    pub sequences_running: f64,
    pub kv_cache_usage: f64,
}

impl Point {
    fn values(&self) -> [f64; 23] {
        [
            self.concurrency,
            self.seconds,
            self.requests,
            self.errors,
            self.throughput_rps,
            self.latency.p50,
            self.latency.p90,
            self.latency.p99,
            self.cpu_cores,
            self.saturation,
            self.queue_depth,
            self.requests_per_second,
            self.latency_p99_gauge_ms,
            self.ttft.p50,
            self.ttft.p90,
            self.ttft.p99,
            self.itl.p50,
            self.itl.p90,
            self.itl.p99,
            self.tokens_per_s,
            self.sequences_waiting,
            self.sequences_running,
            self.kv_cache_usage,
        ]
    }

    fn from_values(v: &[f64]) -> Self {
        let q = |i: usize| Quantiles {
            p50: v[i],
            p90: v[i + 1],
            p99: v[i + 2],
        };
        Self {
            concurrency: v[0],
            seconds: v[1],
            requests: v[2],
            errors: v[3],
            throughput_rps: v[4],
            latency: q(5),
            cpu_cores: v[8],
            saturation: v[9],
            queue_depth: v[10],
            requests_per_second: v[11],
            latency_p99_gauge_ms: v[12],
            ttft: q(13),
            itl: q(16),
            tokens_per_s: v[19],
            sequences_waiting: v[20],
            sequences_running: v[21],
            kv_cache_usage: v[22],
        }
    }

    fn lerp(a: &Self, b: &Self, t: f64) -> Self {
        let (va, vb) = (a.values(), b.values());
        let mixed: Vec<f64> = va.iter().zip(vb).map(|(x, y)| lerp(*x, y, t)).collect();
        let mut p = Self::from_values(&mixed);
        p.latency = Quantiles::lerp(a.latency, b.latency, t);
        p
    }
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    a + (b - a) * t
}

/// What the measurement knew besides the rows: written beside the CSV as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub model: String,
    /// `embeddings` or `chat`.
    pub kind: String,
    /// Median of the measured process start -> first `/ready` 200, seconds.
    pub time_to_ready_s: f64,
    pub time_to_ready_runs_s: Vec<f64>,
    pub knee_concurrency: f64,
    pub knee_throughput_rps: f64,
    /// P99 at the knee: request latency, or for chat time to first token.
    pub knee_p99_ms: f64,
    pub max_throughput_rps: f64,
    /// `--metrics-window` wick ran with: the step length, so window gauges cover one step.
    pub metrics_window_s: f64,
    pub step_s: f64,
    /// `--saturation-knee` wick ran with (pending inputs or sequences at saturation 1.0).
    pub saturation_knee: f64,
    pub cpus: usize,
    /// The 1-minute load average before the run: a busy machine makes the numbers noisy.
    pub loadavg_before: f64,
}

/// A measured curve, ready to interpolate: steps sorted by concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub points: Vec<Point>,
}

impl Curve {
    pub fn new(mut points: Vec<Point>) -> Result<Self> {
        points.retain(|p| p.throughput_rps > 0.0);
        if points.is_empty() {
            bail!("a capacity curve needs at least one step with throughput");
        }
        points.sort_by(|a, b| a.concurrency.total_cmp(&b.concurrency));
        Ok(Self { points })
    }

    pub fn to_csv(&self) -> String {
        let mut out = COLUMNS.join(",");
        out.push('\n');
        for p in &self.points {
            let row: Vec<String> = p.values().iter().map(|v| format_value(*v)).collect();
            let _ = writeln!(out, "{}", row.join(","));
        }
        out
    }

    pub fn from_csv(text: &str) -> Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().context("empty CSV")?;
        if header.split(',').collect::<Vec<_>>() != COLUMNS {
            bail!("unexpected CSV header: {header}");
        }
        let mut points = Vec::new();
        for (i, line) in lines.enumerate() {
            let values: Vec<f64> = line
                .split(',')
                .map(|v| {
                    if v.is_empty() {
                        Ok(f64::NAN)
                    } else {
                        v.parse()
                    }
                })
                .collect::<Result<_, _>>()
                .with_context(|| format!("CSV row {}", i + 2))?;
            if values.len() != COLUMNS.len() {
                bail!("CSV row {} has {} values", i + 2, values.len());
            }
            points.push(Point::from_values(&values));
        }
        Self::new(points)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        Self::from_csv(&text)
    }

    /// The knee: the step with the greatest power (throughput over P99 latency, Kleinrock's
    /// measure of the best operating point; time to first token for chat). Below it latency is flat and throughput grows;
    /// past it extra concurrency only buys queueing.
    pub fn knee(&self) -> &Point {
        self.points
            .iter()
            .max_by(|a, b| power(a).total_cmp(&power(b)))
            .expect("a curve has points")
    }

    pub fn max_throughput(&self) -> f64 {
        self.points
            .iter()
            .map(|p| p.throughput_rps)
            .fold(0.0, f64::max)
    }

    /// The steps whose throughput rises: the curve as a function of offered load. Closed-loop
    /// steps past the maximum throughput (noise, or contention) would make it ambiguous.
    fn rising(&self) -> Vec<&Point> {
        let mut out: Vec<&Point> = Vec::new();
        for p in &self.points {
            if out
                .last()
                .is_none_or(|last| p.throughput_rps > last.throughput_rps)
            {
                out.push(p);
            }
        }
        out
    }

    /// The pod's steady state when offered `rate` req/s at most its maximum throughput:
    /// linear interpolation between the two steps whose throughput brackets the rate. Below the
    /// first step, latency is that step's and the load-proportional signals scale down to zero.
    pub fn at(&self, rate: f64) -> Point {
        let rising = self.rising();
        let first = rising[0];
        if rate <= first.throughput_rps {
            return scaled_below(first, rate / first.throughput_rps);
        }
        for pair in rising.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if rate <= b.throughput_rps {
                let t = (rate - a.throughput_rps) / (b.throughput_rps - a.throughput_rps);
                return Point::lerp(a, b, t);
            }
        }
        (*rising.last().expect("points")).clone()
    }

    /// The step where throughput peaks: what a pod does under overload.
    pub fn peak(&self) -> &Point {
        self.rising().last().copied().expect("points")
    }
}

/// Throughput over P99 latency: request latency for encoders; for chat, time to first token,
/// the latency queueing shows in (a stream's total time grows with its batch even unqueued).
fn power(p: &Point) -> f64 {
    let latency = if p.ttft.p99.is_nan() {
        p.latency.p99
    } else {
        p.ttft.p99
    };
    p.throughput_rps / latency.max(1e-9)
}

/// A lighter load than the first (concurrency 1) step: latency stays at its floor, the work the
/// pod does (CPU, busy fraction, rates, pending work) shrinks in proportion.
fn scaled_below(first: &Point, fraction: f64) -> Point {
    let f = fraction.clamp(0.0, 1.0);
    let mut p = first.clone();
    p.concurrency *= f;
    p.throughput_rps *= f;
    p.cpu_cores *= f;
    p.saturation *= f;
    p.queue_depth *= f;
    p.requests_per_second *= f;
    p.tokens_per_s *= f;
    p.sequences_waiting *= f;
    p.sequences_running *= f;
    p.kv_cache_usage *= f;
    p
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(c: f64, x: f64, p99: f64, sat: f64) -> Point {
        Point {
            concurrency: c,
            throughput_rps: x,
            latency: Quantiles {
                p50: p99 / 2.0,
                p90: p99 * 0.8,
                p99,
            },
            saturation: sat,
            cpu_cores: x / 100.0,
            ttft: Quantiles {
                p50: f64::NAN,
                p90: f64::NAN,
                p99: f64::NAN,
            },
            ..Point::default()
        }
    }

    fn curve() -> Curve {
        Curve::new(vec![
            point(1.0, 100.0, 10.0, 0.3),
            point(4.0, 300.0, 14.0, 0.8),
            point(8.0, 400.0, 25.0, 1.0),
            point(16.0, 410.0, 60.0, 1.3),
            point(32.0, 395.0, 120.0, 2.0),
        ])
        .unwrap()
    }

    #[test]
    fn knee_is_the_step_of_greatest_power() {
        // Power: 10, 21.4, 16, 6.8, 3.3 req/s per ms.
        assert_eq!(curve().knee().concurrency, 4.0);
    }

    #[test]
    fn interpolates_by_offered_load_and_skips_falling_steps() {
        let c = curve();
        let mid = c.at(350.0);
        assert!((mid.latency.p99 - 19.5).abs() < 1e-9, "{mid:?}");
        assert!((mid.saturation - 0.9).abs() < 1e-9);
        let low = c.at(50.0);
        assert_eq!(low.latency.p99, 10.0);
        assert!((low.cpu_cores - 0.5).abs() < 1e-9);
        assert_eq!(c.peak().concurrency, 16.0);
        assert_eq!(c.at(1000.0).concurrency, 16.0);
    }

    #[test]
    fn csv_round_trips_with_empty_chat_columns() {
        let c = curve();
        let text = c.to_csv();
        assert!(text.starts_with("concurrency,seconds,"));
        assert!(text.contains(",,"), "NaN columns are empty: {text}");
        let back = Curve::from_csv(&text).unwrap();
        assert_eq!(back.points.len(), c.points.len());
        assert!((back.points[1].latency.p90 - c.points[1].latency.p90).abs() < 1e-3);
        assert_eq!(back.points[1].latency.p99, c.points[1].latency.p99);
        assert!(back.points[1].ttft.p99.is_nan());
    }
}
