//! The wick under test: a child process started from a built binary on 127.0.0.1, or a URL the
//! caller already runs; how long a fresh process takes to answer `/ready` 200.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The longest a process may take to become ready before the run gives up.
const READY_LIMIT: Duration = Duration::from_secs(180);
/// How long a stopping wick may drain before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// How to start wick: the binary, the model and the flags the measurement needs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub model: PathBuf,
    pub metrics_window_s: u64,
    pub extra_args: Vec<String>,
}

/// A wick child process on a loopback port; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub url: String,
    child: Option<Child>,
}

impl Server {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A server the caller runs: nothing to start or stop, no process to read CPU from.
    pub fn external(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            child: None,
        }
    }

    /// Starts wick and waits for `/ready`; returns the server and process start -> ready.
    pub async fn start(launch: &Launch, client: &reqwest::Client) -> Result<(Self, Duration)> {
        if !launch.binary.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release` (or pass --wick)",
                launch.binary.display()
            );
        }
        let port = free_port()?;
        let started = Instant::now();
        let child = Command::new(&launch.binary)
            .arg("serve")
            .arg("--model")
            .arg(&launch.model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--metrics-window", &launch.metrics_window_s.to_string()])
            .args(&launch.extra_args)
            .env("WICK_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        server.wait_ready(client, started).await?;
        Ok((server, started.elapsed()))
    }

    async fn wait_ready(&self, client: &reqwest::Client, started: Instant) -> Result<()> {
        let url = format!("{}/ready", self.url);
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_LIMIT {
                bail!("wick was not ready after {READY_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, a bounded wait for the drain, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on loopback now (the listener closes before wick binds it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding loopback")?;
    Ok(listener.local_addr()?.port())
}

/// The wick binary a release build leaves: `$CARGO_TARGET_DIR/release/wick`, else
/// `target/release/wick` at the workspace root.
pub fn default_binary(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("release/wick"),
        None => workspace.join("target/release/wick"),
    }
}
