//! Cases ported from upstream's `pkg/controller/podautoscaler/horizontal_test.go`; each test
//! names the upstream test it comes from. `now` is fixed where upstream reads `time.Now()`.

use super::*;
use crate::hpa::spec::Policy;

const NOW: Millis = 24 * 3600 * 1000;
const MIN: Millis = 60 * SECOND;

/// `generateScalingRules(pods, podsPeriod, percent, percentPeriod, stabilizationWindow)`.
fn rules(pods: i32, pods_period: i32, percent: i32, percent_period: i32, window: i32) -> Rules {
    let mut policies = Vec::new();
    if pods != 0 {
        policies.push(Policy::pods(pods, pods_period));
    }
    if percent != 0 {
        policies.push(Policy::percent(percent, percent_period));
    }
    Rules {
        stabilization_window_s: Some(window),
        select: Select::Max,
        policies,
    }
}

/// `generateEventsUniformDistribution`: events centred in equal slices of the last `period_s`.
fn events(changes: &[i32], period_s: i64) -> Vec<ScaleEvent> {
    let segment = period_s as f64 / changes.len() as f64;
    changes
        .iter()
        .enumerate()
        .map(|(i, &change)| {
            // Go converts the float to a whole number of seconds before scaling it.
            let ago = (period_s as f64 - segment * (i + 1) as f64 + segment / 2.0) as Millis;
            ScaleEvent {
                change,
                at: NOW - ago * SECOND,
                outdated: false,
            }
        })
        .collect()
}

fn recs(list: &[(i32, Millis)]) -> Vec<Recommendation> {
    list.iter()
        .map(|&(replicas, ago)| Recommendation {
            replicas,
            at: NOW - ago,
        })
        .collect()
}

// TestNormalizeDesiredReplicas (stabilizeRecommendation, 5 minute window)
#[test]
fn normalize_desired_replicas() {
    // (name, log, desired, expected stabilized, log length after)
    type Case<'a> = (&'a str, &'a [(i32, Millis)], i32, i32, usize);
    let cases: &[Case] = &[
        ("empty log", &[], 5, 5, 1),
        ("stabilize", &[(4, 2 * MIN), (5, MIN)], 3, 5, 3),
        ("no stabilize", &[(1, 2 * MIN), (2, MIN)], 3, 3, 3),
        (
            "no stabilize - old recommendations",
            &[(10, 10 * MIN), (9, 9 * MIN)],
            3,
            3,
            2,
        ),
        (
            "stabilize - old recommendations",
            &[(10, 10 * MIN), (4, MIN), (5, 2 * MIN), (9, 9 * MIN)],
            3,
            5,
            4,
        ),
    ];
    for &(name, log, desired, expected, log_len) in cases {
        let mut h = History {
            recommendations: Some(recs(log)),
            ..History::default()
        };
        assert_eq!(h.stabilize(NOW, 5 * MIN, desired), expected, "{name}");
        assert_eq!(h.recommendations.unwrap().len(), log_len, "{name}");
    }
}

