//! The replay: a traffic day through the HPA against simulated pods that behave like the
//! measured one.
//!
//! - [`traffic`]: the day, in multiples of the knee, and the flash spike.
//! - [`cluster`]: pods starting up, sharing the load, exporting signals from the curve.
//! - [`pipeline`]: Prometheus scrapes, the adapter's queries, metrics-server's CPU.
//! - [`policy`]: the HPA metrics compared and the behavior k8s/ ships.
//! - [`latency`]: a minute's P99 from its seconds.
//! - [`replay`]: the loop and the scoring.

pub mod cluster;
pub mod latency;
pub mod pipeline;
pub mod policy;
pub mod replay;
pub mod traffic;

#[cfg(test)]
mod tests;
