//! `POST /predict`: validate, admit, tokenize, infer, and have the task layer shape each
//! output.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokenizers::Encoding;

use super::body::parse_json;
use super::state::{AppState, RequestLimits};
use super::wire::{OutputItem, PredictRequest, PredictResponse, Prediction};
use crate::engine::{Engine, InferError, Inferred, JobError};
use crate::error::{ApiError, ErrorBody};
use crate::model::{EncoderInput, HeadOutput, Task, TokenizeError};
use crate::task::classify::ClassifyOptions;
use crate::task::ner::NerOptions;
use crate::task::output::Shaper;
use crate::task::zero_shot::Candidates;

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
    check_limits(state.limits(), prediction)?;
    let cache = state.labels();
    let mut candidates = Candidates::lookup(zero_shot_candidates(prediction), cache);
    let missing = candidates.missing();
    let n = prediction.inputs.len();
    let _permit = engine
        .admit(n + missing.len())
        .map_err(|o| ApiError::Overloaded {
            retry_after: o.retry_after,
        })?;

    // Uncached zero-shot labels ride along with the inputs, in the same batches.
    let mut inputs = prediction.inputs.clone();
    inputs.extend(missing.iter().cloned().map(EncoderInput::Text));
    let truncate = prediction.parameters.truncate.unwrap_or(true);
    let encodings = tokenize(engine, inputs, truncate, n).await?;
    let Inferred {
        mut outputs,
        largest_batch,
    } = engine
        .infer(sequences(&encodings), deadline)
        .await
        .map_err(|e| infer_error(e, engine))?;
    for (label, output) in missing.iter().zip(outputs.split_off(n)) {
        if let HeadOutput::Embedding(pooled) = output {
            candidates.learn(label, pooled, cache);
        }
    }

    let encodings = &encodings[..n];
    let shaper = shaper(prediction, engine, &candidates);
    let outputs = outputs
        .into_iter()
        .zip(encodings)
        .zip(&prediction.inputs)
        .map(|((output, encoding), input)| {
            shaper
                .shape(output, input.text(), encoding)
                .map(OutputItem::from)
                .map_err(|e| ApiError::Internal(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Served {
        outputs,
        tokens: encodings.iter().map(|e| e.get_ids().len()).sum(),
        largest_batch,
    })
}

/// The server's limits on one request: inputs, characters per text, zero-shot labels.
fn check_limits(limits: RequestLimits, prediction: &Prediction) -> Result<(), ApiError> {
    let inputs = &prediction.inputs;
    if inputs.len() > limits.max_inputs {
        return Err(ApiError::TooLarge(format!(
            "{} inputs in one request; the limit is {}",
            inputs.len(),
            limits.max_inputs
        )));
    }
    if let Some(i) = inputs
        .iter()
        .position(|input| input.text().chars().count() > limits.max_input_chars)
    {
        return Err(ApiError::TooLarge(format!(
            "input {i} is longer than {} characters",
            limits.max_input_chars
        )));
    }
    let labels = zero_shot_candidates(prediction);
    if labels.len() > limits.max_inputs {
        return Err(ApiError::TooLarge(format!(
            "{} labels in one request; the limit is {}",
            labels.len(),
            limits.max_inputs
        )));
    }
    Ok(())
}

/// The zero-shot candidate labels; none for the other tasks, where a schema filters instead.
fn zero_shot_candidates(prediction: &Prediction) -> &[String] {
    if prediction.task == Task::ZeroShot {
        prediction.zero_shot_labels()
    } else {
        &[]
    }
}

/// Tokenizes the inputs and then the `inputs..` zero-shot labels; a failure is the client's.
async fn tokenize(
    engine: &Engine,
    inputs: Vec<EncoderInput>,
    truncate: bool,
    n_inputs: usize,
) -> Result<Vec<Encoding>, ApiError> {
    engine
        .tokenize(inputs, truncate)
        .await
        .map_err(|(i, e)| match e {
            TokenizeError::Failed(m) => {
                ApiError::Invalid(format!("input {i}: cannot tokenize: {m}"))
            }
            _ if i < n_inputs => ApiError::Invalid(format!("input {i}: {e}")),
            _ => ApiError::Invalid(format!("a label: {e}")),
        })
}

/// What the model runs: token ids and token type ids per input.
fn sequences(encodings: &[Encoding]) -> Vec<(Vec<u32>, Vec<u32>)> {
    encodings
        .iter()
        .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
        .collect()
}

/// The request's parameters, with their defaults, as the task layer takes them.
fn shaper<'a>(
    prediction: &'a Prediction,
    engine: &'a Engine,
    candidates: &'a Candidates,
) -> Shaper<'a> {
    let params = &prediction.parameters;
    let only = prediction.schema.as_deref();
    Shaper {
        task: prediction.task,
        normalize: params.normalize.unwrap_or(true),
        classify: ClassifyOptions {
            multi_label: params.multi_label.unwrap_or(false),
            top_k: params.top_k,
            only,
        },
        ner: NerOptions {
            aggregation: params.aggregation.unwrap_or_default(),
            only,
        },
        candidates,
        labels: &engine.info().labels,
        tokenizer: engine.tokenizer(),
    }
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
