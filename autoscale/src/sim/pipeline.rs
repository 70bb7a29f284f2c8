//! The metric pipeline between a pod and the HPA: Prometheus scrapes every pod's `/metrics`
//! each `scrape_interval` (pods at their own phase), the adapter answers the HPA with the
//! latest sample of a gauge or `rate()` of a counter over its window; metrics-server samples
//! CPU each `metric_resolution` as the average over that window.

use std::collections::{BTreeMap, VecDeque};

use crate::hpa::replicas::{PodMetric, PodMetrics, PodName};
use crate::hpa::{Millis, SECOND};

/// Timings of the pipeline, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Prometheus `scrape_interval`.
    pub scrape_interval_s: u64,
    /// The adapter's `rate(...[window])` for counters.
    pub rate_window_s: u64,
    /// metrics-server `--metric-resolution`: CPU samples and the window each averages.
    pub metric_resolution_s: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            scrape_interval_s: 15,
            rate_window_s: 120,
            metric_resolution_s: 15,
        }
    }
}

/// What one scrape of one pod read, by series.
pub type Scrape = BTreeMap<&'static str, f64>;

/// The samples Prometheus holds for one pod (enough for the longest window).
#[derive(Debug, Clone, Default)]
struct Series {
    samples: VecDeque<(u64, Scrape)>,
}

/// Prometheus plus the adapter plus metrics-server, for a set of pods.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub timing: Timing,
    pods: BTreeMap<PodName, Series>,
    cpu: BTreeMap<PodName, (u64, f64)>,
}

impl Pipeline {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            ..Self::default()
        }
    }

    /// Whether Prometheus scrapes `pod` at second `t` (each pod keeps its own phase).
    pub fn scrapes_at(&self, pod: PodName, t: u64) -> bool {
        let interval = self.timing.scrape_interval_s.max(1);
        t % interval == phase(pod, interval)
    }

    pub fn record_scrape(&mut self, pod: PodName, t: u64, scrape: Scrape) {
        let keep = self.timing.rate_window_s.max(self.timing.scrape_interval_s) + 300;
        let series = self.pods.entry(pod).or_default();
        series.samples.push_back((t, scrape));
        while series.samples.front().is_some_and(|(s, _)| s + keep < t) {
            series.samples.pop_front();
        }
    }

    /// Whether metrics-server samples CPU at second `t` (one phase for the whole cluster).
    pub fn samples_cpu_at(&self, t: u64) -> bool {
        t.is_multiple_of(self.timing.metric_resolution_s.max(1))
    }

    /// Stores a pod's average CPU (millicores) over the resolution window ending at `t`.
    pub fn record_cpu(&mut self, pod: PodName, t: u64, millicores: f64) {
        self.cpu.insert(pod, (t, millicores));
    }

    pub fn forget(&mut self, pod: PodName) {
        self.pods.remove(&pod);
        self.cpu.remove(&pod);
    }

    /// The adapter's answer for a gauge: each live pod's latest sample (Prometheus' 5-minute
    /// lookback), in milli-units.
    pub fn gauge(&self, name: &str, pods: &[PodName], now: u64) -> PodMetrics {
        let mut out = PodMetrics::new();
        for pod in pods {
            let latest = self.pods.get(pod).and_then(|s| {
                s.samples
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= now && now - t <= 300)
            });
            if let Some((t, scrape)) = latest {
                if let Some(v) = scrape.get(name) {
                    out.insert(*pod, sample(*v, *t, self.timing.scrape_interval_s));
                }
            }
        }
        out
    }

    /// The adapter's answer for `rate(counter[window])`: per-second increase between the first
    /// and last samples in the window; a pod with fewer than two samples there has no value.
    pub fn rate(&self, name: &str, pods: &[PodName], now: u64) -> PodMetrics {
        let window = self.timing.rate_window_s;
        let mut out = PodMetrics::new();
        for pod in pods {
            let Some(series) = self.pods.get(pod) else {
                continue;
            };
            let inside: Vec<&(u64, Scrape)> = series
                .samples
                .iter()
                .filter(|(t, _)| *t <= now && now - t < window)
                .collect();
            let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
                continue;
            };
            if last.0 == first.0 {
                continue;
            }
            let (Some(a), Some(b)) = (first.1.get(name), last.1.get(name)) else {
                continue;
            };
            let per_second = (b - a).max(0.0) / (last.0 - first.0) as f64;
            out.insert(*pod, sample(per_second, last.0, window));
        }
        out
    }

    /// metrics-server's answer: each pod's latest CPU sample, in millicores.
    pub fn cpu(&self, pods: &[PodName]) -> PodMetrics {
        let window = self.timing.metric_resolution_s;
        pods.iter()
            .filter_map(|p| {
                self.cpu
                    .get(p)
                    .map(|(t, v)| (*p, sample(*v / 1000.0, *t, window)))
            })
            .collect()
    }
}

/// A sample as the HPA sees it: milli-units, the sample's time and window in milliseconds.
fn sample(value: f64, t: u64, window_s: u64) -> PodMetric {
    PodMetric {
        value: (value * 1000.0).round() as i64,
        timestamp: t as Millis * SECOND,
        window: window_s as Millis * SECOND,
    }
}

/// A pod's scrape offset within the interval, spread by its name.
fn phase(pod: PodName, interval: u64) -> u64 {
    (pod.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % interval.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(name: &'static str, v: f64) -> Scrape {
        Scrape::from([(name, v)])
    }

    #[test]
    fn each_pod_is_scraped_once_per_interval() {
        let p = Pipeline::new(Timing::default());
        for pod in 0..20 {
            let hits = (0..150).filter(|t| p.scrapes_at(pod, *t)).count();
            assert_eq!(hits, 10, "pod {pod}");
        }
    }

    #[test]
    fn gauges_read_the_latest_sample_and_rates_need_two() {
        let mut p = Pipeline::new(Timing::default());
        p.record_scrape(1, 10, scrape("g", 0.5));
        p.record_scrape(1, 25, scrape("g", 1.25));
        p.record_scrape(2, 20, scrape("c", 100.0));
        let g = p.gauge("g", &[1, 2], 30);
        assert_eq!(g[&1].value, 1250);
        assert_eq!(g[&1].timestamp, 25_000);
        assert!(!g.contains_key(&2));
        assert!(p.rate("c", &[2], 30).is_empty(), "one sample is no rate");
        p.record_scrape(2, 35, scrape("c", 400.0));
        assert_eq!(p.rate("c", &[2], 40)[&2].value, 20_000);
        // Out of the 120 s window the first sample no longer counts.
        p.record_scrape(2, 150, scrape("c", 1000.0));
        assert_eq!(p.rate("c", &[2], 150)[&2].value, 5_217);
    }

    #[test]
    fn cpu_samples_are_millicores() {
        let mut p = Pipeline::new(Timing::default());
        p.record_cpu(3, 15, 1500.0);
        let m = p.cpu(&[3, 4]);
        assert_eq!(m[&3].value, 1500);
        assert_eq!(m[&3].window, 15_000);
        assert_eq!(m.len(), 1);
    }
}
