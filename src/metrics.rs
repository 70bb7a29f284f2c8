//! Every Prometheus series wick exports, in one struct over a non-global registry.
//!
//! Besides the usual counters and histograms, wick computes sliding-window gauges itself
//! (latency quantiles, request rate, saturation) so an autoscaler can use them directly; the
//! window lives in `window`, built so that no writer ever waits on a scrape.

mod window;

use std::time::{Duration, Instant};

use window::{SlidingWindow, Snapshot};

use prometheus::proto::{Metric, MetricFamily, MetricType, Quantile, Summary};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Why a request failed, the bounded label set of `wick_request_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Validation,
    Overloaded,
    Deadline,
    Cancelled,
    Internal,
    Unauthorized,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Validation => "validation",
            FailureReason::Overloaded => "overloaded",
            FailureReason::Deadline => "deadline",
            FailureReason::Cancelled => "cancelled",
            FailureReason::Internal => "internal",
            FailureReason::Unauthorized => "unauthorized",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// The window `wick_saturation` averages over: short, so an autoscaler sees load change within
/// a few scrapes, yet long enough to smooth single batches.
pub const SATURATION_WINDOW: Duration = Duration::from_secs(10);

pub struct Metrics {
    registry: Registry,
    pub queue_depth: IntGauge,
    pub requests_in_flight: IntGauge,
    pub inputs_in_flight: IntGauge,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub batches_total: IntCounter,
    pub request_duration: HistogramVec,
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
    pub tokenize_duration: Histogram,
    pub requests_total: IntCounterVec,
    pub failures_total: IntCounterVec,
    pub inputs_total: IntCounter,
    pub requests_per_second: Gauge,
    pub saturation: Gauge,
    pub worker_busy_ratio: Gauge,
    pub model_load_seconds: Gauge,
    pub warmup_seconds: Gauge,
    pub ready: IntGauge,
    pub draining: IntGauge,
    /// Series only a chat model moves.
    pub chat: ChatMetrics,
    /// Client connections: open, refused past the cap, closed by a timeout.
    pub connections: ConnectionMetrics,
    /// Forward passes that panicked: their batch failed and the model thread went on.
    pub model_panics_total: IntCounter,
    window: SlidingWindow,
    knee: f64,
}

impl Metrics {
    pub fn new(window: Duration, knee: f64) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let m = Self {
            queue_depth: register(
                r,
                IntGauge::new("wick_queue_depth", "Inputs waiting for a batch"),
            ),
            requests_in_flight: register(
                r,
                IntGauge::new(
                    "wick_requests_in_flight",
                    "Requests admitted and not yet answered",
                ),
            ),
            inputs_in_flight: register(
                r,
                IntGauge::new(
                    "wick_inputs_in_flight",
                    "Inputs in the batch the model is running",
                ),
            ),
            batch_size: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("wick_batch_size", "Inputs per model batch")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
                ),
            ),
            batch_tokens: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("wick_batch_tokens", "Padded tokens per model batch")
                        .buckets(prometheus::exponential_buckets(16.0, 2.0, 11).expect("buckets")),
                ),
            ),
            batches_total: register(
                r,
                IntCounter::new("wick_batches_total", "Model batches run"),
            ),
            request_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("wick_request_duration_seconds", "Request latency")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route", "task", "status"],
                ),
            ),
            queue_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "wick_queue_duration_seconds",
                        "Time an input waits for its batch",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            inference_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "wick_inference_duration_seconds",
                        "Forward pass time per batch",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            tokenize_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "wick_tokenize_duration_seconds",
                        "Tokenization time per request",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                ),
            ),
            requests_total: register(
                r,
                IntCounterVec::new(
                    Opts::new("wick_requests_total", "Requests answered"),
                    &["route", "task", "code"],
                ),
            ),
            failures_total: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "wick_request_failures_total",
                        "Requests that failed, by reason",
                    ),
                    &["reason"],
                ),
            ),
            inputs_total: register(
                r,
                IntCounter::new("wick_inputs_total", "Inputs run through the model"),
            ),
            requests_per_second: register(
                r,
                Gauge::new(
                    "wick_requests_per_second",
                    "Requests answered per second over the sliding window",
                ),
            ),
            saturation: register(
                r,
                Gauge::new(
                    "wick_saturation",
                    "Load relative to the knee of the latency curve (1.0 at the knee): the largest \
                     of the model worker's busy fraction (encoders), average pending inputs or \
                     sequences over the knee (both over the last 10 s), and the KV cache's \
                     usage (chat)",
                ),
            ),
            worker_busy_ratio: register(
                r,
                Gauge::new(
                    "wick_worker_busy_ratio",
                    "Fraction of the window the model worker spent running batches",
                ),
            ),
            model_load_seconds: register(
                r,
                Gauge::new("wick_model_load_seconds", "Time taken to load the model"),
            ),
            warmup_seconds: register(r, Gauge::new("wick_warmup_seconds", "Time taken by warmup")),
            ready: register(
                r,
                IntGauge::new("wick_ready", "1 when the server accepts traffic"),
            ),
            draining: register(r, IntGauge::new("wick_draining", "1 while shutting down")),
            chat: ChatMetrics::new(r),
            connections: ConnectionMetrics::new(r),
            model_panics_total: register(
                r,
                IntCounter::new(
                    "wick_model_panics_total",
                    "Forward passes that panicked; their requests failed with a 500 and the \
                     model thread went on",
                ),
            ),
            window: SlidingWindow::new(window, SATURATION_WINDOW),
            knee: knee.max(1e-9),
            registry,
        };
        for reason in [
            FailureReason::Validation,
            FailureReason::Overloaded,
            FailureReason::Deadline,
            FailureReason::Cancelled,
            FailureReason::Internal,
            FailureReason::Unauthorized,
        ] {
            m.failures_total.with_label_values(&[reason.as_str()]);
        }
        m
    }

    pub fn register_build_info(&self, version: &str, model: &str, device: &str) {
        let info = register(
            &self.registry,
            prometheus::IntGaugeVec::new(
                Opts::new("wick_build_info", "Build and model information"),
                &["version", "model", "device"],
            ),
        );
        info.with_label_values(&[version, model, device]).set(1);
    }

    pub fn fail(&self, reason: FailureReason) {
        self.failures_total
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Records one answered request for the sliding-window gauges (a push, never a wait on a
    /// scrape).
    pub fn observe_latency(&self, seconds: f64) {
        self.window.push_latency(seconds);
    }

    /// Records one model batch's run time for the busy fraction; the model thread calls it
    /// after every batch, and it never waits on a scrape.
    pub fn observe_busy(&self, started: Instant, ended: Instant) {
        self.window.push_busy(started, ended);
    }

    /// Records the current pending inputs and folds what was pushed since the last call into
    /// the window; called every 100 ms by the server.
    pub fn sample_pending(&self) {
        let pending = self.queue_depth.get() + self.inputs_in_flight.get();
        self.window.push_pending(pending);
        self.window.try_fold();
    }

    /// Brings the window gauges up to date; called right before each scrape.
    pub fn refresh_window(&self) {
        self.refresh();
    }

    /// Updates the window gauges and returns what the latency summary reports.
    fn refresh(&self) -> Snapshot {
        let snapshot = self.window.snapshot();
        let pending_average = snapshot.pending_average.unwrap_or_else(|| {
            (self.queue_depth.get() + self.inputs_in_flight.get()).max(0) as f64
        });
        let saturation = snapshot
            .busy_short
            .max(pending_average / self.knee)
            .max(self.chat.kv_cache_usage.get());
        self.requests_per_second.set(snapshot.rate);
        self.worker_busy_ratio.set(snapshot.busy);
        self.saturation.set(saturation);
        snapshot
    }

    /// `wick_latency_seconds`: a summary whose quantiles cover the sliding window, so an
    /// autoscaler or alert reads P50/P90/P99 without recording rules.
    fn latency_summary(snapshot: &Snapshot) -> MetricFamily {
        let mut summary = Summary::default();
        summary.set_sample_count(snapshot.latency_count);
        summary.set_sample_sum(snapshot.latency_sum);
        summary.set_quantile(
            snapshot
                .quantiles
                .iter()
                .map(|(q, v)| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(*q);
                    quantile.set_value(*v);
                    quantile
                })
                .collect(),
        );
        let mut metric = Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name("wick_latency_seconds".into());
        family.set_help(
            "Request latency of inference routes; quantiles over the sliding window".into(),
        );
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        family
    }

    pub fn render(&self) -> String {
        let snapshot = self.refresh();
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        let mut families = self.registry.gather();
        families.push(Self::latency_summary(&snapshot));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        if let Err(e) = encoder.encode(&families, &mut buffer) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Token-level series of the generation engine.
pub struct ChatMetrics {
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub prompt_tokens_total: IntCounter,
    pub generated_tokens_total: IntCounter,
    pub sequences_running: IntGauge,
    pub sequences_waiting: IntGauge,
    pub kv_cache_usage: Gauge,
    pub requests_finished_total: IntCounterVec,
    pub preemptions_total: IntCounter,
    pub prefix_cache_hits_total: IntCounter,
    pub prefix_cache_hit_tokens_total: IntCounter,
}

pub struct ConnectionMetrics {
    pub open: IntGauge,
    pub refused_total: IntCounter,
    /// By `phase`: `header` (a request header not complete in time) or `idle` (keep-alive).
    pub timed_out_total: IntCounterVec,
}

impl ConnectionMetrics {
    fn new(r: &Registry) -> Self {
        let timed_out = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "wick_connections_timed_out_total",
                    "Client connections closed by --header-read-timeout (phase=header) or \
                     --keep-alive-timeout (phase=idle)",
                ),
                &["phase"],
            ),
        );
        for phase in ["header", "idle"] {
            timed_out.with_label_values(&[phase]);
        }
        Self {
            open: register(
                r,
                IntGauge::new("wick_connections_open", "Client connections open"),
            ),
            refused_total: register(
                r,
                IntCounter::new(
                    "wick_connections_refused_total",
                    "Client connections refused because --max-connections were open",
                ),
            ),
            timed_out_total: timed_out,
        }
    }
}

const TOKEN_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

impl ChatMetrics {
    fn new(r: &Registry) -> Self {
        let histogram = |name: &str, help: &str| {
            register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(name, help).buckets(TOKEN_LATENCY_BUCKETS.to_vec()),
                ),
            )
        };
        let finished = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "wick_requests_finished_total",
                    "Generations that finished, by finish_reason (stop or length)",
                ),
                &["finish_reason"],
            ),
        );
        for reason in ["stop", "length"] {
            finished.with_label_values(&[reason]);
        }
        Self {
            time_to_first_token: histogram(
                "wick_time_to_first_token_seconds",
                "From admission to the first generated token",
            ),
            inter_token_latency: histogram(
                "wick_inter_token_latency_seconds",
                "Between consecutive tokens of one sequence",
            ),
            prompt_tokens_total: register(
                r,
                IntCounter::new("wick_prompt_tokens_total", "Prompt tokens admitted"),
            ),
            generated_tokens_total: register(
                r,
                IntCounter::new("wick_generated_tokens_total", "Tokens generated"),
            ),
            sequences_running: register(
                r,
                IntGauge::new("wick_sequences_running", "Sequences in the running batch"),
            ),
            sequences_waiting: register(
                r,
                IntGauge::new(
                    "wick_sequences_waiting",
                    "Sequences admitted and waiting for a place in the batch",
                ),
            ),
            kv_cache_usage: register(
                r,
                Gauge::new(
                    "wick_kv_cache_usage_ratio",
                    "Positions held in KV caches over the KV budget",
                ),
            ),
            requests_finished_total: finished,
            preemptions_total: register(
                r,
                IntCounter::new(
                    "wick_preemptions_total",
                    "Sequences whose KV cache was freed to make room, to be recomputed",
                ),
            ),
            prefix_cache_hits_total: register(
                r,
                IntCounter::new(
                    "wick_prefix_cache_hits_total",
                    "Prompts that started from a kept cache of tokens already computed",
                ),
            ),
            prefix_cache_hit_tokens_total: register(
                r,
                IntCounter::new(
                    "wick_prefix_cache_hit_tokens_total",
                    "Prompt tokens taken from kept caches rather than computed",
                ),
            ),
        }
    }
}

/// Registers a metric built with a literal name; a failure here is a programming error found by
/// the first test that builds `Metrics`, so it panics.
fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registration");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_gauges_reflect_samples() {
        let m = Metrics::new(Duration::from_secs(10), 4.0);
        for i in 1..=10 {
            m.observe_latency(f64::from(i) / 100.0);
        }
        std::thread::sleep(Duration::from_millis(100));
        m.refresh_window();
        let rate = m.requests_per_second.get();
        assert!(
            rate > 10.0 && rate < 110.0,
            "10 requests in ~0.1 s of uptime: {rate}"
        );
        assert!(m
            .render()
            .contains("wick_latency_seconds{quantile=\"0.5\"} 0.05\n"));
        assert!(m.render().contains("wick_latency_seconds_count 10\n"));
        m.queue_depth.set(2);
        m.inputs_in_flight.set(4);
        m.sample_pending();
        m.queue_depth.set(10);
        m.sample_pending();
        // Average pending (6 + 14) / 2 = 10 over a knee of 4, above the idle busy fraction.
        let text = m.render();
        assert!(text.contains("wick_saturation 2.5\n"), "{text}");
    }
}