// TestNormalizeDesiredReplicasWithBehavior
#[test]
fn normalize_desired_replicas_with_behavior() {
    struct Case {
        name: &'static str,
        log: &'static [(i32, Millis)],
        current: i32,
        desired: i32,
        expected: i32,
        stored: Option<&'static [i32]>,
        up_window: i32,
        down_window: i32,
    }
    let cases = [
        Case {
            name: "empty recommendations for scaling down",
            log: &[],
            current: 100,
            desired: 5,
            expected: 5,
            stored: Some(&[5]),
            up_window: 0,
            down_window: 0,
        },
        Case {
            name: "simple scale down stabilization",
            log: &[(4, 2 * MIN), (5, MIN)],
            current: 100,
            desired: 3,
            expected: 5,
            stored: Some(&[4, 5, 3]),
            up_window: 0,
            down_window: 180,
        },
        Case {
            name: "simple scale up stabilization",
            log: &[(4, 2 * MIN), (5, MIN)],
            current: 1,
            desired: 7,
            expected: 4,
            stored: Some(&[4, 5, 7]),
            up_window: 300,
            down_window: 0,
        },
        Case {
            name: "no scale down stabilization",
            log: &[(1, 2 * MIN), (2, MIN)],
            current: 100,
            desired: 3,
            expected: 3,
            stored: Some(&[1, 2, 3]),
            up_window: 300,
            down_window: 0,
        },
        Case {
            name: "no scale up stabilization",
            log: &[(4, 2 * MIN), (5, MIN)],
            current: 1,
            desired: 3,
            expected: 3,
            stored: Some(&[4, 5, 3]),
            up_window: 0,
            down_window: 300,
        },
        Case {
            name: "no scale down stabilization, reuse recommendation element",
            log: &[(10, 10 * MIN), (9, 9 * MIN)],
            current: 100,
            desired: 3,
            expected: 3,
            stored: Some(&[10, 3]),
            up_window: 0,
            down_window: 0,
        },
        Case {
            name: "no scale up stabilization, reuse recommendation element",
            log: &[(10, 10 * MIN), (9, 9 * MIN)],
            current: 1,
            desired: 100,
            expected: 100,
            stored: Some(&[10, 100]),
            up_window: 0,
            down_window: 0,
        },
        Case {
            name: "scale down stabilization, reuse one of obsolete recommendation element",
            log: &[(10, 10 * MIN), (4, MIN), (5, 2 * MIN), (9, 9 * MIN)],
            current: 100,
            desired: 3,
            expected: 5,
            stored: Some(&[10, 4, 5, 3]),
            up_window: 0,
            down_window: 180,
        },
        Case {
            name: "scale up stabilization, reuse one of obsolete recommendation element",
            log: &[(10, 100 * MIN), (6, MIN), (5, 2 * MIN), (9, 3 * MIN)],
            current: 1,
            desired: 100,
            expected: 5,
            stored: Some(&[100, 6, 5, 9]),
            up_window: 300,
            down_window: 0,
        },
        Case {
            name:
                "scale up and down stabilization, do not scale up when prenormalized rec goes down",
            log: &[(2, 100 * MIN), (3, 3 * MIN)],
            current: 2,
            desired: 1,
            expected: 2,
            stored: None,
            up_window: 300,
            down_window: 300,
        },
        Case {
            name:
                "scale up and down stabilization, do not scale down when prenormalized rec goes up",
            log: &[(2, 100 * MIN), (1, 3 * MIN)],
            current: 2,
            desired: 3,
            expected: 2,
            stored: None,
            up_window: 300,
            down_window: 300,
        },
    ];
    for c in cases {
        let mut h = History {
            recommendations: Some(recs(c.log)),
            ..History::default()
        };
        let up = Rules {
            stabilization_window_s: Some(c.up_window),
            ..Rules::default_scale_up()
        };
        let down = Rules {
            stabilization_window_s: Some(c.down_window),
            ..Rules::default_scale_down()
        };
        let args = Normalization {
            scale_up: &up,
            scale_down: &down,
            min_replicas: 0,
            max_replicas: 0,
            current_replicas: c.current,
            desired_replicas: c.desired,
        };
        assert_eq!(
            h.stabilize_with_behaviors(NOW, &args),
            c.expected,
            "{}",
            c.name
        );
        if let Some(stored) = c.stored {
            let got: Vec<i32> = h
                .recommendations
                .unwrap()
                .iter()
                .map(|r| r.replicas)
                .collect();
            assert_eq!(got, stored, "{}", c.name);
        }
    }
}

struct RateCase {
    name: &'static str,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
    min: i32,
    max: i32,
    up: Option<Rules>,
    down: Option<Rules>,
    current: i32,
    desired: i32,
    expected: i32,
    condition: &'static str,
}

