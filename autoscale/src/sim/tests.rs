//! Replays of a few hours against a synthetic curve: fast enough for CI, and each checks a
//! behaviour the comparison depends on.

use super::cluster::Startup;
use super::pipeline::Timing;
use super::policy::{Policy, Shared, Signal, Target};
use super::replay::{run, Scenario};
use super::traffic::{Day, Spike};
use crate::curve::{Curve, Point, Quantiles};

/// A pod whose knee is at 100 req/s (c=4, P99 12 ms) and which peaks at 120 req/s.
fn curve() -> Curve {
    let p = |c: f64, x: f64, p99: f64, sat: f64, cpu: f64, queue: f64| Point {
        concurrency: c,
        throughput_rps: x,
        latency: Quantiles {
            p50: p99 * 0.5,
            p90: p99 * 0.8,
            p99,
        },
        cpu_cores: cpu,
        saturation: sat,
        queue_depth: queue,
        ..Point::default()
    };
    Curve::new(vec![
        p(1.0, 40.0, 10.0, 0.3, 0.5, 0.0),
        p(2.0, 70.0, 11.0, 0.55, 0.9, 0.0),
        p(4.0, 100.0, 12.0, 0.85, 1.3, 0.5),
        p(8.0, 115.0, 40.0, 1.0, 1.6, 3.0),
        p(16.0, 120.0, 120.0, 1.0, 1.7, 10.0),
    ])
    .unwrap()
}

fn scenario(start_h: f64, hours: f64) -> Scenario {
    Scenario {
        curve: curve(),
        chat: false,
        day: Day {
            knee_rps: 100.0,
            spike: Some(Spike::AFTERNOON),
            noise: 0.02,
            seed: 7,
        },
        start_s: (start_h * 3600.0) as u64,
        seconds: (hours * 3600.0) as u64,
        startup: Startup {
            schedule_s: 5.0,
            time_to_ready_s: 1.0,
            probe_period_s: 2.0,
            endpoints_delay_s: 1.0,
        },
        timing: Timing::default(),
        shared: Shared::shipped(2, 40, 0),
        max_pending: 1024.0,
        saturation_knee: 32.0,
        measured_saturation_knee: 32.0,
        cpu_request_cores: 2.0,
        slo_ms: 50.0,
        itl_slo_ms: None,
        sync_phase_s: 7,
    }
}

fn saturation() -> Policy {
    Policy {
        name: "sat".into(),
        targets: vec![Target {
            signal: Signal::Saturation,
            value: 0.8,
        }],
    }
}

#[test]
fn the_morning_ramp_is_followed_within_the_slo() {
    let r = run(&scenario(6.0, 4.0), &saturation());
    let first = &r.minutes[0];
    let last = r.minutes.last().unwrap();
    assert_eq!(first.replicas, 2, "0.3x the knee needs the minimum");
    // 6x the knee at 10:00 needs at least 6 pods (saturation 0.85 at the knee is inside the
    // tolerance of a 0.8 target).
    assert!(
        last.replicas >= 6 && last.replicas <= 12,
        "{}",
        last.replicas
    );
    assert!(r.slo_minutes <= 10, "{} SLO minutes", r.slo_minutes);
    assert!(r.scale_events > 3);
}

#[test]
fn the_flash_spike_triples_the_pods_and_costs_minutes_while_they_start() {
    let r = run(&scenario(14.5, 1.25), &saturation());
    let before = r.minutes[25].replicas;
    let during = r.minutes[40].replicas;
    assert!(during as f64 >= 2.5 * before as f64, "{before} -> {during}");
    assert!(
        r.slo_minutes >= 1,
        "a 30 s tripling cannot be absorbed at once"
    );
}

#[test]
fn slow_pod_start_up_costs_slo_minutes() {
    let fast = run(&scenario(14.5, 1.25), &saturation());
    let mut slow = scenario(14.5, 1.25);
    slow.startup.time_to_ready_s = 180.0;
    let slow = run(&slow, &saturation());
    assert!(
        slow.slo_minutes > fast.slo_minutes,
        "{} vs {}",
        slow.slo_minutes,
        fast.slo_minutes
    );
}

#[test]
fn a_target_that_is_never_reached_never_scales() {
    let kv = Policy {
        name: "kv".into(),
        targets: vec![Target {
            signal: Signal::KvCacheUsage,
            value: 0.8,
        }],
    };
    let r = run(&scenario(9.0, 1.0), &kv);
    assert_eq!(r.max_replicas, 2);
    assert!(
        r.slo_minutes > 50,
        "3-6x the knee on two pods: {}",
        r.slo_minutes
    );
    assert!(r.shed_fraction > 0.2, "{}", r.shed_fraction);
}

#[test]
fn requests_per_second_waits_for_the_rate_window_on_new_pods() {
    // New pods have no rate until two scrapes fall inside the window: the HPA counts them as
    // using nothing on a scale-up, so it scales up more slowly than on saturation.
    let rps = Policy {
        name: "rps".into(),
        targets: vec![Target {
            signal: Signal::RequestsPerSecond,
            value: 80.0,
        }],
    };
    let s = scenario(9.0, 1.0);
    let by_rps = run(&s, &rps);
    let by_saturation = run(&s, &saturation());
    assert!(by_rps.pod_hours > 0.0 && by_saturation.pod_hours > 0.0);
    let first_at =
        |r: &super::replay::Replay, n: usize| r.minutes.iter().position(|m| m.replicas >= n);
    assert!(first_at(&by_rps, 6).is_some());
    assert!(first_at(&by_saturation, 6) <= first_at(&by_rps, 6));
}

#[test]
fn minute_p99_is_never_negative_or_nan() {
    let queue = Policy {
        name: "q".into(),
        targets: vec![Target {
            signal: Signal::QueueDepth,
            value: 1.0,
        }],
    };
    let r = run(&scenario(9.0, 2.0), &queue);
    for (i, m) in r.minutes.iter().enumerate() {
        assert!(m.p99_ms >= 0.0, "minute {i}: {m:?}");
    }
}

#[test]
fn chat_saturation_follows_the_knee_setting() {
    // Chat's wick_saturation is sequences over --saturation-knee: measured with a knee of 32,
    // it barely moves; replayed with the measured knee concurrency (4) it scales the pods.
    let mut chat = scenario(9.0, 1.0);
    chat.chat = true;
    chat.curve = Curve::new(
        chat.curve
            .points
            .iter()
            .map(|p| Point {
                saturation: p.concurrency / 32.0,
                ttft: p.latency,
                itl: p.latency,
                ..p.clone()
            })
            .collect(),
    )
    .unwrap();
    let as_measured = run(&chat, &saturation());
    chat.saturation_knee = 4.0;
    let calibrated = run(&chat, &saturation());
    let (late, timely) = (as_measured.slo_minutes, calibrated.slo_minutes);
    assert!(late >= 10 && timely * 3 <= late, "{late} vs {timely}");
}
