//! The batcher thread: takes queued jobs, groups them by length under a padded-token budget and
//! a size cap, and hands each batch to the worker the moment the worker is free to take it (a
//! rendezvous channel, no buffer).
//!
//! It never waits for company when idle (unless `max_wait` asks it to): under load, batches grow
//! on their own, because the batch it holds keeps taking new jobs until the worker is free.
//! (A one-batch buffer let the first job to arrive during a pass go ahead alone: under eight
//! closed-loop clients a third of the passes held one paragraph, and requests of 32 inputs
//! from four clients saw a fifth more P99 latency.)

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::Job;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
}

/// How many queued jobs the batcher looks at at once when sorting by length.
const LOOKAHEAD_BATCHES: usize = 4;

/// While the worker is busy, how often the batcher looks again for late arrivals to add to the
/// batch it holds ready.
const BUSY_POLL: Duration = Duration::from_millis(1);

/// The channel from the batcher to the worker: no buffer, so a batch goes over only once the
/// worker is free to take it, and keeps growing until then.
pub(super) fn handoff() -> (SyncSender<Vec<Job>>, Receiver<Vec<Job>>) {
    std::sync::mpsc::sync_channel(0)
}

pub(super) fn run(
    queue: Receiver<Job>,
    worker: SyncSender<Vec<Job>>,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
) {
    let lookahead = limits.max_batch_size * LOOKAHEAD_BATCHES;
    let mut pending: Vec<Job> = Vec::new();
    loop {
        if pending.is_empty() {
            match queue.recv() {
                Ok(job) => pending.push(job),
                Err(_) => return,
            }
            wait_for_company(&queue, &mut pending, limits);
        }
        while pending.len() < lookahead {
            match queue.try_recv() {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let before = pending.len();
        pending = pending
            .into_iter()
            .filter_map(|job| job.should_skip(&metrics, now))
            .collect();
        metrics.queue_depth.sub((before - pending.len()) as i64);
        if pending.is_empty() {
            continue;
        }

        let batch = take_batch(&mut pending, limits);
        let size = batch.len() as i64;
        match worker.try_send(batch) {
            Ok(()) => metrics.queue_depth.sub(size),
            Err(TrySendError::Full(batch)) => {
                // The worker is busy: keep the batch open for whatever arrives meanwhile, so
                // batches grow with the load instead of being cut at the first job.
                pending.extend(batch);
                match queue.recv_timeout(BUSY_POLL) {
                    Ok(job) => pending.push(job),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        flush(pending, &worker, limits, &metrics);
                        return;
                    }
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// With `max_wait` set, waits up to that long for more jobs before the first batch goes out.
fn wait_for_company(queue: &Receiver<Job>, pending: &mut Vec<Job>, limits: BatchLimits) {
    let wait_until = Instant::now() + limits.max_wait;
    while pending.len() < limits.max_batch_size {
        let now = Instant::now();
        if now >= wait_until {
            return;
        }
        match queue.recv_timeout(wait_until - now) {
            Ok(job) => pending.push(job),
            Err(_) => return,
        }
    }
}

/// Hands every remaining job to the worker (the engine is shutting down).
fn flush(
    mut pending: Vec<Job>,
    worker: &SyncSender<Vec<Job>>,
    limits: BatchLimits,
    metrics: &Metrics,
) {
    while !pending.is_empty() {
        let batch = take_batch(&mut pending, limits);
        let size = batch.len() as i64;
        if worker.send(batch).is_err() {
            return;
        }
        metrics.queue_depth.sub(size);
    }
}

/// Sorts the pending jobs by length, cuts them into batches whose padded size (inputs x longest
/// input) stays within the token budget, and takes out the batch holding the oldest job: short
/// inputs are not padded to a long neighbour, and no job waits behind newer ones forever.
fn take_batch(pending: &mut Vec<Job>, limits: BatchLimits) -> Vec<Job> {
    pending.sort_by_key(Job::len);
    let oldest = (0..pending.len())
        .min_by_key(|&i| pending[i].enqueued)
        .unwrap_or(0);
    let (mut start, mut count) = (0, 0);
    for (i, job) in pending.iter().enumerate() {
        let padded = (count + 1) * job.len().max(1);
        if count > 0 && (count >= limits.max_batch_size || padded > limits.max_batch_tokens) {
            if oldest < i {
                break;
            }
            start = i;
            count = 0;
        }
        count += 1;
    }
    pending.drain(start..start + count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::RequestTracker;

    thread_local! {
        static START: Instant = Instant::now();
    }

    /// A job of `len` tokens enqueued `order` milliseconds after the first one.
    fn job(len: usize, order: u64) -> Job {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        std::mem::forget(_rx);
        Job {
            ids: vec![1; len],
            type_ids: vec![0; len],
            deadline: Instant::now() + Duration::from_secs(60),
            enqueued: START.with(|s| *s) + Duration::from_millis(order),
            reply: tx,
            request: Arc::new(RequestTracker::default()),
            span: tracing::Span::none(),
        }
    }

    fn drain_all(mut jobs: Vec<Job>, limits: BatchLimits) -> Vec<Vec<usize>> {
        let mut batches = Vec::new();
        while !jobs.is_empty() {
            batches.push(take_batch(&mut jobs, limits).iter().map(Job::len).collect());
        }
        batches
    }

    #[test]
    fn batches_respect_size_and_padded_token_budget_oldest_first() {
        let limits = BatchLimits {
            max_batch_size: 3,
            max_batch_tokens: 100,
            max_wait: Duration::ZERO,
        };
        // The 40-token job is the oldest, so its batch goes first.
        let jobs = vec![
            job(40, 0),
            job(5, 1),
            job(6, 2),
            job(7, 3),
            job(8, 4),
            job(50, 5),
        ];
        assert_eq!(
            drain_all(jobs, limits),
            vec![vec![8, 40], vec![5, 6, 7], vec![50]]
        );
    }

    #[test]
    fn jobs_arriving_while_the_worker_is_busy_go_together_once_it_is_free() {
        let (queue_tx, queue_rx) = std::sync::mpsc::sync_channel(16);
        let (worker_tx, worker_rx) = handoff();
        let limits = BatchLimits {
            max_batch_size: 8,
            max_batch_tokens: 1000,
            max_wait: Duration::ZERO,
        };
        let metrics = Arc::new(Metrics::new(Duration::from_secs(60), 8.0));
        std::thread::spawn(move || run(queue_rx, worker_tx, limits, metrics));
        queue_tx.send(job(4, 0)).expect("queue");
        // A lone job goes at once.
        assert_eq!(worker_rx.recv().expect("first batch").len(), 1);
        // The worker is now busy; three jobs arrive one after another meanwhile.
        for order in 1..=3 {
            queue_tx.send(job(4, order)).expect("queue");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(worker_rx.recv().expect("second batch").len(), 3);
        drop(queue_tx);
        assert!(worker_rx.recv().is_err(), "the batcher ends with its queue");
    }

    #[test]
    fn an_input_longer_than_the_budget_still_runs_alone() {
        let limits = BatchLimits {
            max_batch_size: 8,
            max_batch_tokens: 10,
            max_wait: Duration::ZERO,
        };
        assert_eq!(
            drain_all(vec![job(30, 0), job(2, 1)], limits),
            vec![vec![30], vec![2]]
        );
    }
}
