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
        self.post("/predict", body).await
    }

    /// POSTs `body` as JSON to `path`; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Sends, in the background, one request of 64 long inputs (each cut to the model's
    /// maximum): work that keeps the model busy for a second or more. Yields its status and
    /// how long it took.
    pub fn spawn_long_request(&self) -> tokio::task::JoinHandle<(u16, Duration)> {
        let long = "a long input that keeps the model busy for a while ".repeat(30);
        let inputs: Vec<String> = (0..64).map(|i| format!("{i} {long}")).collect();
        let (client, url) = (self.client.clone(), format!("{}/predict", self.url));
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(url)
                .json(&serde_json::json!({ "inputs": inputs }))
                .send()
                .await
                .expect("request");
            (r.status().as_u16(), started.elapsed())
        })
    }

    /// `GET path` on this server.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request")
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

    /// Triggers shutdown (what SIGTERM does) without waiting: `run` starts its drain.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers shutdown if not yet triggered, and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_stop();
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

/// A wick process started from the built binary, for tests that need signals or RSS.
pub struct Process {
    pub child: std::process::Child,
    pub url: String,
}

impl Process {
    pub fn spawn(model: &std::path::Path, extra: &[&str]) -> Process {
        Self::spawn_with_env(model, extra, &[])
    }

    /// [`Process::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        model: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_wick"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .env("WICK_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn wick");
        Process {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/ready", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "wick not ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// The process's `/metrics` text.
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub fn rss_kib(&self) -> u64 {
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

    /// Waits for exit up to `limit`; returns the exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("wick did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series in Prometheus text output, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
