//! A forward pass with the math pool kept awake: the pass runs on one worker of the rayon pool
//! while every other worker spins on the pool's queues until the pass ends.
//!
//! An encoder pass is dozens of short parallel loops (a few hundred microseconds each for a
//! single sentence). Run from a thread outside the pool, each loop puts the caller to sleep and
//! wakes a worker, and between loops the workers fall asleep again; in a VM every wake-up is an
//! inter-processor interrupt and a context switch, which cost a quarter of a 16-token pass.
//! This is what ONNX Runtime's spinning intra-op threads do, bounded here to the pass itself:
//! no thread spins while no pass runs. A decoder step is the same: a few hundred short loops,
//! one per projection and per layer's attention.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `pass` on a worker of the current rayon pool, the other workers kept busy-waiting for
/// its parallel loops' work until it returns.
pub fn run<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    let done = &AtomicBool::new(false);
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| keep_awake(owner, done));
        }
        // Set however the pass ends: a pass that panics must still release the keepers, or
        // the scope would wait for them forever instead of handing the panic on.
        let _finished = Finished(done);
        pass()
    })
}

/// Tells the keepers the pass is over when dropped.
struct Finished<'a>(&'a AtomicBool);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Executes the pool's pending jobs as they come, until `done`. A keeper the pass's own worker
/// picks up (while it waits inside a parallel loop) returns at once: spinning there would hold
/// the pass's frame under it forever.
fn keep_awake(owner: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
            continue;
        }
        idle = idle.wrapping_add(1);
        // Now and then let another runnable thread (an HTTP task, a tokenizer) have the core.
        if idle.is_multiple_of(256) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    #[test]
    fn a_pass_returns_its_result_and_its_loops_run_in_parallel() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let sums: Vec<u64> = pool.install(|| {
            (0..50)
                .map(|round| super::run(|| (0..10_000u64).into_par_iter().map(|v| v * round).sum()))
                .collect()
        });
        let want: Vec<u64> = (0..50).map(|round| round * 49_995_000).collect();
        assert_eq!(sums, want);
    }

    #[test]
    fn a_pass_that_panics_hands_the_panic_on() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let outcome = pool.install(|| {
            std::panic::catch_unwind(|| {
                super::run(|| {
                    let _: u64 = (0..1000u64).into_par_iter().sum();
                    panic!("the pass failed")
                })
            })
        });
        assert!(outcome.is_err());
        let after: u64 = pool.install(|| super::run(|| (0..10u64).into_par_iter().sum()));
        assert_eq!(after, 45);
    }

    #[test]
    fn a_pass_from_outside_the_pool_runs_on_it() {
        let sum: u64 = super::run(|| {
            assert!(rayon::current_thread_index().is_some());
            (0..1000u64).into_par_iter().sum()
        });
        assert_eq!(sum, 499_500);
    }
}
