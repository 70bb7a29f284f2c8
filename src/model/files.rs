//! Reading a Hugging Face-style model directory: config.json, weights, pooling and length settings.
//!
//! Every failure names the file and the problem, so a broken directory fails start-up with one
//! clear line instead of a panic deep inside the loader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::pooling::Pooling;

/// A model directory that could not be loaded: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub problem: String,
}

impl LoadError {
    pub fn new(file: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            problem: problem.into(),
        }
    }
}

/// Where the weights live, in the order they are looked for.
#[derive(Debug, Clone)]
pub enum WeightsFile {
    Safetensors(PathBuf),
    PytorchBin(PathBuf),
}

/// The parts of config.json that select an architecture and a head.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub hidden_size: Option<usize>,
    #[serde(default)]
    pub problem_type: Option<String>,
}

/// Everything read from the directory before any tensor is touched.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config_json: String,
    pub config: ModelConfig,
    pub weights: WeightsFile,
    pub tokenizer_json: Option<PathBuf>,
    pub vocab_txt: Option<PathBuf>,
    pub lowercase: bool,
    pub pooling: Option<Pooling>,
    pub normalize_module: bool,
    pub max_seq_length: Option<usize>,
}

impl ModelFiles {
    pub fn read(dir: &Path) -> Result<Self, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::new(dir, "model directory does not exist"));
        }
        let config_path = dir.join("config.json");
        let config_json = read_text(&config_path)?;
        let config: ModelConfig = serde_json::from_str(&config_json)
            .map_err(|e| LoadError::new(&config_path, format!("invalid JSON: {e}")))?;

        let weights = if dir.join("model.safetensors").is_file() {
            WeightsFile::Safetensors(dir.join("model.safetensors"))
        } else if dir.join("pytorch_model.bin").is_file() {
            WeightsFile::PytorchBin(dir.join("pytorch_model.bin"))
        } else {
            return Err(LoadError::new(
                dir.join("model.safetensors"),
                "no weights found (looked for model.safetensors and pytorch_model.bin)",
            ));
        };

        let tokenizer_json = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        let vocab_txt = Some(dir.join("vocab.txt")).filter(|p| p.is_file());
        if tokenizer_json.is_none() && vocab_txt.is_none() {
            return Err(LoadError::new(
                dir.join("tokenizer.json"),
                "no tokenizer found (looked for tokenizer.json and vocab.txt)",
            ));
        }

        let tokenizer_config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let lowercase = tokenizer_config
            .as_ref()
            .and_then(|c| c.get("do_lower_case"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true);

        let pooling = read_pooling(&dir.join("1_Pooling").join("config.json"))?;
        let normalize_module = read_optional_json(&dir.join("modules.json"))?
            .and_then(|m| m.as_array().cloned())
            .is_some_and(|modules| {
                modules.iter().any(|m| {
                    m.get("type")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.ends_with("Normalize"))
                })
            });
        let max_seq_length = read_optional_json(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.get("max_seq_length").and_then(|v| v.as_u64()))
            .map(|n| n as usize);

        Ok(Self {
            dir: dir.to_path_buf(),
            config_path,
            config_json,
            config,
            weights,
            tokenizer_json,
            vocab_txt,
            lowercase,
            pooling,
            normalize_module,
            max_seq_length,
        })
    }

    /// Labels in id order; a gap in the ids is a broken config.
    pub fn labels(&self) -> Result<Vec<String>, LoadError> {
        let mut pairs = Vec::with_capacity(self.config.id2label.len());
        for (id, label) in &self.config.id2label {
            let id: usize = id.parse().map_err(|_| {
                LoadError::new(
                    &self.config_path,
                    format!("id2label key {id:?} is not a number"),
                )
            })?;
            pairs.push((id, label.clone()));
        }
        pairs.sort();
        for (expected, (id, _)) in pairs.iter().enumerate() {
            if *id != expected {
                return Err(LoadError::new(
                    &self.config_path,
                    format!("id2label has no entry for id {expected}"),
                ));
            }
        }
        Ok(pairs.into_iter().map(|(_, label)| label).collect())
    }
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::new(path, format!("cannot read: {e}")))
}

fn read_optional_json(path: &Path) -> Result<Option<serde_json::Value>, LoadError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| LoadError::new(path, format!("invalid JSON: {e}")))
}

fn read_pooling(path: &Path) -> Result<Option<Pooling>, LoadError> {
    let Some(config) = read_optional_json(path)? else {
        return Ok(None);
    };
    let flag = |key: &str| config.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    if flag("pooling_mode_cls_token") {
        Ok(Some(Pooling::Cls))
    } else if flag("pooling_mode_mean_tokens") {
        Ok(Some(Pooling::Mean))
    } else {
        Err(LoadError::new(
            path,
            "only pooling_mode_mean_tokens and pooling_mode_cls_token are supported",
        ))
    }
}
