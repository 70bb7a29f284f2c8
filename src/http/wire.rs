//! Wire types of `/predict`: the request as clients send it, its validation into a typed
//! [`Prediction`], and the response items the task layer's outputs are serialised as.
//!
//! Validation is written out by hand rather than left to serde's untagged enums so that every
//! rejection says exactly which field is wrong and how.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::model::{EncoderInput, Task};
use crate::task::classify;
use crate::task::ner::{self, Aggregation, EntityLabel};
use crate::task::output::Output;

/// `POST /predict` body. Either `inputs` (with an optional `task`), or the NLU shape
/// `{"text": ..., "schema": [...] | {...}}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PredictRequest {
    /// "embed", "classify", "ner" or "zero-shot"; default: the model's primary task.
    pub task: Option<String>,
    /// One text or a list of texts.
    #[schema(value_type = Object)]
    pub inputs: Option<Value>,
    /// NLU shape: the text(s) to analyse.
    #[schema(value_type = Object)]
    pub text: Option<Value>,
    /// NLU shape: labels as a list or as the keys of an object.
    #[schema(value_type = Object)]
    pub schema: Option<Value>,
    pub parameters: Option<Parameters>,
}

#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Cut inputs to the model's maximum length (default true); false makes over-long a 422.
    pub truncate: Option<bool>,
    /// L2-normalize embeddings (default true).
    pub normalize: Option<bool>,
    /// Classify: how many labels to return (default all).
    pub top_k: Option<usize>,
    /// Classify: independent sigmoid scores instead of a softmax.
    pub multi_label: Option<bool>,
    /// NER: none, simple (default), first, average, max.
    pub aggregation: Option<Aggregation>,
    /// Zero-shot: the candidate labels.
    pub labels: Option<Vec<String>>,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub task: Task,
    pub inputs: Vec<EncoderInput>,
    pub parameters: Parameters,
    /// Labels from the NLU `schema`: zero-shot candidates, or the entity types to keep.
    pub schema: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    pub model: String,
    pub task: Task,
    pub outputs: Vec<OutputItem>,
}

/// One output per input: an embedding, ranked labels, entities, or zero-shot scores.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum OutputItem {
    Embedding(Vec<f32>),
    Labels(Vec<LabelScore>),
    Entities(Vec<Entity>),
    ZeroShot {
        labels: Vec<String>,
        scores: Vec<f32>,
    },
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// An entity: `entity` (the token's tag) for aggregation `none`, `entity_group` otherwise, as
/// the Hugging Face pipeline answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub score: f32,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

impl From<Output> for OutputItem {
    fn from(output: Output) -> Self {
        match output {
            Output::Embedding(v) => OutputItem::Embedding(v),
            Output::Labels(labels) => {
                OutputItem::Labels(labels.into_iter().map(LabelScore::from).collect())
            }
            Output::Entities(entities) => {
                OutputItem::Entities(entities.into_iter().map(Entity::from).collect())
            }
            Output::ZeroShot(ranking) => OutputItem::ZeroShot {
                labels: ranking.labels,
                scores: ranking.scores,
            },
        }
    }
}

impl From<classify::LabelScore> for LabelScore {
    fn from(ls: classify::LabelScore) -> Self {
        Self {
            label: ls.label,
            score: ls.score,
        }
    }
}

impl From<ner::Entity> for Entity {
    fn from(e: ner::Entity) -> Self {
        let (entity_group, entity) = match e.label {
            EntityLabel::Group(name) => (Some(name), None),
            EntityLabel::Token(name) => (None, Some(name)),
        };
        Self {
            entity_group,
            entity,
            score: e.score,
            word: e.word,
            start: e.start,
            end: e.end,
        }
    }
}

