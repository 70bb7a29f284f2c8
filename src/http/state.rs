//! The state every handler shares: the engine (once loaded), metrics, lifecycle and limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

/// Per-request limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_inputs: usize,
    pub max_input_chars: usize,
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: OnceLock<Engine>,
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
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: OnceLock::new(),
                metrics,
                lifecycle,
                limits,
                api_key,
                watchdog,
                labels: LabelCache::default(),
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
        self.inner
            .engine
            .get()
            .ok_or_else(|| ApiError::Unavailable {
                message: "model not loaded yet".into(),
                retry_after: 5,
            })
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

/// Most label embeddings kept for zero-shot; past it the cache starts over (bounded memory).
const LABEL_CACHE_CAPACITY: usize = 10_000;

/// Zero-shot label texts, embedded once and reused (L2-normalized).
#[derive(Default)]
pub struct LabelCache {
    map: Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

impl LabelCache {
    pub fn get(&self, label: &str) -> Option<Arc<Vec<f32>>> {
        self.map.lock().ok()?.get(label).cloned()
    }

    pub fn insert(&self, label: String, embedding: Arc<Vec<f32>>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= LABEL_CACHE_CAPACITY {
                map.clear();
            }
            map.insert(label, embedding);
        }
    }
}
