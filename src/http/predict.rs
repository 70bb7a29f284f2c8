//! `POST /predict`: validate, admit, tokenize, infer, and shape each task's output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokenizers::Encoding;

use super::body::parse_json;
use super::state::AppState;
use super::wire::{LabelScore, OutputItem, PredictRequest, PredictResponse, Prediction};
use crate::engine::{Engine, InferError, Inferred, JobError};
use crate::error::{ApiError, ErrorBody};
use crate::model::math::{cosine, l2_normalize, sigmoid, softmax};
use crate::model::ner::{aggregate, pre_entities, TokenView};
use crate::model::{HeadOutput, Task, TokenizeError};

/// What a response served, read by the middleware for the `task` label and the access log.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServedTask {
    pub task: Task,
    pub batch_size: usize,
}

/// Header a client uses to ask for a shorter deadline than the server default.
pub const TIMEOUT_HEADER: &str = "x-wick-timeout-ms";

#[utoipa::path(
    post,
    path = "/predict",
    request_body = PredictRequest,
    responses(
        (status = 200, body = PredictResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body, batch or input too large", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
        (status = 429, description = "Overloaded; see Retry-After", body = ErrorBody),
        (status = 503, description = "Not ready, shutting down or deadline passed", body = ErrorBody),
    )
)]
pub(super) async fn predict(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if state.serves_chat() {
        let body =
            body.map_err(|e| ApiError::MalformedJson(format!("cannot read request body: {e}")))?;
        return super::generate::predict_generate(&state, &headers, body).await;
    }
    let request: PredictRequest = parse_json(body)?;
    let engine = state.engine()?;
    let prediction = request.validate(&engine.info().tasks)?;
    let deadline = request_deadline(&headers, state.limits().request_timeout)?;
    let task = prediction.task;
    let Served {
        outputs,
        largest_batch,
        ..
    } = run(&state, engine, &prediction, deadline).await?;
    let response = PredictResponse {
        model: engine.info().model_id.clone(),
        task,
        outputs,
    };
    let mut response = Json(response).into_response();
    response.extensions_mut().insert(ServedTask {
        task,
        batch_size: largest_batch,
    });
    Ok(response)
}

/// The deadline for this request: the server default, or sooner if the client asks.
pub(super) fn request_deadline(
    headers: &HeaderMap,
    default: Duration,
) -> Result<Instant, ApiError> {
    let budget = match headers.get(TIMEOUT_HEADER) {
        None => default,
        Some(value) => {
            let ms: u64 = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "{TIMEOUT_HEADER} must be a whole number of milliseconds"
                    ))
                })?;
            Duration::from_millis(ms).min(default)
        }
    };
    Ok(Instant::now() + budget)
}

/// What a prediction produced: one output per input, and the tokens the inputs took.
pub(super) struct Served {
    pub outputs: Vec<OutputItem>,
    pub tokens: usize,
    pub largest_batch: usize,
}

