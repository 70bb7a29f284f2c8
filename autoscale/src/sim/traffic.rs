//! The traffic day, in multiples of one pod's knee throughput: 0.3x at night, 1.5-3x in the
//! morning, 6-9x by day, a 10x evening peak, then down; and a flash spike to 3x the current
//! rate within 30 s.

/// Hour of day -> multiple of the knee, joined by straight lines.
const DAY: &[(f64, f64)] = &[
    (0.0, 0.3),
    (6.0, 0.3),
    (7.0, 1.5),
    (9.0, 3.0),
    (10.0, 6.0),
    (12.0, 8.0),
    (14.0, 9.0),
    (16.0, 7.0),
    (18.0, 8.0),
    (19.0, 10.0),
    (20.0, 10.0),
    (21.0, 6.0),
    (22.0, 3.0),
    (23.0, 1.0),
    (24.0, 0.3),
];

/// A sudden burst on top of the day: up to `factor` x within `rise_s`, held, then let down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub start_s: f64,
    pub rise_s: f64,
    pub hold_s: f64,
    pub fall_s: f64,
    pub factor: f64,
}

impl Spike {
    /// 3x the rate within 30 s at 15:00, held 10 minutes, gone over 5.
    pub const AFTERNOON: Spike = Spike {
        start_s: 15.0 * 3600.0,
        rise_s: 30.0,
        hold_s: 600.0,
        fall_s: 300.0,
        factor: 3.0,
    };

    fn multiplier(&self, t: f64) -> f64 {
        let into = t - self.start_s;
        let extra = self.factor - 1.0;
        if into < 0.0 {
            1.0
        } else if into < self.rise_s {
            1.0 + extra * into / self.rise_s
        } else if into < self.rise_s + self.hold_s {
            self.factor
        } else if into < self.rise_s + self.hold_s + self.fall_s {
            self.factor - extra * (into - self.rise_s - self.hold_s) / self.fall_s
        } else {
            1.0
        }
    }
}

/// The offered load over a day, in req/s: `knee_rps` x the day's multiple x the spike, with a
/// little deterministic noise so the tolerance band sees something like real traffic.
#[derive(Debug, Clone)]
pub struct Day {
    pub knee_rps: f64,
    pub spike: Option<Spike>,
    /// Relative amplitude of the per-second noise (0.03 = +-3%).
    pub noise: f64,
    pub seed: u64,
}

impl Day {
    pub fn multiple(&self, t: f64) -> f64 {
        let hour = (t / 3600.0).rem_euclid(24.0);
        let base = DAY
            .windows(2)
            .find(|w| hour <= w[1].0)
            .map(|w| {
                let ((h0, m0), (h1, m1)) = (w[0], w[1]);
                m0 + (m1 - m0) * (hour - h0) / (h1 - h0)
            })
            .unwrap_or(DAY[0].1);
        base * self.spike.map_or(1.0, |s| s.multiplier(t))
    }

    /// Offered requests per second at second `t`.
    pub fn rate(&self, t: u64) -> f64 {
        let noise = 1.0
            + self.noise * (2.0 * unit(self.seed ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15)) - 1.0);
        (self.knee_rps * self.multiple(t as f64) * noise).max(0.0)
    }
}

/// A uniform number in [0, 1) from a 64-bit hash (splitmix64's finaliser).
fn unit(mut x: u64) -> f64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        Day {
            knee_rps: 100.0,
            spike: Some(Spike::AFTERNOON),
            noise: 0.0,
            seed: 1,
        }
    }

    #[test]
    fn follows_the_shape_of_the_day() {
        let d = day();
        assert!((d.multiple(3.0 * 3600.0) - 0.3).abs() < 1e-9);
        assert!((d.multiple(8.0 * 3600.0) - 2.25).abs() < 1e-9);
        assert!((d.multiple(19.5 * 3600.0) - 10.0).abs() < 1e-9);
        assert!((d.rate(3 * 3600) - 30.0).abs() < 1e-9);
    }

    #[test]
    fn the_spike_triples_the_rate_within_30_s() {
        let d = day();
        let start = Spike::AFTERNOON.start_s;
        let before = d.multiple(start - 1.0);
        assert!((d.multiple(start + 30.0) / d.multiple(start) - 3.0).abs() < 0.01);
        assert!(d.multiple(start + 15.0) > before * 1.9);
        let after = start + 30.0 + 600.0 + 300.0 + 1.0;
        let no_spike = Day {
            spike: None,
            ..day()
        };
        assert!((d.multiple(after) - no_spike.multiple(after)).abs() < 1e-9);
        assert!((d.multiple(start + 300.0) / no_spike.multiple(start + 300.0) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn noise_is_bounded_and_deterministic() {
        let d = Day {
            noise: 0.05,
            ..day()
        };
        for t in 0..1000 {
            let r = d.rate(3 * 3600 + t) / 30.0;
            assert!((0.95..=1.05).contains(&r), "{r}");
        }
        assert_eq!(d.rate(12345), d.rate(12345));
    }
}
