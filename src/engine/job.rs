//! One input's trip through the engine: its tokens, its deadline, and the channel for its reply.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::metrics::{FailureReason, Metrics};
use crate::model::HeadOutput;

/// Why a job got no model output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    #[error("the request deadline passed before the model could run it")]
    DeadlineExceeded,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A job's answer: its head output and the size of the batch it ran in (for the access log).
#[derive(Debug)]
pub(super) struct JobOutput {
    pub output: HeadOutput,
    pub batch_size: usize,
}

pub(super) struct Job {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub deadline: Instant,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<JobOutput, JobError>>,
    pub request: Arc<RequestTracker>,
    pub span: tracing::Span,
}

/// Shared by the jobs of one request so that a dropped request is counted once, not per input.
#[derive(Default)]
pub(super) struct RequestTracker {
    failure_counted: AtomicBool,
}

impl RequestTracker {
    pub(super) fn count_failure(&self, metrics: &Metrics, reason: FailureReason) {
        if !self.failure_counted.swap(true, Ordering::SeqCst) {
            metrics.fail(reason);
        }
    }
}

impl Job {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the job must not reach the model: its client went away or its deadline passed.
    /// Counts the reason, and answers the deadline case so the caller learns why.
    pub(super) fn should_skip(self, metrics: &Metrics, now: Instant) -> Option<Job> {
        if self.reply.is_closed() {
            self.request
                .count_failure(metrics, FailureReason::Cancelled);
            return None;
        }
        if now >= self.deadline {
            self.request.count_failure(metrics, FailureReason::Deadline);
            let _ = self.reply.send(Err(JobError::DeadlineExceeded));
            return None;
        }
        Some(self)
    }
}
