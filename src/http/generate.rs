//! `POST /predict` with `"task": "generate"`: wick's own form of a completion, served when
//! the loaded model is a chat model.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::parse_json;
use super::chat::{generation_error, served, submit, tokenize_prompt};
use super::predict::request_deadline;
use super::state::AppState;
use crate::error::ApiError;
use crate::model::Task;
use crate::task::generate::{collect, SamplingFields};

#[derive(Debug, Deserialize)]
struct GeneratePredictRequest {
    task: Option<String>,
    /// One prompt, or a list of prompts generated concurrently.
    inputs: Value,
    parameters: Option<GenerateParameters>,
}

#[derive(Debug, Default, Deserialize)]
struct GenerateParameters {
    #[serde(flatten)]
    sampling: SamplingFields,
    /// Hugging Face's name for `max_tokens`.
    max_new_tokens: Option<u64>,
}

#[derive(Debug, Serialize)]
struct GeneratePredictResponse {
    model: String,
    task: Task,
    outputs: Vec<GeneratedOutput>,
}

#[derive(Debug, Serialize)]
struct GeneratedOutput {
    generated_text: String,
    finish_reason: &'static str,
    prompt_tokens: usize,
    completion_tokens: usize,
}

pub(super) async fn predict_generate(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: GeneratePredictRequest = parse_json(Ok(body))?;
    if let Some(task) = request.task.as_deref() {
        if task != Task::Generate.as_str() {
            return Err(ApiError::Invalid(format!(
                "task {task:?} is not served by this chat model (tasks: generate)"
            )));
        }
    }
    let prompts: Vec<String> = match request.inputs {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::Invalid("inputs must be a string or a list of strings".into())
            })?,
        _ => {
            return Err(ApiError::Invalid(
                "inputs must be a string or a list of strings".into(),
            ))
        }
    };
    if prompts.is_empty() || prompts.len() > state.limits().max_inputs {
        return Err(ApiError::Invalid(format!(
            "inputs must hold between 1 and {} prompts",
            state.limits().max_inputs
        )));
    }
    let mut parameters = request.parameters.unwrap_or_default();
    if parameters.sampling.max_tokens.is_none() {
        parameters.sampling.max_tokens = parameters.max_new_tokens;
    }
    let params = parameters.sampling.validate(None)?;
    let generator = state.generator()?;
    let deadline = request_deadline(headers, state.limits().generation_timeout)?;
    let mut streams = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let ids = tokenize_prompt(generator, prompt).await?;
        streams.push(submit(generator, ids, params.clone(), deadline, "inputs")?);
    }
    let mut outputs = Vec::with_capacity(streams.len());
    for mut stream in streams {
        let generation = collect(&mut stream.events)
            .await
            .map_err(generation_error)?;
        outputs.push(GeneratedOutput {
            generated_text: generation.text,
            finish_reason: generation.finish_reason.as_str(),
            prompt_tokens: generation.prompt_tokens,
            completion_tokens: generation.completion_tokens,
        });
    }
    Ok(served(
        Json(GeneratePredictResponse {
            model: generator.info().model_id.clone(),
            task: Task::Generate,
            outputs,
        })
        .into_response(),
    ))
}
