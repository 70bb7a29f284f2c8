//! Server-sent event streams exactly as OpenAI sends them: a first chunk with the role (chat),
//! content deltas, a chunk with `finish_reason`, a usage chunk with empty `choices` when asked
//! for, then `data: [DONE]`; the same `id` and `created` on every chunk. Comment pings keep the
//! connection alive while a long prompt is prefilled. An error after the stream began is sent
//! as a `data:` event carrying OpenAI's error object, and the stream ends there.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_stream::stream;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::chat::generation_error;
use super::chat_wire::{
    ChatChunk, ChatLogprobs, ChunkChoice, Completion, CompletionChoice, CompletionLogprobs, Delta,
    TokenLogprob, TopLogprob, UsageOut,
};
use crate::engine::generation::{Event, FinishReason, GenerationStream};
use crate::model::gguf_tokenizer::ChatTokenizer;
use crate::task::generate::GeneratedToken;

pub(super) struct StreamMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    pub logprobs: bool,
    /// How often a comment is sent while nothing else is (prefill of a long prompt).
    pub ping_interval: Duration,
}

fn data(value: &impl Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}

/// How one API shapes its chunks; [`drive`] runs the event loop both share.
trait Chunks: Send + 'static {
    /// Sent before any token: chat's role chunk, or the echoed prompt of a completion.
    fn opening(&mut self) -> Option<SseEvent>;
    /// A token's chunk, or none for a token whose text is held back (no logprobs asked).
    fn token(&mut self, token: GeneratedToken) -> Option<SseEvent>;
    fn finish(&self, reason: FinishReason) -> SseEvent;
    /// The last chunk, with empty `choices`, when the client asked for usage.
    fn usage(&self, usage: UsageOut) -> SseEvent;
}

fn drive(
    mut generation: GenerationStream,
    include_usage: bool,
    ping_interval: Duration,
    mut chunks: impl Chunks,
) -> Response {
    let events = stream! {
        if let Some(opening) = chunks.opening() {
            yield Ok::<_, Infallible>(opening);
        }
        while let Some(event) = generation.events.recv().await {
            match event {
                Event::Token { text, sampled } => {
                    if let Some(chunk) = chunks.token(GeneratedToken { text, sampled }) {
                        yield Ok(chunk);
                    }
                }
                Event::Finished { reason, prompt_tokens, completion_tokens } => {
                    yield Ok(chunks.finish(reason));
                    if include_usage {
                        yield Ok(chunks.usage(UsageOut::new(prompt_tokens, completion_tokens)));
                    }
                    yield Ok(SseEvent::default().data("[DONE]"));
                    return;
                }
                Event::Failed(error) => {
                    yield Ok(data(&generation_error(error).openai_body()));
                    return;
                }
            }
        }
    };
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(ping_interval).text("ping"))
        .into_response()
}

pub(super) fn chat(
    generation: GenerationStream,
    meta: StreamMeta,
    tokenizer: Arc<ChatTokenizer>,
) -> Response {
    drive(
        generation,
        meta.include_usage,
        meta.ping_interval,
        ChatChunks { meta, tokenizer },
    )
}

pub(super) fn completion(
    generation: GenerationStream,
    meta: StreamMeta,
    echo: Option<String>,
    tokenizer: Arc<ChatTokenizer>,
) -> Response {
    let chunks = CompletionChunks {
        meta,
        tokenizer,
        echo,
        offset: 0,
    };
    let (usage, ping) = (chunks.meta.include_usage, chunks.meta.ping_interval);
    drive(generation, usage, ping, chunks)
}

struct ChatChunks {
    meta: StreamMeta,
    tokenizer: Arc<ChatTokenizer>,
}

impl ChatChunks {
    fn chunk(
        &self,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<&'static str>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            usage: self.meta.include_usage.then_some(None),
        }
    }
}

