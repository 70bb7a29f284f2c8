//! OpenAI's generation routes: `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models`. Each handler parses, builds the prompt, submits one generation, and
//! answers with one JSON object or a server-sent event stream (see `sse`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::body::parse_json;
use super::chat_wire::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageIn, Completion,
    CompletionChoice, CompletionRequest, ModelCard, ModelList, StreamOptions, UsageOut,
};
use super::predict::{request_deadline, ServedTask};
use super::sse::{self, StreamMeta};
use super::state::AppState;
use crate::engine::generation::{
    GenerateError, GenerateRequest, GenerationStream, Generator, SubmitError,
};
use crate::error::{ApiError, OpenAiError, OpenAiErrorBody};
use crate::model::Task;
use crate::task::chat_template::TemplateMessage;
use crate::task::generate::{collect, GenerationParams};

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl StreamMeta {
    /// A fresh response id (`{prefix}-...`), the request's stream options and the server's
    /// ping interval.
    fn new(
        prefix: &str,
        state: &AppState,
        generator: &Generator,
        options: Option<StreamOptions>,
        logprobs: Option<usize>,
    ) -> Self {
        Self {
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: unix_now(),
            model: generator.info().model_id.clone(),
            include_usage: options.and_then(|o| o.include_usage).unwrap_or(false),
            logprobs: logprobs.is_some(),
            ping_interval: state.limits().sse_ping_interval,
        }
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam {
        param: param.into(),
        message: message.into(),
    }
}

#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatCompletionRequest,
    responses((status = 200, body = ChatCompletion, description = "JSON, or server-sent events with `stream: true`"),
        (status = 422, body = OpenAiErrorBody), (status = 429, body = OpenAiErrorBody),
        (status = 503, body = OpenAiErrorBody)))]
pub(super) async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let request: ChatCompletionRequest = parse_json(body)?;
    let generator = state.generator()?;
    reject_tools(&request)?;
    let template = state.chat_template().ok_or_else(|| {
        invalid(
            "messages",
            "this model has no chat template: use /v1/completions, or start wick with --chat-template FILE",
        )
    })?;
    let messages = template_messages(&request.messages)?;
    let prompt = template
        .render(&messages, true)
        .map_err(|e| invalid("messages", e))?;
    let logprobs = match (request.logprobs, request.top_logprobs) {
        (Some(true), top) => Some(top.unwrap_or(0) as usize),
        (_, Some(_)) => {
            return Err(invalid("top_logprobs", "top_logprobs needs logprobs: true").into())
        }
        _ => None,
    };
    let params = request.sampling.validate(logprobs)?;
    let deadline = request_deadline(&headers, state.limits().generation_timeout)?;
    let ids = tokenize_prompt(generator, prompt).await?;
    let stream = submit(generator, ids, params, deadline, "messages")?;
    let meta = StreamMeta::new(
        "chatcmpl",
        &state,
        generator,
        request.stream_options,
        logprobs,
    );
    if request.stream == Some(true) {
        return Ok(served(sse::chat(
            stream,
            meta,
            generator.tokenizer().clone(),
        )));
    }
    let mut stream = stream;
    let generation = collect(&mut stream.events)
        .await
        .map_err(generation_error)?;
    let logprobs = meta
        .logprobs
        .then(|| sse::chat_logprobs(&generation.tokens, generator.tokenizer()));
    let body = ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: generation.text,
            },
            logprobs,
            finish_reason: generation.finish_reason.as_str(),
        }],
        usage: UsageOut::new(generation.prompt_tokens, generation.completion_tokens),
    };
    Ok(served(Json(body).into_response()))
}

fn reject_tools(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    let non_empty = |v: &Option<Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    };
    if non_empty(&request.tools) {
        return Err(invalid(
            "tools",
            "tool calling is not supported by this server",
        ));
    }
    if non_empty(&request.functions) {
        return Err(invalid(
            "functions",
            "function calling is not supported by this server",
        ));
    }
    if let Some(format) = &request.response_format {
        let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(invalid(
                "response_format",
                format!("response_format {kind:?} is not supported (only \"text\")"),
            ));
        }
    }
    Ok(())
}

