//! The parts of an `autoscaling/v2` HorizontalPodAutoscaler the controller reads, with the
//! defaults upstream's API server fills in (`pkg/apis/autoscaling/v2/defaults.go`).

/// `HPAScalingPolicyType`: a change limited in pods or in percent of the replicas at the start
/// of the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period_s: i32,
}

impl Policy {
    pub const fn pods(value: i32, period_s: i32) -> Self {
        Self {
            kind: PolicyKind::Pods,
            value,
            period_s,
        }
    }

    pub const fn percent(value: i32, period_s: i32) -> Self {
        Self {
            kind: PolicyKind::Percent,
            value,
            period_s,
        }
    }
}

/// `ScalingPolicySelect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// `HPAScalingRules` after defaulting. Scale-down's window may stay unset: the controller then
/// uses its `--horizontal-pod-autoscaler-downscale-stabilization` (5 minutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_window_s: Option<i32>,
    pub select: Select,
    pub policies: Vec<Policy>,
}

impl Rules {
    /// Upstream's default scale-up: no window; 4 pods or 100% per 15 s, whichever is more.
    pub fn default_scale_up() -> Self {
        Self {
            stabilization_window_s: Some(0),
            select: Select::Max,
            policies: vec![Policy::pods(4, 15), Policy::percent(100, 15)],
        }
    }

    /// Upstream's default scale-down: the controller's window; 100% per 15 s.
    pub fn default_scale_down() -> Self {
        Self {
            stabilization_window_s: None,
            select: Select::Max,
            policies: vec![Policy::percent(100, 15)],
        }
    }

    /// The longest policy period: scale events older than it are never read again.
    pub fn longest_period_s(&self) -> i32 {
        self.policies.iter().map(|p| p.period_s).max().unwrap_or(0)
    }
}

/// What a spec's `behavior.scaleUp` / `scaleDown` says; unset fields take the defaults
/// (`GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules`: `copyHPAScalingRules`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesSpec {
    pub stabilization_window_s: Option<i32>,
    pub select: Option<Select>,
    pub policies: Option<Vec<Policy>>,
}

impl RulesSpec {
    fn fill(self, mut defaults: Rules) -> Rules {
        if let Some(s) = self.select {
            defaults.select = s;
        }
        if self.stabilization_window_s.is_some() {
            defaults.stabilization_window_s = self.stabilization_window_s;
        }
        if let Some(p) = self.policies {
            defaults.policies = p;
        }
        defaults
    }
}

/// `HorizontalPodAutoscalerBehavior` after defaulting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

impl Behavior {
    /// `SetDefaults_HorizontalPodAutoscalerBehavior`: a behavior given in the spec has every
    /// unset field filled from the defaults.
    pub fn from_spec(scale_up: Option<RulesSpec>, scale_down: Option<RulesSpec>) -> Self {
        Self {
            scale_up: scale_up.unwrap_or_default().fill(Rules::default_scale_up()),
            scale_down: scale_down
                .unwrap_or_default()
                .fill(Rules::default_scale_down()),
        }
    }
}

/// The metric sources the replay uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricSpec {
    /// `type: Resource`, `target.type: Utilization`: percent of the pods' CPU requests.
    CpuUtilization { target_percent: i32 },
    /// `type: Pods`, `target.type: AverageValue`, in milli-units (`800m` = 800).
    PodsAverage { name: String, target_milli: i64 },
}

/// The HPA spec: `minReplicas` (default 1), `maxReplicas`, metrics and optional behavior.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaSpec {
    pub min_replicas: Option<i32>,
    pub max_replicas: i32,
    pub metrics: Vec<MetricSpec>,
    pub behavior: Option<Behavior>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_upstream() {
        let b = Behavior::from_spec(None, None);
        assert_eq!(b.scale_up.stabilization_window_s, Some(0));
        assert_eq!(b.scale_up.select, Select::Max);
        assert_eq!(
            b.scale_up.policies,
            vec![Policy::pods(4, 15), Policy::percent(100, 15)]
        );
        assert_eq!(b.scale_down.stabilization_window_s, None);
        assert_eq!(b.scale_down.policies, vec![Policy::percent(100, 15)]);
    }

    #[test]
    fn a_partial_spec_keeps_the_other_defaults() {
        let b = Behavior::from_spec(
            Some(RulesSpec {
                policies: Some(vec![Policy::pods(4, 60)]),
                ..RulesSpec::default()
            }),
            Some(RulesSpec {
                stabilization_window_s: Some(300),
                ..RulesSpec::default()
            }),
        );
        assert_eq!(b.scale_up.stabilization_window_s, Some(0));
        assert_eq!(b.scale_up.longest_period_s(), 60);
        assert_eq!(b.scale_down.stabilization_window_s, Some(300));
        assert_eq!(b.scale_down.policies, vec![Policy::percent(100, 15)]);
    }
}
