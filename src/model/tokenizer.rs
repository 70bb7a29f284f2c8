//! Text to token ids: a tokenizer.json, or a BERT WordPiece tokenizer built from vocab.txt.
//!
//! Padding and truncation settings stored in tokenizer.json are replaced: the batcher pads per
//! batch, and truncation follows the model's real maximum length, not the file's.

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Encoding, ModelWrapper, Tokenizer, TruncationParams};

use super::files::{LoadError, ModelFiles};

/// Why a text could not be turned into tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error(
        "input is longer than the model's maximum of {max} tokens (set truncate=true to cut it)"
    )]
    TooLong { max: usize },
    #[error("tokenization failed: {0}")]
    Failed(String),
}

pub struct TextTokenizer {
    truncating: Tokenizer,
    max_tokens: usize,
    unk_id: Option<u32>,
    word_aware: bool,
}

impl TextTokenizer {
    pub fn load(files: &ModelFiles, max_tokens: usize) -> Result<Self, LoadError> {
        let mut tokenizer = match (&files.tokenizer_json, &files.vocab_txt) {
            (Some(path), _) => Tokenizer::from_file(path)
                .map_err(|e| LoadError::new(path, format!("cannot load tokenizer: {e}")))?,
            (None, Some(vocab)) => wordpiece_from_vocab(vocab, files.lowercase)?,
            (None, None) => {
                return Err(LoadError::new(&files.dir, "no tokenizer.json or vocab.txt"))
            }
        };
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| LoadError::new(&files.dir, format!("cannot set truncation: {e}")))?;
        let unk_id = tokenizer
            .token_to_id("[UNK]")
            .or_else(|| tokenizer.token_to_id("<unk>"));
        let word_aware = match tokenizer.get_model() {
            ModelWrapper::WordPiece(model) => !model.continuing_subword_prefix.is_empty(),
            ModelWrapper::BPE(model) => model
                .continuing_subword_prefix
                .as_ref()
                .is_some_and(|prefix| !prefix.is_empty()),
            _ => false,
        };
        Ok(Self {
            truncating: tokenizer,
            max_tokens,
            unk_id,
            word_aware,
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// True when the tokenizer marks word continuations (WordPiece's `##`), so subwords can be
    /// told apart exactly; byte-level BPE and unigram tokenizers are not.
    pub fn word_aware(&self) -> bool {
        self.word_aware
    }

    /// Encodes with character offsets (what clients index their strings by).
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoding, TokenizeError> {
        let encoding = self
            .truncating
            .encode_char_offsets(text, true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?;
        if !truncate && !encoding.get_overflowing().is_empty() {
            return Err(TokenizeError::TooLong {
                max: self.max_tokens,
            });
        }
        Ok(encoding)
    }

    /// Joins tokens into text the way the tokenizer's decoder does (merging `##` pieces).
    pub fn tokens_to_string(&self, tokens: &[String]) -> String {
        use tokenizers::Decoder;
        if let Some(decoder) = self.truncating.get_decoder() {
            if let Ok(text) = decoder.decode(tokens.to_vec()) {
                return text;
            }
        }
        tokens.join(" ").replace(" ##", "").trim().to_string()
    }
}

fn wordpiece_from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer, LoadError> {
    let vocab_str = vocab.to_string_lossy().into_owned();
    let model = WordPiece::from_file(&vocab_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| LoadError::new(vocab, format!("cannot read vocabulary: {e}")))?;
    let id = |token: &str| {
        tokenizers::Model::token_to_id(&model, token)
            .ok_or_else(|| LoadError::new(vocab, format!("vocabulary has no {token} token")))
    };
    let cls = id("[CLS]")?;
    let sep = id("[SEP]")?;
    id("[UNK]")?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )))
        .with_decoder(Some(WordPieceDecoder::default()));
    Ok(tokenizer)
}