fn rate(
    name: &'static str,
    min: i32,
    max: i32,
    current: i32,
    desired: i32,
    expected: i32,
    condition: &'static str,
) -> RateCase {
    RateCase {
        name,
        up_events: vec![],
        down_events: vec![],
        min,
        max,
        up: None,
        down: None,
        current,
        desired,
        expected,
        condition,
    }
}

// TestScalingWithRules (convertDesiredReplicasWithBehaviorRate; unset rules take the defaults)
#[test]
fn scaling_with_rules() {
    let with_up = |mut c: RateCase, r: Rules| {
        c.up = Some(r);
        c
    };
    let with_down = |mut c: RateCase, r: Rules| {
        c.down = Some(r);
        c
    };
    let up_ev = |mut c: RateCase, e: Vec<ScaleEvent>| {
        c.up_events = e;
        c
    };
    let down_ev = |mut c: RateCase, e: Vec<ScaleEvent>| {
        c.down_events = e;
        c
    };
    let cases = vec![
        rate("prenormalized desired replicas within range", 3, 8, 5, 7, 7, "DesiredWithinRange"),
        rate("prenormalized desired replicas < minReplicas", 2, 8, 3, 1, 2, "TooFewReplicas"),
        rate("prenormalized desired replicas within range when minReplicas is 0", 0, 10, 1, 0, 0, "DesiredWithinRange"),
        rate("maxReplicas is the limit because maxReplicas < scaleUpLimit", 1, 10, 20, 1000, 10, "TooManyReplicas"),
        rate("desired replica count is more than the maximum replica count", 100, 150, 100, 1000, 150, "TooManyReplicas"),
        with_up(rate("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", 1, 2000, 3, 1000, 4, "ScaleUpLimit"), rules(0, 0, 1, 60, 0)),
        rate("scaleUp with default behavior", 1, 1000, 10, 50, 20, "ScaleUpLimit"),
        with_up(rate("scaleUp with pods policy larger than percent policy", 1, 1000, 10, 500, 110, "ScaleUpLimit"), rules(100, 60, 100, 60, 0)),
        with_up(rate("scaleUp with percent policy larger than pods policy", 1, 1000, 10, 500, 20, "ScaleUpLimit"), rules(2, 60, 100, 60, 0)),
        with_up(rate("scaleUp with spec MaxReplicas limitation with large pod policy", 1, 1000, 10, 50, 50, "DesiredWithinRange"), rules(100, 60, 0, 0, 0)),
        with_up(rate("scaleUp with spec MaxReplicas limitation with large percent policy", 1, 1000, 10, 50, 50, "DesiredWithinRange"), rules(10000, 60, 0, 0, 0)),
        with_up(rate("scaleUp with pod policy limitation", 1, 1000, 10, 50, 40, "ScaleUpLimit"), rules(30, 60, 0, 0, 0)),
        with_up(rate("scaleUp with percent policy limitation", 1, 1000, 10, 50, 30, "ScaleUpLimit"), rules(0, 0, 200, 60, 0)),
        with_down(rate("scaleDown with percent policy larger than pod policy", 1, 1000, 100, 2, 80, "ScaleDownLimit"), rules(20, 60, 1, 60, 300)),
        with_down(rate("scaleDown with pod policy larger than percent policy", 1, 1000, 100, 2, 98, "ScaleDownLimit"), rules(2, 60, 1, 60, 300)),
        with_down(rate("scaleDown with spec MinReplicas=nil limitation with large pod policy", 1, 1000, 10, 0, 1, "TooFewReplicas"), rules(100, 60, 0, 0, 300)),
        with_down(rate("scaleDown with spec MinReplicas limitation with large percent policy", 5, 1000, 10, 2, 5, "TooFewReplicas"), rules(0, 0, 100, 60, 300)),
        with_down(rate("scaleDown with pod policy limitation", 1, 1000, 10, 2, 5, "ScaleDownLimit"), rules(5, 60, 0, 0, 300)),
        with_down(rate("scaleDown with percent policy limitation", 1, 1000, 10, 5, 5, "DesiredWithinRange"), rules(0, 0, 50, 60, 300)),
        up_ev(with_up(rate("scaleUp with spec MaxReplicas limitation with large pod policy and events", 1, 200, 100, 500, 200, "TooManyReplicas"), rules(300, 60, 0, 0, 0)), events(&[1, 5, 9], 120)),
        up_ev(with_up(rate("scaleUp with spec MaxReplicas limitation with large percent policy and events", 1, 200, 100, 500, 200, "TooManyReplicas"), rules(0, 0, 10000, 60, 0)), events(&[1, 5, 9], 120)),
        up_ev(with_up(rate("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events", 1, 1000, 100, 500, 100, "ScaleUpLimit"), rules(5, 120, 0, 0, 0)), events(&[1, 5, 9], 120)),
        up_ev(with_up(rate("scaleUp with pod policy and previous scale up events", 1, 1000, 100, 500, 235, "ScaleUpLimit"), rules(150, 120, 0, 0, 0)), events(&[1, 5, 9], 120)),
        up_ev(with_up(rate("scaleUp with percent policy and previous scale up events", 1, 1000, 100, 500, 255, "ScaleUpLimit"), rules(0, 0, 200, 120, 0)), events(&[1, 5, 9], 120)),
        down_ev(up_ev(with_up(rate("scaleUp with percent policy and previous scale up and down events", 1, 1000, 6, 24, 16, "ScaleUpLimit"), rules(0, 0, 300, 300, 0)), events(&[4], 120)), events(&[2], 120)),
        down_ev(rate("scaleDown with default policy and previous events", 1, 1000, 10, 5, 5, "DesiredWithinRange"), events(&[1, 5, 9], 120)),
        down_ev(with_down(rate("scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", 1, 1000, 100, 0, 1, "TooFewReplicas"), rules(115, 120, 0, 0, 300)), events(&[1, 5, 9], 120)),
        down_ev(with_down(rate("scaleDown with spec MinReplicas limitation with large pod policy and previous events", 5, 1000, 100, 0, 5, "TooFewReplicas"), rules(130, 120, 0, 0, 300)), events(&[1, 5, 9], 120)),
        down_ev(with_down(rate("scaleDown with spec MinReplicas limitation with large percent policy and previous events", 5, 1000, 100, 2, 5, "TooFewReplicas"), rules(0, 0, 100, 120, 300)), events(&[1, 5, 9], 120)),
        down_ev(with_down(rate("scaleDown with pod policy limitation and previous events", 1, 1000, 100, 2, 100, "ScaleDownLimit"), rules(5, 120, 0, 0, 300)), events(&[1, 5, 9], 120)),
        down_ev(with_down(rate("scaleDown with percent policy limitation and previous events", 1, 1000, 100, 0, 56, "ScaleDownLimit"), rules(0, 0, 50, 120, 300)), events(&[2, 4, 6], 120)),
        down_ev(up_ev(with_down(rate("scaleDown with percent policy and previous scale up and down events", 1, 1000, 10, 1, 6, "ScaleDownLimit"), rules(0, 0, 50, 180, 0)), events(&[2], 120)), events(&[4], 120)),
        down_ev(with_down(rate("scaleDown with previous events preventing further scale down", 1, 1000, 100, 0, 100, "ScaleDownLimit"), rules(0, 0, 10, 120, 300)), events(&[10, 10, 10], 120)),
        down_ev(with_down(rate("scaleDown with with previous events still allowing more scale down", 1, 1000, 10, 5, 5, "DesiredWithinRange"), rules(0, 0, 1000, 120, 300)), events(&[10, 10, 10], 120)),
        up_ev(with_up(rate("check 'outdated' flag for events for one behavior for up", 1, 1000, 100, 200, 200, "DesiredWithinRange"), rules(1000, 60, 0, 0, 0)), events(&[8, 12, 9, 11], 120)),
        up_ev(with_up(rate("check that events were not marked 'outdated' for two different policies in the behavior for up", 1, 1000, 100, 200, 200, "DesiredWithinRange"), rules(1000, 120, 100, 60, 0)), events(&[8, 12, 9, 11], 120)),
        up_ev(with_up(rate("check that events were marked 'outdated' for two different policies in the behavior for up", 1, 1000, 100, 200, 200, "DesiredWithinRange"), rules(1000, 30, 100, 60, 0)), events(&[8, 12, 9, 11], 120)),
        down_ev(with_down(rate("check 'outdated' flag for events for one behavior for down", 1, 1000, 100, 5, 5, "DesiredWithinRange"), rules(1000, 60, 0, 0, 300)), events(&[8, 12, 9, 11], 120)),
        down_ev(with_down(rate("check that events were not marked 'outdated' for two different policies in the behavior for down", 1, 1000, 100, 5, 5, "DesiredWithinRange"), rules(1000, 120, 100, 60, 300)), events(&[8, 12, 9, 11], 120)),
        down_ev(with_down(rate("check that events were marked 'outdated' for two different policies in the behavior for down", 1, 1000, 100, 5, 5, "DesiredWithinRange"), rules(1000, 30, 100, 60, 300)), events(&[8, 12, 9, 11], 120)),
    ];
    for c in cases {
        let h = History {
            recommendations: None,
            scale_up_events: c.up_events.clone(),
            scale_down_events: c.down_events.clone(),
        };
        let up = c.up.clone().unwrap_or_else(Rules::default_scale_up);
        let down = c.down.clone().unwrap_or_else(Rules::default_scale_down);
        let args = Normalization {
            scale_up: &up,
            scale_down: &down,
            min_replicas: c.min,
            max_replicas: c.max,
            current_replicas: c.current,
            desired_replicas: c.desired,
        };
        assert_eq!(
            h.limit_rate(NOW, &args),
            (c.expected, c.condition),
            "{}",
            c.name
        );
    }
}

