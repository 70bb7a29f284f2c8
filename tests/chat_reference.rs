//! The GGUF chat models against llama.cpp (fixture: tests/fixtures/chat_reference.json, made
//! by tests/fixtures/make_chat_reference.py): tokenizer ids, the chat template, teacher-forced
//! next-token agreement and greedy generation, for SmolLM2 and Gemma 3.

use std::path::Path;

use serde_json::Value;
use wick::model::chat::{gguf_path, ChatModel};
use wick::model::decoder::{Chunk, Hidden, KvCache, Logits};
use wick::task::chat_template::{ChatTemplate, TemplateMessage};

const MODELS: [&str; 2] = ["smollm2-135m-instruct", "gemma3-270m"];
/// A difference in the top-1 token is only acceptable where the reference itself hesitates.
const NEAR_TIE: f64 = 0.5;
/// Teacher-forced top-1 agreement required of both models: the issue asks for 98%. wick
/// reproduces llama.cpp's CPU numerics (8-bit activation blocks, the kernel llama.cpp picks for
/// each weight type and step shape, f16 attention in its lane order, its exp, GELU table, RoPE
/// and norms), so every layer's outputs are bit-identical to the reference's; only the output
/// projection sums its blocks in another order (`Linear::forward_logits`), which moves the
/// logits in their last bits: 1007/1007 and 854/854. The floor sits just under that, so any
/// drift in the layers' numerics (which 8-bit activations amplify) fails here.
const MIN_AGREEMENT: [(&str, f64); 2] = [("smollm2-135m-instruct", 0.999), ("gemma3-270m", 0.998)];
const TEACHER_FORCED_TIE: f64 = 0.75;

