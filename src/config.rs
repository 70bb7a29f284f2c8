//! The one configuration: every knob is a flag with an environment fallback (clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::device::DeviceChoice;
use crate::engine::Fault;
use crate::model::{Pooling, Quantize};

#[derive(Debug, Parser)]
#[command(
    name = "wick",
    version,
    about = "Inference server for transformer encoders"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the `WICK_*` environment, a variable set to the empty
    /// string counting as unset: a manifest or chart that renders `WICK_QUANTIZE: ""` means
    /// the default, where clap refuses an empty value and the server would not start.
    /// Call it first thing in `main`, before any other thread reads the environment.
    pub fn from_env() -> Self {
        unset_empty_variables(ENV_PREFIX);
        Self::parse()
    }
}

/// The prefix of every environment variable wick reads.
const ENV_PREFIX: &str = "WICK_";

/// Removes the environment variables named `prefix...` whose value is empty.
fn unset_empty_variables(prefix: &str) {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(key, value)| {
            value.is_empty() && key.to_str().is_some_and(|key| key.starts_with(prefix))
        })
        .map(|(key, _)| key)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a model directory and serve it over HTTP.
    Serve(Box<Config>),
    /// GET a URL and exit 0 on a 2xx answer (container health checks without curl).
    Probe {
        /// For example http://127.0.0.1:8080/health
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, readable text when it is.
    Auto,
    Json,
    Text,
}

#[derive(Clone, Args)]
pub struct Config {
    /// Hugging Face-style model directory (config.json, weights, tokenizer).
    #[arg(long, env = "WICK_MODEL")]
    pub model: PathBuf,

    /// Model name reported in responses and /info (default: the directory name).
    #[arg(long, env = "WICK_MODEL_ID")]
    pub model_id: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "WICK_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = "WICK_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Also serve /metrics on this port (it is always on the main port too).
    #[arg(long, env = "WICK_METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Pooling for embedding models, overriding the model directory's 1_Pooling/config.json.
    #[arg(long, env = "WICK_POOLING", value_enum)]
    pub pooling: Option<Pooling>,

    /// Weight precision: `none` (f32, default) or `int8` (8-bit blocks; faster, less exact).
    #[arg(long, env = "WICK_QUANTIZE", value_enum, default_value = "none")]
    pub quantize: Quantize,

    /// Maximum tokens per input (capped by the model's own maximum).
    #[arg(long, env = "WICK_MAX_INPUT_TOKENS")]
    pub max_input_tokens: Option<usize>,

    /// Maximum characters per input text; longer is a 413. A guard against pathological
    /// inputs only: with truncation on, a long document is cut to the model's maximum length.
    #[arg(long, env = "WICK_MAX_INPUT_CHARS", default_value_t = 1_000_000)]
    pub max_input_chars: usize,

    /// Maximum inputs in one request; more is a 413.
    #[arg(long = "max-inputs", env = "WICK_MAX_INPUTS", default_value_t = 128)]
    pub max_inputs_per_request: usize,

    /// Zero-shot label embeddings kept for reuse by later requests (a bounded cache that evicts
    /// the least useful entries one at a time); 0 turns the cache off.
    #[arg(long, env = "WICK_LABEL_CACHE_ENTRIES", default_value_t = 10_000)]
    pub label_cache_entries: usize,

    /// Maximum request body size in bytes; larger is a 413.
    #[arg(long, env = "WICK_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Padded tokens (batch size x longest input) one forward pass may hold.
    #[arg(long, env = "WICK_MAX_BATCH_TOKENS", default_value_t = 8192)]
    pub max_batch_tokens: usize,

    /// Inputs one forward pass may hold.
    #[arg(long, env = "WICK_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,

    /// How long the batcher may wait for more inputs once it has one, in milliseconds. 0 never
    /// delays a lone request; batches still grow under load while the model is busy.
    #[arg(long, env = "WICK_MAX_BATCH_WAIT_MS", default_value_t = 0)]
    pub max_batch_wait_ms: u64,

    /// Inputs admitted at once (waiting, queued or running); past it requests get a fast 429.
    #[arg(long, env = "WICK_MAX_PENDING_INPUTS", default_value_t = 1024)]
    pub max_pending_inputs: usize,

