//! One HPA sync (`reconcileAutoscaler`): a proposal per metric, the largest wins; min/max;
//! then stabilization and rate limits, with or without a `behavior`.

use super::behavior::{limit_without_behavior, History, Normalization};
use super::replicas::{Calculator, Pod, PodMetrics};
use super::spec::{HpaSpec, MetricSpec, Rules};
use super::{Millis, SECOND};

/// `--horizontal-pod-autoscaler-downscale-stabilization` (controller default 5 minutes).
pub const DOWNSCALE_STABILIZATION: Millis = 300 * SECOND;
/// `--horizontal-pod-autoscaler-sync-period` (controller default 15 s).
pub const SYNC_PERIOD: Millis = 15 * SECOND;

/// The controller state for one HPA.
#[derive(Debug, Clone)]
pub struct Controller {
    pub calculator: Calculator,
    pub downscale_stabilization: Millis,
    pub history: History,
}

impl Default for Controller {
    fn default() -> Self {
        Self {
            calculator: Calculator::default(),
            downscale_stabilization: DOWNSCALE_STABILIZATION,
            history: History::default(),
        }
    }
}

/// What one sync decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The new `spec.replicas` (the current count when nothing changes).
    pub replicas: i32,
    pub rescaled: bool,
    /// The largest metric proposal, before stabilization and limits (`None` on failure).
    pub proposal: Option<i32>,
    pub reason: String,
}

impl Controller {
    /// Syncs once. `metrics[i]` is what the metrics API returned for `spec.metrics[i]`: per-pod
    /// samples, or the error a failed query gives.
    pub fn reconcile(
        &mut self,
        now: Millis,
        spec: &HpaSpec,
        current: i32,
        pods: &[Pod],
        metrics: &[Result<PodMetrics, String>],
    ) -> Decision {
        self.history.record_initial(now, current);
        let min = spec.min_replicas.unwrap_or(1);
        let (desired, proposal, reason) = if current == 0 && min != 0 {
            (
                0,
                None,
                "scaling is disabled since the replica count of the target is zero".to_string(),
            )
        } else if current > spec.max_replicas {
            (
                spec.max_replicas,
                None,
                "Current number of replicas above Spec.MaxReplicas".into(),
            )
        } else if current < min {
            (
                min,
                None,
                "Current number of replicas below Spec.MinReplicas".into(),
            )
        } else {
            match self.replicas_for_metrics(now, spec, current, pods, metrics) {
                Err(e) => {
                    return Decision {
                        replicas: current,
                        rescaled: false,
                        proposal: None,
                        reason: e,
                    };
                }
                Ok(proposal) => {
                    let desired = self.normalize(now, spec, current, proposal.max(0), min);
                    (desired, Some(proposal), String::new())
                }
            }
        };
        let rescaled = !(current == 0 && min != 0) && desired != current;
        if rescaled {
            let behavior = spec.behavior.as_ref().map(|b| (&b.scale_up, &b.scale_down));
            self.history
                .store_scale_event(now, behavior, current, desired);
        }
        Decision {
            replicas: if rescaled { desired } else { current },
            rescaled,
            proposal,
            reason,
        }
    }

