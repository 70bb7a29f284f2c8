//! The server's lifecycle, one state machine observed by logs, `/ready` and metrics:
//! loading -> warming -> ready -> draining -> stopped.
//!
//! The phase lives in a `watch` channel so readers never take a lock that inference holds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Loading,
    Warming,
    Ready,
    Draining,
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Loading => "loading",
            Phase::Warming => "warming",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }

    /// Why the server is not ready, for `/ready`'s 503 body.
    pub fn reason(self) -> &'static str {
        match self {
            Phase::Loading => "model not loaded",
            Phase::Warming => "model warming up",
            Phase::Ready => "",
            Phase::Draining => "shutting down",
            Phase::Stopped => "stopped",
        }
    }
}

/// Shared lifecycle state: the phase, and the model worker's heartbeat for liveness.
#[derive(Clone)]
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
    worker: Arc<WorkerHeartbeat>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Phase::Loading);
        Self {
            phase: Arc::new(tx),
            worker: Arc::new(WorkerHeartbeat::new()),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn set(&self, phase: Phase) {
        let previous = self.phase.send_replace(phase);
        if previous != phase {
            tracing::info!(from = previous.as_str(), to = phase.as_str(), "lifecycle");
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn worker(&self) -> &Arc<WorkerHeartbeat> {
        &self.worker
    }
}

/// What the model worker thread reports about itself, read by `/health` without waiting on it.
pub struct WorkerHeartbeat {
    origin: Instant,
    alive: AtomicBool,
    /// Milliseconds since `origin` at which the running batch started; 0 when idle.
    busy_since_ms: AtomicU64,
}

impl WorkerHeartbeat {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            alive: AtomicBool::new(false),
            busy_since_ms: AtomicU64::new(0),
        }
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::SeqCst);
    }

    pub fn batch_started(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.busy_since_ms.store(ms.max(1), Ordering::SeqCst);
    }

    pub fn batch_finished(&self) {
        self.busy_since_ms.store(0, Ordering::SeqCst);
    }

    /// None when healthy, otherwise why the worker is not.
    pub fn problem(&self, watchdog: Duration) -> Option<String> {
        if !self.alive.load(Ordering::SeqCst) {
            return Some("model worker is not running".into());
        }
        let since = self.busy_since_ms.load(Ordering::SeqCst);
        if since == 0 {
            return None;
        }
        let busy = self
            .origin
            .elapsed()
            .saturating_sub(Duration::from_millis(since));
        (busy > watchdog).then(|| format!("model worker stuck on one batch for {busy:.1?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_reports_dead_and_stuck_workers() {
        let hb = WorkerHeartbeat::new();
        assert!(hb.problem(Duration::from_secs(1)).is_some());
        hb.set_alive(true);
        assert!(hb.problem(Duration::from_secs(1)).is_none());
        hb.batch_started();
        std::thread::sleep(Duration::from_millis(20));
        assert!(hb.problem(Duration::from_millis(5)).is_some());
        hb.batch_finished();
        assert!(hb.problem(Duration::from_millis(5)).is_none());
    }

    #[test]
    fn phase_changes_are_observed() {
        let lc = Lifecycle::new();
        let rx = lc.subscribe();
        assert_eq!(lc.phase(), Phase::Loading);
        lc.set(Phase::Ready);
        assert_eq!(*rx.borrow(), Phase::Ready);
    }
}