    /// Default per-request deadline in seconds (a request may ask for less with the
    /// `x-wick-timeout-ms` header). Work past its deadline is dropped, never computed.
    #[arg(long, env = "WICK_REQUEST_TIMEOUT", default_value_t = 30.0)]
    pub request_timeout: f64,

    /// Seconds to keep serving after SIGTERM with readiness already failing, so endpoints are
    /// removed from the Service before the listener closes.
    #[arg(long, env = "WICK_PRE_STOP_DELAY", default_value_t = 0.0)]
    pub pre_stop_delay: f64,

    /// Seconds to finish queued and in-flight requests after the listener closes; whatever is
    /// unfinished then is answered 503.
    #[arg(long, env = "WICK_DRAIN_TIMEOUT", default_value_t = 20.0)]
    pub drain_timeout: f64,

    /// Seconds one batch may run before /health reports the model worker as stuck.
    #[arg(long, env = "WICK_WATCHDOG", default_value_t = 60.0)]
    pub watchdog: f64,

    /// Window in seconds for the server-side latency quantiles and request rate gauges.
    #[arg(long, env = "WICK_METRICS_WINDOW", default_value_t = 60.0)]
    pub metrics_window: f64,

    /// Pending inputs (queued + running) at which this pod reaches the knee of its latency
    /// curve; wick_saturation is 1.0 there.
    #[arg(long, env = "WICK_SATURATION_KNEE", default_value_t = 32.0)]
    pub saturation_knee: f64,

    /// Chat models: sequences decoded together in one batch at most.
    #[arg(long, env = "WICK_MAX_RUNNING_SEQUENCES", default_value_t = 16)]
    pub max_running_sequences: usize,

    /// Chat models: finished sequences whose KV caches are kept for prompts that start with the
    /// same tokens (prefix caching), within the KV budget; 0 turns prefix caching off.
    #[arg(long, env = "WICK_PREFIX_CACHE_ENTRIES", default_value_t = 16)]
    pub prefix_cache_entries: usize,

    /// Chat models: sequences admitted and waiting for a place in the batch at most; past it
    /// requests get a fast 429.
    #[arg(long, env = "WICK_MAX_WAITING_SEQUENCES", default_value_t = 64)]
    pub max_waiting_sequences: usize,

    /// Chat models: positions all KV caches may hold together (default: --max-kv-bytes
    /// divided by the model's KV bytes per position). A prompt waits while it does not fit.
    #[arg(long, env = "WICK_MAX_KV_TOKENS")]
    pub max_kv_tokens: Option<usize>,

    /// Chat models: memory budget of the KV caches when --max-kv-tokens is not given.
    #[arg(long, env = "WICK_MAX_KV_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_kv_bytes: usize,

    /// Chat models: tokens one forward pass may process; a long prompt is prefilled in chunks
    /// of at most this many so running streams keep their pace.
    #[arg(long, env = "WICK_MAX_STEP_TOKENS", default_value_t = 256)]
    pub max_step_tokens: usize,

    /// Chat models: default deadline of one generation in seconds (the x-wick-timeout-ms
    /// header may ask for less).
    #[arg(long, env = "WICK_GENERATION_TIMEOUT", default_value_t = 600.0)]
    pub generation_timeout: f64,

    /// Chat models: seconds between the `: ping` comments a stream sends while it has nothing
    /// else to send (the prefill of a long prompt), so proxies keep the connection open.
    #[arg(long, env = "WICK_SSE_PING_INTERVAL", default_value_t = 1.0)]
    pub sse_ping_interval: f64,

    /// Chat models: a Jinja chat template file, replacing the one in the GGUF file.
    #[arg(long, env = "WICK_CHAT_TEMPLATE")]
    pub chat_template: Option<PathBuf>,

    /// Skip warmup (tests only: the first requests will be slow).
    #[arg(long, env = "WICK_NO_WARMUP")]
    pub no_warmup: bool,

    /// Require `Authorization: Bearer <key>` on inference routes.
    #[arg(long, env = "WICK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Where the model runs: `auto` (CUDA device 0 when this build has CUDA and a GPU answers,
    /// else the CPU), `cpu`, `cuda` or `cuda:N`. Asking for CUDA in a build without it, or for
    /// a GPU that cannot be opened, stops start-up with an error.
    #[arg(long, env = "WICK_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// Browser origins allowed to call the API (CORS), e.g. `https://app.example.com`;
    /// repeatable or comma-separated, `*` for any. None (the default) turns CORS off.
    #[arg(long, env = "WICK_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,

