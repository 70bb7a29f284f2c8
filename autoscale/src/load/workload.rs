//! What one client request is: an embedding of one short sentence, or one streamed chat answer
//! (time to first token and the gaps between tokens as the client saw them).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

const EMBEDDING_TIMEOUT: Duration = Duration::from_secs(60);
const CHAT_TIMEOUT: Duration = Duration::from_secs(300);

/// Prompts whose greedy answers run past the token limit, so every stream decodes all of it.
const PROMPTS: &[&str] = &[
    "Tell me a very long story about dragons.",
    "Write a long essay about the history of Rome.",
    "Explain in detail how a computer works.",
    "Write a long poem about the sea.",
    "Describe, step by step, how bread is baked.",
    "Write a long letter to a friend about a journey through the mountains.",
    "Explain in detail how the water cycle works.",
    "Tell me a long story about a robot who learns to paint.",
];

/// Request `i`'s prompt: one of [`PROMPTS`] behind a number of its own. Users share the chat
/// template's opening, not their words; repeated prompts would be answered from the prefix
/// cache and time to first token would measure cache hits, not load.
fn unique_prompt(i: usize) -> String {
    format!("Request {i}. {}", PROMPTS[i % PROMPTS.len()])
}

/// The request every client of a step sends, over and over.
#[derive(Debug, Clone)]
pub enum Workload {
    /// One ~13-token sentence per request to `/predict` (or `/v1/embeddings`).
    Embeddings { openai: bool },
    /// One streamed `/v1/chat/completions` answer of `max_tokens` tokens, temperature 0.
    Chat { max_tokens: u64 },
}

/// One finished request as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: bool,
    pub finished: Option<Instant>,
    pub latency_s: f64,
    pub ttft_s: Option<f64>,
    pub itl_s: Vec<f64>,
    pub tokens: u64,
}

impl Workload {
    pub fn is_chat(&self) -> bool {
        matches!(self, Workload::Chat { .. })
    }

    /// Sends request number `i` and waits for its whole answer.
    pub async fn run(&self, client: &reqwest::Client, url: &str, i: usize) -> Outcome {
        match self {
            Workload::Embeddings { openai } => embed(client, url, *openai, i).await,
            Workload::Chat { max_tokens } => chat(client, url, *max_tokens, i).await,
        }
    }
}

/// Deterministic words, so every run sends the same text.
fn sentence(seed: usize) -> String {
    const VOCAB: &[&str] = &[
        "the",
        "model",
        "server",
        "answers",
        "requests",
        "quickly",
        "under",
        "load",
        "while",
        "kubernetes",
        "scales",
        "pods",
        "on",
        "latency",
        "and",
        "queue",
        "depth",
        "metrics",
        "from",
        "prometheus",
        "every",
        "second",
        "with",
        "care",
        "for",
        "memory",
        "limits",
    ];
    let words: Vec<&str> = (0..11)
        .map(|i| VOCAB[(seed * 7 + i * 13 + i / 3) % VOCAB.len()])
        .collect();
    format!("{}.", words.join(" "))
}

async fn embed(client: &reqwest::Client, url: &str, openai: bool, i: usize) -> Outcome {
    let (path, body) = if openai {
        (
            "/v1/embeddings",
            json!({"input": sentence(i), "model": "wick"}),
        )
    } else {
        ("/predict", json!({"inputs": sentence(i)}))
    };
    let sent = Instant::now();
    let response = client
        .post(format!("{url}{path}"))
        .timeout(EMBEDDING_TIMEOUT)
        .json(&body)
        .send()
        .await;
    let ok = match response {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    };
    Outcome {
        ok,
        finished: Some(Instant::now()),
        latency_s: sent.elapsed().as_secs_f64(),
        ..Outcome::default()
    }
}

async fn chat(client: &reqwest::Client, url: &str, max_tokens: u64, i: usize) -> Outcome {
    let body = json!({
        "messages": [{"role": "user", "content": unique_prompt(i)}],
        "temperature": 0, "max_tokens": max_tokens, "stream": true,
    });
    let sent = Instant::now();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .timeout(CHAT_TIMEOUT)
        .json(&body)
        .send()
        .await;
    let mut outcome = Outcome::default();
    if let Ok(r) = response {
        if r.status().is_success() {
            outcome = read_stream(r, sent).await;
        }
    }
    outcome.finished = Some(Instant::now());
    outcome.latency_s = sent.elapsed().as_secs_f64();
    outcome
}

/// Reads an SSE chat stream: each `data:` event with delta content is a token. Events that
/// arrive in one network read share an arrival time, so a gap can read as zero.
async fn read_stream(response: reqwest::Response, sent: Instant) -> Outcome {
    let mut bytes = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut token_times: Vec<Instant> = Vec::new();
    let mut ok = false;
    while let Some(chunk) = bytes.next().await {
        let Ok(chunk) = chunk else {
            return Outcome::default();
        };
        let at = Instant::now();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            match line.strip_prefix("data: ").map(str::trim) {
                Some("[DONE]") => ok = true,
                Some(data) => match serde_json::from_str::<Value>(data) {
                    Ok(event) if event.get("error").is_some() => return Outcome::default(),
                    Ok(event) => {
                        let content = &event["choices"][0]["delta"]["content"];
                        if content.as_str().is_some_and(|c| !c.is_empty()) {
                            token_times.push(at);
                        }
                    }
                    Err(_) => return Outcome::default(),
                },
                None => {}
            }
        }
    }
    let ttft_s = token_times
        .first()
        .map(|t| t.duration_since(sent).as_secs_f64());
    let itl_s = token_times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    Outcome {
        ok: ok && ttft_s.is_some(),
        ttft_s,
        itl_s,
        tokens: token_times.len() as u64,
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_deterministic_and_vary() {
        assert_eq!(sentence(3), sentence(3));
        assert_ne!(sentence(3), sentence(4));
        assert!(sentence(0).ends_with('.'));
    }
}
