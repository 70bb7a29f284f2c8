//! The generation engine: continuous batching of chat and completion requests on one model
//! thread, streaming each token to its client as soon as it is sampled.
//!
//! ```text
//! handler --submit--> permit + waiting queue --> scheduler (owns the decoder and KV caches)
//!    ^                                              | every step: admit, prefill chunks +
//!    +------------- events (tokens, finish) <-------+ one decode token per running sequence
//! ```
//!
//! Admission is fail-fast: a semaphore bounds the sequences running and waiting, and past it a
//! request gets 429 at once. A sequence waits while its prompt does not fit the KV budget.

mod lanes;
mod prefix;
mod sampler;
mod scheduler;
mod sequence;
mod text;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use sampler::{argmax, Sampled, SamplingParams};

use super::FaultHook;
use crate::lifecycle::WorkerHeartbeat;
use crate::metrics::{FailureReason, Metrics};
use crate::model::chat::ChatModel;
use crate::model::gguf_tokenizer::ChatTokenizer;
use lanes::Lanes;
use scheduler::{Scheduler, SchedulerLimits};
use sequence::Submission;

#[derive(Debug, Clone, Copy)]
pub struct GeneratorConfig {
    /// Sequences decoded together at most.
    pub max_running: usize,
    /// Sequences admitted but not yet running at most; past it, 429.
    pub max_waiting: usize,
    /// Positions the KV caches of all sequences may hold together.
    pub max_kv_tokens: usize,
    /// Tokens one forward pass may process (prefill chunks plus one per decoding sequence).
    pub max_step_tokens: usize,
    /// Finished sequences' caches kept for prefix reuse; 0 turns it off.
    pub prefix_cache_entries: usize,
}

/// Where the chat engine runs: wick's own quantized kernels are CPU code.
pub const DEVICE: &str = "cpu";

/// What a client can learn about the served chat model.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ChatInfo {
    pub model_id: String,
    pub architecture: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub max_kv_tokens: usize,
    pub kv_bytes_per_token: usize,
    pub max_running: usize,
    pub has_chat_template: bool,
    /// Always `cpu`: the chat engine's quantized kernels are CPU code.
    pub device: &'static str,
}

/// One generation request, tokenized.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of turn, EOS, or a stop string.
    Stop,
    /// `max_tokens`, the context length or the KV budget.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Why a sequence ended without finishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("the request deadline passed")]
    Deadline,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

/// What the scheduler sends a request's stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// One sampled token and the text it completes (may be empty while text is held back).
    Token {
        text: String,
        sampled: Sampled,
    },
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(GenerateError),
}

/// Why a request was not admitted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is at capacity")]
    Overloaded { retry_after: u64 },
    #[error("the prompt has {prompt} tokens; this model's context is {context} tokens")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A running request's events; dropping it cancels the sequence and frees its KV cache.
pub struct GenerationStream {
    pub events: UnboundedReceiver<Event>,
    pub prompt_tokens: usize,
    _permit: OwnedSemaphorePermit,
}

pub struct Generator {
    submissions: Sender<Submission>,
    permits: Arc<Semaphore>,
    tokenizer: Arc<ChatTokenizer>,
    template: Option<String>,
    info: ChatInfo,
    metrics: Arc<Metrics>,
    abort: Arc<AtomicBool>,
    config: GeneratorConfig,
}

impl Generator {
    /// Starts the scheduler thread; it stops when the generator is dropped.
    pub fn start(
        model: ChatModel,
        model_id: String,
        config: GeneratorConfig,
        metrics: Arc<Metrics>,
        heartbeat: Arc<WorkerHeartbeat>,
        faults: Arc<FaultHook>,
    ) -> std::io::Result<Self> {
        let ChatModel {
            architecture,
            decoder,
            tokenizer,
            template,
            ..
        } = model;
        let info = ChatInfo {
            model_id,
            architecture,
            context_length: decoder.config.context,
            vocab_size: decoder.config.vocab,
            max_kv_tokens: config.max_kv_tokens,
            kv_bytes_per_token: decoder.config.kv_bytes_per_token(),
            max_running: config.max_running,
            has_chat_template: template.is_some(),
            device: DEVICE,
        };
        let tokenizer = Arc::new(tokenizer);
        let abort = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let threads = rayon::current_num_threads();
        let scheduler = Scheduler::new(
            decoder,
            Lanes::new(threads)?,
            tokenizer.clone(),
            SchedulerLimits {
                max_running: config.max_running,
                max_kv_tokens: config.max_kv_tokens,
                max_step_tokens: config.max_step_tokens,
                prefix_cache_entries: config.prefix_cache_entries,
            },
            metrics.clone(),
            heartbeat.clone(),
            abort.clone(),
            faults,
        );
        // The scheduler runs on a worker of its own pool: from a thread outside it, every
        // parallel loop (hundreds per step) would put the caller to sleep and wake the workers.
        let pool = super::math_pool(threads)?;
        // Alive from the moment the generator exists, not from the new thread's first
        // instruction: /health reads the heartbeat as soon as the generator is installed, and
        // on a busy machine the thread may not run for milliseconds. The scheduler marks itself
        // dead however it ends.
        heartbeat.set_alive(true);
        let spawned = std::thread::Builder::new()
            .name("wick-generate".into())
            .spawn(move || pool.install(|| scheduler.run(rx)));
        if let Err(e) = spawned {
            heartbeat.set_alive(false);
            return Err(e);
        }
        Ok(Self {
            submissions: tx,
            permits: Arc::new(Semaphore::new(config.max_running + config.max_waiting)),
            tokenizer,
            template,
            info,
            metrics,
            abort,
            config,
        })
    }

