//! Text to token ids: a tokenizer.json, or a BERT WordPiece tokenizer built from vocab.txt;
//! and token ids a client tokenized itself, checked against the vocabulary.
//!
//! Padding and truncation settings stored in tokenizer.json are replaced: the batcher pads per
//! batch, and truncation follows the model's real maximum length, not the file's.

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Encoding, ModelWrapper, Token, Tokenizer, TruncationParams};

use super::files::{LoadError, ModelFiles};

/// Why a text could not be turned into tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error(
        "input is longer than the model's maximum of {max} tokens (set truncate=true to cut it)"
    )]
    TooLong { max: usize },
    #[error("token id {id} is outside the vocabulary (ids are below {vocab_size})")]
    OutOfVocabulary { id: u32, vocab_size: usize },
    #[error("an input needs at least one token")]
    Empty,
    #[error("tokenization failed: {0}")]
    Failed(String),
}

/// One input to the encoder: text to tokenize, or token ids a client tokenized itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderInput {
    Text(String),
    /// Taken as they are: no special tokens are added, so they hold whatever the client wants
    /// the model to see (BERT's `[CLS] ... [SEP]` included).
    TokenIds(Vec<u32>),
}

impl EncoderInput {
    /// The text that character offsets refer to; token ids come without one.
    pub fn text(&self) -> &str {
        match self {
            EncoderInput::Text(text) => text,
            EncoderInput::TokenIds(_) => "",
        }
    }
}

/// Characters per token of the head a long text is first tokenized from: far more than real
/// text takes (4 to 6 in English, fewer in most other scripts), so the head nearly always
/// holds the model's maximum.
const HEAD_CHARS_PER_TOKEN: usize = 16;

/// `head` cut before its last run of whitespace, if that is in its second half, and the
/// number of characters before the last word of what is left.
fn word_cut(head: &str) -> Option<(&str, usize)> {
    let space = head.rfind(char::is_whitespace)?;
    let cut = head[..space].trim_end();
    if cut.len() < head.len() / 2 {
        return None;
    }
    let last_word = cut.rfind(char::is_whitespace)?;
    Some((cut, cut[..last_word].chars().count()))
}

pub struct TextTokenizer {
    truncating: Tokenizer,
    max_tokens: usize,
    vocab_size: usize,
    unk_id: Option<u32>,
    word_aware: bool,
}

