//! One input's answer to an encoder task: which head output each task takes, and the task
//! module that shapes it.

use tokenizers::Encoding;

use super::classify::{self, ClassifyOptions, LabelScore};
use super::embed;
use super::ner::{self, Entity, NerOptions};
use super::zero_shot::{Candidates, Ranking, UnembeddedLabel};
use crate::model::{HeadOutput, Task, TextTokenizer};

/// The answer for one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Embedding(Vec<f32>),
    Labels(Vec<LabelScore>),
    Entities(Vec<Entity>),
    ZeroShot(Ranking),
}

/// Why a head output could not be shaped: always a server fault, never the client's.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("model output does not fit task {0}")]
    WrongHead(Task),
    #[error(transparent)]
    Unembedded(#[from] UnembeddedLabel),
}

/// Everything that shapes the outputs of one request: its task and parameters, and what the
/// model knows about its labels and tokens.
pub struct Shaper<'a> {
    pub task: Task,
    /// Embed: L2-normalize.
    pub normalize: bool,
    pub classify: ClassifyOptions<'a>,
    pub ner: NerOptions<'a>,
    /// Zero-shot: the candidate labels, embedded.
    pub candidates: &'a Candidates,
    /// The model's label names by index.
    pub labels: &'a [String],
    pub tokenizer: &'a TextTokenizer,
}

impl Shaper<'_> {
    /// Shapes one input's head output; `text` and `encoding` are the input as sent and as the
    /// model saw it (NER maps tokens back to characters through them).
    pub fn shape(
        &self,
        output: HeadOutput,
        text: &str,
        encoding: &Encoding,
    ) -> Result<Output, ShapeError> {
        Ok(match (self.task, output) {
            (Task::Embed, HeadOutput::Embedding(pooled)) => {
                Output::Embedding(embed::embedding(pooled, self.normalize))
            }
            (Task::ZeroShot, HeadOutput::Embedding(pooled)) => {
                Output::ZeroShot(self.candidates.rank(&pooled)?)
            }
            (Task::Classify, HeadOutput::Logits(logits)) => {
                Output::Labels(classify::label_scores(&logits, self.labels, self.classify))
            }
            (Task::Ner, HeadOutput::TokenLogits(logits)) => Output::Entities(ner::entities(
                text,
                encoding,
                &logits,
                self.tokenizer,
                self.labels,
                self.ner,
            )),
            (task, _) => return Err(ShapeError::WrongHead(task)),
        })
    }
}
