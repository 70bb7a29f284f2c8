//! Cases ported from upstream's `pkg/controller/podautoscaler/replica_calculator_test.go`; each
//! test names the upstream test it comes from. The harness mirrors upstream's
//! `replicaCalcTestCase`: pods are `test-pod-N`, Running and Ready unless a case says
//! otherwise, two containers each (so resource levels and requests count twice per pod), the
//! testing tolerance 0.1, CPU initialization period 2 minutes, readiness delay 10 s.

use super::*;

const NOW: Millis = 24 * 3600 * 1000;
/// Go's zero `time.Time`: a start time or transition long before anything else.
const LONG_AGO: Millis = 0;
const CONTAINERS: i64 = 2;

fn calculator() -> Calculator {
    Calculator {
        tolerances: Tolerances::default(),
        cpu_initialization_period: 2 * 60 * 1000,
        delay_of_initial_readiness_status: 10 * 1000,
    }
}

/// `coolCPUCreationTime`: started three minutes ago, past the initialization period.
fn cool() -> Millis {
    NOW - 3 * 60 * 1000
}

/// `hotCPUCreationTime`: started now.
fn hot() -> Millis {
    NOW
}

#[derive(Default)]
struct Case {
    current: i32,
    expected: i32,
    readiness: Vec<bool>,
    start: Vec<Millis>,
    phase: Vec<Phase>,
    deleting: Vec<bool>,
    /// CPU: per-container requests (millicores) and per-container usage of the pods that report.
    requests: Vec<i64>,
    levels: Vec<i64>,
    /// Custom (Pods) metric levels, milli-units per pod.
    metric_levels: Vec<i64>,
    target: i64,
    expected_usage: i64,
    expected_raw: i64,
}

impl Case {
    fn pods(&self) -> Vec<Pod> {
        let count = (self.current as usize).max(self.phase.len());
        (0..count)
            .map(|i| {
                let start = self.start.get(i).copied().unwrap_or(LONG_AGO);
                Pod {
                    name: i as u64,
                    phase: self.phase.get(i).copied().unwrap_or(Phase::Running),
                    deleting: self.deleting.get(i).copied().unwrap_or(false),
                    ready: Some(ReadyCondition {
                        ready: self.readiness.get(i).copied().unwrap_or(true),
                        last_transition: start,
                    }),
                    start_time: Some(start),
                    cpu_request_milli: self.requests.get(i).copied().unwrap_or(0) * CONTAINERS,
                }
            })
            .collect()
    }

    fn metrics(levels: &[i64], per_pod: i64) -> PodMetrics {
        levels
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let m = PodMetric {
                    value: v * per_pod,
                    timestamp: NOW,
                    window: 60 * 1000,
                };
                (i as u64, m)
            })
            .collect()
    }

    fn run(&self) {
        let c = calculator();
        let got = if self.metric_levels.is_empty() {
            let metrics = Self::metrics(&self.levels, CONTAINERS);
            c.resource_replicas(NOW, self.current, self.target as i32, &self.pods(), metrics)
        } else {
            let metrics = Self::metrics(&self.metric_levels, 1);
            c.plain_metric_replicas(NOW, self.current, self.target, &self.pods(), metrics)
        }
        .expect("no error");
        assert_eq!(got.replicas, self.expected, "replicas");
        assert_eq!(got.usage, self.expected_usage, "usage");
        if self.metric_levels.is_empty() {
            assert_eq!(got.raw_average, self.expected_raw, "raw value");
        }
    }
}

fn cpu(n: usize) -> Vec<i64> {
    vec![1000; n]
}

