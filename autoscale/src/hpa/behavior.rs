//! What the controller remembers between syncs and how it shapes a proposal
//! (`horizontal.go`): recommendations for the stabilization windows, scale events for the rate
//! policies, and the min/max clamps.

use super::spec::{PolicyKind, Rules, Select};
use super::{Millis, SECOND};

/// Without a `behavior`, a scale-up may at most double the replicas (or reach 4).
const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
const SCALE_UP_LIMIT_MINIMUM: f64 = 4.0;

/// `timestampedRecommendation`: an unstabilized proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    pub at: Millis,
}

/// `timestampedScaleEvent`: replicas added (or removed), always positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub change: i32,
    pub at: Millis,
    pub outdated: bool,
}

/// The controller's memory for one HPA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// `None` until the first sync records the current count (`recordInitialRecommendation`).
    pub recommendations: Option<Vec<Recommendation>>,
    pub scale_up_events: Vec<ScaleEvent>,
    pub scale_down_events: Vec<ScaleEvent>,
}

/// `NormalizationArg`, with the scale-down window already resolved.
#[derive(Debug, Clone, Copy)]
pub struct Normalization<'a> {
    pub scale_up: &'a Rules,
    pub scale_down: &'a Rules,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub current_replicas: i32,
    pub desired_replicas: i32,
}

impl History {
    pub fn record_initial(&mut self, now: Millis, current: i32) {
        if self.recommendations.is_none() {
            self.recommendations = Some(vec![Recommendation {
                replicas: current,
                at: now,
            }]);
        }
    }

    /// Stores `new` in place of the last recommendation that `is_old`, else appends it.
    fn store_recommendation(
        &mut self,
        new: Recommendation,
        is_old: impl Fn(&Recommendation) -> bool,
    ) {
        let list = self.recommendations.get_or_insert_with(Vec::new);
        match list.iter().rposition(is_old) {
            Some(i) => list[i] = new,
            None => list.push(new),
        }
    }

    /// `stabilizeRecommendation` (no `behavior`): the highest recommendation within the
    /// downscale window, this one included.
    pub fn stabilize(&mut self, now: Millis, window: Millis, desired: i32) -> i32 {
        let cutoff = now - window;
        let recent = self
            .recommendations
            .iter()
            .flatten()
            .filter(|r| r.at >= cutoff);
        let max = recent.map(|r| r.replicas).fold(desired, i32::max);
        let new = Recommendation {
            replicas: desired,
            at: now,
        };
        self.store_recommendation(new, |r| r.at < cutoff);
        max
    }

    /// `stabilizeRecommendationWithBehaviors`: the current count pulled up to the lowest
    /// recommendation of the scale-up window and down to the highest of the scale-down window.
    pub fn stabilize_with_behaviors(&mut self, now: Millis, args: &Normalization<'_>) -> i32 {
        let window =
            |rules: &Rules| Millis::from(rules.stabilization_window_s.unwrap_or(0)) * SECOND;
        let up_cutoff = now - window(args.scale_up);
        let down_cutoff = now - window(args.scale_down);
        let (mut up, mut down) = (args.desired_replicas, args.desired_replicas);
        for r in self.recommendations.iter().flatten() {
            if r.at > up_cutoff {
                up = up.min(r.replicas);
            }
            if r.at > down_cutoff {
                down = down.max(r.replicas);
            }
        }
        let stabilized = args.current_replicas.max(up).min(down);
        let new = Recommendation {
            replicas: args.desired_replicas,
            at: now,
        };
        self.store_recommendation(new, |r| r.at < up_cutoff && r.at < down_cutoff);
        stabilized
    }

