//! The tokenizer of a GGUF chat model, built from the file's `tokenizer.ggml.*` metadata with
//! the `tokenizers` crate: GPT-2 byte-level BPE (merges in the file), or SentencePiece-style
//! vocabularies (scores and byte fallback), whose merges are derived from the scores the way
//! transformers' GGUF loader derives them.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use super::files::LoadError;
use super::gguf::Gguf;

/// GGUF token types (llama.cpp `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Texts of tokens that end a turn in the common chat formats; any present in the vocabulary
/// stops generation besides the file's EOS (llama.cpp's end-of-generation set does the same).
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<|eom_id|>",
];

/// Llama 3's pre-tokenizer regex (`llama-bpe`), also used by several later BPE models.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct ChatTokenizer {
    /// Control tokens in the text (`<|im_start|>`) become their ids: for rendered prompts.
    with_special: Tokenizer,
    /// Control tokens' text is ordinary text.
    plain: Tokenizer,
    pub bos: Option<u32>,
    pub add_bos: bool,
    pub eos: Option<u32>,
    /// Every id that ends generation.
    pub stop_ids: Vec<u32>,
    pub vocab_size: usize,
}

impl ChatTokenizer {
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, LoadError> {
        let kind = gguf.string("tokenizer.ggml.model")?.to_string();
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let types = gguf.opt_i32s("tokenizer.ggml.token_type")?;
        if types.as_ref().is_some_and(|t| t.len() != tokens.len()) {
            return Err(
                gguf.error("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
            );
        }
        let mut tokenizer = match kind.as_str() {
            "gpt2" => byte_level_bpe(gguf, &tokens)?,
            "llama" => sentencepiece_bpe(gguf, &tokens, types.as_deref())?,
            other => {
                return Err(gguf.error(format!(
                    "tokenizer model {other:?} is not supported (supported: gpt2, llama)"
                )))
            }
        };
        add_special_tokens(&mut tokenizer, &tokens, types.as_deref());
        let id = |key: &str| -> Result<Option<u32>, LoadError> {
            Ok(gguf
                .opt_usize(key)?
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < tokens.len()))
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let mut stop_ids: Vec<u32> = eos.into_iter().chain(eot).collect();
        for (i, token) in tokens.iter().enumerate() {
            if END_OF_TURN_TEXTS.contains(token) && !stop_ids.contains(&(i as u32)) {
                stop_ids.push(i as u32);
            }
        }
        let default_bos = kind == "llama";
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);
        Ok(Self {
            with_special: tokenizer,
            plain,
            bos,
            add_bos: gguf
                .opt_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(default_bos),
            eos,
            stop_ids,
            vocab_size: tokens.len(),
        })
    }

    /// Token ids of `text`, no BOS added; `special` turns control-token text into their ids.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, String> {
        let tokenizer = if special {
            &self.with_special
        } else {
            &self.plain
        };
        tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// A prompt as the model expects it: control tokens parsed, BOS first when the model
    /// wants one (once, even when the chat template already wrote it).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = self.encode(text, true)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Text of `ids`, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.with_special
            .decode(ids, true)
            .map_err(|e| e.to_string())
    }

    /// The text of one token as it appears in the vocabulary (for logprobs).
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_default()
    }

    pub fn token_content(&self, id: u32) -> Option<String> {
        self.with_special.id_to_token(id)
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }
}

fn vocab_map(tokens: &[&str]) -> tokenizers::models::bpe::Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_string(), i as u32))
        .collect()
}

fn byte_level_bpe(gguf: &Gguf, tokens: &[&str]) -> Result<Tokenizer, LoadError> {
    let merges = gguf
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    gguf.error(format!("tokenizer.ggml.merges has a malformed entry {m:?}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .build()
        .map_err(|e| gguf.error(format!("cannot build the BPE tokenizer: {e}")))?;
    let pre = gguf.opt_string("tokenizer.ggml.pre").unwrap_or("default");
    let byte_level: PreTokenizerWrapper = ByteLevel::new(false, false, true).into();
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "default" | "gpt2" | "gpt-2" => byte_level,
        "smollm" => PreSequence::new(vec![Digits::new(true).into(), byte_level]).into(),
        "llama-bpe" | "llama3" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_PATTERN.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| gguf.error(format!("pre-tokenizer: {e}")))?;
            PreSequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into()
        }
        other => {
            return Err(gguf.error(format!(
                "BPE pre-tokenizer {other:?} is not supported (supported: default, gpt2, smollm, llama-bpe)"
            )))
        }
    };
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevelDecoder::default())));
    Ok(tokenizer)
}

fn sentencepiece_bpe(
    gguf: &Gguf,
    tokens: &[&str],
    types: Option<&[i32]>,
) -> Result<Tokenizer, LoadError> {
    let scores = gguf
        .opt_f32s("tokenizer.ggml.scores")?
        .ok_or_else(|| gguf.error("metadata key tokenizer.ggml.scores is missing"))?;
    if scores.len() != tokens.len() {
        return Err(gguf.error("tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length"));
    }
    let merges = merges_from_scores(tokens, &scores, types);
    let unk = gguf
        .opt_usize("tokenizer.ggml.unknown_token_id")?
        .and_then(|i| tokens.get(i))
        .map(|t| (*t).to_string());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| gguf.error(format!("cannot build the SentencePiece tokenizer: {e}")))?;
    let add_space_prefix = gguf
        .opt_bool("tokenizer.ggml.add_space_prefix")
        .unwrap_or(true);
    let replace = Replace::new(" ", "\u{2581}").map_err(|e| gguf.error(e.to_string()))?;
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new("\u{2581}".into()).into());
    }
    normalizers.push(replace.into());
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ")
            .map_err(|e| gguf.error(e.to_string()))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers)));
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// Merges for a vocabulary that has scores but no merges: every split of a piece into two
/// pieces of the vocabulary, ranked by the merged piece's score (transformers' GGUF loader).
fn merges_from_scores(
    tokens: &[&str],
    scores: &[f32],
    types: Option<&[i32]>,
) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(usize, usize, f32)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types.is_some_and(|t| t[i] == TYPE_CONTROL) {
            continue;
        }
        let mut local = Vec::new();
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (index.get(left), index.get(right)) {
                local.push((l, r, scores[i]));
            }
        }
        local.sort_by(|a, b| {
            (scores[b.0], scores[b.1])
                .partial_cmp(&(scores[a.0], scores[a.1]))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    merges
        .into_iter()
        .map(|(l, r, _)| (tokens[l].to_string(), tokens[r].to_string()))
        .collect()
}

/// Control tokens become special added tokens (matched whole, skipped when decoding);
/// user-defined ones are matched whole in any text, as llama.cpp does.
fn add_special_tokens(tokenizer: &mut Tokenizer, tokens: &[&str], types: Option<&[i32]>) {
    let Some(types) = types else { return };
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (token, &kind) in tokens.iter().zip(types) {
        match kind {
            TYPE_CONTROL => special.push(AddedToken::from(*token, true).normalized(false)),
            TYPE_USER_DEFINED => user.push(AddedToken::from(*token, false).normalized(false)),
            _ => {}
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user);
}