/// Message contents as plain text: a string, or the `text` parts of a content list.
fn template_messages(messages: &[ChatMessageIn]) -> Result<Vec<TemplateMessage>, ApiError> {
    if messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    messages
        .iter()
        .map(|m| {
            let content = match &m.content {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|part| {
                        match (part.get("type").and_then(Value::as_str), part.get("text")) {
                            (Some("text"), Some(Value::String(text))) => Ok(text.as_str()),
                            (kind, _) => Err(invalid(
                                "messages",
                                format!(
                                    "content part {:?} is not supported (only text)",
                                    kind.unwrap_or("?")
                                ),
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                Some(_) => {
                    return Err(invalid(
                        "messages",
                        "content must be a string or a list of parts",
                    ))
                }
            };
            Ok(TemplateMessage {
                role: m.role.clone(),
                content,
            })
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/completions", request_body = CompletionRequest,
    responses((status = 200, body = Completion, description = "JSON, or server-sent events with `stream: true`"),
        (status = 422, body = OpenAiErrorBody), (status = 429, body = OpenAiErrorBody),
        (status = 503, body = OpenAiErrorBody)))]
pub(super) async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let request: CompletionRequest = parse_json(body)?;
    let generator = state.generator()?;
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(invalid("suffix", "suffix (fill-in-the-middle) is not supported").into());
    }
    let logprobs = request.logprobs.map(|n| n as usize);
    let params = request.sampling.validate(logprobs)?;
    let deadline = request_deadline(&headers, state.limits().generation_timeout)?;
    let (ids, prompt_text) = match completion_prompt(&request.prompt)? {
        Prompt::Text(text) => (tokenize_prompt(generator, text.clone()).await?, text),
        Prompt::Ids(ids) => {
            let vocab = generator.info().vocab_size;
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(invalid(
                    "prompt",
                    format!("token id {bad} is outside the vocabulary of {vocab}"),
                )
                .into());
            }
            let text = generator.tokenizer().decode(&ids).unwrap_or_default();
            (ids, text)
        }
    };
    let echo = request.echo.unwrap_or(false).then_some(prompt_text);
    let stream = submit(generator, ids, params, deadline, "prompt")?;
    let meta = StreamMeta::new("cmpl", &state, generator, request.stream_options, logprobs);
    if request.stream == Some(true) {
        let body = sse::completion(stream, meta, echo, generator.tokenizer().clone());
        return Ok(served(body));
    }
    let mut stream = stream;
    let generation = collect(&mut stream.events)
        .await
        .map_err(generation_error)?;
    let logprobs = meta
        .logprobs
        .then(|| sse::completion_logprobs(&generation.tokens, generator.tokenizer(), 0));
    let body = Completion {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices: vec![CompletionChoice {
            index: 0,
            text: echo.unwrap_or_default() + &generation.text,
            logprobs,
            finish_reason: Some(generation.finish_reason.as_str()),
        }],
        usage: Some(Some(UsageOut::new(
            generation.prompt_tokens,
            generation.completion_tokens,
        ))),
    };
    Ok(served(Json(body).into_response()))
}

enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A string, a list holding one string, token ids, or a list holding one list of token ids.
fn completion_prompt(prompt: &Value) -> Result<Prompt, ApiError> {
    let ids = |items: &[Value]| -> Option<Vec<u32>> {
        items
            .iter()
            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    match prompt {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => Ok(Prompt::Text(
            items[0].as_str().unwrap_or_default().to_string(),
        )),
        Value::Array(items) if items.len() == 1 && items[0].is_array() => items[0]
            .as_array()
            .and_then(|inner| ids(inner))
            .filter(|ids| !ids.is_empty())
            .map(Prompt::Ids)
            .ok_or_else(|| invalid("prompt", "prompt token ids must be non-negative integers")),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            ids(items)
                .map(Prompt::Ids)
                .ok_or_else(|| invalid("prompt", "prompt token ids must be non-negative integers"))
        }
        Value::Array(items) if items.len() > 1 => Err(invalid(
            "prompt",
            "one prompt per request: send a string, not a list of prompts",
        )),
        _ => Err(invalid(
            "prompt",
            "prompt must be a non-empty string or a list of token ids",
        )),
    }
}

#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelList)))]
pub(super) async fn models(State(state): State<AppState>) -> Response {
    let data = state
        .model_id()
        .map(|id| ModelCard {
            id,
            object: "model",
            created: state.started_at(),
            owned_by: "wick",
        })
        .into_iter()
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
    .into_response()
}

/// Tokenizes a rendered prompt on the blocking pool.
pub(super) async fn tokenize_prompt(
    generator: &Generator,
    text: String,
) -> Result<Vec<u32>, ApiError> {
    if text.is_empty() {
        return Err(invalid("prompt", "the prompt is empty"));
    }
    let tokenizer = generator.tokenizer().clone();
    tokio::task::spawn_blocking(move || tokenizer.encode_prompt(&text))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| invalid("prompt", format!("cannot tokenize the prompt: {e}")))
}

pub(super) fn submit(
    generator: &Generator,
    prompt: Vec<u32>,
    params: GenerationParams,
    deadline: Instant,
    param: &str,
) -> Result<GenerationStream, ApiError> {
    let room = generator.max_context().saturating_sub(prompt.len());
    let request = GenerateRequest {
        max_new_tokens: params.max_new_tokens.unwrap_or(room).min(room),
        prompt,
        params: params.sampling,
        stop: params.stop,
        deadline,
    };
    generator.submit(request).map_err(|e| match e {
        SubmitError::Overloaded { retry_after } => ApiError::Overloaded { retry_after },
        SubmitError::PromptTooLong { .. } => invalid(param, e.to_string()),
        SubmitError::ShuttingDown => ApiError::Unavailable {
            message: e.to_string(),
            retry_after: 1,
        },
    })
}

pub(super) fn generation_error(error: GenerateError) -> ApiError {
    match error {
        GenerateError::Deadline | GenerateError::ShuttingDown => ApiError::Unavailable {
            message: error.to_string(),
            retry_after: 1,
        },
        GenerateError::Inference(detail) => ApiError::Internal(detail),
    }
}

/// Marks a response as a generation for the access log and the `task` label.
pub(super) fn served(mut response: Response) -> Response {
    response.extensions_mut().insert(ServedTask {
        task: Task::Generate,
        batch_size: 0,
    });
    response
}
