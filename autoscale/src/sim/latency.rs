//! A minute's P99 from the seconds in it: each second's requests follow the latency quantiles
//! of the load the pods carried that second; the minute's P99 is the latency that 1% of all
//! the minute's requests exceed. Shed requests count as too slow.

use crate::curve::Quantiles;

/// One second's requests and their latency quantiles (ms).
#[derive(Debug, Clone, Copy)]
pub struct Second {
    pub requests: f64,
    pub shed: f64,
    pub quantiles: Quantiles,
}

/// The fraction of a second's requests slower than `v` ms: the distribution is piecewise
/// linear between (P50, 0.5), (P90, 0.9), (P99, 0.99) and a tail that ends where P99 is
/// extended by as much again as P90 -> P99.
fn exceed_fraction(q: &Quantiles, v: f64) -> f64 {
    let tail_end = q.p99 + (q.p99 - q.p90).max(0.0) + 1e-9;
    let knots = [
        (0.0, 0.0),
        (q.p50, 0.5),
        (q.p90, 0.9),
        (q.p99, 0.99),
        (tail_end, 1.0),
    ];
    if v <= 0.0 {
        return 1.0;
    }
    for w in knots.windows(2) {
        let ((x0, c0), (x1, c1)) = (w[0], w[1]);
        if v <= x1 {
            let cdf = if x1 > x0 {
                c0 + (c1 - c0) * (v - x0) / (x1 - x0)
            } else {
                c1
            };
            return 1.0 - cdf;
        }
    }
    0.0
}

/// The minute's P99 in ms (infinite when more than 1% of requests were shed).
pub fn minute_p99(seconds: &[Second]) -> f64 {
    let total: f64 = seconds.iter().map(|s| s.requests + s.shed).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let over = |v: f64| -> f64 {
        seconds
            .iter()
            .map(|s| s.shed + s.requests * exceed_fraction(&s.quantiles, v))
            .sum::<f64>()
            / total
    };
    let mut hi = seconds
        .iter()
        .map(|s| s.quantiles.p99 * 2.0 + s.quantiles.p90)
        .fold(1.0, f64::max);
    if over(hi) > 0.01 {
        return f64::INFINITY;
    }
    let mut lo = 0.0;
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if over(mid) > 0.01 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(p50: f64, p90: f64, p99: f64) -> Quantiles {
        Quantiles { p50, p90, p99 }
    }

    #[test]
    fn a_steady_minute_has_its_seconds_p99() {
        let s = Second {
            requests: 100.0,
            shed: 0.0,
            quantiles: q(5.0, 8.0, 20.0),
        };
        let p = minute_p99(&vec![s; 60]);
        assert!((p - 20.0).abs() < 0.01, "{p}");
    }

    #[test]
    fn a_few_slow_seconds_raise_the_minute() {
        let fast = Second {
            requests: 100.0,
            shed: 0.0,
            quantiles: q(5.0, 8.0, 20.0),
        };
        let slow = Second {
            requests: 100.0,
            shed: 0.0,
            quantiles: q(400.0, 600.0, 900.0),
        };
        let mut minute = vec![fast; 57];
        minute.extend([slow; 3]);
        // 5% of the minute's requests are from slow seconds: its P99 is among them.
        let p = minute_p99(&minute);
        assert!(p > 400.0 && p < 900.0, "{p}");
    }

    #[test]
    fn shedding_more_than_one_percent_is_infinitely_slow() {
        let s = Second {
            requests: 100.0,
            shed: 5.0,
            quantiles: q(5.0, 8.0, 20.0),
        };
        assert!(minute_p99(&[s]).is_infinite());
        assert_eq!(minute_p99(&[]), 0.0);
    }
}
