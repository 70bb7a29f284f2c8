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
use futures::Stream;
use serde::Serialize;

use super::chat::generation_error;
use super::chat_wire::{
    ChatChunk, ChatLogprobs, ChunkChoice, Completion, CompletionChoice, CompletionLogprobs, Delta,
    TokenLogprob, TopLogprob, UsageOut,
};
use crate::engine::generation::{Event, GenerationStream};
use crate::model::gguf_tokenizer::ChatTokenizer;
use crate::task::generate::GeneratedToken;

/// How often a comment is sent while nothing else is (prefill of a long prompt).
const PING_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct StreamMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
    pub logprobs: bool,
}

fn data(value: &impl Serialize) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(serde_json::to_string(value).unwrap_or_default()))
}

fn done() -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data("[DONE]"))
}

fn keep_alive<S>(events: S) -> Response
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(PING_INTERVAL).text("ping"))
        .into_response()
}

pub(super) fn chat(
    mut generation: GenerationStream,
    meta: StreamMeta,
    tokenizer: Arc<ChatTokenizer>,
) -> Response {
    let with_usage = meta.include_usage;
    let usage_field = with_usage.then_some(None);
    let chunk = move |delta: Delta,
                      logprobs: Option<ChatLogprobs>,
                      finish: Option<&'static str>| ChatChunk {
        id: meta.id.clone(),
        object: "chat.completion.chunk",
        created: meta.created,
        model: meta.model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason: finish,
        }],
        usage: usage_field.clone(),
    };
    let want_logprobs = meta.logprobs;
    keep_alive(stream! {
        let first = Delta { role: Some("assistant"), content: Some(String::new()) };
        yield data(&chunk(first, None, None));
        while let Some(event) = generation.events.recv().await {
            match event {
                Event::Token { text, sampled } => {
                    if text.is_empty() && !want_logprobs {
                        continue;
                    }
                    let logprobs = want_logprobs.then(|| {
                        chat_logprobs(&[GeneratedToken { text: text.clone(), sampled }], &tokenizer)
                    });
                    yield data(&chunk(Delta { role: None, content: Some(text) }, logprobs, None));
                }
                Event::Finished { reason, prompt_tokens, completion_tokens } => {
                    yield data(&chunk(Delta::default(), None, Some(reason.as_str())));
                    if with_usage {
                        let mut last = chunk(Delta::default(), None, None);
                        last.choices.clear();
                        last.usage = Some(Some(UsageOut::new(prompt_tokens, completion_tokens)));
                        yield data(&last);
                    }
                    yield done();
                    return;
                }
                Event::Failed(error) => {
                    yield data(&generation_error(error).openai_body());
                    return;
                }
            }
        }
    })
}

pub(super) fn completion(
    mut generation: GenerationStream,
    meta: StreamMeta,
    echo: Option<String>,
    tokenizer: Arc<ChatTokenizer>,
) -> Response {
    let with_usage = meta.include_usage;
    let usage_field = with_usage.then_some(None);
    let chunk = move |text: String,
                      logprobs: Option<CompletionLogprobs>,
                      finish: Option<&'static str>| Completion {
        id: meta.id.clone(),
        object: "text_completion",
        created: meta.created,
        model: meta.model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            text,
            logprobs,
            finish_reason: finish,
        }],
        usage: usage_field.clone(),
    };
    let want_logprobs = meta.logprobs;
    keep_alive(stream! {
        let mut offset = 0;
        if let Some(prompt) = echo {
            offset = prompt.len();
            yield data(&chunk(prompt, None, None));
        }
        while let Some(event) = generation.events.recv().await {
            match event {
                Event::Token { text, sampled } => {
                    if text.is_empty() && !want_logprobs {
                        continue;
                    }
                    let logprobs = want_logprobs.then(|| {
                        completion_logprobs(&[GeneratedToken { text: text.clone(), sampled }], &tokenizer, offset)
                    });
                    offset += text.len();
                    yield data(&chunk(text, logprobs, None));
                }
                Event::Finished { reason, prompt_tokens, completion_tokens } => {
                    yield data(&chunk(String::new(), None, Some(reason.as_str())));
                    if with_usage {
                        let mut last = chunk(String::new(), None, None);
                        last.choices.clear();
                        last.usage = Some(Some(UsageOut::new(prompt_tokens, completion_tokens)));
                        yield data(&last);
                    }
                    yield done();
                    return;
                }
                Event::Failed(error) => {
                    yield data(&generation_error(error).openai_body());
                    return;
                }
            }
        }
    })
}

fn token_string(tokenizer: &ChatTokenizer, id: u32) -> String {
    tokenizer.token_text(id)
}

/// Chat-style logprobs: each token, its log-probability and the top alternatives.
pub(super) fn chat_logprobs(tokens: &[GeneratedToken], tokenizer: &ChatTokenizer) -> ChatLogprobs {
    let content = tokens
        .iter()
        .map(|t| {
            let token = token_string(tokenizer, t.sampled.token);
            TokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: t.sampled.logprob.unwrap_or(0.0),
                top_logprobs: t
                    .sampled
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let token = token_string(tokenizer, id);
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
        out.tokens.push(token_string(tokenizer, t.sampled.token));
        out.token_logprobs.push(t.sampled.logprob.unwrap_or(0.0));
        out.top_logprobs.push(
            t.sampled
                .top
                .iter()
                .map(|&(id, lp)| (token_string(tokenizer, id), lp))
                .collect::<BTreeMap<_, _>>(),
        );
        out.text_offset.push(offset);
        offset += t.text.len();
    }
    out
}
