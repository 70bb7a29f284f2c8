//! The Kubernetes HorizontalPodAutoscaler, ported from upstream's controller
//! (kubernetes/kubernetes `pkg/controller/podautoscaler`: `replica_calculator.go`,
//! `horizontal.go`, and the `autoscaling/v2` defaults), so a replay scales the way a cluster
//! would. Times are milliseconds on the simulation's clock where upstream reads `time.Now()`;
//! metric values are integer milli-units as upstream's `resource.Quantity.MilliValue()`.
//!
//! - [`spec`]: the HPA object: metrics, min/max, behavior, and upstream's defaults.
//! - [`replicas`]: desired replicas for one metric: usage ratio, tolerance, ready, unready
//!   and missing pods (`replica_calculator.go`).
//! - [`behavior`]: stabilization windows, scale events and rate policies (`horizontal.go`).
//! - [`controller`]: one reconcile: every metric, the largest proposal, min/max, behavior.

pub mod behavior;
pub mod controller;
pub mod replicas;
pub mod spec;

/// Milliseconds on the simulation's clock.
pub type Millis = i64;

pub const SECOND: Millis = 1000;
