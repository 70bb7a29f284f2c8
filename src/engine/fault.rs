//! A fault hook for tests (`--fault-inject`, hidden from `--help`): once the server is ready it
//! makes the model thread panic inside one forward pass, or end, so tests can check that wick
//! contains the first (that batch fails with a 500, the next requests are served) and reports
//! the second (`/health` fails). Without the flag the hook does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

/// Which fault to inject, once, at the first forward pass after the server is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// A panic inside the forward pass: the model thread must contain it.
    PanicOnce,
    /// A panic outside the forward pass's guard: the model thread ends.
    WorkerExit,
}

/// Shared by the server, which arms it once ready, and the model thread, which fires it.
#[derive(Debug, Default)]
pub struct FaultHook {
    fault: Option<Fault>,
    armed: AtomicBool,
}

impl FaultHook {
    pub fn new(fault: Option<Fault>) -> Self {
        Self {
            fault,
            armed: AtomicBool::new(false),
        }
    }

    /// Lets the fault fire at the next forward pass (warmup is over).
    pub fn arm(&self) {
        if let Some(fault) = self.fault {
            tracing::warn!(?fault, "fault injection armed (a test-only setting)");
            self.armed.store(true, Ordering::SeqCst);
        }
    }

    /// Called inside the forward pass's panic guard.
    pub(crate) fn inside_forward(&self) {
        self.fire(
            Fault::PanicOnce,
            "injected fault: a panic inside a forward pass",
        );
    }

    /// Called on the model thread outside the panic guard, before a forward pass.
    pub(crate) fn before_forward(&self) {
        self.fire(Fault::WorkerExit, "injected fault: the model thread ends");
    }

    fn fire(&self, which: Fault, message: &str) {
        if self.fault == Some(which) && self.armed.swap(false, Ordering::SeqCst) {
            panic!("{message}");
        }
    }
}

/// The message a panic carried, for the log.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_once_and_only_after_arming() {
        let hook = FaultHook::new(Some(Fault::PanicOnce));
        hook.inside_forward();
        hook.arm();
        hook.before_forward();
        let fired = std::panic::catch_unwind(|| hook.inside_forward());
        let message = panic_message(fired.expect_err("armed").as_ref());
        assert!(message.contains("injected fault"), "{message}");
        hook.inside_forward();
    }

    #[test]
    fn no_fault_never_fires() {
        let hook = FaultHook::new(None);
        hook.arm();
        hook.inside_forward();
        hook.before_forward();
    }
}
