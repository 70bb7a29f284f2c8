//! Replays a traffic day through one policy: every second the cluster serves the offered load;
//! Prometheus and metrics-server sample the pods; every sync period the HPA reconciles on what
//! the pipeline returns, and the Deployment follows. Each minute is scored against the SLO.

use crate::curve::Curve;
use crate::hpa::controller::{Controller, SYNC_PERIOD};
use crate::hpa::replicas::PodMetrics;
use crate::hpa::SECOND;

use super::cluster::{Cluster, Served, Startup};
use super::latency::{minute_p99, Second};
use super::pipeline::{Pipeline, Timing};
use super::policy::{Policy, Shared, Signal};
use super::traffic::Day;

/// Everything a replay needs besides the policy.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub curve: Curve,
    pub chat: bool,
    pub day: Day,
    /// Second of the day the replay starts at, and how long it runs.
    pub start_s: u64,
    pub seconds: u64,
    pub startup: Startup,
    pub timing: Timing,
    pub shared: Shared,
    /// Requests a pod admits in all before answering 429 (`--max-pending-inputs`, or chat's
    /// running + waiting sequences).
    pub max_pending: f64,
    pub saturation_knee: f64,
    /// The `--saturation-knee` the curve was measured with.
    pub measured_saturation_knee: f64,
    /// CPU each pod requests, cores (k8s/deployment.yaml: 2): what CPU utilization divides by.
    pub cpu_request_cores: f64,
    /// SLO on the P99 of request latency (encoders) or time to first token (chat), ms.
    pub slo_ms: f64,
    /// Chat: SLO on the P99 of inter-token latency, ms.
    pub itl_slo_ms: Option<f64>,
    /// Offset of the HPA's sync within its period, seconds.
    pub sync_phase_s: u64,
}

/// One minute of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    pub offered_rps: f64,
    pub replicas: usize,
    pub p99_ms: f64,
    pub itl_p99_ms: Option<f64>,
    pub violated: bool,
}

/// A policy's day.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub policy: String,
    /// Second of the day the first minute starts at.
    pub start_s: u64,
    pub minutes: Vec<Minute>,
    pub slo_minutes: usize,
    pub pod_hours: f64,
    pub scale_events: usize,
    pub max_replicas: usize,
    pub shed_fraction: f64,
}

pub fn run(scenario: &Scenario, policy: &Policy) -> Replay {
    let spec = policy.hpa(&scenario.shared);
    let mut cluster = Cluster::new(
        scenario.curve.clone(),
        scenario.chat,
        scenario.startup,
        scenario.max_pending,
        scenario.saturation_knee,
    );
    cluster.cpu_request_cores = scenario.cpu_request_cores;
    cluster.saturation_scale =
        scenario.measured_saturation_knee / scenario.saturation_knee.max(1e-9);
    cluster.warm_start(
        scenario.shared.min_replicas.max(1) as usize,
        scenario.start_s,
    );
    let mut pipeline = Pipeline::new(scenario.timing);
    let mut hpa = Controller::default();
    let sync_every = (SYNC_PERIOD / SECOND) as u64;
    let mut acc = Accumulator::default();
    for t in scenario.start_s..scenario.start_s + scenario.seconds {
        let rate = scenario.day.rate(t);
        let served = cluster.step(t, rate);
        observe(&cluster, &mut pipeline, t);
        if t % sync_every == scenario.sync_phase_s % sync_every {
            let pods = cluster.hpa_pods(t);
            let names = cluster.names();
            let metrics: Vec<Result<PodMetrics, String>> = policy
                .targets
                .iter()
                .map(|target| Ok(query(&pipeline, target.signal, &names, t)))
                .collect();
            let current = cluster.replicas() as i32;
            let decision = hpa.reconcile(t as i64 * SECOND, &spec, current, &pods, &metrics);
            if decision.rescaled {
                acc.scale_events += 1;
                for gone in cluster.scale_to(decision.replicas.max(0) as usize, t) {
                    pipeline.forget(gone);
                }
            }
        }
        acc.second(scenario, rate, &served, cluster.replicas());
    }
    acc.finish(policy.name.clone(), scenario.start_s)
}

