//! A GGUF chat model: the file located, its architecture's decoder loaded, its tokenizer and
//! chat template read from the metadata.

use std::path::{Path, PathBuf};

use super::decoder::Decoder;
use super::files::LoadError;
use super::gguf::Gguf;
use super::gguf_tokenizer::ChatTokenizer;
use super::{gemma3, llama};

/// Architectures wick can generate with (GGUF `general.architecture`).
pub const SUPPORTED_ARCHITECTURES: &str = "llama, gemma3";

pub struct ChatModel {
    pub architecture: String,
    pub path: PathBuf,
    pub decoder: Decoder,
    pub tokenizer: ChatTokenizer,
    /// The Jinja chat template stored in the file, if any.
    pub template: Option<String>,
    pub file_bytes: u64,
}

/// The `.gguf` file `model` names: the file itself, or the only `.gguf` in a directory.
pub fn gguf_path(model: &Path) -> Option<PathBuf> {
    if model.is_file() {
        return model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            .then(|| model.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(model)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

impl ChatModel {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let mut gguf = Gguf::open(path)?;
        let architecture = gguf.string("general.architecture")?.to_string();
        let tokenizer = ChatTokenizer::from_gguf(&gguf)?;
        let vocab = tokenizer.vocab_size;
        let decoder = match architecture.as_str() {
            "llama" => llama::load(&mut gguf, vocab)?,
            "gemma3" => gemma3::load(&mut gguf, vocab)?,
            other => {
                return Err(gguf.error(format!(
                    "architecture {other:?} is not supported (supported: {SUPPORTED_ARCHITECTURES})"
                )))
            }
        };
        let template = gguf
            .opt_string("tokenizer.chat_template")
            .map(str::to_string);
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            architecture,
            path: gguf.path().to_path_buf(),
            decoder,
            tokenizer,
            template,
            file_bytes,
        })
    }
}
