//! Decode steps split by sequence across the cores. A step of many decoding sequences runs
//! each core's share of them through every layer on that core alone, then their logits
//! together: the layers then have no parallel loops to share out and wait for (a step holds
//! about ten a layer, each ending when the slower core ends), at the cost of each core
//! reading the layers' weights itself, which from four sequences a core the products' work
//! outweighs. Smaller steps, and steps holding a prefill chunk, run whole on the math pool.

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::model::decoder::{Chunk, Decoder, Hidden};
use crate::model::hot;

/// Decoding sequences each core takes at least before a step is split. With fewer, each
/// core's products have too few tokens to hide the cost of unpacking each weight block.
const MIN_PER_LANE: usize = 4;

/// One single-thread pool per core: a split step's shares run on them side by side.
pub(super) struct Lanes {
    pools: Vec<ThreadPool>,
}

impl Lanes {
    /// A lane for each of `threads` cores; none where there is one core.
    pub(super) fn new(threads: usize) -> std::io::Result<Self> {
        let count = if threads > 1 { threads } else { 0 };
        let pools = (0..count)
            .map(|i| {
                ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("wick-lane-{i}"))
                    .build()
                    .map_err(std::io::Error::other)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { pools })
    }

    /// `decoder.forward(chunks)`, split across the lanes where it pays. Called from a worker
    /// of the math pool, which runs the unsplit steps and the logits.
    pub(super) fn forward(
        &self,
        decoder: &Decoder,
        chunks: &mut [Chunk<'_>],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        if !self.splits(chunks) {
            return hot::run(|| decoder.forward(chunks));
        }
        let per_lane = chunks.len().div_ceil(self.pools.len());
        let mut shares: Vec<Option<candle_core::Result<Hidden>>> =
            (0..self.pools.len()).map(|_| None).collect();
        let jobs: Vec<_> = chunks
            .chunks_mut(per_lane)
            .zip(shares.iter_mut())
            .map(|(share, slot)| move || *slot = Some(decoder.hidden(share)))
            .collect();
        run_each(&self.pools, jobs);
        let hidden = shares
            .into_iter()
            .flatten()
            .collect::<candle_core::Result<Vec<Hidden>>>()?;
        let hidden = Hidden::concat(hidden);
        hot::run(|| decoder.logits(&hidden))
    }

    /// Whether a step of these chunks runs split: every chunk one decoding token, and at
    /// least `MIN_PER_LANE` of them for each lane.
    fn splits(&self, chunks: &[Chunk<'_>]) -> bool {
        !self.pools.is_empty()
            && chunks.len() >= MIN_PER_LANE * self.pools.len()
            && chunks.iter().all(|c| c.tokens.len() == 1)
    }
}

/// Runs `jobs[i]` on `pools[i]`, all at once, and returns when every one has; a job's panic
/// is raised here once all have ended.
fn run_each<F: FnOnce() + Send>(pools: &[ThreadPool], mut jobs: Vec<F>) {
    let Some(job) = jobs.pop() else {
        return;
    };
    pools[jobs.len()].in_place_scope(|scope| {
        scope.spawn(move |_| job());
        run_each(pools, jobs);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_job_runs_once_on_its_own_lane() {
        let lanes = Lanes::new(3).expect("lanes");
        let ran = AtomicUsize::new(0);
        let mut names = vec![String::new(); 3];
        let jobs: Vec<_> = names
            .iter_mut()
            .map(|name| {
                let ran = &ran;
                move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                    *name = std::thread::current().name().unwrap_or("").to_string();
                }
            })
            .collect();
        run_each(&lanes.pools, jobs);
        assert_eq!(ran.load(Ordering::Relaxed), 3);
        assert_eq!(names, ["wick-lane-0", "wick-lane-1", "wick-lane-2"]);
    }

    #[test]
    fn one_core_has_no_lanes() {
        assert!(Lanes::new(1).expect("lanes").pools.is_empty());
    }
}
