//! The scheduler: the one thread that owns the decoder. Each step it retires sequences whose
//! client left or whose deadline passed, admits waiting ones while their prompts fit the KV
//! budget, and runs one forward pass over a ragged batch: one token for every decoding
//! sequence, then prefill chunks up to the step's token budget, so a long new prompt never
//! stalls the streams already running.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use super::lanes::Lanes;
use super::prefix::PrefixCache;
use super::sequence::{Sequence, Submission};
use super::{Event, FinishReason, GenerateError};
use crate::engine::fault::{panic_message, FaultHook};
use crate::lifecycle::WorkerHeartbeat;
use crate::metrics::{FailureReason, Metrics};
use crate::model::decoder::{Chunk, Decoder, Logits};
use crate::model::gguf_tokenizer::ChatTokenizer;

#[derive(Debug, Clone, Copy)]
pub(super) struct SchedulerLimits {
    pub(super) max_running: usize,
    pub(super) prefix_cache_entries: usize,
    pub(super) max_kv_tokens: usize,
    pub(super) max_step_tokens: usize,
}

pub(super) struct Scheduler {
    decoder: Decoder,
    /// Where large decode steps run split by sequence.
    lanes: Lanes,
    tokenizer: Arc<ChatTokenizer>,
    limits: SchedulerLimits,
    max_context: usize,
    waiting: VecDeque<Sequence>,
    /// In admission order: the newest is preempted first when the KV budget runs out.
    running: Vec<Sequence>,
    /// Caches of finished sequences, reused by prompts that start with the same tokens.
    prefixes: PrefixCache,
    metrics: Arc<Metrics>,
    heartbeat: Arc<WorkerHeartbeat>,
    abort: Arc<AtomicBool>,
    faults: Arc<FaultHook>,
}

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        decoder: Decoder,
        lanes: Lanes,
        tokenizer: Arc<ChatTokenizer>,
        limits: SchedulerLimits,
        metrics: Arc<Metrics>,
        heartbeat: Arc<WorkerHeartbeat>,
        abort: Arc<AtomicBool>,
        faults: Arc<FaultHook>,
    ) -> Self {
        let max_context = decoder.config.context.min(limits.max_kv_tokens);
        Self {
            decoder,
            lanes,
            tokenizer,
            limits,
            max_context,
            waiting: VecDeque::new(),
            running: Vec::new(),
            prefixes: PrefixCache::default(),
            metrics,
            heartbeat,
            abort,
            faults,
        }
    }

    pub(super) fn run(mut self, submissions: Receiver<Submission>) {
        // Generator::start marked the thread alive; this marks it dead however it ends, panics
        // included, so /health sees it.
        struct Alive(Arc<WorkerHeartbeat>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.set_alive(false);
            }
        }
        let _alive = Alive(self.heartbeat.clone());
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match submissions.recv() {
                    Ok(submission) => self.enqueue(submission),
                    Err(_) => return,
                }
            }
            while let Ok(submission) = submissions.try_recv() {
                self.enqueue(submission);
            }
            if self.abort.load(Ordering::Relaxed) {
                self.fail_all(GenerateError::ShuttingDown);
                continue;
            }
            self.retire_abandoned(Instant::now());
            self.admit();
            self.fit_kv_budget();
            if !self.running.is_empty() {
                self.step();
            }
            self.publish_gauges();
        }
    }

    fn enqueue(&mut self, submission: Submission) {
        let sequence = Sequence::new(submission, &self.decoder.config, self.max_context);
        self.metrics
            .chat
            .prompt_tokens_total
            .inc_by(sequence.prompt_len as u64);
        self.waiting.push_back(sequence);
    }

    /// Drops sequences whose client went away and fails those past their deadline, whether
    /// waiting or running (mid-prefill included); their caches are freed with them.
    fn retire_abandoned(&mut self, now: Instant) {
        let metrics = &self.metrics;
        let keep = |s: &Sequence| {
            if s.cancelled() {
                metrics.fail(FailureReason::Cancelled);
                false
            } else if now >= s.deadline {
                metrics.fail(FailureReason::Deadline);
                s.send(Event::Failed(GenerateError::Deadline));
                false
            } else {
                true
            }
        };
        self.waiting.retain(keep);
        self.running.retain(keep);
    }

    fn committed_kv(&self) -> usize {
        self.running.iter().map(|s| s.tokens.len()).sum()
    }

    /// Moves waiting sequences to running, oldest first, while they fit; kept prefix caches
    /// are evicted, oldest first, before a sequence is left waiting for room.
    fn admit(&mut self) {
        let mut committed = self.committed_kv();
        while self.running.len() < self.limits.max_running {
            let Some(next) = self.waiting.front() else {
                break;
            };
            let needed = committed + next.tokens.len();
            while needed + self.prefixes.tokens() > self.limits.max_kv_tokens
                && self.prefixes.evict_oldest()
            {}
            if needed > self.limits.max_kv_tokens {
                break;
            }
            committed = needed;
            let mut sequence = self.waiting.pop_front().expect("front exists");
            self.metrics
                .queue_duration
                .observe(sequence.enqueued.elapsed().as_secs_f64());
            self.reuse_prefix(&mut sequence);
            self.running.push(sequence);
        }
    }

    /// Starts a fresh sequence from the kept cache sharing the most of its tokens.
    fn reuse_prefix(&mut self, sequence: &mut Sequence) {
        if !sequence.cache.is_empty() {
            return;
        }
        if let Some(cache) = self.prefixes.longest(&sequence.tokens) {
            self.metrics.chat.prefix_cache_hits_total.inc();
            self.metrics
                .chat
                .prefix_cache_hit_tokens_total
                .inc_by(cache.len() as u64);
            sequence.cache = cache;
        }
    }

    /// Every running sequence grows by a token per step; when their caches would overflow the
    /// budget, the newest is preempted: its cache is freed and it waits at the head of the
    /// queue, to be recomputed (prompt and tokens so far) when there is room again.
    fn fit_kv_budget(&mut self) {
        while self.committed_kv() + self.prefixes.tokens() > self.limits.max_kv_tokens
            && self.prefixes.evict_oldest()
        {}
        while self.running.len() > 1 && self.committed_kv() > self.limits.max_kv_tokens {
            let mut sequence = self.running.pop().expect("more than one running");
            sequence.cache.clear();
            self.metrics.chat.preemptions_total.inc();
            self.waiting.push_front(sequence);
        }
    }

    /// Decode tokens first (one per sequence), then prefill chunks in admission order.
    fn plan(&self) -> Vec<usize> {
        let mut budget = self.limits.max_step_tokens;
        let mut counts: Vec<usize> = self
            .running
            .iter()
            .map(|s| usize::from(s.pending() == 1))
            .collect();
        budget = budget.saturating_sub(counts.iter().sum());
        for (count, sequence) in counts.iter_mut().zip(&self.running) {
            let pending = sequence.pending();
            if pending > 1 && budget > 0 {
                *count = pending.min(budget);
                budget -= *count;
            }
        }
        counts
    }

    fn step(&mut self) {
        let counts = self.plan();
        self.faults.before_forward();
        let started = Instant::now();
        self.heartbeat.batch_started();
        let result = {
            let mut chunks = Vec::new();
            for (sequence, &n) in self.running.iter_mut().zip(&counts) {
                if n == 0 {
                    continue;
                }
                let start = sequence.cache.len();
                let logits = if start + n == sequence.tokens.len() {
                    Logits::Last
                } else {
                    Logits::None
                };
                chunks.push(Chunk {
                    tokens: &sequence.tokens[start..start + n],
                    cache: &mut sequence.cache,
                    logits,
                });
            }
            let (decoder, lanes, faults) = (&self.decoder, &self.lanes, &self.faults);
            let forward = || {
                faults.inside_forward();
                lanes.forward(decoder, &mut chunks)
            };
            match catch_unwind(AssertUnwindSafe(forward)) {
                Ok(Ok(logits)) => Ok(logits),
                Ok(Err(e)) => Err(e.to_string()),
                Err(payload) => {
                    self.metrics.model_panics_total.inc();
                    tracing::error!(
                        panic = %panic_message(payload.as_ref()),
                        sequences = counts.iter().filter(|&&n| n > 0).count(),
                        "a forward pass panicked: its sequences fail, the model thread goes on"
                    );
                    Err("the model panicked".to_string())
                }
            }
        };
        self.heartbeat.batch_finished();
        let took = started.elapsed().as_secs_f64();
        self.metrics.inference_duration.observe(took);
        self.metrics.batches_total.inc();
        self.metrics
            .batch_tokens
            .observe(counts.iter().sum::<usize>() as f64);
        self.metrics
            .batch_size
            .observe(counts.iter().filter(|&&n| n > 0).count() as f64);
        match result {
            Ok(logits) => self.sample_and_stream(&counts, logits),
            Err(message) => {
                tracing::error!(error = %message, "generation step failed");
                self.metrics.fail(FailureReason::Internal);
                let failed = std::mem::take(&mut self.running);
                for (sequence, &n) in failed.into_iter().zip(&counts) {
                    if n == 0 {
                        self.running.push(sequence);
                    } else {
                        let _entered = sequence.span.enter();
                        tracing::error!(error = %message, "generation failed");
                        sequence.send(Event::Failed(GenerateError::Inference(message.clone())));
                    }
                }
            }
        }
    }

    fn sample_and_stream(&mut self, counts: &[usize], logits: Vec<Vec<f32>>) {
        let mut logits = logits.into_iter();
        let now = Instant::now();
        let mut finished = Vec::new();
        for (index, (sequence, &n)) in self.running.iter_mut().zip(counts).enumerate() {
            if n == 0 {
                continue;
            }
            let Some(mut row) = logits.next() else { break };
            if row.is_empty() {
                continue;
            }
            let sampled = sequence.sampler.sample(&mut row);
            let token = sampled.token;
            sequence.tokens.push(token);
            self.metrics.chat.generated_tokens_total.inc();
            match sequence.last_token {
                None => self
                    .metrics
                    .chat
                    .time_to_first_token
                    .observe(now.duration_since(sequence.enqueued).as_secs_f64()),
                Some(last) => self
                    .metrics
                    .chat
                    .inter_token_latency
                    .observe(now.duration_since(last).as_secs_f64()),
            }
            sequence.last_token = Some(now);
            let reason = if self.tokenizer.is_stop(token) {
                let rest = sequence.text.flush();
                if !rest.is_empty() {
                    sequence.send(Event::Token {
                        text: rest,
                        sampled: sampled.clone(),
                    });
                }
                Some(FinishReason::Stop)
            } else {
                let delta = sequence.text.push(&self.tokenizer, token);
                let mut text = delta.text;
                let length = sequence.tokens.len() >= sequence.end_at;
                if length && !delta.stopped {
                    text.push_str(&sequence.text.flush());
                }
                sequence.send(Event::Token { text, sampled });
                if delta.stopped {
                    Some(FinishReason::Stop)
                } else {
                    length.then_some(FinishReason::Length)
                }
            };
            if let Some(reason) = reason {
                finished.push((index, reason));
            }
        }
        for (index, reason) in finished.into_iter().rev() {
            let sequence = self.running.remove(index);
            self.metrics
                .chat
                .requests_finished_total
                .with_label_values(&[reason.as_str()])
                .inc();
            sequence.send(Event::Finished {
                reason,
                prompt_tokens: sequence.prompt_len,
                completion_tokens: sequence.generated(),
            });
            self.prefixes.insert(
                sequence.tokens,
                sequence.cache,
                self.limits.prefix_cache_entries,
            );
        }
    }

    fn fail_all(&mut self, error: GenerateError) {
        for sequence in self.running.drain(..).chain(self.waiting.drain(..)) {
            sequence.send(Event::Failed(error.clone()));
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        m.chat.sequences_running.set(self.running.len() as i64);
        m.chat.sequences_waiting.set(self.waiting.len() as i64);
        m.queue_depth.set(self.waiting.len() as i64);
        m.inputs_in_flight.set(self.running.len() as i64);
        let used: usize = self.running.iter().map(|s| s.cache.len()).sum();
        m.chat
            .kv_cache_usage
            .set(used as f64 / self.limits.max_kv_tokens.max(1) as f64);
    }
}
