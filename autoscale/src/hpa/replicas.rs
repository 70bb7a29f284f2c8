//! Desired replicas for one metric, as upstream's `replica_calculator.go` computes them:
//! `ceil(usage ratio x ready pods)` outside the tolerance band; pods without metrics count as
//! using the target on a scale-down and nothing on a scale-up; unready pods count as nothing on
//! a scale-up and are left out otherwise; a correction that would flip the direction of the
//! change is dropped.

use std::collections::{BTreeMap, BTreeSet};

use super::Millis;

/// `--horizontal-pod-autoscaler-cpu-initialization-period` (controller default 5 minutes).
pub const CPU_INITIALIZATION_PERIOD: Millis = 5 * 60 * 1000;
/// `--horizontal-pod-autoscaler-initial-readiness-delay` (controller default 30 s).
pub const DELAY_OF_INITIAL_READINESS_STATUS: Millis = 30 * 1000;
/// `--horizontal-pod-autoscaler-tolerance` (controller default 0.1).
pub const DEFAULT_TOLERANCE: f64 = 0.1;

pub type PodName = u64;

/// A pod's phase as the HPA reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// The pod's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyCondition {
    pub ready: bool,
    pub last_transition: Millis,
}

/// What the calculator reads of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod {
    pub name: PodName,
    pub phase: Phase,
    pub deleting: bool,
    pub ready: Option<ReadyCondition>,
    pub start_time: Option<Millis>,
    /// The pod's CPU request in millicores (the sum over its containers).
    pub cpu_request_milli: i64,
}

/// One pod's metric sample: a milli-value, when it was taken and the window it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Millis,
    pub window: Millis,
}

pub type PodMetrics = BTreeMap<PodName, PodMetric>;

/// Which metric the pods are grouped for: only CPU looks at readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Other,
}

/// `Tolerances`: the band around a usage ratio of 1 inside which nothing changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub scale_down: f64,
    pub scale_up: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            scale_down: DEFAULT_TOLERANCE,
            scale_up: DEFAULT_TOLERANCE,
        }
    }
}

impl Tolerances {
    pub fn is_within(&self, usage_ratio: f64) -> bool {
        (1.0 - self.scale_down) <= usage_ratio && usage_ratio <= (1.0 + self.scale_up)
    }
}

/// The controller flags the calculator uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calculator {
    pub tolerances: Tolerances,
    pub cpu_initialization_period: Millis,
    pub delay_of_initial_readiness_status: Millis,
}

impl Default for Calculator {
    fn default() -> Self {
        Self {
            tolerances: Tolerances::default(),
            cpu_initialization_period: CPU_INITIALIZATION_PERIOD,
            delay_of_initial_readiness_status: DELAY_OF_INITIAL_READINESS_STATUS,
        }
    }
}

/// `groupPods`' result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    pub ready_count: usize,
    pub unready: BTreeSet<PodName>,
    pub missing: BTreeSet<PodName>,
    pub ignored: BTreeSet<PodName>,
}

/// A replica proposal for one metric, with the current usage upstream reports in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub replicas: i32,
    /// Average milli-value (Pods metrics) or utilization percent (CPU).
    pub usage: i64,
    /// CPU only: the average raw milli-value.
    pub raw_average: i64,
}

impl Calculator {
    /// `groupPods`: deleted and failed pods are ignored, pending ones unready, pods without a
    /// metric missing; for CPU, a pod is unready while it starts up unless its sample was taken
    /// a whole window after it turned ready.
    pub fn group_pods(
        &self,
        now: Millis,
        pods: &[Pod],
        metrics: &PodMetrics,
        resource: Resource,
    ) -> Groups {
        let mut g = Groups::default();
        for pod in pods {
            if pod.deleting || pod.phase == Phase::Failed {
                g.ignored.insert(pod.name);
                continue;
            }
            if pod.phase == Phase::Pending {
                g.unready.insert(pod.name);
                continue;
            }
            let Some(metric) = metrics.get(&pod.name) else {
                g.missing.insert(pod.name);
                continue;
            };
            if resource == Resource::Cpu && self.cpu_unready(now, pod, metric) {
                g.unready.insert(pod.name);
                continue;
            }
            g.ready_count += 1;
        }
        g
    }

    fn cpu_unready(&self, now: Millis, pod: &Pod, metric: &PodMetric) -> bool {
        let (Some(condition), Some(start)) = (pod.ready, pod.start_time) else {
            return true;
        };
        if start + self.cpu_initialization_period > now {
            // Still starting: ignore the sample if the pod is unready, or if a whole metric
            // window has not passed since it turned ready.
            !condition.ready || metric.timestamp < condition.last_transition + metric.window
        } else {
            // Ignore a pod that is unready and has never been ready.
            !condition.ready
                && start + self.delay_of_initial_readiness_status > condition.last_transition
        }
    }

