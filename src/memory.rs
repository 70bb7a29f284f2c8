//! Keeping the allocator's freed pages out of the idle footprint after load and warmup.
//!
//! The `wick` binary allocates through mimalloc, which keeps freed pages for reuse and returns
//! them to the system only after a delay (a second by default), checked when a thread next
//! allocates. Loading and warmup's passes over every batch and length bucket free tens of
//! megabytes, on threads that then sit idle: those pages stayed in the idle RSS. So the start
//! runs with no delay, and serving with mimalloc's own, which spares a busy server from
//! faulting its activation buffers back in on every pass.
#![allow(unsafe_code)]

use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (mimalloc.h), which the bindings do not name.
const PURGE_DELAY: mi_option_t = 15;

/// While it lives, freed pages go back to the system at once; dropped, it returns what is
/// free now and restores the delay it found.
pub struct ReturnFreedPages {
    delay: std::ffi::c_long,
}

impl ReturnFreedPages {
    pub fn now() -> Self {
        // SAFETY: reading and setting an option take no pointers and may happen on any thread
        // at any time.
        let delay = unsafe { mi_option_get(PURGE_DELAY) };
        unsafe { mi_option_set(PURGE_DELAY, 0) };
        Self { delay }
    }
}

impl Drop for ReturnFreedPages {
    fn drop(&mut self) {
        // SAFETY: as above; `mi_collect` takes no pointers either.
        unsafe {
            mi_collect(true);
            mi_option_set(PURGE_DELAY, self.delay);
        }
    }
}
