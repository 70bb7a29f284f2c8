//! wick: a production inference server for transformer encoders.
//!
//! A request travels `http` (validation, wire types) -> `engine` (admission, tokenization,
//! dynamic batching) -> the model worker thread, which owns the `model` and runs candle forward
//! passes; replies come back over oneshot channels, and `task` turns the raw outputs into
//! answers (embeddings, label scores, entities, zero-shot rankings) that `http` serialises.
//! `lifecycle` tracks loading -> warming -> ready -> draining -> stopped, `metrics` holds every
//! Prometheus series, and `server` wires it all together: load, warm up, serve, drain.

pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod fd_limit;
pub mod http;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod server;
pub mod signals;
pub mod task;
pub mod telemetry;