    /// `GetMetricReplicas` / `calcPlainMetricReplicas`: a Pods metric with an AverageValue
    /// target in milli-units.
    pub fn plain_metric_replicas(
        &self,
        now: Millis,
        current_replicas: i32,
        target_milli: i64,
        pods: &[Pod],
        mut metrics: PodMetrics,
    ) -> Result<Proposal, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group_pods(now, pods, &metrics, Resource::Other);
        remove(&mut metrics, &g.ignored);
        remove(&mut metrics, &g.unready);
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        let (usage_ratio, usage) = metric_usage_ratio(&metrics, target_milli);
        let proposal = |replicas| Proposal {
            replicas,
            usage,
            raw_average: usage,
        };
        let scale_up_with_unready = !g.unready.is_empty() && usage_ratio > 1.0;
        if !scale_up_with_unready && g.missing.is_empty() {
            if self.tolerances.is_within(usage_ratio) {
                return Ok(proposal(current_replicas));
            }
            return Ok(proposal(ceil_i32(usage_ratio * g.ready_count as f64)));
        }
        if !g.missing.is_empty() {
            // Scale-down: a pod without a metric uses exactly the target; scale-up: nothing.
            let fill = if usage_ratio < 1.0 {
                Some(target_milli)
            } else if usage_ratio > 1.0 {
                Some(0)
            } else {
                None
            };
            if let Some(value) = fill {
                for &name in &g.missing {
                    metrics.insert(name, filled(value));
                }
            }
        }
        if scale_up_with_unready {
            for &name in &g.unready {
                metrics.insert(name, filled(0));
            }
        }
        let (new_ratio, _) = metric_usage_ratio(&metrics, target_milli);
        Ok(proposal(self.settle(
            current_replicas,
            usage_ratio,
            new_ratio,
            metrics.len(),
        )))
    }

    /// `GetResourceReplicas`: CPU with a Utilization target, percent of the pods' requests.
    pub fn resource_replicas(
        &self,
        now: Millis,
        current_replicas: i32,
        target_utilization: i32,
        pods: &[Pod],
        mut metrics: PodMetrics,
    ) -> Result<Proposal, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let g = self.group_pods(now, pods, &metrics, Resource::Cpu);
        remove(&mut metrics, &g.ignored);
        remove(&mut metrics, &g.unready);
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        let requests: BTreeMap<PodName, i64> =
            pods.iter().map(|p| (p.name, p.cpu_request_milli)).collect();
        let (usage_ratio, utilization, raw) =
            resource_utilization_ratio(&metrics, &requests, target_utilization)?;
        let proposal = |replicas| Proposal {
            replicas,
            usage: i64::from(utilization),
            raw_average: raw,
        };
        let scale_up_with_unready = !g.unready.is_empty() && usage_ratio > 1.0;
        if !scale_up_with_unready && g.missing.is_empty() {
            if self.tolerances.is_within(usage_ratio) {
                return Ok(proposal(current_replicas));
            }
            return Ok(proposal(ceil_i32(usage_ratio * g.ready_count as f64)));
        }
        if !g.missing.is_empty() {
            if usage_ratio < 1.0 {
                // All of the request, or the target where the target is above 100%.
                let fallback = i64::from(target_utilization.max(100));
                for &name in &g.missing {
                    let request = requests.get(&name).copied().unwrap_or(0);
                    metrics.insert(name, filled(request * fallback / 100));
                }
            } else if usage_ratio > 1.0 {
                for &name in &g.missing {
                    metrics.insert(name, filled(0));
                }
            }
        }
        if scale_up_with_unready {
            for &name in &g.unready {
                metrics.insert(name, filled(0));
            }
        }
        let (new_ratio, _, _) =
            resource_utilization_ratio(&metrics, &requests, target_utilization)?;
        Ok(proposal(self.settle(
            current_replicas,
            usage_ratio,
            new_ratio,
            metrics.len(),
        )))
    }

    /// The second pass: keep the current count inside the band or where the filled-in pods
    /// flip the direction; otherwise `ceil(new ratio x pods considered)`, unless that count
    /// itself goes the other way.
    fn settle(&self, current: i32, ratio: f64, new_ratio: f64, considered: usize) -> i32 {
        if self.tolerances.is_within(new_ratio)
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return current;
        }
        let new_replicas = ceil_i32(new_ratio * considered as f64);
        if (new_ratio < 1.0 && new_replicas > current)
            || (new_ratio > 1.0 && new_replicas < current)
        {
            return current;
        }
        new_replicas
    }
}

fn filled(value: i64) -> PodMetric {
    PodMetric {
        value,
        timestamp: 0,
        window: 0,
    }
}

fn remove(metrics: &mut PodMetrics, pods: &BTreeSet<PodName>) {
    for name in pods {
        metrics.remove(name);
    }
}

fn ceil_i32(v: f64) -> i32 {
    v.ceil().min(f64::from(i32::MAX)) as i32
}

/// `GetMetricUsageRatio`: the integer average milli-value over the target.
pub fn metric_usage_ratio(metrics: &PodMetrics, target_milli: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let usage = total / metrics.len() as i64;
    (usage as f64 / target_milli as f64, usage)
}

/// `GetResourceUtilizationRatio`: integer utilization percent over the target, and the raw
/// average, over the pods that have a request.
pub fn resource_utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<PodName, i64>,
    target_utilization: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut metrics_total, mut requests_total, mut entries) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        let Some(request) = requests.get(name) else {
            continue; // a metric for a pod the selector does not know
        };
        metrics_total += m.value;
        requests_total += request;
        entries += 1;
    }
    if requests_total == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (metrics_total * 100 / requests_total) as i32;
    Ok((
        f64::from(utilization) / f64::from(target_utilization),
        utilization,
        metrics_total / entries,
    ))
}

#[cfg(test)]
mod tests;
