//! Property-based tests of every POST route: request bodies generated valid, mutated from
//! valid ones, and garbage, sent to a real wick on loopback serving an embedding model, a
//! classifier and a chat model. Whatever the body, wick answers: a 2xx, or a 4xx with the JSON
//! error body of its route (OpenAI's shape on `/v1/*`); never a 5xx, never a dropped
//! connection (what a panicking handler would give).
//!
//! The case counts are bounded so the whole file runs in about a minute in release.

mod common;

use std::time::Duration;

use common::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

const PREDICT: &str = "/predict";
const EMBEDDINGS: &str = "/v1/embeddings";
const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const ROUTES: [&str; 4] = [PREDICT, EMBEDDINGS, CHAT, COMPLETIONS];

/// Field names the routes know, so mutations hit the parsers' interesting paths.
const FIELDS: &[&str] = &[
    "inputs",
    "text",
    "schema",
    "task",
    "parameters",
    "labels",
    "truncate",
    "normalize",
    "top_k",
    "multi_label",
    "aggregation",
    "input",
    "encoding_format",
    "dimensions",
    "model",
    "messages",
    "role",
    "content",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "max_new_tokens",
    "temperature",
    "top_p",
    "min_p",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "include_usage",
    "logprobs",
    "top_logprobs",
    "echo",
    "suffix",
    "tools",
    "presence_penalty",
    "frequency_penalty",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z][a-zA-Z ,.!?]{0,60}",
        1 => "\\PC{1,40}",
        1 => any::<String>(),
        1 => Just("x ".repeat(300)),
    ]
}

fn texts() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        vec(text(), 1..5).prop_map(|t| json!(t)),
    ]
}