impl TextTokenizer {
    /// `model_vocab` is the number of token ids the model has embeddings for.
    pub fn load(
        files: &ModelFiles,
        max_tokens: usize,
        model_vocab: usize,
    ) -> Result<Self, LoadError> {
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
        // An id must be a token of the tokenizer and a row of the model's embeddings.
        let vocab_size = tokenizer.get_vocab_size(true).min(model_vocab);
        Ok(Self {
            truncating: tokenizer,
            max_tokens,
            vocab_size,
            unk_id,
            word_aware,
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids run from 0 to one below this.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// True when the tokenizer marks word continuations (WordPiece's `##`), so subwords can be
    /// told apart exactly; byte-level BPE and unigram tokenizers are not.
    pub fn word_aware(&self) -> bool {
        self.word_aware
    }

    /// Encodes with character offsets (what clients index their strings by). A long text is
    /// first tried cut at a word boundary well past the model's maximum length; the tokens
    /// kept are then the ones the whole text gives, without tokenizing all of it.
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoding, TokenizeError> {
        if let Some(encoding) = self.encode_head(text)? {
            if !truncate {
                return Err(TokenizeError::TooLong {
                    max: self.max_tokens,
                });
            }
            return Ok(encoding);
        }
        let encoding = self.encode_text(text)?;
        if !truncate && !encoding.get_overflowing().is_empty() {
            return Err(TokenizeError::TooLong {
                max: self.max_tokens,
            });
        }
        Ok(encoding)
    }

    fn encode_text(&self, text: &str) -> Result<Encoding, TokenizeError> {
        self.truncating
            .encode_char_offsets(text, true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))
    }

    /// The encoding of `text` from a head of it, when the head provably holds the tokens the
    /// model keeps: `None` when the whole text has to be tokenized (it is short, or no head
    /// fills the maximum: mostly whitespace, or words too long to split). Heads grow fourfold
    /// each try, so even then the work is at most a third more than tokenizing it whole.
    fn encode_head(&self, text: &str) -> Result<Option<Encoding>, TokenizeError> {
        let mut chars = self.max_tokens.saturating_mul(HEAD_CHARS_PER_TOKEN);
        loop {
            let Some((cut, _)) = text.char_indices().nth(chars) else {
                return Ok(None);
            };
            if let Some(encoding) = self.encode_prefix(&text[..cut])? {
                return Ok(Some(encoding));
            }
            chars = chars.saturating_mul(4);
        }
    }

    /// The encoding of `head`, the start of a longer text, if the tokens it keeps are those
    /// of the whole text. Tokenizers split text into words at whitespace before anything
    /// else, so when the head is cut before a space, the words before its last one tokenize
    /// exactly as in the whole text. A text without spaces (Chinese, Japanese) is cut where
    /// the head ends, and its tokens must end in the head's first half: no tokenizer looks
    /// thousands of characters ahead.
    fn encode_prefix(&self, head: &str) -> Result<Option<Encoding>, TokenizeError> {
        let (head, safe_chars) = word_cut(head).unwrap_or((head, head.chars().count() / 2));
        let encoding = self.encode_text(head)?;
        let kept_end = encoding.get_offsets().iter().map(|&(_, end)| end).max();
        let exact = !encoding.get_overflowing().is_empty() && kept_end <= Some(safe_chars);
        Ok(exact.then_some(encoding))
    }

    /// Encodes either kind of input.
    pub fn encode_input(
        &self,
        input: &EncoderInput,
        truncate: bool,
    ) -> Result<Encoding, TokenizeError> {
        match input {
            EncoderInput::Text(text) => self.encode(text, truncate),
            EncoderInput::TokenIds(ids) => self.encode_ids(ids, truncate),
        }
    }

    /// Takes token ids as they are (no special tokens added). Past the model's maximum they are
    /// cut at the end when `truncate`, as text is cut, and refused otherwise. Every id must be
    /// inside the vocabulary: the model's embedding lookup must never see another. The
    /// encoding has no character offsets: there is no text they could point into.
    pub fn encode_ids(&self, ids: &[u32], truncate: bool) -> Result<Encoding, TokenizeError> {
        if ids.is_empty() {
            return Err(TokenizeError::Empty);
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizeError::OutOfVocabulary {
                id,
                vocab_size: self.vocab_size,
            });
        }
        if ids.len() > self.max_tokens && !truncate {
            return Err(TokenizeError::TooLong {
                max: self.max_tokens,
            });
        }
        let tokens = ids[..ids.len().min(self.max_tokens)]
            .iter()
            .map(|&id| {
                let value = self.truncating.id_to_token(id).unwrap_or_default();
                Token::new(id, value, (0, 0))
            })
            .collect();
        Ok(Encoding::from_tokens(tokens, 0))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny BERT fixture's tokenizer, with a 16-token limit.
    fn tokenizer(model_vocab: usize) -> TextTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert-ner");
        let files = ModelFiles::read(&dir).expect("fixture model");
        TextTokenizer::load(&files, 16, model_vocab).expect("fixture tokenizer")
    }

    #[test]
    fn ids_from_the_tokenizer_encode_to_the_same_ids() {
        let tokenizer = tokenizer(usize::MAX);
        let text = tokenizer
            .encode("Johnson lives in Berlin", true)
            .expect("text");
        let ids = tokenizer.encode_ids(text.get_ids(), true).expect("ids");
        assert_eq!(ids.get_ids(), text.get_ids());
        assert_eq!(ids.get_type_ids(), text.get_type_ids());
        assert_eq!(ids.get_tokens(), text.get_tokens());
    }

    #[test]
    fn ids_outside_the_vocabulary_are_refused() {
        let tokenizer = tokenizer(usize::MAX);
        let size = tokenizer.vocab_size();
        assert!(size > 0);
        assert!(tokenizer.encode_ids(&[0, size as u32 - 1], true).is_ok());
        let err = tokenizer.encode_ids(&[0, size as u32], true).unwrap_err();
        assert!(matches!(err, TokenizeError::OutOfVocabulary { id, .. } if id == size as u32));
    }

    #[test]
    fn the_model_can_know_fewer_ids_than_the_tokenizer() {
        assert_eq!(tokenizer(10).vocab_size(), 10);
        assert!(tokenizer(10).encode_ids(&[10], true).is_err());
    }

    /// Words, punctuation and line breaks of varied lengths, `chars` characters or so.
    fn prose(chars: usize, seed: usize) -> String {
        let words = [
            "Berlin",
            "lives",
            "in",
            "the",
            "unbelievably",
            "long-winded",
            "report,",
            "was",
            "(see",
            "page",
            "42).",
            "Johnson\n\n",
            "über",
            "naïve",
            "x",
            "documents;",
            "a\t",
        ];
        let mut text = String::new();
        let mut i = seed;
        while text.chars().count() < chars {
            text.push_str(words[i % words.len()]);
            text.push(' ');
            i = i * 7 + 3;
        }
        text
    }

    #[test]
    fn a_long_text_is_cut_to_the_tokens_the_whole_text_gives() {
        let tokenizer = tokenizer(usize::MAX);
        // The head is 16 tokens x 16 characters: texts around it, and far past it.
        for chars in (200..400).step_by(7).chain([5_000, 25_000]) {
            for seed in 0..3 {
                let text = prose(chars, seed);
                let whole = tokenizer.encode_text(&text).expect("whole");
                let cut = tokenizer.encode(&text, true).expect("cut");
                assert_eq!(cut.get_ids(), whole.get_ids(), "{chars} {seed}");
                assert_eq!(cut.get_offsets(), whole.get_offsets(), "{chars} {seed}");
                assert_eq!(cut.get_ids().len(), 16);
                let refused = tokenizer.encode(&text, false).unwrap_err();
                assert!(matches!(refused, TokenizeError::TooLong { max: 16 }));
            }
        }
        let long = prose(25_000, 1);
        assert!(tokenizer.encode_head(&long).expect("head").is_some());
    }

    #[test]
    fn a_long_text_without_spaces_is_cut_too() {
        let tokenizer = tokenizer(usize::MAX);
        let text = "Berlin,lives;in.the(report)".repeat(1_000);
        assert!(tokenizer.encode_head(&text).expect("head").is_some());
        let whole = tokenizer.encode_text(&text).expect("whole");
        let cut = tokenizer.encode(&text, true).expect("cut");
        assert_eq!(cut.get_ids(), whole.get_ids());
        assert_eq!(cut.get_offsets(), whole.get_offsets());
    }

    #[test]
    fn heads_grow_until_they_hold_the_maximum() {
        let tokenizer = tokenizer(usize::MAX);
        // Each 200-letter word is one unknown token: 16 of them take 3,200 characters, more
        // than the first head of 256.
        let text = format!("{} ", "a".repeat(199)).repeat(100);
        let head = tokenizer
            .encode_head(&text)
            .expect("head")
            .expect("a larger head");
        let whole = tokenizer.encode_text(&text).expect("whole");
        assert_eq!(head.get_ids(), whole.get_ids());
    }

    #[test]
    fn a_head_without_enough_tokens_falls_back_to_the_whole_text() {
        let tokenizer = tokenizer(usize::MAX);
        // BERT drops whitespace: the head holds no token at all.
        let text = format!("{}Johnson lives in Berlin", " ".repeat(5_000));
        assert!(tokenizer.encode_head(&text).expect("head").is_none());
        let encoding = tokenizer.encode(&text, true).expect("text");
        let tokens = tokenizer
            .encode("Johnson lives in Berlin", true)
            .expect("short");
        assert_eq!(encoding.get_ids(), tokens.get_ids());
        assert!(tokenizer.encode(&text, false).is_ok());
    }

    #[test]
    fn long_ids_are_cut_or_refused_and_empty_ones_refused() {
        let tokenizer = tokenizer(usize::MAX);
        let long: Vec<u32> = (0..20).collect();
        let cut = tokenizer.encode_ids(&long, true).expect("cut");
        assert_eq!(cut.get_ids(), &long[..16]);
        let refused = tokenizer.encode_ids(&long, false).unwrap_err();
        assert!(matches!(refused, TokenizeError::TooLong { max: 16 }));
        assert!(matches!(
            tokenizer.encode_ids(&[], true),
            Err(TokenizeError::Empty)
        ));
    }
}