/// Checks limits, runs the model and shapes the outputs of a validated prediction.
pub(super) async fn run(
    state: &AppState,
    engine: &Engine,
    prediction: &Prediction,
    deadline: Instant,
) -> Result<Served, ApiError> {
    let limits = state.limits();
    if prediction.inputs.len() > limits.max_inputs {
        return Err(ApiError::TooLarge(format!(
            "{} inputs in one request; the limit is {}",
            prediction.inputs.len(),
            limits.max_inputs
        )));
    }
    if let Some(i) = prediction
        .inputs
        .iter()
        .position(|t| t.chars().count() > limits.max_input_chars)
    {
        return Err(ApiError::TooLarge(format!(
            "input {i} is longer than {} characters",
            limits.max_input_chars
        )));
    }
    let labels = prediction.zero_shot_labels();
    if prediction.task == Task::ZeroShot && labels.len() > limits.max_inputs {
        return Err(ApiError::TooLarge(format!(
            "{} labels in one request; the limit is {}",
            labels.len(),
            limits.max_inputs
        )));
    }
    let missing_labels: Vec<String> = if prediction.task == Task::ZeroShot {
        let mut seen = std::collections::HashSet::new();
        labels
            .iter()
            .filter(|l| state.labels().get(l).is_none() && seen.insert(l.as_str()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };

    let _permit = engine
        .admit(prediction.inputs.len() + missing_labels.len())
        .map_err(|o| ApiError::Overloaded {
            retry_after: o.retry_after,
        })?;

    let truncate = prediction.parameters.truncate.unwrap_or(true);
    let mut texts = prediction.inputs.clone();
    texts.extend(missing_labels.iter().cloned());
    let encodings = engine
        .tokenize(texts, truncate)
        .await
        .map_err(|(i, e)| match e {
            TokenizeError::TooLong { .. } if i < prediction.inputs.len() => {
                ApiError::Invalid(format!("input {i}: {e}"))
            }
            TokenizeError::TooLong { .. } => ApiError::Invalid(format!("a label: {e}")),
            TokenizeError::Failed(m) => {
                ApiError::Invalid(format!("input {i}: cannot tokenize: {m}"))
            }
        })?;
    let sequences = encodings
        .iter()
        .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
        .collect();
    let Inferred {
        mut outputs,
        largest_batch,
    } = engine
        .infer(sequences, deadline)
        .await
        .map_err(|e| infer_error(e, engine))?;

    let label_outputs = outputs.split_off(prediction.inputs.len());
    for (label, output) in missing_labels.into_iter().zip(label_outputs) {
        if let HeadOutput::Embedding(mut v) = output {
            l2_normalize(&mut v);
            state.labels().insert(label, Arc::new(v));
        }
    }
    let tokens = encodings[..prediction.inputs.len()]
        .iter()
        .map(|e| e.get_ids().len())
        .sum();
    let outputs = outputs
        .into_iter()
        .zip(&encodings)
        .zip(&prediction.inputs)
        .map(|((output, encoding), text)| shape(state, engine, prediction, output, encoding, text))
        .collect::<Result<_, _>>()?;
    Ok(Served {
        outputs,
        tokens,
        largest_batch,
    })
}

fn infer_error(e: InferError, engine: &Engine) -> ApiError {
    match e {
        InferError::Deadline | InferError::Job(JobError::DeadlineExceeded) => {
            ApiError::Unavailable {
                message: "the request deadline passed before it could be served".into(),
                retry_after: engine.retry_after(),
            }
        }
        InferError::Job(JobError::ShuttingDown) => ApiError::Unavailable {
            message: "the server is shutting down".into(),
            retry_after: 1,
        },
        InferError::Job(JobError::Inference(m)) => ApiError::Internal(m),
    }
}

fn shape(
    state: &AppState,
    engine: &Engine,
    prediction: &Prediction,
    output: HeadOutput,
    encoding: &Encoding,
    text: &str,
) -> Result<OutputItem, ApiError> {
    let params = &prediction.parameters;
    let labels = &engine.info().labels;
    match (prediction.task, output) {
        (Task::Embed, HeadOutput::Embedding(mut v)) => {
            if params.normalize.unwrap_or(true) {
                l2_normalize(&mut v);
            }
            Ok(OutputItem::Embedding(v))
        }
        (Task::ZeroShot, HeadOutput::Embedding(v)) => {
            let mut ranked: Vec<(String, f32)> = prediction
                .zero_shot_labels()
                .iter()
                .map(|label| {
                    let embedding = state.labels().get(label).ok_or_else(|| {
                        ApiError::Internal(format!("label {label:?} missing from the cache"))
                    })?;
                    Ok((label.clone(), cosine(&v, &embedding)))
                })
                .collect::<Result<_, ApiError>>()?;
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let (labels, scores) = ranked.into_iter().unzip();
            Ok(OutputItem::ZeroShot { labels, scores })
        }
        (Task::Classify, HeadOutput::Logits(logits)) => {
            let scores = if params.multi_label.unwrap_or(false) {
                sigmoid(&logits)
            } else {
                softmax(&logits)
            };
            let mut ranked: Vec<LabelScore> = scores
                .into_iter()
                .enumerate()
                .map(|(i, score)| LabelScore {
                    label: labels
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{i}")),
                    score,
                })
                .filter(|ls| {
                    prediction
                        .schema
                        .as_ref()
                        .is_none_or(|s| s.contains(&ls.label))
                })
                .collect();
            ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
            if let Some(k) = params.top_k {
                ranked.truncate(k);
            }
            Ok(OutputItem::Labels(ranked))
        }
        (Task::Ner, HeadOutput::TokenLogits(logits)) => {
            let tokenizer = engine.tokenizer();
            let tokens: Vec<TokenView<'_>> = encoding
                .get_tokens()
                .iter()
                .zip(encoding.get_ids())
                .zip(encoding.get_offsets())
                .zip(encoding.get_special_tokens_mask())
                .map(|(((token, id), (start, end)), special)| TokenView {
                    token,
                    id: *id,
                    start: *start,
                    end: *end,
                    special: *special == 1,
                })
                .collect();
            let pre = pre_entities(
                text,
                &tokens,
                &logits,
                tokenizer.unk_id(),
                tokenizer.word_aware(),
            );
            let strategy = params.aggregation.unwrap_or_default();
            let mut entities =
                aggregate(&pre, strategy, labels, &|t| tokenizer.tokens_to_string(t));
            if let Some(schema) = &prediction.schema {
                entities.retain(|e| {
                    let name = e
                        .entity_group
                        .as_deref()
                        .or(e.entity.as_deref())
                        .unwrap_or("");
                    let bare = name.split_once('-').map_or(name, |(_, rest)| rest);
                    schema.iter().any(|s| s == name || s == bare)
                });
            }
            Ok(OutputItem::Entities(entities))
        }
        (task, _) => Err(ApiError::Internal(format!(
            "model output does not fit task {task}"
        ))),
    }
}