fn fixture() -> Value {
    let text = std::fs::read_to_string("tests/fixtures/chat_reference.json").expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn load(name: &str) -> ChatModel {
    let path = gguf_path(Path::new(&format!("models/{name}")))
        .unwrap_or_else(|| panic!("models/{name}: run models/fetch {name}"));
    ChatModel::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// `[[id, logit], [id, logit]]` -> (best id, gap between the two best logits).
fn best_and_gap(top: &Value) -> (u32, f64) {
    let first = &top[0];
    let second = &top[1];
    let gap = first[1].as_f64().unwrap() - second[1].as_f64().unwrap();
    (first[0].as_u64().unwrap() as u32, gap)
}

fn argmax(row: &[f32]) -> u32 {
    wick::engine::generation::argmax(row)
}

#[test]
fn tokenizer_ids_equal_llama_cpp() {
    let fixture = fixture();
    for name in MODELS {
        let model = load(name);
        let cases = fixture["models"][name]["tokenize"].as_array().unwrap();
        let mut failures = Vec::new();
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let special = case["special"].as_bool().unwrap_or(false);
            let got = model.tokenizer.encode(text, special).unwrap();
            if got != ids(&case["ids"]) {
                failures.push(format!(
                    "{text:?}: wick {got:?} vs llama.cpp {}",
                    case["ids"]
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{name}: {} of {} differ:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn chat_template_renders_like_transformers() {
    let fixture = fixture();
    let model = load(MODELS[0]);
    let source = model.template.clone().expect("SmolLM2 has a chat template");
    let token = |id: Option<u32>| {
        id.and_then(|i| model.tokenizer.token_content(i))
            .unwrap_or_default()
    };
    let template = ChatTemplate::new(
        source,
        token(model.tokenizer.bos),
        token(model.tokenizer.eos),
    )
    .unwrap();
    let cases = fixture["models"][MODELS[0]]["chat_template"]
        .as_array()
        .unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let messages: Vec<TemplateMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| TemplateMessage {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        assert_eq!(
            template.render(&messages, true).unwrap(),
            case["rendered"].as_str().unwrap()
        );
    }
    assert!(
        load(MODELS[1]).template.is_none(),
        "the Gemma 3 base GGUF has no template"
    );
}

/// Feeds the reference's tokens (prefilled in chunks of 96, as the scheduler would) and
/// compares the top-1 next token at every position.
#[test]
fn teacher_forced_top1_agrees_with_llama_cpp() {
    let fixture = fixture();
    let mut problems: Vec<String> = Vec::new();
    for name in MODELS {
        let model = load(name);
        let (mut total, mut agree, mut unexplained) = (0, 0, Vec::new());
        for prompt in fixture["models"][name]["teacher_forced"]
            .as_array()
            .unwrap()
        {
            let tokens = ids(&prompt["tokens"]);
            let top = prompt["top"].as_array().unwrap();
            let mut cache = KvCache::new(&model.decoder.config);
            let mut rows = Vec::new();
            for chunk in tokens.chunks(96) {
                let mut chunks = [Chunk {
                    tokens: chunk,
                    cache: &mut cache,
                    logits: Logits::All,
                }];
                let logits = model.decoder.forward(&mut chunks).unwrap().remove(0);
                rows.extend(logits.chunks(model.decoder.config.vocab).map(argmax));
            }
            for (position, (&ours, reference)) in rows.iter().zip(top).enumerate() {
                let (best, gap) = best_and_gap(reference);
                total += 1;
                if ours == best {
                    agree += 1;
                } else if gap > TEACHER_FORCED_TIE {
                    unexplained.push(format!(
                        "{} @{position}: wick {ours}, llama.cpp {best} (gap {gap:.3})",
                        prompt["name"]
                    ));
                }
            }
        }
        let rate = agree as f64 / total as f64;
        eprintln!(
            "{name}: teacher-forced top-1 agreement {agree}/{total} = {:.2}%",
            rate * 100.0
        );
        let minimum = MIN_AGREEMENT
            .iter()
            .find(|(model, _)| *model == name)
            .map_or(0.98, |&(_, m)| m);
        if total < 500 || rate < minimum || !unexplained.is_empty() {
            problems.push(format!(
                "{name}: agreement {agree}/{total} = {rate:.4}; not near ties: {unexplained:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Greedy decoding through the same decoder path the scheduler uses (prefill, then one token
/// per step) reproduces llama.cpp's first 32 tokens, or differs only at a near-tie.
#[test]
fn greedy_generation_matches_llama_cpp() {
    let fixture = fixture();
    for name in MODELS {
        let model = load(name);
        for case in fixture["models"][name]["greedy"].as_array().unwrap() {
            let prompt = ids(&case["prompt_tokens"]);
            let expected = ids(&case["tokens"]);
            let top = case["top"].as_array().unwrap();
            let mut cache = KvCache::new(&model.decoder.config);
            let mut next: Vec<u32> = prompt.clone();
            let mut generated = Vec::new();
            for _ in 0..expected.len().min(32) {
                let mut chunks = [Chunk {
                    tokens: &next,
                    cache: &mut cache,
                    logits: Logits::Last,
                }];
                let logits = model.decoder.forward(&mut chunks).unwrap().remove(0);
                let token = argmax(&logits);
                generated.push(token);
                next = vec![token];
            }
            let first_difference = generated.iter().zip(&expected).position(|(a, b)| a != b);
            if let Some(at) = first_difference {
                let (_, gap) = best_and_gap(&top[at]);
                assert!(
                    gap <= NEAR_TIE,
                    "{name} {}: differs at token {at} (wick {}, llama.cpp {}) where the reference is not near a tie (gap {gap:.3})",
                    case["name"], generated[at], expected[at]
                );
                eprintln!(
                    "{name} {}: differs at {at}, a near-tie (gap {gap:.3})",
                    case["name"]
                );
            }
        }
    }
}

/// The logits of `tokens` fed to a fresh cache in chunks of `chunk`, every row computed
/// (`Logits::All`) or only the last chunk's last (`Logits::Last`, the others `None`), and
/// the cache they leave.
fn prefill(model: &ChatModel, tokens: &[u32], chunk: usize, all: bool) -> (Vec<f32>, KvCache) {
    let mut cache = KvCache::new(&model.decoder.config);
    let mut last = Vec::new();
    let count = tokens.chunks(chunk).count();
    for (i, part) in tokens.chunks(chunk).enumerate() {
        let logits = match (all, i + 1 == count) {
            (true, _) => Logits::All,
            (false, true) => Logits::Last,
            (false, false) => Logits::None,
        };
        let mut chunks = [Chunk {
            tokens: part,
            cache: &mut cache,
            logits,
        }];
        last = model.decoder.forward(&mut chunks).unwrap().remove(0);
    }
    let vocab = model.decoder.config.vocab;
    (last[last.len() - vocab..].to_vec(), cache)
}

/// The last layer computes past its attention only the rows whose logits are wanted; that
/// must change no bit of those logits, of the cache, or of another sequence in the step.
#[test]
fn logits_of_wanted_rows_equal_those_of_every_row() {
    let fixture = fixture();
    for name in MODELS {
        let model = load(name);
        let prompt = &fixture["models"][name]["teacher_forced"][0]["tokens"];
        let tokens: Vec<u32> = ids(prompt).into_iter().take(70).collect();
        assert!(tokens.len() >= 40, "{name}: a prompt of 40 tokens or more");
        let (every, mut every_cache) = prefill(&model, &tokens, 24, true);
        let (wanted, mut wanted_cache) = prefill(&model, &tokens, 24, false);
        assert_eq!(wanted, every, "{name}: the prompt's last logits");
        let mut next = argmax(&every);
        for step in 0..3 {
            let step_logits = [&mut every_cache, &mut wanted_cache].map(|cache| {
                let mut chunks = [Chunk {
                    tokens: &[next],
                    cache,
                    logits: Logits::Last,
                }];
                model.decoder.forward(&mut chunks).unwrap().remove(0)
            });
            assert_eq!(step_logits[0], step_logits[1], "{name}: decode step {step}");
            next = argmax(&step_logits[0]);
        }
        // Two sequences in one step: a prefill chunk that wants no logits beside one that
        // wants its last row, against the latter alone with every row computed.
        let (alone, _) = prefill(&model, &tokens[..30], 30, true);
        let mut first = KvCache::new(&model.decoder.config);
        let mut second = KvCache::new(&model.decoder.config);
        let mut chunks = [
            Chunk {
                tokens: &tokens[..20],
                cache: &mut first,
                logits: Logits::None,
            },
            Chunk {
                tokens: &tokens[..30],
                cache: &mut second,
                logits: Logits::Last,
            },
        ];
        let logits = model.decoder.forward(&mut chunks).unwrap();
        assert!(logits[0].is_empty(), "{name}: no logits asked of the first");
        assert_eq!(
            logits[1], alone,
            "{name}: the second sequence's last logits"
        );
    }
}

/// A decode step split by sequence (each share through the layers on its own, the logits of
/// all together, as the scheduler runs steps of many sequences) gives the logits of the whole
/// step bit for bit, and leaves the caches the next step reads alike. SmolLM2 only: its
/// products do not depend on the step's token count, where Gemma 3's Q4_K and Q6_K ones, like
/// llama.cpp's, change kernel at 8 tokens.
#[test]
fn a_decode_step_split_by_sequence_equals_the_whole_step() {
    let fixture = fixture();
    let name = "smollm2-135m-instruct";
    let model = load(name);
    let prompt = ids(&fixture["models"][name]["teacher_forced"][0]["tokens"]);
    // Eight sequences at different lengths, so their attentions differ.
    let prefilled = || -> (Vec<[u32; 1]>, Vec<KvCache>) {
        (0..8)
            .map(|i| {
                let (logits, cache) = prefill(&model, &prompt[..20 + 3 * i], 32, false);
                ([argmax(&logits)], cache)
            })
            .unzip()
    };
    let (next, mut whole) = prefilled();
    let (_, mut split) = prefilled();
    let expected = model.decoder.forward(&mut step(&mut whole, &next)).unwrap();
    let mut chunks = step(&mut split, &next);
    let (first, second) = chunks.split_at_mut(3);
    let hidden = Hidden::concat(vec![
        model.decoder.hidden(first).unwrap(),
        model.decoder.hidden(second).unwrap(),
    ]);
    drop(chunks);
    let logits = model.decoder.logits(&hidden).unwrap();
    assert_eq!(logits, expected, "{name}: the step's logits");
    let after: Vec<[u32; 1]> = logits.iter().map(|l| [argmax(l)]).collect();
    let expected = model
        .decoder
        .forward(&mut step(&mut whole, &after))
        .unwrap();
    let logits = model
        .decoder
        .forward(&mut step(&mut split, &after))
        .unwrap();
    assert_eq!(logits, expected, "{name}: the next step's logits");
}

/// One decoding token for each cache, each wanting its logits.
fn step<'a>(caches: &'a mut [KvCache], tokens: &'a [[u32; 1]]) -> Vec<Chunk<'a>> {
    caches
        .iter_mut()
        .zip(tokens)
        .map(|(cache, token)| Chunk {
            tokens: token,
            cache,
            logits: Logits::Last,
        })
        .collect()
}
