//! `run(config, listener, shutdown)`: load the model, warm up, serve, and drain.
//!
//! The listener is open from the start so probes get honest answers while loading; readiness
//! turns green only after warmup. On shutdown: readiness fails at once, requests are still
//! served for the pre-stop delay, then the listener closes and in-flight work gets the drain
//! timeout to finish; whatever is left is answered 503.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::generation::{Generator, GeneratorConfig};
use crate::engine::{BatchLimits, Engine, EngineConfig, FaultHook};
use crate::fd_limit;
use crate::http::serve::{serve, Connections, Timeouts};
use crate::http::{self, AppState, RequestLimits, ServedModel};
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::model::chat::{gguf_path, ChatModel};
use crate::model::{LoadOptions, Model};
use crate::task::chat_template::ChatTemplate;

/// Connections the separate metrics port takes at once (within the open files
/// `fd_limit` keeps out of the main port's cap).
const METRICS_PORT_CONNECTIONS: usize = 32;

/// How long handlers get to send their 503s after the drain deadline aborts them.
const ABORT_GRACE: Duration = Duration::from_secs(2);

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    tracing::info!(config = ?config, "starting");

    let metrics = Arc::new(Metrics::new(
        Config::secs(config.metrics_window),
        config.saturation_knee,
    ));
    let lifecycle = Lifecycle::new();
    let faults = Arc::new(FaultHook::new(config.fault_inject));
    let state = AppState::new(
        metrics.clone(),
        lifecycle.clone(),
        RequestLimits {
            max_inputs: config.max_inputs_per_request,
            max_input_chars: config.max_input_chars,
            request_timeout: Config::secs(config.request_timeout),
            generation_timeout: Config::secs(config.generation_timeout),
            sse_ping_interval: Config::secs(config.sse_ping_interval),
        },
        config.api_key.clone(),
        Config::secs(config.watchdog),
        ServedModel {
            chat: config.serves_chat(),
        },
        config.label_cache_entries,
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let timeouts = Timeouts {
        header_read: Config::secs(config.header_read_timeout),
        keep_alive: Config::secs(config.keep_alive_timeout),
    };
    let connections = Connections::new(
        fd_limit::connection_cap(config.max_connections),
        timeouts,
        metrics.clone(),
    );
    let app = http::router(
        state.clone(),
        config.max_body_bytes,
        &config.cors_allow_origin,
    );
    let server = tokio::spawn(serve(listener, app, connections, stopped(stop_rx.clone())));
    let metrics_server = match config.metrics_addr() {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let app = http::metrics_router(state.clone());
            // A cap of its own: scrapes go on while the main port is full.
            let connections = Connections::new(METRICS_PORT_CONNECTIONS, timeouts, metrics.clone());
            Some(tokio::spawn(serve(
                listener,
                app,
                connections,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    let sampler_metrics = metrics.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            sampler_metrics.sample_pending();
        }
    });

    let (signal_tx, mut signal_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });

    let limits = BatchLimits {
        max_batch_size: config.max_batch_size,
        max_batch_tokens: config.max_batch_tokens,
        max_wait: Duration::from_millis(config.max_batch_wait_ms),
    };
    let start = async {
        if config.serves_chat() {
            return start_chat(&config, &state, &metrics, &lifecycle, &faults).await;
        }
        let returning = crate::memory::ReturnFreedPages::now();
        let engine = load(&config, &metrics, &lifecycle, limits, &faults).await?;
        let engine = state_with_engine(&state, engine);
        if !config.no_warmup {
            lifecycle.set(Phase::Warming);
            let started = Instant::now();
            let passes = engine.warmup(limits).await?;
            metrics.warmup_seconds.set(started.elapsed().as_secs_f64());
            tracing::info!(
                passes,
                seconds = started.elapsed().as_secs_f64(),
                "warmup done"
            );
        }
        drop(returning);
        anyhow::Ok(())
    };
    let started = tokio::select! {
        result = start => Some(result),
        _ = signal_rx.wait_for(|s| *s) => None,
    };
    match started {
        Some(Ok(())) => {
            lifecycle.set(Phase::Ready);
            metrics.ready.set(1);
            faults.arm();
            let _ = signal_rx.wait_for(|s| *s).await;
        }
        Some(Err(e)) => {
            sampler.abort();
            let _ = stop_tx.send(true);
            return Err(e);
        }
        None => {}
    }

    // Drain.
    lifecycle.set(Phase::Draining);
    metrics.ready.set(0);
    metrics.draining.set(1);
    let pre_stop = Config::secs(config.pre_stop_delay);
    tracing::info!(
        pre_stop_seconds = pre_stop.as_secs_f64(),
        "draining: readiness is failing"
    );
    tokio::time::sleep(pre_stop).await;
    let _ = stop_tx.send(true);
    let drain = Config::secs(config.drain_timeout);
    let mut server = server;
    if tokio::time::timeout(drain, &mut server).await.is_err() {
        tracing::warn!("drain timeout passed: answering unfinished requests with 503");
        if let Some(engine) = state.engine_if_loaded() {
            engine.abort_waiting();
        }
        if let Some(generator) = state.generator_if_loaded() {
            generator.abort_all();
        }
        if tokio::time::timeout(ABORT_GRACE, &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    sampler.abort();
    lifecycle.set(Phase::Stopped);
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn state_with_engine(state: &AppState, engine: Engine) -> &Engine {
    state.set_engine(engine);
    state.engine_if_loaded().expect("engine was just installed")
}

async fn load(
    config: &Config,
    metrics: &Arc<Metrics>,
    lifecycle: &Lifecycle,
    limits: BatchLimits,
    faults: &Arc<FaultHook>,
) -> anyhow::Result<Engine> {
    let started = Instant::now();
    let dir = config.model.clone();
    let options = LoadOptions {
        model_id: config.model_id.clone(),
        pooling: config.pooling,
        max_input_tokens: config.max_input_tokens,
        quantize: config.quantize,
    };
    let choice = config.device;
    let model = tokio::task::spawn_blocking(move || {
        let device = choice.open().map_err(anyhow::Error::msg)?;
        anyhow::Ok(Model::load(&dir, &options, &device)?)
    })
    .await??;
    let seconds = started.elapsed().as_secs_f64();
    metrics.model_load_seconds.set(seconds);
    metrics.register_build_info(
        env!("CARGO_PKG_VERSION"),
        &model.info.model_id,
        &model.info.device,
    );
    tracing::info!(
        model = %model.info.model_id,
        device = %model.info.device,
        tasks = ?model.info.tasks,
        max_input_tokens = model.info.max_input_tokens,
        seconds,
        threads = candle_core::utils::get_num_threads(),
        "model loaded"
    );
    let engine = Engine::start(
        model,
        EngineConfig {
            limits,
            max_pending_inputs: config.max_pending_inputs,
        },
        metrics.clone(),
        lifecycle.worker().clone(),
        faults.clone(),
    )?;
    Ok(engine)
}

/// Loads a GGUF chat model, starts the generation engine and warms it up.
async fn start_chat(
    config: &Config,
    state: &AppState,
    metrics: &Arc<Metrics>,
    lifecycle: &Lifecycle,
    faults: &Arc<FaultHook>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let path = gguf_path(&config.model)
        .ok_or_else(|| anyhow::anyhow!("{}: no .gguf file found", config.model.display()))?;
    let model = tokio::task::spawn_blocking(move || ChatModel::load(&path)).await??;
    let template = chat_template(config, &model)?;
    let seconds = started.elapsed().as_secs_f64();
    let model_id = config.model_name();
    metrics.model_load_seconds.set(seconds);
    metrics.register_build_info(
        env!("CARGO_PKG_VERSION"),
        &model_id,
        crate::engine::generation::DEVICE,
    );
    let max_kv_tokens = config
        .max_kv_tokens
        .unwrap_or_else(|| config.max_kv_bytes / model.decoder.config.kv_bytes_per_token().max(1));
    if max_kv_tokens < 16 {
        anyhow::bail!("--max-kv-tokens (or --max-kv-bytes) leaves room for {max_kv_tokens} positions; at least 16 are needed");
    }
    tracing::info!(
        model = %model_id,
        architecture = %model.architecture,
        device = crate::engine::generation::DEVICE,
        file = %model.path.display(),
        file_bytes = model.file_bytes,
        context = model.decoder.config.context,
        max_kv_tokens,
        chat_template = template.is_some(),
        seconds,
        "chat model loaded"
    );
    let generator = Generator::start(
        model,
        model_id,
        GeneratorConfig {
            max_running: config.max_running_sequences,
            max_waiting: config.max_waiting_sequences,
            max_kv_tokens,
            max_step_tokens: config.max_step_tokens,
            prefix_cache_entries: config.prefix_cache_entries,
        },
        metrics.clone(),
        lifecycle.worker().clone(),
        faults.clone(),
    )?;
    state.set_generator(generator, template);
    let generator = state
        .generator_if_loaded()
        .expect("generator was just installed");
    if !config.no_warmup {
        lifecycle.set(Phase::Warming);
        let started = Instant::now();
        let runs = generator.warmup().await?;
        metrics.warmup_seconds.set(started.elapsed().as_secs_f64());
        tracing::info!(
            runs,
            seconds = started.elapsed().as_secs_f64(),
            "warmup done"
        );
    }
    Ok(())
}

/// `--chat-template FILE` if given, else the template in the GGUF file, else none.
fn chat_template(config: &Config, model: &ChatModel) -> anyhow::Result<Option<ChatTemplate>> {
    let source = match &config.chat_template {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("{}: cannot read the chat template: {e}", path.display())
        })?),
        None => model.template.clone(),
    };
    let Some(source) = source else {
        return Ok(None);
    };
    let text = |id: Option<u32>| {
        id.and_then(|id| model.tokenizer.token_content(id))
            .unwrap_or_default()
    };
    let template = ChatTemplate::new(source, text(model.tokenizer.bos), text(model.tokenizer.eos))
        .map_err(|e| match &config.chat_template {
            Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
            None => anyhow::anyhow!("{}: tokenizer.chat_template: {e}", model.path.display()),
        })?;
    Ok(Some(template))
}
