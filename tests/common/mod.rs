//! Shared helpers for integration tests: start a real wick on 127.0.0.1:0, wait until it is
//! ready, and stop it; locate the model directories and the reference fixtures.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wick::config::Config;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real model fetched by `models/fetch NAME`.
pub fn real_model(name: &str) -> PathBuf {
    let dir = root().join("models").join(name);
    assert!(
        dir.join(".complete").is_file(),
        "model {name} is missing: run `models/fetch {name}` first"
    );
    dir
}

/// A small model committed under tests/fixtures.
pub fn fixture_model(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/reference.json"))
        .expect("tests/fixtures/reference.json");
    serde_json::from_str(&text).expect("reference.json is JSON")
}

pub struct TestServer {
    pub url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts wick in this process and waits for `/ready` (at most 120 s).
    pub async fn start(config: Config) -> TestServer {
        let server = Self::start_unready(config).await;
        server.wait_ready(Duration::from_secs(120)).await;
        server
    }

    pub async fn start_unready(mut config: Config) -> TestServer {
        config.host = "127.0.0.1".into();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(wick::server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            client: reqwest::Client::new(),
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.client.get(format!("{}/ready", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "server not ready after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn predict(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}/predict", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().expect("handle").await.expect("join")
    }
}

pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// A config with warmup off, for tests that do not measure first-request latency.
pub fn quick_config(model: PathBuf) -> Config {
    let mut config = Config::for_model(model);
    config.no_warmup = true;
    config
}
