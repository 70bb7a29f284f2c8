//! `WICK_SIMD`: the vector instructions in use are shown in `/info`, every level the CPU runs
//! gives the same embeddings within float tolerance and the same greedy completion token for
//! token (the quantised kernels round alike at every level), and an unknown level stops
//! start-up.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;
use wick::model::simd::{self, Level};

const SENTENCES: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog.",
    "A paragraph long enough to fill a few of the microkernel's row groups, with words the \
     tokenizer splits into pieces: unbelievably, antidisestablishmentarianism, Kubernetes.",
    "short",
];

/// A wick process serving `model` with `WICK_SIMD=level`, once it is ready, and a client.
async fn ready_at(model: &str, level: &str) -> (Process, reqwest::Client) {
    let process = Process::spawn_with_env(
        &real_model(model),
        &["--no-warmup"],
        &[("WICK_SIMD", level)],
    );
    let client = reqwest::Client::new();
    process.wait_ready(&client).await;
    (process, client)
}

/// The embeddings and `/info` of a wick process run with `WICK_SIMD=level`.
async fn embed_at(level: &str) -> (Vec<Vec<f64>>, serde_json::Value) {
    let (process, client) = ready_at("all-minilm-l6-v2", level).await;
    let info: serde_json::Value = client
        .get(format!("{}/info", process.url))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    let body: serde_json::Value = client
        .post(format!("{}/predict", process.url))
        .json(&json!({ "task": "embed", "inputs": SENTENCES }))
        .send()
        .await
        .expect("predict")
        .json()
        .await
        .expect("json");
    let vectors = body["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|v| {
            v.as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect();
    (vectors, info)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_the_cpu_runs_gives_the_same_embeddings() {
    let (reference, info) = embed_at("portable").await;
    assert_eq!(info["simd"], "portable", "{info}");
    assert!(reference.iter().all(|v| v.len() == 384), "{reference:?}");
    let mut levels = vec!["avx2", "avx512", "auto"];
    levels.retain(|name| *name == "auto" || simd::detected() >= level_named(name));
    for name in levels {
        let (vectors, info) = embed_at(name).await;
        let want = if name == "auto" {
            simd::detected().name()
        } else {
            name
        };
        assert_eq!(info["simd"], want, "WICK_SIMD={name}: {info}");
        assert_eq!(vectors.len(), SENTENCES.len());
        for (got, reference) in vectors.iter().zip(&reference) {
            for (g, r) in got.iter().zip(reference) {
                assert!((g - r).abs() < 1e-4, "WICK_SIMD={name}: {g} vs {r}");
            }
        }
    }
}

/// The greedy completion of a few prompts by SmolLM2 in a wick process run with
/// `WICK_SIMD=level`: four at once, so the batched kernels run as well as the one-token ones.
async fn complete_at(level: &str) -> Vec<String> {
    let (process, client) = ready_at("smollm2-135m-instruct", level).await;
    let prompts = [
        "The capital of France is",
        "Kubernetes restarts a pod when",
        "1, 2, 3, 4,",
        "Once upon a time",
    ];
    let requests = prompts.iter().map(|prompt| {
        let request = client
            .post(format!("{}/v1/completions", process.url))
            .json(&json!({"prompt": prompt, "temperature": 0, "max_tokens": 24}));
        async move {
            let body: serde_json::Value = request
                .send()
                .await
                .expect("complete")
                .json()
                .await
                .expect("json");
            body["choices"][0]["text"]
                .as_str()
                .unwrap_or_else(|| panic!("no text: {body}"))
                .to_owned()
        }
    });
    futures::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_the_cpu_runs_gives_the_same_completions() {
    let reference = complete_at("portable").await;
    assert!(
        reference.iter().all(|text| !text.is_empty()),
        "{reference:?}"
    );
    let mut levels = vec!["avx2", "avx512"];
    levels.retain(|name| simd::detected() >= level_named(name));
    for name in levels {
        assert_eq!(complete_at(name).await, reference, "WICK_SIMD={name}");
    }
}

fn level_named(name: &str) -> Level {
    match name {
        "avx512" => Level::Avx512,
        "avx2" => Level::Avx2,
        _ => Level::Portable,
    }
}

#[test]
fn an_unknown_level_stops_start_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--model"])
        .arg(real_model("all-minilm-l6-v2"))
        .args(["--host", "127.0.0.1", "--port", "0", "--log-format", "text"])
        .env("WICK_SIMD", "sse9")
        .output()
        .expect("run wick");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("WICK_SIMD=\"sse9\""), "{log}");
    assert!(log.contains("avx512, avx2, portable"), "{log}");
}

/// `scripts/hide-avx512` (CPUID faulting) makes a process see an AVX2-only CPU: wick, started
/// under it on a machine with AVX-512, detects AVX2 and chooses it. Where the CPU has no CPUID
/// faulting the script refuses to run, which is checked instead.
#[test]
fn hide_avx512_shows_wick_an_avx2_cpu() {
    use std::io::{BufRead, BufReader};
    let faulting = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.split_whitespace().any(|flag| flag == "cpuid_fault"))
        .unwrap_or(false);
    let mut child = Command::new(root().join("scripts/hide-avx512"))
        .arg(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--port", "0", "--no-warmup", "--model"])
        .arg(real_model("all-minilm-l6-v2"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn scripts/hide-avx512");
    let first = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("vector instructions chosen"));
    let _ = child.kill();
    let status = child.wait().expect("wait");
    if !faulting {
        assert_eq!(status.code(), Some(97), "refuses without CPUID faulting");
        return;
    }
    let line = first.expect("the start-up line naming the vector instructions");
    let chosen: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    assert_eq!(chosen["cpu_has"], "avx2", "{line}");
    assert_eq!(chosen["simd"], "avx2", "{line}");
}
