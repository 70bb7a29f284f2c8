//! The load tool behind `capacity`: starts (or reaches) a real wick on loopback, drives it at
//! stepped concurrency and records, per step, what a client saw and what wick exported.

pub mod cpu;
pub mod prom;
pub mod server;
pub mod step;
pub mod workload;