/// Numbers at and around every boundary a parser or a model might trip on.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(2),
            json!(5),
            json!(384),
            json!(30521),
            json!(30522),
            json!(49151),
            json!(49152),
            json!(2_147_483_648u64),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(0.5),
            json!(-0.5),
            json!(1e308),
            json!(-1e308),
            json!(1e-300),
        ]),
        any::<i32>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(
                prop_oneof![
                    prop::sample::select(FIELDS).prop_map(String::from),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Inserts the fields that are `Some` into an object.
fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    Value::Object(map)
}

fn valid_predict_encoder() -> impl Strategy<Value = Value> {
    let labels = vec(text(), 1..6);
    (
        texts(),
        prop::option::of(prop::sample::select(vec![
            "embed",
            "zero-shot",
            "classify",
            "ner",
        ])),
        labels,
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(1usize..5),
        prop::option::of(prop::sample::select(vec![
            "none", "simple", "first", "average", "max",
        ])),
        any::<bool>(),
    )
        .prop_map(
            |(inputs, task, labels, truncate, normalize, top_k, aggregation, nlu)| {
                if nlu {
                    return json!({ "text": inputs, "schema": labels });
                }
                let zero_shot = task == Some("zero-shot");
                let parameters = object(vec![
                    ("truncate", truncate.map(Value::from)),
                    ("normalize", normalize.map(Value::from)),
                    ("top_k", top_k.map(Value::from)),
                    ("aggregation", aggregation.map(Value::from)),
                    ("labels", zero_shot.then(|| json!(labels))),
                ]);
                object(vec![
                    ("inputs", Some(inputs)),
                    ("task", task.map(Value::from)),
                    ("parameters", Some(parameters)),
                ])
            },
        )
}

fn valid_predict_generate() -> impl Strategy<Value = Value> {
    (texts(), 1u64..4, prop::option::of(0.0f64..2.0)).prop_map(|(inputs, max, temperature)| {
        json!({
            "task": "generate",
            "inputs": inputs,
            "parameters": object(vec![
                ("max_new_tokens", Some(json!(max))),
                ("temperature", temperature.map(Value::from)),
            ]),
        })
    })
}

fn valid_embeddings() -> impl Strategy<Value = Value> {
    let ids = vec(0u32..30522, 1..12);
    let input = prop_oneof![
        texts(),
        ids.clone().prop_map(|i| json!(i)),
        vec(ids, 1..3).prop_map(|i| json!(i)),
    ];
    (
        input,
        prop::option::of(prop::sample::select(vec!["float", "base64"])),
        prop::option::of(Just(384u64)),
    )
        .prop_map(|(input, format, dimensions)| {
            object(vec![
                ("input", Some(input)),
                ("model", Some(json!("any"))),
                ("encoding_format", format.map(Value::from)),
                ("dimensions", dimensions.map(Value::from)),
            ])
        })
}

/// Sampling fields every generation route takes, with small `max_tokens`.
fn sampling() -> impl Strategy<Value = Vec<(&'static str, Option<Value>)>> {
    (
        1u64..4,
        prop::option::of(0.0f64..2.0),
        prop::option::of(0.01f64..1.0),
        prop::option::of(0i64..50),
        prop::option::of(any::<i64>()),
        prop::option::of(vec(text(), 0..3)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(max, temperature, top_p, top_k, seed, stop, stream, usage)| {
                vec![
                    ("max_tokens", Some(json!(max))),
                    ("temperature", temperature.map(Value::from)),
                    ("top_p", top_p.map(Value::from)),
                    ("top_k", top_k.map(Value::from)),
                    ("seed", seed.map(Value::from)),
                    ("stop", stop.map(|s| json!(s))),
                    ("stream", Some(json!(stream))),
                    (
                        "stream_options",
                        (stream && usage).then(|| json!({"include_usage": true})),
                    ),
                ]
            },
        )
}

fn valid_chat() -> impl Strategy<Value = Value> {
    let message = (
        prop::sample::select(vec!["system", "user", "assistant"]),
        text(),
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}));
    (
        vec(message, 1..4),
        text(),
        sampling(),
        prop::option::of(0u64..4),
    )
        .prop_map(|(mut messages, last, mut fields, top_logprobs)| {
            messages.push(json!({"role": "user", "content": last}));
            fields.push(("messages", Some(json!(messages))));
            fields.push(("logprobs", top_logprobs.map(|_| json!(true))));
            fields.push(("top_logprobs", top_logprobs.map(Value::from)));
            object(fields)
        })
}

fn valid_completions() -> impl Strategy<Value = Value> {
    let prompt = prop_oneof![
        text().prop_map(Value::from),
        text().prop_map(|t| json!([t])),
        vec(0u32..49152, 1..12).prop_map(|i| json!(i)),
    ];
    (
        prompt,
        sampling(),
        prop::option::of(0u64..4),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(prompt, mut fields, logprobs, echo)| {
            fields.push(("prompt", Some(prompt)));
            fields.push(("logprobs", logprobs.map(Value::from)));
            fields.push(("echo", echo.map(Value::from)));
            object(fields)
        })
}

/// One change to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    /// Drop the n-th field (modulo the number of fields).
    Remove(usize),
    /// Set a field, known or not, to any value.
    Set(String, Value),
    /// Replace a value one level down (inside the n-th field's object or array).
    SetNested(usize, usize, Value),
    /// Wrap the whole body in an array.
    Wrap,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Remove),
        (
            prop_oneof![
                4 => prop::sample::select(FIELDS).prop_map(String::from),
                1 => "[a-z_]{1,10}",
            ],
            any_json()
        )
            .prop_map(|(k, v)| Mutation::Set(k, v)),
        (any::<usize>(), any::<usize>(), any_json())
            .prop_map(|(i, j, v)| Mutation::SetNested(i, j, v)),
        Just(Mutation::Wrap),
    ]
}

