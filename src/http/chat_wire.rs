//! Wire types of OpenAI's chat completions, completions and models APIs, as the official
//! clients send and expect them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::task::generate::SamplingFields;

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct ChatCompletionRequest {
    /// Accepted for compatibility; the loaded model answers.
    #[allow(dead_code)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessageIn>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    /// Tool calling is not supported: a non-empty list is a 422.
    #[schema(value_type = Object)]
    pub tools: Option<Value>,
    #[schema(value_type = Object)]
    pub functions: Option<Value>,
    #[schema(value_type = Object)]
    pub response_format: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct ChatMessageIn {
    pub role: String,
    /// A string, or a list of content parts of which only `text` parts are supported.
    #[schema(value_type = Object)]
    pub content: Option<Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub(super) struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct CompletionRequest {
    #[allow(dead_code)]
    pub model: Option<String>,
    /// A string, a list of one string, or token ids.
    #[schema(value_type = Object)]
    pub prompt: Value,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// How many alternatives to report with each token's log-probability.
    pub logprobs: Option<u64>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct UsageOut {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl UsageOut {
    pub(super) fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: UsageOut,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    #[schema(value_type = Object)]
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize)]
pub(super) struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Present (null until the last chunk) when the client asked for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
}

#[derive(Debug, Serialize)]
pub(super) struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageOut>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CompletionChoice {
    pub index: u32,
    pub text: String,
    #[schema(value_type = Object)]
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(super) struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    #[schema(value_type = Object)]
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}
