//! The autoscaling policies compared: which per-pod signal each HPA metric reads, its target,
//! and the HPA spec (min/max, behavior) they share.

use crate::curve::Curve;
use crate::hpa::spec::{Behavior, HpaSpec, MetricSpec, Policy as RatePolicy, RulesSpec, Select};

/// A per-pod signal the HPA can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `Resource cpu`, Utilization of the pod's request (metrics-server).
    Cpu,
    /// `wick_saturation` (gauge, wick's 10 s average).
    Saturation,
    /// `rate(wick_requests_total[window])` per pod (the adapter's rate window).
    RequestsPerSecond,
    /// `wick_queue_depth` (gauge).
    QueueDepth,
    /// `wick_sequences_waiting` (gauge, chat).
    SequencesWaiting,
    /// `wick_kv_cache_usage_ratio` (gauge, chat).
    KvCacheUsage,
}

impl Signal {
    /// The series name the adapter serves for this signal.
    pub fn series(self) -> &'static str {
        match self {
            Signal::Cpu => "cpu",
            Signal::Saturation => "wick_saturation",
            Signal::RequestsPerSecond => "wick_requests_total",
            Signal::QueueDepth => "wick_queue_depth",
            Signal::SequencesWaiting => "wick_sequences_waiting",
            Signal::KvCacheUsage => "wick_kv_cache_usage_ratio",
        }
    }
}

/// One metric of a policy: a signal and its target (percent for CPU, an average value else).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub signal: Signal,
    pub value: f64,
}

/// A named set of HPA metrics (the HPA scales on the largest proposal).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub targets: Vec<Target>,
}

/// The spec every policy shares: what k8s/ ships for behavior, and the replica bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub behavior: Behavior,
}

impl Shared {
    /// Scale-up: +100% or +4 pods per 60 s, whichever is more; scale-down: a 300 s window and
    /// at most -20% per 60 s.
    pub fn shipped(min_replicas: i32, max_replicas: i32, scale_up_window_s: i32) -> Self {
        let up = RulesSpec {
            stabilization_window_s: Some(scale_up_window_s),
            select: Some(Select::Max),
            policies: Some(vec![RatePolicy::percent(100, 60), RatePolicy::pods(4, 60)]),
        };
        let down = RulesSpec {
            stabilization_window_s: Some(300),
            select: Some(Select::Max),
            policies: Some(vec![RatePolicy::percent(20, 60)]),
        };
        Self {
            min_replicas,
            max_replicas,
            behavior: Behavior::from_spec(Some(up), Some(down)),
        }
    }
}

impl Policy {
    fn new(name: &str, targets: &[(Signal, f64)]) -> Self {
        Self {
            name: name.into(),
            targets: targets
                .iter()
                .map(|&(signal, value)| Target { signal, value })
                .collect(),
        }
    }

    pub fn hpa(&self, shared: &Shared) -> HpaSpec {
        let metrics = self
            .targets
            .iter()
            .map(|t| match t.signal {
                Signal::Cpu => MetricSpec::CpuUtilization {
                    target_percent: t.value.round() as i32,
                },
                s => MetricSpec::PodsAverage {
                    name: s.series().into(),
                    target_milli: (t.value * 1000.0).round().max(1.0) as i64,
                },
            })
            .collect();
        HpaSpec {
            min_replicas: Some(shared.min_replicas),
            max_replicas: shared.max_replicas,
            metrics,
            behavior: Some(shared.behavior.clone()),
        }
    }
}

/// The policies compared for a model. Targets that depend on the pod are set from its curve:
/// 80% of the knee's throughput for requests per second; the knee's own value (at least 1) for
/// queue and waiting sequences. wick_saturation is tried at several targets, since where the
/// knee falls on it depends on the model: a chat pod with its measured knee reads 1.0 there,
/// an encoder whose single request already fills both cores reads its busy fraction, below 1.
pub fn compared(curve: &Curve, chat: bool) -> Vec<Policy> {
    let knee = curve.knee();
    let rps = (0.8 * knee.throughput_rps * 100.0).round() / 100.0;
    let queue = knee.queue_depth.round().max(1.0);
    let mut list = vec![
        Policy::new("CPU 70%", &[(Signal::Cpu, 70.0)]),
        Policy::new(
            &format!("requests/s per pod {rps}"),
            &[(Signal::RequestsPerSecond, rps)],
        ),
        Policy::new(
            &format!("queue depth per pod {queue}"),
            &[(Signal::QueueDepth, queue)],
        ),
        Policy::new("wick_saturation 0.6", &[(Signal::Saturation, 0.6)]),
        Policy::new("wick_saturation 0.7", &[(Signal::Saturation, 0.7)]),
        Policy::new("wick_saturation 0.8", &[(Signal::Saturation, 0.8)]),
        Policy::new("wick_saturation 1.0", &[(Signal::Saturation, 1.0)]),
        Policy::new(
            "wick_saturation 0.8 + CPU 70%",
            &[(Signal::Saturation, 0.8), (Signal::Cpu, 70.0)],
        ),
    ];
    if chat {
        let waiting = knee.sequences_waiting.round().max(1.0);
        list.push(Policy::new(
            &format!("waiting sequences per pod {waiting}"),
            &[(Signal::SequencesWaiting, waiting)],
        ));
        list.push(Policy::new(
            "KV cache usage 0.8",
            &[(Signal::KvCacheUsage, 0.8)],
        ));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_behavior_is_what_k8s_ships() {
        let s = Shared::shipped(2, 40, 0);
        assert_eq!(
            s.behavior.scale_up.policies,
            vec![RatePolicy::percent(100, 60), RatePolicy::pods(4, 60)]
        );
        assert_eq!(s.behavior.scale_up.select, Select::Max);
        assert_eq!(s.behavior.scale_down.stabilization_window_s, Some(300));
        assert_eq!(
            s.behavior.scale_down.policies,
            vec![RatePolicy::percent(20, 60)]
        );
    }

    #[test]
    fn targets_become_metric_specs() {
        let p = Policy::new("x", &[(Signal::Saturation, 0.8), (Signal::Cpu, 70.0)]);
        let spec = p.hpa(&Shared::shipped(2, 10, 0));
        assert_eq!(
            spec.metrics[0],
            MetricSpec::PodsAverage {
                name: "wick_saturation".into(),
                target_milli: 800
            }
        );
        assert_eq!(
            spec.metrics[1],
            MetricSpec::CpuUtilization { target_percent: 70 }
        );
    }
}