    /// `computeReplicasForMetrics`: the largest proposal; an error when every metric failed,
    /// or when some failed and the rest would scale down.
    fn replicas_for_metrics(
        &self,
        now: Millis,
        spec: &HpaSpec,
        current: i32,
        pods: &[Pod],
        metrics: &[Result<PodMetrics, String>],
    ) -> Result<i32, String> {
        let mut replicas = 0;
        let mut invalid = 0;
        let mut first_error = None;
        for (i, metric) in spec.metrics.iter().enumerate() {
            let samples = metrics
                .get(i)
                .cloned()
                .unwrap_or_else(|| Err("no metric".into()));
            let proposal = samples.and_then(|samples| match metric {
                MetricSpec::CpuUtilization { target_percent } => {
                    self.calculator
                        .resource_replicas(now, current, *target_percent, pods, samples)
                }
                MetricSpec::PodsAverage { target_milli, .. } => self
                    .calculator
                    .plain_metric_replicas(now, current, *target_milli, pods, samples),
            });
            match proposal {
                Ok(p) if replicas == 0 || p.replicas > replicas => replicas = p.replicas,
                Ok(_) => {}
                Err(e) => {
                    invalid += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if invalid >= spec.metrics.len() || (invalid > 0 && replicas < current) {
            let e = first_error.unwrap_or_default();
            return Err(format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {e}",
                spec.metrics.len()
            ));
        }
        Ok(replicas)
    }

    fn normalize(
        &mut self,
        now: Millis,
        spec: &HpaSpec,
        current: i32,
        desired: i32,
        min: i32,
    ) -> i32 {
        let Some(behavior) = &spec.behavior else {
            let stabilized = self
                .history
                .stabilize(now, self.downscale_stabilization, desired);
            return limit_without_behavior(current, stabilized, min, spec.max_replicas).0;
        };
        // `maybeInitScaleDownStabilizationWindow`: an unset window is the controller's flag.
        let window_s = (self.downscale_stabilization / SECOND) as i32;
        let scale_down = Rules {
            stabilization_window_s: Some(
                behavior
                    .scale_down
                    .stabilization_window_s
                    .unwrap_or(window_s),
            ),
            ..behavior.scale_down.clone()
        };
        let mut args = Normalization {
            scale_up: &behavior.scale_up,
            scale_down: &scale_down,
            min_replicas: min,
            max_replicas: spec.max_replicas,
            current_replicas: current,
            desired_replicas: desired,
        };
        args.desired_replicas = self.history.stabilize_with_behaviors(now, &args);
        self.history.limit_rate(now, &args).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::behavior::Recommendation;
    use crate::hpa::replicas::{Phase, PodMetric, ReadyCondition};
    use crate::hpa::spec::Behavior;

    const NOW: Millis = 24 * 3600 * 1000;

    /// Upstream's `testCase` pods: Running, Ready, started long ago, 1 CPU requested.
    fn pods(n: usize, request_milli: i64) -> Vec<Pod> {
        (0..n as u64)
            .map(|name| Pod {
                name,
                phase: Phase::Running,
                deleting: false,
                ready: Some(ReadyCondition {
                    ready: true,
                    last_transition: 0,
                }),
                start_time: Some(0),
                cpu_request_milli: request_milli,
            })
            .collect()
    }

    fn samples(levels: &[i64]) -> PodMetrics {
        levels
            .iter()
            .enumerate()
            .map(|(i, &value)| {
                (
                    i as u64,
                    PodMetric {
                        value,
                        timestamp: NOW,
                        window: 60 * SECOND,
                    },
                )
            })
            .collect()
    }

    fn spec(min: i32, max: i32, metrics: Vec<MetricSpec>) -> HpaSpec {
        HpaSpec {
            min_replicas: Some(min),
            max_replicas: max,
            metrics,
            behavior: None,
        }
    }

    fn qps(target_milli: i64) -> MetricSpec {
        MetricSpec::PodsAverage {
            name: "qps".into(),
            target_milli,
        }
    }

    // TestNoBackoffUpscaleCM
    #[test]
    fn no_backoff_upscale_cm() {
        let mut c = Controller::default();
        let d = c.reconcile(
            NOW,
            &spec(1, 5, vec![qps(15000)]),
            3,
            &pods(3, 1000),
            &[Ok(samples(&[20000, 10000, 30000]))],
        );
        assert_eq!(d.replicas, 4);
    }

    // TestNoBackoffUpscaleCMNoBackoffCpu: the larger proposal (CPU) wins, capped at max.
    #[test]
    fn no_backoff_upscale_cm_no_backoff_cpu() {
        let mut c = Controller::default();
        let s = spec(
            1,
            5,
            vec![
                MetricSpec::CpuUtilization { target_percent: 10 },
                qps(15000),
            ],
        );
        let levels = samples(&[20000, 10000, 30000]);
        let d = c.reconcile(
            NOW,
            &s,
            3,
            &pods(3, 1000),
            &[Ok(levels.clone()), Ok(levels)],
        );
        assert_eq!(d.replicas, 5);
    }

    // TestStabilizeDownscale
    #[test]
    fn stabilize_downscale() {
        let mut c = Controller::default();
        c.history.recommendations = Some(vec![
            Recommendation {
                replicas: 10,
                at: NOW - 10 * 60 * SECOND,
            },
            Recommendation {
                replicas: 4,
                at: NOW - 60 * SECOND,
            },
        ]);
        let s = spec(
            1,
            5,
            vec![MetricSpec::CpuUtilization {
                target_percent: 100,
            }],
        );
        let d = c.reconcile(NOW, &s, 4, &pods(3, 100), &[Ok(samples(&[50, 50, 50]))]);
        assert_eq!((d.replicas, d.proposal), (4, Some(2)));
    }

    // TestScaleUpRCImmediately
    #[test]
    fn scale_up_rc_immediately() {
        let mut c = Controller::default();
        let s = spec(
            2,
            6,
            vec![MetricSpec::CpuUtilization { target_percent: 80 }],
        );
        let d = c.reconcile(NOW, &s, 1, &pods(4, 1000), &[Ok(samples(&[0, 0, 0, 0]))]);
        assert_eq!(d.replicas, 2);
    }

    // TestScaleDownRCImmediately
    #[test]
    fn scale_down_rc_immediately() {
        let mut c = Controller::default();
        let s = spec(
            2,
            5,
            vec![MetricSpec::CpuUtilization { target_percent: 50 }],
        );
        let d = c.reconcile(
            NOW,
            &s,
            6,
            &pods(3, 1000),
            &[Ok(samples(&[8000, 9500, 1000]))],
        );
        assert_eq!(d.replicas, 5);
    }

    // TestScaleUpOneMetricEmpty: a failing metric does not stop a scale-up.
    #[test]
    fn scale_up_one_metric_empty() {
        let mut c = Controller::default();
        let s = spec(
            2,
            6,
            vec![MetricSpec::CpuUtilization { target_percent: 30 }, qps(100)],
        );
        let d = c.reconcile(
            NOW,
            &s,
            3,
            &pods(3, 1000),
            &[
                Ok(samples(&[300, 400, 500])),
                Err("something went wrong".into()),
            ],
        );
        assert_eq!(d.replicas, 4);
    }

    // TestNoScaleDownOneMetricEmpty: it does stop a scale-down.
    #[test]
    fn no_scale_down_one_metric_empty() {
        let mut c = Controller::default();
        let s = spec(
            2,
            6,
            vec![MetricSpec::CpuUtilization { target_percent: 50 }, qps(1000)],
        );
        let d = c.reconcile(
            NOW,
            &s,
            5,
            &pods(5, 1000),
            &[
                Ok(samples(&[100, 300, 500, 250, 250])),
                Err("something went wrong".into()),
            ],
        );
        assert_eq!((d.replicas, d.rescaled), (5, false));
    }

    #[test]
    fn behavior_rate_limits_and_remembers_events_across_syncs() {
        // Scale-up 4 pods or 100% per 60 s (Max); from 2 pods at 4x the target.
        let behavior = Behavior::from_spec(
            Some(crate::hpa::spec::RulesSpec {
                policies: Some(vec![
                    crate::hpa::spec::Policy::percent(100, 60),
                    crate::hpa::spec::Policy::pods(4, 60),
                ]),
                ..Default::default()
            }),
            None,
        );
        let s = HpaSpec {
            behavior: Some(behavior),
            ..spec(2, 40, vec![qps(1000)])
        };
        let mut c = Controller::default();
        let d = c.reconcile(NOW, &s, 2, &pods(2, 1000), &[Ok(samples(&[4000, 4000]))]);
        assert_eq!(d.replicas, 6, "2 + max(100%, 4 pods)");
        // 15 s later the new pods are not ready yet (Pending) and the period has room for none.
        let mut listed = pods(6, 1000);
        for p in &mut listed[2..] {
            p.phase = Phase::Pending;
        }
        let d = c.reconcile(
            NOW + 15 * SECOND,
            &s,
            6,
            &listed,
            &[Ok(samples(&[4000, 4000]))],
        );
        assert_eq!(d.replicas, 6, "the 60 s period still counts the +4");
        // A period later the limit is 6 + max(6, 4).
        let d = c.reconcile(
            NOW + 61 * SECOND,
            &s,
            6,
            &pods(6, 1000),
            &[Ok(samples(&[4000; 6]))],
        );
        assert_eq!(d.replicas, 12);
    }
}