// TestStoreScaleEvents
#[test]
fn store_scale_events() {
    type Ev = (i32, Millis, bool);
    // (name, events before, events after, rules, replicas changed in the last 60 s before)
    type Case = (&'static str, Vec<Ev>, Vec<Ev>, Option<Rules>, i32);
    let cases: Vec<Case> = vec![
        (
            "empty entries with default behavior",
            vec![],
            vec![],
            None,
            0,
        ),
        (
            "empty entries with two-policy-behavior",
            vec![],
            vec![(5, 0, false)],
            Some(rules(10, 60, 100, 60, 0)),
            0,
        ),
        (
            "one outdated entry to be kept untouched without behavior",
            vec![(7, 61, false)],
            vec![(7, 0, false)],
            None,
            0,
        ),
        (
            "one outdated entry to be replaced with behavior",
            vec![(7, 61, false)],
            vec![(5, 0, false)],
            Some(rules(10, 60, 100, 60, 0)),
            0,
        ),
        (
            "one actual entry to be not touched with behavior",
            vec![(7, 58, false)],
            vec![(7, 0, false), (5, 0, false)],
            Some(rules(10, 60, 100, 60, 0)),
            7,
        ),
        (
            "two entries, one of them to be replaced",
            vec![(7, 61, false), (6, 59, false)],
            vec![(5, 0, false), (6, 0, false)],
            Some(rules(10, 60, 0, 0, 0)),
            6,
        ),
        (
            "replace one entry, use policies with different periods",
            vec![
                (8, 29, false),
                (6, 59, false),
                (7, 61, false),
                (9, 61, false),
            ],
            vec![(8, 0, false), (6, 0, false), (7, 0, true), (5, 0, false)],
            Some(rules(10, 60, 100, 30, 0)),
            14,
        ),
        (
            "two entries, both actual",
            vec![(7, 58, false), (6, 59, false)],
            vec![(7, 0, false), (6, 0, false), (5, 0, false)],
            Some(rules(10, 120, 100, 30, 0)),
            13,
        ),
    ];
    let to_events = |list: &[Ev]| -> Vec<ScaleEvent> {
        list.iter()
            .map(|&(change, ago, outdated)| ScaleEvent {
                change,
                at: NOW - ago * SECOND,
                outdated,
            })
            .collect()
    };
    for (name, prev, new, r, expected_change) in cases {
        for up in [true, false] {
            let mut h = History::default();
            if up {
                h.scale_up_events = to_events(&prev)
            } else {
                h.scale_down_events = to_events(&prev)
            }
            let stored = if up {
                &h.scale_up_events
            } else {
                &h.scale_down_events
            };
            assert_eq!(
                replicas_change_per_period(NOW, 60, stored),
                expected_change,
                "{name}"
            );
            let default_down = Rules::default_scale_down();
            let default_up = Rules::default_scale_up();
            let behavior = r.as_ref().map(|r| {
                if up {
                    (r, &default_down)
                } else {
                    (&default_up, r)
                }
            });
            let (prev_count, new_count) = if up { (10, 15) } else { (10, 5) };
            h.store_scale_event(NOW, behavior, prev_count, new_count);
            let stored = if up {
                &h.scale_up_events
            } else {
                &h.scale_down_events
            };
            let got: Vec<(i32, bool)> = stored.iter().map(|e| (e.change, e.outdated)).collect();
            let want: Vec<(i32, bool)> = new.iter().map(|&(c, _, o)| (c, o)).collect();
            assert_eq!(got, want, "{name} (up: {up})");
        }
    }
}

// TestConvertDesiredReplicasWithRules
#[test]
fn convert_desired_replicas_with_rules() {
    let cases = [
        (5, 7, 3, 8, 7, "DesiredWithinRange"),
        (3, 1, 2, 8, 2, "TooFewReplicas"),
        (1, 0, 0, 10, 0, "DesiredWithinRange"),
        (20, 1000, 1, 10, 10, "TooManyReplicas"),
        (3, 1000, 1, 2000, legacy_scale_up_limit(3), "ScaleUpLimit"),
    ];
    for (current, desired, min, max, expected, condition) in cases {
        assert_eq!(
            limit_without_behavior(current, desired, min, max),
            (expected, condition)
        );
    }
}

fn min_select(mut r: Rules) -> Rules {
    r.select = Select::Min;
    r
}

// TestCalculateScaleUpLimitWithScalingRules
#[test]
fn calculate_scale_up_limit_with_scaling_rules() {
    let r = min_select(Rules {
        stabilization_window_s: Some(300),
        select: Select::Min,
        policies: vec![Policy::pods(2, 60), Policy::percent(50, 60)],
    });
    assert_eq!(scale_up_limit(NOW, 1, &[], &[], &r), 2);
}

// TestCalculateScaleDownLimitWithBehaviors
#[test]
fn calculate_scale_down_limit_with_behaviors() {
    let r = min_select(Rules {
        stabilization_window_s: Some(300),
        select: Select::Min,
        policies: vec![Policy::pods(2, 60), Policy::percent(50, 60)],
    });
    assert_eq!(scale_down_limit(NOW, 5, &[], &[], &r), 3);
}

#[test]
fn disabled_select_policy_holds_the_count() {
    let r = Rules {
        select: Select::Disabled,
        ..Rules::default_scale_up()
    };
    assert_eq!(scale_up_limit(NOW, 7, &[], &[], &r), 7);
    assert_eq!(scale_down_limit(NOW, 7, &[], &[], &r), 7);
}