// TestReplicaCalcScaleUp
#[test]
fn scale_up() {
    Case {
        current: 3,
        expected: 5,
        requests: cpu(3),
        levels: vec![300, 500, 700],
        target: 30,
        expected_usage: 50,
        expected_raw: CONTAINERS * 500,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpUnreadyLessScale
#[test]
fn scale_up_unready_less_scale() {
    Case {
        current: 3,
        expected: 4,
        readiness: vec![false, true, true],
        requests: cpu(3),
        levels: vec![300, 500, 700],
        target: 30,
        expected_usage: 60,
        expected_raw: CONTAINERS * 600,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpHotCpuLessScale
#[test]
fn scale_up_hot_cpu_less_scale() {
    Case {
        current: 3,
        expected: 4,
        start: vec![hot(), cool(), cool()],
        requests: cpu(3),
        levels: vec![300, 500, 700],
        target: 30,
        expected_usage: 60,
        expected_raw: CONTAINERS * 600,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpUnreadyNoScale
#[test]
fn scale_up_unready_no_scale() {
    Case {
        current: 3,
        expected: 3,
        readiness: vec![true, false, false],
        requests: cpu(3),
        levels: vec![400, 500, 700],
        target: 30,
        expected_usage: 40,
        expected_raw: CONTAINERS * 400,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleHotCpuNoScale
#[test]
fn scale_hot_cpu_no_scale() {
    Case {
        current: 3,
        expected: 3,
        readiness: vec![true, false, false],
        start: vec![cool(), hot(), hot()],
        requests: cpu(3),
        levels: vec![400, 500, 700],
        target: 30,
        expected_usage: 40,
        expected_raw: CONTAINERS * 400,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpIgnoresFailedPods
#[test]
fn scale_up_ignores_failed_pods() {
    Case {
        current: 2,
        expected: 4,
        readiness: vec![true, true, false, false],
        phase: vec![Phase::Running, Phase::Running, Phase::Failed, Phase::Failed],
        requests: cpu(4),
        levels: vec![500, 700],
        target: 30,
        expected_usage: 60,
        expected_raw: CONTAINERS * 600,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpIgnoresDeletionPods
#[test]
fn scale_up_ignores_deletion_pods() {
    Case {
        current: 2,
        expected: 4,
        readiness: vec![true, true, false, false],
        phase: vec![Phase::Running; 4],
        deleting: vec![false, false, true, true],
        requests: cpu(4),
        levels: vec![500, 700],
        target: 30,
        expected_usage: 60,
        expected_raw: CONTAINERS * 600,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpCM
#[test]
fn scale_up_cm() {
    Case {
        current: 3,
        expected: 4,
        metric_levels: vec![20000, 10000, 30000],
        target: 15000,
        expected_usage: 20000,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: readiness does not matter to a Pods metric.
#[test]
fn scale_up_cm_unready_hot_cpu_no_less_scale() {
    Case {
        current: 3,
        expected: 6,
        readiness: vec![true, true, false],
        start: vec![cool(), cool(), hot()],
        metric_levels: vec![50000, 10000, 30000],
        target: 15000,
        expected_usage: 30000,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown
#[test]
fn scale_up_cm_unready_hot_cpu_scale_would_scale_down() {
    Case {
        current: 3,
        expected: 7,
        readiness: vec![false, true, false],
        start: vec![hot(), cool(), hot()],
        metric_levels: vec![50000, 15000, 30000],
        target: 15000,
        expected_usage: 31666,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleDown
#[test]
fn scale_down() {
    Case {
        current: 5,
        expected: 3,
        requests: cpu(5),
        levels: vec![100, 300, 500, 250, 250],
        target: 50,
        expected_usage: 28,
        expected_raw: CONTAINERS * 280,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleDownCM
#[test]
fn scale_down_cm() {
    Case {
        current: 5,
        expected: 3,
        metric_levels: vec![12000; 5],
        target: 20000,
        expected_usage: 12000,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleDownIncludeUnreadyPods
#[test]
fn scale_down_include_unready_pods() {
    Case {
        current: 5,
        expected: 2,
        readiness: vec![true, true, true, false, false],
        requests: cpu(5),
        levels: vec![100, 300, 500, 250, 250],
        target: 50,
        expected_usage: 30,
        expected_raw: CONTAINERS * 300,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleDownExcludeUnscheduledPods
#[test]
fn scale_down_exclude_unscheduled_pods() {
    let mut phase = vec![Phase::Pending; 5];
    phase[0] = Phase::Running;
    Case {
        current: 5,
        expected: 1,
        readiness: vec![true, false, false, false, false],
        phase,
        requests: cpu(5),
        levels: vec![100],
        target: 50,
        expected_usage: 10,
        expected_raw: CONTAINERS * 100,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleDownIgnoreHotCpuPods
#[test]
fn scale_down_ignore_hot_cpu_pods() {
    Case {
        current: 5,
        expected: 2,
        start: vec![cool(), cool(), cool(), hot(), hot()],
        requests: cpu(5),
        levels: vec![100, 300, 500, 250, 250],
        target: 50,
        expected_usage: 30,
        expected_raw: CONTAINERS * 300,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcScaleDownIgnoresFailedPods
#[test]
fn scale_down_ignores_failed_pods() {
    let mut phase = vec![Phase::Running; 7];
    phase[5] = Phase::Failed;
    phase[6] = Phase::Failed;
    Case {
        current: 5,
        expected: 3,
        readiness: vec![true, true, true, true, true, false, false],
        phase,
        requests: cpu(7),
        levels: vec![100, 300, 500, 250, 250],
        target: 50,
        expected_usage: 28,
        expected_raw: CONTAINERS * 280,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcTolerance
#[test]
fn tolerance() {
    Case {
        current: 3,
        expected: 3,
        requests: vec![900, 1000, 1100],
        levels: vec![1010, 1030, 1020],
        target: 100,
        expected_usage: 102,
        expected_raw: CONTAINERS * 1020,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcToleranceCM
#[test]
fn tolerance_cm() {
    Case {
        current: 3,
        expected: 3,
        metric_levels: vec![20000, 21000, 21000],
        target: 20000,
        expected_usage: 20666,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcSuperfluousMetrics: metrics for pods the selector does not return are skipped.
#[test]
fn superfluous_metrics() {
    Case {
        current: 4,
        expected: 24,
        requests: cpu(4),
        levels: vec![4000, 9500, 3000, 7000, 3200, 2000],
        target: 100,
        expected_usage: 587,
        expected_raw: CONTAINERS * 5875,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetrics
#[test]
fn missing_metrics() {
    Case {
        current: 4,
        expected: 3,
        requests: cpu(4),
        levels: vec![400, 95],
        target: 100,
        expected_usage: 24,
        expected_raw: 495,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsNoChangeEq
#[test]
fn missing_metrics_no_change_eq() {
    Case {
        current: 2,
        expected: 2,
        requests: cpu(2),
        levels: vec![1000],
        target: 100,
        expected_usage: 100,
        expected_raw: CONTAINERS * 1000,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsNoChangeGt
#[test]
fn missing_metrics_no_change_gt() {
    Case {
        current: 2,
        expected: 2,
        requests: cpu(2),
        levels: vec![1900],
        target: 100,
        expected_usage: 190,
        expected_raw: CONTAINERS * 1900,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsNoChangeLt
#[test]
fn missing_metrics_no_change_lt() {
    Case {
        current: 2,
        expected: 2,
        requests: cpu(2),
        levels: vec![600],
        target: 100,
        expected_usage: 60,
        expected_raw: CONTAINERS * 600,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsUnreadyChange
#[test]
fn missing_metrics_unready_change() {
    Case {
        current: 3,
        expected: 3,
        readiness: vec![false, true, true],
        requests: cpu(3),
        levels: vec![100, 450],
        target: 50,
        expected_usage: 45,
        expected_raw: CONTAINERS * 450,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsHotCpuNoChange
#[test]
fn missing_metrics_hot_cpu_no_change() {
    Case {
        current: 3,
        expected: 3,
        start: vec![hot(), cool(), cool()],
        requests: cpu(3),
        levels: vec![100, 450],
        target: 50,
        expected_usage: 45,
        expected_raw: CONTAINERS * 450,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsUnreadyScaleUp
#[test]
fn missing_metrics_unready_scale_up() {
    Case {
        current: 3,
        expected: 4,
        readiness: vec![false, true, true],
        requests: cpu(3),
        levels: vec![100, 2000],
        target: 50,
        expected_usage: 200,
        expected_raw: CONTAINERS * 2000,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsHotCpuScaleUp
#[test]
fn missing_metrics_hot_cpu_scale_up() {
    Case {
        current: 3,
        expected: 4,
        readiness: vec![false, true, true],
        start: vec![hot(), cool(), cool()],
        requests: cpu(3),
        levels: vec![100, 2000],
        target: 50,
        expected_usage: 200,
        expected_raw: CONTAINERS * 2000,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcMissingMetricsUnreadyScaleDown
#[test]
fn missing_metrics_unready_scale_down() {
    Case {
        current: 4,
        expected: 3,
        readiness: vec![false, true, true, true],
        requests: cpu(4),
        levels: vec![100, 100, 100],
        target: 50,
        expected_usage: 10,
        expected_raw: CONTAINERS * 100,
        ..Case::default()
    }
    .run();
}

// TestReplicaCalcEmptyMetrics
#[test]
fn empty_metrics_is_an_error() {
    let c = Case {
        current: 4,
        requests: cpu(3),
        target: 100,
        ..Case::default()
    };
    let got = calculator().resource_replicas(NOW, 4, 100, &c.pods(), PodMetrics::new());
    assert!(got.is_err());
}

// TestReplicaCalcDisjointResourcesMetrics
#[test]
fn disjoint_resources_metrics_is_an_error() {
    let c = Case {
        current: 1,
        requests: cpu(1),
        ..Case::default()
    };
    let metrics = PodMetrics::from([(
        99,
        PodMetric {
            value: 100,
            timestamp: NOW,
            window: 60_000,
        },
    )]);
    let got = calculator().resource_replicas(NOW, 1, 100, &c.pods(), metrics);
    assert_eq!(got, Err("no metrics returned matched known pods".into()));
}

// TestReplicaCalcComputedToleranceAlgImplementation
#[test]
fn computed_tolerance_alg_implementation() {
    let start_pods = 10;
    let total_used: i64 = 10 * 150;
    let total_requested = 2 * total_used;
    let requested_to_used = (total_requested / total_used) as f64;
    let per_pod = total_requested / 10;
    let target = (1.0 / (requested_to_used * (1.0 - DEFAULT_TOLERANCE))).abs() + 0.01;
    let final_target = (target * 100.0) as i64;
    let used_ratio = total_used as f64 / (total_requested as f64 * target);
    let final_pods = (used_ratio * start_pods as f64).ceil() as i32;
    let requests = [100, -100, 10, -10, 2, -2, 1, -1, 0, 0]
        .map(|d| per_pod + d)
        .to_vec();
    let mut case = Case {
        current: start_pods,
        expected: final_pods,
        requests,
        levels: vec![total_used / 10; 10],
        target: final_target,
        expected_usage: total_used * 100 / total_requested,
        expected_raw: CONTAINERS * total_used / 10,
        ..Case::default()
    };
    case.run();
    // Just inside the tolerance: no change.
    let target = (1.0 / (requested_to_used * (1.0 - DEFAULT_TOLERANCE))).abs() + 0.004;
    case.target = (target * 100.0) as i64;
    case.expected = start_pods;
    case.run();
}

fn group(pods: &[Pod], metrics: &PodMetrics, resource: Resource) -> Groups {
    calculator().group_pods(NOW, pods, metrics, resource)
}

fn pod(name: u64, phase: Phase, start: Option<Millis>, ready: Option<(bool, Millis)>) -> Pod {
    Pod {
        name,
        phase,
        deleting: false,
        ready: ready.map(|(ready, t)| ReadyCondition {
            ready,
            last_transition: t,
        }),
        start_time: start,
        cpu_request_milli: 1000,
    }
}

fn sample(timestamp: Millis, window: Millis) -> PodMetric {
    PodMetric {
        value: 1,
        timestamp,
        window,
    }
}

const MIN: Millis = 60 * 1000;
const SEC: Millis = 1000;

// TestGroupPods, one assertion per upstream case.
#[test]
fn group_pods() {
    let m = |ts, w| PodMetrics::from([(1, sample(ts, w))]);
    // "count in a ready pod - memory"
    let g = group(
        &[pod(1, Phase::Succeeded, None, None)],
        &m(NOW, MIN),
        Resource::Other,
    );
    assert_eq!(g.ready_count, 1);
    // "unready a pod without ready condition - CPU"
    let g = group(
        &[pod(1, Phase::Succeeded, Some(NOW), None)],
        &m(NOW, MIN),
        Resource::Cpu,
    );
    assert_eq!((g.ready_count, g.unready.len()), (0, 1));
    // "count in a ready pod with fresh metrics during initialization period - CPU"
    let p = pod(
        1,
        Phase::Succeeded,
        Some(NOW - MIN),
        Some((true, NOW - 30 * SEC)),
    );
    assert_eq!(group(&[p], &m(NOW, 30 * SEC), Resource::Cpu).ready_count, 1);
    // "unready a ready pod without fresh metrics during initialization period - CPU"
    let g = group(&[p], &m(NOW, 60 * SEC), Resource::Cpu);
    assert_eq!((g.ready_count, g.unready.len()), (0, 1));
    // "unready an unready pod during initialization period - CPU"
    let p = pod(
        1,
        Phase::Succeeded,
        Some(NOW - 10 * MIN),
        Some((false, NOW - 9 * MIN - 54 * SEC)),
    );
    assert_eq!(group(&[p], &m(NOW, MIN), Resource::Cpu).unready.len(), 1);
    // "count in a ready pod without fresh metrics after initialization period - CPU"
    let p = pod(
        1,
        Phase::Succeeded,
        Some(NOW - 3 * MIN),
        Some((true, NOW - 3 * MIN)),
    );
    assert_eq!(
        group(&[p], &m(NOW - 2 * MIN, MIN), Resource::Cpu).ready_count,
        1
    );
    // "count in an unready pod that was ready after initialization period - CPU"
    let p = pod(
        1,
        Phase::Succeeded,
        Some(NOW - 10 * MIN),
        Some((false, NOW - 9 * MIN)),
    );
    assert_eq!(group(&[p], &m(NOW, MIN), Resource::Cpu).ready_count, 1);
    // "unready pod that has never been ready after initialization period - CPU"
    let p = pod(
        1,
        Phase::Succeeded,
        Some(NOW - 10 * MIN),
        Some((false, NOW - 9 * MIN - 50 * SEC)),
    );
    assert_eq!(group(&[p], &m(NOW, MIN), Resource::Cpu).ready_count, 1);
    // "a missing pod"
    let p = pod(1, Phase::Succeeded, Some(NOW - 3 * MIN), None);
    let g = group(&[p], &PodMetrics::new(), Resource::Cpu);
    assert_eq!((g.ready_count, g.missing.len()), (0, 1));
    // "several pods"
    let pods = [
        pod(1, Phase::Succeeded, Some(NOW), None),
        pod(
            2,
            Phase::Succeeded,
            Some(NOW - 3 * MIN),
            Some((true, NOW - 3 * MIN)),
        ),
        pod(3, Phase::Succeeded, Some(NOW - 3 * MIN), None),
    ];
    let metrics = PodMetrics::from([(1, sample(NOW, MIN)), (2, sample(NOW, MIN))]);
    let g = group(&pods, &metrics, Resource::Cpu);
    assert_eq!(g.ready_count, 1);
    assert_eq!(g.unready, BTreeSet::from([1]));
    assert_eq!(g.missing, BTreeSet::from([3]));
    // "pending pods are unreadied"
    let g = group(
        &[pod(1, Phase::Pending, None, None)],
        &PodMetrics::new(),
        Resource::Cpu,
    );
    assert_eq!(g.unready, BTreeSet::from([1]));
    // "ignore pods with deletion timestamps" and "ignore pods in a failed phase"
    let mut deleted = pod(1, Phase::Running, Some(NOW), Some((true, NOW)));
    deleted.deleting = true;
    let failed = pod(2, Phase::Failed, Some(NOW), Some((true, NOW)));
    let g = group(&[deleted, failed], &PodMetrics::new(), Resource::Cpu);
    assert_eq!(g.ignored, BTreeSet::from([1, 2]));
}
