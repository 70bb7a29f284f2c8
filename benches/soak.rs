//! Soak run: ten minutes of mixed traffic on loopback against three wick processes (one wick
//! serves one model): an embedding model for embeddings and zero-shot, a classifier, and a
//! chat model for streamed chat, some of whose clients hang up mid-stream. Every 10 s it prints
//! each process's RSS and the counts so far. Bounded in time; not part of the per-commit suite.
//!
//!   cargo bench --bench soak                       # 600 s
//!   cargo bench --bench soak -- --seconds 120      # a shorter run
//!   cargo bench --bench soak -- --wick /tmp/wick   # a given binary (default: this build's)
//!
//! Pass: no 5xx (nor an error inside a stream), every request answered or cancelled on
//! purpose (a client that hung up), and each process's RSS at the end at most 5% above its RSS
//! at minute 2 (at a fifth of the run for shorter runs), once the caches have filled.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const MAX_RSS_GROWTH: f64 = 0.05;

struct Args {
    seconds: u64,
    wick: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 600,
        wick: env!("CARGO_BIN_EXE_wick").into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => args.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(600),
            "--wick" => args.wick = it.next().unwrap_or(args.wick),
            _ => {} // cargo bench passes --bench; ignore what is not ours
        }
    }
    args
}

/// One wick process; killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    url: String,
}

