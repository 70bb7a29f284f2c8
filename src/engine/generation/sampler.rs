//! Turning logits into the next token: repetition penalties, then top-k, top-p and min-p
//! filtering, then temperature (zero is greedy), seeded so the same seed gives the same text.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
    /// `Some(n)`: report the chosen token's log-probability and the `n` most likely ones.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logprobs: None,
        }
    }
}

/// The chosen token and, when asked for, log-probabilities under the model's distribution.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub token: u32,
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
}

/// Candidates whose probability is below this fraction of the best one's cannot matter to
/// top-p or min-p in practice; dropping them first keeps a 262k vocabulary cheap to sort.
const NEGLIGIBLE: f32 = 1e-7;

pub(super) struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each generated token appeared, for the penalties.
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub(super) fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            counts: HashMap::new(),
        }
    }

    /// Picks the next token from `logits` (modified in place) and records it. Log-probabilities
    /// are those of the model's own distribution, before penalties and temperature.
    pub(super) fn sample(&mut self, logits: &mut [f32]) -> Sampled {
        let reported = self.params.logprobs.map(|n| {
            let lse = log_sum_exp(logits);
            let top: Vec<(u32, f32)> = top_n(logits, n)
                .into_iter()
                .map(|(i, l)| (i, l - lse))
                .collect();
            (lse, top, logits.to_vec())
        });
        let token = self.choose(logits);
        *self.counts.entry(token).or_insert(0) += 1;
        match reported {
            Some((lse, top, raw)) => Sampled {
                token,
                logprob: Some(raw[token as usize] - lse),
                top,
            },
            None => Sampled {
                token,
                logprob: None,
                top: Vec::new(),
            },
        }
    }

    fn choose(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_penalties(logits);
        let p = &self.params;
        if p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = max + (NEGLIGIBLE.ln() * p.temperature);
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l >= floor)
            .map(|(i, &l)| (i as u32, ((l - max) / p.temperature).exp()))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            candidates.truncate(p.top_k);
        }
        if p.min_p > 0.0 {
            let threshold = candidates[0].1 * p.min_p;
            candidates.retain(|c| c.1 >= threshold);
        }
        if p.top_p < 1.0 {
            let total: f32 = candidates.iter().map(|c| c.1).sum();
            let mut cumulative = 0.0;
            let keep = candidates
                .iter()
                .position(|c| {
                    cumulative += c.1 / total;
                    cumulative >= p.top_p
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep.max(1));
        }
        let total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut target = self.rng.random::<f32>() * total;
        for &(id, weight) in &candidates {
            if target < weight {
                return id;
            }
            target -= weight;
        }
        candidates[candidates.len() - 1].0
    }

    /// OpenAI's penalties: a flat `presence` for every token seen, plus `frequency` per time.
    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.presence_penalty == 0.0 && p.frequency_penalty == 0.0 {
            return;
        }
        for (&token, &count) in &self.counts {
            if let Some(l) = logits.get_mut(token as usize) {
                *l -= p.presence_penalty + p.frequency_penalty * count as f32;
            }
        }
    }
}

pub fn argmax(values: &[f32]) -> u32 {
    // The scan that keeps the first strict maximum, in two passes that vectorise: the
    // largest value (eight running maxima, no dependency from one element to the next),
    // then its first position. A NaN is never greater, so it is never taken, except as the
    // first element, where the scan keeps it.
    if values.first().is_none_or(|v| v.is_nan()) {
        return 0;
    }
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let tail = chunks.remainder().iter();
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    values.iter().position(|&v| v == max).unwrap_or(0) as u32
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = values.iter().map(|&v| f64::from(v - max).exp()).sum();
    max + sum.ln() as f32
}

/// The `n` largest `(index, value)` pairs, largest first.
pub(super) fn top_n(values: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut indexed: Vec<(u32, f32)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let n = n.min(indexed.len());
    if n == 0 {
        return Vec::new();
    }
    indexed.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1));
    indexed.truncate(n);
    indexed.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    indexed
}

#[cfg(test)]
mod tests {
    use super::argmax;

    /// The first strict maximum, as a plain scan finds it.
    fn scan(values: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &v) in values.iter().enumerate() {
            if v > values[best] {
                best = i;
            }
        }
        best as u32
    }

    #[test]
    fn argmax_is_the_first_strict_maximum() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 40) % 50) as f32 - 25.0
        };
        for len in [1, 7, 8, 9, 17, 100, 1000] {
            let values: Vec<f32> = (0..len).map(|_| next()).collect();
            assert_eq!(argmax(&values), scan(&values), "{values:?}");
        }
        let special = [
            vec![f32::NEG_INFINITY; 11],
            vec![f32::NAN, 1.0, 2.0],
            vec![1.0, f32::NAN, 3.0, f32::NAN, 3.0],
            vec![-1.0, f32::INFINITY, 2.0, f32::INFINITY],
            vec![2.0; 19],
        ];
        for values in special {
            assert_eq!(argmax(&values), scan(&values), "{values:?}");
        }
    }
}