    /// `convertDesiredReplicasWithBehaviorRate`: the stabilized count within the policies'
    /// rate limits and min/max. Returns the count and upstream's condition reason.
    pub fn limit_rate(&self, now: Millis, args: &Normalization<'_>) -> (i32, &'static str) {
        let (up, down) = (&self.scale_up_events, &self.scale_down_events);
        if args.desired_replicas > args.current_replicas {
            let limit = scale_up_limit(now, args.current_replicas, up, down, args.scale_up)
                .max(args.current_replicas);
            let (maximum, reason) = if args.max_replicas > limit {
                (limit, "ScaleUpLimit")
            } else {
                (args.max_replicas, "TooManyReplicas")
            };
            if args.desired_replicas > maximum {
                return (maximum, reason);
            }
        } else if args.desired_replicas < args.current_replicas {
            let limit = scale_down_limit(now, args.current_replicas, up, down, args.scale_down)
                .min(args.current_replicas);
            let (minimum, reason) = if args.min_replicas < limit {
                (limit, "ScaleDownLimit")
            } else {
                (args.min_replicas, "TooFewReplicas")
            };
            if args.desired_replicas < minimum {
                return (minimum, reason);
            }
        }
        (args.desired_replicas, "DesiredWithinRange")
    }

    /// `storeScaleEvent`: records a change for the rate policies, reusing a slot whose event
    /// is older than the longest policy period. Nothing is kept without a `behavior`.
    pub fn store_scale_event(
        &mut self,
        now: Millis,
        rules: Option<(&Rules, &Rules)>,
        prev: i32,
        new: i32,
    ) {
        let Some((up_rules, down_rules)) = rules else {
            return;
        };
        let (events, rules, change) = if new > prev {
            (&mut self.scale_up_events, up_rules, new - prev)
        } else {
            (&mut self.scale_down_events, down_rules, prev - new)
        };
        let cutoff = now - Millis::from(rules.longest_period_s()) * SECOND;
        for e in events.iter_mut() {
            if e.at < cutoff {
                e.outdated = true;
            }
        }
        let event = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match events.iter().rposition(|e| e.outdated) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

/// `getReplicasChangePerPeriod`: replicas changed by events newer than the period.
pub fn replicas_change_per_period(now: Millis, period_s: i32, events: &[ScaleEvent]) -> i32 {
    let cutoff = now - Millis::from(period_s) * SECOND;
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

/// The replicas at the start of a policy's period: now, less what was added, plus what was
/// removed within it.
fn period_start(
    now: Millis,
    current: i32,
    period_s: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
) -> i32 {
    current - replicas_change_per_period(now, period_s, up)
        + replicas_change_per_period(now, period_s, down)
}

/// `calculateScaleUpLimitWithScalingRules`.
pub fn scale_up_limit(
    now: Millis,
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MAX, i32::min),
        Select::Max => (i32::MIN, i32::max),
    };
    for p in &rules.policies {
        let start = period_start(now, current, p.period_s, up, down);
        let proposed = match p.kind {
            PolicyKind::Pods => start + p.value,
            // Rounded up, or a small percentage of few pods would never add one.
            PolicyKind::Percent => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        };
        result = pick(result, proposed);
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`.
pub fn scale_down_limit(
    now: Millis,
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MIN, i32::max),
        Select::Max => (i32::MAX, i32::min),
    };
    for p in &rules.policies {
        let start = period_start(now, current, p.period_s, up, down);
        let proposed = match p.kind {
            PolicyKind::Pods => start - p.value,
            // Go's int32(float64) truncates toward zero, as `as` does.
            PolicyKind::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        };
        result = pick(result, proposed);
    }
    result
}

/// `calculateScaleUpLimit`: the cap without a `behavior`.
pub fn legacy_scale_up_limit(current: i32) -> i32 {
    (SCALE_UP_LIMIT_FACTOR * f64::from(current)).max(SCALE_UP_LIMIT_MINIMUM) as i32
}

/// `convertDesiredReplicasWithRules`: min/max and the legacy scale-up cap.
pub fn limit_without_behavior(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
) -> (i32, &'static str) {
    let scale_up_limit = legacy_scale_up_limit(current);
    let (maximum, reason) = if max > scale_up_limit {
        (scale_up_limit, "ScaleUpLimit")
    } else {
        (max, "TooManyReplicas")
    };
    if desired < min {
        (min, "TooFewReplicas")
    } else if desired > maximum {
        (maximum, reason)
    } else {
        (desired, "DesiredWithinRange")
    }
}

#[cfg(test)]
mod tests;
