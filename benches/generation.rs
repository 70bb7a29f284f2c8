//! Generation bench: starts wick in this process on the default chat model (SmolLM2-135M) on
//! loopback and measures streamed chat the way a client sees it:
//!
//!   cargo bench --bench generation
//!   cargo bench --bench generation -- --url http://127.0.0.1:8080    # against a running server
//!
//! - time to first token (P50) of a short chat prompt;
//! - prefill tokens/s of a ~1,000-token prompt (its prompt tokens over its time to first token);
//! - time to first token of that conversation's second turn, its first turn in the prefix cache;
//! - decode tokens/s of one stream, and aggregate decode tokens/s of 4 and 8 concurrent streams
//!   (128 new tokens each, temperature 0).
//!
//! Every point runs a fixed number of requests, each with a time limit, then the bench stops the
//! server and prints one table.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The allocator the server uses (src/main.rs), so the bench measures what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NEW_TOKENS: u64 = 128;
const TTFT_RUNS: usize = 10;
const PREFILL_RUNS: usize = 3;
const REQUEST_LIMIT: Duration = Duration::from_secs(300);

/// Prompts whose greedy answers run far past 128 tokens, so every stream decodes all of them.
const LONG_ANSWERS: &[&str] = &[
    "Tell me a very long story about dragons.",
    "Write a long essay about the history of Rome.",
    "Explain in detail how a computer works.",
    "Write a long poem about the sea.",
    "Describe, step by step, how bread is baked.",
    "Write a long letter to a friend about a journey through the mountains.",
    "Explain in detail how the water cycle works.",
    "Tell me a long story about a robot who learns to paint.",
];

struct Args {
    url: Option<String>,
    model: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: None,
        model: concat!(env!("CARGO_MANIFEST_DIR"), "/models/smollm2-135m-instruct").into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => args.url = it.next(),
            "--model" => args.model = it.next().unwrap_or(args.model),
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    args
}

/// One streamed chat answer as the client saw it.
struct Streamed {
    /// From sending the request to the first chunk after the role chunk (the first token).
    first_token: Duration,
    /// From the first token to the finish chunk.
    decode: Duration,
    /// When the first token and the finish chunk arrived.
    first_at: Instant,
    last_at: Instant,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// The answer's text.
    text: String,
}

impl Streamed {
    /// Tokens per second after the first: completion tokens - 1 over the decode time.
    fn decode_rate(&self) -> f64 {
        self.completion_tokens.saturating_sub(1) as f64 / self.decode.as_secs_f64()
    }
}

async fn stream_chat(
    client: &reqwest::Client,
    url: &str,
    content: &str,
    max_tokens: u64,
) -> Streamed {
    let messages = json!([{"role": "user", "content": content}]);
    stream_messages(client, url, messages, max_tokens).await
}

async fn stream_messages(
    client: &reqwest::Client,
    url: &str,
    messages: Value,
    max_tokens: u64,
) -> Streamed {
    let body = json!({"messages": messages, "temperature": 0,
                      "max_tokens": max_tokens, "stream": true,
                      "stream_options": {"include_usage": true}});
    let sent = Instant::now();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .timeout(REQUEST_LIMIT)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "chat request failed");
    let mut bytes = response.bytes_stream();
    let mut pending = Vec::new();
    let mut events: Vec<(Instant, Value)> = Vec::new();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.expect("stream");
        let at = Instant::now();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            match line.strip_prefix("data: ") {
                Some("[DONE]") | None => {}
                Some(data) => events.push((at, serde_json::from_str(data).expect("chunk JSON"))),
            }
        }
    }
    if let Some((_, error)) = events.iter().find(|(_, e)| e.get("error").is_some()) {
        panic!("the stream failed: {error}");
    }
    // Role chunk, token chunks, finish chunk, usage chunk.
    let first_at = events.get(1).expect("a token").0;
    let last_at = events
        .iter()
        .rev()
        .find(|(_, e)| e["choices"][0]["finish_reason"].is_string())
        .expect("a finish chunk")
        .0;
    let usage = &events.last().expect("usage").1["usage"];
    let text = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    Streamed {
        first_token: first_at - sent,
        decode: last_at - first_at,
        first_at,
        last_at,
        prompt_tokens: usage["prompt_tokens"].as_u64().expect("usage"),
        completion_tokens: usage["completion_tokens"].as_u64().expect("usage"),
        text,
    }
}

