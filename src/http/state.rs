//! The state every handler shares: the engine (once loaded), metrics, lifecycle and limits.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::engine::generation::Generator;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::task::chat_template::ChatTemplate;
use crate::task::zero_shot::LabelCache;

/// Per-request limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_inputs: usize,
    pub max_input_chars: usize,
    pub request_timeout: Duration,
    /// Default deadline of a generation (chat and completions).
    pub generation_timeout: Duration,
    /// Time between `: ping` comments on an event stream that has nothing else to send.
    pub sse_ping_interval: Duration,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: OnceLock<Engine>,
    generator: OnceLock<Generator>,
    chat_template: OnceLock<ChatTemplate>,
    /// Whether the model being served is a chat model (known from its path before loading).
    serves_chat: bool,
    started_at: u64,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    limits: RequestLimits,
    api_key: Option<String>,
    watchdog: Duration,
    labels: LabelCache,
}

impl AppState {
    pub fn new(
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
        limits: RequestLimits,
        api_key: Option<String>,
        watchdog: Duration,
        served: ServedModel,
        label_cache_entries: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: OnceLock::new(),
                generator: OnceLock::new(),
                chat_template: OnceLock::new(),
                serves_chat: served.chat,
                started_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                metrics,
                lifecycle,
                limits,
                api_key,
                watchdog,
                labels: LabelCache::new(label_cache_entries),
            }),
        }
    }

    /// Installs the engine once the model is loaded; later calls are ignored.
    pub fn set_engine(&self, engine: Engine) {
        let _ = self.inner.engine.set(engine);
    }

    pub fn engine_if_loaded(&self) -> Option<&Engine> {
        self.inner.engine.get()
    }

    /// The engine, or a 503 while the model is still loading.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        if self.inner.serves_chat {
            return Err(ApiError::Invalid(
                "this server serves a chat model: use /v1/chat/completions, /v1/completions or \
                 the generate task"
                    .into(),
            ));
        }
        self.inner.engine.get().ok_or_else(not_loaded)
    }

    /// Installs the generation engine and the chat template (if any) once loaded.
    pub fn set_generator(&self, generator: Generator, template: Option<ChatTemplate>) {
        let _ = self.inner.generator.set(generator);
        if let Some(template) = template {
            let _ = self.inner.chat_template.set(template);
        }
    }

    pub fn generator_if_loaded(&self) -> Option<&Generator> {
        self.inner.generator.get()
    }

    /// The generation engine, a 503 while loading, or a 4xx on an encoder server.
    pub fn generator(&self) -> Result<&Generator, ApiError> {
        if !self.inner.serves_chat {
            return Err(ApiError::Invalid(
                "this server serves an encoder model, which cannot generate text: use /predict \
                 or /v1/embeddings"
                    .into(),
            ));
        }
        self.inner.generator.get().ok_or_else(not_loaded)
    }

    pub fn serves_chat(&self) -> bool {
        self.inner.serves_chat
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.inner.chat_template.get()
    }

    /// The served model's name, once it is loaded.
    pub fn model_id(&self) -> Option<String> {
        if let Some(engine) = self.inner.engine.get() {
            return Some(engine.info().model_id.clone());
        }
        self.inner
            .generator
            .get()
            .map(|g| g.info().model_id.clone())
    }

    /// Unix seconds when the server started.
    pub fn started_at(&self) -> u64 {
        self.inner.started_at
    }

    /// Whether a model thread exists whose heartbeat /health should check.
    pub fn worker_started(&self) -> bool {
        self.inner.engine.get().is_some() || self.inner.generator.get().is_some()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    pub fn limits(&self) -> RequestLimits {
        self.inner.limits
    }

    pub fn api_key(&self) -> Option<&str> {
        self.inner.api_key.as_deref()
    }

    pub fn watchdog(&self) -> Duration {
        self.inner.watchdog
    }

    pub fn labels(&self) -> &LabelCache {
        &self.inner.labels
    }
}

fn not_loaded() -> ApiError {
    ApiError::Unavailable {
        message: "model not loaded yet".into(),
        retry_after: 5,
    }
}

/// What the server will serve, known before the model loads.
#[derive(Debug, Clone)]
pub struct ServedModel {
    pub chat: bool,
}