impl Server {
    fn start(name: &'static str, wick: &str, model: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let model = format!("{}/models/{model}", env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(wick)
            .args(["serve", "--model", &model, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .env("WICK_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start wick");
        Server {
            name,
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(180) {
            if let Ok(r) = client.get(format!("{}/ready", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} not ready after 180 s", self.name);
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Outcomes of one kind of traffic.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    cancelled: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    /// No answer: a refused or dropped connection, a body cut short, a timeout.
    unanswered: AtomicU64,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Cancelled,
    ClientError,
    ServerError,
    Unanswered,
}

impl Tally {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Cancelled => &self.cancelled,
            Outcome::ClientError => &self.client_errors,
            Outcome::ServerError => &self.server_errors,
            Outcome::Unanswered => &self.unanswered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> [u64; 5] {
        [
            &self.ok,
            &self.cancelled,
            &self.client_errors,
            &self.server_errors,
            &self.unanswered,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

fn status_outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Ok,
        400..=499 => Outcome::ClientError,
        _ => Outcome::ServerError,
    }
}

/// Deterministic text: sentence `i` of a small vocabulary.
fn sentence(i: u64, words: usize) -> String {
    const VOCAB: &[&str] = &[
        "the", "server", "answers", "requests", "under", "steady", "load", "while", "clients",
        "come", "and", "go", "every", "minute", "a", "report", "on", "markets", "travel", "food",
    ];
    (0..words)
        .map(|w| VOCAB[(i as usize * 7 + w * 13 + w * w) % VOCAB.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON request; its outcome.
async fn post(client: &reqwest::Client, url: &str, body: Value) -> Outcome {
    match client.post(url).json(&body).send().await {
        Ok(r) => {
            let outcome = status_outcome(r.status().as_u16());
            match r.bytes().await {
                Ok(_) => outcome,
                Err(_) => Outcome::Unanswered,
            }
        }
        Err(_) => Outcome::Unanswered,
    }
}

/// One streamed chat; every fourth hangs up after three events.
async fn chat_stream(client: &reqwest::Client, url: &str, i: u64) -> Outcome {
    let body = json!({
        "messages": [{"role": "user", "content": format!("Write about {}.", sentence(i, 6))}],
        "max_tokens": 32,
        "stream": true,
    });
    let response = match client.post(url).json(&body).send().await {
        Ok(r) => r,
        Err(_) => return Outcome::Unanswered,
    };
    if response.status() != 200 {
        return status_outcome(response.status().as_u16());
    }
    let hang_up = i % 4 == 3;
    let mut events = 0;
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Outcome::Unanswered;
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        events += chunk.iter().filter(|&&b| b == b'\n').count() / 2;
        if hang_up && events >= 3 {
            return Outcome::Cancelled;
        }
    }
    if text.contains("\"error\"") {
        Outcome::ServerError
    } else if text.trim_end().ends_with("data: [DONE]") {
        Outcome::Ok
    } else {
        Outcome::Unanswered
    }
}

/// Runs `request(i)` in a closed loop until `until`, counting outcomes; a short pause between
/// requests keeps three servers and their clients within two cores.
fn client<F, Fut>(
    until: Instant,
    tally: Arc<Tally>,
    seed: u64,
    request: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    tokio::spawn(async move {
        let mut i = seed * 1_000_000;
        while Instant::now() < until {
            let outcome = request(i).await;
            tally.count(outcome);
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

type Kinds = BTreeMap<&'static str, Arc<Tally>>;

fn spawn_traffic(
    http: &reqwest::Client,
    servers: &[Server; 3],
    until: Instant,
) -> (Kinds, Vec<tokio::task::JoinHandle<()>>) {
    let kinds: Kinds = ["embed", "zero-shot", "classify", "chat-stream"]
        .into_iter()
        .map(|k| (k, Arc::new(Tally::default())))
        .collect();
    let [encoder, classifier, chat] = servers;
    let mut tasks = Vec::new();
    for seed in 0..2 {
        let (http, url) = (http.clone(), format!("{}/v1/embeddings", encoder.url));
        tasks.push(client(until, kinds["embed"].clone(), seed, move |i| {
            let inputs: Vec<String> = (0..1 + i % 8).map(|j| sentence(i + j, 12)).collect();
            let (http, url) = (http.clone(), url.clone());
            async move { post(&http, &url, json!({ "input": inputs })).await }
        }));
    }
    for seed in 2..4 {
        let (http, url) = (http.clone(), format!("{}/predict", encoder.url));
        tasks.push(client(until, kinds["zero-shot"].clone(), seed, move |i| {
            // A few labels recur, most are new: the label cache (10,000 entries by default)
            // fills within the first minutes and then evicts.
            let mut labels: Vec<String> = ["markets", "travel", "food", "weather", "sport"]
                .map(String::from)
                .to_vec();
            labels.extend((0..24).map(|j| format!("topic {}", i * 24 + j)));
            let body = json!({"inputs": sentence(i, 10), "task": "zero-shot",
                              "parameters": {"labels": labels}});
            let (http, url) = (http.clone(), url.clone());
            async move { post(&http, &url, body).await }
        }));
    }
    let (http_c, url) = (http.clone(), format!("{}/predict", classifier.url));
    tasks.push(client(until, kinds["classify"].clone(), 4, move |i| {
        let inputs: Vec<String> = (0..1 + i % 4).map(|j| sentence(i + j, 15)).collect();
        let (http, url) = (http_c.clone(), url.clone());
        async move { post(&http, &url, json!({ "inputs": inputs })).await }
    }));
    for seed in 5..7 {
        let (http, url) = (http.clone(), format!("{}/v1/chat/completions", chat.url));
        tasks.push(client(
            until,
            kinds["chat-stream"].clone(),
            seed,
            move |i| {
                let (http, url) = (http.clone(), url.clone());
                async move { chat_stream(&http, &url, i).await }
            },
        ));
    }
    (kinds, tasks)
}

fn totals(kinds: &Kinds) -> [u64; 5] {
    kinds.values().fold([0; 5], |mut sum, t| {
        for (s, v) in sum.iter_mut().zip(t.get()) {
            *s += v;
        }
        sum
    })
}

async fn server_counter(http: &reqwest::Client, server: &Server, series: &str) -> f64 {
    let Ok(r) = http.get(format!("{}/metrics", server.url)).send().await else {
        return f64::NAN;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let servers = [
        Server::start("embed", &args.wick, "all-minilm-l6-v2"),
        Server::start("classify", &args.wick, "categorium-en"),
        Server::start("chat", &args.wick, "smollm2-135m-instruct"),
    ];
    for server in &servers {
        server.wait_ready(&http).await;
    }
    let duration = Duration::from_secs(args.seconds);
    let baseline_at = duration / 5;
    println!(
        "soak: {} s of embed, zero-shot, classify and chat streams (1 in 4 hung up); RSS every \
         {} s",
        args.seconds,
        SAMPLE_EVERY.as_secs()
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>8} {:>9} {:>5} {:>5} {:>10}",
        "t (s)",
        "embed MiB",
        "class MiB",
        "chat MiB",
        "ok",
        "cancelled",
        "4xx",
        "5xx",
        "unanswered"
    );
    let started = Instant::now();
    let until = started + duration;
    let (kinds, tasks) = spawn_traffic(&http, &servers, until);

    let mut samples: Vec<(Duration, [u64; 3])> = Vec::new();
    let mut next = started;
    while next <= until {
        tokio::time::sleep_until(next.into()).await;
        let rss = [0, 1, 2].map(|i| servers[i].rss_kib());
        let t = totals(&kinds);
        println!(
            "{:>6} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>9} {:>5} {:>5} {:>10}",
            next.duration_since(started).as_secs(),
            rss[0] as f64 / 1024.0,
            rss[1] as f64 / 1024.0,
            rss[2] as f64 / 1024.0,
            t[0],
            t[1],
            t[2],
            t[3],
            t[4]
        );
        samples.push((next.duration_since(started), rss));
        next += SAMPLE_EVERY;
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    report(&http, &servers, &kinds, &samples, baseline_at).await;
}

async fn report(
    http: &reqwest::Client,
    servers: &[Server; 3],
    kinds: &Kinds,
    samples: &[(Duration, [u64; 3])],
    baseline_at: Duration,
) {
    println!(
        "\n{:<12} {:>8} {:>9} {:>5} {:>5} {:>10}",
        "traffic", "ok", "cancelled", "4xx", "5xx", "unanswered"
    );
    for (name, tally) in kinds {
        let [ok, cancelled, c4, c5, lost] = tally.get();
        println!("{name:<12} {ok:>8} {cancelled:>9} {c4:>5} {c5:>5} {lost:>10}");
    }
    let [ok, cancelled, client_errors, server_errors, unanswered] = totals(kinds);
    let mut pass = server_errors == 0 && unanswered == 0 && ok > 0;
    println!("\nserver side:");
    for server in servers {
        let internal = server_counter(
            http,
            server,
            "wick_request_failures_total{reason=\"internal\"}",
        )
        .await;
        let cancelled = server_counter(
            http,
            server,
            "wick_request_failures_total{reason=\"cancelled\"}",
        )
        .await;
        let panics = server_counter(http, server, "wick_model_panics_total").await;
        println!(
            "  {:<9} internal failures {internal}, cancelled {cancelled}, model panics {panics}",
            server.name
        );
        pass &= internal == 0.0 && panics == 0.0;
    }
    let baseline = samples.iter().find(|(t, _)| *t >= baseline_at);
    let last = samples.last();
    println!(
        "\nRSS from {} s to {} s:",
        baseline.map_or(0, |b| b.0.as_secs()),
        last.map_or(0, |l| l.0.as_secs())
    );
    for (i, server) in servers.iter().enumerate() {
        let (Some((_, base)), Some((_, end))) = (baseline, last) else {
            pass = false;
            continue;
        };
        let growth = end[i] as f64 / base[i].max(1) as f64 - 1.0;
        let peak = samples.iter().map(|(_, r)| r[i]).max().unwrap_or(0);
        println!(
            "  {:<9} {:.1} MiB -> {:.1} MiB ({:+.2}%), peak {:.1} MiB",
            server.name,
            base[i] as f64 / 1024.0,
            end[i] as f64 / 1024.0,
            growth * 100.0,
            peak as f64 / 1024.0
        );
        pass &= growth <= MAX_RSS_GROWTH;
    }
    println!(
        "\n{} requests: {ok} answered 2xx, {client_errors} 4xx, {server_errors} 5xx, {cancelled} \
         cancelled by their client, {unanswered} unanswered",
        ok + cancelled + client_errors + server_errors + unanswered
    );
    println!("{}", if pass { "PASS" } else { "FAIL" });
    if !pass {
        std::process::exit(1);
    }
}