impl Chunks for ChatChunks {
    fn opening(&mut self) -> Option<SseEvent> {
        let role = Delta {
            role: Some("assistant"),
            content: Some(String::new()),
        };
        Some(data(&self.chunk(role, None, None)))
    }

    fn token(&mut self, token: GeneratedToken) -> Option<SseEvent> {
        if token.text.is_empty() && !self.meta.logprobs {
            return None;
        }
        let logprobs = self
            .meta
            .logprobs
            .then(|| chat_logprobs(std::slice::from_ref(&token), &self.tokenizer));
        let delta = Delta {
            role: None,
            content: Some(token.text),
        };
        Some(data(&self.chunk(delta, logprobs, None)))
    }

    fn finish(&self, reason: FinishReason) -> SseEvent {
        data(&self.chunk(Delta::default(), None, Some(reason.as_str())))
    }

    fn usage(&self, usage: UsageOut) -> SseEvent {
        let mut last = self.chunk(Delta::default(), None, None);
        last.choices.clear();
        last.usage = Some(Some(usage));
        data(&last)
    }
}

struct CompletionChunks {
    meta: StreamMeta,
    tokenizer: Arc<ChatTokenizer>,
    echo: Option<String>,
    /// Bytes of text sent so far, for `text_offset`.
    offset: usize,
}

impl CompletionChunks {
    fn chunk(
        &self,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        finish: Option<&'static str>,
    ) -> Completion {
        Completion {
            id: self.meta.id.clone(),
            object: "text_completion",
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs,
                finish_reason: finish,
            }],
            usage: self.meta.include_usage.then_some(None),
        }
    }
}

impl Chunks for CompletionChunks {
    fn opening(&mut self) -> Option<SseEvent> {
        let prompt = self.echo.take()?;
        self.offset = prompt.len();
        Some(data(&self.chunk(prompt, None, None)))
    }

    fn token(&mut self, token: GeneratedToken) -> Option<SseEvent> {
        if token.text.is_empty() && !self.meta.logprobs {
            return None;
        }
        let logprobs = self.meta.logprobs.then(|| {
            completion_logprobs(std::slice::from_ref(&token), &self.tokenizer, self.offset)
        });
        self.offset += token.text.len();
        Some(data(&self.chunk(token.text, logprobs, None)))
    }

    fn finish(&self, reason: FinishReason) -> SseEvent {
        data(&self.chunk(String::new(), None, Some(reason.as_str())))
    }

    fn usage(&self, usage: UsageOut) -> SseEvent {
        let mut last = self.chunk(String::new(), None, None);
        last.choices.clear();
        last.usage = Some(Some(usage));
        data(&last)
    }
}

/// Chat-style logprobs: each token, its log-probability and the top alternatives.
pub(super) fn chat_logprobs(tokens: &[GeneratedToken], tokenizer: &ChatTokenizer) -> ChatLogprobs {
    let content = tokens
        .iter()
        .map(|t| {
            let token = tokenizer.token_text(t.sampled.token);
            TokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: t.sampled.logprob.unwrap_or(0.0),
                top_logprobs: t
                    .sampled
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let token = tokenizer.token_text(id);
                        TopLogprob {
                            bytes: token.as_bytes().to_vec(),
                            token,
                            logprob,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ChatLogprobs { content }
}

/// Completions-style logprobs (parallel lists), text offsets counted from `offset`.
pub(super) fn completion_logprobs(
    tokens: &[GeneratedToken],
    tokenizer: &ChatTokenizer,
    mut offset: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in tokens {
        out.tokens.push(tokenizer.token_text(t.sampled.token));
        out.token_logprobs.push(t.sampled.logprob.unwrap_or(0.0));
        out.top_logprobs.push(
            t.sampled
                .top
                .iter()
                .map(|&(id, lp)| (tokenizer.token_text(id), lp))
                .collect::<BTreeMap<_, _>>(),
        );
        out.text_offset.push(offset);
        offset += t.text.len();
    }
    out
}
