//! wick-autoscale: proves wick's autoscaling signal with numbers, on one machine.
//!
//! - [`load`] and [`measure`]: the `capacity` tool drives a real wick at stepped concurrency
//!   and records one pod's capacity curve ([`curve`]): throughput, latency, CPU and every
//!   signal wick exports, with the knee and the process start -> ready time.
//! - [`hpa`]: the Kubernetes HorizontalPodAutoscaler's algorithm, ported from upstream's
//!   controller (replica calculator, behaviors, stabilization, policies).
//! - [`sim`]: replays a traffic day through that HPA against simulated pods whose latency and
//!   signals follow the measured curve, with the metric pipeline's lag and pod start-up.
//! - [`report`] and [`plot`]: the comparison table and PNG charts.

pub mod curve;
pub mod hpa;
pub mod load;
pub mod measure;
pub mod plot;
pub mod report;
pub mod sim;