/// Prometheus scrapes the pods due now; metrics-server samples CPU when due.
fn observe(cluster: &Cluster, pipeline: &mut Pipeline, t: u64) {
    for name in cluster.names() {
        if pipeline.scrapes_at(name, t) {
            if let Some(scrape) = cluster.scrape(name, t) {
                pipeline.record_scrape(name, t, scrape);
            }
        }
        if pipeline.samples_cpu_at(t) {
            let window = pipeline.timing.metric_resolution_s;
            if let Some(m) = cluster.cpu_millicores(name, t, window) {
                pipeline.record_cpu(name, t, m);
            }
        }
    }
}

fn query(pipeline: &Pipeline, signal: Signal, pods: &[u64], t: u64) -> PodMetrics {
    match signal {
        Signal::Cpu => pipeline.cpu(pods),
        Signal::RequestsPerSecond => pipeline.rate(signal.series(), pods, t),
        other => pipeline.gauge(other.series(), pods, t),
    }
}

/// Per-minute scoring and the day's totals.
#[derive(Debug, Default)]
struct Accumulator {
    seconds: Vec<Second>,
    itl_seconds: Vec<Second>,
    offered: f64,
    replicas_max_in_minute: usize,
    minutes: Vec<Minute>,
    pod_seconds: f64,
    scale_events: usize,
    max_replicas: usize,
    requests: f64,
    shed: f64,
    slo: (f64, Option<f64>),
}

impl Accumulator {
    fn second(&mut self, scenario: &Scenario, rate: f64, served: &Served, replicas: usize) {
        self.slo = (scenario.slo_ms, scenario.itl_slo_ms);
        self.seconds.push(Second {
            requests: served.requests,
            shed: served.shed,
            quantiles: served.latency,
        });
        if let Some(itl) = served.itl {
            self.itl_seconds.push(Second {
                requests: served.requests,
                shed: served.shed,
                quantiles: itl,
            });
        }
        self.offered += rate;
        self.replicas_max_in_minute = self.replicas_max_in_minute.max(replicas);
        self.pod_seconds += replicas as f64;
        self.max_replicas = self.max_replicas.max(replicas);
        self.requests += served.requests + served.shed;
        self.shed += served.shed;
        if self.seconds.len() == 60 {
            self.close_minute();
        }
    }

    fn close_minute(&mut self) {
        let p99 = minute_p99(&self.seconds);
        let itl = (!self.itl_seconds.is_empty()).then(|| minute_p99(&self.itl_seconds));
        let (slo, itl_slo) = self.slo;
        let violated = p99 > slo || matches!((itl, itl_slo), (Some(v), Some(s)) if v > s);
        self.minutes.push(Minute {
            offered_rps: self.offered / self.seconds.len() as f64,
            replicas: self.replicas_max_in_minute,
            p99_ms: p99,
            itl_p99_ms: itl,
            violated,
        });
        self.seconds.clear();
        self.itl_seconds.clear();
        self.offered = 0.0;
        self.replicas_max_in_minute = 0;
    }

    fn finish(mut self, policy: String, start_s: u64) -> Replay {
        if !self.seconds.is_empty() {
            self.close_minute();
        }
        Replay {
            policy,
            start_s,
            slo_minutes: self.minutes.iter().filter(|m| m.violated).count(),
            minutes: self.minutes,
            pod_hours: self.pod_seconds / 3600.0,
            scale_events: self.scale_events,
            max_replicas: self.max_replicas,
            shed_fraction: if self.requests > 0.0 {
                self.shed / self.requests
            } else {
                0.0
            },
        }
    }
}