impl PredictRequest {
    /// Checks shapes and types; limits that depend on the server are checked by the caller.
    pub fn validate(self, supported: &[Task]) -> Result<Prediction, ApiError> {
        let schema = self.schema.map(parse_schema).transpose()?;
        let (inputs, field) = match (self.inputs, self.text) {
            (Some(_), Some(_)) => {
                return Err(ApiError::Invalid(
                    "give either `inputs` or `text`, not both".into(),
                ))
            }
            (Some(v), None) => (v, "inputs"),
            (None, Some(v)) => (v, "text"),
            (None, None) => return Err(ApiError::Invalid("missing field `inputs`".into())),
        };
        let inputs = parse_texts(inputs, field)?
            .into_iter()
            .map(EncoderInput::Text)
            .collect();

        let task = match self.task.as_deref() {
            Some(name) => Task::parse(name).ok_or_else(|| {
                ApiError::Invalid(format!(
                    "unknown task {name:?}; this model supports: {}",
                    task_list(supported)
                ))
            })?,
            None if schema.is_some() && supported.contains(&Task::ZeroShot) => Task::ZeroShot,
            None => supported[0],
        };
        check_supported(task, supported)?;
        let parameters = self.parameters.unwrap_or_default();
        if task == Task::ZeroShot {
            let labels = parameters.labels.as_ref().or(schema.as_ref());
            match labels {
                None => {
                    return Err(ApiError::Invalid(
                        "zero-shot needs candidate labels in `parameters.labels` or `schema`"
                            .into(),
                    ))
                }
                Some(l) if l.is_empty() => {
                    return Err(ApiError::Invalid("the list of labels is empty".into()))
                }
                Some(l) if l.iter().any(|x| x.trim().is_empty()) => {
                    return Err(ApiError::Invalid("a label is empty".into()))
                }
                Some(_) => {}
            }
        }
        if parameters.top_k == Some(0) {
            return Err(ApiError::Invalid("`top_k` must be at least 1".into()));
        }
        Ok(Prediction {
            task,
            inputs,
            parameters,
            schema,
        })
    }
}

impl Prediction {
    pub fn zero_shot_labels(&self) -> &[String] {
        self.parameters
            .labels
            .as_deref()
            .or(self.schema.as_deref())
            .unwrap_or(&[])
    }
}

/// A 422 unless the model can serve `task`.
pub(super) fn check_supported(task: Task, supported: &[Task]) -> Result<(), ApiError> {
    if supported.contains(&task) {
        return Ok(());
    }
    Err(ApiError::Invalid(format!(
        "task {task} is not supported by this model; it supports: {}",
        task_list(supported)
    )))
}

fn task_list(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_texts(value: Value, field: &str) -> Result<Vec<String>, ApiError> {
    let texts = match value {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(ApiError::Invalid(format!(
                    "`{field}[{i}]` must be a string, got {}",
                    type_name(&other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(ApiError::Invalid(format!(
                "`{field}` must be a string or an array of strings, got {}",
                type_name(&other)
            )))
        }
    };
    if texts.is_empty() {
        return Err(ApiError::Invalid(format!("`{field}` is an empty list")));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::Invalid(format!("`{field}[{i}]` is empty")));
    }
    Ok(texts)
}

fn parse_schema(value: Value) -> Result<Vec<String>, ApiError> {
    let labels: Vec<String> = match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(ApiError::Invalid(format!(
                    "`schema` entries must be strings, got {}",
                    type_name(&other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
        other => {
            return Err(ApiError::Invalid(format!(
                "`schema` must be a list of labels or an object, got {}",
                type_name(&other)
            )))
        }
    };
    if labels.is_empty() {
        return Err(ApiError::Invalid("`schema` has no labels".into()));
    }
    Ok(labels)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> Result<Prediction, ApiError> {
        let req: PredictRequest = serde_json::from_value(json).expect("shape");
        req.validate(&[Task::Embed, Task::ZeroShot])
    }

    #[test]
    fn one_string_becomes_one_input_with_the_primary_task() {
        let p = request(serde_json::json!({"inputs": "hello"})).expect("valid");
        assert_eq!(p.task, Task::Embed);
        assert_eq!(p.inputs, vec![EncoderInput::Text("hello".into())]);
    }

    #[test]
    fn nlu_shape_means_zero_shot_over_the_schema() {
        let p = request(serde_json::json!({"text": "a", "schema": {"x": null, "y": null}}))
            .expect("valid");
        assert_eq!(p.task, Task::ZeroShot);
        assert_eq!(p.zero_shot_labels(), ["x".to_string(), "y".to_string()]);
    }

    #[test]
    fn bad_shapes_are_rejected_with_the_field_named() {
        for (json, needle) in [
            (serde_json::json!({"inputs": 3}), "`inputs` must be"),
            (serde_json::json!({"inputs": ["a", 1]}), "`inputs[1]`"),
            (serde_json::json!({"inputs": [""]}), "is empty"),
            (serde_json::json!({"inputs": []}), "empty list"),
            (
                serde_json::json!({"inputs": "a", "task": "ner"}),
                "not supported",
            ),
            (
                serde_json::json!({"inputs": "a", "task": "nope"}),
                "unknown task",
            ),
            (
                serde_json::json!({"inputs": "a", "task": "zero-shot"}),
                "candidate labels",
            ),
            (serde_json::json!({}), "missing field"),
        ] {
            let err = request(json).expect_err("invalid");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }
}
