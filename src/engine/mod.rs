//! The engine between HTTP and the model: fail-fast admission, tokenization off the async
//! runtime, and the model worker thread, which forms its own batches from the queue.
//!
//! ```text
//! handler --admit--> permit --tokenize--> jobs --queue--> worker (batches, owns model)
//!     ^                                                      |
//!     +------------------ oneshot replies <------------------+
//! ```

mod batcher;
mod fault;
pub mod generation;
mod job;
mod rate;
mod worker;

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenizers::Encoding;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

pub use batcher::BatchLimits;
use batcher::{Batches, Work};
pub use fault::{Fault, FaultHook};
pub use job::JobError;

use crate::lifecycle::WorkerHeartbeat;
use crate::metrics::{FailureReason, Metrics};
use crate::model::{
    EncoderInput, HeadKind, HeadOutput, Model, ModelInfo, TextTokenizer, TokenizeError,
};
use job::{Job, RequestTracker};
use rate::DrainRate;

/// Requests whose inputs hold at most this many bytes of text are tokenized on the task that
/// handles them (tens of microseconds for a sentence); a hop to the blocking pool and back
/// costs more than that on an idle server, where each hop wakes a sleeping thread.
const INLINE_TOKENIZE_BYTES: usize = 512;

/// The bytes of text in `inputs`, counting a token id as one.
fn input_bytes(inputs: &[EncoderInput]) -> usize {
    inputs
        .iter()
        .map(|input| match input {
            EncoderInput::Text(text) => text.len(),
            EncoderInput::TokenIds(ids) => ids.len(),
        })
        .sum()
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub limits: BatchLimits,
    pub max_pending_inputs: usize,
}

/// The server is at capacity; come back after `retry_after` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Overloaded {
    pub retry_after: u64,
}

/// Why an admitted request got no answer from the model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("the request deadline passed")]
    Deadline,
}

/// The model outputs of one request, in input order, and the largest batch they ran in.
#[derive(Debug)]
pub struct Inferred {
    pub outputs: Vec<HeadOutput>,
    pub largest_batch: usize,
}

pub struct Engine {
    queue: SyncSender<Work>,
    permits: Arc<Semaphore>,
    max_pending: usize,
    tokenizer: Arc<TextTokenizer>,
    info: ModelInfo,
    head: HeadKind,
    metrics: Arc<Metrics>,
    drain_rate: Arc<DrainRate>,
    abort: watch::Sender<bool>,
}