    /// Seconds a client has to send a complete request header, counted from the connection's
    /// opening or from the first byte after an idle pause; past it the connection is closed.
    #[arg(long, env = "WICK_HEADER_READ_TIMEOUT", default_value_t = 10.0)]
    pub header_read_timeout: f64,

    /// Seconds an idle keep-alive connection (no request in flight, nothing received) stays
    /// open. A request or stream in flight is never cut by it.
    #[arg(long, env = "WICK_KEEP_ALIVE_TIMEOUT", default_value_t = 75.0)]
    pub keep_alive_timeout: f64,

    /// Open client connections at most; past it a new connection gets a 503 at once and is
    /// closed. Lowered to fit the open-file limit. (--metrics-port has a small cap of its own.)
    #[arg(long, env = "WICK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Threads for the model's math (default: the CPU quota of the container).
    #[arg(long, env = "WICK_THREADS")]
    pub threads: Option<usize>,

    /// Tests only: inject a fault into the model thread at its first forward pass after the
    /// server is ready: `panic-once` (a panic inside that forward pass) or `worker-exit` (the
    /// model thread ends). Hidden from --help; never set it in production.
    #[arg(long, env = "WICK_FAULT_INJECT", value_enum, hide = true)]
    pub fault_inject: Option<Fault>,

