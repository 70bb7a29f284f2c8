//! The comparison a replay leaves: a markdown table, one row per policy, and a PNG of the
//! offered load, the replicas and the P99 over the day.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::plot::{self, Panel, Series, PALETTE};
use crate::sim::replay::{Replay, Scenario};

/// The markdown table of a comparison.
pub fn table(replays: &[Replay]) -> String {
    let mut out = String::from(
        "| policy | SLO-violating minutes | pod-hours | scale events | max replicas | requests shed | violations at |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in replays {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {} | {:.2}% | {} |",
            r.policy,
            r.slo_minutes,
            r.pod_hours,
            r.scale_events,
            r.max_replicas,
            r.shed_fraction * 100.0,
            spans(r)
        );
    }
    out
}

/// When a replay broke its SLO, as clock times: `09:14, 15:00-15:02` (the first few spans).
pub fn spans(r: &Replay) -> String {
    let clock = |minute: usize| {
        let m = (r.start_s / 60) as usize + minute;
        format!("{:02}:{:02}", (m / 60) % 24, m % 60)
    };
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < r.minutes.len() {
        if !r.minutes[i].violated {
            i += 1;
            continue;
        }
        let first = i;
        while i + 1 < r.minutes.len() && r.minutes[i + 1].violated {
            i += 1;
        }
        out.push(if i == first {
            clock(first)
        } else {
            format!("{}-{}", clock(first), clock(i))
        });
        i += 1;
    }
    match out.len() {
        0 => "-".into(),
        n if n > 6 => format!("{} and {} more spans", out[..6].join(", "), n - 6),
        _ => out.join(", "),
    }
}

/// The policies that beat `baseline` on SLO minutes while using fewer pod-hours, best first.
pub fn winners<'a>(replays: &'a [Replay], baseline: &str) -> Vec<&'a Replay> {
    let Some(base) = replays.iter().find(|r| r.policy == baseline) else {
        return Vec::new();
    };
    let mut better: Vec<&Replay> = replays
        .iter()
        .filter(|r| r.policy != baseline)
        .filter(|r| r.slo_minutes <= base.slo_minutes && r.pod_hours < base.pod_hours)
        .collect();
    better.sort_by(|a, b| {
        a.slo_minutes
            .cmp(&b.slo_minutes)
            .then(a.pod_hours.total_cmp(&b.pod_hours))
    });
    better
}

/// Offered load, replicas and minute P99 (capped for the eye at `cap` x the SLO) per policy.
pub fn plot_day(path: &Path, title: &str, scenario: &Scenario, replays: &[Replay]) -> Result<()> {
    let hour = |i: usize| (scenario.start_s as f64 + i as f64 * 60.0) / 3600.0;
    let cap = scenario.slo_ms * 8.0;
    let series = |f: &dyn Fn(&crate::sim::replay::Minute) -> f64| -> Vec<Series> {
        replays
            .iter()
            .enumerate()
            .map(|(k, r)| Series {
                name: r.policy.clone(),
                points: r
                    .minutes
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (hour(i), f(m)))
                    .collect(),
                color: PALETTE[k % PALETTE.len()],
            })
            .collect()
    };
    let load = replays.first().map(|r| Series {
        name: "offered load".into(),
        points: r
            .minutes
            .iter()
            .enumerate()
            .map(|(i, m)| (hour(i), m.offered_rps))
            .collect(),
        color: PALETTE[0],
    });
    let panels = vec![
        Panel {
            title: format!("{title}: offered load"),
            x_label: "hour of day".into(),
            y_label: "requests/s".into(),
            series: load.into_iter().collect(),
            vline: None,
            hline: None,
        },
        Panel {
            title: format!("{title}: replicas"),
            x_label: "hour of day".into(),
            y_label: "pods".into(),
            series: series(&|m| m.replicas as f64),
            vline: None,
            hline: None,
        },
        Panel {
            title: format!("{title}: P99 per minute (capped at {:.0} ms)", cap),
            x_label: "hour of day".into(),
            y_label: "ms".into(),
            series: series(&|m| m.p99_ms.min(cap)),
            vline: None,
            hline: Some((scenario.slo_ms, format!("SLO {:.0} ms", scenario.slo_ms))),
        },
    ];
    plot::draw(path, &panels, 1, (1400, 420))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(policy: &str, slo_minutes: usize, pod_hours: f64) -> Replay {
        Replay {
            policy: policy.into(),
            start_s: 0,
            minutes: vec![],
            slo_minutes,
            pod_hours,
            scale_events: 3,
            max_replicas: 9,
            shed_fraction: 0.0,
        }
    }

    #[test]
    fn table_has_a_row_per_policy() {
        let t = table(&[replay("CPU 70%", 12, 100.0), replay("sat", 3, 80.0)]);
        assert!(
            t.contains("| CPU 70% | 12 | 100.0 | 3 | 9 | 0.00% |"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 4);
    }

    #[test]
    fn spans_are_clock_times_of_violating_minutes() {
        let minute = |violated| crate::sim::replay::Minute {
            offered_rps: 1.0,
            replicas: 2,
            p99_ms: 1.0,
            itl_p99_ms: None,
            violated,
        };
        let mut r = replay("x", 3, 1.0);
        r.start_s = 9 * 3600;
        r.minutes = [false, true, false, true, true, false].map(minute).to_vec();
        assert_eq!(spans(&r), "09:01, 09:03-09:04");
    }

    #[test]
    fn winners_beat_the_baseline_on_both_counts() {
        let all = [
            replay("CPU 70%", 12, 100.0),
            replay("cheap but slow", 30, 50.0),
            replay("good", 3, 80.0),
            replay("better", 1, 90.0),
            replay("costly", 0, 140.0),
        ];
        let names: Vec<&str> = winners(&all, "CPU 70%")
            .iter()
            .map(|r| r.policy.as_str())
            .collect();
        assert_eq!(names, ["better", "good"]);
    }
}
