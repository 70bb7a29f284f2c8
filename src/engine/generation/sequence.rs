//! One request's life on the model thread: its tokens, KV cache, sampler and text stream.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::sampler::Sampler;
use super::text::TextStream;
use super::{Event, GenerateRequest};
use crate::model::decoder::{DecoderConfig, KvCache};

/// A request on its way to the scheduler.
pub(super) struct Submission {
    pub(super) request: GenerateRequest,
    pub(super) events: UnboundedSender<Event>,
    pub(super) enqueued: Instant,
    pub(super) span: tracing::Span,
}

pub(super) struct Sequence {
    /// Prompt then generated tokens; the cache holds the first `cache.len()` of them.
    pub(super) tokens: Vec<u32>,
    pub(super) prompt_len: usize,
    pub(super) cache: KvCache,
    pub(super) sampler: Sampler,
    pub(super) text: TextStream,
    /// Total length at which generation ends with `length`.
    pub(super) end_at: usize,
    pub(super) deadline: Instant,
    pub(super) events: UnboundedSender<Event>,
    pub(super) enqueued: Instant,
    pub(super) last_token: Option<Instant>,
    pub(super) span: tracing::Span,
}

impl Sequence {
    pub(super) fn new(submission: Submission, config: &DecoderConfig, max_context: usize) -> Self {
        let Submission {
            request,
            events,
            enqueued,
            span,
        } = submission;
        let prompt_len = request.prompt.len();
        let end_at = (prompt_len + request.max_new_tokens).min(max_context);
        Self {
            tokens: request.prompt,
            prompt_len,
            cache: KvCache::new(config),
            sampler: Sampler::new(request.params),
            text: TextStream::new(request.stop),
            end_at,
            deadline: request.deadline,
            events,
            enqueued,
            last_token: None,
            span,
        }
    }

    /// Tokens not yet in the cache: the prompt's rest while prefilling, then the last sampled
    /// token (one per decode step).
    pub(super) fn pending(&self) -> usize {
        self.tokens.len() - self.cache.len()
    }

    pub(super) fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// The client went away (its stream was dropped).
    pub(super) fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    pub(super) fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }
}