    /// Log format.
    #[arg(long, env = "WICK_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("model", &self.model)
            .field("model_id", &self.model_id)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
            .field("pooling", &self.pooling)
            .field("quantize", &self.quantize)
            .field("max_input_tokens", &self.max_input_tokens)
            .field("max_input_chars", &self.max_input_chars)
            .field("max_inputs_per_request", &self.max_inputs_per_request)
            .field("label_cache_entries", &self.label_cache_entries)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_tokens", &self.max_batch_tokens)
            .field("max_batch_size", &self.max_batch_size)
            .field("max_batch_wait_ms", &self.max_batch_wait_ms)
            .field("max_pending_inputs", &self.max_pending_inputs)
            .field("request_timeout", &self.request_timeout)
            .field("pre_stop_delay", &self.pre_stop_delay)
            .field("drain_timeout", &self.drain_timeout)
            .field("watchdog", &self.watchdog)
            .field("metrics_window", &self.metrics_window)
            .field("saturation_knee", &self.saturation_knee)
            .field("max_running_sequences", &self.max_running_sequences)
            .field("prefix_cache_entries", &self.prefix_cache_entries)
            .field("max_waiting_sequences", &self.max_waiting_sequences)
            .field("max_kv_tokens", &self.max_kv_tokens)
            .field("max_kv_bytes", &self.max_kv_bytes)
            .field("max_step_tokens", &self.max_step_tokens)
            .field("generation_timeout", &self.generation_timeout)
            .field("sse_ping_interval", &self.sse_ping_interval)
            .field("chat_template", &self.chat_template)
            .field("no_warmup", &self.no_warmup)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("device", &self.device)
            .field("cors_allow_origin", &self.cors_allow_origin)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("max_connections", &self.max_connections)
            .field("threads", &self.threads)
            .field("fault_inject", &self.fault_inject)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Config {
    /// A configuration for `model` with every other knob at its default.
    pub fn for_model(model: impl Into<PathBuf>) -> Self {
        let model = model.into();
        let cli = Cli::parse_from(["wick", "serve", "--model", &model.to_string_lossy()]);
        match cli.command {
            Command::Serve(config) => *config,
            Command::Probe { .. } => unreachable!("parse_from was given `serve`"),
        }
    }

    /// Rejects settings that cannot work, with a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--max-batch-size", self.max_batch_size),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-pending-inputs", self.max_pending_inputs),
            ("--max-inputs", self.max_inputs_per_request),
            ("--max-input-chars", self.max_input_chars),
            ("--max-running-sequences", self.max_running_sequences),
            ("--max-step-tokens", self.max_step_tokens),
            ("--max-connections", self.max_connections),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        let seconds = [
            ("--request-timeout", self.request_timeout),
            ("--generation-timeout", self.generation_timeout),
            ("--pre-stop-delay", self.pre_stop_delay),
            ("--drain-timeout", self.drain_timeout),
            ("--watchdog", self.watchdog),
            ("--metrics-window", self.metrics_window),
            ("--saturation-knee", self.saturation_knee),
        ];
        for (flag, value) in seconds {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("{flag} must be a non-negative number"));
            }
        }
        let positive_seconds = [
            ("--sse-ping-interval", self.sse_ping_interval),
            ("--header-read-timeout", self.header_read_timeout),
            ("--keep-alive-timeout", self.keep_alive_timeout),
        ];
        for (flag, value) in positive_seconds {
            if !value.is_finite() || value <= 0.0 {
                return Err(format!("{flag} must be a positive number"));
            }
        }
        self.device.check_supported()?;
        if matches!(self.device, DeviceChoice::Cuda(_)) && self.serves_chat() {
            // wick's own quantized kernels, which the chat engine is built on, are CPU code.
            return Err(format!(
                "--device {}: GGUF chat models run on the CPU only; use --device cpu",
                self.device
            ));
        }
        crate::http::cors::origins(&self.cors_allow_origin)?;
        if self.max_pending_inputs < self.max_inputs_per_request {
            return Err("--max-pending-inputs must be at least --max-inputs".into());
        }
        Ok(())
    }

    /// Whether `--model` names a GGUF chat model (a `.gguf` file or a directory holding one).
    pub fn serves_chat(&self) -> bool {
        crate::model::chat::gguf_path(&self.model).is_some()
    }

    /// The model name: `--model-id`, else the directory's (or file's) name.
    pub fn model_name(&self) -> String {
        if let Some(id) = &self.model_id {
            return id.clone();
        }
        let path = std::fs::canonicalize(&self.model).unwrap_or_else(|_| self.model.clone());
        let name = if path.is_file() {
            path.file_stem()
        } else {
            path.file_name()
        };
        name.map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    }

    pub fn listen_addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let port = self.metrics_port?;
        format!("{}:{}", self.host, port).parse().ok()
    }

    pub fn secs(value: f64) -> Duration {
        // Saturates instead of panicking on values too large for a Duration.
        Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_ping_interval_must_be_positive() {
        let mut config = Config::for_model("models/x");
        assert_eq!(config.sse_ping_interval, 1.0);
        assert!(config.validate().is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            config.sse_ping_interval = bad;
            let error = config.validate().unwrap_err();
            assert!(error.contains("--sse-ping-interval"), "{error}");
        }
    }

    #[test]
    fn seconds_saturate_instead_of_panicking() {
        assert_eq!(Config::secs(1.5), Duration::from_millis(1500));
        assert_eq!(Config::secs(-3.0), Duration::ZERO);
        assert_eq!(Config::secs(1e300), Duration::MAX);
    }

    fn serve(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from([&["wick", "serve", "--model", "m"], args].concat())
            .expect("arguments");
        match cli.command {
            Command::Serve(config) => *config,
            Command::Probe { .. } => unreachable!(),
        }
    }

    #[test]
    fn connection_timeouts_must_be_positive() {
        let config = serve(&[]);
        assert_eq!(
            (config.header_read_timeout, config.keep_alive_timeout),
            (10.0, 75.0)
        );
        for flag in ["--header-read-timeout", "--keep-alive-timeout"] {
            let error = serve(&[flag, "0"]).validate().unwrap_err();
            assert!(error.contains(flag), "{error}");
        }
        assert!(serve(&["--max-connections", "0"]).validate().is_err());
    }

    #[test]
    fn cors_origins_repeat_or_come_comma_separated() {
        assert!(serve(&[]).cors_allow_origin.is_empty());
        let config = serve(&[
            "--cors-allow-origin",
            "https://a.example,https://b.example",
            "--cors-allow-origin",
            "http://localhost:3000",
        ]);
        assert_eq!(config.cors_allow_origin.len(), 3);
        assert!(config.validate().is_ok());
        let error = serve(&["--cors-allow-origin", "https://a.example/app"])
            .validate()
            .unwrap_err();
        assert!(error.contains("--cors-allow-origin"), "{error}");
    }
}