fn apply(mut body: Value, mutation: &Mutation) -> Value {
    let Value::Object(map) = &mut body else {
        return body;
    };
    match mutation {
        Mutation::Remove(i) if !map.is_empty() => {
            let key = map.keys().nth(i % map.len()).cloned().unwrap_or_default();
            map.remove(&key);
        }
        Mutation::Set(key, value) => {
            map.insert(key.clone(), value.clone());
        }
        Mutation::SetNested(i, j, value) if !map.is_empty() => {
            let n = map.len();
            match map.values_mut().nth(i % n) {
                Some(Value::Object(inner)) if !inner.is_empty() => {
                    let m = inner.len();
                    if let Some(slot) = inner.values_mut().nth(j % m) {
                        *slot = value.clone();
                    }
                }
                Some(Value::Array(items)) if !items.is_empty() => {
                    let m = items.len();
                    items[j % m] = value.clone();
                }
                Some(other) => *other = value.clone(),
                None => {}
            }
        }
        Mutation::Wrap => return json!([body]),
        _ => {}
    }
    body
}

/// A body for `route`: valid, mutated from valid, or garbage.
fn body(valid: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (valid.clone(), vec(mutation(), 1..4)).prop_map(|(body, mutations)| {
        let body = mutations.iter().fold(body, apply);
        serde_json::to_vec(&body).expect("JSON")
    });
    let truncated = (valid.clone(), any::<prop::sample::Index>()).prop_map(|(body, at)| {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        bytes[..at.index(bytes.len())].to_vec()
    });
    prop_oneof![
        3 => valid.prop_map(|b| serde_json::to_vec(&b).expect("JSON")),
        4 => mutated,
        1 => truncated,
        1 => any_json().prop_map(|b| serde_json::to_vec(&b).expect("JSON")),
        1 => vec(any::<u8>(), 0..200),
    ]
}

/// Sends one body and checks the answer; the status, or what was wrong.
async fn check(server: &TestServer, route: &str, body: Vec<u8>) -> Result<u16, String> {
    let shown = String::from_utf8_lossy(&body)
        .chars()
        .take(400)
        .collect::<String>();
    let response = server
        .client
        .post(format!("{}{route}", server.url))
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| format!("{route} {shown}: no answer: {e}"))?;
    let status = response.status().as_u16();
    let streamed = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = response
        .text()
        .await
        .map_err(|e| format!("{route} {shown}: body cut short: {e}"))?;
    let fail = |why: &str| Err(format!("{route} {shown}: {status} {why}: {text}"));
    match status {
        200..=299 if streamed => {
            if !stream_finished_cleanly(&text) {
                return fail("stream did not finish cleanly");
            }
        }
        200..=299 => {
            if serde_json::from_str::<Value>(&text).is_err() {
                return fail("answer is not JSON");
            }
        }
        400..=499 => {
            let Ok(error) = serde_json::from_str::<Value>(&text) else {
                return fail("error body is not JSON");
            };
            let (message, kind) = if route.starts_with("/v1/") {
                (&error["error"]["message"], &error["error"]["type"])
            } else {
                (&error["error"], &error["type"])
            };
            if message.as_str().is_none_or(str::is_empty) || !kind.is_string() {
                return fail("error body lacks the route's error shape");
            }
        }
        _ => return fail("is neither a 2xx nor a 4xx"),
    }
    Ok(status)
}

/// Every event of an SSE body is a JSON chunk without an `error` member, and the last is
/// `[DONE]`. Parsed, not searched: a generated token may well be the text `error`.
fn stream_finished_cleanly(text: &str) -> bool {
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    let Some((last, chunks)) = events.split_last() else {
        return false;
    };
    *last == "[DONE]"
        && chunks.iter().all(|chunk| {
            serde_json::from_str::<Value>(chunk).is_ok_and(|v| v.get("error").is_none())
        })
}

