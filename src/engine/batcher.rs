//! The batcher thread: takes queued jobs, groups them by length under a padded-token budget and
//! a size cap, and hands each batch to the worker through a one-slot channel, so exactly one
//! batch is prepared while another runs.
//!
//! It never waits for company when idle (unless `max_wait` asks it to): under load, batches grow
//! on their own because jobs pile up while the worker is busy.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
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

pub(super) fn run(
    queue: Receiver<Job>,
    worker: SyncSender<Vec<Job>>,
    limits: BatchLimits,
    metrics: Arc<Metrics>,
) {
    let lookahead = limits.max_batch_size * LOOKAHEAD_BATCHES;
    while let Ok(first) = queue.recv() {
        let mut pending = vec![first];
        let wait_until = Instant::now() + limits.max_wait;
        let mut open = true;
        while pending.len() < lookahead {
            match queue.try_recv() {
                Ok(job) => pending.push(job),
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if pending.len() >= limits.max_batch_size || now >= wait_until {
                        break;
                    }
                    match queue.recv_timeout(wait_until - now) {
                        Ok(job) => pending.push(job),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        metrics.queue_depth.sub(pending.len() as i64);

        let now = Instant::now();
        let live: Vec<Job> = pending
            .into_iter()
            .filter_map(|job| job.should_skip(&metrics, now))
            .collect();
        for batch in split_by_length(live, limits) {
            if worker.send(batch).is_err() {
                return;
            }
        }
        if !open {
            return;
        }
    }
}

/// Sorts jobs by length and cuts them into batches whose padded size (inputs x longest input)
/// stays within the token budget, so short inputs are not padded to a long neighbour.
fn split_by_length(mut jobs: Vec<Job>, limits: BatchLimits) -> Vec<Vec<Job>> {
    jobs.sort_by_key(Job::len);
    let mut batches = Vec::new();
    let mut current: Vec<Job> = Vec::new();
    for job in jobs {
        let longest = job.len().max(1);
        let padded = (current.len() + 1) * longest;
        if !current.is_empty()
            && (current.len() >= limits.max_batch_size || padded > limits.max_batch_tokens)
        {
            batches.push(std::mem::take(&mut current));
        }
        current.push(job);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::RequestTracker;

    fn job(len: usize) -> Job {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        std::mem::forget(_rx);
        Job {
            ids: vec![1; len],
            type_ids: vec![0; len],
            deadline: Instant::now() + Duration::from_secs(60),
            enqueued: Instant::now(),
            reply: tx,
            request: Arc::new(RequestTracker::default()),
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn batches_respect_size_and_padded_token_budget() {
        let limits = BatchLimits {
            max_batch_size: 3,
            max_batch_tokens: 100,
            max_wait: Duration::ZERO,
        };
        let jobs = vec![job(40), job(5), job(6), job(7), job(8), job(50)];
        let batches = split_by_length(jobs, limits);
        let lens: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| b.iter().map(Job::len).collect())
            .collect();
        assert_eq!(lens, vec![vec![5, 6, 7], vec![8, 40], vec![50]]);
    }

    #[test]
    fn an_input_longer_than_the_budget_still_runs_alone() {
        let limits = BatchLimits {
            max_batch_size: 8,
            max_batch_tokens: 10,
            max_wait: Duration::ZERO,
        };
        let batches = split_by_length(vec![job(30), job(2)], limits);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1][0].len(), 30);
    }
}
