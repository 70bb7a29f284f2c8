//! Simulated wick pods behind one Service: their start-up (Pending, loading, Ready, in the
//! Endpoints), the load each carries, and the signals each exports, following the measured
//! curve. Load is spread evenly over the pods in the Endpoints; work past what they can serve
//! waits in a backlog, and past the pods' admission limit it is shed (429).

use std::collections::VecDeque;

use crate::curve::{Curve, Point, Quantiles};
use crate::hpa::replicas::{Phase, Pod, PodName, ReadyCondition};
use crate::hpa::{Millis, SECOND};

use super::pipeline::Scrape;

/// How a new pod comes up, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Startup {
    /// Created -> Running: scheduling and container start (image already on the node).
    pub schedule_s: f64,
    /// Running -> `/ready` 200: wick's measured load + warmup.
    pub time_to_ready_s: f64,
    /// The probe period that notices readiness (the startup probe's 2 s in k8s/).
    pub probe_period_s: f64,
    /// Ready -> in the Service's Endpoints.
    pub endpoints_delay_s: f64,
}

impl Startup {
    fn running_after(&self) -> i64 {
        self.schedule_s.ceil() as i64
    }

    fn ready_after(&self) -> i64 {
        let probes = (self.time_to_ready_s / self.probe_period_s.max(1e-3))
            .ceil()
            .max(1.0);
        self.running_after() + (probes * self.probe_period_s).ceil() as i64
    }

    fn serving_after(&self) -> i64 {
        self.ready_after() + self.endpoints_delay_s.ceil() as i64
    }
}

/// What a pod does in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Second {
    saturation: f64,
    cpu_cores: f64,
}

#[derive(Debug, Clone)]
struct SimPod {
    name: PodName,
    /// Second the pod was created; before the replay's start for the pods it starts with.
    created: i64,
    recent: VecDeque<Second>,
    requests_total: f64,
    queue_depth: f64,
    sequences_waiting: f64,
    kv_cache_usage: f64,
}

/// The latency a second's requests saw, by kind, and how many were served and shed.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub requests: f64,
    pub shed: f64,
    /// Request latency (encoders) or time to first token (chat).
    pub latency: Quantiles,
    /// Inter-token latency (chat only).
    pub itl: Option<Quantiles>,
}

/// The pods of one Deployment and the work waiting for them.
#[derive(Debug, Clone)]
pub struct Cluster {
    curve: Curve,
    peak: Point,
    chat: bool,
    startup: Startup,
    /// Requests one pod admits beyond the measured peak's concurrency before answering 429.
    backlog_per_pod: f64,
    /// `--saturation-knee`: pending work at which wick_saturation is 1.0.
    saturation_knee: f64,
    /// Chat's wick_saturation is pending sequences over the knee (or KV usage): measured with
    /// one knee setting, it scales by measured / replayed knee for another.
    pub saturation_scale: f64,
    /// CPU each pod requests, in cores (k8s/: 2).
    pub cpu_request_cores: f64,
    pods: Vec<SimPod>,
    next_name: PodName,
    backlog: f64,
}

impl Cluster {
    pub fn new(
        curve: Curve,
        chat: bool,
        startup: Startup,
        max_pending: f64,
        saturation_knee: f64,
    ) -> Self {
        let peak = curve.peak().clone();
        let backlog_per_pod = (max_pending - peak.concurrency).max(0.0);
        Self {
            curve,
            peak,
            chat,
            startup,
            backlog_per_pod,
            saturation_knee,
            saturation_scale: 1.0,
            cpu_request_cores: 2.0,
            pods: Vec::new(),
            next_name: 0,
            backlog: 0.0,
        }
    }

    /// Starts `n` pods that are already serving (the Deployment before the replay starts).
    pub fn warm_start(&mut self, n: usize, t: u64) {
        for _ in 0..n {
            self.add_pod(t as i64 - 3600);
        }
    }

    fn add_pod(&mut self, created: i64) {
        self.pods.push(SimPod {
            name: self.next_name,
            created,
            recent: VecDeque::new(),
            requests_total: 0.0,
            queue_depth: 0.0,
            sequences_waiting: 0.0,
            kv_cache_usage: 0.0,
        });
        self.next_name += 1;
    }

    pub fn replicas(&self) -> usize {
        self.pods.len()
    }

    pub fn names(&self) -> Vec<PodName> {
        self.pods.iter().map(|p| p.name).collect()
    }

    fn running(&self, p: &SimPod, t: u64) -> bool {
        t as i64 >= p.created + self.startup.running_after()
    }

    fn ready(&self, p: &SimPod, t: u64) -> bool {
        t as i64 >= p.created + self.startup.ready_after()
    }

    fn serving(&self, p: &SimPod, t: u64) -> bool {
        t as i64 >= p.created + self.startup.serving_after()
    }

    /// Scales the Deployment to `desired`: new pods start Pending; removed pods go first
    /// if not ready, newest first (the ReplicaSet's order), and leave the Endpoints at once.
    pub fn scale_to(&mut self, desired: usize, t: u64) -> Vec<PodName> {
        while self.pods.len() < desired {
            self.add_pod(t as i64);
        }
        let mut removed = Vec::new();
        while self.pods.len() > desired {
            let victim = (0..self.pods.len())
                .min_by_key(|&i| {
                    (
                        self.ready(&self.pods[i], t),
                        std::cmp::Reverse(self.pods[i].created),
                    )
                })
                .expect("pods");
            removed.push(self.pods.remove(victim).name);
        }
        removed
    }