    pub fn info(&self) -> &ChatInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Arc<ChatTokenizer> {
        &self.tokenizer
    }

    pub fn template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    /// The longest context one sequence may use: the model's, within the KV budget.
    pub fn max_context(&self) -> usize {
        self.info.context_length.min(self.info.max_kv_tokens)
    }

    /// Sequences admitted and not finished.
    pub fn active(&self) -> usize {
        self.config.max_running + self.config.max_waiting - self.permits.available_permits()
    }

    /// Admits a request or fails at once; its sequence starts at the scheduler's next step.
    pub fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, SubmitError> {
        let context = self.max_context();
        if request.prompt.len() >= context {
            return Err(SubmitError::PromptTooLong {
                prompt: request.prompt.len(),
                context,
            });
        }
        if self.abort.load(Ordering::Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            self.metrics.fail(FailureReason::Overloaded);
            SubmitError::Overloaded {
                retry_after: self.retry_after(),
            }
        })?;
        let (events_tx, events_rx) = unbounded_channel();
        let prompt_tokens = request.prompt.len();
        let submission = Submission {
            request,
            events: events_tx,
            enqueued: Instant::now(),
            span: tracing::Span::current(),
        };
        self.submissions
            .send(submission)
            .map_err(|_| SubmitError::ShuttingDown)?;
        Ok(GenerationStream {
            events: events_rx,
            prompt_tokens,
            _permit: permit,
        })
    }

    /// Seconds until a slot is likely free: the sequences ahead, a few seconds each.
    pub fn retry_after(&self) -> u64 {
        let ahead = self.active() as u64;
        (1 + ahead / self.config.max_running.max(1) as u64 * 2).clamp(1, 60)
    }

    /// Ends every sequence still running or waiting with a "shutting down" error (the drain
    /// deadline passed), and refuses new ones.
    pub fn abort_all(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// Runs a prompt through prefill and a few decode steps, alone and as a small batch, so
    /// the first client does not pay for first-touch allocations. Returns the steps run.
    pub async fn warmup(&self) -> Result<usize, GenerateError> {
        let filler = self
            .tokenizer
            .encode("Warm up the model before traffic.", false);
        let filler = filler.map_err(GenerateError::Inference)?;
        let long: Vec<u32> = filler
            .iter()
            .copied()
            .cycle()
            .take((self.config.max_step_tokens + 8).min(self.max_context() / 2))
            .collect();
        let mut runs = 0;
        for (prompt, copies) in [(filler.clone(), 1), (long, 1), (filler, 4)] {
            let mut streams = Vec::new();
            for _ in 0..copies.min(self.config.max_running) {
                let request = GenerateRequest {
                    prompt: prompt.clone(),
                    params: SamplingParams {
                        temperature: 0.0,
                        ..SamplingParams::default()
                    },
                    max_new_tokens: 4,
                    stop: Vec::new(),
                    deadline: Instant::now() + Duration::from_secs(600),
                };
                streams.push(
                    self.submit(request)
                        .map_err(|e| GenerateError::Inference(e.to_string()))?,
                );
            }
            for mut stream in streams {
                while let Some(event) = stream.events.recv().await {
                    match event {
                        Event::Failed(e) => return Err(e),
                        Event::Finished { .. } => break,
                        Event::Token { .. } => {}
                    }
                }
                runs += 1;
            }
        }
        Ok(runs)
    }
}