/// Runs `cases` generated bodies through `route` on `server`; returns how many got a 2xx.
fn fuzz(
    runtime: &tokio::runtime::Runtime,
    server: &TestServer,
    route: &str,
    valid: BoxedStrategy<Value>,
    cases: u32,
) -> u32 {
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let successes = std::cell::Cell::new(0);
    let result = runner.run(&body(valid), |bytes| {
        let status = runtime
            .block_on(check(server, route, bytes))
            .map_err(TestCaseError::fail)?;
        successes.set(successes.get() + u32::from(status < 300));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{route}: {e}");
    }
    successes.get()
}

/// What each route gets on every server: its own valid bodies, mutated and garbage.
fn strategies(generate: bool) -> Vec<(&'static str, BoxedStrategy<Value>)> {
    let predict = if generate {
        valid_predict_generate().boxed()
    } else {
        valid_predict_encoder().boxed()
    };
    vec![
        (PREDICT, predict),
        (EMBEDDINGS, valid_embeddings().boxed()),
        (CHAT, valid_chat().boxed()),
        (COMPLETIONS, valid_completions().boxed()),
    ]
}

/// Starts a server, fuzzes every route with `cases(route)` cases, and checks it is still
/// healthy and counted no internal failure. The routes the model serves (`served`) must have
/// answered a fair share of the bodies with a 2xx: the valid ones are valid.
fn fuzz_server(
    config: wick::config::Config,
    generate: bool,
    served: &[&str],
    cases: impl Fn(&str) -> u32,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(TestServer::start(config));
    for (route, valid) in strategies(generate) {
        assert!(ROUTES.contains(&route));
        let cases = cases(route);
        let successes = fuzz(&runtime, &server, route, valid, cases);
        eprintln!("{route}: {successes} of {cases} bodies answered with a 2xx");
        if served.contains(&route) {
            assert!(successes >= cases / 10, "{route}: only {successes} 2xx");
        } else {
            assert_eq!(successes, 0, "{route} is not served by this model");
        }
    }
    runtime.block_on(async {
        assert_eq!(server.get("/health").await.status(), 200);
        let metrics = server.metrics().await;
        let internal = metric_value(&metrics, "wick_request_failures_total{reason=\"internal\"}");
        assert_eq!(internal, Some(0.0), "internal failures counted");
        server.stop().await.expect("clean stop");
    });
}

#[test]
fn embedding_model_answers_any_body_with_2xx_or_json_4xx() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.label_cache_entries = 64;
    fuzz_server(config, false, &[PREDICT, EMBEDDINGS], |route| match route {
        PREDICT | EMBEDDINGS => 150,
        _ => 40,
    });
}

#[test]
fn classifier_answers_any_body_with_2xx_or_json_4xx() {
    let config = quick_config(real_model("categorium-en"));
    fuzz_server(config, false, &[PREDICT], |route| match route {
        PREDICT => 150,
        _ => 30,
    });
}

#[test]
fn chat_model_answers_any_body_with_2xx_or_json_4xx() {
    let mut config = quick_config(real_model("smollm2-135m-instruct"));
    // A small KV budget bounds how long a body asking for a huge max_tokens generates.
    config.max_kv_tokens = Some(256);
    config.max_step_tokens = 128;
    fuzz_server(
        config,
        true,
        &[PREDICT, CHAT, COMPLETIONS],
        |route| match route {
            CHAT | COMPLETIONS => 80,
            PREDICT => 40,
            _ => 30,
        },
    );
}

#[test]
fn a_token_reading_error_is_not_an_error_event() {
    let token = r#"data: {"choices":[{"index":0,"text":"error"}]}"#;
    let failure = r#"data: {"error":{"message":"the model panicked","type":"server_error"}}"#;
    assert!(stream_finished_cleanly(&format!(
        "{token}\n\n: ping\n\ndata: [DONE]\n\n"
    )));
    assert!(!stream_finished_cleanly(&format!(
        "{token}\n\n{failure}\n\n"
    )));
    assert!(!stream_finished_cleanly(&format!("{token}\n\n")));
    assert!(!stream_finished_cleanly(""));
}