/// Deterministic prose, so every run sends the same prompt.
fn long_prompt(words: usize) -> String {
    const VOCAB: &[&str] = &[
        "the", "river", "carried", "old", "boats", "past", "quiet", "towns", "where", "people",
        "traded", "grain", "and", "stories", "under", "bright", "summer", "skies", "while",
        "children", "watched", "from", "stone", "bridges",
    ];
    let text: Vec<&str> = (0..words)
        .map(|i| VOCAB[(i * 7 + i / 5) % VOCAB.len()])
        .collect();
    format!("Summarise this text in one sentence: {}.", text.join(" "))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// N streams at once; aggregate decode tokens/s from the first token to the last finish.
async fn concurrent(client: &reqwest::Client, url: &str, streams: usize) -> (f64, f64, u64) {
    let answers = futures::future::join_all((0..streams).map(|i| {
        stream_chat(
            client,
            url,
            LONG_ANSWERS[i % LONG_ANSWERS.len()],
            NEW_TOKENS,
        )
    }))
    .await;
    let first = answers.iter().map(|a| a.first_at).min().expect("streams");
    let last = answers.iter().map(|a| a.last_at).max().expect("streams");
    let decoded: u64 = answers.iter().map(|a| a.completion_tokens - 1).sum();
    let aggregate = decoded as f64 / (last - first).as_secs_f64();
    let per_stream = median(answers.iter().map(Streamed::decode_rate).collect());
    let tokens = answers.iter().map(|a| a.completion_tokens).sum();
    (aggregate, per_stream, tokens)
}

async fn bench(client: &reqwest::Client, url: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cpu}, {threads} threads; streamed chat over loopback, temperature 0");

    let mut ttft = Vec::new();
    let mut short_prompt = 0;
    // Every prompt differs right after the chat template's own tokens, so these measure
    // prefill, not the prefix cache.
    for i in 0..TTFT_RUNS {
        let question = format!("Question {i}: what is the capital of France?");
        let answer = stream_chat(client, url, &question, 1).await;
        short_prompt = answer.prompt_tokens;
        ttft.push(answer.first_token.as_secs_f64());
    }
    let ttft = median(ttft);

    let mut prefill = Vec::new();
    let mut long_tokens = 0;
    for i in 0..PREFILL_RUNS {
        let prompt = format!("Text {i}. {}", long_prompt(960));
        let answer = stream_chat(client, url, &prompt, 1).await;
        long_tokens = answer.prompt_tokens;
        prefill.push(answer.prompt_tokens as f64 / answer.first_token.as_secs_f64());
    }
    let prefill = median(prefill);

    // A conversation's second turn, its first turn (the long prompt and the answer) cached.
    let question =
        json!({"role": "user", "content": format!("Text {PREFILL_RUNS}. {}", long_prompt(960))});
    let first_turn = stream_messages(client, url, json!([question]), 16).await;
    let follow_up = json!([question, {"role": "assistant", "content": first_turn.text},
                           {"role": "user", "content": "Now say it in five words."}]);
    let second_turn = stream_messages(client, url, follow_up, 1).await;
    let turn_ratio = second_turn.first_token.as_secs_f64() / first_turn.first_token.as_secs_f64();

    let single = stream_chat(client, url, LONG_ANSWERS[0], NEW_TOKENS).await;
    let (agg4, per4, tokens4) = concurrent(client, url, 4).await;
    let (agg8, per8, tokens8) = concurrent(client, url, 8).await;

    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| time to first token, {short_prompt}-token chat prompt (P50 of {TTFT_RUNS}) | {:.0} ms |",
        ttft * 1e3
    );
    println!(
        "| prefill, {long_tokens}-token chat prompt (median of {PREFILL_RUNS}) | {prefill:.0} tokens/s |"
    );
    println!(
        "| second turn of that conversation ({}-token prompt): time to first token | {:.0} ms, {turn_ratio:.2}x the first turn's {:.0} ms |",
        second_turn.prompt_tokens,
        second_turn.first_token.as_secs_f64() * 1e3,
        first_turn.first_token.as_secs_f64() * 1e3
    );
    println!(
        "| decode, 1 stream ({} tokens) | {:.1} tokens/s |",
        single.completion_tokens,
        single.decode_rate()
    );
    println!(
        "| decode, 4 streams ({tokens4} tokens) | {agg4:.1} tokens/s aggregate, {per4:.1} per stream |"
    );
    println!(
        "| decode, 8 streams ({tokens8} tokens) | {agg8:.1} tokens/s aggregate, {per8:.1} per stream |"
    );
}

/// Starts wick in this process on 127.0.0.1:0; the sender stops it.
async fn start_server(
    model: &str,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut config = wick::config::Config::for_model(model);
    config.host = "127.0.0.1".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(wick::server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    (url, stop, handle)
}

fn main() {
    let args = parse_args();
    // As the binary does (src/main.rs): size the math pool to the CPUs before any thread exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .expect("client");
        let (url, running) = match &args.url {
            Some(url) => (url.clone(), None),
            None => {
                let (url, stop, handle) = start_server(&args.model).await;
                (url, Some((stop, handle)))
            }
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{url}/ready")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Some((_, handle)) = &running {
                assert!(
                    !handle.is_finished(),
                    "wick stopped while starting (run `models/fetch smollm2-135m-instruct` first)"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "server not ready after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if running.is_some() {
            println!(
                "ready in {:.1} s (load and warmup)",
                started.elapsed().as_secs_f64()
            );
        }
        bench(&client, &url).await;
        if let Some((stop, handle)) = running {
            let _ = stop.send(());
            handle.await.expect("join").expect("server");
        }
    });
}
