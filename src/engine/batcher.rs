//! Batch formation, on the model thread: when the model is free, it takes every job queued
//! meanwhile, groups them by length under a padded-token budget and a size cap, and runs the
//! batch holding the oldest job.
//!
//! It never waits for company when idle (unless `max_wait` asks it to): under load, batches grow
//! on their own, because jobs queue up while a pass runs. (A batcher thread of its own, holding
//! a batch open and polling for late arrivals every millisecond, woke 900 times a second under
//! eight closed-loop clients; each wake preempted one of the pass's two threads, and the other
//! waited at the next join.)

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
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

/// What the engine puts on the model's queue.
pub(super) enum Work {
    /// One input, batched with whatever else is queued.
    Job(Job),
    /// A batch that runs as it is: warmup's synthetic shapes.
    Batch(Vec<Job>),
}

/// The batches the model runs, formed from its queue as it asks for them.
pub(super) struct Batches {
    queue: Receiver<Work>,
    pending: Vec<Job>,
    ready: VecDeque<Vec<Job>>,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
}

impl Batches {
    pub(super) fn new(queue: Receiver<Work>, limits: BatchLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            queue,
            pending: Vec::new(),
            ready: VecDeque::new(),
            limits,
            metrics,
        }
    }

    /// The next batch to run, waiting while nothing is queued. `None` once the queue is closed
    /// and every job taken from it has gone out in a batch.
    pub(super) fn next_batch(&mut self) -> Option<Vec<Job>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(batch);
            }
            if self.pending.is_empty() {
                let work = self.queue.recv().ok()?;
                self.accept(work);
                self.wait_for_company();
            }
            let lookahead = self.limits.max_batch_size * LOOKAHEAD_BATCHES;
            while self.pending.len() < lookahead {
                match self.queue.try_recv() {
                    Ok(work) => self.accept(work),
                    Err(_) => break,
                }
            }
            if !self.ready.is_empty() {
                // Synthetic batches go first: only warmup sends them, before any request.
                continue;
            }
            self.skip_expired();
            if !self.pending.is_empty() {
                let batch = take_batch(&mut self.pending, self.limits);
                self.metrics.queue_depth.sub(batch.len() as i64);
                return Some(batch);
            }
        }
    }

    fn accept(&mut self, work: Work) {
        match work {
            Work::Job(job) => self.pending.push(job),
            Work::Batch(batch) => self.ready.push_back(batch),
        }
    }

    /// With `max_wait` set, waits up to that long for more jobs before the first batch goes out.
    fn wait_for_company(&mut self) {
        let wait_until = Instant::now() + self.limits.max_wait;
        while self.pending.len() < self.limits.max_batch_size {
            let now = Instant::now();
            if now >= wait_until {
                return;
            }
            match self.queue.recv_timeout(wait_until - now) {
                Ok(work) => self.accept(work),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Drops the jobs whose client went away or whose deadline passed while queued.
    fn skip_expired(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        self.pending = std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|job| job.should_skip(&self.metrics, now))
            .collect();
        self.metrics
            .queue_depth
            .sub((before - self.pending.len()) as i64);
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

    fn batches_of(limits: BatchLimits) -> (std::sync::mpsc::SyncSender<Work>, Batches) {
        let (queue_tx, queue_rx) = std::sync::mpsc::sync_channel(16);
        let metrics = Arc::new(Metrics::new(Duration::from_secs(60), 8.0));
        (queue_tx, Batches::new(queue_rx, limits, metrics))
    }

    #[test]
    fn jobs_queued_while_the_model_is_busy_go_together_once_it_is_free() {
        let (queue, mut batches) = batches_of(BatchLimits {
            max_batch_size: 8,
            max_batch_tokens: 1000,
            max_wait: Duration::ZERO,
        });
        queue.send(Work::Job(job(4, 0))).expect("queue");
        // A lone job goes at once.
        assert_eq!(batches.next_batch().expect("first batch").len(), 1);
        // The model is now busy; three jobs arrive one after another meanwhile.
        for order in 1..=3 {
            queue.send(Work::Job(job(4, order))).expect("queue");
        }
        assert_eq!(batches.next_batch().expect("second batch").len(), 3);
        drop(queue);
        assert!(
            batches.next_batch().is_none(),
            "batches end with their queue"
        );
    }

    #[test]
    fn a_closed_queue_still_hands_out_every_job_taken_from_it() {
        let (queue, mut batches) = batches_of(BatchLimits {
            max_batch_size: 2,
            max_batch_tokens: 1000,
            max_wait: Duration::ZERO,
        });
        for order in 0..5 {
            queue.send(Work::Job(job(4, order))).expect("queue");
        }
        drop(queue);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| batches.next_batch().map(|b| b.len())).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn a_synthetic_batch_runs_as_it_is() {
        let (queue, mut batches) = batches_of(BatchLimits {
            max_batch_size: 2,
            max_batch_tokens: 1000,
            max_wait: Duration::ZERO,
        });
        queue
            .send(Work::Batch((0..5).map(|order| job(8, order)).collect()))
            .expect("queue");
        queue.send(Work::Job(job(4, 9))).expect("queue");
        assert_eq!(batches.next_batch().expect("synthetic").len(), 5);
        assert_eq!(batches.next_batch().expect("job").len(), 1);
    }

    #[test]
    fn jobs_whose_client_left_never_reach_a_batch() {
        let (queue, mut batches) = batches_of(BatchLimits {
            max_batch_size: 8,
            max_batch_tokens: 1000,
            max_wait: Duration::ZERO,
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        drop(rx);
        let mut gone = job(4, 0);
        gone.reply = tx;
        queue.send(Work::Job(gone)).expect("queue");
        queue.send(Work::Job(job(5, 1))).expect("queue");
        let batch = batches.next_batch().expect("batch");
        assert_eq!(batch.iter().map(Job::len).collect::<Vec<_>>(), vec![5]);
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