impl Engine {
    /// Starts the model worker thread; it stops when the engine is dropped, once every queued
    /// job has run.
    pub fn start(
        model: Model,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        heartbeat: Arc<WorkerHeartbeat>,
        faults: Arc<FaultHook>,
    ) -> std::io::Result<Self> {
        let Model {
            info,
            tokenizer,
            encoder,
            head,
        } = model;
        // The queue never fills: admission caps what is in it at max_pending_inputs, plus at
        // most one request's excess over the whole budget (see `admit`).
        let (queue_tx, queue_rx) = mpsc::sync_channel::<Work>(2 * config.max_pending_inputs);
        let batches = Batches::new(queue_rx, config.limits, metrics.clone());
        let drain_rate = Arc::new(DrainRate::default());

        let worker_metrics = metrics.clone();
        let worker_rate = drain_rate.clone();
        // Alive from the moment the engine exists, not from the new thread's first instruction:
        // /health reads the heartbeat as soon as the engine is installed, and on a busy machine
        // the thread may not run for milliseconds. The worker marks itself dead however it ends.
        heartbeat.set_alive(true);
        let worker_heartbeat = heartbeat.clone();
        let spawned = math_pool(candle_core::utils::get_num_threads()).and_then(|pool| {
            std::thread::Builder::new()
                .name("wick-model".into())
                .spawn(move || {
                    pool.install(|| {
                        worker::run(
                            encoder,
                            batches,
                            worker_heartbeat,
                            worker_metrics,
                            worker_rate,
                            faults,
                        )
                    })
                })
        });
        if let Err(e) = spawned {
            heartbeat.set_alive(false);
            return Err(e);
        }

        let (abort, _) = watch::channel(false);
        Ok(Self {
            queue: queue_tx,
            permits: Arc::new(Semaphore::new(config.max_pending_inputs)),
            max_pending: config.max_pending_inputs,
            tokenizer: Arc::new(tokenizer),
            info,
            head,
            metrics,
            drain_rate,
            abort,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn head(&self) -> HeadKind {
        self.head
    }

    pub fn tokenizer(&self) -> &Arc<TextTokenizer> {
        &self.tokenizer
    }

    /// Inputs admitted and not yet answered.
    pub fn pending_inputs(&self) -> usize {
        self.max_pending - self.permits.available_permits()
    }

    /// Takes `inputs` admission slots or fails at once; the permit frees them when dropped,
    /// on every path out of the request.
    /// A request larger than the whole budget (zero-shot inputs plus uncached labels can be)
    /// takes the whole budget rather than waiting for a capacity that cannot exist.
    pub fn admit(&self, inputs: usize) -> Result<OwnedSemaphorePermit, Overloaded> {
        let n = u32::try_from(inputs.clamp(1, self.max_pending)).unwrap_or(u32::MAX);
        self.permits.clone().try_acquire_many_owned(n).map_err(|_| {
            self.metrics.fail(FailureReason::Overloaded);
            Overloaded {
                retry_after: self.drain_rate.retry_after(self.pending_inputs()),
            }
        })
    }

    pub fn retry_after(&self) -> u64 {
        self.drain_rate.retry_after(self.pending_inputs())
    }

    /// Tokenizes texts, and checks token ids: short inputs on the calling task, longer ones
    /// on the blocking pool. An error carries the index of the input that failed.
    pub async fn tokenize(
        &self,
        inputs: Vec<EncoderInput>,
        truncate: bool,
    ) -> Result<Vec<Encoding>, (usize, TokenizeError)> {
        let tokenizer = self.tokenizer.clone();
        let started = Instant::now();
        let inline = input_bytes(&inputs) <= INLINE_TOKENIZE_BYTES;
        let encode = move || {
            inputs
                .iter()
                .enumerate()
                .map(|(i, input)| tokenizer.encode_input(input, truncate).map_err(|e| (i, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        let result = if inline {
            encode()
        } else {
            tokio::task::spawn_blocking(encode)
                .await
                .unwrap_or_else(|e| Err((0, TokenizeError::Failed(e.to_string()))))
        };
        self.metrics
            .tokenize_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Queues one job per sequence and waits for all of them, until the deadline or an abort.
    pub async fn infer(
        &self,
        sequences: Vec<(Vec<u32>, Vec<u32>)>,
        deadline: Instant,
    ) -> Result<Inferred, InferError> {
        let tracker = Arc::new(RequestTracker::default());
        let mut replies = Vec::with_capacity(sequences.len());
        let now = Instant::now();
        for (ids, type_ids) in sequences {
            let (tx, rx) = oneshot::channel();
            let job = Job {
                ids,
                type_ids,
                deadline,
                enqueued: now,
                reply: tx,
                request: tracker.clone(),
                span: tracing::Span::current(),
            };
            // Counted before it is sent: the worker may take it and count it out before
            // `try_send` even returns, and a scrape must never read a negative depth.
            self.metrics.queue_depth.inc();
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.queue.try_send(Work::Job(job))
            {
                self.metrics.queue_depth.dec();
                return Err(JobError::ShuttingDown.into());
            }
            replies.push(rx);
        }

        let mut abort = self.abort.subscribe();
        let collect = async {
            let mut inferred = Inferred {
                outputs: Vec::with_capacity(replies.len()),
                largest_batch: 0,
            };
            for rx in replies {
                match rx.await {
                    Ok(Ok(answer)) => {
                        inferred.outputs.push(answer.output);
                        inferred.largest_batch = inferred.largest_batch.max(answer.batch_size);
                    }
                    Ok(Err(e)) => return Err(InferError::Job(e)),
                    Err(_) => return Err(JobError::ShuttingDown.into()),
                }
            }
            Ok(inferred)
        };
        tokio::select! {
            result = collect => result,
            _ = tokio::time::sleep_until(deadline.into()) => {
                tracker.count_failure(&self.metrics, FailureReason::Deadline);
                Err(InferError::Deadline)
            }
            _ = abort.wait_for(|aborted| *aborted) => Err(JobError::ShuttingDown.into()),
        }
    }

    /// Answers every request still waiting with "shutting down" (the drain deadline passed).
    pub fn abort_waiting(&self) {
        self.abort.send_replace(true);
    }

    /// Warms every stage before readiness: one real request through the tokenizer, the queue
    /// and the model, then one forward pass for each batch-size bucket (1, 2, 4, ... up to the
    /// cap, at the shortest length) and each length bucket (8, 32, 128, ... up to the model
    /// maximum, alone). The CPU path has no per-shape compilation, so the buckets' edges touch
    /// every code path and buffer size class without the cost of their full cross product.
    /// Returns the number of forward passes run.
    pub async fn warmup(&self, limits: BatchLimits) -> Result<usize, InferError> {
        let encodings = self
            .tokenize(
                vec![EncoderInput::Text(
                    "Warm up every stage a request goes through.".into(),
                )],
                true,
            )
            .await
            .map_err(|(_, e)| JobError::Inference(e.to_string()))?;
        let filler = encodings[0].get_ids().get(1).copied().unwrap_or(0);
        let sequences = encodings
            .iter()
            .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect();
        self.infer(sequences, Instant::now() + Duration::from_secs(600))
            .await?;

        let max_len = self.info.max_input_tokens.max(1);
        let shortest = 8.min(max_len);
        let mut shapes: Vec<(usize, usize)> = buckets(1, 2, limits.max_batch_size)
            .into_iter()
            .map(|size| (size, shortest))
            .collect();
        shapes.extend(
            buckets(shortest, 4, max_len)
                .into_iter()
                .skip(1)
                .map(|len| (1, len)),
        );
        for &(size, len) in &shapes {
            self.run_synthetic(size, len, filler).await?;
        }
        Ok(1 + shapes.len())
    }

    /// One forward pass of `size` inputs of `len` copies of `filler`, run as one batch.
    async fn run_synthetic(&self, size: usize, len: usize, filler: u32) -> Result<(), InferError> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let tracker = Arc::new(RequestTracker::default());
        let mut replies = Vec::with_capacity(size);
        let jobs: Vec<Job> = (0..size)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                replies.push(rx);
                Job {
                    ids: vec![filler; len],
                    type_ids: vec![0; len],
                    deadline,
                    enqueued: Instant::now(),
                    reply: tx,
                    request: tracker.clone(),
                    span: tracing::Span::current(),
                }
            })
            .collect();
        let queue = self.queue.clone();
        let queued = tokio::task::spawn_blocking(move || queue.send(Work::Batch(jobs)).is_ok())
            .await
            .unwrap_or(false);
        if !queued {
            return Err(JobError::ShuttingDown.into());
        }
        for rx in replies {
            rx.await.map_err(|_| JobError::ShuttingDown)??;
        }
        Ok(())
    }
}

/// The pool a model thread runs on and its passes' parallel loops run over (the encoder worker,
/// the generation scheduler). On one of its threads, a pass starts its loops on a thread
/// already awake in the pool; from a thread outside it, each pass would wake a pool thread to
/// run it and wake the caller again with its result, two cross-thread wake-ups of 20-25 us
/// each in a VM.
fn math_pool(threads: usize) -> std::io::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wick-math-{i}"))
        .build()
        .map_err(std::io::Error::other)
}

/// `start, start * factor, ...` below `last`, then `last` itself.
fn buckets(start: usize, factor: usize, last: usize) -> Vec<usize> {
    let mut values: Vec<usize> = std::iter::successors(Some(start), |v| Some(v * factor))
        .take_while(|v| *v < last)
        .collect();
    values.push(last);
    values
}

#[cfg(test)]
mod tests {
    use super::buckets;

    #[test]
    fn buckets_end_at_the_limit() {
        assert_eq!(buckets(1, 2, 32), vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(buckets(8, 4, 256), vec![8, 32, 128, 256]);
        assert_eq!(buckets(8, 4, 8), vec![8]);
        assert_eq!(buckets(1, 2, 24), vec![1, 2, 4, 8, 16, 24]);
    }
}