    /// The pods as the HPA lists them.
    pub fn hpa_pods(&self, t: u64) -> Vec<Pod> {
        let ms = |s: i64| s as Millis * SECOND;
        self.pods
            .iter()
            .map(|p| {
                let running_at = p.created + self.startup.running_after();
                let ready = self.ready(p, t);
                Pod {
                    name: p.name,
                    phase: if self.running(p, t) {
                        Phase::Running
                    } else {
                        Phase::Pending
                    },
                    deleting: false,
                    ready: Some(ReadyCondition {
                        ready,
                        last_transition: if ready {
                            ms(p.created + self.startup.ready_after())
                        } else {
                            ms(p.created)
                        },
                    }),
                    start_time: self.running(p, t).then(|| ms(running_at)),
                    cpu_request_milli: (self.cpu_request_cores * 1000.0).round() as i64,
                }
            })
            .collect()
    }

    /// Runs one second of `rate` req/s through the pods in the Endpoints.
    pub fn step(&mut self, t: u64, rate: f64) -> Served {
        let serving: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.serving(&self.pods[i], t))
            .collect();
        let n = serving.len() as f64;
        if n == 0.0 {
            self.record_idle(t, &serving);
            return Served {
                requests: 0.0,
                shed: rate + std::mem::take(&mut self.backlog),
                latency: self.peak.latency,
                itl: None,
            };
        }
        let capacity = n * self.peak.throughput_rps;
        let waiting_before = self.backlog;
        let offered = rate + self.backlog;
        let (served, mut backlog) = if offered <= capacity {
            (offered, 0.0)
        } else {
            (capacity, offered - capacity)
        };
        let limit = n * self.backlog_per_pod;
        let shed = (backlog - limit).max(0.0);
        backlog -= shed;
        self.backlog = backlog;
        let per_pod_backlog = backlog / n;
        let point = if backlog > 0.0 {
            self.peak.clone()
        } else {
            self.curve.at(served / n)
        };
        // Requests queue behind the backlog: it drains at the pods' peak rate.
        let wait_ms = (waiting_before.max(backlog) / n) / self.peak.throughput_rps * 1e3;
        self.record(t, &serving, &point, served / n, per_pod_backlog);
        let (latency, itl) = if self.chat {
            (point.ttft.delayed(wait_ms), Some(point.itl))
        } else {
            (point.latency.delayed(wait_ms), None)
        };
        Served {
            requests: served,
            shed,
            latency,
            itl,
        }
    }

    fn record(
        &mut self,
        t: u64,
        serving: &[usize],
        point: &Point,
        served_each: f64,
        backlog_each: f64,
    ) {
        let knee = self.saturation_knee.max(1e-9);
        let (chat, scale) = (self.chat, self.saturation_scale);
        for i in 0..self.pods.len() {
            let busy = serving.contains(&i);
            let pod = &mut self.pods[i];
            let second = if busy {
                pod.requests_total += served_each;
                pod.queue_depth = nan0(point.queue_depth) + backlog_each;
                pod.sequences_waiting = nan0(point.sequences_waiting) + backlog_each;
                pod.kv_cache_usage = nan0(point.kv_cache_usage);
                let measured = nan0(point.saturation);
                let saturation = if chat {
                    (measured * scale).max(pod.kv_cache_usage)
                } else {
                    measured
                };
                Second {
                    saturation: saturation + backlog_each / knee,
                    cpu_cores: nan0(point.cpu_cores),
                }
            } else {
                pod.queue_depth = 0.0;
                pod.sequences_waiting = 0.0;
                pod.kv_cache_usage = 0.0;
                Second::default()
            };
            pod.recent.push_back(second);
            if pod.recent.len() > 120 {
                pod.recent.pop_front();
            }
        }
        let _ = t;
    }

    fn record_idle(&mut self, t: u64, serving: &[usize]) {
        self.record(t, serving, &Point::default(), 0.0, 0.0);
    }

    /// What Prometheus reads from a pod's `/metrics` now (`None` while it is Pending).
    pub fn scrape(&self, name: PodName, t: u64) -> Option<Scrape> {
        let p = self.pods.iter().find(|p| p.name == name)?;
        if !self.running(p, t) {
            return None;
        }
        // wick_saturation averages the last 10 s.
        let last: Vec<f64> = p
            .recent
            .iter()
            .rev()
            .take(10)
            .map(|s| s.saturation)
            .collect();
        let saturation = if last.is_empty() {
            0.0
        } else {
            last.iter().sum::<f64>() / last.len() as f64
        };
        Some(Scrape::from([
            ("wick_saturation", saturation),
            ("wick_requests_total", p.requests_total),
            ("wick_queue_depth", p.queue_depth),
            ("wick_sequences_waiting", p.sequences_waiting),
            ("wick_kv_cache_usage_ratio", p.kv_cache_usage),
        ]))
    }

    /// A pod's average CPU over the last `window_s` seconds in millicores (`None` while Pending).
    pub fn cpu_millicores(&self, name: PodName, t: u64, window_s: u64) -> Option<f64> {
        let p = self.pods.iter().find(|p| p.name == name)?;
        if !self.running(p, t) {
            return None;
        }
        let last: Vec<f64> = p
            .recent
            .iter()
            .rev()
            .take(window_s.max(1) as usize)
            .map(|s| s.cpu_cores)
            .collect();
        let mean = if last.is_empty() {
            0.0
        } else {
            last.iter().sum::<f64>() / last.len() as f64
        };
        Some(mean * 1000.0)
    }
}

fn nan0(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v
    }
}
