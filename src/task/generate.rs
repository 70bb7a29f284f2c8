//! Generation requests, whatever route they came by: the sampling fields OpenAI defines,
//! validated into the engine's parameters, and a finished generation collected from events.

use serde::Deserialize;
use serde_json::Value;

use crate::engine::generation::{Event, FinishReason, GenerateError, Sampled, SamplingParams};
use crate::error::ApiError;

/// Most stop strings a request may give (OpenAI allows 4).
const MAX_STOPS: usize = 4;
/// Most alternatives `top_logprobs` may ask for (OpenAI's limit).
const MAX_TOP_LOGPROBS: usize = 20;

/// Sampling fields shared by chat and completions requests.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SamplingFields {
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    /// A string or a list of up to 4 strings.
    #[schema(value_type = Object)]
    pub stop: Option<Value>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Must be 1 when given.
    pub n: Option<u64>,
}

/// The validated parameters of one generation.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    /// `None`: up to the context.
    pub max_new_tokens: Option<usize>,
    pub stop: Vec<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam {
        param: param.to_string(),
        message: message.into(),
    }
}

fn in_range(param: &str, value: Option<f32>, low: f32, high: f32) -> Result<(), ApiError> {
    match value {
        Some(v) if !(low..=high).contains(&v) || !v.is_finite() => Err(invalid(
            param,
            format!("{param} must be between {low} and {high}, got {v}"),
        )),
        _ => Ok(()),
    }
}

impl SamplingFields {
    /// Checks every field; `logprobs` is how many alternatives to report, if any.
    pub fn validate(&self, logprobs: Option<usize>) -> Result<GenerationParams, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(invalid(
                    "n",
                    format!("n must be 1 (wick returns one choice per request), got {n}"),
                ));
            }
        }
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("top_p", self.top_p, 0.0, 1.0)?;
        in_range("min_p", self.min_p, 0.0, 1.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        if self.top_p == Some(0.0) {
            return Err(invalid("top_p", "top_p must be greater than 0"));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => {
                return Err(invalid(
                    "top_k",
                    format!("top_k must be positive (or -1 for none), got {k}"),
                ))
            }
        };
        if logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return Err(invalid(
                "top_logprobs",
                format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
            ));
        }
        let max_new_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => return Err(invalid("max_tokens", "max_tokens must be at least 1")),
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => None,
        };
        Ok(GenerationParams {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p.unwrap_or(1.0),
                top_k,
                min_p: self.min_p.unwrap_or(0.0),
                presence_penalty: self.presence_penalty.unwrap_or(0.0),
                frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
                seed: self.seed.map(|s| s as u64),
                logprobs,
            },
            max_new_tokens,
            stop: stops(self.stop.as_ref())?,
        })
    }
}

fn stops(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let stops: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("stop", "stop must be a string or a list of strings"))?,
        Some(_) => {
            return Err(invalid(
                "stop",
                "stop must be a string or a list of strings",
            ))
        }
    };
    if stops.len() > MAX_STOPS {
        return Err(invalid(
            "stop",
            format!("stop takes at most {MAX_STOPS} strings"),
        ));
    }
    Ok(stops)
}

/// One generated token with its text, for logprobs.
#[derive(Debug, Clone)]
pub struct GeneratedToken {
    pub text: String,
    pub sampled: Sampled,
}

/// A whole generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub tokens: Vec<GeneratedToken>,
}

/// Waits for the stream to finish and puts its text together.
pub async fn collect(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Result<Generation, GenerateError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Token {
                text: piece,
                sampled,
            } => {
                text.push_str(&piece);
                tokens.push(GeneratedToken {
                    text: piece,
                    sampled,
                });
            }
            Event::Finished {
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                return Ok(Generation {
                    text,
                    finish_reason: reason,
                    prompt_tokens,
                    completion_tokens,
                    tokens,
                })
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(GenerateError::ShuttingDown)
}
